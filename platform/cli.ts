// The command line, shared by the three entries: parse arguments, load the config, run, and wire
// signals. Uses node:util / node:fs / node:path / node:os, which Deno, Bun and Node all provide.
// Docs: https://nodejs.org/api/util.html#utilparseargsconfig

import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { cpus, hostname } from "node:os";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import cluster from "node:cluster";
import { createLogger } from "../src/log.ts";
import { randomBytes } from "node:crypto";
import { formatConfigError, loadConfig } from "../src/config/load.ts";
import type { Config, ConfigResult } from "../src/config/types.ts";
import { hashPassword } from "../src/auth/password.ts";
import type { Platform } from "../src/platform.ts";
import { checkTlsConfig, protocolsImplemented, type StartOptions, startPostern } from "../src/server.ts";
import { countsOf } from "../src/metrics.ts";
import { VERSION } from "../src/version.ts";

const USAGE = `Usage: postern [-c FILE] [-t] [-v] [-h]
       postern hash-password [--password PASSWORD]

  -c, --config FILE   configuration file (default: config.yaml next to the
                      executable, then in the working directory)
  -t, --test          check the configuration and exit, like nginx -t
  -v, --version       print the version and exit
  -h, --help          this text

  hash-password       print a password hash for auth.users[].password_hash;
                      reads the password from standard input unless --password
                      is given`;

function defaultConfigPath(): string {
  const candidates = [resolve(dirname(process.execPath), "config.yaml"), resolve(process.cwd(), "config.yaml")];
  return candidates.find((p) => existsSync(p)) ?? candidates[1];
}

function load(file: string): ConfigResult & { text?: string } {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    return { ok: false, errors: [{ file, line: 0, col: 0, directive: "-c", message: `cannot read the configuration file: ${(e as Error).message}` }] };
  }
  return loadConfig(text, file, {
    hostname: hostname(),
    cpuCount: cpus().length || 1,
    readFile: (p) => readFileSync(p, "utf8"),
    readFileBytes: (p) => new Uint8Array(readFileSync(p)),
  });
}

async function readStdin(): Promise<string> {
  const chunks: Uint8Array[] = [];
  for await (const c of process.stdin) chunks.push(c as Uint8Array);
  return Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
}

/**
 * The user's arguments. A `bun build --compile` binary also sees its embedded entry
 * ("/$bunfs/root/...") there when node:cluster re-executes it for a worker.
 */
export function userArgs(): string[] {
  const args = process.argv.slice(2);
  return args[0]?.startsWith("/$bunfs/") ? args.slice(1) : args;
}

