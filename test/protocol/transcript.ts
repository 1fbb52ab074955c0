// Transcript replay for the pure protocol machines. A transcript is a text file:
//   S: line     the proxy sends this line (CRLF added)
//   C: line     the client sends this line (CRLF added); c: raw bytes, no CRLF (escapes \r \n \xNN)
//   A: action   the machine asks for something: ask-auth METHOD "LOGIN" "PASS" | start-tls | close |
//               proxy HOST:PORT "LOGIN" "PASS" leftover="..."
//   R: result   the auth answer: ok HOST:PORT "LOGIN" "PASS" | fail keep|close "MESSAGE" | error
//   T: tls-started
//   D: delay-done (the "delay" action's time passed with no client input)
//   An SMTP ask-auth carries helo="..." from="..." to="..." when the credentials have them;
//   an SMTP proxy action ends in smtp(helo="..." cmd=EHLO|HELO from="..." to="..." method=M).
//   The delay action renders as: delay MS "EARLY REPLY"
// Lines starting with # are comments; "config: YAML" lines before the first exchange set
// server directives. Each run of C/c lines is also fed split at every byte offset and byte
// by byte, from the same state (the machines are pure, so a state can be reused).

import assert from "node:assert/strict";
import type { Action, Input, ProtocolMachine, SessionStart, Step } from "../../src/protocol/types.ts";

export interface Transcript {
  readonly name: string;
  readonly config: string[];
  readonly steps: { kind: "C" | "S" | "A" | "R" | "T" | "D"; text: string }[];
}

export function unescape(s: string): string {
  return s.replace(/\\(r|n|t|\\|x[0-9a-fA-F]{2})/g, (_, e: string) =>
    e === "r" ? "\r" : e === "n" ? "\n" : e === "t" ? "\t" : e === "\\" ? "\\" : String.fromCharCode(parseInt(e.slice(1), 16)));
}

export function escape(s: string): string {
  return s.replace(/[\x00-\x1f\x7f-\xff\\]/g, (c) =>
    c === "\r" ? "\\r" : c === "\n" ? "\\n" : c === "\\" ? "\\\\" : "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0"));
}

export function parseTranscript(name: string, text: string): Transcript {
  const config: string[] = [];
  const steps: Transcript["steps"] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\r$/, "");
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("config: ")) {
      config.push(line.slice(8));
      continue;
    }
    const m = /^([CcSARTDs]): ?(.*)$/.exec(line);
    if (!m) throw new Error(`${name}: cannot read line "${line}"`);
    const body = unescape(m[2]);
    switch (m[1]) {
      case "C": steps.push({ kind: "C", text: body + "\r\n" }); break;
      case "c": steps.push({ kind: "C", text: body }); break;
      case "S": steps.push({ kind: "S", text: body + "\r\n" }); break;
      case "s": steps.push({ kind: "S", text: body }); break;
      default: steps.push({ kind: m[1] as "A" | "R" | "T" | "D", text: m[2] });
    }
  }
  return { name, config, steps };
}

const bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const q = (s: string) => `"${escape(s).replace(/"/g, "\\\"")}"`;

/** What the machine did, in transcript notation: replies concatenated, other actions as A: lines. */
export function render(actions: readonly Action[]): { out: string; acts: string[] } {
  let out = "";
  const acts: string[] = [];
  for (const a of actions) {
    switch (a.kind) {
      case "reply": out += a.text; break;
      case "log": break;
      case "ask-auth": {
        const c = a.credentials;
        const smtp = c.smtp ? ` helo=${q(c.smtp.helo)} from=${q(c.smtp.from)} to=${q(c.smtp.to)}` : "";
        acts.push(`ask-auth ${c.method} ${q(c.login)} ${q(c.password)}${smtp}`);
        break;
      }
      case "start-tls": acts.push("start-tls"); break;
      case "close": acts.push("close"); break;
      case "proxy": {
        const m = a.smtp;
        const smtp = m ? ` smtp(helo=${q(m.helo)} cmd=${m.heloCommand} from=${q(m.from)} to=${q(m.to.join(","))} method=${m.authMethod})` : "";
        acts.push(`proxy ${a.to.host}:${a.to.port} ${q(a.login)} ${q(a.password)} leftover=${q(String.fromCharCode(...a.leftover))}${smtp}`);
        break;
      }
      case "delay": acts.push(`delay ${a.ms} ${q(a.earlyReply)}`); break;
    }
  }
  return { out, acts };
}

