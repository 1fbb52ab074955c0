// A scripted TCP backend for tests (node:net and node:tls only: runs on Node, Deno and Bun).
// It plays a mail server from a script of replies and expected client lines, records every byte
// it received exactly, and can refuse, stay silent, drop mid-login or echo after login.
//
//   const be = await startMockBackend({ script: imapBackend({ user: "alice", password: "pw" }) });
//   ... be.connections[0].receivedText() === "1 LOGIN {5}\r\nalice {2}\r\npw\r\n..."
import * as net from "node:net";
import * as tls from "node:tls";
import { Buffer } from "node:buffer";
import { freePort } from "./ports.ts";

export interface Credentials {
  readonly user: string;
  readonly password: string;
}

export type LineReply = string | ((line: string, match: RegExpExecArray | null) => string);

export type Step =
  /** Write these bytes (a string is sent as latin1, byte for byte). */
  | { readonly send: string | Uint8Array }
  /** Read one line (up to LF); it must equal the string (without CRLF) or match the RegExp. */
  | { readonly expect: string | RegExp; readonly reply?: LineReply }
  /** Read exactly this many bytes (e.g. an IMAP literal). */
  | { readonly expectBytes: number }
  /** A whole IMAP LOGIN (quoted strings, atoms or literals, synchronizing or not), answered
   *  "TAG OK" when it matches `expect` (or always, when `expect` is "any") and "TAG NO" otherwise. */
  | { readonly imapLogin: Credentials | "any" }
  /** POP3 USER then PASS, answered "+OK" or "-ERR". */
  | { readonly pop3Login: Credentials | "any" }
  /** Turn the connection into TLS as the server (after sending your own "OK, begin TLS" reply). */
  | { readonly startTls: { readonly cert: string; readonly key: string } }
  /** Send FIN (after what was written); the script ends. */
  | { readonly close: true }
  /** Reset the connection at once; the script ends. */
  | { readonly destroy: true }
  /** Answer every further line with `respond(line)`; null leaves it unanswered, `close` ends. */
  | { readonly respond: (line: string) => string | null | { readonly reply: string; readonly close?: boolean } }
  /** After login: echo. "raw" returns every byte verbatim and closes after the client's FIN;
   *  "imap" / "pop3" / "smtp" answer each line in that protocol's shape (see below). */
  | { readonly echo: "raw" | "imap" | "pop3" | "smtp" };

export interface ProxyHeader {
  readonly version: 1 | 2;
  readonly command: "PROXY" | "LOCAL";
  readonly family: string; // "TCP4" | "TCP6" | "UNKNOWN" (v1), "TCP4" | "TCP6" | "UNSPEC" | ... (v2)
  readonly source?: string;
  readonly sourcePort?: number;
  readonly dest?: string;
  readonly destPort?: number;
  readonly raw: Uint8Array;
}

export interface BackendConn {
  readonly index: number;
  readonly remote: { readonly address: string; readonly port: number };
  /** With `proxyProtocol`: the header the client sent first. */
  proxy?: ProxyHeader;
  /** Credentials seen by imapLogin / pop3Login steps, in order. */
  readonly logins: Credentials[];
  /** What went wrong, if the script did not go as written (mismatch, early close...). */
  error?: string;
  /** Index of the step running now (steps.length once the script is done). */
  step: number;
  tls: boolean;
  /** With `tls.ca`: the client certificate's subject ("CN=..."), and whether it verified against `ca`. */
  peerSubject?: string;
  peerVerified?: boolean;
  /** With implicit `tls`: the server name the client asked for (SNI), if any. */
  sni?: string;
  /** Bytes received after STARTTLS was asked for but before the handshake (must stay empty). */
  readonly plaintextAfterStartTls: Buffer[];
  /** "C: ..." / "S: ..." transcript in latin1, one entry per read or write. */
  readonly transcript: string[];
  closed: boolean;
  /** Every byte received (after the PROXY header; decrypted after TLS), exactly. */
  received(): Buffer;
  receivedText(): string;
  /** Resolves when the connection has closed. */
  readonly done: Promise<void>;
  /** Resolves when the script has run to its end (or failed). */
  readonly scriptDone: Promise<void>;
}

