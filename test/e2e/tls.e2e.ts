// TLS end to end: Postern under each target (node, deno, bun, binary) with `openssl s_client`
// and raw node:tls sockets as clients, on implicit-TLS and STARTTLS (on / only) listeners for
// IMAP, POP3 and SMTP; the ssl_* directives each runtime honours (and the refusal of the ones
// it cannot); client certificates into the Auth-SSL-* headers and AUTHENTICATE EXTERNAL;
// certificates re-read on SIGHUP; TLS to a real Dovecot and Postfix (implicit and STARTTLS),
// and a backend whose certificate must be refused. One Postern per target, many servers.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, test } from "node:test";
import * as tls from "node:tls";
import { escapeMailAuth } from "../../src/auth/protocol.ts";
import { makeTlsTestPki, type TlsTestPki } from "../support/certs.ts";
import { type Dovecot, startDovecot } from "../support/dovecot.ts";
import { type AuthRequest, authOk, type MockAuth, startMockAuth } from "../support/mock-auth.ts";
import { imapBackend, type MockBackend, startMockBackend } from "../support/mock-backend.ts";
import { freePorts } from "../support/ports.ts";
import { type Postfix, startPostfix } from "../support/postfix.ts";
import { type Postern, runPostern, startPostern, type Target, targets } from "../support/postern.ts";
import { connectClient, within } from "../support/line-client.ts";
import { sClient, type SClientStep as Step } from "../support/s-client.ts";

const ALICE = "alice@example.com";
const ALICE_PASS = "alice-secret";
const B64_ALICE = Buffer.from(ALICE).toString("base64");
const PLAIN_ALICE = Buffer.from(`\0${ALICE}\0${ALICE_PASS}`).toString("base64");

// ---------------------------------------------------------------------------------------------
// What each runtime's TLS stack honours (platform/{node,bun,deno}.ts checkTls); the binary is Bun.
// A directive a runtime cannot honour must be refused at start-up, and the tests check both sides.

type Feature = "crl" | "ciphers" | "curve" | "dhparam" | "ticketKey" | "noTickets" | "cacheNoTickets" | "sessionTimeout";
const RUNTIME_OF: Record<Target, "node" | "deno" | "bun"> = { node: "node", deno: "deno", bun: "bun", binary: "bun" };
const HONOURS: Record<Feature, readonly ("node" | "deno" | "bun")[]> = {
  crl: ["node", "bun"],
  ciphers: ["node", "bun"], // with ssl_prefer_server_ciphers
  curve: ["node", "bun"],
  dhparam: ["node"],
  ticketKey: ["node"],
  noTickets: ["node", "bun"],
  cacheNoTickets: ["node"],
  sessionTimeout: ["node", "bun"],
};
const honours = (target: Target, f: Feature) => HONOURS[f].includes(RUNTIME_OF[target]);

// ---------------------------------------------------------------------------------------------
// openssl s_client as a scripted client


/** The subject s_client prints for the server's certificate ("O = Postern Test, CN = ec.postern.test"). */
function servedSubject(out: string): string {
  return /^subject=(.*)$/m.exec(out)?.[1] ?? `(no subject in: ${out})`;
}

/** Reads from a socket until `re` matches what came since the last call; returns that text. */
function reader(sock: net.Socket | tls.TLSSocket) {
  let buf = "";
  let pos = 0;
  let closed = false;
  const wake = new Set<() => void>();
  sock.on("data", (d: Buffer) => {
    buf += d.toString("latin1");
    for (const w of wake) w();
  });
  sock.on("close", () => {
    closed = true;
    for (const w of wake) w();
  });
  return {
    all: () => buf,
    expect(re: RegExp, ms = 10_000): Promise<string> {
      return new Promise((res, rej) => {
        const check = () => {
          const m = re.exec(buf.slice(pos));
          if (m) {
            const text = buf.slice(pos, pos + m.index + m[0].length);
            pos += m.index + m[0].length;
            finish();
            res(text);
          } else if (closed) {
            finish();
            rej(new Error(`closed before ${re}; received ${JSON.stringify(buf)}`));
          }
        };
        const t = setTimeout(() => {
          finish();
          rej(new Error(`timed out waiting for ${re}; received ${JSON.stringify(buf)}`));
        }, ms);
        const finish = () => {
          clearTimeout(t);
          wake.delete(check);
        };
        wake.add(check);
        check();
      });
    },
  };
}

function rawConnect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: "127.0.0.1", localAddress: "127.0.0.2" });
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

function closedWithin(sock: net.Socket, ms: number, what: string): Promise<void> {
  if (sock.destroyed || sock.readyState === "closed") return Promise.resolve();
  return within(new Promise<void>((r) => sock.once("close", () => r())), ms, what);
}

// ---------------------------------------------------------------------------------------------
// Fixtures shared by every target

let tmp: string;
let pki: TlsTestPki;
let dovecot: Dovecot;
let postfix: Postfix;
let auth: MockAuth;
let backend: MockBackend; // plain IMAP: greeting, any LOGIN, echo
let stranger: MockBackend; // implicit-TLS IMAP with a certificate from another CA
let certBackend: MockBackend; // implicit-TLS IMAP from our CA that records the client certificate and SNI
let dhparamPem: string;
const FILES: Record<string, string | Uint8Array> = {};

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "postern-tls-"));
  fs.chmodSync(tmp, 0o755);
  pki = await makeTlsTestPki(tmp);
  for (const f of fs.readdirSync(tmp)) fs.chmodSync(path.join(tmp, f), 0o644); // Dovecot and Postfix read them
  const cert = path.join(tmp, pki.files.rsaCert);
  const key = path.join(tmp, pki.files.rsaKey);
  dovecot = await startDovecot({ users: [{ user: ALICE, password: ALICE_PASS }], ssl: { certFile: cert, keyFile: key } });
  postfix = await startPostfix({ domains: ["example.com"], mailboxes: [ALICE], lmtpPort: dovecot.lmtpPort, tls: { certFile: cert, keyFile: key } });
  auth = await startMockAuth(authOk("127.0.0.1", 1));
  backend = await startMockBackend({ script: imapBackend("any") });
  stranger = await startMockBackend({ script: imapBackend("any"), tls: { cert: pki.pem(pki.files.strangerServer), key: pki.pem(pki.files.strangerServerKey) } });
  certBackend = await startMockBackend({ script: imapBackend("any"), tls: { cert: pki.pem(pki.files.rsaCert), key: pki.pem(pki.files.rsaKey), ca: pki.pem(pki.files.ca) } });
  // DH parameters for ssl_dhparam ("-dsaparam" makes them in well under a second)
  execFileSync("openssl", ["dhparam", "-dsaparam", "-out", "dh.pem", "2048"], { cwd: tmp, stdio: "ignore" });
  dhparamPem = fs.readFileSync(path.join(tmp, "dh.pem"), "utf8");
  const f = pki.files;
  Object.assign(FILES, {
    "ca.pem": pki.pem(f.ca),
    "rsa.pem": pki.pem(f.rsaCert),
    "rsa.key": pki.pem(f.rsaKey),
    "rsa.enc.key": pki.pem(f.rsaKeyEncrypted),
    "ec.pem": pki.pem(f.ecCert),
    "ec.key": pki.pem(f.ecKey),
    "passwords.txt": pki.pem(f.passwords),
    "crl.pem": pki.pem(f.crl),
    "reload.pem": pki.pem(f.ecCert),
    "reload.key": pki.pem(f.ecKey),
    "client.pem": pki.pem(f.client),
    "client.key": pki.pem(f.clientKey),
    "dh.pem": dhparamPem,
    "ticket.key": new Uint8Array(randomBytes(48)),
    "ticket2.key": new Uint8Array(randomBytes(80)),
  });
});

