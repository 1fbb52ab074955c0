// Logging in to the SMTP backend as nginx's ngx_mail_proxy_smtp_handler does: wait for 220, say
// EHLO (HELO when the client used HELO and xclient is off) with our server_name, pass the client
// on with XCLIENT, replay the client's own EHLO/HELO, then either AUTH PLAIN (proxy_smtp_auth),
// the buffered MAIL FROM/RCPT TO (smtp_auth none), or nothing; the client gets "235 2.0.0 OK",
// or for smtp_auth none the backend's own reply to RCPT TO.
//
// Beyond nginx: with proxy_smtp_auth, AUTH LOGIN when the backend's EHLO offers LOGIN but not
// PLAIN; XCLIENT PORT= and PROTO= when the backend's XCLIENT line lists them; STARTTLS to the
// backend (proxy_ssl: starttls).

import { concat, EMPTY, encodeBase64, escapeForLog, fromBytes, toBytes } from "../../util/bytes.ts";
import { takeLine } from "../lines.ts";
import type { UpstreamAction, UpstreamInput, UpstreamStart } from "../types.ts";
import { SMTP_INTERNAL_ERROR } from "./session.ts";

const AUTH_OK = "235 2.0.0 OK\r\n"; // nginx's smtp_auth_ok

export type SmtpUpstreamPhase =
  | "greeting" // waiting for 220
  | "tls-ehlo" // proxy_ssl starttls: our EHLO before STARTTLS
  | "starttls"
  | "tls-wait"
  | "hello" // our EHLO/HELO server_name
  | "xclient"
  | "client-hello" // the client's own EHLO/HELO, replayed after XCLIENT
  | "auth-login" // AUTH LOGIN: waiting for the user name prompt
  | "auth-login-user" // waiting for the password prompt
  | "auth" // waiting for 235
  | "from"
  | "to"
  | "done";

export interface SmtpUpstreamState {
  readonly init: UpstreamStart;
  readonly phase: SmtpUpstreamPhase;
  readonly buf: Uint8Array;
  readonly reply: Uint8Array; // lines of a multi-line reply read so far
  /** Keywords of the backend's latest EHLO reply, upper case, with their parameters. */
  readonly ehlo: ReadonlyMap<string, readonly string[]>;
}

type Result = { state: SmtpUpstreamState; actions: UpstreamAction[] };

/**
 * xtext (RFC 3461) as nginx's NGX_ESCAPE_MAIL_XTEXT writes it for XCLIENT: bytes outside
 * "!".."~", "+" and "=" become "+XX". No CR, LF or space can reach the backend unescaped.
 */
export function encodeXtext(text: string): string {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i) & 0xff;
    if (c <= 0x20 || c >= 0x7f || c === 0x2b || c === 0x3d) out += "+" + c.toString(16).toUpperCase().padStart(2, "0");
    else out += String.fromCharCode(c);
  }
  return out;
}

function smtpOf(init: UpstreamStart): NonNullable<UpstreamStart["smtp"]> {
  return init.smtp ?? { helo: "", heloCommand: "HELO", from: "", to: [], authMethod: "plain" };
}

export function startSmtpUpstream(init: UpstreamStart): Result {
  return { state: { init, phase: "greeting", buf: EMPTY, reply: EMPTY, ehlo: new Map() }, actions: [] };
}

function send(s: SmtpUpstreamState, phase: SmtpUpstreamPhase, text: string): Result {
  return { state: { ...s, phase }, actions: [{ kind: "send", text }] };
}

function fail(s: SmtpUpstreamState, reply: Uint8Array | null, why: string): Result {
  const pass = s.init.server.config.proxyPassErrorMessage && reply !== null;
  return { state: { ...s, phase: "done" }, actions: [{ kind: "fail", toClient: pass ? fromBytes(reply!) : SMTP_INTERNAL_ERROR, log: why }] };
}

/** Our own EHLO/HELO: EHLO when the client said EHLO or XCLIENT will follow (nginx). */
function sayHello(s: SmtpUpstreamState): Result {
  const cfg = s.init.server.config;
  const verb = smtpOf(s.init).heloCommand === "EHLO" || cfg.xclient ? "EHLO" : "HELO";
  return send({ ...s, ehlo: new Map() }, "hello", `${verb} ${cfg.serverName}\r\n`);
}

function xclientLine(s: SmtpUpstreamState): string {
  const init = s.init;
  const smtp = smtpOf(init);
  const cfg = init.server.config;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(init.clientAddr);
  const addr = mapped ? mapped[1] : init.clientAddr.includes(":") ? "IPV6:" + init.clientAddr : init.clientAddr;
  let line = `XCLIENT ADDR=${addr}`;
  if (init.login && !cfg.proxySmtpAuth) line += ` LOGIN=${encodeXtext(init.login)}`;
  line += ` NAME=${encodeXtext(init.clientHost)}`;
  const offered = s.ehlo.get("XCLIENT") ?? [];
  if (offered.includes("PORT")) line += ` PORT=${init.clientPort}`;
  if (offered.includes("PROTO") && smtp.helo) line += ` PROTO=${smtp.heloCommand === "EHLO" ? "ESMTP" : "SMTP"}`;
  return line + "\r\n";
}

