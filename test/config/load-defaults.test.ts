import assert from "node:assert/strict";
import { test } from "node:test";
import { load, oneServer, yaml } from "./helpers.ts";

test("loadConfig gives a server every nginx default", () => {
  const s = oneServer(["listen: 143"]);
  assert.deepEqual(s, {
    listen: [{ host: "0.0.0.0", port: 143, ssl: false, proxyProtocol: false, bind: false, soKeepalive: false, source: "143" }],
    protocol: "imap",
    serverName: "mx.test",
    timeout: 60_000,
    maxErrors: 5,
    resolver: { addresses: [], ipv4: true, ipv6: true },
    resolverTimeout: 30_000,
    errorLog: [{ dest: "stderr", level: "info", format: "text" }],
    authHttp: "builtin",
    authHttpHeader: {},
    authHttpPassClientCert: false,
    authHttpTimeout: 60_000,
    proxyBuffer: 4096,
    proxyPassErrorMessage: false,
    proxyProtocol: "off",
    proxySmtpAuth: false,
    proxyTimeout: 86_400_000,
    xclient: true,
    proxySsl: "off",
    proxySslVerify: true,
    setRealIpFrom: [],
    sslCertificates: [],
    sslProtocols: ["TLSv1.2", "TLSv1.3"],
    sslCiphers: "HIGH:!aNULL:!MD5",
    sslEcdhCurve: "auto",
    sslPreferServerCiphers: false,
    sslVerifyClient: "off",
    sslVerifyDepth: 1,
    sslSessionCache: ["none"],
    sslSessionTimeout: 300_000,
    sslSessionTickets: true,
    sslSessionTicketKey: [],
    starttls: "off",
    imapAuth: ["plain"],
    imapCapabilities: ["IMAP4", "IMAP4rev1", "UIDPLUS"],
    imapClientBuffer: 4096,
    pop3Auth: ["plain"],
    pop3Capabilities: ["TOP", "USER", "UIDL"],
    pop3ClientBuffer: 16384,
    smtpAuth: ["plain", "login"],
    smtpCapabilities: [],
    smtpClientBuffer: 4096,
    smtpGreetingDelay: 0,
  });
});

test("loadConfig gives the top level its defaults: host name, log to stderr at info, one worker, no http", () => {
  const c = load(yaml("mail:", "  servers:", "    - listen: 110"));
  assert.equal(c.file, "/etc/postern/config.yaml");
  assert.equal(c.serverName, "mx.test");
  assert.deepEqual(c.errorLog, [{ dest: "stderr", level: "info", format: "text" }]);
  assert.equal(c.workerProcesses, 1);
  assert.equal(c.workerShutdownTimeout, undefined);
  assert.deepEqual(c.http, {});
  assert.deepEqual(c.auth, { users: [], failureDelay: 3000, maxAttempts: 3, cacheTtl: 3_600_000 });
  assert.deepEqual(c.warnings, []);
});

test("loadConfig lets a server override what mail: sets, and inherits the rest", () => {
  const c = load(yaml(
    "mail:",
    "  proxy_timeout: 15s",
    "  timeout: 10s",
    "  imap_auth: [plain, login]",
    "  xclient: off",
    "  servers:",
    "    - listen: 143",
    "    - listen: 1143",
    "      protocol: imap",
    "      proxy_timeout: 1h30m",
    "      imap_auth: cram-md5",
  ));
  const [a, b] = c.servers;
  assert.equal(a.proxyTimeout, 15_000);
  assert.equal(b.proxyTimeout, 5_400_000);
  assert.equal(a.timeout, 10_000);
  assert.equal(b.timeout, 10_000);
  assert.deepEqual(a.imapAuth, ["plain", "login"]);
  assert.deepEqual(b.imapAuth, ["cram-md5"]);
  assert.equal(a.xclient, false);
  assert.equal(b.xclient, false);
});

test("loadConfig inherits server_name from the top level through mail: into each server", () => {
  const c = load(yaml(
    "server_name: top.test",
    "mail:",
    "  servers:",
    "    - listen: 143",
    "    - listen: 110",
    "      server_name: pop.test",
  ));
  assert.equal(c.serverName, "top.test");
  assert.equal(c.servers[0].serverName, "top.test");
  assert.equal(c.servers[1].serverName, "pop.test");
  const m = load(yaml("server_name: top.test", "mail:", "  server_name: mail.test", "  servers:", "    - listen: 143"));
  assert.equal(m.servers[0].serverName, "mail.test");
});

