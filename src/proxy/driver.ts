// The only loop that awaits: one client connection through greeting, login, auth, the backend
// login and the relay. It runs any protocol through its descriptor and never asks which.

import type { AuthService } from "../auth/types.ts";
import { decideAuth } from "../auth/protocol.ts";
import type { ListenSpec, ServerConfig } from "../config/types.ts";
import type { Logger, SessionLogContext } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import { type Conn, type Platform, type RelayHandle, type RelayListener, type RelayStats, type TlsClient, type TlsInfo, type TlsServer, TlsVerifyError } from "../platform.ts";
import type { Action, AuthOutcome, CompiledServer, Credentials, Input, ProtocolMachine, UpstreamAction, UpstreamInput } from "../protocol/types.ts";
import { concat, EMPTY, escapeForLog, fromBytes, toBytes } from "../util/bytes.ts";
import { addressTrusted, brokenHeader, canonicalAddress, type ProxyHeader, readProxyHeader, writeProxyHeader } from "./proxy-protocol.ts";

/** Everything a session needs from its server, fixed when it starts (a reload does not change live sessions). */
export interface RuntimeServer {
  readonly compiled: CompiledServer;
  // deno-lint-ignore no-explicit-any
  readonly machine: ProtocolMachine<any, any>;
  readonly listen: ListenSpec;
  readonly auth: AuthService;
  readonly authName: string; // "builtin" or the auth_http URL, for log lines
  readonly tlsServer?: TlsServer;
  readonly tlsUpstream?: TlsClient;
}

export interface LiveSession {
  readonly ctx: SessionLogContext;
  /** Ends the session now (shutdown timeout, fast stop). */
  abort(why: string): void;
}

export interface DriverDeps {
  readonly platform: Platform;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly sessions: Set<LiveSession>;
  nextSid(): number;
  /** Called once a session has ended and left `sessions`. */
  onSessionEnd?(): void;
}

class Deadline extends Error {}

/** The client's connection failed under us (reset, closed mid-write, a handshake cut short):
 *  logged at info as nginx does, and nothing more is written to it. */
class ClientGone extends Error {}

/** Resolves as `p`, or rejects with Deadline once `at` (ms since epoch) passes (the rare waits:
 *  TLS handshakes, DNS, a last FIN). */
function before<T>(p: Promise<T>, at: number): Promise<T> {
  const ms = at - Date.now();
  if (ms <= 0) return Promise.reject(new Deadline());
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Deadline()), ms)));
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/**
 * nginx's per-connection timer: one timer per session bounds every read and write before the
 * relay, against a deadline the session moves (`timeout` after the greeting, after TLS, after
 * auth). When it passes during a wait, the connection waited on is closed, which ends the wait,
 * and the wait throws Deadline. One timer instead of one per operation: it is armed by a wait,
 * re-armed only when it fires before the deadline, and not at all between waits.
 */
class SessionTimer {
  at = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #waitingOn: Conn | undefined;
  #client: Conn | undefined;
  #what = "";
  #expired = false;

