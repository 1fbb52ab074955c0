// A real Dovecot for tests: one temp dir, 127.0.0.1 and free unprivileged ports only.
// Facts behind every line of the config: shared/REAL-SERVERS.md ("Dovecot").
// Uses node:child_process, node:fs and node:net only, so it runs on Node, Deno and Bun.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { freePorts, waitForPort } from "./ports.ts";

export interface DovecotUser {
  readonly user: string;
  readonly password: string;
}

export interface DovecotOptions {
  readonly users: readonly DovecotUser[];
  /** Plain IMAP listener (STARTTLS offered when `ssl` is set). Default: a free port. */
  readonly imapPort?: number;
  readonly pop3Port?: number;
  /** LMTP over TCP, used by `deliver()` and by Postfix. Default: a free port. */
  readonly lmtpPort?: number;
  /** An extra IMAP listener that requires a PROXY v1/v2 header. `true` = a free port. */
  readonly haproxyImapPort?: number | boolean;
  readonly haproxyPop3Port?: number | boolean;
  /** With `ssl`: an implicit-TLS IMAP listener that requires a PROXY header before the TLS
   *  handshake (`ssl = yes` and `haproxy = yes`). `true` = a free port. */
  readonly haproxyImapsPort?: number | boolean;
  /** `haproxy_trusted_networks`; default "127.0.0.0/8". */
  readonly haproxyTrustedNetworks?: string;
  /** `login_trusted_networks` (who may forward the client's address); default "127.0.0.0/8", "" for none. */
  readonly trustedNetworks?: string;
  /** Turns TLS on: STARTTLS on the plain listeners, plus implicit-TLS imaps/pop3s listeners. */
  readonly ssl?: { readonly certFile: string; readonly keyFile: string };
  /** With `ssl`: the implicit-TLS ports. Default: free ports. */
  readonly imapsPort?: number;
  readonly pop3sPort?: number;
  /** `auth_mechanisms`; default ["plain", "login"]. */
  readonly authMechanisms?: readonly string[];
  /** Adds an auth unix socket Postfix can use for SASL (`smtpd_sasl_type = dovecot`). */
  readonly postfixAuthSocket?: boolean;
  /** Raw Dovecot config appended at the end of the generated file. */
  readonly extraConfig?: string;
  /** How long to wait for every listener to accept. */
  readonly startTimeoutMs?: number;
}

/** One `Login:` line of a -login process, parsed. */
export interface DovecotLogin {
  readonly service: string; // "imap-login" | "pop3-login"
  readonly user: string;
  readonly method: string;
  readonly rip: string; // the client Dovecot believes
  readonly rport: string;
  readonly realRip: string; // the TCP peer (a proxy, if one forwarded the client)
  readonly realRport: string;
  readonly lport: string;
  readonly line: string;
}

export interface Dovecot {
  readonly imapPort: number;
  readonly pop3Port: number;
  readonly lmtpPort: number;
  readonly haproxyImapPort?: number;
  readonly haproxyPop3Port?: number;
  readonly haproxyImapsPort?: number;
  readonly imapsPort?: number;
  readonly pop3sPort?: number;
  readonly dir: string;
  readonly configFile: string;
  readonly logFile: string;
  /** Path of the Postfix SASL socket, when `postfixAuthSocket` was set. */
  readonly authSocket?: string;
  readonly pid: number;
  /** The whole log so far (kept after `stop()` removed the dir). */
  readLog(): string;
  /** Poll the log until `re` matches; returns the first matching line. */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Every successful login logged so far. */
  logins(): DovecotLogin[];
  /**
   * Polls the log for a login after the first `since` that `match` accepts (Dovecot's log process
   * writes a login line a moment after the client has its answer); the log's tail is in the error
   * on timeout.
   */
  waitForLogin(since: number, match: (l: DovecotLogin) => boolean, timeoutMs?: number): Promise<DovecotLogin>;
  /** Deliver a message over LMTP (the real path mail takes). */
  deliver(user: string, message: string, from?: string): Promise<void>;
  /** Drop a message straight into the user's Maildir/new; returns the file path. */
  putMessage(user: string, message: string): string;
  /** Kill Dovecot and all its children and wait until they are gone; removes the dir. */
  stop(opts?: { graceful?: boolean; keepDir?: boolean }): Promise<void>;
}