test("loadConfig inherits error_log from the top level through mail: into each server", () => {
  const c = load(yaml(
    "error_log: { level: warn, format: json }",
    "mail:",
    "  servers:",
    "    - listen: 143",
    "    - listen: 110",
    "      error_log: logs/pop3.log debug",
  ));
  assert.deepEqual(c.errorLog, [{ dest: "stderr", level: "warn", format: "json" }]);
  assert.deepEqual(c.servers[0].errorLog, [{ dest: "stderr", level: "warn", format: "json" }]);
  assert.deepEqual(c.servers[1].errorLog, [{ dest: "/etc/postern/logs/pop3.log", level: "debug", format: "text" }]);
});

test("loadConfig infers the protocol from the first standard listen port, as nginx does", () => {
  const protocolOf = (listen: string) => oneServer([`listen: ${listen}`]).protocol;
  assert.equal(protocolOf("143"), "imap");
  assert.equal(protocolOf(`"127.0.0.1:993"`), "imap");
  assert.equal(protocolOf("110"), "pop3");
  assert.equal(protocolOf("995"), "pop3");
  assert.equal(protocolOf("25"), "smtp");
  assert.equal(protocolOf("465"), "smtp");
  assert.equal(protocolOf("587"), "smtp");
  assert.equal(protocolOf(`["127.0.0.1:1025", "127.0.0.1:587"]`), "smtp");
});

test("loadConfig lets an explicit protocol win over the port", () => {
  assert.equal(oneServer(["listen: 143", "protocol: pop3"]).protocol, "pop3");
  assert.equal(oneServer(["listen: 1143", "protocol: IMAP"]).protocol, "imap");
});

test("loadConfig reads worker_processes as a number or auto, and worker_shutdown_timeout as a time", () => {
  const base = yaml("mail:", "  servers:", "    - listen: 143");
  assert.equal(load(`worker_processes: 4\n${base}`).workerProcesses, 4);
  assert.equal(load(`worker_processes: auto\n${base}`).workerProcesses, 6);
  assert.equal(load(`worker_shutdown_timeout: 30s\n${base}`).workerShutdownTimeout, 30_000);
});

test("loadConfig reads http.listen, and off or false turns the endpoint off", () => {
  const base = yaml("mail:", "  servers:", "    - listen: 143");
  assert.deepEqual(load(`http:\n  listen: 127.0.0.1:8080\n${base}`).http, { listen: { host: "127.0.0.1", port: 8080 } });
  assert.deepEqual(load(`http:\n  listen: "[::1]:8080"\n${base}`).http, { listen: { host: "::1", port: 8080 } });
  assert.deepEqual(load(`http:\n  listen: off\n${base}`).http, {});
  assert.deepEqual(load(`http:\n  listen: false\n${base}`).http, {});
});

test("loadConfig accepts a config that only serves HTTP auth, with no mail servers", () => {
  const c = load(yaml("http:", "  listen: 127.0.0.1:8080"));
  assert.deepEqual(c.servers, []);
});

test("loadConfig freezes the whole result", () => {
  const c = load(yaml("mail:", "  auth_http_header: {X-Key: k}", "  servers:", "    - listen: 143"));
  assert.ok(Object.isFrozen(c));
  assert.ok(Object.isFrozen(c.servers));
  assert.ok(Object.isFrozen(c.servers[0]));
  assert.ok(Object.isFrozen(c.servers[0].listen[0]));
  assert.ok(Object.isFrozen(c.servers[0].authHttpHeader));
  assert.ok(Object.isFrozen(c.servers[0].imapCapabilities));
  assert.ok(Object.isFrozen(c.auth.users));
  assert.ok(Object.isFrozen(c.warnings));
  assert.throws(() => {
    (c.servers[0] as { timeout: number }).timeout = 1;
  }, TypeError);
});

test("loadConfig leaves optional fields absent rather than undefined", () => {
  const s = oneServer(["listen: 143"]);
  assert.equal("proxySslName" in s, false);
  assert.equal("backlog" in s.listen[0], false);
  assert.equal("validMs" in s.resolver, false);
});

test("loadConfig resolves YAML aliases, so one anchored value can serve several servers", () => {
  const c = load(yaml(
    "mail:",
    "  servers:",
    "    - listen: 143",
    "      imap_capabilities: &caps [IMAP4rev1, IDLE]",
    "    - listen: 993",
    "      imap_capabilities: *caps",
  ));
  assert.deepEqual(c.servers[1].imapCapabilities, ["IMAP4rev1", "IDLE"]);
});

test("loadConfig accepts nginx's proxy directive, which nginx itself ignores", () => {
  assert.equal(oneServer(["listen: 143", "proxy: on"]).protocol, "imap");
});

test("a bare http port listens on every IPv4 address, as a bare listen port does in nginx", () => {
  assert.deepEqual(load(yaml("http:", "  listen: 8080")).http, { listen: { host: "0.0.0.0", port: 8080 } });
});
