// The POP3 dialogue before login, as nginx's ngx_mail_pop3_handler answers it.
// Pure: bytes and auth results in, replies and requests out.

import type { ServerConfig } from "../../config/types.ts";
import { concat, EMPTY } from "../../util/bytes.ts";
import { continueSasl, cramMd5Challenge, makeSalt, SASL_PASSWORD_PROMPT, SASL_USERNAME_PROMPT, type SaslPhase } from "../sasl.ts";
import type { Action, AuthMethod, CompiledServer, Input, SessionStart, Step } from "../types.ts";
import { parsePop3Command, parsePop3Continuation, type Pop3CommandName } from "./frame.ts";

export type Pop3Phase =
  | "start"
  | "user-given"
  | "auth-login-username"
  | "auth-login-password"
  | "auth-plain"
  | "auth-cram-md5"
  | "auth-external"
  | "tls-wait"
  | "auth-wait"
  | "proxying"
  | "closed";

export interface Pop3State {
  readonly server: CompiledServer;
  readonly phase: Pop3Phase;
  readonly buf: Uint8Array; // client bytes not yet consumed
  readonly errors: number;
  readonly tls: boolean;
  readonly login: string; // from USER, or the LOGIN user name
  readonly salt: string; // "<random.time@server_name>" when apop or cram-md5 is on, else ""
  readonly loginAttempt: number;
}

const OK = "+OK\r\n";
const INVALID = "-ERR invalid command\r\n";
export const POP3_INTERNAL_ERROR = "-ERR internal server error\r\n";

/** nginx's SASL names in its bitmask order; `plain` in pop3_auth also turns LOGIN on. */
const SASL_NAMES: readonly [string, string][] = [
  ["plain", "PLAIN"], ["plain", "LOGIN"], ["cram-md5", "CRAM-MD5"], ["external", "EXTERNAL"],
];

/** CAPA and AUTH replies for each STARTTLS mode, built once per server as nginx does at merge time. */
export function compilePop3(config: ServerConfig): CompiledServer {
  const caps = config.pop3Capabilities.map((c) => c + "\r\n").join("");
  const capsNoUser = config.pop3Capabilities.filter((c) => c.toUpperCase() !== "USER").map((c) => c + "\r\n").join("");
  const mechs = SASL_NAMES.filter(([m]) => config.pop3Auth.includes(m)).map(([, n]) => n);
  const head = "+OK Capability list follows\r\n";
  const sasl = "SASL" + mechs.map((n) => " " + n).join("") + "\r\n";
  return {
    config,
    replies: {
      greeting: "+OK POP3 ready\r\n",
      capability: head + caps + sasl + ".\r\n",
      starttlsCapability: head + caps + sasl + "STLS\r\n.\r\n",
      // before STLS with `starttls only`: no USER, no SASL
      starttlsOnlyCapability: head + capsNoUser + "STLS\r\n.\r\n",
      authCapability: "+OK methods supported:\r\n" + mechs.map((n) => n + "\r\n").join("") + ".\r\n",
    },
  };
}

export function startPop3(init: SessionStart): Step<Pop3State> {
  const cfg = init.server.config;
  // nginx makes the salt (and shows it in the greeting) when APOP or CRAM-MD5 is enabled
  const salted = cfg.pop3Auth.includes("apop") || cfg.pop3Auth.includes("cram-md5");
  const salt = salted ? makeSalt(init.random, init.nowSec, cfg.serverName) : "";
  const state: Pop3State = {
    server: init.server,
    phase: "start",
    buf: EMPTY,
    errors: 0,
    tls: init.tls,
    login: "",
    salt,
    loginAttempt: 0,
  };
  const greeting = salted ? `+OK POP3 ready ${salt}\r\n` : init.server.replies.greeting;
  return { state, actions: [{ kind: "reply", text: greeting }] };
}

function starttlsOnly(s: Pop3State): boolean {
  return !s.tls && s.server.config.starttls === "only";
}

type Handled = { state: Pop3State; actions: Action[]; stop?: boolean };
type Handler = (s: Pop3State, args: readonly string[]) => Handled;

function reply(s: Pop3State, text: string): Handled {
  return { state: s, actions: [{ kind: "reply", text }] };
}

function askAuth(s: Pop3State, method: AuthMethod, login: string, password: string, salt?: string): Handled {
  const loginAttempt = s.loginAttempt + 1;
  const state = { ...s, phase: "auth-wait" as const, login, loginAttempt };
  return { state, actions: [{ kind: "ask-auth", credentials: { method, login, password, salt, loginAttempt } }], stop: true };
}

/** A bad command: "-ERR invalid command", counted, back to the start, closed at max_errors. */
function badCommand(s: Pop3State, why: string): Handled {
  const errors = s.errors + 1;
  const actions: Action[] = [{ kind: "log", level: "debug", message: why }];
  const tooMany = errors >= s.server.config.maxErrors;
  if (tooMany) actions.push({ kind: "log", level: "info", message: "client sent too many invalid commands" });
  actions.push({ kind: "reply", text: INVALID });
  const state = { ...s, errors, phase: "start" as const };
  if (tooMany) {
    actions.push({ kind: "close", why: "too many invalid commands" });
    return { state: { ...state, phase: "closed" }, actions, stop: true };
  }
  return { state, actions };
}