export interface MockBackendOptions {
  readonly host?: string;
  readonly port?: number;
  /** Steps for every connection, or per connection index. Default: [] (accept and never greet). */
  readonly script?: readonly Step[] | ((index: number) => readonly Step[]);
  /** Nothing listens on the port: connections are refused. */
  readonly refuse?: boolean;
  /** Expect a PROXY v1 or v2 header before the script starts. */
  readonly proxyProtocol?: boolean;
  /** Implicit TLS from the first byte; with `ca`, a client certificate is asked for (not required)
   *  and its subject recorded in `peerSubject`. */
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca?: string };
}

export interface MockBackend {
  readonly host: string;
  readonly port: number;
  readonly connections: BackendConn[];
  waitForConnections(n: number, timeoutMs?: number): Promise<BackendConn[]>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Ready-made scripts

export const IMAP_GREETING = "* OK [CAPABILITY IMAP4rev1 LITERAL+ ID AUTH=PLAIN] mock imap ready\r\n";
export const POP3_GREETING = "+OK mock pop3 ready\r\n";
export const SMTP_GREETING = "220 mock.example.com ESMTP mock\r\n";

/** Greeting, one LOGIN, then the IMAP echo. */
export function imapBackend(creds: Credentials | "any" = "any", greeting = IMAP_GREETING): Step[] {
  return [{ send: greeting }, { imapLogin: creds }, { echo: "imap" }];
}

/** Greeting, USER/PASS, then the POP3 echo. */
export function pop3Backend(creds: Credentials | "any" = "any", greeting = POP3_GREETING): Step[] {
  return [{ send: greeting }, { pop3Login: creds }, { echo: "pop3" }];
}

/** nginx's SMTP backend dialogue: EHLO, XCLIENT (answered with a new greeting), the client's
 *  EHLO/HELO, then the SMTP echo. */
export function smtpXclientBackend(greeting = SMTP_GREETING): Step[] {
  const ehlo = "250-mock.example.com\r\n250-XCLIENT ADDR LOGIN NAME PORT PROTO HELO\r\n250-8BITMIME\r\n250 SIZE 10240000\r\n";
  return [
    { send: greeting },
    { expect: /^EHLO /i, reply: ehlo },
    { expect: /^XCLIENT /i, reply: greeting },
    { expect: /^(EHLO|HELO) /i, reply: (_l, m) => (m![1].toUpperCase() === "EHLO" ? ehlo : "250 mock.example.com\r\n") },
    { echo: "smtp" },
  ];
}

// ---------------------------------------------------------------------------------------------
// Reading

const MAX_LINE_BYTES = 1 << 20; // a test client never sends more on one line; stops a runaway

class Reader {
  private buf = Buffer.alloc(0);
  private eof = false;
  private wake: (() => void) | null = null;
  private all: Buffer[] = [];
  private src: net.Socket | tls.TLSSocket | null = null;
  private readonly onData = (d: Buffer | string) => this.push(typeof d === "string" ? Buffer.from(d, "latin1") : d);
  private readonly onEnd = () => this.end();

  constructor(private readonly transcript: string[]) {}

