#!/usr/bin/env node
// Postern against nginx's mail proxy, side by side: `node bench/run.mjs [options]` (see --help and
// bench/README.md). Plain Node JS, no dependencies. Not part of the test suite.
//
// It compiles bench/loadgen.c (load generator + mock IMAP/POP3/SMTP backend, epoll, C), starts the
// mock backend, an nginx http{} auth_http responder used by both proxies, nginx's mail proxy and
// Postern (one process each unless --workers auto), alternates them round by round, and writes a
// markdown table to stdout and bench/results/latest.md (raw figures in latest.json). The
// *-login-builtin scenarios give Postern its built-in auth service instead (auth_http: builtin).

import { spawn, spawnSync } from "node:child_process";
import { randomBytes, scryptSync } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(BENCH);
const BIN = (n) => path.join(ROOT, "node_modules", ".bin", n);
const NGINX = "nginx";
const MAIL_MODULE = "/usr/lib/nginx/modules/ngx_mail_module.so";
const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;
const MiB = 1 << 20;

const HELP = `Usage: node bench/run.mjs [options]

  --quick              2 rounds, shorter runs, smaller transfers (a few minutes)
  --scenario LIST      comma-separated; a scenario runs when its name contains one of the
                       words (e.g. login, imap, idle, imap-login, startup). --list shows names
  --targets LIST       Postern targets: binary,node,bun,deno (default: binary)
  --workers 1|auto     worker_processes for both proxies (default 1; auto = one per core)
  --pin on|off         proxy on CPU 0, load generator + mock backend + auth on CPU 1 (default on;
                       always off with --workers auto)
  --rounds N           rounds of A B alternation (default 5, --quick 2)
  --duration S         login scenarios: seconds per run (default 5, --quick 2)
  --warmup S           login scenarios: seconds of logins per proxy before the rounds, not
                       counted (default 10, --quick 1): a JIT keeps compiling for ~10 s
  --conc N             login scenarios: concurrent clients (default 50)
  --total MIB          relay scenarios: MiB moved per run (default 1024, --quick 128)
  --idle N1,N2         idle scenarios: session counts (default 1000,10000; capped by the fd limit)
  --proxy-buffer SIZE  proxy_buffer for both proxies (default: unset, i.e. both use nginx's 4k)
  --client-buffer SIZE imap_client_buffer and smtp_client_buffer for both proxies (nginx relays
                       client-to-server data through that buffer, server-to-client through
                       proxy_buffer; default: unset, 4k)
  --quiet-wait S       before each run, wait up to S seconds (default 5; 0: never) for other
                       processes to use less than 25% of a core; at most 60 s in a whole run
  --log-level LEVEL    error_log level of both proxies (default crit; info to investigate failures)
  --loadgen-threads N  load generator threads (default 1, or the core count with --workers auto)
  --rebuild            rebuild dist/postern and dist/postern.mjs before running
  --keep               keep the temporary directory (configs, logs)
  --out FILE           markdown output (default bench/results/latest.md)
  --list               list the scenarios and exit
  -h, --help           this text`;

// ------------------------------------------------------------------ options

