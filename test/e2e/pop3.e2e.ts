// POP3 end to end: Postern under each target (node, deno, bun, binary) between real clients
// (curl, Python's poplib, a byte-exact client) and a real Dovecot, a scripted backend and a
// scripted auth_http server.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { Buffer } from "node:buffer";
import { type Dovecot, startDovecot } from "../support/dovecot.ts";
import { authFail, authOk, type MockAuth, startMockAuth } from "../support/mock-auth.ts";
import { type MockBackend, pop3Backend, startMockBackend } from "../support/mock-backend.ts";
import { freePorts } from "../support/ports.ts";
import { type Postern, startPostern, targets } from "../support/postern.ts";
import { connectClient, within } from "../support/line-client.ts";

const run = promisify(execFile);
const USER = "alice@example.com";
const PASS = "alice-secret";
const SUBJECT = "Subject: hello through postern pop3";

let dovecot: Dovecot;
let auth: MockAuth;
let backend: MockBackend; // scripted POP3 server: greeting, USER/PASS (any), echo
let refusing: MockBackend; // greeting, USER/PASS answered -ERR
let closedPort: number;

before(async () => {
  dovecot = await startDovecot({ users: [{ user: USER, password: PASS }] });
  dovecot.putMessage(USER, `From: bob@example.com\r\nTo: ${USER}\r\n${SUBJECT}\r\n\r\nbody line\r\n`);
  auth = await startMockAuth(authOk("127.0.0.1", dovecot.pop3Port));
  backend = await startMockBackend({ script: pop3Backend("any") });
  refusing = await startMockBackend({ script: pop3Backend({ user: "nobody", password: "never" }) });
  [closedPort] = await freePorts(1);
});

after(async () => {
  await Promise.all([dovecot?.stop(), auth?.close(), backend?.close(), refusing?.close()]);
});

interface Ports { builtin: number; digest: number; http: number; passErr: number; metrics: number }

