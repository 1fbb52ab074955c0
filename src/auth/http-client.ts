// auth_http over HTTP: nginx's request headers, sent with the runtime's fetch (keep-alive
// connections are reused), bounded by auth_http_timeout. The status code is ignored, as nginx does.

import type { AuthQuery, AuthReply, AuthService } from "./types.ts";
import { authRequestHeaders } from "./protocol.ts";

export type Fetch = (url: string, init: RequestInit) => Promise<Response>;

const MAX_REPLY_HEADER_BYTES = 16384; // nginx reads at most 1 KiB of headers; we allow more but not unbounded

export function createHttpAuth(url: string, headers: Readonly<Record<string, string>>, timeoutMs: number, fetch: Fetch): AuthService {
  return {
    async ask(q: AuthQuery): Promise<AuthReply> {
      const h = new Headers();
      for (const [k, v] of authRequestHeaders(q, headers)) h.append(k, v);
      const res = await fetch(url, { method: "GET", headers: h, signal: AbortSignal.timeout(timeoutMs), redirect: "manual" });
      // drain the body so the connection can be reused
      await res.body?.cancel().catch(() => {});
      let size = 0;
      res.headers.forEach((v, k) => (size += k.length + v.length + 4));
      if (size > MAX_REPLY_HEADER_BYTES) throw new Error(`auth http server sent ${size} bytes of headers`);
      const get = (n: string) => res.headers.get(n) ?? undefined;
      return {
        status: get("Auth-Status"),
        server: get("Auth-Server"),
        port: get("Auth-Port"),
        user: get("Auth-User"),
        pass: get("Auth-Pass"),
        wait: get("Auth-Wait"),
        errorCode: get("Auth-Error-Code"),
      };
    },
  };
}