const { values: opt } = parseArgs({
  options: {
    quick: { type: "boolean" },
    scenario: { type: "string" },
    targets: { type: "string", default: "binary" },
    workers: { type: "string", default: "1" },
    pin: { type: "string" },
    rounds: { type: "string" },
    duration: { type: "string" },
    warmup: { type: "string" },
    conc: { type: "string", default: "50" },
    total: { type: "string" },
    idle: { type: "string" },
    "proxy-buffer": { type: "string" },
    "log-level": { type: "string", default: "crit" },
    "client-buffer": { type: "string" },
    "quiet-wait": { type: "string", default: "5" },
    "loadgen-threads": { type: "string" },
    rebuild: { type: "boolean" },
    keep: { type: "boolean" },
    out: { type: "string", default: path.join(BENCH, "results", "latest.md") },
    list: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (opt.help) {
  console.log(HELP);
  process.exit(0);
}

const NPROC = os.cpus().length || 1;
const NOFILE = Number(spawnSync("sh", ["-c", "ulimit -Hn"], { encoding: "utf8" }).stdout.trim()) || 1024;
const quick = !!opt.quick;
const AUTO = opt.workers === "auto";
if (!AUTO && opt.workers !== "1") die(`--workers must be 1 or auto`);
const PIN = !AUTO && NPROC >= 2 && (opt.pin ?? "on") === "on";
const ROUNDS = Number(opt.rounds ?? (quick ? 2 : 5));
const DURATION = Number(opt.duration ?? (quick ? 2 : 5));
const WARMUP = Number(opt.warmup ?? (quick ? 1 : 10));
const CONC = Number(opt.conc);
const TOTAL = Number(opt.total ?? (quick ? 128 : 1024)) * MiB;
const CHUNK = 16 * MiB;
const LG_THREADS = Number(opt["loadgen-threads"] ?? (AUTO ? NPROC : 1));
// The proxy holds two descriptors per session, plus its own (listeners, logs, and Postern's idle
// auth_http keep-alive connections: up to ~200 here, one per login in flight).
const IDLE_CAP = Math.floor((NOFILE - 500) / 2);
const IDLE_SIZES = (opt.idle ?? "1000,10000").split(",").map(Number);
const STARTUP_RUNS = quick ? 5 : 10;
const PROXY_BUFFER = opt["proxy-buffer"];
const LOG_LEVEL = opt["log-level"];
const CLIENT_BUFFER = opt["client-buffer"];
if (CLIENT_BUFFER !== undefined && !/^\d+[km]?$/.test(CLIENT_BUFFER)) die("--client-buffer takes a size like 4k, 16k, 65536");
if (!["debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"].includes(LOG_LEVEL)) die(`bad --log-level ${LOG_LEVEL}`);
if (PROXY_BUFFER !== undefined && !/^\d+[km]?$/.test(PROXY_BUFFER)) die("--proxy-buffer takes a size like 4k, 16k, 65536");
const NOISY = 25; // % of a core used by processes outside the benchmark: that run is flagged
const QUIET_WAIT = Number(opt["quiet-wait"]);
let quietBudget = 60; // seconds of waiting for a quiet machine in a whole run
let quietWaited = 0;
const CPU_PROXY = "0";
const CPU_HELPERS = "1";

// ------------------------------------------------------------------ scenarios

const k = (n) => (n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n));
const SCENARIOS = [
  { name: "startup", kind: "startup", title: "start-up to first connection" },
  ...["imap", "pop3", "smtp", "smtpnone"].map((p) => ({ name: `${p}-login`, kind: "login", proto: p, title: `${label(p)} login rate` })),
  // Postern answers the logins itself (auth_http: builtin, a scrypt password_hash); nginx keeps
  // the external auth_http, as the issue's target "with the built-in auth, >= 1.3x nginx" reads
  ...["imap", "pop3", "smtp"].map((p) => ({ name: `${p}-login-builtin`, kind: "login", proto: p, builtin: true, title: `${label(p)} login rate, Postern built-in auth` })),
  ...[
    ["imap", "down", 1], ["imap", "down", 8], ["imap", "up", 1], ["imap", "up", 8], ["pop3", "down", 1], ["smtp", "up", 1],
  ].map(([p, dir, n]) => ({
    name: `${p}-${dir === "down" ? "download" : "upload"}-${n}`, kind: "relay", proto: p, dir, conns: n,
    title: `${label(p)} ${dir === "down" ? (p === "imap" ? "FETCH download" : "RETR download") : p === "imap" ? "APPEND upload" : "DATA upload"}, ${n} session${n > 1 ? "s" : ""}`,
  })),
  ...["imap", "pop3", "smtp"].flatMap((p) => IDLE_SIZES.map((n) => ({ name: `${p}-idle-${k(n)}`, kind: "idle", proto: p, sessions: Math.min(n, IDLE_CAP), asked: n, title: `${label(p)} idle sessions` }))),
];
function label(p) {
  return { imap: "IMAP", pop3: "POP3", smtp: "SMTP (AUTH, XCLIENT)", smtpnone: "SMTP (smtp_auth none, XCLIENT)" }[p];
}
if (opt.list) {
  for (const s of SCENARIOS) console.log(`${s.name.padEnd(20)} ${s.title}`);
  process.exit(0);
}
const filters = opt.scenario ? opt.scenario.split(",").map((s) => s.trim()).filter(Boolean) : [];
const selected = SCENARIOS.filter((s) => !filters.length || filters.some((f) => s.name.includes(f)));
if (!selected.length) die(`no scenario matches ${opt.scenario} (see --list)`);
const TARGETS = opt.targets.split(",").map((s) => s.trim()).filter(Boolean);
for (const t of TARGETS) if (!["binary", "node", "bun", "deno"].includes(t)) die(`unknown target ${t}`);

// ------------------------------------------------------------------ process bookkeeping and cleanup

const T0 = Date.now();
const children = new Set(); // { pid, name, exited }
let TMP;
let cleaned = false;

function die(msg) {
  if (children.size) throw new Error(msg); // cleaned up by the handler below
  console.error(`bench: ${msg}`);
  process.exit(2);
}
function log(msg) {
  process.stderr.write(`[${((Date.now() - T0) / 1000).toFixed(1).padStart(6)}s] ${msg}\n`);
}

function killGroup(pid, sig) {
  try {
    process.kill(-pid, sig);
  } catch {
    try {
      process.kill(pid, sig);
    } catch {}
  }
}

function cleanupSync() {
  if (cleaned) return;
  cleaned = true;
  for (const c of children) if (!c.exited) killGroup(c.pid, "SIGKILL");
  if (TMP && !opt.keep) fs.rmSync(TMP, { recursive: true, force: true });
  else if (TMP) process.stderr.write(`bench: kept ${TMP}\n`);
}
/** Stops every child: TERM to each process group (nginx masters reap their workers), wait until
 *  each is reaped, KILL what is left after 3 s. PID 1 here may not reap orphans, so no orphans. */
async function cleanup() {
  const live = [...children].filter((c) => !c.exited);
  for (const c of live) killGroup(c.pid, "SIGTERM");
  const kill = setTimeout(() => live.forEach((c) => killGroup(c.pid, "SIGKILL")), 3000);
  await Promise.all(live.map((c) => c.done));
  clearTimeout(kill);
  for (const c of live) {
    for (let i = 0; i < 200 && groupAlive(c.pid); i++) await delay(10);
    if (groupAlive(c.pid)) killGroup(c.pid, "SIGKILL");
  }
  cleanupSync();
}
let stopping = false;
async function abort(code, msg) {
  if (stopping) return;
  stopping = true;
  process.stderr.write(msg);
  await cleanup();
  process.exit(code);
}
process.on("exit", cleanupSync);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(sig, () => abort(130, `\nbench: ${sig}, stopping everything\n`));
process.on("uncaughtException", (e) => abort(1, `bench: ${e.stack ?? e}\n`));
process.on("unhandledRejection", (e) => abort(1, `bench: ${e?.stack ?? e}\n`));

/** Starts a process in its own process group; cpu pins it with taskset (which execs: same pid). */
function start(name, cmd, args, { cpu, env, logFile, stdin = "ignore", stdout } = {}) {
  const real = cpu !== undefined ? ["taskset", ["-c", cpu, cmd, ...args]] : [cmd, args];
  const out = logFile ? fs.openSync(logFile, "a") : "ignore";
  const child = spawn(real[0], real[1], {
    cwd: ROOT, env: env ?? process.env, detached: true,
    stdio: [stdin, stdout ?? out, out],
  });
  if (typeof out === "number") fs.closeSync(out);
  const rec = { pid: child.pid, name, child, exited: false, code: null, logFile };
  rec.done = new Promise((resolve) => child.on("exit", (code, signal) => {
    rec.exited = true;
    rec.code = code ?? signal;
    children.delete(rec);
    resolve(rec.code);
  }));
  child.on("error", (e) => {
    rec.exited = true;
    rec.error = e;
  });
  children.add(rec);
  return rec;
}

async function stop(rec, sig = "SIGTERM") {
  if (!rec || rec.exited) return;
  killGroup(rec.pid, sig);
  const t = setTimeout(() => killGroup(rec.pid, "SIGKILL"), 3000);
  await rec.done;
  clearTimeout(t);
  // nginx workers and cluster children share the group: make sure none is left
  for (let i = 0; i < 300 && groupAlive(rec.pid); i++) await delay(10);
  if (groupAlive(rec.pid)) killGroup(rec.pid, "SIGKILL");
}

function groupAlive(pgid) {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls connect() until the port accepts; fails early if the process exits. */
async function waitPort(port, rec, timeoutMs = 30000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (rec?.exited) return false;
    const ok = await new Promise((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port });
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return true;
    await delay(5);
  }
  return false;
}

const GIVEN_PORTS = new Set(); // the kernel may hand a closed port out again: never twice in one run

async function freePort() {
  for (;;) {
    const port = await anyFreePort();
    if (!GIVEN_PORTS.has(port)) {
      GIVEN_PORTS.add(port);
      return port;
    }
  }
}

function anyFreePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ------------------------------------------------------------------ /proc readings

function treePids(root) {
  const kids = new Map();
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = fs.readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(st.slice(st.lastIndexOf(")") + 2).split(" ")[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(d));
    } catch {}
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) out.push(...(kids.get(out[i]) ?? []));
  return out;
}

/** user+system CPU seconds of a process and its descendants (threads included, dead ones too). */
function cpuOf(root) {
  let ticks = 0;
  for (const pid of treePids(root)) {
    try {
      const st = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
      ticks += Number(f[11]) + Number(f[12]);
    } catch {}
  }
  return ticks / CLK_TCK;
}

/** VmRSS in KiB, summed over the process tree (nginx: master + workers). */
function rssOf(root) {
  let kb = 0;
  for (const pid of treePids(root)) {
    try {
      const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
      if (m) kb += Number(m[1]);
    } catch {}
  }
  return kb;
}

/** open file descriptors of the process tree */
function fdsOf(root) {
  let n = 0;
  for (const pid of treePids(root)) {
    try {
      n += fs.readdirSync(`/proc/${pid}/fd`).length;
    } catch {}
  }
  return n;
}

/** busy CPU seconds of the whole machine (to see other processes' load during a run) */
function machineBusy() {
  const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return (user + nice + system + irq + softirq + (steal ?? 0)) / CLK_TCK;
}

function logTail(file, from, lines = 15) {
  try {
    const buf = fs.readFileSync(file);
    const text = buf.subarray(Math.min(from, buf.length)).toString("utf8").trimEnd();
    return text ? text.split("\n").slice(-lines) : [];
  } catch {
    return [];
  }
}
/** The proxy's warn/error lines written since `from` (the first ones), else its last lines. */
function problemLines(file, from) {
  const all = logTail(file, from, 1e9);
  const bad = all.filter((l) => /\[(warn|error|crit|alert|emerg)\]/.test(l));
  const pick = bad.length ? bad.slice(0, 12) : all.slice(-12);
  if (bad.length > 12) pick.push(`... ${bad.length - 12} more warn/error lines`);
  return pick;
}
const sizeOf = (f) => {
  try {
    return fs.statSync(f).size;
  } catch {
    return 0;
  }
};

// ------------------------------------------------------------------ the built-in auth user

// The load generator's default credentials (bench/loadgen.c), passed explicitly to the
// built-in auth scenarios; the mock backend and the auth nginx accept any.
const BENCH_USER = "bench@example.com";
const BENCH_PASS = "bench-secret";
const CREDS = ["--user", BENCH_USER, "--pass", BENCH_PASS];
// Postern's listeners with auth_http: builtin, added only when a *-builtin scenario is selected
// (so the other scenarios run the same config as before)
const BUILTIN = selected.some((s) => s.builtin);
const BUILTIN_PROTOS = ["imap-builtin", "pop3-builtin", "smtp-builtin"];
const baseProto = (p) => p.replace(/-builtin$/, "");
/** The listener (key of proxy.ports) a scenario uses on a proxy: nginx always has the auth_http ones. */
const listenerOf = (px, s) => (s.builtin && px.kind === "postern" ? `${s.proto}-builtin` : s.proto);
let BENCH_HASH; // made once at start, with src/auth/password.ts's cost: "scrypt$N$r$p$salt$hash"

function benchHash() {
  const cost = { N: 16384, r: 8, p: 1 }; // SCRYPT_COST in src/auth/password.ts
  const salt = randomBytes(16);
  const key = scryptSync(BENCH_PASS, salt, 32, { ...cost, maxmem: 64 * MiB });
  return `scrypt$${cost.N}$${cost.r}$${cost.p}$${salt.toString("base64")}$${key.toString("base64")}`;
}

// ------------------------------------------------------------------ load generator

const LG = () => path.join(TMP, "loadgen");

function buildLoadgen() {
  const r = spawnSync("cc", ["-O2", "-pthread", "-o", LG(), path.join(BENCH, "loadgen.c")], { encoding: "utf8" });
  if (r.status !== 0) die(`cc failed:\n${r.stderr}`);
}

/** Runs the load generator to completion and parses its JSON line. */
async function loadgen(args, { timeoutMs = 600000 } = {}) {
  const rec = start("loadgen", LG(), args, { cpu: PIN ? CPU_HELPERS : undefined, stdout: "pipe", logFile: path.join(TMP, "loadgen.log") });
  let out = "";
  rec.child.stdout.on("data", (d) => (out += d));
  const t = setTimeout(() => killGroup(rec.pid, "SIGKILL"), timeoutMs);
  await rec.done;
  clearTimeout(t);
  const line = out.trim().split("\n").filter((l) => l.startsWith("{")).pop();
  if (!line) throw new Error(`loadgen ${args.join(" ")} printed nothing (exit ${rec.code}); see ${path.join(TMP, "loadgen.log")}`);
  return JSON.parse(line);
}

// ------------------------------------------------------------------ configs

function authNginxConf(dir, port, backend) {
  return `worker_processes ${AUTO ? "auto" : 1};
daemon off;
error_log ${dir}/error.log crit;
pid ${dir}/nginx.pid;
worker_rlimit_nofile ${NOFILE};
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path ${dir}/body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    map $http_auth_protocol $mail_backend_port {
        default ${backend.imap};
        imap ${backend.imap};
        pop3 ${backend.pop3};
        smtp ${backend.smtp};
    }
    server {
        listen 127.0.0.1:${port} backlog=4096;
        location = /auth {
            add_header Auth-Status OK;
            add_header Auth-Server 127.0.0.1;
            add_header Auth-Port $mail_backend_port;
            return 204;
        }
    }
}
`;
}

function mailNginxConf(dir, ports, authPort) {
  return `load_module ${MAIL_MODULE};
worker_processes ${AUTO ? "auto" : 1};
daemon off;
error_log ${dir}/error.log ${LOG_LEVEL};
pid ${dir}/nginx.pid;
worker_rlimit_nofile ${NOFILE};
events { worker_connections ${NOFILE}; }
mail {
    server_name bench.local;
    auth_http 127.0.0.1:${authPort}/auth;
    proxy_pass_error_message on;
    xclient on;${PROXY_BUFFER ? `\n    proxy_buffer ${PROXY_BUFFER};` : ""}${CLIENT_BUFFER ? `\n    imap_client_buffer ${CLIENT_BUFFER};\n    smtp_client_buffer ${CLIENT_BUFFER};` : ""}
    server { listen 127.0.0.1:${ports.imap} backlog=4096; protocol imap; }
    server { listen 127.0.0.1:${ports.pop3} backlog=4096; protocol pop3; }
    server { listen 127.0.0.1:${ports.smtp} backlog=4096; protocol smtp; smtp_auth plain login; }
    server { listen 127.0.0.1:${ports.smtpnone} backlog=4096; protocol smtp; smtp_auth none; }
}
`;
}

function posternConf(ports, authPort, protos) {
  const server = {
    imap: `    - listen: ["127.0.0.1:${ports.imap} backlog=4096"]\n      protocol: imap\n`,
    pop3: `    - listen: ["127.0.0.1:${ports.pop3} backlog=4096"]\n      protocol: pop3\n`,
    smtp: `    - listen: ["127.0.0.1:${ports.smtp} backlog=4096"]\n      protocol: smtp\n      smtp_auth: [plain, login]\n`,
    smtpnone: `    - listen: ["127.0.0.1:${ports.smtpnone} backlog=4096"]\n      protocol: smtp\n      smtp_auth: none\n`,
    "imap-builtin": `    - listen: ["127.0.0.1:${ports["imap-builtin"]} backlog=4096"]\n      protocol: imap\n      auth_http: builtin\n`,
    "pop3-builtin": `    - listen: ["127.0.0.1:${ports["pop3-builtin"]} backlog=4096"]\n      protocol: pop3\n      auth_http: builtin\n`,
    "smtp-builtin": `    - listen: ["127.0.0.1:${ports["smtp-builtin"]} backlog=4096"]\n      protocol: smtp\n      smtp_auth: [plain, login]\n      auth_http: builtin\n`,
  };
  // the built-in auth service (auth.cache_ttl at its default): one user, the mock backend
  const auth = !protos.some((p) => p.endsWith("-builtin")) ? "" : `# the built-in auth service of the *-builtin servers (the load generator's user)
auth:
  users:
    - user: ${BENCH_USER}
      password_hash: "${BENCH_HASH}"
      backend:
        imap: 127.0.0.1:${BPORTS.imap}
        pop3: 127.0.0.1:${BPORTS.pop3}
        smtp: 127.0.0.1:${BPORTS.smtp}
`;
  return `# generated by bench/run.mjs: the equivalent of the nginx mail{} block next to it
server_name: bench.local
error_log: { level: ${LOG_LEVEL} }
worker_processes: ${AUTO ? "auto" : 1}
${auth}mail:
  auth_http: http://127.0.0.1:${authPort}/auth
  proxy_pass_error_message: on
  xclient: on
${PROXY_BUFFER ? `  proxy_buffer: ${PROXY_BUFFER}\n` : ""}${CLIENT_BUFFER ? `  imap_client_buffer: ${CLIENT_BUFFER}\n  smtp_client_buffer: ${CLIENT_BUFFER}\n` : ""}  servers:
${protos.map((p) => server[p]).join("")}`;
}

// ------------------------------------------------------------------ proxies

const PROTOS = ["imap", "pop3", "smtp", "smtpnone"];

function targetCommand(target, conf) {
  switch (target) {
    case "binary": return [path.join(TMP, "postern"), ["-c", conf]];
    case "node": return [process.execPath, [path.join(TMP, "postern.mjs"), "-c", conf]];
    case "bun": return [BIN("bun"), [path.join(TMP, "tree", "platform/main.bun.ts"), "-c", conf]];
    case "deno": return [BIN("deno"), ["run", "-A", path.join(TMP, "tree", "platform/main.deno.ts"), "-c", conf]];
  }
}

/** Makes sure each target can run; returns a map target → reason it cannot. */
function prepareTargets() {
  const unavailable = new Map();
  const build = (what) => spawnSync(BIN("bun"), ["build.ts", what], { cwd: ROOT, encoding: "utf8" });
  for (const t of TARGETS) {
    if (t === "binary") {
      const file = path.join(ROOT, "dist", "postern");
      if (!fs.existsSync(file) || opt.rebuild) {
        if (!fs.existsSync(path.join(ROOT, "platform", "bun.ts"))) {
          unavailable.set(t, "dist/postern is missing and cannot be built: platform/bun.ts (the Bun adapter) does not exist yet");
          continue;
        }
        log("building dist/postern (bun build.ts bun)");
        const r = build("bun");
        if (r.status !== 0) {
          unavailable.set(t, `bun build.ts bun failed: ${(r.stderr || r.stdout).trim().split("\n").slice(-5).join(" / ")}`);
          continue;
        }
      }
      fs.copyFileSync(file, path.join(TMP, "postern")); // a stable copy: others may rebuild dist/ meanwhile
      fs.chmodSync(path.join(TMP, "postern"), 0o755);
    } else if (t === "node") {
      const file = path.join(ROOT, "dist", "postern.mjs");
      if (!fs.existsSync(file) || opt.rebuild) {
        log("building dist/postern.mjs");
        const r = spawnSync(process.execPath, ["-e", "import('./scripts/node-bundle.mjs').then((m) => m.buildNodeBundle())"], { cwd: ROOT, encoding: "utf8" });
        if (r.status !== 0) {
          unavailable.set(t, `node bundle failed: ${(r.stderr || r.stdout).trim().split("\n").slice(-5).join(" / ")}`);
          continue;
        }
      }
      fs.copyFileSync(file, path.join(TMP, "postern.mjs"));
    } else if (t === "bun") {
      if (!fs.existsSync(path.join(ROOT, "platform", "bun.ts"))) unavailable.set(t, "platform/bun.ts (the Bun adapter) does not exist yet");
      else snapshotTree();
    } else if (t === "deno") {
      if (!fs.existsSync(path.join(ROOT, "platform", "deno.ts"))) unavailable.set(t, "platform/deno.ts (the Deno adapter) does not exist yet");
      else snapshotTree();
    }
  }
  return unavailable;
}

/** bun and deno run the TypeScript sources: copy them once, so that edits made in the working
 *  tree during the run (others work there) do not change what is measured half-way. */
function snapshotTree() {
  const tree = path.join(TMP, "tree");
  if (fs.existsSync(tree)) return;
  fs.mkdirSync(tree);
  for (const f of ["src", "platform"]) fs.cpSync(path.join(ROOT, f), path.join(tree, f), { recursive: true });
  for (const f of ["package.json", "deno.json", "bunfig.toml", "tsconfig.json"]) if (fs.existsSync(path.join(ROOT, f))) fs.copyFileSync(path.join(ROOT, f), path.join(tree, f));
  fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(tree, "node_modules"));
}

