// The HTTP endpoint: /health, /metrics, and /auth speaking nginx's auth_http protocol, so that
// nginx or Angie mail proxies can use Postern's built-in users too.

import { Hono } from "hono";
import { authQueryFromHeaders, authReplyHeaders } from "../auth/protocol.ts";
import type { AuthService } from "../auth/types.ts";
import { type Counts, formatMetrics, type Metrics, withPeers } from "../metrics.ts";

export interface HttpAppDeps {
  readonly version: string;
  readonly metrics: Metrics;
  readonly auth: AuthService;
  now(): number;
  /** The other worker processes' counters (worker_processes > 1), added to this one's. */
  peers?(): Promise<readonly Partial<Counts>[]>;
}

export function createHttpApp(deps: HttpAppDeps): Hono {
  const app = new Hono();
  const all = async (): Promise<Metrics> => (deps.peers ? withPeers(deps.metrics, await deps.peers()) : deps.metrics);
  app.get("/health", async (c) => {
    const m = await all();
    return c.json({
      status: "ok",
      version: deps.version,
      uptime_seconds: Math.floor((deps.now() - m.startedAt) / 1000),
      sessions: m.active,
    });
  });
  app.get("/metrics", async (c) => c.text(formatMetrics(await all()), 200, { "Content-Type": "text/plain; version=0.0.4" }));
  const auth = async (c: { req: { header(n: string): string | undefined } }) => {
    const q = authQueryFromHeaders((n) => c.req.header(n) ?? null);
    if (!q.ok) {
      return new Response(null, { status: 200, headers: { "Auth-Status": "Invalid request", "X-Postern-Error": q.error } });
    }
    const reply = await deps.auth.ask(q.query);
    return new Response(null, { status: 200, headers: authReplyHeaders(reply) });
  };
  app.get("/auth", auth);
  app.post("/auth", auth);
  return app;
}
