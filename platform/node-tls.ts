// node:tls helpers shared by the adapters: TLS options from the core's TlsServer /
// TlsClient, the checks every runtime shares, a session cache, and a TlsInfo from a peer
// certificate. node:tls and node:crypto exist on Node, Deno and Bun, so this file is
// runtime-neutral; what each runtime's node:tls really honours is decided in its adapter
// (checkTls), from the facts in shared/RUNTIMES.md and the e2e tests.
//
// Docs relied on:
//   https://nodejs.org/api/tls.html#tlscreatesecurecontextoptions
//   https://nodejs.org/api/tls.html#tlsconnectoptions-callback
//   https://nodejs.org/api/tls.html#event-newsession  https://nodejs.org/api/tls.html#event-resumesession
//   https://nodejs.org/api/tls.html#tlssocketgetpeercertificatedetailed
//   https://nodejs.org/api/crypto.html#class-x509certificate
//   https://nodejs.org/api/crypto.html#cryptocreateprivatekeykey
//   https://docs.openssl.org/3.0/man1/openssl-verify/#diagnostics (error numbers and texts)

import { Buffer } from "node:buffer";
import { constants as cryptoConstants, createHmac, createPrivateKey, createPublicKey, randomBytes, X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import * as tls from "node:tls";
import type { TlsClient, TlsInfo, TlsProblem, TlsServer, TlsVersion } from "../src/platform.ts";

// ---------------------------------------------------------------------------
// Constants

/** nginx's ssl_ciphers default, which Postern keeps (TLSv1.3 suites stay the stack's default). */
export const NGINX_CIPHERS = "HIGH:!aNULL:!MD5";
const DEFAULT_SESSION_TIMEOUT_SEC = 300; // nginx's ssl_session_timeout default
const NODE_TICKET_KEY_BYTES = 48; // node:tls: 16 bytes name, 16 HMAC secret, 16 AES key (nginx's 48-byte layout)
const ALL_VERSIONS: readonly TlsVersion[] = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];
const DEFAULT_VERSIONS: readonly TlsVersion[] = ["TLSv1.2", "TLSv1.3"];
const NO_VERSION_FLAG: Record<TlsVersion, number> = {
  "TLSv1": cryptoConstants.SSL_OP_NO_TLSv1,
  "TLSv1.1": cryptoConstants.SSL_OP_NO_TLSv1_1,
  "TLSv1.2": cryptoConstants.SSL_OP_NO_TLSv1_2,
  "TLSv1.3": cryptoConstants.SSL_OP_NO_TLSv1_3,
};
const SSL_OP_NO_TICKET = 0x4000; // OpenSSL and BoringSSL
const SSL_OP_CIPHER_SERVER_PREFERENCE = 0x400000;

/** OpenSSL's X509_V_ERR_* numbers and texts by the names node:tls reports, as nginx logs and sends them. */
const X509_ERRORS: Record<string, [number, string]> = {
  UNABLE_TO_GET_ISSUER_CERT: [2, "unable to get issuer certificate"],
  UNABLE_TO_GET_CRL: [3, "unable to get certificate CRL"],
  UNABLE_TO_DECRYPT_CERT_SIGNATURE: [4, "unable to decrypt certificate's signature"],
  UNABLE_TO_DECRYPT_CRL_SIGNATURE: [5, "unable to decrypt CRL's signature"],
  UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY: [6, "unable to decode issuer public key"],
  CERT_SIGNATURE_FAILURE: [7, "certificate signature failure"],
  CRL_SIGNATURE_FAILURE: [8, "CRL signature failure"],
  CERT_NOT_YET_VALID: [9, "certificate is not yet valid"],
  CERT_HAS_EXPIRED: [10, "certificate has expired"],
  CRL_NOT_YET_VALID: [11, "CRL is not yet valid"],
  CRL_HAS_EXPIRED: [12, "CRL has expired"],
  DEPTH_ZERO_SELF_SIGNED_CERT: [18, "self-signed certificate"],
  SELF_SIGNED_CERT_IN_CHAIN: [19, "self-signed certificate in certificate chain"],
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: [20, "unable to get local issuer certificate"],
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: [21, "unable to verify the first certificate"],
  CERT_CHAIN_TOO_LONG: [22, "certificate chain too long"],
  CERT_REVOKED: [23, "certificate revoked"],
  INVALID_CA: [24, "invalid CA certificate"],
  PATH_LENGTH_EXCEEDED: [25, "path length constraint exceeded"],
  INVALID_PURPOSE: [26, "unsupported certificate purpose"],
  CERT_UNTRUSTED: [27, "certificate not trusted"],
  CERT_REJECTED: [28, "certificate rejected"],
  HOSTNAME_MISMATCH: [62, "hostname mismatch"],
  ERR_TLS_CERT_ALTNAME_INVALID: [62, "hostname mismatch"],
};

