// Loads config.yaml: parses, applies nginx's defaults, inherits `mail:` into each
// entry of `mail.servers`, validates, reads the files it names, and freezes the
// result. Every problem is collected with its FILE:LINE:COL; nothing stops at the
// first. Pure: files come through ConfigEnv, nothing here touches a runtime.

import type {
  AuthConfig,
  AuthUser,
  CertPair,
  Config,
  ConfigEnv,
  ConfigError,
  ConfigResult,
  HttpConfig,
  ListenSpec,
  LogLevel,
  LogTarget,
  Protocol,
  ResolverSpec,
  ServerConfig,
} from "./types.ts";
import * as v from "./values.ts";
import { describeNode, parseYamlTree } from "./yaml-tree.ts";
import type { Pos, Y, YMap } from "./yaml-tree.ts";

/** `FILE:LINE:COL: directive: what is wrong`, the form every config error is printed in. */
export function formatConfigError(e: ConfigError): string {
  return `${e.file}:${e.line}:${e.col}: ${e.directive}: ${e.message}`;
}

// ---- defaults (nginx's, from src/mail/*.c) ------------------------------------------

const PAGE_SIZE = 4096; // nginx defaults its buffers to one memory page
const DEFAULT_LOG: LogTarget = { dest: "stderr", level: "info", format: "text" };
const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"];
const NGINX_LOG_LEVEL: LogLevel = "error"; // nginx's level when a log names none
const PROTOCOL_PORTS: Readonly<Record<Protocol, readonly number[]>> = {
  imap: [143, 993],
  pop3: [110, 995],
  smtp: [25, 465, 587],
};
/** Mechanism names per protocol, in nginx's bitmask order (the order capabilities list them). */
const AUTH_METHODS: Readonly<Record<Protocol, readonly string[]>> = {
  imap: ["plain", "login", "cram-md5", "external"],
  pop3: ["plain", "apop", "cram-md5", "external"],
  smtp: ["plain", "login", "cram-md5", "external", "none"],
};
const AUTH_ORDER = ["plain", "login", "apop", "cram-md5", "external", "none"];
const SSL_PROTOCOLS = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];
const SSL_SESSION_CACHE_MIN = 8 * PAGE_SIZE; // nginx: "session cache is too small" below 8 pages
const TICKET_KEY_SIZES = [48, 80]; // AES-128 or AES-256 ticket keys, as nginx reads them

// ---- what a parsed directive remembers ----------------------------------------------

/** Where a value sits: its directive path and the position of its node. */
interface At {
  readonly path: string;
  readonly pos: Pos;
}

interface Setting<T> {
  readonly value: T;
  readonly at: At;
}

/** A file named by the config: absolute path, or inline PEM after "data:" (nginx's form). */
interface FileRef {
  readonly path: string;
  readonly at: At;
}

interface ListenItem {
  readonly spec: ListenSpec;
  readonly at: At;
}

interface MethodList {
  readonly words: readonly string[];
  readonly at: readonly At[]; // the node each word came from, in the same order
}

/** Every directive allowed in nginx's `mail {}` / `server {}`, keyed by its nginx name. */
interface Directives {
  listen: ListenItem[];
  protocol: Protocol;
  server_name: string;
  timeout: number;
  max_errors: number;
  resolver: ResolverSpec;
  resolver_timeout: number;
  error_log: LogTarget[];
  auth_http: string;
  auth_http_header: Record<string, string>;
  auth_http_pass_client_cert: boolean;
  auth_http_timeout: number;
  proxy: boolean;
  proxy_buffer: number;
  proxy_pass_error_message: boolean;
  proxy_protocol: "off" | "v1" | "v2";
  proxy_smtp_auth: boolean;
  proxy_timeout: number;
  xclient: boolean;
  proxy_ssl: "off" | "on" | "starttls";
  proxy_ssl_verify: boolean;
  proxy_ssl_trusted_certificate: FileRef;
  proxy_ssl_name: string;
  proxy_ssl_certificate: FileRef;
  proxy_ssl_certificate_key: FileRef;
  set_real_ip_from: string[];
  ssl_certificate: FileRef[];
  ssl_certificate_key: FileRef[];
  ssl_certificate_compression: boolean;
  ssl_password_file: FileRef;
  ssl_protocols: string[];
  ssl_ciphers: string;
  ssl_ecdh_curve: string;
  ssl_prefer_server_ciphers: boolean;
  ssl_client_certificate: FileRef;
  ssl_trusted_certificate: FileRef;
  ssl_verify_client: "off" | "on" | "optional" | "optional_no_ca";
  ssl_verify_depth: number;
  ssl_crl: FileRef;
  ssl_dhparam: FileRef;
  ssl_session_cache: string[];
  ssl_session_timeout: number;
  ssl_session_tickets: boolean;
  ssl_session_ticket_key: FileRef[];
  starttls: "off" | "on" | "only";
  imap_auth: MethodList;
  imap_capabilities: string[];
  imap_client_buffer: number;
  pop3_auth: MethodList;
  pop3_capabilities: string[];
  pop3_client_buffer: number;
  smtp_auth: MethodList;
  smtp_capabilities: string[];
  smtp_client_buffer: number;
  smtp_greeting_delay: number;
}

type Layer = { [K in keyof Directives]?: Setting<Directives[K]> };
type Parser<T> = (node: Y, at: At, L: Loader) => T | undefined;

// ---- the loader: errors, warnings, paths, files ---------------------------------------

type FileRead<T> = { ok: true; data: T } | { ok: false; message: string };

class Loader {
  readonly errors: ConfigError[] = [];
  readonly warnings: { pos: Pos; text: string }[] = [];
  private readonly reported = new Set<string>();
  private readonly texts = new Map<string, FileRead<string>>();
  private readonly bytes = new Map<string, FileRead<Uint8Array>>();
  readonly dir: string;

  constructor(readonly file: string, readonly env: ConfigEnv) {
    this.dir = dirname(file);
  }

  error(at: At, message: string): void {
    const key = `${at.pos.line}:${at.pos.col}:${at.path}:${message}`;
    if (this.reported.has(key)) return; // a mail-level value is checked once per server
    this.reported.add(key);
    this.errors.push({ file: this.file, line: at.pos.line, col: at.pos.col, directive: at.path, message });
  }

  warn(at: At, message: string): void {
    const text = `${this.file}:${at.pos.line}:${at.pos.col}: ${at.path}: ${message}`;
    if (this.reported.has(text)) return;
    this.reported.add(text);
    this.warnings.push({ pos: at.pos, text });
  }

  /** Reports a parse failure at `at`; returns the value on success. */
  take<T>(at: At, r: v.Parsed<T>): T | undefined {
    if (r.ok) return r.value;
    this.error(at, r.message);
    return undefined;
  }

  resolve(path: string): string {
    return resolvePath(this.dir, path);
  }

  /** The text of a referenced file (or inline "data:"), read once per load; a failure is reported at `ref.at`. */
  readText(ref: FileRef): string | undefined {
    if (ref.path.startsWith("data:")) return ref.path.slice("data:".length);
    return this.cached(this.texts, ref, (path) => this.env.readFile(path));
  }

  readBytes(ref: FileRef): Uint8Array | undefined {
    return this.cached(this.bytes, ref, (path) => this.env.readFileBytes(path));
  }

  private cached<T>(cache: Map<string, FileRead<T>>, ref: FileRef, read: (path: string) => T): T | undefined {
    let r = cache.get(ref.path);
    if (!r) {
      try {
        r = { ok: true, data: read(ref.path) };
      } catch (e) {
        r = { ok: false, message: `cannot read "${ref.path}": ${errorText(e)}` };
      }
      cache.set(ref.path, r);
    }
    if (r.ok) return r.data;
    this.error(ref.at, r.message);
    return undefined;
  }
}

function errorText(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}

// ---- paths, written by hand: src/ has no path module ----------------------------------

