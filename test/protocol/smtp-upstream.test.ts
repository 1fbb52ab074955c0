// The SMTP upstream machine against a fake SMTP server in memory: what Postern sends to the
// backend, byte for byte, and what the client gets.

import assert from "node:assert/strict";
import { test } from "node:test";
import type { ServerConfig } from "../../src/config/types.ts";
import { smtp } from "../../src/protocol/smtp/index.ts";
import { encodeXtext } from "../../src/protocol/smtp/upstream.ts";
import type { UpstreamAction, UpstreamStart } from "../../src/protocol/types.ts";
import { testServerConfig } from "../support/server-config.ts";

const enc = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const dec = (b: Uint8Array) => String.fromCharCode(...b);

type Envelope = NonNullable<UpstreamStart["smtp"]>;

interface Session {
  config?: Partial<ServerConfig>;
  login?: string;
  password?: string;
  clientAddr?: string;
  clientHost?: string;
  starttls?: boolean;
  smtp?: Partial<Envelope>;
}

const GREETING = "220 backend.example ESMTP Postfix\r\n";
const EHLO_XCLIENT = "250-backend.example\r\n250-PIPELINING\r\n250-XCLIENT NAME ADDR PROTO HELO LOGIN PORT\r\n250 8BITMIME\r\n";
const EHLO_PLAIN = "250-backend.example\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n";

/**
 * A fake backend: `answer` maps each command line Postern sends (without CRLF) to the reply.
 * Replies are fed whole (chunk 0) or in pieces of `chunk` bytes.
 */
function run(session: Session, answer: (line: string) => string, chunk = 0) {
  const server = smtp.compile(testServerConfig({ protocol: "smtp", ...session.config }));
  const init: UpstreamStart = {
    server,
    login: session.login ?? "alice",
    password: session.password ?? "s3cret",
    clientTag: "",
    clientAddr: session.clientAddr ?? "127.0.0.2",
    clientHost: session.clientHost ?? "[UNAVAILABLE]",
    clientPort: 5555,
    starttls: session.starttls ?? false,
    smtp: { helo: "client.example", heloCommand: "EHLO", from: "", to: [], authMethod: "plain", ...session.smtp },
  };
  let { state, actions } = smtp.upstreamStart(init);
  const all: UpstreamAction[] = [...actions];
  const sent: string[] = [];
  const feed = (text: string) => {
    const b = enc(text);
    const size = chunk || b.length || 1;
    for (let i = 0; i < b.length; i += size) {
      const r = smtp.upstreamStep(state, { kind: "bytes", bytes: b.subarray(i, i + size) });
      state = r.state;
      all.push(...r.actions);
      queue.push(...r.actions);
    }
  };
  const queue: UpstreamAction[] = [];
  feed(answer("") || GREETING);
  for (let guard = 0; guard < 50; guard++) {
    const a = queue.shift();
    if (!a) break;
    if (a.kind === "send") {
      for (const line of a.text.split("\r\n").slice(0, -1)) {
        sent.push(line);
        const reply = answer(line);
        if (reply) feed(reply);
      }
    } else if (a.kind === "start-tls") {
      const r = smtp.upstreamStep(state, { kind: "tls-started" });
      state = r.state;
      all.push(...r.actions);
      queue.push(...r.actions);
    }
  }
  const end = all.find((a) => a.kind === "done" || a.kind === "fail");
  return { sent, actions: all, end, raw: all.filter((a) => a.kind === "send").map((a) => (a as { text: string }).text).join("") };
}

/** A Postfix-like backend: XCLIENT answered with a new greeting. */
function postfix(overrides: Record<string, string> = {}) {
  return (line: string): string => {
    for (const [prefix, reply] of Object.entries(overrides)) if (prefix === "" ? line === "" : line.startsWith(prefix)) return reply;
    if (line === "") return GREETING;
    if (/^EHLO /.test(line)) return EHLO_XCLIENT;
    if (/^HELO /.test(line)) return "250 backend.example\r\n";
    if (/^XCLIENT /.test(line)) return GREETING;
    if (/^AUTH PLAIN /.test(line)) return "235 2.7.0 Authentication successful\r\n";
    if (/^MAIL /i.test(line)) return "250 2.1.0 Ok\r\n";
    if (/^RCPT /i.test(line)) return "250 2.1.5 Ok\r\n";
    return "502 5.5.2 Error: command not recognized\r\n";
  };
}

