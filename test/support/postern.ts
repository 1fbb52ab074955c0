// Start Postern under each target for end-to-end tests: the Node bundle, Deno and Bun from the
// sources, and the compiled binary. node:child_process and node:fs only (Node, Deno, Bun).
//
//   for (const target of targets()) {
//     test(`${target}: ...`, async () => {
//       const p = await startPostern(target, yaml);   // resolves once every listen port accepts
//       try { ... } finally { await p.stop(); }
//     });
//   }
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import { waitForPort } from "./ports.ts";

export type Target = "node" | "deno" | "bun" | "binary";
export const ALL_TARGETS: readonly Target[] = ["node", "deno", "bun", "binary"];
export type Signal = "SIGHUP" | "SIGQUIT" | "SIGTERM" | "SIGINT" | "SIGKILL" | "SIGUSR1" | "SIGUSR2";

export interface ListenAddress {
  readonly host: string; // where a client connects (a wildcard becomes loopback)
  readonly port: number;
  readonly source: string; // the item as written in the config
}

export interface StartOptions {
  /** Added to (and overriding) the test process's environment. */
  readonly env?: Readonly<Record<string, string>>;
  /** Extra command-line arguments, before `-c FILE`. */
  readonly args?: readonly string[];
  /** Files written into the temp dir before start (certificates, keys, password files...). */
  readonly files?: Readonly<Record<string, string | Uint8Array>>;
  /** How long every listen port has to accept; default 20 s (a cold Deno start is slow). */
  readonly startTimeoutMs?: number;
}

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: string | null;
}

export interface Postern {
  readonly target: Target;
  readonly dir: string;
  readonly configFile: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  /** The listen addresses parsed from the config, in order. */
  readonly listens: readonly ListenAddress[];
  /** stderr and stdout so far, as received (Postern logs to stderr). */
  logs(): string;
  /** Poll the output until `re` matches; returns the matching line. Throws with the log on
   *  timeout or when Postern exits first. `from` skips the first `from` characters. */
  waitForLog(re: RegExp, timeoutMs?: number, from?: number): Promise<string>;
  /** Send a signal to the main process (as `kill -SIG PID` would). */
  signal(sig: Signal): void;
  /** Replace the config file's contents (for HUP reload tests). */
  writeConfig(yaml: string): void;
  /** Resolves when the main process has exited. */
  readonly exited: Promise<ExitStatus>;
  /** null while running. */
  exitStatus(): ExitStatus | null;
  /** SIGTERM (or `signal`), wait for the exit (SIGKILL and throw after `timeoutMs`), make sure no
   *  worker is left, remove the temp dir; resolves with the exit code (null: killed by a signal). */
  stop(opts?: { signal?: Signal; timeoutMs?: number }): Promise<number | null>;
}

const DEFAULT_START_TIMEOUT_MS = 20_000;
const DEFAULT_STOP_TIMEOUT_MS = 10_000;

/** The repository root: the nearest directory above this file with Postern's package.json
 *  (this file may run from test/support/ or from an esbuild bundle under .build/). */
