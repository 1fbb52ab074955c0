// Entry for Bun: one adapter, static imports only.
import { bunPlatform } from "./bun.ts";
import { main } from "./cli.ts";

await main(bunPlatform, process.argv.slice(2));