function done(r: ReturnType<typeof run>): { toClient: string; leftover: string } {
  assert.ok(r.end && r.end.kind === "done", `login finished: ${JSON.stringify(r.actions)}`);
  return { toClient: dec(r.end.toClient), leftover: dec(r.end.leftover) };
}

function failed(r: ReturnType<typeof run>): { toClient: string; log: string } {
  assert.ok(r.end && r.end.kind === "fail", `login failed: ${JSON.stringify(r.actions)}`);
  return { toClient: r.end.toClient, log: r.end.log };
}

test("SMTP upstream sends nginx's EHLO, XCLIENT ADDR LOGIN NAME and the client's EHLO, then 235 to the client", () => {
  const backend = (line: string) => (/^EHLO /.test(line) ? EHLO_PLAIN : postfix()(line));
  for (const chunk of [0, 1, 3]) {
    const r = run({}, backend, chunk);
    assert.equal(r.raw, "EHLO mail.test\r\nXCLIENT ADDR=127.0.0.2 LOGIN=alice NAME=[UNAVAILABLE]\r\nEHLO client.example\r\n");
    assert.deepEqual(done(r), { toClient: "235 2.0.0 OK\r\n", leftover: "" });
  }
});

test("SMTP upstream XCLIENT adds PORT and PROTO only when the backend's XCLIENT line lists them", () => {
  const r = run({ clientHost: "client.example.net" }, postfix());
  assert.equal(r.sent[1], "XCLIENT ADDR=127.0.0.2 LOGIN=alice NAME=client.example.net PORT=5555 PROTO=ESMTP");
  const helo = run({ smtp: { heloCommand: "HELO", helo: "old.example" } }, postfix());
  assert.deepEqual(helo.sent, ["EHLO mail.test", "XCLIENT ADDR=127.0.0.2 LOGIN=alice NAME=[UNAVAILABLE] PORT=5555 PROTO=SMTP", "HELO old.example"]);
  const portOnly = run({}, postfix({ "EHLO mail.test": "250-backend.example\r\n250 XCLIENT ADDR NAME PORT\r\n" }));
  assert.equal(portOnly.sent[1], "XCLIENT ADDR=127.0.0.2 LOGIN=alice NAME=[UNAVAILABLE] PORT=5555");
  // no HELO from the client: no PROTO (there is none to tell), and no HELO replayed
  const none = run({ smtp: { helo: "", heloCommand: "HELO" } }, postfix());
  assert.deepEqual(none.sent, ["EHLO mail.test", "XCLIENT ADDR=127.0.0.2 LOGIN=alice NAME=[UNAVAILABLE] PORT=5555"]);
  assert.equal(done(none).toClient, "235 2.0.0 OK\r\n");
});

test("SMTP upstream xtext-escapes the XCLIENT login: CR, LF, space, + and = cannot inject a command", () => {
  const login = "evil\r\nMAIL FROM:<x> +=\x00\xe9";
  const r = run({ login }, postfix());
  assert.equal(r.sent[1], "XCLIENT ADDR=127.0.0.2 LOGIN=evil+0D+0AMAIL+20FROM:<x>+20+2B+3D+00+E9 NAME=[UNAVAILABLE] PORT=5555 PROTO=ESMTP");
  assert.equal(r.raw.split("\r\n").length - 1, 3, "three lines, nothing injected");
  assert.equal(encodeXtext("a!~b"), "a!~b");
  assert.equal(encodeXtext("\x7f\x20"), "+7F+20");
});

test("SMTP upstream XCLIENT writes IPv6 clients as IPV6:addr and IPv4-mapped ones as IPv4", () => {
  assert.match(run({ clientAddr: "2001:db8::1" }, postfix()).sent[1], /^XCLIENT ADDR=IPV6:2001:db8::1 LOGIN=alice /);
  assert.match(run({ clientAddr: "::ffff:192.0.2.7" }, postfix()).sent[1], /^XCLIENT ADDR=192\.0\.2\.7 LOGIN=alice /);
});