function config(p: Ports): string {
  // the built-in user has a plain password (APOP and CRAM-MD5 need it) and a backend per protocol
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
      password: ${PASS}
      backend:
        imap: 127.0.0.1:${dovecot.imapPort}
        pop3: 127.0.0.1:${dovecot.pop3Port}
mail:
  servers:
    - listen: [127.0.0.1:${p.builtin}]
      protocol: pop3
      auth_http: builtin
    - listen: [127.0.0.1:${p.digest}]
      protocol: pop3
      auth_http: builtin
      pop3_auth: [plain, apop, cram-md5]
    - listen: [127.0.0.1:${p.http}]
      protocol: pop3
      auth_http: ${auth.url}
      auth_http_header: { X-Auth-Key: k3y }
    - listen: [127.0.0.1:${p.passErr}]
      protocol: pop3
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

const b64 = (s: string) => Buffer.from(s, "latin1").toString("base64");

for (const target of targets()) {
  let postern: Postern;
  let p: Ports;

  test(`${target}: Postern starts POP3 listeners and answers /health`, async () => {
    const [a, b, c, d, e] = await freePorts(5);
    p = { builtin: a, digest: b, http: c, passErr: d, metrics: e };
    postern = await startPostern(target, config(p));
    const h = await (await fetch(`http://127.0.0.1:${p.metrics}/health`)).json();
    assert.equal(h.status, "ok");
    assert.match(postern.logs(), /postern\/\d+\.\d+\.\d+/);
  });

  test(`${target}: curl lists and retrieves a real Dovecot mailbox through Postern with the built-in auth`, async () => {
    const before = dovecot.logins().length;
    const list = await run("curl", ["-sS", "--max-time", "20", "--interface", "127.0.0.2", `pop3://127.0.0.1:${p.builtin}/`, "-u", `${USER}:${PASS}`]);
    assert.match(list.stdout, /^1 \d+\r?$/m);
    const retr = await run("curl", ["-sS", "--max-time", "20", "--interface", "127.0.0.2", `pop3://127.0.0.1:${p.builtin}/1`, "-u", `${USER}:${PASS}`]);
    assert.match(retr.stdout, new RegExp(SUBJECT));
    assert.match(retr.stdout, /body line/);
    // Dovecot writes its log through its log process, a moment after the client has its answer
    const login = await dovecot.waitForLogin(before, (l) => l.user === USER && l.service === "pop3-login", 5000);
    // the client was 127.0.0.2; Dovecot saw the proxy's address
    assert.equal(login.realRip, "127.0.0.1");
    await postern.waitForLog(/client logged in, client: 127\.0\.0\.2, server: 127\.0\.0\.1:\d+, login: "alice@example\.com", upstream: 127\.0\.0\.1:\d+/);
  });

  test(`${target}: Python poplib logs in with USER/PASS and retrieves a message through Postern`, async () => {
    const script = `
import poplib
m = poplib.POP3("127.0.0.1", ${p.builtin}, timeout=20)
print(m.getwelcome().decode())
m.user(${JSON.stringify(USER)})
m.pass_(${JSON.stringify(PASS)})
count, size = m.stat()
print(count)
resp, lines, octets = m.retr(1)
print("\\n".join(l.decode() for l in lines))
m.quit()
`;
    const { stdout } = await run("python3", ["-c", script]);
    const out = stdout.split("\n");
    assert.equal(out[0], "+OK POP3 ready");
    assert.equal(out[1], "1");
    assert.ok(out.includes(SUBJECT), stdout);
  });

  test(`${target}: APOP with the greeting's salt, and CRAM-MD5, log in to Dovecot through the built-in auth`, async () => {
    const c = await connectClient(p.digest);
    const greeting = await c.expect(/\r\n/);
    const salt = /^\+OK POP3 ready (<\d+\.\d+@mail\.test>)\r\n$/.exec(greeting)?.[1];
    assert.ok(salt, `nginx's salt in the greeting: ${JSON.stringify(greeting)}`);
    c.send(`APOP ${USER} ${createHash("md5").update(salt + PASS).digest("hex")}\r\n`);
    assert.match(await c.expect(/\r\n/, 10_000), /^\+OK /);
    c.send("STAT\r\n");
    assert.match(await c.expect(/\r\n/), /^\+OK 1 \d+\r\n$/);
    c.send("QUIT\r\n");
    await c.expect(/^\+OK .*\r\n/);
    await within(c.closed, 5000, "close after QUIT");

    const d = await connectClient(p.digest);
    const salt2 = /(<[^>]+>)/.exec(await d.expect(/\r\n/))![1];
    d.send("AUTH CRAM-MD5\r\n");
    const challenge = await d.expect(/\r\n/);
    assert.equal(challenge, `+ ${b64(salt2)}\r\n`);
    d.send(b64(`${USER} ${createHmac("md5", PASS).update(salt2).digest("hex")}`) + "\r\n");
    assert.match(await d.expect(/\r\n/, 10_000), /^\+OK /);
    d.send("QUIT\r\n");
    await d.expect(/^\+OK .*\r\n/);
    await within(d.closed, 5000, "close after QUIT");
  });

  test(`${target}: AUTH PLAIN from the line client logs in to Dovecot`, async () => {
    const c = await connectClient(p.builtin);
    await c.expect(/^\+OK POP3 ready\r\n/);
    c.send("CAPA\r\n");
    assert.equal(await c.expect(/\r\n\.\r\n/), "+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\n.\r\n");
    c.send(`AUTH PLAIN ${b64(`\0${USER}\0${PASS}`)}\r\n`);
    assert.match(await c.expect(/\r\n/, 10_000), /^\+OK /);
    c.send("LIST\r\n");
    assert.match(await c.expect(/\r\n\.\r\n/), /^\+OK .*\r\n1 \d+\r\n\.\r\n$/);
    c.send("QUIT\r\n");
    await c.expect(/^\+OK .*\r\n/);
    await within(c.closed, 5000, "close after QUIT");
  });

  test(`${target}: a wrong password gets nginx's -ERR, a retry after Auth-Wait, then a close`, async () => {
    const c = await connectClient(p.builtin);
    await c.expect(/ready\r\n/);
    c.send(`USER ${USER}\r\n`);
    assert.equal(await c.expect(/\r\n/), "+OK\r\n");
    c.send("PASS wrong\r\n");
    assert.equal(await c.expect(/\r\n/), "-ERR Invalid login or password\r\n");
    c.send(`USER ${USER}\r\nPASS wrong-again\r\n`);
    assert.equal(await c.expect(/-ERR.*\r\n/), "+OK\r\n-ERR Invalid login or password\r\n");
    await within(c.closed, 5000, "close after the last attempt");
    await postern.waitForLog(/client login failed: "Invalid login or password"/);
    assert.doesNotMatch(postern.logs(), /wrong-again/);
  });

  test(`${target}: the backend gets USER and PASS exactly as nginx sends them, then bytes flow both ways`, async () => {
    auth.setHandler(authOk("127.0.0.1", backend.port));
    const n = backend.connections.length;
    const r = auth.requests.length;
    const c = await connectClient(p.http);
    await c.expect(/^\+OK POP3 ready\r\n/);
    c.send("USER  alice smith\r\n");
    assert.equal(await c.expect(/\r\n/), "+OK\r\n");
    c.send("PASS pass word \r\n");
    assert.equal(await c.expect(/\r\n/), "+OK Logged in.\r\n");
    const [conn] = (await backend.waitForConnections(n + 1)).slice(n);
    c.send("STAT\r\n");
    assert.equal(await c.expect(/\r\n/), "+OK echo STAT\r\n");
    assert.equal(conn.receivedText(), "USER alice smith\r\nPASS pass word \r\nSTAT\r\n");
    const [req] = (await auth.waitForRequests(r + 1)).slice(r);
    assert.equal(req.header("Auth-Method"), "plain");
    assert.equal(req.header("Auth-User"), "alice%20smith");
    assert.equal(req.header("Auth-Pass"), "pass%20word%20");
    assert.equal(req.header("Auth-Protocol"), "pop3");
    assert.equal(req.header("Client-IP"), "127.0.0.2");
    assert.equal(req.header("X-Auth-Key"), "k3y");
    c.send("QUIT\r\n");
    assert.equal(await c.expect(/\r\n/), "+OK Logging out.\r\n");
    await within(c.closed, 5000, "close after the backend's QUIT");
  });

  test(`${target}: commands pipelined behind PASS reach the backend after the login, in order`, async () => {
    auth.setHandler(authOk("127.0.0.1", backend.port));
    const n = backend.connections.length;
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send("USER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\n");
    assert.equal(await c.expect(/LIST\r\n/), "+OK\r\n+OK Logged in.\r\n+OK echo STAT\r\n+OK echo LIST\r\n");
    const [conn] = (await backend.waitForConnections(n + 1)).slice(n);
    assert.equal(conn.receivedText(), "USER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\n");
    c.destroy();
  });

  test(`${target}: a 12 KB AUTH PLAIN initial response fits the default pop3_client_buffer`, async () => {
    auth.setHandler(authOk("127.0.0.1", backend.port));
    const n = backend.connections.length;
    const long = "p".repeat(9000);
    const ir = b64(`\0alice\0${long}`);
    assert.ok(ir.length > 12_000);
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send(`AUTH PLAIN ${ir}\r\n`);
    assert.equal(await c.expect(/\r\n/), "+OK Logged in.\r\n");
    const [conn] = (await backend.waitForConnections(n + 1)).slice(n);
    assert.deepEqual(conn.logins, [{ user: "alice", password: long }]);
    c.destroy();
  });

  test(`${target}: a line longer than pop3_client_buffer is refused and closed`, async () => {
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send(`AUTH PLAIN ${"A".repeat(17_000)}\r\n`);
    assert.equal(await c.expect(/\r\n/), "-ERR invalid command\r\n");
    await within(c.closed, 5000, "close");
    await postern.waitForLog(/client sent too long command/);
  });

  test(`${target}: a user name with CR LF from AUTH PLAIN never reaches the backend`, async () => {
    auth.setHandler(authOk("127.0.0.1", backend.port));
    const n = backend.connections.length;
    const r = auth.requests.length;
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send(`AUTH PLAIN ${b64("\0alice\r\nDELE 1\0inject-secret")}\r\n`);
    assert.equal(await c.expect(/\r\n/), "-ERR internal server error\r\n");
    await within(c.closed, 5000, "close");
    const [req] = (await auth.waitForRequests(r + 1)).slice(r);
    assert.equal(req.header("Auth-User"), "alice%0D%0ADELE%201");
    await postern.waitForLog(/refusing to log in to the backend: the user name contains CR, LF or NUL/);
    assert.equal(backend.connections.length, n, "no connection to the backend");
    assert.doesNotMatch(postern.logs(), /inject-secret/);
  });

  test(`${target}: a backend that refuses the login gives the internal error and a close`, async () => {
    auth.setHandler(authOk("127.0.0.1", refusing.port));
    const n = refusing.connections.length;
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send("USER alice\r\nPASS secret\r\n");
    assert.equal(await c.expect(/-ERR.*\r\n/), "+OK\r\n-ERR internal server error\r\n");
    await within(c.closed, 5000, "close");
    const [conn] = (await refusing.waitForConnections(n + 1)).slice(n);
    assert.equal(conn.receivedText(), "USER alice\r\nPASS secret\r\n");
    await postern.waitForLog(/upstream sent invalid response: "-ERR \[AUTH\] Authentication failed\."/);
  });

  test(`${target}: a backend that refuses the connection gives the internal error`, async () => {
    // nothing listens on 127.0.0.9: another test server can never take this port there
    auth.setHandler(authOk("127.0.0.9", closedPort));
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send("USER alice\r\nPASS secret\r\n");
    assert.equal(await c.expect(/-ERR.*\r\n/), "+OK\r\n-ERR internal server error\r\n");
    await within(c.closed, 5000, "close");
  });

  test(`${target}: Dovecot's refusal is passed on with proxy_pass_error_message`, async () => {
    auth.setHandler(authOk("127.0.0.1", dovecot.pop3Port));
    const c = await connectClient(p.passErr);
    await c.expect(/ready\r\n/);
    c.send(`USER ${USER}\r\nPASS not-the-password\r\n`);
    assert.match(await c.expect(/-ERR.*\r\n/, 15_000), /^\+OK\r\n-ERR \[AUTH\] /);
    await within(c.closed, 5000, "close");
  });

  test(`${target}: an auth failure without Auth-Wait closes after the -ERR`, async () => {
    auth.setHandler(authFail("Go away"));
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send("USER alice\r\nPASS secret\r\n");
    assert.equal(await c.expect(/-ERR.*\r\n/), "+OK\r\n-ERR Go away\r\n");
    await within(c.closed, 5000, "close");
  });

  test(`${target}: unknown commands, then max_errors, close the connection`, async () => {
    const c = await connectClient(p.http);
    await c.expect(/ready\r\n/);
    c.send("STAT\r\nLIST\r\n\r\nPASS x\r\nRETR 1\r\n");
    assert.equal(await c.expect(/(-ERR invalid command\r\n){5}/), "-ERR invalid command\r\n".repeat(5));
    await within(c.closed, 5000, "close at max_errors");
  });

  test(`${target}: no POP3 session is left behind and Postern stops on TERM`, async () => {
    await waitNoSessions(p);
    assert.doesNotMatch(postern.logs(), /alice-secret|not-the-password|session failed|crashed/);
    const code = await postern.stop();
    assert.equal(code, 0);
  });
}