const distInfo = {};
function describeDist() {
  for (const f of [TARGETS.includes("binary") && "postern", TARGETS.includes("node") && "postern.mjs"].filter(Boolean)) {
    try {
      distInfo[f] = fs.statSync(path.join(ROOT, "dist", f)).mtime.toISOString().replace(/\.\d+Z$/, "Z");
    } catch {}
  }
}

class Proxy {
  constructor(name, kind, ports) {
    this.name = name; // "nginx" or a Postern target
    this.kind = kind; // "nginx" | "postern"
    this.ports = ports;
    this.protos = kind === "postern" && BUILTIN ? [...PROTOS, ...BUILTIN_PROTOS] : [...PROTOS];
    this.notImplemented = new Set();
    this.dir = path.join(TMP, name);
    fs.mkdirSync(this.dir, { recursive: true });
    this.logFile = path.join(this.dir, this.kind === "nginx" ? "error.log" : "postern.log");
    this.processes = 0;
    this.failure = undefined;
  }

  writeConf() {
    if (this.kind === "nginx") {
      this.conf = path.join(this.dir, "nginx.conf");
      fs.writeFileSync(this.conf, mailNginxConf(this.dir, this.ports, AUTH_PORT));
    } else {
      this.conf = path.join(this.dir, "postern.yaml");
      fs.writeFileSync(this.conf, posternConf(this.ports, AUTH_PORT, this.protos));
    }
  }

