// The command line, shared by the three entries: parse arguments, load the config, run, and wire
// signals. Uses node:util / node:fs / node:path / node:os, which Deno, Bun and Node all provide.
// Docs: https://nodejs.org/api/util.html#utilparseargsconfig

import { existsSync, readFileSync } from "node:fs";
import { cpus, hostname } from "node:os";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import { randomBytes } from "node:crypto";
import { formatConfigError, loadConfig } from "../src/config/load.ts";
import type { Config, ConfigResult } from "../src/config/types.ts";
import { hashPassword } from "../src/auth/password.ts";
import type { Platform } from "../src/platform.ts";
import { protocolsImplemented, startPostern } from "../src/server.ts";
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
    process.exit(1);
  }
  for (const w of result.config.warnings) console.error(`postern: [warn] ${w}`);
  const missing = result.config.servers.filter((s) => !protocolsImplemented().includes(s.protocol));
  if (missing.length) {
    for (const s of missing) console.error(`postern: [emerg] protocol "${s.protocol}" (listen ${s.listen.map((l) => l.source).join(", ")}) is not implemented yet`);
    console.error(`postern: configuration file ${file} test failed`);
    process.exit(1);
  }
  if (values.test) {
    console.error(`postern: the configuration file ${file} syntax is ok`);
    console.error(`postern: configuration file ${file} test is successful`);
    return;
  }
  await run(platform, file, result.config);
}

async function run(platform: Platform, file: string, config: Config): Promise<void> {
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
  try {
    running = await startPostern(config, platform);
  } catch (e) {
    console.error(`postern: [emerg] ${(e as Error).message}`);
    platform.exit(1);
  }
}
