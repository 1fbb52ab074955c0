// Builds the executables: `bun build.ts [bun|node|deno|all]` (default all).
//   dist/postern       one self-contained executable (bun build --compile)
//   dist/postern.mjs   one ESM bundle for `node dist/postern.mjs`
//   dist/postern-deno  deno compile, when a denort runtime is available (see below)

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { buildNodeBundle } from "./scripts/node-bundle.mjs";

const root = resolve(import.meta.dirname ?? ".");
const dist = join(root, "dist");
const bin = (name: string) => join(root, "node_modules", ".bin", name);
const DENO_VERSION = "2.9.6";

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { cwd: root, stdio: "inherit" });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed with ${r.status ?? r.signal}`);
}

function buildBun(): void {
  run(bin("bun"), ["build", "--compile", "--minify-syntax", "platform/main.bun.ts", "--outfile", join(dist, "postern")]);
}

/**
 * deno compile needs a `denort` binary for the target, which it downloads from a host this
 * machine cannot reach and which no npm or Debian package ships. It uses
 * $DENORT_BIN, or $DENO_DIR/dl/release/vVERSION/denort-x86_64-unknown-linux-gnu.zip, if present.
 */
function denortAvailable(): string | undefined {
  if (process.env.DENORT_BIN && existsSync(process.env.DENORT_BIN)) return process.env.DENORT_BIN;
  const denoDir = process.env.DENO_DIR ?? join(homedir(), ".cache", "deno");
  const zip = join(denoDir, "dl", "release", `v${DENO_VERSION}`, "denort-x86_64-unknown-linux-gnu.zip");
  return existsSync(zip) ? zip : undefined;
}

function buildDeno(): void {
  const found = denortAvailable();
  if (!found) {
    console.error(
      `deno compile skipped: it needs denort ${DENO_VERSION}, which cannot be downloaded here.\n` +
        `  Provide it with DENORT_BIN=/path/to/denort, or put denort-x86_64-unknown-linux-gnu.zip in\n` +
        `  \${DENO_DIR:-~/.cache/deno}/dl/release/v${DENO_VERSION}/, then run: bun build.ts deno`,
    );
    return;
  }
  run(bin("deno"), ["compile", "-A", "--no-check", "--exclude", "node_modules", "--output", join(dist, "postern-deno"), "platform/main.deno.ts"]);
}

const what = process.argv[2] ?? "all";
mkdirSync(dist, { recursive: true });
if (what === "bun" || what === "all") buildBun();
if (what === "node" || what === "all") await buildNodeBundle();
if (what === "deno" || what === "all") buildDeno();