  command() {
    if (this.kind === "nginx") return [NGINX, ["-p", this.dir + "/", "-c", this.conf, "-e", this.logFile]];
    return targetCommand(this.name, this.conf);
  }

  /** Starts the proxy and waits for its listeners; drops protocols Postern refuses as not implemented. */
  async start() {
    for (let attempt = 0; attempt < 3; attempt++) {
      this.writeConf();
      const from = sizeOf(this.logFile);
      const [cmd, args] = this.command();
      this.rec = start(this.name, cmd, args, { cpu: PIN ? CPU_PROXY : undefined, logFile: this.logFile });
      let ok = true;
      for (const p of this.protos) if (!(await waitPort(this.ports[p], this.rec))) ok = false;
      if (ok) {
        this.processes = treePids(this.rec.pid).length;
        return true;
      }
      await stop(this.rec);
      const tail = logTail(this.logFile, from, 30);
      const missing = [];
      for (const line of tail) {
        const m = /protocol "(\w+)".*not implemented/.exec(line);
        if (m) missing.push(m[1]);
      }
      if (!missing.length) {
        this.failure = `did not start (exit ${this.rec.code}):\n${tail.join("\n")}`;
        return false;
      }
      for (const m of missing) {
        for (const p of this.protos.filter((p) => baseProto(p) === m || (m === "smtp" && p === "smtpnone"))) this.notImplemented.add(p);
      }
      this.protos = this.protos.filter((p) => !this.notImplemented.has(p));
      if (!this.protos.length) {
        this.failure = "no protocol implemented";
        return false;
      }
    }
    return false;
  }

