// auth_http over HTTP: nginx's request headers on a pool of keep-alive HTTP/1.1 connections of our
// own (fetch costs several times more CPU per login), bounded by auth_http_timeout. As in nginx
// the status code is ignored and only the headers count. https:// URLs go through fetch.

import type { Address, Conn } from "../platform.ts";
import { caselessAt, concat, EMPTY, fromBytes, toBytes, utf8Latin1 } from "../util/bytes.ts";
import { authRequestHeaders, authRequestText } from "./protocol.ts";
import type { AuthQuery, AuthReply, AuthService } from "./types.ts";

export type Fetch = (url: string, init: RequestInit) => Promise<Response>;
export type Connect = (to: Address, timeoutMs: number) => Promise<Conn>;

const MAX_REPLY_HEADER_BYTES = 16384; // nginx reads at most 1 KiB of headers; more is allowed, not unbounded
const MAX_IDLE_CONNECTIONS = 32; // kept open per auth server between logins
const MAX_BODY_BYTES = 1 << 20; // a body is read and dropped so the connection can be reused

class AuthHttpError extends Error {}

function replyFrom(get: (name: string) => string | undefined): AuthReply {
  return {
    status: get("auth-status"),
    server: get("auth-server"),
    port: get("auth-port"),
    user: get("auth-user"),
    pass: get("auth-pass"),
    wait: get("auth-wait"),
    errorCode: get("auth-error-code"),
  };
}

/** What a reply's head says: the auth headers, and how the reply is framed. */
interface ReplyHead {
  reply: AuthReply;
  minor: string; // HTTP/1.x
  code: number;
  connection: string;
  contentLength: string | undefined;
  transferEncoding: string;
}

const REPLY_FIELDS = [
  "auth-status", "auth-server", "auth-port", "auth-user", "auth-pass", "auth-wait", "auth-error-code",
  "connection", "content-length", "transfer-encoding",
] as const;

/**
 * Reads the status line and the header lines of `text` up to `end` (where the empty line
 * starts). Every line must be a header; only the names that matter are lowercased and kept
 * (Server, Date, ... are checked and skipped); a repeated header counts by its last value.
 */
function readHead(text: string, end: number): ReplyHead {
  let eol = text.indexOf("\r\n");
  if (eol < 0 || eol > end) eol = end;
  const status = /^HTTP\/1\.([01]) (\d{3})/.exec(text.slice(0, eol));
  if (!status) throw new AuthHttpError(`auth http server sent invalid status line "${text.slice(0, Math.min(eol, 64))}"`);
  const reply: { -readonly [K in keyof AuthReply]: AuthReply[K] } = {
    status: undefined, server: undefined, port: undefined, user: undefined, pass: undefined, wait: undefined, errorCode: undefined,
  };
  const head: ReplyHead = { reply, minor: status[1], code: Number(status[2]), connection: "", contentLength: undefined, transferEncoding: "" };
  for (let at = eol + 2; at < end; at = eol + 2) {
    eol = text.indexOf("\r\n", at);
    if (eol < 0 || eol > end) eol = end;
    const colon = text.indexOf(":", at);
    if (colon <= at || colon > eol) throw new AuthHttpError("auth http server sent invalid header in response");
    const c = text.charCodeAt(at) | 0x20; // a, c, t: auth-*, connection, content-length, transfer-encoding
    if (c !== 0x61 && c !== 0x63 && c !== 0x74) continue;
    let nameEnd = colon;
    while (nameEnd > at && text.charCodeAt(nameEnd - 1) === 0x20) nameEnd--;
    let field: typeof REPLY_FIELDS[number] | undefined;
    for (const f of REPLY_FIELDS) {
      if (nameEnd - at === f.length && caselessAt(text, at, f)) {
        field = f;
        break;
      }
    }
    if (field === undefined) continue;
    const value = text.slice(colon + 1, eol).trim();
    switch (field) {
      case "auth-status": reply.status = value; break;
      case "auth-server": reply.server = value; break;
      case "auth-port": reply.port = value; break;
      case "auth-user": reply.user = value; break;
      case "auth-pass": reply.pass = value; break;
      case "auth-wait": reply.wait = value; break;
      case "auth-error-code": reply.errorCode = value; break;
      case "connection": head.connection = value; break;
      case "content-length": head.contentLength = value; break;
      case "transfer-encoding": head.transferEncoding = value; break;
    }
  }
  return head;
}