export async function main(platform: Platform, argv: string[]): Promise<void> {
  if (argv[0] === "hash-password") {
    const { values } = parseArgs({ args: argv.slice(1), options: { password: { type: "string" } } });
    const password = values.password ?? (await readStdin());
    if (!password) {
      console.error("postern: hash-password: empty password");
      process.exit(2);
    }
    console.log(await hashPassword(password, new Uint8Array(randomBytes(16)), platform.scrypt));
    return;
  }
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: "string", short: "c" },
        test: { type: "boolean", short: "t" },
        version: { type: "boolean", short: "v" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    console.error(`postern: ${(e as Error).message}\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (values.version) {
    console.log(`postern/${VERSION} (${platform.runtime})`);
    return;
  }
  const file = resolve(values.config ?? defaultConfigPath());
  const result = load(file);
  if (!result.ok) {
    for (const e of result.errors) console.error(formatConfigError(e));
    console.error(`postern: configuration file ${file} test failed`);
    process.exit(process.env.POSTERN_WORKER_ID ? FATAL_EXIT : 1);
  }
  // workers load the same file again: the master has said the warnings already
  if (!process.env.POSTERN_WORKER_ID) for (const w of result.config.warnings) console.error(`postern: [warn] ${w}`);
  const missing = result.config.servers.filter((s) => !protocolsImplemented().includes(s.protocol));
  if (missing.length) {
    for (const s of missing) console.error(`postern: [emerg] protocol "${s.protocol}" (listen ${s.listen.map((l) => l.source).join(", ")}) is not implemented yet`);
    console.error(`postern: configuration file ${file} test failed`);
    process.exit(1);
  }
  // what this runtime's TLS stack cannot honour or load is refused here, as nginx -t refuses a bad key
  const tls = checkTlsConfig(result.config, platform);
  if (tls.errors.length) {
    for (const e of tls.errors) console.error(`postern: [emerg] ${e}`);
    console.error(`postern: configuration file ${file} test failed`);
    process.exit(process.env.POSTERN_WORKER_ID ? FATAL_EXIT : 1);
  }
  // log files are opened (created) now, as nginx -t does: a log that cannot be written is an
  // error here, not a crash of the first worker that writes to it
  const logErrors = unopenableLogs(result.config);
  if (logErrors.length) {
    for (const e of logErrors) console.error(`postern: [emerg] ${e}`);
    console.error(`postern: configuration file ${file} test failed`);
    process.exit(process.env.POSTERN_WORKER_ID ? FATAL_EXIT : 1);
  }
  if (values.test) {
    for (const n of tls.notices) console.error(`postern: [notice] ${n}`);
    console.error(`postern: the configuration file ${file} syntax is ok`);
    console.error(`postern: configuration file ${file} test is successful`);
    return;
  }
  const workers = result.config.workerProcesses;
  if (workers > 1 && cluster.isPrimary) return runPrimary(platform, file, result.config);
  const workerId = Number(process.env.POSTERN_WORKER_ID ?? "0");
  await run(platform, file, result.config, { reusePort: workers > 1, serveHttp: workerId <= 1, workerId });
}

/** `open() "FILE" failed (why)` for every error_log file that cannot be opened for appending. */
function unopenableLogs(config: Config): string[] {
  const files = new Set<string>();
  for (const t of [...config.errorLog, ...config.servers.flatMap((s) => s.errorLog)]) {
    if (t.dest !== "stderr" && !t.dest.startsWith("syslog:")) files.add(t.dest);
  }
  const errors: string[] = [];
  for (const f of files) {
    try {
      appendFileSync(f, "");
    } catch (e) {
      errors.push(`open() "${f}" failed (${e instanceof Error ? e.message : String(e)})`);
    }
  }
  return errors;
}

// worker_processes > 1: worker 1 serves the HTTP endpoint, and its /metrics and /health count every
// worker. It asks the master for the others' counters; the master asks each of them over
// node:cluster's IPC channel and answers with what came back within PEER_WAIT_MS.
const ASK_PEERS = "postern:peer-counts?"; // worker 1 → master
const PEERS = "postern:peer-counts"; // master → worker 1: { counts: [...] }
const ASK_COUNTS = "postern:counts?"; // master → a worker
const COUNTS = "postern:counts"; // a worker → master: { counts }
const PEER_WAIT_MS = 500;

interface IpcMessage {
  readonly type: string;
  readonly id: number;
  readonly counts?: unknown;
}

function isIpc(m: unknown, type: string): m is IpcMessage {
  return typeof m === "object" && m !== null && (m as IpcMessage).type === type && typeof (m as IpcMessage).id === "number";
}

/** A message to a worker that may have gone: a closed channel is not an error here. */
function sendTo(w: { send(m: unknown): boolean }, m: IpcMessage): void {
  try {
    w.send(m);
  } catch {
    // the worker exited; its exit handler deals with it
  }
}

/**
 * A message to the master. The callback form: with the channel gone (a master killed outright)
 * the error goes to it, where send() without one would emit an "error" nobody handles.
 */
function tellMaster(m: IpcMessage): boolean {
  if (!process.connected || process.send === undefined) return false;
  process.send(m, undefined, undefined, () => {});
  return true;
}

/**
 * A worker's side of the counters exchange: it answers the master with its own, and (worker 1)
 * asks for the others'. The returned function is StartOptions.peerMetrics.
 */
function workerCounts(own: () => Parameters<typeof countsOf>[0] | undefined, asks: boolean): StartOptions["peerMetrics"] {
  const waiting = new Map<number, (counts: readonly object[]) => void>();
  let asked = 0;
  process.on("message", (m: unknown) => {
    if (isIpc(m, ASK_COUNTS)) {
      const metrics = own();
      if (metrics !== undefined) tellMaster({ type: COUNTS, id: m.id, counts: countsOf(metrics) });
    } else if (isIpc(m, PEERS)) {
      const counts = Array.isArray(m.counts) ? m.counts.filter((c): c is object => typeof c === "object" && c !== null) : [];
      waiting.get(m.id)?.(counts);
    }
  });
  if (!asks) return undefined;
  return () =>
    new Promise((resolve) => {
      const id = ++asked;
      const done = (counts: readonly object[]) => {
        clearTimeout(timer);
        waiting.delete(id);
        resolve(counts);
      };
      const timer = setTimeout(() => done([]), 2 * PEER_WAIT_MS); // a master that does not answer
      waiting.set(id, done);
      if (!tellMaster({ type: ASK_PEERS, id })) done([]);
    });
}

/**
 * worker_processes > 1: this process only watches the workers (nginx's master). Each worker runs
 * the whole proxy on listeners shared with SO_REUSEPORT (Bun, Deno) or node:cluster (Node), and
 * the first also serves the HTTP endpoint. Signals are passed on; a worker that dies is replaced.
 * Docs: https://nodejs.org/api/cluster.html
 */
function runPrimary(platform: Platform, file: string, config: Config): void {
  const logger = createLogger(config.errorLog, (d, l) => platform.writeLog(d, l), platform.pid());
  // workers accept themselves instead of the primary handing connections round-robin
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  let stopping = false;
  const byId = new Map<number, ReturnType<typeof cluster.fork>>();
  const ticketSeed = randomBytes(32).toString("hex");
  const gathering = new Map<number, (counts: unknown) => void>();
  let gathers = 0;
  /** Worker `asker` wants the other workers' counters: ask each, answer with what came in time. */
  const gatherPeers = (asker: number, askId: number) => {
    const others = [...byId].filter(([id]) => id !== asker).map(([, w]) => w);
    const got: unknown[] = [];
    const key = ++gathers;
    const finish = () => {
      clearTimeout(timer);
      gathering.delete(key);
      const w = byId.get(asker);
      if (w) sendTo(w, { type: PEERS, id: askId, counts: got });
    };
    const timer = setTimeout(finish, PEER_WAIT_MS);
    gathering.set(key, (counts) => {
      got.push(counts);
      if (got.length === others.length) finish();
    });
    if (others.length === 0) return finish();
    for (const w of others) sendTo(w, { type: ASK_COUNTS, id: key });
  };
  const spawn = (id: number) => {
    // one ticket secret for all workers, as nginx's master makes the keys before forking: a
    // session ticket one worker issued resumes on any other (node-tls.ts)
    const w = cluster.fork({ POSTERN_WORKER_ID: String(id), POSTERN_TICKET_SEED: ticketSeed });
    byId.set(id, w);
    w.on("message", (m: unknown) => {
      if (isIpc(m, ASK_PEERS)) gatherPeers(id, m.id);
      else if (isIpc(m, COUNTS)) gathering.get(m.id)?.(m.counts);
    });
    const started = Date.now();
    w.on("exit", (code, signal) => {
      byId.delete(id);
      if (stopping || code === FATAL_EXIT) {
        if (!stopping) logger.log("alert", `worker process ${w.process.pid} exited with fatal code ${code} and cannot be respawned`);
        if (byId.size === 0) {
          logger.log("notice", "exit");
          platform.exit(stopping ? 0 : 1);
        }
        return;
      }
      // a worker that dies at once is restarted at most once a second, not in a tight loop
      const wait = Math.max(0, 1000 - (Date.now() - started));
      logger.log("alert", `worker process ${w.process.pid} exited on ${signal ?? `code ${code}`}, starting a new one`);
      setTimeout(() => stopping || spawn(id), wait);
    });
  };
  for (let id = 1; id <= config.workerProcesses; id++) spawn(id);
  logger.log("notice", `postern/${VERSION} (${platform.runtime}) master started, ${config.workerProcesses} worker processes`);
  const forward = (sig: "SIGHUP" | "SIGQUIT" | "SIGTERM") => {
    // process.kill, not ChildProcess.kill: Deno delivers only the first ChildProcess.kill call
    for (const w of byId.values()) if (w.process.pid) process.kill(w.process.pid, sig);
  };
  const stop = (sig: "SIGQUIT" | "SIGTERM") => {
    if (stopping) return;
    stopping = true;
    logger.log("notice", sig === "SIGQUIT" ? "gracefully shutting down (QUIT)" : "shutting down");
    forward(sig);
  };
  platform.onSignal("QUIT", () => stop("SIGQUIT"));
  platform.onSignal("TERM", () => stop("SIGTERM"));
  platform.onSignal("INT", () => stop("SIGTERM"));
  platform.onSignal("HUP", () => {
    if (stopping) return;
    const r = load(file);
    if (!r.ok) {
      for (const e of r.errors) logger.log("error", `reload failed: ${formatConfigError(e)}`);
      logger.log("error", "reload failed: keeping the running configuration");
      return;
    }
    if (r.config.workerProcesses !== config.workerProcesses) logger.log("notice", "a new worker_processes takes effect after a restart");
    forward("SIGHUP");
  });
}

/** A worker that cannot start (bad arguments or config) exits with this, as nginx's fatal code. */
const FATAL_EXIT = 2;

interface RunOptions {
  readonly reusePort: boolean;
  readonly serveHttp: boolean;
  readonly workerId: number;
}

async function run(platform: Platform, file: string, config: Config, opts: RunOptions): Promise<void> {
  let stopping = false;
  // handlers first, so a signal during start-up is not lost
  let running: Awaited<ReturnType<typeof startPostern>> | undefined;
  const stop = async (graceful: boolean) => {
    if (stopping) return;
    stopping = true;
    running?.logger.log("notice", graceful ? "gracefully shutting down (QUIT)" : "shutting down");
    await running?.stop(graceful);
    running?.logger.log("notice", "exit");
    platform.exit(0);
  };
  platform.onSignal("QUIT", () => void stop(true));
  platform.onSignal("TERM", () => void stop(false));
  platform.onSignal("INT", () => void stop(false));
  platform.onSignal("HUP", () => {
    if (!running || stopping) return;
    const r = load(file);
    if (!r.ok) {
      for (const e of r.errors) running.logger.log("error", `reload failed: ${formatConfigError(e)}`);
      running.logger.log("error", "reload failed: keeping the running configuration");
      return;
    }
    running.reload(r.config).catch((e) => running!.logger.log("error", `reload failed: ${(e as Error).message}`));
  });
  // a worker of worker_processes > 1 tells the master its counters; worker 1 asks for the others'
  const peerMetrics = cluster.isWorker ? workerCounts(() => running?.metrics, opts.serveHttp) : undefined;
  try {
    running = await startPostern(config, platform, { ...opts, peerMetrics });
  } catch (e) {
    for (const line of (e as Error).message.split("\n")) console.error(`postern: [emerg] ${line}`);
    platform.exit(1);
  }
}
