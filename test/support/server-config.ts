// A ServerConfig with nginx's defaults for pure machine tests (no files, no certificates).

import type { ServerConfig } from "../../src/config/types.ts";

export function testServerConfig(overrides: Partial<ServerConfig> = {}): ServerConfig {
  const base: ServerConfig = {
    listen: [{ host: "127.0.0.1", port: 1143, ssl: false, proxyProtocol: false, bind: false, soKeepalive: false, source: "127.0.0.1:1143" }],
    protocol: "imap",
    serverName: "mail.test",
    timeout: 60_000,
    maxErrors: 5,
    resolver: { addresses: [], ipv4: true, ipv6: true },
    resolverTimeout: 30_000,
    errorLog: [{ dest: "stderr", level: "info", format: "text" }],
    authHttp: "builtin",
    authHttpHeader: {},
    authHttpPassClientCert: false,
    authHttpTimeout: 60_000,
    proxyBuffer: 4096,
    proxyPassErrorMessage: false,
    proxyProtocol: "off",
    proxySmtpAuth: false,
    proxyTimeout: 86_400_000,
    xclient: true,
    proxySsl: "off",
    proxySslVerify: true,
    setRealIpFrom: [],
    sslCertificates: [],
    sslProtocols: ["TLSv1.2", "TLSv1.3"],
    sslCiphers: "HIGH:!aNULL:!MD5",
    sslEcdhCurve: "auto",
    sslPreferServerCiphers: false,
    sslVerifyClient: "off",
    sslVerifyDepth: 1,
    sslSessionCache: ["none"],
    sslSessionTimeout: 300_000,
    sslSessionTickets: true,
    sslSessionTicketKey: [],
    starttls: "off",
    imapAuth: ["plain"],
    imapCapabilities: ["IMAP4", "IMAP4rev1", "UIDPLUS"],
    imapClientBuffer: 4096,
    pop3Auth: ["plain"],
    pop3Capabilities: ["TOP", "USER", "UIDL"],
    pop3ClientBuffer: 16384,
    smtpAuth: ["plain", "login"],
    smtpCapabilities: [],
    smtpClientBuffer: 4096,
    smtpGreetingDelay: 0,
  };
  return { ...base, ...overrides };
}

/** Applies transcript "config:" lines (`key: value`, nginx names) to a test config. */
export function applyConfigLines(lines: readonly string[], base: ServerConfig = testServerConfig()): ServerConfig {
  const o: Record<string, unknown> = { ...base };
  for (const line of lines) {
    const m = /^(\w+):\s*(.*)$/.exec(line);
    if (!m) throw new Error(`config line "${line}"`);
    const key = m[1].replace(/_(\w)/g, (_, c: string) => c.toUpperCase());
    let value: unknown = m[2];
    const v = m[2].trim();
    if (v.startsWith("[")) value = v.slice(1, -1).split(",").map((x) => x.trim()).filter(Boolean);
    else if (/^\d+$/.test(v)) value = Number(v);
    else if (v === "on" || v === "off" || v === "only") value = key === "starttls" ? v : v === "on";
    if (!(key in base)) throw new Error(`unknown config key "${m[1]}"`);
    o[key] = value;
  }
  return o as unknown as ServerConfig;
}
