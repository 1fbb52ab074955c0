// A scripted auth_http server for tests. It speaks HTTP/1.x itself on node:net (not node:http),
// so it behaves byte for byte the same on Node, Deno and Bun, records each request exactly as it
// arrived, and can answer late, never, or with garbage.
//
//   const auth = await startMockAuth(() => authOk("127.0.0.1", backend.port));
//   ... auth.url is "http://127.0.0.1:PORT/auth"; auth.requests[0].header("auth-user") ...
import * as net from "node:net";
import { Buffer } from "node:buffer";

export interface AuthRequest {
  readonly method: string;
  readonly url: string;
  readonly httpVersion: string; // "1.0" | "1.1"
  /** Header lines in order, exactly as sent (names keep their case). */
  readonly rawHeaders: readonly [string, string][];
  /** The request line and header block as received, CRLFs included. */
  readonly raw: string;
  readonly body: string;
  readonly remote: { readonly address: string; readonly port: number };
  /** Index of the TCP connection this request came on (keep-alive reuse shows as repeats). */
  readonly connection: number;
  readonly at: number; // Date.now() when the request was complete
  /** Last value of a header, case-insensitive; undefined when absent. */
  header(name: string): string | undefined;
  /** Every value of a header, case-insensitive, in order. */
  headerAll(name: string): string[];
}

export type AuthReply =
  /** An HTTP response: status 200 unless given, these headers, an empty body unless given. */
  | {
    readonly headers: Readonly<Record<string, string>> | readonly (readonly [string, string])[];
    readonly status?: number;
    readonly body?: string;
    readonly delayMs?: number;
    /** Close the connection after this response even if the client wants keep-alive. */
    readonly close?: boolean;
  }
  /** Never answer; the connection stays open until the client or close() ends it. */
  | { readonly hang: true }
  /** Write these bytes instead of an HTTP response, then close unless keepOpen. */
  | { readonly raw: string | Uint8Array; readonly delayMs?: number; readonly keepOpen?: boolean }
  /** Close the connection without a byte (after delayMs). */
  | { readonly drop: true; readonly delayMs?: number };

export type AuthHandler = (req: AuthRequest) => AuthReply | Promise<AuthReply>;

export interface MockAuth {
  readonly host: string;
  readonly port: number;
  /** "http://HOST:PORT/auth" */
  readonly url: string;
  readonly requests: AuthRequest[];
  /** Number of TCP connections accepted so far. */
  connections(): number;
  setHandler(handler: AuthHandler | AuthReply): void;
  /** Resolves with the requests once at least `n` arrived. */
  waitForRequests(n: number, timeoutMs?: number): Promise<AuthRequest[]>;
  close(): Promise<void>;
}

/** nginx's success answer: proxy to server:port. */
export function authOk(server: string, port: number, extra: Record<string, string> = {}): AuthReply {
  return { headers: { "Auth-Status": "OK", "Auth-Server": server, "Auth-Port": String(port), ...extra } };
}

/** nginx's failure answer; `wait` seconds makes the proxy let the client retry. */
export function authFail(message = "Invalid login or password", extra: Record<string, string> = {}, wait?: number): AuthReply {
  return {
    headers: { "Auth-Status": message, ...(wait === undefined ? {} : { "Auth-Wait": String(wait) }), ...extra },
  };
}

const MAX_HEAD_BYTES = 64 * 1024; // nothing a proxy sends is near this; stops a runaway test

const REASONS: Record<number, string> = { 200: "OK", 204: "No Content", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable" };

function makeRequest(fields: Omit<AuthRequest, "header" | "headerAll">): AuthRequest {
  const all = (name: string) =>
    fields.rawHeaders.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);
  return { ...fields, headerAll: all, header: (name) => all(name).at(-1) };
}

