// SMTP end to end: Postern under each target between real clients (swaks, Python's smtplib, curl,
// a byte-exact client) and a real Postfix (XCLIENT, SASL through Dovecot, delivery to Dovecot over
// LMTP), a scripted backend, a scripted auth_http server and a real dnsmasq for the resolver.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, test } from "node:test";
import * as tls from "node:tls";
import { makeTestPki, type TestPki } from "../support/certs.ts";
import { type Dnsmasq, startDnsmasq, startSilentResolver } from "../support/dnsmasq.ts";
import { type Dovecot, startDovecot } from "../support/dovecot.ts";
import { type AuthRequest, authOk, type MockAuth, startMockAuth } from "../support/mock-auth.ts";
import { type MockBackend, SMTP_GREETING, smtpXclientBackend, startMockBackend, type Step } from "../support/mock-backend.ts";
import { freePorts } from "../support/ports.ts";
import { type Postfix, startPostfix } from "../support/postfix.ts";
import { type Postern, startPostern, targets } from "../support/postern.ts";
import { connectClient, within } from "../support/line-client.ts";

const ALICE = "alice@example.com";
const ALICE_PASS = "alice-secret";
const BOB = "bob@example.com";
const BOB_PASS = "bob-secret";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a client to its end; a non-zero exit is a result, not an exception. */
function run(cmd: string, args: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: opts.timeoutMs ?? 30_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof (err as { code?: unknown }).code !== "number") {
        reject(new Error(`Cannot run "${cmd} ${args.join(" ")}": ${err.message}\n${stdout}\n${stderr}`));
        return;
      }
      resolve({ code: err ? Number((err as { code?: number }).code) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

let dovecot: Dovecot;
let postfix: Postfix;
let auth: MockAuth;
let backend: MockBackend; // scripted: greeting, EHLO, XCLIENT, the client's EHLO/HELO, then echo
let pipeliner: MockBackend; // offers PIPELINING; answers MAIL FROM only once RCPT TO is in
let dns: Dnsmasq;
let deadDns: Awaited<ReturnType<typeof startSilentResolver>>;
let tmp: string;
let pki: TestPki;

/** The auth service's default: OK, to Dovecot for IMAP/POP3 and to Postfix for SMTP. */
function toRealServers(req: AuthRequest) {
  const proto = req.header("Auth-Protocol");
  const port = proto === "smtp" ? postfix.smtpPort : proto === "pop3" ? dovecot.pop3Port : dovecot.imapPort;
  return authOk("127.0.0.1", port);
}

/** A backend whose EHLO offers PIPELINING and which answers MAIL FROM only once RCPT TO has
 *  arrived too: a proxy that waited for the first reply before sending RCPT TO would hang. */
function pipeliningBackend(): Step[] {
  const ehlo = "250-mock.example.com\r\n250-PIPELINING\r\n250-XCLIENT ADDR LOGIN NAME PORT PROTO HELO\r\n250 8BITMIME\r\n";
  return [
    { send: SMTP_GREETING },
    { expect: /^EHLO /i, reply: ehlo },
    { expect: /^XCLIENT /i, reply: SMTP_GREETING },
    { expect: /^EHLO /i, reply: ehlo },
    { expect: /^MAIL FROM:/i },
    { expect: /^RCPT TO:/i, reply: "250 2.1.0 Ok\r\n250 2.1.5 Ok, pipelined\r\n" },
    { echo: "smtp" },
  ];
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "postern-smtp-"));
  pki = await makeTestPki(tmp);
  dovecot = await startDovecot({ users: [{ user: ALICE, password: ALICE_PASS }, { user: BOB, password: BOB_PASS }], postfixAuthSocket: true });
  postfix = await startPostfix({ domains: ["example.com"], mailboxes: [ALICE, BOB], lmtpPort: dovecot.lmtpPort, saslSocket: dovecot.authSocket });
  auth = await startMockAuth(toRealServers);
  backend = await startMockBackend({ script: smtpXclientBackend() });
  pipeliner = await startMockBackend({ script: pipeliningBackend() });
  dns = await startDnsmasq({
    hosts: [{ name: "client.test", address: "127.0.0.2" }, { name: "elsewhere.test", address: "127.0.0.9" }],
    ptrs: [{ address: "127.0.0.3", name: "elsewhere.test" }], // a PTR its A record does not confirm
    localZones: ["test", "0.0.127.in-addr.arpa"],
  });
  deadDns = await startSilentResolver();
});

