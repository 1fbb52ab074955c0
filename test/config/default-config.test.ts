// The repository's config.yaml must load as it ships, and say what it claims.

import assert from "node:assert/strict";
import { scryptSync, timingSafeEqual } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { formatConfigError, loadConfig } from "../../src/config/load.ts";
import { parseScryptHash } from "../../src/config/values.ts";
import { fakeEnv } from "./helpers.ts";

/** The repository root: the nearest directory up from here (or the working directory) with config.yaml and package.json. */
function repoRoot(): string {
  for (const start of [dirname(fileURLToPath(import.meta.url)), process.cwd()]) {
    for (let dir = start; ; dir = dirname(dir)) {
      if (existsSync(join(dir, "config.yaml")) && existsSync(join(dir, "package.json"))) return dir;
      if (dirname(dir) === dir) break;
    }
  }
  throw new Error("Cannot find the repository root: no config.yaml beside a package.json above the tests");
}

const file = resolve(repoRoot(), "config.yaml");
const text = readFileSync(file, "utf8");

function loadDefault() {
  const r = loadConfig(text, file, fakeEnv());
  if (!r.ok) assert.fail(`config.yaml does not load:\n${r.errors.map(formatConfigError).join("\n")}`);
  return r.config;
}

test("the default config.yaml loads without errors or warnings", () => {
  const c = loadDefault();
  assert.deepEqual(c.warnings, []);
});

test("the default config.yaml proxies IMAP, POP3 and SMTP on 127.0.0.1 high ports", () => {
  const c = loadDefault();
  assert.deepEqual(
    c.servers.map((s) => [s.protocol, s.listen.map((l) => `${l.host}:${l.port}`)]),
    [["imap", ["127.0.0.1:1143"]], ["pop3", ["127.0.0.1:1110"]], ["smtp", ["127.0.0.1:1025"]]],
  );
  assert.ok(c.servers.every((s) => s.authHttp === "builtin"));
});

test("the default config.yaml serves HTTP on 127.0.0.1:8080", () => {
  assert.deepEqual(loadDefault().http, { listen: { host: "127.0.0.1", port: 8080 } });
});

test("the default config.yaml's example user has a real scrypt hash of the password its comment names", () => {
  const c = loadDefault();
  assert.equal(c.auth.users.length, 1);
  const alice = c.auth.users[0];
  assert.equal(alice.user, "alice@example.com");
  const at = (port: number) => ({ host: "127.0.0.1", port });
  assert.deepEqual(alice.backends, { imap: at(143), pop3: at(110), smtp: at(25) });
  assert.equal(alice.password, undefined);
  const password = /password "([^"]+)"/.exec(text)?.[1];
  assert.equal(password, "alice-secret");
  const h = parseScryptHash(alice.passwordHash ?? "");
  if (!h.ok) assert.fail(h.message);
  assert.deepEqual([h.value.N, h.value.r, h.value.p], [16384, 8, 1]);
  const salt = Buffer.from(h.value.salt, "base64");
  const expected = Buffer.from(h.value.hash, "base64");
  assert.equal(salt.length, 16);
  assert.equal(expected.length, 32);
  const actual = scryptSync(password, salt, 32, { N: h.value.N, r: h.value.r, p: h.value.p });
  assert.ok(timingSafeEqual(actual, expected), "the hash does not match the documented password");
});
