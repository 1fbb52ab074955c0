import assert from "node:assert/strict";
import { test } from "node:test";
import { formatConfigError, loadConfig } from "../../src/config/load.ts";
import { errors, fakeEnv, serverYaml, yaml } from "./helpers.ts";

const F = "/etc/postern/config.yaml";

/** Errors of a config with one server made of `entry` (see serverYaml: the entry starts on line 3). */
function serverErrors(entry: string[], mailLines: string[] = []): string[] {
  return errors(serverYaml(entry, mailLines));
}

test("formatConfigError prints FILE:LINE:COL: directive: message", () => {
  assert.equal(
    formatConfigError({ file: "/a/config.yaml", line: 3, col: 7, directive: "mail.timeout", message: "bad" }),
    "/a/config.yaml:3:7: mail.timeout: bad",
  );
});

test("a YAML syntax error is reported with its position", () => {
  assert.deepEqual(errors(yaml("mail:", "  servers: [", "    - listen: 143")), [
    `${F}:3:5: yaml: block collections are not allowed within flow collections`,
    `${F}:4:1: yaml: flow sequence in block collection must be sufficiently indented and end with a ]`,
  ]);
  assert.deepEqual(errors(yaml("mail:", "  timeout: 1", "  timeout: 2")), [`${F}:3:3: yaml: map keys must be unique`]);
});

test("a file that is not a map of settings is an error at its first node", () => {
  assert.deepEqual(errors("- listen: 143\n"), [`${F}:1:1: (file): expected a map of settings (server_name:, mail:, ...), got a list`]);
});

test("an empty file is an error: there is nothing to listen on", () => {
  assert.deepEqual(errors(""), [`${F}:1:1: mail.servers: nothing to listen on: add a server under mail.servers, or http.listen`]);
});

test("an unknown key is an error suggesting the closest known one", () => {
  assert.deepEqual(serverErrors(["listen: 143", "imap_uath: [plain]"]), [
    `${F}:4:7: mail.servers[0].imap_uath: unknown directive; did you mean imap_auth?`,
  ]);
  assert.deepEqual(errors(yaml("mial:", "  servers: []", "http:", "  listen: 8080")), [
    `${F}:1:1: mial: unknown directive; did you mean mail?`,
  ]);
  assert.deepEqual(serverErrors(["listen: 143", "banana: 1"]), [`${F}:4:7: mail.servers[0].banana: unknown directive`]);
  assert.deepEqual(errors(yaml("mail:", "  server:", "    - listen: 143")), [
    `${F}:2:3: mail.server: unknown directive; did you mean servers?`,
  ]);
});

test("a key in the wrong section says where it belongs", () => {
  assert.deepEqual(errors(yaml("proxy_timeout: 1h", "http:", "  listen: 8080")), [
    `${F}:1:1: proxy_timeout: belongs under mail: (for every server) or in an entry of mail.servers`,
  ]);
  assert.deepEqual(errors(yaml("users: []", "http:", "  listen: 8080")), [`${F}:1:1: users: belongs under auth:`]);
  assert.deepEqual(serverErrors(["listen: 143", "worker_processes: 2"]), [
    `${F}:4:7: mail.servers[0].worker_processes: allowed only at the top level of the file`,
  ]);
  assert.deepEqual(serverErrors(["listen: 143"], ["listen: 143"]), [
    `${F}:2:3: mail.listen: allowed only in a server (an entry of mail.servers), as in nginx`,
  ]);
  assert.deepEqual(serverErrors(["listen: 143"], ["protocol: imap"]), [
    `${F}:2:3: mail.protocol: allowed only in a server (an entry of mail.servers), as in nginx`,
  ]);
});