  async restart() {
    await stop(this.rec);
    return this.start();
  }

  get pid() {
    return this.rec.pid;
  }
  get alive() {
    return this.rec && !this.rec.exited;
  }
}

// ------------------------------------------------------------------ measurements

let AUTH_PORT;
let BPORTS; // the mock backend's ports by protocol
let BACKEND;
let AUTH;


/** CPU seconds of every process of the benchmark (proxies, backend, auth) */
function ourCpu(proxies) {
  return proxies.reduce((a, p) => a + (p.alive ? cpuOf(p.pid) : 0), 0) + cpuOf(BACKEND.pid) + cpuOf(AUTH.pid);
}

/** Other processes share this machine (other sessions' test suites): before a run, sample 0.2 s
 *  of machine load and wait while others use more than NOISY % of a core, within the budgets. */
async function waitQuiet(proxies) {
  if (QUIET_WAIT <= 0) return;
  const end = Date.now() + QUIET_WAIT * 1000;
  for (;;) {
    const t0 = performance.now(), b0 = machineBusy(), o0 = ourCpu(proxies);
    await delay(200);
    const dt = (performance.now() - t0) / 1000;
    const other = ((machineBusy() - b0 - (ourCpu(proxies) - o0)) / dt) * 100;
    if (other < NOISY || Date.now() >= end || quietBudget <= 0) return;
    quietBudget -= dt;
    quietWaited += dt;
  }
}

/** Wraps one measurement: CPU of proxy / helpers / machine, log lines written meanwhile. */
async function measure(proxy, fn) {
  const logFrom = sizeOf(proxy.logFile);
  const c0 = cpuOf(proxy.pid), b0 = cpuOf(BACKEND.pid), a0 = cpuOf(AUTH.pid), m0 = machineBusy(), w0 = performance.now();
  let r;
  try {
    r = await fn();
  } catch (e) {
    r = { failed: `${e.message ?? e}` };
  }
  const wall = (performance.now() - w0) / 1000;
  if (proxy.alive) proxy.processes = Math.max(proxy.processes, treePids(proxy.pid).length);
  const proxyCpu = cpuOf(proxy.pid) - c0, backendCpu = cpuOf(BACKEND.pid) - b0, authCpu = cpuOf(AUTH.pid) - a0;
  const helperCpu = backendCpu + authCpu, machine = machineBusy() - m0;
  r.wall = wall;
  r.backendCpuPct = (backendCpu / wall) * 100;
  r.authCpuPct = (authCpu / wall) * 100;
  const lgCpu = r.lg?.cpu_s ?? 0;
  r.proxyCpu = proxyCpu;
  r.proxyCpuPct = (proxyCpu / wall) * 100;
  r.helperCpuPct = (helperCpu / wall) * 100;
  r.lgCpuPct = r.lg?.cpu_pct;
  r.otherCpuPct = Math.max(0, ((machine - proxyCpu - helperCpu - lgCpu) / wall) * 100);
  if (!proxy.alive) {
    r.failed = `the proxy exited (${proxy.rec.code})`;
  }
  if (r.failed) r.log = problemLines(proxy.logFile, logFrom);
  return r;
}

const common = () => ["--threads", String(LG_THREADS)];

async function runLogin(proxy, s, duration = DURATION) {
  return measure(proxy, async () => {
    const creds = s.builtin ? CREDS : [];
    const lg = await loadgen(["login", "--proto", s.proto, "--port", String(proxy.ports[listenerOf(proxy, s)]), "--conc", String(CONC), "--duration", String(duration), ...creds, ...common()]);
    const r = { lg, value: lg.rate, p50: lg.p50_ms, p99: lg.p99_ms, errors: lg.errors };
    if (lg.sessions === 0 || lg.errors > 0) r.failed = `${lg.sessions} sessions, ${lg.errors} errors: ${lg.errors_sample.join("; ")}`;
    return r;
  });
}

async function runRelay(proxy, s, total = TOTAL) {
  return measure(proxy, async () => {
    const lg = await loadgen(["relay", "--proto", s.proto, "--dir", s.dir, "--port", String(proxy.ports[s.proto]), "--conns", String(s.conns), "--total", String(total), "--chunk", String(CHUNK), ...common()]);
    const r = { lg, value: lg.mb_s, bytes: lg.bytes, errors: lg.errors };
    if (lg.errors > 0 || lg.bytes < total) r.failed = `${lg.bytes} of ${total} bytes, ${lg.errors} errors: ${lg.errors_sample.join("; ")}`;
    return r;
  });
}

async function runIdle(proxy, s) {
  // a fresh process, warmed up with a few logins so one-time costs (code, JIT) are not counted
  if (!(await proxy.restart())) return { failed: `restart failed: ${proxy.failure}` };
  await loadgen(["login", "--proto", s.proto, "--port", String(proxy.ports[s.proto]), "--conc", "10", "--duration", "0.3"]);
  return measure(proxy, async () => {
    const rss0 = rssOf(proxy.pid), fds0 = fdsOf(proxy.pid);
    const rec = start("loadgen-idle", LG(), ["idle", "--proto", s.proto, "--port", String(proxy.ports[s.proto]), "--conns", String(s.sessions)], {
      cpu: PIN ? CPU_HELPERS : undefined, stdin: "pipe", stdout: "pipe", logFile: path.join(TMP, "loadgen.log"),
    });
    let out = "";
    const ready = new Promise((resolve) => {
      rec.child.stdout.on("data", (d) => {
        out += d;
        if (out.includes("READY")) resolve(true);
      });
      rec.done.then(() => resolve(false));
    });
    const timer = setTimeout(() => killGroup(rec.pid, "SIGKILL"), 180000);
    const got = await ready;
    let rss1 = 0, rss2 = 0, held = 0, fds1 = 0;
    if (got) {
      held = JSON.parse(out.slice(out.indexOf("READY") + 6).split("\n")[0]).held;
      rss1 = rssOf(proxy.pid);
      await delay(1000); // a fixed idle period, then the figure
      rss2 = rssOf(proxy.pid);
      fds1 = fdsOf(proxy.pid);
    }
    rec.child.stdin.end("quit\n");
    await rec.done;
    clearTimeout(timer);
    const line = out.trim().split("\n").filter((l) => l.startsWith("{")).pop();
    const lg = line ? JSON.parse(line) : { errors: -1, errors_sample: ["no output"] };
    const r = { lg, rss0, rss1, rss2, held, fds0, fds1, value: held ? (rss2 - rss0) / held : NaN, errors: lg.errors };
    if (!got || held < s.sessions || lg.errors || lg.dropped) r.failed = `${held}/${s.sessions} sessions held, ${lg.errors} errors, ${lg.dropped ?? 0} dropped: ${(lg.errors_sample ?? []).join("; ")}`;
    return r;
  });
}