/** "10:certificate has expired" for "CERT_HAS_EXPIRED"; the code itself when unknown. */
export function x509Reason(code: string): string {
  const e = X509_ERRORS[code];
  return e ? `${e[0]}:${e[1]}` : code;
}

// ---------------------------------------------------------------------------
// Server side: prepared material

/** What is derived once per TlsServer object (config objects are reused until a reload). */
export interface PreparedServer {
  /** Keys decrypted with ssl_password_file (PKCS#8 PEM), in the order of t.certs. */
  readonly keys: readonly string[];
  /** Key types of the certificates ("rsa", "ec", "ed25519"...), in the order of t.certs. */
  readonly keyTypes: readonly string[];
  /** Keys that could not be loaded. */
  readonly problems: readonly TlsProblem[];
  /** The ticket key every context of this server shares (configured, or random for this config). */
  readonly ticketKey?: Uint8Array;
  readonly sessions?: SessionCache;
  /** SHA-256 fingerprints of the trusted client CAs (ssl_verify_depth counts up to one of them). */
  readonly trusted: ReadonlySet<string>;
  context?: tls.SecureContext;
}

const PREPARED = new WeakMap<TlsServer, PreparedServer>();

export function prepareServer(t: TlsServer): PreparedServer {
  let p = PREPARED.get(t);
  if (p !== undefined) return p;
  if (t.certs.length === 0) throw new Error("Cannot start TLS server: no certificate configured");
  const problems: TlsProblem[] = [];
  const keys = t.certs.map((c, index) => {
    const k = decryptKey(c.key, t.passphrases ?? []);
    if (!k.ok) problems.push({ option: "keys", index, kind: "unloadable", why: k.why });
    return k.ok ? k.pem : c.key;
  });
  const keyTypes = t.certs.map((c, index) => {
    let x: X509Certificate;
    try {
      x = new X509Certificate(c.cert);
    } catch (e) {
      problems.push({ option: "certs", index, kind: "unloadable", why: `cannot parse the certificate: ${messageOf(e)}` });
      return "unknown";
    }
    if (!problems.some((p) => p.index === index) && !keyMatches(x, keys[index])) {
      problems.push({ option: "keys", index, kind: "unloadable", why: "the key does not belong to the certificate (key values mismatch)" });
    }
    return x.publicKey.asymmetricKeyType ?? "unknown";
  });
  const configured = t.ticketKeys?.[0];
  const seed = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.POSTERN_TICKET_SEED;
  p = {
    keys,
    keyTypes,
    problems,
    ticketKey: t.sessionTickets === false
      ? undefined
      : configured !== undefined
      ? nodeTicketKey(configured)
      : seed
      ? derivedTicketKey(seed, t)
      : new Uint8Array(randomBytes(NODE_TICKET_KEY_BYTES)),
    sessions: t.sessionCacheSize ? new SessionCache(t.sessionCacheSize, (t.sessionTimeoutSec ?? DEFAULT_SESSION_TIMEOUT_SEC) * 1000) : undefined,
    trusted: caFingerprints(t.ca),
  };
  PREPARED.set(t, p);
  return p;
}

/**
 * Workers of one master (worker_processes) get the same secret (POSTERN_TICKET_SEED, see
 * platform/cli.ts) and so the same ticket key for the same certificates: a ticket one worker
 * issued resumes on another, as with nginx, whose master makes the keys before forking.
 */
