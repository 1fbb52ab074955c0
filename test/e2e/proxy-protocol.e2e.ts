// PROXY protocol end to end, under each target (node, deno, bun, binary).
//   In:  a real HAProxy (send-proxy, send-proxy-v2) in front of Postern's "listen ... proxy_protocol",
//        with and without set_real_ip_from, and "ssl proxy_protocol" (HAProxy passing TLS
//        through); the realip'd client in Client-IP, the log and SMTP's XCLIENT.
//   Out: Postern's proxy_protocol on|v2 into Dovecot's "haproxy = yes" listeners (also before
//        proxy_ssl on|starttls) and Postfix's smtpd_upstream_proxy_protocol; their logs must show
//        the original client 127.0.0.2.
//   Bad input: no header, garbage, a header split byte by byte, a lying length, oversized TLVs,
//        an overlong v1 line, LOCAL and UNKNOWN headers.
// Clients bind 127.0.0.2; HAProxy and Postern connect from 127.0.0.1. One Postern and one
// HAProxy per target.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { Duplex } from "node:stream";
import { after, before, test } from "node:test";
import * as tls from "node:tls";
import { makeTestPki, type TestPki } from "../support/certs.ts";
import { type Dovecot, type DovecotLogin, startDovecot } from "../support/dovecot.ts";
import { type Haproxy, startHaproxy } from "../support/haproxy.ts";
import { type AuthRequest, authOk, type MockAuth, startMockAuth } from "../support/mock-auth.ts";
import { imapBackend, type MockBackend, smtpXclientBackend, startMockBackend } from "../support/mock-backend.ts";
import { freePorts, waitFor } from "../support/ports.ts";
import { type Postfix, startPostfix } from "../support/postfix.ts";
import { type Postern, startPostern, targets } from "../support/postern.ts";
import { connectClient, type LineClient, within } from "../support/line-client.ts";

const ALICE = "alice@example.com";
const ALICE_PASS = "alice-secret";
const BAD_INPUT_TIMEOUT_MS = 2000; // `timeout` of the bad-input server: a lying header waits this long
const AT_ONCE_MS = 1000; // "refused at once": well before that timeout

let tmp: string;
let pki: TestPki;
let dovecot: Dovecot;
let postfix: Postfix;
let auth: MockAuth;
let backend: MockBackend; // scripted IMAP server behind the PROXY-in servers
let smtpBackend: MockBackend; // scripted SMTP server taking XCLIENT

/** Where the auth service sends a login: the server's X-Route header picks the backend. */
function route(req: AuthRequest) {
  const proto = req.header("Auth-Protocol");
  switch (req.header("X-Route")) {
    case "dovecot-haproxy":
      return authOk("127.0.0.1", proto === "pop3" ? dovecot.haproxyPop3Port! : dovecot.haproxyImapPort!);
    case "dovecot-haproxy-tls":
      return authOk("127.0.0.1", dovecot.haproxyImapsPort!);
    case "postfix-haproxy":
      return authOk("127.0.0.1", postfix.haproxySmtpPort!);
    case "mock-smtp":
      return authOk("127.0.0.1", smtpBackend.port);
    default:
      return authOk("127.0.0.1", backend.port);
  }
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "postern-pp-"));
  pki = await makeTestPki(tmp);
  // no login_trusted_networks: only the PROXY header can tell Dovecot who the client is
  dovecot = await startDovecot({
    users: [{ user: ALICE, password: ALICE_PASS }],
    haproxyImapPort: true, // STARTTLS offered there too: ssl is on
    haproxyPop3Port: true,
    haproxyImapsPort: true,
    ssl: { certFile: pki.certFile, keyFile: pki.keyFile },
    trustedNetworks: "",
  });
  postfix = await startPostfix({
    domains: ["example.com"],
    mailboxes: [ALICE],
    lmtpPort: dovecot.lmtpPort,
    haproxySmtpPort: true,
    extraMainCf: "smtpd_client_port_logging = yes\n", // client=unknown[ADDR]:PORT
  });
  auth = await startMockAuth(route);
  backend = await startMockBackend({ script: imapBackend("any") });
  smtpBackend = await startMockBackend({ script: smtpXclientBackend() });
});

