#!/usr/bin/env node
// The test command (`npm test`). Plain JavaScript for Node 20: finds the test files, runs them on
// Node, Deno and Bun, builds the artifacts for the end-to-end files, and prints one summary.
//
//   *.test.ts          every runtime (node: bundled by esbuild, then `node --test`)
//   *.node.test.ts     Node only          *.deno.test.ts   Deno only     *.bun.test.ts   Bun only
//   *.e2e.ts           once under Node, one file at a time; they start Postern under each target
//
// The last line is always `N passed, N failed` (plus `, N skipped` when some were).
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const TEST_DIR = path.join(ROOT, "test");
// One dir per run: other runs may be going on in the same tree at the same time.
const BUILD_DIR = path.join(ROOT, ".build", `test-run-${process.pid}`);
const BIN = path.join(ROOT, "node_modules", ".bin");
const RUNTIMES = ["node", "deno", "bun"];
const KINDS = ["typecheck", "unit", "platform", "e2e"];
const DEFAULT_TARGETS = "node,deno,bun,binary";
const UNIT_STEP_TIMEOUT_MS = 20 * 60_000; // a hung runner must not eat CI's 90 minutes
const E2E_FILE_TIMEOUT_MS = 30 * 60_000;
const BUN_TEST_TIMEOUT_MS = 120_000; // bun test's own per-test default is 5 s; node:test and deno have none
const HELP = `Usage: node test/run.mjs [options] [filter...]

Runs Postern's tests on Node, Deno and Bun and prints "N passed, N failed" last.

Files (under test/):
  *.test.ts          on every runtime          (kind "unit"; under test/platform/: "platform")
  *.node.test.ts     on Node only              (kind "platform")
  *.deno.test.ts     on Deno only              (kind "platform")
  *.bun.test.ts      on Bun only               (kind "platform")
  *.e2e.ts           once under Node           (kind "e2e"); builds dist/ first (bun build.ts)
                     when a file uses test/support/postern.ts

Options:
  --only KIND        typecheck | unit | platform | e2e (repeatable; default: all)
  --runtime NAME     node | deno | bun (repeatable; default: all three). e2e files always
                     run under Node; which Postern targets they start is POSTERN_TARGETS
                     (default ${DEFAULT_TARGETS}).
  --no-build         e2e: use the existing dist/ instead of running bun build.ts
  --list             print the steps and files that would run, run nothing
  -h, --help         this text

Filters: a test file runs when its path (relative to the repo) contains any filter,
e.g. "node test/run.mjs --only e2e test/e2e/dovecot-harness".
The typecheck step (deno check src/ with no runtime types, then platform/deno.ts) runs
with Deno unless filters are given or --only excludes it.
Env: POSTERN_TARGETS (e2e targets), POSTERN_KEEP_TMP=1 (keep test temp dirs).`;

// ---------------------------------------------------------------------------------------------
// Arguments

function parseCli(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        only: { type: "string", multiple: true },
        runtime: { type: "string", multiple: true },
        "no-build": { type: "boolean" },
        list: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    fail(`${e.message}\n\n${HELP}`);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const split = (list) => (list ?? []).flatMap((v) => v.split(",")).map((v) => v.trim()).filter(Boolean);
  const only = split(values.only);
  const runtimes = split(values.runtime);
  for (const k of only) if (!KINDS.includes(k)) fail(`Unknown --only value "${k}": use ${KINDS.join(", ")}`);
  for (const r of runtimes) if (!RUNTIMES.includes(r)) fail(`Unknown --runtime value "${r}": use ${RUNTIMES.join(", ")}`);
  return {
    kinds: only.length ? only : KINDS,
    runtimes: runtimes.length ? runtimes : RUNTIMES,
    filters: positionals,
    build: !values["no-build"],
    list: Boolean(values.list),
  };
}

function fail(message) {
  console.error(`test/run.mjs: ${message}`);
  console.log("0 passed, 1 failed");
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Discovery

function walk(dir) {
  const out = [];
  let entries;
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    if (e.name === "node_modules" || e.name.startsWith(".")) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else if (e.isFile()) out.push(p);
  }
  return out.sort();
}

