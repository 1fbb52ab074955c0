// A Conn over a node:net / node:tls socket (or any Duplex wrapped by node:tls), the
// STARTTLS upgrades built on node:tls, and a relay driven by data/drain events.
// Node uses all of it; Deno uses it for TLS sessions that its native API cannot
// make (server-side STARTTLS, client certificates, verify off). node:net, node:tls
// and node:stream behave the same on the three runtimes for what is used here.
//
// Docs relied on:
//   https://nodejs.org/api/net.html#class-netsocket (data, end, drain, allowHalfOpen)
//   https://nodejs.org/api/tls.html#new-tlstlssocketsocket-options (server-side STARTTLS)
//   https://nodejs.org/api/tls.html#event-secureconnection (authorized / authorizationError)
//   https://nodejs.org/api/tls.html#tlsconnectoptions-callback (options.socket: client STARTTLS)

import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import type { Address, Conn, ListenAt, Listener, RelayHandle, RelayOpts, TlsClient, TlsFailure, TlsInfo, TlsServer } from "../src/platform.ts";
import { TlsVerifyError } from "../src/platform.ts";
import { concatAll } from "../src/util/bytes.ts";
import {
  attachSessionCache,
  clientTlsOptions,
  isVerifyFailure,
  messageOf,
  prepareServer,
  serverSecureContext,
  serverTlsOptions,
  tlsInfoOf,
  x509Reason,
} from "./node-tls.ts";
import { type Direction, RelayControl } from "./relay-control.ts";

/** Unread bytes queued before the socket is paused; read() resumes it. */
export const READ_HIGH_WATER = 64 * 1024;
/** A peer that does not finish a TLS handshake in this time is dropped (nginx mail `timeout` default). */
export const TLS_HANDSHAKE_TIMEOUT_MS = 60_000;

type Waiter = { resolve: () => void; reject: (e: Error) => void };

/** The stream under a node:tls socket when that is not a plain socket (Deno's bridge). */
export interface Bridge {
  /** Read backpressure, applied below the TLS socket instead of pausing it. */
  pause(): void;
  resume(): void;
  /** Resolves once the FIN has been sent on the network, sending it if the TLS layer did not. */
  finishWrite(): Promise<void>;
  /** Calls `fn` once the network side has delivered its FIN to the TLS layer. */
  onTransportEnd(fn: () => void): void;
}

/** What a relay takes over from a SocketConn: the socket plus bytes read but not consumed. */
export interface DetachedSocket {
  readonly socket: net.Socket;
  readonly pending: Uint8Array[];
  readonly ended: boolean;
}

// ---------------------------------------------------------------------------
// Conn

export class SocketConn implements Conn {
  readonly remote: Address;
  readonly local: Address;
  readonly tlsInfo?: TlsInfo;
  readonly #sock: net.Socket;
  readonly #gate: Pick<Bridge, "pause" | "resume">;
  readonly #bridge: Bridge | undefined;
  #paused = false;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #ended = false; // FIN received, or the socket is gone
  #closed = false;
  #detached = false;
  #error: Error | undefined;
  #dataSinceCheck = false;
  #reader: ((chunk: Uint8Array | null) => void) | undefined;
  #drainWaiters: Waiter[] = [];

