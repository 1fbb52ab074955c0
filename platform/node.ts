// Platform adapter for Node (20+): node:net / node:tls sockets, a data/drain relay,
// node:http serving a web-standard fetch handler, node:dns Resolver for DNS.
//
// Docs relied on:
//   https://nodejs.org/api/net.html            (createServer allowHalfOpen, connect, Socket)
//   https://nodejs.org/api/tls.html            (createServer, TLSSocket, connect)
//   https://nodejs.org/api/http.html           (createServer, closeIdleConnections)
//   https://nodejs.org/api/stream.html#streamreadabletowebstreamreadable-options
//   https://nodejs.org/api/dns.html#class-dnspromisesresolver
//   https://nodejs.org/api/crypto.html#cryptoscryptpassword-salt-keylen-options-callback
//   https://nodejs.org/api/process.html#signal-events

import { appendFileSync } from "node:fs";
import { resolveDns, reverseDns, scrypt } from "./node-dns-crypto.ts";
import { readFile } from "node:fs/promises";
import * as http from "node:http";
import * as net from "node:net";
import { hostname } from "node:os";
import { Readable } from "node:stream";
import type { Address, Conn, ListenAt, Listener, Platform, RelayHandle, RelayOpts, TlsClient, TlsProblem, TlsServer } from "../src/platform.ts";
import { connectSocket, listenSockets, relaySocketConns, SocketConn } from "./node-socket.ts";
import { commonClientProblems, commonServerProblems, contextProblems } from "./node-tls.ts";
import { pumpConn, RelayControl } from "./relay-control.ts";

// ---------------------------------------------------------------------------
// Runtime check

const g = globalThis as { Deno?: unknown; Bun?: unknown; process?: { versions?: { node?: string } } };
if (g.Deno !== undefined || g.Bun !== undefined || g.process?.versions?.node === undefined) {
  throw new Error("Cannot load platform/node.ts: this is not Node (use the adapter for this runtime)");
}

// ---------------------------------------------------------------------------
// Constants


// ---------------------------------------------------------------------------
// TCP and TLS: the Conn
//
// SocketConn in node-socket.ts: a Conn over a node:net / node:tls socket, STARTTLS with
// new tls.TLSSocket(socket, {isServer}) / tls.connect({socket}).

// ---------------------------------------------------------------------------
// TLS: what node:tls (OpenSSL) honours. Everything in TlsServer; ssl_verify_depth is applied
// after the handshake (node-tls.ts tlsInfoOf) since node:tls has no option for it.

function checkTls(t: TlsServer | TlsClient): TlsProblem[] {
  if (t.side === "client") return commonClientProblems(t);
  const out = [...commonServerProblems(t), ...contextProblems(t)];
  if (t.sessionCacheSize && t.sessionTickets === false) {
    out.push({
      option: "sessionCacheSize",
      kind: "partial",
      why: "node:tls resumes TLSv1.3 sessions through tickets only: with ssl_session_tickets off, only TLSv1.2 sessions resume from the cache",
    });
  }
  return out;
}

// ---------------------------------------------------------------------------
// TCP and TLS: listen, connect

const listen = listenSockets; // net.createServer / tls.createServer, allowHalfOpen (node-socket.ts)
const connect = connectSocket; // net.connect, then tls.connect({socket}) for implicit TLS

// ---------------------------------------------------------------------------
// Relay: 'data' → write, pause on a full write buffer, resume on 'drain' (node-socket.ts)

function relay(client: Conn, upstream: Conn, opts: RelayOpts): RelayHandle {
  if (client instanceof SocketConn && upstream instanceof SocketConn) return relaySocketConns(client, upstream, opts);
  const ctl = new RelayControl(opts, client, upstream);
  void pumpConn(client, upstream, "client-to-upstream", ctl);
  void pumpConn(upstream, client, "upstream-to-client", ctl);
  return ctl;
}

// ---------------------------------------------------------------------------
// HTTP: node:http in front of a fetch handler (no @hono/node-server)

async function serveHttp(at: ListenAt, fetch: (r: Request) => Promise<Response> | Response): Promise<Listener> {
  const server = http.createServer((req, res) => {
    void answer(req, res, fetch).catch((err) => {
      if (!res.headersSent) {
        res.writeHead(500, { "content-type": "text/plain" });
        res.end("Internal Server Error");
      } else {
        res.destroy(err instanceof Error ? err : new Error(String(err)));
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: at.host, port: at.port, backlog: at.backlog, ipv6Only: at.ipv6Only }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address() as net.AddressInfo;
  return {
    address: { host: addr.address, port: addr.port },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

async function answer(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  fetch: (r: Request) => Promise<Response> | Response,
): Promise<void> {
  const headers = new Headers();
  for (let i = 0; i < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
  const local = req.socket.localAddress ?? "127.0.0.1";
  const base = `http://${local.includes(":") ? `[${local}]` : local}:${req.socket.localPort}`;
  let url: URL;
  try {
    url = new URL(req.url ?? "/", `http://${req.headers.host ?? "localhost"}`);
  } catch {
    url = new URL(req.url ?? "/", base);
  }
  const aborter = new AbortController();
  res.once("close", () => {
    if (!res.writableFinished) aborter.abort();
  });
  const hasBody = req.method !== "GET" && req.method !== "HEAD";
  const request = new Request(url, {
    method: req.method,
    headers,
    body: hasBody ? (Readable.toWeb(req) as unknown as ReadableStream<Uint8Array>) : undefined,
    signal: aborter.signal,
    duplex: "half",
  } as RequestInit);
  const response = await fetch(request);
  const out: string[] = [];
  response.headers.forEach((value, name) => {
    if (name !== "set-cookie") out.push(name, value);
  });
  for (const cookie of response.headers.getSetCookie()) out.push("set-cookie", cookie);
  res.writeHead(response.status, response.statusText, out);
  if (response.body === null || req.method === "HEAD") {
    res.end();
    return;
  }
  const reader = response.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (!res.write(value)) {
        await new Promise<void>((resolve) => {
          const go = (): void => {
            res.off("drain", go);
            res.off("close", go);
            resolve();
          };
          res.on("drain", go);
          res.on("close", go);
        });
        if (res.destroyed) return;
      }
    }
    res.end();
  } finally {
    reader.releaseLock();
  }
}

// ---------------------------------------------------------------------------
// Crypto, files, logs, signals, process (DNS and scrypt: platform/node-dns-crypto.ts)

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536))); // 64 KiB per call at most
  return out;
}

function writeLog(dest: string, line: string): void {
  if (dest === "stderr") process.stderr.write(line + "\n");
  else appendFileSync(dest, line + "\n");
}

function onSignal(name: "HUP" | "QUIT" | "TERM" | "INT", fn: () => void): void {
  process.on(`SIG${name}`, fn);
}

// ---------------------------------------------------------------------------
// Platform

export const nodePlatform: Platform = {
  runtime: "node",
  checkTls,
  listen,
  connect,
  relay,
  serveHttp,
  fetch: (url, init) => globalThis.fetch(url, init),
  readTextFile: (path) => readFile(path, "utf8"),
  onSignal,
  reverseDns,
  resolveDns,
  scrypt,
  randomBytes,
  hostname: () => hostname(),
  pid: () => process.pid,
  writeLog,
  exit: (code) => process.exit(code),
};
