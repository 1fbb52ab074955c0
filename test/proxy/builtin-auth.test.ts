import assert from "node:assert/strict";
import { scrypt as nodeScrypt } from "node:crypto";
import { test } from "node:test";
import { createBuiltinAuth } from "../../src/auth/builtin.ts";
import { hashPassword } from "../../src/auth/password.ts";
import type { AuthQuery } from "../../src/auth/types.ts";
import type { AuthConfig } from "../../src/config/types.ts";
import { createHttpApp } from "../../src/http/app.ts";
import { createMetrics } from "../../src/metrics.ts";
import { hmacMd5, md5 } from "../../src/util/md5.ts";
import { toBytes, toHex } from "../../src/util/bytes.ts";

const scrypt = (pw: Uint8Array, salt: Uint8Array, len: number, c: { N: number; r: number; p: number }) =>
  new Promise<Uint8Array>((res, rej) => nodeScrypt(pw, salt, len, { ...c, maxmem: 64 << 20 }, (e, k) => (e ? rej(e) : res(new Uint8Array(k)))));

const randomBytes = (n: number) => crypto.getRandomValues(new Uint8Array(n));
const HASH = hashPassword("s3cret", new Uint8Array(16).fill(7), scrypt);

async function service(extra: Partial<AuthConfig> = {}, deps: { scrypt?: typeof scrypt; now?: () => number } = {}) {
  const hash = await HASH;
  const config: AuthConfig = {
    failureDelay: 3000,
    maxAttempts: 3,
    cacheTtl: 3_600_000,
    users: [
      { user: "alice", passwordHash: hash, backends: { imap: { host: "127.0.0.1", port: 143 }, pop3: { host: "127.0.0.1", port: 110 } } },
      { user: "bob", password: "plain", backends: { imap: { host: "10.0.0.2", port: 1143 }, pop3: { host: "10.0.0.2", port: 1143 } }, backendUser: "robert" },
    ],
    ...extra,
  };
  return createBuiltinAuth(config, deps.scrypt ?? scrypt, randomBytes, deps.now);
}

/** The real scrypt, counting its calls; and a clock the test moves. */
function counted() {
  const calls: string[] = [];
  const wrapped: typeof scrypt = (pw, salt, len, c) => {
    calls.push(new TextDecoder().decode(pw));
    return scrypt(pw, salt, len, c);
  };
  const clock = { t: 1_000_000 };
  return { calls, scrypt: wrapped, clock, now: () => clock.t };
}

const q = (o: Partial<AuthQuery>): AuthQuery => ({ method: "plain", user: "alice", pass: "s3cret", protocol: "imap", loginAttempt: 1, clientIp: "127.0.0.2", ...o });

test("the built-in service accepts a scrypt-hashed password and names the backend", async () => {
  const s = await service();
  assert.deepEqual(await s.ask(q({})), { status: "OK", server: "127.0.0.1", port: "143", user: undefined, pass: undefined });
});

test("the built-in service picks the backend by protocol and fails a protocol the user has none for", async () => {
  const s = await service();
  assert.deepEqual(await s.ask(q({ protocol: "pop3" })), { status: "OK", server: "127.0.0.1", port: "110", user: undefined, pass: undefined });
  const smtp = await s.ask(q({ protocol: "smtp" }));
  assert.equal(smtp.status, "Invalid login or password");
  assert.equal(smtp.server, undefined);
  const apop = toHex(md5(toBytes("<1.2@mail.test>plain")));
  assert.equal((await s.ask(q({ method: "apop", protocol: "pop3", user: "bob", pass: apop, salt: "<1.2@mail.test>" }))).port, "1143");
});

test("the built-in service refuses a wrong password with Auth-Wait until max_attempts", async () => {
  const s = await service();
  assert.deepEqual(await s.ask(q({ pass: "nope" })), { status: "Invalid login or password", wait: "3", errorCode: undefined });
  assert.equal((await s.ask(q({ pass: "nope", loginAttempt: 3 }))).wait, undefined);
  assert.equal((await s.ask(q({ user: "nobody" }))).status, "Invalid login or password");
});

