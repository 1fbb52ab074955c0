// The platform suite against the Node adapter (Node only: bundled by esbuild, run by `node --test`).
import { nodePlatform } from "../../platform/node.ts";
import { platformSuite } from "./suite.ts";

platformSuite("node", nodePlatform);
