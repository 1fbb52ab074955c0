// Runs a loaded configuration: listeners, the HTTP endpoint, reload and stop. Runtime-free: all
// I/O goes through the Platform.

import { createBuiltinAuth } from "./auth/builtin.ts";
import { createHttpAuth } from "./auth/http-client.ts";
import type { AuthService } from "./auth/types.ts";
import type { Config, ServerConfig } from "./config/types.ts";
import { createHttpApp } from "./http/app.ts";
import { createLogger, type Logger } from "./log.ts";
import { createMetrics, type Metrics } from "./metrics.ts";
import type { Conn, Listener, Platform, TlsClient, TlsServer } from "./platform.ts";
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

const TLS_VERSIONS: Record<string, string> = { "TLSv1": "TLSv1", "TLSv1.1": "TLSv1.1", "TLSv1.2": "TLSv1.2", "TLSv1.3": "TLSv1.3" };

function tlsServerFor(s: ServerConfig): TlsServer | undefined {
  if (s.sslCertificates.length === 0) return undefined;
  const versions = s.sslProtocols.map((p) => TLS_VERSIONS[p]).filter(Boolean).sort();
  const pass = s.sslPasswordFile?.[0];
  return {
    side: "server",
    certs: s.sslCertificates.map((c) => ({ cert: c.certPem, key: c.keyPem, passphrase: pass })),
    ca: [s.sslClientCertificate, s.sslTrustedCertificate].filter(Boolean).join("\n") || undefined,
    requestCert: s.sslVerifyClient !== "off",
    // the handshake accepts any certificate; the driver then answers as nginx does (certError, noCertError)
    rejectUnauthorized: false,
    minVersion: versions[0],
    maxVersion: versions[versions.length - 1],
    ciphers: s.sslCiphers,
    ecdhCurve: s.sslEcdhCurve,
    honorCipherOrder: s.sslPreferServerCiphers,
    crl: s.sslCrl,
    dhparam: s.sslDhparam,
    verifyDepth: s.sslVerifyDepth,
    sessionTimeoutSec: Math.round(s.sslSessionTimeout / 1000),
    sessionTickets: s.sslSessionTickets,
    // node:tls takes one 48-byte key; nginx's 80-byte keys are cut to the AES-128 layout
    ticketKeys: s.sslSessionTicketKey[0]?.subarray(0, 48),
    sessionCache: !s.sslSessionCache.every((c) => c === "off" || c === "none"),
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
  const sink = (dest: string, line: string) => platform.writeLog(dest, line);
  const logger = createLogger(config.errorLog, sink, platform.pid());
  const builtin = createBuiltinAuth(config.auth, platform.scrypt);
  const servers = new Map<string, RuntimeServer>();
  const serverLoggers = new Map<string, Logger>();
  for (const s of config.servers) {
    const machine = MACHINES[s.protocol];
    if (!machine) throw new Error(`protocol "${s.protocol}" is not implemented yet`);
    const compiled = machine.compile(s);
    const auth = s.authHttp === "builtin" ? builtin : createHttpAuth(s.authHttp, s.authHttpHeader, s.authHttpTimeout, platform.fetch);
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
  readonly ssl: boolean;
  readonly tlsFingerprint: string;
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

function tlsFingerprint(rs: RuntimeServer): string {
  const t = rs.tlsServer;
  if (!t || !rs.listen.ssl) return "";
  return JSON.stringify(t);
}

export async function startPostern(config: Config, platform: Platform): Promise<Running> {
  let built = build(config, platform);
  const metrics = createMetrics(Date.now());
  const sessions = new Set<LiveSession>();
  let sid = 0;
  const open = new Map<string, OpenListener>();
  let http: Listener | undefined;
  let httpKey = "";
  const httpDeps = { version: VERSION, metrics, auth: built.builtin, now: () => Date.now() };

  const deps = (logger: Logger): DriverDeps => ({ platform, logger, metrics, sessions, nextSid: () => ++sid });

  let drained: (() => void) | undefined; // resolves a graceful stop once the last session ends

  async function openListener(key: string, rs: RuntimeServer, logger: Logger): Promise<void> {
    const l = rs.listen;
    const entry: OpenListener = { current: rs, logger, ssl: l.ssl, tlsFingerprint: tlsFingerprint(rs), listener: undefined as unknown as Listener };
    const onConn = (c: Conn) => {
      runSession(c, entry.current, deps(entry.logger))
        .catch((e) => entry.logger.log("error", `session crashed: ${e}`))
        .finally(() => sessions.size === 0 && drained?.());
    };
    entry.listener = await platform.listen(
      { host: l.host, port: l.port, backlog: l.backlog, ipv6Only: l.ipv6only, keepAlive: l.soKeepalive },
      onConn,
      // with proxy_protocol the header comes in clear before the TLS handshake: the driver starts TLS
      l.ssl && !l.proxyProtocol ? rs.tlsServer : undefined,
    );
    open.set(key, entry);
  }

  async function applyHttp(cfg: Config): Promise<void> {
    const at = cfg.http.listen;
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
  built.logger.log("notice", `postern/${VERSION} (${platform.runtime}) started, ${open.size} mail listener(s)`);

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
        const rs = nb.servers.get(key);
        if (!rs || rs.listen.ssl !== o.ssl || tlsFingerprint(rs) !== o.tlsFingerprint) {
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
