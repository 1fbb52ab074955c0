// Reading backend replies line by line during the upstream login, bounded by proxy_buffer.

import { concat, EMPTY, fromBytes, LF } from "../util/bytes.ts";

export type LineRead =
  | { readonly kind: "line"; readonly line: string; readonly raw: Uint8Array; readonly rest: Uint8Array } // line without CRLF
  | { readonly kind: "more"; readonly buf: Uint8Array }
  | { readonly kind: "too-long"; readonly head: string };

/** Takes one LF-terminated line off the front; `limit` bounds an unfinished line. */
export function takeLine(buf: Uint8Array, limit: number): LineRead {
  const lf = buf.indexOf(LF);
  if (lf < 0) {
    if (buf.length >= limit) return { kind: "too-long", head: fromBytes(buf, 0, 128) };
    return { kind: "more", buf };
  }
  if (lf + 1 > limit) return { kind: "too-long", head: fromBytes(buf, 0, 128) };
  const end = lf > 0 && buf[lf - 1] === 0x0d ? lf - 1 : lf;
  if (lf + 1 === buf.length) return { kind: "line", line: fromBytes(buf).slice(0, end), raw: buf, rest: EMPTY }; // one whole line: the usual reply
  return { kind: "line", line: fromBytes(buf, 0, end), raw: buf.subarray(0, lf + 1), rest: buf.subarray(lf + 1) };
}

export function appendBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  return concat(a, b);
}
