// Helpers for the config tests: an in-memory ConfigEnv and short ways to load a
// config and look at its errors.

import assert from "node:assert/strict";
import { formatConfigError, loadConfig } from "../../src/config/load.ts";
import type { Config, ConfigEnv, ServerConfig } from "../../src/config/types.ts";

export const FILE = "/etc/postern/config.yaml";

export const CERT_PEM = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";
export const KEY_PEM = "-----BEGIN PRIVATE KEY-----\nMIGHtest\n-----END PRIVATE KEY-----\n";
export const ENCRYPTED_KEY_PEM = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFtest\n-----END ENCRYPTED PRIVATE KEY-----\n";
export const CRL_PEM = "-----BEGIN X509 CRL-----\nMIIBtest\n-----END X509 CRL-----\n";
export const DH_PEM = "-----BEGIN DH PARAMETERS-----\nMIIBtest\n-----END DH PARAMETERS-----\n";

/** Files the fake environment knows, by absolute path: text, or bytes for binary files. */
export type Files = Record<string, string | Uint8Array>;

export function fakeEnv(files: Files = {}, reads: string[] = []): ConfigEnv {
  const find = (path: string) => {
    reads.push(path);
    const f = files[path];
    if (f === undefined) throw new Error(`ENOENT: no such file or directory`);
    return f;
  };
  return {
    hostname: "mx.test",
    cpuCount: 6,
    readFile(path) {
      const f = find(path);
      return typeof f === "string" ? f : new TextDecoder().decode(f);
    },
    readFileBytes(path) {
      const f = find(path);
      return typeof f === "string" ? new TextEncoder().encode(f) : f;
    },
  };
}

/** Loads text that must be valid; fails the test with every error otherwise. */
export function load(text: string, files: Files = {}, file = FILE): Config {
  const r = loadConfig(text, file, fakeEnv(files));
  if (!r.ok) assert.fail(`expected a valid config, got:\n${r.errors.map(formatConfigError).join("\n")}`);
  return r.config;
}

/**
 * The one server of a config whose `mail:` holds `mailLines` and one entry of
 * `servers:` made of `entry` (its lines, unindented: the helper indents them).
 */
export function oneServer(entry: string[], mailLines: string[] = [], files: Files = {}): ServerConfig {
  const c = load(serverYaml(entry, mailLines), files);
  assert.equal(c.servers.length, 1);
  return c.servers[0];
}

export function serverYaml(entry: string[], mailLines: string[] = []): string {
  return yaml(
    "mail:",
    ...mailLines.map((l) => `  ${l}`),
    "  servers:",
    `    - ${entry[0]}`,
    ...entry.slice(1).map((l) => `      ${l}`),
  );
}

/** Loads text that must be invalid; returns its errors as "FILE:LINE:COL: directive: message". */
export function errors(text: string, files: Files = {}): string[] {
  const r = loadConfig(text, FILE, fakeEnv(files));
  if (r.ok) assert.fail("expected errors, the config loaded");
  return r.errors.map(formatConfigError);
}

/** Text joined with newlines, so configs in tests read as their YAML lines. */
export function yaml(...lines: string[]): string {
  return lines.join("\n") + "\n";
}
