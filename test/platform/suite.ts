// Black-box tests of one Platform adapter, run by each runtime's entry file against its
// own adapter: test/platform/{node.node,deno.deno,bun.bun}.test.ts.
// Flat node:test cases with node:assert/strict: they run unchanged under `node --test`
// (after esbuild), `deno test -A` and `bun test`.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { spawn } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import * as dgram from "node:dgram";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";
import type { Address, Conn, Listener, Platform, RelayStats, TlsClient, TlsServer } from "../../src/platform.ts";
import { concatAll } from "../../src/util/bytes.ts";
import { makeTestPki, type TestPki } from "../support/certs.ts";

const BIG = 64 * 1024 * 1024; // the relay transfer, each way
const LOCAL = "127.0.0.1";
const SLOW = { timeout: 60_000 }; // bun test's default per-test limit is 5 s
const enc = new TextEncoder();
const dec = new TextDecoder();

// ---------------------------------------------------------------------------
// Helpers

/** Fails with `what` when `p` does not settle in time: a hang becomes a message. */
function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A listener whose per-connection handlers are tracked: `settled()` rethrows their first failure. */
async function serve(
  p: Platform,
  handle: (c: Conn) => Promise<void>,
  tls?: TlsServer,
): Promise<{ listener: Listener; address: Address; settled(): Promise<void>; accepted: Promise<void> }> {
  const tasks: Promise<void>[] = [];
  const first = deferred<void>();
  const listener = await p.listen({ host: LOCAL, port: 0 }, (c) => {
    first.resolve();
    tasks.push(handle(c).catch((err) => {
      c.close();
      throw err;
    }));
  }, tls);
  return {
    listener,
    address: listener.address,
    accepted: first.promise,
    settled: async () => {
      await first.promise;
      await Promise.all(tasks);
    },
  };
}

/** Reads CRLF/LF lines from a Conn; bytes after the last line stay in `rest`, untouched. */
class Lines {
  rest: Uint8Array = new Uint8Array(0);
  constructor(readonly conn: Conn) {}
  async next(): Promise<string> {
    for (;;) {
      const i = this.rest.indexOf(0x0a);
      if (i >= 0) {
        const line = dec.decode(this.rest.subarray(0, i)).replace(/\r$/, "");
        this.rest = this.rest.slice(i + 1);
        return line;
      }
      const chunk = await this.conn.read();
      if (chunk === null) throw new Error(`Connection ended before a full line (have "${dec.decode(this.rest)}")`);
      this.rest = concatAll([this.rest, chunk]);
    }
  }
}

async function readAll(c: Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for (let chunk = await c.read(); chunk !== null; chunk = await c.read()) chunks.push(chunk);
  return concatAll(chunks);
}


function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  return out;
}

const POOL = randomBytes((1 << 20) + 65536); // slices of it make a long non-repeating-looking stream

/** Writes `total` bytes from POOL in chunks of varying size; resolves with their SHA-256. */
async function sendHashed(c: Conn, total: number, onAccepted?: (n: number) => void): Promise<string> {
  const h = createHash("sha256");
  let sent = 0;
  for (let k = 0; sent < total; k++) {
    const size = Math.min(total - sent, 16384 + ((k * 7919) % 49152));
    const from = (k * 104729) % (1 << 20);
    const chunk = POOL.subarray(from, from + size);
    h.update(chunk);
    await c.write(chunk);
    sent += size;
    onAccepted?.(sent);
  }
  return h.digest("hex");
}

async function receiveHashed(c: Conn): Promise<{ bytes: number; sha: string }> {
  const h = createHash("sha256");
  let bytes = 0;
  for (let chunk = await c.read(); chunk !== null; chunk = await c.read()) {
    h.update(chunk);
    bytes += chunk.byteLength;
  }
  return { bytes, sha: h.digest("hex") };
}

/** Resolves once `value()` has not changed for `quietMs` (a stalled writer), failing past `limit`. */
async function untilStalled(value: () => number, quietMs: number, limit: number, what: string): Promise<number> {
  let last = value();
  let since = performance.now();
  for (;;) {
    await new Promise((r) => setTimeout(r, 20));
    const now = value();
    if (now > limit) throw new Error(`${what}: ${now} bytes accepted, more than ${limit}: no backpressure`);
    if (now !== last) {
      last = now;
      since = performance.now();
    } else if (performance.now() - since >= quietMs) {
      return now;
    }
  }
}

let pkiOnce: Promise<TestPki> | undefined;
let otherPkiOnce: Promise<TestPki> | undefined;
/** The test CA, leaf and client certificate, made once per process and removed at exit. */
function pki(): Promise<TestPki> {
  return (pkiOnce ??= makeTestPki().then((k) => {
    process.on("exit", () => rmSync(k.dir, { recursive: true, force: true }));
    return k;
  }));
}
/** An unrelated CA (and leaf) for the wrong-CA cases. */
function otherPki(): Promise<TestPki> {
  return (otherPkiOnce ??= makeTestPki().then((k) => {
    process.on("exit", () => rmSync(k.dir, { recursive: true, force: true }));
    return k;
  }));
}

function serverTls(k: TestPki, extra: Partial<TlsServer> = {}): TlsServer {
  return { side: "server", certs: [{ cert: k.certPem, key: k.keyPem }], ...extra };
}

function clientTls(k: TestPki, extra: Partial<TlsClient> = {}): TlsClient {
  return { side: "client", ca: k.caPem, serverName: "localhost", verify: true, ...extra };
}

/** An echo server: every byte back, FIN answered with FIN. */
function echo(p: Platform, tls?: TlsServer) {
  return serve(p, async (c) => {
    for (let chunk = await c.read(); chunk !== null; chunk = await c.read()) await c.write(chunk);
    await c.closeWrite();
  }, tls);
}

