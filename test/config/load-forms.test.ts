import assert from "node:assert/strict";
import { test } from "node:test";
import { load, oneServer, yaml } from "./helpers.ts";

test("listen takes one item or a list, in nginx syntax, as a bare port, or as a map", () => {
  assert.equal(oneServer(["listen: 127.0.0.1:1143", "protocol: imap"]).listen.length, 1);
  const s = oneServer([
    "listen:",
    "  - 127.0.0.1:143",
    "  - \"[::1]:143 proxy_protocol\"",
    "  - 1143",
    "  - \"*:2143 backlog=511\"",
    "  - {address: \"[::]:3143\", ipv6only: off, so_keepalive: on, rcvbuf: 64k, sndbuf: 8192}",
    "  - {address: 4143, proxy_protocol: true, bind: on}",
  ]);
  assert.deepEqual(s.listen, [
    { host: "127.0.0.1", port: 143, ssl: false, proxyProtocol: false, bind: false, soKeepalive: false, source: "127.0.0.1:143" },
    { host: "::1", port: 143, ssl: false, proxyProtocol: true, bind: false, ipv6only: true, soKeepalive: false, source: "[::1]:143 proxy_protocol" },
    { host: "0.0.0.0", port: 1143, ssl: false, proxyProtocol: false, bind: false, soKeepalive: false, source: "1143" },
    { host: "0.0.0.0", port: 2143, ssl: false, proxyProtocol: false, backlog: 511, bind: true, soKeepalive: false, source: "*:2143 backlog=511" },
    {
      host: "::",
      port: 3143,
      ssl: false,
      proxyProtocol: false,
      rcvbuf: 65536,
      sndbuf: 8192,
      bind: true,
      ipv6only: false,
      soKeepalive: true,
      source: "[::]:3143 rcvbuf=65536 sndbuf=8192 ipv6only=off so_keepalive=on",
    },
    { host: "0.0.0.0", port: 4143, ssl: false, proxyProtocol: true, bind: true, soKeepalive: false, source: "0.0.0.0:4143 proxy_protocol bind" },
  ]);
  assert.equal(s.protocol, "imap");
});

test("listen accepts host names as written", () => {
  assert.equal(oneServer(["listen: localhost:1143", "protocol: imap"]).listen[0].host, "localhost");
});

test("resolver takes off, a list, an nginx string with options, or a map", () => {
  const r = (value: string) => oneServer(["listen: 25", `resolver: ${value}`]).resolver;
  assert.deepEqual(r("off"), { addresses: [], ipv4: true, ipv6: true });
  assert.deepEqual(r("false"), { addresses: [], ipv4: true, ipv6: true });
  assert.deepEqual(r("[127.0.0.1, \"[::1]:5353\"]"), {
    addresses: [{ host: "127.0.0.1", port: 53 }, { host: "::1", port: 5353 }],
    ipv4: true,
    ipv6: true,
  });
  assert.deepEqual(r("\"10.0.0.53 valid=30s ipv6=off\""), {
    addresses: [{ host: "10.0.0.53", port: 53 }],
    validMs: 30_000,
    ipv4: true,
    ipv6: false,
  });
  assert.deepEqual(r("{address: [10.0.0.53, 10.0.0.54:5353], valid: 5m, ipv4: on, ipv6: off}"), {
    addresses: [{ host: "10.0.0.53", port: 53 }, { host: "10.0.0.54", port: 5353 }],
    validMs: 300_000,
    ipv4: true,
    ipv6: false,
  });
  assert.deepEqual(r("{address: 2001:db8::53}").addresses, [{ host: "2001:db8::53", port: 53 }]);
});

test("error_log takes the nginx string form, the map form, and a list of both", () => {
  const e = (value: string) => oneServer(["listen: 143", `error_log: ${value}`]).errorLog;
  assert.deepEqual(e("stderr"), [{ dest: "stderr", level: "error", format: "text" }]);
  assert.deepEqual(e("\"stderr notice\""), [{ dest: "stderr", level: "notice", format: "text" }]);
  assert.deepEqual(e("/var/log/postern.log"), [{ dest: "/var/log/postern.log", level: "error", format: "text" }]);
  assert.deepEqual(e("\"syslog:server=127.0.0.1:514,tag=postern warn\""), [
    { dest: "syslog:server=127.0.0.1:514,tag=postern", level: "warn", format: "text" },
  ]);
  assert.deepEqual(e("{level: info}"), [{ dest: "stderr", level: "info", format: "text" }]);
  assert.deepEqual(e("{dest: ../log/mail.json, format: json, level: debug}"), [
    { dest: "/etc/log/mail.json", level: "debug", format: "json" },
  ]);
  assert.deepEqual(e("[stderr info, {dest: mail.log, format: json}]"), [
    { dest: "stderr", level: "info", format: "text" },
    { dest: "/etc/postern/mail.log", level: "error", format: "json" },
  ]);
});