test("SMTP upstream with xclient off says HELO or EHLO with server_name only, as the client did", () => {
  const helo = run({ config: { xclient: false }, smtp: { heloCommand: "HELO" } }, postfix());
  assert.deepEqual(helo.sent, ["HELO mail.test"]);
  assert.equal(done(helo).toClient, "235 2.0.0 OK\r\n");
  const ehlo = run({ config: { xclient: false } }, postfix());
  assert.deepEqual(ehlo.sent, ["EHLO mail.test"]);
});

test("SMTP upstream with proxy_smtp_auth sends AUTH PLAIN and no LOGIN= in XCLIENT", () => {
  const r = run({ config: { proxySmtpAuth: true } }, postfix());
  assert.deepEqual(r.sent, [
    "EHLO mail.test",
    "XCLIENT ADDR=127.0.0.2 NAME=[UNAVAILABLE] PORT=5555 PROTO=ESMTP",
    "EHLO client.example",
    "AUTH PLAIN AGFsaWNlAHMzY3JldA==",
  ]);
  assert.equal(done(r).toClient, "235 2.0.0 OK\r\n");
  const noXclient = run({ config: { proxySmtpAuth: true, xclient: false }, smtp: { heloCommand: "HELO" } }, postfix());
  assert.deepEqual(noXclient.sent, ["HELO mail.test", "AUTH PLAIN AGFsaWNlAHMzY3JldA=="]);
});

test("SMTP upstream with proxy_smtp_auth falls back to AUTH LOGIN when the backend offers LOGIN but not PLAIN", () => {
  const backend = (line: string) => {
    if (line === "EHLO client.example") return "250-backend.example\r\n250-AUTH LOGIN CRAM-MD5\r\n250 8BITMIME\r\n";
    if (line === "AUTH LOGIN") return "334 VXNlcm5hbWU6\r\n";
    if (line === "YWxpY2U=") return "334 UGFzc3dvcmQ6\r\n";
    if (line === "czNjcmV0") return "235 2.7.0 Authentication successful\r\n";
    return postfix()(line);
  };
  for (const chunk of [0, 1]) {
    const r = run({ config: { proxySmtpAuth: true } }, backend, chunk);
    assert.deepEqual(r.sent.slice(3), ["AUTH LOGIN", "YWxpY2U=", "czNjcmV0"]);
    assert.equal(done(r).toClient, "235 2.0.0 OK\r\n");
  }
  // "AUTH=LOGIN" (old Outlook style) counts too; PLAIN offered anywhere keeps PLAIN
  const eq = run({ config: { proxySmtpAuth: true } }, (l) => (l === "EHLO client.example" ? "250-b\r\n250 AUTH=LOGIN\r\n" : backend(l)));
  assert.equal(eq.sent[3], "AUTH LOGIN");
  const both = run({ config: { proxySmtpAuth: true } }, (l) => (l === "EHLO client.example" ? EHLO_PLAIN : backend(l)));
  assert.equal(both.sent[3], "AUTH PLAIN AGFsaWNlAHMzY3JldA==");
  // a refused password prompt is a failure like any other
  const refused = run({ config: { proxySmtpAuth: true } }, (l) => (l === "czNjcmV0" ? "535 5.7.8 Error: authentication failed\r\n" : backend(l)));
  assert.equal(failed(refused).toClient, "451 4.3.2 Internal server error\r\n");
});

test("SMTP upstream with proxy_smtp_auth and no password fails as nginx does", () => {
  const r = run({ config: { proxySmtpAuth: true }, password: "" }, postfix());
  assert.deepEqual(failed(r), { toClient: "451 4.3.2 Internal server error\r\n", log: "no password available" });
  assert.equal(r.sent.length, 3, "nothing sent after the client's EHLO");
});

