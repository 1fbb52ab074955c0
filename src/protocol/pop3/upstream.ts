// Logging in to the POP3 backend as nginx's ngx_mail_proxy_pop3_handler does: wait for "+OK",
// send "USER name", wait for "+OK", send "PASS secret", and pass the backend's final "+OK" line
// on to the client. With proxy_ssl: starttls, "STLS" comes first.

import { concat, EMPTY, fromBytes } from "../../util/bytes.ts";
import { takeLine } from "../lines.ts";
import type { UpstreamAction, UpstreamInput, UpstreamStart } from "../types.ts";
import { POP3_INTERNAL_ERROR } from "./session.ts";

export type Pop3UpstreamPhase = "greeting" | "starttls" | "tls-wait" | "user" | "password" | "done";

export interface Pop3UpstreamState {
  readonly init: UpstreamStart;
  readonly phase: Pop3UpstreamPhase;
  readonly buf: Uint8Array;
}

type Result = { state: Pop3UpstreamState; actions: UpstreamAction[] };

/** Bytes that would end a USER or PASS line early and start another command. */
const LINE_BREAKING = /[\r\n\0]/;

export function startPop3Upstream(init: UpstreamStart): Result {
  const state: Pop3UpstreamState = { init, phase: "greeting", buf: EMPTY };
  // the session already refuses these; this keeps the backend safe whoever calls us
  const bad = LINE_BREAKING.test(init.login) ? "user name" : LINE_BREAKING.test(init.password) ? "password" : "";
  if (bad) {
    return {
      state: { ...state, phase: "done" },
      actions: [{ kind: "fail", toClient: POP3_INTERNAL_ERROR, log: `refusing to send a ${bad} with CR, LF or NUL to upstream` }],
    };
  }
  return { state, actions: [] };
}

function fail(s: Pop3UpstreamState, line: Uint8Array | null, why: string): Result {
  const pass = s.init.server.config.proxyPassErrorMessage && line !== null;
  const text = pass ? fromBytes(line!) : POP3_INTERNAL_ERROR;
  return { state: { ...s, phase: "done" }, actions: [{ kind: "fail", toClient: text, log: why }] };
}

function user(s: Pop3UpstreamState): string {
  return `USER ${s.init.login}\r\n`;
}

export function stepPop3Upstream(s: Pop3UpstreamState, input: UpstreamInput): Result {
  if (input.kind === "tls-started") {
    if (s.phase !== "tls-wait") throw new Error("tls-started outside upstream STLS");
    return { state: { ...s, phase: "user", buf: EMPTY }, actions: [{ kind: "send", text: user(s) }] };
  }
  let state: Pop3UpstreamState = { ...s, buf: concat(s.buf, input.bytes) };
  const actions: UpstreamAction[] = [];
  const limit = s.init.server.config.proxyBuffer;
  const failWith = (line: Uint8Array | null, why: string): Result => {
    const f = fail(state, line, why);
    return { state: f.state, actions: [...actions, ...f.actions] };
  };
  for (;;) {
    if (state.phase === "done" || state.phase === "tls-wait") return { state, actions };
    const r = takeLine(state.buf, limit);
    if (r.kind === "more") return { state, actions };
    if (r.kind === "too-long") return failWith(null, `upstream sent too long response line: "${r.head}"`);
    state = { ...state, buf: r.rest };
    const line = r.line;
    if (!line.startsWith("+OK")) {
      const what = state.phase === "starttls" ? "upstream refused STLS" : "upstream sent invalid response";
      return failWith(r.raw, `${what}: "${line}"`);
    }
    switch (state.phase) {
      case "greeting":
        if (state.init.starttls) {
          actions.push({ kind: "send", text: "STLS\r\n" });
          state = { ...state, phase: "starttls" };
        } else {
          actions.push({ kind: "send", text: user(state) });
          state = { ...state, phase: "user" };
        }
        break;
      case "starttls":
        // bytes after the +OK would be plaintext injected before TLS: dropped
        actions.push({ kind: "start-tls" });
        return { state: { ...state, phase: "tls-wait", buf: EMPTY }, actions };
      case "user":
        actions.push({ kind: "send", text: `PASS ${state.init.password}\r\n` });
        state = { ...state, phase: "password" };
        break;
      case "password":
        actions.push({ kind: "done", toClient: r.raw, leftover: state.buf });
        return { state: { ...state, phase: "done", buf: EMPTY }, actions };
    }
  }
}
