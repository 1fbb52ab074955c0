// `openssl s_client` as a scripted mail client for e2e tests: connect (optionally from a chosen
// loopback address with -bind), optionally -starttls, then play send/expect steps. Every wait is
// for a condition with a deadline; after the steps stdin is closed and s_client exits.
// node:child_process only (Node, Deno, Bun).
//
//   const r = await sClient(port, ["-CAfile", ca], [{ expect: /\* OK / }, { send: "a1 LOGOUT\r\n" }, { expect: /a1 OK/ }]);
import { spawn } from "node:child_process";
import type { Buffer } from "node:buffer";

export type SClientStep = { readonly send: string } | { readonly expect: RegExp; readonly timeoutMs?: number };

export interface SClientResult {
  readonly code: number | null;
  /** stdout and stderr together, as printed (latin1). */
  readonly out: string;
}

export interface SClientOptions {
  /** Where to connect; default 127.0.0.1. */
  readonly host?: string;
  /** Local address to connect from (`-bind ADDR:0`), e.g. "127.0.0.2". */
  readonly bind?: string;
  /** Kill s_client after this long; default 20 s. */
  readonly timeoutMs?: number;
}

/**
 * Runs `openssl s_client -connect HOST:PORT -nocommands ARGS` and plays `steps` (text is sent as
 * typed: write CRLF yourself; -nocommands makes a line starting with Q or R data, not a command).
 * Resolves once s_client has exited after the steps; rejects (with the whole output) when an
 * expectation is not met in time or s_client exits first.
 */
export function sClient(port: number, args: readonly string[], steps: readonly SClientStep[] = [], opts: SClientOptions = {}): Promise<SClientResult> {
  const host = opts.host ?? "127.0.0.1";
  const bind = opts.bind ? ["-bind", `${opts.bind}:0`] : [];
  return new Promise((resolve, reject) => {
    const child = spawn("openssl", ["s_client", "-connect", `${host}:${port}`, ...bind, "-nocommands", ...args], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let pos = 0;
    const wake = new Set<() => void>();
    const onData = (d: Buffer) => {
      out += d.toString("latin1");
      for (const w of wake) w();
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.stdin.on("error", () => {}); // s_client may be gone already
    let exited = false;
    const done = new Promise<number | null>((r) =>
      child.once("exit", (code) => {
        exited = true;
        for (const w of wake) w();
        r(code);
      })
    );
    const killer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 20_000);
    const waitFor = (re: RegExp, ms: number) =>
      new Promise<void>((res, rej) => {
        const check = () => {
          const m = re.exec(out.slice(pos));
          if (m) {
            pos += m.index + m[0].length;
            finish();
            res();
          } else if (exited) {
            finish();
            rej(new Error(`s_client exited before ${re}; output:\n${out}`));
          }
        };
        const t = setTimeout(() => {
          finish();
          rej(new Error(`timed out after ${ms} ms waiting for ${re}; s_client output:\n${out}`));
        }, ms);
        const finish = () => {
          clearTimeout(t);
          wake.delete(check);
        };
        wake.add(check);
        check();
      });
    void (async () => {
      try {
        for (const s of steps) {
          if ("send" in s) child.stdin.write(s.send);
          else await waitFor(s.expect, s.timeoutMs ?? 10_000);
        }
        child.stdin.end();
        const code = await done;
        resolve({ code, out });
      } catch (e) {
        child.kill("SIGKILL");
        await done;
        reject(e);
      } finally {
        clearTimeout(killer);
      }
    })();
  });
}

/** The subject s_client printed for the server's certificate ("O = Postern Test, CN = ec.postern.test"). */
export function servedSubject(out: string): string {
  return /^subject=(.*)$/m.exec(out)?.[1] ?? `(no subject in: ${out})`;
}