test("auth_http takes builtin, http and https URLs, and nginx's scheme-less form", () => {
  const a = (value: string) => oneServer(["listen: 143"], [`auth_http: ${value}`]).authHttp;
  assert.equal(a("builtin"), "builtin");
  assert.equal(a("http://127.0.0.1:9000/auth"), "http://127.0.0.1:9000/auth");
  assert.equal(a("https://auth.example.com/mail"), "https://auth.example.com/mail");
  assert.equal(a("localhost:9000/cgi-bin/auth"), "http://localhost:9000/cgi-bin/auth");
});

test("auth_http_header takes a map of names to values, and a server's map replaces mail's", () => {
  const c = load(yaml(
    "mail:",
    "  auth_http_header: {X-Auth-Key: s3cret, X-Port: 8080}",
    "  servers:",
    "    - listen: 143",
    "    - listen: 110",
    "      auth_http_header: {X-Other: yes}",
  ));
  assert.deepEqual(c.servers[0].authHttpHeader, { "X-Auth-Key": "s3cret", "X-Port": "8080" });
  assert.deepEqual(c.servers[1].authHttpHeader, { "X-Other": "yes" });
});

test("set_real_ip_from takes one address or a list of addresses, CIDRs and unix:", () => {
  assert.deepEqual(oneServer(["listen: 143", "set_real_ip_from: 10.0.0.0/8"]).setRealIpFrom, ["10.0.0.0/8"]);
  assert.deepEqual(
    oneServer(["listen: 143", "set_real_ip_from: [10.0.0.0/8, 192.168.1.1, \"2001:db8::/32\", \"unix:\"]"]).setRealIpFrom,
    ["10.0.0.0/8", "192.168.1.1", "2001:db8::/32", "unix:"],
  );
});

test("set_real_ip_from warns about meaningless low bits, as nginx does", () => {
  const c = load(yaml("mail:", "  servers:", "    - listen: 143", "      set_real_ip_from: 10.1.2.3/8"));
  assert.deepEqual(c.warnings, [
    "/etc/postern/config.yaml:4:25: mail.servers[0].set_real_ip_from: low address bits of 10.1.2.3/8 are meaningless",
  ]);
});

test("the *_auth lists take a YAML list or a string, any case, and keep nginx's order without duplicates", () => {
  const s = oneServer([
    "listen: 25",
    "smtp_auth: [LOGIN, none, plain]",
    "imap_auth: \"external CRAM-MD5 plain\"",
    "pop3_auth: [apop, plain]",
  ]);
  assert.deepEqual(s.smtpAuth, ["plain", "login", "none"]);
  assert.deepEqual(s.imapAuth, ["plain", "cram-md5", "external"]);
  assert.deepEqual(s.pop3Auth, ["plain", "apop"]);
});

test("a duplicate mechanism is a warning, as in nginx", () => {
  const c = load(yaml("mail:", "  servers:", "    - listen: 143", "      imap_auth: [plain, plain]"));
  assert.deepEqual(c.servers[0].imapAuth, ["plain"]);
  assert.deepEqual(c.warnings, [`/etc/postern/config.yaml:4:26: mail.servers[0].imap_auth[1]: duplicate value "plain"`]);
});

test("capabilities keep each list item whole and as written, and split a string on spaces", () => {
  const s = oneServer([
    "listen: 25",
    "smtp_capabilities: [PIPELINING, \"SIZE 10485760\", 8BITMIME, ENHANCEDSTATUSCODES]",
    "imap_capabilities: IMAP4rev1 IDLE LITERAL+ SASL-IR",
    "pop3_capabilities: [TOP, USER, UIDL, PIPELINING]",
  ]);
  assert.deepEqual(s.smtpCapabilities, ["PIPELINING", "SIZE 10485760", "8BITMIME", "ENHANCEDSTATUSCODES"]);
  assert.deepEqual(s.imapCapabilities, ["IMAP4rev1", "IDLE", "LITERAL+", "SASL-IR"]);
  assert.deepEqual(s.pop3Capabilities, ["TOP", "USER", "UIDL", "PIPELINING"]);
});