async function runStartup(targets) {
  // Separate configs on fresh ports (the long-running proxies keep theirs); no pinning; the
  // environment without NODE_EXTRA_CA_CERTS (it costs every Node start ~100 ms).
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const entries = [];
  for (const t of targets) {
    const ports = { imap: await freePort(), pop3: await freePort(), smtp: await freePort(), smtpnone: await freePort() };
    const dir = path.join(TMP, `startup-${t.name}`);
    fs.mkdirSync(dir, { recursive: true });
    let cmd;
    if (t.kind === "nginx") {
      fs.writeFileSync(path.join(dir, "nginx.conf"), mailNginxConf(dir, ports, AUTH_PORT));
      cmd = [NGINX, "-p", dir + "/", "-c", path.join(dir, "nginx.conf"), "-e", path.join(dir, "error.log")];
    } else {
      fs.writeFileSync(path.join(dir, "postern.yaml"), posternConf(ports, AUTH_PORT, t.protos.filter((p) => PROTOS.includes(p))));
      cmd = targetCommand(t.name, path.join(dir, "postern.yaml")).flat();
    }
    entries.push({ t, ports, cmd, connect: [], greeting: [], error: undefined });
  }
  for (let i = 0; i < STARTUP_RUNS; i++) {
    for (const e of entries) {
      if (e.error) continue;
      const rec = start("loadgen-startup", LG(), ["startup", "--port", String(e.ports.imap), "--runs", "1", "--", ...e.cmd], {
        env, stdout: "pipe", logFile: path.join(TMP, "loadgen.log"),
      });
      let out = "";
      rec.child.stdout.on("data", (d) => (out += d));
      await rec.done;
      try {
        const j = JSON.parse(out.trim());
        e.connect.push(j.connect_ms[0]);
        if (j.greeting_ms[0] >= 0) e.greeting.push(j.greeting_ms[0]);
      } catch {
        e.error = `no connection (see ${path.join(TMP, "loadgen.log")})`;
      }
    }
  }
  return entries;
}

// ------------------------------------------------------------------ statistics and report

const median = (a) => {
  const v = a.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
  if (!v.length) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};
function fmt(x, digits) {
  if (!Number.isFinite(x)) return "–";
  if (digits !== undefined) return x.toFixed(digits);
  const a = Math.abs(x);
  return a >= 1000 ? Math.round(x).toLocaleString("en-US") : a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : x.toFixed(2);
}

function versions() {
  const v = (cmd, args) => {
    const r = spawnSync(cmd, args, { encoding: "utf8" });
    return `${r.stdout}${r.stderr}`.trim().split("\n")[0];
  };
  const cpu = (/model name\s*:\s*(.*)/.exec(fs.readFileSync("/proc/cpuinfo", "utf8")) ?? [])[1] ?? "?";
  const git = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).stdout.trim();
  const dirty = spawnSync("git", ["status", "--porcelain", "--", "src", "platform"], { cwd: ROOT, encoding: "utf8" }).stdout.trim() ? " + uncommitted changes in src/ or platform/" : "";
  let pver = "?";
  try {
    pver = /VERSION = "([^"]+)"/.exec(fs.readFileSync(path.join(ROOT, "src/version.ts"), "utf8"))[1];
  } catch {}
  return {
    nproc: NPROC, cpu, kernel: os.release(), mem: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    nginx: v(NGINX, ["-v"]).replace("nginx version: nginx/", ""), node: process.version.slice(1), bun: v(BIN("bun"), ["--version"]),
    deno: v(BIN("deno"), ["--version"]).split(" ")[1], postern: `${pver} (git ${git}${dirty})`, nofile: NOFILE,
  };
}