function isAbsolute(p: string): boolean {
  return p.startsWith("/") || p.startsWith("\\") || /^[A-Za-z]:[\\/]/.test(p);
}

function dirname(file: string): string {
  const cut = Math.max(file.lastIndexOf("/"), file.lastIndexOf("\\"));
  if (cut < 0) return ".";
  if (cut === 0) return file.charAt(0);
  if (/^[A-Za-z]:$/.test(file.slice(0, cut))) return file.slice(0, cut + 1);
  return file.slice(0, cut);
}

/** `p` made absolute against `dir` (the config file's directory), with "." and ".." folded. */
export function resolvePath(dir: string, p: string): string {
  const sep = dir.includes("\\") && !dir.includes("/") ? "\\" : "/";
  const full = isAbsolute(p) ? p : `${dir}${sep}${p}`;
  const root = /^[A-Za-z]:[\\/]/.test(full) ? full.slice(0, 3) : /^[\\/]/.test(full) ? full.charAt(0) : "";
  const parts: string[] = [];
  for (const part of full.slice(root.length).split(/[\\/]/)) {
    if (part === "" || part === ".") continue;
    if (part === ".." && parts.length > 0 && parts[parts.length - 1] !== "..") parts.pop();
    else if (part === ".." && root !== "") continue;
    else parts.push(part);
  }
  const joined = parts.join(sep);
  return root !== "" ? root + joined : joined === "" ? "." : joined;
}

// ---- node helpers ---------------------------------------------------------------------

function child(at: At, key: string | number, pos: Pos): At {
  return { path: typeof key === "number" ? `${at.path}[${key}]` : at.path === "" ? key : `${at.path}.${key}`, pos };
}

/** A scalar that is a string (numbers keep their written text); anything else is reported. */
function str(node: Y, at: At, L: Loader, what = "a string"): string | undefined {
  if (node.kind === "scalar" && (typeof node.value === "string" || typeof node.value === "number")) {
    const s = node.text.trim();
    if (s !== "") return s;
  }
  L.error(at, `expected ${what}, got ${describeNode(node)}`);
  return undefined;
}

/** A string with no spaces or control characters (names that go on the wire). */
function word(what: string): Parser<string> {
  return (node, at, L) => {
    const s = str(node, at, L, what);
    if (s === undefined) return undefined;
    if (/\s/.test(s) || hasControl(s)) {
      L.error(at, `expected ${what} without spaces, got ${JSON.stringify(s)}`);
      return undefined;
    }
    return s;
  };
}

/** Whether text holds a control character (CR, LF, NUL...), which must never reach a protocol line. */
function hasControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

function scalarValue(node: Y): unknown {
  if (node.kind === "seq") return [];
  if (node.kind === "map") return {};
  return node.value;
}

function viaValue<T>(fn: (x: unknown) => v.Parsed<T>): Parser<T> {
  return (node, at, L) => L.take(at, fn(scalarValue(node)));
}

const flag: Parser<boolean> = viaValue(v.parseFlag);
const time: Parser<number> = viaValue((x) => v.parseTime(x));
const count: Parser<number> = viaValue((x) => v.parseCount(x, 0));

function bufferSize(node: Y, at: At, L: Loader): number | undefined {
  const n = L.take(at, v.parseSize(scalarValue(node)));
  if (n === 0) {
    L.error(at, "must be larger than 0");
    return undefined;
  }
  return n;
}

function oneOf<T extends string>(
  words: readonly T[],
  bools?: { true: T; false: T },
  aliases?: Record<string, T>,
): Parser<T> {
  return viaValue((x) => v.parseEnum(x, words, bools, aliases));
}

interface Word {
  readonly text: string;
  readonly at: At;
}

/**
 * A list of words: a YAML list, or one space-separated string. `wholeItems` keeps
 * each list item whole (capabilities such as "SIZE 10485760" are one item).
 */
function words(node: Y, at: At, L: Loader, wholeItems = false): Word[] | undefined {
  const out: Word[] = [];
  const fromScalar = (n: Y, a: At, split: boolean): boolean => {
    if (n.kind !== "scalar" || n.value === null || typeof n.value === "boolean") {
      L.error(a, `expected a word or a list of words, got ${describeNode(n)}`);
      return false;
    }
    const text = n.text.trim();
    const parts = split ? v.splitWords(text) : text === "" ? [] : [text];
    if (parts.length === 0) {
      L.error(a, "empty word");
      return false;
    }
    if (parts.some(hasControl)) {
      L.error(a, `control characters are not allowed in ${JSON.stringify(text)}`);
      return false;
    }
    for (const p of parts) out.push({ text: p, at: a });
    return true;
  };
  if (node.kind === "seq") {
    if (node.items.length === 0) {
      L.error(at, "expected at least one word, got an empty list");
      return undefined;
    }
    let good = true;
    node.items.forEach((item, i) => {
      good = fromScalar(item, child(at, i, item.pos), !wholeItems) && good;
    });
    return good ? out : undefined;
  }
  return fromScalar(node, at, true) ? out : undefined;
}

function wordList(wholeItems: boolean): Parser<string[]> {
  return (node, at, L) => words(node, at, L, wholeItems)?.map((w) => w.text);
}

/** Capabilities are protocol tokens, sent as they are: ASCII only. */
const capabilities: Parser<string[]> = (node, at, L) => {
  const list = wordList(true)(node, at, L);
  const bad = list?.find((c) => !isAscii(c));
  if (bad !== undefined) {
    L.error(at, `capabilities are ASCII protocol words, got ${JSON.stringify(bad)}`);
    return undefined;
  }
  return list;
};

/** A map's entries checked against the keys it allows; unknown keys are reported with a suggestion. */
function entries(node: Y, at: At, L: Loader, allowed: readonly string[]): Map<string, { node: Y; at: At }> | undefined {
  if (node.kind !== "map") {
    L.error(at, `expected a map, got ${describeNode(node)}`);
    return undefined;
  }
  const out = new Map<string, { node: Y; at: At }>();
  for (const e of node.entries) {
    const a = child(at, e.key, e.value.pos);
    if (!allowed.includes(e.key)) {
      L.error({ path: a.path, pos: e.keyPos }, unknownKey(e.key, allowed));
      continue;
    }
    out.set(e.key, { node: e.value, at: a });
  }
  return out;
}

function unknownKey(key: string, known: Iterable<string>): string {
  const hint = v.closest(key, known);
  return `unknown directive${hint ? `; did you mean ${hint}?` : ""}`;
}

// ---- directive parsers ----------------------------------------------------------------

const LISTEN_KEYS = ["address", "ssl", "proxy_protocol", "backlog", "rcvbuf", "sndbuf", "bind", "ipv6only", "so_keepalive"];

function listenSpec(p: v.ListenParams): ListenSpec {
  return {
    host: p.address.host,
    port: p.address.port,
    ssl: p.ssl,
    proxyProtocol: p.proxyProtocol,
    backlog: p.backlog,
    rcvbuf: p.rcvbuf,
    sndbuf: p.sndbuf,
    bind: p.bind,
    ipv6only: p.ipv6only,
    soKeepalive: p.soKeepalive,
    source: v.formatListen(p),
  };
}

