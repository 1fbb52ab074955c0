// Platform adapter for Deno (2.x): Deno.listen / Deno.connect with read/write loops,
// Deno.startTls for client TLS, node:tls over the native conn for server TLS, Deno.serve
// for HTTP, Deno.resolveDns.
//
// Where Deno has no native API the adapter uses node:tls (which Deno implements):
//   - server-side STARTTLS: Deno.startTls is client-only, so node:tls runs over a small
//     Duplex bridge around the native Deno.Conn (listeners stay native Deno.listen);
//   - implicit-TLS listeners: Deno.listen plus the same bridge (Deno.listenTls takes one
//     cert/key and nothing else, and leaks the socket of a failed handshake);
//   - client TLS with verification off or with a client certificate.
// Those sessions are SocketConns (node-socket.ts) over a Duplex bridge (tls-bridge.ts,
// which also documents workarounds for Deno's node:tls losing FINs); the relay copes
// with both kinds.
//
// Docs relied on:
//   https://docs.deno.com/api/deno/~/Deno.listen         https://docs.deno.com/api/deno/~/Deno.connect
//   https://docs.deno.com/api/deno/~/Deno.Conn           (read/write may be partial, closeWrite)
//   https://docs.deno.com/api/deno/~/Deno.listenTls      https://docs.deno.com/api/deno/~/Deno.startTls
//   https://docs.deno.com/api/deno/~/Deno.serve          https://docs.deno.com/api/deno/~/Deno.resolveDns
//   https://docs.deno.com/api/deno/~/Deno.addSignalListener
//   https://docs.deno.com/api/node/tls/                  (node:tls in Deno)

import { scrypt as nodeScrypt } from "node:crypto";
import * as dgram from "node:dgram";
import * as nodeTls from "node:tls";
import type {
  Address,
  Conn,
  ListenAt,
  Listener,
  Platform,
  RelayHandle,
  RelayOpts,
  TlsClient,
  TlsFailure,
  TlsInfo,
  TlsProblem,
  TlsServer,
} from "../src/platform.ts";
import { TlsVerifyError } from "../src/platform.ts";
import { pickPair, scanClientHello } from "./client-hello.ts";
import {
  SocketConn,
  startClientTls,
  startServerTls,
  TLS_HANDSHAKE_TIMEOUT_MS,
} from "./node-socket.ts";
import {
  commonClientProblems,
  commonServerProblems,
  contextProblems,
  messageOf,
  prepareServer,
  tlsInfoOf,
  versionsOf,
  x509Reason,
} from "./node-tls.ts";
import { bridgeStream, type ByteStream } from "./tls-bridge.ts";
import { type Direction, pumpConn, RelayControl } from "./relay-control.ts";

// ---------------------------------------------------------------------------
// Runtime check

if (typeof (globalThis as { Deno?: unknown }).Deno === "undefined" || typeof (globalThis as { Bun?: unknown }).Bun !== "undefined") {
  throw new Error("Cannot load platform/deno.ts: this is not Deno (use the adapter for this runtime)");
}

// ---------------------------------------------------------------------------
// node:tls workaround (Deno 2.9.6)
//
// TLSSocket.prototype._start calls this._handle.start() and then reads
// this._handle._flushEncOut; start() can destroy the socket at once (bytes already buffered
// that fail the handshake: garbage instead of a ClientHello, a peer already gone), and the
// TypeError that follows is thrown from a nextTick: it would end the process. The socket is
// already destroyed with the real error by then, so nothing is lost by swallowing it.

{
  const proto = nodeTls.TLSSocket.prototype as unknown as { _start(this: StartSelf): void };
  type StartSelf = { _handle: unknown; destroyed: boolean; destroy(e?: Error): void };
  const start = proto._start;
  if (typeof start === "function") {
    proto._start = function (this: StartSelf): void {
      try {
        start.call(this);
      } catch (err) {
        if (this._handle) throw err;
        if (!this.destroyed) this.destroy(new Error("TLS handshake failed"));
      }
    };
  }
}

// ---------------------------------------------------------------------------
// Constants

