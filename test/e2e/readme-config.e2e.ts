// The README's "A production configuration" block, as a new user would copy it, under each target
// (node, deno, bun, binary):
//   1. the block exactly as README.md has it (read at test time), with the certificate files it
//      names made by the test CA, passes `postern -t`;
//   2. the same block with only what cannot work on a test machine rewritten (listen addresses
//      and ports, the [::] listens, error_log, the http port, set_real_ip_from, the user's
//      password hash and backends, proxy_ssl_name; nothing else: a diff of the two proves it)
//      runs behind a real HAProxy (send-proxy-v2) in front of a real Dovecot and Postfix over TLS:
//      `openssl s_client` logs in over implicit TLS (993/995/465) and over STARTTLS (143/110/587),
//      the STARTTLS listeners refuse a login before TLS as nginx does, Postern logs the client
//      HAProxy saw, and Dovecot and Postfix log the login;
//   3. -t and the start agree about the block's error_log when its directory does not exist (as
//      /var/log/postern on a new host): nginx -t opens the log and fails, so must `postern -t`.
// Clients bind 127.0.0.2; HAProxy and Postern connect from 127.0.0.1. One Postern (with its
// worker_processes: auto) and one HAProxy per target; one Dovecot and one Postfix for all.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { isMap, isSeq, parse as parseYaml, parseDocument } from "yaml";
import { makeTlsTestPki } from "../support/certs.ts";
import { type Dovecot, type DovecotLogin, startDovecot } from "../support/dovecot.ts";
import { type Haproxy, startHaproxy } from "../support/haproxy.ts";
import { connectClient } from "../support/line-client.ts";
import { freePorts, waitFor } from "../support/ports.ts";
import { type Postfix, startPostfix } from "../support/postfix.ts";
import { type Postern, repoRoot, runPostern, startPostern, type Target, targets } from "../support/postern.ts";
import { sClient, type SClientStep, servedSubject } from "../support/s-client.ts";

const ALICE = "alice@example.com";
const ALICE_PASS = "readme-Alice-pw-42"; // hashed with `postern hash-password` for the run
const PLAIN_ALICE = Buffer.from(`\0${ALICE}\0${ALICE_PASS}`).toString("base64");
const BACKEND_NAME = "mail.postern.test"; // in the SAN of the test PKI's server leaves
const CLIENT_ADDR = "127.0.0.2"; // where the test's clients connect from: what HAProxy sees
const PROTOCOLS = ["imap", "pop3", "smtp"] as const;
type Protocol = (typeof PROTOCOLS)[number];
/** What the README's backends must be, since it says `proxy_ssl: on` (implicit TLS). */
const IMPLICIT_TLS_PORT: Record<Protocol, number> = { imap: 993, pop3: 995, smtp: 465 };

const re = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

// ---------------------------------------------------------------------------------------------
// The block, read from README.md

function readmeBlock(): string {
  const file = path.join(repoRoot(), "README.md");
  const md = fs.readFileSync(file, "utf8");
  const heading = /^## A production configuration[ \t]*$/m.exec(md);
  assert.ok(heading, `${file} has no "## A production configuration" heading`);
  const rest = md.slice(heading.index + heading[0].length);
  const fence = /^```yaml[ \t]*\n([\s\S]*?)^```[ \t]*$/m.exec(rest);
  assert.ok(fence, `${file}: no \`\`\`yaml block after "## A production configuration"`);
  return fence[1];
}

// deno-lint-ignore no-explicit-any
type Json = any;

/** One server of the block, as the test uses it. */
interface ServerRole {
  readonly index: number; // in mail.servers
  readonly protocol: Protocol;
  readonly ssl: boolean; // "listen ... ssl": implicit TLS; otherwise starttls: only
  readonly flags: string; // the listen flags after the address, e.g. "ssl proxy_protocol"
  readonly name: string; // "imap_ssl", "imap_starttls", ...: the HAProxy frontend
}