function derivedTicketKey(seed: string, t: TlsServer): Uint8Array {
  const material = t.certs.map((c) => c.cert).join("");
  const part = (label: string) => createHmac("sha256", seed).update(label).update(material).digest();
  return new Uint8Array(Buffer.concat([part("name"), part("keys")]).subarray(0, NODE_TICKET_KEY_BYTES));
}

/**
 * node:tls takes one 48-byte ticket key laid out as nginx's 48-byte files (name, HMAC secret,
 * AES key): a 48-byte file gives tickets nginx can read too. An 80-byte file (AES-256 layout:
 * 16 name, 32 HMAC, 32 AES) is cut to the same layout: tickets are shared between Postern
 * instances with that file, not with nginx.
 */
function nodeTicketKey(k: Uint8Array): Uint8Array {
  if (k.length === NODE_TICKET_KEY_BYTES) return k;
  const out = new Uint8Array(NODE_TICKET_KEY_BYTES);
  out.set(k.subarray(0, 16), 0);
  out.set(k.subarray(16, 32), 16);
  out.set(k.subarray(48, 64), 32);
  return out;
}

/** Whether the private key is the certificate's (their public halves are the same). */
function keyMatches(x: X509Certificate, keyPem: string): boolean {
  try {
    const fromKey = createPublicKey(createPrivateKey(keyPem)).export({ type: "spki", format: "der" });
    const fromCert = x.publicKey.export({ type: "spki", format: "der" });
    return Buffer.from(fromKey).equals(Buffer.from(fromCert));
  } catch {
    return false;
  }
}

/** Each passphrase in turn, as nginx tries each line of ssl_password_file. */
function decryptKey(pem: string, passphrases: readonly string[]): { ok: true; pem: string } | { ok: false; why: string } {
  if (!/ENCRYPTED/.test(pem)) return { ok: true, pem };
  if (passphrases.length === 0) return { ok: false, why: "the key is encrypted and there is no ssl_password_file" };
  let last = "";
  for (const passphrase of passphrases) {
    try {
      const key = createPrivateKey({ key: pem, format: "pem", passphrase });
      return { ok: true, pem: String(key.export({ type: "pkcs8", format: "pem" })) };
    } catch (e) {
      last = messageOf(e);
    }
  }
  const n = passphrases.length;
  return { ok: false, why: `none of the ${n} passphrase${n === 1 ? "" : "s"} in ssl_password_file decrypts it (${last})` };
}

function caFingerprints(pem: string | undefined): Set<string> {
  const out = new Set<string>();
  for (const block of pemBlocks(pem)) {
    try {
      out.add(new X509Certificate(block).fingerprint256);
    } catch {
      // the loader checked the PEM; a block OpenSSL cannot parse cannot be an issuer either
    }
  }
  return out;
}

/** The versions as a set (undefined: nginx's TLSv1.2 TLSv1.3). */
export function versionsOf(t: TlsServer): readonly TlsVersion[] {
  return t.protocols ?? DEFAULT_VERSIONS;
}

// ---------------------------------------------------------------------------
// Server side: node:tls options