test("on/off directives take YAML booleans and the strings on and off", () => {
  const s = oneServer([
    "listen: 25",
    "xclient: off",
    "proxy_smtp_auth: true",
    "proxy_pass_error_message: \"on\"",
    "auth_http_pass_client_cert: true",
    "ssl_prefer_server_ciphers: ON",
    "ssl_session_tickets: false",
  ]);
  assert.equal(s.xclient, false);
  assert.equal(s.proxySmtpAuth, true);
  assert.equal(s.proxyPassErrorMessage, true);
  assert.equal(s.authHttpPassClientCert, true);
  assert.equal(s.sslPreferServerCiphers, true);
  assert.equal(s.sslSessionTickets, false);
});

test("proxy_protocol takes on, off, v1, v2 and booleans, with on meaning v1", () => {
  const p = (value: string) => oneServer(["listen: 143", `proxy_protocol: ${value}`]).proxyProtocol;
  assert.equal(p("on"), "v1");
  assert.equal(p("true"), "v1");
  assert.equal(p("v1"), "v1");
  assert.equal(p("v2"), "v2");
  assert.equal(p("off"), "off");
  assert.equal(p("false"), "off");
});

test("starttls, proxy_ssl and ssl_verify_client take their words, and booleans as on/off", () => {
  assert.equal(oneServer(["listen: 143", "proxy_ssl: starttls"]).proxySsl, "starttls");
  assert.equal(oneServer(["listen: 143", "proxy_ssl: true"]).proxySsl, "on");
  assert.equal(oneServer(["listen: 143", "starttls: false"]).starttls, "off");
  assert.equal(oneServer(["listen: 143", "ssl_verify_client: optional_no_ca"]).sslVerifyClient, "optional_no_ca");
});

test("sizes and times take numbers and nginx strings", () => {
  const s = oneServer([
    "listen: 25",
    "proxy_buffer: 16k",
    "imap_client_buffer: 8192",
    "pop3_client_buffer: 1m",
    "smtp_client_buffer: 2k",
    "timeout: 90",
    "resolver_timeout: 5s",
    "auth_http_timeout: 1m30s",
    "proxy_timeout: 10m",
    "smtp_greeting_delay: 500ms",
    "ssl_session_timeout: 1d",
    "max_errors: 0",
    "ssl_verify_depth: 3",
  ]);
  assert.equal(s.proxyBuffer, 16384);
  assert.equal(s.imapClientBuffer, 8192);
  assert.equal(s.pop3ClientBuffer, 1048576);
  assert.equal(s.smtpClientBuffer, 2048);
  assert.equal(s.timeout, 90_000);
  assert.equal(s.resolverTimeout, 5000);
  assert.equal(s.authHttpTimeout, 90_000);
  assert.equal(s.proxyTimeout, 600_000);
  assert.equal(s.smtpGreetingDelay, 500);
  assert.equal(s.sslSessionTimeout, 86_400_000);
  assert.equal(s.maxErrors, 0);
  assert.equal(s.sslVerifyDepth, 3);
});

test("ssl_protocols, ssl_session_cache and the cipher settings are kept in nginx's spelling", () => {
  const s = oneServer([
    "listen: 143",
    "ssl_protocols: tlsv1.3 TLSv1.2",
    "ssl_session_cache: [\"shared:SSL:10m\", builtin:1000]",
    "ssl_ciphers: ECDHE+AESGCM:!aNULL",
    "ssl_ecdh_curve: X25519:prime256v1",
  ]);
  assert.deepEqual(s.sslProtocols, ["TLSv1.2", "TLSv1.3"]);
  assert.deepEqual(s.sslSessionCache, ["shared:SSL:10m", "builtin:1000"]);
  assert.equal(s.sslCiphers, "ECDHE+AESGCM:!aNULL");
  assert.equal(s.sslEcdhCurve, "X25519:prime256v1");
  assert.deepEqual(oneServer(["listen: 143", "ssl_session_cache: off"]).sslSessionCache, ["off"]);
});

