// Entry for Deno: one adapter, static imports only.
import { denoPlatform } from "./deno.ts";
import { main } from "./cli.ts";

await main(denoPlatform, process.argv.slice(2));
