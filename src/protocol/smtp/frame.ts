// SMTP command framing before login, as nginx's ngx_mail_smtp_parse_command reads it: a verb of
// letters (only the ones nginx knows), then space-separated arguments, then CRLF or a bare LF.
// A CR anywhere but right before the LF makes the line invalid, so no command a client sends can
// carry a line break into anything Postern later replays to the backend.
// Pure: one call looks at the unconsumed bytes and reports one whole line, or that more is needed.

import { CR, fromBytes, isAlpha, LF } from "../../util/bytes.ts";

export type SmtpVerb =
  | "HELO" | "EHLO" | "QUIT" | "AUTH" | "NOOP" | "MAIL" | "RSET" | "RCPT" | "VRFY" | "EXPN" | "HELP" | "STARTTLS";

const VERBS: ReadonlySet<string> = new Set(["HELO", "EHLO", "QUIT", "AUTH", "NOOP", "MAIL", "RSET", "RCPT", "VRFY", "EXPN", "HELP", "STARTTLS"]);
const MAX_ARGS = 11; // nginx starts an argument only while it holds at most ten

export type SmtpFrame =
  | { readonly kind: "incomplete" } // no LF yet
  /** `text` runs from the verb to the end of the last argument, as typed (nginx's MAIL/RCPT copy). */
  | { readonly kind: "command"; readonly verb: SmtpVerb; readonly args: readonly string[]; readonly text: string; readonly end: number }
  /** An AUTH continuation line: its arguments (nginx uses the first). */
  | { readonly kind: "continuation"; readonly args: readonly string[]; readonly end: number }
  /** A bad line, consumed up to and including its LF. */
  | { readonly kind: "invalid"; readonly end: number };



/**
 * Splits the arguments of one line, `b[from..lf)`, the way nginx's sw_spaces_before_argument /
 * sw_argument states do. `inArgument`: the line starts inside an argument (AUTH continuations).
 * Returns null when the line is invalid (a CR not right before LF, too many arguments).
 */
function splitArguments(b: Uint8Array, from: number, lf: number, inArgument: boolean): { args: string[]; lastEnd: number } | null {
  const args: string[] = [];
  // the line ends at LF, or at a CR immediately before it
  const stop = lf > from && b[lf - 1] === CR ? lf - 1 : lf;
  let p = from;
  let lastEnd = from;
  let argStart = inArgument ? p : -1;
  for (; p < stop; p++) {
    const c = b[p];
    if (c === CR) return null; // a bare CR inside the line
    if (argStart >= 0) {
      if (c === 0x20) {
        args.push(fromBytes(b, argStart, p));
        lastEnd = p;
        argStart = -1;
      }
      continue;
    }
    if (c === 0x20) continue;
    if (args.length >= MAX_ARGS) return null;
    argStart = p;
  }
  if (argStart >= 0) {
    args.push(fromBytes(b, argStart, p));
    lastEnd = p;
  }
  return { args, lastEnd };
}

/** Reads one command line from the start of `b`. */
export function parseSmtpCommand(b: Uint8Array): SmtpFrame {
  const lf = b.indexOf(LF);
  if (lf < 0) return { kind: "incomplete" };
  const end = lf + 1;
  const lineEnd = lf > 0 && b[lf - 1] === CR ? lf - 1 : lf;
  let p = 0;
  while (p < lineEnd && b[p] !== 0x20) {
    if (!isAlpha(b[p])) return { kind: "invalid", end };
    p++;
  }
  const verb = fromBytes(b, 0, p).toUpperCase();
  if (!VERBS.has(verb)) return { kind: "invalid", end };
  const split = splitArguments(b, p, lf, false);
  if (!split) return { kind: "invalid", end };
  const textEnd = split.args.length > 0 ? split.lastEnd : p;
  return { kind: "command", verb: verb as SmtpVerb, args: split.args, text: fromBytes(b, 0, textEnd), end };
}

/** Reads one AUTH continuation line (nginx parses it starting inside an argument). */
export function parseSmtpContinuation(b: Uint8Array): SmtpFrame {
  const lf = b.indexOf(LF);
  if (lf < 0) return { kind: "incomplete" };
  const split = splitArguments(b, 0, lf, true);
  if (!split) return { kind: "invalid", end: lf + 1 };
  return { kind: "continuation", args: split.args, end: lf + 1 };
}
