// IMAP end to end: Postern under each target (node, deno, bun, binary) between real clients
// (curl, Python's imaplib, a byte-exact client) and a real Dovecot, a scripted backend and a
// scripted auth_http server.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { type Dovecot, startDovecot } from "../support/dovecot.ts";
import { authFail, authOk, type MockAuth, startMockAuth } from "../support/mock-auth.ts";
import { imapBackend, IMAP_GREETING, type MockBackend, startMockBackend } from "../support/mock-backend.ts";
import { freePorts } from "../support/ports.ts";
import { type Postern, startPostern, targets } from "../support/postern.ts";
import { connectClient, within } from "../support/line-client.ts";

const run = promisify(execFile);
const USER = "alice@example.com";
const PASS = "alice-secret";
// UTF-8 with continuation bytes 0x80-0x9f (ł = c5 82, ć = c4 87, € = e2 82 ac)
const UTF8_USER = "zofia@example.com";
const UTF8_PASS = "zażółć-€";

let dovecot: Dovecot;
let auth: MockAuth;
let backend: MockBackend; // scripted IMAP server: greeting (with LITERAL+), LOGIN, echo
let plainGreeter: MockBackend; // the same with a greeting that lists no capabilities
let silent: MockBackend; // accepts and never greets
let dropper: MockBackend; // greets, then resets on LOGIN
let closedPort: number;

before(async () => {
  dovecot = await startDovecot({ users: [{ user: USER, password: PASS }, { user: UTF8_USER, password: UTF8_PASS }] });
  dovecot.putMessage(USER, "From: bob@example.com\r\nTo: alice@example.com\r\nSubject: hello through postern\r\n\r\nbody\r\n");
  auth = await startMockAuth(authOk("127.0.0.1", dovecot.imapPort));
  backend = await startMockBackend({ script: imapBackend("any") });
  plainGreeter = await startMockBackend({ script: imapBackend("any", "* OK mock imap ready\r\n") });
  silent = await startMockBackend({ script: [] });
  dropper = await startMockBackend({ script: [{ send: IMAP_GREETING }, { expect: /LOGIN/ }, { destroy: true }] });
  [closedPort] = await freePorts(1);
});

after(async () => {
  await Promise.all([dovecot?.stop(), auth?.close(), backend?.close(), plainGreeter?.close(), silent?.close(), dropper?.close()]);
});

interface Ports { builtin: number; http: number; strict: number; passErr: number; metrics: number }

function config(p: Ports): string {
  return `
server_name: mail.test
error_log: { level: info }
http:
  listen: 127.0.0.1:${p.metrics}
auth:
  failure_delay: 1s
  max_attempts: 2
  users:
    - user: ${USER}
      password_hash: "scrypt$16384$8$1$c2FsdHNhbHRzYWx0c2FsdA==$y2eAlHM2EMLppCk0t8YnMLJkUEwcBElMlb7h0O615JU="
      backend: 127.0.0.1:${dovecot.imapPort}
    - user: ${UTF8_USER}
      password: "${UTF8_PASS}"
      backend: 127.0.0.1:${dovecot.imapPort}
    - user: utf8-relay
      password: relay-pass
      backend: 127.0.0.1:${dovecot.imapPort}
      backend_user: ${UTF8_USER}
      backend_password: "${UTF8_PASS}"
    - user: plain-user
      password: plain-pass
      backend: 127.0.0.1:${dovecot.imapPort}
      backend_user: ${USER}
      backend_password: ${PASS}
mail:
  servers:
    - listen: [127.0.0.1:${p.builtin}]
      protocol: imap
      auth_http: builtin
    - listen: [127.0.0.1:${p.http}]
      protocol: imap
      auth_http: ${auth.url}
      auth_http_header: { X-Auth-Key: k3y }
    - listen: [127.0.0.1:${p.strict}]
      protocol: imap
      auth_http: ${auth.url}
      imap_client_buffer: 256
      timeout: 1s
      auth_http_timeout: 1s
    - listen: [127.0.0.1:${p.passErr}]
      protocol: imap
      auth_http: ${auth.url}
      proxy_pass_error_message: on
`;
}

