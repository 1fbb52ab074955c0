// A node:stream Duplex over any byte stream, so node:tls can run where the runtime has
// no native way: Deno (server-side STARTTLS, client certificates, verify off) and Bun
// (server TLS settings its native TLS cannot honour: ssl_ecdh_curve, ssl_crl,
// ssl_session_timeout, ssl_verify_depth). node:stream and node:tls exist on all three runtimes.
// Bun 1.4.5's TLS over a Duplex answers the peer's close_notify with its own and refuses any
// write after it (no TLS 1.3 half-close), so there a reply to a command the client sent with
// its close is lost; nothing below the TLS layer can tell a close_notify from data (TLS 1.3
// encrypts alerts), which is why Bun runs native TLS wherever it can (platform/bun.ts startTls).
//
// Docs relied on:
//   https://nodejs.org/api/stream.html#implementing-a-duplex-stream
//   https://nodejs.org/api/tls.html#new-tlstlssocketsocket-options (any Duplex as `socket`)

import { Duplex } from "node:stream";
import type { Bridge } from "./node-socket.ts";

/** The plaintext connection under the TLS session. */
export interface ByteStream {
  /** Next chunk (the caller keeps it), null at FIN or when the connection is gone. */
  read(): Promise<Uint8Array | null>;
  write(data: Uint8Array): Promise<void>;
  closeWrite(): Promise<void>;
  close(): void;
}

/**
 * The Duplex for node:tls plus the Bridge for the SocketConn on top, with workarounds for
 * Deno's node:tls over a JS stream (seen with Deno 2.9.6, more often under load); they
 * are harmless where node:tls behaves:
 *   - it can drop the peer's FIN (all data delivered, no 'end'): always when the TLS
 *     socket is paused, sometimes otherwise. So the TLS socket is never paused (the
 *     SocketConn's backpressure stops reading the network here instead), and the bridge
 *     tells the SocketConn when the network FIN has been handed over (onTransportEnd);
 *   - it sometimes finishes end() without ending the stream below, and its encrypted
 *     output is written by a pump of its own that end() does not wait for. So ending is
 *     done here: once no write is in flight and a macrotask has passed without a new
 *     one (the pump issues its next write from the previous write's callback), the FIN
 *     is sent; SocketConn.closeWrite() asks for it too and waits for it. A record that
 *     comes after our FIN is dropped rather than failing the session.
 * Reads are pulled: the stream is read only when the TLS layer asks for more.
 */
export function bridgeStream(src: ByteStream): { duplex: Duplex; bridge: Bridge } {
  let pumping = false;
  let gated = false;
  let inFlight = 0;
  const idle: (() => void)[] = [];
  let finishing: Promise<void> | undefined;
  let transportEnded = false;
  const onTransportEnd: (() => void)[] = [];
  const finSent = deferred();
  const duplex: Duplex = new Duplex({
    allowHalfOpen: true,
    read() {
      if (pumping || gated) return;
      pumping = true;
      void pump();
    },
    write(chunk: Uint8Array, _encoding, callback) {
      inFlight++;
      src.write(chunk).then(() => settle(callback), (err) => settle(() => callback(err)));
    },
    final(callback) {
      src.closeWrite().then(() => callback(), () => callback()).finally(finSent.resolve);
    },
    destroy(err, callback) {
      src.close();
      finSent.resolve();
      callback(err);
    },
  });
  function settle(callback: () => void): void {
    inFlight--;
    callback(); // node:tls may write its next record from here, synchronously
    if (inFlight === 0) for (const wake of idle.splice(0)) wake();
  }
  const realEnd = duplex.end.bind(duplex);
  function finishWrite(): Promise<void> {
    finishing ??= (async () => {
      for (;;) {
        if (inFlight > 0) await new Promise<void>((r) => idle.push(r));
        await new Promise((r) => setTimeout(r, 0)); // let node:tls's pump run once more
        if (inFlight === 0) break;
      }
      if (!duplex.destroyed) realEnd();
      else finSent.resolve();
      await finSent.promise;
    })();
    return finishing;
  }
  (duplex as { end: (cb?: () => void) => Duplex }).end = (cb?: () => void): Duplex => {
    void finishWrite().then(() => cb?.());
    return duplex;
  };
  const realWrite = duplex.write.bind(duplex) as (...args: unknown[]) => boolean;
  (duplex as { write: typeof realWrite }).write = (...args: unknown[]) => {
    if (!duplex.writableEnded) return realWrite(...args);
    const cb = args.findLast((a) => typeof a === "function") as (() => void) | undefined;
    if (cb !== undefined) queueMicrotask(cb); // a late TLS record after our FIN: nowhere to go
    return true;
  };
  duplex.once("end", () => {
    transportEnded = true; // every byte before the FIN has been handed to the TLS layer
    for (const fn of onTransportEnd.splice(0)) fn();
  });
  async function pump(): Promise<void> {
    while (!gated) {
      let chunk: Uint8Array | null;
      try {
        chunk = await src.read();
      } catch (err) {
        pumping = false;
        duplex.destroy(err as Error);
        return;
      }
      if (chunk === null) {
        duplex.push(null); // pumping stays true: nothing more to read
        return;
      }
      if (!duplex.push(chunk)) break;
    }
    pumping = false;
  }
  const bridge: Bridge = {
    pause: () => {
      gated = true;
    },
    resume: () => {
      gated = false;
      if (!pumping) {
        pumping = true;
        void pump();
      }
    },
    finishWrite,
    onTransportEnd: (fn) => {
      if (transportEnded) fn();
      else onTransportEnd.push(fn);
    },
  };
  return { duplex, bridge };
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}