test("SMTP upstream for smtp_auth none replays MAIL FROM and RCPT TO and hands the RCPT reply to the client", () => {
  const envelope = { authMethod: "none" as const, from: "MAIL FROM:<alice@example.com> SIZE=10", to: ["RCPT TO:<bob@example.com>"] };
  for (const chunk of [0, 1]) {
    const r = run({ login: "", smtp: envelope }, postfix(), chunk);
    assert.deepEqual(r.sent, [
      "EHLO mail.test",
      "XCLIENT ADDR=127.0.0.2 NAME=[UNAVAILABLE] PORT=5555 PROTO=ESMTP",
      "EHLO client.example",
      "MAIL FROM:<alice@example.com> SIZE=10",
      "RCPT TO:<bob@example.com>",
    ]);
    assert.equal(done(r).toClient, "250 2.1.5 Ok\r\n");
  }
  // whatever the backend answers to RCPT TO is the client's answer
  const refused = run({ login: "", smtp: envelope }, postfix({ "RCPT ": "550 5.1.1 <bob@example.com>: Recipient address rejected\r\n" }));
  assert.equal(done(refused).toClient, "550 5.1.1 <bob@example.com>: Recipient address rejected\r\n");
  // an Auth-User from the auth service does go into XCLIENT, as in nginx
  const named = run({ login: "relay-user", smtp: envelope }, postfix());
  assert.match(named.sent[1], / LOGIN=relay-user /);
  // xclient off: HELO/EHLO server_name, then the envelope
  const plain = run({ login: "", smtp: envelope, config: { xclient: false } }, postfix());
  assert.deepEqual(plain.sent, ["EHLO mail.test", "MAIL FROM:<alice@example.com> SIZE=10", "RCPT TO:<bob@example.com>"]);
});