function listenItem(node: Y, at: At, L: Loader): ListenItem | undefined {
  if (node.kind === "scalar") {
    const text = str(node, at, L, `a listen address like "127.0.0.1:143" or "993 ssl"`);
    if (text === undefined) return undefined;
    const p = L.take(at, v.parseListenString(text));
    return p && { spec: { ...listenSpec(p), source: text }, at };
  }
  const m = entries(node, at, L, LISTEN_KEYS);
  if (!m) return undefined;
  const addr = m.get("address");
  if (!addr) {
    L.error(at, `missing "address", as {address: "127.0.0.1:993", ssl: on}`);
    return undefined;
  }
  const addrText = str(addr.node, addr.at, L, `an address like "127.0.0.1:143"`);
  const address = addrText === undefined ? undefined : L.take(addr.at, v.parseAddress(addrText, v.LISTEN_ADDRESS));
  const p: v.ListenParams = { address: address ?? { host: "", port: 0 }, ssl: false, proxyProtocol: false, bind: false, soKeepalive: false };
  let good = address !== undefined;
  for (const [key, e] of m) {
    if (key === "address") continue;
    let text: string | undefined;
    if (key === "ssl" || key === "proxy_protocol" || key === "bind") {
      const f = flag(e.node, e.at, L);
      if (f === undefined) good = false;
      else if (key === "ssl") p.ssl = f;
      else if (key === "proxy_protocol") p.proxyProtocol = f;
      else p.bind = p.bind || f;
      continue;
    }
    if (key === "ipv6only" || key === "so_keepalive") {
      const f = flag(e.node, e.at, L);
      if (f === undefined) good = false;
      text = f === undefined ? undefined : `${key}=${f ? "on" : "off"}`;
    } else {
      const s = e.node.kind === "scalar" && e.node.value !== null ? e.node.text : undefined;
      if (s === undefined) L.error(e.at, `expected a ${key === "backlog" ? "number" : "size"}, got ${describeNode(e.node)}`);
      text = s === undefined ? undefined : `${key}=${s}`;
    }
    if (text === undefined) {
      good = false;
      continue;
    }
    const problem = v.parseListenParam(p, text);
    if (problem) {
      L.error(e.at, problem);
      good = false;
    }
  }
  if (!good) return undefined;
  const problem = v.finishListen(p);
  if (problem) {
    L.error(at, problem);
    return undefined;
  }
  return { spec: listenSpec(p), at };
}

const listen: Parser<ListenItem[]> = (node, at, L) => {
  const items = node.kind === "seq" ? node.items.map((n, i) => ({ n, a: child(at, i, n.pos) })) : [{ n: node, a: at }];
  if (items.length === 0) {
    L.error(at, "expected at least one address, got an empty list");
    return undefined;
  }
  const out: ListenItem[] = [];
  let good = true;
  for (const { n, a } of items) {
    const item = listenItem(n, a, L);
    if (item) out.push(item);
    else good = false;
  }
  return good ? out : undefined;
};

/** Whether text is printable ASCII only: what goes into greetings, EHLO and capability lines. */
function isAscii(text: string): boolean {
  return /^[\x20-\x7e]*$/.test(text);
}

const hostWord = word("a host name");
/** A host name goes into greetings, EHLO and salts as it is: ASCII (an IDN in its xn-- form). */
const serverName: Parser<string> = (node, at, L) => {
  const s = hostWord(node, at, L);
  if (s !== undefined && !isAscii(s)) {
    L.error(at, `expected a host name in ASCII (an international name in its xn-- form), got ${JSON.stringify(s)}`);
    return undefined;
  }
  return s;
};

const RESOLVER_KEYS = ["address", "valid", "ipv4", "ipv6"];
const RESOLVER_OFF: ResolverSpec = { addresses: [], ipv4: true, ipv6: true };

/** resolver: off | "ADDR ... [valid=T] [ipv4=on|off] [ipv6=on|off]" | list of those words | {address, valid, ipv4, ipv6}. */
const resolver: Parser<ResolverSpec> = (node, at, L) => {
  if (node.kind === "scalar" && (node.value === false || (typeof node.value === "string" && node.value.trim() === "off"))) {
    return RESOLVER_OFF;
  }
  const addresses: { host: string; port: number }[] = [];
  let validMs: number | undefined;
  let ipv4 = true;
  let ipv6 = true;
  let good = true;
  const address = (w: Word) => {
    const a = L.take(w.at, v.parseAddress(w.text, { defaultPort: 53, allowNames: false }));
    if (a) addresses.push(a);
    else good = false;
  };
  const option = (w: Word): boolean => {
    const eq = w.text.indexOf("=");
    if (eq < 0) return false;
    const name = w.text.slice(0, eq);
    const value = w.text.slice(eq + 1);
    if (name === "valid") {
      const t = L.take(w.at, v.parseTime(value, { seconds: true }));
      if (t === undefined) good = false;
      else validMs = t;
    } else if (name === "ipv4" || name === "ipv6") {
      const f = L.take(w.at, v.parseFlag(value));
      if (f === undefined) good = false;
      else if (name === "ipv4") ipv4 = f;
      else ipv6 = f;
    } else if (name === "status_zone") {
      L.error(w.at, "not supported by Postern: status_zone (there is no shared-memory status)");
      good = false;
    } else {
      L.error(w.at, `invalid parameter "${w.text}"`);
      good = false;
    }
    return true;
  };
  if (node.kind === "map") {
    const m = entries(node, at, L, RESOLVER_KEYS);
    if (!m) return undefined;
    const a = m.get("address");
    if (!a) {
      L.error(at, `missing "address", as {address: [127.0.0.1]}`);
      return undefined;
    }
    const ws = words(a.node, a.at, L);
    if (!ws) good = false;
    for (const w of ws ?? []) address(w);
    const valid = m.get("valid");
    if (valid) {
      validMs = L.take(valid.at, v.parseTime(scalarValue(valid.node), { seconds: true }));
      if (validMs === undefined) good = false;
    }
    for (const k of ["ipv4", "ipv6"] as const) {
      const e = m.get(k);
      if (!e) continue;
      const f = flag(e.node, e.at, L);
      if (f === undefined) good = false;
      else if (k === "ipv4") ipv4 = f;
      else ipv6 = f;
    }
  } else {
    const ws = words(node, at, L);
    if (!ws) return undefined;
    for (const w of ws) {
      if (w.text === "off") {
        L.error(w.at, `"off" cannot be combined with addresses`);
        good = false;
      } else if (!option(w)) {
        address(w);
      }
    }
  }
  if (!good) return undefined;
  if (addresses.length === 0) {
    L.error(at, "expected at least one address");
    return undefined;
  }
  if (!ipv4 && !ipv6) {
    L.error(at, `"ipv4" and "ipv6" cannot both be off`);
    return undefined;
  }
  return { addresses, validMs, ipv4, ipv6 };
};

const ERROR_LOG_KEYS = ["dest", "level", "format"];

function logDest(text: string, at: At, L: Loader): string | undefined {
  if (text === "stderr") return text;
  if (text.startsWith("syslog:")) {
    const params = text.slice("syslog:".length).split(",");
    const server = params.find((p) => p.startsWith("server="));
    if (!server) {
      L.error(at, `"${text}": syslog needs "server=ADDRESS", as syslog:server=127.0.0.1`);
      return undefined;
    }
    const addr = server.slice("server=".length);
    if (!addr.startsWith("unix:") && L.take(at, v.parseAddress(addr, { defaultPort: 514 })) === undefined) return undefined;
    for (const p of params) {
      const name = p.split("=")[0];
      if (!["server", "facility", "severity", "tag", "nohostname"].includes(name)) {
        L.error(at, `unknown syslog parameter "${p}"`);
        return undefined;
      }
    }
    return text;
  }
  if (text.startsWith("memory:")) {
    L.error(at, "not supported by Postern: memory logs (a debugging aid of nginx)");
    return undefined;
  }
  if (text === "off") {
    L.error(at, `"off" would be a file named "off" in nginx too; to quieten the log, raise its level (crit)`);
    return undefined;
  }
  return L.resolve(text);
}

