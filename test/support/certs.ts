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

// ---------------------------------------------------------------------------
// The fuller PKI of the TLS tests: RSA and ECDSA server leaves, an encrypted key, client
// certificates that verify, go through an intermediate, are revoked (with the CRL), have
// expired or come from another CA, and a server leaf from that other CA.

export interface TlsTestPki {
  readonly dir: string;
  /** File names in `dir` by role; `pem(name)` reads one. */
  readonly files: {
    readonly ca: string; // the trusted CA
    readonly rsaCert: string; // CN=rsa.postern.test, SAN localhost 127.0.0.1
    readonly rsaKey: string;
    readonly rsaKeyEncrypted: string; // the same key, AES-256 under `passphrase`
    readonly ecCert: string; // CN=ec.postern.test
    readonly ecKey: string;
    readonly renewedCert: string; // CN=renewed.postern.test (same CA, for reload tests)
    readonly renewedKey: string;
    readonly passwords: string; // ssl_password_file: a wrong line first, then the right one
    readonly client: string; // CN=alice@example.com, the CA's
    readonly clientKey: string;
    readonly deepClient: string; // CN=bob@example.com under an intermediate CA; chain file (leaf + intermediate)
    readonly deepClientKey: string;
    readonly revokedClient: string; // CN=revoked@example.com, listed in `crl`
    readonly revokedClientKey: string;
    readonly expiredClient: string; // CN=expired@example.com, expired in 2020
    readonly expiredClientKey: string;
    readonly crl: string;
    readonly otherCa: string; // another CA, trusted by nobody
    readonly strangerClient: string; // CN=alice@example.com, from the other CA
    readonly strangerClientKey: string;
    readonly strangerServer: string; // a server leaf for 127.0.0.1 from the other CA
    readonly strangerServerKey: string;
  };
  readonly passphrase: string;
  pem(name: string): string;
}

const TLS_PKI_DAYS = "3";

/** Builds the TLS test PKI in `dir` (a new temp dir when absent) with the openssl command line. */
// deno-lint-ignore require-await -- async by contract, like makeTestPki
export async function makeTlsTestPki(dir?: string): Promise<TlsTestPki> {
  const at = dir ?? mkdtempSync(join(tmpdir(), "postern-tls-pki-"));
  const ssl = (args: string[]) => openssl(at, args);
  const ext = (name: string, lines: string[]) => writeFileSync(join(at, `${name}.ext`), lines.join("\n") + "\n");
  const ca = (name: string, cn: string) =>
    ssl([
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", TLS_PKI_DAYS, "-sha256", "-subj", `/O=Postern Test/CN=${cn}`,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ]);
  const leaf = (name: string, subject: string, signer: string, extName: string, keyType: "ec" | "rsa") => {
    const newKey = keyType === "rsa" ? ["-newkey", "rsa:2048"] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    ssl(["req", "-new", ...newKey, "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject]);
    ssl([
      "x509", "-req", "-in", `${name}.csr`, "-CA", `${signer}.pem`, "-CAkey", `${signer}.key`,
      "-set_serial", "0x" + randomSerial(), "-days", TLS_PKI_DAYS, "-sha256", "-extfile", `${extName}.ext`, "-out", `${name}.pem`,
    ]);
  };
  ext("server", [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage=serverAuth",
    "subjectAltName=DNS:localhost,DNS:mail.postern.test,IP:127.0.0.1",
  ]);
  ext("client", ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", "extendedKeyUsage=clientAuth"]);
  ext("intermediate", ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"]);

  ca("ca", "Postern Test CA");
  ca("other-ca", "Stranger CA");
  leaf("rsa", "/O=Postern Test/CN=rsa.postern.test", "ca", "server", "rsa");
  leaf("ec", "/O=Postern Test/CN=ec.postern.test", "ca", "server", "ec");
  leaf("renewed", "/O=Postern Test/CN=renewed.postern.test", "ca", "server", "ec");
  leaf("stranger-server", "/O=Stranger/CN=localhost", "other-ca", "server", "ec");
  leaf("client", "/O=Postern Test/CN=alice@example.com", "ca", "client", "ec");
  leaf("stranger-client", "/O=Stranger/CN=alice@example.com", "other-ca", "client", "ec");
  leaf("intermediate", "/O=Postern Test/CN=Postern Test Intermediate", "ca", "intermediate", "ec");
  leaf("deep", "/O=Postern Test/CN=bob@example.com", "intermediate", "client", "ec");
  writeFileSync(join(at, "deep-chain.pem"), readFileSync(join(at, "deep.pem"), "utf8") + readFileSync(join(at, "intermediate.pem"), "utf8"));

  const passphrase = "postern-test-passphrase";
  ssl(["pkey", "-in", "rsa.key", "-aes256", "-passout", `pass:${passphrase}`, "-out", "rsa.enc.key"]);
  writeFileSync(join(at, "passwords.txt"), `not-this-one\n${passphrase}\n`);

  // `openssl ca` keeps the index the CRL is made from, and can back-date (the expired client)
  writeFileSync(join(at, "ca.cnf"), [
    "[ ca ]", "default_ca = test", "[ test ]", "database = index.txt", "crlnumber = crlnumber", "serial = serial", "new_certs_dir = .",
    "default_md = sha256", "default_crl_days = 2", "policy = any", "unique_subject = no", "[ any ]", "commonName = supplied", "",
  ].join("\n"));
  writeFileSync(join(at, "index.txt"), "");
  writeFileSync(join(at, "crlnumber"), "01\n");
  writeFileSync(join(at, "serial"), randomSerial() + "\n");
  const caSign = (name: string, subject: string, dates: string[]) => {
    ssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject]);
    ssl([
      "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-in", `${name}.csr`, "-out", `${name}.pem`,
      "-notext", "-extfile", "client.ext", ...dates,
    ]);
  };
  caSign("revoked", "/O=Postern Test/CN=revoked@example.com", ["-days", TLS_PKI_DAYS]);
  caSign("expired", "/O=Postern Test/CN=expired@example.com", ["-startdate", "20200101000000Z", "-enddate", "20200201000000Z"]);
  ssl(["ca", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-revoke", "revoked.pem"]);
  ssl(["ca", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-gencrl", "-out", "crl.pem"]);

  return {
    dir: at,
    passphrase,
    files: {
      ca: "ca.pem",
      rsaCert: "rsa.pem",
      rsaKey: "rsa.key",
      rsaKeyEncrypted: "rsa.enc.key",
      ecCert: "ec.pem",
      ecKey: "ec.key",
      renewedCert: "renewed.pem",
      renewedKey: "renewed.key",
      passwords: "passwords.txt",
      client: "client.pem",
      clientKey: "client.key",
      deepClient: "deep-chain.pem",
      deepClientKey: "deep.key",
      revokedClient: "revoked.pem",
      revokedClientKey: "revoked.key",
      expiredClient: "expired.pem",
      expiredClientKey: "expired.key",
      crl: "crl.pem",
      otherCa: "other-ca.pem",
      strangerClient: "stranger-client.pem",
      strangerClientKey: "stranger-client.key",
      strangerServer: "stranger-server.pem",
      strangerServerKey: "stranger-server.key",
    },
    pem: (name) => readFileSync(join(at, name), "utf8"),
  };
}