  attach(s: net.Socket | tls.TLSSocket): void {
    this.src = s;
    s.on("data", this.onData);
    s.on("end", this.onEnd);
    s.on("close", this.onEnd);
  }
  detach(): void {
    if (!this.src) return;
    this.src.removeListener("data", this.onData);
    this.src.removeListener("end", this.onEnd);
    this.src.removeListener("close", this.onEnd);
    this.src = null;
  }
  /** Bytes read so far but not consumed by a step; emptied. */
  takeBuffered(): Buffer {
    const b = this.buf;
    this.buf = Buffer.alloc(0);
    return b;
  }
  received(): Buffer {
    return Buffer.concat(this.all);
  }
  /** Forget what was consumed so far (the PROXY header): received() keeps only unread bytes. */
  forgetConsumed(): void {
    this.all = this.buf.length ? [Buffer.from(this.buf)] : [];
  }
  push(d: Buffer): void {
    this.all.push(Buffer.from(d));
    this.transcript.push(`C: ${d.toString("latin1")}`);
    this.buf = Buffer.concat([this.buf, d]);
    this.wake?.();
  }
  end(): void {
    this.eof = true;
    this.wake?.();
  }
  get atEof(): boolean {
    return this.eof && this.buf.length === 0;
  }
  private async waitMore(): Promise<void> {
    await new Promise<void>((r) => (this.wake = r));
    this.wake = null;
  }
  /** One line including its LF; null at EOF before a full line. */
  async line(): Promise<string | null> {
    for (;;) {
      const i = this.buf.indexOf(0x0a);
      if (i >= 0) {
        const l = this.buf.subarray(0, i + 1).toString("latin1");
        this.buf = this.buf.subarray(i + 1);
        return l;
      }
      if (this.eof) return null;
      if (this.buf.length > MAX_LINE_BYTES) throw new Error(`line longer than ${MAX_LINE_BYTES} bytes`);
      await this.waitMore();
    }
  }
  async bytes(n: number): Promise<Buffer | null> {
    while (this.buf.length < n) {
      if (this.eof) return null;
      await this.waitMore();
    }
    const b = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return Buffer.from(b);
  }
  /** Whatever is there (waits for at least one byte); null at EOF. */
  async some(): Promise<Buffer | null> {
    while (this.buf.length === 0) {
      if (this.eof) return null;
      await this.waitMore();
    }
    return this.takeBuffered();
  }
}

function stripEol(line: string): string {
  return line.replace(/\r?\n$/, "");
}

/** Parse IMAP astrings from `text` (atoms, quoted strings; literals already inlined as {N}\0...). */
function imapArgs(parts: { text: string; literals: string[] }): string[] {
  const out: string[] = [];
  const s = parts.text;
  let i = 0;
  let lit = 0;
  while (i < s.length) {
    if (s[i] === " ") {
      i++;
      continue;
    }
    if (s[i] === '"') {
      let v = "";
      i++;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === "\\") i++;
        v += s[i++];
      }
      i++;
      out.push(v);
    } else if (s[i] === "{") {
      const j = s.indexOf("}", i);
      out.push(parts.literals[lit++]);
      i = j + 1;
    } else {
      const j = s.indexOf(" ", i);
      out.push(j < 0 ? s.slice(i) : s.slice(i, j));
      i = j < 0 ? s.length : j;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The server

function parseProxyV1(line: string, raw: Buffer): ProxyHeader {
  const f = stripEol(line).split(" ");
  if (f[0] !== "PROXY") throw new Error(`expected a PROXY header, got ${JSON.stringify(line)}`);
  if (f[1] === "UNKNOWN") return { version: 1, command: "PROXY", family: "UNKNOWN", raw };
  if (f.length !== 6) throw new Error(`malformed PROXY v1 header ${JSON.stringify(line)}`);
  return {
    version: 1, command: "PROXY", family: f[1], source: f[2], dest: f[3], sourcePort: Number(f[4]),
    destPort: Number(f[5]), raw,
  };
}

const V2_SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

async function readProxyHeader(r: Reader): Promise<ProxyHeader> {
  const first = await r.bytes(12);
  if (!first) throw new Error("connection closed before a PROXY header");
  if (first.equals(V2_SIG)) {
    const hdr = await r.bytes(4);
    if (!hdr) throw new Error("connection closed inside a PROXY v2 header");
    const len = hdr.readUInt16BE(2);
    const body = (await r.bytes(len)) ?? Buffer.alloc(0);
    const raw = Buffer.concat([first, hdr, body]);
    const command = (hdr[0] & 0x0f) === 0 ? "LOCAL" : "PROXY";
    const fam = hdr[1] >> 4;
    if (fam === 1 && body.length >= 12) {
      const ip = (o: number) => [...body.subarray(o, o + 4)].join(".");
      return { version: 2, command, family: "TCP4", source: ip(0), dest: ip(4), sourcePort: body.readUInt16BE(8),
        destPort: body.readUInt16BE(10), raw };
    }
    if (fam === 2 && body.length >= 36) {
      const ip = (o: number) => [0, 2, 4, 6, 8, 10, 12, 14].map((k) => body.readUInt16BE(o + k).toString(16)).join(":");
      return { version: 2, command, family: "TCP6", source: ip(0), dest: ip(16), sourcePort: body.readUInt16BE(32),
        destPort: body.readUInt16BE(34), raw };
    }
    return { version: 2, command, family: "UNSPEC", raw };
  }
  if (!first.subarray(0, 6).equals(Buffer.from("PROXY "))) {
    throw new Error(`expected a PROXY header, got ${JSON.stringify(first.toString("latin1"))}`);
  }
  const rest = await r.line();
  if (rest === null) throw new Error("connection closed inside a PROXY v1 header");
  const line = first.toString("latin1") + rest;
  return parseProxyV1(line, Buffer.from(line, "latin1"));
}

/** Start the backend on a free port of 127.0.0.1 (or `refuse`: a free port nothing listens on). */
export async function startMockBackend(opts: MockBackendOptions = {}): Promise<MockBackend> {
  const host = opts.host ?? "127.0.0.1";
  const connections: BackendConn[] = [];
  if (opts.refuse) {
    const port = opts.port ?? (await freePort(host));
    return {
      host, port, connections,
      waitForConnections: () => Promise.reject(new Error("A refusing mock backend gets no connections")),
      close: async () => {},
    };
  }
  const sockets = new Set<net.Socket>();
  const waiters = new Set<() => void>();

  const handle = (sock: net.Socket) => {
    sockets.add(sock);
    sock.on("error", () => {});
    const index = connections.length;
    const transcript: string[] = [];
    const reader = new Reader(transcript);
    let resolveDone!: () => void;
    let resolveScript!: () => void;
    const conn: BackendConn = {
      index,
      remote: { address: sock.remoteAddress ?? "", port: sock.remotePort ?? 0 },
      logins: [],
      step: 0,
      tls: opts.tls !== undefined,
      plaintextAfterStartTls: [],
      transcript,
      closed: false,
      received: () => reader.received(),
      receivedText: () => reader.received().toString("latin1"),
      done: new Promise<void>((r) => (resolveDone = r)),
      scriptDone: new Promise<void>((r) => (resolveScript = r)),
    };
    connections.push(conn);
    for (const w of waiters) w();
    let out: net.Socket | tls.TLSSocket = sock;
    if (sock instanceof tls.TLSSocket) conn.sni = (sock as tls.TLSSocket & { servername?: string | false }).servername || undefined;
    if (sock instanceof tls.TLSSocket && opts.tls?.ca !== undefined) {
      const peer = sock.getPeerCertificate();
      if (peer?.subject) conn.peerSubject = `CN=${peer.subject.CN}`;
      conn.peerVerified = sock.authorized;
    }
    sock.on("close", () => {
      sockets.delete(sock);
      conn.closed = true;
      resolveDone();
    });
    reader.attach(sock);

    const write = (data: string | Uint8Array) => {
      const b = typeof data === "string" ? Buffer.from(data, "latin1") : Buffer.from(data);
      transcript.push(`S: ${b.toString("latin1")}`);
      if (!out.destroyed) out.write(b);
    };
    const failWith = (msg: string) => {
      conn.error ??= `step ${conn.step}: ${msg}`;
      out.destroy();
    };
    const needLine = async (what: string): Promise<string> => {
      const l = await reader.line();
      if (l === null) throw new Error(`client closed the connection while ${what}`);
      return l;
    };

    const runStep = async (step: Step): Promise<"next" | "end"> => {
      if ("send" in step) {
        write(step.send);
      } else if ("expect" in step) {
        const line = await needLine(`expecting ${step.expect}`);
        const bare = stripEol(line);
        let m: RegExpExecArray | null = null;
        if (typeof step.expect === "string") {
          if (bare !== step.expect) throw new Error(`expected ${JSON.stringify(step.expect)}, got ${JSON.stringify(line)}`);
        } else {
          m = step.expect.exec(bare);
          if (!m) throw new Error(`expected ${step.expect}, got ${JSON.stringify(line)}`);
        }
        if (step.reply !== undefined) write(typeof step.reply === "string" ? step.reply : step.reply(bare, m));
      } else if ("expectBytes" in step) {
        const b = await reader.bytes(step.expectBytes);
        if (b === null) throw new Error(`client closed the connection while expecting ${step.expectBytes} bytes`);
      } else if ("imapLogin" in step) {
        const literals: string[] = [];
        let text = "";
        let line = stripEol(await needLine("expecting IMAP LOGIN"));
        for (;;) {
          const lit = /\{(\d+)(\+?)\}$/.exec(line);
          if (!lit) {
            text += line;
            break;
          }
          text += line;
          if (!lit[2]) write("+ OK\r\n");
          const b = await reader.bytes(Number(lit[1]));
          if (b === null) throw new Error("client closed the connection inside an IMAP literal");
          literals.push(b.toString("latin1"));
          line = stripEol(await needLine("reading the rest of IMAP LOGIN"));
        }
        const m = /^(\S+) (\S+) ?(.*)$/.exec(text);
        if (!m || m[2].toUpperCase() !== "LOGIN") {
          throw new Error(`expected an IMAP LOGIN, got ${JSON.stringify(text)}`);
        }
        // Literal bytes are already in `literals`; the text keeps only their {N} markers.
        const args = imapArgs({ text: m[3], literals });
        const got = { user: args[0] ?? "", password: args[1] ?? "" };
        conn.logins.push(got);
        const ok = step.imapLogin === "any" ||
          (got.user === step.imapLogin.user && got.password === step.imapLogin.password);
        write(ok ? `${m[1]} OK [CAPABILITY IMAP4rev1] Logged in\r\n` : `${m[1]} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n`);
        if (!ok) return "end";
      } else if ("pop3Login" in step) {
        const u = /^USER (.*)$/i.exec(stripEol(await needLine("expecting POP3 USER")));
        if (!u) throw new Error("expected POP3 USER");
        write("+OK\r\n");
        const p = /^PASS (.*)$/i.exec(stripEol(await needLine("expecting POP3 PASS")));
        if (!p) throw new Error("expected POP3 PASS");
        const got = { user: u[1], password: p[1] };
        conn.logins.push(got);
        const ok = step.pop3Login === "any" ||
          (got.user === step.pop3Login.user && got.password === step.pop3Login.password);
        write(ok ? "+OK Logged in.\r\n" : "-ERR [AUTH] Authentication failed.\r\n");
        if (!ok) return "end";
      } else if ("startTls" in step) {
        // RUNTIMES.md: pause before wrapping and resume after, or Deno hangs; anything the
        // client sent before the handshake is kept aside, never fed to TLS.
        sock.pause();
        reader.detach();
        const early = reader.takeBuffered();
        if (early.length) conn.plaintextAfterStartTls.push(early);
        const secure = new tls.TLSSocket(sock, {
          isServer: true,
          secureContext: tls.createSecureContext({ cert: step.startTls.cert, key: step.startTls.key }),
        });
        secure.on("error", () => {});
        const ready = new Promise<void>((resolve, reject) => {
          secure.once("secure", () => resolve());
          secure.once("error", reject);
          secure.once("close", () => reject(new Error("connection closed during the TLS handshake")));
        });
        reader.attach(secure);
        sock.resume();
        out = secure;
        await ready;
        conn.tls = true;
      } else if ("close" in step) {
        out.end();
        return "end";
      } else if ("destroy" in step) {
        sock.resetAndDestroy?.() ?? sock.destroy();
        return "end";
      } else if ("respond" in step) {
        for (;;) {
          const line = await reader.line();
          if (line === null) {
            out.end();
            return "end";
          }
          const r = step.respond(stripEol(line));
          if (r === null) continue;
          if (typeof r === "string") write(r);
          else {
            write(r.reply);
            if (r.close) {
              out.end();
              return "end";
            }
          }
        }
      } else if ("echo" in step) {
        if (step.echo === "raw") {
          for (;;) {
            const b = await reader.some();
            if (b === null) {
              out.end();
              return "end";
            }
            write(b);
          }
        }
        return await runStep({ respond: ECHO[step.echo]() });
      }
      return "next";
    };

    const run = async () => {
      try {
        if (opts.proxyProtocol) {
          conn.proxy = await readProxyHeader(reader);
          reader.forgetConsumed();
        }
        const steps = typeof opts.script === "function" ? opts.script(index) : (opts.script ?? []);
        for (; conn.step < steps.length; conn.step++) {
          if ((await runStep(steps[conn.step])) === "end") break;
        }
        conn.step = steps.length;
      } catch (e) {
        failWith((e as Error).message);
      } finally {
        resolveScript();
      }
    };
    void run();
  };

  const server = opts.tls
    ? tls.createServer({
      cert: opts.tls.cert,
      key: opts.tls.key,
      allowHalfOpen: true,
      ...(opts.tls.ca !== undefined ? { ca: opts.tls.ca, requestCert: true, rejectUnauthorized: false } : {}),
    }, handle)
    : net.createServer({ allowHalfOpen: true }, handle);
  if (opts.tls) server.on("tlsClientError", () => {});
  // every TCP connection, also one whose TLS handshake never finished (a client that refused our
  // certificate and left): close() must not wait for those
  const raw = new Set<net.Socket>();
  server.on("connection", (s: net.Socket) => {
    raw.add(s);
    s.on("close", () => raw.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port: opts.port ?? 0 }, () => resolve());
  });
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("Cannot read the mock backend's port");

  return {
    host,
    port: addr.port,
    connections,
    async waitForConnections(n, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (connections.length < n) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`Mock backend got ${connections.length} of ${n} connections within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(done, left);
          function done() {
            clearTimeout(t);
            waiters.delete(done);
            resolve();
          }
          waiters.add(done);
        });
      }
      return connections;
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      for (const s of raw) s.destroy();
      await closed;
    },
  };
}

// The echo dialects: enough protocol shape for a client (or a proxy's relay) to see each line
// answered, and LOGOUT / QUIT to end the session cleanly.
const ECHO: Record<"imap" | "pop3" | "smtp", () => (line: string) => string | null | { reply: string; close?: boolean }> = {
  imap: () => (line) => {
    const m = /^(\S+) (\S+)(?: (.*))?$/.exec(line);
    if (!m) return `* BAD [CLIENTBUG] echo: ${line}\r\n`;
    const [, tag, cmd] = m;
    if (cmd.toUpperCase() === "LOGOUT") return { reply: `* BYE Logging out\r\n${tag} OK Logout completed.\r\n`, close: true };
    return `* ECHO ${line}\r\n${tag} OK ${cmd.toUpperCase()} completed.\r\n`;
  },
  pop3: () => (line) => {
    if (/^QUIT$/i.test(line)) return { reply: "+OK Logging out.\r\n", close: true };
    return `+OK echo ${line}\r\n`;
  },
  smtp: () => {
    let inData = false;
    return (line) => {
      if (inData) {
        if (line === ".") {
          inData = false;
          return "250 2.0.0 Ok: queued as MOCK\r\n";
        }
        return null;
      }
      if (/^DATA$/i.test(line)) {
        inData = true;
        return "354 End data with <CR><LF>.<CR><LF>\r\n";
      }
      if (/^QUIT$/i.test(line)) return { reply: "221 2.0.0 Bye\r\n", close: true };
      return `250 2.0.0 echo ${line}\r\n`;
    };
  },
};
