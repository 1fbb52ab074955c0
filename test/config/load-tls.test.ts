import assert from "node:assert/strict";
import { test } from "node:test";
import { loadConfig } from "../../src/config/load.ts";
import {
  CERT_PEM,
  CRL_PEM,
  DH_PEM,
  ENCRYPTED_KEY_PEM,
  errors,
  fakeEnv,
  FILE,
  KEY_PEM,
  load,
  oneServer,
  serverYaml,
  yaml,
} from "./helpers.ts";
import type { Files } from "./helpers.ts";

const F = FILE;
const PKI: Files = {
  "/etc/postern/certs/mail.pem": CERT_PEM,
  "/etc/postern/certs/mail.key": KEY_PEM,
  "/etc/postern/certs/ec.pem": CERT_PEM.replace("MIIBtest", "MIIBec"),
  "/etc/postern/certs/ec.key": KEY_PEM.replace("MIGHtest", "MIGHec"),
  "/etc/postern/certs/ca.pem": CERT_PEM.replace("MIIBtest", "MIIBca"),
  "/etc/postern/certs/crl.pem": CRL_PEM,
  "/etc/postern/certs/dh.pem": DH_PEM,
  "/etc/ssl/backend-ca.pem": CERT_PEM.replace("MIIBtest", "MIIBbackend"),
};

test("a listen with ssl reads the certificate and key named relative to the config file", () => {
  const s = oneServer(["listen: \"993 ssl\"", "ssl_certificate: certs/mail.pem", "ssl_certificate_key: /etc/postern/certs/mail.key"], [], PKI);
  assert.deepEqual(s.sslCertificates, [
    { certificate: "/etc/postern/certs/mail.pem", certificateKey: "/etc/postern/certs/mail.key", certPem: CERT_PEM, keyPem: KEY_PEM },
  ]);
  assert.equal(s.listen[0].ssl, true);
});

test("several certificates pair with several keys index by index", () => {
  const s = oneServer(
    ["listen: \"993 ssl\""],
    ["ssl_certificate: [certs/mail.pem, certs/ec.pem]", "ssl_certificate_key: [certs/mail.key, certs/ec.key]"],
    PKI,
  );
  assert.deepEqual(s.sslCertificates.map((c) => [c.certificate, c.certificateKey]), [
    ["/etc/postern/certs/mail.pem", "/etc/postern/certs/mail.key"],
    ["/etc/postern/certs/ec.pem", "/etc/postern/certs/ec.key"],
  ]);
  assert.match(s.sslCertificates[1].certPem, /MIIBec/);
});

test("a certificate and key can be given inline with data:, as in nginx", () => {
  const s = oneServer([
    "listen: \"993 ssl\"",
    "ssl_certificate: |",
    ...`data:${CERT_PEM}`.trimEnd().split("\n").map((l) => `  ${l}`),
    "ssl_certificate_key: |",
    ...`data:${KEY_PEM}`.trimEnd().split("\n").map((l) => `  ${l}`),
  ]);
  assert.equal(s.sslCertificates[0].certificate.startsWith("data:"), true);
  assert.equal(s.sslCertificates[0].certPem, CERT_PEM);
  assert.equal(s.sslCertificates[0].keyPem, KEY_PEM);
});

test("starttls on takes the certificate from mail: and reads the TLS files", () => {
  const s = oneServer(
    ["listen: 143", "ssl_verify_client: optional", "ssl_client_certificate: certs/ca.pem", "ssl_crl: certs/crl.pem", "ssl_dhparam: certs/dh.pem"],
    ["starttls: only", "ssl_certificate: certs/mail.pem", "ssl_certificate_key: certs/mail.key"],
    PKI,
  );
  assert.equal(s.starttls, "only");
  assert.equal(s.sslCertificates.length, 1);
  assert.equal(s.sslVerifyClient, "optional");
  assert.match(s.sslClientCertificate ?? "", /MIIBca/);
  assert.equal(s.sslCrl, CRL_PEM);
  assert.equal(s.sslDhparam, DH_PEM);
});