test("SMTP upstream for smtp_auth none sends MAIL FROM and RCPT TO in one write when the backend's EHLO offers PIPELINING", () => {
  const envelope = { authMethod: "none" as const, from: "MAIL FROM:<a@b>", to: ["RCPT TO:<c@d>"] };
  const writes = (r: ReturnType<typeof run>) => r.actions.filter((a) => a.kind === "send").map((a) => (a as { text: string }).text);
  for (const chunk of [0, 1, 5]) {
    const r = run({ login: "", smtp: envelope }, postfix(), chunk);
    assert.equal(writes(r).at(-1), "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", `chunk ${chunk}`);
    assert.equal(done(r).toClient, "250 2.1.5 Ok\r\n");
  }
  // both replies in one read: the second is the client's answer, not dropped as stale
  const together = run({ login: "", smtp: envelope }, postfix({ "MAIL ": "250 2.1.0 Ok\r\n550 5.1.1 <c@d>: rejected\r\n", "RCPT ": "" }));
  assert.equal(done(together).toClient, "550 5.1.1 <c@d>: rejected\r\n");
  // MAIL FROM refused: its reply is the answer (or the internal error), whatever RCPT TO got
  const refused = postfix({ "MAIL ": "553 5.7.1 Sender rejected\r\n", "RCPT ": "503 5.5.1 Error: need MAIL command\r\n" });
  assert.equal(failed(run({ login: "", smtp: envelope, config: { proxyPassErrorMessage: true } }, refused)).toClient, "553 5.7.1 Sender rejected\r\n");
  assert.equal(failed(run({ login: "", smtp: envelope }, refused)).toClient, "451 4.3.2 Internal server error\r\n");
  // no PIPELINING in the EHLO that counts, or no EHLO at all: one command, one reply, as nginx
  const noPipelining = "250-backend.example\r\n250-XCLIENT NAME ADDR PROTO HELO LOGIN PORT\r\n250 8BITMIME\r\n";
  const cases: [string, Session, (line: string) => string][] = [
    ["EHLO without PIPELINING", { login: "", smtp: envelope }, postfix({ "EHLO ": noPipelining })],
    ["the client's HELO after XCLIENT", { login: "", smtp: { ...envelope, heloCommand: "HELO" } }, postfix()],
    ["XCLIENT and no client greeting", { login: "", smtp: { ...envelope, helo: "", heloCommand: "HELO" } }, postfix()],
    ["xclient off and the client's HELO", { login: "", smtp: { ...envelope, heloCommand: "HELO" }, config: { xclient: false } }, postfix()],
    ["PIPELINING only before XCLIENT", { login: "", smtp: envelope }, postfix({ "EHLO client": noPipelining })],
  ];
  for (const [what, session, backend] of cases) {
    const r = run(session, backend);
    assert.deepEqual(writes(r).slice(-2), ["MAIL FROM:<a@b>\r\n", "RCPT TO:<c@d>\r\n"], what);
    assert.equal(done(r).toClient, "250 2.1.5 Ok\r\n", what);
  }
  // xclient off and the client's EHLO: our own EHLO's PIPELINING counts
  assert.equal(writes(run({ login: "", smtp: envelope, config: { xclient: false } }, postfix())).at(-1), "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
});

test("SMTP upstream failures at each step give 451 4.3.2, or the backend's reply with proxy_pass_error_message", () => {
  const steps: [string, string][] = [
    ["", "554 5.3.2 backend.example busy\r\n"],
    ["EHLO mail.test", "421 4.3.0 shutting down\r\n"],
    ["XCLIENT ", "550-5.7.0 insufficient\r\n550 5.7.0 authorization\r\n"],
    ["EHLO client.example", "501 5.5.2 bad hostname\r\n"],
  ];
  for (const [at, reply] of steps) {
    const backend = postfix({ [at]: reply });
    const off = failed(run({}, backend));
    assert.equal(off.toClient, "451 4.3.2 Internal server error\r\n", at);
    assert.match(off.log, /^upstream sent invalid response: "\d{3}/);
    const on = failed(run({ config: { proxyPassErrorMessage: true } }, backend));
    assert.equal(on.toClient, reply, `${at}: the whole reply is passed on`);
  }
  const auth = postfix({ "AUTH PLAIN": "535 5.7.8 Error: authentication failed\r\n" });
  assert.equal(failed(run({ config: { proxySmtpAuth: true } }, auth)).toClient, "451 4.3.2 Internal server error\r\n");
  const none = { login: "", smtp: { authMethod: "none" as const, from: "MAIL FROM:<a@b>", to: ["RCPT TO:<c@d>"] } };
  const mail = failed(run({ ...none, config: { proxyPassErrorMessage: true } }, postfix({ "MAIL ": "553 5.7.1 Sender rejected\r\n" })));
  assert.equal(mail.toClient, "553 5.7.1 Sender rejected\r\n");
});

test("SMTP upstream reads multi-line replies whole, at any split, and bounds them by proxy_buffer", () => {
  const long = "250-backend.example\r\n" + "250-X-PAD " + "x".repeat(100) + "\r\n250 OK\r\n";
  const r = run({ config: { proxyBuffer: 64 } }, postfix({ "EHLO mail.test": long }));
  const f = failed(r);
  assert.equal(f.toClient, "451 4.3.2 Internal server error\r\n");
  assert.match(f.log, /too long response line/);
  for (const chunk of [1, 2, 7]) assert.equal(done(run({}, postfix(), chunk)).toClient, "235 2.0.0 OK\r\n");
});

test("SMTP upstream drops what the backend sends past a reply before Postern's next command", () => {
  // an unsolicited second line after the greeting must not be read as the answer to EHLO
  const r = run({}, postfix({ "": GREETING + "554 5.0.0 not for you\r\n" }));
  assert.equal(done(r).toClient, "235 2.0.0 OK\r\n");
});

test("SMTP upstream with proxy_ssl starttls says EHLO, STARTTLS, and starts over inside TLS", () => {
  const r = run({ starttls: true }, postfix({ "STARTTLS": "220 2.0.0 Ready to start TLS\r\n" }));
  assert.deepEqual(r.sent, [
    "EHLO mail.test",
    "STARTTLS",
    "EHLO mail.test",
    "XCLIENT ADDR=127.0.0.2 LOGIN=alice NAME=[UNAVAILABLE] PORT=5555 PROTO=ESMTP",
    "EHLO client.example",
  ]);
  assert.ok(r.actions.some((a) => a.kind === "start-tls"));
  assert.equal(done(r).toClient, "235 2.0.0 OK\r\n");
  const refused = failed(run({ starttls: true }, postfix({ "STARTTLS": "454 4.7.0 TLS not available\r\n" })));
  assert.equal(refused.toClient, "451 4.3.2 Internal server error\r\n");
});