/** Every test file, classified: { file (relative), kind, runtimes }. */
function discover() {
  const files = [];
  for (const abs of walk(TEST_DIR)) {
    const rel = path.relative(ROOT, abs).split(path.sep).join("/");
    const base = path.basename(rel);
    if (rel.startsWith("test/support/")) continue;
    if (base.endsWith(".e2e.ts")) {
      files.push({ file: rel, kind: "e2e", runtimes: ["node"] });
      continue;
    }
    const m = /\.(?:(node|deno|bun)\.)?test\.ts$/.exec(base);
    if (!m) continue;
    const only = m[1];
    const kind = only || rel.startsWith("test/platform/") ? "platform" : "unit";
    files.push({ file: rel, kind, runtimes: only ? [only] : RUNTIMES });
  }
  return files;
}

// ---------------------------------------------------------------------------------------------
// Running a child and counting its tests

const children = new Set();

function removeBuildDir() {
  fs.rmSync(BUILD_DIR, { recursive: true, force: true });
}

/** Remove the build dirs of earlier runs that were killed before they could clean up. */
function removeStaleBuildDirs() {
  let names = [];
  try {
    names = fs.readdirSync(path.dirname(BUILD_DIR));
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^test-run-(\d+)$/.exec(name);
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch (e) {
      if (e.code === "ESRCH") fs.rmSync(path.join(path.dirname(BUILD_DIR), name), { recursive: true, force: true });
    }
  }
}

function onInterrupt(sig) {
  for (const c of children) killTree(c, "SIGKILL");
  removeBuildDir();
  console.error(`\ntest/run.mjs: interrupted by ${sig}`);
  process.exit(130);
}
process.on("SIGINT", () => onInterrupt("SIGINT"));
process.on("SIGTERM", () => onInterrupt("SIGTERM"));