/** After the greetings: the envelope (smtp_auth none), AUTH (proxy_smtp_auth), or done. */
function afterHello(s: SmtpUpstreamState, rest: Uint8Array): Result {
  const smtp = smtpOf(s.init);
  if (smtp.authMethod === "none") return send(s, "from", smtp.from + "\r\n");
  if (s.init.server.config.proxySmtpAuth) {
    if (s.init.password === "") return fail(s, null, "no password available");
    const mechs = s.ehlo.get("AUTH");
    if (mechs && !mechs.includes("PLAIN") && mechs.includes("LOGIN")) return send(s, "auth-login", "AUTH LOGIN\r\n");
    const plain = encodeBase64(toBytes(`\0${s.init.login}\0${s.init.password}`));
    return send(s, "auth", `AUTH PLAIN ${plain}\r\n`);
  }
  return done(s, toBytes(AUTH_OK), rest);
}

function done(s: SmtpUpstreamState, toClient: Uint8Array, leftover: Uint8Array): Result {
  return { state: { ...s, phase: "done", buf: EMPTY }, actions: [{ kind: "done", toClient, leftover }] };
}

/** EHLO keywords: "250-AUTH PLAIN LOGIN" and "250-AUTH=PLAIN" both give AUTH: [PLAIN, LOGIN...]. */
function readEhlo(reply: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const lines = reply.split(/\r?\n/).filter(Boolean);
  for (const line of lines.slice(1)) {
    const words = line.slice(4).trim().toUpperCase().split(/[ =]+/).filter(Boolean);
    if (words.length === 0) continue;
    const prev = out.get(words[0]) ?? [];
    out.set(words[0], [...prev, ...words.slice(1)]);
  }
  return out;
}

/** The reply code each phase waits for. */
const REPLY_WANTED: Record<Exclude<SmtpUpstreamPhase, "tls-wait" | "done" | "to">, (c: string) => boolean> = {
  "greeting": (c) => c === "220",
  "tls-ehlo": (c) => c === "250",
  "starttls": (c) => c === "220",
  "hello": (c) => c === "250",
  "xclient": (c) => c === "220" || c === "250",
  "client-hello": (c) => c === "250",
  "auth-login": (c) => c === "334",
  "auth-login-user": (c) => c === "334",
  "auth": (c) => c === "235",
  "from": (c) => c === "250",
};

/** One whole reply arrived: check its code for the phase and send what comes next. */
function onReply(s: SmtpUpstreamState, raw: Uint8Array, rest: Uint8Array): Result {
  const text = fromBytes(raw);
  const code = text.slice(0, 3);
  const smtp = smtpOf(s.init);
  if (s.phase === "to") return done(s, raw, rest); // the backend's answer to RCPT TO goes to the client as it is
  if (s.phase === "tls-wait" || s.phase === "done") throw new Error(`SMTP upstream reply in phase ${s.phase}`);
  if (!REPLY_WANTED[s.phase](code)) {
    const first = text.split(/\r?\n/)[0];
    return fail(s, raw, `upstream sent invalid response: "${escapeForLog(first)}"`);
  }
  const cfg = s.init.server.config;
  switch (s.phase) {
    case "greeting":
      if (s.init.starttls) return send(s, "tls-ehlo", `EHLO ${cfg.serverName}\r\n`);
      return sayHello(s);
    case "tls-ehlo":
      return send(s, "starttls", "STARTTLS\r\n");
    case "starttls":
      // bytes after the 220 would be plaintext injected before TLS: dropped
      return { state: { ...s, phase: "tls-wait", buf: EMPTY }, actions: [{ kind: "start-tls" }] };
    case "hello": {
      const state = { ...s, ehlo: readEhlo(text) };
      if (cfg.xclient) return send(state, "xclient", xclientLine(state));
      return afterHello(state, rest);
    }
    case "xclient":
      if (smtp.helo) return send(s, "client-hello", `${smtp.heloCommand === "EHLO" ? "EHLO" : "HELO"} ${smtp.helo}\r\n`);
      return afterHello(s, rest);
    case "client-hello":
      return afterHello(smtp.heloCommand === "EHLO" ? { ...s, ehlo: readEhlo(text) } : s, rest);
    case "auth-login":
      return send(s, "auth-login-user", encodeBase64(toBytes(s.init.login)) + "\r\n");
    case "auth-login-user":
      return send(s, "auth", encodeBase64(toBytes(s.init.password)) + "\r\n");
    case "auth":
      return done(s, toBytes(AUTH_OK), rest);
    case "from":
      return send(s, "to", (smtp.to[0] ?? "") + "\r\n");
  }
}

export function stepSmtpUpstream(s: SmtpUpstreamState, input: UpstreamInput): Result {
  if (input.kind === "tls-started") {
    if (s.phase !== "tls-wait") throw new Error("tls-started outside upstream STARTTLS");
    return sayHello({ ...s, buf: EMPTY });
  }
  if (s.phase === "done" || s.phase === "tls-wait") return { state: s, actions: [] };
  let state: SmtpUpstreamState = { ...s, buf: concat(s.buf, input.bytes) };
  const limit = s.init.server.config.proxyBuffer;
  for (;;) {
    // a whole reply, all its lines, must fit proxy_buffer as in nginx
    const r = takeLine(state.buf, limit - state.reply.length);
    if (r.kind === "more") return { state, actions: [] };
    if (r.kind === "too-long") return fail(state, null, `upstream sent too long response line: "${escapeForLog(fromBytes(state.reply) + r.head)}"`);
    const reply = concat(state.reply, r.raw);
    if (r.line.length >= 4 && r.line[3] === "-") {
      state = { ...state, reply, buf: r.rest };
      continue;
    }
    const next = onReply({ ...state, reply: EMPTY, buf: EMPTY }, reply, r.rest);
    // anything the backend sent past its reply, before our next command, is dropped (as nginx
    // empties its buffer after each command); at the end it goes on to the client
    return next;
  }
}