function onUser(s: Pop3State, args: readonly string[]): Handled {
  if (starttlsOnly(s)) return badCommand(s, "USER before STLS");
  if (args.length !== 1) return badCommand(s, "USER needs a user name");
  return reply({ ...s, phase: "user-given", login: args[0] }, OK);
}

function onPass(s: Pop3State, args: readonly string[]): Handled {
  if (args.length !== 1) return badCommand(s, "PASS needs a password");
  return askAuth(s, "plain", s.login, args[0]);
}

function onApop(s: Pop3State, args: readonly string[]): Handled {
  if (starttlsOnly(s)) return badCommand(s, "APOP before STLS");
  if (args.length !== 2) return badCommand(s, "APOP needs a user name and a digest");
  if (!s.server.config.pop3Auth.includes("apop")) return badCommand(s, "APOP is not enabled in pop3_auth");
  return askAuth(s, "apop", args[0], args[1], s.salt);
}

/** CAPA; `stls` is false after USER, where nginx lists the plain capabilities whatever starttls says. */
function onCapa(s: Pop3State, stls: boolean): Handled {
  const r = s.server.replies;
  const mode = s.server.config.starttls;
  if (stls && !s.tls && mode === "on") return reply(s, r.starttlsCapability);
  if (stls && !s.tls && mode === "only") return reply(s, r.starttlsOnlyCapability);
  return reply(s, r.capability);
}

function onQuit(s: Pop3State): Handled {
  return { state: { ...s, phase: "closed" }, actions: [{ kind: "reply", text: OK }, { kind: "close", why: "client quit" }], stop: true };
}

function onStls(s: Pop3State): Handled {
  if (s.tls || s.server.config.starttls === "off") return badCommand(s, "STLS not offered");
  // plaintext pipelined after STLS is dropped, never read inside TLS (CVE-2011-0411)
  return { state: { ...s, phase: "tls-wait", buf: EMPTY }, actions: [{ kind: "reply", text: OK }, { kind: "start-tls" }], stop: true };
}

function onAuth(s: Pop3State, args: readonly string[]): Handled {
  const cfg = s.server.config;
  if (starttlsOnly(s)) return badCommand(s, "AUTH before STLS");
  if (args.length === 0) return reply(s, s.server.replies.authCapability);
  const mech = args[0].toUpperCase();
  const cont = (phase: Pop3Phase, text: string): Handled => reply({ ...s, phase }, text);
  switch (mech) {
    case "LOGIN":
      if (args.length === 1) return cont("auth-login-username", `+ ${SASL_USERNAME_PROMPT}\r\n`);
      if (args.length === 2) return onSasl(s, "auth-login-username", args[1]);
      break;
    case "PLAIN":
      if (args.length === 1) return cont("auth-plain", "+ \r\n");
      if (args.length === 2) return onSasl(s, "auth-plain", args[1]);
      break;
    case "CRAM-MD5":
      if (!cfg.pop3Auth.includes("cram-md5") || args.length !== 1) break;
      return cont("auth-cram-md5", `+ ${cramMd5Challenge(s.salt)}\r\n`);
    case "EXTERNAL":
      if (!cfg.pop3Auth.includes("external")) break;
      if (args.length === 1) return cont("auth-external", `+ ${SASL_USERNAME_PROMPT}\r\n`);
      if (args.length === 2) return onSasl(s, "auth-external", args[1]);
      break;
  }
  return badCommand(s, `unsupported AUTH "${args.join(" ")}"`);
}


/** What each wire verb does before USER, and after it (nginx's ngx_pop3_start and ngx_pop3_user). */
const BEFORE_USER: Readonly<Partial<Record<Pop3CommandName, Handler>>> = {
  USER: onUser,
  CAPA: (s) => onCapa(s, true),
  APOP: onApop,
  AUTH: onAuth,
  QUIT: onQuit,
  NOOP: (s) => reply(s, OK),
  STLS: onStls,
};

const AFTER_USER: Readonly<Partial<Record<Pop3CommandName, Handler>>> = {
  PASS: onPass,
  CAPA: (s) => onCapa(s, false),
  QUIT: onQuit,
  NOOP: (s) => reply(s, OK),
};

function onCommand(s: Pop3State, name: Pop3CommandName, args: readonly string[]): Handled {
  const handler = (s.phase === "user-given" ? AFTER_USER : BEFORE_USER)[name];
  if (!handler) return badCommand(s, s.phase === "user-given" ? `${name} after USER` : `${name} before USER`);
  return handler(s, args);
}

