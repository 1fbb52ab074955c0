// From ssl_* directives to the platform's TlsServer, and from what a runtime cannot honour to
// start-up messages that name the directive, the file and the server.

import assert from "node:assert/strict";
import { test } from "node:test";
import type { Platform, TlsClient, TlsProblem, TlsServer } from "../../src/platform.ts";
import { checkTlsConfig } from "../../src/server.ts";
import { CERT_PEM, CRL_PEM, DH_PEM, KEY_PEM, load, yaml } from "./../config/helpers.ts";

const FILES = {
  "/etc/postern/a.pem": CERT_PEM,
  "/etc/postern/a.key": KEY_PEM,
  "/etc/postern/b.pem": CERT_PEM,
  "/etc/postern/b.key": KEY_PEM,
  "/etc/postern/ca.pem": CERT_PEM,
  "/etc/postern/crl.pem": CRL_PEM,
  "/etc/postern/dh.pem": DH_PEM,
  "/etc/postern/ticket.key": new Uint8Array(48).fill(1),
};

/** A platform that records what it was asked about and answers `problems`. */
function fakePlatform(problems: (t: TlsServer | TlsClient) => TlsProblem[] = () => []) {
  const asked: (TlsServer | TlsClient)[] = [];
  const platform = {
    runtime: "bun",
    checkTls(t: TlsServer | TlsClient) {
      asked.push(t);
      return problems(t);
    },
  } as unknown as Platform;
  return { platform, asked };
}

function config(...lines: string[]) {
  return load(yaml("mail:", "  servers:", "    - listen: [\"127.0.0.1:993 ssl\"]", ...lines.map((l) => `      ${l}`)), FILES);
}

test("nginx's ssl defaults reach the platform as undefined, which every runtime honours", () => {
  const { platform, asked } = fakePlatform();
  checkTlsConfig(config("ssl_certificate: a.pem", "ssl_certificate_key: a.key"), platform);
  assert.equal(asked.length, 1);
  const t = asked[0] as TlsServer;
  assert.equal(t.side, "server");
  assert.deepEqual(t.certs, [{ cert: CERT_PEM, key: KEY_PEM }]);
  for (const k of ["protocols", "ciphers", "ecdhCurve", "honorCipherOrder", "crl", "dhparam", "verifyDepth", "sessionTimeoutSec", "sessionTickets", "ticketKeys", "sessionCacheSize", "requestCert", "ca"] as const) {
    assert.equal(t[k], undefined, k);
  }
});

test("every ssl directive that differs from nginx's default reaches the platform", () => {
  const { platform, asked } = fakePlatform();
  checkTlsConfig(config(
    "ssl_certificate: [a.pem, b.pem]",
    "ssl_certificate_key: [a.key, b.key]",
    "ssl_protocols: TLSv1.3",
    "ssl_ciphers: ECDHE+AESGCM",
    "ssl_ecdh_curve: secp384r1",
    "ssl_prefer_server_ciphers: on",
    "ssl_verify_client: optional",
    "ssl_client_certificate: ca.pem",
    "ssl_verify_depth: 2",
    "ssl_crl: crl.pem",
    "ssl_dhparam: dh.pem",
    "ssl_session_timeout: 10m",
    "ssl_session_tickets: off",
    "ssl_session_ticket_key: ticket.key",
    "ssl_session_cache: [builtin:1000, shared:SSL:1m]",
    "proxy_ssl: on",
    "proxy_ssl_name: backend.example",
  ), platform);
  const t = asked[0] as TlsServer;
  assert.equal(t.certs.length, 2);
  assert.deepEqual(t.protocols, ["TLSv1.3"]);
  assert.equal(t.ciphers, "ECDHE+AESGCM");
  assert.equal(t.ecdhCurve, "secp384r1");
  assert.equal(t.honorCipherOrder, true);
  assert.equal(t.requestCert, true);
  assert.equal(t.rejectUnauthorized, false, "the session answers a bad certificate as nginx, after the handshake");
  assert.equal(t.ca, CERT_PEM);
  assert.equal(t.verifyDepth, 2);
  assert.equal(t.crl, CRL_PEM);
  assert.equal(t.dhparam, DH_PEM);
  assert.equal(t.sessionTimeoutSec, 600);
  assert.equal(t.sessionTickets, false);
  assert.equal(t.ticketKeys?.length, 1);
  assert.equal(t.sessionCacheSize, 4096, "the larger of builtin:1000 and 1 MB (about 4000 sessions)");
  const c = asked[1] as TlsClient;
  assert.deepEqual(c, { side: "client", verify: true, ca: undefined, serverName: "backend.example", cert: undefined, key: undefined });
});

test("what a runtime cannot honour or load becomes a message naming the directive, the runtime, the file and the server", () => {
  const { platform } = fakePlatform((t) =>
    t.side === "server"
      ? [
        { option: "ecdhCurve", kind: "unsupported", why: "no curves here" },
        { option: "keys", index: 1, kind: "unloadable", why: "bad decrypt" },
        { option: "sessionCacheSize", kind: "partial", why: "tickets only" },
      ]
      : [{ option: "key", kind: "unloadable", why: "the key is encrypted" }]
  );
  const r = checkTlsConfig(config(
    "ssl_certificate: [a.pem, b.pem]",
    "ssl_certificate_key: [a.key, b.key]",
    "proxy_ssl: starttls",
  ), platform);
  const where = `(mail.servers[0], listen 127.0.0.1:993 ssl)`;
  assert.deepEqual(r.errors, [
    `ssl_ecdh_curve is not supported on bun: no curves here ${where}`,
    `ssl_certificate_key "/etc/postern/b.key" cannot be used: bad decrypt ${where}`,
    `proxy_ssl_certificate_key cannot be used: the key is encrypted ${where}`,
  ]);
  assert.deepEqual(r.notices, [`ssl_session_cache on bun: tickets only ${where}`]);
});