test("ssl_trusted_certificate alone satisfies ssl_verify_client on", () => {
  const s = oneServer(
    ["listen: \"993 ssl\"", "ssl_verify_client: on", "ssl_trusted_certificate: certs/ca.pem", "ssl_verify_depth: 2"],
    ["ssl_certificate: certs/mail.pem", "ssl_certificate_key: certs/mail.key"],
    PKI,
  );
  assert.match(s.sslTrustedCertificate ?? "", /MIIBca/);
  assert.equal("sslClientCertificate" in s, false);
  assert.equal(s.sslVerifyDepth, 2);
});

test("ssl_verify_client optional_no_ca needs no CA file", () => {
  const s = oneServer(
    ["listen: \"993 ssl\"", "ssl_verify_client: optional_no_ca"],
    ["ssl_certificate: certs/mail.pem", "ssl_certificate_key: certs/mail.key"],
    PKI,
  );
  assert.equal(s.sslVerifyClient, "optional_no_ca");
});

test("an encrypted key is read with the passphrases of ssl_password_file", () => {
  const files = { ...PKI, "/etc/postern/certs/mail.key": ENCRYPTED_KEY_PEM, "/etc/postern/pass.txt": "first\r\n\nsecond\n" };
  const s = oneServer(
    ["listen: \"993 ssl\""],
    ["ssl_certificate: certs/mail.pem", "ssl_certificate_key: certs/mail.key", "ssl_password_file: pass.txt"],
    files,
  );
  assert.deepEqual(s.sslPasswordFile, ["first", "second"]);
  assert.equal(s.sslCertificates[0].keyPem, ENCRYPTED_KEY_PEM);
});

test("session ticket keys are read as bytes and must be 48 or 80 bytes long", () => {
  const files = { ...PKI, "/etc/postern/t48.key": new Uint8Array(48).fill(1), "/etc/postern/t80.key": new Uint8Array(80).fill(2) };
  const s = oneServer(
    ["listen: \"993 ssl\"", "ssl_session_ticket_key: [t80.key, t48.key]"],
    ["ssl_certificate: certs/mail.pem", "ssl_certificate_key: certs/mail.key"],
    files,
  );
  assert.deepEqual(s.sslSessionTicketKey.map((k) => k.length), [80, 48]);
  assert.equal(s.sslSessionTicketKey[0][0], 2);
});

test("no TLS file is read for a server without TLS, as nginx does", () => {
  const reads: string[] = [];
  const r = loadConfig(
    serverYaml(["listen: 143"], ["ssl_certificate: missing.pem", "ssl_certificate_key: missing.key", "proxy_ssl_trusted_certificate: x.pem"]),
    F,
    fakeEnv({}, reads),
  );
  assert.equal(r.ok, true);
  assert.deepEqual(reads, []);
  if (r.ok) assert.deepEqual(r.config.servers[0].sslCertificates, []);
});

test("a file used by several servers is read once", () => {
  const reads: string[] = [];
  const text = yaml(
    "mail:",
    "  ssl_certificate: certs/mail.pem",
    "  ssl_certificate_key: certs/mail.key",
    "  servers:",
    "    - listen: \"993 ssl\"",
    "    - listen: \"995 ssl\"",
  );
  const r = loadConfig(text, F, fakeEnv(PKI, reads));
  assert.equal(r.ok, true);
  assert.deepEqual(reads, ["/etc/postern/certs/mail.pem", "/etc/postern/certs/mail.key"]);
});

