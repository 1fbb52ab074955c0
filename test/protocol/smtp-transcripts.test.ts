import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { smtp } from "../../src/protocol/smtp/index.ts";
import { applyConfigLines, testServerConfig } from "../support/server-config.ts";
import { parseTranscript, replay } from "./transcript.ts";

const DIR = "test/transcripts/smtp";

for (const file of readdirSync(DIR).filter((f) => f.endsWith(".txt")).sort()) {
  test(`SMTP transcript ${file} replays at every byte split`, () => {
    const t = parseTranscript(file, readFileSync(`${DIR}/${file}`, "latin1"));
    const server = smtp.compile(applyConfigLines(t.config, testServerConfig({ protocol: "smtp" })));
    const checks = replay(smtp, t, { server, tls: false, nowSec: 1700000000, random: 12345, clientAddr: "127.0.0.2", clientHost: "[UNAVAILABLE]" });
    assert.ok(checks > 1, "the transcript checked something");
  });
}