export function createHttpAuth(
  url: string,
  headers: Readonly<Record<string, string>>,
  timeoutMs: number,
  io: { fetch: Fetch; connect: Connect },
): AuthService {
  const u = new URL(url);
  // auth_http_header values are config text: sent as their UTF-8 bytes, as nginx sends its config's
  headers = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, utf8Latin1(v)]));
  if (u.protocol !== "http:") return createFetchAuth(url, headers, timeoutMs, io.fetch);
  const to = { host: u.hostname.replace(/^\[|\]$/g, ""), port: Number(u.port || 80) };
  const head = `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\n`;
  const idle: Conn[] = [];

  /** One request on one connection; `reusable` when the reply was framed and keep-alive. */
  async function exchange(conn: Conn, request: Uint8Array): Promise<{ reply: AuthReply; reusable: boolean }> {
    const sent = conn.writeNow !== undefined ? conn.writeNow(request) : conn.write(request);
    if (sent !== undefined) await sent;
    let buf: Uint8Array = EMPTY;
    let text = "";
    let end = -1;
    while (end < 0) {
      const chunk = await conn.read();
      if (chunk === null) throw new AuthHttpError(buf.length ? "auth http server closed the connection mid-reply" : "closed");
      buf = concat(buf, chunk);
      text = fromBytes(buf, 0, MAX_REPLY_HEADER_BYTES + 4);
      end = text.indexOf("\r\n\r\n");
      if (end < 0 && buf.length > MAX_REPLY_HEADER_BYTES) throw new AuthHttpError("auth http server sent too long a header");
    }
    const parsed = readHead(text, end);
    const reply = parsed.reply;
    let rest = buf.length > end + 4 ? buf.subarray(end + 4) : EMPTY;
    const connection = parsed.connection.toLowerCase();
    let reusable = parsed.minor === "1" ? connection !== "close" : connection === "keep-alive";
    const code = parsed.code;
    const length = parsed.contentLength;
    if (parsed.transferEncoding.toLowerCase() === "chunked") {
      // read to the last chunk and drop the body
      for (;;) {
        const m = /(?:^|\r\n)0[^\r\n]*\r\n\r\n$/.exec(fromBytes(rest));
        if (m) break;
        if (rest.length > MAX_BODY_BYTES) return { reply, reusable: false };
        const chunk = await conn.read();
        if (chunk === null) return { reply, reusable: false };
        rest = concat(rest, chunk);
      }
    } else if (length !== undefined && /^\d+$/.test(length)) {
      const want = Number(length);
      if (want > MAX_BODY_BYTES) return { reply, reusable: false };
      while (rest.length < want) {
        const chunk = await conn.read();
        if (chunk === null) return { reply, reusable: false };
        rest = concat(rest, chunk);
      }
      if (rest.length > want) reusable = false; // bytes nobody asked for: don't trust this connection
    } else if (code !== 204 && code !== 304 && !(code >= 100 && code < 200)) {
      reusable = false; // a body that ends with the connection
    }
    return { reply, reusable };
  }

  return {
    async ask(q: AuthQuery): Promise<AuthReply> {
      const request = toBytes(`${head}${authRequestText(q, headers)}\r\n`);
      const deadline = Date.now() + timeoutMs;
      let current: Conn | undefined;
      let timedOut = false;
      // auth_http_timeout: closing the connection in use ends the exchange waiting on it
      const timer = setTimeout(() => {
        timedOut = true;
        current?.close();
      }, timeoutMs);
      try {
        // a pooled connection may have been closed by the server meanwhile: then try a fresh one
        for (;;) {
          const pooled = idle.pop();
          current = pooled ?? await io.connect(to, Math.max(1, deadline - Date.now()));
          if (timedOut) throw new AuthHttpError("timed out");
          try {
            const r = await exchange(current, request);
            if (timedOut) throw new AuthHttpError("timed out");
            if (r.reusable && idle.length < MAX_IDLE_CONNECTIONS) idle.push(current);
            else current.close();
            return r.reply;
          } catch (e) {
            current.close();
            if (timedOut) throw e;
            if (pooled && e instanceof AuthHttpError && e.message === "closed") continue;
            if (e instanceof AuthHttpError && e.message === "closed") throw new AuthHttpError("auth http server closed the connection");
            throw e;
          }
        }
      } catch (e) {
        throw timedOut ? new AuthHttpError(`auth http server timed out after ${timeoutMs} ms`) : e;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

function createFetchAuth(url: string, headers: Readonly<Record<string, string>>, timeoutMs: number, fetch: Fetch): AuthService {
  return {
    async ask(q: AuthQuery): Promise<AuthReply> {
      const h = new Headers();
      for (const [k, v] of authRequestHeaders(q, headers)) h.append(k, v);
      const res = await fetch(url, { method: "GET", headers: h, signal: AbortSignal.timeout(timeoutMs), redirect: "manual" });
      await res.body?.cancel().catch(() => {});
      let size = 0;
      res.headers.forEach((v, k) => (size += k.length + v.length + 4));
      if (size > MAX_REPLY_HEADER_BYTES) throw new Error(`auth http server sent ${size} bytes of headers`);
      return replyFrom((n) => res.headers.get(n) ?? undefined);
    },
  };
}