function parseResult(text: string): Input {
  if (text === "error") return { kind: "auth-result", outcome: { kind: "error", why: "test" } };
  let m = /^ok (\S+):(\d+) "(.*)" "(.*)"$/.exec(text);
  if (m) return { kind: "auth-result", outcome: { kind: "ok", host: m[1], port: Number(m[2]), login: unescape(m[3]), password: unescape(m[4]) } };
  m = /^fail (keep|close) "(.*)"$/.exec(text);
  if (m) return { kind: "auth-result", outcome: { kind: "fail", message: m[2], keepOpen: m[1] === "keep" } };
  throw new Error(`cannot read result "${text}"`);
}

function feed<S>(m: ProtocolMachine<S, unknown>, state: S, chunks: Uint8Array[]): Step<S> {
  const actions: Action[] = [];
  for (const c of chunks) {
    const r = m.step(state, { kind: "bytes", bytes: c });
    state = r.state;
    actions.push(...r.actions);
  }
  return { state, actions };
}

/** Replays a transcript, checking every split of every client block. Returns the number of checks. */
export function replay<S>(m: ProtocolMachine<S, unknown>, t: Transcript, start: SessionStart): number {
  let checks = 0;
  let { state, actions } = m.start(start);
  let i = 0;
  const expectAfter = (got: readonly Action[], label: string) => {
    // consume the S and A lines that follow
    let want = "";
    const wantActs: string[] = [];
    while (i < t.steps.length && (t.steps[i].kind === "S" || t.steps[i].kind === "A")) {
      if (t.steps[i].kind === "S") want += t.steps[i].text;
      else wantActs.push(t.steps[i].text);
      i++;
    }
    const r = render(got);
    assert.equal(escape(r.out), escape(want), `${t.name}: ${label}: replies`);
    assert.deepEqual(r.acts, wantActs, `${t.name}: ${label}: actions`);
    checks++;
    return { want, wantActs };
  };
  expectAfter(actions, "start");
  while (i < t.steps.length) {
    const s = t.steps[i];
    if (s.kind === "C") {
      let text = "";
      while (i < t.steps.length && t.steps[i].kind === "C") text += t.steps[i++].text;
      const all = bytes(text);
      const at = i;
      const whole = feed(m, state, [all]);
      const { want, wantActs } = expectAfter(whole.actions, `after ${q(text)}`);
      const after = i;
      for (let k = 1; k < all.length; k++) {
        const split = feed(m, state, [all.subarray(0, k), all.subarray(k)]);
        const r = render(split.actions);
        assert.equal(escape(r.out), escape(want), `${t.name}: split at ${k} of ${q(text)}`);
        assert.deepEqual(r.acts, wantActs, `${t.name}: split at ${k} of ${q(text)}: actions`);
        checks++;
      }
      const single = feed(m, state, Array.from(all, (b) => Uint8Array.of(b)));
      const r1 = render(single.actions);
      assert.equal(escape(r1.out), escape(want), `${t.name}: byte by byte ${q(text)}`);
      assert.deepEqual(r1.acts, wantActs, `${t.name}: byte by byte ${q(text)}: actions`);
      void at;
      void after;
      state = whole.state;
      continue;
    }
    if (s.kind === "R" || s.kind === "T" || s.kind === "D") {
      i++;
      const input: Input = s.kind === "T" ? { kind: "tls-started" } : s.kind === "D" ? { kind: "delay-done" } : parseResult(s.text);
      const r = m.step(state, input);
      state = r.state;
      expectAfter(r.actions, s.text);
      continue;
    }
    throw new Error(`${t.name}: unexpected ${s.kind}: ${s.text} at step ${i}`);
  }
  return checks;
}