function logTarget(node: Y, at: At, L: Loader): LogTarget | undefined {
  if (node.kind === "scalar") {
    const text = str(node, at, L, `a log like "stderr info" or "/var/log/postern.log warn"`);
    if (text === undefined) return undefined;
    const parts = v.splitWords(text);
    if (parts.length > 2) {
      L.error(at, `expected "DEST [LEVEL]", got ${JSON.stringify(text)}`);
      return undefined;
    }
    const level = parts[1] === undefined ? NGINX_LOG_LEVEL : L.take(at, v.parseEnum(parts[1], LOG_LEVELS));
    const dest = logDest(parts[0], at, L);
    return dest !== undefined && level !== undefined ? { dest, level, format: "text" } : undefined;
  }
  const m = entries(node, at, L, ERROR_LOG_KEYS);
  if (!m) return undefined;
  const d = m.get("dest");
  const l = m.get("level");
  const f = m.get("format");
  const destText = d ? str(d.node, d.at, L, "a destination: stderr, a file or syslog:server=ADDRESS") : "stderr";
  const dest = destText === undefined ? undefined : logDest(destText, d?.at ?? at, L);
  const level = l ? oneOf(LOG_LEVELS)(l.node, l.at, L) : NGINX_LOG_LEVEL;
  const format = f ? oneOf(["text", "json"] as const)(f.node, f.at, L) : "text";
  return dest !== undefined && level !== undefined && format !== undefined ? { dest, level, format } : undefined;
}

const errorLog: Parser<LogTarget[]> = (node, at, L) => {
  if (node.kind !== "seq") {
    const t = logTarget(node, at, L);
    return t && [t];
  }
  if (node.items.length === 0) {
    L.error(at, "expected at least one log, got an empty list");
    return undefined;
  }
  const out = node.items.map((n, i) => logTarget(n, child(at, i, n.pos), L));
  return out.every((t) => t !== undefined) ? (out as LogTarget[]) : undefined;
};

/** "builtin", or nginx's auth_http URL: "http://host[:port][/uri]", "https://...", or "host[:port][/uri]". */
const authHttp: Parser<string> = (node, at, L) => {
  const s = word("builtin or an http:// URL")(node, at, L);
  if (s === undefined || s === "builtin") return s;
  if (s.startsWith("unix:")) {
    L.error(at, `not supported by Postern: auth_http over a unix socket ("${s}"); use http://`);
    return undefined;
  }
  const url = /^[a-z][a-z0-9+.-]*:\/\//i.test(s) ? s : `http://${s}`;
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (!parsed || (parsed.protocol !== "http:" && parsed.protocol !== "https:") || parsed.hostname === "") {
    L.error(at, `expected builtin or an http:// or https:// URL, got ${JSON.stringify(s)}`);
    return undefined;
  }
  return url;
};

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const authHttpHeader: Parser<Record<string, string>> = (node, at, L) => {
  if (node.kind !== "map") {
    L.error(at, `expected a map of header names to values, as {X-Auth-Key: s3cret}, got ${describeNode(node)}`);
    return undefined;
  }
  const out: Record<string, string> = {};
  let good = true;
  for (const e of node.entries) {
    const a = child(at, e.key, e.value.pos);
    if (!HEADER_NAME.test(e.key)) {
      L.error({ path: a.path, pos: e.keyPos }, `invalid header name ${JSON.stringify(e.key)}`);
      good = false;
      continue;
    }
    const value = e.value.kind === "scalar" && e.value.value !== null && typeof e.value.value !== "boolean"
      ? e.value.text
      : undefined;
    if (value === undefined || hasControl(value)) {
      L.error(a, `expected a header value (a string on one line), got ${describeNode(e.value)}`);
      good = false;
      continue;
    }
    out[e.key] = value;
  }
  return good ? out : undefined;
};

const setRealIpFrom: Parser<string[]> = (node, at, L) => {
  const ws = words(node, at, L);
  if (!ws) return undefined;
  let good = true;
  for (const w of ws) {
    const c = L.take(w.at, v.parseCidr(w.text));
    if (!c) good = false;
    else if (c.lowBitsSet) L.warn(w.at, `low address bits of ${w.text} are meaningless`);
  }
  return good ? ws.map((w) => w.text) : undefined;
};

function fileRef(allowData: boolean): Parser<FileRef> {
  return (node, at, L) => {
    const s = str(node, at, L, "a file path");
    if (s === undefined) return undefined;
    if (s.startsWith("data:")) {
      // inline PEM keeps its text as written, final newline included
      if (allowData) return { path: node.kind === "scalar" ? node.text.trimStart() : s, at };
      L.error(at, `inline "data:" is allowed only in ssl_certificate and ssl_certificate_key`);
      return undefined;
    }
    if (/^(engine|store):/.test(s)) {
      L.error(at, `not supported by Postern: OpenSSL engines and stores ("${s}")`);
      return undefined;
    }
    return { path: L.resolve(s), at };
  };
}

function fileRefs(allowData: boolean): Parser<FileRef[]> {
  const one = fileRef(allowData);
  return (node, at, L) => {
    if (node.kind !== "seq") {
      const r = one(node, at, L);
      return r && [r];
    }
    if (node.items.length === 0) {
      L.error(at, "expected at least one file, got an empty list");
      return undefined;
    }
    const out = node.items.map((n, i) => one(n, child(at, i, n.pos), L));
    return out.every((r) => r !== undefined) ? (out as FileRef[]) : undefined;
  };
}

function authMethods(protocol: Protocol): Parser<MethodList> {
  const allowed = AUTH_METHODS[protocol];
  return (node, at, L) => {
    const ws = words(node, at, L);
    if (!ws) return undefined;
    const seen = new Map<string, At>();
    let good = true;
    for (const w of ws) {
      const m = w.text.toLowerCase();
      if (!allowed.includes(m)) {
        L.error(w.at, `unknown mechanism "${w.text}"; expected ${allowed.join(", ")}`);
        good = false;
      } else if (seen.has(m)) {
        L.warn(w.at, `duplicate value "${w.text}"`);
      } else {
        seen.set(m, w.at);
      }
    }
    if (!good) return undefined;
    const order = AUTH_ORDER.filter((m) => seen.has(m));
    return { words: order, at: order.map((m) => seen.get(m) as At) };
  };
}

const sslProtocols: Parser<string[]> = (node, at, L) => {
  const ws = words(node, at, L);
  if (!ws) return undefined;
  const seen = new Set<string>();
  let good = true;
  for (const w of ws) {
    const name = SSL_PROTOCOLS.find((p) => p.toLowerCase() === w.text.toLowerCase());
    if (name) {
      seen.add(name);
    } else if (/^sslv[23]$/i.test(w.text)) {
      L.error(w.at, `not supported by Postern: ${w.text} (no runtime's TLS stack offers it)`);
      good = false;
    } else {
      L.error(w.at, `unknown protocol "${w.text}"; expected ${SSL_PROTOCOLS.join(", ")}`);
      good = false;
    }
  }
  return good ? SSL_PROTOCOLS.filter((p) => seen.has(p)) : undefined;
};

const sslSessionCache: Parser<string[]> = (node, at, L) => {
  const ws = words(node, at, L);
  if (!ws) return undefined;
  let good = true;
  for (const w of ws) {
    const s = w.text;
    const shared = /^shared:([^:]+):(.+)$/.exec(s);
    if (s === "off" || s === "none" || s === "builtin" || /^builtin:\d+$/.test(s)) continue;
    if (shared) {
      const size = v.parseSize(shared[2]);
      if (!size.ok) {
        L.error(w.at, `invalid session cache "${s}"`);
        good = false;
      } else if (size.value < SSL_SESSION_CACHE_MIN) {
        L.error(w.at, `session cache "${s}" is too small; at least ${SSL_SESSION_CACHE_MIN / 1024}k`);
        good = false;
      }
      continue;
    }
    L.error(w.at, `invalid session cache "${s}"; expected off, none, builtin[:SIZE] or shared:NAME:SIZE`);
    good = false;
  }
  return good ? ws.map((w) => w.text) : undefined;
};

const sslCertificateCompression: Parser<boolean> = (node, at, L) => {
  const f = flag(node, at, L);
  if (f) {
    L.error(at, "not supported by Postern: the runtimes' TLS stacks cannot compress certificates");
    return undefined;
  }
  return f;
};

