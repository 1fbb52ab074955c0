// The SMTP dialogue before login, as nginx's ngx_mail_smtp_handler answers it: greeting (after
// smtp_greeting_delay), HELO/EHLO, AUTH, STARTTLS, and for `smtp_auth none` MAIL FROM/RCPT TO,
// where the first RCPT asks the auth service and opens the backend.
// Pure: bytes, timer and auth results in, replies and requests out.

import type { ServerConfig } from "../../config/types.ts";
import { concat, EMPTY, escapeForLog } from "../../util/bytes.ts";
import { continueSasl, cramMd5Challenge, makeSalt, SASL_PASSWORD_PROMPT, SASL_USERNAME_PROMPT, type SaslPhase } from "../sasl.ts";
import type { Action, AuthMethod, CompiledServer, Input, SessionStart, Step } from "../types.ts";
import { parseSmtpCommand, parseSmtpContinuation, type SmtpVerb } from "./frame.ts";

export type SmtpPhase =
  | "delay" // smtp_greeting_delay: waiting before the greeting
  | "command"
  | "auth-login-username"
  | "auth-login-password"
  | "auth-plain"
  | "auth-cram-md5"
  | "auth-external"
  | "tls-wait"
  | "auth-wait"
  | "proxying"
  | "closed";

export interface SmtpState {
  readonly server: CompiledServer;
  readonly phase: SmtpPhase;
  readonly buf: Uint8Array; // client bytes not yet consumed
  readonly errors: number;
  readonly tls: boolean;
  readonly esmtp: boolean; // the client said EHLO at some point (nginx never clears it)
  readonly helo: string; // the HELO/EHLO argument
  readonly from: string; // smtp_auth none: the whole "MAIL FROM:<...>" command as typed
  readonly to: string; // smtp_auth none: the whole "RCPT TO:<...>" command
  readonly login: string;
  readonly method: AuthMethod; // of the auth request in flight
  readonly salt: string;
  readonly loginAttempt: number;
}

// nginx's replies (ngx_mail_smtp_handler.c, ngx_mail_smtp_module.c)
const OK = "250 2.0.0 OK\r\n";
const BYE = "221 2.0.0 Bye\r\n";
const START_TLS = "220 2.0.0 Start TLS\r\n";
const NEXT = "334 \r\n";
const USERNAME = `334 ${SASL_USERNAME_PROMPT}\r\n`;
const PASSWORD = `334 ${SASL_PASSWORD_PROMPT}\r\n`;
const INVALID_COMMAND = "500 5.5.1 Invalid command\r\n";
export const SMTP_INVALID_PIPELINING = "503 5.5.0 Improper use of SMTP command pipelining\r\n";
const INVALID_ARGUMENT = "501 5.5.4 Invalid argument\r\n";
const AUTH_REQUIRED = "530 5.7.1 Authentication required\r\n";
const BAD_SEQUENCE = "503 5.5.1 Bad sequence of commands\r\n";
export const SMTP_INTERNAL_ERROR = "451 4.3.2 Internal server error\r\n";

const AUTH_NAMES: readonly [string, string][] = [
  ["plain", "PLAIN"], ["login", "LOGIN"], ["cram-md5", "CRAM-MD5"], ["external", "EXTERNAL"],
];

/** A multi-line reply: "250-" on every line but the last, "250 " on the last. */
function multiline(lines: readonly string[]): string {
  return lines.map((l, i) => (i === lines.length - 1 ? "250 " : "250-") + l + "\r\n").join("");
}

/** Greeting, HELO and the three EHLO replies, built once per server as nginx does at merge time. */
export function compileSmtp(config: ServerConfig): CompiledServer {
  const name = config.serverName;
  const mechs = AUTH_NAMES.filter(([m]) => config.smtpAuth.includes(m)).map(([, n]) => n);
  // "none" alone offers no AUTH line at all
  const auth = mechs.length > 0 ? ["AUTH " + mechs.join(" ")] : [];
  const head = [name, ...config.smtpCapabilities];
  return {
    config,
    replies: {
      greeting: `220 ${name} ESMTP ready\r\n`,
      helo: `250 ${name}\r\n`,
      capability: multiline([...head, ...auth]),
      starttlsCapability: multiline([...head, ...auth, "STARTTLS"]),
      starttlsOnlyCapability: multiline([...head, "STARTTLS"]),
    },
  };
}

