// Runs a loaded configuration: listeners, the HTTP endpoint, reload and stop. Runtime-free: all
// I/O goes through the Platform.

import { createBuiltinAuth } from "./auth/builtin.ts";
import { createHttpAuth } from "./auth/http-client.ts";
import type { AuthService } from "./auth/types.ts";
import type { Config, ServerConfig } from "./config/types.ts";
import { createHttpApp } from "./http/app.ts";
import { createLogger, type Logger } from "./log.ts";
import { type Counts, createMetrics, type Metrics } from "./metrics.ts";
import type { Conn, Listener, Platform, TlsClient, TlsServer, TlsVersion } from "./platform.ts";
import { parseSize } from "./config/values.ts";
import { type DriverDeps, type LiveSession, runSession, type RuntimeServer } from "./proxy/driver.ts";
import { imap } from "./protocol/imap/index.ts";
import { pop3 } from "./protocol/pop3/index.ts";
import { smtp } from "./protocol/smtp/index.ts";
import type { ProtocolMachine } from "./protocol/types.ts";
import { VERSION } from "./version.ts";

// deno-lint-ignore no-explicit-any
const MACHINES: Record<string, ProtocolMachine<any, any> | undefined> = { imap, pop3, smtp };

export function protocolsImplemented(): string[] {
  return Object.keys(MACHINES);
}

const DEFAULT_PROTOCOLS = "TLSv1.2 TLSv1.3"; // nginx's ssl_protocols default as the loader fills it in
const DEFAULT_CIPHERS = "HIGH:!aNULL:!MD5";
const DEFAULT_SESSION_TIMEOUT_MS = 300_000;
const BUILTIN_CACHE_SESSIONS = 20_480; // nginx's "builtin" without a size
const SHARED_CACHE_BYTES_PER_SESSION = 256; // nginx: about 4000 sessions per megabyte

/** ssl_session_cache as a number of sessions; undefined for off / none. */
function sessionCacheSize(specs: readonly string[]): number | undefined {
  let size = 0;
  for (const spec of specs) {
    const builtin = /^builtin(?::(\d+))?$/.exec(spec);
    const shared = /^shared:[^:]+:(.+)$/.exec(spec);
    if (builtin) size = Math.max(size, builtin[1] ? Number(builtin[1]) : BUILTIN_CACHE_SESSIONS);
    else if (shared) {
      const bytes = parseSize(shared[1]);
      if (bytes.ok) size = Math.max(size, Math.floor(bytes.value / SHARED_CACHE_BYTES_PER_SESSION));
    }
  }
  return size > 0 ? size : undefined;
}

/** The TlsServer for a server's ssl_* directives; nginx's defaults stay undefined (every runtime honours those). */
function tlsServerFor(s: ServerConfig): TlsServer | undefined {
  if (s.sslCertificates.length === 0) return undefined;
  const verify = s.sslVerifyClient !== "off";
  return {
    side: "server",
    certs: s.sslCertificates.map((c) => ({ cert: c.certPem, key: c.keyPem })),
    passphrases: s.sslPasswordFile,
    ca: verify ? [s.sslClientCertificate, s.sslTrustedCertificate].filter(Boolean).join("\n") || undefined : undefined,
    requestCert: verify || undefined,
    // the handshake accepts any certificate; the driver then answers as nginx does (certError, noCertError)
    rejectUnauthorized: verify ? false : undefined,
    protocols: s.sslProtocols.join(" ") === DEFAULT_PROTOCOLS ? undefined : s.sslProtocols as TlsVersion[],
    ciphers: s.sslCiphers === DEFAULT_CIPHERS ? undefined : s.sslCiphers,
    ecdhCurve: s.sslEcdhCurve === "auto" ? undefined : s.sslEcdhCurve,
    honorCipherOrder: s.sslPreferServerCiphers || undefined,
    crl: verify ? s.sslCrl : undefined,
    dhparam: s.sslDhparam,
    verifyDepth: verify ? s.sslVerifyDepth : undefined,
    sessionTimeoutSec: s.sslSessionTimeout === DEFAULT_SESSION_TIMEOUT_MS ? undefined : Math.max(1, Math.round(s.sslSessionTimeout / 1000)),
    sessionTickets: s.sslSessionTickets ? undefined : false,
    ticketKeys: s.sslSessionTicketKey.length > 0 ? s.sslSessionTicketKey : undefined,
    sessionCacheSize: sessionCacheSize(s.sslSessionCache),
  };
}

function tlsUpstreamFor(s: ServerConfig): TlsClient | undefined {
  if (s.proxySsl === "off") return undefined;
  return {
    side: "client",
    verify: s.proxySslVerify,
    ca: s.proxySslTrustedCertificate,
    serverName: s.proxySslName,
    cert: s.proxySslCertificate,
    key: s.proxySslCertificateKey,
  };
}

