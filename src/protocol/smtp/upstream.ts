// Logging in to the SMTP backend as nginx's ngx_mail_proxy_smtp_handler does: wait for 220, say
// EHLO (HELO when the client used HELO and xclient is off) with our server_name, pass the client
// on with XCLIENT, replay the client's own EHLO/HELO, then either AUTH PLAIN (proxy_smtp_auth),
// the buffered MAIL FROM/RCPT TO (smtp_auth none), or nothing; the client gets "235 2.0.0 OK",
// or for smtp_auth none the backend's own reply to RCPT TO.
//
// Beyond nginx: with proxy_smtp_auth, AUTH LOGIN when the backend's EHLO offers LOGIN but not
// PLAIN; XCLIENT PORT= and PROTO= when the backend's XCLIENT line lists them; STARTTLS to the
// backend (proxy_ssl: starttls); for smtp_auth none, MAIL FROM and RCPT TO in one write when the
// backend's EHLO offers PIPELINING (RFC 2920), nginx waiting for each reply.

import { caselessAt, concat, EMPTY, encodeBase64, escapeForLog, fromBytes, LF, toBytes } from "../../util/bytes.ts";
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
  | "from-to" // MAIL FROM and RCPT TO pipelined: waiting for the reply to MAIL FROM
  | "to"
  | "done";

export interface SmtpUpstreamState {
  readonly init: UpstreamStart;
  readonly phase: SmtpUpstreamPhase;
  /** The reply being read: its whole lines up to `scanned` are "NNN-" lines, more must follow. */
  readonly buf: Uint8Array;
  readonly scanned: number;
  /** The backend's latest EHLO reply, read for a keyword when one is needed (ehloOffers). */
  readonly ehlo: string;
  /** The backend's latest EHLO, in a session greeted with EHLO, offers PIPELINING. */
  readonly pipelining: boolean;
}

type Result = { state: SmtpUpstreamState; actions: UpstreamAction[] };

// deno-lint-ignore no-control-regex
const XTEXT_ESCAPED = /[\x00-\x20\x7f-\uffff+=]/;

/**
 * xtext (RFC 3461) as nginx's NGX_ESCAPE_MAIL_XTEXT writes it for XCLIENT: bytes outside
 * "!".."~", "+" and "=" become "+XX". No CR, LF or space can reach the backend unescaped.
 */
export function encodeXtext(text: string): string {
  if (!XTEXT_ESCAPED.test(text)) return text; // the usual address or name
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
  return { state: { init, phase: "greeting", buf: EMPTY, scanned: 0, ehlo: "", pipelining: false }, actions: [] };
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
  return send({ ...s, ehlo: "", pipelining: false }, "hello", `${verb} ${cfg.serverName}\r\n`);
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
  const offered = ehloOffers(s.ehlo, "XCLIENT") ?? [];
  if (offered.includes("PORT")) line += ` PORT=${init.clientPort}`;
  if (offered.includes("PROTO") && smtp.helo) line += ` PROTO=${smtp.heloCommand === "EHLO" ? "ESMTP" : "SMTP"}`;
  return line + "\r\n";
}

/** The backend's reply to an EHLO we sent: kept, with whether it offers PIPELINING. */
function ehloHeard(s: SmtpUpstreamState, raw: Uint8Array): SmtpUpstreamState {
  const ehlo = fromBytes(raw);
  return { ...s, ehlo, pipelining: ehloOffers(ehlo, "PIPELINING") !== undefined };
}

/** After the greetings: the envelope (smtp_auth none), AUTH (proxy_smtp_auth), or done. */
function afterHello(s: SmtpUpstreamState, rest: Uint8Array): Result {
  const smtp = smtpOf(s.init);
  if (smtp.authMethod === "none") {
    // RFC 2920: MAIL and RCPT may go in one group; the client still gets the reply to RCPT TO
    if (s.pipelining && smtp.to.length > 0) return send(s, "from-to", `${smtp.from}\r\n${smtp.to[0]}\r\n`);
    return send(s, "from", smtp.from + "\r\n");
  }
  if (s.init.server.config.proxySmtpAuth) {
    if (s.init.password === "") return fail(s, null, "no password available");
    const mechs = ehloOffers(s.ehlo, "AUTH");
    if (mechs && !mechs.includes("PLAIN") && mechs.includes("LOGIN")) return send(s, "auth-login", "AUTH LOGIN\r\n");
    const plain = encodeBase64(toBytes(`\0${s.init.login}\0${s.init.password}`));
    return send(s, "auth", `AUTH PLAIN ${plain}\r\n`);
  }
  return done(s, toBytes(AUTH_OK), rest);
}

function done(s: SmtpUpstreamState, toClient: Uint8Array, leftover: Uint8Array): Result {
  return { state: { ...s, phase: "done", buf: EMPTY }, actions: [{ kind: "done", toClient, leftover }] };
}

