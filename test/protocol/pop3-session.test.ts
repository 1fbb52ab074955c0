import assert from "node:assert/strict";
import { test } from "node:test";
import { parsePop3Command, parsePop3Continuation } from "../../src/protocol/pop3/frame.ts";
import { pop3 } from "../../src/protocol/pop3/index.ts";
import type { Action, Step } from "../../src/protocol/types.ts";
import type { Pop3State } from "../../src/protocol/pop3/session.ts";
import { encodeBase64, toBytes } from "../../src/util/bytes.ts";
import { testServerConfig } from "../support/server-config.ts";

const enc = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

function session(overrides = {}, tls = false): Step<Pop3State> {
  const server = pop3.compile(testServerConfig({ protocol: "pop3", ...overrides }));
  return pop3.start({ server, tls, nowSec: 1700000000, random: 12345, clientAddr: "127.0.0.2", clientHost: "[UNAVAILABLE]" });
}

function feed(state: Pop3State, text: string, chunk = 0): Step<Pop3State> {
  const b = enc(text);
  const actions: Action[] = [];
  const size = chunk || b.length;
  for (let i = 0; i < b.length; i += size) {
    const r = pop3.step(state, { kind: "bytes", bytes: b.subarray(i, i + size) });
    state = r.state;
    actions.push(...r.actions);
  }
  return { state, actions };
}

const replies = (actions: readonly Action[]) => actions.filter((a) => a.kind === "reply").map((a) => (a as { text: string }).text).join("");

test("parsePop3Command reads nginx's four-letter commands and keeps spaces in USER and PASS arguments", () => {
  assert.deepEqual(parsePop3Command(enc("apop  alice  digest\r\n")), { kind: "command", name: "APOP", args: ["alice", "digest"], end: 21 });
  assert.deepEqual(parsePop3Command(enc("PASS  a b \r\n")), { kind: "command", name: "PASS", args: ["a b "], end: 12 });
  assert.deepEqual(parsePop3Command(enc("CAPA\n")), { kind: "command", name: "CAPA", args: [], end: 5 });
  assert.deepEqual(parsePop3Command(enc("AUTH PLAIN a b c\r\n")), { kind: "invalid", end: 18 });
  assert.deepEqual(parsePop3Command(enc("RETR 1\r\nNOOP\r\n")), { kind: "invalid", end: 8 });
  assert.deepEqual(parsePop3Command(enc("USER alice")), { kind: "incomplete" });
  assert.deepEqual(parsePop3Command(enc("USER alice\r")), { kind: "incomplete" });
  assert.deepEqual(parsePop3Command(enc("X1")), { kind: "incomplete" }, "a bad line waits for its LF");
});

test("parsePop3Continuation reads a SASL line as AUTH arguments, the first possibly empty", () => {
  assert.deepEqual(parsePop3Continuation(enc("YWxpY2U=\r\n")), { kind: "continuation", args: ["YWxpY2U="], end: 10 });
  assert.deepEqual(parsePop3Continuation(enc(" x\r\n")), { kind: "continuation", args: ["", "x"], end: 4 });
  assert.deepEqual(parsePop3Continuation(enc("\r\n")), { kind: "continuation", args: [""], end: 2 });
  assert.deepEqual(parsePop3Continuation(enc("a b c d\r\n")), { kind: "invalid", end: 9 });
});

test("stepPop3 accepts a 12 KB AUTH PLAIN initial response with the default pop3_client_buffer", () => {
  const password = "p".repeat(9000);
  const ir = encodeBase64(toBytes(`\0alice\0${password}`));
  assert.ok(ir.length > 12_000);
  for (const chunk of [0, 1000, 4096]) {
    const { state } = session();
    const r = feed(state, `AUTH PLAIN ${ir}\r\n`, chunk);
    const ask = r.actions.find((a) => a.kind === "ask-auth");
    assert.ok(ask && ask.kind === "ask-auth", `chunk ${chunk}: asked for auth`);
    assert.equal(ask.credentials.login, "alice");
    assert.equal(ask.credentials.password, password);
    assert.equal(replies(r.actions), "");
  }
});

test("stepPop3 refuses a line longer than pop3_client_buffer (16k by default) and closes", () => {
  const { state } = session();
  const r = feed(state, `AUTH PLAIN ${"A".repeat(16_384)}`, 1024);
  assert.equal(replies(r.actions), "-ERR invalid command\r\n");
  assert.ok(r.actions.some((a) => a.kind === "close"));
  assert.equal(r.state.phase, "closed");
  const later = pop3.step(r.state, { kind: "bytes", bytes: enc("\r\nNOOP\r\n") });
  assert.deepEqual(later.actions, [], "nothing is read after the close");
});

test("stepPop3 on an implicit TLS listener lists everything and refuses STLS, even with starttls only", () => {
  const { state, actions } = session({ starttls: "only" }, true);
  assert.equal(replies(actions), "+OK POP3 ready\r\n");
  const r = feed(state, "CAPA\r\nSTLS\r\nUSER alice\r\n");
  assert.equal(replies(r.actions), "+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\n.\r\n-ERR invalid command\r\n+OK\r\n");
});

test("stepPop3 keeps pipelined bytes as pending while the auth service answers", () => {
  const { state } = session();
  const r = feed(state, "USER alice\r\nPASS secret\r\nSTAT\r\n");
  assert.equal(r.state.phase, "auth-wait");
  assert.equal(String.fromCharCode(...pop3.pending(r.state)), "STAT\r\n");
});

test("stepPop3 logs why it refuses a user name with CR or LF, without the password", () => {
  const { state } = session();
  const r = feed(state, `AUTH PLAIN ${encodeBase64(toBytes("\0alice\r\nDELE 1\0topsecret"))}\r\n`);
  const done = pop3.step(r.state, { kind: "auth-result", outcome: { kind: "ok", host: "127.0.0.1", port: 110, login: "alice\r\nDELE 1", password: "topsecret" } });
  assert.equal(replies(done.actions), "-ERR internal server error\r\n");
  assert.ok(!done.actions.some((a) => a.kind === "proxy"), "no backend login");
  const log = done.actions.find((a) => a.kind === "log");
  assert.ok(log && log.kind === "log");
  assert.match(log.message, /user name contains CR, LF or NUL/);
  assert.doesNotMatch(JSON.stringify(done.actions), /topsecret/);
});
