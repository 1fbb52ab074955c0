// Proves the Dovecot harness itself, with no proxy in between: real clients (curl, Python's
// imaplib, a raw socket) log in directly and the Dovecot log shows who it believed it talked to.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { type Dovecot, makeShortTempDir, processGroupAlive, requireTool, startDovecot } from "../support/dovecot.ts";
import { canConnect, waitFor } from "../support/ports.ts";

const USER = "alice@example.com";
const PASS = "s3cret pass"; // a space forces an IMAP quoted string / literal
const CLIENT_IP = "127.0.0.2"; // clients bind here; Dovecot sees 127.0.0.1 only from a proxy

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], timeoutMs = 20_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof (err as { code?: unknown }).code !== "number") {
        reject(new Error(`Cannot run "${cmd} ${args.join(" ")}": ${err.message}\n${stderr}`));
        return;
      }
      resolve({ code: err ? Number((err as { code?: number }).code) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** A raw line client: send lines, wait for a reply line matching a pattern. */
async function rawSession(port: number, localAddress = CLIENT_IP) {
  const sock = net.connect({ host: "127.0.0.1", port, localAddress });
  sock.setEncoding("latin1");
  let buf = "";
  let closed = false;
  sock.on("data", (d: string) => (buf += d));
  sock.on("close", () => (closed = true));
  sock.on("error", () => (closed = true));
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", reject);
  });
  return {
    write: (s: string) => sock.write(s, "latin1"),
    /** Resolves with everything received up to and including the first line matching `re`. */
    async until(re: RegExp, timeoutMs = 10_000): Promise<string> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const lines = buf.split("\r\n");
        const idx = lines.slice(0, -1).findIndex((l) => re.test(l));
        if (idx >= 0) {
          const taken = lines.slice(0, idx + 1).join("\r\n") + "\r\n";
          buf = buf.slice(taken.length);
          return taken;
        }
        if (closed) throw new Error(`Connection closed before ${re}; received ${JSON.stringify(buf)}`);
        if (Date.now() > deadline) throw new Error(`Timed out waiting for ${re}; received ${JSON.stringify(buf)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    close: () => sock.destroy(),
  };
}

let dv: Dovecot;

before(async () => {
  requireTool("curl", "apt-get install curl (bash .ci/run does)");
  requireTool("python3", "apt-get install python3 (bash .ci/run does)");
  dv = await startDovecot({
    users: [{ user: USER, password: PASS }, { user: "bob", password: "bobpw" }],
    haproxyImapPort: true,
    haproxyPop3Port: true,
  });
});

after(async () => {
  await dv?.stop();
});

test("Dovecot answers curl's IMAP login with the mailbox list and logs the client address", async () => {
  const r = await run("curl", ["-sS", "--max-time", "10", "--interface", CLIENT_IP, `imap://127.0.0.1:${dv.imapPort}/`,
    "-u", `${USER}:${PASS}`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^\* LIST \([^)]*\) "[.\/]" INBOX\r?$/m);
  const line = await dv.waitForLog(/imap-login: Info: Login: user=<alice@example\.com>/);
  assert.match(line, / rip=127\.0\.0\.2, /);
  assert.match(line, / real_rip=127\.0\.0\.2, /);
  assert.match(line, new RegExp(` lport=${dv.imapPort}, `));
});

test("Dovecot rejects a wrong IMAP password at once, twice in a row (no auth penalty)", async () => {
  for (let i = 0; i < 2; i++) {
    const t0 = Date.now();
    const r = await run("curl", ["-sS", "--max-time", "10", `imap://127.0.0.1:${dv.imapPort}/`, "-u", "bob:wrong"]);
    const ms = Date.now() - t0;
    assert.equal(r.code, 67, `curl should report "login denied" (67), got ${r.code}: ${r.stderr}`);
    assert.ok(ms < 4000, `failed login ${i + 1} took ${ms} ms; the auth penalty should be off`);
  }
  await dv.waitForLog(/imap-login: Info: Disconnected.*auth failed, 1 attempts/);
});

