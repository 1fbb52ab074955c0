// Free ports and waiting for a listener, for tests on all three runtimes (node:net only).
import * as net from "node:net";

/** A port that was free a moment ago: bind :0 on `host`, read the port, close. */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const addr = srv.address();
      if (addr === null || typeof addr === "string") {
        srv.close();
        reject(new Error(`Cannot find a free port on "${host}": no address after listen`));
        return;
      }
      const port = addr.port;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** Several distinct free ports at once (kept bound until all are chosen, so none repeats). */
export async function freePorts(count: number, host = "127.0.0.1"): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const srv = net.createServer();
      servers.push(srv);
      const port = await new Promise<number>((resolve, reject) => {
        srv.once("error", reject);
        srv.listen({ host, port: 0, exclusive: true }, () => {
          const addr = srv.address();
          if (addr === null || typeof addr === "string") reject(new Error("Cannot read a bound port"));
          else resolve(addr.port);
        });
      });
      ports.push(port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

/** One connect attempt: true if something accepted on host:port. */
export async function canConnect(port: number, host = "127.0.0.1", timeoutMs = 1000): Promise<boolean> {
  return await new Promise<boolean>((resolve) => {
    const sock = net.connect({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.removeAllListeners();
      sock.on("error", () => {});
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
  });
}

export interface WaitForPortOptions {
  /** Called between attempts; throw from it to stop waiting (e.g. the server process died). */
  check?: () => void;
  /** Milliseconds between attempts. */
  intervalMs?: number;
}

/** Poll connect until host:port accepts; throws naming the port and the wait on timeout. */
export async function waitForPort(
  port: number,
  host = "127.0.0.1",
  timeoutMs = 10_000,
  opts: WaitForPortOptions = {},
): Promise<void> {
  const started = Date.now();
  const deadline = started + timeoutMs;
  const interval = opts.intervalMs ?? 25;
  for (;;) {
    opts.check?.();
    const left = deadline - Date.now();
    if (left <= 0) break;
    if (await canConnect(port, host, Math.min(1000, left))) return;
    opts.check?.();
    await new Promise((r) => setTimeout(r, Math.min(interval, Math.max(0, deadline - Date.now()))));
    if (Date.now() >= deadline) break;
  }
  throw new Error(`Cannot connect to "${host}:${port}": nothing accepted within ${timeoutMs} ms`);
}

/** Poll until nothing accepts on host:port any more (a server really let go of it). */
export async function waitForPortClosed(port: number, host = "127.0.0.1", timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await canConnect(port, host, 500))) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`Port "${host}:${port}" still accepts connections after ${timeoutMs} ms`);
}

/** Poll `cond` until it returns a truthy value; throws `what` on timeout. */
export async function waitFor<T>(
  cond: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  what: string,
  timeoutMs = 10_000,
  intervalMs = 25,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() >= deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
