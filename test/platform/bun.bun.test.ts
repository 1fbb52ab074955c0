// The platform suite against the Bun adapter (Bun only: `bun test`).
import { bunPlatform } from "../../platform/bun.ts";
import { platformSuite } from "./suite.ts";

platformSuite("bun", bunPlatform);
