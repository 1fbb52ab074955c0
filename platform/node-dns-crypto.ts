// node:dns and node:crypto pieces the Node and Bun adapters share (both runtimes provide them).
// Docs: https://nodejs.org/api/dns.html#class-dnspromisesresolver

import { scrypt as nodeScrypt } from "node:crypto";
import { Resolver } from "node:dns/promises";
import type { Address } from "../src/platform.ts";

const DNS_TIMEOUT_MS = 5_000; // per try; c-ares defaults to 5 s x 4 tries
const DNS_TRIES = 2;

function resolverFor(servers: readonly Address[]): Resolver {
  const r = new Resolver({ timeout: DNS_TIMEOUT_MS, tries: DNS_TRIES });
  if (servers.length > 0) r.setServers(servers.map((s) => (s.host.includes(":") ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`)));
  return r;
}

/** NXDOMAIN and "no such record" are answers (empty), anything else is a resolver failure. */
function isNoAnswer(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === "ENOTFOUND" || code === "ENODATA";
}

export async function reverseDns(ip: string, servers: readonly Address[]): Promise<string[]> {
  try {
    return await resolverFor(servers).reverse(ip);
  } catch (err) {
    if (isNoAnswer(err)) return [];
    throw err;
  }
}

export async function resolveDns(name: string, servers: readonly Address[]): Promise<string[]> {
  const r = resolverFor(servers);
  const results = await Promise.allSettled([r.resolve4(name), r.resolve6(name)]);
  const found = results.flatMap((x) => (x.status === "fulfilled" ? x.value : []));
  const failure = results.find((x) => x.status === "rejected" && !isNoAnswer(x.reason)) as PromiseRejectedResult | undefined;
  if (found.length === 0 && failure !== undefined) throw failure.reason;
  return found;
}

// ---------------------------------------------------------------------------
// Crypto, files, logs, signals, process

export function scrypt(password: Uint8Array, salt: Uint8Array, keyLen: number, cost: { N: number; r: number; p: number }): Promise<Uint8Array> {
  const maxmem = 128 * cost.r * (cost.N + cost.p + 2) + 1024 * 1024; // OpenSSL's own estimate plus slack
  return new Promise((resolve, reject) =>
    nodeScrypt(password, salt, keyLen, { ...cost, maxmem }, (err, key) => (err ? reject(err) : resolve(new Uint8Array(key)))),
  );
}