/** A SASL continuation line; nginx uses its first word. */
/** A SASL response (continuation line or initial response), the same exchange as every protocol. */
function onSasl(s: Pop3State, phase: SaslPhase, response: string): Handled {
  const r = continueSasl(phase, response, s.login, s.salt);
  if (r.kind === "bad") return badCommand(s, r.why);
  if (r.kind === "ask-password") return reply({ ...s, phase: "auth-login-password", login: r.login }, `+ ${SASL_PASSWORD_PROMPT}\r\n`);
  return askAuth(s, r.method, r.login, r.password, r.salt);
}

function tooLong(s: Pop3State): Handled {
  return {
    state: { ...s, phase: "closed" },
    actions: [
      { kind: "log", level: "info", message: "client sent too long command" },
      { kind: "reply", text: INVALID },
      { kind: "close", why: "client sent too long command" },
    ],
    stop: true,
  };
}

/** Reads as many whole lines as the buffer holds, stopping where the dialogue must wait. */
function drain(s: Pop3State): Step<Pop3State> {
  const limit = s.server.config.pop3ClientBuffer;
  const actions: Action[] = [];
  let state = s;
  for (;;) {
    if (state.phase === "closed" || state.phase === "auth-wait" || state.phase === "tls-wait" || state.phase === "proxying") break;
    if (state.buf.length === 0) break;
    // a line must fit pop3_client_buffer, CRLF included
    const view = state.buf.length > limit ? state.buf.subarray(0, limit) : state.buf;
    const command = state.phase === "start" || state.phase === "user-given";
    const f = command ? parsePop3Command(view) : parsePop3Continuation(view);
    if (f.kind === "incomplete") {
      if (view.length >= limit) {
        const h = tooLong(state);
        state = h.state;
        actions.push(...h.actions);
      }
      break;
    }
    let handled: Handled;
    if (f.kind === "invalid") handled = badCommand(state, "client sent invalid command");
    else if (f.kind === "command") handled = onCommand(state, f.name, f.args);
    else handled = onSasl(state, state.phase as SaslPhase, f.args[0]);
    const rest = f.end === state.buf.length ? EMPTY : state.buf.subarray(f.end);
    state = { ...handled.state, buf: handled.state.phase === "tls-wait" ? EMPTY : rest };
    actions.push(...handled.actions);
    if (handled.stop) break;
  }
  return { state, actions };
}

/** Bytes that would break a USER or PASS line to the backend (command injection). */
const LINE_BREAKING = /[\r\n\0]/;

export function stepPop3(s: Pop3State, input: Input): Step<Pop3State> {
  switch (input.kind) {
    case "bytes":
      if (s.phase === "closed" || s.phase === "proxying") return { state: s, actions: [] };
      if (s.phase === "tls-wait") return { state: s, actions: [] }; // plaintext after STLS: dropped
      return drain({ ...s, buf: concat(s.buf, input.bytes) });
    case "delay-done": // POP3 never asks for a delay
      return { state: s, actions: [] };
    case "tls-started":
      if (s.phase !== "tls-wait") throw new Error("tls-started outside STLS");
      return { state: { ...s, phase: "start", tls: true, login: "", buf: EMPTY }, actions: [] };
    case "auth-result": {
      if (s.phase !== "auth-wait") throw new Error("auth-result outside auth-wait");
      const o = input.outcome;
      if (o.kind === "ok") {
        // POP3 logs in to the backend with "USER name" and "PASS secret" lines: a CR, LF or NUL
        // (possible through AUTH PLAIN/LOGIN, or from the auth service) would inject commands
        const bad = LINE_BREAKING.test(o.login) ? "user name" : LINE_BREAKING.test(o.password) ? "password" : "";
        if (bad) {
          return {
            state: { ...s, phase: "closed" },
            actions: [
              { kind: "log", level: "warn", message: `refusing to log in to the backend: the ${bad} contains CR, LF or NUL` },
              { kind: "reply", text: POP3_INTERNAL_ERROR },
              { kind: "close", why: `${bad} with CR, LF or NUL` },
            ],
          };
        }
        const state = { ...s, phase: "proxying" as const, buf: EMPTY };
        return {
          state,
          actions: [{ kind: "proxy", to: { host: o.host, port: o.port }, login: o.login, password: o.password, leftover: s.buf, tag: "" }],
        };
      }
      if (o.kind === "error") {
        return {
          state: { ...s, phase: "closed" },
          actions: [{ kind: "reply", text: POP3_INTERNAL_ERROR }, { kind: "close", why: o.why }],
        };
      }
      const text = "-ERR " + o.message + "\r\n";
      if (!o.keepOpen) {
        return { state: { ...s, phase: "closed" }, actions: [{ kind: "reply", text }, { kind: "close", why: "login failed" }] };
      }
      const next = drain({ ...s, phase: "start" });
      return { state: next.state, actions: [{ kind: "reply", text }, ...next.actions] };
    }
  }
}

export function pendingPop3(s: Pop3State): Uint8Array {
  return s.buf;
}
