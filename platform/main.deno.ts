// Entry for Deno: one adapter, static imports only.
import { denoPlatform } from "./deno.ts";
import { main, userArgs } from "./cli.ts";

await main(denoPlatform, userArgs());
