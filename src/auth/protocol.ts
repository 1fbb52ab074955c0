// nginx's auth_http wire format: request headers (with its escaping) and the reading of a reply.

import type { AuthMethod, AuthOutcome } from "../protocol/types.ts";
import type { AuthQuery, AuthReply } from "./types.ts";

const HEX = "0123456789ABCDEF";
// deno-lint-ignore no-control-regex
const NEEDS_ESCAPE = /[\x00-\x20\x7f-\uffff"%']/;

/** nginx's NGX_ESCAPE_MAIL_AUTH: space, ", %, ' and bytes outside 0x20-0x7e become %XX. */
export function escapeMailAuth(text: string): string {
  if (!NEEDS_ESCAPE.test(text)) return text; // the usual user name or password
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i) & 0xff;
    if (c <= 0x20 || c >= 0x7f || c === 0x22 || c === 0x25 || c === 0x27) out += "%" + HEX[c >> 4] + HEX[c & 15];
    else out += text[i];
  }
  return out;
}

export function unescapeMailAuth(text: string): string {
  return text.replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/**
 * The request's header lines in the order nginx sends them, each ending in CRLF; `extra` is
 * auth_http_header. Built as one string: this runs once per login.
 */
export function authRequestText(q: AuthQuery, extra: Readonly<Record<string, string>>): string {
  // nginx names AUTH LOGIN "plain" too: the auth server sees the same user and password
  let t = `Auth-Method: ${q.method === "login" ? "plain" : q.method}\r\nAuth-User: ${escapeMailAuth(q.user)}\r\nAuth-Pass: ${escapeMailAuth(q.pass)}\r\n`;
  if ((q.method === "apop" || q.method === "cram-md5") && q.salt) t += `Auth-Salt: ${q.salt}\r\n`;
  t += `Auth-Protocol: ${q.protocol}\r\nAuth-Login-Attempt: ${q.loginAttempt}\r\nClient-IP: ${q.clientIp}\r\n`;
  if (q.clientHost) t += `Client-Host: ${q.clientHost}\r\n`;
  const pp = q.proxyProtocol;
  if (pp) {
    t += `Proxy-Protocol-Addr: ${pp.addr}\r\nProxy-Protocol-Port: ${pp.port}\r\nProxy-Protocol-Server-Addr: ${pp.serverAddr}\r\nProxy-Protocol-Server-Port: ${pp.serverPort}\r\n`;
  }
  if (q.method === "none" && q.smtp) t += `Auth-SMTP-Helo: ${q.smtp.helo}\r\nAuth-SMTP-From: ${q.smtp.from}\r\nAuth-SMTP-To: ${q.smtp.to}\r\n`;
  if (q.ssl) {
    t += "Auth-SSL: on\r\n";
    const s = q.ssl;
    if (s.protocol) t += `Auth-SSL-Protocol: ${s.protocol}\r\n`;
    if (s.cipher) t += `Auth-SSL-Cipher: ${s.cipher}\r\n`;
    if (s.verify) t += `Auth-SSL-Verify: ${s.verify}\r\n`;
    if (s.subject) t += `Auth-SSL-Subject: ${s.subject}\r\n`;
    if (s.issuer) t += `Auth-SSL-Issuer: ${s.issuer}\r\n`;
    if (s.serial) t += `Auth-SSL-Serial: ${s.serial}\r\n`;
    if (s.fingerprint) t += `Auth-SSL-Fingerprint: ${s.fingerprint}\r\n`;
    if (s.cert) t += `Auth-SSL-Cert: ${escapeMailAuth(s.cert)}\r\n`;
  }
  for (const k in extra) t += `${k}: ${extra[k]}\r\n`;
  return t;
}

/** The same headers as name/value pairs (fetch's Headers, tests). */
export function authRequestHeaders(q: AuthQuery, extra: Readonly<Record<string, string>>): [string, string][] {
  return authRequestText(q, extra).split("\r\n").filter((l) => l !== "").map((l) => {
    const colon = l.indexOf(": ");
    return [l.slice(0, colon), l.slice(colon + 2)];
  });
}

const METHODS: readonly AuthMethod[] = ["plain", "login", "apop", "cram-md5", "external", "none"];

/** The other side: an auth_http request as our /auth endpoint receives it. */
export function authQueryFromHeaders(get: (name: string) => string | null): { ok: true; query: AuthQuery } | { ok: false; error: string } {
  const method = (get("Auth-Method") ?? "").toLowerCase() as AuthMethod;
  if (!METHODS.includes(method)) return { ok: false, error: `unknown Auth-Method "${method}"` };
  const protocol = (get("Auth-Protocol") ?? "").toLowerCase();
  if (protocol !== "imap" && protocol !== "pop3" && protocol !== "smtp") return { ok: false, error: `unknown Auth-Protocol "${protocol}"` };
  const attempt = Number(get("Auth-Login-Attempt") ?? "1");
  const sslOn = get("Auth-SSL") === "on";
  const opt = (n: string) => get(n) ?? undefined;
  return {
    ok: true,
    query: {
      method,
      protocol,
      user: unescapeMailAuth(get("Auth-User") ?? ""),
      pass: unescapeMailAuth(get("Auth-Pass") ?? ""),
      salt: opt("Auth-Salt"),
      loginAttempt: Number.isFinite(attempt) && attempt > 0 ? attempt : 1,
      clientIp: get("Client-IP") ?? "",
      clientHost: opt("Client-Host"),
      smtp: method === "none" ? { helo: get("Auth-SMTP-Helo") ?? "", from: get("Auth-SMTP-From") ?? "", to: get("Auth-SMTP-To") ?? "" } : undefined,
      ssl: sslOn
        ? {
          protocol: opt("Auth-SSL-Protocol"),
          cipher: opt("Auth-SSL-Cipher"),
          verify: opt("Auth-SSL-Verify"),
          subject: opt("Auth-SSL-Subject"),
          issuer: opt("Auth-SSL-Issuer"),
          serial: opt("Auth-SSL-Serial"),
          fingerprint: opt("Auth-SSL-Fingerprint"),
          cert: get("Auth-SSL-Cert") ? unescapeMailAuth(get("Auth-SSL-Cert")!) : undefined,
        }
        : undefined,
    },
  };
}

export function authReplyHeaders(r: AuthReply): [string, string][] {
  const h: [string, string][] = [];
  const add = (n: string, v: string | undefined) => v !== undefined && h.push([n, v]);
  add("Auth-Status", r.status);
  add("Auth-Server", r.server);
  add("Auth-Port", r.port);
  add("Auth-User", r.user);
  add("Auth-Pass", r.pass);
  add("Auth-Wait", r.wait);
  add("Auth-Error-Code", r.errorCode);
  return h;
}

/** How the driver must go on after one auth reply, read exactly as nginx's process_headers does. */
export type AuthDecision =
  | { readonly kind: "done"; readonly outcome: AuthOutcome; readonly delayMs: number; readonly log?: string }
  | { readonly kind: "retry"; readonly delayMs: number }; // Auth-Status: WAIT

const DEFAULT_SMTP_ERROR_CODE = "535 5.7.0";

function parseIp(text: string): string | null {
  if (/^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/.test(text)) return text;
  const v6 = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  if (/^[0-9A-Fa-f:.]+$/.test(v6) && v6.includes(":") && v6.split("::").length <= 2) return v6;
  return null;
}

export function decideAuth(
  reply: AuthReply,
  session: { protocol: "imap" | "pop3" | "smtp"; login: string; password: string | null },
): AuthDecision {
  const wait = reply.wait !== undefined && /^\d+$/.test(reply.wait.trim()) ? Number(reply.wait.trim()) : 0;
  const status = reply.status;
  if (status !== undefined && status !== "OK" && status !== "WAIT") {
    const message = status;
    const text = session.protocol === "smtp" ? `${reply.errorCode ?? DEFAULT_SMTP_ERROR_CODE} ${message}` : message;
    return {
      kind: "done",
      delayMs: wait * 1000,
      outcome: { kind: "fail", message: text, errorCode: reply.errorCode, keepOpen: wait > 0 },
      log: `client login failed: "${message}"`,
    };
  }
  if (status === "WAIT") return { kind: "retry", delayMs: wait * 1000 };
  const error = (why: string): AuthDecision => ({ kind: "done", delayMs: 0, outcome: { kind: "error", why } });
  if (!reply.server || !reply.port) return error("auth http server did not send server or port");
  const password = reply.pass ?? session.password;
  if (password === null && session.protocol !== "smtp") return error("auth http server did not send password");
  const host = parseIp(reply.server.trim());
  if (!host) return error(`auth http server sent invalid server address:"${reply.server}"`);
  const port = /^\d+$/.test(reply.port.trim()) ? Number(reply.port.trim()) : NaN;
  if (!(port >= 1 && port <= 65535)) return error(`auth http server sent invalid server port:"${reply.port}"`);
  return { kind: "done", delayMs: 0, outcome: { kind: "ok", host, port, login: reply.user ?? session.login, password: password ?? "" } };
}