const MAX_DIR_CHARS = 40; // unix socket paths under base_dir must stay below 107 bytes
const MAIL_USER = "nobody"; // static userdb owner of every mailbox
const MAIL_GROUP = "nogroup";
const LOG_ELEMENTS =
  "user=<%u> method=%m rip=%r rport=%{rport} real_rip=%{real_rip} real_rport=%{real_rport} " +
  "lip=%l lport=%{lport} mpid=%e %c session=<%{session}>";

const live = new Set<ChildProcess>();
const dirsToRemove = new Set<string>(); // temp dirs of instances a failed test never stopped
let exitHookInstalled = false;

/** Kill whatever is still running when the test process exits (a failed test must not leak servers). */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const child of live) killGroup(child, "SIGKILL");
    if (process.env.POSTERN_KEEP_TMP) return;
    for (const d of dirsToRemove) fs.rmSync(d, { recursive: true, force: true });
  });
}

function killGroup(child: ChildProcess, sig: "SIGKILL" | "SIGTERM"): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    try {
      child.kill(sig);
    } catch {
      // already gone
    }
  }
}

/** True while any process of group `pgid` is alive and not a zombie (Linux /proc). */
export function processGroupAlive(pgid: number): boolean {
  let entries: string[];
  try {
    entries = fs.readdirSync("/proc");
  } catch {
    return false;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${e}/stat`, "utf8");
    } catch {
      continue;
    }
    // "PID (COMM) STATE PPID PGRP ...": COMM may hold spaces and parens, so split after the last ")".
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(rest[2]) === pgid && rest[0] !== "Z" && rest[0] !== "X") return true;
  }
  return false;
}

/** Full path of an executable on PATH (or the usual sbin dirs), or a clear error. */
export function requireTool(name: string, hint: string): string {
  const dirs = (process.env.PATH ?? "").split(":").concat(["/usr/sbin", "/usr/local/sbin", "/sbin"]);
  for (const d of dirs) {
    if (!d) continue;
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  throw new Error(`Cannot find "${name}" on PATH: ${hint}`);
}

function lookupId(file: string, name: string): number {
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    const f = line.split(":");
    if (f[0] === name) return Number(f[2]);
  }
  throw new Error(`Cannot find "${name}" in ${file}: the Dovecot packages create it (bash .ci/run installs them)`);
}

/** A short temp dir (mode 0755) that dovenull, dovecot and nobody can traverse. */
export function makeShortTempDir(prefix: string): string {
  const tmp = os.tmpdir();
  const base = tmp.length + prefix.length + 8 <= MAX_DIR_CHARS ? tmp : "/tmp";
  const dir = fs.mkdtempSync(path.join(base, prefix));
  fs.chmodSync(dir, 0o755);
  return dir;
}

function buildConfig(o: {
  dir: string;
  opts: DovecotOptions;
  imapPort: number;
  pop3Port: number;
  lmtpPort: number;
  haproxyImapPort?: number;
  haproxyPop3Port?: number;
  haproxyImapsPort?: number;
  imapsPort?: number;
  pop3sPort?: number;
  usersFile: string;
  logFile: string;
}): string {
  const { dir, opts } = o;
  const trusted = opts.trustedNetworks ?? "127.0.0.0/8";
  const haproxyTrusted = opts.haproxyTrustedNetworks ?? "127.0.0.0/8";
  const mechs = (opts.authMechanisms ?? ["plain", "login"]).join(" ");
  const ssl = opts.ssl
    ? `ssl = yes\nssl_cert = <${opts.ssl.certFile}\nssl_key = <${opts.ssl.keyFile}\n`
    : "ssl = no\n";
  const listener = (name: string, port: number | undefined, extra = "") =>
    `  inet_listener ${name} {\n    address = 127.0.0.1\n    port = ${port ?? 0}\n${extra}  }\n`;
  const sslYes = "    ssl = yes\n";
  const haproxyYes = "    haproxy = yes\n";
  const postfixAuth = opts.postfixAuthSocket
    ? "service auth {\n  unix_listener auth-postfix {\n    mode = 0660\n    user = postfix\n    group = postfix\n  }\n}\n"
    : "";
  return `# Generated by test/support/dovecot.ts: the whole config, nothing included.
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${o.logFile}
info_log_path = ${o.logFile}
protocols = imap pop3 lmtp
listen = 127.0.0.1
${ssl}disable_plaintext_auth = no
auth_mechanisms = ${mechs}
auth_failure_delay = 0 secs
login_trusted_networks = ${trusted}
haproxy_trusted_networks = ${haproxyTrusted}
login_log_format_elements = ${LOG_ELEMENTS}
mail_location = maildir:~/Maildir
postmaster_address = postmaster@example.com
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${o.usersFile}
}
userdb {
  driver = static
  args = uid=${MAIL_USER} gid=${MAIL_GROUP} home=${dir}/home/%u
}
service imap-login {
${listener("imap", o.imapPort)}${listener("imaps", o.imapsPort, o.imapsPort ? sslYes : "")}${
    o.haproxyImapPort ? listener("imap_haproxy", o.haproxyImapPort, haproxyYes) : ""
  }${o.haproxyImapsPort ? listener("imaps_haproxy", o.haproxyImapsPort, sslYes + haproxyYes) : ""}}
service pop3-login {
${listener("pop3", o.pop3Port)}${listener("pop3s", o.pop3sPort, o.pop3sPort ? sslYes : "")}${
    o.haproxyPop3Port ? listener("pop3_haproxy", o.haproxyPop3Port, haproxyYes) : ""
  }}
service lmtp {
${listener("lmtp", o.lmtpPort)}}
# One failed login must not slow every later login from 127.0.0.1 (the penalty ignores trust).
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
${postfixAuth}${opts.extraConfig ?? ""}
`;
}

function parseLogins(log: string): DovecotLogin[] {
  const out: DovecotLogin[] = [];
  for (const line of log.split("\n")) {
    const m = /(\S+-login): Info: Login: (.*)$/.exec(line);
    if (!m) continue;
    const f: Record<string, string> = {};
    for (const part of m[2].split(", ")) {
      const kv = /^([a-z_]+)=<?(.*?)>?$/.exec(part);
      if (kv) f[kv[1]] = kv[2];
    }
    out.push({
      service: m[1],
      user: f.user ?? "",
      method: f.method ?? "",
      rip: f.rip ?? "",
      rport: f.rport ?? "",
      realRip: f.real_rip ?? "",
      realRport: f.real_rport ?? "",
      lport: f.lport ?? "",
      line,
    });
  }
  return out;
}

/** Start Dovecot and resolve once every listener accepts. */
export async function startDovecot(opts: DovecotOptions): Promise<Dovecot> {
  const dovecotBin = requireTool(
    "dovecot",
    "install dovecot-imapd dovecot-pop3d dovecot-lmtpd (bash .ci/run does)",
  );
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    throw new Error("Cannot start Dovecot for tests: it must run as root (it drops to dovenull/nobody itself)");
  }
  const uid = lookupId("/etc/passwd", MAIL_USER);
  const gid = lookupId("/etc/group", MAIL_GROUP);
  lookupId("/etc/passwd", "dovenull");
  lookupId("/etc/passwd", "dovecot");
  for (const u of opts.users) {
    if (/[:\n]/.test(u.user + u.password)) throw new Error(`Cannot write Dovecot user "${u.user}": no ":" or newline`);
  }

  const spare = await freePorts(8); // more than any config uses; distinct from each other
  const take = (given: number | undefined): number => given ?? spare.shift()!;
  const imapPort = take(opts.imapPort);
  const pop3Port = take(opts.pop3Port);
  const lmtpPort = take(opts.lmtpPort);
  const haproxyImapPort = opts.haproxyImapPort === true ? take(undefined) : opts.haproxyImapPort || undefined;
  const haproxyPop3Port = opts.haproxyPop3Port === true ? take(undefined) : opts.haproxyPop3Port || undefined;
  if (opts.haproxyImapsPort && !opts.ssl) throw new Error("Cannot start Dovecot with haproxyImapsPort: it needs `ssl`");
  const haproxyImapsPort = opts.haproxyImapsPort === true ? take(undefined) : opts.haproxyImapsPort || undefined;
  const imapsPort = opts.ssl ? take(opts.imapsPort) : undefined;
  const pop3sPort = opts.ssl ? take(opts.pop3sPort) : undefined;

  const dir = makeShortTempDir("dv-");
  installExitHook();
  dirsToRemove.add(dir);
  for (const sub of ["run", "state"]) fs.mkdirSync(path.join(dir, sub), { mode: 0o755 });
  const home = path.join(dir, "home");
  fs.mkdirSync(home, { mode: 0o755 });
  fs.chownSync(home, uid, gid);
  const usersFile = path.join(dir, "users");
  fs.writeFileSync(usersFile, opts.users.map((u) => `${u.user}:{PLAIN}${u.password}::::::\n`).join(""), {
    mode: 0o644,
  });
  const logFile = path.join(dir, "dovecot.log");
  const configFile = path.join(dir, "dovecot.conf");
  fs.writeFileSync(
    configFile,
    buildConfig({
      dir, opts, imapPort, pop3Port, lmtpPort, haproxyImapPort, haproxyPop3Port, haproxyImapsPort, imapsPort, pop3sPort,
      usersFile, logFile,
    }),
  );

  // -F: stay in the foreground, so the child is the master. detached: its own process group,
  // so stop() can kill the master and every child it forked at once.
  const child = spawn(dovecotBin, ["-F", "-c", configFile], {
    cwd: dir,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  live.add(child);
  let output = "";
  child.stdout?.on("data", (d) => (output += String(d)));
  child.stderr?.on("data", (d) => (output += String(d)));
  let exited: { code: number | null; signal: string | null } | null = null;
  const exitPromise = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      exited = { code, signal };
      live.delete(child);
      resolve();
    });
  });
  const spawnError = new Promise<Error>((resolve) => child.once("error", resolve));
  let lastLog = "";
  const readLog = (): string => {
    try {
      lastLog = fs.readFileSync(logFile, "utf8");
    } catch {
      // not created yet, or removed by stop(): keep the last copy
    }
    return lastLog;
  };
  const pgid = child.pid;
  if (pgid === undefined) throw new Error(`Cannot start "${dovecotBin}": ${await spawnError}`);

  let stopped = false;
  const stop = async (s: { graceful?: boolean; keepDir?: boolean } = {}): Promise<void> => {
    if (stopped) return;
    stopped = true;
    readLog();
    if (exited === null) {
      if (s.graceful) {
        process.kill(pgid, "SIGTERM");
        const t = setTimeout(() => killGroup(child, "SIGKILL"), 10_000);
        await exitPromise;
        clearTimeout(t);
      } else {
        killGroup(child, "SIGKILL");
        await exitPromise;
      }
    }
    killGroup(child, "SIGKILL"); // children that outlived a graceful master
    const deadline = Date.now() + 10_000;
    while (processGroupAlive(pgid)) {
      if (Date.now() > deadline) throw new Error(`Dovecot process group ${pgid} still alive 10 s after SIGKILL`);
      await new Promise((r) => setTimeout(r, 10));
    }
    readLog();
    if (!s.keepDir && !process.env.POSTERN_KEEP_TMP) {
      fs.rmSync(dir, { recursive: true, force: true });
      dirsToRemove.delete(dir);
    }
  };

  const describe = () =>
    `Dovecot (config ${configFile}) ${exited ? `exited (code ${exited.code}, signal ${exited.signal})` : "is running"}` +
    `\n--- output ---\n${output}\n--- log ---\n${readLog()}`;

  try {
    const ports = [imapPort, pop3Port, lmtpPort, haproxyImapPort, haproxyPop3Port, haproxyImapsPort, imapsPort, pop3sPort];
    for (const port of ports) {
      if (port === undefined) continue;
      await waitForPort(port, "127.0.0.1", opts.startTimeoutMs ?? 15_000, {
        check: () => {
          if (exited) throw new Error(`Dovecot exited before listening on ${port}`);
        },
      });
    }
  } catch (e) {
    const msg = `Cannot start Dovecot: ${(e as Error).message}\n${describe()}`;
    await stop().catch(() => {});
    throw new Error(msg);
  }

  const waitForLog = async (re: RegExp, timeoutMs = 10_000): Promise<string> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = readLog().split("\n").find((l) => re.test(l));
      if (line !== undefined) return line;
      if (Date.now() >= deadline) {
        throw new Error(`Timed out after ${timeoutMs} ms waiting for ${re} in the Dovecot log:\n${readLog()}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  };

  const waitForLogin = async (since: number, match: (l: DovecotLogin) => boolean, timeoutMs = 10_000): Promise<DovecotLogin> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const login = parseLogins(readLog()).slice(since).find(match);
      if (login !== undefined) return login;
      if (Date.now() >= deadline) {
        throw new Error(`Timed out after ${timeoutMs} ms waiting for a login line in the Dovecot log:\n${readLog().slice(-3000)}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  };

  const putMessage = (user: string, message: string): string => {
    const maildir = path.join(dir, "home", user, "Maildir");
    const created: string[] = [];
    for (const d of [path.join(dir, "home", user), maildir, ...["cur", "new", "tmp"].map((s) => path.join(maildir, s))]) {
      if (!fs.existsSync(d)) {
        fs.mkdirSync(d, { mode: 0o700 });
        created.push(d);
      }
    }
    for (const d of created) fs.chownSync(d, uid, gid);
    const name = `${Math.floor(Date.now() / 1000)}.P${process.pid}Q${++messageSeq}.postern-test`;
    const tmpFile = path.join(maildir, "tmp", name);
    fs.writeFileSync(tmpFile, message.replace(/\r?\n/g, "\n"), { mode: 0o600 });
    fs.chownSync(tmpFile, uid, gid);
    const finalFile = path.join(maildir, "new", name);
    fs.renameSync(tmpFile, finalFile);
    return finalFile;
  };

  return {
    imapPort,
    pop3Port,
    lmtpPort,
    haproxyImapPort,
    haproxyPop3Port,
    haproxyImapsPort,
    imapsPort,
    pop3sPort,
    dir,
    configFile,
    logFile,
    authSocket: opts.postfixAuthSocket ? path.join(dir, "run", "auth-postfix") : undefined,
    pid: pgid,
    readLog,
    waitForLog,
    logins: () => parseLogins(readLog()),
    waitForLogin,
    deliver: (user, message, from = "sender@example.com") => lmtpDeliver(lmtpPort, user, message, from),
    putMessage,
    stop,
  };
}

let messageSeq = 0;

/** Send one message over LMTP to 127.0.0.1:port; throws with the server's reply on any refusal. */
export async function lmtpDeliver(port: number, user: string, message: string, from: string): Promise<void> {
  const body = message.replace(/\r?\n/g, "\r\n").replace(/^\./gm, "..");
  const data = body.endsWith("\r\n") ? body : body + "\r\n";
  const steps: { send?: string; expect: RegExp }[] = [
    { expect: /^220 / },
    { send: "LHLO postern-test\r\n", expect: /^250 / },
    { send: `MAIL FROM:<${from}>\r\n`, expect: /^250 / },
    { send: `RCPT TO:<${user}>\r\n`, expect: /^250 / },
    { send: "DATA\r\n", expect: /^354 / },
    { send: `${data}.\r\n`, expect: /^250 / },
    { send: "QUIT\r\n", expect: /^221 / },
  ];
  const sock = net.connect({ host: "127.0.0.1", port });
  sock.setEncoding("utf8");
  let buf = "";
  let waiter: (() => void) | null = null;
  let failure: Error | null = null;
  sock.on("data", (d: string) => {
    buf += d;
    waiter?.();
  });
  sock.on("error", (e) => {
    failure = e;
    waiter?.();
  });
  sock.on("close", () => {
    failure ??= new Error("LMTP server closed the connection");
    waiter?.();
  });
  // One complete reply: lines "NNN-..." continue, "NNN ..." ends it.
  const readReply = async (deadline: number): Promise<string> => {
    for (;;) {
      const m = /^(?:\d{3}-[^\n]*\n)*\d{3} [^\n]*\n/.exec(buf);
      if (m) {
        buf = buf.slice(m[0].length);
        return m[0];
      }
      if (failure) throw failure;
      if (Date.now() > deadline) throw new Error(`LMTP reply timed out, got so far: ${JSON.stringify(buf)}`);
      await new Promise<void>((r) => {
        waiter = r;
        setTimeout(r, 100);
      });
      waiter = null;
    }
  };
  try {
    const deadline = Date.now() + 10_000;
    for (const step of steps) {
      if (step.send) sock.write(step.send);
      const reply = await readReply(deadline);
      const last = reply.trimEnd().split("\n").pop()!;
      if (!step.expect.test(last)) {
        throw new Error(`LMTP delivery to "${user}" refused after ${JSON.stringify(step.send ?? "connect")}: ${reply.trim()}`);
      }
    }
  } finally {
    sock.destroy();
  }
}