async function metrics(p: Ports): Promise<string> {
  return (await fetch(`http://127.0.0.1:${p.metrics}/metrics`)).text();
}

async function waitNoSessions(p: Ports): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const m = await metrics(p);
    if (/^postern_sessions_active 0$/m.test(m)) return;
    if (Date.now() > deadline) throw new Error(`sessions still active:\n${m}`);
    await new Promise((r) => setTimeout(r, 50)); // polling the condition, not sleeping instead of it
  }
}

for (const target of targets()) {
  let postern: Postern;
  let p: Ports;

  test(`${target}: Postern starts and answers /health`, async () => {
    const [a, b, c, d, e] = await freePorts(5);
    p = { builtin: a, http: b, strict: c, passErr: d, metrics: e };
    postern = await startPostern(target, config(p));
    const h = await (await fetch(`http://127.0.0.1:${p.metrics}/health`)).json();
    assert.equal(h.status, "ok");
    assert.match(postern.logs(), /postern\/\d+\.\d+\.\d+/);
  });

  test(`${target}: curl lists a real Dovecot mailbox through Postern with the built-in auth`, async () => {
    const before = dovecot.logins().length;
    const { stdout } = await run("curl", ["-sS", "--max-time", "20", "--interface", "127.0.0.2", `imap://127.0.0.1:${p.builtin}/`, "-u", `${USER}:${PASS}`]);
    assert.match(stdout, /\* LIST \(.*\) "[./]" "?INBOX"?/);
    // Dovecot writes its log through its log process, a moment after the client has its answer
    const login = await dovecot.waitForLogin(before, (l) => l.user === USER, 5000);
    // the client was 127.0.0.2; Dovecot saw the proxy's address
    assert.equal(login.realRip, "127.0.0.1");
    await postern.waitForLog(/client logged in, client: 127\.0\.0\.2, server: 127\.0\.0\.1:\d+, login: "alice@example\.com", upstream: 127\.0\.0\.1:\d+/);
  });

  test(`${target}: Python imaplib logs in and fetches a message through Postern`, async () => {
    const script = `
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", ${p.builtin})
m.login(${JSON.stringify(USER)}, ${JSON.stringify(PASS)})
typ, data = m.select("INBOX")
typ, msg = m.fetch(b"1", "(BODY[HEADER.FIELDS (SUBJECT)])")
print(msg[0][1].decode().strip())
m.logout()
`;
    const { stdout } = await run("python3", ["-c", script]);
    assert.equal(stdout.trim(), "Subject: hello through postern");
  });

  test(`${target}: Auth-User/Auth-Pass from the built-in service log in to the backend as another user`, async () => {
    const c = await connectClient(p.builtin);
    await c.expect(/^\* OK IMAP4 ready\r\n/);
    c.send("a1 LOGIN plain-user plain-pass\r\n");
    await c.expect(/a1 OK .*\r\n/);
    c.send("a2 LOGOUT\r\n");
    await c.expect(/a2 OK .*\r\n/);
    await within(c.closed, 5000, "close after LOGOUT");
  });

  test(`${target}: a wrong password gets nginx's NO, a retry after Auth-Wait, then a close`, async () => {
    const c = await connectClient(p.builtin);
    await c.expect(/ready\r\n/);
    c.send(`a1 LOGIN ${USER} wrong\r\n`);
    assert.equal(await c.expect(/\r\n/), "a1 NO Invalid login or password\r\n");
    c.send(`a2 LOGIN ${USER} wrong-again\r\n`);
    assert.equal(await c.expect(/\r\n/), "a2 NO Invalid login or password\r\n");
    await within(c.closed, 5000, "close after the last attempt");
    await postern.waitForLog(/client login failed: "Invalid login or password"/);
    assert.doesNotMatch(postern.logs(), /wrong-again/);
  });

  test(`${target}: external auth_http gets nginx's headers and reuses its connection`, async () => {
    auth.setHandler(authOk("127.0.0.1", dovecot.imapPort));
    const n = auth.requests.length;
    const conns = auth.connections();
    for (let i = 0; i < 2; i++) {
      const { stdout } = await run("curl", ["-sS", "--max-time", "20", "--interface", "127.0.0.2", `imap://127.0.0.1:${p.http}/`, "-u", `${USER}:${PASS}`, "--login-options", "AUTH=PLAIN"]);
      assert.match(stdout, /INBOX/);
    }
    const reqs = (await auth.waitForRequests(n + 2)).slice(n);
    const r = reqs[0];
    assert.equal(r.method, "GET");
    assert.equal(r.header("Auth-Method"), "plain");
    assert.equal(r.header("Auth-User"), USER);
    assert.equal(r.header("Auth-Pass"), PASS);
    assert.equal(r.header("Auth-Protocol"), "imap");
    assert.equal(r.header("Auth-Login-Attempt"), "1");
    assert.equal(r.header("Client-IP"), "127.0.0.2");
    assert.equal(r.header("X-Auth-Key"), "k3y");
    assert.equal(auth.connections() - conns, 1, "both requests went over one keep-alive connection");
  });

  test(`${target}: a UTF-8 password with bytes 0x80-0x9f logs in to Dovecot byte for byte, through auth_http and the built-in auth, and as a backend_password`, async () => {
    auth.setHandler(authOk("127.0.0.1", dovecot.imapPort));
    const pw = Buffer.from(UTF8_PASS, "utf8");
    for (const port of [p.http, p.builtin]) {
      const c = await connectClient(port);
      await c.expect(/ready\r\n/);
      c.send(`u1 LOGIN ${UTF8_USER} {${pw.length}}\r\n`);
      await c.expect(/^\+ OK\r\n/);
      c.send(Buffer.concat([pw, Buffer.from("\r\n")]));
      assert.match(await c.expect(/u1 (OK|NO|BAD) .*\r\n/, 10_000), /u1 OK /);
      c.send("u2 LOGOUT\r\n");
      await c.expect(/u2 OK/);
      c.end();
      await within(c.closed, 5000, "close after LOGOUT");
    }
    // nginx's escaping: every byte from 0x7f up as %XX, the bytes of the UTF-8 text
    assert.equal(auth.requests.at(-1)!.header("Auth-Pass"), "za%C5%BC%C3%B3%C5%82%C4%87-%E2%82%AC");
    // and a backend_password from the config reaches Dovecot as its UTF-8 bytes
    const c = await connectClient(p.builtin);
    await c.expect(/ready\r\n/);
    c.send("u3 LOGIN utf8-relay relay-pass\r\n");
    assert.match(await c.expect(/u3 (OK|NO|BAD) .*\r\n/, 10_000), /u3 OK /);
    c.send("u4 LOGOUT\r\n");
    await c.expect(/u4 OK/);
    c.end();
    await within(c.closed, 5000, "close after LOGOUT");
  });

  test(`${target}: a backend whose greeting lists LITERAL+ gets the whole LOGIN at once, with non-synchronizing literals`, async () => {
    auth.setHandler(authOk("127.0.0.1", backend.port));
    const n = backend.connections.length;
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send("t6 LOGIN \"a\\\\b\" {6}\r\n");
    await c.expect(/^\+ OK\r\n/);
    c.send("s3cr\xe9t\r\n");
    // the mock backend sends no "+" for a {n+} literal: a proxy that waited for one would hang here
    await c.expect(/t6 OK .*\r\n/);
    const [conn] = (await backend.waitForConnections(n + 1)).slice(n);
    assert.equal(conn.receivedText(), "t6 LOGIN {3+}\r\na\\b {6+}\r\ns3cr\xe9t\r\n");
    assert.deepEqual(conn.logins.at(-1), { user: "a\\b", password: "s3cr\xe9t" });
    c.send("t9 LOGOUT\r\n");
    await c.expect(/t9 OK/);
    c.end();
    await within(c.closed, 5000, "close after the relay ends");
  });

  test(`${target}: a real Dovecot greets with LITERAL+, and a UTF-8 backend_password logs in to it through the one-write LOGIN`, async () => {
    const direct = await connectClient(dovecot.imapPort);
    assert.match(await direct.expect(/\r\n/), /^\* OK \[CAPABILITY [^\]]*\bLITERAL\+/);
    direct.end();
    const before = dovecot.logins().length;
    const c = await connectClient(p.builtin);
    await c.expect(/ready\r\n/);
    c.send(`u1 LOGIN {${Buffer.byteLength("utf8-relay")}}\r\n`);
    await c.expect(/^\+ OK\r\n/);
    c.send("utf8-relay relay-pass\r\n");
    assert.match(await c.expect(/u1 (OK|NO|BAD) .*\r\n/, 10_000), /u1 OK /);
    c.send("u2 LOGOUT\r\n");
    await c.expect(/u2 OK/);
    await dovecot.waitForLogin(before, (l) => l.user === UTF8_USER, 5000);
    c.end();
    await within(c.closed, 5000, "close after LOGOUT");
  });

  test(`${target}: a backend that greets without capabilities gets LOGIN with literals exactly as nginx sends it, then bytes flow both ways`, async () => {
    const backend = plainGreeter;
    auth.setHandler(authOk("127.0.0.1", backend.port));
    const n = backend.connections.length;
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send("t7 LOGIN {9}\r\n");
    await c.expect(/^\+ OK\r\n/);
    c.send("a\r\nb\x00c\r\nd {6}\r\n");
    await c.expect(/^\+ OK\r\n/);
    c.send("secret\r\n");
    await c.expect(/t7 OK .*\r\n/);
    const [conn] = (await backend.waitForConnections(n + 1)).slice(n);
    assert.equal(conn.receivedText(), "t7 LOGIN {9}\r\na\r\nb\x00c\r\nd {6}\r\nsecret\r\n");
    const req = auth.requests.at(-1)!;
    assert.equal(req.header("Auth-User"), "a%0D%0Ab%00c%0D%0Ad");
    // relay: a 200 KB literal goes through byte-exact
    const big = "x".repeat(200_000);
    c.send(`t8 APPEND INBOX {${big.length}+}\r\n${big}\r\n`);
    await c.expect(/t8 OK .*\r\n/, 20_000);
    // the echo backend answers the APPEND line at once and the literal's line once it has all of
    // it: that answer, not t8's, says the literal has arrived
    await c.expect(/\* BAD \[CLIENTBUG\] echo: x+\r\n/, 20_000);
    assert.ok(conn.receivedText().endsWith(`t8 APPEND INBOX {${big.length}+}\r\n${big}\r\n`));
    c.send("t9 LOGOUT\r\n");
    await c.expect(/t9 OK/);
    c.end();
    await within(c.closed, 5000, "close after the relay ends");
  });

  test(`${target}: pipelined commands after LOGIN reach the backend after the login, in order`, async () => {
    auth.setHandler(authOk("127.0.0.1", backend.port));
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send("a1 LOGIN alice secret\r\na2 NOOP\r\na3 NOOP\r\n");
    await c.expect(/a1 OK.*\r\n/);
    await c.expect(/a2 OK.*\r\n/);
    await c.expect(/a3 OK.*\r\n/);
    c.destroy();
  });

  test(`${target}: a backend that refuses the connection gives the internal error and a close`, async () => {
    // nothing listens on 127.0.0.9: another test server can never take this port there
    auth.setHandler(authOk("127.0.0.9", closedPort));
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send("a1 LOGIN alice secret\r\n");
    assert.equal(await c.expect(/\r\n/), "* BAD internal server error\r\n");
    await within(c.closed, 5000, "close");
  });

  test(`${target}: a backend that never greets times out into the internal error`, async () => {
    auth.setHandler(authOk("127.0.0.1", silent.port));
    const c = await connectClient(p.strict);
    await c.expect(/ready\r\n/);
    c.send("a1 LOGIN alice secret\r\n");
    assert.equal(await c.expect(/\r\n/, 5000), "* BAD internal server error\r\n");
    await within(c.closed, 5000, "close");
    await postern.waitForLog(/upstream timed out/);
  });

  test(`${target}: a backend that drops mid-login gives the internal error`, async () => {
    auth.setHandler(authOk("127.0.0.1", dropper.port));
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send("a1 LOGIN alice secret\r\n");
    assert.equal(await c.expect(/\r\n/), "* BAD internal server error\r\n");
    await within(c.closed, 5000, "close");
  });

  test(`${target}: a backend login refusal is passed on with proxy_pass_error_message`, async () => {
    auth.setHandler(authOk("127.0.0.1", dovecot.imapPort));
    const c = await connectClient(p.passErr);
    await c.expect(/ready\r\n/);
    c.send(`a1 LOGIN ${USER} not-the-password\r\n`);
    assert.match(await c.expect(/\r\n/, 10_000), /^a1 NO \[AUTHENTICATIONFAILED\] /);
    await within(c.closed, 5000, "close");
  });

  test(`${target}: an auth server that never answers is bounded by auth_http_timeout`, async () => {
    auth.setHandler({ hang: true });
    const c = await connectClient(p.strict);
    await c.expect(/ready\r\n/);
    c.send("a1 LOGIN alice secret\r\n");
    assert.equal(await c.expect(/\r\n/, 5000), "* BAD internal server error\r\n");
    await within(c.closed, 5000, "close");
  });

  test(`${target}: garbage from the auth server gives the internal error`, async () => {
    auth.setHandler({ raw: "garbage\r\n\r\n" });
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send("a1 LOGIN alice secret\r\n");
    assert.equal(await c.expect(/\r\n/, 5000), "* BAD internal server error\r\n");
    await within(c.closed, 5000, "close");
  });

  test(`${target}: an auth failure without Auth-Wait closes after the NO`, async () => {
    auth.setHandler(authFail("Go away"));
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send("a1 LOGIN alice secret\r\n");
    assert.equal(await c.expect(/\r\n/), "a1 NO Go away\r\n");
    await within(c.closed, 5000, "close");
  });

  test(`${target}: an over-long line and an oversized literal are refused and closed`, async () => {
    const c = await connectClient(p.strict);
    await c.expect(/ready\r\n/);
    c.send(`a1 LOGIN ${"u".repeat(300)} p\r\n`);
    assert.equal(await c.expect(/\r\n/), "a1 BAD invalid command\r\n");
    await within(c.closed, 5000, "close");
    const d = await connectClient(p.strict);
    await d.expect(/ready\r\n/);
    d.send("a1 LOGIN {100000}\r\n");
    assert.equal(await d.expect(/\r\n/), "a1 BAD invalid command\r\n");
    await within(d.closed, 5000, "close");
  });

  test(`${target}: an unterminated literal is closed by timeout`, async () => {
    const c = await connectClient(p.strict);
    await c.expect(/ready\r\n/);
    c.send("a1 LOGIN {10}\r\n");
    await c.expect(/^\+ OK\r\n/);
    c.send("abc");
    await within(c.closed, 5000, "close by timeout");
    await postern.waitForLog(/client timed out/);
  });

  test(`${target}: unknown commands, then max_errors, close the connection`, async () => {
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send("a1 SELECT INBOX\r\na2 FOO\r\n\r\nx\r\na5 BAR\r\n");
    assert.equal(await c.expect(/a5 BAD invalid command\r\n/), "a1 BAD invalid command\r\na2 BAD invalid command\r\n* BAD invalid command\r\n* BAD invalid command\r\na5 BAD invalid command\r\n");
    await within(c.closed, 5000, "close at max_errors");
  });

  test(`${target}: no session is left behind and Postern stops on TERM`, async () => {
    await waitNoSessions(p);
    assert.doesNotMatch(postern.logs(), /alice-secret|not-the-password|session failed|crashed/);
    const code = await postern.stop();
    assert.equal(code, 0);
  });
}