/** Start the server on host (default 127.0.0.1) and a free port. */
export async function startMockAuth(
  handler: AuthHandler | AuthReply,
  opts: { host?: string; port?: number } = {},
): Promise<MockAuth> {
  const host = opts.host ?? "127.0.0.1";
  let current: AuthHandler = typeof handler === "function" ? handler : () => handler;
  const requests: AuthRequest[] = [];
  const sockets = new Set<net.Socket>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let accepted = 0;
  let closing = false;
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const w of waiters) w();
  };
  const later = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });

  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    const connection = accepted++;
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => {});
    let buf = Buffer.alloc(0);
    let busy = false; // one request at a time per connection, in order
    let ended = false;
    const remote = { address: sock.remoteAddress ?? "", port: sock.remotePort ?? 0 };

    const pump = async () => {
      if (busy) return;
      busy = true;
      try {
        for (;;) {
          if (sock.destroyed) return;
          const headEnd = buf.indexOf("\r\n\r\n");
          if (headEnd < 0) {
            if (buf.length > MAX_HEAD_BYTES) sock.destroy();
            else if (ended) sock.end();
            return;
          }
          const head = buf.subarray(0, headEnd + 4).toString("latin1");
          const lines = head.slice(0, -4).split("\r\n");
          const m = /^(\S+) (\S+) HTTP\/(\d\.\d)$/.exec(lines[0]);
          if (!m) {
            sock.end("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
          }
          const rawHeaders: [string, string][] = lines.slice(1).map((l) => {
            const i = l.indexOf(":");
            return i < 0 ? [l, ""] : [l.slice(0, i), l.slice(i + 1).trim()];
          });
          const get = (n: string) => rawHeaders.filter(([k]) => k.toLowerCase() === n).map(([, v]) => v).at(-1);
          let rest = buf.subarray(headEnd + 4);
          let body = Buffer.alloc(0);
          const te = get("transfer-encoding");
          if (te && /chunked/i.test(te)) {
            // Minimal chunked decoding: wait for the whole body.
            const parts: Buffer[] = [];
            let off = 0;
            let complete = false;
            for (;;) {
              const lineEnd = rest.indexOf("\r\n", off);
              if (lineEnd < 0) break;
              const size = parseInt(rest.subarray(off, lineEnd).toString("latin1"), 16);
              if (Number.isNaN(size)) {
                sock.destroy();
                return;
              }
              if (size === 0) {
                const trailerEnd = rest.indexOf("\r\n\r\n", lineEnd);
                if (trailerEnd < 0) break;
                off = trailerEnd + 4;
                complete = true;
                break;
              }
              if (rest.length < lineEnd + 2 + size + 2) break;
              parts.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
              off = lineEnd + 2 + size + 2;
            }
            if (!complete) {
              if (ended) sock.end();
              return;
            }
            body = Buffer.concat(parts);
            rest = rest.subarray(off);
          } else {
            const len = Number(get("content-length") ?? "0");
            if (rest.length < len) {
              if (ended) sock.end();
              return;
            }
            body = rest.subarray(0, len);
            rest = rest.subarray(len);
          }
          buf = Buffer.from(rest);
          const req = makeRequest({
            method: m[1],
            url: m[2],
            httpVersion: m[3],
            rawHeaders,
            raw: head,
            body: body.toString("utf8"),
            remote,
            connection,
            at: Date.now(),
          });
          requests.push(req);
          notify();
          let reply: AuthReply;
          try {
            reply = await current(req);
          } catch (e) {
            reply = { status: 500, headers: { "X-Mock-Error": String((e as Error).message ?? e) } };
          }
          if ("hang" in reply) return; // busy stays true: nothing more is answered here
          if (reply.delayMs) await later(reply.delayMs);
          if (closing || sock.destroyed) return;
          if ("drop" in reply) {
            sock.destroy();
            return;
          }
          if ("raw" in reply) {
            sock.write(typeof reply.raw === "string" ? Buffer.from(reply.raw, "latin1") : reply.raw);
            if (!reply.keepOpen) {
              sock.end();
              return;
            }
            continue;
          }
          const conn = (get("connection") ?? "").toLowerCase();
          const keepAlive = !reply.close && (m[3] === "1.1" ? conn !== "close" : conn === "keep-alive");
          const status = reply.status ?? 200;
          const pairs = Array.isArray(reply.headers)
            ? (reply.headers as readonly (readonly [string, string])[])
            : Object.entries(reply.headers as Record<string, string>);
          const bodyBytes = Buffer.from(reply.body ?? "", "utf8");
          let out = `HTTP/${m[3] === "1.0" ? "1.0" : "1.1"} ${status} ${REASONS[status] ?? "Status"}\r\n`;
          for (const [k, v] of pairs) out += `${k}: ${v}\r\n`;
          out += `Content-Length: ${bodyBytes.length}\r\n`;
          out += `Connection: ${keepAlive ? "keep-alive" : "close"}\r\n\r\n`;
          sock.write(Buffer.concat([Buffer.from(out, "latin1"), bodyBytes]));
          if (!keepAlive) {
            sock.end();
            return;
          }
        }
      } finally {
        busy = false;
      }
    };
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      void pump();
    });
    sock.on("end", () => {
      ended = true;
      void pump();
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port: opts.port ?? 0 }, () => resolve());
  });
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("Cannot read the mock auth server's port");
  const port = addr.port;

  return {
    host,
    port,
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}/auth`,
    requests,
    connections: () => accepted,
    setHandler(h) {
      current = typeof h === "function" ? h : () => h;
    },
    async waitForRequests(n, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (requests.length < n) {
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new Error(`Mock auth got ${requests.length} of ${n} requests within ${timeoutMs} ms`);
        }
        await new Promise<void>((resolve) => {
          const t = setTimeout(done, left);
          function done() {
            clearTimeout(t);
            waiters.delete(done);
            resolve();
          }
          waiters.add(done);
        });
      }
      return requests;
    },
    async close() {
      closing = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      notify();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