/**
 * The parameters of an EHLO keyword (upper case), undefined when the reply does not offer it:
 * "250-AUTH PLAIN LOGIN" and "250-AUTH=PLAIN" both give AUTH [PLAIN, LOGIN...], and a keyword on
 * several lines gets all their parameters.
 */
function ehloOffers(reply: string, keyword: string): string[] | undefined {
  let out: string[] | undefined;
  let at = reply.indexOf("\n") + 1; // the first line is the greeting
  while (at > 0 && at < reply.length) {
    const lf = reply.indexOf("\n", at);
    const end = lf < 0 ? reply.length : lf;
    let k = at + 4; // after "250-"
    at = end + 1;
    while (k < end && reply.charCodeAt(k) === 0x20) k++;
    if (!caselessAt(reply, k, keyword)) continue;
    const words = reply.slice(k, end).trim().toUpperCase().split(/[ =]+/).filter(Boolean);
    if (words[0] === keyword) out = [...(out ?? []), ...words.slice(1)];
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
  "from-to": (c) => c === "250",
};

/** One whole reply arrived: check its code for the phase and send what comes next. */
function onReply(s: SmtpUpstreamState, raw: Uint8Array, rest: Uint8Array): Result {
  // the code only: the whole text is decoded where it is kept (EHLO) or logged
  const code = raw.length >= 3 ? String.fromCharCode(raw[0], raw[1], raw[2]) : "";
  const smtp = smtpOf(s.init);
  if (s.phase === "to") return done(s, raw, rest); // the backend's answer to RCPT TO goes to the client as it is
  if (s.phase === "tls-wait" || s.phase === "done") throw new Error(`SMTP upstream reply in phase ${s.phase}`);
  if (!REPLY_WANTED[s.phase](code)) {
    const first = fromBytes(raw).split(/\r?\n/)[0];
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
      const state = ehloHeard(s, raw); // a reply to HELO is one line: no keywords
      if (cfg.xclient) return send(state, "xclient", xclientLine(state));
      return afterHello(state, rest);
    }
    case "xclient":
      if (smtp.helo) return send(s, "client-hello", `${smtp.heloCommand === "EHLO" ? "EHLO" : "HELO"} ${smtp.helo}\r\n`);
      return afterHello({ ...s, pipelining: false }, rest); // XCLIENT started a new session, not greeted
    case "client-hello":
      return afterHello(smtp.heloCommand === "EHLO" ? ehloHeard(s, raw) : { ...s, pipelining: false }, rest);
    case "auth-login":
      return send(s, "auth-login-user", encodeBase64(toBytes(s.init.login)) + "\r\n");
    case "auth-login-user":
      return send(s, "auth", encodeBase64(toBytes(s.init.password)) + "\r\n");
    case "auth":
      return done(s, toBytes(AUTH_OK), rest);
    case "from":
      return send(s, "to", (smtp.to[0] ?? "") + "\r\n");
    case "from-to":
      // the reply to RCPT TO may have come in the same read
      return stepSmtpUpstream({ ...s, phase: "to" }, { kind: "bytes", bytes: rest });
  }
}

export function stepSmtpUpstream(s: SmtpUpstreamState, input: UpstreamInput): Result {
  if (input.kind === "tls-started") {
    if (s.phase !== "tls-wait") throw new Error("tls-started outside upstream STARTTLS");
    return sayHello({ ...s, buf: EMPTY, scanned: 0 });
  }
  if (s.phase === "done" || s.phase === "tls-wait") return { state: s, actions: [] };
  const buf = concat(s.buf, input.bytes);
  // a whole reply, all its lines, must fit proxy_buffer as in nginx
  const limit = s.init.server.config.proxyBuffer;
  for (let at = s.scanned;;) {
    const lf = buf.indexOf(LF, at);
    if (lf < 0 ? buf.length >= limit : lf + 1 > limit) {
      const head = fromBytes(buf, 0, at + 128); // the reply so far and 128 bytes of its last line
      return fail({ ...s, buf: EMPTY }, null, `upstream sent too long response line: "${escapeForLog(head)}"`);
    }
    if (lf < 0) return { state: { ...s, buf, scanned: at }, actions: [] };
    const end = lf > at && buf[lf - 1] === 0x0d ? lf - 1 : lf;
    if (end - at >= 4 && buf[at + 3] === 0x2d) { // "250-...": more lines follow
      at = lf + 1;
      continue;
    }
    const whole = lf + 1 === buf.length;
    // anything the backend sent past its reply, before our next command, is dropped (as nginx
    // empties its buffer after each command); at the end it goes on to the client
    return onReply({ ...s, buf: EMPTY, scanned: 0 }, whole ? buf : buf.subarray(0, lf + 1), whole ? EMPTY : buf.subarray(lf + 1));
  }
}