test("nginx directives Postern cannot honour are rejected with the reason", () => {
  assert.deepEqual(serverErrors(["listen: 993", "ssl: on"]), [
    `${F}:4:7: mail.servers[0].ssl: not supported by Postern: the old "ssl on" is gone from nginx too; ` +
    `add "ssl" to the listen item instead, as listen: ["993 ssl"]`,
  ]);
  assert.deepEqual(serverErrors(["listen: 143"], ["ssl_conf_command: {Options: PrioritizeChaCha}"]), [
    `${F}:2:3: mail.ssl_conf_command: not supported by Postern: OpenSSL configuration commands cannot be passed to the runtimes' TLS stacks`,
  ]);
  assert.deepEqual(serverErrors(["listen: 143", "ssl_certificate_compression: on"]), [
    `${F}:4:36: mail.servers[0].ssl_certificate_compression: not supported by Postern: the runtimes' TLS stacks cannot compress certificates`,
  ]);
  assert.deepEqual(serverErrors(["listen: 143", "ssl_protocols: [SSLv3, TLSv1.2]"]), [
    `${F}:4:23: mail.servers[0].ssl_protocols[0]: not supported by Postern: SSLv3 (no runtime's TLS stack offers it)`,
  ]);
  assert.deepEqual(errors(yaml("include: other.yaml", "http:", "  listen: 8080")), [
    `${F}:1:1: include: not supported by Postern: a YAML config is one file; share settings by putting them under mail:`,
  ]);
});

test("a server without listen is an error at the server", () => {
  assert.deepEqual(errors(yaml("mail:", "  servers:", "    - protocol: imap")), [
    `${F}:3:7: mail.servers[0].listen: no "listen" is defined for this server`,
  ]);
});

test("a server on a non-standard port without protocol is an error", () => {
  assert.deepEqual(serverErrors(["listen: 1143"]), [
    `${F}:3:7: mail.servers[0].protocol: unknown; set protocol or use a standard port (143, 993, 110, 995, 25, 465, 587)`,
  ]);
  assert.deepEqual(serverErrors(["listen: 143", "protocol: nntp"]), [
    `${F}:4:17: mail.servers[0].protocol: expected one of imap, pop3, smtp; got "nntp"`,
  ]);
});

test("the same address in two servers is an error at the second, naming the first", () => {
  assert.deepEqual(
    errors(yaml(
      "mail:",
      "  servers:",
      "    - listen: [127.0.0.1:143, \"[::1]:143\"]",
      "    - listen: \"[0:0::1]:143\"",
      "    - listen: \"127.0.0.1:143 ssl\"",
      "      ssl_certificate: data:x",
      "      ssl_certificate_key: data:y",
    )),
    [
      `${F}:4:15: mail.servers[1].listen: duplicate "[::1]:143" address and port pair; first at 3:31`,
      `${F}:5:15: mail.servers[2].listen: duplicate "127.0.0.1:143" address and port pair; first at 3:16`,
      `${F}:6:24: mail.servers[2].ssl_certificate: no PEM certificate in the inline data`,
      `${F}:7:28: mail.servers[2].ssl_certificate_key: no PEM private key in the inline data`,
    ],
  );
});

test("the http endpoint cannot share an address with a mail server", () => {
  assert.deepEqual(errors(yaml("http:", "  listen: 127.0.0.1:8080", "mail:", "  servers:", "    - listen: 127.0.0.1:8080", "      protocol: imap")), [
    `${F}:5:15: mail.servers[0].listen: duplicate "127.0.0.1:8080" address and port pair; first at 2:11`,
  ]);
});

test("server_name and capabilities must be ASCII: they go to clients and backends as they are", () => {
  assert.deepEqual(
    serverErrors([
      "listen: 143",
      "server_name: poczta.zażółć.pl",
      "imap_capabilities: [IMAP4rev1, \"X-ŁÓDŹ\"]",
    ]),
    [
      `${F}:4:20: mail.servers[0].server_name: expected a host name in ASCII (an international name in its xn-- form), got "poczta.zażółć.pl"`,
      `${F}:5:26: mail.servers[0].imap_capabilities: capabilities are ASCII protocol words, got "X-ŁÓDŹ"`,
    ],
  );
});

