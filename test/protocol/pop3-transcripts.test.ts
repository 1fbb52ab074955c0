import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { pop3 } from "../../src/protocol/pop3/index.ts";
import { applyConfigLines, testServerConfig } from "../support/server-config.ts";
import { parseTranscript, replay } from "./transcript.ts";

const DIR = "test/transcripts/pop3";
const BASE = testServerConfig({ protocol: "pop3" });

for (const file of readdirSync(DIR).filter((f) => f.endsWith(".txt")).sort()) {
  test(`POP3 transcript ${file} replays at every byte split`, () => {
    const t = parseTranscript(file, readFileSync(`${DIR}/${file}`, "latin1"));
    const server = pop3.compile(applyConfigLines(t.config, BASE));
    const checks = replay(pop3, t, { server, tls: false, nowSec: 1700000000, random: 12345, clientAddr: "127.0.0.2", clientHost: "[UNAVAILABLE]" });
    assert.ok(checks > 1, "the transcript checked something");
  });
}
