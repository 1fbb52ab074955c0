// node:tls helpers shared by the adapters: TLS options from the core's TlsServer /
// TlsClient, and a TlsInfo from a peer certificate. node:tls and node:crypto work on
// Node, Deno and Bun alike, so this file is runtime-neutral.
//
// Docs relied on:
//   https://nodejs.org/api/tls.html#tlscreatesecurecontextoptions
//   https://nodejs.org/api/tls.html#tlsconnectoptions-callback
//   https://nodejs.org/api/tls.html#tlssocketgetpeercertificatedetailed
//   https://nodejs.org/api/crypto.html#class-x509certificate

import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import * as tls from "node:tls";
import type { TlsClient, TlsInfo, TlsServer } from "../src/platform.ts";

// ---------------------------------------------------------------------------
// Server side

/** node:tls options for a server from the core's TlsServer (several cert/key pairs allowed). */
export function serverTlsOptions(t: TlsServer): tls.TlsOptions {
  if (t.certs.length === 0) throw new Error("Cannot start TLS server: no certificate configured");
  return {
    cert: t.certs.map((c) => c.cert),
    key: t.certs.map((c) => ({ pem: c.key, passphrase: c.passphrase })),
    ca: t.ca,
    requestCert: t.requestCert ?? false,
    // Only meaningful with requestCert: a missing or bad client certificate fails the handshake.
    rejectUnauthorized: t.requestCert ? (t.rejectUnauthorized ?? true) : false,
    minVersion: t.minVersion as tls.SecureVersion | undefined,
    maxVersion: t.maxVersion as tls.SecureVersion | undefined,
    ciphers: t.ciphers,
    ecdhCurve: t.ecdhCurve,
    honorCipherOrder: t.honorCipherOrder,
  };
}

const SERVER_CONTEXTS = new WeakMap<TlsServer, tls.SecureContext>(); // config objects are reused: parse PEM once

/** A cached SecureContext for a TlsServer (keyed by object identity). */
export function serverSecureContext(t: TlsServer): tls.SecureContext {
  let ctx = SERVER_CONTEXTS.get(t);
  if (ctx === undefined) {
    ctx = tls.createSecureContext(serverTlsOptions(t));
    SERVER_CONTEXTS.set(t, ctx);
  }
  return ctx;
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

/** TlsInfo from a socket whose handshake is done. */
export function tlsInfoOf(s: TlsPeer): TlsInfo {
  const protocol = s.getProtocol?.() ?? s.getTLSVersion?.() ?? undefined;
  const cipher = s.getCipher()?.name;
  const raw = (s.getPeerCertificate() as { raw?: Uint8Array } | null | undefined)?.raw;
  const verifyError = s.authorized ? undefined : describeVerifyError(s);
  return {
    protocol: protocol ?? undefined,
    cipher,
    verified: s.authorized,
    verifyError,
    ...(raw !== undefined && raw.length > 0 ? certFields(raw) : {}),
  };
}

function describeVerifyError(s: TlsPeer): string | undefined {
  const e = s.getAuthorizationError?.() ?? s.authorizationError;
  if (e === undefined || e === null) return undefined;
  if (e instanceof Error) return (e as { code?: string }).code ?? e.message;
  return String(e);
}
