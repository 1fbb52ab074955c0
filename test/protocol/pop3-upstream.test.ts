import assert from "node:assert/strict";
import { test } from "node:test";
import { pop3 } from "../../src/protocol/pop3/index.ts";
import type { UpstreamAction } from "../../src/protocol/types.ts";
import { testServerConfig } from "../support/server-config.ts";

const enc = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const dec = (b: Uint8Array) => String.fromCharCode(...b);

interface Options { overrides?: object; login?: string; password?: string; starttls?: boolean; chunk?: number }

function start(o: Options) {
  const server = pop3.compile(testServerConfig({ protocol: "pop3", ...o.overrides }));
  return pop3.upstreamStart({
    server, login: o.login ?? "alice", password: o.password ?? "s3cret", clientTag: "", clientAddr: "127.0.0.2",
    clientHost: "[UNAVAILABLE]", clientPort: 5555, starttls: o.starttls ?? false,
  });
}

/** A fake backend in memory: each reply answers the next line the proxy sends; "TLS" stands for the handshake. */
function run(backend: string[], o: Options = {}): { sent: string; actions: UpstreamAction[] } {
  let { state, actions } = start(o);
  const all: UpstreamAction[] = [...actions];
  for (const reply of backend) {
    if (reply === "TLS") {
      const r = pop3.upstreamStep(state, { kind: "tls-started" });
      state = r.state;
      all.push(...r.actions);
      continue;
    }
    const b = enc(reply);
    const chunk = o.chunk ?? 0;
    const chunks = chunk ? Array.from({ length: Math.ceil(b.length / chunk) }, (_, i) => b.subarray(i * chunk, (i + 1) * chunk)) : [b];
    for (const c of chunks) {
      const r = pop3.upstreamStep(state, { kind: "bytes", bytes: c });
      state = r.state;
      all.push(...r.actions);
    }
  }
  const sent = all.filter((a) => a.kind === "send").map((a) => (a as { text: string }).text).join("");
  return { sent, actions: all };
}

function failOf(actions: UpstreamAction[]) {
  const f = actions.find((a) => a.kind === "fail");
  assert.ok(f && f.kind === "fail", "the login failed");
  return f;
}

test("POP3 upstream login sends USER and PASS exactly as nginx does and passes the final +OK on", () => {
  for (const chunk of [0, 1, 3]) {
    const r = run(["+OK Dovecot ready.\r\n", "+OK\r\n", "+OK Logged in.\r\n+OK 2 messages\r\n"], { chunk, login: "alice smith", password: "pass word " });
    assert.equal(r.sent, "USER alice smith\r\nPASS pass word \r\n", `chunk ${chunk}`);
    const done = r.actions.find((a) => a.kind === "done");
    assert.ok(done && done.kind === "done");
    assert.equal(dec(done.toClient), "+OK Logged in.\r\n");
    // bytes read past the +OK in the same chunk go to the client with it
    if (chunk === 0) assert.equal(dec(done.leftover), "+OK 2 messages\r\n");
    else assert.ok("+OK 2 messages\r\n".startsWith(dec(done.leftover)));
    assert.ok(!r.actions.some((a) => a.kind === "fail"));
  }
});

test("POP3 upstream waits for the greeting before sending USER", () => {
  const r = run(["+OK POP3 rea"]);
  assert.equal(r.sent, "");
  assert.deepEqual(r.actions, []);
});

test("POP3 upstream refusal of PASS gives the internal error unless proxy_pass_error_message is on", () => {
  const backend = ["+OK ready\r\n", "+OK\r\n", "-ERR [AUTH] Authentication failed.\r\n"];
  const off = failOf(run(backend).actions);
  assert.equal(off.toClient, "-ERR internal server error\r\n");
  assert.match(off.log, /upstream sent invalid response: "-ERR \[AUTH\] Authentication failed\."/);
  const on = failOf(run(backend, { overrides: { proxyPassErrorMessage: true } }).actions);
  assert.equal(on.toClient, "-ERR [AUTH] Authentication failed.\r\n");
});

test("POP3 upstream refusal of USER stops before PASS", () => {
  const r = run(["+OK ready\r\n", "-ERR no such user\r\n", "+OK\r\n"], { overrides: { proxyPassErrorMessage: true } });
  assert.equal(r.sent, "USER alice\r\n");
  assert.equal(failOf(r.actions).toClient, "-ERR no such user\r\n");
});

test("POP3 upstream rejects a greeting that is not +OK", () => {
  const r = run(["-ERR too busy\r\n"], { overrides: { proxyPassErrorMessage: true } });
  assert.equal(failOf(r.actions).toClient, "-ERR too busy\r\n");
  assert.equal(r.sent, "");
  const quiet = run(["* OK IMAP4 ready\r\n"]);
  assert.equal(failOf(quiet.actions).toClient, "-ERR internal server error\r\n");
});

test("POP3 upstream line longer than proxy_buffer is an internal error, even with proxy_pass_error_message", () => {
  const r = run(["+OK " + "x".repeat(200)], { overrides: { proxyBuffer: 64, proxyPassErrorMessage: true } });
  const f = failOf(r.actions);
  assert.equal(f.toClient, "-ERR internal server error\r\n");
  assert.match(f.log, /too long response line/);
});

test("POP3 upstream with proxy_ssl starttls sends STLS, drops plaintext after its +OK, then logs in inside TLS", () => {
  for (const chunk of [0, 1]) {
    const r = run(["+OK ready\r\n", "+OK Begin TLS negotiation now.\r\n-ERR injected\r\n", "TLS", "+OK\r\n", "+OK Logged in.\r\n"], { starttls: true, chunk });
    assert.equal(r.sent, "STLS\r\nUSER alice\r\nPASS s3cret\r\n", `chunk ${chunk}`);
    const kinds = r.actions.map((a) => a.kind);
    assert.deepEqual(kinds, ["send", "start-tls", "send", "send", "done"]);
  }
  const refused = run(["+OK ready\r\n", "-ERR STLS not available\r\n"], { starttls: true, overrides: { proxyPassErrorMessage: true } });
  const f = failOf(refused.actions);
  assert.equal(f.toClient, "-ERR STLS not available\r\n");
  assert.match(f.log, /upstream refused STLS/);
  assert.ok(!refused.actions.some((a) => a.kind === "start-tls"));
});

test("POP3 upstream never sends a user name or password with CR, LF or NUL", () => {
  for (const [login, password] of [["alice\r\nDELE 1", "pw"], ["alice", "pw\nDELE 1"], ["ali\0ce", "pw"], ["alice", "p\rw"]]) {
    const r = run(["+OK ready\r\n", "+OK\r\n", "+OK\r\n"], { login, password, overrides: { proxyPassErrorMessage: true } });
    assert.equal(r.sent, "", JSON.stringify(login + password));
    const f = failOf(r.actions);
    assert.equal(f.toClient, "-ERR internal server error\r\n");
    assert.match(f.log, /CR, LF or NUL/);
    assert.doesNotMatch(f.log, /pw/);
  }
});
