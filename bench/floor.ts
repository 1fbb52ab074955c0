// Not Postern: a measuring stick for bench/README.md ("Where the login CPU goes"). The least a
// Bun.listen IMAP login proxy can cost: the same socket events and system calls as Postern's
// login in the imap-login scenario (greeting, LOGIN, an auth_http request on a kept-alive
// connection, the backend LOGIN with two literals as nginx sends it, relay, half-close), driven
// by plain callbacks, with no timers, no promises, no logs, no limits and no parsing beyond what
// the benchmark's happy path needs. Never run it in front of real clients.
//
//   node bench/run.mjs --quick --scenario imap-login --keep     # leaves the mock backend's and
//   bun bench/floor.ts LISTEN_PORT AUTH_PORT                     # auth nginx's configs in the
//                                                                # temp dir: start them, then this,
// then the load generator from that temp dir: `loadgen login --proto imap --port LISTEN_PORT
// --conc 50 --duration 4`, pinned as run.mjs pins them, and read the process's utime/stime.
//
//   bun bench/floor.ts LISTEN_PORT AUTH_PORT platform
//
// runs the same login on Postern's Bun platform layer instead (platform/bun.ts: Conn objects,
// a promise per read, connect with its timeout, the relay with its idle timer and byte counts),
// still with this file's auth request and no parsing: what the platform layer costs over the floor.
import { bunPlatform } from "../platform/bun.ts";
import type { Conn } from "../src/platform.ts";

const [listenPort, authPort] = process.argv.slice(2, 4).map(Number);
const onPlatform = process.argv[4] === "platform";
const enc = new TextEncoder();
const dec = new TextDecoder("latin1");

type Auth = { sock: any; busy: boolean; buf: string; cb?: (host: string, port: number) => void };
const idle: Auth[] = [];
function ask(user: string, pass: string, cb: (host: string, port: number) => void) {
  const req = `GET /auth HTTP/1.1\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: ${user}\r\nAuth-Pass: ${pass}\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n`;
  const a = idle.pop();
  if (a) {
    a.cb = cb;
    a.buf = "";
    a.sock.write(req);
    return;
  }
  const na: Auth = { sock: undefined, busy: true, buf: "", cb };
  Bun.connect({
    hostname: "127.0.0.1", port: authPort, data: na,
    socket: {
      open(s) { s.data.sock = s; s.write(req); },
      data(s, d) {
        const x = s.data as Auth;
        x.buf += dec.decode(d);
        const end = x.buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = x.buf.slice(0, end);
        const server = /Auth-Server: (\S+)/i.exec(head)![1];
        const port = Number(/Auth-Port: (\d+)/i.exec(head)![1]);
        const cb = x.cb!;
        x.cb = undefined;
        idle.push(x);
        cb(server, port);
      },
      close() {},
    },
  });
}

/** The same login as below, written against the platform's Conn: awaits instead of callbacks. */
async function platformSession(c: Conn): Promise<void> {
  const P = bunPlatform;
  await c.write(enc.encode("* OK IMAP4 ready\r\n"));
  const d = await c.read();
  const [tag, , user, pass] = d === null ? [] : dec.decode(d).split("\r\n")[0].split(" ");
  if (pass === undefined) return c.close();
  const [host, port] = await new Promise<[string, number]>((r) => ask(user, pass, (h, p) => r([h, p])));
  const u = await P.connect({ host, port }, 60_000);
  await u.read();
  for (const line of [`a LOGIN {${user.length}}\r\n`, `${user} {${pass.length}}\r\n`, `${pass}\r\n`]) {
    await u.write(enc.encode(line));
    await u.read();
  }
  await c.write(enc.encode(`${tag} OK Logged in\r\n`));
  P.relay(c, u, { bufferSize: 4096, idleTimeoutMs: 86_400_000 });
}

type S = { client: any; up?: any; state: number; buf: string; user: string; pass: string; tag: string; relaying: boolean };
if (onPlatform) await bunPlatform.listen({ host: "127.0.0.1", port: listenPort }, (c) => void platformSession(c));
else Bun.listen<S>({
  hostname: "127.0.0.1", port: listenPort, allowHalfOpen: true,
  socket: {
    open(s) {
      s.data = { client: s, state: 0, buf: "", user: "", pass: "", tag: "", relaying: false };
      s.write("* OK IMAP4 ready\r\n");
    },
    data(s, d) {
      const x = s.data;
      if (x.relaying) { x.up.write(d); return; }
      x.buf += dec.decode(d);
      const nl = x.buf.indexOf("\r\n");
      if (nl < 0) return;
      const [tag, , user, pass] = x.buf.slice(0, nl).split(" ");
      x.buf = "";
      x.tag = tag; x.user = user; x.pass = pass;
      ask(user, pass, (host, port) => {
        Bun.connect<S>({
          hostname: host, port, data: x, allowHalfOpen: true,
          socket: {
            open(u) { u.data.up = u; },
            data(u, d2) {
              const y = u.data;
              if (y.relaying) { y.client.write(d2); return; }
              const line = dec.decode(d2);
              if (y.state === 0) { u.write(`a LOGIN {${y.user.length}}\r\n`); y.state = 1; }
              else if (y.state === 1) { u.write(`${y.user} {${y.pass.length}}\r\n`); y.state = 2; }
              else if (y.state === 2) { u.write(`${y.pass}\r\n`); y.state = 3; }
              else if (y.state === 3 && line.startsWith("a OK")) { y.client.write(`${y.tag} OK Logged in\r\n`); y.relaying = true; }
            },
            end(u) { u.data.client.shutdown(); },
            close(u) { u.data.client.end(); },
          },
        });
      });
    },
    end(s) { s.data.up?.shutdown(); },
    close(s) { s.data.up?.end(); },
  },
});
console.error(`floor proxy${onPlatform ? " on the platform layer" : ""} on ${listenPort}`);