test("values of the wrong type say what was expected and what was found", () => {
  assert.deepEqual(
    serverErrors([
      "listen: 143",
      "proxy_buffer: abc",
      "timeout: soon",
      "xclient: yes",
      "max_errors: -1",
      "imap_client_buffer: 0",
      "proxy_timeout: [1h]",
      "server_name: mail example",
      "starttls: maybe",
    ]),
    [
      `${F}:4:21: mail.servers[0].proxy_buffer: expected a size like 16k, got "abc"`,
      `${F}:5:16: mail.servers[0].timeout: expected a time like 30s or 1h30m, got "soon"`,
      `${F}:6:16: mail.servers[0].xclient: expected on or off, got "yes"`,
      `${F}:7:19: mail.servers[0].max_errors: expected a whole number of at least 0, got -1`,
      `${F}:8:27: mail.servers[0].imap_client_buffer: must be larger than 0`,
      `${F}:9:22: mail.servers[0].proxy_timeout: expected a time like 30s or 1h30m, got a list`,
      `${F}:10:20: mail.servers[0].server_name: expected a host name without spaces, got "mail example"`,
      `${F}:11:17: mail.servers[0].starttls: expected one of off, on, only; got "maybe"`,
    ],
  );
});

test("a key with no value is an error at the key", () => {
  assert.deepEqual(serverErrors(["listen: 143", "timeout:"]), [
    `${F}:4:7: mail.servers[0].timeout: expected a time like 30s or 1h30m, got nothing`,
  ]);
});

test("an unknown auth mechanism is an error naming the word and the allowed ones", () => {
  assert.deepEqual(serverErrors(["listen: 143", "imap_auth: [plain, digest-md5]", "pop3_auth: user", "smtp_auth: apop"]), [
    `${F}:4:26: mail.servers[0].imap_auth[1]: unknown mechanism "digest-md5"; expected plain, login, cram-md5, external`,
    `${F}:5:18: mail.servers[0].pop3_auth: unknown mechanism "user"; expected plain, apop, cram-md5, external`,
    `${F}:6:18: mail.servers[0].smtp_auth: unknown mechanism "apop"; expected plain, login, cram-md5, external, none`,
  ]);
  assert.deepEqual(serverErrors(["listen: 143", "imap_auth: []"]), [
    `${F}:4:18: mail.servers[0].imap_auth: expected at least one word, got an empty list`,
  ]);
});

test("bad listen items are errors at the item", () => {
  assert.deepEqual(
    serverErrors([
      "listen:",
      "  - 127.0.0.1",
      "  - \"143 reuseport\"",
      "  - \"::1:143\"",
      "  - {address: 993, ssl: maybe, backlg: 5}",
      "  - {ssl: on}",
      "  - unix:/run/imap.sock",
      "  - \"[::]:1143 so_keepalive=1m:10s:3\"",
    ]),
    [
      `${F}:4:11: mail.servers[0].listen[0]: missing port in "127.0.0.1"`,
      `${F}:5:11: mail.servers[0].listen[1]: invalid parameter "reuseport"`,
      `${F}:6:11: mail.servers[0].listen[2]: put an IPv6 address in brackets, as "[::1]:143", got "::1:143"`,
      `${F}:7:31: mail.servers[0].listen[3].ssl: expected on or off, got "maybe"`,
      `${F}:7:38: mail.servers[0].listen[3].backlg: unknown directive; did you mean backlog?`,
      `${F}:8:11: mail.servers[0].listen[4]: missing "address", as {address: "127.0.0.1:993", ssl: on}`,
      `${F}:9:11: mail.servers[0].listen[5]: not supported by Postern: unix sockets ("unix:/run/imap.sock")`,
      `${F}:10:11: mail.servers[0].listen[6]: not supported by Postern: so_keepalive timings ("1m:10s:3"); ` +
      `the runtimes only switch TCP keepalive on or off`,
    ],
  );
});

test("bad resolver forms are errors", () => {
  assert.deepEqual(serverErrors(["listen: 25", "resolver: [dns.example.com]"]), [
    `${F}:4:18: mail.servers[0].resolver[0]: expected an IP address, got "dns.example.com"`,
  ]);
  assert.deepEqual(serverErrors(["listen: 25", "resolver: \"10.0.0.1 ipv4=off ipv6=off\""]), [
    `${F}:4:17: mail.servers[0].resolver: "ipv4" and "ipv6" cannot both be off`,
  ]);
  assert.deepEqual(serverErrors(["listen: 25", "resolver: \"10.0.0.1 status_zone=z\""]), [
    `${F}:4:17: mail.servers[0].resolver: not supported by Postern: status_zone (there is no shared-memory status)`,
  ]);
  assert.deepEqual(serverErrors(["listen: 25", "resolver: {valid: 30s}"]), [
    `${F}:4:17: mail.servers[0].resolver: missing "address", as {address: [127.0.0.1]}`,
  ]);
  assert.deepEqual(serverErrors(["listen: 25", "resolver: {address: 10.0.0.1, ttl: 5}"]), [
    `${F}:4:37: mail.servers[0].resolver.ttl: unknown directive`,
  ]);
});

