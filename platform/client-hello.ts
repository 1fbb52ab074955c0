// The signature algorithms a TLS ClientHello offers, read from the first bytes of a TLS
// stream, and the certificate pair they call for. For a TLS stack that serves one pair
// only (rustls in Deno), the adapter peeks at the ClientHello, picks the pair as OpenSSL
// does (the first of the client's signature algorithms that a configured key can make),
// then starts TLS with that pair and the bytes it read. Bytes and numbers only.
//
// Specs relied on:
//   https://www.rfc-editor.org/rfc/rfc8446#section-5.1    (record layer)
//   https://www.rfc-editor.org/rfc/rfc8446#section-4.1.2  (ClientHello)
//   https://www.rfc-editor.org/rfc/rfc8446#section-4.2.3  (signature_algorithms)
//   https://www.rfc-editor.org/rfc/rfc5246#section-7.4.1.4.1 (TLS 1.2 default: RSA)

const RECORD_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXT_SIGNATURE_ALGORITHMS = 13;
/** A ClientHello is a few KB at most (post-quantum key shares included); past this, stop looking. */
export const MAX_CLIENT_HELLO_BYTES = 64 * 1024;

export type ClientHelloScan =
  | { readonly kind: "incomplete" }
  | { readonly kind: "invalid" }
  | { readonly kind: "done"; readonly sigalgs?: readonly number[] };

/** Reads the handshake records in `buf` until the ClientHello message is whole. */
export function scanClientHello(buf: Uint8Array): ClientHelloScan {
  const body: number[] = [];
  let need = -1; // handshake message length once known
  for (let at = 0; ;) {
    if (buf.length < at + 5) return buf.length > MAX_CLIENT_HELLO_BYTES ? { kind: "invalid" } : { kind: "incomplete" };
    if (buf[at] !== RECORD_HANDSHAKE || buf[at + 1] !== 3) return { kind: "invalid" };
    const len = (buf[at + 3] << 8) | buf[at + 4];
    if (len === 0) return { kind: "invalid" };
    if (buf.length < at + 5 + len) return { kind: "incomplete" };
    for (const b of buf.subarray(at + 5, at + 5 + len)) body.push(b);
    at += 5 + len;
    if (need < 0 && body.length >= 4) {
      if (body[0] !== HANDSHAKE_CLIENT_HELLO) return { kind: "invalid" };
      need = 4 + ((body[1] << 16) | (body[2] << 8) | body[3]);
      if (need > MAX_CLIENT_HELLO_BYTES) return { kind: "invalid" };
    }
    if (need >= 0 && body.length >= need) return parseHello(Uint8Array.from(body.slice(4, need)));
  }
}

function parseHello(h: Uint8Array): ClientHelloScan {
  let at = 2 + 32; // legacy_version, random
  const skip = (lenBytes: number): boolean => {
    if (at + lenBytes > h.length) return false;
    let n = 0;
    for (let i = 0; i < lenBytes; i++) n = (n << 8) | h[at + i];
    at += lenBytes + n;
    return at <= h.length;
  };
  if (!skip(1) || !skip(2) || !skip(1)) return { kind: "invalid" }; // session id, cipher suites, compression
  if (at === h.length) return { kind: "done" }; // no extensions
  if (at + 2 > h.length) return { kind: "invalid" };
  const end = at + 2 + ((h[at] << 8) | h[at + 1]);
  at += 2;
  if (end > h.length) return { kind: "invalid" };
  while (at + 4 <= end) {
    const type = (h[at] << 8) | h[at + 1];
    const len = (h[at + 2] << 8) | h[at + 3];
    const data = h.subarray(at + 4, at + 4 + len);
    at += 4 + len;
    if (at > end) return { kind: "invalid" };
    if (type !== EXT_SIGNATURE_ALGORITHMS || data.length < 2) continue;
    const list = data.subarray(2, 2 + ((data[0] << 8) | data[1]));
    const sigalgs: number[] = [];
    for (let i = 0; i + 1 < list.length; i += 2) sigalgs.push((list[i] << 8) | list[i + 1]);
    return { kind: "done", sigalgs };
  }
  return { kind: "done" };
}

/** The key type a signature scheme needs (node:crypto's asymmetricKeyType names). */
function keyTypeOf(scheme: number): string | undefined {
  const hash = scheme >> 8;
  const sig = scheme & 0xff;
  if (scheme >= 0x0804 && scheme <= 0x0806) return "rsa"; // rsa_pss_rsae_*
  if (scheme >= 0x0809 && scheme <= 0x080b) return "rsa-pss"; // rsa_pss_pss_*
  if (scheme === 0x0807) return "ed25519";
  if (scheme === 0x0808) return "ed448";
  if (hash >= 1 && hash <= 6 && sig === 1) return "rsa"; // rsa_pkcs1_*
  if (hash >= 1 && hash <= 6 && sig === 3) return "ec"; // ecdsa_*
  return undefined;
}

/**
 * Which of the pairs (by key type, in config order) to serve: the first of the client's
 * schemes that one of them can sign with; without the extension (TLS 1.2 and older), RSA.
 */
export function pickPair(keyTypes: readonly string[], sigalgs: readonly number[] | undefined): number {
  const schemes = sigalgs ?? [0x0401, 0x0201];
  for (const s of schemes) {
    const want = keyTypeOf(s);
    const i = want === undefined ? -1 : keyTypes.indexOf(want);
    if (i >= 0) return i;
  }
  return 0;
}