/** A proxy in front of `upstream`: accept, connect, relay; resolves the relay's stats per connection. */
async function relayProxy(p: Platform, upstream: Address, opts = { bufferSize: 65536, idleTimeoutMs: 30_000 }) {
  const stats: Promise<RelayStats>[] = [];
  const proxy = await serve(p, async (c) => {
    const up = await p.connect(upstream, 5000);
    const handle = p.relay(c, up, opts);
    stats.push(handle.done);
    await handle.done;
  });
  return { ...proxy, stats };
}

/**
 * A listening port that never accepts, with its accept queue already full (python3: the
 * runtimes under test all accept by themselves). Connecting to it hangs until timed out.
 */
async function fullBacklogPort(): Promise<{ port: number; close(): void }> {
  const script = [
    "import socket, sys",
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(0)",
    "port = s.getsockname()[1]",
    "fill = []",
    "for i in range(4):",
    "    c = socket.socket(); c.setblocking(False); c.connect_ex(('127.0.0.1', port)); fill.append(c)",
    "print(port, flush=True)",
    "sys.stdin.read()",
  ].join("\n");
  const child = spawn("python3", ["-c", script], { stdio: ["pipe", "pipe", "inherit"] });
  const port = await within(5000, "python3 backlog helper", new Promise<number>((resolve, reject) => {
    child.once("error", reject);
    child.stdout.once("data", (d: Uint8Array) => resolve(Number(dec.decode(d).trim())));
  }));
  return { port, close: () => child.stdin.end() };
}

// ---------------------------------------------------------------------------
// DNS: a tiny UDP server answering PTR / A from a table (node:dgram works on all three)

type DnsTable = Record<string, { PTR?: string[]; A?: string[] }>;

function dnsName(name: string): number[] {
  const out: number[] = [];
  for (const label of name.replace(/\.$/, "").split(".")) out.push(label.length, ...enc.encode(label));
  out.push(0);
  return out;
}

function startFakeDns(table: DnsTable): Promise<{ port: number; queries: string[]; close(): void }> {
  const sock = dgram.createSocket("udp4");
  const queries: string[] = [];
  sock.on("message", (msg, from) => {
    let at = 12;
    const labels: string[] = [];
    while (msg[at] !== 0) {
      labels.push(dec.decode(msg.subarray(at + 1, at + 1 + msg[at])));
      at += msg[at] + 1;
    }
    const qtype = (msg[at + 1] << 8) | msg[at + 2];
    const questionEnd = at + 5;
    const name = labels.join(".").toLowerCase();
    queries.push(`${qtype} ${name}`);
    const entry = table[name];
    const answers: number[][] = [];
    const values = qtype === 12 ? entry?.PTR : qtype === 1 ? entry?.A : undefined;
    for (const v of values ?? []) {
      const rdata = qtype === 12 ? dnsName(v) : v.split(".").map(Number);
      answers.push([0xc0, 0x0c, 0, qtype, 0, 1, 0, 0, 0, 60, rdata.length >> 8, rdata.length & 255, ...rdata]);
    }
    // QR, opcode 0, RD echoed; RA; RCODE 3 (NXDOMAIN) for unknown names
    const header = [msg[0], msg[1], 0x80 | (msg[2] & 1), entry ? 0x80 : 0x83, 0, 1, 0, answers.length, 0, 0, 0, 0];
    sock.send(Uint8Array.from([...header, ...msg.subarray(12, questionEnd), ...answers.flat()]), from.port, from.address);
  });
  return new Promise((resolve) =>
    sock.bind(0, LOCAL, () => resolve({ port: sock.address().port, queries, close: () => sock.close() }))
  );
}

// ---------------------------------------------------------------------------
// The suite