  /**
   * With a `bridge` (Deno's node:tls over a native conn, see platform/deno.ts):
   * backpressure is applied at the bridge, never by pausing the TLS socket; closeWrite()
   * waits for the bridge to send the FIN; and when the network FIN has reached the TLS
   * layer but the TLS socket stays silent (no 'end', no more data for a macrotask), the
   * FIN is taken as read. Deno's node:tls sometimes drops it after delivering all data.
   */
  constructor(sock: net.Socket, at?: { remote: Address; local: Address }, tlsInfo?: TlsInfo, bridge?: Bridge) {
    this.#sock = sock;
    this.#bridge = bridge;
    this.#gate = bridge ?? sock;
    this.remote = at?.remote ?? { host: stripV4Mapped(sock.remoteAddress ?? ""), port: sock.remotePort ?? 0 };
    this.local = at?.local ?? { host: stripV4Mapped(sock.localAddress ?? ""), port: sock.localPort ?? 0 };
    this.tlsInfo = tlsInfo;
    sock.on("data", this.#onData);
    sock.on("end", this.#onEnd);
    sock.on("drain", this.#onDrain);
    sock.on("error", this.#onError);
    sock.on("close", this.#onClose);
    bridge?.onTransportEnd(() => this.#settleEof());
  }

  #settleEof(): void {
    this.#dataSinceCheck = false;
    setTimeout(() => {
      if (this.#ended || this.#closed || this.#detached) return;
      if (this.#dataSinceCheck) return this.#settleEof(); // the TLS layer is still delivering
      this.#onEnd();
    }, 0);
  }

  #onData = (buf: Uint8Array): void => {
    const chunk = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength); // plain view, not a Buffer
    this.#dataSinceCheck = true;
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
      this.#gate.pause();
    }
  };

  #onEnd = (): void => {
    this.#ended = true;
    this.#wakeReader();
  };

  #onDrain = (): void => {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const w of waiters) w.resolve();
  };

  #onError = (err: Error): void => {
    this.#error ??= err;
  };

  #onClose = (): void => {
    this.#ended = true;
    this.#closed = true;
    this.#wakeReader();
    this.#failWriters();
  };