const PARSERS: { [K in keyof Directives]: Parser<Directives[K]> } = {
  listen,
  protocol: oneOf(["imap", "pop3", "smtp"] as const),
  server_name: serverName,
  timeout: time,
  max_errors: count,
  resolver,
  resolver_timeout: time,
  error_log: errorLog,
  auth_http: authHttp,
  auth_http_header: authHttpHeader,
  auth_http_pass_client_cert: flag,
  auth_http_timeout: time,
  proxy: flag,
  proxy_buffer: bufferSize,
  proxy_pass_error_message: flag,
  proxy_protocol: oneOf(["off", "v1", "v2"] as const, { true: "v1", false: "off" }, { on: "v1" }),
  proxy_smtp_auth: flag,
  proxy_timeout: time,
  xclient: flag,
  proxy_ssl: oneOf(["off", "on", "starttls"] as const, { true: "on", false: "off" }),
  proxy_ssl_verify: flag,
  proxy_ssl_trusted_certificate: fileRef(false),
  proxy_ssl_name: word("a host name"),
  proxy_ssl_certificate: fileRef(false),
  proxy_ssl_certificate_key: fileRef(false),
  set_real_ip_from: setRealIpFrom,
  ssl_certificate: fileRefs(true),
  ssl_certificate_key: fileRefs(true),
  ssl_certificate_compression: sslCertificateCompression,
  ssl_password_file: fileRef(false),
  ssl_protocols: sslProtocols,
  ssl_ciphers: word("an OpenSSL cipher list"),
  ssl_ecdh_curve: word("a curve list like auto or X25519:prime256v1"),
  ssl_prefer_server_ciphers: flag,
  ssl_client_certificate: fileRef(false),
  ssl_trusted_certificate: fileRef(false),
  ssl_verify_client: oneOf(["off", "on", "optional", "optional_no_ca"] as const, { true: "on", false: "off" }),
  ssl_verify_depth: count,
  ssl_crl: fileRef(false),
  ssl_dhparam: fileRef(false),
  ssl_session_cache: sslSessionCache,
  ssl_session_timeout: viaValue((x) => v.parseTime(x, { seconds: true })),
  ssl_session_tickets: flag,
  ssl_session_ticket_key: fileRefs(false),
  starttls: oneOf(["off", "on", "only"] as const, { true: "on", false: "off" }),
  imap_auth: authMethods("imap"),
  imap_capabilities: capabilities,
  imap_client_buffer: bufferSize,
  pop3_auth: authMethods("pop3"),
  pop3_capabilities: capabilities,
  pop3_client_buffer: bufferSize,
  smtp_auth: authMethods("smtp"),
  smtp_capabilities: capabilities,
  smtp_client_buffer: bufferSize,
  smtp_greeting_delay: time,
};

const MAIL_DIRECTIVES = Object.keys(PARSERS) as (keyof Directives)[];
const SERVER_ONLY = new Set<string>(["listen", "protocol"]); // nginx: NGX_MAIL_SRV_CONF only
const TOP_KEYS = ["server_name", "error_log", "worker_processes", "worker_shutdown_timeout", "http", "auth", "mail"];
const TOP_ONLY = new Set(["worker_processes", "worker_shutdown_timeout", "http", "auth", "mail"]);

/** nginx directives Postern knows and refuses, with the reason. */
const UNSUPPORTED: Readonly<Record<string, string>> = {
  ssl: `the old "ssl on" is gone from nginx too; add "ssl" to the listen item instead, as listen: ["993 ssl"]`,
  ssl_conf_command: "OpenSSL configuration commands cannot be passed to the runtimes' TLS stacks",
  include: "a YAML config is one file; share settings by putting them under mail:",
  user: "start Postern as the user it should run as (for example from a service manager)",
  pid: "Postern does not write a pid file; run it under a service manager",
  daemon: "Postern runs in the foreground; run it under a service manager",
  master_process: "Postern always runs one supervising process",
  events: "Postern has no events block; the runtime's event loop is used",
  worker_connections: "connections are limited by the operating system only",
  load_module: "Postern has no dynamic modules",
  stream: "Postern proxies mail only",
};

function unsupported(key: string, at: At, L: Loader): boolean {
  const reason = UNSUPPORTED[key];
  if (reason === undefined) return false;
  L.error(at, `not supported by Postern: ${reason}`);
  return true;
}

/** Reads the mail directives of one context (`mail:` or a server entry). */
function parseLayer(map: YMap, at: At, L: Loader, where: "mail" | "server"): Layer {
  const layer: Record<string, Setting<unknown>> = {};
  for (const e of map.entries) {
    const a = child(at, e.key, e.value.pos);
    const keyAt = { path: a.path, pos: e.keyPos };
    if (e.key === "servers" && where === "mail") continue;
    const parser = (PARSERS as Record<string, Parser<unknown>>)[e.key];
    if (parser === undefined) {
      if (unsupported(e.key, keyAt, L)) continue;
      if (e.key === "<<") L.error(keyAt, "YAML merge keys are not supported; put shared settings under mail:");
      else if (TOP_ONLY.has(e.key)) L.error(keyAt, "allowed only at the top level of the file");
      else if (e.key === "servers") L.error(keyAt, "a server cannot hold servers; list them under mail.servers");
      else if (AUTH_KEYS.includes(e.key)) L.error(keyAt, "belongs under auth:");
      else L.error(keyAt, unknownKey(e.key, where === "mail" ? [...MAIL_DIRECTIVES, "servers"] : MAIL_DIRECTIVES));
      continue;
    }
    if (where === "mail" && SERVER_ONLY.has(e.key)) {
      L.error(keyAt, "allowed only in a server (an entry of mail.servers), as in nginx");
      continue;
    }
    const value = parser(e.value, a, L);
    if (value !== undefined) layer[e.key] = { value, at: a };
  }
  return layer as Layer;
}

// ---- building a server ----------------------------------------------------------------

const PEM_CERT = /-----BEGIN CERTIFICATE-----/;
const PEM_KEY = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/;
const PEM_ENCRYPTED = /-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: *4,ENCRYPTED/;
const PEM_CRL = /-----BEGIN X509 CRL-----/;
const PEM_DH = /-----BEGIN (X9\.42 )?DH PARAMETERS-----/;

function readPem(L: Loader, ref: FileRef, pattern: RegExp, what: string): string | undefined {
  const text = L.readText(ref);
  if (text === undefined) return undefined;
  if (!pattern.test(text)) {
    const where = ref.path.startsWith("data:") ? "the inline data" : `"${ref.path}"`;
    L.error(ref.at, `no PEM ${what} in ${where}`);
    return undefined;
  }
  return text;
}

interface BuildInput {
  readonly mail: Layer;
  readonly server: Layer;
  readonly at: At; // the server entry
  readonly wroteListen: boolean; // false: no listen key at all (true with a listen that failed to parse)
  readonly serverName: string; // inherited: mail:, else the top level, else the host name
  readonly errorLog: readonly LogTarget[]; // inherited the same way
  readonly builtinUsesHashes: boolean;
}