test("Python imaplib logs in with LOGIN and fetches a message delivered over LMTP", async () => {
  await dv.deliver(USER, "From: carol@example.com\r\nSubject: harness over lmtp\r\n\r\nhello from lmtp\r\n");
  const script = `
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
typ, _ = m.login(sys.argv[2], sys.argv[3])
assert typ == "OK", typ
typ, data = m.select("INBOX")
print("EXISTS", data[0].decode())
typ, data = m.search(None, 'SUBJECT', '"harness over lmtp"')
num = data[0].split()[-1]
typ, data = m.fetch(num, "(BODY[])")
sys.stdout.write(data[0][1].decode())
m.logout()
`;
  const r = await run("python3", ["-c", script, String(dv.imapPort), USER, PASS]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^EXISTS [1-9]\d*$/m);
  assert.match(r.stdout, /^Subject: harness over lmtp\r?$/m);
  assert.match(r.stdout, /hello from lmtp/);
  // Dovecot logs the LOGIN command as method=PLAIN; this client came from 127.0.0.1, curl from .2.
  // Dovecot's log process writes the line a moment after the client has its answer
  const imapLogins = () => dv.logins().filter((l) => l.service === "imap-login" && l.user === USER && l.rip === "127.0.0.1");
  await waitFor(() => imapLogins().length >= 1, "Dovecot's login line", 5000);
  const logins = imapLogins();
  assert.equal(logins.length, 1, dv.readLog());
  assert.equal(logins[0].realRip, "127.0.0.1");
});

test("curl lists and retrieves over POP3 a message put straight into the Maildir", async () => {
  const file = dv.putMessage("bob", "From: dave@example.com\nSubject: harness maildir\n\nbody via maildir\n");
  assert.ok(fs.existsSync(file), file);
  const list = await run("curl", ["-sS", "--max-time", "10", "--interface", CLIENT_IP, `pop3://127.0.0.1:${dv.pop3Port}/`,
    "-u", "bob:bobpw"]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^1 \d+\r?$/m);
  const retr = await run("curl", ["-sS", "--max-time", "10", `pop3://127.0.0.1:${dv.pop3Port}/1`, "-u", "bob:bobpw"]);
  assert.equal(retr.code, 0, retr.stderr);
  assert.match(retr.stdout, /^Subject: harness maildir\r?$/m);
  assert.match(retr.stdout, /body via maildir/);
  const popLogins = () => dv.logins().filter((l) => l.service === "pop3-login" && l.user === "bob");
  await waitFor(() => popLogins().length >= 2, "Dovecot's two login lines", 5000);
  const pop = popLogins();
  assert.equal(pop.length, 2, dv.readLog());
  assert.equal(pop[0].rip, CLIENT_IP);
});

test("Dovecot takes the client address from IMAP ID sent by a trusted proxy", async () => {
  const s = await rawSession(dv.imapPort, "127.0.0.1");
  try {
    await s.until(/^\* OK /);
    s.write('1 ID ("x-originating-ip" "127.0.0.77" "x-originating-port" "4242")\r\n');
    await s.until(/^1 OK/);
    s.write(`2 LOGIN {${USER.length}}\r\n`);
    await s.until(/^\+ /);
    s.write(`${USER} {${PASS.length}}\r\n`);
    await s.until(/^\+ /);
    s.write(`${PASS}\r\n`);
    await s.until(/^2 OK/);
    s.write("3 LOGOUT\r\n");
    await s.until(/^3 OK/);
  } finally {
    s.close();
  }
  const line = await dv.waitForLog(/imap-login: Info: Login: .* rip=127\.0\.0\.77, rport=4242, /);
  assert.match(line, / real_rip=127\.0\.0\.1, /);
});

