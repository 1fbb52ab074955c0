// POP3 command framing before login, as nginx's ngx_mail_pop3_parse_command reads it: a
// four-letter command word, then up to three space-separated arguments (for USER and PASS the
// rest of the line is one argument, spaces included). SASL continuation lines are read the same
// way, starting directly in an argument. Pure and restartable: the caller keeps the unconsumed
// bytes and calls again with more.

import { CR, fromBytes, isAlpha, LF } from "../../util/bytes.ts";

export type Pop3CommandName = "USER" | "PASS" | "APOP" | "QUIT" | "CAPA" | "AUTH" | "NOOP" | "STLS";

const COMMANDS: ReadonlySet<string> = new Set(["USER", "PASS", "APOP", "QUIT", "CAPA", "AUTH", "NOOP", "STLS"]);
const MAX_ARGS = 3; // nginx starts a new argument only while it holds at most two
const SP = 0x20;

export type Pop3Frame =
  /** No LF yet: more bytes are needed. */
  | { readonly kind: "incomplete" }
  | { readonly kind: "command"; readonly name: Pop3CommandName; readonly args: readonly string[]; readonly end: number }
  /** A SASL continuation line: its words (the first may be empty). */
  | { readonly kind: "continuation"; readonly args: readonly string[]; readonly end: number }
  /** A bad line, consumed up to its LF. */
  | { readonly kind: "invalid"; readonly end: number };

const INCOMPLETE: Pop3Frame = { kind: "incomplete" };



/** Skip a bad line up to and including its LF. */
function invalid(b: Uint8Array, at: number): Pop3Frame {
  const lf = b.indexOf(LF, at);
  return lf < 0 ? INCOMPLETE : { kind: "invalid", end: lf + 1 };
}

type ArgState = "spaces" | "argument" | "almost-done";

/**
 * Reads arguments from `p` to the end of the line. `keepSpaces`: a space belongs to the argument
 * (USER, PASS). Returns the arguments and where the line ends, or a non-command frame.
 */
function readArguments(
  b: Uint8Array,
  p: number,
  state: ArgState,
  keepSpaces: boolean,
): { args: string[]; end: number } | Pop3Frame {
  const args: string[] = [];
  let argStart = p;
  for (; p < b.length; p++) {
    const ch = b[p];
    switch (state) {
      case "spaces":
        if (ch === SP) break;
        if (ch === CR) {
          state = "almost-done";
          break;
        }
        if (ch === LF) return { args, end: p + 1 };
        if (args.length >= MAX_ARGS) return invalid(b, p);
        state = "argument";
        argStart = p;
        break;
      case "argument":
        if (ch === SP && keepSpaces) break;
        if (ch === SP || ch === CR || ch === LF) {
          args.push(fromBytes(b, argStart, p));
          if (ch === LF) return { args, end: p + 1 };
          state = ch === SP ? "spaces" : "almost-done";
        }
        break;
      case "almost-done":
        if (ch === LF) return { args, end: p + 1 };
        return invalid(b, p);
    }
  }
  return INCOMPLETE;
}

/** Parses one command line from the start of `b`. */
export function parsePop3Command(b: Uint8Array): Pop3Frame {
  let p = 0;
  while (p < b.length && b[p] !== SP && b[p] !== CR && b[p] !== LF) {
    if (!isAlpha(b[p])) return invalid(b, p);
    p++;
  }
  if (p >= b.length) return INCOMPLETE;
  const name = fromBytes(b, 0, p).toUpperCase();
  if (!COMMANDS.has(name)) return invalid(b, p);
  const ch = b[p];
  if (ch === LF) return { kind: "command", name: name as Pop3CommandName, args: [], end: p + 1 };
  const r = readArguments(b, p + 1, ch === SP ? "spaces" : "almost-done", name === "USER" || name === "PASS");
  if ("kind" in r) return r;
  return { kind: "command", name: name as Pop3CommandName, args: r.args, end: r.end };
}

/** Parses one SASL continuation line (after AUTH): nginx reads it as further AUTH arguments. */
export function parsePop3Continuation(b: Uint8Array): Pop3Frame {
  const r = readArguments(b, 0, "argument", false);
  if ("kind" in r) return r;
  return { kind: "continuation", args: r.args, end: r.end };
}
