import assert from "node:assert/strict";
import { test } from "node:test";
import { createLogger } from "../../src/log.ts";

const at = new Date(2026, 10, 22, 10, 0, 5);

test("text logs follow nginx's error-log format with the session suffix", () => {
  const lines: string[] = [];
  const log = createLogger([{ dest: "stderr", level: "info", format: "text" }], (_d, l) => lines.push(l), 42, () => at);
  const ctx = { sid: 7, proto: "imap", client: "127.0.0.2", server: "127.0.0.1:1143", login: "al\r\nice\"", upstream: "127.0.0.1:143" };
  log.log("info", "client logged in", ctx);
  log.log("debug", "not shown", ctx);
  log.log("info", "client 127.0.0.2:5000 connected to 127.0.0.1:1143", { ...ctx, bare: true });
  assert.deepEqual(lines, [
    '2026/11/22 10:00:05 [info] 42#0: *7 client logged in, client: 127.0.0.2, server: 127.0.0.1:1143, login: "al\\x0d\\x0aice\\x22", upstream: 127.0.0.1:143',
    "2026/11/22 10:00:05 [info] 42#0: *7 client 127.0.0.2:5000 connected to 127.0.0.1:1143",
  ]);
});

test("json logs carry sid, proto, client, login and upstream", () => {
  const lines: string[] = [];
  const log = createLogger([{ dest: "x.log", level: "debug", format: "json" }], (d, l) => lines.push(`${d} ${l}`), 42, () => at);
  log.log("warn", "client sent too long command", { sid: 1, proto: "imap", client: "::1", server: "[::1]:143", action: "in auth state" });
  const [dest, json] = [lines[0].slice(0, 5), JSON.parse(lines[0].slice(6))];
  assert.equal(dest, "x.log");
  assert.deepEqual({ ...json, time: undefined }, { time: undefined, level: "warn", pid: 42, sid: 1, proto: "imap", client: "::1", server: "[::1]:143", phase: "in auth state", msg: "client sent too long command" });
});