after(async () => {
  await Promise.all([postfix?.stop(), auth?.close(), backend?.close(), stranger?.close(), certBackend?.close()]);
  await dovecot?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const file = (name: string) => path.join(tmp, name);
const CA = () => ["-CAfile", file(pki.files.ca)];

// ---------------------------------------------------------------------------------------------
// The Postern of one target

const SERVER_NAMES = [
  "imaps", "imapOn", "imapOnly", "pop3On", "pop3Only", "pop3s", "smtpOn", "smtpOnly", "smtps",
  "verifyOn", "verifyOptional", "verifyNoCa", "verifyDepth0", "external", "tls13", "noTickets", "ciphers", "curve", "dhparam",
  "ticketA", "ticketB", "cacheNoTickets", "sessionTimeout", "reloadSsl", "reloadStarttls",
  "upImaps", "upImapStarttls", "upPop3s", "upPop3Starttls", "upSmtps", "upSmtpStarttls", "upNoVerify", "upBadName", "upClientCert",
  "metrics",
] as const;
type Ports = Record<(typeof SERVER_NAMES)[number], number>;

function config(target: Target, p: Ports): string {
  const via = `auth_http: ${auth.url}`;
  const server = (lines: string[]) => `    - ${lines.join("\n      ")}\n`;
  const only = (f: Feature, lines: string[]) => (honours(target, f) ? server(lines) : "");
  const up = "proxy_ssl_trusted_certificate: ca.pem";
  return `
server_name: mail.test
error_log: { level: info }
http:
  listen: 127.0.0.1:${p.metrics}
auth:
  failure_delay: 0
  users:
    - user: ${ALICE}
      password: ${ALICE_PASS}
      backend_password: ${ALICE_PASS}
      backend: { imap: 127.0.0.1:${dovecot.imapPort}, pop3: 127.0.0.1:${dovecot.pop3Port}, smtp: 127.0.0.1:${postfix.smtpPort} }
mail:
  timeout: 3s
  ssl_certificate: ec.pem
  ssl_certificate_key: ec.key
  servers:
${server([`listen: ["127.0.0.1:${p.imaps} ssl"]`, "protocol: imap", via, "ssl_certificate: [rsa.pem, ec.pem]", "ssl_certificate_key: [rsa.enc.key, ec.key]", "ssl_password_file: passwords.txt"])}${
    server([`listen: [127.0.0.1:${p.imapOn}]`, "protocol: imap", via, "starttls: on"])
  }${server([`listen: [127.0.0.1:${p.imapOnly}]`, "protocol: imap", "starttls: only"])}${
    server([`listen: [127.0.0.1:${p.pop3On}]`, "protocol: pop3", "starttls: on"])
  }${server([`listen: [127.0.0.1:${p.pop3Only}]`, "protocol: pop3", "starttls: only"])}${
    server([`listen: ["127.0.0.1:${p.pop3s} ssl"]`, "protocol: pop3"])
  }${server([`listen: [127.0.0.1:${p.smtpOn}]`, "protocol: smtp", "starttls: on"])}${
    server([`listen: [127.0.0.1:${p.smtpOnly}]`, "protocol: smtp", "starttls: only"])
  }${server([`listen: ["127.0.0.1:${p.smtps} ssl"]`, "protocol: smtp"])}${
    server([
      `listen: ["127.0.0.1:${p.verifyOn} ssl"]`, "protocol: imap", via, "ssl_verify_client: on", "ssl_client_certificate: ca.pem",
      "auth_http_pass_client_cert: on", ...(honours(target, "crl") ? ["ssl_crl: crl.pem"] : []),
    ])
  }${server([`listen: [127.0.0.1:${p.verifyOptional}]`, "protocol: imap", via, "starttls: on", "ssl_verify_client: optional", "ssl_trusted_certificate: ca.pem"])}${
    server([`listen: ["127.0.0.1:${p.verifyNoCa} ssl"]`, "protocol: imap", via, "ssl_verify_client: optional_no_ca"])
  }${server([`listen: ["127.0.0.1:${p.verifyDepth0} ssl"]`, "protocol: imap", via, "ssl_verify_client: on", "ssl_client_certificate: ca.pem", "ssl_verify_depth: 0"])}${
    server([`listen: ["127.0.0.1:${p.external} ssl"]`, "protocol: imap", "imap_auth: [plain, external]", "ssl_verify_client: optional", "ssl_client_certificate: ca.pem"])
  }${server([`listen: ["127.0.0.1:${p.tls13} ssl"]`, "protocol: imap", "ssl_protocols: TLSv1.3"])}${
    only("noTickets", [`listen: ["127.0.0.1:${p.noTickets} ssl"]`, "protocol: imap", "ssl_session_tickets: off"])
  }${
    only("ciphers", [
      `listen: ["127.0.0.1:${p.ciphers} ssl"]`, "protocol: imap", "ssl_ciphers: ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256",
      "ssl_prefer_server_ciphers: on",
    ])
  }${only("curve", [`listen: ["127.0.0.1:${p.curve} ssl"]`, "protocol: imap", "ssl_ecdh_curve: secp384r1"])}${
    only("dhparam", [`listen: ["127.0.0.1:${p.dhparam} ssl"]`, "protocol: imap", "ssl_certificate: rsa.pem", "ssl_certificate_key: rsa.key", "ssl_dhparam: dh.pem"])
  }${only("ticketKey", [`listen: ["127.0.0.1:${p.ticketA} ssl"]`, "protocol: imap", "ssl_session_ticket_key: ticket.key"])}${
    only("ticketKey", [`listen: ["127.0.0.1:${p.ticketB} ssl"]`, "protocol: imap", "ssl_session_ticket_key: ticket.key"])
  }${
    only("cacheNoTickets", [`listen: ["127.0.0.1:${p.cacheNoTickets} ssl"]`, "protocol: imap", "ssl_session_tickets: off", "ssl_session_cache: shared:SSL:1m"])
  }${only("sessionTimeout", [`listen: ["127.0.0.1:${p.sessionTimeout} ssl"]`, "protocol: imap", "ssl_session_timeout: 7s"])}${
    server([`listen: ["127.0.0.1:${p.reloadSsl} ssl"]`, "protocol: imap", "ssl_certificate: reload.pem", "ssl_certificate_key: reload.key"])
  }${server([`listen: [127.0.0.1:${p.reloadStarttls}]`, "protocol: imap", "starttls: on", "ssl_certificate: reload.pem", "ssl_certificate_key: reload.key"])}${
    server([`listen: [127.0.0.1:${p.upImaps}]`, "protocol: imap", via, "proxy_ssl: on", up])
  }${server([`listen: [127.0.0.1:${p.upImapStarttls}]`, "protocol: imap", via, "proxy_ssl: starttls", up])}${
    server([`listen: [127.0.0.1:${p.upPop3s}]`, "protocol: pop3", via, "proxy_ssl: on", up])
  }${server([`listen: [127.0.0.1:${p.upPop3Starttls}]`, "protocol: pop3", via, "proxy_ssl: starttls", up])}${
    server([`listen: [127.0.0.1:${p.upSmtps}]`, "protocol: smtp", via, "proxy_ssl: on", up])
  }${server([`listen: [127.0.0.1:${p.upSmtpStarttls}]`, "protocol: smtp", via, "proxy_ssl: starttls", up])}${
    server([`listen: [127.0.0.1:${p.upNoVerify}]`, "protocol: imap", via, "proxy_ssl: on", "proxy_ssl_verify: off"])
  }${server([`listen: [127.0.0.1:${p.upBadName}]`, "protocol: imap", via, "proxy_ssl: on", up, "proxy_ssl_name: wrong.example"])}${
    server([
      `listen: [127.0.0.1:${p.upClientCert}]`, "protocol: imap", via, "proxy_ssl: on", up, "proxy_ssl_name: mail.postern.test",
      "proxy_ssl_certificate: client.pem", "proxy_ssl_certificate_key: client.key",
    ])
  }`;
}

/** The auth service sends every login to `port` on 127.0.0.1. */
function routeTo(port: number) {
  auth.setHandler(authOk("127.0.0.1", port));
}

const lastAuth = (): AuthRequest => {
  const r = auth.requests.at(-1);
  assert.ok(r, "the auth server got a request");
  return r;
};

/** A one-server config for `postern -t` and start-up refusal checks. */
function oneServer(lines: string[]): string {
  const pair = lines.some((l) => l.startsWith("ssl_certificate:")) ? [] : ["ssl_certificate: ec.pem", "ssl_certificate_key: ec.key"];
  return `
error_log: { level: info }
http: { listen: off }
mail:
  servers:
    - listen: ["127.0.0.1:1 ssl"]
      protocol: imap
      ${[...pair, ...lines].join("\n      ")}
`;
}

for (const target of targets()) {
  const runtime = RUNTIME_OF[target];
  let postern: Postern;
  let p: Ports;

  test(`${target}: Postern starts with every TLS server its runtime honours`, async () => {
    const ports = await freePorts(SERVER_NAMES.length);
    p = Object.fromEntries(SERVER_NAMES.map((n, i) => [n, ports[i]])) as Ports;
    const yaml = config(target, p);
    postern = await startPostern(target, yaml, { files: FILES });
    assert.match(await postern.waitForLog(/started, \d+ mail listener/), /postern\/\d+\.\d+\.\d+/);
  });

  // ---- implicit TLS, several certificate pairs, an encrypted key ----

  test(`${target}: an implicit-TLS listener serves the ECDSA or the RSA pair (encrypted key, ssl_password_file) as the client can use`, async () => {
    const ec = await sClient(p.imaps, [...CA(), "-sigalgs", "ECDSA+SHA256"], [{ expect: /\* OK IMAP4 ready/ }]);
    assert.equal(servedSubject(ec.out), "O = Postern Test, CN = ec.postern.test");
    assert.match(ec.out, /Verify return code: 0 \(ok\)/);
    const rsa = await sClient(p.imaps, [...CA(), "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256"], [{ expect: /\* OK IMAP4 ready/ }]);
    assert.equal(servedSubject(rsa.out), "O = Postern Test, CN = rsa.postern.test");
  });

  test(`${target}: s_client logs in over implicit TLS to a backend; auth_http gets Auth-SSL, protocol and cipher`, async () => {
    routeTo(backend.port);
    const n = backend.connections.length;
    const r = await sClient(p.imaps, CA(), [
      { expect: /\* OK IMAP4 ready\r\n/ },
      { send: "a1 CAPABILITY\r\n" },
      { expect: /\* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\na1 OK completed\r\n/ },
      { send: "a2 LOGIN alice secret\r\n" },
      { expect: /a2 OK / },
      { send: "a3 NOOP\r\n" },
      { expect: /\* ECHO a3 NOOP\r\na3 OK NOOP completed/ },
      { send: "a4 LOGOUT\r\n" },
      { expect: /a4 OK/ },
    ]);
    assert.doesNotMatch(r.out, /STARTTLS/);
    const [conn] = (await backend.waitForConnections(n + 1)).slice(n);
    assert.match(conn.receivedText(), /^a2 LOGIN /);
    const req = lastAuth();
    assert.equal(req.header("Auth-SSL"), "on");
    assert.match(req.header("Auth-SSL-Protocol") ?? "", /^TLSv1\.3$/);
    assert.match(req.header("Auth-SSL-Cipher") ?? "", /^TLS_/);
    assert.equal(req.header("Auth-SSL-Verify"), undefined, "no certificate details without ssl_verify_client");
  });

  // ---- STARTTLS on and only: capabilities over the real socket, refusals, logins ----

  test(`${target}: IMAP starttls on offers STARTTLS, then s_client -starttls imap logs in to Dovecot`, async () => {
    const c = await connectClient(p.imapOn);
    await c.expect(/\* OK IMAP4 ready\r\n/);
    c.send("a1 CAPABILITY\r\n");
    assert.equal(await c.expect(/a1 OK completed\r\n/), "* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN STARTTLS\r\na1 OK completed\r\n");
    c.destroy();
    routeTo(dovecot.imapPort);
    const r = await sClient(p.imapOn, ["-starttls", "imap", ...CA()], [
      { send: "a1 CAPABILITY\r\n" },
      { expect: /\* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\na1 OK completed\r\n/ },
      { send: `a2 LOGIN ${ALICE} ${ALICE_PASS}\r\n` },
      { expect: /a2 OK / },
      { send: "a3 SELECT INBOX\r\n" },
      { expect: /a3 OK / },
      { send: "a4 LOGOUT\r\n" },
      { expect: /a4 OK/ },
    ]);
    assert.equal(servedSubject(r.out), "O = Postern Test, CN = ec.postern.test");
  });

  test(`${target}: IMAP starttls only hides AUTH=, says LOGINDISABLED and refuses LOGIN until TLS`, async () => {
    const c = await connectClient(p.imapOnly);
    await c.expect(/\* OK IMAP4 ready\r\n/);
    c.send("a1 CAPABILITY\r\n");
    assert.equal(await c.expect(/a1 OK completed\r\n/), "* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS STARTTLS LOGINDISABLED\r\na1 OK completed\r\n");
    c.send(`a2 LOGIN ${ALICE} ${ALICE_PASS}\r\n`);
    assert.equal(await c.expect(/\r\n/), "a2 BAD invalid command\r\n");
    c.destroy();
    await sClient(p.imapOnly, ["-starttls", "imap", ...CA()], [
      { send: "a1 CAPABILITY\r\n" },
      { expect: /\* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\na1 OK completed\r\n/ },
      { send: `a2 LOGIN ${ALICE} ${ALICE_PASS}\r\n` },
      { expect: /a2 OK / },
      { send: "a3 LOGOUT\r\n" },
      { expect: /a3 OK/ },
    ]);
  });

  test(`${target}: POP3 STLS on and only, and pop3s, log in to Dovecot`, async () => {
    const on = await connectClient(p.pop3On);
    await on.expect(/\+OK POP3 ready\r\n/);
    on.send("CAPA\r\n");
    assert.equal(await on.expect(/\r\n\.\r\n/), "+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\nSTLS\r\n.\r\n");
    on.destroy();
    const only = await connectClient(p.pop3Only);
    await only.expect(/\+OK POP3 ready\r\n/);
    only.send("CAPA\r\n");
    assert.equal(await only.expect(/\r\n\.\r\n/), "+OK Capability list follows\r\nTOP\r\nUIDL\r\nSTLS\r\n.\r\n");
    only.send(`USER ${ALICE}\r\n`);
    assert.equal(await only.expect(/\r\n/), "-ERR invalid command\r\n");
    only.destroy();
    const login: Step[] = [
      { send: "CAPA\r\n" },
      { expect: /\+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\n\.\r\n/ },
      { send: `USER ${ALICE}\r\n` },
      { expect: /\+OK/ },
      { send: `PASS ${ALICE_PASS}\r\n` },
      { expect: /\+OK Logged in/ },
      { send: "STAT\r\n" },
      { expect: /\+OK \d+ \d+/ },
      { send: "QUIT\r\n" },
      { expect: /\+OK/ },
    ];
    for (const port of [p.pop3On, p.pop3Only]) await sClient(port, ["-starttls", "pop3", ...CA()], login);
    await sClient(p.pop3s, CA(), [{ expect: /\+OK POP3 ready\r\n/ }, ...login]);
  });

  test(`${target}: SMTP STARTTLS on and only, and implicit TLS, log in and send through Postfix`, async () => {
    const on = await connectClient(p.smtpOn);
    await on.expect(/^220 [^\r]*\r\n/);
    on.send("EHLO client.example\r\n");
    assert.equal(await on.expect(/250 [^\r]*\r\n/), "250-mail.test\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n");
    on.destroy();
    const only = await connectClient(p.smtpOnly);
    await only.expect(/^220 [^\r]*\r\n/);
    only.send("EHLO client.example\r\n");
    assert.equal(await only.expect(/250 [^\r]*\r\n/), "250-mail.test\r\n250 STARTTLS\r\n");
    only.send(`AUTH PLAIN ${PLAIN_ALICE}\r\n`);
    assert.equal(await only.expect(/\r\n/), "500 5.5.1 Invalid command\r\n");
    only.destroy();
    const session = (ehlo: boolean): Step[] => [
      ...(ehlo ? [{ expect: /^220 /m }] : []),
      { send: "EHLO client.example\r\n" },
      { expect: /250 AUTH PLAIN LOGIN\r\n/ },
      { send: `AUTH PLAIN ${PLAIN_ALICE}\r\n` },
      { expect: /235 2\.0\.0 OK/ },
      { send: `MAIL FROM:<${ALICE}>\r\n` },
      { expect: /250 2\.1\.0 Ok/ },
      { send: "QUIT\r\n" },
      { expect: /221 / },
    ];
    for (const port of [p.smtpOn, p.smtpOnly]) await sClient(port, ["-starttls", "smtp", ...CA()], session(false));
    await sClient(p.smtps, CA(), session(true));
  });

  // ---- plaintext injection, bad handshakes ----

  test(`${target}: plaintext pipelined after STARTTLS is discarded, never answered or sent to auth`, async () => {
    routeTo(dovecot.imapPort);
    const authBefore = auth.requests.length;
    const sock = await rawConnect(p.imapOn);
    const plain = reader(sock);
    await plain.expect(/\* OK IMAP4 ready\r\n/);
    sock.write("a STARTTLS\r\na2 LOGIN injected pass\r\n"); // one write: both in one packet
    assert.equal(await plain.expect(/\r\n/), "a OK completed\r\n");
    const secure = tls.connect({ socket: sock, ca: pki.pem(pki.files.ca), servername: "localhost" });
    await new Promise<void>((res, rej) => {
      secure.once("secureConnect", res);
      secure.once("error", rej);
    });
    const t = reader(secure);
    secure.write("a3 CAPABILITY\r\n");
    const caps = await t.expect(/a3 OK completed\r\n/);
    assert.equal(caps, "* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\na3 OK completed\r\n");
    secure.write("a4 LOGOUT\r\n");
    await t.expect(/a4 OK/);
    secure.destroy();
    assert.doesNotMatch(plain.all() + t.all(), /a2/);
    assert.ok(!auth.requests.slice(authBefore).some((r) => r.header("Auth-User") === "injected"), "the injected LOGIN reached auth");
    // SMTP: the same with AUTH behind STARTTLS
    const s2 = await rawConnect(p.smtpOn);
    const p2 = reader(s2);
    await p2.expect(/^220 /);
    s2.write("EHLO x\r\n");
    await p2.expect(/250 STARTTLS\r\n/);
    s2.write(`STARTTLS\r\nAUTH PLAIN ${Buffer.from("\0injected\0pass").toString("base64")}\r\n`);
    assert.equal(await p2.expect(/\r\n/), "220 2.0.0 Start TLS\r\n");
    const sec2 = tls.connect({ socket: s2, ca: pki.pem(pki.files.ca), servername: "localhost" });
    await new Promise<void>((res, rej) => {
      sec2.once("secureConnect", res);
      sec2.once("error", rej);
    });
    const t2 = reader(sec2);
    sec2.write("NOOP\r\n");
    assert.equal(await t2.expect(/\r\n/), "250 2.0.0 OK\r\n");
    sec2.destroy();
    assert.ok(!auth.requests.slice(authBefore).some((r) => r.header("Auth-User") === "injected"), "the injected AUTH reached auth");
  });

  test(`${target}: a TLS handshake of garbage is closed and logged; the listener goes on`, async () => {
    const from = postern.logs().length;
    for (const port of [p.imaps, p.pop3s]) {
      const sock = await rawConnect(port);
      sock.on("error", () => {});
      sock.write(Buffer.concat([Buffer.from("GET / HTTP/1.0\r\n\r\n"), randomBytes(300)]));
      await closedWithin(sock, 5000, "close after a garbage handshake");
    }
    await postern.waitForLog(/SSL handshake failed .* while SSL handshaking, client: 127\.0\.0\.2/, 5000, from);
    const ok = await sClient(p.imaps, CA(), [{ expect: /\* OK IMAP4 ready/ }]);
    assert.match(ok.out, /Verify return code: 0/);
  });

  test(`${target}: a client that stops mid-handshake is closed after timeout`, async () => {
    const from = postern.logs().length;
    await Promise.all([p.imaps, p.pop3s, p.verifyOn].map(async (port) => {
      const sock = await rawConnect(port);
      sock.on("error", () => {});
      sock.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])); // a ClientHello cut short
      const t0 = Date.now();
      await closedWithin(sock, 8000, `close by timeout (3s) in mid-handshake on ${port}`);
      assert.ok(Date.now() - t0 >= 2000, `closed after ${Date.now() - t0} ms, before the 3 s timeout`);
    }));
    await postern.waitForLog(/client timed out while SSL handshaking, client: 127\.0\.0\.2/, 5000, from);
  });

  test(`${target}: STARTTLS followed by garbage is closed and logged`, async () => {
    const from = postern.logs().length;
    const sock = await rawConnect(p.imapOn);
    sock.on("error", () => {});
    const r = reader(sock);
    await r.expect(/\* OK IMAP4 ready\r\n/);
    sock.write("a STARTTLS\r\n");
    await r.expect(/a OK completed\r\n/);
    sock.write(randomBytes(400));
    await closedWithin(sock, 5000, "close after garbage instead of a ClientHello");
    await postern.waitForLog(/SSL handshake failed .* while SSL handshaking, client: 127\.0\.0\.2/, 5000, from);
  });

  // ---- protocols, ciphers, curves, DH, sessions ----

  test(`${target}: ssl_protocols TLSv1.3 refuses a TLSv1.2 client`, async () => {
    const old = await sClient(p.tls13, [...CA(), "-tls1_2"]);
    assert.notEqual(old.code, 0, old.out);
    assert.doesNotMatch(old.out, /New, TLSv1\.2/);
    assert.doesNotMatch(old.out, /IMAP4 ready/);
    const ok = await sClient(p.tls13, [...CA(), "-tls1_3"], [{ expect: /\* OK IMAP4 ready/ }]);
    assert.match(ok.out, /New, TLSv1\.3/);
  });

  test(`${target}: ssl_ciphers and ssl_prefer_server_ciphers ${honours(target, "ciphers") ? "are honoured" : "are refused"}`, async () => {
    if (!honours(target, "ciphers")) {
      for (const d of ["ssl_ciphers: ECDHE-ECDSA-AES128-GCM-SHA256", "ssl_prefer_server_ciphers: on"]) {
        const r = await runPostern(target, ["-t"], { configYaml: oneServer([d]), files: FILES });
        assert.equal(r.code, 1, r.output);
        assert.match(r.output, new RegExp(`\\[emerg\\] ${d.split(":")[0]} is not supported on ${runtime}: `));
      }
      return;
    }
    const none = await sClient(p.ciphers, [...CA(), "-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"]);
    assert.notEqual(none.code, 0, none.out);
    const pref = await sClient(p.ciphers, [...CA(), "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"], [{ expect: /\* OK/ }]);
    assert.match(pref.out, /New, TLSv1\.2, Cipher is ECDHE-ECDSA-AES256-GCM-SHA384/);
  });

  test(`${target}: ssl_ecdh_curve ${honours(target, "curve") ? "is honoured" : "is refused"}`, async () => {
    if (!honours(target, "curve")) {
      const r = await runPostern(target, ["-t"], { configYaml: oneServer(["ssl_ecdh_curve: secp384r1"]), files: FILES });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, new RegExp(`\\[emerg\\] ssl_ecdh_curve is not supported on ${runtime}: `));
      return;
    }
    const x = await sClient(p.curve, [...CA(), "-groups", "X25519"]);
    assert.notEqual(x.code, 0, x.out);
    const ok = await sClient(p.curve, [...CA(), "-groups", "X25519:P-384"], [{ expect: /\* OK/ }]);
    assert.match(ok.out, /Server Temp Key: ECDH, secp384r1/);
  });

  test(`${target}: ssl_dhparam ${honours(target, "dhparam") ? "enables DHE suites" : "is refused"}`, async () => {
    if (!honours(target, "dhparam")) {
      const r = await runPostern(target, ["-t"], { configYaml: oneServer(["ssl_dhparam: dh.pem"]), files: FILES });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, new RegExp(`\\[emerg\\] ssl_dhparam is not supported on ${runtime}: .*DHE`));
      return;
    }
    const r = await sClient(p.dhparam, [...CA(), "-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"], [{ expect: /\* OK/ }]);
    assert.match(r.out, /Server Temp Key: DH, 2048 bits/);
    assert.match(r.out, /Cipher is DHE-RSA-AES128-GCM-SHA256/);
  });

  /** Connects twice with one session file; returns both outputs. */
  async function resume(portA: number, portB: number, args: string[], starttls?: string): Promise<[string, string]> {
    const sess = path.join(tmp, `sess-${target}-${portA}-${Date.now()}.pem`);
    const st = starttls ? ["-starttls", starttls] : [];
    const greet: Step[] = starttls ? [] : [{ expect: /\* OK/ }];
    // TLSv1.3 tickets come after the handshake: wait for s_client to have read one
    const first = await sClient(portA, [...CA(), ...st, ...args, "-sess_out", sess], [...greet, { send: "a1 NOOP\r\n" }, { expect: /a1 / }]);
    if (!fs.existsSync(sess)) return [first.out, "(no session was saved)"];
    const second = await sClient(portB, [...CA(), ...st, ...args, "-sess_in", sess], greet);
    return [first.out, second.out];
  }

  test(`${target}: sessions resume with tickets, over implicit TLS and STARTTLS`, async () => {
    for (const v of ["-tls1_3", "-tls1_2"]) {
      const [a, b] = await resume(p.imaps, p.imaps, [v]);
      assert.match(a, /^New, /m);
      assert.match(b, /^Reused, /m, `${v}: ${b}`);
    }
    const [, st] = await resume(p.imapOn, p.imapOn, [], "imap");
    assert.match(st, /^Reused, /m);
  });

  test(`${target}: ssl_session_tickets off ${honours(target, "noTickets") ? "stops resumption" : "is refused"}`, async () => {
    if (!honours(target, "noTickets")) {
      const r = await runPostern(target, ["-t"], { configYaml: oneServer(["ssl_session_tickets: off"]), files: FILES });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, new RegExp(`\\[emerg\\] ssl_session_tickets is not supported on ${runtime}: `));
      return;
    }
    for (const v of ["-tls1_2", "-tls1_3"]) {
      const [a, b] = await resume(p.noTickets, p.noTickets, [v]);
      if (v === "-tls1_2") assert.doesNotMatch(a, /TLS session ticket:/);
      assert.match(b, /^New, |no session was saved/m, `${v}: ${b}`);
    }
  });

  test(`${target}: ssl_session_ticket_key ${honours(target, "ticketKey") ? "lets two servers resume each other's sessions" : "is refused"}`, async () => {
    if (!honours(target, "ticketKey")) {
      const r = await runPostern(target, ["-t"], { configYaml: oneServer(["ssl_session_ticket_key: ticket.key"]), files: FILES });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, new RegExp(`\\[emerg\\] ssl_session_ticket_key is not supported on ${runtime}: `));
      return;
    }
    const [, across] = await resume(p.ticketA, p.ticketB, []);
    assert.match(across, /^Reused, /m);
    const [, other] = await resume(p.ticketA, p.imaps, []);
    assert.match(other, /^New, /m, "a server with other ticket keys cannot resume it");
  });

  test(`${target}: ssl_session_cache with tickets off ${honours(target, "cacheNoTickets") ? "resumes TLSv1.2 sessions by ID" : "is refused"}`, async () => {
    const lines = ["ssl_session_tickets: off", "ssl_session_cache: shared:SSL:1m"];
    if (!honours(target, "cacheNoTickets")) {
      const r = await runPostern(target, ["-t"], { configYaml: oneServer(lines), files: FILES });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, new RegExp(`\\[emerg\\] ssl_session_(cache|tickets) is not supported on ${runtime}: `));
      return;
    }
    const [a, b] = await resume(p.cacheNoTickets, p.cacheNoTickets, ["-tls1_2"]);
    assert.doesNotMatch(a, /TLS session ticket:/);
    assert.match(b, /^Reused, /m);
  });

  test(`${target}: ssl_session_timeout ${honours(target, "sessionTimeout") ? "sets the ticket lifetime" : "is refused"}`, async () => {
    if (!honours(target, "sessionTimeout")) {
      const r = await runPostern(target, ["-t"], { configYaml: oneServer(["ssl_session_timeout: 7s"]), files: FILES });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, new RegExp(`\\[emerg\\] ssl_session_timeout is not supported on ${runtime}: `));
      return;
    }
    const [a, b] = await resume(p.sessionTimeout, p.sessionTimeout, []);
    assert.match(a, /TLS session ticket lifetime hint: 7 \(seconds\)/);
    assert.match(b, /^Reused, /m, "sessions still resume (on Bun this server runs on node:tls)");
  });

  // ---- client certificates ----

  const cert = (c: string, k: string) => ["-cert", file(c), "-key", file(k)];

  test(`${target}: ssl_verify_client on: no certificate, a stranger's, an expired one and ${honours(target, "crl") ? "a revoked one" : "(no CRL here)"} are answered as nginx`, async () => {
    const from = postern.logs().length;
    const none = await sClient(p.verifyOn, CA(), [{ expect: /\* BYE No required SSL certificate\r\n/ }]);
    assert.doesNotMatch(none.out, /IMAP4 ready/);
    const f = pki.files;
    const bad: [string, string, RegExp][] = [
      [f.strangerClient, f.strangerClientKey, /\((20|21):unable to/],
      [f.expiredClient, f.expiredClientKey, /\(10:certificate has expired\)/],
      ...(honours(target, "crl") ? [[f.revokedClient, f.revokedClientKey, /\(23:certificate revoked\)/] as [string, string, RegExp]] : []),
    ];
    for (const [c, k, why] of bad) {
      const at = postern.logs().length;
      const r = await sClient(p.verifyOn, [...CA(), ...cert(c, k)], [{ expect: /\* BYE SSL certificate error\r\n/ }]);
      assert.doesNotMatch(r.out, /IMAP4 ready/);
      const line = await postern.waitForLog(/client SSL certificate verify error: /, 5000, at);
      assert.match(line, why);
    }
    await postern.waitForLog(/client sent no required SSL certificate/, 5000, from);
    if (!honours(target, "crl")) {
      const r = await runPostern(target, ["-t"], { configYaml: oneServer(["ssl_verify_client: on", "ssl_client_certificate: ca.pem", "ssl_crl: crl.pem"]), files: FILES });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, new RegExp(`\\[emerg\\] ssl_crl is not supported on ${runtime}: `));
    }
  });

  test(`${target}: a verified client certificate reaches auth_http as nginx's Auth-SSL-* headers`, async () => {
    routeTo(backend.port);
    await sClient(p.verifyOn, [...CA(), ...cert(pki.files.client, pki.files.clientKey)], [
      { expect: /\* OK IMAP4 ready\r\n/ },
      { send: "a1 LOGIN alice secret\r\n" },
      { expect: /a1 OK/ },
    ]);
    const req = lastAuth();
    const pem = pki.pem(pki.files.client);
    const serial = /serial=(\w+)/.exec(execFileSync("openssl", ["x509", "-noout", "-serial", "-in", file(pki.files.client)]).toString())![1];
    const sha1 = /=([\dA-F:]+)/.exec(execFileSync("openssl", ["x509", "-noout", "-fingerprint", "-sha1", "-in", file(pki.files.client)]).toString())![1];
    assert.equal(req.header("Auth-SSL"), "on");
    assert.equal(req.header("Auth-SSL-Verify"), "SUCCESS");
    assert.equal(req.header("Auth-SSL-Subject"), "CN=alice@example.com,O=Postern Test");
    assert.equal(req.header("Auth-SSL-Issuer"), "CN=Postern Test CA,O=Postern Test");
    assert.equal(req.header("Auth-SSL-Serial"), serial.toUpperCase());
    assert.equal(req.header("Auth-SSL-Fingerprint"), sha1.replaceAll(":", "").toLowerCase());
    assert.equal(req.header("Auth-SSL-Cert"), escapeMailAuth(pem));
    assert.match(req.raw, /Auth-SSL-Cert: -----BEGIN%20CERTIFICATE-----%0A/);
  });

  test(`${target}: ssl_verify_depth counts intermediate CAs (1 allows one, 0 none)`, async () => {
    const deep = [...CA(), "-cert", file("deep.pem"), "-cert_chain", file("intermediate.pem"), "-key", file(pki.files.deepClientKey)];
    routeTo(backend.port);
    await sClient(p.verifyOptional, ["-starttls", "imap", ...deep], [{ send: "a1 LOGIN bob secret\r\n" }, { expect: /a1 OK/ }]);
    assert.equal(lastAuth().header("Auth-SSL-Subject"), "CN=bob@example.com,O=Postern Test");
    assert.equal(lastAuth().header("Auth-SSL-Verify"), "SUCCESS");
    const from = postern.logs().length;
    await sClient(p.verifyDepth0, deep, [{ expect: /\* BYE SSL certificate error\r\n/ }]);
    await postern.waitForLog(/client SSL certificate verify error: \(22:certificate chain too long\)/, 5000, from);
    await sClient(p.verifyDepth0, [...CA(), ...cert(pki.files.client, pki.files.clientKey)], [{ expect: /\* OK IMAP4 ready\r\n/ }]);
  });

  test(`${target}: ssl_verify_client optional and optional_no_ca`, async () => {
    routeTo(backend.port);
    await sClient(p.verifyOptional, ["-starttls", "imap", ...CA()], [{ send: "a1 LOGIN alice secret\r\n" }, { expect: /a1 OK/ }]);
    assert.equal(lastAuth().header("Auth-SSL-Verify"), "NONE");
    await sClient(p.verifyOptional, ["-starttls", "imap", ...CA(), ...cert(pki.files.strangerClient, pki.files.strangerClientKey)], [
      { expect: /\* BYE SSL certificate error\r\n/ },
    ]);
    await sClient(p.verifyNoCa, [...CA(), ...cert(pki.files.strangerClient, pki.files.strangerClientKey)], [
      { expect: /\* OK IMAP4 ready\r\n/ },
      { send: "a1 LOGIN alice secret\r\n" },
      { expect: /a1 OK/ },
    ]);
    assert.match(lastAuth().header("Auth-SSL-Verify") ?? "", /^FAILED:unable to /);
    assert.equal(lastAuth().header("Auth-SSL-Subject"), "CN=alice@example.com,O=Stranger");
  });

  test(`${target}: AUTHENTICATE EXTERNAL with a client certificate logs in to Dovecot through the built-in auth`, async () => {
    const n = dovecot.logins().length;
    await sClient(p.external, [...CA(), ...cert(pki.files.client, pki.files.clientKey)], [
      { expect: /\* OK IMAP4 ready\r\n/ },
      { send: "a1 CAPABILITY\r\n" },
      { expect: /\* CAPABILITY [^\r]*AUTH=EXTERNAL[^\r]*\r\n/ },
      { send: `a2 AUTHENTICATE EXTERNAL ${B64_ALICE}\r\n` },
      { expect: /a2 OK / },
      { send: "a3 SELECT INBOX\r\n" },
      { expect: /a3 OK / },
      { send: "a4 LOGOUT\r\n" },
      { expect: /a4 OK/ },
    ]);
    await dovecot.waitForLogin(n, (l) => l.user === ALICE, 5000);
    // no certificate, or one whose name is not the user's: refused
    await sClient(p.external, CA(), [
      { expect: /\* OK IMAP4 ready\r\n/ },
      { send: `a1 AUTHENTICATE EXTERNAL ${B64_ALICE}\r\n` },
      { expect: /a1 NO / },
    ]);
    await sClient(p.external, [...CA(), "-cert", file("deep.pem"), "-cert_chain", file("intermediate.pem"), "-key", file(pki.files.deepClientKey)], [
      { expect: /\* OK IMAP4 ready\r\n/ },
      { send: `a1 AUTHENTICATE EXTERNAL ${B64_ALICE}\r\n` },
      { expect: /a1 NO / },
    ]);
  });

  // ---- TLS to the backend ----

  test(`${target}: proxy_ssl on and starttls log in to Dovecot over TLS (IMAP and POP3)`, async () => {
    for (const [port, to, proto] of [
      [p.upImaps, dovecot.imapsPort!, "imap"],
      [p.upImapStarttls, dovecot.imapPort, "imap"],
      [p.upPop3s, dovecot.pop3sPort!, "pop3"],
      [p.upPop3Starttls, dovecot.pop3Port, "pop3"],
    ] as const) {
      routeTo(to);
      const n = dovecot.logins().length;
      const c = await connectClient(port);
      if (proto === "imap") {
        await c.expect(/\* OK IMAP4 ready\r\n/);
        c.send(`a1 LOGIN ${ALICE} ${ALICE_PASS}\r\n`);
        await c.expect(/a1 OK /);
        c.send("a2 SELECT INBOX\r\n");
        await c.expect(/a2 OK /);
        c.send("a3 LOGOUT\r\n");
        await c.expect(/a3 OK/);
      } else {
        await c.expect(/\+OK POP3 ready\r\n/);
        c.send(`USER ${ALICE}\r\nPASS ${ALICE_PASS}\r\n`);
        await c.expect(/\+OK\r\n\+OK Logged in/);
        c.send("QUIT\r\n");
        await c.expect(/\+OK/);
      }
      await within(c.closed, 5000, "close after logout");
      // Dovecot writes its log line asynchronously: wait for it rather than read it at once
      const login = await dovecot.waitForLogin(n, (l) => l.user === ALICE, 5000);
      assert.match(login.line, /TLS/, `${proto} via ${port}: Dovecot saw TLS: ${login.line}`);
    }
  });

  test(`${target}: proxy_ssl on and starttls send mail through Postfix over TLS`, async () => {
    for (const to of [postfix.smtpsPort!, postfix.smtpPort]) {
      routeTo(to);
      const port = to === postfix.smtpPort ? p.upSmtpStarttls : p.upSmtps;
      const before = postfix.readLog().split("\n").length;
      const c = await connectClient(port);
      await c.expect(/^220 /);
      c.send("EHLO client.example\r\n");
      await c.expect(/250 AUTH PLAIN LOGIN\r\n/);
      c.send(`AUTH PLAIN ${PLAIN_ALICE}\r\n`);
      assert.equal(await c.expect(/\r\n/), "235 2.0.0 OK\r\n");
      c.send(`MAIL FROM:<${ALICE}>\r\n`);
      await c.expect(/250 2\.1\.0 Ok\r\n/);
      c.send("QUIT\r\n");
      await c.expect(/221 /);
      await within(c.closed, 5000, "close after QUIT");
      const deadline = Date.now() + 10_000;
      while (!/TLS connection established from/.test(postfix.readLog().split("\n").slice(before).join("\n"))) {
        if (Date.now() > deadline) assert.fail(`Postfix logged no TLS connection for port ${to}:\n${postfix.readLog().slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 25)); // polling the log, not sleeping instead of it
      }
    }
  });

  test(`${target}: a backend whose certificate does not verify gets the internal error; proxy_ssl_verify off accepts it`, async () => {
    for (const [port, to, why] of [
      [p.upImaps, stranger.port, /upstream SSL certificate verify error: \((20|21):unable to /],
      [p.upBadName, dovecot.imapsPort!, /upstream SSL certificate verify error: \(62:hostname mismatch/],
    ] as const) {
      routeTo(to);
      const from = postern.logs().length;
      const c = await connectClient(port);
      await c.expect(/\* OK IMAP4 ready\r\n/);
      c.send("a1 LOGIN alice secret\r\n");
      assert.equal(await c.expect(/\r\n/), "* BAD internal server error\r\n");
      await within(c.closed, 5000, "close after the internal error");
      await postern.waitForLog(why, 5000, from);
    }
    routeTo(stranger.port);
    const c = await connectClient(p.upNoVerify);
    await c.expect(/\* OK IMAP4 ready\r\n/);
    c.send("a1 LOGIN alice secret\r\n");
    await c.expect(/a1 OK /);
    c.destroy();
  });

  test(`${target}: proxy_ssl_name is sent as SNI and verified; proxy_ssl_certificate is presented`, async () => {
    routeTo(certBackend.port);
    const n = certBackend.connections.length;
    const c = await connectClient(p.upClientCert);
    await c.expect(/\* OK IMAP4 ready\r\n/);
    c.send("a1 LOGIN alice secret\r\n");
    await c.expect(/a1 OK /);
    c.destroy();
    const [conn] = (await certBackend.waitForConnections(n + 1)).slice(n);
    assert.equal(conn.sni, "mail.postern.test");
    assert.equal(conn.peerSubject, "CN=alice@example.com");
    assert.equal(conn.peerVerified, true);
  });

  // ---- refusals and SIGHUP ----

  test(`${target}: material no runtime can use is refused at start-up, naming the directive and the file`, async () => {
    const wrong = await runPostern(target, ["-t"], {
      configYaml: oneServer(["ssl_certificate: rsa.pem", "ssl_certificate_key: rsa.enc.key", "ssl_password_file: wrong.txt"]),
      files: { ...FILES, "wrong.txt": "nope\nstill-nope\n" },
    });
    assert.equal(wrong.code, 1, wrong.output);
    assert.match(wrong.output, /\[emerg\] ssl_certificate_key "[^"]*rsa\.enc\.key" cannot be used: none of the 2 passphrases in ssl_password_file decrypts it/);
    // several ticket keys: node:tls takes one, on every runtime; a real start exits 1 too
    const two = oneServer(["ssl_session_ticket_key: [ticket.key, ticket2.key]"]);
    const started = await runPostern(target, [], { configYaml: two, files: FILES });
    assert.equal(started.code, 1, started.output);
    assert.match(started.output, new RegExp(`postern: \\[emerg\\] ssl_session_ticket_key is not supported on ${runtime}: .*one`));
  });

  test(`${target}: certificates are re-read on SIGHUP; a key that does not fit is refused and the old one kept`, async () => {
    const before = await sClient(p.reloadSsl, CA(), [{ expect: /\* OK/ }]);
    assert.equal(servedSubject(before.out), "O = Postern Test, CN = ec.postern.test");
    fs.writeFileSync(path.join(postern.dir, "reload.pem"), pki.pem(pki.files.renewedCert));
    fs.writeFileSync(path.join(postern.dir, "reload.key"), pki.pem(pki.files.renewedKey));
    let from = postern.logs().length;
    postern.signal("SIGHUP");
    await postern.waitForLog(/reconfigured/, 10_000, from);
    const ssl = await sClient(p.reloadSsl, CA(), [{ expect: /\* OK/ }]);
    assert.equal(servedSubject(ssl.out), "O = Postern Test, CN = renewed.postern.test");
    const st = await sClient(p.reloadStarttls, ["-starttls", "imap", ...CA()], [{ send: "a1 NOOP\r\n" }, { expect: /a1 / }]);
    assert.equal(servedSubject(st.out), "O = Postern Test, CN = renewed.postern.test");
    // a certificate with someone else's key: the reload fails, the renewed pair stays
    fs.writeFileSync(path.join(postern.dir, "reload.key"), pki.pem(pki.files.ecKey));
    from = postern.logs().length;
    postern.signal("SIGHUP");
    await postern.waitForLog(/reload failed: ssl_certificate.* cannot be used/, 10_000, from);
    const still = await sClient(p.reloadSsl, CA(), [{ expect: /\* OK/ }]);
    assert.equal(servedSubject(still.out), "O = Postern Test, CN = renewed.postern.test");
    fs.writeFileSync(path.join(postern.dir, "reload.key"), pki.pem(pki.files.renewedKey));
  });

  test(`${target}: nothing crashed, and Postern stops on TERM`, async () => {
    const bad = /.*(session crashed|session failed|alice-secret|Unhandled|TypeError|^error: ).*/m.exec(postern.logs());
    assert.equal(bad, null, `${bad?.[0]}\n--- end of the log ---\n${postern.logs().slice(-3000)}`);
    assert.equal(postern.exitStatus(), null, `Postern exited early:\n${postern.logs().slice(-3000)}`);
    const code = await postern.stop();
    assert.equal(code, 0);
  });
}
