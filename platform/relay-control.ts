// Bookkeeping shared by the adapters' relays: byte counts, the idle timer, which side
// ended first, abort, and closing both connections exactly once. The byte pumps
// themselves are native to each runtime and live in the adapters. Runtime-free.

import type { Conn, RelayHandle, RelayOpts, RelayStats } from "../src/platform.ts";

export type Direction = "client-to-upstream" | "upstream-to-client";

export class RelayControl implements RelayHandle {
  readonly done: Promise<RelayStats>;
  clientToUpstream = 0;
  upstreamToClient = 0;
  /** True once the relay has settled; pumps stop touching the connections. */
  ended = false;
  #finished = 0; // bit 1: client-to-upstream, bit 2: upstream-to-client
  #firstEnd: RelayStats["end"] | undefined;
  #lastActive = performance.now();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #resolve!: (s: RelayStats) => void;
  readonly #idleMs: number;
  readonly #closeBoth: () => void;

  constructor(opts: RelayOpts, closeBoth: () => void) {
    this.#idleMs = opts.idleTimeoutMs;
    this.#closeBoth = closeBoth;
    this.done = new Promise((resolve) => (this.#resolve = resolve));
    if (this.#idleMs > 0) this.#armIdle(this.#idleMs);
  }

  /** Bytes handed to the destination. */
  moved(dir: Direction, n: number): void {
    if (dir === "client-to-upstream") this.clientToUpstream += n;
    else this.upstreamToClient += n;
    this.#lastActive = performance.now();
  }

  /** Activity without a byte count (a read completed; a blocked write got drained). */
  touch(): void {
    this.#lastActive = performance.now();
  }

  /** The source of `dir` sent FIN and the destination has been half-closed after all data. */
  finished(dir: Direction): void {
    if (this.ended) return;
    this.#firstEnd ??= dir === "client-to-upstream" ? "client-closed" : "upstream-closed";
    this.#finished |= dir === "client-to-upstream" ? 1 : 2;
    if (this.#finished === 3) this.#settle(this.#firstEnd);
  }

  fail(err: unknown): void {
    // After one side has closed, the other side's broken pipe is part of that ending.
    this.#settle(this.#firstEnd ?? "error", err);
  }

  abort(): void {
    this.#settle("aborted");
  }

  #armIdle(ms: number): void {
    this.#timer = setTimeout(() => {
      const idle = performance.now() - this.#lastActive;
      if (idle >= this.#idleMs - 1) this.#settle("timeout");
      else this.#armIdle(this.#idleMs - idle);
    }, ms);
  }

  #settle(end: RelayStats["end"], err?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    try {
      this.#closeBoth();
    } finally {
      this.#resolve({
        clientToUpstream: this.clientToUpstream,
        upstreamToClient: this.upstreamToClient,
        end,
        ...(err !== undefined ? { error: err instanceof Error ? err.message : String(err) } : {}),
      });
    }
  }
}

/**
 * Generic pump over the Conn interface (fresh chunk per read): used when a side is not
 * the adapter's native connection type (e.g. a node:tls socket on Deno).
 */
export async function pumpConn(src: Conn, dst: Conn, dir: Direction, ctl: RelayControl): Promise<void> {
  try {
    for (;;) {
      const chunk = await src.read();
      if (ctl.ended) return;
      if (chunk === null) break;
      ctl.touch();
      await dst.write(chunk);
      if (ctl.ended) return;
      ctl.moved(dir, chunk.length);
    }
    await dst.closeWrite();
    ctl.finished(dir);
  } catch (err) {
    ctl.fail(err);
  }
}
