// Builds dist/postern.mjs, the Node bundle (Node 20 cannot run TypeScript). Shared by build.ts,
// `npm start` and the test runner.
import * as esbuild from "esbuild";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
export const NODE_BUNDLE = join(ROOT, "dist", "postern.mjs");

export async function buildNodeBundle() {
  await esbuild.build({
    entryPoints: [join(ROOT, "platform/main.node.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile: NODE_BUNDLE,
    // the yaml package is CommonJS inside: give the ESM bundle a require()
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
    logLevel: "warning",
  });
  return NODE_BUNDLE;
}