function killTree(child, sig) {
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

function childEnv(extra = {}) {
  const env = { ...process.env, ...extra };
  env.PATH = `${BIN}${path.delimiter}${env.PATH ?? ""}`;
  delete env.NODE_TEST_CONTEXT; // a nested `node --test` must report for itself
  return env;
}

/** Run a command, streaming its output, and resolve with { code, output, ms, timedOut }. */
function runStreaming(cmd, args, { env, timeoutMs }) {
  return new Promise((resolve) => {
    const started = Date.now();
    let output = "";
    let timedOut = false;
    const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    children.add(child);
    const onData = (stream) => (chunk) => {
      output += chunk.toString("utf8");
      stream.write(chunk);
    };
    child.stdout.on("data", onData(process.stdout));
    child.stderr.on("data", onData(process.stderr));
    const timer = setTimeout(() => {
      timedOut = true;
      output += `\ntest/run.mjs: killed after ${timeoutMs / 60_000} minutes\n`;
      console.error(`test/run.mjs: "${cmd} ${args.join(" ")}" took longer than ${timeoutMs / 60_000} minutes: killed`);
      killTree(child, "SIGKILL");
    }, timeoutMs);
    child.on("error", (e) => {
      output += `\n${e.message}\n`;
      console.error(`test/run.mjs: cannot run "${cmd}": ${e.message}`);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      killTree(child, "SIGKILL"); // whatever the runner left behind in its group
      resolve({ code: code ?? (signal ? 128 : 1), output, ms: Date.now() - started, timedOut });
    });
  });
}

const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

function lastNumber(text, re) {
  let last = null;
  for (const m of text.matchAll(re)) last = Number(m[1]);
  return last;
}

/** { passed, failed, skipped } from a runner's closing lines, or null when there are none. */
function countTests(runtime, rawOutput) {
  const out = rawOutput.replace(ANSI, "");
  if (runtime === "node") {
    const pass = lastNumber(out, /^[ℹ#] pass (\d+)$/gm);
    const failN = lastNumber(out, /^[ℹ#] fail (\d+)$/gm);
    if (pass === null || failN === null) return null;
    const cancelled = lastNumber(out, /^[ℹ#] cancelled (\d+)$/gm) ?? 0;
    const skipped = (lastNumber(out, /^[ℹ#] skipped (\d+)$/gm) ?? 0) + (lastNumber(out, /^[ℹ#] todo (\d+)$/gm) ?? 0);
    return { passed: pass, failed: failN + cancelled, skipped };
  }
  if (runtime === "deno") {
    let m = null;
    for (const x of out.matchAll(/^(?:ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed(?: \(\d+ steps?\))?(?: \| (\d+) ignored)?/gm)) m = x;
    if (!m) return null;
    return { passed: Number(m[1]), failed: Number(m[2]), skipped: Number(m[3] ?? 0) };
  }
  // bun: " 5 pass", " 1 skip", " 1 todo", " 0 fail", "Ran 7 tests across 2 files."
  const pass = lastNumber(out, /^\s*(\d+) pass$/gm);
  const failN = lastNumber(out, /^\s*(\d+) fail$/gm);
  if (pass === null || failN === null) return null;
  const skipped = (lastNumber(out, /^\s*(\d+) skip$/gm) ?? 0) + (lastNumber(out, /^\s*(\d+) todo$/gm) ?? 0);
  return { passed: pass, failed: failN, skipped };
}

// ---------------------------------------------------------------------------------------------
// Steps. Each returns { name, passed, failed, skipped, ms, note }; a step that is not a test
// run (typecheck, bundle, build) counts as one failed test when it fails, so the closing line
// never reads "0 failed" for a red run.

function header(title) {
  const line = "═".repeat(Math.max(8, 78 - title.length));
  console.log(`\n══ ${title} ${line}`);
}

async function runTests(name, runtime, cmd, args, fileCount, env, timeoutMs) {
  header(name);
  const r = await runStreaming(cmd, args, { env, timeoutMs });
  const counts = countTests(runtime, r.output);
  const step = { name, passed: 0, failed: 0, skipped: 0, ms: r.ms, note: "" };
  if (counts) Object.assign(step, counts);
  if (r.timedOut) {
    step.failed += 1;
    step.note = "timed out";
  } else if (!counts) {
    step.failed += 1;
    step.note = `no test counts in the output (exit ${r.code})`;
  } else if (r.code !== 0 && counts.failed === 0) {
    step.failed += 1;
    step.note = `exit ${r.code} with no failed test (a file failed to load?)`;
  } else if (fileCount > 0 && counts.passed + counts.failed + counts.skipped === 0) {
    step.failed += 1;
    step.note = `ran zero tests from ${fileCount} file(s)`;
  }
  return step;
}

async function bundle(files) {
  let esbuild;
  try {
    esbuild = await import("esbuild");
  } catch (e) {
    throw new Error(`Cannot load esbuild (run npm install): ${e.message}`);
  }
  const result = await esbuild.build({
    entryPoints: files.map((f) => path.join(ROOT, f)),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    packages: "external",
    outdir: BUILD_DIR,
    outbase: TEST_DIR,
    outExtension: { ".js": ".mjs" },
    keepNames: true,
    sourcemap: "inline",
    metafile: true,
    logLevel: "warning",
    absWorkingDir: ROOT,
  });
  const out = new Map(); // source (relative) -> { bundle (absolute), inputs }
  for (const [outFile, meta] of Object.entries(result.metafile.outputs)) {
    if (!meta.entryPoint) continue;
    out.set(meta.entryPoint, { bundle: path.join(ROOT, outFile), inputs: Object.keys(meta.inputs) });
  }
  return files.map((f) => {
    const b = out.get(f);
    if (!b) throw new Error(`esbuild produced no bundle for "${f}"`);
    return { file: f, ...b };
  });
}

async function bundleStep(name, files) {
  const started = Date.now();
  try {
    return { bundles: await bundle(files), step: null };
  } catch (e) {
    console.error(`test/run.mjs: cannot bundle ${name}: ${e.message}`);
    return { bundles: null, step: { name: `${name} (esbuild)`, passed: 0, failed: 1, skipped: 0, ms: Date.now() - started, note: "bundle failed" } };
  }
}

async function commandStep(name, cmd, args, env = childEnv()) {
  header(name);
  const r = await runStreaming(cmd, args, { env, timeoutMs: UNIT_STEP_TIMEOUT_MS });
  const ok = r.code === 0 && !r.timedOut;
  return { name, passed: 0, failed: ok ? 0 : 1, skipped: 0, ms: r.ms, note: ok ? "ok" : `failed (exit ${r.code})`, check: true };
}

function tsFilesUnder(dir) {
  return walk(path.join(ROOT, dir)).filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))
    .map((f) => path.relative(ROOT, f));
}

async function typecheckSteps() {
  const steps = [];
  const deno = path.join(BIN, "deno");
  const src = tsFilesUnder("src");
  if (src.length) {
    // src/ is runtime-free: check it with no Deno, Bun or Node types, so a slip fails here.
    const config = path.join(BUILD_DIR, "deno-check-src.json");
    fs.mkdirSync(path.dirname(config), { recursive: true });
    fs.writeFileSync(config, JSON.stringify({
      compilerOptions: { strict: true, lib: ["dom", "esnext"] },
      nodeModulesDir: "manual",
    }, null, 2));
    steps.push(await commandStep("typecheck src/ (deno check, no runtime types)", deno,
      ["check", "--quiet", "--config", config, ...src]));
  } else {
    console.log("typecheck: no .ts files under src/");
  }
  const adapters = ["platform/deno.ts", "platform/main.deno.ts"].filter((f) => fs.existsSync(path.join(ROOT, f)));
  if (adapters.length) {
    steps.push(await commandStep(`typecheck ${adapters.join(" ")} (deno check)`, deno, ["check", "--quiet", ...adapters]));
  } else {
    console.log("typecheck: platform/deno.ts does not exist yet");
  }
  return steps;
}

async function unitSteps(kind, runtime, files) {
  const label = `${kind} · ${runtime} (${files.length} file${files.length === 1 ? "" : "s"})`;
  const env = childEnv();
  if (runtime === "node") {
    const { bundles, step } = await bundleStep(label, files);
    if (!bundles) return [step];
    return [await runTests(label, "node", process.execPath,
      ["--enable-source-maps", "--test", "--test-force-exit", "--test-reporter=spec", ...bundles.map((b) => b.bundle)],
      files.length, env, UNIT_STEP_TIMEOUT_MS)];
  }
  if (runtime === "deno") {
    return [await runTests(label, "deno", path.join(BIN, "deno"), ["test", "-A", "--no-check", ...files],
      files.length, env, UNIT_STEP_TIMEOUT_MS)];
  }
  return [await runTests(label, "bun", path.join(BIN, "bun"),
    ["test", `--timeout=${BUN_TEST_TIMEOUT_MS}`, ...files.map((f) => `./${f}`)], files.length, env, UNIT_STEP_TIMEOUT_MS)];
}

async function e2eSteps(files, opts) {
  const steps = [];
  const { bundles, step } = await bundleStep("e2e", files);
  if (!bundles) return [step];
  const needsBuild = bundles.some((b) => b.inputs.includes("test/support/postern.ts"));
  if (needsBuild && opts.build) {
    if (!fs.existsSync(path.join(ROOT, "build.ts"))) {
      console.error("test/run.mjs: cannot build dist/ for the e2e tests: build.ts does not exist yet " +
        "(it must produce dist/postern and dist/postern.mjs)");
      steps.push({ name: "build (bun build.ts)", passed: 0, failed: 1, skipped: 0, ms: 0, note: "build.ts missing", check: true });
    } else {
      steps.push(await commandStep("build (bun build.ts)", path.join(BIN, "bun"), ["build.ts"]));
    }
  }
  const env = childEnv({ POSTERN_TARGETS: process.env.POSTERN_TARGETS || DEFAULT_TARGETS });
  for (const b of bundles) {
    steps.push(await runTests(`e2e · ${b.file}`, "node", process.execPath,
      ["--enable-source-maps", "--test", "--test-force-exit", "--test-reporter=spec", b.bundle], 1, env, E2E_FILE_TIMEOUT_MS));
  }
  return steps;
}

// ---------------------------------------------------------------------------------------------
// Main

function formatMs(ms) {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function closingLine(t) {
  return `${t.passed} passed, ${t.failed} failed${t.skipped ? `, ${t.skipped} skipped` : ""}`;
}

async function main() {
  const opts = parseCli(process.argv.slice(2));
  const all = discover();
  const selected = opts.filters.length
    ? all.filter((f) => opts.filters.some((flt) => f.file.includes(flt.replace(/^\.\//, ""))))
    : all;
  const wanted = selected.filter((f) => opts.kinds.includes(f.kind));

  // The plan: one step per (kind, runtime) for unit and platform files, one per e2e file.
  const plan = [];
  const runTypecheck = opts.kinds.includes("typecheck") && opts.runtimes.includes("deno") &&
    (opts.filters.length === 0 || opts.kinds.length === 1);
  if (runTypecheck) plan.push({ kind: "typecheck" });
  for (const kind of ["unit", "platform"]) {
    if (!opts.kinds.includes(kind)) continue;
    for (const runtime of opts.runtimes) {
      const files = wanted.filter((f) => f.kind === kind && f.runtimes.includes(runtime)).map((f) => f.file);
      if (files.length) plan.push({ kind, runtime, files });
    }
  }
  const e2eFiles = wanted.filter((f) => f.kind === "e2e").map((f) => f.file);
  if (opts.kinds.includes("e2e") && e2eFiles.length) plan.push({ kind: "e2e", files: e2eFiles });

  const testSteps = plan.filter((p) => p.kind !== "typecheck");
  if (testSteps.length === 0 && !runTypecheck) {
    const why = opts.filters.length ? `no test file matches ${opts.filters.map((f) => `"${f}"`).join(", ")}` :
      "no test files found under test/";
    fail(`${why} (kinds: ${opts.kinds.join(", ")}; runtimes: ${opts.runtimes.join(", ")})`);
  }

  if (opts.list) {
    for (const p of plan) {
      if (p.kind === "typecheck") console.log("typecheck: deno check src/ (no runtime types), platform/deno.ts");
      else console.log(`${p.kind}${p.runtime ? ` · ${p.runtime}` : " · node (once)"}:\n  ${p.files.join("\n  ")}`);
    }
    return 0;
  }

  const started = Date.now();
  removeStaleBuildDirs();
  const steps = [];
  for (const p of plan) {
    if (p.kind === "typecheck") steps.push(...(await typecheckSteps()));
    else if (p.kind === "e2e") steps.push(...(await e2eSteps(p.files, opts)));
    else steps.push(...(await unitSteps(p.kind, p.runtime, p.files)));
  }

  const total = steps.reduce((t, s) => ({
    passed: t.passed + s.passed, failed: t.failed + s.failed, skipped: t.skipped + s.skipped,
  }), { passed: 0, failed: 0, skipped: 0 });
  header(`summary (${formatMs(Date.now() - started)})`);
  const width = Math.min(70, Math.max(...steps.map((s) => s.name.length)));
  for (const s of steps) {
    const mark = s.failed ? "✖" : "✔";
    const counts = s.check ? (s.failed ? "FAILED" : "ok") : closingLine(s);
    const note = s.note && !s.check ? `  (${s.note})` : s.check && s.failed ? `  (${s.note})` : "";
    console.log(`${mark} ${s.name.padEnd(width)}  ${counts.padEnd(28)} ${formatMs(s.ms).padStart(8)}${note}`);
  }
  console.log(closingLine(total));
  return total.failed > 0 ? 1 : 0;
}

main().then(
  (code) => {
    removeBuildDir();
    process.exit(code);
  },
  (e) => {
    removeBuildDir();
    console.error(e?.stack ?? String(e));
    console.log("0 passed, 1 failed");
    process.exit(2);
  },
);
