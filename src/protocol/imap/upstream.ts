// Logging in to the IMAP backend as nginx's ngx_mail_proxy_imap_handler does: wait for "* OK",
// send "TAG LOGIN {n}", the user name as a literal, then the password as a literal, and pass the
// backend's tagged OK (and any untagged lines before it) on to the client.
//
// One difference: a backend whose greeting lists LITERAL+ (or LITERAL- with both literals within
// its 4096 bytes, RFC 7888) gets the whole LOGIN in one write with non-synchronizing literals
// "{n+}", instead of waiting twice for its "+" (Dovecot greets with LITERAL+). The bytes of the
// user name and password are the same either way.

import { caselessAt, concat, EMPTY, fromBytes } from "../../util/bytes.ts";
import { takeLine } from "../lines.ts";
import type { UpstreamAction, UpstreamInput, UpstreamStart } from "../types.ts";
import { IMAP_INTERNAL_ERROR } from "./session.ts";

export type ImapUpstreamPhase = "greeting" | "starttls" | "tls-wait" | "login" | "user" | "password" | "done";

export interface ImapUpstreamState {
  readonly init: UpstreamStart;
  readonly phase: ImapUpstreamPhase;
  readonly buf: Uint8Array;
  readonly untagged: Uint8Array; // untagged lines before the tagged reply to the password
}

export function startImapUpstream(init: UpstreamStart): { state: ImapUpstreamState; actions: UpstreamAction[] } {
  return { state: { init, phase: "greeting", buf: EMPTY, untagged: EMPTY }, actions: [] };
}

function fail(s: ImapUpstreamState, line: Uint8Array | null, why: string): { state: ImapUpstreamState; actions: UpstreamAction[] } {
  const pass = s.init.server.config.proxyPassErrorMessage && line !== null;
  const text = pass ? fromBytes(line!) : IMAP_INTERNAL_ERROR;
  return { state: { ...s, phase: "done" }, actions: [{ kind: "fail", toClient: text, log: why }] };
}

function tag(s: ImapUpstreamState): string {
  return s.init.clientTag || "* ";
}

export function stepImapUpstream(s: ImapUpstreamState, input: UpstreamInput): { state: ImapUpstreamState; actions: UpstreamAction[] } {
  if (input.kind === "tls-started") {
    return { state: { ...s, phase: "login", buf: EMPTY }, actions: [{ kind: "send", text: `${tag(s)}LOGIN {${s.init.login.length}}\r\n` }] };
  }
  let state: ImapUpstreamState = { ...s, buf: concat(s.buf, input.bytes) };
  const actions: UpstreamAction[] = [];
  const limit = s.init.server.config.proxyBuffer;
  for (;;) {
    if (state.phase === "done" || state.phase === "tls-wait") return { state, actions };
    const r = takeLine(state.buf, limit);
    if (r.kind === "more") return { state, actions };
    if (r.kind === "too-long") {
      const f = fail(state, null, `upstream sent too long response line: "${r.head}"`);
      return { state: f.state, actions: [...actions, ...f.actions] };
    }
    state = { ...state, buf: r.rest };
    const line = r.line;
    switch (state.phase) {
      case "greeting":
        if (!line.startsWith("* OK")) return withFail(actions, fail(state, r.raw, `upstream sent invalid response: "${line}"`));
        if (state.init.starttls) {
          actions.push({ kind: "send", text: `${tag(state)}STARTTLS\r\n` });
          state = { ...state, phase: "starttls" };
        } else if (greetingAllowsNonSyncLiterals(line, Math.max(state.init.login.length, state.init.password.length))) {
          const { login, password } = state.init;
          actions.push({ kind: "send", text: `${tag(state)}LOGIN {${login.length}+}\r\n${login} {${password.length}+}\r\n${password}\r\n` });
          state = { ...state, phase: "password" };
        } else {
          actions.push({ kind: "send", text: `${tag(state)}LOGIN {${state.init.login.length}}\r\n` });
          state = { ...state, phase: "login" };
        }
        break;
      case "starttls":
        if (line.startsWith("* ")) break;
        if (!line.startsWith(tag(state) + "OK")) return withFail(actions, fail(state, r.raw, `upstream refused STARTTLS: "${line}"`));
        // bytes after the OK would be plaintext injected before TLS: dropped
        actions.push({ kind: "start-tls" });
        return { state: { ...state, phase: "tls-wait", buf: EMPTY }, actions };
      case "login":
        if (!line.startsWith("+")) return withFail(actions, fail(state, r.raw, `upstream sent invalid response: "${line}"`));
        actions.push({ kind: "send", text: `${state.init.login} {${state.init.password.length}}\r\n` });
        state = { ...state, phase: "user" };
        break;
      case "user":
        if (!line.startsWith("+")) return withFail(actions, fail(state, r.raw, `upstream sent invalid response: "${line}"`));
        actions.push({ kind: "send", text: `${state.init.password}\r\n` });
        state = { ...state, phase: "password" };
        break;
      case "password":
        if (line.startsWith("* ")) {
          // untagged data (e.g. CAPABILITY) before the tagged reply goes to the client with it;
          // bounded by proxy_buffer like the rest of the login dialogue
          const untagged = concat(state.untagged, r.raw);
          if (untagged.length > limit) return withFail(actions, fail(state, null, "upstream sent too long response"));
          state = { ...state, untagged };
          break;
        }
        if (line.startsWith(tag(state) + "OK")) {
          actions.push({ kind: "done", toClient: concat(state.untagged, r.raw), leftover: state.buf });
          return { state: { ...state, phase: "done", buf: EMPTY }, actions };
        }
        return withFail(actions, fail(state, concat(state.untagged, r.raw), `upstream sent invalid response: "${line}"`));
    }
  }
}

const GREETING_CAPABILITY = "* OK [CAPABILITY ";

/**
 * Whether a greeting's CAPABILITY response code offers non-synchronizing literals (RFC 7888) for
 * literals of up to `longest` bytes: LITERAL+ for any size, LITERAL- up to 4096. A greeting
 * without the code (the capabilities are then unknown) gets nginx's synchronizing literals.
 */
export function greetingAllowsNonSyncLiterals(line: string, longest: number): boolean {
  if (!caselessAt(line, 0, GREETING_CAPABILITY)) return false;
  const end = line.indexOf("]", GREETING_CAPABILITY.length);
  if (end < 0) return false;
  for (let at = GREETING_CAPABILITY.length; at < end;) {
    let next = line.indexOf(" ", at);
    if (next < 0 || next > end) next = end;
    if (next - at === 8 && caselessAt(line, at, "LITERAL")) {
      const sign = line.charCodeAt(at + 7);
      if (sign === 0x2b /* + */ || (sign === 0x2d /* - */ && longest <= 4096)) return true;
    }
    at = next + 1;
  }
  return false;
}

function withFail(
  before: UpstreamAction[],
  f: { state: ImapUpstreamState; actions: UpstreamAction[] },
): { state: ImapUpstreamState; actions: UpstreamAction[] } {
  return { state: f.state, actions: [...before, ...f.actions] };
}
