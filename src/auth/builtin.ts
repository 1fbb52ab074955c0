// The built-in auth service: users, hashes and backends from the config, answered in-process
// with the same replies an auth_http server would give.

import type { AuthConfig, AuthUser } from "../config/types.ts";
import { hmacMd5, md5 } from "../util/md5.ts";
import { equalBytes, toBytes, toHex, utf8 } from "../util/bytes.ts";
import { type ParsedHash, parsePasswordHash, type Scrypt, verifyPassword } from "./password.ts";
import type { AuthQuery, AuthReply, AuthService } from "./types.ts";

const FAILED = "Invalid login or password";

interface Entry {
  readonly user: AuthUser;
  readonly hash: ParsedHash | null;
}

export function createBuiltinAuth(config: AuthConfig, scrypt: Scrypt): AuthService {
  const users = new Map<string, Entry>();
  for (const u of config.users) users.set(u.user, { user: u, hash: u.passwordHash ? parsePasswordHash(u.passwordHash) : null });
  const waitSeconds = Math.max(0, Math.ceil(config.failureDelay / 1000));

  const fail = (q: AuthQuery): AuthReply => ({
    status: FAILED,
    // Auth-Wait keeps the client connected for another try, up to max_attempts
    wait: q.loginAttempt < config.maxAttempts ? String(waitSeconds || 0) : undefined,
    errorCode: q.protocol === "smtp" ? "535 5.7.8" : undefined,
  });

  // a user with no backend for this protocol fails like a wrong password (checked after the
  // password, so that the answer does not tell which protocols a name may use)
  const accept = (e: Entry, q: AuthQuery, pass: string | undefined): AuthReply => {
    const to = e.user.backends[q.protocol];
    if (!to) return fail(q);
    return { status: "OK", server: to.host, port: String(to.port), user: e.user.backendUser, pass: e.user.backendPassword ?? pass };
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
          const ok = e.hash ? await verifyPassword(given, e.hash, scrypt) : plain !== undefined && equalBytes(given, utf8(plain));
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
  return new TextDecoder().decode(toBytes(s));
}