test("proxy_ssl reads the backend CA and client certificate", () => {
  const s = oneServer(
    [
      "listen: 143",
      "proxy_ssl: starttls",
      "proxy_ssl_verify: off",
      "proxy_ssl_name: imap.internal",
      "proxy_ssl_trusted_certificate: /etc/ssl/backend-ca.pem",
      "proxy_ssl_certificate: certs/mail.pem",
      "proxy_ssl_certificate_key: certs/mail.key",
    ],
    [],
    PKI,
  );
  assert.equal(s.proxySsl, "starttls");
  assert.equal(s.proxySslVerify, false);
  assert.equal(s.proxySslName, "imap.internal");
  assert.match(s.proxySslTrustedCertificate ?? "", /MIIBbackend/);
  assert.equal(s.proxySslCertificate, CERT_PEM);
  assert.equal(s.proxySslCertificateKey, KEY_PEM);
});

test("a TLS listen or starttls without a certificate or key is an error at the directive that needs it", () => {
  assert.deepEqual(errors(serverYaml(["listen: [143, \"993 ssl\"]"])), [
    `${F}:3:21: mail.servers[0].listen[1]: no "ssl_certificate" is defined for "listen ... ssl"`,
  ]);
  assert.deepEqual(errors(serverYaml(["listen: 143", "starttls: on", "ssl_certificate: certs/mail.pem"]), PKI), [
    `${F}:4:17: mail.servers[0].starttls: no "ssl_certificate_key" is defined for "starttls"`,
  ]);
});

test("unequal numbers of certificates and keys are an error at the keys", () => {
  assert.deepEqual(
    errors(serverYaml(["listen: \"993 ssl\"", "ssl_certificate: [certs/mail.pem, certs/ec.pem]", "ssl_certificate_key: certs/mail.key"]), PKI),
    [`${F}:5:28: mail.servers[0].ssl_certificate_key: 2 certificates but 1 key; list one key per certificate, in the same order`],
  );
});

test("an unreadable or wrong file is an error at the directive naming it", () => {
  assert.deepEqual(
    errors(
      serverYaml([
        "listen: \"993 ssl\"",
        "ssl_certificate: certs/mail.key",
        "ssl_certificate_key: certs/nope.key",
        "ssl_dhparam: certs/mail.pem",
        "ssl_session_ticket_key: certs/mail.pem",
      ]),
      PKI,
    ),
    [
      `${F}:4:24: mail.servers[0].ssl_certificate: no PEM certificate in "/etc/postern/certs/mail.key"`,
      `${F}:5:28: mail.servers[0].ssl_certificate_key: cannot read "/etc/postern/certs/nope.key": ENOENT: no such file or directory`,
      `${F}:6:20: mail.servers[0].ssl_dhparam: no PEM DH parameters in "/etc/postern/certs/mail.pem"`,
      `${F}:7:31: mail.servers[0].ssl_session_ticket_key: "/etc/postern/certs/mail.pem" must be 48 or 80 bytes, got ${CERT_PEM.length}`,
    ],
  );
});

test("an encrypted key without ssl_password_file is an error, and so is an empty password file", () => {
  const files = { ...PKI, "/etc/postern/certs/mail.key": ENCRYPTED_KEY_PEM, "/etc/postern/empty.txt": "\n\n" };
  assert.deepEqual(
    errors(serverYaml(["listen: \"993 ssl\"", "ssl_certificate: certs/mail.pem", "ssl_certificate_key: certs/mail.key"]), files),
    [`${F}:5:28: mail.servers[0].ssl_certificate_key: the key "/etc/postern/certs/mail.key" is encrypted; set ssl_password_file`],
  );
  assert.deepEqual(
    errors(
      serverYaml([
        "listen: \"993 ssl\"",
        "ssl_certificate: certs/mail.pem",
        "ssl_certificate_key: certs/mail.key",
        "ssl_password_file: empty.txt",
      ]),
      files,
    ),
    [`${F}:6:26: mail.servers[0].ssl_password_file: no passphrases in "/etc/postern/empty.txt"`],
  );
});