test("bad error_log forms are errors", () => {
  assert.deepEqual(serverErrors(["listen: 143", "error_log: off"]), [
    `${F}:4:18: mail.servers[0].error_log: "off" would be a file named "off" in nginx too; to quieten the log, raise its level (crit)`,
  ]);
  assert.deepEqual(serverErrors(["listen: 143", "error_log: \"stderr loud\""]), [
    `${F}:4:18: mail.servers[0].error_log: expected one of debug, info, notice, warn, error, crit, alert, emerg; got "loud"`,
  ]);
  assert.deepEqual(serverErrors(["listen: 143", "error_log: syslog:facility=mail"]), [
    `${F}:4:18: mail.servers[0].error_log: "syslog:facility=mail": syslog needs "server=ADDRESS", as syslog:server=127.0.0.1`,
  ]);
  assert.deepEqual(serverErrors(["listen: 143", "error_log: memory:32m"]), [
    `${F}:4:18: mail.servers[0].error_log: not supported by Postern: memory logs (a debugging aid of nginx)`,
  ]);
  assert.deepEqual(serverErrors(["listen: 143", "error_log: [{format: xml}]"]), [
    `${F}:4:28: mail.servers[0].error_log[0].format: expected one of text, json; got "xml"`,
  ]);
});

test("bad auth_http values are errors", () => {
  assert.deepEqual(serverErrors(["listen: 143", "auth_http: ftp://x/"]), [
    `${F}:4:18: mail.servers[0].auth_http: expected builtin or an http:// or https:// URL, got "ftp://x/"`,
  ]);
  assert.deepEqual(serverErrors(["listen: 143", "auth_http: unix:/run/auth.sock"]), [
    `${F}:4:18: mail.servers[0].auth_http: not supported by Postern: auth_http over a unix socket ("unix:/run/auth.sock"); use http://`,
  ]);
  assert.deepEqual(serverErrors(["listen: 143", "auth_http_header: {\"Bad Name\": x, X-Ok: [1]}"]), [
    `${F}:4:26: mail.servers[0].auth_http_header.Bad Name: invalid header name "Bad Name"`,
    `${F}:4:47: mail.servers[0].auth_http_header.X-Ok: expected a header value (a string on one line), got a list`,
  ]);
});

test("set_real_ip_from rejects host names and bad prefixes", () => {
  assert.deepEqual(serverErrors(["listen: 143", "set_real_ip_from: [lb.example.com, 10.0.0.0/40]"]), [
    `${F}:4:26: mail.servers[0].set_real_ip_from[0]: expected an IP address, a CIDR like 10.0.0.0/8 or "unix:", got "lb.example.com"`,
    `${F}:4:42: mail.servers[0].set_real_ip_from[1]: invalid prefix length in "10.0.0.0/40"`,
  ]);
});

test("bad top-level values are errors", () => {
  assert.deepEqual(errors(yaml("worker_processes: 0", "worker_shutdown_timeout: later", "http:", "  listen: 8080")), [
    `${F}:1:19: worker_processes: expected auto or a number of at least 1, got 0`,
    `${F}:2:26: worker_shutdown_timeout: expected a time like 30s or 1h30m, got "later"`,
  ]);
  assert.deepEqual(errors(yaml("http:", "  port: 8080")), [
    `${F}:2:3: http.port: unknown directive`,
    `${F}:2:3: http: missing "listen"; give an address like 127.0.0.1:8080, or off`,
  ]);
  assert.deepEqual(errors(yaml("http:", "  listen: 127.0.0.1", "mail: [a]")), [
    `${F}:2:11: http.listen: missing port in "127.0.0.1"`,
    `${F}:3:7: mail: expected a map of mail directives and servers, got a list`,
  ]);
  assert.deepEqual(errors(yaml("mail:", "  servers: {listen: 143}")), [
    `${F}:2:12: mail.servers: expected a list of servers, got a map`,
  ]);
  assert.deepEqual(errors(yaml("mail:", "  servers:", "    - 143")), [
    `${F}:3:7: mail.servers[0]: expected a server (a map with listen:, protocol:, ...), got 143`,
  ]);
});

