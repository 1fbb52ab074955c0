// Test PKI: a CA, a leaf for 127.0.0.1/localhost and a client certificate, made
// with the openssl command line. Deno (rustls) rejects a self-signed leaf that is
// its own CA, so the leaf is signed by a separate CA.
// node:child_process execFileSync and node:fs work unchanged on Node, Deno and Bun.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestPki {
  dir: string;
  caPem: string;
  certPem: string;
  keyPem: string;
  caFile: string;
  certFile: string;
  keyFile: string;
  clientCertPem: string;
  clientKeyPem: string;
}

const DAYS = "2"; // test material only lives as long as one run

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

function newKeyAndCsr(dir: string, name: string, subject: string): void {
  openssl(dir, [
    "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject,
  ]);
}

function signWithCa(dir: string, name: string, extensions: string, serial: string): void {
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(dir, [
    "x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key",
    "-set_serial", serial, "-days", DAYS, "-sha256", "-extfile", `${name}.ext`, "-out", `${name}.pem`,
  ]);
}

/** Makes a fresh CA, server leaf and client certificate in `dir` (a new temp dir when absent). */
// deno-lint-ignore require-await -- async by contract; execFileSync works the same on all three runtimes
export async function makeTestPki(dir?: string): Promise<TestPki> {
  const at = dir ?? mkdtempSync(join(tmpdir(), "postern-pki-"));
  openssl(at, [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", "ca.key", "-out", "ca.pem", "-days", DAYS, "-sha256",
    "-subj", "/O=Postern Test/CN=Postern Test CA",
    "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  newKeyAndCsr(at, "server", "/O=Postern Test/CN=localhost");
  signWithCa(at, "server", [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage=serverAuth",
    "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
    "",
  ].join("\n"), "0x" + randomSerial());
  newKeyAndCsr(at, "client", "/O=Postern Test/CN=alice");
  signWithCa(at, "client", [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature",
    "extendedKeyUsage=clientAuth",
    "",
  ].join("\n"), "0x" + randomSerial());
  const read = (f: string) => readFileSync(join(at, f), "utf8");
  return {
    dir: at,
    caPem: read("ca.pem"),
    certPem: read("server.pem"),
    keyPem: read("server.key"),
    caFile: join(at, "ca.pem"),
    certFile: join(at, "server.pem"),
    keyFile: join(at, "server.key"),
    clientCertPem: read("client.pem"),
    clientKeyPem: read("client.key"),
  };
}

function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  bytes[0] = (bytes[0] & 0x7f) | 0x10; // positive, no leading zero byte
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