  #wakeReader(): void {
    const reader = this.#reader;
    this.#reader = undefined;
    reader?.(null);
  }

  #failWriters(): void {
    const waiters = this.#drainWaiters;
    if (waiters.length === 0) return; // the usual close: no Error (and its stack trace) to make
    this.#drainWaiters = [];
    const err = this.#error ?? new Error("Cannot write: connection closed");
    for (const w of waiters) w.reject(err);
  }

  read(): Promise<Uint8Array | null> {
    const chunk = this.#queue.shift();
    if (chunk !== undefined) {
      this.#queued -= chunk.byteLength;
      if (this.#queued <= READ_HIGH_WATER && this.#paused && !this.#detached) {
        this.#paused = false;
        this.#gate.resume();
      }
      return Promise.resolve(chunk);
    }
    if (this.#ended || this.#detached) return Promise.resolve(null);
    if (this.#reader !== undefined) return Promise.reject(new Error("Cannot read: another read is pending"));
    return new Promise((resolve) => (this.#reader = resolve));
  }

  write(data: Uint8Array): Promise<void> {
    const sock = this.#sock;
    if (this.#closed || this.#detached || sock.destroyed) {
      return Promise.reject(this.#error ?? new Error("Cannot write: connection closed"));
    }
    if (sock.writableEnded) return Promise.reject(new Error("Cannot write: write side already closed"));
    if (sock.write(data)) return Promise.resolve();
    return new Promise((resolve, reject) => this.#drainWaiters.push({ resolve, reject }));
  }

  async closeWrite(): Promise<void> {
    const sock = this.#sock;
    if (this.#closed || this.#detached || sock.destroyed) return;
    if (!sock.writableFinished) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          sock.off("close", done);
          resolve();
        };
        sock.once("close", done);
        sock.end(done);
      });
    }
    await this.#bridge?.finishWrite();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ended = true;
    this.#sock.destroy();
    this.#wakeReader();
    this.#failWriters();
  }

  /**
   * Without `initial` (STARTTLS), bytes received but not read are plaintext sent before
   * our reply: dropped. With `initial` (TLS right after a PROXY header, even an empty
   * one), the TLS stream starts with `initial` and goes on with the unread bytes.
   */
  async startTls(t: TlsServer | TlsClient, initial?: Uint8Array): Promise<Conn> {
    const { socket, pending } = this.detach();
    const first = initial === undefined ? undefined : concatAll([initial, ...pending]);
    const at = { remote: this.remote, local: this.local };
    const secure = t.side === "server"
      ? await startServerTls(socket, t, first)
      : await startClientTls(socket, t, this.remote.host, first);
    return new SocketConn(secure, at, tlsInfoOf(secure, t.side === "server" ? t : undefined));
  }

  /** Hands the socket over (relay, STARTTLS); this Conn reads null and refuses writes after. */
  detach(): DetachedSocket {
    if (this.#detached || this.#closed) throw new Error("Cannot take over connection: already closed or taken");
    this.#detached = true;
    const sock = this.#sock;
    if (this.#paused && this.#gate !== sock) this.#gate.resume(); // the new owner applies its own backpressure
    sock.pause();
    sock.off("data", this.#onData);
    sock.off("end", this.#onEnd);
    sock.off("drain", this.#onDrain);
    sock.off("close", this.#onClose);
    // #onError stays attached: an 'error' with no listener would crash the process.
    const pending = this.#queue;
    this.#queue = [];
    this.#queued = 0;
    this.#wakeReader();
    this.#failWriters();
    return { socket: sock, pending, ended: this.#ended };
  }
}

function ignore(): void {}

/** OpenSSL's error strings carry the source file and a newline; the log wants one line. */
function oneLine(err: Error): Error {
  const text = err.message.replace(/\s+/g, " ").replace(/:\.\.\/[^ ]*:\d+:?/, "").trim();
  if (text === err.message) return err;
  const out = new Error(text);
  (out as { code?: unknown }).code = (err as { code?: unknown }).code;
  return out;
}

function stripV4Mapped(host: string): string {
  return host.startsWith("::ffff:") && host.includes(".") ? host.slice(7) : host;
}

// ---------------------------------------------------------------------------
// Listen, connect

function setUp(sock: net.Socket, at?: ListenAt): void {
  sock.setNoDelay(true); // line protocols: never hold a short reply back (Nagle)
  if (at?.keepAlive) sock.setKeepAlive(true);
}

/** A node:net (or, with `t`, node:tls) listener handing out SocketConns. */
export async function listenSockets(
  at: ListenAt,
  onConn: (c: Conn) => void,
  t?: TlsServer,
  onTlsFailure?: (f: TlsFailure) => void,
): Promise<Listener> {
  // With TLS each accepted socket goes through startServerTls, as STARTTLS does: the handshake
  // is bounded by `timeout`, and a failure is reported with the peer's address (node:tls's own
  // tlsClientError has lost it by then).
  const handshakeTimeout = at.handshakeTimeoutMs ?? TLS_HANDSHAKE_TIMEOUT_MS;
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    setUp(sock, at);
    if (t === undefined) {
      onConn(new SocketConn(sock));
      return;
    }
    const ends = {
      remote: { host: stripV4Mapped(sock.remoteAddress ?? ""), port: sock.remotePort ?? 0 },
      local: { host: stripV4Mapped(sock.localAddress ?? ""), port: sock.localPort ?? 0 },
    };
    sock.on("error", ignore); // reported through the handshake
    startServerTls(sock, t, undefined, handshakeTimeout).then(
      (secure) => onConn(new SocketConn(secure, ends, tlsInfoOf(secure, t))),
      (err) => onTlsFailure?.({ ...ends, error: messageOf(err) }),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(
      { host: at.host, port: at.port, backlog: at.backlog, ipv6Only: at.ipv6Only, reusePort: at.reusePort },
      () => {
        server.off("error", reject);
        resolve();
      },
    );
  });
  server.on("error", () => {}); // accept errors (EMFILE) must not kill the process; node retries
  const addr = server.address() as net.AddressInfo;
  return {
    address: { host: addr.address, port: addr.port },
    close: () => {
      server.close(); // stops accepting; live connections keep going
      return Promise.resolve();
    },
  };
}

/** A node:net connection, with `t` upgraded to TLS before it is returned. */
export async function connectSocket(to: Address, timeoutMs: number, t?: TlsClient): Promise<Conn> {
  const sock = net.connect({ host: to.host, port: to.port, allowHalfOpen: true });
  sock.on("error", () => {}); // reported through the promise below, then by the Conn
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    sock.destroy();
  }, timeoutMs); // covers the TCP connect and the TLS handshake
  try {
    await new Promise<void>((resolve, reject) => {
      // each listener goes once the connect has settled: a "close" long after it must not make
      // an Error (with its stack trace) for a promise nobody waits on
      const settle = (err?: Error) => {
        sock.removeListener("connect", onConnect);
        sock.removeListener("error", onError);
        sock.removeListener("close", onClose);
        if (err === undefined) resolve();
        else reject(err);
      };
      const onConnect = () => settle();
      const onError = (err: Error) => settle(err);
      const onClose = () => settle(new Error("Connection closed"));
      sock.once("connect", onConnect);
      sock.once("error", onError);
      sock.once("close", onClose);
    });
    setUp(sock);
    if (t === undefined) return new SocketConn(sock);
    const at = { remote: { host: to.host, port: to.port }, local: { host: sock.localAddress ?? "", port: sock.localPort ?? 0 } };
    const secure = await startClientTls(sock, t, to.host);
    return new SocketConn(secure, at, tlsInfoOf(secure));
  } catch (err) {
    sock.destroy();
    if (timedOut) throw new Error(`Cannot connect to "${to.host}:${to.port}": timed out after ${timeoutMs} ms`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------
// STARTTLS

/**
 * Server-side TLS over an accepted plaintext stream. The caller drops what it read
 * before (plaintext injection, CVE-2011-0411 class); `initial` is fed to TLS first
 * (node:tls takes what the stream holds buffered when it wraps it).
 * With requestCert a throwaway tls.Server is used so node:tls computes `authorized`
 * and enforces rejectUnauthorized (it shares the TlsServer's ticket key and session cache,
 * so sessions resume across connections); otherwise a bare TLSSocket on a cached context,
 * tied to a never-listening tls.Server when ssl_session_cache needs its session events.
 */
export function startServerTls(raw: Duplex, t: TlsServer, initial?: Uint8Array, timeoutMs = TLS_HANDSHAKE_TIMEOUT_MS): Promise<tls.TLSSocket> {
  raw.allowHalfOpen = false; // see handshake()
  // Paused, and never resumed here: node:tls takes over reading, and on Node a resume
  // would flow `initial` (unshifted below) away before TLS picks it up. (RUNTIMES.md's
  // "resume after" is for node:net sockets on Deno; Deno uses tls-bridge.ts instead.)
  raw.pause();
  if (initial !== undefined && initial.byteLength > 0) raw.unshift(initial);
  if (t.requestCert) {
    const server = new tls.Server(serverTlsOptions(t)); // tls.Server ignores a given secureContext
    attachSessionCache(server, t);
    const done = handshake(raw, (s) => {
      server.removeAllListeners();
      return s;
    }, undefined, timeoutMs);
    server.once("secureConnection", done.resolve);
    server.once("tlsClientError", done.reject);
    server.emit("connection", raw);
    return done.promise;
  }
  const s = new tls.TLSSocket(raw as net.Socket, { isServer: true, secureContext: serverSecureContext(t), server: sessionHub(t) });
  const done = handshake(raw, () => s, s, timeoutMs);
  s.once("secure", () => done.resolve(s));
  return done.promise;
}

const HUBS = new WeakMap<TlsServer, tls.Server>();

/** A tls.Server that never listens, only there to carry ssl_session_cache's session events. */
function sessionHub(t: TlsServer): tls.Server | undefined {
  if (prepareServer(t).sessions === undefined) return undefined;
  let hub = HUBS.get(t);
  if (hub === undefined) {
    hub = new tls.Server({ secureContext: serverSecureContext(t) });
    attachSessionCache(hub, t);
    HUBS.set(t, hub);
  }
  return hub;
}

/** Client-side TLS over a connected plaintext stream (STARTTLS towards a backend). */
export function startClientTls(raw: Duplex, t: TlsClient, host: string, initial?: Uint8Array): Promise<tls.TLSSocket> {
  raw.allowHalfOpen = false; // see handshake()
  if (initial !== undefined && initial.byteLength > 0) {
    raw.pause();
    raw.unshift(initial);
  }
  const s = tls.connect({ ...clientTlsOptions(t, host), socket: raw as net.Socket });
  const done = handshake(raw, () => s, s);
  s.once("secureConnect", () => done.resolve(s));
  return done.promise.catch((err) => Promise.reject(asVerifyError(err)));
}

/** A certificate the backend sent that did not verify becomes the core's TlsVerifyError. */
export function asVerifyError(err: unknown): unknown {
  const code = isVerifyFailure(err);
  return code === undefined ? err : new TlsVerifyError(code, `${x509Reason(code)}${code === "ERR_TLS_CERT_ALTNAME_INVALID" ? ` (${messageOf(err)})` : ""}`);
}

/**
 * Settles once: the secure socket, or an error (handshake failure, close, timeout) after
 * destroying `raw`. A TLSSocket copies allowHalfOpen from the stream it wraps; with it on,
 * a peer's FIN in mid-handshake leaves the handshake pending until the timeout. So the
 * caller turns it off before wrapping and it is turned back on once the session is up.
 */
function handshake(
  raw: Duplex,
  accept: (s: tls.TLSSocket) => tls.TLSSocket,
  watch?: tls.TLSSocket,
  timeoutMs = TLS_HANDSHAKE_TIMEOUT_MS,
): { promise: Promise<tls.TLSSocket>; resolve: (s: tls.TLSSocket) => void; reject: (e: Error) => void } {
  let settled = false;
  let resolveP!: (s: tls.TLSSocket) => void;
  let rejectP!: (e: Error) => void;
  const promise = new Promise<tls.TLSSocket>((res, rej) => {
    resolveP = res;
    rejectP = rej;
  });
  const onClose = (): void => reject(new Error("Cannot start TLS: connection closed during handshake"));
  const timer = setTimeout(() => reject(new Error(`Cannot start TLS: no handshake within ${timeoutMs} ms`)), timeoutMs);
  const cleanup = (): void => {
    settled = true;
    clearTimeout(timer);
    raw.off("close", onClose);
    watch?.off("error", reject);
    watch?.off("close", onClose);
  };
  function reject(err: Error): void {
    if (settled) return;
    cleanup();
    err = oneLine(err);
    watch?.on("error", ignore); // keep an 'error' listener: an unhandled one crashes the process
    watch?.destroy();
    raw.destroy();
    rejectP(err);
  }
  function resolve(s: tls.TLSSocket): void {
    if (settled) return;
    cleanup();
    raw.allowHalfOpen = true; // a Duplex bridge (Deno) would otherwise end its writable side on EOF
    s.allowHalfOpen = true; // Conn semantics: FIN from the peer leaves our side writable
    s.on("error", ignore); // the Conn built next attaches its own listener; never leave a gap
    resolveP(accept(s));
  }
  raw.once("close", onClose);
  watch?.once("error", reject);
  watch?.once("close", onClose);
  return { promise, resolve, reject };
}

// ---------------------------------------------------------------------------
// Relay

/** Native node relay: 'data' → write, pause on a full write buffer, resume on 'drain'. */
export function relaySocketConns(client: SocketConn, upstream: SocketConn, opts: RelayOpts): RelayHandle {
  const a = client.detach();
  const b = upstream.detach();
  const ctl = new RelayControl(opts, { close: () => a.socket.destroy() }, { close: () => b.socket.destroy() });
  pipeSocket(a, b.socket, "client-to-upstream", ctl);
  pipeSocket(b, a.socket, "upstream-to-client", ctl);
  return ctl;
}

function pipeSocket(src: DetachedSocket, dst: net.Socket, dir: Direction, ctl: RelayControl): void {
  const from = src.socket;
  let srcEnded = src.ended;
  const finish = (): void => {
    if (ctl.ended) return;
    dst.end(() => ctl.finished(dir)); // FIN after every queued byte
  };
  from.on("data", (chunk: Uint8Array) => {
    ctl.moved(dir, chunk.byteLength);
    if (!dst.write(chunk)) from.pause();
  });
  from.on("end", () => {
    srcEnded = true;
    finish();
  });
  from.on("error", (err: Error) => ctl.fail(err));
  from.on("close", () => {
    if (!srcEnded && !ctl.ended) ctl.fail(new Error("Connection closed without FIN"));
  });
  dst.on("drain", () => {
    ctl.touch();
    from.resume();
  });
  let full = false;
  for (const chunk of src.pending) {
    ctl.moved(dir, chunk.byteLength);
    full = !dst.write(chunk);
  }
  if (srcEnded) finish();
  else if (!full) from.resume();
}