test("auth.cache_ttl takes a time; 0 turns the cache off", () => {
  const ttl = (value: string) => load(yaml("http:", "  listen: 8080", "auth:", `  cache_ttl: ${value}`)).auth.cacheTtl;
  assert.equal(ttl("0"), 0);
  assert.equal(ttl("90"), 90_000);
  assert.equal(ttl("1h30m"), 5_400_000);
  assert.equal(ttl("500ms"), 500);
  assert.equal(load(yaml("http:", "  listen: 8080", "auth:", "  max_attempts: 2")).auth.cacheTtl, 3_600_000);
});

test("the auth section reads users with a hash or a plain password, and backends as strings or maps", () => {
  const c = load(yaml(
    "http:",
    "  listen: 127.0.0.1:8080",
    "auth:",
    "  failure_delay: 1s",
    "  max_attempts: 5",
    "  users:",
    "    - user: alice@example.com",
    "      password_hash: \"scrypt$16384$8$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==\"",
    "      backend: 127.0.0.1:143",
    "    - user: bob",
    "      password: \"0123\"",
    "      backend: {host: \"[::1]\", port: 993}",
    "      backend_user: robert",
    "      backend_password: other",
  ));
  assert.equal(c.auth.failureDelay, 1000);
  assert.equal(c.auth.maxAttempts, 5);
  assert.deepEqual(c.auth.users, [
    {
      user: "alice@example.com",
      passwordHash: "scrypt$16384$8$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
      backends: { imap: { host: "127.0.0.1", port: 143 }, pop3: { host: "127.0.0.1", port: 143 }, smtp: { host: "127.0.0.1", port: 143 } },
    },
    {
      user: "bob",
      password: "0123",
      backends: { imap: { host: "::1", port: 993 }, pop3: { host: "::1", port: 993 }, smtp: { host: "::1", port: 993 } },
      backendUser: "robert",
      backendPassword: "other",
    },
  ]);
  assert.deepEqual(c.warnings, [
    `/etc/postern/config.yaml:11:17: auth.users[1].password: plain-text password; use "postern hash-password"`,
  ]);
});

test("a user's backend may be a map by protocol, each an address string or {host, port}", () => {
  const c = load(yaml(
    "http:",
    "  listen: 127.0.0.1:8080",
    "auth:",
    "  users:",
    "    - user: carol",
    "      password: \"pw\"",
    "      backend:",
    "        imap: 10.0.0.1:143",
    "        pop3: {host: \"[::1]\", port: 110}",
    "    - {user: dave, password: \"pw\", backend: {smtp: \"10.0.0.3:25\"}}",
  ));
  assert.deepEqual(c.auth.users.map((u) => u.backends), [
    { imap: { host: "10.0.0.1", port: 143 }, pop3: { host: "::1", port: 110 } },
    { smtp: { host: "10.0.0.3", port: 25 } },
  ]);
});

test("cram-md5 or apop with the built-in service and hashed passwords is a warning", () => {
  const c = load(yaml(
    "auth:",
    "  users:",
    "    - {user: a, password_hash: \"scrypt$16384$8$1$c2FsdA==$aGFzaA==\", backend: \"127.0.0.1:110\"}",
    "mail:",
    "  servers:",
    "    - listen: 110",
    "      pop3_auth: [plain, apop]",
  ));
  assert.deepEqual(c.warnings, [
    "/etc/postern/config.yaml:7:26: mail.servers[0].pop3_auth[1]: apop needs the plain-text password, " +
    "which the built-in auth service does not have for users with a password_hash",
  ]);
});

test("relative paths resolve against the config file's directory, on Windows too", () => {
  const c = load(yaml("error_log: \"..\\\\logs\\\\postern.log\"", "http:", "  listen: 8080"), {}, "C:\\postern\\conf\\config.yaml");
  assert.equal(c.errorLog[0].dest, "C:\\postern\\logs\\postern.log");
  const d = load(yaml("error_log: ./logs/./x.log", "http:", "  listen: 8080"), {}, "/srv/postern/config.yaml");
  assert.equal(d.errorLog[0].dest, "/srv/postern/logs/x.log");
  const e = load(yaml("error_log: /var/log/x.log", "http:", "  listen: 8080"), {}, "/srv/postern/config.yaml");
  assert.equal(e.errorLog[0].dest, "/var/log/x.log");
});