test("YAML merge keys are refused with a pointer to mail:", () => {
  assert.deepEqual(
    errors(yaml("mail:", "  servers:", "    - &a {listen: 143}", "    - <<: *a", "      listen: 110")),
    [`${F}:4:7: mail.servers[1].<<: YAML merge keys are not supported; put shared settings under mail:`],
  );
});

test("bad auth users are errors at the entry or the field", () => {
  assert.deepEqual(
    errors(yaml(
      "http:",
      "  listen: 8080",
      "auth:",
      "  max_attempts: 0",
      "  users:",
      "    - password_hash: \"scrypt$16384$8$1$c2FsdA==$aGFzaA==\"",
      "      backend: 127.0.0.1:143",
      "    - user: b",
      "      password: x",
      "      password_hash: \"scrypt$16384$8$1$c2FsdA==$aGFzaA==\"",
      "      backend: 127.0.0.1:143",
      "    - user: c",
      "      password_hash: \"md5$abc\"",
      "      backend: 127.0.0.1",
      "    - user: d",
      "      password: 1234",
      "      backend: {host: 10.0.0.1}",
      "    - user: e",
      "      password_hash: \"scrypt$16384$8$1$c2FsdA==$aGFzaA==\"",
      "    - user: a",
      "      password_hash: \"scrypt$16384$8$1$c2FsdA==$aGFzaA==\"",
      "      backend: {host: 10.0.0.1, port: 143}",
      "    - user: a",
      "      password_hash: \"scrypt$16384$8$1$c2FsdA==$aGFzaA==\"",
      "      backend: 10.0.0.2:143",
      "      port: 1",
    )),
    [
      `${F}:4:17: auth.max_attempts: expected a whole number of at least 1, got 0`,
      `${F}:6:7: auth.users[0]: missing "user"`,
      `${F}:9:17: auth.users[1].password: give either "password_hash" or "password", not both`,
      `${F}:13:22: auth.users[2].password_hash: expected "scrypt$N$r$p$salt$hash" (base64 salt and hash), as "postern hash-password" prints`,
      `${F}:14:16: auth.users[2].backend: missing port in "127.0.0.1"`,
      `${F}:16:17: auth.users[3].password: expected a string, got 1234; put it in quotes`,
      `${F}:17:16: auth.users[3].backend: expected {host, port}, as {host: 127.0.0.1, port: 143}`,
      `${F}:18:7: auth.users[4]: missing "backend", as backend: 127.0.0.1:143`,
      `${F}:23:7: auth.users[6]: duplicate user "a"; first at 20:7`,
      `${F}:26:7: auth.users[6].port: unknown directive`,
    ],
  );
});

test("auth.cache_ttl must be a time, and belongs under auth:", () => {
  const auth = (...lines: string[]) => errors(yaml("http:", "  listen: 8080", "auth:", ...lines));
  assert.deepEqual(auth("  cache_ttl: soon"), [`${F}:4:14: auth.cache_ttl: expected a time like 30s or 1h30m, got "soon"`]);
  assert.deepEqual(auth("  cache_ttl: -1"), [`${F}:4:14: auth.cache_ttl: expected a time like 30s or 1h30m, got -1`]);
  assert.deepEqual(auth("  cache_ttl: 1h5h"), [`${F}:4:14: auth.cache_ttl: expected a time like 30s or 1h30m, got "1h5h": units must go from larger to smaller, each once`]);
  assert.deepEqual(auth("  cache_tll: 1h"), [`${F}:4:3: auth.cache_tll: unknown directive; did you mean cache_ttl?`]);
  assert.deepEqual(errors(yaml("cache_ttl: 1h", "http:", "  listen: 8080")), [`${F}:1:1: cache_ttl: belongs under auth:`]);
  assert.deepEqual(serverErrors(["listen: 143", "cache_ttl: 1h"]), [`${F}:4:7: mail.servers[0].cache_ttl: belongs under auth:`]);
});