test("ssl_verify_client on without a CA file is an error, as in nginx", () => {
  assert.deepEqual(
    errors(serverYaml(["listen: \"993 ssl\"", "ssl_verify_client: on"], ["ssl_certificate: certs/mail.pem", "ssl_certificate_key: certs/mail.key"]), PKI),
    [
      `${F}:6:26: mail.servers[0].ssl_verify_client: no "ssl_client_certificate" or "ssl_trusted_certificate" is defined for "ssl_verify_client on"`,
    ],
  );
});

test("proxy_ssl certificate without key, and an encrypted backend key, are errors", () => {
  assert.deepEqual(errors(serverYaml(["listen: 143", "proxy_ssl: on", "proxy_ssl_certificate: certs/mail.pem"]), PKI), [
    `${F}:5:30: mail.servers[0].proxy_ssl_certificate: no "proxy_ssl_certificate_key" is defined for this certificate`,
  ]);
  const files = { ...PKI, "/etc/postern/certs/mail.key": ENCRYPTED_KEY_PEM };
  assert.deepEqual(
    errors(serverYaml(["listen: 143", "proxy_ssl: on", "proxy_ssl_certificate: certs/mail.pem", "proxy_ssl_certificate_key: certs/mail.key"]), files),
    [
      `${F}:6:34: mail.servers[0].proxy_ssl_certificate_key: the key "/etc/postern/certs/mail.key" is encrypted; ` +
      "proxy_ssl_certificate_key needs an unencrypted key",
    ],
  );
});

test("inline data: is allowed only for the server certificate and key", () => {
  assert.deepEqual(errors(serverYaml(["listen: 143", "ssl_dhparam: \"data:x\""])), [
    `${F}:4:20: mail.servers[0].ssl_dhparam: inline "data:" is allowed only in ssl_certificate and ssl_certificate_key`,
  ]);
});

test("a bad session cache is an error naming the word", () => {
  assert.deepEqual(errors(serverYaml(["listen: 143", "ssl_session_cache: [\"shared:SSL:1k\", lru]"])), [
    `${F}:4:27: mail.servers[0].ssl_session_cache[0]: session cache "shared:SSL:1k" is too small; at least 32k`,
    `${F}:4:44: mail.servers[0].ssl_session_cache[1]: invalid session cache "lru"; expected off, none, builtin[:SIZE] or shared:NAME:SIZE`,
  ]);
});

test("a mail-level certificate that cannot be read is reported once for all servers", () => {
  const text = yaml(
    "mail:",
    "  ssl_certificate: certs/gone.pem",
    "  ssl_certificate_key: certs/mail.key",
    "  servers:",
    "    - listen: \"993 ssl\"",
    "    - listen: \"995 ssl\"",
  );
  assert.deepEqual(errors(text, PKI), [
    `${F}:2:20: mail.ssl_certificate: cannot read "/etc/postern/certs/gone.pem": ENOENT: no such file or directory`,
  ]);
});

test("load gives each server its own inherited TLS settings", () => {
  const c = load(
    yaml(
      "mail:",
      "  ssl_certificate: certs/mail.pem",
      "  ssl_certificate_key: certs/mail.key",
      "  ssl_protocols: TLSv1.3",
      "  servers:",
      "    - listen: \"993 ssl\"",
      "    - listen: \"995 ssl\"",
      "      ssl_protocols: [TLSv1.2, TLSv1.3]",
      "      ssl_certificate: certs/ec.pem",
      "      ssl_certificate_key: certs/ec.key",
    ),
    PKI,
  );
  assert.deepEqual(c.servers[0].sslProtocols, ["TLSv1.3"]);
  assert.deepEqual(c.servers[1].sslProtocols, ["TLSv1.2", "TLSv1.3"]);
  assert.equal(c.servers[0].sslCertificates[0].certificate, "/etc/postern/certs/mail.pem");
  assert.equal(c.servers[1].sslCertificates[0].certificate, "/etc/postern/certs/ec.pem");
});
