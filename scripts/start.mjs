// `npm start`: build the Node bundle, then run it with the given arguments (default -c config.yaml).
import { spawn } from "node:child_process";
import { buildNodeBundle } from "./node-bundle.mjs";

const bundle = await buildNodeBundle();
const args = process.argv.slice(2);
const child = spawn(process.execPath, [bundle, ...(args.length ? args : ["-c", "config.yaml"])], { stdio: "inherit" });
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"]) process.on(sig, () => child.kill(sig));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