export function startSmtp(init: SessionStart): Step<SmtpState> {
  const cfg = init.server.config;
  const state: SmtpState = {
    server: init.server,
    phase: cfg.smtpGreetingDelay > 0 ? "delay" : "command",
    buf: EMPTY,
    errors: 0,
    tls: init.tls,
    esmtp: false,
    helo: "",
    from: "",
    to: "",
    login: "",
    method: "plain",
    salt: cfg.smtpAuth.includes("cram-md5") ? makeSalt(init.random, init.nowSec, cfg.serverName) : "",
    loginAttempt: 0,
  };
  if (state.phase === "delay") {
    return { state, actions: [{ kind: "delay", ms: cfg.smtpGreetingDelay, earlyReply: SMTP_INVALID_PIPELINING }] };
  }
  return { state, actions: [{ kind: "reply", text: init.server.replies.greeting }] };
}

function starttlsOnly(s: SmtpState): boolean {
  return !s.tls && s.server.config.starttls === "only";
}

type Handled = { state: SmtpState; actions: Action[]; stop?: boolean };

function reply(s: SmtpState, text: string, ...before: Action[]): Handled {
  return { state: s, actions: [...before, { kind: "reply", text }] };
}

function debug(message: string): Action {
  return { kind: "log", level: "debug", message };
}

function askAuth(s: SmtpState, method: AuthMethod, login: string, password: string, salt?: string): Handled {
  const loginAttempt = s.loginAttempt + 1;
  const state = { ...s, phase: "auth-wait" as const, login, method, loginAttempt };
  const smtp = method === "none" ? { helo: s.helo, from: s.from, to: s.to } : undefined;
  return { state, actions: [{ kind: "ask-auth", credentials: { method, login, password, salt, loginAttempt, smtp } }], stop: true };
}

/**
 * "500 5.5.1 Invalid command", counted; the connection closes at max_errors. nginx counts only
 * lines it cannot parse; like Postern's IMAP and POP3, commands refused after parsing (an AUTH
 * mechanism not offered, bad base64, VRFY, STARTTLS when off) count too.
 */
function invalidCommand(s: SmtpState, why: string): Handled {
  const errors = s.errors + 1;
  const actions: Action[] = [debug(why)];
  const tooMany = errors >= s.server.config.maxErrors;
  if (tooMany) actions.push({ kind: "log", level: "info", message: "client sent too many invalid commands" });
  actions.push({ kind: "reply", text: INVALID_COMMAND });
  const state = { ...s, errors, phase: "command" as const };
  if (tooMany) {
    actions.push({ kind: "close", why: "too many invalid commands" });
    return { state: { ...state, phase: "closed" }, actions, stop: true };
  }
  return { state, actions };
}

function onHelo(s: SmtpState, verb: SmtpVerb, args: readonly string[]): Handled {
  if (args.length !== 1) return reply(s, INVALID_ARGUMENT, debug(`${verb} needs one argument`));
  const state = { ...s, helo: args[0], from: "", to: "" };
  const r = s.server.replies;
  if (verb === "HELO") return reply(state, r.helo);
  const mode = s.server.config.starttls;
  const caps = s.tls || mode === "off" ? r.capability : mode === "on" ? r.starttlsCapability : r.starttlsOnlyCapability;
  return reply({ ...state, esmtp: true }, caps);
}

