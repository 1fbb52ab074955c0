import assert from "node:assert/strict";
import { test } from "node:test";
import { imap } from "../../src/protocol/imap/index.ts";
import type { UpstreamAction } from "../../src/protocol/types.ts";
import { testServerConfig } from "../support/server-config.ts";

const enc = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const dec = (b: Uint8Array) => String.fromCharCode(...b);

function start(overrides = {}, login = "alice", password = "s3cret") {
  const server = imap.compile(testServerConfig(overrides));
  return imap.upstreamStart({ server, login, password, clientTag: "a1 ", clientAddr: "127.0.0.2", clientHost: "[UNAVAILABLE]", clientPort: 5555, starttls: false });
}

/** A fake backend in memory: answers each line the proxy sends. */
function run(backend: string[], overrides = {}, chunk = 0): { sent: string; actions: UpstreamAction[] } {
  let { state, actions } = start(overrides);
  const all: UpstreamAction[] = [...actions];
  for (const reply of backend) {
    const b = enc(reply);
    const chunks = chunk ? Array.from({ length: Math.ceil(b.length / chunk) }, (_, i) => b.subarray(i * chunk, (i + 1) * chunk)) : [b];
    for (const c of chunks) {
      const r = imap.upstreamStep(state, { kind: "bytes", bytes: c });
      state = r.state;
      all.push(...r.actions);
    }
  }
  const sent = all.filter((a) => a.kind === "send").map((a) => (a as { text: string }).text).join("");
  return { sent, actions: all };
}

test("IMAP upstream login sends LOGIN with literals under the client's tag, as nginx does", () => {
  for (const chunk of [0, 1]) {
    const r = run(["* OK Dovecot ready.\r\n", "+ OK\r\n", "+ OK\r\n", "* CAPABILITY IMAP4rev1\r\na1 OK Logged in\r\n* 1 EXISTS\r\n"], {}, chunk);
    assert.equal(r.sent, "a1 LOGIN {5}\r\nalice {6}\r\ns3cret\r\n");
    const done = r.actions.find((a) => a.kind === "done");
    assert.ok(done && done.kind === "done");
    assert.equal(dec(done.toClient), "* CAPABILITY IMAP4rev1\r\na1 OK Logged in\r\n");
    assert.equal(dec(done.leftover), chunk ? "" : "* 1 EXISTS\r\n");
  }
});

test("IMAP upstream refusal gives the internal error unless proxy_pass_error_message is on", () => {
  const backend = ["* OK ready\r\n", "+ OK\r\n", "+ OK\r\n", "a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"];
  const off = run(backend).actions.find((a) => a.kind === "fail");
  assert.deepEqual(off && off.kind === "fail" && off.toClient, "* BAD internal server error\r\n");
  const on = run(backend, { proxyPassErrorMessage: true }).actions.find((a) => a.kind === "fail");
  assert.deepEqual(on && on.kind === "fail" && on.toClient, "a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
});

test("IMAP upstream rejects a greeting that is not * OK", () => {
  const r = run(["* BYE too busy\r\n"], { proxyPassErrorMessage: true });
  const f = r.actions.find((a) => a.kind === "fail");
  assert.ok(f && f.kind === "fail");
  assert.equal(f.toClient, "* BYE too busy\r\n");
  assert.equal(r.sent, "");
});

test("IMAP upstream line longer than proxy_buffer is an internal error", () => {
  const r = run(["* OK " + "x".repeat(200)], { proxyBuffer: 64, proxyPassErrorMessage: true });
  const f = r.actions.find((a) => a.kind === "fail");
  assert.ok(f && f.kind === "fail");
  assert.equal(f.toClient, "* BAD internal server error\r\n");
  assert.match(f.log, /too long response line/);
});
