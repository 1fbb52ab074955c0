// The IMAP dialogue before login, as nginx's ngx_mail_imap_handler answers it, plus ID.
// Pure: bytes and auth results in, replies and requests out.

import type { ServerConfig } from "../../config/types.ts";
import { concat, EMPTY } from "../../util/bytes.ts";
import { continueSasl, cramMd5Challenge, makeSalt, SASL_PASSWORD_PROMPT, SASL_USERNAME_PROMPT, type SaslPhase } from "../sasl.ts";
import type { Action, AuthMethod, CompiledServer, Input, SessionStart, Step } from "../types.ts";
import { parseImapCommand, parseImapContinuation } from "./frame.ts";

export type ImapPhase =
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

export interface ImapState {
  readonly server: CompiledServer;
  readonly phase: ImapPhase;
  readonly buf: Uint8Array; // client bytes not yet consumed
  readonly syncLiterals: number; // "+ OK" continuations already sent for the command being read
  readonly tag: string; // tag of the command in progress, with its trailing space
  readonly errors: number;
  readonly tls: boolean;
  readonly login: string;
  readonly salt: string;
  readonly loginAttempt: number;
}

const OK = "OK completed\r\n";
const NEXT = "+ OK\r\n";
const INVALID = "BAD invalid command\r\n";
export const IMAP_INTERNAL_ERROR = "* BAD internal server error\r\n";

const AUTH_NAMES: readonly [string, string][] = [
  ["plain", "AUTH=PLAIN"], ["login", "AUTH=LOGIN"], ["cram-md5", "AUTH=CRAM-MD5"], ["external", "AUTH=EXTERNAL"],
];

/** CAPABILITY lines for each STARTTLS mode, built once per server as nginx does at merge time. */
export function compileImap(config: ServerConfig): CompiledServer {
  const caps = "* CAPABILITY" + config.imapCapabilities.map((c) => " " + c).join("");
  const auth = AUTH_NAMES.filter(([m]) => config.imapAuth.includes(m)).map(([, n]) => " " + n).join("");
  return {
    config,
    replies: {
      capability: caps + auth + "\r\n",
      starttlsCapability: caps + auth + " STARTTLS\r\n",
      starttlsOnlyCapability: caps + " STARTTLS LOGINDISABLED\r\n",
      greeting: "* OK IMAP4 ready\r\n",
    },
  };
}

export function startImap(init: SessionStart): Step<ImapState> {
  const cfg = init.server.config;
  const state: ImapState = {
    server: init.server,
    phase: "command",
    buf: EMPTY,
    syncLiterals: 0,
    tag: "",
    errors: 0,
    tls: init.tls,
    login: "",
    salt: cfg.imapAuth.includes("cram-md5") ? makeSalt(init.random, init.nowSec, cfg.serverName) : "",
    loginAttempt: 0,
  };
  return { state, actions: [{ kind: "reply", text: init.server.replies.greeting }] };
}

function starttlsOnly(s: ImapState): boolean {
  return !s.tls && s.server.config.starttls === "only";
}

type Handled = { state: ImapState; actions: Action[]; stop?: boolean };

function reply(s: ImapState, text: string, actions: Action[] = []): Handled {
  return { state: s, actions: [...actions, { kind: "reply", text }] };
}

function askAuth(s: ImapState, method: AuthMethod, login: string, password: string, salt?: string): Handled {
  const loginAttempt = s.loginAttempt + 1;
  const state = { ...s, phase: "auth-wait" as const, login, loginAttempt };
  return { state, actions: [{ kind: "ask-auth", credentials: { method, login, password, salt, loginAttempt } }], stop: true };
}

/** A bad command: tagged BAD, counted, the connection closed at max_errors. */
function badCommand(s: ImapState, tag: string, why: string, quit = false): Handled {
  const errors = s.errors + 1;
  const actions: Action[] = [{ kind: "log", level: "debug", message: why }];
  const tooMany = errors >= s.server.config.maxErrors;
  if (tooMany) actions.push({ kind: "log", level: "info", message: "client sent too many invalid commands" });
  actions.push({ kind: "reply", text: (tag || "* ") + INVALID });
  const state = { ...s, errors, phase: "command" as const, tag: "" };
  if (tooMany || quit) {
    actions.push({ kind: "close", why: tooMany ? "too many invalid commands" : why });
    return { state: { ...state, phase: "closed" }, actions, stop: true };
  }
  return { state, actions };
}