const SERVER_DIRECTIVES: Record<string, string> = {
  certs: "ssl_certificate",
  keys: "ssl_certificate_key",
  passphrases: "ssl_password_file",
  ca: "ssl_client_certificate",
  requestCert: "ssl_verify_client",
  rejectUnauthorized: "ssl_verify_client",
  protocols: "ssl_protocols",
  ciphers: "ssl_ciphers",
  ecdhCurve: "ssl_ecdh_curve",
  honorCipherOrder: "ssl_prefer_server_ciphers",
  crl: "ssl_crl",
  dhparam: "ssl_dhparam",
  verifyDepth: "ssl_verify_depth",
  sessionTimeoutSec: "ssl_session_timeout",
  sessionTickets: "ssl_session_tickets",
  ticketKeys: "ssl_session_ticket_key",
  sessionCacheSize: "ssl_session_cache",
};

const CLIENT_DIRECTIVES: Record<string, string> = {
  serverName: "proxy_ssl_name",
  ca: "proxy_ssl_trusted_certificate",
  verify: "proxy_ssl_verify",
  cert: "proxy_ssl_certificate",
  key: "proxy_ssl_certificate_key",
};

export interface TlsReport {
  /** Directives this runtime cannot honour, or material it cannot load: start-up fails. */
  readonly errors: string[];
  /** Directives honoured in part, as documented. */
  readonly notices: string[];
}

/** What the runtime says about every server's TLS, in nginx's terms (directive, file, server). */
export function checkTlsConfig(config: Config, platform: Platform): TlsReport {
  const errors: string[] = [];
  const notices: string[] = [];
  config.servers.forEach((s, i) => {
    const where = `(mail.servers[${i}], listen ${s.listen.map((l) => l.source).join(", ")})`;
    const server = tlsServerFor(s);
    const upstream = tlsUpstreamFor(s);
    for (const [t, names] of [[server, SERVER_DIRECTIVES], [upstream, CLIENT_DIRECTIVES]] as const) {
      if (t === undefined) continue;
      for (const p of platform.checkTls(t)) {
        const directive = names[p.option] ?? p.option;
        const pair = p.index === undefined ? undefined : s.sslCertificates[p.index];
        const file = pair === undefined ? "" : ` "${p.option === "keys" ? pair.certificateKey : pair.certificate}"`;
        if (p.kind === "partial") notices.push(`${directive} on ${platform.runtime}: ${p.why} ${where}`);
        else if (p.kind === "unsupported") errors.push(`${directive} is not supported on ${platform.runtime}: ${p.why} ${where}`);
        else errors.push(`${directive}${file} cannot be used: ${p.why} ${where}`);
      }
    }
  });
  return { errors: [...new Set(errors)], notices: [...new Set(notices)] };
}

interface Built {
  readonly config: Config;
  readonly logger: Logger;
  readonly builtin: AuthService;
  readonly servers: Map<string, RuntimeServer>; // by listen key
  readonly serverLoggers: Map<string, Logger>;
}