function buildReport(ctx) {
  const { results, startup, proxies, unavailable, info, wallS } = ctx;
  const names = proxies.map((p) => p.name);
  const pnames = names.filter((n) => n !== "nginx");
  const L = [];
  const notes = [];
  const note = (text) => {
    notes.push(text);
    return `[^${notes.length}]`;
  };
  L.push(`# Postern vs nginx mail proxy`);
  L.push("");
  L.push(`- finished: ${new Date().toISOString().replace(/\.\d+Z$/, "Z")}, whole run ${fmt(wallS / 60, 1)} min`);
  L.push(`- machine: ${info.nproc} × ${info.cpu} (nproc ${info.nproc}), ${info.mem} RAM, Linux ${info.kernel}, open files limit ${info.nofile}`);
  L.push(`- versions: nginx ${info.nginx}, node ${info.node}, bun ${info.bun}, deno ${info.deno}, postern ${info.postern}`);
  if (Object.keys(distInfo).length) L.push(`- builds measured: ${Object.entries(distInfo).map(([f, t]) => `dist/${f} of ${t}`).join(", ")} (copied at start)`);
  L.push(`- command: \`${ctx.command}\``);
  L.push(`- setup: worker_processes ${AUTO ? "auto" : 1} for both proxies; ${PIN ? `pinned: proxy on CPU ${CPU_PROXY}, load generator + mock backend + auth nginx on CPU ${CPU_HELPERS}` : "not pinned (all processes share all cores)"}; proxy_buffer ${PROXY_BUFFER ?? "not set (nginx's default 4k for both)"}; imap/smtp_client_buffer ${CLIENT_BUFFER ?? "not set (4k)"}; error_log level ${LOG_LEVEL}; login scenarios warmed up for ${WARMUP} s per proxy (not counted); ${ROUNDS} rounds, each round runs nginx then ${pnames.join(", ") || "no Postern target"}`);
  L.push(`- scenarios: login ${CONC} concurrent clients × ${DURATION} s per run; relay ${TOTAL / MiB} MiB per run in ${CHUNK / MiB} MiB commands; idle sessions held 1 s; start-up median of ${STARTUP_RUNS}`);
  for (const p of proxies) {
    if (p.kind === "postern" && AUTO) L.push(`- ${p.name}: worker_processes auto → ${p.processes} process${p.processes === 1 ? " (multi-process mode not implemented: measured as one process)" : "es"}`);
    if (p.kind === "nginx" && AUTO) L.push(`- nginx: worker_processes auto → ${p.processes} processes (master + workers)`);
  }
  for (const [t, why] of unavailable) L.push(`- Postern target **${t}**: not measured: ${why}`);
  L.push("");
  const header = ["scenario", "metric", "nginx", ...pnames.flatMap((n) => [`Postern ${n}`, "ratio"]), "loadgen CPU", "backend+auth CPU"];
  L.push(`| ${header.join(" | ")} |`);
  L.push(`|${header.map(() => " --- ").join("|")}|`);
  const row = (cells) => L.push(`| ${cells.join(" | ")} |`);

  if (startup) {
    for (const [metric, key] of [["ms to first connect()", "connect"], ["ms to greeting", "greeting"]]) {
      const ng = startup.find((e) => e.t.kind === "nginx");
      const cells = [metric === "ms to first connect()" ? "start-up (exec → listening)" : "", `${metric} (lower is better)`, ng ? fmt(median(ng[key])) : "–"];
      for (const n of pnames) {
        const e = startup.find((x) => x.t.name === n);
        if (!e) cells.push("–", "–");
        else if (e.error) cells.push(`FAILED${note(`start-up, ${n}: ${e.error}`)}`, "–");
        else cells.push(fmt(median(e[key])), ng ? `${fmt(median(e[key]) / median(ng[key]), 2)}×` : "–");
      }
      cells.push("–", "–");
      row(cells);
    }
  }

  for (const s of ctx.scenarios) {
    if (s.kind === "startup") continue;
    const res = results.get(s.name);
    if (!res) continue;
    const metrics = s.kind === "login"
      ? [["sessions/s (higher is better)", (r) => r.value, 0], ["p50 session ms", (r) => r.p50, 2], ["p99 session ms", (r) => r.p99, 2], ["proxy CPU µs per session", (r) => (r.proxyCpu / r.lg.sessions) * 1e6, 0], ["proxy CPU % of a core", (r) => r.proxyCpuPct, 0, true]]
      : s.kind === "relay"
      ? [["MB/s (higher is better)", (r) => r.value, 0], ["proxy CPU s per GB (lower is better)", (r) => r.proxyCpu / (r.bytes / 1e9), 2]]
      : [["KiB RSS per session (lower is better)", (r) => r.value, 1], ["proxy RSS MiB before / with the sessions", null]];
    metrics.forEach(([metric, get, digits, noRatio], mi) => {
      const title = s.kind === "relay" ? s.title : s.kind === "idle" ? `${s.title}: ${s.sessions.toLocaleString("en-US")}${s.sessions < s.asked ? ` (of ${s.asked.toLocaleString("en-US")}, fd limit)` : ""}` : `${s.title}`;
      const cells = [mi === 0 ? title : "", metric];
      const ok = (name) => (res.get(name) ?? []).filter((r) => r && !r.failed && !r.skipped);
      const cellFor = (name) => {
        const runs = res.get(name) ?? [];
        if (runs.some((r) => r?.skipped)) return runs.find((r) => r.skipped).skipped;
        const good = ok(name);
        if (!good.length) {
          const f = runs.find((r) => r?.failed);
          return f && mi === 0 ? `FAILED${note(`${s.name}, ${name}: ${f.failed}${f.log?.length ? `\n\n    ${f.log.join("\n    ")}` : ""}`)}` : "FAILED";
        }
        const failedRuns = runs.filter((r) => r?.failed);
        const mark = failedRuns.length && mi === 0 ? ` (${failedRuns.length} of ${runs.length} runs failed${note(`${s.name}, ${name}: ${failedRuns[0].failed}${failedRuns[0].log?.length ? `\n\n    ${failedRuns[0].log.join("\n    ")}` : ""}`)})` : "";
        if (!get) return good.map((r) => `${fmt(r.rss0 / 1024, 0)} / ${fmt(r.rss2 / 1024, 0)}`)[good.length >> 1] + mark;
        return fmt(median(good.map(get)), digits) + mark;
      };
      cells.push(cellFor("nginx"));
      for (const n of pnames) {
        cells.push(cellFor(n));
        if (!get || noRatio) {
          cells.push("");
          continue;
        }
        // ratio: median of the per-round ratios Postern/nginx
        const ng = res.get("nginx") ?? [], pr = res.get(n) ?? [];
        const ratios = pr.map((r, i) => (r && ng[i] && !r.failed && !ng[i].failed && !r.skipped ? get(r) / get(ng[i]) : NaN)).filter(Number.isFinite);
        cells.push(ratios.length ? `${fmt(median(ratios), 2)}×` : "–");
      }
      if (mi === 0) {
        const all = [...res.values()].flat().filter((r) => r && !r.skipped);
        const lgn = median((res.get("nginx") ?? []).map((r) => r?.lgCpuPct));
        const lgp = median(pnames.flatMap((n) => (res.get(n) ?? []).map((r) => r?.lgCpuPct)));
        const pc = (x) => (Number.isFinite(x) ? `${fmt(x, 0)}%` : "–");
        cells.push(`${pc(lgn)} / ${pc(lgp)}`);
        cells.push(pc(median(all.map((r) => r.helperCpuPct))));
      } else cells.push("", "");
      row(cells);
    });
  }
  L.push("");
  L.push(`Ratios are Postern/nginx, the median of the per-round ratios. "loadgen CPU" is the load generator's own CPU time (getrusage) over its run time, as % of one core: during the nginx runs / during the Postern runs; "backend+auth CPU" is the mock backend plus the auth nginx, median over all runs.`);
  if (ctx.scenarios.some((s) => s.builtin && results.has(s.name))) {
    L.push(`\nIn the "Postern built-in auth" rows Postern answers the logins itself (\`auth_http: builtin\`, one user with a scrypt \`password_hash\` of N=16384, \`auth.cache_ttl\` at its default of 1h, so a repeated login skips scrypt), while nginx still asks the external auth_http nginx, as in the other login rows.`);
  }
  if (ctx.noisy) L.push(`\nOther processes on the machine used up to ${fmt(ctx.noisy, 0)}% of a core during some runs (median ${fmt(ctx.noiseMedian, 0)}%): figures from a shared machine are noisy.${quietWaited ? ` The run waited ${fmt(quietWaited, 0)} s in all for quieter moments (--quiet-wait).` : ""}`);
  // per round detail
  L.push("");
  L.push("<details><summary>Per-round figures</summary>");
  L.push("");
  L.push(`| scenario | target | ${Array.from({ length: ROUNDS }, (_, i) => `round ${i + 1}`).join(" | ")} | ratios to nginx |`);
  L.push(`| --- | --- | ${Array.from({ length: ROUNDS }, () => "---").join(" | ")} | --- |`);
  for (const s of ctx.scenarios) {
    const res = results.get(s.name);
    if (!res) continue;
    for (const n of names) {
      const runs = res.get(n) ?? [];
      const v = runs.map((r) => (!r ? "" : r.skipped ? "n/i" : r.failed ? "FAIL" : fmt(r.value, s.kind === "idle" ? 1 : 0) + ((r.otherCpuPct ?? 0) > NOISY ? " *" : "")));
      const ng = res.get("nginx") ?? [];
      const ratios = n === "nginx" ? "" : runs.map((r, i) => (r && ng[i] && !r.failed && !ng[i].failed && !r.skipped ? fmt(r.value / ng[i].value, 2) : "–")).join(" ");
      L.push(`| ${s.name} | ${n} | ${v.join(" | ")} | ${ratios} |`);
    }
  }
  if (startup) {
    for (const e of startup) L.push(`| startup (greeting ms) | ${e.t.name} | ${e.greeting.map((x) => fmt(x, 1)).join(" ")} | |`);
  }
  L.push("");
  L.push(`\\* other processes on the machine used more than ${NOISY}% of a core during that run. n/i: not implemented.`);
  L.push("");
  L.push("</details>");
  if (notes.length) {
    L.push("");
    notes.forEach((n, i) => L.push(`[^${i + 1}]: ${n}`));
  }
  return L.join("\n") + "\n";
}

// ------------------------------------------------------------------ main