after(async () => {
  await Promise.all([postfix?.stop(), auth?.close(), backend?.close(), smtpBackend?.close()]);
  await dovecot?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

interface Ports {
  realip: number; // proxy_protocol, set_real_ip_from 127.0.0.1 (HAProxy)
  plain: number; // proxy_protocol, no set_real_ip_from
  ssl: number; // ssl proxy_protocol, set_real_ip_from 127.0.0.0/8 (HAProxy and the test's clients)
  bad: number; // proxy_protocol, set_real_ip_from 127.0.0.2 (the test's own clients), short timeout
  chain: number; // proxy_protocol in (realip) and proxy_protocol v2 out, to Dovecot
  imapV1: number; // proxy_protocol on, to Dovecot's haproxy IMAP listener
  imapV2: number;
  pop3V1: number;
  pop3V2: number;
  smtpV1: number; // proxy_protocol on, xclient off, to Postfix's haproxy smtpd
  smtpV2: number;
  smtpIn: number; // SMTP with proxy_protocol in, set_real_ip_from 127.0.0.2, XCLIENT to a scripted backend
  imapTlsOut: number; // proxy_protocol v2, then implicit TLS (proxy_ssl on) to Dovecot
  imapStarttlsOut: number; // proxy_protocol v1, then STARTTLS (proxy_ssl starttls) to Dovecot
}

function config(p: Ports, sslListen = "ssl proxy_protocol"): string {
  const viaAuth = (routeTo = "mock") => `auth_http: ${auth.url}\n      auth_http_header: { X-Route: ${routeTo} }`;
  return `
server_name: mail.test
error_log: { level: info }
mail:
  servers:
    - listen: ["127.0.0.1:${p.realip} proxy_protocol"]
      protocol: imap
      ${viaAuth()}
      set_real_ip_from: [127.0.0.1]
    - listen: ["127.0.0.1:${p.plain} proxy_protocol"]
      protocol: imap
      ${viaAuth()}
    - listen: ["127.0.0.1:${p.ssl} ${sslListen}"]
      protocol: imap
      ${viaAuth()}
      set_real_ip_from: 127.0.0.0/8
      ssl_certificate: server.pem
      ssl_certificate_key: server.key
    - listen: ["127.0.0.1:${p.bad} proxy_protocol"]
      protocol: imap
      ${viaAuth()}
      set_real_ip_from: [127.0.0.2]
      timeout: ${BAD_INPUT_TIMEOUT_MS}ms
    - listen: [{ address: "127.0.0.1:${p.chain}", proxy_protocol: true }]
      protocol: imap
      ${viaAuth("dovecot-haproxy")}
      set_real_ip_from: [127.0.0.1]
      proxy_protocol: v2
    - listen: [127.0.0.1:${p.imapV1}]
      protocol: imap
      ${viaAuth("dovecot-haproxy")}
      proxy_protocol: on
    - listen: [127.0.0.1:${p.imapV2}]
      protocol: imap
      ${viaAuth("dovecot-haproxy")}
      proxy_protocol: v2
    - listen: [127.0.0.1:${p.pop3V1}]
      protocol: pop3
      ${viaAuth("dovecot-haproxy")}
      proxy_protocol: v1
    - listen: [127.0.0.1:${p.pop3V2}]
      protocol: pop3
      ${viaAuth("dovecot-haproxy")}
      proxy_protocol: v2
    - listen: [127.0.0.1:${p.smtpV1}]
      protocol: smtp
      ${viaAuth("postfix-haproxy")}
      smtp_auth: [plain]
      xclient: off
      proxy_protocol: on
    - listen: [127.0.0.1:${p.smtpV2}]
      protocol: smtp
      ${viaAuth("postfix-haproxy")}
      smtp_auth: [plain]
      xclient: off
      proxy_protocol: v2
    - listen: ["127.0.0.1:${p.smtpIn} proxy_protocol"]
      protocol: smtp
      ${viaAuth("mock-smtp")}
      set_real_ip_from: [127.0.0.2]
      smtp_auth: [plain]
    - listen: [127.0.0.1:${p.imapTlsOut}]
      protocol: imap
      ${viaAuth("dovecot-haproxy-tls")}
      proxy_protocol: v2
      proxy_ssl: on
      proxy_ssl_trusted_certificate: ca.pem
      proxy_ssl_name: localhost
    - listen: [127.0.0.1:${p.imapStarttlsOut}]
      protocol: imap
      ${viaAuth("dovecot-haproxy")}
      proxy_protocol: on
      proxy_ssl: starttls
      proxy_ssl_trusted_certificate: ca.pem
      proxy_ssl_name: localhost
`;
}

// ---------------------------------------------------------------------------------------------
// PROXY headers made by hand

const V2_SIG = Buffer.from("0d0a0d0a000d0a515549540a", "hex");

/** A v2 PROXY header over TCP/IPv4 with `tlvs` after the addresses; `len` overrides the length field. */
function v2Header(src: string, srcPort: number, dst: string, dstPort: number, opts: { tlvs?: Buffer; len?: number; command?: "proxy" | "local" } = {}): Buffer {
  const tlvs = opts.tlvs ?? Buffer.alloc(0);
  const fixed = Buffer.alloc(16);
  V2_SIG.copy(fixed);
  if (opts.command === "local") {
    fixed[12] = 0x20;
    fixed[13] = 0x00;
    fixed.writeUInt16BE(opts.len ?? 0, 14);
    return fixed;
  }
  fixed[12] = 0x21;
  fixed[13] = 0x11;
  fixed.writeUInt16BE(opts.len ?? 12 + tlvs.length, 14);
  const addrs = Buffer.alloc(12);
  Buffer.from(src.split(".").map(Number)).copy(addrs, 0);
  Buffer.from(dst.split(".").map(Number)).copy(addrs, 4);
  addrs.writeUInt16BE(srcPort, 8);
  addrs.writeUInt16BE(dstPort, 10);
  return Buffer.concat([fixed, addrs, tlvs]);
}

function tlv(type: number, length: number, value?: Buffer): Buffer {
  const h = Buffer.alloc(3);
  h[0] = type;
  h.writeUInt16BE(length, 1);
  return Buffer.concat([h, value ?? Buffer.alloc(length, 0x61)]);
}

/** A TCP connection from 127.0.0.2 for node:tls whose first write (the ClientHello) goes out in
 *  one segment with `header`, as a balancer that has the client's first bytes already sends it.
 *  With `split`, only the first `split.bytes` of it do; the rest is sent once `split.rest` resolves. */
function gluedToHeader(port: number, header: Buffer, split?: { bytes: number; rest: Promise<unknown> }): Duplex {
  const raw = net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.2" });
  let first = true;
  const d = new Duplex({
    write(chunk: Buffer, _enc, cb) {
      if (first && split !== undefined) {
        raw.write(Buffer.concat([header, chunk.subarray(0, split.bytes)]));
        split.rest.then(() => raw.write(chunk.subarray(split.bytes), cb), cb);
      } else raw.write(first ? Buffer.concat([header, chunk]) : chunk, cb);
      first = false;
    },
    read() {},
    final(cb) {
      raw.end();
      cb();
    },
    destroy(err, cb) {
      raw.destroy();
      cb(err);
    },
  });
  raw.on("data", (b: Buffer) => d.push(b));
  raw.on("end", () => d.push(null));
  raw.on("error", (e) => d.destroy(e));
  return d;
}

// ---------------------------------------------------------------------------------------------
// Clients and the evidence they leave

/** IMAP LOGIN as `user` and LOGOUT over an established client (the greeting already read or not). */
async function imapLogin(c: LineClient, user: string): Promise<void> {
  await c.expect(/^\* OK .*\r\n/m);
  c.send(`a1 LOGIN ${user} pw\r\n`);
  await c.expect(/^a1 OK .*\r\n/m);
  c.send("a2 LOGOUT\r\n");
  await c.expect(/^a2 OK .*\r\n/m);
  await within(c.closed, 5000, "close after LOGOUT");
}

/** The auth request for `user` (each test logs in under its own name). */
async function authRequestOf(user: string): Promise<AuthRequest> {
  return await waitFor(() => auth.requests.find((r) => r.header("Auth-User") === user), `an auth request for "${user}"`);
}

const PP_HEADERS = ["Proxy-Protocol-Addr", "Proxy-Protocol-Port", "Proxy-Protocol-Server-Addr", "Proxy-Protocol-Server-Port"];

function ppHeaders(r: AuthRequest): (string | undefined)[] {
  return PP_HEADERS.map((h) => r.header(h));
}

const re = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** A client whose "connected" line is logged after `logFrom` (a local port can come back later). */
type Tracked = LineClient & { readonly logFrom: number };

/** The session id of a tracked client, from its "connected" line. */
async function sidOf(postern: Postern, c: Tracked): Promise<string> {
  const line = await postern.waitForLog(new RegExp(`\\*(\\d+) client 127\\.0\\.0\\.2:${c.localPort} connected to `), 10_000, c.logFrom);
  return /\*(\d+) /.exec(line)![1];
}

/** A client Postern closes without a byte: resolves with the ms from `since` to the close. */
async function closedUnanswered(c: LineClient, since: number, what: string): Promise<number> {
  await within(c.closed, BAD_INPUT_TIMEOUT_MS + 5000, what);
  assert.equal(c.received(), "", `${what}: nothing may be answered before a PROXY header`);
  return Date.now() - since;
}

function dovecotLogin(since: number, service: string, rport: number): Promise<DovecotLogin> {
  return dovecot.waitForLogin(since, (l) => l.service === service && l.rport === String(rport));
}

for (const target of targets()) {
  let postern: Postern;
  let haproxy: Haproxy;
  let p: Ports;
  const u = (what: string) => `${target}-${what}`;
  const connectBad = async (): Promise<Tracked> => {
    const logFrom = postern.logs().length;
    return Object.assign(await connectClient(p.bad), { logFrom });
  };

  test(`${target}: Postern starts with PROXY protocol listeners, HAProxy in front of them`, async () => {
    const [a, b, c, d, e, f, g, h, i, j, k, l, m, n] = await freePorts(14);
    p = {
      realip: a, plain: b, ssl: c, bad: d, chain: e, imapV1: f, imapV2: g, pop3V1: h, pop3V2: i, smtpV1: j, smtpV2: k, smtpIn: l,
      imapTlsOut: m, imapStarttlsOut: n,
    };
    postern = await startPostern(target, config(p), { files: { "server.pem": pki.certPem, "server.key": pki.keyPem, "ca.pem": pki.caPem } });
    const to = (port: number) => ({ host: "127.0.0.1", port });
    haproxy = await startHaproxy([
      { name: "v1_realip", to: to(p.realip), proxy: "v1" },
      { name: "v2_realip", to: to(p.realip), proxy: "v2", v2Options: ["crc32c"] },
      { name: "v1_plain", to: to(p.plain), proxy: "v1" },
      { name: "v2_plain", to: to(p.plain), proxy: "v2" },
      { name: "v1_ssl", to: to(p.ssl), proxy: "v1" },
      { name: "v2_ssl", to: to(p.ssl), proxy: "v2" },
      { name: "v2_chain", to: to(p.chain), proxy: "v2" },
    ]);
    assert.match(postern.logs(), /postern\/\d+\.\d+\.\d+/);
  });

  for (const v of ["v1", "v2"] as const) {
    test(`${target}: HAProxy send-proxy${v === "v2" ? "-v2" : ""} with set_real_ip_from: the client is 127.0.0.2 in the auth request and the log`, async () => {
      const front = haproxy.ports[`${v}_realip`];
      const user = u(`${v}-realip`);
      const c = await connectClient(front);
      await imapLogin(c, user);
      const r = await authRequestOf(user);
      assert.equal(r.header("Client-IP"), "127.0.0.2");
      // the header as HAProxy wrote it: the client's address and port, HAProxy's own frontend
      assert.deepEqual(ppHeaders(r), ["127.0.0.2", String(c.localPort), "127.0.0.1", String(front)]);
      await postern.waitForLog(new RegExp(`client logged in, client: 127\\.0\\.0\\.2, server: 127\\.0\\.0\\.1:${p.realip}, login: "${re(user)}", upstream: 127\\.0\\.0\\.1:${backend.port}`));
      await postern.waitForLog(new RegExp(`client 127\\.0\\.0\\.1:\\d+ is 127\\.0\\.0\\.2:${c.localPort} by PROXY protocol`));
    });

    test(`${target}: HAProxy send-proxy${v === "v2" ? "-v2" : ""} without set_real_ip_from: the peer stays 127.0.0.1, Proxy-Protocol-* are still sent`, async () => {
      const front = haproxy.ports[`${v}_plain`];
      const user = u(`${v}-plain`);
      const c = await connectClient(front);
      await imapLogin(c, user);
      const r = await authRequestOf(user);
      assert.equal(r.header("Client-IP"), "127.0.0.1");
      assert.deepEqual(ppHeaders(r), ["127.0.0.2", String(c.localPort), "127.0.0.1", String(front)]);
      await postern.waitForLog(new RegExp(`client logged in, client: 127\\.0\\.0\\.1, server: 127\\.0\\.0\\.1:${p.plain}, login: "${re(user)}"`));
    });

    test(`${target}: "listen ... ssl proxy_protocol" behind HAProxy ${v} passing TLS through: header in clear, then TLS`, async () => {
      const front = haproxy.ports[`${v}_ssl`];
      const user = u(`${v}-ssl`);
      const tcp = net.connect({ host: "127.0.0.1", port: front, localAddress: "127.0.0.2" });
      const sock = tls.connect({ socket: tcp, ca: pki.caPem, servername: "localhost" });
      let got = "";
      const wait = (rx: RegExp) =>
        within(new Promise<void>((res, rej) => {
          const check = () => rx.test(got) && (sock.off("data", onData), res());
          const onData = (d: Buffer) => {
            got += d.toString("latin1");
            check();
          };
          sock.on("data", onData);
          sock.once("error", rej);
          check();
        }), 10_000, `${rx} over TLS (got ${JSON.stringify(got)})`);
      await within(new Promise<void>((res, rej) => sock.once("secureConnect", res).once("error", rej)), 10_000, "TLS handshake through HAProxy")
        .catch((e) => {
          sock.destroy();
          throw new Error(`${e.message}\n--- HAProxy ---\n${haproxy.output().slice(-2000)}\n--- Postern ---\n${postern.logs().slice(-3000)}`);
        });
      assert.equal(sock.authorized, true);
      const localPort = tcp.localPort;
      await wait(/^\* OK .*\r\n/);
      sock.write(`a1 LOGIN ${user} pw\r\n`);
      await wait(/a1 OK .*\r\n/);
      sock.write("a2 LOGOUT\r\n");
      await wait(/a2 OK .*\r\n/);
      sock.destroy();
      const r = await authRequestOf(user);
      assert.equal(r.header("Client-IP"), "127.0.0.2");
      assert.equal(r.header("Auth-SSL"), "on");
      assert.deepEqual(ppHeaders(r), ["127.0.0.2", String(localPort), "127.0.0.1", String(front)]);
      await postern.waitForLog(new RegExp(`client logged in, client: 127\\.0\\.0\\.2, server: 127\\.0\\.0\\.1:${p.ssl}, login: "${re(user)}"`));
    });
  }

  test(`${target}: "ssl proxy_protocol" with the header and the ClientHello in one segment: a last command sent with FIN is answered`, async () => {
    // After the login one side's FIN half-closes the other (README); here the TLS session was
    // started with bytes read together with the PROXY header. Ten sessions in a row.
    for (let i = 0; i < 10; i++) {
      const user = u(`glued-${i}`);
      const header = Buffer.from(`PROXY TCP4 192.0.2.${100 + i} 127.0.0.1 ${7000 + i} 993\r\n`);
      const sock = tls.connect({ socket: gluedToHeader(p.ssl, header) as unknown as net.Socket, ca: pki.caPem, servername: "localhost" });
      let got = "";
      const answered = new Promise<void>((res, rej) => {
        sock.on("data", (d: Buffer) => {
          got += d.toString("latin1");
          if (/^\* OK /.test(got) && !got.includes("a1 ")) sock.write(`a1 LOGIN ${user} pw\r\n`);
          if (/a1 OK .*\r\n/.test(got) && !/a2 OK/.test(got) && sock.writable && !sock.writableEnded) sock.end("a2 LOGOUT\r\n");
          if (/a2 OK .*\r\n/.test(got)) res();
        });
        sock.once("error", rej);
      });
      try {
        await within(answered, 5000, `session ${i}: the answer to LOGOUT sent with FIN`).catch((e) => {
          throw new Error(`${e.message}; got ${JSON.stringify(got)}\n--- Postern ---\n${postern.logs().slice(-2500)}`);
        });
      } finally {
        sock.destroy();
      }
      const r = await authRequestOf(user);
      assert.equal(r.header("Client-IP"), `192.0.2.${100 + i}`);
    }
  });

  test(`${target}: "ssl proxy_protocol" with the header and part of the ClientHello in one segment: the rest comes later, the session works`, async () => {
    const user = u("glued-split");
    const header = Buffer.from("PROXY TCP4 192.0.2.120 127.0.0.1 7020 993\r\n");
    // the rest of the ClientHello is sent once Postern has read the header (and the bytes after it)
    const headerRead = postern.waitForLog(/client 127\.0\.0\.2:\d+ is 192\.0\.2\.120:7020 by PROXY protocol/);
    const sock = tls.connect({
      socket: gluedToHeader(p.ssl, header, { bytes: 40, rest: headerRead }) as unknown as net.Socket,
      ca: pki.caPem,
      servername: "localhost",
    });
    let got = "";
    const answered = new Promise<void>((res, rej) => {
      sock.on("data", (d: Buffer) => {
        got += d.toString("latin1");
        if (/^\* OK /.test(got) && !got.includes("a1 ")) sock.write(`a1 LOGIN ${user} pw\r\n`);
        if (/a1 OK .*\r\n/.test(got) && !/a2 OK/.test(got) && sock.writable && !sock.writableEnded) sock.end("a2 LOGOUT\r\n");
        if (/a2 OK .*\r\n/.test(got)) res();
      });
      sock.once("error", rej);
    });
    try {
      await within(answered, 10_000, "the session over TLS").catch((e) => {
        throw new Error(`${e.message}; got ${JSON.stringify(got)}\n--- Postern ---\n${postern.logs().slice(-2500)}`);
      });
    } finally {
      sock.destroy();
    }
    const r = await authRequestOf(user);
    assert.equal(r.header("Client-IP"), "192.0.2.120");
    assert.equal(r.header("Auth-SSL"), "on");
  });

  // ---- PROXY out ---------------------------------------------------------------------------

  for (const [proto, v] of [["imap", "v1"], ["imap", "v2"], ["pop3", "v1"], ["pop3", "v2"]] as const) {
    test(`${target}: proxy_protocol ${v} into Dovecot's haproxy ${proto} listener: Dovecot logs the client 127.0.0.2`, async () => {
      const port = p[`${proto}${v === "v1" ? "V1" : "V2"}`];
      const since = dovecot.logins().length;
      const c = await connectClient(port);
      if (proto === "imap") {
        await c.expect(/^\* OK .*\r\n/);
        c.send(`a1 LOGIN ${ALICE} ${ALICE_PASS}\r\n`);
        await c.expect(/^a1 OK .*\r\n/m);
        c.send("a2 LOGOUT\r\n");
        await c.expect(/^a2 OK .*\r\n/m);
      } else {
        await c.expect(/^\+OK .*\r\n/);
        c.send(`USER ${ALICE}\r\n`);
        await c.expect(/^\+OK.*\r\n/m);
        c.send(`PASS ${ALICE_PASS}\r\n`);
        await c.expect(/^\+OK.*\r\n/m);
        c.send("QUIT\r\n");
        await c.expect(/^\+OK.*\r\n/m);
      }
      await within(c.closed, 5000, "close after logout");
      const login = await dovecotLogin(since, `${proto}-login`, c.localPort);
      // rip: the client, as the header said; real_rip: the TCP peer, Postern; lport: the
      // header's destination, the address the client connected to (nginx: the local address)
      assert.deepEqual([login.user, login.rip, login.rport, login.realRip, login.lport], [ALICE, "127.0.0.2", String(c.localPort), "127.0.0.1", String(port)]);
      assert.doesNotMatch(login.line, /, TLS(,|$)/, "no TLS to the backend here");
    });
  }

  for (const [mode, v] of [["on", "v2"], ["starttls", "v1"]] as const) {
    test(`${target}: proxy_protocol ${v} with proxy_ssl ${mode}: the header goes in clear before TLS, Dovecot logs 127.0.0.2 over TLS`, async () => {
      const port = mode === "on" ? p.imapTlsOut : p.imapStarttlsOut;
      const since = dovecot.logins().length;
      const c = await connectClient(port);
      await c.expect(/^\* OK .*\r\n/);
      c.send(`a1 LOGIN ${ALICE} ${ALICE_PASS}\r\n`);
      await c.expect(/^a1 OK .*\r\n/m);
      c.send("a2 LOGOUT\r\n");
      await c.expect(/^a2 OK .*\r\n/m);
      await within(c.closed, 5000, "close after LOGOUT");
      const login = await dovecotLogin(since, "imap-login", c.localPort);
      assert.deepEqual([login.rip, login.realRip], ["127.0.0.2", "127.0.0.1"]);
      assert.match(login.line, /, TLS(,|$)/, "Dovecot says the session is TLS");
    });
  }

  test(`${target}: PROXY in from HAProxy and v2 out to Dovecot: the realip'd client goes on, the destination is Postern's listen address`, async () => {
    const since = dovecot.logins().length;
    const c = await connectClient(haproxy.ports.v2_chain);
    await c.expect(/^\* OK .*\r\n/);
    c.send(`a1 LOGIN ${ALICE} ${ALICE_PASS}\r\n`);
    await c.expect(/^a1 OK .*\r\n/m);
    c.send("a2 LOGOUT\r\n");
    await c.expect(/^a2 OK .*\r\n/m);
    await within(c.closed, 5000, "close after LOGOUT");
    const login = await dovecotLogin(since, "imap-login", c.localPort);
    assert.deepEqual([login.rip, login.realRip, login.lport], ["127.0.0.2", "127.0.0.1", String(p.chain)]);
  });

  for (const v of ["v1", "v2"] as const) {
    test(`${target}: proxy_protocol ${v} into Postfix's smtpd_upstream_proxy_protocol: Postfix logs client=unknown[127.0.0.2]`, async () => {
      const c = await connectClient(v === "v1" ? p.smtpV1 : p.smtpV2);
      await c.expect(/^220 .*\r\n/);
      c.send("EHLO client.example\r\n");
      await c.expect(/^250 .*\r\n/m);
      c.send(`AUTH PLAIN ${Buffer.from(`\0${ALICE}\0${ALICE_PASS}`).toString("base64")}\r\n`);
      await c.expect(/^235 .*\r\n/m);
      c.send("MAIL FROM:<sender@example.org>\r\n");
      await c.expect(/^250 .*\r\n/m);
      c.send(`RCPT TO:<${ALICE}>\r\n`);
      await c.expect(/^250 .*\r\n/m);
      c.send("DATA\r\n");
      await c.expect(/^354 .*\r\n/m);
      c.send(`Subject: ${u(`pp-${v}`)}\r\n\r\nthrough a PROXY ${v} header\r\n.\r\n`);
      const queued = await c.expect(/^250 .*queued as ([0-9A-F]+)\r\n/m);
      const queueId = /queued as ([0-9A-F]+)/.exec(queued)![1];
      c.send("QUIT\r\n");
      await c.expect(/^221 .*\r\n/m);
      const line = await postfix.waitForLog(new RegExp(`smtpd\\[\\d+\\]: ${queueId}: client=`));
      assert.match(line, new RegExp(`: client=unknown\\[127\\.0\\.0\\.2\\]:${c.localPort}(,|$)`));
    });
  }

  test(`${target}: SMTP behind a PROXY header: XCLIENT ADDR= and PORT= carry the realip'd client`, async () => {
    const user = u("xclient");
    const before = smtpBackend.connections.length;
    const c = await connectClient(p.smtpIn);
    c.send("PROXY TCP4 192.0.2.55 127.0.0.1 6000 587\r\n");
    await c.expect(/^220 .*\r\n/);
    c.send("EHLO client.example\r\n");
    await c.expect(/^250 .*\r\n/m);
    c.send(`AUTH PLAIN ${Buffer.from(`\0${user}\0pw`).toString("base64")}\r\n`);
    await c.expect(/^235 .*\r\n/m);
    c.send("QUIT\r\n");
    await c.expect(/^221 .*\r\n/m);
    const [conn] = (await smtpBackend.waitForConnections(before + 1)).slice(before);
    const xclient = /^XCLIENT .*$/m.exec(conn.receivedText())?.[0];
    assert.match(xclient ?? "", /^XCLIENT ADDR=192\.0\.2\.55 LOGIN=\S+ NAME=\[UNAVAILABLE\]/, conn.receivedText());
    assert.match(xclient ?? "", / PORT=6000( |\r|$)/);
    const r = await authRequestOf(user);
    assert.equal(r.header("Client-IP"), "192.0.2.55");
    assert.deepEqual(ppHeaders(r), ["192.0.2.55", "6000", "127.0.0.1", "587"]);
  });

  // ---- Bad input (straight to the server with set_real_ip_from 127.0.0.2) ------------------

  test(`${target}: a plain IMAP client on a proxy_protocol listener is never answered: closed at its first line, or at timeout`, async () => {
    const talker = await connectBad();
    const waiter = await connectBad();
    const t0 = Date.now();
    talker.send("a1 CAPABILITY\r\n");
    const talkerMs = await closedUnanswered(talker, t0, "a client that speaks first");
    assert.ok(talkerMs < AT_ONCE_MS, `closed after ${talkerMs} ms`);
    const sid = await sidOf(postern, talker);
    await postern.waitForLog(new RegExp(`\\[error\\] \\d+#0: \\*${sid} broken header: "a1 CAPABILITY" while reading PROXY protocol, client: 127\\.0\\.0\\.2, server: 127\\.0\\.0\\.1:${p.bad}$`));
    const waiterMs = await closedUnanswered(waiter, t0, "a client that waits for a greeting");
    assert.ok(waiterMs >= BAD_INPUT_TIMEOUT_MS - 500, `closed after ${waiterMs} ms, before the timeout`);
    const wsid = await sidOf(postern, waiter);
    await postern.waitForLog(new RegExp(`\\*${wsid} client timed out while reading PROXY protocol, client: 127\\.0\\.0\\.2, server: 127\\.0\\.0\\.1:${p.bad}$`));
    assert.doesNotMatch(postern.logs(), new RegExp(`\\*(${sid}|${wsid}) .*(client logged in|auth)`));
  });

  test(`${target}: garbage and malformed v1 headers are refused at once with nginx's "broken header"`, async () => {
    const cases: [Buffer, RegExp][] = [
      [Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0xff, 0xfe]), /broken header: "\\x16\\x03\\x01\\x00\\xa5\\x01\\x00\\x00\\xa1\\x03\\x03\\xff\\xfe"/],
      [Buffer.from("PROXY TCP4 1.2.3.999 127.0.0.1 1 2\r\n"), /broken header: "PROXY TCP4 1\.2\.3\.999 127\.0\.0\.1 1 2"/],
      [Buffer.from("PROXY TCP6 1:::2 ::1 1 2\r\n"), /broken header: "PROXY TCP6 1:::2 ::1 1 2"/],
      [Buffer.from("PROXY TCP4 1.2.3.4 127.0.0.1 1 2\n"), /broken header: "PROXY TCP4 1\.2\.3\.4 127\.0\.0\.1 1 2"/],
      [Buffer.concat([V2_SIG, Buffer.from([0x11, 0x11, 0, 12])]), /unknown PROXY protocol version: 1/],
    ];
    for (const [bytes, logged] of cases) {
      const c = await connectBad();
      const t0 = Date.now();
      c.send(bytes);
      const ms = await closedUnanswered(c, t0, `${JSON.stringify(bytes.toString("latin1"))}`);
      assert.ok(ms < AT_ONCE_MS, `closed after ${ms} ms`);
      const sid = await sidOf(postern, c);
      const line = await postern.waitForLog(new RegExp(`\\*${sid} (broken header|unknown PROXY)`));
      assert.match(line, logged);
      assert.match(line, /\[error\] .* while reading PROXY protocol, client: 127\.0\.0\.2, /);
    }
  });

  for (const v of ["v1", "v2"] as const) {
    test(`${target}: a ${v} header written byte by byte, flushed after each byte, is read whole`, async () => {
      const user = u(`split-${v}`);
      const header = v === "v1"
        ? Buffer.from("PROXY TCP4 192.0.2.77 127.0.0.1 4242 143\r\n")
        : v2Header("192.0.2.77", 4242, "127.0.0.1", 143, { tlvs: tlv(0x04, 5, Buffer.from("noop!")) });
      const c = await connectBad();
      for (const byte of header) await c.sendFlushed(Buffer.of(byte));
      await imapLogin(c, user);
      const r = await authRequestOf(user);
      assert.equal(r.header("Client-IP"), "192.0.2.77");
      assert.deepEqual(ppHeaders(r), ["192.0.2.77", "4242", "127.0.0.1", "143"]);
      const sid = await sidOf(postern, c);
      await postern.waitForLog(new RegExp(`\\*${sid} client logged in, client: 192\\.0\\.2\\.77, server: 127\\.0\\.0\\.1:${p.bad}, login: "${re(user)}"`));
    });
  }

  test(`${target}: bytes after the header in the same packet reach the IMAP session`, async () => {
    const c = await connectBad();
    c.send("PROXY TCP6 2001:DB8:0:0::7 ::1 5555 143\r\na0 CAPABILITY\r\n");
    await c.expect(/^\* OK .*\r\n/);
    await c.expect(/^\* CAPABILITY .*\r\na0 OK .*\r\n/m);
    const user = u("pipelined");
    c.send(`a1 LOGIN ${user} pw\r\n`);
    await c.expect(/^a1 OK .*\r\n/m);
    c.destroy();
    const r = await authRequestOf(user);
    // Client-IP as nginx prints a parsed address; Proxy-Protocol-Addr as the header wrote it
    assert.equal(r.header("Client-IP"), "2001:db8::7");
    assert.deepEqual(ppHeaders(r), ["2001:DB8:0:0::7", "5555", "::1", "143"]);
  });

  test(`${target}: a v2 header whose length promises more than arrives waits, then is closed by timeout`, async () => {
    const c = await connectBad();
    const t0 = Date.now();
    const full = v2Header("192.0.2.8", 1, "127.0.0.1", 143, { len: 200 });
    c.send(Buffer.concat([full, Buffer.from("a1 CAPABILITY\r\n")]));
    const ms = await closedUnanswered(c, t0, "a lying v2 length");
    assert.ok(ms >= BAD_INPUT_TIMEOUT_MS - 500, `closed after ${ms} ms, before the timeout`);
    const sid = await sidOf(postern, c);
    await postern.waitForLog(new RegExp(`\\*${sid} client timed out while reading PROXY protocol, client: 127\\.0\\.0\\.2, `));
  });

  test(`${target}: v2 headers with oversized TLVs are refused at once, before the rest arrives`, async () => {
    const cases: [string, Buffer, RegExp][] = [
      // TLVs adding up to more than Postern reads (4 KiB): refused from the length field alone
      ["a 60000-byte TLV", v2Header("192.0.2.9", 1, "127.0.0.1", 143, { tlvs: tlv(0xe0, 60000, Buffer.alloc(0)), len: 12 + 3 + 60000 }), /header is too large: 60015 bytes/],
      ["a 4100-byte TLV", v2Header("192.0.2.9", 1, "127.0.0.1", 143, { tlvs: tlv(0xe0, 4100, Buffer.alloc(0)), len: 12 + 3 + 4100 }), /header is too large: 4115 bytes/],
      // a TLV that claims more than its header holds
      ["a TLV longer than its header", v2Header("192.0.2.9", 1, "127.0.0.1", 143, { tlvs: Buffer.concat([tlv(0xe0, 50, Buffer.alloc(0)), Buffer.alloc(10)]) }), /TLV length 50 exceeds the header/],
      ["too many TLVs", v2Header("192.0.2.9", 1, "127.0.0.1", 143, { tlvs: Buffer.concat(Array.from({ length: 65 }, () => tlv(0xe1, 0))) }), /too many TLVs/],
    ];
    for (const [what, bytes, logged] of cases) {
      const c = await connectBad();
      const t0 = Date.now();
      c.send(bytes);
      const ms = await closedUnanswered(c, t0, what);
      assert.ok(ms < AT_ONCE_MS, `${what}: closed after ${ms} ms`);
      const sid = await sidOf(postern, c);
      const line = await postern.waitForLog(new RegExp(`\\*${sid} .* while reading PROXY protocol`));
      assert.match(line, logged, what);
    }
  });

  test(`${target}: a v1 line longer than 107 bytes is refused at once, with or without its CRLF`, async () => {
    const long = "PROXY TCP4 192.0.2.10 127.0.0.1 1 143" + " ".repeat(80);
    for (const bytes of [long, long + "\r\n"]) {
      const c = await connectBad();
      const t0 = Date.now();
      c.send(bytes);
      const ms = await closedUnanswered(c, t0, `a ${bytes.length}-byte v1 line`);
      assert.ok(ms < AT_ONCE_MS, `closed after ${ms} ms`);
      const sid = await sidOf(postern, c);
      await postern.waitForLog(new RegExp(`\\*${sid} broken header: "PROXY TCP4 192\\.0\\.2\\.10 127\\.0\\.0\\.1 1 143 +" while reading PROXY protocol`));
    }
  });

  test(`${target}: LOCAL v2 (a balancer's health check) and v1 UNKNOWN keep the peer address and send no Proxy-Protocol-*`, async () => {
    for (const [what, header] of [["local", v2Header("", 0, "", 0, { command: "local" })], ["unknown", Buffer.from("PROXY UNKNOWN\r\n")]] as const) {
      const user = u(`keep-${what}`);
      const c = await connectBad();
      c.send(header);
      await imapLogin(c, user);
      const r = await authRequestOf(user);
      assert.equal(r.header("Client-IP"), "127.0.0.2");
      assert.deepEqual(ppHeaders(r), [undefined, undefined, undefined, undefined]);
      const sid = await sidOf(postern, c);
      await postern.waitForLog(new RegExp(`\\*${sid} client logged in, client: 127\\.0\\.0\\.2, server: 127\\.0\\.0\\.1:${p.bad}, login: "${re(user)}"`));
    }
  });

  test(`${target}: a reload that switches an ssl listen's proxy_protocol off and on reopens it the right way`, async () => {
    const greeting = (socket: net.Socket) =>
      within(new Promise<string>((res, rej) => {
        const sock = tls.connect({ socket, ca: pki.caPem, servername: "localhost" });
        let got = "";
        sock.on("data", (d: Buffer) => {
          got += d.toString("latin1");
          if (got.includes("\r\n")) {
            sock.destroy();
            res(got);
          }
        });
        sock.once("error", rej);
      }), 10_000, "a greeting over TLS");
    const reload = async (sslListen: string) => {
      const from = postern.logs().length;
      postern.writeConfig(config(p, sslListen));
      postern.signal("SIGHUP");
      await postern.waitForLog(/reconfigured/, 10_000, from);
    };
    await reload("ssl");
    assert.match(await greeting(net.connect({ host: "127.0.0.1", port: p.ssl, localAddress: "127.0.0.2" })), /^\* OK /);
    await reload("ssl proxy_protocol");
    const raw = net.connect({ host: "127.0.0.1", port: p.ssl, localAddress: "127.0.0.2" });
    await new Promise<void>((res, rej) => raw.once("connect", res).once("error", rej));
    const localPort = raw.localPort;
    await new Promise<void>((res) => raw.write("PROXY TCP4 192.0.2.99 127.0.0.1 9999 993\r\n", () => res()));
    assert.match(await greeting(raw), /^\* OK /);
    await postern.waitForLog(new RegExp(`client 127\\.0\\.0\\.2:${localPort} is 192\\.0\\.2\\.99:9999 by PROXY protocol`));
  });

  test(`${target}: Postern and HAProxy stop cleanly`, async () => {
    await haproxy.stop();
    assert.doesNotMatch(postern.logs(), /session failed|crashed|alice-secret/);
    const code = await postern.stop();
    assert.equal(code, 0, `exit code ${code}; output:\n${postern.logs().slice(-4000)}`);
  });
}