after(async () => {
  await Promise.all([postfix?.stop(), auth?.close(), backend?.close(), pipeliner?.close(), dns?.stop(), deadDns?.stop()]);
  await dovecot?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

interface Ports {
  smtp: number; // built-in auth, XCLIENT into Postfix
  imap: number;
  pop3: number;
  http: number; // auth_http (mock), XCLIENT
  proxyAuth: number; // proxy_smtp_auth on
  none: number; // smtp_auth none
  delay: number; // smtp_greeting_delay
  resolver: number; // resolver: dnsmasq
  deadResolver: number; // resolver: a server that never answers
  tls: number; // starttls: only
  metrics: number;
}

function config(p: Ports): string {
  const viaHttp = `auth_http: ${auth.url}`;
  return `
server_name: mail.test
error_log: { level: info }
http:
  listen: 127.0.0.1:${p.metrics}
auth:
  failure_delay: 1s
  max_attempts: 3
  users:
    - user: ${ALICE}
      password: ${ALICE_PASS}
      backend: { imap: 127.0.0.1:${dovecot.imapPort}, pop3: 127.0.0.1:${dovecot.pop3Port}, smtp: 127.0.0.1:${postfix.smtpPort} }
mail:
  servers:
    - listen: [127.0.0.1:${p.smtp}]
      protocol: smtp
      smtp_capabilities: [PIPELINING, "SIZE 10485760", 8BITMIME]
    - listen: [127.0.0.1:${p.imap}]
      protocol: imap
    - listen: [127.0.0.1:${p.pop3}]
      protocol: pop3
    - listen: [127.0.0.1:${p.http}]
      protocol: smtp
      ${viaHttp}
    - listen: [127.0.0.1:${p.proxyAuth}]
      protocol: smtp
      ${viaHttp}
      proxy_smtp_auth: on
    - listen: [127.0.0.1:${p.none}]
      protocol: smtp
      ${viaHttp}
      smtp_auth: [none]
    - listen: [127.0.0.1:${p.delay}]
      protocol: smtp
      smtp_greeting_delay: 1s
    - listen: [127.0.0.1:${p.resolver}]
      protocol: smtp
      ${viaHttp}
      resolver: [127.0.0.1:${dns.port}]
      resolver_timeout: 5s
    - listen: [127.0.0.1:${p.deadResolver}]
      protocol: smtp
      ${viaHttp}
      resolver: [127.0.0.1:${deadDns.port}]
      resolver_timeout: 1s
    - listen: [127.0.0.1:${p.tls}]
      protocol: smtp
      ${viaHttp}
      starttls: only
      ssl_certificate: server.pem
      ssl_certificate_key: server.key
`;
}

async function waitNoSessions(p: Ports): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const m = await (await fetch(`http://127.0.0.1:${p.metrics}/metrics`)).text();
    if (/^postern_sessions_active 0$/m.test(m)) return;
    if (Date.now() > deadline) throw new Error(`sessions still active:\n${m}`);
    await new Promise((r) => setTimeout(r, 50)); // polling the condition, not sleeping instead of it
  }
}

/** Postfix's queue id for a message, found by its Message-ID, once the message is delivered. */
async function delivered(messageId: string): Promise<{ queueId: string; smtpdLine: string }> {
  const idLine = await postfix.waitForLog(new RegExp(`: message-id=<${messageId.replace(/[.]/g, "\\.")}>`));
  const queueId = /: ([0-9A-F]+): message-id=/.exec(idLine)![1];
  await postfix.waitForLog(new RegExp(`${queueId}: to=<[^>]+>, relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${dovecot.lmtpPort}.*status=sent`));
  const smtpdLine = await postfix.waitForLog(new RegExp(`smtpd\\[\\d+\\]: ${queueId}: client=`));
  return { queueId, smtpdLine };
}

let seq = 0;
const unique = (what: string) => `${what}-${process.pid}-${Date.now()}-${++seq}`;

