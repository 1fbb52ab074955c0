// Counters for /metrics (Prometheus text format) and /health.

export interface Metrics {
  connections: number;
  active: number;
  loginsOk: number;
  loginsFailed: number;
  authErrors: number;
  upstreamErrors: number;
  bytesClientToUpstream: number;
  bytesUpstreamToClient: number;
  readonly startedAt: number;
}

/** The counters of a Metrics: what another worker process reports (worker_processes > 1). */
export type Counts = Omit<Metrics, "startedAt">;

const COUNTS: readonly (keyof Counts)[] = [
  "connections", "active", "loginsOk", "loginsFailed", "authErrors", "upstreamErrors", "bytesClientToUpstream", "bytesUpstreamToClient",
];

export function countsOf(m: Metrics): Counts {
  const c = {} as { -readonly [K in keyof Counts]: number };
  for (const k of COUNTS) c[k] = m[k];
  return c;
}

/** This process's metrics with the other workers' counters added; a field a peer lacks counts 0. */
export function withPeers(own: Metrics, peers: readonly Partial<Counts>[]): Metrics {
  const sum = { ...own };
  for (const p of peers) for (const k of COUNTS) sum[k] += typeof p[k] === "number" ? p[k]! : 0;
  return sum;
}

export function createMetrics(nowMs: number): Metrics {
  return { connections: 0, active: 0, loginsOk: 0, loginsFailed: 0, authErrors: 0, upstreamErrors: 0, bytesClientToUpstream: 0, bytesUpstreamToClient: 0, startedAt: nowMs };
}

export function formatMetrics(m: Metrics): string {
  const rows: [string, string, string, number][] = [
    ["postern_connections_total", "counter", "Client connections accepted", m.connections],
    ["postern_sessions_active", "gauge", "Client sessions open now", m.active],
    ["postern_logins_total{result=\"ok\"}", "counter", "Logins by result", m.loginsOk],
    ["postern_logins_total{result=\"failed\"}", "counter", "", m.loginsFailed],
    ["postern_auth_errors_total", "counter", "Auth service errors (unreachable, invalid reply)", m.authErrors],
    ["postern_upstream_errors_total", "counter", "Backend connect or login failures", m.upstreamErrors],
    ["postern_relay_bytes_total{direction=\"client_to_upstream\"}", "counter", "Bytes relayed after login", m.bytesClientToUpstream],
    ["postern_relay_bytes_total{direction=\"upstream_to_client\"}", "counter", "", m.bytesUpstreamToClient],
  ];
  let out = "";
  for (const [name, type, help, value] of rows) {
    const base = name.replace(/\{.*/, "");
    if (help) out += `# HELP ${base} ${help}\n# TYPE ${base} ${type}\n`;
    out += `${name} ${value}\n`;
  }
  return out;
}
