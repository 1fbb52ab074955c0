// The boundary between the runtime-free core and one runtime. Owned by the core:
// adapters in platform/ implement it with each runtime's native APIs.

export type Runtime = "deno" | "bun" | "node";

export interface Address {
  readonly host: string;
  readonly port: number;
}

export interface ListenAt {
  readonly host: string; // "0.0.0.0", "::", "127.0.0.1", ...
  readonly port: number; // 0 picks a free port
  readonly backlog?: number;
  readonly reusePort?: boolean;
  readonly ipv6Only?: boolean;
  readonly keepAlive?: boolean;
}

/** PEM material for a TLS server (several pairs allowed, as nginx allows). */
export interface TlsServer {
  readonly side: "server";
  readonly certs: readonly { cert: string; key: string; passphrase?: string }[];
  readonly ca?: string; // client-certificate CAs
  readonly requestCert?: boolean;
  readonly rejectUnauthorized?: boolean;
  readonly minVersion?: string;
  readonly maxVersion?: string;
  readonly ciphers?: string;
  readonly ecdhCurve?: string;
  readonly honorCipherOrder?: boolean;
  readonly crl?: string; // PEM (ssl_crl)
  readonly dhparam?: string; // PEM (ssl_dhparam)
  readonly verifyDepth?: number; // ssl_verify_depth
  readonly sessionTimeoutSec?: number; // ssl_session_timeout
  readonly sessionTickets?: boolean; // ssl_session_tickets
  readonly ticketKeys?: Uint8Array; // ssl_session_ticket_key: 48 bytes (the first key)
  readonly sessionCache?: boolean; // false for "off"/"none"
}

/** TLS towards a backend. */
export interface TlsClient {
  readonly side: "client";
  readonly serverName?: string;
  readonly ca?: string; // PEM; absent: the runtime's default roots
  readonly verify: boolean;
  readonly cert?: string;
  readonly key?: string;
}

export interface Conn {
  readonly remote: Address;
  readonly local: Address;
  /** Next chunk from the peer; null once the peer sent FIN (or the connection is gone). */
  read(): Promise<Uint8Array | null>;
  /** Resolves when the data is handed to the kernel or queued below a bounded mark. Rejects once the connection is broken. */
  write(data: Uint8Array): Promise<void>;
  /** Half-close: send FIN after queued data. */
  closeWrite(): Promise<void>;
  /** Close both directions now; idempotent. */
  close(): void;
  /**
   * Upgrade in place (STARTTLS, or TLS after a PROXY protocol header). `initial` are bytes already
   * read from this connection that belong to the TLS stream (a ClientHello read together with the
   * PROXY header); other plaintext read before is the caller's business (it is discarded).
   */
  startTls(tls: TlsServer | TlsClient, initial?: Uint8Array): Promise<Conn>;
  /** The peer certificate after a TLS handshake, if any. */
  readonly tlsInfo?: TlsInfo;
}

export interface TlsInfo {
  readonly protocol?: string;
  readonly cipher?: string;
  readonly verified: boolean;
  readonly verifyError?: string;
  readonly subject?: string;
  readonly issuer?: string;
  readonly serial?: string;
  readonly fingerprint?: string; // SHA-1, hex, as nginx's $ssl_client_fingerprint
  readonly certPem?: string;
}

export interface Listener {
  readonly address: Address;
  close(): Promise<void>;
}

export interface RelayOpts {
  /** Largest chunk read at once per direction (proxy_buffer). */
  readonly bufferSize: number;
  /** Idle time in ms after which the relay ends (proxy_timeout); 0 = none. */
  readonly idleTimeoutMs: number;
}

export interface RelayStats {
  readonly clientToUpstream: number;
  readonly upstreamToClient: number;
  readonly end: "client-closed" | "upstream-closed" | "timeout" | "error" | "aborted";
  readonly error?: string;
}

export interface RelayHandle {
  readonly done: Promise<RelayStats>;
  /** Ends the relay early (shutdown); both connections are closed. */
  abort(): void;
}

export interface Platform {
  readonly runtime: Runtime;
  listen(at: ListenAt, onConn: (c: Conn) => void, tls?: TlsServer): Promise<Listener>;
  connect(to: Address, timeoutMs: number, tls?: TlsClient): Promise<Conn>;
  /** Pipe bytes both ways until one side closes (then half-close the other and drain) or idle timeout. */
  relay(client: Conn, upstream: Conn, opts: RelayOpts): RelayHandle;
  serveHttp(at: ListenAt, fetch: (r: Request) => Promise<Response> | Response): Promise<Listener>;
  /** HTTP client for auth_http; keep-alive connections reused. */
  fetch(url: string, init: RequestInit): Promise<Response>;
  readTextFile(path: string): Promise<string>;
  onSignal(name: "HUP" | "QUIT" | "TERM" | "INT", fn: () => void): void;
  /** PTR names for an address, empty when none; rejects on resolver failure. */
  reverseDns(ip: string, servers: readonly Address[]): Promise<string[]>;
  /** Forward lookup (A/AAAA) used to confirm PTR names. */
  resolveDns(name: string, servers: readonly Address[]): Promise<string[]>;
  scrypt(password: Uint8Array, salt: Uint8Array, keyLen: number, cost: { N: number; r: number; p: number }): Promise<Uint8Array>;
  randomBytes(n: number): Uint8Array;
  hostname(): string;
  pid(): number;
  /** Write one line to stderr or append to a file. */
  writeLog(dest: string, line: string): void;
  exit(code: number): never;
}