// read() buffer of a connection before login (lines and literals within the client buffers, short
// backend replies); made at the first read, dropped when the relay takes the connection over
const READ_CHUNK = 16 * 1024;
const BULK_READ = 64 * 1024; // relay reads while a transfer keeps the buffer full
const ACCEPT_RETRY_MS = 100; // after an accept error such as EMFILE, instead of spinning
const DNS_TIMEOUT_MS = 5_000;
const DNS_TRIES = 2;

// ---------------------------------------------------------------------------
// TCP and TLS: the Conn

type NativeConn = Deno.TcpConn | Deno.TlsConn;

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let rest = data; rest.byteLength > 0;) {
    const n = await conn.write(rest); // may be partial
    rest = rest.subarray(n);
  }
}

class DenoConn implements Conn {
  readonly remote: Address;
  readonly local: Address;
  readonly tlsInfo?: TlsInfo;
  readonly raw: NativeConn;
  readonly #isTls: boolean;
  #buf: Uint8Array | undefined;
  #reading = false;
  #ended = false;
  #closed = false;
  #taken = false;
  #writing: Promise<void> = Promise.resolve();

  constructor(raw: NativeConn, isTls: boolean, tlsInfo?: TlsInfo) {
    this.raw = raw;
    this.#isTls = isTls;
    this.tlsInfo = tlsInfo;
    const r = raw.remoteAddr;
    const l = raw.localAddr;
    this.remote = { host: r.hostname, port: r.port };
    this.local = { host: l.hostname, port: l.port };
  }