function buildServer(L: Loader, input: BuildInput): ServerConfig | undefined {
  const { mail, server, at } = input;
  const pick = <K extends keyof Directives>(k: K): Setting<Directives[K]> | undefined => server[k] ?? mail[k];
  const get = <K extends keyof Directives>(k: K, fallback: Directives[K]): Directives[K] => pick(k)?.value ?? fallback;
  let good = true;

  const listenItems = server.listen?.value;
  if (!listenItems) {
    // a listen that failed to parse was reported already
    if (!input.wroteListen) L.error(child(at, "listen", at.pos), `no "listen" is defined for this server`);
    good = false;
  }
  let protocol = server.protocol?.value;
  if (protocol === undefined && listenItems) {
    for (const item of listenItems) {
      const hit = (Object.keys(PROTOCOL_PORTS) as Protocol[]).find((p) => PROTOCOL_PORTS[p].includes(item.spec.port));
      if (hit) {
        protocol = hit;
        break;
      }
    }
    if (protocol === undefined) {
      L.error(child(at, "protocol", at.pos), "unknown; set protocol or use a standard port (143, 993, 110, 995, 25, 465, 587)");
    }
  }
  if (protocol === undefined) good = false;

  const starttls = pick("starttls");
  const sslListen = listenItems?.find((i) => i.spec.ssl);
  const tlsTrigger: { at: At; mode: string } | undefined = sslListen
    ? { at: sslListen.at, mode: "listen ... ssl" }
    : starttls && starttls.value !== "off"
    ? { at: starttls.at, mode: "starttls" }
    : undefined;

  // TLS towards clients: files are read only when this server speaks TLS, as nginx does
  const certs: CertPair[] = [];
  let passwords: string[] | undefined;
  let clientCa: string | undefined;
  let trustedCa: string | undefined;
  let crl: string | undefined;
  let dhparam: string | undefined;
  const ticketKeys: Uint8Array[] = [];
  const verify = get("ssl_verify_client", "off");
  if (tlsTrigger) {
    const certList = pick("ssl_certificate");
    const keyList = pick("ssl_certificate_key");
    const passFile = pick("ssl_password_file");
    if (!certList) {
      L.error(tlsTrigger.at, `no "ssl_certificate" is defined for "${tlsTrigger.mode}"`);
      good = false;
    } else if (!keyList) {
      L.error(tlsTrigger.at, `no "ssl_certificate_key" is defined for "${tlsTrigger.mode}"`);
      good = false;
    } else if (certList.value.length !== keyList.value.length) {
      const n = (k: number, one: string) => `${k} ${one}${k === 1 ? "" : "s"}`;
      L.error(
        keyList.at,
        `${n(certList.value.length, "certificate")} but ${n(keyList.value.length, "key")}; list one key per certificate, in the same order`,
      );
      good = false;
    }
    if (passFile) {
      const text = L.readText(passFile.value);
      if (text !== undefined) {
        passwords = text.split("\n").map((l) => l.replace(/\r$/, "")).filter((l) => l !== "");
        if (passwords.length === 0) {
          L.error(passFile.value.at, `no passphrases in "${passFile.value.path}"`);
          good = false;
        }
      } else {
        good = false;
      }
    }
    if (certList && keyList && certList.value.length === keyList.value.length) {
      certList.value.forEach((c, i) => {
        const k = keyList.value[i];
        const certPem = readPem(L, c, PEM_CERT, "certificate");
        const keyPem = readPem(L, k, PEM_KEY, "private key");
        if (keyPem !== undefined && PEM_ENCRYPTED.test(keyPem) && !passFile) {
          L.error(k.at, `the key "${k.path}" is encrypted; set ssl_password_file`);
          good = false;
        }
        if (certPem === undefined || keyPem === undefined) good = false;
        else certs.push({ certificate: c.path, certificateKey: k.path, certPem, keyPem });
      });
    }
    if (verify !== "off") {
      const client = pick("ssl_client_certificate");
      const trusted = pick("ssl_trusted_certificate");
      const crlRef = pick("ssl_crl");
      if (verify !== "optional_no_ca" && !client && !trusted) {
        const verifyAt = pick("ssl_verify_client")?.at ?? at;
        L.error(verifyAt, `no "ssl_client_certificate" or "ssl_trusted_certificate" is defined for "ssl_verify_client ${verify}"`);
        good = false;
      }
      if (client) clientCa = readPem(L, client.value, PEM_CERT, "certificate");
      if (trusted) trustedCa = readPem(L, trusted.value, PEM_CERT, "certificate");
      if (crlRef) crl = readPem(L, crlRef.value, PEM_CRL, "CRL");
      if ((client && !clientCa) || (trusted && !trustedCa) || (crlRef && !crl)) good = false;
    }
    const dh = pick("ssl_dhparam");
    if (dh) {
      dhparam = readPem(L, dh.value, PEM_DH, "DH parameters");
      if (!dhparam) good = false;
    }
    for (const ref of pick("ssl_session_ticket_key")?.value ?? []) {
      const bytes = L.readBytes(ref);
      if (bytes === undefined) {
        good = false;
      } else if (!TICKET_KEY_SIZES.includes(bytes.length)) {
        L.error(ref.at, `"${ref.path}" must be 48 or 80 bytes, got ${bytes.length}`);
        good = false;
      } else {
        ticketKeys.push(bytes);
      }
    }
  }

  // TLS towards the backend: files are read only when proxy_ssl is on
  const proxySsl = get("proxy_ssl", "off");
  let proxyCa: string | undefined;
  let proxyCert: string | undefined;
  let proxyKey: string | undefined;
  if (proxySsl !== "off") {
    const ca = pick("proxy_ssl_trusted_certificate");
    const cert = pick("proxy_ssl_certificate");
    const key = pick("proxy_ssl_certificate_key");
    if (ca) {
      proxyCa = readPem(L, ca.value, PEM_CERT, "certificate");
      if (!proxyCa) good = false;
    }
    if (cert && !key) {
      L.error(cert.at, `no "proxy_ssl_certificate_key" is defined for this certificate`);
      good = false;
    } else if (key && !cert) {
      L.error(key.at, `no "proxy_ssl_certificate" is defined for this key`);
      good = false;
    } else if (cert && key) {
      proxyCert = readPem(L, cert.value, PEM_CERT, "certificate");
      proxyKey = readPem(L, key.value, PEM_KEY, "private key");
      if (proxyKey !== undefined && PEM_ENCRYPTED.test(proxyKey)) {
        L.error(key.at, `the key "${key.value.path}" is encrypted; proxy_ssl_certificate_key needs an unencrypted key`);
        good = false;
      }
      if (!proxyCert || !proxyKey) good = false;
    }
  }

  const authHttpUrl = get("auth_http", "builtin");
  const auth = (p: Protocol, fallback: readonly string[]) => pick(`${p}_auth`)?.value.words ?? fallback;
  if (protocol && authHttpUrl === "builtin" && input.builtinUsesHashes) {
    const methods = pick(`${protocol}_auth`)?.value;
    methods?.words.forEach((m, i) => {
      if (m === "cram-md5" || m === "apop") {
        L.warn(
          methods.at[i],
          `${m} needs the plain-text password, which the built-in auth service does not have for users with a password_hash`,
        );
      }
    });
  }

  if (!good || !protocol || !listenItems) return undefined;
  return {
    listen: listenItems.map((i) => i.spec),
    protocol,
    serverName: get("server_name", input.serverName),
    timeout: get("timeout", 60_000),
    maxErrors: get("max_errors", 5),
    resolver: get("resolver", RESOLVER_OFF),
    resolverTimeout: get("resolver_timeout", 30_000),
    errorLog: get("error_log", [...input.errorLog]),

    authHttp: authHttpUrl,
    authHttpHeader: get("auth_http_header", {}),
    authHttpPassClientCert: get("auth_http_pass_client_cert", false),
    authHttpTimeout: get("auth_http_timeout", 60_000),

    proxyBuffer: get("proxy_buffer", PAGE_SIZE),
    proxyPassErrorMessage: get("proxy_pass_error_message", false),
    proxyProtocol: get("proxy_protocol", "off"),
    proxySmtpAuth: get("proxy_smtp_auth", false),
    proxyTimeout: get("proxy_timeout", 24 * 3_600_000),
    xclient: get("xclient", true),

    proxySsl,
    proxySslVerify: get("proxy_ssl_verify", true),
    proxySslTrustedCertificate: proxyCa,
    proxySslName: pick("proxy_ssl_name")?.value,
    proxySslCertificate: proxyCert,
    proxySslCertificateKey: proxyKey,

    setRealIpFrom: get("set_real_ip_from", []),

    sslCertificates: certs,
    sslPasswordFile: passwords,
    sslProtocols: get("ssl_protocols", ["TLSv1.2", "TLSv1.3"]),
    sslCiphers: get("ssl_ciphers", "HIGH:!aNULL:!MD5"),
    sslEcdhCurve: get("ssl_ecdh_curve", "auto"),
    sslPreferServerCiphers: get("ssl_prefer_server_ciphers", false),
    sslClientCertificate: clientCa,
    sslTrustedCertificate: trustedCa,
    sslVerifyClient: verify,
    sslVerifyDepth: get("ssl_verify_depth", 1),
    sslCrl: crl,
    sslDhparam: dhparam,
    sslSessionCache: get("ssl_session_cache", ["none"]),
    sslSessionTimeout: get("ssl_session_timeout", 300_000),
    sslSessionTickets: get("ssl_session_tickets", true),
    sslSessionTicketKey: ticketKeys,
    starttls: starttls?.value ?? "off",

    imapAuth: auth("imap", ["plain"]),
    imapCapabilities: get("imap_capabilities", ["IMAP4", "IMAP4rev1", "UIDPLUS"]),
    imapClientBuffer: get("imap_client_buffer", PAGE_SIZE),

    pop3Auth: auth("pop3", ["plain"]),
    pop3Capabilities: get("pop3_capabilities", ["TOP", "USER", "UIDL"]),
    pop3ClientBuffer: get("pop3_client_buffer", 16 * 1024), // ours: room for a 12 KB SASL line

    smtpAuth: auth("smtp", ["plain", "login"]),
    smtpCapabilities: get("smtp_capabilities", []),
    smtpClientBuffer: get("smtp_client_buffer", PAGE_SIZE),
    smtpGreetingDelay: get("smtp_greeting_delay", 0),
  };
}

