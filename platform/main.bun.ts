// Entry for Bun: one adapter, static imports only.
import { bunPlatform } from "./bun.ts";
import { main, userArgs } from "./cli.ts";

await main(bunPlatform, userArgs());