export function repoRoot(): string {
  if (process.env.POSTERN_ROOT) return path.resolve(process.env.POSTERN_ROOT);
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, "package.json");
    if (fs.existsSync(pkg)) {
      try {
        if (JSON.parse(fs.readFileSync(pkg, "utf8")).name === "postern") return dir;
      } catch {
        // not ours; keep going up
      }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`Cannot find Postern's package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** The targets named in POSTERN_TARGETS (comma-separated), default all four. */
export function targets(): Target[] {
  const raw = process.env.POSTERN_TARGETS?.trim();
  if (!raw) return [...ALL_TARGETS];
  const list = raw.split(",").map((t) => t.trim()).filter(Boolean);
  for (const t of list) {
    if (!ALL_TARGETS.includes(t as Target)) {
      throw new Error(`Unknown target "${t}" in POSTERN_TARGETS: use ${ALL_TARGETS.join(", ")}`);
    }
  }
  return list as Target[];
}

function nodeBinary(): string {
  const v = process.versions as Record<string, string | undefined>;
  return v.node && !v.bun && !v.deno ? process.execPath : "node";
}

/** How a target is started: the executable, its arguments before ours, and the working dir. */
export function posternCommand(target: Target, root = repoRoot()): { cmd: string; args: string[]; cwd: string } {
  const need = (file: string, hint: string) => {
    if (!fs.existsSync(file)) throw new Error(`Cannot start Postern on "${target}": ${file} does not exist (${hint})`);
    return file;
  };
  const built = "build it with `bun build.ts`; `npm test` does before the e2e tests";
  const installed = "run npm install";
  switch (target) {
    case "node":
      return { cmd: nodeBinary(), args: [need(path.join(root, "dist", "postern.mjs"), built)], cwd: root };
    case "deno":
      return {
        cmd: need(path.join(root, "node_modules", ".bin", "deno"), installed),
        args: ["run", "-A", need(path.join(root, "platform", "main.deno.ts"), "the Deno entry is missing")],
        cwd: root,
      };
    case "bun":
      return {
        cmd: need(path.join(root, "node_modules", ".bin", "bun"), installed),
        args: [need(path.join(root, "platform", "main.bun.ts"), "the Bun entry is missing")],
        cwd: root,
      };
    case "binary":
      return { cmd: need(path.join(root, "dist", "postern"), built), args: [], cwd: root };
  }
}

function connectHost(host: string): string {
  if (host === "" || host === "*" || host === "0.0.0.0") return "127.0.0.1";
  if (host === "::" || host === "[::]") return "::1";
  return host.replace(/^\[(.*)\]$/, "$1");
}

/** One listen item (nginx syntax string, bare port, or a map with `address`) as host and port. */
function parseListenItem(item: unknown): ListenAddress | null {
  let address: string;
  if (typeof item === "number") address = String(item);
  else if (typeof item === "string") address = item.trim().split(/\s+/)[0] ?? "";
  else if (item && typeof item === "object" && "address" in item) address = String((item as { address: unknown }).address);
  else return null;
  if (address === "off" || address.startsWith("unix:")) return null;
  const source = typeof item === "object" ? JSON.stringify(item) : String(item);
  let m = /^\d+$/.exec(address);
  if (m) return { host: "127.0.0.1", port: Number(address), source };
  m = /^(\[[^\]]+\]|[^:]*):(\d+)$/.exec(address);
  if (m) return { host: connectHost(m[1]), port: Number(m[2]), source };
  return null;
}

/** Every `listen` in the config, wherever it stands (http.listen, mail.servers[].listen...). */
export function listensOf(configYaml: string): ListenAddress[] {
  const out: ListenAddress[] = [];
  const visit = (node: unknown) => {
    if (Array.isArray(node)) {
      node.forEach(visit);
      return;
    }
    if (!node || typeof node !== "object") return;
    for (const [k, v] of Object.entries(node as Record<string, unknown>)) {
      if (k === "listen") {
        for (const item of Array.isArray(v) ? v : [v]) {
          const l = parseListenItem(item);
          if (l) out.push(l);
        }
      } else {
        visit(v);
      }
    }
  };
  visit(parseYaml(configYaml));
  return out;
}

const live = new Set<ChildProcess>();
const dirsToRemove = new Set<string>(); // temp dirs of instances a failed test never stopped
let exitHookInstalled = false;

function killGroup(child: ChildProcess, sig: Signal): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    try {
      child.kill(sig);
    } catch {
      // gone
    }
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const c of live) killGroup(c, "SIGKILL");
    for (const d of dirsToRemove) removeDir(d);
  });
}

/** Live, non-zombie processes in group `pgid` (Linux /proc). */
function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  let entries: string[] = [];
  try {
    entries = fs.readdirSync("/proc");
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(rest[2]) === pgid && rest[0] !== "Z" && rest[0] !== "X") out.push(Number(e));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

function makeDir(files: StartOptions["files"], configYaml: string): { dir: string; configFile: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "postern-"));
  fs.chmodSync(dir, 0o755);
  for (const [name, data] of Object.entries(files ?? {})) {
    const p = path.join(dir, name);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, data);
  }
  const configFile = path.join(dir, "postern.yaml");
  fs.writeFileSync(configFile, configYaml);
  dirsToRemove.add(dir);
  return { dir, configFile };
}

function removeDir(dir: string): void {
  dirsToRemove.delete(dir);
  if (!process.env.POSTERN_KEEP_TMP) fs.rmSync(dir, { recursive: true, force: true });
}

/** Write the config into a temp dir, start Postern on `target`, wait until every listen accepts. */
export async function startPostern(target: Target, configYaml: string, opts: StartOptions = {}): Promise<Postern> {
  const listens = listensOf(configYaml);
  const root = repoRoot();
  const command = posternCommand(target, root);
  const { dir, configFile } = makeDir(opts.files, configYaml);

  installExitHook();
  const proc = spawn(command.cmd, [...command.args, ...(opts.args ?? []), "-c", configFile], {
    cwd: command.cwd,
    env: { ...process.env, NO_COLOR: "1", ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true, // its own process group: stop() can find and kill any worker left behind
  });
  live.add(proc);
  let output = "";
  proc.stdout?.on("data", (d) => (output += String(d)));
  proc.stderr?.on("data", (d) => (output += String(d)));
  let status: ExitStatus | null = null;
  const exited = new Promise<ExitStatus>((resolve) => {
    proc.once("exit", (code, signal) => {
      status = { code, signal };
      live.delete(proc);
      resolve(status);
    });
  });
  const spawnFailed = new Promise<Error>((resolve) => proc.once("error", resolve));
  if (proc.pid === undefined) {
    removeDir(dir);
    throw new Error(`Cannot start Postern on "${target}" (${command.cmd}): ${(await spawnFailed).message}`);
  }
  const pid = proc.pid;
  const describe = () =>
    `Postern on "${target}" (pid ${pid}, ${command.cmd} ${command.args.join(" ")} -c ${configFile}) ` +
    (status ? `exited with code ${status.code}, signal ${status.signal}` : "is running") +
    `\n--- output ---\n${output}--- end of output ---`;

  // process.kill, not proc.kill: Deno's ChildProcess.kill ignores every call after the first.
  const sendSignal = (sig: Signal) => {
    if (status === null) process.kill(pid, sig);
  };

  let stopped: Promise<number | null> | null = null;
  const stop = (s: { signal?: Signal; timeoutMs?: number } = {}): Promise<number | null> => {
    stopped ??= (async () => {
      try {
        if (status === null) {
          sendSignal(s.signal ?? "SIGTERM");
          const timeoutMs = s.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
          let timer: ReturnType<typeof setTimeout> | undefined;
          const timedOut = await Promise.race([
            exited.then(() => false),
            new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs))),
          ]);
          clearTimeout(timer);
          if (timedOut) {
            killGroup(proc, "SIGKILL");
            await exited;
            throw new Error(`Postern did not exit within ${timeoutMs} ms of ${s.signal ?? "SIGTERM"}: killed\n${describe()}`);
          }
        }
        // Workers of a multi-process Postern must not outlive the master.
        const deadline = Date.now() + 5000;
        while (groupMembers(pid).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        const left = groupMembers(pid);
        if (left.length) {
          killGroup(proc, "SIGKILL");
          throw new Error(`Postern exited but left processes ${left.join(", ")} running 5 s later: killed\n${describe()}`);
        }
        return status!.code;
      } finally {
        removeDir(dir);
      }
    })();
    return stopped;
  };

  try {
    const timeoutMs = opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    for (const l of listens) {
      await waitForPort(l.port, l.host, timeoutMs, {
        check: () => {
          if (status) throw new Error(`Postern exited before listening on "${l.source}"`);
        },
      });
    }
  } catch (e) {
    killGroup(proc, "SIGKILL");
    await exited;
    removeDir(dir);
    throw new Error(`Cannot start Postern on "${target}": ${(e as Error).message}\n${describe()}`);
  }

  const waitForLog = async (re: RegExp, timeoutMs = 10_000, from = 0): Promise<string> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = output.slice(from).split("\n").find((l) => re.test(l));
      if (line !== undefined) return line;
      if (status) throw new Error(`Postern exited before logging ${re}\n${describe()}`);
      if (Date.now() >= deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${re}\n${describe()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  return {
    target,
    dir,
    configFile,
    proc,
    pid,
    listens,
    logs: () => output,
    waitForLog,
    signal: sendSignal,
    writeConfig: (yaml) => fs.writeFileSync(configFile, yaml),
    exited,
    exitStatus: () => status,
    stop,
  };
}

export interface RunResult extends ExitStatus {
  readonly output: string; // stderr and stdout as received
  readonly stdout: string;
  readonly stderr: string;
}

/** Run Postern to completion (e.g. `-t`, a bad config, `--version`): with `configYaml`, the config
 *  is written to a temp dir and `-c FILE` is appended to `args`. Kills it after `timeoutMs`. */
export async function runPostern(
  target: Target,
  args: readonly string[],
  opts: { configYaml?: string; files?: StartOptions["files"]; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<RunResult> {
  const command = posternCommand(target);
  const made = opts.configYaml === undefined ? null : makeDir(opts.files, opts.configYaml);
  try {
    const proc = spawn(command.cmd, [...command.args, ...args, ...(made ? ["-c", made.configFile] : [])], {
      cwd: command.cwd,
      env: { ...process.env, NO_COLOR: "1", ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    installExitHook();
    live.add(proc);
    let stdout = "";
    let stderr = "";
    let output = "";
    proc.stdout?.on("data", (d) => {
      stdout += String(d);
      output += String(d);
    });
    proc.stderr?.on("data", (d) => {
      stderr += String(d);
      output += String(d);
    });
    const timeoutMs = opts.timeoutMs ?? 20_000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(proc, "SIGKILL");
    }, timeoutMs);
    const st = await new Promise<ExitStatus>((resolve, reject) => {
      proc.once("error", reject);
      proc.once("close", (code, signal) => resolve({ code, signal }));
    });
    clearTimeout(timer);
    live.delete(proc);
    killGroup(proc, "SIGKILL");
    if (timedOut) throw new Error(`Postern on "${target}" ran longer than ${timeoutMs} ms: killed\n${output}`);
    return { ...st, stdout, stderr, output };
  } finally {
    if (made) removeDir(made.dir);
  }
}