function onCommand(s: ImapState, tag: string, name: string, args: readonly string[]): Handled {
  const cfg = s.server.config;
  const ok = (extra = "", st: ImapState = s): Handled => reply({ ...st, tag: "" }, extra + tag + OK);
  switch (name) {
    case "NOOP":
      return ok();
    case "ID":
      return ok("* ID NIL\r\n");
    case "CAPABILITY": {
      const r = s.server.replies;
      const caps = s.tls || cfg.starttls === "off" ? r.capability : cfg.starttls === "on" ? r.starttlsCapability : r.starttlsOnlyCapability;
      return ok(caps);
    }
    case "LOGOUT": {
      const h = ok("* BYE\r\n");
      return { state: { ...h.state, phase: "closed" }, actions: [...h.actions, { kind: "close", why: "client logged out" }], stop: true };
    }
    case "STARTTLS": {
      if (s.tls || cfg.starttls === "off") return badCommand(s, tag, "STARTTLS not offered");
      // plaintext pipelined after STARTTLS is dropped, never read inside TLS (CVE-2011-0411)
      const state = { ...s, phase: "tls-wait" as const, buf: EMPTY, tag: "" };
      return { state, actions: [{ kind: "reply", text: tag + OK }, { kind: "start-tls" }], stop: true };
    }
    case "LOGIN": {
      if (starttlsOnly(s)) return badCommand(s, tag, "LOGIN before STARTTLS");
      if (args.length !== 2 || args[0].length === 0) return badCommand(s, tag, "LOGIN needs a user name and a password");
      return askAuth({ ...s, tag }, "plain", args[0], args[1]);
    }
    case "AUTHENTICATE":
      return onAuthenticate({ ...s, tag }, tag, args);
  }
  return badCommand(s, tag, `unknown command "${name}"`);
}

function onAuthenticate(s: ImapState, tag: string, args: readonly string[]): Handled {
  const cfg = s.server.config;
  if (starttlsOnly(s)) return badCommand(s, tag, "AUTHENTICATE before STARTTLS");
  if (args.length === 0) return badCommand(s, tag, "AUTHENTICATE without a mechanism");
  const mech = args[0].toUpperCase();
  const cont = (phase: ImapPhase, text: string): Handled => reply({ ...s, phase }, text);
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
      if (!cfg.imapAuth.includes("cram-md5") || args.length !== 1) break;
      return cont("auth-cram-md5", `+ ${cramMd5Challenge(s.salt)}\r\n`);
    case "EXTERNAL":
      if (!cfg.imapAuth.includes("external")) break;
      if (args.length === 1) return cont("auth-external", `+ ${SASL_USERNAME_PROMPT}\r\n`);
      if (args.length === 2) return onSasl(s, "auth-external", args[1]);
      break;
  }
  return badCommand(s, tag, `unsupported AUTHENTICATE "${args.join(" ")}"`);
}


/** A SASL response (continuation line or initial response), the same exchange as every protocol. */
function onSasl(s: ImapState, phase: SaslPhase, response: string): Handled {
  const r = continueSasl(phase, response, s.login, s.salt);
  if (r.kind === "bad") return badCommand(s, s.tag, r.why);
  if (r.kind === "ask-password") return reply({ ...s, phase: "auth-login-password", login: r.login }, `+ ${SASL_PASSWORD_PROMPT}\r\n`);
  return askAuth(s, r.method, r.login, r.password, r.salt);
}

