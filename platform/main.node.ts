// Entry for Node: one adapter, static imports only.
import { nodePlatform } from "./node.ts";
import { main, userArgs } from "./cli.ts";

await main(nodePlatform, userArgs());