// ---- http and auth --------------------------------------------------------------------

function parseHttp(node: Y, at: At, L: Loader): { http: HttpConfig; listenAt?: At } {
  const m = entries(node, at, L, ["listen"]);
  if (!m) return { http: {} };
  const l = m.get("listen");
  if (!l) {
    L.error(at, `missing "listen"; give an address like 127.0.0.1:8080, or off`);
    return { http: {} };
  }
  if (l.node.kind === "scalar" && (l.node.value === false || (typeof l.node.value === "string" && l.node.value.trim() === "off"))) {
    return { http: {} };
  }
  const text = str(l.node, l.at, L, "an address like 127.0.0.1:8080, or off");
  if (text === undefined) return { http: {} };
  const a = L.take(l.at, v.parseAddress(text, v.LISTEN_ADDRESS));
  return a ? { http: { listen: a }, listenAt: l.at } : { http: {} };
}

const USER_KEYS = ["user", "password_hash", "password", "backend", "backend_user", "backend_password"];
const AUTH_KEYS = ["users", "failure_delay", "max_attempts", "cache_ttl"];
const AUTH_CACHE_TTL = 3_600_000; // 1h, as Dovecot's auth_cache_ttl; a reload empties the cache anyway

function parseBackend(node: Y, at: At, L: Loader): { host: string; port: number } | undefined {
  if (node.kind === "map") {
    const m = entries(node, at, L, ["host", "port"]);
    if (!m) return undefined;
    const h = m.get("host");
    const p = m.get("port");
    if (!h || !p) {
      L.error(at, `expected {host, port}, as {host: 127.0.0.1, port: 143}`);
      return undefined;
    }
    const hostText = str(h.node, h.at, L, "a host");
    const host = hostText === undefined ? undefined : L.take(h.at, v.parseHost(hostText.replace(/^\[(.*)\]$/, "$1"), true));
    const port = L.take(p.at, v.parseCount(scalarValue(p.node), 1));
    if (port !== undefined && port > 65535) {
      L.error(p.at, `invalid port "${port}"`);
      return undefined;
    }
    return host !== undefined && port !== undefined ? { host, port } : undefined;
  }
  const text = str(node, at, L, `a backend like "127.0.0.1:143" or {host, port}`);
  return text === undefined ? undefined : L.take(at, v.parseAddress(text));
}

const BACKEND_PROTOCOLS: readonly Protocol[] = ["imap", "pop3", "smtp"];

/** `backend:` as one address for every protocol, or a map {imap, pop3, smtp} of addresses. */
function parseBackends(node: Y, at: At, L: Loader): AuthUser["backends"] | undefined {
  const perProtocol = node.kind === "map" && node.entries.some((e) => (BACKEND_PROTOCOLS as readonly string[]).includes(e.key));
  if (!perProtocol) {
    const one = parseBackend(node, at, L);
    return one && { imap: one, pop3: one, smtp: one };
  }
  const m = entries(node, at, L, BACKEND_PROTOCOLS);
  if (!m) return undefined;
  const out: Partial<Record<Protocol, { host: string; port: number }>> = {};
  let good = m.size === (node.kind === "map" ? node.entries.length : 0);
  for (const [key, e] of m) {
    const b = parseBackend(e.node, e.at, L);
    if (b) out[key as Protocol] = b;
    else good = false;
  }
  return good ? out : undefined;
}

function parseUser(node: Y, at: At, L: Loader): AuthUser | undefined {
  const m = entries(node, at, L, USER_KEYS);
  if (!m) return undefined;
  const s = (k: string) => {
    const e = m.get(k);
    if (!e) return undefined;
    if (e.node.kind === "scalar" && typeof e.node.value === "string" && e.node.value !== "") return e.node.value;
    const quoted = e.node.kind === "scalar" && typeof e.node.value === "number" ? `; put it in quotes` : "";
    L.error(e.at, `expected a string, got ${describeNode(e.node)}${quoted}`);
    return null;
  };
  const user = s("user");
  const hash = s("password_hash");
  const password = s("password");
  const backendUser = s("backend_user");
  const backendPassword = s("backend_password");
  let good = ![user, hash, password, backendUser, backendPassword].includes(null);
  if (user === undefined) {
    L.error(at, `missing "user"`);
    good = false;
  }
  if (hash === undefined && password === undefined) {
    L.error(at, `missing "password_hash" (make one with "postern hash-password")`);
    good = false;
  } else if (typeof hash === "string" && typeof password === "string") {
    L.error(m.get("password")?.at ?? at, `give either "password_hash" or "password", not both`);
    good = false;
  }
  if (typeof hash === "string") {
    const e = m.get("password_hash");
    if (e && L.take(e.at, v.parseScryptHash(hash)) === undefined) good = false;
  }
  if (typeof password === "string") {
    const e = m.get("password");
    if (e) L.warn(e.at, `plain-text password; use "postern hash-password"`);
  }
  const b = m.get("backend");
  let backends: AuthUser["backends"] | undefined;
  if (!b) {
    L.error(at, `missing "backend", as backend: 127.0.0.1:143`);
    good = false;
  } else {
    backends = parseBackends(b.node, b.at, L);
    if (!backends) good = false;
  }
  if (!good || !user || !backends) return undefined;
  return {
    user,
    passwordHash: hash ?? undefined,
    password: password ?? undefined,
    backends,
    backendUser: backendUser ?? undefined,
    backendPassword: backendPassword ?? undefined,
  };
}

function parseAuth(node: Y | undefined, at: At, L: Loader): AuthConfig {
  const result = { users: [] as AuthUser[], failureDelay: 3000, maxAttempts: 3, cacheTtl: AUTH_CACHE_TTL };
  if (!node) return result;
  const m = entries(node, at, L, AUTH_KEYS);
  if (!m) return result;
  const fd = m.get("failure_delay");
  if (fd) result.failureDelay = time(fd.node, fd.at, L) ?? result.failureDelay;
  const ma = m.get("max_attempts");
  if (ma) result.maxAttempts = L.take(ma.at, v.parseCount(scalarValue(ma.node), 1)) ?? result.maxAttempts;
  const ct = m.get("cache_ttl");
  if (ct) result.cacheTtl = time(ct.node, ct.at, L) ?? result.cacheTtl;
  const us = m.get("users");
  if (us) {
    if (us.node.kind !== "seq") {
      if (!(us.node.kind === "scalar" && us.node.value === null)) {
        L.error(us.at, `expected a list of users, got ${describeNode(us.node)}`);
      }
      return result;
    }
    const seen = new Map<string, At>();
    us.node.items.forEach((n, i) => {
      const a = child(us.at, i, n.pos);
      const u = parseUser(n, a, L);
      if (!u) return;
      const first = seen.get(u.user);
      if (first) {
        L.error(a, `duplicate user "${u.user}"; first at ${first.pos.line}:${first.pos.col}`);
        return;
      }
      seen.set(u.user, a);
      result.users.push(u);
    });
  }
  return result;
}