test("Dovecot's haproxy listeners take the client from a PROXY v1 header", async () => {
  const s = await rawSession(dv.haproxyImapPort!, "127.0.0.1");
  try {
    s.write(`PROXY TCP4 127.0.0.88 127.0.0.1 5151 ${dv.haproxyImapPort}\r\n`);
    await s.until(/^\* OK /);
    s.write(`a LOGIN "${USER}" "${PASS}"\r\n`);
    await s.until(/^a OK/);
    s.write("b LOGOUT\r\n");
    await s.until(/^b OK/);
  } finally {
    s.close();
  }
  const imap = await dv.waitForLog(/imap-login: Info: Login: .* rip=127\.0\.0\.88, rport=5151, /);
  assert.match(imap, / real_rip=127\.0\.0\.1, /);

  const p = await rawSession(dv.haproxyPop3Port!, "127.0.0.1");
  try {
    p.write(`PROXY TCP4 127.0.0.89 127.0.0.1 6161 ${dv.haproxyPop3Port}\r\n`);
    await p.until(/^\+OK/);
    p.write("USER bob\r\n");
    await p.until(/^\+OK/);
    p.write("PASS bobpw\r\n");
    await p.until(/^\+OK/);
    p.write("QUIT\r\n");
    await p.until(/^\+OK/);
  } finally {
    p.close();
  }
  const pop = await dv.waitForLog(/pop3-login: Info: Login: user=<bob>.* rip=127\.0\.0\.89, rport=6161, /);
  assert.match(pop, / real_rip=127\.0\.0\.1, /);
});

test("Dovecot's haproxy listener refuses a connection without a PROXY header", async () => {
  const s = await rawSession(dv.haproxyImapPort!, "127.0.0.1");
  try {
    s.write("a LOGIN bob bobpw\r\n");
    // Dovecot reads the line as a bad PROXY header and drops the connection without a greeting.
    await assert.rejects(s.until(/^\* OK /, 5000), /Connection closed/);
  } finally {
    s.close();
  }
});

test("startDovecot with ssl offers STARTTLS and implicit TLS, and stop() frees everything", async () => {
  requireTool("openssl", "apt-get install openssl (bash .ci/run does)");
  const certDir = makeShortTempDir("cert-");
  try {
    const certFile = path.join(certDir, "cert.pem");
    const keyFile = path.join(certDir, "key.pem");
    const gen = await run("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
      "/CN=localhost", "-keyout", keyFile, "-out", certFile]);
    assert.equal(gen.code, 0, gen.stderr);
    const tls = await startDovecot({ users: [{ user: "tls", password: "tlspw" }], ssl: { certFile, keyFile } });
    const ports = [tls.imapPort, tls.pop3Port, tls.lmtpPort, tls.imapsPort!, tls.pop3sPort!];
    try {
      const starttls = await run("curl", ["-sS", "--max-time", "10", "-k", "--ssl-reqd",
        `imap://127.0.0.1:${tls.imapPort}/`, "-u", "tls:tlspw"]);
      assert.equal(starttls.code, 0, starttls.stderr);
      assert.match(starttls.stdout, /INBOX/);
      const imaps = await run("curl", ["-sS", "--max-time", "10", "-k", `imaps://127.0.0.1:${tls.imapsPort}/`,
        "-u", "tls:tlspw"]);
      assert.equal(imaps.code, 0, imaps.stderr);
      assert.match(imaps.stdout, /INBOX/);
      const pop3s = await run("curl", ["-sS", "--max-time", "10", "-k", `pop3s://127.0.0.1:${tls.pop3sPort}/`,
        "-u", "tls:tlspw"]);
      assert.equal(pop3s.code, 0, pop3s.stderr);
      await waitFor(() => tls.logins().length >= 3, "Dovecot's three login lines", 5000);
      const logins = tls.logins();
      assert.equal(logins.length, 3, tls.readLog());
      assert.ok(logins.every((l) => / TLS/.test(l.line)), tls.readLog());
    } finally {
      await tls.stop();
    }
    for (const port of ports) assert.equal(await canConnect(port), false, `port ${port} still accepts after stop()`);
    assert.equal(processGroupAlive(tls.pid), false);
    assert.equal(fs.existsSync(tls.dir), false, `${tls.dir} was not removed`);
    assert.match(tls.readLog(), /starting up for imap, pop3, lmtp/);
  } finally {
    fs.rmSync(certDir, { recursive: true, force: true });
  }
});
