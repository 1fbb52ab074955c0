/// <reference types="bun-types" />
// Platform adapter for Bun (1.x): Bun.listen / Bun.connect push callbacks turned into
// the pull-style Conn (bounded read queue with pause/resume, write queue resumed on
// drain), socket.upgradeTLS for STARTTLS on both sides, a callback-driven relay,
// Bun.serve for HTTP, node:dns Resolver for DNS. Server TLS settings that native TLS cannot
// honour run node:tls over the Conn (tls-bridge.ts).
//
// Docs relied on:
//   https://bun.com/docs/runtime/networking/tcp        (Bun.listen, Bun.connect, handlers, allowHalfOpen)
//   https://bun.com/reference/bun/Socket               (write returns bytes taken, shutdown, upgradeTLS, pause/resume)
//   https://bun.com/docs/runtime/http/server           (Bun.serve, server.stop)
//   https://nodejs.org/api/dns.html#class-dnspromisesresolver (node:dns in Bun)
//   https://bun.com/docs/runtime/nodejs-compat         (node:crypto scrypt, node:tls checkServerIdentity)

import { appendFileSync } from "node:fs";
import { resolveDns, reverseDns, scrypt } from "./node-dns-crypto.ts";
import { concatAll } from "../src/util/bytes.ts";
import { isIP } from "node:net";
import { hostname } from "node:os";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
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
import { asVerifyError, SocketConn, startServerTls } from "./node-socket.ts";
import {
  commonClientProblems,
  commonServerProblems,
  contextProblems,
  NGINX_CIPHERS,
  messageOf,
  prepareServer,
  secureOptionsFor,
  tlsInfoOf,
  type TlsPeer,
} from "./node-tls.ts";
import { type Direction, pumpConn, RelayControl } from "./relay-control.ts";
import { bridgeStream } from "./tls-bridge.ts";

type Socket<T> = Bun.Socket<T>;
type SocketHandler<T> = Bun.SocketHandler<T>;
type TLSOptions = Bun.TLSOptions;

// ---------------------------------------------------------------------------
// Runtime check

if (typeof (globalThis as { Bun?: unknown }).Bun === "undefined") {
  throw new Error("Cannot load platform/bun.ts: this is not Bun (use the adapter for this runtime)");
}

// ---------------------------------------------------------------------------
// Constants

const READ_HIGH_WATER = 64 * 1024; // unread bytes queued before the socket is paused
const TLS_HANDSHAKE_TIMEOUT_MS = 60_000; // nginx mail `timeout` default

// ---------------------------------------------------------------------------
// TCP and TLS: the Conn

// What Bun's TLS (BoringSSL) honours, seen with Bun 1.4.5 (see the e2e tests):
//   native Bun.listen({tls}) / upgradeTLS: several cert/key pairs, ca + requestCert,
//     ciphers, and through secureOptions the protocol set, ssl_prefer_server_ciphers and
//     ssl_session_tickets off. No curves, CRL or session timeout.
//   Bun's node:tls: the same plus ecdhCurve, crl and sessionTimeout, and the client's whole
//     certificate chain (ssl_verify_depth); so a TlsServer that sets one of those runs on
//     node:tls over the native socket (tls-bridge.ts), for implicit TLS and STARTTLS alike.
//   Neither: DH parameters (BoringSSL has no DHE suites), ticket keys (setTicketKeys is not
//     implemented), a server-side session cache (no newSession/resumeSession events).

/**
 * Whether native TLS can run this TlsServer; otherwise node:tls over the socket does. A native
 * socket shows only the client's leaf certificate, not the chain ssl_verify_depth is counted on.
 */
function nativeTlsCan(t: TlsServer): boolean {
  return t.ecdhCurve === undefined && t.crl === undefined && t.sessionTimeoutSec === undefined && t.verifyDepth === undefined;
}