/** The shape the test relies on, checked against the block so that a README edit fails loudly. */
function rolesOf(cfg: Json): ServerRole[] {
  const servers: Json[] = cfg?.mail?.servers;
  assert.ok(Array.isArray(servers), "the README block has mail.servers");
  const roles = servers.map((s, index): ServerRole => {
    const listen: string[] = s.listen;
    assert.ok(Array.isArray(listen) && listen.every((l) => typeof l === "string"), `mail.servers[${index}].listen is a list of strings`);
    const v4 = listen.filter((l) => l.startsWith("0.0.0.0:"));
    assert.equal(v4.length, 1, `mail.servers[${index}] listens on 0.0.0.0 once: ${JSON.stringify(listen)}`);
    for (const l of listen) assert.match(l, /^(0\.0\.0\.0|\[::\]):\d+( |$)/, `mail.servers[${index}]: a wildcard listen`);
    const flags = v4[0].split(/\s+/).slice(1).join(" ");
    for (const l of listen) assert.equal(l.split(/\s+/).slice(1).join(" "), flags, `mail.servers[${index}]: the same flags on every listen`);
    assert.ok(flags.split(" ").includes("proxy_protocol"), `mail.servers[${index}] says proxy_protocol: ${v4[0]}`);
    const ssl = flags.split(" ").includes("ssl");
    assert.ok(PROTOCOLS.includes(s.protocol), `mail.servers[${index}].protocol is imap, pop3 or smtp`);
    if (!ssl) assert.equal(s.starttls, "only", `mail.servers[${index}] (no ssl) says starttls: only`);
    return { index, protocol: s.protocol, ssl, flags, name: `${s.protocol}_${ssl ? "ssl" : "starttls"}` };
  });
  for (const p of PROTOCOLS) {
    for (const ssl of [true, false]) {
      assert.equal(roles.filter((r) => r.protocol === p && r.ssl === ssl).length, 1, `one ${p} server with${ssl ? "" : "out"} "ssl"`);
    }
  }
  return roles;
}

/** The certificate files the block names, relative to the config file. */
function certFilesOf(cfg: Json): string[] {
  const list = (v: unknown) => (Array.isArray(v) ? v : [v]).map(String);
  return [...list(cfg.mail.ssl_certificate), ...list(cfg.mail.ssl_certificate_key), String(cfg.mail.proxy_ssl_trusted_certificate)].sort();
}

// ---------------------------------------------------------------------------------------------
// The rewrite for a test machine

interface RunSettings {
  /** Where error_log writes (the README's level is kept); default stderr. */
  readonly errorLogFile?: string;
  readonly httpPort: number;
  readonly listenPort: (r: ServerRole) => number;
  readonly passwordHash: string;
  readonly backends: Record<Protocol, number>; // 127.0.0.1 ports of Dovecot's and Postfix's TLS listeners
}

/** The block with only what cannot work here changed, comments and everything else kept. */
function rewriteForTest(block: string, roles: readonly ServerRole[], s: RunSettings): string {
  const doc = parseDocument(block);
  assert.deepEqual(doc.errors, [], "the README block is valid YAML");
  const set = (p: (string | number)[], value: unknown) => {
    assert.ok(doc.hasIn(p), `the README block has ${p.join(".")}`);
    doc.setIn(p, value);
  };
  const errorLog = doc.getIn(["error_log"]);
  assert.equal(typeof errorLog, "string", "error_log is one string, \"FILE LEVEL\"");
  set(["error_log"], [s.errorLogFile ?? "stderr", ...String(errorLog).trim().split(/\s+/).slice(1)].join(" "));
  set(["http", "listen"], `127.0.0.1:${s.httpPort}`);
  const users = doc.getIn(["auth", "users"]);
  assert.ok(isSeq(users), "auth.users is a list");
  const i = users.items.findIndex((u) => isMap(u) && u.get("user") === ALICE);
  assert.ok(i >= 0, `auth.users has ${ALICE}`);
  set(["auth", "users", i, "password_hash"], s.passwordHash);
  const backend = doc.getIn(["auth", "users", i, "backend"]);
  assert.ok(isMap(backend), "the user's backend is a map {imap, pop3, smtp}");
  for (const p of PROTOCOLS) {
    const was = String(backend.get(p));
    assert.match(was, new RegExp(`:${IMPLICIT_TLS_PORT[p]}$`), `the ${p} backend is implicit TLS (proxy_ssl: on): ${was}`);
    set(["auth", "users", i, "backend", p], `127.0.0.1:${s.backends[p]}`);
  }
  set(["mail", "set_real_ip_from"], doc.createNode(["127.0.0.0/8"], { flow: true }));
  set(["mail", "proxy_ssl_name"], BACKEND_NAME);
  for (const r of roles) {
    set(["mail", "servers", r.index, "listen"], doc.createNode([`127.0.0.1:${s.listenPort(r)} ${r.flags}`], { flow: true }));
  }
  return doc.toString();
}