async function main() {
  TMP = fs.mkdtempSync(path.join(os.tmpdir(), "postern-bench-"));
  const command = `node bench/run.mjs ${process.argv.slice(2).join(" ")}`.trim();
  log(`temp dir ${TMP}; ${selected.length} scenarios, targets nginx + ${TARGETS.join(", ")}, ${ROUNDS} rounds, ${PIN ? "pinned" : "not pinned"}, workers ${AUTO ? "auto" : 1}`);
  buildLoadgen();
  const unavailable = prepareTargets();
  describeDist();
  for (const [t, why] of unavailable) log(`target ${t} not available: ${why}`);

  // mock backend and auth responder
  const bports = { imap: await freePort(), pop3: await freePort(), smtp: await freePort() };
  BPORTS = bports;
  if (BUILTIN) BENCH_HASH = benchHash();
  BACKEND = start("backend", LG(), ["server", "--imap", String(bports.imap), "--pop3", String(bports.pop3), "--smtp", String(bports.smtp), "--threads", String(AUTO ? NPROC : 1)], {
    cpu: PIN ? CPU_HELPERS : undefined, logFile: path.join(TMP, "backend.log"),
  });
  for (const p of Object.values(bports)) if (!(await waitPort(p, BACKEND))) die(`mock backend did not start; see ${TMP}/backend.log`);
  AUTH_PORT = await freePort();
  const adir = path.join(TMP, "auth");
  fs.mkdirSync(adir);
  fs.writeFileSync(path.join(adir, "nginx.conf"), authNginxConf(adir, AUTH_PORT, bports));
  AUTH = start("auth-nginx", NGINX, ["-p", adir + "/", "-c", path.join(adir, "nginx.conf"), "-e", path.join(adir, "error.log")], {
    cpu: PIN ? CPU_HELPERS : undefined, logFile: path.join(adir, "stderr.log"),
  });
  if (!(await waitPort(AUTH_PORT, AUTH))) die(`auth nginx did not start: ${logTail(path.join(adir, "error.log"), 0).join("\n")}${logTail(path.join(adir, "stderr.log"), 0).join("\n")}`);
  const probe = await fetch(`http://127.0.0.1:${AUTH_PORT}/auth`, { headers: { "Auth-Protocol": "pop3" } });
  if (probe.headers.get("auth-status") !== "OK" || probe.headers.get("auth-port") !== String(bports.pop3)) die("auth nginx answers wrongly");

  // proxies
  const proxies = [];
  for (const name of ["nginx", ...TARGETS.filter((t) => !unavailable.has(t))]) {
    const ports = {};
    for (const p of name === "nginx" || !BUILTIN ? PROTOS : [...PROTOS, ...BUILTIN_PROTOS]) ports[p] = await freePort();
    const px = new Proxy(name, name === "nginx" ? "nginx" : "postern", ports);
    if (!(await px.start())) {
      if (name === "nginx") die(`nginx mail proxy did not start: ${px.failure}`);
      unavailable.set(name, px.failure);
      log(`target ${name} did not start: ${px.failure}`);
      continue;
    }
    log(`${name} listening (pid ${px.pid}, ${px.processes} process${px.processes > 1 ? "es" : ""})${px.notImplemented.size ? `; not implemented: ${[...px.notImplemented].join(", ")}` : ""}`);
    proxies.push(px);
  }

  // sanity: one login per protocol through each proxy
  const broken = new Map(); // `${name}/${proto}` → reason
  for (const px of proxies) {
    for (const p of px.protos) {
      const creds = p.endsWith("-builtin") ? CREDS : [];
      const lg = await loadgen(["login", "--proto", baseProto(p), "--port", String(px.ports[p]), "--conc", "1", "--duration", "0.2", ...creds]);
      if (!lg.sessions || lg.errors) {
        const why = `sanity login failed: ${lg.errors_sample.join("; ")}`;
        broken.set(`${px.name}/${p}`, why);
        log(`${px.name} ${p}: ${why}`);
      }
    }
  }

  const results = new Map(); // scenario → Map(proxy → [round results])
  let startup;
  const noise = [];
  for (const s of selected) {
    if (s.kind === "startup") {
      log(`start-up: ${STARTUP_RUNS} runs per target`);
      startup = await runStartup(proxies.filter((p) => p.protos.includes("imap")));
      for (const e of startup) log(`  ${e.t.name}: connect ${fmt(median(e.connect))} ms, greeting ${fmt(median(e.greeting))} ms${e.error ? ` (${e.error})` : ""}`);
      continue;
    }
    const res = new Map(proxies.map((p) => [p.name, []]));
    results.set(s.name, res);
    const runnable = (px) => {
      if (px.notImplemented.has(listenerOf(px, s))) return `not implemented`;
      if (broken.has(`${px.name}/${listenerOf(px, s)}`)) return undefined; // measured, fails visibly
      return null;
    };
    // warm-up (not counted), the same for nginx and Postern: JIT, buffers, connection pools
    for (const px of proxies) {
      if (runnable(px) || !px.alive || s.kind === "idle") continue;
      if (s.kind === "login") await runLogin(px, s, WARMUP);
      if (s.kind === "relay") await runRelay(px, s, 64 * MiB);
    }
    for (let r = 0; r < ROUNDS; r++) {
      for (const px of proxies) {
        const skip = runnable(px);
        if (skip) {
          res.get(px.name).push({ skipped: skip });
          continue;
        }
        if (!px.alive && !(await px.restart())) {
          res.get(px.name).push({ failed: `could not restart: ${px.failure}` });
          continue;
        }
        await waitQuiet(proxies);
        const out = s.kind === "login" ? await runLogin(px, s) : s.kind === "relay" ? await runRelay(px, s) : await runIdle(px, s);
        res.get(px.name).push(out);
        noise.push(out.otherCpuPct ?? 0);
        const v = s.kind === "login" ? `${fmt(out.value)} sessions/s, p50 ${fmt(out.p50)} ms, p99 ${fmt(out.p99)} ms, proxy CPU ${fmt(out.proxyCpuPct, 0)}%`
          : s.kind === "relay" ? `${fmt(out.value)} MB/s, ${fmt(out.proxyCpu / (out.bytes / 1e9), 2)} CPU s/GB`
          : `${fmt(out.value, 1)} KiB/session (RSS ${fmt(out.rss0 / 1024, 0)} → ${fmt(out.rss2 / 1024, 0)} MiB, fds ${out.fds0} → ${out.fds1})`;
        log(`${s.name} r${r + 1} ${px.name}: ${out.failed ? `FAILED: ${out.failed}` : v}; loadgen CPU ${fmt(out.lgCpuPct, 0)}%, backend ${fmt(out.backendCpuPct, 0)}% + auth ${fmt(out.authCpuPct, 0)}%, other ${fmt(out.otherCpuPct, 0)}%`);
        if (out.failed && out.log?.length) for (const l of out.log) log(`    | ${l}`);
      }
    }
  }

  for (const px of proxies) await stop(px.rec);
  await stop(AUTH);
  await stop(BACKEND);
  const wallS = (Date.now() - T0) / 1000;
  const report = buildReport({
    results, startup, proxies, unavailable, info: versions(), wallS, command, scenarios: selected,
    noisy: Math.max(0, ...noise), noiseMedian: median(noise),
  });
  fs.mkdirSync(path.dirname(opt.out), { recursive: true });
  fs.writeFileSync(opt.out, report);
  const json = { command, wallS, results: Object.fromEntries([...results].map(([k, v]) => [k, Object.fromEntries(v)])), startup: startup?.map((e) => ({ target: e.t.name, connect_ms: e.connect, greeting_ms: e.greeting, error: e.error })) };
  fs.writeFileSync(opt.out.replace(/\.md$/, "") + ".json", JSON.stringify(json, null, 1));
  process.stdout.write(report);
  log(`done in ${fmt(wallS / 60, 1)} min; wrote ${path.relative(process.cwd(), opt.out)}`);
}

await main();
