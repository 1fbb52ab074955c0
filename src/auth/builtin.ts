// The built-in auth service: users, hashes and backends from the config, answered in-process
// with the same replies an auth_http server would give.

import type { AuthConfig, AuthUser } from "../config/types.ts";
import { hmacMd5, md5 } from "../util/md5.ts";
import { equalBytes, toBytes, toHex, utf8, utf8Latin1 } from "../util/bytes.ts";
import { type ParsedHash, parsePasswordHash, type Scrypt, verifyPassword } from "./password.ts";
import type { AuthQuery, AuthReply, AuthService } from "./types.ts";

const FAILED = "Invalid login or password";
const UTF8 = new TextDecoder();

const CACHE_KEY_BYTES = 32;

interface Entry {
  readonly user: AuthUser;
  readonly hash: ParsedHash | null;
  /** The last password that passed scrypt for this user, as a keyed MAC, until `until` (ms). */
  cached?: { readonly mac: Uint8Array; readonly until: number };
  /** The scrypt check in progress for this user, if any (one at a time is shared). */
  checking?: { readonly mac: Uint8Array; readonly result: Promise<boolean> };
}

/**
 * `randomBytes` makes the per-process key of the verified-credentials cache (auth.cache_ttl):
 * a password that passed scrypt is remembered as HMAC(key, password bytes), never in the clear,
 * one entry per configured user, so the same user and password again within the TTL skip the
 * ~40 ms of scrypt. Failures are never remembered. `now` is the clock (ms) for the TTL.
 */
export function createBuiltinAuth(
  config: AuthConfig,
  scrypt: Scrypt,
  randomBytes: (n: number) => Uint8Array,
  now: () => number = Date.now,
): AuthService {
  const users = new Map<string, Entry>();
  for (const u of config.users) users.set(u.user, { user: u, hash: u.passwordHash ? parsePasswordHash(u.passwordHash) : null });
  const ttl = config.cacheTtl;
  const cacheKey = ttl > 0 ? randomBytes(CACHE_KEY_BYTES) : new Uint8Array(0);

  /** scrypt, or the cache when this user's last verified password within the TTL was `given`. */
  const verifyHashed = async (e: Entry, hash: ParsedHash, given: Uint8Array): Promise<boolean> => {
    if (ttl <= 0) return verifyPassword(given, hash, scrypt);
    const mac = hmacMd5(cacheKey, given);
    const c = e.cached;
    if (c && now() < c.until && equalBytes(mac, c.mac)) return true;
    if (c && now() >= c.until) e.cached = undefined;
    // a client opening several connections at once: the same password already being checked
    // shares that one scrypt (its result is not kept once it is known, unless a success)
    const p = e.checking;
    if (p && equalBytes(mac, p.mac)) return p.result;
    const result = verifyPassword(given, hash, scrypt).then((ok) => {
      if (ok) e.cached = { mac, until: now() + ttl };
      return ok;
    });
    e.checking = { mac, result };
    try {
      return await result;
    } finally {
      if (e.checking?.result === result) e.checking = undefined;
    }
  };

  const waitSeconds = Math.max(0, Math.ceil(config.failureDelay / 1000));

  const fail = (q: AuthQuery): AuthReply => ({
    status: FAILED,
    // Auth-Wait keeps the client connected for another try, up to max_attempts
    wait: q.loginAttempt < config.maxAttempts ? String(waitSeconds || 0) : undefined,
    errorCode: q.protocol === "smtp" ? "535 5.7.8" : undefined,
  });

  // a user with no backend for this protocol fails like a wrong password (checked after the
  // password, so that the answer does not tell which protocols a name may use)
  // `configPass`: a password from the config (for the backend login), or undefined for the one
  // the client sent. Config text goes out as its UTF-8 bytes, one char per byte like every
  // auth reply (an auth_http header), so that "ł" reaches the backend as c5 82.
  const accept = (e: Entry, q: AuthQuery, configPass: string | undefined): AuthReply => {
    const to = e.user.backends[q.protocol];
    if (!to) return fail(q);
    const pass = e.user.backendPassword ?? configPass;
    const wire = (text: string | undefined) => (text === undefined ? undefined : utf8Latin1(text));
    return { status: "OK", server: to.host, port: String(to.port), user: wire(e.user.backendUser), pass: wire(pass) };
  };

  return {
    async ask(q: AuthQuery): Promise<AuthReply> {
      const e = users.get(fromLatin1Utf8(q.user));
      // unknown users still cost one hash, so that timing does not tell which names exist
      if (!e) {
        const dummy = [...users.values()].find((x) => x.hash)?.hash;
        if (dummy && (q.method === "plain" || q.method === "login")) await verifyPassword(toBytes(q.pass), dummy, scrypt);
        return fail(q);
      }
      const plain = e.user.password;
      switch (q.method) {
        case "plain":
        case "login": {
          const given = toBytes(q.pass);
          const ok = e.hash ? await verifyHashed(e, e.hash, given) : plain !== undefined && equalBytes(given, utf8(plain));
          return ok ? accept(e, q, undefined) : fail(q);
        }
        case "cram-md5": {
          if (plain === undefined || !q.salt) return fail(q);
          const want = toHex(hmacMd5(utf8(plain), toBytes(q.salt)));
          return equalBytes(utf8(want), toBytes(q.pass.toLowerCase())) ? accept(e, q, plain) : fail(q);
        }
        case "apop": {
          if (plain === undefined || !q.salt) return fail(q);
          const want = toHex(md5(utf8(q.salt + plain)));
          return equalBytes(utf8(want), toBytes(q.pass.toLowerCase())) ? accept(e, q, plain) : fail(q);
        }
        case "external": {
          const s = q.ssl;
          const subject = s?.subject ?? "";
          const named = subject.split(/[,/]/).some((part) => {
            const [k, v] = part.trim().split("=");
            return (k === "CN" || k === "emailAddress") && v === e.user.user;
          });
          return s?.verify === "SUCCESS" && named ? accept(e, q, e.user.backendPassword ?? plain ?? "") : fail(q);
        }
        case "none":
          return fail(q);
      }
    },
  };
}

/** Client bytes arrive as latin1 chars; user names in the config are UTF-8 text. */
function fromLatin1Utf8(s: string): string {
  return UTF8.decode(toBytes(s));
}