function onAuth(s: SmtpState, args: readonly string[]): Handled {
  const cfg = s.server.config;
  if (starttlsOnly(s)) return invalidCommand(s, "AUTH before STARTTLS");
  if (args.length === 0) return reply(s, INVALID_ARGUMENT, debug("AUTH without a mechanism"));
  const mech = args[0].toUpperCase();
  switch (mech) {
    case "LOGIN":
      if (args.length === 1) return reply({ ...s, phase: "auth-login-username" }, USERNAME);
      if (args.length === 2) return onSasl(s, "auth-login-username", args[1]);
      break;
    case "PLAIN":
      if (args.length === 1) return reply({ ...s, phase: "auth-plain" }, NEXT);
      if (args.length === 2) return onSasl(s, "auth-plain", args[1]);
      break;
    case "CRAM-MD5":
      if (!cfg.smtpAuth.includes("cram-md5") || args.length !== 1) break;
      return reply({ ...s, phase: "auth-cram-md5" }, `334 ${cramMd5Challenge(s.salt)}\r\n`);
    case "EXTERNAL":
      // nginx takes "AUTH EXTERNAL <ir>" even when smtp_auth lacks external; we do not
      if (!cfg.smtpAuth.includes("external")) break;
      if (args.length === 1) return reply({ ...s, phase: "auth-external" }, USERNAME);
      if (args.length === 2) return onSasl(s, "auth-external", args[1]);
      break;
  }
  return invalidCommand(s, `unsupported AUTH mechanism "${escapeForLog(args[0].slice(0, 64))}"`);
}


function onMail(s: SmtpState, args: readonly string[], text: string): Handled {
  if (!s.server.config.smtpAuth.includes("none")) {
    return reply(s, AUTH_REQUIRED, { kind: "log", level: "info", message: `client was rejected: "${escapeForLog(text.slice(0, 256))}"` });
  }
  if (s.from) return reply(s, BAD_SEQUENCE);
  if (args.length === 0) return reply(s, INVALID_ARGUMENT);
  return reply({ ...s, from: text, login: "" }, OK, debug(`smtp mail from: "${escapeForLog(text.slice(0, 256))}"`));
}

function onRcpt(s: SmtpState, args: readonly string[], text: string): Handled {
  if (!s.from) return reply(s, BAD_SEQUENCE);
  if (args.length === 0) return reply(s, INVALID_ARGUMENT);
  return askAuth({ ...s, to: text }, "none", "", "");
}

function onStarttls(s: SmtpState): Handled {
  if (s.tls || s.server.config.starttls === "off") return invalidCommand(s, "STARTTLS not offered");
  // RFC 3207: forget what the client said before; plaintext pipelined behind STARTTLS is
  // dropped, never read inside TLS (CVE-2011-0411)
  const state = { ...s, phase: "tls-wait" as const, helo: "", from: "", to: "", buf: EMPTY };
  return { state, actions: [{ kind: "reply", text: START_TLS }, { kind: "start-tls" }], stop: true };
}

function onCommand(s: SmtpState, verb: SmtpVerb, args: readonly string[], text: string): Handled {
  switch (verb) {
    case "HELO":
    case "EHLO":
      return onHelo(s, verb, args);
    case "AUTH":
      return onAuth(s, args);
    case "QUIT":
      return { state: { ...s, phase: "closed" }, actions: [{ kind: "reply", text: BYE }, { kind: "close", why: "client quit" }], stop: true };
    case "MAIL":
      return onMail(s, args, text);
    case "RCPT":
      return onRcpt(s, args, text);
    case "RSET":
      return reply({ ...s, from: "", to: "" }, OK);
    case "NOOP":
      return reply(s, OK);
    case "STARTTLS":
      return onStarttls(s);
    case "VRFY":
    case "EXPN":
    case "HELP":
      return invalidCommand(s, `${verb} is not served before login`);
  }
}

/** A SASL response (continuation line or initial response), the same exchange as every protocol. */
function onSasl(s: SmtpState, phase: SaslPhase, response: string): Handled {
  const r = continueSasl(phase, response, s.login, s.salt);
  if (r.kind === "bad") return invalidCommand(s, r.why);
  if (r.kind === "ask-password") return reply({ ...s, phase: "auth-login-password", login: r.login }, PASSWORD);
  return askAuth(s, r.method, r.login, r.password, r.salt);
}

/** Phases in which client lines are read; the others wait for a timer, TLS, auth or the end. */
const READING: ReadonlySet<SmtpPhase> = new Set([
  "command", "auth-login-username", "auth-login-password", "auth-plain", "auth-cram-md5", "auth-external",
]);

