// IMAP command framing before login, as nginx's ngx_mail_imap_parse_command reads it:
// tag, command word, up to three arguments (atoms, quoted strings, literals {n} / {n+}).
// Pure and restartable: the caller keeps the unconsumed bytes and calls again with more.

import { CR, fromBytes, isAlpha, LF } from "../../util/bytes.ts";

export type ImapCommandName = "NOOP" | "LOGIN" | "LOGOUT" | "STARTTLS" | "CAPABILITY" | "AUTHENTICATE" | "ID";

const COMMANDS: ReadonlySet<string> = new Set(["NOOP", "LOGIN", "LOGOUT", "STARTTLS", "CAPABILITY", "AUTHENTICATE", "ID"]);
const MAX_TAG_BYTES = 32; // nginx's limit on a tag
const MAX_ARGS = 3; // nginx keeps at most three arguments (AUTHENTICATE mech ir, LOGIN user pass)

export type ImapFrame =
  /** Not a whole command yet. `syncLiterals` counts synchronizing literals whose {n} line is complete. */
  | { readonly kind: "incomplete"; readonly syncLiterals: number; readonly literalTooLong: boolean; readonly tag: string }
  | { readonly kind: "command"; readonly tag: string; readonly name: ImapCommandName; readonly args: readonly string[]; readonly end: number; readonly syncLiterals: number }
  /** A bad line, consumed up to its LF. `quit` when it ended in a non-synchronizing literal whose data would follow. */
  | { readonly kind: "invalid"; readonly tag: string; readonly end: number; readonly quit: boolean };

function isTagChar(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f;
}



/** Skip to the end of a bad line; the tag (with its space) is kept for the reply. */
function invalid(b: Uint8Array, at: number, tag: string, syncLiterals: number): ImapFrame {
  const lf = b.indexOf(LF, at);
  if (lf < 0) return { kind: "incomplete", syncLiterals, literalTooLong: false, tag };
  let q = lf - 1;
  if (q >= 0 && b[q] === CR) q--;
  // a line ending in "{n+}" announces literal data that must never be read as commands
  const quit = q >= 1 && b[q] === 0x7d && b[q - 1] === 0x2b;
  return { kind: "invalid", tag, end: lf + 1, quit };
}

/**
 * Parses one command from the start of `b`. `maxBytes` is imap_client_buffer: a literal that
 * cannot fit in it is reported at once (`literalTooLong`), before the client is invited to send it.
 */
export function parseImapCommand(b: Uint8Array, maxBytes: number): ImapFrame {
  let p = 0;
  // tag
  while (p < b.length && b[p] !== 0x20) {
    if (b[p] === CR || b[p] === LF || !isTagChar(b[p]) || p >= MAX_TAG_BYTES) return invalid(b, p, "", 0);
    p++;
  }
  if (p >= b.length) return { kind: "incomplete", syncLiterals: 0, literalTooLong: false, tag: "" };
  if (p === 0) return invalid(b, p, "", 0);
  const tag = fromBytes(b, 0, p + 1);
  p++;
  while (p < b.length && b[p] === 0x20) p++;
  if (p >= b.length) return { kind: "incomplete", syncLiterals: 0, literalTooLong: false, tag };
  // command word
  const cmdStart = p;
  while (p < b.length && b[p] !== 0x20 && b[p] !== CR && b[p] !== LF) {
    if (!isAlpha(b[p])) return invalid(b, p, tag, 0);
    p++;
  }
  if (p >= b.length) return { kind: "incomplete", syncLiterals: 0, literalTooLong: false, tag };
  const name = fromBytes(b, cmdStart, p).toUpperCase();
  if (!COMMANDS.has(name)) return invalid(b, p, tag, 0);
  if (name === "ID") return parseIdArguments(b, p, tag, maxBytes);

  const args: string[] = [];
  let syncLiterals = 0;
  for (;;) {
    // p is at a separator: ' ', CR or LF
    if (b[p] === LF) return { kind: "command", tag, name: name as ImapCommandName, args, end: p + 1, syncLiterals };
    if (b[p] === CR) {
      if (p + 1 >= b.length) return { kind: "incomplete", syncLiterals, literalTooLong: false, tag };
      if (b[p + 1] !== LF) return invalid(b, p + 1, tag, syncLiterals);
      return { kind: "command", tag, name: name as ImapCommandName, args, end: p + 2, syncLiterals };
    }
    while (p < b.length && b[p] === 0x20) p++;
    if (p >= b.length) return { kind: "incomplete", syncLiterals, literalTooLong: false, tag };
    if (b[p] === CR || b[p] === LF) continue;
    if (args.length >= MAX_ARGS) return invalid(b, p, tag, syncLiterals);
    const c = b[p];
    if (c === 0x22) {
      // quoted string: backslash escapes the next byte; CR or LF inside is an error
      let s = "";
      p++;
      for (;;) {
        if (p >= b.length) return { kind: "incomplete", syncLiterals, literalTooLong: false, tag };
        const ch = b[p];
        if (ch === CR || ch === LF) return invalid(b, p, tag, syncLiterals);
        if (ch === 0x22) break;
        if (ch === 0x5c) {
          p++;
          if (p >= b.length) return { kind: "incomplete", syncLiterals, literalTooLong: false, tag };
          if (b[p] === CR || b[p] === LF) return invalid(b, p, tag, syncLiterals);
        }
        s += String.fromCharCode(b[p]);
        p++;
      }
      args.push(s);
      p++;
      if (p >= b.length) return { kind: "incomplete", syncLiterals, literalTooLong: false, tag };
      if (b[p] !== 0x20 && b[p] !== CR && b[p] !== LF) return invalid(b, p, tag, syncLiterals);
    } else if (c === 0x7b) {
      // literal {n} or {n+}, then CRLF (a bare LF is accepted, as nginx does), then n bytes
      p++;
      let n = 0;
      let digits = 0;
      while (p < b.length && b[p] >= 0x30 && b[p] <= 0x39) {
        n = n * 10 + (b[p] - 0x30);
        digits++;
        if (n > maxBytes * 2 + 1e6) return invalid(b, p, tag, syncLiterals);
        p++;
      }
      if (p >= b.length) return { kind: "incomplete", syncLiterals, literalTooLong: false, tag };
      if (digits === 0) return invalid(b, p, tag, syncLiterals);
      let sync = true;
      if (b[p] === 0x2b) {
        sync = false;
        p++;
        if (p >= b.length) return { kind: "incomplete", syncLiterals, literalTooLong: false, tag };
      }
      if (b[p] !== 0x7d) return invalid(b, p, tag, syncLiterals);
      p++;
      if (p >= b.length) return { kind: "incomplete", syncLiterals, literalTooLong: false, tag };
      if (b[p] === CR) {
        p++;
        if (p >= b.length) return { kind: "incomplete", syncLiterals, literalTooLong: false, tag };
      }
      if (b[p] !== LF) return invalid(b, p, tag, syncLiterals);
      p++;
      if (p + n > maxBytes) return { kind: "incomplete", syncLiterals, literalTooLong: true, tag };
      if (sync) syncLiterals++;
      if (p + n >= b.length) return { kind: "incomplete", syncLiterals, literalTooLong: false, tag };
      args.push(fromBytes(b, p, p + n));
      p += n;
      if (b[p] !== 0x20 && b[p] !== CR && b[p] !== LF) return invalid(b, p, tag, syncLiterals);
    } else {
      // atom: up to a space, CR or LF
      const start = p;
      while (p < b.length && b[p] !== 0x20 && b[p] !== CR && b[p] !== LF) p++;
      if (p >= b.length) return { kind: "incomplete", syncLiterals, literalTooLong: false, tag };
      args.push(fromBytes(b, start, p));
    }
  }
}