  async read(): Promise<Uint8Array | null> {
    if (this.#ended || this.#closed || this.#taken) return null;
    if (this.#reading) throw new Error("Cannot read: another read is pending");
    this.#reading = true;
    const buf = (this.#buf ??= new Uint8Array(READ_CHUNK));
    try {
      const n = await this.raw.read(buf);
      if (n === null) {
        this.#ended = true;
        return null;
      }
      return buf.slice(0, n); // a copy: the caller may keep it
    } catch {
      this.#ended = true; // reset, or closed under us: the connection is gone
      return null;
    } finally {
      this.#reading = false;
    }
  }

  write(data: Uint8Array): Promise<void> {
    if (this.#closed || this.#taken) return Promise.reject(new Error("Cannot write: connection closed"));
    const p = this.#writing.then(() => writeAll(this.raw, data));
    this.#writing = p.catch(() => {});
    return p;
  }

  async closeWrite(): Promise<void> {
    await this.#writing;
    if (this.#closed) return;
    try {
      await this.raw.closeWrite();
    } catch {
      // already shut or gone: nothing left to send
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.raw.close();
    } catch {
      // already closed by the runtime
    }
  }

  /** Waits for queued writes, then hands the native conn over (relay); this Conn is done after. */
  async take(): Promise<NativeConn> {
    await this.#writing;
    this.#taken = true;
    this.#buf = undefined; // an idle relayed session must not keep its login's read buffer
    return this.raw;
  }

  /** `initial`: bytes the caller read that belong to the TLS stream (after a PROXY header). */
  async startTls(t: TlsServer | TlsClient, initial?: Uint8Array, timeoutMs = TLS_HANDSHAKE_TIMEOUT_MS): Promise<Conn> {
    if (this.#reading) throw new Error("Cannot start TLS: a read is pending");
    if (this.#isTls) throw new Error("Cannot start TLS: the connection already uses TLS");
    const raw = await this.take();
    const at = { remote: this.remote, local: this.local };
    if (t.side === "client" && t.verify && t.cert === undefined && !(initial?.byteLength)) {
      // Native: Deno.startTls verifies the chain (t.ca is added to the default roots) and the name.
      const hostname = t.serverName ?? this.remote.host;
      const conn = await Deno.startTls(raw as Deno.TcpConn, { hostname, caCerts: t.ca !== undefined ? [t.ca] : undefined });
      try {
        await withTimeout(conn.handshake(), timeoutMs, "Cannot start TLS: no handshake in time");
      } catch (err) {
        conn.close();
        throw asRustlsVerifyError(err);
      }
      return new DenoConn(conn, true, { verified: true }); // Deno exposes no peer certificate
    }
    // node:tls over the native conn (tls-bridge.ts); nothing was read ahead, so nothing to drop
    const stream = nativeStream(raw);
    if (t.side === "server" && t.certs.length > 1) {
      // rustls serves one pair: read the ClientHello, pick the pair it calls for, replay it
      const peeked = await withTimeout(peekClientHello(stream, initial ?? new Uint8Array(0)), timeoutMs, "Cannot start TLS: no ClientHello in time")
        .catch((err) => {
          stream.close();
          throw err;
        });
      t = singlePair(t, pickPair(prepareServer(t).keyTypes, peeked.sigalgs));
      initial = peeked.bytes;
    }
    const { duplex, bridge } = bridgeStream(stream);
    const secure = t.side === "server"
      ? await startServerTls(duplex, t, initial, timeoutMs)
      : await startClientTls(duplex, t, this.remote.host, initial);
    // rustls's verification errors reach node:tls coarsely: ask the chain for OpenSSL's
    return new SocketConn(secure, at, tlsInfoOf(secure, t.side === "server" ? t : undefined, { diagnose: true }), bridge);
  }
}

/** Reads until the ClientHello is whole (or cannot be one: then TLS fails on it as it would anyway). */
async function peekClientHello(stream: ByteStream, first: Uint8Array): Promise<{ bytes: Uint8Array; sigalgs?: readonly number[] }> {
  let bytes = first;
  for (;;) {
    const scan = scanClientHello(bytes);
    if (scan.kind === "done") return { bytes, sigalgs: scan.sigalgs };
    if (scan.kind === "invalid") return { bytes };
    const chunk = await stream.read();
    if (chunk === null) return { bytes };
    const next = new Uint8Array(bytes.length + chunk.length);
    next.set(bytes);
    next.set(chunk, bytes.length);
    bytes = next;
  }
}

const SINGLE_PAIRS = new WeakMap<TlsServer, TlsServer[]>();

/** The TlsServer with only pair `i` (kept, so its node:tls context is made once). */
function singlePair(t: TlsServer, i: number): TlsServer {
  let list = SINGLE_PAIRS.get(t);
  if (list === undefined) {
    list = t.certs.map((c) => ({ ...t, certs: [c] }));
    SINGLE_PAIRS.set(t, list);
  }
  return list[i];
}

/** Deno.startTls reports a bad certificate as "invalid peer certificate: UnknownIssuer" and the like. */
function asRustlsVerifyError(err: unknown): unknown {
  const text = messageOf(err);
  if (!/invalid peer certificate/i.test(text)) return err;
  const code = RUSTLS_CERT_ERRORS.find(([re]) => re.test(text))?.[1] ?? "CERT_REJECTED";
  return new TlsVerifyError(code, `${x509Reason(code)} (${text})`);
}

/** rustls CertificateError texts and the OpenSSL error each corresponds to. */
const RUSTLS_CERT_ERRORS: readonly [RegExp, string][] = [
  [/UnknownIssuer/, "UNABLE_TO_GET_ISSUER_CERT_LOCALLY"],
  [/NotValidForName|not valid for name/i, "HOSTNAME_MISMATCH"],
  [/Expired|expired/, "CERT_HAS_EXPIRED"],
  [/NotValidYet|not valid yet/i, "CERT_NOT_YET_VALID"],
  [/BadSignature|bad signature/i, "CERT_SIGNATURE_FAILURE"],
  [/Revoked|revoked/, "CERT_REVOKED"],
  [/InvalidPurpose|purpose/i, "INVALID_PURPOSE"],
];

/** The native conn as the byte stream under node:tls. */
function nativeStream(conn: Deno.Conn): ByteStream {
  const buf = new Uint8Array(READ_CHUNK);
  return {
    read: async () => {
      const n = await conn.read(buf);
      return n === null ? null : buf.slice(0, n);
    },
    write: (data) => writeAll(conn, data),
    closeWrite: () => conn.closeWrite(),
    close: () => {
      try {
        conn.close();
      } catch {
        // already closed
      }
    },
  };
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms))),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------
// TCP and TLS: listen, connect

// What Deno's TLS (rustls, under Deno's node:tls) honours, seen with
// Deno 2.9.6 (see the e2e tests): one cert/key pair per handshake (several are served by
// peeking at the ClientHello, above), TLSv1.2 and TLSv1.3 and bounds between them, client
// certificates verified against the CAs. Not: cipher lists, curves, server cipher order, DH
// parameters, CRLs, session timeout, ticket keys or turning tickets off (Deno's node:tls
// ignores those options without a word, so they are refused here).

function checkTls(t: TlsServer | TlsClient): TlsProblem[] {
  if (t.side === "client") {
    const out = commonClientProblems(t);
    if (t.ca !== undefined && t.verify) {
      out.push({
        option: "ca",
        kind: "partial",
        why: "Deno.startTls adds these CAs to its built-in roots (Mozilla's), which stay trusted too",
      });
    }
    return out;
  }
  const out = [...commonServerProblems(t), ...contextProblems(t)];
  const no = (option: string, why: string) => out.push({ option, kind: "unsupported", why });
  const old = versionsOf(t).filter((v) => v === "TLSv1" || v === "TLSv1.1");
  if (old.length > 0) no("protocols", `its TLS stack (rustls) speaks TLSv1.2 and TLSv1.3 only, not ${old.join(" ")}`);
  if (t.ciphers !== undefined) no("ciphers", "its TLS stack (rustls) has a fixed list of AEAD cipher suites, all within nginx's default HIGH:!aNULL:!MD5; remove ssl_ciphers");
  if (t.ecdhCurve !== undefined) no("ecdhCurve", "its TLS stack (rustls) has a fixed list of key exchange groups; use auto");
  if (t.honorCipherOrder) no("honorCipherOrder", "its TLS stack (rustls) follows the client's cipher order");
  if (t.dhparam !== undefined) no("dhparam", "its TLS stack (rustls) has no DHE cipher suites; remove ssl_dhparam (ECDHE is used)");
  if (t.crl !== undefined) no("crl", "its TLS stack cannot be given a CRL for client certificates");
  if (t.sessionTimeoutSec !== undefined) no("sessionTimeoutSec", "its TLS stack has a fixed session lifetime");
  if (t.sessionTickets === false) no("sessionTickets", "its TLS stack always issues session tickets");
  if (t.ticketKeys !== undefined && t.ticketKeys.length > 0) no("ticketKeys", "its TLS stack cannot be given session ticket keys");
  if (t.sessionCacheSize) {
    out.push({ option: "sessionCacheSize", kind: "partial", why: "its TLS stack keeps its own cache of 256 sessions besides session tickets" });
  }
  return out;
}

function setUp(conn: NativeConn, at?: ListenAt): void {
  if (!("setNoDelay" in conn)) return; // TlsConn: no socket options in Deno
  conn.setNoDelay(true); // line protocols: never hold a short reply back (Nagle)
  if (at?.keepAlive) conn.setKeepAlive(true);
}

function listen(at: ListenAt, onConn: (c: Conn) => void, t?: TlsServer, onTlsFailure?: (f: TlsFailure) => void): Promise<Listener> {
  return new Promise((resolve) => resolve(listenNow(at, onConn, t, onTlsFailure))); // a throw (EADDRINUSE) rejects
}

/**
 * Implicit TLS runs on node:tls over an accepted Deno.listen conn, as STARTTLS does, never on
 * Deno.listenTls: a Deno.TlsConn whose handshake failed (garbage, a client that stopped) stays
 * open on the network after close() (seen with 2.9.6), so every bad client would leak a socket.
 */
function listenNow(at: ListenAt, onConn: (c: Conn) => void, t?: TlsServer, onTlsFailure?: (f: TlsFailure) => void): Listener {
  const options = { hostname: at.host, port: at.port, tcpBacklog: at.backlog, ...(at.reusePort ? { reusePort: true } : {}) };
  const listener: Deno.Listener<Deno.TcpConn> = Deno.listen({ ...options, transport: "tcp" });
  const timeoutMs = at.handshakeTimeoutMs ?? TLS_HANDSHAKE_TIMEOUT_MS;
  let closed = false;
  const accepting = (async () => {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (closed || err instanceof Deno.errors.BadResource) return;
        await new Promise((r) => setTimeout(r, ACCEPT_RETRY_MS));
        continue;
      }
      setUp(conn, at);
      const plain = new DenoConn(conn, false);
      if (t === undefined) onConn(plain);
      else {
        plain.startTls(t, undefined, timeoutMs).then(onConn, (err) => { // the conn is closed on failure
          onTlsFailure?.({ remote: plain.remote, local: plain.local, error: messageOf(err) });
        });
      }
    }
  })();
  const addr = listener.addr as Deno.NetAddr;
  return {
    address: { host: addr.hostname, port: addr.port },
    // stops accepting; live connections keep going. The port is free once the pending accept
    // has ended: a listen on it right after (a reload) would fail before that.
    close: async () => {
      closed = true;
      try {
        listener.close();
      } catch {
        // already closed
      }
      await accepting;
    },
  };
}

async function connect(to: Address, timeoutMs: number, t?: TlsClient): Promise<Conn> {
  const aborter = new AbortController();
  const timer = setTimeout(() => aborter.abort(), timeoutMs); // covers the TCP connect and the TLS handshake
  let conn: Deno.TcpConn | undefined;
  try {
    conn = await Deno.connect({ hostname: to.host, port: to.port, transport: "tcp", signal: aborter.signal });
    setUp(conn);
    const plain = new DenoConn(conn, false);
    if (t === undefined) return plain;
    const upgrading = plain.startTls(t);
    const onAbort = (): void => plain.close();
    aborter.signal.addEventListener("abort", onAbort);
    try {
      return await upgrading;
    } finally {
      aborter.signal.removeEventListener("abort", onAbort);
    }
  } catch (err) {
    try {
      conn?.close();
    } catch {
      // already closed
    }
    if (aborter.signal.aborted) throw new Error(`Cannot connect to "${to.host}:${to.port}": timed out after ${timeoutMs} ms`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------
// Relay: read/write loops with one reused buffer per direction

// node:tls sides (SocketConn) go through their read()/write(): pausing a node:tls socket
// on Deno can lose the peer's FIN (see tls-bridge.ts), so the data/drain relay is not used.
function relay(client: Conn, upstream: Conn, opts: RelayOpts): RelayHandle {
  const ctl = new RelayControl(opts, client, upstream);
  const pump = (src: Conn, dst: Conn, dir: Direction): Promise<void> =>
    src instanceof DenoConn && dst instanceof DenoConn
      ? pumpNative(src, dst, dir, ctl, opts.bufferSize)
      : pumpConn(src, dst, dir, ctl); // a node:tls side: fresh chunks, the writer may keep them
  void pump(client, upstream, "client-to-upstream");
  void pump(upstream, client, "upstream-to-client");
  return ctl;
}

/**
 * One direction of the relay. A session waits with a proxy_buffer-sized read pending (an idle
 * session holds two of them); a read that fills it means more is waiting, so reads go to a
 * BULK_READ buffer while the data keeps coming, and back to the small one at the first short
 * read. Each read is an op with a fixed cost, which 4 KiB reads would pay 16 times as often.
 */
async function pumpNative(src: DenoConn, dst: DenoConn, dir: Direction, ctl: RelayControl, bufferSize: number): Promise<void> {
  const small = new Uint8Array(bufferSize);
  let buf = small;
  try {
    const from = src.raw;
    const to = await dst.take();
    for (;;) {
      const n = await from.read(buf);
      if (ctl.ended) return;
      if (n === null) break;
      ctl.touch();
      await writeAll(to, buf.subarray(0, n)); // done before the buffer is read into again
      ctl.moved(dir, n);
      if (n === buf.length) {
        if (buf.length < BULK_READ) buf = new Uint8Array(BULK_READ);
      } else if (buf !== small && n < bufferSize) {
        buf = small; // the burst is over: the big buffer goes to the garbage collector
      }
    }
    try {
      await to.closeWrite();
    } catch {
      // the peer is already gone: nothing more to deliver
    }
    ctl.finished(dir);
  } catch (err) {
    if (!ctl.ended) ctl.fail(err);
  }
}

// ---------------------------------------------------------------------------
// HTTP

function serveHttp(at: ListenAt, fetch: (r: Request) => Promise<Response> | Response): Promise<Listener> {
  return new Promise((resolve) => { // a throw from Deno.serve (EADDRINUSE) rejects
    const server = Deno.serve({ hostname: at.host, port: at.port, onListen: () => {} }, (req) => fetch(req));
    const addr = server.addr as Deno.NetAddr;
    resolve({
      address: { host: addr.hostname, port: addr.port },
      close: () => server.shutdown(), // graceful: requests in flight finish
    });
  });
}

// ---------------------------------------------------------------------------
// DNS: Deno.resolveDns, except PTR for loopback addresses, which Deno answers itself
// ("localhost.") without asking the server: those go out as a plain UDP query.

function isNotFound(err: unknown): boolean {
  return err instanceof Deno.errors.NotFound;
}

/** Asks each server in turn until one answers; an empty answer is an answer. */
async function askServers(servers: readonly Address[], ask: (opts?: Deno.ResolveDnsOptions) => Promise<string[]>): Promise<string[]> {
  if (servers.length === 0) return ask().catch((err) => (isNotFound(err) ? [] : Promise.reject(err)));
  let last: unknown;
  for (const s of servers) {
    for (let attempt = 0; attempt < DNS_TRIES; attempt++) {
      try {
        return await ask({ nameServer: { ipAddr: s.host, port: s.port }, signal: AbortSignal.timeout(DNS_TIMEOUT_MS) });
      } catch (err) {
        if (isNotFound(err)) return [];
        last = err;
      }
    }
  }
  throw last;
}

function ptrName(ip: string): string {
  if (ip.includes(".") && !ip.includes(":")) return ip.split(".").reverse().join(".") + ".in-addr.arpa";
  const [head, tail = ""] = ip.split("::");
  const groups = (s: string) => (s === "" ? [] : s.split(":"));
  const h = groups(head);
  const t = groups(tail);
  const full = [...h, ...Array(8 - h.length - t.length).fill("0"), ...t].map((g) => g.padStart(4, "0")).join("");
  return full.split("").reverse().join(".") + ".ip6.arpa";
}

function isLoopback(ip: string): boolean {
  return ip.startsWith("127.") || ip === "::1" || ip.startsWith("::ffff:127.");
}

async function reverseDns(ip: string, servers: readonly Address[]): Promise<string[]> {
  const v4 = ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip;
  const name = ptrName(v4);
  if (isLoopback(v4) && servers.length > 0) return stripDots(await queryPtrUdp(name, servers));
  return stripDots(await askServers(servers, (o) => Deno.resolveDns(name, "PTR", o)));
}

async function resolveDns(name: string, servers: readonly Address[]): Promise<string[]> {
  const results = await Promise.allSettled([
    askServers(servers, (o) => Deno.resolveDns(name, "A", o)),
    askServers(servers, (o) => Deno.resolveDns(name, "AAAA", o)),
  ]);
  const found = results.flatMap((x) => (x.status === "fulfilled" ? x.value : []));
  const failure = results.find((x) => x.status === "rejected") as PromiseRejectedResult | undefined;
  if (found.length === 0 && failure !== undefined) throw failure.reason;
  return found;
}

function stripDots(names: string[]): string[] {
  return names.map((n) => n.replace(/\.$/, ""));
}

/** One PTR question over UDP (RFC 1035 §4), each server in turn; NXDOMAIN or no PTR is []. */
async function queryPtrUdp(name: string, servers: readonly Address[]): Promise<string[]> {
  let last: unknown;
  for (const s of servers) {
    for (let attempt = 0; attempt < DNS_TRIES; attempt++) {
      try {
        return await askUdp(name, s);
      } catch (err) {
        last = err;
      }
    }
  }
  throw last;
}

function askUdp(name: string, server: Address): Promise<string[]> {
  const id = crypto.getRandomValues(new Uint16Array(1))[0];
  const qname: number[] = [];
  for (const label of name.split(".")) qname.push(label.length, ...new TextEncoder().encode(label));
  const query = Uint8Array.from([id >> 8, id & 255, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, ...qname, 0, 0, 12, 0, 1]);
  const sock = dgram.createSocket(server.host.includes(":") ? "udp6" : "udp4");
  return new Promise<string[]>((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`Cannot resolve "${name}": no answer from ${server.host}:${server.port}`)), DNS_TIMEOUT_MS);
    function done(err: Error | null, names?: string[]): void {
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve(names ?? []);
    }
    sock.on("error", (err) => done(err));
    sock.on("message", (msg: Uint8Array) => {
      if (msg.length < 12 || ((msg[0] << 8) | msg[1]) !== id) return; // not ours
      const rcode = msg[3] & 0x0f;
      if (rcode === 3) return done(null, []);
      if (rcode !== 0) return done(new Error(`Cannot resolve "${name}": DNS error ${rcode}`));
      try {
        done(null, parsePtrAnswers(msg));
      } catch (err) {
        done(err as Error);
      }
    });
    sock.send(query, server.port, server.host);
  });
}

function parsePtrAnswers(msg: Uint8Array): string[] {
  const qd = (msg[4] << 8) | msg[5];
  const an = (msg[6] << 8) | msg[7];
  let at = 12;
  for (let i = 0; i < qd; i++) at = skipName(msg, at) + 4;
  const names: string[] = [];
  for (let i = 0; i < an; i++) {
    at = skipName(msg, at);
    const type = (msg[at] << 8) | msg[at + 1];
    const len = (msg[at + 8] << 8) | msg[at + 9];
    if (type === 12) names.push(readName(msg, at + 10));
    at += 10 + len;
  }
  return names;
}

function skipName(msg: Uint8Array, at: number): number {
  for (;;) {
    const len = msg[at];
    if (len === undefined) throw new Error("Cannot parse DNS answer: truncated name");
    if (len === 0) return at + 1;
    if ((len & 0xc0) === 0xc0) return at + 2;
    at += len + 1;
  }
}

function readName(msg: Uint8Array, at: number): string {
  const labels: string[] = [];
  for (let hops = 0; hops < 64; hops++) {
    const len = msg[at];
    if (len === undefined) throw new Error("Cannot parse DNS answer: truncated name");
    if (len === 0) return labels.join(".");
    if ((len & 0xc0) === 0xc0) {
      at = ((len & 0x3f) << 8) | msg[at + 1];
      continue;
    }
    labels.push(new TextDecoder().decode(msg.subarray(at + 1, at + 1 + len)));
    at += len + 1;
  }
  throw new Error("Cannot parse DNS answer: name pointer loop");
}

// ---------------------------------------------------------------------------
// Crypto, files, logs, signals, process

function scrypt(password: Uint8Array, salt: Uint8Array, keyLen: number, cost: { N: number; r: number; p: number }): Promise<Uint8Array> {
  const maxmem = 128 * cost.r * (cost.N + cost.p + 2) + 1024 * 1024; // OpenSSL's own estimate plus slack
  return new Promise((resolve, reject) =>
    nodeScrypt(password, salt, keyLen, { ...cost, maxmem }, (err, key) => (err ? reject(err) : resolve(new Uint8Array(key))))
  );
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536))); // 64 KiB per call at most
  return out;
}

const encoder = new TextEncoder();

function writeLog(dest: string, line: string): void {
  if (dest !== "stderr") {
    Deno.writeTextFileSync(dest, line + "\n", { append: true });
    return;
  }
  let rest = encoder.encode(line + "\n");
  while (rest.byteLength > 0) rest = rest.subarray(Deno.stderr.writeSync(rest));
}

function onSignal(name: "HUP" | "QUIT" | "TERM" | "INT", fn: () => void): void {
  Deno.addSignalListener(`SIG${name}`, fn);
}

// ---------------------------------------------------------------------------
// Platform

export const denoPlatform: Platform = {
  runtime: "deno",
  checkTls,
  listen,
  connect,
  relay,
  serveHttp,
  fetch: (url, init) => globalThis.fetch(url, init),
  readTextFile: (path) => Deno.readTextFile(path),
  onSignal,
  reverseDns,
  resolveDns,
  scrypt,
  randomBytes,
  hostname: () => Deno.hostname(),
  pid: () => Deno.pid,
  writeLog,
  exit: (code) => Deno.exit(code),
};
