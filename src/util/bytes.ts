// Byte helpers for the protocol core: ASCII/UTF-8 text, base64 as nginx decodes it, concatenation.

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: false });
const latin1 = new TextDecoder("latin1");
// deno-lint-ignore no-control-regex
const ASCII = /^[\x00-\x7f]*$/;

/** The empty byte string, shared (nothing can be written into it). */
export const EMPTY: Uint8Array = new Uint8Array(0);

export const CR = 0x0d;
export const LF = 0x0a;
export const CRLF = "\r\n";

export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Config text as the string of its UTF-8 bytes, one char per byte: what the wire gets. */
export function utf8Latin1(text: string): string {
  return fromBytes(utf8(text));
}

export function fromUtf8(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

// The Encoding standard makes the "latin1" label windows-1252: Bun and Deno decode bytes
// 0x80-0x9f as other chars (0x82 as U+201A), which toBytes would not give back, so those chars
// are mapped back to their bytes. Node decodes true latin1 and never needs it.
// deno-lint-ignore no-control-regex
const NOT_LATIN1 = /[^\x00-\xff]/;
// deno-lint-ignore no-control-regex
const NOT_LATIN1_ALL = /[^\x00-\xff]/g;
const CP1252_BYTE: ReadonlyMap<string, string> = (() => {
  const m = new Map<string, string>();
  for (let b = 0x80; b <= 0x9f; b++) {
    const c = latin1.decode(new Uint8Array([b]));
    if (c !== String.fromCharCode(b)) m.set(c, String.fromCharCode(b));
  }
  return m;
})();

/**
 * One char per byte, so that every byte survives a round trip through a string; `start` and
 * `end` (as for subarray) decode part of `bytes`.
 */
export function fromBytes(bytes: Uint8Array, start = 0, end = bytes.length): string {
  if (end > bytes.length) end = bytes.length;
  const s = latin1.decode(start === 0 && end === bytes.length ? bytes : bytes.subarray(start, end));
  return NOT_LATIN1.test(s) ? s.replace(NOT_LATIN1_ALL, (c) => CP1252_BYTE.get(c) ?? c) : s;
}

/** Inverse of fromBytes: chars above 0xff never occur in strings made by fromBytes. */
export function toBytes(text: string): Uint8Array {
  if (ASCII.test(text)) return encoder.encode(text); // native, and the usual case
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
  return out;
}

export function isAlpha(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

/** Whether `text` holds `word` at `at`, ASCII letters in either case (no string is made). */
export function caselessAt(text: string, at: number, word: string): boolean {
  if (at + word.length > text.length) return false;
  for (let i = 0; i < word.length; i++) {
    const a = text.charCodeAt(at + i);
    const b = word.charCodeAt(i);
    if (a !== b && (!isAlpha(a) || (a | 0x20) !== (b | 0x20))) return false;
  }
  return true;
}

export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  if (b.length === 0) return a;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** All of `chunks` in one array; a single chunk is returned as it is. */
export function concatAll(chunks: readonly Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

export function indexOfByte(bytes: Uint8Array, byte: number, from = 0): number {
  return bytes.indexOf(byte, from);
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_INDEX = (() => {
  const t = new Int16Array(256).fill(-1);
  for (let i = 0; i < B64.length; i++) t[B64.charCodeAt(i)] = i;
  return t;
})();

export function encodeBase64(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    out += B64[n >> 18] + B64[(n >> 12) & 63] + "==";
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + "=";
  }
  return out;
}

/**
 * Strict base64 as nginx's ngx_decode_base64: only the standard alphabet, padding optional,
 * a length of 4n+1 symbols is invalid. Returns null on bad input.
 */
export function decodeBase64(text: string | Uint8Array): Uint8Array | null {
  const src = typeof text === "string" ? toBytes(text) : text;
  let len = 0;
  while (len < src.length && B64_INDEX[src[len]] >= 0) len++;
  // only '=' padding may follow, and only up to a multiple of four
  for (let i = len; i < src.length; i++) if (src[i] !== 0x3d) return null;
  if (src.length - len > 2) return null;
  if (len % 4 === 1) return null;
  const out = new Uint8Array(Math.floor((len * 3) / 4));
  let o = 0;
  let i = 0;
  for (; i + 3 < len; i += 4) {
    const n = (B64_INDEX[src[i]] << 18) | (B64_INDEX[src[i + 1]] << 12) | (B64_INDEX[src[i + 2]] << 6) | B64_INDEX[src[i + 3]];
    out[o++] = n >> 16;
    out[o++] = (n >> 8) & 255;
    out[o++] = n & 255;
  }
  if (len - i === 2) {
    const n = (B64_INDEX[src[i]] << 18) | (B64_INDEX[src[i + 1]] << 12);
    out[o++] = n >> 16;
  } else if (len - i === 3) {
    const n = (B64_INDEX[src[i]] << 18) | (B64_INDEX[src[i + 1]] << 12) | (B64_INDEX[src[i + 2]] << 6);
    out[o++] = n >> 16;
    out[o++] = (n >> 8) & 255;
  }
  return out.subarray(0, o);
}

export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

// deno-lint-ignore no-control-regex
const NEEDS_LOG_ESCAPE = /[\x00-\x1f\x7f-\uffff"\\]/;

/** Printable form of untrusted bytes for logs: control and non-ASCII bytes become \xNN, quotes and backslashes are escaped. */
export function escapeForLog(text: string): string {
  if (!NEEDS_LOG_ESCAPE.test(text)) return text; // the usual line: no copy
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c >= 0x7f || c === 0x22 || c === 0x5c) out += "\\x" + c.toString(16).padStart(2, "0");
    else out += text[i];
  }
  return out;
}