for (const target of targets()) {
  let postern: Postern;
  let p: Ports;

  test(`${target}: Postern starts with SMTP servers`, async () => {
    const [a, b, c, d, e, f, g, h, i, j, k] = await freePorts(11);
    p = { smtp: a, imap: b, pop3: c, http: d, proxyAuth: e, none: f, delay: g, resolver: h, deadResolver: i, tls: j, metrics: k };
    postern = await startPostern(target, config(p), { files: { "server.pem": pki.certPem, "server.key": pki.keyPem } });
    const cl = await connectClient(p.smtp);
    assert.equal(await cl.expect(/\r\n/), "220 mail.test ESMTP ready\r\n");
    cl.send("EHLO client.example\r\n");
    assert.equal(await cl.expect(/^250 .*\r\n/m), "250-mail.test\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n250 AUTH PLAIN LOGIN\r\n");
    cl.send("QUIT\r\n");
    assert.equal(await cl.expect(/\r\n/), "221 2.0.0 Bye\r\n");
    await within(cl.closed, 5000, "close after QUIT");
  });

  for (const mech of ["PLAIN", "LOGIN"]) {
    test(`${target}: swaks sends a mail with AUTH ${mech} through Postern's XCLIENT into Postfix and on to Dovecot`, async () => {
      const id = unique(`swaks-${mech}`);
      const r = await run("swaks", [
        "--server", `127.0.0.1:${p.smtp}`, "--local-interface", "127.0.0.2", "--helo", "client.example",
        "--auth", mech, "--auth-user", ALICE, "--auth-password", ALICE_PASS,
        "--from", "sender@example.org", "--to", ALICE, "--header", `Message-Id: <${id}@test>`, "--header", `Subject: ${id}`,
      ]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /<[-~] +235 2\.0\.0 OK/);
      assert.match(r.stdout, /<[-~] +250 2\.0\.0 Ok: queued as/);
      const { smtpdLine } = await delivered(`${id}@test`);
      // Postfix believes the client (127.0.0.2, via XCLIENT), not the proxy (127.0.0.1)
      assert.match(smtpdLine, /client=unknown\[127\.0\.0\.2\], sasl_method=XCLIENT, sasl_username=alice@example\.com/);
      assert.match(postfix.readLog(), /connect from unknown\[127\.0\.0\.1\]/);
      await postern.waitForLog(/client logged in, client: 127\.0\.0\.2, server: 127\.0\.0\.1:\d+, login: "alice@example\.com", upstream: 127\.0\.0\.1:\d+/);
    });
  }

  test(`${target}: one mail end to end: Python smtplib through Postern, Postfix, Dovecot, then read through Postern's IMAP and POP3`, async () => {
    const id = unique("e2e");
    const script = `
import smtplib
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "sender@example.org"
m["To"] = ${JSON.stringify(ALICE)}
m["Subject"] = ${JSON.stringify(id)}
m["Message-ID"] = "<${id}@test>"
m.set_content("hello through postern\\n")
s = smtplib.SMTP("127.0.0.1", ${p.smtp}, source_address=("127.0.0.2", 0))
s.ehlo("client.example")
s.login(${JSON.stringify(ALICE)}, ${JSON.stringify(ALICE_PASS)})
s.send_message(m)
s.quit()
print("sent")
`;
    const sent = await run("python3", ["-c", script]);
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal(sent.stdout.trim(), "sent");
    const { smtpdLine } = await delivered(`${id}@test`);
    assert.match(smtpdLine, /client=unknown\[127\.0\.0\.2\]/);
    const imap = await run("python3", ["-c", `
import imaplib
m = imaplib.IMAP4("127.0.0.1", ${p.imap})
m.login(${JSON.stringify(ALICE)}, ${JSON.stringify(ALICE_PASS)})
m.select("INBOX")
typ, ids = m.search(None, "SUBJECT", ${JSON.stringify(id)})
typ, msg = m.fetch(ids[0].split()[-1], "(BODY[HEADER.FIELDS (SUBJECT)] BODY[TEXT])")
print(msg[0][1].decode().strip())
print(msg[1][1].decode().strip())
m.logout()
`]);
    assert.equal(imap.code, 0, imap.stderr);
    assert.deepEqual(imap.stdout.trim().split("\n"), [`Subject: ${id}`, "hello through postern"]);
    const pop = await run("python3", ["-c", `
import poplib
m = poplib.POP3("127.0.0.1", ${p.pop3})
m.user(${JSON.stringify(ALICE)})
m.pass_(${JSON.stringify(ALICE_PASS)})
n = len(m.list()[1])
found = [l.decode() for i in range(1, n + 1) for l in m.top(i, 0)[1] if l.decode() == "Subject: ${id}"]
print(found[0])
m.quit()
`]);
    assert.equal(pop.code, 0, pop.stderr);
    assert.equal(pop.stdout.trim(), `Subject: ${id}`);
  });

  test(`${target}: curl sends a mail over smtp:// through Postern`, async () => {
    const id = unique("curl");
    const r = await run("curl", [
      "-sS", "--max-time", "20", "--interface", "127.0.0.2", `smtp://127.0.0.1:${p.smtp}/client.example`,
      "--mail-from", "sender@example.org", "--mail-rcpt", ALICE, "-u", `${ALICE}:${ALICE_PASS}`, "-T", "-",
    ], { input: `From: sender@example.org\r\nTo: ${ALICE}\r\nSubject: ${id}\r\nMessage-ID: <${id}@test>\r\n\r\nvia curl\r\n` });
    assert.equal(r.code, 0, r.stderr);
    const { smtpdLine } = await delivered(`${id}@test`);
    assert.match(smtpdLine, /client=unknown\[127\.0\.0\.2\].*sasl_username=alice@example\.com/);
  });

  test(`${target}: a wrong password gets 535 5.7.8 from the built-in service and the client may retry`, async () => {
    const c = await connectClient(p.smtp);
    await c.expect(/220 .*\r\n/);
    c.send(`AUTH PLAIN ${Buffer.from(`\0${ALICE}\0wrong`).toString("base64")}\r\n`);
    assert.equal(await c.expect(/\r\n/), "535 5.7.8 Invalid login or password\r\n");
    c.send(`AUTH PLAIN ${Buffer.from(`\0${ALICE}\0${ALICE_PASS}`).toString("base64")}\r\n`);
    assert.equal(await c.expect(/\r\n/), "235 2.0.0 OK\r\n");
    c.send("QUIT\r\n");
    assert.match(await c.expect(/\r\n/), /^221 /);
    await within(c.closed, 5000, "close after QUIT");
  });

  test(`${target}: proxy_smtp_auth logs in to Postfix with AUTH PLAIN (SASL through Dovecot), XCLIENT without LOGIN`, async () => {
    auth.setHandler(authOk("127.0.0.1", postfix.smtpPort, { "Auth-User": BOB, "Auth-Pass": BOB_PASS }));
    try {
      const id = unique("proxy-auth");
      const r = await run("swaks", [
        "--server", `127.0.0.1:${p.proxyAuth}`, "--local-interface", "127.0.0.2", "--helo", "client.example",
        "--auth", "PLAIN", "--auth-user", "frontend-name", "--auth-password", "frontend-pass",
        "--from", "sender@example.org", "--to", BOB, "--header", `Message-Id: <${id}@test>`,
      ]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const { smtpdLine } = await delivered(`${id}@test`);
      assert.match(smtpdLine, /client=unknown\[127\.0\.0\.2\], sasl_method=PLAIN, sasl_username=bob@example\.com/);
      const req = auth.requests.at(-1)!;
      assert.equal(req.header("Auth-User"), "frontend-name");
      // a backend that refuses the password: nginx's 451 and a close
      auth.setHandler(authOk("127.0.0.1", postfix.smtpPort, { "Auth-User": BOB, "Auth-Pass": "wrong" }));
      const c = await connectClient(p.proxyAuth);
      await c.expect(/220 .*\r\n/);
      c.send("EHLO client.example\r\n");
      await c.expect(/^250 .*\r\n/m);
      c.send(`AUTH PLAIN ${Buffer.from("\0x\0y").toString("base64")}\r\n`);
      assert.equal(await c.expect(/\r\n/, 15_000), "451 4.3.2 Internal server error\r\n");
      await within(c.closed, 5000, "close after the backend refused");
      await postern.waitForLog(/upstream sent invalid response: "535 /);
    } finally {
      auth.setHandler(toRealServers);
    }
  });

  test(`${target}: smtp_auth none sends Auth-SMTP-Helo/From/To and replays the envelope to the backend`, async () => {
    auth.setHandler(authOk("127.0.0.1", backend.port));
    try {
      const n = backend.connections.length;
      const before = auth.requests.length;
      const c = await connectClient(p.none);
      assert.equal(await c.expect(/\r\n/), "220 mail.test ESMTP ready\r\n");
      c.send("EHLO client.example\r\n");
      assert.equal(await c.expect(/\r\n/), "250 mail.test\r\n");
      c.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
      // PLAIN and LOGIN are always accepted (as in nginx), even when smtp_auth lists only none
      c.send("MAIL FROM:<alice@example.org> BODY=8BITMIME\r\n");
      assert.equal(await c.expect(/\r\n/), "235 2.0.0 OK\r\n");
      await c.expect(/250 2\.0\.0 echo MAIL FROM:<alice@example.org> BODY=8BITMIME\r\n/);
      c.send("QUIT\r\n");
      await within(c.closed, 5000, "close after QUIT");
      const d = await connectClient(p.none);
      await d.expect(/220 .*\r\n/);
      d.send("EHLO client.example\r\nMAIL FROM:<alice@example.org> BODY=8BITMIME\r\nRCPT TO:<bob@example.com>\r\n");
      assert.equal(await d.expect(/250 2\.0\.0 echo RCPT TO:<bob@example\.com>\r\n/), "250 mail.test\r\n250 2.0.0 OK\r\n250 2.0.0 echo RCPT TO:<bob@example.com>\r\n");
      d.send("DATA\r\n");
      await d.expect(/^354 .*\r\n/m);
      d.send("Subject: none\r\n\r\nbody\r\n.\r\nQUIT\r\n");
      await d.expect(/250 2\.0\.0 Ok: queued as MOCK\r\n/);
      await within(d.closed, 5000, "close after QUIT");
      const req = (await auth.waitForRequests(before + 2))[before + 1];
      assert.equal(req.header("Auth-Method"), "none");
      assert.equal(req.header("Auth-User"), "");
      assert.equal(req.header("Auth-Pass"), "");
      assert.equal(req.header("Auth-Protocol"), "smtp");
      assert.equal(req.header("Client-IP"), "127.0.0.2");
      assert.equal(req.header("Client-Host"), "[UNAVAILABLE]");
      assert.equal(req.header("Auth-SMTP-Helo"), "client.example");
      assert.equal(req.header("Auth-SMTP-From"), "MAIL FROM:<alice@example.org> BODY=8BITMIME");
      assert.equal(req.header("Auth-SMTP-To"), "RCPT TO:<bob@example.com>");
      const conn = (await backend.waitForConnections(n + 2))[n + 1];
      await conn.done;
      assert.match(
        conn.receivedText(),
        /^EHLO mail\.test\r\nXCLIENT ADDR=127\.0\.0\.2 NAME=\[UNAVAILABLE\] PORT=\d+ PROTO=ESMTP\r\nEHLO client\.example\r\nMAIL FROM:<alice@example\.org> BODY=8BITMIME\r\nRCPT TO:<bob@example\.com>\r\nDATA\r\nSubject: none\r\n\r\nbody\r\n\.\r\nQUIT\r\n$/,
      );
    } finally {
      auth.setHandler(toRealServers);
    }
  });

  test(`${target}: smtp_auth none sends MAIL FROM and RCPT TO to a backend offering PIPELINING without waiting in between`, async () => {
    auth.setHandler(authOk("127.0.0.1", pipeliner.port));
    try {
      const n = pipeliner.connections.length;
      const c = await connectClient(p.none);
      await c.expect(/220 .*\r\n/);
      c.send("EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\n");
      assert.equal(await c.expect(/Ok, pipelined\r\n/), "250 mail.test\r\n250 2.0.0 OK\r\n250 2.1.5 Ok, pipelined\r\n");
      c.send("QUIT\r\n");
      await within(c.closed, 5000, "close after QUIT");
      const conn = (await pipeliner.waitForConnections(n + 1))[n];
      await conn.done;
      assert.match(conn.receivedText(), /\r\nEHLO client\.example\r\nMAIL FROM:<alice@example\.org>\r\nRCPT TO:<bob@example\.com>\r\nQUIT\r\n$/);
    } finally {
      auth.setHandler(toRealServers);
    }
  });

  test(`${target}: smtp_auth none delivers through Postfix, which sees the client by XCLIENT and no login`, async () => {
    const id = unique("none");
    const r = await run("swaks", [
      "--server", `127.0.0.1:${p.none}`, "--local-interface", "127.0.0.2", "--helo", "client.example",
      "--from", "sender@example.org", "--to", BOB, "--header", `Message-Id: <${id}@test>`,
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /<[-~] +250 2\.1\.5 Ok/);
    const { smtpdLine } = await delivered(`${id}@test`);
    assert.match(smtpdLine, /client=unknown\[127\.0\.0\.2\]$/);
    // Postern sent MAIL FROM and RCPT TO together (Postfix offers PIPELINING): nothing improper
    assert.doesNotMatch(postfix.readLog(), /improper command pipelining/);
  });

  test(`${target}: smtp_greeting_delay: a client that talks first gets 503 and is closed, a patient one the greeting`, async () => {
    const early = await connectClient(p.delay);
    early.send("EHLO client.example\r\n");
    assert.equal(await early.expect(/\r\n/, 5000), "503 5.5.0 Improper use of SMTP command pipelining\r\n");
    await within(early.closed, 5000, "close after 503");
    await postern.waitForLog(/client was rejected before greeting: "EHLO client\.example\\x0d\\x0a"/);
    const started = Date.now();
    const patient = await connectClient(p.delay);
    assert.equal(await patient.expect(/\r\n/, 5000), "220 mail.test ESMTP ready\r\n");
    assert.ok(Date.now() - started >= 900, `greeting after ${Date.now() - started} ms`);
    patient.send("QUIT\r\n");
    await within(patient.closed, 5000, "close after QUIT");
  });

  test(`${target}: resolver: a forward-confirmed name goes to Client-Host and XCLIENT NAME=, others are [UNAVAILABLE] or [TEMPUNAVAIL]`, async () => {
    auth.setHandler(authOk("127.0.0.1", backend.port));
    try {
      const login = async (port: number, localAddress: string) => {
        const n = backend.connections.length;
        const before = auth.requests.length;
        const started = Date.now();
        const c = await connectClient(port, { localAddress });
        assert.equal(await c.expect(/\r\n/, 10_000), "220 mail.test ESMTP ready\r\n");
        const greetedAfter = Date.now() - started;
        c.send("EHLO client.example\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
        await c.expect(/235 2\.0\.0 OK\r\n/);
        c.send("QUIT\r\n");
        await within(c.closed, 5000, "close after QUIT");
        const req = (await auth.waitForRequests(before + 1))[before];
        const conn = (await backend.waitForConnections(n + 1))[n];
        const xclient = /^XCLIENT .*$/m.exec(conn.receivedText())?.[0];
        return { host: req.header("Client-Host"), xclient, greetedAfter };
      };
      const good = await login(p.resolver, "127.0.0.2");
      assert.equal(good.host, "client.test");
      assert.match(good.xclient ?? "", /^XCLIENT ADDR=127\.0\.0\.2 LOGIN=alice NAME=client\.test PORT=\d+ PROTO=ESMTP\r?$/);
      assert.ok(dns.queries().some((q) => /query\[PTR\] 2\.0\.0\.127\.in-addr\.arpa/.test(q)), "the PTR question reached dnsmasq");
      assert.ok(dns.queries().some((q) => /query\[A\] client\.test/.test(q)), "the forward check reached dnsmasq");
      const liar = await login(p.resolver, "127.0.0.3");
      assert.equal(liar.host, "[UNAVAILABLE]");
      assert.match(liar.xclient ?? "", / NAME=\[UNAVAILABLE\] /);
      const none = await login(p.resolver, "127.0.0.4");
      assert.equal(none.host, "[UNAVAILABLE]");
      const dead = await login(p.deadResolver, "127.0.0.2");
      assert.equal(dead.host, "[TEMPUNAVAIL]");
      assert.match(dead.xclient ?? "", / NAME=\[TEMPUNAVAIL\] /);
      assert.ok(dead.greetedAfter >= 900, `greeting after resolver_timeout, not ${dead.greetedAfter} ms`);
      assert.ok(deadDns.queries() > 0, "the dead resolver was asked");
      await postern.waitForLog(/127\.0\.0\.2 could not be resolved \(timed out\)/);
    } finally {
      auth.setHandler(toRealServers);
    }
  });

  test(`${target}: resolver: Postfix learns the forward-confirmed name through XCLIENT NAME=`, async () => {
    const id = unique("resolved");
    const r = await run("swaks", [
      "--server", `127.0.0.1:${p.resolver}`, "--local-interface", "127.0.0.2", "--helo", "client.example",
      "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password", ALICE_PASS,
      "--from", "sender@example.org", "--to", ALICE, "--header", `Message-Id: <${id}@test>`,
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const { smtpdLine } = await delivered(`${id}@test`);
    assert.match(smtpdLine, /client=client\.test\[127\.0\.0\.2\], sasl_method=XCLIENT, sasl_username=alice@example\.com/);
  });

  test(`${target}: bad input: DATA before AUTH, CR injection in MAIL FROM, a 100 KB line`, async () => {
    const c = await connectClient(p.smtp);
    await c.expect(/220 .*\r\n/);
    c.send("DATA\r\n");
    assert.equal(await c.expect(/\r\n/), "500 5.5.1 Invalid command\r\n");
    c.send("MAIL FROM:<a@example.org>\r\n");
    assert.equal(await c.expect(/\r\n/), "530 5.7.1 Authentication required\r\n");
    c.send("QUIT\r\n");
    await within(c.closed, 5000, "close after QUIT");

    const requests = auth.requests.length;
    const d = await connectClient(p.none);
    await d.expect(/220 .*\r\n/);
    d.send("HELO client.example\r\nMAIL FROM:<a@example.org>\rRCPT TO:<victim@example.com>\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\rDATA\r\nNOOP\r\n");
    assert.equal(
      await d.expect(/^(?:[^\r\n]*\r\n){5}/),
      "250 mail.test\r\n500 5.5.1 Invalid command\r\n250 2.0.0 OK\r\n500 5.5.1 Invalid command\r\n250 2.0.0 OK\r\n",
    );
    d.send("QUIT\r\n");
    await within(d.closed, 5000, "close after QUIT");
    assert.equal(auth.requests.length, requests, "nothing reached the auth service");

    const e = await connectClient(p.smtp);
    await e.expect(/220 .*\r\n/);
    e.send("NOOP " + "x".repeat(100 * 1024) + "\r\n");
    assert.equal(await e.expect(/\r\n/), "500 5.5.1 Invalid command\r\n");
    await within(e.closed, 5000, "close after the too long line");
    await postern.waitForLog(/client sent too long command/);
  });

  test(`${target}: commands pipelined behind AUTH (no STARTTLS) reach the backend after the login, in order`, async () => {
    auth.setHandler(authOk("127.0.0.1", backend.port));
    try {
      const n = backend.connections.length;
      const c = await connectClient(p.http);
      await c.expect(/220 .*\r\n/);
      c.send("EHLO client.example\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\nQUIT\r\n");
      assert.equal(
        await c.expect(/221 .*\r\n/),
        "250-mail.test\r\n250 AUTH PLAIN LOGIN\r\n235 2.0.0 OK\r\n250 2.0.0 echo MAIL FROM:<alice@example.org>\r\n" +
          "250 2.0.0 echo RCPT TO:<bob@example.com>\r\n221 2.0.0 Bye\r\n",
      );
      await within(c.closed, 5000, "close after QUIT");
      const conn = (await backend.waitForConnections(n + 1))[n];
      await conn.done;
      assert.match(
        conn.receivedText(),
        /^EHLO mail\.test\r\nXCLIENT ADDR=127\.0\.0\.2 LOGIN=alice NAME=\[UNAVAILABLE\] PORT=\d+ PROTO=ESMTP\r\nEHLO client\.example\r\nMAIL FROM:<alice@example\.org>\r\nRCPT TO:<bob@example\.com>\r\nQUIT\r\n$/,
      );
    } finally {
      auth.setHandler(toRealServers);
    }
  });

  test(`${target}: starttls only: no AUTH before TLS, plaintext pipelined behind STARTTLS is dropped, smtplib with STARTTLS delivers`, async () => {
    const before = auth.requests.length;
    const c = await connectClient(p.tls);
    await c.expect(/220 .*\r\n/);
    c.send("EHLO client.example\r\n");
    assert.equal(await c.expect(/^250 .*\r\n/m), "250-mail.test\r\n250 STARTTLS\r\n");
    c.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    assert.equal(await c.expect(/\r\n/), "500 5.5.1 Invalid command\r\n");
    c.send("QUIT\r\n");
    await within(c.closed, 5000, "close after QUIT");

    // STARTTLS with an AUTH pipelined behind it in plaintext: the AUTH is dropped, the TLS
    // handshake still works, and inside TLS the dialogue starts over
    const sock = net.connect({ host: "127.0.0.1", port: p.tls, localAddress: "127.0.0.2" });
    let plain = "";
    sock.setEncoding("latin1");
    const onPlain = (d: string) => (plain += d);
    sock.on("data", onPlain);
    const waitPlain = async (re: RegExp) => {
      const deadline = Date.now() + 5000;
      while (!re.test(plain)) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}: ${JSON.stringify(plain)}`);
        await new Promise((r) => setTimeout(r, 10)); // polling the condition
      }
    };
    await waitPlain(/^220 .*\r\n/);
    sock.write("STARTTLS\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    await waitPlain(/220 2\.0\.0 Start TLS\r\n$/);
    sock.removeListener("data", onPlain);
    const secure = tls.connect({ socket: sock, ca: pki.caPem, servername: "localhost" });
    await new Promise<void>((resolve, reject) => {
      secure.once("secureConnect", resolve);
      secure.once("error", reject);
    });
    let inside = "";
    secure.setEncoding("latin1");
    secure.on("data", (d: string) => (inside += d));
    secure.write("EHLO client.example\r\n");
    const deadline = Date.now() + 5000;
    while (!/^250 .*\r\n/m.test(inside)) {
      if (Date.now() > deadline) throw new Error(`no EHLO reply inside TLS: ${JSON.stringify(inside)}`);
      await new Promise((r) => setTimeout(r, 10)); // polling the condition
    }
    assert.equal(inside, "250-mail.test\r\n250 AUTH PLAIN LOGIN\r\n", "the pipelined AUTH was never answered");
    secure.destroy();
    assert.equal(plain, "220 mail.test ESMTP ready\r\n220 2.0.0 Start TLS\r\n");
    assert.equal(auth.requests.length, before, "nothing reached the auth service");

    // a real client: Python's smtplib with STARTTLS, verifying Postern's certificate
    const id = unique("tls");
    const script = `
import smtplib, ssl
s = smtplib.SMTP("127.0.0.1", ${p.tls}, source_address=("127.0.0.2", 0))
s.ehlo("client.example")
before = s.has_extn("auth")
s.starttls(context=ssl.create_default_context(cafile=${JSON.stringify(pki.caFile)}))
s.ehlo("client.example")
print(before, s.esmtp_features.get("auth").strip())
s.login(${JSON.stringify(ALICE)}, ${JSON.stringify(ALICE_PASS)})
s.sendmail("sender@example.org", [${JSON.stringify(ALICE)}], "Message-ID: <${id}@test>\\r\\nSubject: tls\\r\\n\\r\\nover TLS\\r\\n")
s.quit()
`;
    const r = await run("python3", ["-c", script]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), "False PLAIN LOGIN");
    const { smtpdLine } = await delivered(`${id}@test`);
    assert.match(smtpdLine, /client=unknown\[127\.0\.0\.2\], sasl_method=XCLIENT, sasl_username=alice@example\.com/);
    const req = auth.requests.at(-1)!;
    assert.equal(req.header("Auth-SSL"), "on");
  });

  test(`${target}: an auth service failure gives 451 4.3.2 and a close`, async () => {
    auth.setHandler({ raw: "garbage\r\n\r\n" });
    try {
      const c = await connectClient(p.http);
      await c.expect(/220 .*\r\n/);
      c.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
      assert.equal(await c.expect(/\r\n/, 5000), "451 4.3.2 Internal server error\r\n");
      await within(c.closed, 5000, "close");
    } finally {
      auth.setHandler(toRealServers);
    }
  });

  test(`${target}: no SMTP session is left behind and Postern stops on TERM`, async () => {
    await waitNoSessions(p);
    assert.doesNotMatch(postern.logs(), new RegExp(`${ALICE_PASS}|${BOB_PASS}|session failed|crashed`));
    assert.equal(await postern.stop(), 0);
  });
}
