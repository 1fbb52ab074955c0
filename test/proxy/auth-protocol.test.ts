import assert from "node:assert/strict";
import { test } from "node:test";
import { authQueryFromHeaders, authRequestHeaders, decideAuth, escapeMailAuth } from "../../src/auth/protocol.ts";

test("escapeMailAuth escapes as nginx's NGX_ESCAPE_MAIL_AUTH", () => {
  assert.equal(escapeMailAuth("a b\"c%d'e\r\n\x00\x7f\xe9"), "a%20b%22c%25d%27e%0D%0A%00%7F%E9");
  assert.equal(escapeMailAuth("alice@example.com+tag=x"), "alice@example.com+tag=x");
});

test("authRequestHeaders sends nginx's headers in nginx's order", () => {
  const h = authRequestHeaders(
    { method: "cram-md5", user: "al ice", pass: "0123456789abcdef0123456789abcdef", salt: "<1.2@x>", protocol: "imap", loginAttempt: 2, clientIp: "127.0.0.2" },
    { "X-Auth-Key": "k" },
  );
  assert.deepEqual(h, [
    ["Auth-Method", "cram-md5"],
    ["Auth-User", "al%20ice"],
    ["Auth-Pass", "0123456789abcdef0123456789abcdef"],
    ["Auth-Salt", "<1.2@x>"],
    ["Auth-Protocol", "imap"],
    ["Auth-Login-Attempt", "2"],
    ["Client-IP", "127.0.0.2"],
    ["X-Auth-Key", "k"],
  ]);
});

test("authQueryFromHeaders reads back what authRequestHeaders wrote", () => {
  const h = new Map(authRequestHeaders({ method: "plain", user: "a\r\nb", pass: "p w%", protocol: "imap", loginAttempt: 1, clientIp: "1.2.3.4" }, {}));
  const r = authQueryFromHeaders((n) => h.get(n) ?? null);
  assert.ok(r.ok);
  assert.equal(r.query.user, "a\r\nb");
  assert.equal(r.query.pass, "p w%");
});

test("decideAuth follows nginx: OK needs server, port and a password", () => {
  const s = { protocol: "imap" as const, login: "alice", password: "pw" };
  assert.deepEqual(decideAuth({ status: "OK", server: "127.0.0.1", port: "143" }, s).kind, "done");
  const ok = decideAuth({ status: "OK", server: "127.0.0.1", port: "143", user: "bob", pass: "x" }, s);
  assert.deepEqual(ok.kind === "done" && ok.outcome, { kind: "ok", host: "127.0.0.1", port: 143, login: "bob", password: "x" });
  const noPort = decideAuth({ status: "OK", server: "127.0.0.1" }, s);
  assert.equal(noPort.kind === "done" && noPort.outcome.kind, "error");
  const digest = decideAuth({ status: "OK", server: "127.0.0.1", port: "143" }, { ...s, password: null });
  assert.equal(digest.kind === "done" && digest.outcome.kind, "error");
  const badHost = decideAuth({ status: "OK", server: "mail.example.com", port: "143" }, s);
  assert.equal(badHost.kind === "done" && badHost.outcome.kind, "error");
  const badPort = decideAuth({ status: "OK", server: "127.0.0.1", port: "70000" }, s);
  assert.equal(badPort.kind === "done" && badPort.outcome.kind, "error");
});

test("decideAuth: a failure with Auth-Wait keeps the session, without it closes; WAIT retries", () => {
  const s = { protocol: "imap" as const, login: "alice", password: "pw" };
  const keep = decideAuth({ status: "Invalid login", wait: "3" }, s);
  assert.deepEqual(keep, { kind: "done", delayMs: 3000, outcome: { kind: "fail", message: "Invalid login", errorCode: undefined, keepOpen: true }, log: 'client login failed: "Invalid login"' });
  const close = decideAuth({ status: "Invalid login" }, s);
  assert.equal(close.kind === "done" && close.outcome.kind === "fail" && close.outcome.keepOpen, false);
  assert.deepEqual(decideAuth({ status: "WAIT", wait: "1" }, s), { kind: "retry", delayMs: 1000 });
  const smtp = decideAuth({ status: "Bad", errorCode: "550 5.7.1" }, { ...s, protocol: "smtp" });
  assert.equal(smtp.kind === "done" && smtp.outcome.kind === "fail" && smtp.outcome.message, "550 5.7.1 Bad");
  const smtpDefault = decideAuth({ status: "Bad" }, { ...s, protocol: "smtp" });
  assert.equal(smtpDefault.kind === "done" && smtpDefault.outcome.kind === "fail" && smtpDefault.outcome.message, "535 5.7.0 Bad");
});