/** Every path where two parsed configs differ ("mail.servers.0.listen.1"). */
function differences(a: Json, b: Json, at = ""): string[] {
  if (a === b) return [];
  const objects = a && b && typeof a === "object" && typeof b === "object" && Array.isArray(a) === Array.isArray(b);
  if (!objects) return [at || "(root)"];
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].flatMap((k) => differences(a[k], b[k], at ? `${at}.${k}` : k));
}

// Only these may differ between the README block and what runs.
const REWRITTEN = [
  /^error_log$/,
  /^http\.listen$/,
  /^auth\.users\.\d+\.password_hash$/,
  /^auth\.users\.\d+\.backend\.(imap|pop3|smtp)$/,
  /^mail\.set_real_ip_from\.0$/,
  /^mail\.proxy_ssl_name$/,
  /^mail\.servers\.\d+\.listen\.[01]$/,
];

// ---------------------------------------------------------------------------------------------
// Fixtures shared by every target

let tmp: string;
let block: string;
let parsed: Json;
let roles: ServerRole[];
let files: Record<string, string>; // the block's certificate files, by the names it gives them
let caFile: string;
let passwordHash: string;
let dovecot: Dovecot;
let postfix: Postfix;

before(async () => {
  block = readmeBlock();
  parsed = parseYaml(block);
  roles = rolesOf(parsed);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "postern-readme-"));
  fs.chmodSync(tmp, 0o755); // Dovecot and Postfix read the backend certificate
  const pki = await makeTlsTestPki(tmp);
  for (const f of fs.readdirSync(tmp)) fs.chmodSync(path.join(tmp, f), 0o644);
  caFile = path.join(tmp, pki.files.ca);
  // one ECDSA and one RSA leaf, and the CA that signed them (the backends' too)
  files = {
    "certs/mail.pem": pki.pem(pki.files.ecCert),
    "certs/mail.key": pki.pem(pki.files.ecKey),
    "certs/mail-rsa.pem": pki.pem(pki.files.rsaCert),
    "certs/mail-rsa.key": pki.pem(pki.files.rsaKey),
    "certs/backend-ca.pem": pki.pem(pki.files.ca),
  };
  assert.deepEqual(certFilesOf(parsed), Object.keys(files).sort(), "the certificate files the README block names");
  const backendTls = { certFile: path.join(tmp, pki.files.rsaCert), keyFile: path.join(tmp, pki.files.rsaKey) };
  dovecot = await startDovecot({ users: [{ user: ALICE, password: ALICE_PASS }], ssl: backendTls });
  postfix = await startPostfix({
    domains: ["example.com"],
    mailboxes: [ALICE],
    lmtpPort: dovecot.lmtpPort,
    tls: backendTls,
    extraMainCf: "smtpd_client_port_logging = yes\n",
  });
  // the README says the hash comes from `postern hash-password`: so it does here
  const h = await runPostern(targets()[0], ["hash-password", "--password", ALICE_PASS]);
  assert.equal(h.code, 0, h.output);
  passwordHash = h.stdout.trim();
  assert.match(passwordHash, /^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*$/);
});

