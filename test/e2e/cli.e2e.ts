// The command line and process behaviour of every target: -t, --version, config errors,
// hash-password, reload on HUP, graceful stop on QUIT, JSON logs.

import assert from "node:assert/strict";
import { test } from "node:test";
import { connectClient, within } from "../support/line-client.ts";
import { startMockBackend, imapBackend } from "../support/mock-backend.ts";
import { freePorts, waitFor } from "../support/ports.ts";
import { runPostern, startPostern, targets } from "../support/postern.ts";

for (const target of targets()) {
  test(`${target}: --version prints postern/X.Y.Z`, async () => {
    const r = await runPostern(target, ["--version"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^postern\/\d+\.\d+\.\d+ \((node|deno|bun)\)\n$/);
  });

  test(`${target}: -t accepts a good config and reports every error of a bad one as FILE:LINE:COL`, async () => {
    const [port] = await freePorts(1);
    const good = await runPostern(target, ["-t"], { configYaml: `mail:\n  servers:\n    - listen: [127.0.0.1:${port}]\n      protocol: imap\n` });
    assert.equal(good.code, 0, good.output);
    assert.match(good.stderr, /test is successful/);
    const bad = await runPostern(target, ["-t"], {
      configYaml: `mail:\n  proxy_buffer: lots\n  servers:\n    - listen: [127.0.0.1:${port}]\n      protocol: imap\n      imap_auth: [plain, kerberos]\n      imap_atuh: [plain]\n`,
    });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /postern\.yaml:2:17: mail\.proxy_buffer: .*"lots"/);
    assert.match(bad.stderr, /postern\.yaml:6:26: mail\.servers\[0\]\.imap_auth(\[1\])?: .*kerberos/);
    assert.match(bad.stderr, /postern\.yaml:7:7: mail\.servers\[0\]\.imap_atuh: .*imap_auth/);
  });

  test(`${target}: a bad config does not start a proxy`, async () => {
    const [port] = await freePorts(1);
    const r = await runPostern(target, [], { configYaml: `mail:\n  servers:\n    - listen: [127.0.0.1:${port}]\n      protocol: imap\n      timeout: soon\n` });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /postern\.yaml:5:16: mail\.servers\[0\]\.timeout: /);
  });

  test(`${target}: hash-password makes a hash that logs in`, async () => {
    const r = await runPostern(target, ["hash-password", "--password", "pa ss"]);
    assert.equal(r.code, 0, r.output);
    const hash = r.stdout.trim();
    assert.match(hash, /^scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    const backend = await startMockBackend({ script: imapBackend("any") });
    const [port, http] = await freePorts(2);
    const p = await startPostern(target, `
http: { listen: 127.0.0.1:${http} }
auth:
  users:
    - { user: u1, password_hash: "${hash}", backend: 127.0.0.1:${backend.port} }
mail:
  servers:
    - { listen: [127.0.0.1:${port}], protocol: imap }
`);
    try {
      const c = await connectClient(port);
      await c.expect(/ready\r\n/);
      c.send('a1 LOGIN u1 "pa ss"\r\n');
      await c.expect(/a1 OK/);
      c.destroy();
    } finally {
      await p.stop();
      await backend.close();
    }
  });

  test(`${target}: HUP reloads the config, a bad new config keeps the old one, QUIT waits for sessions`, async () => {
    const backend = await startMockBackend({ script: imapBackend("any") });
    const [port, port2] = await freePorts(2);
    const cfg = (caps: string, extra = "") => `
error_log: { format: json, level: info }
auth:
  users: [{ user: u, password: p, backend: 127.0.0.1:${backend.port} }]
mail:
  servers:
    - { listen: [127.0.0.1:${port}], protocol: imap, imap_capabilities: [${caps}] }
${extra}`;
    const p = await startPostern(target, cfg("IMAP4rev1"));
    try {
      // a session logged in before the reload keeps going through it
      const live = await connectClient(port);
      await live.expect(/ready\r\n/);
      live.send("a1 LOGIN u p\r\n");
      await live.expect(/a1 OK/);

      p.writeConfig(cfg("IMAP4rev1 XYZZY", `    - { listen: [127.0.0.1:${port2}], protocol: imap }`));
      const mark = p.logs().length;
      p.signal("SIGHUP");
      await p.waitForLog(/reconfigured/, 10_000, mark);
      const c = await connectClient(port);
      await c.expect(/ready\r\n/);
      c.send("a1 CAPABILITY\r\n");
      assert.match(await c.expect(/a1 OK.*\r\n/), /\* CAPABILITY IMAP4rev1 XYZZY AUTH=PLAIN\r\n/);
      c.destroy();
      const c2 = await connectClient(port2);
      await c2.expect(/ready\r\n/);
      c2.destroy();

      p.writeConfig("mail: [this is not a config");
      const mark2 = p.logs().length;
      p.signal("SIGHUP");
      await p.waitForLog(/keeping the running configuration/, 10_000, mark2);
      const c3 = await connectClient(port);
      await c3.expect(/ready\r\n/);
      c3.destroy();

      // every log line is one JSON object
      for (const line of p.logs().split("\n").filter((l) => l.startsWith("{"))) JSON.parse(line);

      live.send("a2 NOOP\r\n");
      await live.expect(/a2 OK/);
      p.signal("SIGQUIT");
      await p.waitForLog(/gracefully shutting down/, 10_000);
      // the listener is gone, the live session still works until the client ends it
      live.send("a3 NOOP\r\n");
      await live.expect(/a3 OK/);
      assert.equal(p.exitStatus(), null);
      live.end();
      const st = await within(p.exited, 10_000, "exit after the last session");
      assert.equal(st.code, 0);
    } finally {
      await p.stop().catch(() => {});
      await backend.close();
    }
  });

  test(`${target}: worker_processes 2 shares the listener between two processes, reloads both and stops both`, async () => {
    const [port, http] = await freePorts(2);
    const p = await startPostern(target, `
worker_processes: 2
http: { listen: 127.0.0.1:${http} }
mail:
  servers:
    - { listen: [127.0.0.1:${port}], protocol: imap }
`);
    try {
      await p.waitForLog(/worker 2, 1 mail listener/, 15_000);
      await p.waitForLog(/worker 1, 1 mail listener/, 15_000);
      const pids = new Set<string>();
      // SO_REUSEPORT spreads by connection hash: a few dozen connections reach both workers
      const settled = () =>
        waitFor(async () => {
          const text = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
          return /^postern_sessions_active 0$/m.test(text) && text;
        }, "the workers' sessions to end");
      const total = (text: string) => Number(/^postern_connections_total (\d+)$/m.exec(text)?.[1]);
      const before = total(await settled()); // the harness's own readiness probes
      let made = 0;
      for (let i = 0; i < 40 && pids.size < 2; i++) {
        const c = await connectClient(port);
        await c.expect(/ready\r\n/);
        c.destroy();
        made = i + 1;
        await waitFor(() => (p.logs().match(/ connected to /g) ?? []).length >= made, "the connection's log line");
        for (const m of p.logs().matchAll(/ (\d+)#0: \*\d+ client 127\.0\.0\.2:\d+ connected/g)) pids.add(m[1]);
      }
      assert.equal(pids.size, 2, `connections went to ${[...pids].join(", ")}`);
      // worker 1 serves /metrics and /health for both: the counts are the sum of the workers'
      // (the connections went to both, so worker 1's own count would be short)
      assert.equal(total(await settled()), before + made);
      const held = await connectClient(port);
      await held.expect(/ready\r\n/);
      assert.match(await (await fetch(`http://127.0.0.1:${http}/metrics`)).text(), /^postern_sessions_active 1$/m);
      assert.equal((await (await fetch(`http://127.0.0.1:${http}/health`)).json()).sessions, 1);
      held.destroy();
      assert.equal(total(await settled()), before + made + 1);
      const mark = p.logs().length;
      p.signal("SIGHUP");
      await waitFor(() => (p.logs().slice(mark).match(/reconfigured/g) ?? []).length >= 2, "both workers to reload");
      assert.doesNotMatch(p.logs(), /exited on/);
      p.signal("SIGQUIT");
      const st = await within(p.exited, 15_000, "exit after QUIT");
      assert.equal(st.code, 0);
    } finally {
      await p.stop().catch(() => {});
    }
  });
}