test("the built-in service checks CRAM-MD5 and APOP digests against a plain password", async () => {
  const s = await service();
  const salt = "<1.2@mail.test>";
  const cram = toHex(hmacMd5(toBytes("plain"), toBytes(salt)));
  assert.deepEqual(await s.ask(q({ method: "cram-md5", user: "bob", pass: cram, salt })), { status: "OK", server: "10.0.0.2", port: "1143", user: "robert", pass: "plain" });
  const apop = toHex(md5(toBytes(salt + "plain")));
  assert.equal((await s.ask(q({ method: "apop", user: "bob", pass: apop, salt }))).status, "OK");
  assert.equal((await s.ask(q({ method: "cram-md5", user: "alice", pass: cram, salt }))).status, "Invalid login or password");
});

test("backend user and password from the config go to the backend as their UTF-8 bytes, one char per byte", async () => {
  const s = await service({
    users: [
      { user: "zofia", password: "zażółć", backends: { imap: { host: "127.0.0.1", port: 143 } }, backendUser: "zofia@łódź.example", backendPassword: "hasło-€" },
      { user: "jan", password: "ćma", backends: { imap: { host: "127.0.0.1", port: 143 } } },
    ],
  });
  const latin1 = (text: string) => String.fromCharCode(...new TextEncoder().encode(text));
  const r = await s.ask(q({ user: "zofia", pass: latin1("zażółć") }));
  assert.equal(r.status, "OK");
  assert.equal(r.user, latin1("zofia@łódź.example"));
  assert.equal(r.pass, latin1("hasło-€"));
  assert.deepEqual(toBytes(r.pass!), new TextEncoder().encode("hasło-€"));
  // CRAM-MD5 logs in to the backend with the config's plain password: its UTF-8 bytes too
  const salt = "<1.2@mail.test>";
  const cram = toHex(hmacMd5(new TextEncoder().encode("ćma"), toBytes(salt)));
  const c = await s.ask(q({ method: "cram-md5", user: "jan", pass: cram, salt }));
  assert.equal(c.status, "OK");
  assert.deepEqual(toBytes(c.pass!), new TextEncoder().encode("ćma"));
});

test("/auth on the HTTP endpoint answers nginx's auth_http request with the built-in users", async () => {
  const app = createHttpApp({ version: "test", metrics: createMetrics(0), auth: await service(), now: () => 1000 });
  const ok = await app.request("/auth", { headers: { "Auth-Method": "plain", "Auth-User": "alice", "Auth-Pass": "s3cret", "Auth-Protocol": "imap", "Auth-Login-Attempt": "1", "Client-IP": "1.2.3.4" } });
  assert.equal(ok.headers.get("Auth-Status"), "OK");
  assert.equal(ok.headers.get("Auth-Server"), "127.0.0.1");
  assert.equal(ok.headers.get("Auth-Port"), "143");
  const bad = await app.request("/auth", { headers: { "Auth-Method": "plain", "Auth-User": "alice", "Auth-Pass": "s3cret%20x", "Auth-Protocol": "imap" } });
  assert.equal(bad.headers.get("Auth-Status"), "Invalid login or password");
  assert.equal(bad.headers.get("Auth-Wait"), "3");
  const health = await (await app.request("/health")).json();
  assert.equal(health.status, "ok");
  assert.match(await (await app.request("/metrics")).text(), /^postern_sessions_active 0$/m);
});

const OK_ALICE = { status: "OK", server: "127.0.0.1", port: "143", user: undefined, pass: undefined };

test("the built-in service remembers a verified password: the same login again skips scrypt", async () => {
  const c = counted();
  const s = await service({}, c);
  assert.deepEqual(await s.ask(q({})), OK_ALICE);
  assert.equal(c.calls.length, 1);
  assert.deepEqual(await s.ask(q({})), OK_ALICE);
  assert.deepEqual(await s.ask(q({ method: "login", protocol: "pop3" })), { ...OK_ALICE, port: "110" });
  assert.equal(c.calls.length, 1, "cached logins do not call scrypt");
  // the cache does not skip the per-protocol backend check
  assert.equal((await s.ask(q({ protocol: "smtp" }))).status, "Invalid login or password");
  assert.equal(c.calls.length, 1);
});