export function platformSuite(name: string, p: Platform): void {
  test(`${name}: the adapter reports its runtime`, () => {
    assert.equal(p.runtime, name);
  });

  test(`${name}: echo returns every byte, and kept read() chunks stay intact`, SLOW, async () => {
    const server = await echo(p);
    const c = await p.connect(server.address, 5000);
    assert.equal(c.remote.port, server.address.port);
    assert.equal(c.remote.host, LOCAL);
    await c.write(enc.encode("hello\r\n"));
    const lines = new Lines(c);
    assert.equal(await within(5000, "echo of hello", lines.next()), "hello");
    const data = randomBytes(4 * 1024 * 1024);
    const sending = (async () => {
      for (let i = 0; i < data.length; i += 100_000) await c.write(data.subarray(i, i + 100_000));
      await c.closeWrite();
    })();
    const back = await within(20_000, "4 MiB echoed", readAll(c)); // keeps every chunk until the end
    await sending;
    assert.equal(back.length, data.length);
    assert.ok(Buffer.from(back).equals(Buffer.from(data)), "echoed bytes differ");
    await within(5000, "echo server done", server.settled());
    c.close();
    await server.listener.close();
  });

  test(`${name}: relay moves 64 MiB each way byte-exact`, SLOW, async () => {
    const upstreamGot = deferred<{ bytes: number; sha: string }>();
    const upstreamSent = deferred<string>();
    const upstream = await serve(p, async (c) => {
      const [sent, got] = await Promise.all([
        sendHashed(c, BIG).then(async (sha) => {
          await c.closeWrite();
          return sha;
        }),
        receiveHashed(c),
      ]);
      upstreamSent.resolve(sent);
      upstreamGot.resolve(got);
      c.close();
    });
    const proxy = await relayProxy(p, upstream.address);
    const started = performance.now();
    const c = await p.connect(proxy.address, 5000);
    const [clientSent, clientGot] = await within(50_000, "64 MiB through the relay", Promise.all([
      sendHashed(c, BIG).then(async (sha) => {
        await c.closeWrite();
        return sha;
      }),
      receiveHashed(c),
    ]));
    const ms = performance.now() - started;
    c.close();
    const stats = await within(5000, "relay done", proxy.stats[0]);
    const mbps = (BIG / 1e6) / (ms / 1000);
    console.log(`[${name}] relay 64 MiB each way in ${ms.toFixed(0)} ms: ${mbps.toFixed(0)} MB/s per direction, ${(2 * mbps).toFixed(0)} MB/s total`);
    assert.equal(clientGot.bytes, BIG);
    assert.equal(clientGot.sha, await upstreamSent.promise, "upstream to client bytes differ");
    const got = await upstreamGot.promise;
    assert.equal(got.bytes, BIG);
    assert.equal(got.sha, clientSent, "client to upstream bytes differ");
    assert.equal(stats.clientToUpstream, BIG);
    assert.equal(stats.upstreamToClient, BIG);
    assert.ok(stats.end === "client-closed" || stats.end === "upstream-closed", `relay end "${stats.end}"`);
    await upstream.settled();
    await proxy.settled();
    await upstream.listener.close();
    await proxy.listener.close();
  });

  /** Reads to FIN, then answers with the count: the reply must still reach a half-closed peer. */
  const countingServer = () =>
    serve(p, async (c) => {
      let n = 0;
      for (let chunk = await c.read(); chunk !== null; chunk = await c.read()) n += chunk.byteLength;
      await c.write(enc.encode(`got ${n} bytes\r\n`));
      await c.closeWrite();
    });

  async function sendThenFin(at: Address): Promise<string> {
    const c = await p.connect(at, 5000);
    await c.write(randomBytes(300_000));
    await c.closeWrite();
    const reply = dec.decode(await within(10_000, "reply after half-close", readAll(c)));
    c.close();
    return reply;
  }

  test(`${name}: half-close still delivers the reply`, SLOW, async () => {
    const server = await countingServer();
    assert.equal(await sendThenFin(server.address), "got 300000 bytes\r\n");
    await server.settled();
    await server.listener.close();
  });

  test(`${name}: half-close through the relay still delivers the reply`, SLOW, async () => {
    const server = await countingServer();
    const proxy = await relayProxy(p, server.address);
    assert.equal(await sendThenFin(proxy.address), "got 300000 bytes\r\n");
    const stats = await within(5000, "relay done", proxy.stats[0]);
    assert.equal(stats.end, "client-closed");
    assert.equal(stats.clientToUpstream, 300_000);
    assert.equal(stats.upstreamToClient, "got 300000 bytes\r\n".length);
    await server.settled();
    await proxy.settled();
    await server.listener.close();
    await proxy.listener.close();
  });

  test(`${name}: relay forwards bytes that arrived before it started`, SLOW, async () => {
    const upstreamWrote = { n: 0 };
    const total = 4 * 1024 * 1024;
    const shaSent = deferred<string>();
    const upstream = await serve(p, async (c) => {
      await c.write(enc.encode("+OK logged in\r\n"));
      const sha = await sendHashed(c, total, (n) => (upstreamWrote.n = n));
      await c.closeWrite();
      shaSent.resolve(sha);
      await readAll(c);
      c.close();
    });
    const proxy = await serve(p, async (c) => {
      const up = await p.connect(upstream.address, 5000);
      const login = new Lines(up);
      assert.equal(await login.next(), "+OK logged in"); // the driver's last read before the relay
      // let more arrive and queue in the upstream Conn before the relay takes over
      await untilStalled(() => upstreamWrote.n, 100, total, "upstream writer");
      if (login.rest.length > 0) await c.write(login.rest); // the driver forwards what it read
      const stats = await p.relay(c, up, { bufferSize: 16384, idleTimeoutMs: 10_000 }).done;
      assert.equal(stats.end === "upstream-closed" || stats.end === "client-closed", true);
    });
    const c = await p.connect(proxy.address, 5000);
    const got = await within(20_000, "4 MiB through the relay", receiveHashed(c));
    await c.closeWrite();
    assert.equal(got.bytes, total);
    assert.equal(got.sha, await shaSent.promise);
    c.close();
    await proxy.settled();
    await upstream.settled();
    await proxy.listener.close();
    await upstream.listener.close();
  });

  test(`${name}: a peer that does not read holds the writer back`, SLOW, async () => {
    const startReading = deferred<void>();
    const received = deferred<number>();
    const server = await serve(p, async (c) => {
      await startReading.promise; // nothing is read until the writer has stalled
      let n = 0;
      for (let chunk = await c.read(); chunk !== null; chunk = await c.read()) n += chunk.byteLength;
      received.resolve(n);
      c.close();
    });
    const c = await p.connect(server.address, 5000);
    const chunk = randomBytes(65536);
    let accepted = 0;
    let pendingWrite = false;
    let stop = false;
    const writer = (async () => {
      while (!stop) {
        pendingWrite = true;
        await c.write(chunk);
        pendingWrite = false;
        accepted += chunk.byteLength;
      }
      await c.closeWrite();
    })();
    const LIMIT = 32 * 1024 * 1024; // loopback socket buffers take a few MiB; more means no backpressure
    const stalledAt = await within(30_000, "writer stalls", untilStalled(() => accepted, 300, LIMIT, "writer"));
    assert.ok(pendingWrite, "a write should be pending while the peer does not read");
    assert.ok(stalledAt > 0 && stalledAt < LIMIT);
    stop = true;
    startReading.resolve();
    await within(20_000, "writer finishes once the peer reads", writer);
    assert.equal(await received.promise, accepted);
    c.close();
    await server.settled();
    await server.listener.close();
  });

  test(`${name}: the relay holds a fast writer back when upstream does not read`, SLOW, async () => {
    const startReading = deferred<void>();
    const received = deferred<number>();
    const upstream = await serve(p, async (c) => {
      await startReading.promise;
      let n = 0;
      for (let chunk = await c.read(); chunk !== null; chunk = await c.read()) n += chunk.byteLength;
      received.resolve(n);
      await c.closeWrite();
    });
    const proxy = await relayProxy(p, upstream.address);
    const c = await p.connect(proxy.address, 5000);
    const chunk = randomBytes(65536);
    let accepted = 0;
    let stop = false;
    const writer = (async () => {
      while (!stop) {
        await c.write(chunk);
        accepted += chunk.byteLength;
      }
      await c.closeWrite();
    })();
    const LIMIT = 64 * 1024 * 1024; // two loopback connections' buffers plus the relay's bounded queue
    const stalledAt = await within(40_000, "writer stalls behind the relay", untilStalled(() => accepted, 400, LIMIT, "writer"));
    assert.ok(stalledAt < LIMIT);
    stop = true;
    startReading.resolve();
    await within(20_000, "writer finishes once upstream reads", writer);
    assert.equal(await received.promise, accepted);
    assert.equal(await within(5000, "FIN back through the relay", c.read()), null);
    const stats = await proxy.stats[0];
    assert.equal(stats.clientToUpstream, accepted);
    c.close();
    await upstream.settled();
    await proxy.settled();
    await upstream.listener.close();
    await proxy.listener.close();
  });

  test(`${name}: close() ends a pending read with null and later writes reject`, SLOW, async () => {
    const server = await serve(p, async (c) => {
      await readAll(c);
      c.close();
    });
    const c = await p.connect(server.address, 5000);
    const pending = c.read();
    c.close();
    c.close(); // idempotent
    assert.equal(await within(5000, "pending read after close", pending), null);
    assert.equal(await c.read(), null);
    await assert.rejects(c.write(enc.encode("late")));
    await server.settled();
    await server.listener.close();
  });

  test(`${name}: a closed listener stops accepting while live connections go on`, SLOW, async () => {
    const server = await echo(p);
    const c = await p.connect(server.address, 5000);
    const lines = new Lines(c);
    await c.write(enc.encode("one\n"));
    assert.equal(await lines.next(), "one");
    await server.listener.close();
    await c.write(enc.encode("two\n"));
    assert.equal(await within(5000, "echo after listener close", lines.next()), "two");
    await assert.rejects(p.connect(server.address, 2000));
    await c.closeWrite();
    assert.equal(await c.read(), null);
    c.close();
    await server.settled();
  });

  test(`${name}: a closed listener's port can be listened on again at once (a reload reopens it)`, SLOW, async () => {
    const first = await echo(p);
    const port = first.listener.address.port;
    await first.listener.close();
    const again = await p.listen({ host: LOCAL, port }, (c) => c.close());
    assert.equal(again.address.port, port);
    await again.close();
  });

  test(`${name}: connect rejects for a closed port and on timeout`, SLOW, async () => {
    const gone = await p.listen({ host: LOCAL, port: 0 }, (c) => c.close());
    const port = gone.address.port;
    await gone.close();
    await assert.rejects(within(5000, "connect to a closed port", p.connect({ host: LOCAL, port }, 2000)));
    // A port whose accept queue is full drops SYNs: the only local way to make a connect hang
    // (this sandbox answers connects to unrouted addresses itself).
    const stuck = await fullBacklogPort();
    try {
      const started = performance.now();
      await assert.rejects(within(5000, "connect to a full backlog", p.connect({ host: LOCAL, port: stuck.port }, 300)), /time/i);
      const waited = performance.now() - started;
      assert.ok(waited >= 250 && waited < 3000, `connect gave up after ${waited.toFixed(0)} ms, not ~300`);
    } finally {
      stuck.close();
    }
  });

  test(`${name}: STARTTLS upgrades both sides through the Conn API`, SLOW, async () => {
    const k = await pki();
    const serverInfo = deferred<Conn["tlsInfo"]>();
    const server = await serve(p, async (c) => {
      const lines = new Lines(c);
      assert.equal(await lines.next(), "STARTTLS");
      // anything pipelined after STARTTLS is plaintext injection and must be dropped (CVE-2011-0411)
      await c.write(enc.encode("OK begin TLS\r\n"));
      const t = await c.startTls(serverTls(k));
      serverInfo.resolve(t.tlsInfo);
      const tl = new Lines(t);
      assert.equal(await tl.next(), "ping");
      await t.write(enc.encode("pong\r\n"));
      for (let chunk = await t.read(); chunk !== null; chunk = await t.read()) await t.write(chunk);
      await t.write(enc.encode("written after the client's FIN\r\n")); // half-close over TLS
      await t.closeWrite();
    });
    const c = await p.connect(server.address, 5000);
    await c.write(enc.encode("STARTTLS\r\nINJECTED\r\n"));
    const lines = new Lines(c);
    assert.equal(await within(5000, "STARTTLS reply", lines.next()), "OK begin TLS");
    const t = await within(10_000, "client STARTTLS", c.startTls(clientTls(k)));
    assert.equal(t.tlsInfo?.verified, true);
    await t.write(enc.encode("ping\r\n"));
    const tl = new Lines(t);
    assert.equal(await within(5000, "pong over TLS", tl.next()), "pong");
    const data = randomBytes(1024 * 1024);
    const sending = (async () => {
      for (let i = 0; i < data.length; i += 50_000) await t.write(data.subarray(i, i + 50_000));
      await t.closeWrite();
    })();
    const back = await within(10_000, "1 MiB echoed over TLS", readAll(t));
    await sending;
    const tail = enc.encode("written after the client's FIN\r\n");
    assert.ok(Buffer.from(back).equals(Buffer.from(concatAll([data, tail]))), "bytes echoed over TLS differ");
    const info = await serverInfo.promise;
    assert.match(info?.protocol ?? "", /^TLSv1\.[23]$/);
    assert.equal(info?.verified, false); // no client certificate was asked for
    t.close();
    await server.settled();
    await server.listener.close();
  });

  test(`${name}: STARTTLS server passes a client certificate into tlsInfo`, SLOW, async () => {
    const k = await pki();
    const serverInfo = deferred<Conn["tlsInfo"]>();
    const server = await serve(p, async (c) => {
      assert.equal(await new Lines(c).next(), "STARTTLS");
      await c.write(enc.encode("OK\r\n"));
      const t = await c.startTls(serverTls(k, { ca: k.caPem, requestCert: true, rejectUnauthorized: true }));
      serverInfo.resolve(t.tlsInfo);
      await t.write(enc.encode("hello alice\r\n"));
      await t.closeWrite();
      await readAll(t);
      t.close();
    });
    const c = await p.connect(server.address, 5000);
    await c.write(enc.encode("STARTTLS\r\n"));
    assert.equal(await new Lines(c).next(), "OK");
    const t = await within(10_000, "client STARTTLS with a certificate",
      c.startTls(clientTls(k, { cert: k.clientCertPem, key: k.clientKeyPem })));
    assert.equal(await new Lines(t).next(), "hello alice");
    await t.closeWrite();
    const info = await serverInfo.promise;
    const x = new X509Certificate(k.clientCertPem);
    assert.equal(info?.verified, true);
    assert.equal(info?.subject, "CN=alice,O=Postern Test");
    assert.equal(info?.issuer, "CN=Postern Test CA,O=Postern Test");
    assert.equal(info?.serial, x.serialNumber.toUpperCase());
    assert.equal(info?.fingerprint, x.fingerprint.replaceAll(":", "").toLowerCase());
    assert.equal(info?.certPem?.trim(), k.clientCertPem.trim());
    t.close();
    await server.settled();
    await server.listener.close();
  });

  test(`${name}: STARTTLS server works with openssl s_client -starttls imap`, SLOW, async () => {
    const k = await pki();
    const serverSaw: string[] = [];
    const server = await serve(p, async (c) => {
      await c.write(enc.encode("* OK [CAPABILITY IMAP4rev1 STARTTLS] Postern test ready\r\n"));
      const lines = new Lines(c);
      for (;;) {
        const line = await lines.next();
        serverSaw.push(line);
        const [tag, verb] = line.split(" ");
        if (verb?.toUpperCase() === "CAPABILITY") {
          await c.write(enc.encode(`* CAPABILITY IMAP4rev1 STARTTLS\r\n${tag} OK done\r\n`));
        } else if (verb?.toUpperCase() === "STARTTLS") {
          await c.write(enc.encode(`${tag} OK Begin TLS negotiation now\r\n`));
          break;
        } else {
          await c.write(enc.encode(`${tag} BAD STARTTLS first\r\n`));
        }
      }
      const t = await c.startTls(serverTls(k));
      const line = await new Lines(t).next();
      serverSaw.push(line);
      await t.write(enc.encode(`${line.split(" ")[0]} OK NOOP over TLS\r\n`));
      await t.closeWrite();
      t.close();
    });
    const child = spawn("openssl", [
      "s_client", "-starttls", "imap", "-connect", `${LOCAL}:${server.address.port}`,
      "-CAfile", k.caFile, "-verify_return_error", "-verify_ip", LOCAL,
    ], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Uint8Array) => (out += dec.decode(d)));
    child.stderr.on("data", (d: Uint8Array) => (out += dec.decode(d)));
    const exited = new Promise<number | null>((resolve) => child.on("close", (code: number | null) => resolve(code)));
    child.stdin.write("a1 NOOP\n"); // s_client reads stdin only once TLS is up
    try {
      await within(15_000, "openssl s_client to finish", server.settled());
      await within(5000, "openssl s_client to exit", exited);
    } finally {
      child.stdin.end();
      child.kill();
    }
    assert.match(out, /Verify return code: 0 \(ok\)/, out);
    assert.match(out, /a1 OK NOOP over TLS/, out);
    assert.deepEqual(serverSaw, [". CAPABILITY", ". STARTTLS", "a1 NOOP"]);
    await server.listener.close();
  });

  test(`${name}: TLS after a PROXY header starts with the bytes read past the header`, SLOW, async () => {
    const k = await pki();
    const header = "PROXY TCP4 192.0.2.1 198.51.100.2 40000 993\r\n";
    // how the server side splits: "more" reads until bytes past the header arrived (initial
    // is not empty); "one-read" takes whatever the first read brought, as the driver does;
    // "header-only" has the client wait, so initial is empty and nothing is queued
    for (const mode of ["more", "one-read", "header-only"] as const) {
      const headerRead = deferred<void>();
      const server = await serve(p, async (c) => {
        let got: Uint8Array = new Uint8Array(0);
        for (;;) {
          const chunk = await c.read();
          assert.notEqual(chunk, null, "connection ended inside the PROXY header");
          got = concatAll([got, chunk as Uint8Array]);
          const end = got.indexOf(0x0a);
          if (end < 0 || (mode === "more" && end === got.length - 1)) continue;
          assert.equal(dec.decode(got.subarray(0, end + 1)), header);
          const rest = got.slice(end + 1);
          if (mode === "more") assert.ok(rest.length > 0);
          headerRead.resolve();
          const t = await c.startTls(serverTls(k), rest);
          const lines = new Lines(t);
          assert.equal(await lines.next(), "hello over TLS");
          await t.write(enc.encode(`ok ${mode}\r\n`));
          await t.closeWrite();
          assert.equal(await t.read(), null);
          t.close();
          return;
        }
      });
      const c = await p.connect(server.address, 5000);
      await c.write(enc.encode(header));
      if (mode === "header-only") await headerRead.promise;
      const t = await within(10_000, `${mode}: TLS after the header`, c.startTls(clientTls(k)));
      await t.write(enc.encode("hello over TLS\r\n"));
      assert.equal(await within(5000, `${mode}: reply`, new Lines(t).next()), `ok ${mode}`);
      await t.closeWrite();
      t.close();
      await within(5000, `${mode}: server done`, server.settled());
      await server.listener.close();
    }
  });

  test(`${name}: implicit TLS listen and TLS connect exchange data`, SLOW, async () => {
    const k = await pki();
    const server = await echo(p, serverTls(k));
    const c = await within(10_000, "TLS connect", p.connect(server.address, 5000, clientTls(k)));
    assert.equal(c.tlsInfo?.verified, true);
    if (p.runtime !== "deno") { // Deno's native TLS client exposes no peer certificate
      assert.equal(c.tlsInfo?.subject, "CN=localhost,O=Postern Test");
      assert.match(c.tlsInfo?.protocol ?? "", /^TLSv1\.[23]$/);
    }
    await c.write(enc.encode("over implicit TLS\r\n"));
    assert.equal(await within(5000, "echo over TLS", new Lines(c).next()), "over implicit TLS");
    await c.closeWrite();
    assert.equal(await c.read(), null);
    c.close();
    await server.settled();
    await server.listener.close();
  });

  test(`${name}: implicit TLS listener asks for and reports a client certificate`, SLOW, async () => {
    const k = await pki();
    const infos: Conn["tlsInfo"][] = [];
    const server = await serve(p, async (c) => {
      infos.push(c.tlsInfo);
      await c.write(enc.encode("hi\r\n"));
      await c.closeWrite();
      await readAll(c);
      c.close();
    }, serverTls(k, { ca: k.caPem, requestCert: true, rejectUnauthorized: false }));
    const withCert = await p.connect(server.address, 5000, clientTls(k, { cert: k.clientCertPem, key: k.clientKeyPem }));
    assert.equal(await new Lines(withCert).next(), "hi");
    withCert.close();
    const without = await p.connect(server.address, 5000, clientTls(k));
    assert.equal(await new Lines(without).next(), "hi");
    without.close();
    await server.settled();
    assert.equal(infos.length, 2);
    assert.equal(infos[0]?.verified, true);
    assert.equal(infos[0]?.subject, "CN=alice,O=Postern Test");
    assert.equal(infos[1]?.verified, false);
    assert.equal(infos[1]?.certPem, undefined);
    await server.listener.close();
  });

  /** Reads to FIN with a pause per chunk, so unread data piles up and the Conn must pause its source. */
  async function readSlowly(c: Conn): Promise<number> {
    let n = 0;
    for (let chunk = await c.read(); chunk !== null; chunk = await c.read()) {
      n += chunk.byteLength;
      await new Promise((r) => setTimeout(r, 1)); // a slow consumer, not a wait for a condition
    }
    return n;
  }

  test(`${name}: TLS sessions deliver FIN to a slow reader, both ways`, SLOW, async () => {
    const k = await pki();
    const size = 1024 * 1024;
    const setups: { label: string; tls?: TlsServer; client: TlsClient; starttls: boolean }[] = [
      { label: "implicit TLS", tls: serverTls(k), client: clientTls(k), starttls: false },
      { label: "implicit TLS asking for a client certificate", tls: serverTls(k, { ca: k.caPem, requestCert: true, rejectUnauthorized: false }), client: clientTls(k), starttls: false },
      { label: "STARTTLS", client: clientTls(k), starttls: true },
      { label: "STARTTLS, client with a certificate", client: clientTls(k, { cert: k.clientCertPem, key: k.clientKeyPem }), starttls: true },
    ];
    for (const s of setups) {
      const server = await serve(p, async (c0) => {
        let c = c0;
        if (s.starttls) {
          assert.equal(await new Lines(c0).next(), "STARTTLS");
          await c0.write(enc.encode("OK\r\n"));
          c = await c0.startTls(serverTls(k));
        }
        const got = await within(10_000, `${s.label}: server sees FIN`, readSlowly(c));
        assert.equal(got, size);
        await c.write(randomBytes(size));
        await c.closeWrite();
      }, s.tls);
      let c = await p.connect(server.address, 5000, s.starttls ? undefined : s.client);
      if (s.starttls) {
        await c.write(enc.encode("STARTTLS\r\n"));
        assert.equal(await new Lines(c).next(), "OK");
        c = await c.startTls(s.client);
      }
      await c.write(randomBytes(size));
      await c.closeWrite();
      assert.equal(await within(10_000, `${s.label}: client sees FIN`, readSlowly(c)), size, s.label);
      c.close();
      await server.settled();
      await server.listener.close();
    }
  });

  test(`${name}: client TLS rejects a wrong CA or name, and verify off accepts`, SLOW, async () => {
    const k = await pki();
    const other = await otherPki();
    const server = await serve(p, async (c) => { // a STARTTLS responder
      assert.equal(await new Lines(c).next(), "STARTTLS");
      await c.write(enc.encode("OK\r\n"));
      const t = await c.startTls(serverTls(k)).catch(() => null); // the client gives up mid-handshake
      t?.close();
    });
    const tlsServer = await serve(p, async (c) => {
      await c.write(enc.encode("tls\r\n"));
      await readAll(c);
      c.close();
    }, serverTls(k));
    // implicit TLS
    await assert.rejects(within(10_000, "wrong CA", p.connect(tlsServer.address, 5000, clientTls(other))));
    await assert.rejects(within(10_000, "wrong name", p.connect(tlsServer.address, 5000, clientTls(k, { serverName: "wrong.example" }))));
    const lax = await within(10_000, "verify off", p.connect(tlsServer.address, 5000, clientTls(other, { verify: false })));
    assert.equal(lax.tlsInfo?.verified, false);
    assert.equal(await new Lines(lax).next(), "tls");
    lax.close();
    // STARTTLS
    for (const bad of [clientTls(other), clientTls(k, { serverName: "wrong.example" })]) {
      const c = await p.connect(server.address, 5000);
      await c.write(enc.encode("STARTTLS\r\n"));
      assert.equal(await new Lines(c).next(), "OK");
      await assert.rejects(within(10_000, "STARTTLS with a wrong CA or name", c.startTls(bad)));
      c.close();
    }
    await within(10_000, "servers done", Promise.all([server.settled(), tlsServer.settled()]));
    await server.listener.close();
    await tlsServer.listener.close();
  });

  test(`${name}: relay works over STARTTLS and TLS connections`, SLOW, async () => {
    const k = await pki();
    const total = 8 * 1024 * 1024;
    const upSent = deferred<string>();
    const upGot = deferred<{ bytes: number; sha: string }>();
    const upstream = await serve(p, async (c) => {
      const [sent, got] = await Promise.all([
        sendHashed(c, total).then(async (sha) => {
          await c.closeWrite();
          return sha;
        }),
        receiveHashed(c),
      ]);
      upSent.resolve(sent);
      upGot.resolve(got);
      c.close();
    }, serverTls(k));
    const stats = deferred<RelayStats>();
    const proxy = await serve(p, async (c) => {
      assert.equal(await new Lines(c).next(), "STARTTLS");
      await c.write(enc.encode("OK\r\n"));
      const t = await c.startTls(serverTls(k));
      const up = await p.connect(upstream.address, 5000, clientTls(k));
      stats.resolve(await p.relay(t, up, { bufferSize: 32768, idleTimeoutMs: 20_000 }).done);
    });
    const c = await p.connect(proxy.address, 5000);
    await c.write(enc.encode("STARTTLS\r\n"));
    assert.equal(await new Lines(c).next(), "OK");
    const t = await c.startTls(clientTls(k));
    const [sent, got] = await within(40_000, "8 MiB each way over TLS through the relay", Promise.all([
      sendHashed(t, total).then(async (sha) => {
        await t.closeWrite();
        return sha;
      }),
      receiveHashed(t),
    ]));
    assert.equal(got.bytes, total);
    assert.equal(got.sha, await upSent.promise);
    const ug = await upGot.promise;
    assert.equal(ug.bytes, total);
    assert.equal(ug.sha, sent);
    const s = await stats.promise;
    assert.equal(s.clientToUpstream, total);
    assert.equal(s.upstreamToClient, total);
    t.close();
    await upstream.settled();
    await proxy.settled();
    await upstream.listener.close();
    await proxy.listener.close();
  });

  test(`${name}: relay ends with "timeout" when idle and closes both sides`, SLOW, async () => {
    const upstreamSawEnd = deferred<Uint8Array | null>();
    const upstream = await serve(p, async (c) => {
      upstreamSawEnd.resolve(await c.read());
    });
    const proxy = await relayProxy(p, upstream.address, { bufferSize: 4096, idleTimeoutMs: 300 });
    const started = performance.now();
    const c = await p.connect(proxy.address, 5000);
    assert.equal(await within(5000, "client sees the close", c.read()), null);
    const stats = await proxy.stats[0];
    const waited = performance.now() - started;
    assert.equal(stats.end, "timeout");
    assert.ok(waited >= 250, `ended after ${waited.toFixed(0)} ms, before the idle time`);
    assert.equal(await within(5000, "upstream sees the close", upstreamSawEnd.promise), null);
    c.close();
    await upstream.settled();
    await proxy.settled();
    await upstream.listener.close();
    await proxy.listener.close();
  });

  test(`${name}: relay traffic keeps the idle timer from firing`, SLOW, async () => {
    const server = await echo(p);
    const proxy = await relayProxy(p, server.address, { bufferSize: 4096, idleTimeoutMs: 400 });
    const c = await p.connect(proxy.address, 5000);
    const lines = new Lines(c);
    const started = performance.now();
    for (let i = 0; performance.now() - started < 1200; i++) { // three idle periods, never idle
      await c.write(enc.encode(`tick ${i}\n`));
      assert.equal(await lines.next(), `tick ${i}`);
      await new Promise((r) => setTimeout(r, 100)); // pacing the traffic, not waiting for a condition
    }
    await c.closeWrite();
    assert.equal(await c.read(), null);
    const stats = await proxy.stats[0];
    assert.equal(stats.end, "client-closed");
    c.close();
    await server.settled();
    await proxy.settled();
    await server.listener.close();
    await proxy.listener.close();
  });

  test(`${name}: relay abort() ends with "aborted"`, SLOW, async () => {
    const server = await echo(p);
    const handle = deferred<{ abort(): void; done: Promise<RelayStats> }>();
    const proxy = await serve(p, async (c) => {
      const up = await p.connect(server.address, 5000);
      const h = p.relay(c, up, { bufferSize: 4096, idleTimeoutMs: 0 });
      handle.resolve(h);
      await h.done;
    });
    const c = await p.connect(proxy.address, 5000);
    await c.write(enc.encode("x\n"));
    assert.equal(await new Lines(c).next(), "x");
    const h = await handle.promise;
    h.abort();
    const stats = await within(5000, "aborted relay", h.done);
    assert.equal(stats.end, "aborted");
    assert.equal(stats.clientToUpstream, 2);
    assert.equal(await within(5000, "client sees the close", c.read()), null);
    c.close();
    await server.settled();
    await proxy.settled();
    await server.listener.close();
    await proxy.listener.close();
  });

  test(`${name}: a relay's listener is told once, with the stats done resolves to`, SLOW, async () => {
    const server = await echo(p);
    const told: RelayStats[] = [];
    const relayed = deferred<{ done: Promise<RelayStats> }>();
    const proxy = await serve(p, async (c) => {
      const up = await p.connect(server.address, 5000);
      const h = p.relay(c, up, { bufferSize: 4096, idleTimeoutMs: 0, listener: { relayEnded: (stats) => void told.push(stats) } });
      relayed.resolve(h);
      await h.done;
    });
    const c = await p.connect(proxy.address, 5000);
    await c.write(enc.encode("hello\n"));
    assert.equal(await new Lines(c).next(), "hello");
    await c.closeWrite(); // the echo server answers FIN with FIN: the relay ends both ways
    assert.equal(await within(5000, "the relay's FIN", c.read()), null);
    const stats = await within(5000, "relay done", (await relayed.promise).done);
    assert.equal(told.length, 1, "told exactly once");
    assert.deepEqual(told[0], stats);
    assert.equal(stats.end, "client-closed");
    assert.equal(stats.clientToUpstream, 6);
    assert.equal(stats.upstreamToClient, 6);
    c.close();
    await server.settled();
    await proxy.settled();
    await server.listener.close();
    await proxy.listener.close();
  });

  test(`${name}: serveHttp answers fetch() through a fetch handler`, SLOW, async () => {
    const server = await p.serveHttp({ host: LOCAL, port: 0 }, async (r) => {
      const url = new URL(r.url);
      const body = r.method === "POST" ? await r.text() : "";
      return new Response(JSON.stringify({ method: r.method, path: url.pathname, q: url.searchParams.get("q"), body, h: r.headers.get("x-test") }), {
        status: r.method === "POST" ? 201 : 200,
        headers: { "content-type": "application/json", "x-reply": "yes" },
      });
    });
    assert.ok(server.address.port > 0);
    const base = `http://${LOCAL}:${server.address.port}`;
    const a = await p.fetch(`${base}/auth?q=1`, { method: "POST", body: "user=alice", headers: { "x-test": "t1" } });
    assert.equal(a.status, 201);
    assert.equal(a.headers.get("x-reply"), "yes");
    assert.deepEqual(await a.json(), { method: "POST", path: "/auth", q: "1", body: "user=alice", h: "t1" });
    const b = await p.fetch(`${base}/health`, { method: "GET" });
    assert.equal(b.status, 200);
    assert.deepEqual(await b.json(), { method: "GET", path: "/health", q: null, body: "", h: null });
    await within(5000, "HTTP listener close", server.close());
  });

  test(`${name}: reverseDns and resolveDns ask the given server`, SLOW, async () => {
    const dns = await startFakeDns({
      "2.0.0.127.in-addr.arpa": { PTR: ["mail.example.test."] },
      "7.2.0.192.in-addr.arpa": { PTR: ["relay.example.test."] },
      "mail.example.test": { A: ["127.0.0.2"] },
    });
    try {
      const servers = [{ host: LOCAL, port: dns.port }];
      assert.deepEqual(await within(10_000, "PTR 127.0.0.2", p.reverseDns("127.0.0.2", servers)), ["mail.example.test"]);
      assert.deepEqual(await within(10_000, "PTR 192.0.2.7", p.reverseDns("192.0.2.7", servers)), ["relay.example.test"]);
      assert.deepEqual(await within(10_000, "PTR none", p.reverseDns("192.0.2.99", servers)), []);
      assert.deepEqual(await within(10_000, "A", p.resolveDns("mail.example.test", servers)), ["127.0.0.2"]);
      assert.deepEqual(await within(10_000, "A none", p.resolveDns("nx.example.test", servers)), []);
      assert.ok(dns.queries.includes("12 2.0.0.127.in-addr.arpa"), `queries: ${dns.queries.join(", ")}`);
    } finally {
      dns.close();
    }
  });

  test(`${name}: scrypt matches the RFC 7914 test vector`, SLOW, async () => {
    const key = await p.scrypt(enc.encode("password"), enc.encode("NaCl"), 64, { N: 1024, r: 8, p: 16 });
    assert.equal(
      Buffer.from(key).toString("hex"),
      "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640",
    );
  });

  test(`${name}: randomBytes, hostname, pid, readTextFile and writeLog work`, async () => {
    const r = p.randomBytes(100_000);
    assert.equal(r.length, 100_000);
    assert.notDeepEqual(r.subarray(90_000, 90_032), new Uint8Array(32));
    assert.ok(p.hostname().length > 0);
    assert.equal(p.pid(), process.pid);
    const dir = mkdtempSync(join(tmpdir(), "postern-platform-"));
    try {
      const file = join(dir, "x.txt");
      writeFileSync(file, "héllo\n");
      assert.equal(await p.readTextFile(file), "héllo\n");
      const log = join(dir, "postern.log");
      p.writeLog(log, '{"msg":"one"}');
      p.writeLog(log, '{"msg":"two"}');
      assert.equal(readFileSync(log, "utf8"), '{"msg":"one"}\n{"msg":"two"}\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test(`${name}: onSignal runs the handler for SIGHUP`, async () => {
    const got = deferred<void>();
    p.onSignal("HUP", () => got.resolve());
    process.kill(process.pid, "SIGHUP");
    await within(5000, "SIGHUP handler", got.promise);
    assert.ok(true);
  });
}