/** Reads as many whole commands as the buffer holds, stopping where the dialogue must wait. */
function drain(s: ImapState): Step<ImapState> {
  const limit = s.server.config.imapClientBuffer;
  const actions: Action[] = [];
  let state = s;
  for (;;) {
    if (state.phase === "closed" || state.phase === "auth-wait" || state.phase === "tls-wait" || state.phase === "proxying") break;
    if (state.buf.length === 0) break;
    const view = state.buf.length > limit ? state.buf.subarray(0, limit) : state.buf;
    let handled: Handled;
    let end: number;
    if (state.phase === "command") {
      const f = parseImapCommand(view, limit);
      if (f.kind === "incomplete") {
        if (f.literalTooLong || view.length >= limit) {
          actions.push({ kind: "log", level: "info", message: "client sent too long command" });
          actions.push({ kind: "reply", text: (f.tag || "* ") + INVALID }, { kind: "close", why: "client sent too long command" });
          state = { ...state, phase: "closed" };
          break;
        }
        for (let i = state.syncLiterals; i < f.syncLiterals; i++) actions.push({ kind: "reply", text: NEXT });
        state = { ...state, syncLiterals: f.syncLiterals };
        break;
      }
      end = f.end;
      // every synchronizing literal gets its "+ OK", however the bytes were split (as nginx does)
      if (f.kind === "command") for (let i = state.syncLiterals; i < f.syncLiterals; i++) actions.push({ kind: "reply", text: NEXT });
      handled = f.kind === "invalid"
        ? badCommand(state, f.tag, "client sent invalid command", f.quit)
        : onCommand(state, f.tag, f.name, f.args);
    } else {
      const line = parseImapContinuation(view);
      if (!line) {
        if (view.length >= limit) {
          actions.push({ kind: "log", level: "info", message: "client sent too long command" });
          actions.push({ kind: "reply", text: (state.tag || "* ") + INVALID }, { kind: "close", why: "client sent too long command" });
          state = { ...state, phase: "closed" };
        }
        break;
      }
      end = line.end;
      handled = onSasl(state, state.phase as SaslPhase, line.arg);
    }
    const rest = end === state.buf.length ? EMPTY : state.buf.subarray(end);
    const keep = handled.state.phase === "tls-wait" ? EMPTY : rest;
    state = { ...handled.state, buf: keep, syncLiterals: 0 };
    actions.push(...handled.actions);
    if (handled.stop) break;
  }
  return { state, actions };
}

export function stepImap(s: ImapState, input: Input): Step<ImapState> {
  switch (input.kind) {
    case "bytes":
      if (s.phase === "closed" || s.phase === "proxying") return { state: s, actions: [] };
      if (s.phase === "tls-wait") return { state: s, actions: [] }; // plaintext after STARTTLS: dropped
      return drain({ ...s, buf: concat(s.buf, input.bytes) });
    case "delay-done":
      return { state: s, actions: [] };
    case "tls-started":
      if (s.phase !== "tls-wait") throw new Error("tls-started outside STARTTLS");
      return { state: { ...s, phase: "command", tls: true, buf: EMPTY }, actions: [] };
    case "auth-result": {
      if (s.phase !== "auth-wait") throw new Error("auth-result outside auth-wait");
      const o = input.outcome;
      if (o.kind === "ok") {
        const state = { ...s, phase: "proxying" as const, buf: EMPTY };
        return {
          state,
          actions: [{ kind: "proxy", to: { host: o.host, port: o.port }, login: o.login, password: o.password, leftover: s.buf, tag: s.tag }],
        };
      }
      if (o.kind === "error") {
        return {
          state: { ...s, phase: "closed" },
          actions: [{ kind: "reply", text: IMAP_INTERNAL_ERROR }, { kind: "close", why: o.why }],
        };
      }
      const text = s.tag + "NO " + o.message + "\r\n";
      if (!o.keepOpen) {
        return { state: { ...s, phase: "closed" }, actions: [{ kind: "reply", text }, { kind: "close", why: "login failed" }] };
      }
      const next = drain({ ...s, phase: "command", tag: "" });
      return { state: next.state, actions: [{ kind: "reply", text }, ...next.actions] };
    }
  }
}

export function pendingImap(s: ImapState): Uint8Array {
  return s.buf;
}