  /** The deadline from now on (ms since epoch). */
  until(at: number): void {
    if (this.#timer !== undefined && at < this.at) this.stop();
    this.at = at;
    this.#expired = false;
  }

  /**
   * Resolves as `op` (an operation already started on `c`), or throws Deadline; a failure of the
   * client's connection `client` becomes ClientGone("what (why)"). One wait at a time: its
   * settling is handled by two functions made once per session, not a frame per wait.
   */
  wait<T>(c: Conn, op: Promise<T>, client: Conn, what: string): Promise<T> {
    const now = Date.now();
    if (now >= this.at) {
      op.catch(() => {});
      return Promise.reject(new Deadline());
    }
    this.#waitingOn = c;
    this.#client = client;
    this.#what = what;
    this.#timer ??= setTimeout(this.#fire, this.at - now);
    return op.then(this.#settled, this.#failed) as Promise<T>;
  }

  #settled = (v: unknown): unknown => {
    this.#waitingOn = undefined;
    if (this.#expired) throw new Deadline();
    return v;
  };

  #failed = (e: unknown): never => {
    const c = this.#waitingOn;
    this.#waitingOn = undefined;
    if (this.#expired || e instanceof Deadline) throw new Deadline();
    throw c === this.#client && !(e instanceof ClientGone) ? new ClientGone(`${this.#what} (${message(e)})`) : e;
  };

  #fire = (): void => {
    this.#timer = undefined;
    const c = this.#waitingOn;
    if (c === undefined) return; // the next wait arms it again
    const left = this.at - Date.now();
    if (left > 0) {
      this.#timer = setTimeout(this.#fire, left);
      return;
    }
    this.#expired = true;
    c.close();
  };

  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/** Verification errors that only say the issuer is unknown: what ssl_verify_client optional_no_ca forgives. */
const UNTRUSTED_ISSUER: ReadonlySet<string> = new Set([ // nginx's ngx_ssl_verify_error_optional()
  "DEPTH_ZERO_SELF_SIGNED_CERT", "SELF_SIGNED_CERT_IN_CHAIN", "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_UNTRUSTED", "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
]);

/** What write() returns when the socket took everything at once. */
const WRITTEN: Promise<void> = Promise.resolve();

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** "certificate has expired" from TlsInfo's "10:certificate has expired". */
function verifyText(t: TlsInfo): string {
  const r = t.verifyReason ?? t.verifyError ?? "unknown";
  return r.replace(/^\d+:/, "");
}

/**
 * What outlives the login: the two connections, the relay, and how to end them. runSession returns
 * once the relay has started, so an idle proxied session holds this object, its connections and
 * the relay's state, and none of the login's (nginx frees its login buffers the same way).
 */
class Session implements LiveSession, RelayListener {
  conn: Conn;
  upstream: Conn | undefined;
  relay: RelayHandle | undefined;
  aborted = false;

  constructor(readonly ctx: SessionLogContext, client: Conn, readonly deps: DriverDeps) {
    this.conn = client;
  }

  abort(why: string): void {
    if (this.aborted) return;
    this.aborted = true;
    this.deps.logger.log("info", why, this.ctx);
    this.relay?.abort();
    this.conn.close();
    this.upstream?.close();
  }

  /** Both connections closed, the session forgotten. */
  end(): void {
    this.conn.close();
    this.upstream?.close();
    const d = this.deps;
    d.metrics.active--;
    d.sessions.delete(this);
    d.onSessionEnd?.();
  }

  /** The relay runs on without the login's state; its end is logged and counted (relayEnded). */
  relayed(handle: RelayHandle): void {
    this.relay = handle;
  }

  relayEnded(stats: RelayStats): void {
    const { logger, metrics } = this.deps;
    const ctx = this.ctx;
    metrics.bytesClientToUpstream += stats.clientToUpstream;
    metrics.bytesUpstreamToClient += stats.upstreamToClient;
    ctx.action = undefined;
    if (stats.end === "timeout") logger.log("info", "client timed out while proxying", ctx);
    else if (stats.end === "error") logger.log("info", `proxied session failed: ${stats.error ?? "connection error"}`, ctx);
    if (stats.end !== "aborted" && logger.enabled("info")) {
      logger.log("info", `proxied session done, bytes from client: ${stats.clientToUpstream}, to client: ${stats.upstreamToClient}`, ctx);
    }
    this.end();
  }
}

/**
 * Runs one client connection up to the relay: PROXY header, TLS, login, auth, backend login. The
 * returned promise settles when the session has ended or its relay has started (Session.relayed
 * takes it from there).
 */
export function runSession(client: Conn, rs: RuntimeServer, deps: DriverDeps): Promise<void> {
  return new Login(client, rs, deps).run();
}

/**
 * One client connection up to the relay: PROXY header, TLS, login, auth, backend login. Its
 * state is fields and its steps are methods: a session makes one object for them, not a closure
 * per step.
 */
class Login {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly platform: Platform;
  readonly cfg: ServerConfig;
  // deno-lint-ignore no-explicit-any
  readonly m: ProtocolMachine<any, any>;
  readonly ctx: SessionLogContext;
  /** live.conn and live.upstream are the connections of the moment (TLS replaces them); a
   *  shutdown and the relay's end use them too. */
  readonly live: Session;
  readonly timer = new SessionTimer();
  relaying = false;
  clientHost = "[UNAVAILABLE]"; // nginx's value when there is no resolver
  /** A read started while waiting for something else (smtp_greeting_delay), taken over, not repeated. */
  pendingRead: Promise<Uint8Array | null> | undefined;
  /** The client's port from a trusted PROXY header; otherwise asked of the socket only when wanted. */
  realPort: number | undefined;
  proxyHeader: ProxyHeader | undefined;

  constructor(readonly client: Conn, readonly rs: RuntimeServer, readonly deps: DriverDeps) {
    this.logger = deps.logger;
    this.metrics = deps.metrics;
    this.platform = deps.platform;
    this.cfg = rs.compiled.config;
    this.m = rs.machine;
    this.ctx = {
      sid: deps.nextSid(),
      proto: this.m.name,
      client: client.remote.host,
      server: `${client.local.host}:${client.local.port}`,
    };
    this.live = new Session(this.ctx, client, deps);
  }

  /** undefined when the socket took it all at once (nothing to await), else the bounded wait */
  send(c: Conn, text: string | Uint8Array): Promise<void> | undefined {
    const bytes = typeof text === "string" ? toBytes(text) : text;
    const pending = c.writeNow !== undefined ? c.writeNow(bytes) : c.write(bytes);
    return pending === undefined ? undefined : this.timer.wait(c, pending, this.live.conn, "send() failed");
  }

  write(c: Conn, text: string | Uint8Array): Promise<void> {
    return this.send(c, text) ?? WRITTEN;
  }

  /** A last word to the client after a failure: bounded by `ms` of its own, errors ignored. */
  lastWord(text: string, ms: number): Promise<void> {
    this.timer.until(Date.now() + ms);
    return this.write(this.live.conn, text).catch(() => {});
  }

  readClient(): Promise<Uint8Array | null> {
    const r = this.pendingRead ?? this.live.conn.read();
    this.pendingRead = undefined;
    return r;
  }

  clientPort(): number {
    return this.realPort ?? this.live.conn.remote.port;
  }

  /**
   * Runs the session; the promise settles when it has ended or its relay has started
   * (Session.relayed takes it from there).
   */
  async run(): Promise<void> {
    const { logger, metrics, ctx, client, cfg, m, live, rs, timer } = this;
    this.deps.sessions.add(live);
    metrics.connections++;
    metrics.active++;
    // the per-session lines are built only when they are written
    if (logger.enabled("info")) logger.log("info", `client ${client.remote.host}:${client.remote.port} connected to ${ctx.server}`, { ...ctx, bare: true });

    try {
      timer.until(Date.now() + cfg.timeout);
      if (rs.listen.proxyProtocol) {
        ctx.action = "reading PROXY protocol";
        const got = await this.readProxy();
        if (!got) return;
        this.proxyHeader = got.header;
        // nginx's realip: only a peer in set_real_ip_from is believed; the Proxy-Protocol-* auth
        // headers go out either way
        if (this.proxyHeader.srcAddr && addressTrusted(client.remote.host, cfg.setRealIpFrom)) {
          ctx.client = canonicalAddress(this.proxyHeader.srcAddr);
          this.realPort = this.proxyHeader.srcPort;
          logger.log("info", `client ${client.remote.host}:${client.remote.port} is ${ctx.client}:${this.clientPort()} by PROXY protocol`, { ...ctx, bare: true });
        }
        if (rs.listen.ssl) {
          // "listen ... ssl proxy_protocol": the header came in clear, TLS starts after it
          if (!rs.tlsServer) throw new Error("ssl listen without a TLS server context");
          ctx.action = "SSL handshaking";
          live.conn = await this.handshake(live.conn.startTls(rs.tlsServer, got.rest));
        } else if (got.rest.length) {
          this.pendingRead = Promise.resolve(got.rest);
        }
      }
      if (rs.listen.ssl && !rs.listen.proxyProtocol) {
        // implicit TLS: the listener hands over the TCP connection and the session starts TLS with
        // the server's current certificates, bounded by `timeout`, as nginx's ngx_mail_ssl_init_connection
        if (!rs.tlsServer) throw new Error("ssl listen without a TLS server context");
        ctx.action = "SSL handshaking";
        live.conn = await this.handshake(live.conn.startTls(rs.tlsServer, EMPTY));
      }
      if (rs.listen.ssl && !(await this.certAccepted())) return;
      if (m.resolvesClient && cfg.resolver.addresses.length > 0) {
        ctx.action = "in resolving client address";
        this.clientHost = await this.resolveClient(ctx.client);
      }
      ctx.action = "in auth state";
      let step = m.start({
        server: rs.compiled,
        tls: rs.listen.ssl,
        nowSec: Math.floor(Date.now() / 1000),
        random: Math.floor(Math.random() * 2 ** 32),
        clientAddr: ctx.client,
        clientHost: this.clientHost,
      });
      let state = step.state;
      let actions: Action[] = step.actions;
      for (;;) {
        let next: Input | undefined;
        let end = false;
        for (const a of actions) {
          switch (a.kind) {
            case "reply": {
              const w = this.send(live.conn, a.text);
              if (w !== undefined) await w;
              break;
            }
            case "log":
              logger.log(a.level, a.message, ctx);
              break;
            case "close":
              end = true;
              break;
            case "start-tls":
              if (!rs.tlsServer) throw new Error("start-tls without a TLS server context");
              ctx.action = "SSL handshaking";
              live.conn = await this.handshake(live.conn.startTls(rs.tlsServer));
              ctx.action = "in auth state";
              if (!(await this.certAccepted())) {
                end = true;
                break;
              }
              timer.until(Date.now() + cfg.timeout);
              next = { kind: "tls-started" };
              break;
            case "ask-auth":
              next = { kind: "auth-result", outcome: await this.authenticate(a.credentials) };
              timer.until(Date.now() + cfg.timeout);
              ctx.action = "in auth state";
              break;
            case "proxy":
              await this.proxy(a);
              end = true;
              break;
            case "delay": {
              ctx.action = "in delay pipelining state";
              const read = this.readClient();
              const early = await timer.wait(live.conn, Promise.race([read, sleep(a.ms).then(() => undefined)]), live.conn, "recv() failed");
              if (early === undefined) {
                this.pendingRead = read;
                next = { kind: "delay-done" };
                timer.until(Date.now() + cfg.timeout);
                ctx.action = "in auth state";
              } else {
                if (early) logger.log("info", `client was rejected before greeting: "${escapeForLog(fromBytes(early.subarray(0, 256)))}"`, ctx);
                if (early) await this.write(live.conn, a.earlyReply).catch(() => {});
                end = true;
              }
              break;
            }
          }
          if (end) break;
        }
        if (end || live.aborted) break;
        if (!next) {
          const bytes = await timer.wait(live.conn, this.readClient(), live.conn, "recv() failed");
          if (bytes === null) {
            logger.log("info", "client closed connection", ctx);
            break;
          }
          next = { kind: "bytes", bytes };
        }
        step = m.step(state, next);
        state = step.state;
        actions = step.actions;
      }
    } catch (e) {
      if (live.aborted) {
        // already logged by abort()
      } else if (e instanceof ClientGone) {
        logger.log("info", e.message, ctx);
      } else if (e instanceof Deadline) {
        logger.log("info", live.upstream ? "upstream timed out" : "client timed out", ctx);
        if (live.upstream) await this.lastWord(m.internalError, 1000);
      } else {
        logger.log("error", `session failed: ${message(e)}`, ctx);
        await this.lastWord(m.internalError, 1000);
      }
    } finally {
      timer.stop();
      if (!this.relaying) live.end();
    }
  }

  /**
   * ssl_verify_client after a handshake, as nginx's ngx_mail_verify_cert: a certificate that fails
   * verification gets the protocol's certificate error ("optional_no_ca" forgives an unknown
   * issuer only), a missing one under "on" the no-certificate error; both close the session.
   */
  async certAccepted(): Promise<boolean> {
    const { logger, ctx, cfg, m, live } = this;
    const mode = cfg.sslVerifyClient;
    if (mode === "off") return true;
    const t = live.conn.tlsInfo;
    if (t?.certPem && !t.verified && !(mode === "optional_no_ca" && UNTRUSTED_ISSUER.has(t.verifyError ?? ""))) {
      logger.log("info", `client SSL certificate verify error: (${t.verifyReason ?? t.verifyError ?? "unknown"})`, ctx);
      await this.refuse(m.certError);
      return false;
    }
    if (mode === "on" && !t?.certPem) {
      logger.log("info", "client sent no required SSL certificate", ctx);
      await this.refuse(m.noCertError);
      return false;
    }
    return true;
  }

  /** The last words of a session that just finished its handshake: sent, flushed through TLS, then FIN. */
  async refuse(text: string): Promise<void> {
    await this.lastWord(text, 5000);
    await before(this.live.conn.closeWrite(), this.timer.at).catch(() => {});
  }

  /** A TLS handshake with the client, bounded by the session's deadline. */
  handshake(p: Promise<Conn>): Promise<Conn> {
    return this.timer.wait(this.live.conn, before(p, this.timer.at), this.live.conn, "SSL handshake failed");
  }

  /**
   * Reads the PROXY header, however it is split across packets; null (after nginx's log line) when
   * it is missing, malformed or cut short. Nothing is ever written to the client here: it has not
   * been greeted, and what it sent never reaches the protocol parser. `timeout` bounds the wait.
   */
  async readProxy(): Promise<{ header: ProxyHeader; rest: Uint8Array } | null> {
    const { logger, ctx, live, timer } = this;
    let buf: Uint8Array = EMPTY;
    for (;;) {
      const chunk = await timer.wait(live.conn, live.conn.read(), live.conn, "recv() failed");
      if (chunk === null) {
        if (buf.length === 0) logger.log("info", "client closed connection", ctx);
        else logger.log("error", brokenHeader(buf), ctx);
        return null;
      }
      buf = concat(buf, chunk);
      const r = readProxyHeader(buf);
      if (r.kind === "incomplete") continue;
      if (r.kind === "error") {
        logger.log("error", r.why, ctx);
        return null;
      }
      return { header: r.header, rest: buf.subarray(r.consumed) };
    }
  }

  /**
   * nginx's client name for SMTP: the PTR name, accepted only when it is a valid host name and
   * resolves back to the client's address. NXDOMAIN or no match gives "[UNAVAILABLE]", a failed
   * or timed-out lookup "[TEMPUNAVAIL]".
   */
  async resolveClient(ip: string): Promise<string> {
    const { logger, ctx, cfg, platform } = this;
    const servers = cfg.resolver.addresses;
    const until = Date.now() + cfg.resolverTimeout;
    let names: string[];
    try {
      names = await before(platform.reverseDns(ip, servers), until);
    } catch (e) {
      logger.log("error", `${ip} could not be resolved (${e instanceof Deadline ? "timed out" : message(e)})`, ctx);
      return "[TEMPUNAVAIL]";
    }
    if (names.length === 0) {
      logger.log("error", `${ip} could not be resolved (3: Host not found)`, ctx);
      return "[UNAVAILABLE]";
    }
    const name = names[0].replace(/\.$/, "");
    if (!/^[A-Za-z0-9.-]+$/.test(name)) {
      logger.log("error", `${ip} resolved to invalid host name "${escapeForLog(name)}"`, ctx);
      return "[TEMPUNAVAIL]";
    }
    ctx.action = "in resolving client hostname";
    let addrs: string[];
    try {
      addrs = await before(platform.resolveDns(name, servers), until);
    } catch (e) {
      logger.log("error", `"${name}" could not be resolved (${e instanceof Deadline ? "timed out" : message(e)})`, ctx);
      return "[TEMPUNAVAIL]";
    }
    const plain = (a: string) => a.replace(/^::ffff:/, "").toLowerCase();
    if (!addrs.some((a) => plain(a) === plain(ip))) {
      if (addrs.length === 0) logger.log("error", `"${name}" could not be resolved (3: Host not found)`, ctx);
      return "[UNAVAILABLE]";
    }
    return name;
  }

  async authenticate(c: Credentials): Promise<AuthOutcome> {
    const { logger, metrics, ctx, cfg, m, live, rs } = this;
    ctx.login = c.login;
    ctx.action = "in http auth state";
    const digest = c.method === "cram-md5" || c.method === "apop";
    const tls = live.conn.tlsInfo;
    const query = {
      method: c.method,
      user: c.login,
      pass: c.password,
      salt: c.salt,
      protocol: m.name,
      loginAttempt: c.loginAttempt,
      clientIp: ctx.client,
      clientHost: m.resolvesClient ? this.clientHost : undefined,
      proxyProtocol: this.proxyHeader?.srcAddr
        ? { addr: this.proxyHeader.srcAddr, port: this.proxyHeader.srcPort ?? 0, serverAddr: this.proxyHeader.dstAddr ?? "", serverPort: this.proxyHeader.dstPort ?? 0 }
        : undefined,
      smtp: c.smtp,
      ssl: tls
        ? {
          protocol: tls.protocol,
          cipher: tls.cipher,
          ...(cfg.sslVerifyClient !== "off"
            ? {
              // nginx's $ssl_client_verify: "FAILED:" and OpenSSL's text for the error
              verify: tls.certPem ? (tls.verified ? "SUCCESS" : `FAILED:${verifyText(tls)}`) : "NONE",
              subject: tls.subject,
              issuer: tls.issuer,
              serial: tls.serial,
              fingerprint: tls.fingerprint,
              cert: cfg.authHttpPassClientCert ? tls.certPem : undefined,
            }
            : {}),
        }
        : undefined,
    };
    for (;;) {
      let reply;
      try {
        reply = await rs.auth.ask(query);
      } catch (e) {
        metrics.authErrors++;
        logger.log("error", `auth http server ${rs.authName} failed: ${message(e)}`, ctx);
        return { kind: "error", why: "auth service failed" };
      }
      const d = decideAuth(reply, { protocol: m.name, login: c.login, password: digest ? null : c.password });
      if (d.kind === "retry") {
        await sleep(d.delayMs);
        continue;
      }
      if (d.log) logger.log("info", d.log, ctx);
      if (d.outcome.kind === "error") {
        metrics.authErrors++;
        logger.log("error", `${d.outcome.why} (${rs.authName})`, ctx);
      }
      if (d.outcome.kind === "fail") metrics.loginsFailed++;
      if (d.delayMs > 0) await sleep(d.delayMs);
      if (d.outcome.kind === "ok") ctx.login = d.outcome.login;
      return d.outcome;
    }
  }

  async proxy(a: Extract<Action, { kind: "proxy" }>): Promise<void> {
    const { logger, metrics, ctx, cfg, m, live, rs, timer, platform } = this;
    const to = a.to;
    ctx.upstream = to.host.includes(":") ? `[${to.host}]:${to.port}` : `${to.host}:${to.port}`;
    ctx.action = "connecting to upstream";
    timer.until(Date.now() + cfg.timeout);
    const implicitTls = cfg.proxySsl === "on" ? rs.tlsUpstream : undefined;
    const sendProxy = cfg.proxyProtocol !== "off";
    try {
      // a PROXY header goes first, in clear, so TLS to the backend starts after it
      live.upstream = await platform.connect(to, cfg.timeout);
      if (sendProxy) {
        const header = writeProxyHeader(cfg.proxyProtocol === "v2" ? 2 : 1, { host: ctx.client, port: this.clientPort() }, this.client.local);
        await this.write(live.upstream, header);
      }
    } catch (e) {
      if (e instanceof Deadline) throw e;
      metrics.upstreamErrors++;
      logger.log("error", `connect() to upstream failed: ${message(e)}`, ctx);
      await this.write(live.conn, m.internalError).catch(() => {});
      return;
    }
    if (implicitTls) {
      // proxy_ssl on: the TCP connection is up, TLS comes before the greeting
      try {
        ctx.action = "SSL handshaking to upstream";
        live.upstream = await before(live.upstream.startTls(implicitTls), timer.at);
      } catch (e) {
        if (e instanceof Deadline) throw e;
        await this.upstreamTlsFailed(e);
        return;
      }
    }
    ctx.action = "reading response from upstream";
    const login = this; // for the getter below: the client's port is asked of the socket only if used
    let us = m.upstreamStart({
      server: rs.compiled,
      login: a.login,
      password: a.password,
      clientTag: a.tag,
      clientAddr: ctx.client,
      clientHost: this.clientHost,
      get clientPort() {
        return login.clientPort();
      },
      starttls: cfg.proxySsl === "starttls",
      smtp: a.smtp,
    });
    let ustate = us.state;
    let uactions: UpstreamAction[] = us.actions;
    for (;;) {
      let next: UpstreamInput | undefined;
      for (const ua of uactions) {
        switch (ua.kind) {
          case "send": {
            const w = this.send(live.upstream, ua.text);
            if (w !== undefined) await w;
            break;
          }
          case "start-tls":
            if (!rs.tlsUpstream) throw new Error("upstream STARTTLS without a TLS client context");
            try {
              ctx.action = "SSL handshaking to upstream";
              live.upstream = await before(live.upstream.startTls(rs.tlsUpstream), timer.at);
              ctx.action = "reading response from upstream";
            } catch (e) {
              if (e instanceof Deadline) throw e;
              await this.upstreamTlsFailed(e);
              return;
            }
            next = { kind: "tls-started" };
            break;
          case "fail":
            metrics.upstreamErrors++;
            logger.log(cfg.proxyPassErrorMessage ? "info" : "error", ua.log, ctx);
            await this.write(live.conn, ua.toClient).catch(() => {});
            return;
          case "done": {
            const w = this.send(live.conn, ua.toClient);
            if (w !== undefined) await w;
            if (ua.leftover.length) await this.write(live.conn, ua.leftover);
            if (a.leftover.length) await this.write(live.upstream, a.leftover);
            ctx.action = undefined;
            metrics.loginsOk++;
            logger.log("info", "client logged in", ctx);
            this.startRelay(live.upstream);
            return;
          }
        }
      }
      if (!next) {
        const bytes = await timer.wait(live.upstream, live.upstream.read(), live.conn, "");
        if (bytes === null) {
          metrics.upstreamErrors++;
          logger.log("error", "upstream prematurely closed connection", ctx);
          await this.write(live.conn, m.internalError).catch(() => {});
          return;
        }
        next = { kind: "bytes", bytes };
      }
      us = m.upstreamStep(ustate, next);
      ustate = us.state;
      uactions = us.actions;
    }
  }

  /**
   * TLS to the backend failed: a backend failure like any other (the protocol's internal error to
   * the client), logged with the reason; a certificate that does not verify says so.
   */
  async upstreamTlsFailed(e: unknown): Promise<void> {
    const { logger, metrics, ctx, m, live } = this;
    metrics.upstreamErrors++;
    if (e instanceof TlsVerifyError) logger.log("error", `upstream SSL certificate verify error: (${e.message})`, ctx);
    else logger.log("error", `SSL_do_handshake() to upstream failed (${message(e)})`, ctx);
    live.upstream?.close();
    await this.lastWord(m.internalError, 5000);
  }

  startRelay(up: Conn): void {
    this.ctx.action = "proxying";
    this.timer.stop(); // the relay has its own idle timer (proxy_timeout)
    this.relaying = true;
    this.live.relayed(this.platform.relay(this.live.conn, up, { bufferSize: this.cfg.proxyBuffer, idleTimeoutMs: this.cfg.proxyTimeout, listener: this.live }));
  }
}
