// Entry for Node: one adapter, static imports only.
import { nodePlatform } from "./node.ts";
import { main } from "./cli.ts";

await main(nodePlatform, process.argv.slice(2));
