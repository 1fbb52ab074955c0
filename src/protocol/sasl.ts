// SASL payload decoding shared by IMAP AUTHENTICATE, POP3 AUTH and SMTP AUTH, as nginx reads them.
// Results are latin1 strings (one char per byte) so that any byte the client sent is kept exactly.

import { decodeBase64, encodeBase64, fromBytes, toBytes } from "../util/bytes.ts";
import type { AuthMethod } from "./types.ts";

export type SaslResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly why: string };

/** PLAIN: base64 of "authzid\0authcid\0password". */
export function decodeSaslPlain(b64: string): SaslResult<{ login: string; password: string }> {
  const raw = decodeBase64(b64);
  if (!raw) return { ok: false, why: "client sent invalid base64 encoding in AUTH PLAIN command" };
  const first = raw.indexOf(0);
  if (first < 0) return { ok: false, why: "client sent invalid login in AUTH PLAIN command" };
  const second = raw.indexOf(0, first + 1);
  if (second < 0) return { ok: false, why: "client sent invalid password in AUTH PLAIN command" };
  return { ok: true, value: { login: fromBytes(raw, first + 1, second), password: fromBytes(raw, second + 1) } };
}

/** One base64 step of LOGIN (user name or password). */
export function decodeSaslLogin(b64: string): SaslResult<string> {
  const raw = decodeBase64(b64);
  if (!raw) return { ok: false, why: "client sent invalid base64 encoding in AUTH LOGIN command" };
  return { ok: true, value: fromBytes(raw) };
}

/** CRAM-MD5 response: base64 of "user hex-digest", the digest 32 hex chars. */
export function decodeSaslCramMd5(b64: string): SaslResult<{ login: string; digest: string }> {
  const raw = decodeBase64(b64);
  if (!raw) return { ok: false, why: "client sent invalid base64 encoding in AUTH CRAM-MD5 command" };
  const text = fromBytes(raw);
  const sp = text.indexOf(" ");
  const digest = sp < 0 ? "" : text.slice(sp + 1);
  if (digest.length !== 32) return { ok: false, why: "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command" };
  return { ok: true, value: { login: text.slice(0, sp), digest } };
}

/** EXTERNAL: base64 of the authorization identity (may be empty). */
export function decodeSaslExternal(b64: string): SaslResult<string> {
  const raw = decodeBase64(b64);
  if (!raw) return { ok: false, why: "client sent invalid base64 encoding in AUTH EXTERNAL command" };
  return { ok: true, value: fromBytes(raw) };
}

/** nginx's salt: "<random.time@server_name>", used as APOP timestamp and CRAM-MD5 challenge. */
export function makeSalt(random: number, nowSec: number, serverName: string): string {
  return `<${Math.floor(random)}.${Math.floor(nowSec)}@${serverName}>`;
}

export function cramMd5Challenge(salt: string): string {
  return encodeBase64(toBytes(salt));
}

export const SASL_USERNAME_PROMPT = "VXNlcm5hbWU6"; // base64 "Username:"
export const SASL_PASSWORD_PROMPT = "UGFzc3dvcmQ6"; // base64 "Password:"

export type SaslPhase = "auth-login-username" | "auth-login-password" | "auth-plain" | "auth-cram-md5" | "auth-external";

export type SaslNext =
  /** LOGIN: the user name arrived, ask for the password. */
  | { readonly kind: "ask-password"; readonly login: string }
  | { readonly kind: "credentials"; readonly method: AuthMethod; readonly login: string; readonly password: string; readonly salt?: string }
  | { readonly kind: "bad"; readonly why: string };

/**
 * One client response in a SASL exchange, the same in IMAP, POP3 and SMTP. `login` is the user
 * name LOGIN took earlier; `salt` the CRAM-MD5 challenge.
 */
export function continueSasl(phase: SaslPhase, response: string, login: string, salt: string): SaslNext {
  switch (phase) {
    case "auth-login-username": {
      const r = decodeSaslLogin(response);
      return r.ok ? { kind: "ask-password", login: r.value } : { kind: "bad", why: r.why };
    }
    case "auth-login-password": {
      const r = decodeSaslLogin(response);
      return r.ok ? { kind: "credentials", method: "login", login, password: r.value } : { kind: "bad", why: r.why };
    }
    case "auth-plain": {
      const r = decodeSaslPlain(response);
      return r.ok ? { kind: "credentials", method: "plain", login: r.value.login, password: r.value.password } : { kind: "bad", why: r.why };
    }
    case "auth-cram-md5": {
      const r = decodeSaslCramMd5(response);
      return r.ok ? { kind: "credentials", method: "cram-md5", login: r.value.login, password: r.value.digest, salt } : { kind: "bad", why: r.why };
    }
    case "auth-external": {
      const r = decodeSaslExternal(response);
      return r.ok ? { kind: "credentials", method: "external", login: r.value, password: "" } : { kind: "bad", why: r.why };
    }
  }
}