test("a per-protocol backend map names bad protocols and bad addresses", () => {
  assert.deepEqual(
    errors(yaml(
      "http:",
      "  listen: 8080",
      "auth:",
      "  users:",
      "    - user: a",
      "      password: x",
      "      backend: {imap: 10.0.0.1:143, pop: 10.0.0.1:110}",
      "    - user: b",
      "      password: x",
      "      backend: {pop3: 10.0.0.1, smtp: {host: 10.0.0.1}}",
    )),
    [
      `${F}:7:37: auth.users[0].backend.pop: unknown directive; did you mean pop3?`,
      `${F}:10:23: auth.users[1].backend.pop3: missing port in "10.0.0.1"`,
      `${F}:10:39: auth.users[1].backend.smtp: expected {host, port}, as {host: 127.0.0.1, port: 143}`,
    ],
  );
});

test("a duplicate auth user is an error naming the first", () => {
  assert.deepEqual(
    errors(yaml(
      "http:",
      "  listen: 8080",
      "auth:",
      "  users:",
      "    - {user: a, password_hash: \"scrypt$16384$8$1$c2FsdA==$aGFzaA==\", backend: \"10.0.0.1:143\"}",
      "    - {user: a, password_hash: \"scrypt$16384$8$1$c2FsdA==$aGFzaA==\", backend: \"10.0.0.2:143\"}",
    )),
    [`${F}:6:7: auth.users[1]: duplicate user "a"; first at 5:7`],
  );
});

test("every error in a file is reported at once, in file order", () => {
  const text = yaml(
    "worker_processes: none",
    "mail:",
    "  proxy_buffer: 0",
    "  servers:",
    "    - listen: 1143",
    "      timeout: never",
    "    - listen: 143",
    "      imap_auth: [kerberos]",
    "    - listen: 143",
  );
  assert.deepEqual(errors(text), [
    `${F}:1:19: worker_processes: expected auto or a number of at least 1, got "none"`,
    `${F}:3:17: mail.proxy_buffer: must be larger than 0`,
    `${F}:5:7: mail.servers[0].protocol: unknown; set protocol or use a standard port (143, 993, 110, 995, 25, 465, 587)`,
    `${F}:6:16: mail.servers[0].timeout: expected a time like 30s or 1h30m, got "never"`,
    `${F}:8:19: mail.servers[1].imap_auth[0]: unknown mechanism "kerberos"; expected plain, login, cram-md5, external`,
    `${F}:9:15: mail.servers[2].listen: duplicate "0.0.0.0:143" address and port pair; first at 7:15`,
  ]);
});

test("an error in a mail-level value is reported once, not once per server", () => {
  const text = yaml(
    "mail:",
    "  starttls: on",
    "  servers:",
    "    - listen: 143",
    "    - listen: 110",
  );
  assert.deepEqual(errors(text), [`${F}:2:13: mail.starttls: no "ssl_certificate" is defined for "starttls"`]);
});

test("loadConfig reports errors with the file name it was given", () => {
  const r = loadConfig("nope: 1\n", "relative/config.yaml", fakeEnv());
  assert.equal(r.ok, false);
  if (!r.ok) assert.equal(formatConfigError(r.errors[0]), "relative/config.yaml:1:1: nope: unknown directive");
});

test("a file with several YAML documents is an error", () => {
  assert.deepEqual(errors(yaml("http:", "  listen: 8080", "---", "mail: {}")), [
    `${F}:3:1: yaml: source contains multiple documents; please use YAML.parseAllDocuments()`,
  ]);
});

test("the same address twice in one server is an error too", () => {
  assert.deepEqual(errors(serverYaml(["listen: [\"*:143\", 0.0.0.0:143]"])), [
    `${F}:3:25: mail.servers[0].listen[1]: duplicate "0.0.0.0:143" address and port pair; first at 3:16`,
  ]);
});