function checkTls(t: TlsServer | TlsClient): TlsProblem[] {
  if (t.side === "client") return commonClientProblems(t);
  const out = [...commonServerProblems(t), ...contextProblems(t)];
  if (t.dhparam !== undefined) {
    out.push({ option: "dhparam", kind: "unsupported", why: "its TLS stack (BoringSSL) has no DHE cipher suites; remove ssl_dhparam (ECDHE is used)" });
  }
  if (t.ticketKeys !== undefined && t.ticketKeys.length > 0) {
    out.push({ option: "ticketKeys", kind: "unsupported", why: "its TLS stack cannot be given session ticket keys (tickets use a key made at start-up)" });
  }
  if (t.sessionCacheSize) {
    out.push(
      t.sessionTickets === false
        ? { option: "sessionCacheSize", kind: "unsupported", why: "its TLS stack keeps no server-side session cache, and with ssl_session_tickets off no session could resume" }
        : { option: "sessionCacheSize", kind: "partial", why: "its TLS stack keeps no server-side session cache; sessions resume through session tickets" },
    );
  }
  return out;
}

function serverTls(t: TlsServer): TLSOptions {
  return {
    cert: t.certs.map((c) => c.cert),
    key: [...prepareServer(t).keys], // decrypted with ssl_password_file
    // asking with no CA configured (optional_no_ca) must not trust the public roots
    ca: t.ca ?? (t.requestCert ? [] : undefined),
    requestCert: t.requestCert ?? false,
    rejectUnauthorized: t.requestCert ? (t.rejectUnauthorized ?? true) : false,
    ciphers: t.ciphers ?? NGINX_CIPHERS,
    secureOptions: secureOptionsFor(t),
  };
}

function clientTls(t: TlsClient, host: string): TLSOptions {
  const name = t.serverName ?? host;
  return {
    ca: t.ca,
    serverName: isIP(name) === 0 ? name : undefined, // SNI carries host names only
    rejectUnauthorized: false, // decided in the handshake handler: chain and name
    cert: t.cert,
    key: t.key,
  };
}

/** What the handshake handler decides: drop the session, or hand it on with this TlsInfo. */
type TlsPolicy =
  | { side: "server"; mustVerify: boolean; tls: TlsServer }
  | { side: "client"; verify: boolean; name: string };

/**
 * `ok` only says whether Bun accepted the session under its own rejectUnauthorized (off
 * for clients here), so the chain is judged from `authorized` / the error, the name with
 * node:tls checkServerIdentity.
 */
function judgeHandshake(s: Socket<BunConn>, policy: TlsPolicy, ok: boolean, err: Error | null): Error | undefined {
  const chainOk = ok && err === null && s.authorized;
  if (policy.side === "server") {
    // `ok` false: the handshake itself failed (garbage, a peer gone); `err` with `ok` true is
    // the client certificate's verification result, judged later by the core
    if (!ok) return err ?? new Error("Cannot start TLS: handshake failed");
    return policy.mustVerify && !chainOk ? (err ?? new Error("Client certificate rejected")) : undefined;
  }
  if (!policy.verify) return undefined;
  if (!chainOk) return err ?? new Error("Server certificate rejected");
  return checkServerIdentity(policy.name, s.getPeerCertificate() as PeerCertificate) ?? undefined;
}

const NO_ADDRESS: Address = { host: "", port: 0 };
const DONE: Promise<void> = Promise.resolve();

type Pending = { bytes: Uint8Array; resolve: () => void; reject: (e: Error) => void };

/** Where a relay wants the socket's events once it owns the connection. */
interface Sink {
  data(chunk: Uint8Array): void;
  drain(): void;
  end(): void;
  close(err?: Error): void;
}

/**
 * The peer's address, asked of the socket field by field when first needed: each of Bun's getters
 * is a getpeername call, and the port is only wanted by some sessions (info logs, PROXY headers
 * and XCLIENT towards a backend). Settled to a plain Address before TLS replaces the socket.
 */
