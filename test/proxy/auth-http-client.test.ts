import assert from "node:assert/strict";
import { test } from "node:test";
import { createHttpAuth } from "../../src/auth/http-client.ts";
import type { Conn } from "../../src/platform.ts";

const enc = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** A connection that answers each request with the next scripted reply, split into small chunks. */
function fakeServer(replies: string[]) {
  const requests: string[] = [];
  let connections = 0;
  const connect = async (): Promise<Conn> => {
    connections++;
    const queue: Uint8Array[] = [];
    let closed = false;
    let wake: (() => void) | undefined;
    const conn: Conn = {
      remote: { host: "127.0.0.1", port: 80 },
      local: { host: "127.0.0.1", port: 5000 },
      async read() {
        while (queue.length === 0 && !closed) await new Promise<void>((r) => (wake = r));
        return queue.shift() ?? null;
      },
      async write(data) {
        requests.push(String.fromCharCode(...data));
        const reply = replies.shift();
        if (reply === undefined) {
          closed = true;
        } else {
          const b = enc(reply);
          for (let i = 0; i < b.length; i += 7) queue.push(b.subarray(i, i + 7));
        }
        wake?.();
      },
      async closeWrite() {},
      close() {
        closed = true;
        wake?.();
      },
      startTls: () => Promise.reject(new Error("no TLS")),
    };
    return conn;
  };
  return { connect, requests, connections: () => connections };
}

const q = { method: "plain" as const, user: "al ice", pass: "p", protocol: "imap" as const, loginAttempt: 1, clientIp: "127.0.0.2" };
const unused = () => Promise.reject(new Error("fetch is not used for http://"));

test("the auth_http client sends nginx's headers and reuses one connection for framed keep-alive replies", async () => {
  const ok = "HTTP/1.1 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 143\r\nContent-Length: 5\r\n\r\nhello";
  const chunked = "HTTP/1.1 200 OK\r\nAuth-Status: Invalid login\r\nAuth-Wait: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
  const s = fakeServer([ok, chunked, ok]);
  const auth = createHttpAuth("http://127.0.0.1:9000/auth?x=1", { "X-Key": "k" }, 1000, { fetch: unused, connect: s.connect });
  assert.deepEqual(await auth.ask(q), { status: "OK", server: "127.0.0.1", port: "143", user: undefined, pass: undefined, wait: undefined, errorCode: undefined });
  assert.equal((await auth.ask(q)).wait, "3");
  assert.equal((await auth.ask(q)).status, "OK");
  assert.equal(s.connections(), 1);
  assert.equal(
    s.requests[0],
    "GET /auth?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nAuth-Method: plain\r\nAuth-User: al%20ice\r\nAuth-Pass: p\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.2\r\nX-Key: k\r\n\r\n",
  );
});

test("auth_http_header values from the config are sent as their UTF-8 bytes", async () => {
  const s = fakeServer(["HTTP/1.1 204 No Content\r\nAuth-Status: OK\r\n\r\n"]);
  const auth = createHttpAuth("http://127.0.0.1:9000/auth", { "X-Realm": "łódź" }, 1000, { fetch: unused, connect: s.connect });
  await auth.ask(q);
  assert.match(s.requests[0], new RegExp("\r\nX-Realm: " + String.fromCharCode(...new TextEncoder().encode("łódź")) + "\r\n"));
});

test("the auth_http client opens a new connection after Connection: close or an unframed body, and refuses garbage", async () => {
  const s = fakeServer([
    "HTTP/1.1 204 No Content\r\nAuth-Status: OK\r\nConnection: close\r\n\r\n",
    "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n\r\nbody until close",
    "HTTP/1.1 204 No Content\r\nAuth-Status: OK\r\n\r\n",
    "garbage\r\n\r\n",
  ]);
  const auth = createHttpAuth("http://127.0.0.1:9000/auth", {}, 1000, { fetch: unused, connect: s.connect });
  await auth.ask(q);
  await auth.ask(q);
  await auth.ask(q);
  assert.equal(s.connections(), 3);
  await assert.rejects(auth.ask(q), /invalid status line/);
});

test("the auth_http client gives up after auth_http_timeout", async () => {
  const s = fakeServer([]);
  const hang = async () => {
    const c = await s.connect();
    return { ...c, write: async () => {} };
  };
  const auth = createHttpAuth("http://127.0.0.1:9000/auth", {}, 50, { fetch: unused, connect: hang });
  await assert.rejects(auth.ask(q), /timed out after 50 ms/);
});