test("the built-in service's cache does not accept another password, and does not remember failures", async () => {
  const c = counted();
  const s = await service({}, c);
  assert.equal((await s.ask(q({}))).status, "OK");
  assert.deepEqual(await s.ask(q({ pass: "s3cret2" })), { status: "Invalid login or password", wait: "3", errorCode: undefined });
  assert.deepEqual(c.calls, ["s3cret", "s3cret2"]);
  assert.equal((await s.ask(q({ pass: "s3cret2" }))).status, "Invalid login or password");
  assert.deepEqual(c.calls, ["s3cret", "s3cret2", "s3cret2"], "a failure is checked with scrypt every time");
  assert.equal((await s.ask(q({}))).status, "OK");
  assert.equal(c.calls.length, 3, "the verified password is still cached after failures");
  // prefixes, suffixes and the empty password are other passwords
  for (const pass of ["s3cre", "s3cret ", ""]) assert.equal((await s.ask(q({ pass }))).status, "Invalid login or password");
  assert.equal(c.calls.length, 6);
  // an unknown user is never served from another user's entry
  assert.equal((await s.ask(q({ user: "mallory" }))).status, "Invalid login or password");
  assert.equal(c.calls.length, 7);
});

test("the built-in service's cached password expires after cache_ttl", async () => {
  const c = counted();
  const s = await service({ cacheTtl: 60_000 }, c);
  assert.equal((await s.ask(q({}))).status, "OK");
  c.clock.t += 59_999;
  assert.equal((await s.ask(q({}))).status, "OK");
  assert.equal(c.calls.length, 1);
  c.clock.t += 1; // the TTL counts from the scrypt check, not from the last hit
  assert.equal((await s.ask(q({}))).status, "OK");
  assert.equal(c.calls.length, 2, "expired: checked with scrypt again");
  c.clock.t += 30_000;
  assert.equal((await s.ask(q({}))).status, "OK");
  assert.equal(c.calls.length, 2, "and cached again from that check");
});

test("concurrent logins with the same password share one scrypt; other passwords get their own", async () => {
  const c = counted();
  const s = await service({}, c);
  const same = await Promise.all(Array.from({ length: 5 }, () => s.ask(q({}))));
  assert.ok(same.every((r) => r.status === "OK"));
  assert.equal(c.calls.length, 1);
  const c2 = counted();
  const s2 = await service({}, c2);
  const mixed = await Promise.all([s2.ask(q({ pass: "nope" })), s2.ask(q({})), s2.ask(q({ pass: "nope" })), s2.ask(q({}))]);
  assert.deepEqual(mixed.map((r) => r.status), ["Invalid login or password", "OK", "Invalid login or password", "OK"]);
  assert.ok(c2.calls.length >= 2 && c2.calls.length <= 4);
  // a failure shared while in flight is not remembered afterwards
  assert.equal((await s2.ask(q({ pass: "nope" }))).status, "Invalid login or password");
  assert.equal(c2.calls.at(-1), "nope");
});

test("cache_ttl 0 turns the built-in service's cache off", async () => {
  const c = counted();
  const s = await service({ cacheTtl: 0 }, c);
  for (let i = 0; i < 3; i++) assert.equal((await s.ask(q({}))).status, "OK");
  assert.equal(c.calls.length, 3);
});

test("a new built-in service (what a reload builds) starts with an empty cache", async () => {
  const c = counted();
  const s = await service({}, c);
  assert.equal((await s.ask(q({}))).status, "OK");
  assert.equal((await s.ask(q({}))).status, "OK");
  const reloaded = await service({}, c);
  assert.equal((await reloaded.ask(q({}))).status, "OK");
  assert.equal(c.calls.length, 2);
});

test("/metrics and /health add the other workers' counters to this one's", async () => {
  const own = createMetrics(0);
  own.connections = 3;
  own.active = 1;
  own.bytesClientToUpstream = 10;
  const peers = [{ connections: 4, active: 2, bytesClientToUpstream: 5 }, { connections: 1, loginsOk: 7 }, { connections: "x" } as object];
  const app = createHttpApp({ version: "test", metrics: own, auth: await service(), now: () => 5000, peers: () => Promise.resolve(peers) });
  const text = await (await app.request("/metrics")).text();
  assert.match(text, /^postern_connections_total 8$/m);
  assert.match(text, /^postern_sessions_active 3$/m);
  assert.match(text, /^postern_logins_total\{result="ok"\} 7$/m);
  assert.match(text, /^postern_relay_bytes_total\{direction="client_to_upstream"\} 15$/m);
  const health = await (await app.request("/health")).json();
  assert.equal(health.sessions, 3);
  assert.equal(health.uptime_seconds, 5);
  assert.equal(own.connections, 3, "this worker's own counters are left as they are");
});