class PeerAddress implements Address {
  #host: string | undefined;
  #port: number | undefined;
  constructor(readonly sock: Socket<BunConn>) {}
  get host(): string {
    return this.#host ??= this.sock.remoteAddress ?? "";
  }
  get port(): number {
    return this.#port ??= this.sock.remotePort ?? 0;
  }
  settled(): Address {
    return { host: this.host, port: this.port };
  }
}

class BunConn implements Conn {
  #remote: Address = NO_ADDRESS;
  #local: Address | undefined;
  tlsInfo?: TlsInfo;
  sock!: Socket<BunConn>;
  sink: Sink | undefined;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #paused = false;
  #ended = false; // FIN received, or the socket is gone
  #closed = false;
  #upgraded = false; // the raw socket under a STARTTLS session: its events are ciphertext
  #reader: ((chunk: Uint8Array | null) => void) | undefined;
  #writes: Pending[] = [];
  #finWanted: (() => void)[] | undefined;
  #finSent = false;
  #error: Error | undefined;
  #handshake: { policy: TlsPolicy; resolve: () => void; reject: (e: Error) => void } | undefined;
  #successor: BunConn | undefined; // the TLS side after upgradeTLS

  /**
   * Each address getter of a Bun socket is a getpeername/getsockname call, so addresses already
   * known are not asked again: a backend's is where we connected, a listener's own when it is bound
   * to one address, a TLS socket's those of the TCP socket under it. Bun sets TCP_NODELAY itself
   * on every socket (line protocols must not hold a short reply back).
   */
  bind(s: Socket<BunConn>, at?: ListenAt): void {
    this.sock = s;
    if (this.#remote === NO_ADDRESS) {
      this.#remote = new PeerAddress(s);
      void this.#remote.host; // now, while the peer is surely there (a reset one leaves it "")
    }
    if (at !== undefined && this.#local === undefined) {
      this.#local = at.port !== 0 && at.host !== "0.0.0.0" && at.host !== "::" ? { host: at.host, port: at.port } : this.local;
    }
    if (at?.keepAlive) s.setKeepAlive(true);
  }

  get remote(): Address {
    return this.#remote;
  }

  set remote(a: Address) {
    this.#remote = a instanceof PeerAddress ? a.settled() : a;
  }

  /** The peer's address read in full now (TLS sessions: logged after the TCP socket is gone). */
  settleRemote(): Address {
    this.remote = this.#remote;
    return this.#remote;
  }

  get local(): Address {
    return this.#local ??= { host: this.sock?.localAddress ?? "", port: this.sock?.localPort ?? 0 };
  }

  set local(a: Address) {
    this.#local = a;
  }

