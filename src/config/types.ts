// The resolved, validated, frozen configuration. YAML keys are snake_case (nginx's
// directive names); fields here are the same names in camelCase. Sizes are bytes,
// times are milliseconds.

export type Protocol = "imap" | "pop3" | "smtp";
export type LogLevel = "debug" | "info" | "notice" | "warn" | "error" | "crit" | "alert" | "emerg";

export interface LogTarget {
  readonly dest: string; // "stderr", an absolute file path, or "syslog:server=ADDR"
  readonly level: LogLevel;
  readonly format: "text" | "json";
}

export interface ListenSpec {
  readonly host: string; // "0.0.0.0" for "*" or a bare port; "::" etc.
  readonly port: number;
  readonly ssl: boolean;
  readonly proxyProtocol: boolean;
  readonly backlog?: number;
  readonly rcvbuf?: number;
  readonly sndbuf?: number;
  readonly bind: boolean;
  readonly ipv6only?: boolean;
  readonly soKeepalive: boolean;
  readonly source: string; // the item as written, for messages
}

export interface ResolverSpec {
  readonly addresses: readonly { host: string; port: number }[]; // empty = off
  readonly validMs?: number;
  readonly ipv4: boolean;
  readonly ipv6: boolean;
}

export interface CertPair {
  readonly certificate: string; // absolute path
  readonly certificateKey: string; // absolute path
  readonly certPem: string; // file contents, read at load time
  readonly keyPem: string;
}

export interface ServerConfig {
  readonly listen: readonly ListenSpec[];
  readonly protocol: Protocol;
  readonly serverName: string;
  readonly timeout: number;
  readonly maxErrors: number;
  readonly resolver: ResolverSpec;
  readonly resolverTimeout: number;
  readonly errorLog: readonly LogTarget[];

  readonly authHttp: string; // "builtin" or a URL
  readonly authHttpHeader: Readonly<Record<string, string>>;
  readonly authHttpPassClientCert: boolean;
  readonly authHttpTimeout: number;

  readonly proxyBuffer: number;
  readonly proxyPassErrorMessage: boolean;
  readonly proxyProtocol: "off" | "v1" | "v2";
  readonly proxySmtpAuth: boolean;
  readonly proxyTimeout: number;
  readonly xclient: boolean;

  readonly proxySsl: "off" | "on" | "starttls";
  readonly proxySslVerify: boolean;
  readonly proxySslTrustedCertificate?: string; // PEM contents
  readonly proxySslName?: string;
  readonly proxySslCertificate?: string; // PEM contents
  readonly proxySslCertificateKey?: string; // PEM contents

  readonly setRealIpFrom: readonly string[]; // CIDRs as written ("10.0.0.0/8", "127.0.0.1", "unix:")

  readonly sslCertificates: readonly CertPair[];
  readonly sslPasswordFile?: readonly string[]; // passphrases, one per line
  readonly sslProtocols: readonly string[]; // nginx names: TLSv1 TLSv1.1 TLSv1.2 TLSv1.3
  readonly sslCiphers: string;
  readonly sslEcdhCurve: string;
  readonly sslPreferServerCiphers: boolean;
  readonly sslClientCertificate?: string; // PEM contents
  readonly sslTrustedCertificate?: string; // PEM contents
  readonly sslVerifyClient: "off" | "on" | "optional" | "optional_no_ca";
  readonly sslVerifyDepth: number;
  readonly sslCrl?: string; // PEM contents
  readonly sslDhparam?: string; // PEM contents
  readonly sslSessionCache: readonly string[];
  readonly sslSessionTimeout: number;
  readonly sslSessionTickets: boolean;
  readonly sslSessionTicketKey: readonly Uint8Array[];
  readonly starttls: "off" | "on" | "only";

  readonly imapAuth: readonly string[]; // lower-case mechanism names
  readonly imapCapabilities: readonly string[];
  readonly imapClientBuffer: number;

  readonly pop3Auth: readonly string[];
  readonly pop3Capabilities: readonly string[];
  readonly pop3ClientBuffer: number;

  readonly smtpAuth: readonly string[];
  readonly smtpCapabilities: readonly string[];
  readonly smtpClientBuffer: number;
  readonly smtpGreetingDelay: number;
}

export interface AuthUser {
  readonly user: string;
  /** "scrypt$N$r$p$saltB64$hashB64" or absent when a plain password is given. */
  readonly passwordHash?: string;
  readonly password?: string; // plain, for tests; warned about
  /** Where this user's sessions go, by protocol; `backend: "host:port"` fills all three. A protocol
   *  without an entry cannot log in. */
  readonly backends: Readonly<Partial<Record<Protocol, { readonly host: string; readonly port: number }>>>;
  readonly backendUser?: string; // Auth-User override
  readonly backendPassword?: string; // Auth-Pass override
}

export interface AuthConfig {
  readonly users: readonly AuthUser[];
  readonly failureDelay: number; // ms; sent as Auth-Wait on a failed login
  readonly maxAttempts: number; // after this many failures no Auth-Wait: the client is closed
  /** ms a user's password that passed scrypt is remembered (as a keyed MAC) so that the same
   *  password again skips scrypt; 0 = no cache. Failures are never cached. */
  readonly cacheTtl: number;
}

export interface HttpConfig {
  readonly listen?: { host: string; port: number }; // undefined = off
}

export interface Config {
  readonly file: string; // absolute path of the config file
  readonly serverName: string;
  readonly errorLog: readonly LogTarget[];
  readonly workerProcesses: number; // "auto" resolved to the core count
  readonly workerShutdownTimeout?: number; // undefined: wait for all sessions
  readonly http: HttpConfig;
  readonly auth: AuthConfig;
  readonly servers: readonly ServerConfig[];
  readonly warnings: readonly string[]; // e.g. plain passwords, "FILE:LINE:COL: auth.users[0].password: ..."
}

export interface ConfigError {
  readonly file: string;
  readonly line: number;
  readonly col: number;
  readonly directive: string; // path such as "mail.servers[0].imap_auth"
  readonly message: string;
}

export type ConfigResult = { ok: true; config: Config } | { ok: false; errors: readonly ConfigError[] };

/** What the loader needs from the outside world; the core does no I/O itself. */
export interface ConfigEnv {
  readonly hostname: string;
  readonly cpuCount: number;
  /** Reads a file referenced by the config (paths already made absolute); throws on failure. */
  readFile(path: string): string;
  /** Same for binary files (ssl_session_ticket_key); throws on failure. */
  readFileBytes(path: string): Uint8Array;
}
