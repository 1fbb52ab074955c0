// A real DNS server for resolver tests: dnsmasq on 127.0.0.1 and a free port, answering only from
// the records given (no upstream, no /etc/hosts), plus a "dead" resolver that takes queries and
// never answers. node:child_process, node:dgram and node:fs only (Node, Deno, Bun).
import { spawn, type ChildProcess } from "node:child_process";
import * as dgram from "node:dgram";
import { requireTool } from "./dovecot.ts";
import { freePort } from "./ports.ts";

export interface DnsmasqOptions {
  /** Name and address: an A record and the matching PTR (forward-confirmed). */
  readonly hosts?: readonly { name: string; address: string }[];
  /** PTR records alone: `address` says it is `name`, whatever `name` resolves to. */
  readonly ptrs?: readonly { address: string; name: string }[];
  /** Zones dnsmasq answers for itself (NXDOMAIN for unknown names, never REFUSED). */
  readonly localZones?: readonly string[];
}

export interface Dnsmasq {
  readonly port: number;
  /** Every query logged so far ("query[PTR] 2.0.0.127.in-addr.arpa from 127.0.0.1"...). */
  queries(): string[];
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function reverseName(address: string): string {
  return address.split(".").reverse().join(".") + ".in-addr.arpa";
}

/** Start dnsmasq in the foreground; resolves once it logged that it started. */
export async function startDnsmasq(opts: DnsmasqOptions): Promise<Dnsmasq> {
  const bin = requireTool("dnsmasq", "install dnsmasq (bash .ci/run does)");
  const port = await freePort();
  const args = [
    "--no-daemon", `--port=${port}`, "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
    "--conf-file=/dev/null", "--log-queries", "--log-facility=-", "--pid-file=",
  ];
  for (const h of opts.hosts ?? []) args.push(`--host-record=${h.name},${h.address}`);
  for (const p of opts.ptrs ?? []) args.push(`--ptr-record=${reverseName(p.address)},${p.name}`);
  for (const z of opts.localZones ?? []) args.push(`--local=/${z}/`);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const c of live) c.kill("SIGKILL");
    });
  }
  const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  live.add(child);
  let output = "";
  child.stdout?.on("data", (d) => (output += String(d)));
  child.stderr?.on("data", (d) => (output += String(d)));
  let exited = false;
  const exitP = new Promise<void>((resolve) => child.once("exit", () => { exited = true; live.delete(child); resolve(); }));
  const deadline = Date.now() + 10_000;
  while (!/started, version/.test(output)) {
    if (exited) throw new Error(`dnsmasq exited at start (dnsmasq ${args.join(" ")}):\n${output}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`dnsmasq did not start within 10 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    port,
    queries: () => output.split("\n").filter((l) => /query\[/.test(l)),
    async stop() {
      if (!exited) {
        child.kill("SIGTERM");
        await exitP;
      }
    },
  };
}

/** A UDP port that takes DNS queries and never answers (a dead resolver, for resolver_timeout). */
export async function startSilentResolver(): Promise<{ port: number; queries(): number; stop(): Promise<void> }> {
  const sock = dgram.createSocket("udp4");
  let count = 0;
  sock.on("message", () => count++);
  await new Promise<void>((resolve, reject) => {
    sock.once("error", reject);
    sock.bind(0, "127.0.0.1", () => resolve());
  });
  return {
    port: sock.address().port,
    queries: () => count,
    stop: () => new Promise<void>((resolve) => sock.close(() => resolve())),
  };
}
