import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { imap } from "../../src/protocol/imap/index.ts";
import { applyConfigLines } from "../support/server-config.ts";
import { parseTranscript, replay } from "./transcript.ts";

const DIR = "test/transcripts/imap";

for (const file of readdirSync(DIR).filter((f) => f.endsWith(".txt")).sort()) {
  test(`IMAP transcript ${file} replays at every byte split`, () => {
    const t = parseTranscript(file, readFileSync(`${DIR}/${file}`, "latin1"));
    const server = imap.compile(applyConfigLines(t.config));
    const checks = replay(imap, t, { server, tls: false, nowSec: 1700000000, random: 12345, clientAddr: "127.0.0.2", clientHost: "[UNAVAILABLE]" });
    assert.ok(checks > 1, "the transcript checked something");
  });
}
