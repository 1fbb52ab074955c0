// The platform suite against the Deno adapter (Deno only: `deno test -A`).
import { denoPlatform } from "../../platform/deno.ts";
import { platformSuite } from "./suite.ts";

platformSuite("deno", denoPlatform);