function listenKey(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function build(config: Config, platform: Platform): Built {
  const tls = checkTlsConfig(config, platform);
  if (tls.errors.length > 0) throw new Error(tls.errors.join("\n"));
  const sink = (dest: string, line: string) => platform.writeLog(dest, line);
  const logger = createLogger(config.errorLog, sink, platform.pid());
  for (const n of tls.notices) logger.log("notice", n);
  const builtin = createBuiltinAuth(config.auth, platform.scrypt, platform.randomBytes);
  const servers = new Map<string, RuntimeServer>();
  const serverLoggers = new Map<string, Logger>();
  for (const s of config.servers) {
    const machine = MACHINES[s.protocol];
    if (!machine) throw new Error(`protocol "${s.protocol}" is not implemented yet`);
    const compiled = machine.compile(s);
    const auth = s.authHttp === "builtin" ? builtin : createHttpAuth(s.authHttp, s.authHttpHeader, s.authHttpTimeout, { fetch: platform.fetch, connect: (to, ms) => platform.connect(to, ms) });
    for (const l of s.listen) {
      const key = listenKey(l.host, l.port);
      servers.set(key, {
        compiled,
        machine,
        listen: l,
        auth,
        authName: s.authHttp,
        tlsServer: tlsServerFor(s),
        tlsUpstream: tlsUpstreamFor(s),
      });
      serverLoggers.set(key, createLogger(s.errorLog, sink, platform.pid()));
    }
  }
  return { config, logger, builtin, servers, serverLoggers };
}

interface OpenListener {
  listener: Listener;
  current: RuntimeServer;
  logger: Logger;
}

export interface Running {
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Listen addresses actually bound, "host:port" → port (useful with port 0). */
  addresses(): Map<string, number>;
  httpAddress(): { host: string; port: number } | undefined;
  reload(config: Config): Promise<void>;
  /** Stops accepting; graceful waits for live sessions (bounded by worker_shutdown_timeout). */
  stop(graceful: boolean): Promise<void>;
  sessionCount(): number;
}

export interface StartOptions {
  /** Several processes share the listeners (worker_processes). */
  readonly reusePort?: boolean;
  /** Only one process serves the HTTP endpoint. */
  readonly serveHttp?: boolean;
  readonly workerId?: number;
  /** The other workers' counters, for the HTTP endpoint of the process that serves it. */
  readonly peerMetrics?: () => Promise<readonly Partial<Counts>[]>;
}

export async function startPostern(config: Config, platform: Platform, opts: StartOptions = {}): Promise<Running> {
  let built = build(config, platform);
  const metrics = createMetrics(Date.now());
  const sessions = new Set<LiveSession>();
  let sid = 0;
  const open = new Map<string, OpenListener>();
  let http: Listener | undefined;
  let httpKey = "";
  const httpDeps = { version: VERSION, metrics, auth: built.builtin, now: () => Date.now(), peers: opts.peerMetrics };

  let drained: (() => void) | undefined; // resolves a graceful stop once the last session ends
  const nextSid = () => ++sid;
  const onSessionEnd = () => sessions.size === 0 && drained?.();
  const depsOf = new WeakMap<Logger, DriverDeps>(); // one per logger, not one per session
  const deps = (logger: Logger): DriverDeps => {
    let d = depsOf.get(logger);
    if (d === undefined) depsOf.set(logger, d = { platform, logger, metrics, sessions, nextSid, onSessionEnd });
    return d;
  };

  async function openListener(key: string, rs: RuntimeServer, logger: Logger): Promise<void> {
    const l = rs.listen;
    const entry: OpenListener = { current: rs, logger, listener: undefined as unknown as Listener };
    const onConn = (c: Conn) => {
      runSession(c, entry.current, deps(entry.logger)).catch((e) => entry.logger.log("error", `session crashed: ${e}`));
    };
    // Plain TCP even for "listen ... ssl": the session starts TLS (driver.ts), with the server's
    // certificates of the moment, so a reload that changes them needs no new listener.
    entry.listener = await platform.listen(
      { host: l.host, port: l.port, backlog: l.backlog, ipv6Only: l.ipv6only, keepAlive: l.soKeepalive, reusePort: opts.reusePort },
      onConn,
    );
    open.set(key, entry);
  }

  async function applyHttp(cfg: Config): Promise<void> {
    const at = opts.serveHttp === false ? undefined : cfg.http.listen;
    const key = at ? listenKey(at.host, at.port) : "";
    if (key === httpKey) return;
    if (http) await http.close();
    http = undefined;
    httpKey = key;
    if (!at) return;
    const app = createHttpApp({ ...httpDeps, get auth() { return built.builtin; } });
    http = await platform.serveHttp({ host: at.host, port: at.port }, (r) => app.fetch(r));
  }

  for (const [key, rs] of built.servers) await openListener(key, rs, built.serverLoggers.get(key)!);
  await applyHttp(config);
  const who = opts.workerId ? `worker ${opts.workerId}` : "started";
  built.logger.log("notice", `postern/${VERSION} (${platform.runtime}) ${who}, ${open.size} mail listener(s)`);

  return {
    get logger() {
      return built.logger;
    },
    metrics,
    addresses() {
      const m = new Map<string, number>();
      for (const [k, o] of open) m.set(k, o.listener.address.port);
      return m;
    },
    httpAddress: () => http?.address,
    sessionCount: () => sessions.size,
    async reload(next: Config) {
      const nb = build(next, platform);
      for (const [key, o] of open) {
        // listeners are plain TCP (every TLS handshake happens in the session), so only a listen
        // address that is gone closes one; new certificates apply to the next connection
        if (!nb.servers.has(key)) {
          await o.listener.close();
          open.delete(key);
        }
      }
      for (const [key, rs] of nb.servers) {
        const o = open.get(key);
        if (o) {
          o.current = rs;
          o.logger = nb.serverLoggers.get(key)!;
        } else {
          await openListener(key, rs, nb.serverLoggers.get(key)!);
        }
      }
      built = nb;
      await applyHttp(next);
      built.logger.log("notice", `reconfigured: ${open.size} mail listener(s)`);
    },
    async stop(graceful: boolean) {
      for (const o of open.values()) await o.listener.close();
      open.clear();
      if (http) await http.close();
      http = undefined;
      if (graceful && sessions.size > 0) {
        const limit = built.config.workerShutdownTimeout;
        built.logger.log("notice", `graceful stop: waiting for ${sessions.size} session(s)`);
        let timer: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((resolve) => {
          drained = resolve;
          if (limit !== undefined) timer = setTimeout(resolve, limit);
        });
        clearTimeout(timer);
      }
      for (const s of [...sessions]) s.abort("shutdown timeout");
    },
  };
}