// ---- the whole file -------------------------------------------------------------------

/**
 * Parses and validates a config file's text. `file` is its path (absolute, so that
 * relative paths in it resolve against its directory); it also prefixes every error.
 */
export function loadConfig(text: string, file: string, env: ConfigEnv): ConfigResult {
  const L = new Loader(file, env);
  const yaml = parseYamlTree(text);
  if (!yaml.ok) {
    return {
      ok: false,
      errors: yaml.errors.map((e) => ({ file, line: e.pos.line, col: e.pos.col, directive: "yaml", message: e.message })),
    };
  }
  for (const w of yaml.warnings) L.warn({ path: "yaml", pos: w.pos }, w.message);
  const rootAt: At = { path: "", pos: { line: 1, col: 1 } };
  const root: Y = yaml.root ?? { kind: "map", entries: [], pos: rootAt.pos };
  if (root.kind !== "map") {
    L.error({ path: "(file)", pos: root.pos }, `expected a map of settings (server_name:, mail:, ...), got ${describeNode(root)}`);
    return finish(L, undefined);
  }

  const top = new Map<string, { node: Y; at: At }>();
  for (const e of root.entries) {
    const at = child(rootAt, e.key, e.value.pos);
    const keyAt = { path: e.key, pos: e.keyPos };
    if (TOP_KEYS.includes(e.key)) top.set(e.key, { node: e.value, at });
    else if (unsupported(e.key, keyAt, L)) continue;
    else if ((PARSERS as Record<string, unknown>)[e.key] !== undefined || e.key === "servers") {
      L.error(keyAt, "belongs under mail: (for every server) or in an entry of mail.servers");
    } else if (AUTH_KEYS.includes(e.key)) L.error(keyAt, "belongs under auth:");
    else L.error(keyAt, unknownKey(e.key, TOP_KEYS));
  }

  const sn = top.get("server_name");
  const topServerName = (sn && serverName(sn.node, sn.at, L)) ?? env.hostname;
  const el = top.get("error_log");
  const errorLogTop = (el && errorLog(el.node, el.at, L)) ?? [DEFAULT_LOG];
  const wp = top.get("worker_processes");
  const workerProcesses = (wp && parseWorkerProcesses(wp.node, wp.at, L)) ?? 1;
  const wst = top.get("worker_shutdown_timeout");
  const workerShutdownTimeout = wst ? time(wst.node, wst.at, L) : undefined;

  const httpEntry = top.get("http");
  const { http, listenAt: httpAt } = httpEntry ? parseHttp(httpEntry.node, httpEntry.at, L) : { http: {}, listenAt: undefined };
  const authEntry = top.get("auth");
  const auth = parseAuth(authEntry?.node, authEntry?.at ?? { path: "auth", pos: rootAt.pos }, L);

  // mail: the layer every server inherits, then each server
  const mailEntry = top.get("mail");
  const servers: ServerConfig[] = [];
  const addresses: { address: v.HostPort; at: At }[] = [];
  let serverEntries = 0;
  if (mailEntry && mailEntry.node.kind !== "map") {
    L.error(mailEntry.at, `expected a map of mail directives and servers, got ${describeNode(mailEntry.node)}`);
  } else if (mailEntry && mailEntry.node.kind === "map") {
    const mailLayer = parseLayer(mailEntry.node, mailEntry.at, L, "mail");
    const inherited = {
      serverName: mailLayer.server_name?.value ?? topServerName,
      errorLog: mailLayer.error_log?.value ?? errorLogTop,
      builtinUsesHashes: auth.users.some((u) => u.passwordHash !== undefined),
    };
    const serversEntry = mailEntry.node.entries.find((e) => e.key === "servers");
    const list = serversEntry?.value;
    const serversAt = child(mailEntry.at, "servers", list?.pos ?? mailEntry.at.pos);
    if (list && list.kind !== "seq" && !(list.kind === "scalar" && list.value === null)) {
      L.error(serversAt, `expected a list of servers, got ${describeNode(list)}`);
    }
    const items = list?.kind === "seq" ? list.items : [];
    serverEntries = items.length;
    items.forEach((n, i) => {
      const at = child(serversAt, i, n.pos);
      if (n.kind !== "map") {
        L.error(at, `expected a server (a map with listen:, protocol:, ...), got ${describeNode(n)}`);
        return;
      }
      const layer = parseLayer(n, at, L, "server");
      for (const item of layer.listen?.value ?? []) addresses.push({ address: item.spec, at: item.at });
      const wroteListen = n.entries.some((e) => e.key === "listen");
      const built = buildServer(L, { ...inherited, mail: mailLayer, server: layer, at, wroteListen });
      if (built) servers.push(built);
    });
  }

  // one address, one listener: nginx's "duplicate address and port pair", the first in file order kept
  if (http.listen && httpAt) addresses.push({ address: http.listen, at: httpAt });
  addresses.sort((a, b) => a.at.pos.line - b.at.pos.line || a.at.pos.col - b.at.pos.col);
  const firstAt = new Map<string, At>();
  for (const { address, at } of addresses) {
    if (address.port === 0) continue; // port 0: the system picks a free one each time
    const key = v.formatAddress(address);
    const first = firstAt.get(key);
    if (first) L.error(at, `duplicate "${key}" address and port pair; first at ${first.pos.line}:${first.pos.col}`);
    else firstAt.set(key, at);
  }

  if (serverEntries === 0 && !http.listen && L.errors.length === 0) {
    const at = { path: "mail.servers", pos: mailEntry?.at.pos ?? rootAt.pos };
    L.error(at, "nothing to listen on: add a server under mail.servers, or http.listen");
  }

  return finish(L, {
    file,
    serverName: topServerName,
    errorLog: errorLogTop,
    workerProcesses,
    workerShutdownTimeout,
    http,
    auth,
    servers,
    warnings: [],
  });
}

/** worker_processes: a number from 1, or auto (one per core). */
function parseWorkerProcesses(node: Y, at: At, L: Loader): number | undefined {
  if (node.kind === "scalar" && typeof node.value === "string" && node.value.trim() === "auto") {
    return Math.max(1, Math.floor(L.env.cpuCount));
  }
  const n = v.parseCount(scalarValue(node), 1);
  if (n.ok) return n.value;
  L.error(at, `expected auto or a number of at least 1, got ${describeNode(node)}`);
  return undefined;
}

function finish(L: Loader, config: Config | undefined): ConfigResult {
  if (L.errors.length > 0 || !config) {
    const errors = [...L.errors].sort((a, b) => a.line - b.line || a.col - b.col);
    return { ok: false, errors };
  }
  const warnings = [...L.warnings].sort((a, b) => a.pos.line - b.pos.line || a.pos.col - b.pos.col).map((w) => w.text);
  return { ok: true, config: deepFreeze({ ...config, warnings }) };
}

/**
 * Freezes objects and arrays all the way down, dropping keys whose value is
 * undefined (optional fields are absent, not present-and-undefined). Byte arrays
 * cannot be frozen and are left as they are.
 */
function deepFreeze<T>(value: T): T {
  if (typeof value !== "object" || value === null || ArrayBuffer.isView(value) || Object.isFrozen(value)) return value;
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (record[key] === undefined && !Array.isArray(value)) delete record[key];
    else deepFreeze(record[key]);
  }
  return Object.freeze(value);
}