/** node:tls options for a server (several cert/key pairs allowed), with decrypted keys. */
export function serverTlsOptions(t: TlsServer): tls.TlsOptions {
  const p = prepareServer(t);
  const versions = versionsOf(t);
  const lo = ALL_VERSIONS.findIndex((v) => versions.includes(v));
  const hi = ALL_VERSIONS.findLastIndex((v) => versions.includes(v));
  let secureOptions = 0;
  for (let i = lo; i <= hi; i++) if (!versions.includes(ALL_VERSIONS[i])) secureOptions |= NO_VERSION_FLAG[ALL_VERSIONS[i]]; // a gap
  if (t.sessionTickets === false) secureOptions |= SSL_OP_NO_TICKET;
  return {
    cert: t.certs.map((c) => c.cert),
    key: [...p.keys],
    // Asking for a certificate with no CA configured (optional_no_ca) must not fall back to the
    // public roots: an empty list trusts nothing, as nginx without ssl_client_certificate.
    ca: t.ca ?? (t.requestCert ? [] : undefined),
    requestCert: t.requestCert ?? false,
    // Only meaningful with requestCert: a missing or bad client certificate fails the handshake.
    rejectUnauthorized: t.requestCert ? (t.rejectUnauthorized ?? true) : false,
    minVersion: ALL_VERSIONS[lo] as tls.SecureVersion,
    maxVersion: ALL_VERSIONS[hi] as tls.SecureVersion,
    ciphers: t.ciphers ?? NGINX_CIPHERS,
    ecdhCurve: t.ecdhCurve,
    honorCipherOrder: t.honorCipherOrder ?? false,
    crl: t.crl,
    dhparam: t.dhparam,
    sessionTimeout: t.sessionTimeoutSec ?? DEFAULT_SESSION_TIMEOUT_SEC,
    ticketKeys: p.ticketKey === undefined ? undefined : Buffer.from(p.ticketKey),
    secureOptions: secureOptions || undefined,
  };
}

/** The SSL_OP_* flags a stack without min/max options (Bun's native TLS) needs for the same TlsServer. */
export function secureOptionsFor(t: TlsServer): number | undefined {
  const versions = versionsOf(t);
  let flags = 0;
  for (const v of ALL_VERSIONS) if (!versions.includes(v)) flags |= NO_VERSION_FLAG[v];
  if (t.sessionTickets === false) flags |= SSL_OP_NO_TICKET;
  if (t.honorCipherOrder) flags |= SSL_OP_CIPHER_SERVER_PREFERENCE;
  return flags === 0 ? undefined : flags;
}

/** A cached SecureContext for a TlsServer (keyed by object identity). */
export function serverSecureContext(t: TlsServer): tls.SecureContext {
  const p = prepareServer(t);
  p.context ??= tls.createSecureContext(serverTlsOptions(t));
  return p.context;
}

/** ssl_session_cache: session IDs remembered server-side through node:tls's session events. */
export function attachSessionCache(server: tls.Server, t: TlsServer): void {
  const cache = prepareServer(t).sessions;
  if (cache === undefined) return;
  server.on("newSession", (id: Uint8Array, data: Uint8Array, done: () => void) => {
    cache.set(id, data);
    done();
  });
  server.on("resumeSession", (id: Uint8Array, done: (err: Error | null, data: Uint8Array | null) => void) => {
    done(null, cache.get(id) ?? null);
  });
}

/** Sessions by ID, oldest dropped first, each for the session timeout. */
export class SessionCache {
  readonly #max: number;
  readonly #ttlMs: number;
  readonly #map = new Map<string, { data: Uint8Array; expires: number }>();

  constructor(max: number, ttlMs: number) {
    this.#max = max;
    this.#ttlMs = ttlMs;
  }