/**
 * ID (RFC 2971) takes a parenthesised list or NIL, which nginx cannot parse (it answers BAD,
 * breaking clients that send ID before login). We read it only far enough to find its end:
 * quoted strings and literals are skipped, the content is not kept.
 */
function parseIdArguments(b: Uint8Array, p: number, tag: string, maxBytes: number): ImapFrame {
  let syncLiterals = 0;
  while (p < b.length) {
    const c = b[p];
    if (c === LF) return { kind: "command", tag, name: "ID", args: [], end: p + 1, syncLiterals };
    if (c === CR) {
      if (p + 1 >= b.length) break;
      if (b[p + 1] !== LF) return invalid(b, p + 1, tag, syncLiterals);
      return { kind: "command", tag, name: "ID", args: [], end: p + 2, syncLiterals };
    }
    if (c === 0x22) {
      p++;
      while (p < b.length && b[p] !== 0x22) {
        if (b[p] === CR || b[p] === LF) return invalid(b, p, tag, syncLiterals);
        if (b[p] === 0x5c) p++;
        p++;
      }
      if (p >= b.length) break;
      p++;
      continue;
    }
    if (c === 0x7b) {
      const close = b.indexOf(0x7d, p);
      if (close < 0) break;
      const spec = fromBytes(b, p + 1, close);
      const m = /^(\d+)(\+?)$/.exec(spec);
      if (!m) return invalid(b, p, tag, syncLiterals);
      let q = close + 1;
      if (q < b.length && b[q] === CR) q++;
      if (q >= b.length) break;
      if (b[q] !== LF) return invalid(b, q, tag, syncLiterals);
      q++;
      const n = Number(m[1]);
      if (q + n > maxBytes) return { kind: "incomplete", syncLiterals, literalTooLong: true, tag };
      if (m[2] === "") syncLiterals++;
      if (q + n >= b.length) break;
      p = q + n;
      continue;
    }
    p++;
  }
  return { kind: "incomplete", syncLiterals, literalTooLong: false, tag };
}

/** An AUTHENTICATE continuation line: its first word, and where the line ends; null until LF. */
export function parseImapContinuation(b: Uint8Array): { readonly arg: string; readonly end: number } | null {
  const lf = b.indexOf(LF);
  if (lf < 0) return null;
  let stop = lf;
  if (stop > 0 && b[stop - 1] === CR) stop--;
  let sp = b.indexOf(0x20);
  if (sp < 0 || sp > stop) sp = stop;
  return { arg: fromBytes(b, 0, sp), end: lf + 1 };
}
