// A byte-exact client for e2e tests: connects from a chosen loopback address, sends raw bytes,
// and waits for what the server says (never sleeps: every wait is for a condition, with a deadline).

import * as net from "node:net";
import { Buffer } from "node:buffer";

export interface LineClient {
  /** The client's own port (what the server sees as the peer port). */
  readonly localPort: number;
  send(text: string | Uint8Array): void;
  /** Sends with Nagle off and resolves once the bytes are handed to the kernel: a flushed write
   *  (`sendFlushed` byte by byte puts each byte in its own TCP segment). */
  sendFlushed(data: string | Uint8Array): Promise<void>;
  /** Waits until the received text matches `re` (searched from the last consumed position); returns the text up to the end of the match. */
  expect(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Everything received so far (latin1). */
  received(): string;
  /** Resolves when the server has closed the connection. */
  readonly closed: Promise<void>;
  isClosed(): boolean;
  end(): void;
  destroy(): void;
}

export function connectClient(port: number, opts: { host?: string; localAddress?: string } = {}): Promise<LineClient> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: opts.host ?? "127.0.0.1", localAddress: opts.localAddress ?? "127.0.0.2" });
    let buf = "";
    let pos = 0;
    let closed = false;
    const waiters = new Set<() => void>();
    const wake = () => waiters.forEach((w) => w());
    const closedP = new Promise<void>((r) => sock.on("close", () => { closed = true; wake(); r(); }));
    sock.on("data", (d: Buffer) => { buf += d.toString("latin1"); wake(); });
    sock.on("error", () => {});
    sock.once("connect", () => {
      resolve({
        localPort: sock.localPort ?? 0,
        send: (t) => { sock.write(typeof t === "string" ? Buffer.from(t, "latin1") : t); },
        sendFlushed: (t) => new Promise<void>((res, rej) => {
          sock.setNoDelay(true);
          sock.write(typeof t === "string" ? Buffer.from(t, "latin1") : t, (err) => (err ? rej(err) : res()));
        }),
        expect(re, timeoutMs = 10_000) {
          return new Promise((res, rej) => {
            const check = () => {
              const m = re.exec(buf.slice(pos));
              if (m) {
                const upTo = pos + m.index + m[0].length;
                const text = buf.slice(pos, upTo);
                pos = upTo;
                done();
                res(text);
              } else if (closed) {
                done();
                rej(new Error(`connection closed before ${re}; received: ${JSON.stringify(buf)}`));
              }
            };
            const timer = setTimeout(() => { done(); rej(new Error(`timed out waiting for ${re}; received: ${JSON.stringify(buf)}`)); }, timeoutMs);
            const done = () => { clearTimeout(timer); waiters.delete(check); };
            waiters.add(check);
            check();
          });
        },
        received: () => buf,
        closed: closedP,
        isClosed: () => closed,
        end: () => sock.end(),
        destroy: () => sock.destroy(),
      });
    });
    sock.once("error", reject);
  });
}

/** Resolves when `p` settles, or rejects after `ms` with `what`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: ReturnType<typeof setTimeout>;
  return Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`${what} did not happen within ${ms} ms`)), ms)))])
    .finally(() => clearTimeout(t));
}
