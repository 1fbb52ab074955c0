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

test("IMAP upstream login to a backend greeting with LITERAL+ goes out in one write with non-synchronizing literals", () => {
  for (const chunk of [0, 1]) {
    const r = run(["* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID] Dovecot ready.\r\n", "a1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"], {}, chunk);
    assert.equal(r.sent, "a1 LOGIN {5+}\r\nalice {6+}\r\ns3cret\r\n");
    assert.equal(r.actions.filter((a) => a.kind === "send").length, 1);
    const done = r.actions.find((a) => a.kind === "done");
    assert.ok(done && done.kind === "done");
    assert.equal(dec(done.toClient), "a1 OK [CAPABILITY IMAP4rev1] Logged in\r\n");
  }
  // a "+" where no continuation was asked for is not the tagged OK
  const odd = run(["* OK [CAPABILITY IMAP4rev1 LITERAL+] ready\r\n", "+ OK\r\n"]).actions.find((a) => a.kind === "fail");
  assert.ok(odd && odd.kind === "fail");
  assert.match(odd.log, /upstream sent invalid response: "\+ OK"/);
});

test("IMAP upstream uses non-synchronizing literals only when the greeting's CAPABILITY code allows them for these sizes", () => {
  const long = "p".repeat(4097);
  const cases: [string, string, string][] = [
    ["* OK [capability imap4rev1 literal+] hi\r\n", "s3cret", "a1 LOGIN {5+}\r\nalice {6+}\r\ns3cret\r\n"],
    ["* OK [CAPABILITY IMAP4rev1 LITERAL-] hi\r\n", "s3cret", "a1 LOGIN {5+}\r\nalice {6+}\r\ns3cret\r\n"],
    ["* OK [CAPABILITY IMAP4rev1 LITERAL-] hi\r\n", long, "a1 LOGIN {5}\r\n"],
    ["* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n", long, `a1 LOGIN {5+}\r\nalice {4097+}\r\n${long}\r\n`],
    ["* OK [CAPABILITY IMAP4rev1 XLITERAL+ LITERAL] hi\r\n", "s3cret", "a1 LOGIN {5}\r\n"],
    ["* OK [CAPABILITY IMAP4rev1] LITERAL+ in the text does not count\r\n", "s3cret", "a1 LOGIN {5}\r\n"],
    ["* OK [CAPABILITY IMAP4rev1 LITERAL+ hi\r\n", "s3cret", "a1 LOGIN {5}\r\n"],
    ["* OK [ALERT] LITERAL+\r\n", "s3cret", "a1 LOGIN {5}\r\n"],
  ];
  for (const [greeting, password, sent] of cases) {
    const server = imap.compile(testServerConfig({ proxyBuffer: 16384 }));
    const { state } = imap.upstreamStart({ server, login: "alice", password, clientTag: "a1 ", clientAddr: "127.0.0.2", clientHost: "[UNAVAILABLE]", clientPort: 5555, starttls: false });
    const r = imap.upstreamStep(state, { kind: "bytes", bytes: enc(greeting) });
    assert.equal(r.actions.map((a) => (a as { text: string }).text).join(""), sent, greeting);
  }
});

test("IMAP upstream after STARTTLS logs in with synchronizing literals: the greeting's capabilities were from before TLS", () => {
  const server = imap.compile(testServerConfig({}));
  let r = imap.upstreamStart({ server, login: "alice", password: "s3cret", clientTag: "a1 ", clientAddr: "127.0.0.2", clientHost: "[UNAVAILABLE]", clientPort: 5555, starttls: true });
  r = imap.upstreamStep(r.state, { kind: "bytes", bytes: enc("* OK [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS] hi\r\n") });
  assert.equal((r.actions[0] as { text: string }).text, "a1 STARTTLS\r\n");
  r = imap.upstreamStep(r.state, { kind: "bytes", bytes: enc("a1 OK Begin TLS\r\n") });
  assert.equal(r.actions[0].kind, "start-tls");
  r = imap.upstreamStep(r.state, { kind: "tls-started" });
  assert.equal((r.actions[0] as { text: string }).text, "a1 LOGIN {5}\r\n");
});