after(async () => {
  await postfix?.stop();
  await dovecot?.stop();
  if (tmp && !process.env.POSTERN_KEEP_TMP) fs.rmSync(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// The client sessions: after TLS (implicit, or s_client's -starttls), the same for both listeners

function imapSession(greeting: boolean): SClientStep[] {
  return [
    ...(greeting ? [{ expect: /^\* OK [^\r]*\r\n/m }] : []),
    { send: "a1 CAPABILITY\r\n" },
    { expect: /\* CAPABILITY [^\r]*\r\na1 OK [^\r]*\r\n/ },
    { send: `a2 LOGIN ${ALICE} ${ALICE_PASS}\r\n` },
    { expect: /a2 OK [^\r]*\r\n/ },
    { send: "a3 SELECT INBOX\r\n" },
    { expect: /a3 OK [^\r]*\r\n/ },
    { send: "a4 LOGOUT\r\n" },
    { expect: /a4 OK [^\r]*\r\n/ },
  ];
}

function pop3Session(greeting: boolean): SClientStep[] {
  return [
    ...(greeting ? [{ expect: /^\+OK [^\r]*\r\n/m }] : []),
    { send: "CAPA\r\n" },
    { expect: /\+OK [^\r]*\r\n(?:[^\r]*\r\n)*?\.\r\n/ },
    { send: `USER ${ALICE}\r\n` },
    { expect: /\+OK[^\r]*\r\n/ },
    { send: `PASS ${ALICE_PASS}\r\n` },
    { expect: /\+OK Logged in[^\r]*\r\n/ },
    { send: "STAT\r\n" },
    { expect: /\+OK \d+ \d+\r\n/ },
    { send: "QUIT\r\n" },
    { expect: /\+OK[^\r]*\r\n/ },
  ];
}

function smtpSession(greeting: boolean, subject: string): SClientStep[] {
  return [
    ...(greeting ? [{ expect: /^220 [^\r]*\r\n/m }] : []),
    { send: "EHLO client.example\r\n" },
    { expect: /250 [^\r]*\r\n/ },
    { send: `AUTH PLAIN ${PLAIN_ALICE}\r\n` },
    { expect: /235 [^\r]*\r\n/ },
    { send: `MAIL FROM:<${ALICE}>\r\n` },
    { expect: /250 [^\r]*\r\n/ },
    { send: `RCPT TO:<${ALICE}>\r\n` },
    { expect: /250 [^\r]*\r\n/ },
    { send: "DATA\r\n" },
    { expect: /354 [^\r]*\r\n/ },
    { send: `From: <${ALICE}>\r\nTo: <${ALICE}>\r\nSubject: ${subject}\r\n\r\nsent through the README's configuration\r\n.\r\n` },
    { expect: /250 [^\r]*queued as [0-9A-F]+\r\n/ },
    { send: "QUIT\r\n" },
    { expect: /221 [^\r]*\r\n/ },
  ];
}

/** What the client sees of each protocol's login capabilities after TLS. */
function assertLoginOffered(protocol: Protocol, out: string): void {
  if (protocol === "imap") {
    const caps = /\* CAPABILITY ([^\r]*)\r\n/.exec(out)?.[1] ?? "";
    assert.match(caps, /(^| )AUTH=PLAIN AUTH=LOGIN( |$)/, `imap_auth: [plain, login] after TLS: ${caps}`);
    assert.doesNotMatch(caps, /STARTTLS|LOGINDISABLED/, caps);
  } else if (protocol === "pop3") {
    const capa = /\+OK [^\r]*\r\n((?:[^\r]*\r\n)*?)\.\r\n/.exec(out)?.[1] ?? "";
    assert.match(capa, /^USER\r$/m, capa);
    assert.match(capa, /^SASL PLAIN LOGIN\r$/m, capa);
    assert.doesNotMatch(capa, /STLS/, capa);
  } else {
    const ehlo = /(250-[^\r]*\r\n)*250 [^\r]*\r\n/.exec(out.slice(out.search(/^250-/m)))?.[0] ?? "";
    assert.match(ehlo, /^250[- ]AUTH PLAIN LOGIN\r$/m, `smtp_auth: [plain, login] after TLS: ${ehlo}`);
    assert.doesNotMatch(ehlo, /STARTTLS/, ehlo);
  }
}

// ---------------------------------------------------------------------------------------------
// Per target

const RUNTIME_OF: Record<Target, string> = { node: "node", deno: "deno", bun: "bun", binary: "bun" };

for (const target of targets()) {
  let postern: Postern;
  let haproxy: Haproxy;
  let ports: Record<string, number>; // role name → Postern's listen port
  let httpPort: number;
  /** The later tests need the Postern and HAProxy the "runs" test started. */
  const started = () => assert.ok(postern && haproxy, `Postern on ${target} did not start with the README block: see the test before`);
  const backendPort = (p: Protocol) => (p === "imap" ? dovecot.imapsPort! : p === "pop3" ? dovecot.pop3sPort! : postfix.smtpsPort!);

  test(`${target}: postern -t accepts the README block, with the certificate files it names and its log in a directory that exists`, async () => {
    // -t opens the log as nginx -t does; /var/log/postern is the one thing a test machine lacks
    const log = path.join(tmp, `readme-${target}.log`);
    const asIs = block.replace(/^error_log: "\/var\/log\/postern\/mail\.log /m, `error_log: "${log} `);
    assert.notEqual(asIs, block, "the README block logs to /var/log/postern/mail.log");
    const r = await runPostern(target, ["-t"], { configYaml: asIs, files });
    assert.equal(r.code, 0, r.output);
    const ok = /^postern: the configuration file (\S+) syntax is ok$/m.exec(r.stderr);
    assert.ok(ok, `"syntax is ok" line:\n${r.output}`);
    assert.match(ok[1], /\/postern\.yaml$/);
    assert.match(r.stderr, new RegExp(`^postern: configuration file ${re(ok[1])} test is successful$`, "m"), r.output);
    assert.doesNotMatch(r.output, /\[(emerg|alert|crit|error|warn)\]/, r.output);
  });

  test(`${target}: the README block runs with only the test machine's addresses, ports, log, hash and backends changed`, async () => {
    const free = await freePorts(roles.length + 1);
    httpPort = free[roles.length];
    ports = Object.fromEntries(roles.map((r, i) => [r.name, free[i]]));
    const yaml = rewriteForTest(block, roles, {
      httpPort,
      listenPort: (r) => ports[r.name],
      passwordHash,
      backends: { imap: dovecot.imapsPort!, pop3: dovecot.pop3sPort!, smtp: postfix.smtpsPort! },
    });
    // nothing else changed: ssl_protocols, the session cache, proxy_ssl, starttls only, ...
    const changed = differences(parsed, parseYaml(yaml));
    const unexpected = changed.filter((p) => !REWRITTEN.some((rx) => rx.test(p)));
    assert.deepEqual(unexpected, [], `only the test machine's settings are rewritten:\n${yaml}`);
    assert.ok(changed.includes("mail.proxy_ssl_name") && changed.includes("mail.set_real_ip_from.0"), changed.join(", "));

    postern = await startPostern(target, yaml, { files });
    // worker_processes: auto is one worker per core, each with every listener
    const workers = os.cpus().length;
    if (workers > 1) {
      await postern.waitForLog(new RegExp(`\\(${RUNTIME_OF[target]}\\) master started, ${workers} worker processes$`));
      for (let w = 1; w <= workers; w++) {
        await postern.waitForLog(new RegExp(`\\(${RUNTIME_OF[target]}\\) worker ${w}, ${roles.length} mail listener\\(s\\)$`), 20_000);
      }
    } else {
      await postern.waitForLog(new RegExp(`\\(${RUNTIME_OF[target]}\\) started, ${roles.length} mail listener\\(s\\)$`));
    }
    const health = await fetch(`http://127.0.0.1:${httpPort}/health`);
    assert.equal(health.status, 200);
    assert.equal((await health.json()).status, "ok");
    haproxy = await startHaproxy(roles.map((r) => ({ name: r.name, to: { host: "127.0.0.1", port: ports[r.name] }, proxy: "v2" as const })));
  });

  /** HAProxy's log line for a connection from CLIENT_ADDR to frontend `role` (written when it
   *  ends), after `hpFrom`; `clientPort` when known. Returns the client's port HAProxy saw. */
  async function haproxySaw(role: ServerRole, hpFrom: number, clientPort?: number): Promise<number> {
    const rx = new RegExp(`^${re(CLIENT_ADDR)}:(${clientPort ?? "\\d+"}) \\[[^\\]]*\\] ${role.name} `);
    const line = await waitFor(
      () => haproxy.output().slice(hpFrom).split("\n").find((l) => rx.test(l)),
      `HAProxy's log line for the ${role.name} session (${rx}):\n${haproxy.output().slice(-2000)}`,
    );
    return Number(rx.exec(line)![1]);
  }

  /** Postern's "is CLIENT by PROXY protocol" line for the client HAProxy saw at `clientPort`:
   *  the worker's pid and the session id, which the session's later lines carry. */
  async function sessionOf(clientPort: number, logFrom: number): Promise<string> {
    const line = await postern.waitForLog(
      new RegExp(`\\d+#\\d+: \\*\\d+ client 127\\.0\\.0\\.1:\\d+ is ${re(CLIENT_ADDR)}:${clientPort} by PROXY protocol$`),
      10_000,
      logFrom,
    );
    return /(\d+#\d+: \*\d+) /.exec(line)![1];
  }

  /**
   * After a session through HAProxy's frontend `role`: HAProxy logged the client's address and
   * port, Postern took them from the PROXY header and logged the login with that client, to the
   * backend's TLS port. Returns the client's port.
   */
  async function assertClientFromHeader(role: ServerRole, hpFrom: number, logFrom: number): Promise<number> {
    const clientPort = await haproxySaw(role, hpFrom);
    const session = await sessionOf(clientPort, logFrom);
    await postern.waitForLog(
      new RegExp(
        `${re(session)} client logged in, client: ${re(CLIENT_ADDR)}, server: 127\\.0\\.0\\.1:${ports[role.name]}, ` +
          `login: "${re(ALICE)}", upstream: 127\\.0\\.0\\.1:${backendPort(role.protocol)}(,|$)`,
      ),
      10_000,
      logFrom,
    );
    return clientPort;
  }

  /** Dovecot's login line for this session: alice, over TLS, on its implicit-TLS listener. */
  async function assertDovecotLogin(protocol: "imap" | "pop3", since: number): Promise<DovecotLogin> {
    const login = await dovecot.waitForLogin(since, (l) => l.service === `${protocol}-login` && l.user === ALICE);
    assert.equal(login.lport, String(backendPort(protocol)), login.line);
    assert.equal(login.realRip, "127.0.0.1", login.line);
    assert.match(login.line, /, TLS(,|$)/, `Dovecot says the session is TLS: ${login.line}`);
    return login;
  }

  /** Postfix's log for this message: TLS from Postern, the client HAProxy saw by XCLIENT. */
  async function assertPostfixMessage(out: string, clientPort: number, linesBefore: number): Promise<void> {
    const queueId = /queued as ([0-9A-F]+)\r\n/.exec(out)?.[1];
    assert.ok(queueId, out);
    const line = await postfix.waitForLog(new RegExp(`: ${queueId}: client=`));
    assert.match(line, new RegExp(`: client=unknown\\[${re(CLIENT_ADDR)}\\]:${clientPort}(,|$)`), line);
    assert.match(line, new RegExp(`sasl_username=${re(ALICE)}`), line);
    await postfix.waitForLog(new RegExp(`: ${queueId}: .*status=sent`));
    const tlsIn = postfix.readLog().split("\n").slice(linesBefore).find((l) => /TLS connection established from \S+\[127\.0\.0\.1\]/.test(l));
    assert.ok(tlsIn, `Postfix logged Postern's TLS connection:\n${postfix.readLog().slice(-2000)}`);
  }

  const CA = () => ["-CAfile", caFile, "-verify_return_error"];

  for (const protocol of PROTOCOLS) {
    const port = { imap: 993, pop3: 995, smtp: 465 }[protocol];
    test(`${target}: ${protocol.toUpperCase()} over implicit TLS (${port}) through HAProxy logs in to ${protocol === "smtp" ? "Postfix" : "Dovecot"} over TLS`, async () => {
      started();
      const role = roles.find((r) => r.protocol === protocol && r.ssl)!;
      const hpFrom = haproxy.output().length;
      const logFrom = postern.logs().length;
      const dovecotSince = dovecot.logins().length;
      const postfixLines = postfix.readLog().split("\n").length;
      const steps = protocol === "imap" ? imapSession(true) : protocol === "pop3" ? pop3Session(true) : smtpSession(true, `${target} ${port}`);
      const r = await sClient(haproxy.ports[role.name], CA(), steps, { bind: CLIENT_ADDR });
      assert.match(r.out, /Verify return code: 0 \(ok\)/);
      assert.match(servedSubject(r.out), /CN = (ec|rsa)\.postern\.test$/);
      assertLoginOffered(protocol, r.out);
      const clientPort = await assertClientFromHeader(role, hpFrom, logFrom);
      if (protocol === "smtp") await assertPostfixMessage(r.out, clientPort, postfixLines);
      else await assertDovecotLogin(protocol, dovecotSince);
    });
  }

  test(`${target}: the implicit-TLS listener serves the ECDSA or the RSA certificate, as the client can use`, async () => {
    started();
    const role = roles.find((r) => r.protocol === "imap" && r.ssl)!;
    const ec = await sClient(haproxy.ports[role.name], [...CA(), "-sigalgs", "ECDSA+SHA256"], [{ expect: /^\* OK [^\r]*\r\n/m }], { bind: CLIENT_ADDR });
    assert.equal(servedSubject(ec.out), "O = Postern Test, CN = ec.postern.test");
    const rsa = await sClient(haproxy.ports[role.name], [...CA(), "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256"], [{ expect: /^\* OK [^\r]*\r\n/m }], { bind: CLIENT_ADDR });
    assert.equal(servedSubject(rsa.out), "O = Postern Test, CN = rsa.postern.test");
  });

  for (const protocol of PROTOCOLS) {
    const port = { imap: 143, pop3: 110, smtp: 587 }[protocol];
    test(`${target}: ${protocol.toUpperCase()} on ${port} (starttls: only) through HAProxy refuses a login before TLS, then logs in after it`, async () => {
      started();
      const role = roles.find((r) => r.protocol === protocol && !r.ssl)!;
      const front = haproxy.ports[role.name];
      // before STARTTLS: no login offered, and one tried is refused as nginx refuses it
      const refusedFrom = { hp: haproxy.output().length, log: postern.logs().length };
      const c = await connectClient(front, { localAddress: CLIENT_ADDR });
      try {
        if (protocol === "imap") {
          await c.expect(/^\* OK [^\r]*\r\n/);
          c.send("a1 CAPABILITY\r\n");
          const caps = await c.expect(/a1 OK [^\r]*\r\n/);
          assert.match(caps, /^\* CAPABILITY (\S+ )*STARTTLS LOGINDISABLED\r\na1 OK completed\r\n$/);
          assert.doesNotMatch(caps, /AUTH=/);
          c.send(`a2 LOGIN ${ALICE} ${ALICE_PASS}\r\n`);
          assert.equal(await c.expect(/\r\n/), "a2 BAD invalid command\r\n");
          c.send("a3 AUTHENTICATE PLAIN\r\n");
          assert.equal(await c.expect(/\r\n/), "a3 BAD invalid command\r\n");
          c.send("a4 LOGOUT\r\n");
          await c.expect(/a4 OK [^\r]*\r\n/);
        } else if (protocol === "pop3") {
          await c.expect(/^\+OK [^\r]*\r\n/);
          c.send("CAPA\r\n");
          const capa = await c.expect(/\r\n\.\r\n/);
          assert.match(capa, /^\+OK [^\r]*\r\n(?:[^\r]*\r\n)*STLS\r\n\.\r\n$/);
          assert.doesNotMatch(capa, /^(USER|SASL)/m);
          c.send(`USER ${ALICE}\r\n`);
          assert.equal(await c.expect(/\r\n/), "-ERR invalid command\r\n");
          c.send("AUTH PLAIN\r\n");
          assert.equal(await c.expect(/\r\n/), "-ERR invalid command\r\n");
          c.send("QUIT\r\n");
          await c.expect(/\+OK[^\r]*\r\n/);
        } else {
          await c.expect(/^220 [^\r]*\r\n/);
          c.send("EHLO client.example\r\n");
          const ehlo = await c.expect(/250 [^\r]*\r\n/);
          assert.match(ehlo, new RegExp(`^250-${re(parsed.server_name)}\r\n(?:250-[^\r]*\r\n)*250 STARTTLS\r\n$`));
          assert.doesNotMatch(ehlo, /AUTH/);
          c.send(`AUTH PLAIN ${PLAIN_ALICE}\r\n`);
          assert.equal(await c.expect(/\r\n/), "500 5.5.1 Invalid command\r\n");
          c.send("QUIT\r\n");
          await c.expect(/221 [^\r]*\r\n/);
        }
      } finally {
        c.destroy();
      }
      // HAProxy's line for it is written at its end: wait for it, so it is not taken for the next
      await haproxySaw(role, refusedFrom.hp, c.localPort);
      const refused = await sessionOf(c.localPort, refusedFrom.log);
      assert.doesNotMatch(postern.logs().slice(refusedFrom.log), new RegExp(`${re(refused)} client logged in`));
      // after STARTTLS: the login goes through to the backend over TLS
      const hpFrom = haproxy.output().length;
      const logFrom = postern.logs().length;
      const dovecotSince = dovecot.logins().length;
      const postfixLines = postfix.readLog().split("\n").length;
      const steps = protocol === "imap" ? imapSession(false) : protocol === "pop3" ? pop3Session(false) : smtpSession(false, `${target} ${port}`);
      const r = await sClient(front, ["-starttls", protocol, ...CA()], steps, { bind: CLIENT_ADDR });
      assert.match(r.out, /Verify return code: 0 \(ok\)/);
      assertLoginOffered(protocol, r.out);
      const clientPort = await assertClientFromHeader(role, hpFrom, logFrom);
      if (protocol === "smtp") await assertPostfixMessage(r.out, clientPort, postfixLines);
      else await assertDovecotLogin(protocol, dovecotSince);
    });
  }

  // nginx -t opens the error log (ngx_init_cycle's open_files) and fails when it cannot; the
  // README says to check the block with -t, whose error_log directory a new host may not have
  test(`${target}: with error_log in a missing directory, -t fails as the start does (nginx -t opens the log) and the start says [emerg], not a stack trace`, async () => {
    const free = await freePorts(roles.length + 1);
    const missing = path.join(tmp, `no-such-dir-${target}`, "mail.log");
    const yaml = rewriteForTest(block, roles, {
      errorLogFile: missing,
      httpPort: free[roles.length],
      listenPort: (r) => free[roles.indexOf(r)],
      passwordHash,
      backends: { imap: dovecot.imapsPort!, pop3: dovecot.pop3sPort!, smtp: postfix.smtpsPort! },
    });
    const start = await runPostern(target, [], { configYaml: yaml, files, timeoutMs: 15_000 });
    const check = await runPostern(target, ["-t"], { configYaml: yaml, files });
    const both = `--- postern -t (exit ${check.code}) ---\n${check.output}--- postern (exit ${start.code}) ---\n${start.output}`;
    assert.equal(start.code, 1, both);
    assert.match(start.output, new RegExp(`\\[emerg\\] .*${re(missing)}`), both);
    assert.doesNotMatch(start.output, /^\s+at /m, `a stack trace instead of an [emerg] line:\n${both}`);
    assert.equal(check.code, 1, `-t passed a configuration that cannot start:\n${both}`);
    assert.match(check.output, new RegExp(`\\[emerg\\] .*${re(missing)}`), both);
    assert.match(check.output, /^postern: configuration file \S+ test failed$/m, both);
  });

  test(`${target}: nothing failed or leaked into the log, and Postern and HAProxy stop cleanly`, async () => {
    started();
    await haproxy.stop();
    const bad = /.*(session crashed|session failed|Unhandled|TypeError|\[(emerg|alert|crit)\]|upstream SSL|readme-Alice).*/m.exec(postern.logs());
    assert.equal(bad, null, `${bad?.[0]}\n--- end of the log ---\n${postern.logs().slice(-3000)}`);
    assert.equal(postern.exitStatus(), null, `Postern exited early:\n${postern.logs().slice(-3000)}`);
    const code = await postern.stop();
    assert.equal(code, 0, postern.logs().slice(-3000));
  });
}