  set(id: Uint8Array, data: Uint8Array): void {
    const key = hex(id);
    this.#map.delete(key);
    this.#map.set(key, { data: new Uint8Array(data), expires: Date.now() + this.#ttlMs });
    while (this.#map.size > this.#max) this.#map.delete(this.#map.keys().next().value as string);
  }

  get(id: Uint8Array): Uint8Array | undefined {
    const key = hex(id);
    const e = this.#map.get(key);
    if (e === undefined) return undefined;
    if (e.expires < Date.now()) {
      this.#map.delete(key);
      return undefined;
    }
    return e.data;
  }
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// ---------------------------------------------------------------------------
// Checks every runtime shares

/** Problems no runtime can avoid: material that does not load, options node:tls has no room for. */
export function commonServerProblems(t: TlsServer): TlsProblem[] {
  const out = [...prepareServer(t).problems];
  if ((t.ticketKeys?.length ?? 0) > 1) {
    out.push({
      option: "ticketKeys",
      kind: "unsupported",
      why: "node:tls takes one ticket key, so tickets made with the older keys could not be read; list one file",
    });
  }
  return out;
}

export function commonClientProblems(t: TlsClient): TlsProblem[] {
  if (t.key !== undefined && /ENCRYPTED/.test(t.key)) {
    return [{ option: "key", kind: "unloadable", why: "the key is encrypted; use an unencrypted key" }];
  }
  try {
    tls.createSecureContext({ ca: t.ca, cert: t.cert, key: t.key });
  } catch (e) {
    return [{ option: t.cert !== undefined && !/ca|x509|certificate/i.test(messageOf(e)) ? "key" : "ca", kind: "unloadable", why: messageOf(e) }];
  }
  return [];
}

/** Whether node:tls accepts the material as a whole (a key that does not match its certificate, bad DH parameters...). */
export function contextProblems(t: TlsServer): TlsProblem[] {
  if (prepareServer(t).problems.length > 0) return []; // already reported, more precisely
  try {
    serverSecureContext(t);
    return [];
  } catch (e) {
    const why = messageOf(e);
    const option = /\bdh\b|dhparam/i.test(why) ? "dhparam" : /crl/i.test(why) ? "crl" : /cipher/i.test(why) ? "ciphers" : /curve|group/i.test(why) ? "ecdhCurve" : "certs";
    return [{ option, kind: "unloadable", why }];
  }
}

// ---------------------------------------------------------------------------
// Client side

/** node:tls connect options towards a backend. `host` is the address dialled (used for identity checks). */
export function clientTlsOptions(t: TlsClient, host: string): tls.ConnectionOptions {
  const name = t.serverName ?? host;
  return {
    host,
    servername: isIP(name) === 0 ? name : undefined, // SNI carries host names only
    ca: t.ca,
    rejectUnauthorized: t.verify,
    cert: t.cert,
    key: t.key,
    checkServerIdentity: (_host, cert) => tls.checkServerIdentity(name, cert),
  };
}

// ---------------------------------------------------------------------------
// TlsInfo

/** Peer-certificate fields as nginx shows them ($ssl_client_s_dn, _serial, _fingerprint, _raw_cert). */
export function certFields(der: Uint8Array): Pick<TlsInfo, "subject" | "issuer" | "serial" | "fingerprint" | "certPem"> {
  const x = new X509Certificate(der);
  return {
    subject: rfc2253(x.subject),
    issuer: rfc2253(x.issuer),
    serial: x.serialNumber.toUpperCase(),
    fingerprint: x.fingerprint.replaceAll(":", "").toLowerCase(),
    certPem: x.toString(),
  };
}

/** X509Certificate names are one "K=V" per line, most significant first; nginx prints RFC 2253: reversed, comma-joined. */
function rfc2253(name: string): string {
  return name.split("\n").filter((s) => s !== "").reverse().join(",");
}

/** Anything shaped like a node:tls TLSSocket or a Bun TLS socket after the handshake. */
export interface TlsPeer {
  readonly authorized: boolean;
  readonly authorizationError?: unknown;
  getProtocol?(): string | null;
  getTLSVersion?(): string;
  getCipher(): { name?: string } | null | undefined;
  getPeerCertificate(detailed?: boolean): { raw?: Uint8Array } | null | undefined | object;
  getAuthorizationError?(): Error | null;
}

interface ChainLink {
  raw?: Uint8Array;
  fingerprint256?: string;
  issuerCertificate?: ChainLink;
}

/**
 * TlsInfo from a socket whose handshake is done. With the TlsServer it came through, a
 * verified client certificate is also held to ssl_verify_depth (node:tls has no option for it):
 * the number of CAs between the certificate and the first trusted one, as OpenSSL counts.
 */
export function tlsInfoOf(s: TlsPeer, t?: TlsServer, opts: { diagnose?: boolean } = {}): TlsInfo {
  const protocol = s.getProtocol?.() ?? s.getTLSVersion?.() ?? undefined;
  const cipher = s.getCipher()?.name;
  const peer = s.getPeerCertificate(true) as ChainLink | null | undefined;
  const raw = peer?.raw;
  let verified = s.authorized;
  let verifyError = verified ? undefined : describeVerifyError(s);
  if (!verified && opts.diagnose && t !== undefined && raw !== undefined && raw.length > 0) {
    verifyError = diagnoseVerifyError(peer!, t) ?? verifyError;
  }
  if (verified && t?.verifyDepth !== undefined && raw !== undefined && raw.length > 0) {
    const depth = untrustedDepth(peer!, prepareServer(t).trusted);
    if (depth > t.verifyDepth) {
      verified = false;
      verifyError = "CERT_CHAIN_TOO_LONG";
    }
  }
  return {
    protocol: protocol ?? undefined,
    cipher,
    verified,
    verifyError,
    verifyReason: verifyError === undefined ? undefined : x509Reason(verifyError),
    ...(raw !== undefined && raw.length > 0 ? certFields(raw) : {}),
  };
}

/**
 * OpenSSL's error for a client certificate a stack with coarser errors refused (Deno's node:tls
 * says UNABLE_TO_VERIFY_LEAF_SIGNATURE for an expired certificate and an unknown issuer alike,
 * and ssl_verify_client optional_no_ca forgives only the latter): walk the chain the client
 * sent towards a trusted CA, checking dates and issuers. Undefined: nothing more precise found.
 */
function diagnoseVerifyError(leaf: ChainLink, t: TlsServer): string | undefined {
  const sent: X509Certificate[] = [];
  const seenLinks = new Set<ChainLink>();
  for (let c: ChainLink | undefined = leaf; c?.raw !== undefined && !seenLinks.has(c); c = c.issuerCertificate) {
    seenLinks.add(c);
    sent.push(new X509Certificate(c.raw));
  }
  const trusted = pemBlocks(t.ca).map((p) => new X509Certificate(p));
  const isTrusted = (c: X509Certificate) => trusted.some((x) => x.fingerprint256 === c.fingerprint256);
  const issuerOf = (c: X509Certificate) =>
    [...trusted, ...sent].find((x) => x.fingerprint256 !== c.fingerprint256 && c.checkIssued(x) && signedBy(c, x));
  const now = Date.now();
  let c = sent[0];
  const walked = new Set<string>();
  for (;;) {
    if (now > Date.parse(c.validTo)) return "CERT_HAS_EXPIRED";
    if (now < Date.parse(c.validFrom)) return "CERT_NOT_YET_VALID";
    if (isTrusted(c)) return undefined;
    if (c.checkIssued(c) && signedBy(c, c)) return c === sent[0] ? "DEPTH_ZERO_SELF_SIGNED_CERT" : "SELF_SIGNED_CERT_IN_CHAIN";
    const up = issuerOf(c);
    if (up === undefined) return sent.length === 1 ? "UNABLE_TO_VERIFY_LEAF_SIGNATURE" : "UNABLE_TO_GET_ISSUER_CERT_LOCALLY";
    if (walked.has(up.fingerprint256)) return undefined;
    walked.add(up.fingerprint256);
    c = up;
  }
}

function signedBy(c: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return c.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

function pemBlocks(pem: string | undefined): string[] {
  return pem?.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/** CAs above the leaf and below the first trusted certificate (OpenSSL's verify depth counts these). */
function untrustedDepth(leaf: ChainLink, trusted: ReadonlySet<string>): number {
  let n = 0;
  const seen = new Set<ChainLink>([leaf]);
  for (let c = leaf.issuerCertificate; c !== undefined && !seen.has(c); c = c.issuerCertificate) {
    seen.add(c);
    if (c.fingerprint256 !== undefined && trusted.has(c.fingerprint256)) return n;
    n++;
  }
  return Math.max(0, n - 1); // no trusted one found: the last is the anchor
}

function describeVerifyError(s: TlsPeer): string | undefined {
  const e = s.getAuthorizationError?.() ?? s.authorizationError;
  if (e === undefined || e === null) return undefined;
  if (e instanceof Error) return (e as { code?: string }).code ?? e.message;
  return String(e);
}

/** A node:tls client-side failure as the core sees it: a certificate that did not verify is a TlsVerifyError. */
export function isVerifyFailure(err: unknown): string | undefined {
  const code = (err as { code?: unknown })?.code;
  if (typeof code === "string" && X509_ERRORS[code] !== undefined) return code;
  return undefined;
}

export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