/** Reads as many whole lines as the buffer holds (pipelining), stopping where the dialogue must wait. */
function drain(s: SmtpState): Step<SmtpState> {
  const limit = s.server.config.smtpClientBuffer;
  const actions: Action[] = [];
  let state = s;
  for (;;) {
    if (!READING.has(state.phase)) break;
    if (state.buf.length === 0) break;
    // a line must fit smtp_client_buffer, CRLF included
    const view = state.buf.length > limit ? state.buf.subarray(0, limit) : state.buf;
    const f = state.phase === "command" ? parseSmtpCommand(view) : parseSmtpContinuation(view);
    if (f.kind === "incomplete") {
      if (view.length >= limit) {
        actions.push(
          { kind: "log", level: "info", message: "client sent too long command" },
          { kind: "reply", text: INVALID_COMMAND },
          { kind: "close", why: "client sent too long command" },
        );
        state = { ...state, phase: "closed" };
      }
      break;
    }
    let handled: Handled;
    if (f.kind === "invalid") handled = invalidCommand(state, "client sent invalid command");
    else if (f.kind === "command") handled = onCommand(state, f.verb, f.args, f.text);
    else handled = onSasl(state, state.phase as SaslPhase, f.args[0] ?? "");
    const rest = f.end === state.buf.length ? EMPTY : state.buf.subarray(f.end);
    state = { ...handled.state, buf: handled.state.phase === "tls-wait" ? EMPTY : rest };
    actions.push(...handled.actions);
    if (handled.stop) break;
  }
  return { state, actions };
}

export function stepSmtp(s: SmtpState, input: Input): Step<SmtpState> {
  switch (input.kind) {
    case "bytes":
      if (s.phase === "closed" || s.phase === "proxying" || s.phase === "tls-wait") return { state: s, actions: [] };
      if (s.phase === "delay") {
        // the driver answers early talkers itself; a machine fed bytes here does the same
        return {
          state: { ...s, phase: "closed" },
          actions: [{ kind: "reply", text: SMTP_INVALID_PIPELINING }, { kind: "close", why: "client was rejected before greeting" }],
        };
      }
      return drain({ ...s, buf: concat(s.buf, input.bytes) });
    case "delay-done":
      if (s.phase !== "delay") return { state: s, actions: [] };
      return { state: { ...s, phase: "command" }, actions: [{ kind: "reply", text: s.server.replies.greeting }] };
    case "tls-started":
      if (s.phase !== "tls-wait") throw new Error("tls-started outside STARTTLS");
      return { state: { ...s, phase: "command", tls: true, buf: EMPTY }, actions: [] };
    case "auth-result": {
      if (s.phase !== "auth-wait") throw new Error("auth-result outside auth-wait");
      const o = input.outcome;
      if (o.kind === "ok") {
        const smtp = {
          helo: s.helo,
          heloCommand: s.esmtp ? "EHLO" : "HELO",
          from: s.from,
          to: s.to ? [s.to] : [],
          authMethod: s.method,
        };
        return {
          state: { ...s, phase: "proxying", buf: EMPTY },
          actions: [{ kind: "proxy", to: { host: o.host, port: o.port }, login: o.login, password: o.password, leftover: s.buf, tag: "", smtp }],
        };
      }
      if (o.kind === "error") {
        return { state: { ...s, phase: "closed" }, actions: [{ kind: "reply", text: SMTP_INTERNAL_ERROR }, { kind: "close", why: o.why }] };
      }
      // the message already starts with the code: Auth-Error-Code or "535 5.7.0"
      const text = o.message + "\r\n";
      if (!o.keepOpen) {
        return { state: { ...s, phase: "closed" }, actions: [{ kind: "reply", text }, { kind: "close", why: "login failed" }] };
      }
      // as nginx's sleep handler: back to the start; HELO and MAIL FROM are kept
      const next = drain({ ...s, phase: "command", login: "", method: "plain" });
      return { state: next.state, actions: [{ kind: "reply", text }, ...next.actions] };
    }
  }
}

export function pendingSmtp(s: SmtpState): Uint8Array {
  return s.buf;
}