  /** Resolves once the TLS handshake is done and accepted by `policy`; rejects and drops the socket otherwise. */
  awaitHandshake(policy: TlsPolicy, timeoutMs = TLS_HANDSHAKE_TIMEOUT_MS): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.onHandshakeFailed(new Error(`Cannot start TLS: no handshake within ${timeoutMs} ms`)), timeoutMs);
      this.#handshake = {
        policy,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  onHandshake(ok: boolean, err: Error | null): void {
    const h = this.#handshake;
    if (h === undefined) return;
    this.#handshake = undefined;
    const refused = judgeHandshake(this.sock, h.policy, ok, err);
    if (refused !== undefined) {
      this.#closed = true;
      this.sock.terminate();
      h.reject(h.policy.side === "client" ? asVerifyError(refused) as Error : refused);
      return;
    }
    this.tlsInfo = tlsInfoOf(this.sock as unknown as TlsPeer, h.policy.side === "server" ? h.policy.tls : undefined);
    h.resolve();
  }

  /** Ends a handshake still going on; a finished one is left alone. */
  abortHandshake(err: Error): void {
    if (this.#handshake !== undefined) this.onHandshakeFailed(err);
  }

  onHandshakeFailed(err: Error): void {
    const h = this.#handshake;
    this.#handshake = undefined;
    if (!this.#closed && this.sock !== undefined) {
      this.#closed = true;
      this.sock.terminate();
    }
    h?.reject(err);
  }

  /** `chunk` is the Buffer Bun made for this read, used as it is (a view on its .buffer would make JSC copy it out). */
  onData(chunk: Uint8Array): void {
    if (this.#upgraded) return; // ciphertext under the TLS socket
    if (this.sink !== undefined) return this.sink.data(chunk);
    const reader = this.#reader;
    if (reader !== undefined) {
      this.#reader = undefined;
      reader(chunk);
      return;
    }
    this.#queue.push(chunk);
    this.#queued += chunk.byteLength;
    if (this.#queued > READ_HIGH_WATER && !this.#paused) {
      this.#paused = true;
      this.sock.pause();
    }
  }

  onDrain(): void {
    if (this.#upgraded) return;
    if (this.sink !== undefined) return this.sink.drain();
    this.#flush();
  }

  onEnd(): void {
    if (this.#upgraded) return;
    this.#ended = true;
    if (this.sink !== undefined) return this.sink.end();
    this.#wakeReader();
  }

  onError(err: Error): void {
    this.#error ??= err;
  }

  onClose(err?: Error): void {
    if (this.#upgraded) return;
    if (err !== undefined) this.#error ??= err;
    this.#ended = true;
    this.#closed = true;
    if (this.#handshake !== undefined) this.onHandshakeFailed(err ?? new Error("Cannot start TLS: connection closed during handshake"));
    this.#wakeReader();
    this.#failWrites();
    this.sink?.close(err);
  }

  #wakeReader(): void {
    const reader = this.#reader;
    this.#reader = undefined;
    reader?.(null);
  }

  #failWrites(): void {
    if (this.#writes.length > 0) {
      const err = this.#error ?? new Error("Cannot write: connection closed");
      for (const w of this.#writes.splice(0)) w.reject(err);
    }
    if (this.#finWanted !== undefined) for (const done of this.#finWanted.splice(0)) done();
  }

  read(): Promise<Uint8Array | null> {
    const chunk = this.#queue.shift();
    if (chunk !== undefined) {
      this.#queued -= chunk.byteLength;
      if (this.#paused && this.#queued <= READ_HIGH_WATER) {
        this.#paused = false;
        this.sock.resume();
      }
      return Promise.resolve(chunk);
    }
    if (this.#ended || this.#upgraded || this.sink !== undefined) return Promise.resolve(null);
    if (this.#reader !== undefined) return Promise.reject(new Error("Cannot read: another read is pending"));
    const { promise, resolve } = Promise.withResolvers<Uint8Array | null>(); // no executor closure per read
    this.#reader = resolve;
    return promise;
  }

  write(data: Uint8Array): Promise<void> {
    return this.writeNow(data) ?? DONE;
  }

  writeNow(data: Uint8Array): Promise<void> | undefined {
    if (this.#closed || this.#upgraded || this.sink !== undefined) {
      return Promise.reject(this.#error ?? new Error("Cannot write: connection closed"));
    }
    if (this.#finSent || this.#finWanted !== undefined) return Promise.reject(new Error("Cannot write: write side already closed"));
    let rest = data;
    if (this.#writes.length === 0) {
      const n = this.sock.write(rest);
      if (n < 0) return Promise.reject(this.#error ?? new Error("Cannot write: connection closed"));
      if (n === rest.byteLength) return undefined;
      rest = rest.subarray(n); // the socket took part: the rest waits for drain
    }
    return new Promise((resolve, reject) => this.#writes.push({ bytes: rest, resolve, reject }));
  }

  #flush(): void {
    while (this.#writes.length > 0) {
      const head = this.#writes[0];
      const n = this.sock.write(head.bytes);
      if (n < 0) return this.#failWrites();
      if (n < head.bytes.byteLength) {
        head.bytes = head.bytes.subarray(n);
        return;
      }
      this.#writes.shift();
      head.resolve();
    }
    if (this.#finWanted !== undefined) this.#sendFin();
  }

  /** Writes are waiting for the socket to take them. */
  flushing(): boolean {
    return this.#writes.length > 0;
  }

  /** Resolves when every queued write has been taken by the socket. */
  flushed(): Promise<void> {
    if (this.#writes.length === 0) return Promise.resolve();
    const last = this.#writes[this.#writes.length - 1];
    return new Promise((resolve) => {
      const { resolve: was, reject } = last;
      last.resolve = () => {
        was();
        resolve();
      };
      last.reject = (e) => {
        reject(e);
        resolve();
      };
    });
  }

  #sendFin(): void {
    const waiters = this.#finWanted ?? [];
    this.#finWanted = undefined;
    if (!this.#finSent && !this.#closed) {
      this.#finSent = true;
      this.sock.shutdown(); // FIN (TLS: close_notify); the socket still reads
    }
    for (const done of waiters) done();
  }

  closeWrite(): Promise<void> {
    if (this.#closed || this.#finSent || this.#upgraded) return Promise.resolve();
    return new Promise((resolve) => {
      (this.#finWanted ??= []).push(resolve);
      if (this.#writes.length === 0) this.#sendFin();
    });
  }

  /** FIN from the relay, which writes to the socket itself. */
  shutdownWrite(): void {
    if (this.#finSent || this.#closed) return;
    this.#finSent = true;
    this.sock.shutdown();
  }

  close(): void {
    // closing a connection whose STARTTLS handshake is still going on ends that handshake
    if (this.#upgraded) this.#successor?.abortHandshake(new Error("Cannot start TLS: connection closed"));
    if (this.#closed) return;
    this.#closed = true;
    this.#ended = true;
    if (!this.#upgraded) this.sock?.close(); // flushes what the kernel holds, then closes both ways
    this.#wakeReader();
    this.#failWrites();
  }

  /** The relay takes the events over; returns what was read but not consumed. */
  attach(sink: Sink): { pending: Uint8Array[]; ended: boolean; closed: boolean } {
    this.sink = sink;
    const pending = this.#queue.splice(0);
    this.#queued = 0;
    this.#wakeReader();
    if (this.#paused) {
      this.#paused = false;
      this.sock.resume();
    }
    return { pending, ended: this.#ended, closed: this.#closed };
  }

  /**
   * Without `initial` (STARTTLS), bytes received but not read are plaintext sent before
   * our reply: dropped. With `initial` (TLS right after a PROXY header), the TLS stream
   * starts with `initial` and goes on with the unread bytes, handed to upgradeTLS as its
   * `initialData`: an option missing from bun-types that Bun's own node:tls uses to adopt
   * a socket with bytes already read (Bun 1.4.5). Native TLS rather than node:tls over this
   * Conn (tls-bridge.ts) wherever it can run `t`: Bun's TLS over a Duplex answers the
   * peer's close_notify with its own and refuses every write after it, so a reply to a
   * command sent with the client's close would be lost; native TLS keeps the write side.
   */
  async startTls(t: TlsServer | TlsClient, initial?: Uint8Array, timeoutMs?: number): Promise<Conn> {
    if (this.#closed || this.#upgraded) throw new Error("Cannot start TLS: connection closed");
    await this.flushed();
    if (t.side === "server" && !nativeTlsCan(t)) {
      if (initial === undefined) {
        // STARTTLS: bytes read but not consumed are plaintext sent after the command: dropped
        this.#queue = [];
        this.#queued = 0;
      }
      const { duplex, bridge } = bridgeStream(this); // reads the queue first, then the socket
      const secure = await startServerTls(duplex, t, initial, timeoutMs);
      return new SocketConn(secure, { remote: this.settleRemote(), local: this.local }, tlsInfoOf(secure, t), bridge);
    }
    const next = new BunConn();
    next.remote = this.remote;
    next.local = this.local;
    // STARTTLS: bytes read but not consumed are plaintext sent after the command, dropped
    // (CVE-2011-0411 class); after a PROXY header they are the start of the TLS stream.
    const initialData = initial === undefined ? undefined : concatAll([initial, ...this.#queue]);
    this.#queue = [];
    this.#queued = 0;
    this.#upgraded = true; // set first: upgradeTLS passes initialData to onData too, as ciphertext
    this.#wakeReader();
    if (this.#paused) {
      this.#paused = false;
      this.sock.resume();
    }
    const policy: TlsPolicy = t.side === "server"
      ? { side: "server", mustVerify: (t.requestCert ?? false) && (t.rejectUnauthorized ?? true), tls: t }
      : { side: "client", verify: t.verify, name: t.serverName ?? this.remote.host };
    this.#successor = next;
    const handshake = next.awaitHandshake(policy, timeoutMs);
    this.sock.upgradeTLS<BunConn>({
      data: next,
      tls: t.side === "server" ? serverTls(t) : clientTls(t, this.remote.host),
      socket: TLS_HANDLERS,
      ...(initialData !== undefined && initialData.byteLength > 0 ? { initialData } : {}), // not in bun-types
    } as Bun.TLSUpgradeOptions<BunConn>);
    await handshake;
    return next;
  }
}

const HANDLERS: SocketHandler<BunConn> = {
  data: (s, d) => s.data.onData(d),
  drain: (s) => s.data.onDrain(),
  end: (s) => s.data.onEnd(),
  error: (s, e) => s.data?.onError(e),
  close: (s, e) => s.data?.onClose(e),
};

/** For sockets that start as (or become) TLS: `open` binds, `handshake` decides. */
const TLS_HANDLERS: SocketHandler<BunConn> = {
  ...HANDLERS,
  open: (s) => s.data.bind(s),
  handshake: (s, ok, err) => s.data.onHandshake(ok, err),
};

// ---------------------------------------------------------------------------
// TCP and TLS: listen, connect

function listen(at: ListenAt, onConn: (c: Conn) => void, t?: TlsServer, onTlsFailure?: (f: TlsFailure) => void): Promise<Listener> {
  return new Promise((resolve) => resolve(listenNow(at, onConn, t, onTlsFailure))); // a throw (EADDRINUSE) rejects
}

function listenNow(at: ListenAt, onConn: (c: Conn) => void, t?: TlsServer, onTlsFailure?: (f: TlsFailure) => void): Listener {
  const mustVerify = t !== undefined && (t.requestCert ?? false) && (t.rejectUnauthorized ?? true);
  const native = t !== undefined && nativeTlsCan(t) ? t : undefined;
  const failed = (c: BunConn) => (err: unknown) => onTlsFailure?.({ remote: c.remote, local: c.local, error: messageOf(err) });
  const socket: SocketHandler<BunConn> = native === undefined
    ? {
      ...HANDLERS,
      open: (s) => {
        const c = new BunConn();
        s.data = c;
        c.bind(s, at);
        if (t === undefined) return onConn(c);
        c.settleRemote();
        c.startTls(t, new Uint8Array(0), at.handshakeTimeoutMs).then(onConn, failed(c)); // node:tls over the socket
      },
    }
    : {
      ...HANDLERS,
      open: (s) => {
        const c = new BunConn();
        s.data = c;
        c.bind(s, at);
        c.settleRemote();
        // a failed handshake only drops that socket
        c.awaitHandshake({ side: "server", mustVerify, tls: native }, at.handshakeTimeoutMs).then(() => onConn(c), failed(c));
      },
      handshake: (s, ok, err) => s.data.onHandshake(ok, err),
    };
  const server = Bun.listen<BunConn>({
    hostname: at.host,
    port: at.port,
    allowHalfOpen: true,
    tls: native === undefined ? undefined : serverTls(native),
    socket,
    ...(at.reusePort ? { reusePort: true } : {}), // not in bun-types, honoured by Bun (RUNTIMES.md)
    ...(at.ipv6Only ? { ipv6Only: true } : {}),
  } as Bun.TCPSocketListenOptions<BunConn>);
  return {
    address: { host: server.hostname, port: server.port },
    close: () => {
      server.stop(false); // stops accepting; live connections keep going
      return Promise.resolve();
    },
  };
}

/** One handler set for every outgoing socket (Bun keeps handlers per call otherwise); a failed
 *  connect rejects Bun.connect's promise, handled in connect(). */
const CONNECT_HANDLERS: SocketHandler<BunConn> = { ...TLS_HANDLERS, connectError: () => {} };

function connect(to: Address, timeoutMs: number, t?: TlsClient): Promise<Conn> {
  const c = new BunConn();
  c.remote = to;
  return new Promise<Conn>((resolve, reject) => {
    let settled = false;
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      c.onHandshakeFailed(err);
      c.close();
      reject(err);
    };
    const done = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(c);
    };
    // covers the TCP connect and the TLS handshake
    const timer = setTimeout(() => fail(new Error(`Cannot connect to "${to.host}:${to.port}": timed out after ${timeoutMs} ms`)), timeoutMs);
    const handshake = t === undefined ? undefined : c.awaitHandshake({ side: "client", verify: t.verify, name: t.serverName ?? to.host });
    handshake?.catch(fail);
    Bun.connect<BunConn>({
      hostname: to.host,
      port: to.port,
      allowHalfOpen: true,
      data: c,
      tls: t === undefined ? undefined : clientTls(t, to.host),
      socket: CONNECT_HANDLERS,
    }).then((s) => {
      if (settled) s.close(); // too late: the caller has been told
      else if (handshake === undefined) done();
      else handshake.then(done, fail);
    }, fail);
  });
}

// ---------------------------------------------------------------------------
// Relay: native callbacks, bytes the destination did not take are queued and the
// source paused until 'drain'

/**
 * One direction of a relay, src → dst. It is also src's Sink: src's data, FIN and close come here,
 * and src's drain goes to the reverse pipe (src is that pipe's destination). No closures: an idle
 * relayed session holds two of these and the control block.
 */
class Pipe implements Sink {
  #queue: Uint8Array[] | undefined; // what dst has not taken yet; src is paused meanwhile
  #srcEnded = false;
  #done = false;
  reverse!: Pipe;

  constructor(
    readonly src: BunConn,
    readonly dst: BunConn,
    readonly dir: Direction,
    readonly ctl: RelayControl,
  ) {}

  data(chunk: Uint8Array): void {
    if (this.#done || this.ctl.ended) return;
    this.ctl.touch();
    let rest = chunk;
    if (this.#queue === undefined) {
      const n = this.dst.sock.write(rest);
      if (n < 0) return this.ctl.fail(new Error("Cannot relay: write to a closed connection"));
      this.ctl.moved(this.dir, n);
      if (n === rest.byteLength) return;
      rest = rest.subarray(n);
      this.#queue = [];
    }
    this.#queue.push(rest);
    this.src.sock.pause();
  }

  /** src can take more: that is the reverse pipe's destination draining. */
  drain(): void {
    this.reverse.flush();
  }

  /** src sent FIN. */
  end(): void {
    this.srcEnd();
  }

  close(err?: Error): void {
    if (this.ctl.ended) return;
    if (err !== undefined) return this.ctl.fail(err);
    this.srcEnd(); // Bun reports a FIN after our own shutdown as close, without end
    this.reverse.abandon();
  }

  /** dst can take more. */
  flush(): void {
    if (this.#done || this.ctl.ended) return;
    this.ctl.touch();
    const q = this.#queue;
    while (q !== undefined && q.length > 0) {
      const head = q[0];
      const n = this.dst.sock.write(head);
      if (n < 0) return this.ctl.fail(new Error("Cannot relay: write to a closed connection"));
      this.ctl.moved(this.dir, n);
      if (n < head.byteLength) {
        q[0] = head.subarray(n);
        return;
      }
      q.shift();
    }
    this.#queue = undefined;
    if (this.#srcEnded) this.#finish();
    else this.src.sock.resume();
  }

  /** The source sent FIN (or is gone): FIN the destination once the queue is empty. */
  srcEnd(): void {
    this.#srcEnded = true;
    if (this.#queue === undefined) this.#finish();
  }

  /** The destination is gone: nothing more can be delivered this way. */
  abandon(): void {
    if (this.#done) return;
    this.#done = true;
    this.#queue = undefined;
    this.ctl.finished(this.dir);
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    // with the other way over too the relay closes both sockets now, and the close sends the FIN
    if (!this.reverse.#done) this.dst.shutdownWrite();
    this.ctl.finished(this.dir);
  }
}

function relay(client: Conn, upstream: Conn, opts: RelayOpts): RelayHandle {
  const ctl = new RelayControl(opts, client, upstream);
  if (client instanceof BunConn && upstream instanceof BunConn) {
    if (client.flushing() || upstream.flushing()) {
      // writes queued before the relay go first
      void Promise.all([client.flushed(), upstream.flushed()]).then(() => relayNative(client, upstream, ctl));
    } else {
      relayNative(client, upstream, ctl);
    }
  } else {
    void pumpConn(client, upstream, "client-to-upstream", ctl);
    void pumpConn(upstream, client, "upstream-to-client", ctl);
  }
  return ctl;
}

function relayNative(a: BunConn, b: BunConn, ctl: RelayControl): void {
  if (ctl.ended) return;
  const ab = new Pipe(a, b, "client-to-upstream", ctl);
  const ba = new Pipe(b, a, "upstream-to-client", ctl);
  ab.reverse = ba;
  ba.reverse = ab;
  const sa = a.attach(ab);
  const sb = b.attach(ba);
  for (const [state, from] of [[sa, ab], [sb, ba]] as const) {
    for (const chunk of state.pending) from.data(chunk);
    if (state.ended) from.srcEnd();
    if (state.closed) from.reverse.abandon();
  }
}

// ---------------------------------------------------------------------------
// HTTP

function serveHttp(at: ListenAt, fetch: (r: Request) => Promise<Response> | Response): Promise<Listener> {
  return new Promise((resolve) => { // a throw from Bun.serve (EADDRINUSE) rejects
    const server = Bun.serve({ hostname: at.host, port: at.port, fetch: (req) => fetch(req) });
    resolve({
      address: { host: server.hostname ?? at.host, port: server.port ?? at.port },
      close: () => server.stop(), // idle keep-alive connections close at once, requests in flight finish
    });
  });
}

// ---------------------------------------------------------------------------
// Crypto, files, logs, signals, process (DNS and scrypt: platform/node-dns-crypto.ts)

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536))); // 64 KiB per call at most
  return out;
}

function writeLog(dest: string, line: string): void {
  if (dest === "stderr") process.stderr.write(line + "\n");
  else appendFileSync(dest, line + "\n");
}

function onSignal(name: "HUP" | "QUIT" | "TERM" | "INT", fn: () => void): void {
  process.on(`SIG${name}`, fn);
}

// ---------------------------------------------------------------------------
// Platform

export const bunPlatform: Platform = {
  runtime: "bun",
  checkTls,
  listen,
  connect,
  relay,
  serveHttp,
  fetch: (url, init) => globalThis.fetch(url, init),
  readTextFile: (path) => Bun.file(path).text(),
  onSignal,
  reverseDns,
  resolveDns,
  scrypt,
  randomBytes,
  hostname: () => hostname(),
  pid: () => process.pid,
  writeLog,
  exit: (code) => process.exit(code),
};
