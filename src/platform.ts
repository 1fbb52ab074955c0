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
  /** With TLS: a client that has not finished the handshake by then is dropped (nginx's `timeout`); default 60 s. */
  readonly handshakeTimeoutMs?: number;
}

/** A TLS handshake on an implicit-TLS listener that failed or timed out (the socket is closed). */
export interface TlsFailure {
  readonly remote: Address;
  readonly local: Address;
  readonly error: string;
}

/** TLS protocol versions by nginx's names (ssl_protocols). */
export type TlsVersion = "TLSv1" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3";

/**
 * A TLS server as nginx's ssl_* directives describe it. An optional field left undefined means
 * nginx's default, which every runtime honours; a field that is set must be honoured or reported
 * by Platform.checkTls (start-up then fails naming the directive).
 */
export interface TlsServer {
  readonly side: "server";
  /** Certificate/key pairs (several allowed, e.g. RSA and ECDSA: the one the client can use is served). */
  readonly certs: readonly { cert: string; key: string }[];
  /** ssl_password_file: tried in turn on each encrypted key, as nginx does. */
  readonly passphrases?: readonly string[];
  readonly ca?: string; // client-certificate CAs (ssl_client_certificate + ssl_trusted_certificate)
  readonly requestCert?: boolean;
  readonly rejectUnauthorized?: boolean;
  /** ssl_protocols as a set; undefined: TLSv1.2 and TLSv1.3. */
  readonly protocols?: readonly TlsVersion[];
  /** OpenSSL cipher list (ssl_ciphers); undefined: nginx's "HIGH:!aNULL:!MD5". */
  readonly ciphers?: string;
  /** ssl_ecdh_curve other than "auto"; undefined: the stack's default groups. */
  readonly ecdhCurve?: string;
  /** ssl_prefer_server_ciphers on; undefined or false: the client's order. */
  readonly honorCipherOrder?: boolean;
  readonly crl?: string; // PEM (ssl_crl)
  readonly dhparam?: string; // PEM (ssl_dhparam)
  /** ssl_verify_depth: intermediate CAs allowed between a client certificate and a trusted CA. */
  readonly verifyDepth?: number;
  /** ssl_session_timeout other than 300 s. */
  readonly sessionTimeoutSec?: number;
  /** ssl_session_tickets off; undefined or true: tickets on. */
  readonly sessionTickets?: boolean;
  /** ssl_session_ticket_key files, 48 or 80 bytes each; the first encrypts. */
  readonly ticketKeys?: readonly Uint8Array[];
  /** ssl_session_cache builtin/shared: sessions kept server-side; undefined: none. */
  readonly sessionCacheSize?: number;
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

/** Something in a TlsServer / TlsClient a runtime cannot apply or load. */
export interface TlsProblem {
  /** The field of TlsServer / TlsClient concerned ("ecdhCurve", "certs", ...), or "keys" for a key of `certs`. */
  readonly option: string;
  /** For `certs` / `keys`: which pair. */
  readonly index?: number;
  /**
   * "unsupported": the runtime's TLS stack cannot honour it (start-up fails);
   * "unloadable": the material cannot be used, e.g. no passphrase decrypts the key (start-up fails);
   * "partial": honoured in part, as documented (logged at start-up).
   */
  readonly kind: "unsupported" | "unloadable" | "partial";
  readonly why: string;
}

/** A TLS handshake towards a backend failed because the backend's certificate did not verify. */
export class TlsVerifyError extends Error {
  /** OpenSSL-style code, e.g. "UNABLE_TO_VERIFY_LEAF_SIGNATURE", "ERR_TLS_CERT_ALTNAME_INVALID". */
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = "TlsVerifyError";
    this.code = code;
  }
}

export interface Conn {
  readonly remote: Address;
  readonly local: Address;
  /** Next chunk from the peer; null once the peer sent FIN (or the connection is gone). */
  read(): Promise<Uint8Array | null>;
  /** Resolves when the data is handed to the kernel or queued below a bounded mark. Rejects once the connection is broken. */
  write(data: Uint8Array): Promise<void>;
  /**
   * Optional fast path of write: undefined when the socket took all of `data` at once (nothing to
   * wait for, no promise made), else what write would have returned.
   */
  writeNow?(data: Uint8Array): Promise<void> | undefined;
  /** Half-close: send FIN after queued data. */
  closeWrite(): Promise<void>;
  /** Close both directions now; idempotent. */
  close(): void;
  /**
   * Upgrade in place: STARTTLS (no `initial`: bytes received but not read are plaintext sent
   * after the command, and are discarded), or TLS from the start of the stream (`initial` given,
   * possibly empty: implicit TLS, or TLS after a PROXY protocol header). `initial` are bytes already
   * read that belong to the TLS stream (a ClientHello read together with the PROXY header); bytes
   * received but not read yet follow them. A TlsClient failure on the peer's certificate rejects
   * with TlsVerifyError.
   */
  startTls(tls: TlsServer | TlsClient, initial?: Uint8Array): Promise<Conn>;
  /** The peer certificate after a TLS handshake, if any. */
  readonly tlsInfo?: TlsInfo;
}

export interface TlsInfo {
  readonly protocol?: string;
  readonly cipher?: string;
  readonly verified: boolean;
  /** OpenSSL's name for the verification error, e.g. "CERT_HAS_EXPIRED". */
  readonly verifyError?: string;
  /** OpenSSL's number and text for it, as nginx logs and sends them: "10:certificate has expired". */
  readonly verifyReason?: string;
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
  /** Told once when the relay has ended, before `done` resolves (no promise needed per session). */
  readonly listener?: RelayListener;
}

export interface RelayListener {
  relayEnded(stats: RelayStats): void;
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
  /** What in `tls` this runtime cannot honour or load; empty when all of it works. Called before listening. */
  checkTls(tls: TlsServer | TlsClient): TlsProblem[];
  /** With `tls`, connections are handed over after the handshake; failed ones go to `onTlsFailure`. */
  listen(at: ListenAt, onConn: (c: Conn) => void, tls?: TlsServer, onTlsFailure?: (f: TlsFailure) => void): Promise<Listener>;
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
