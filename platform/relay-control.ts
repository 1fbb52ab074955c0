// Bookkeeping shared by the adapters' relays: byte counts, the idle timer, which side
// ended first, abort, and closing both connections exactly once. The byte pumps
// themselves are native to each runtime and live in the adapters. Runtime-free.

import type { Conn, RelayHandle, RelayListener, RelayOpts, RelayStats } from "../src/platform.ts";

export type Direction = "client-to-upstream" | "upstream-to-client";

/** What the relay closes when it ends: both connections. */
export interface Closable {
  close(): void;
}

export class RelayControl implements RelayHandle {
  clientToUpstream = 0;
  upstreamToClient = 0;
  /** True once the relay has settled; pumps stop touching the connections. */
  ended = false;
  #finished = 0; // bit 1: client-to-upstream, bit 2: upstream-to-client
  #firstEnd: RelayStats["end"] | undefined;
  #lastActive = performance.now();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stats: RelayStats | undefined;
  #done: { promise: Promise<RelayStats>; resolve: (s: RelayStats) => void } | undefined;
  readonly #idleMs: number;
  readonly #listener: RelayListener | undefined;

  /** No closures per relay: an idle relayed session should hold as little as possible. */
  constructor(opts: RelayOpts, readonly client: Closable, readonly upstream: Closable) {
    this.#idleMs = opts.idleTimeoutMs;
    this.#listener = opts.listener;
    if (this.#idleMs > 0) this.#armIdle(this.#idleMs);
  }

  /** Made when first asked for: a session told through RelayOpts.listener never makes it. */
  get done(): Promise<RelayStats> {
    if (this.#stats !== undefined) return Promise.resolve(this.#stats);
    if (this.#done === undefined) {
      let resolve!: (s: RelayStats) => void;
      const promise = new Promise<RelayStats>((r) => (resolve = r));
      this.#done = { promise, resolve };
    }
    return this.#done.promise;
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
    this.#timer = setTimeout(idleCheck, ms, this);
  }

  /** The idle timer fired: end the relay, or wait for the rest of the idle time. */
  idleCheck(): void {
    const idle = performance.now() - this.#lastActive;
    if (idle >= this.#idleMs - 1) this.#settle("timeout");
    else this.#armIdle(this.#idleMs - idle);
  }

  #settle(end: RelayStats["end"], err?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    const stats: RelayStats = {
      clientToUpstream: this.clientToUpstream,
      upstreamToClient: this.upstreamToClient,
      end,
      ...(err !== undefined ? { error: err instanceof Error ? err.message : String(err) } : {}),
    };
    this.#stats = stats;
    try {
      this.client.close();
      this.upstream.close();
    } finally {
      try {
        this.#listener?.relayEnded(stats);
      } finally {
        this.#done?.resolve(stats);
      }
    }
  }
}

function idleCheck(ctl: RelayControl): void {
  ctl.idleCheck();
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
