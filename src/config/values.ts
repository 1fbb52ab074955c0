// Parsers for nginx's value syntaxes: sizes, times, on/off, addresses, CIDRs, listen
// items, scrypt hash shapes. Pure functions over plain JS values (what a YAML scalar
// holds); they return a value or a message, never throw. Positions and directive
// names are added by the caller (load.ts).

export type Parsed<T> = { ok: true; value: T } | { ok: false; message: string };

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const fail = <T = never>(message: string): Parsed<T> => ({ ok: false, message });

/** How a value looks in a message: strings quoted, others as written. */
export function describe(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (v === null || v === undefined) return "nothing";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a map";
  return String(v);
}

// ---- sizes ---------------------------------------------------------------------------

const SIZE_UNITS: Record<string, number> = { "": 1, k: 1024, m: 1024 * 1024, g: 1024 * 1024 * 1024 };

/** nginx size: bytes as a number, or a string "16k", "1m", "1g", "4096". */
export function parseSize(v: unknown): Parsed<number> {
  const bad = fail<number>(`expected a size like 16k, got ${describe(v)}`);
  if (typeof v === "number") return Number.isSafeInteger(v) && v >= 0 ? ok(v) : bad;
  if (typeof v !== "string") return bad;
  const m = /^(\d+)([kKmMgG]?)$/.exec(v.trim());
  if (!m) return bad;
  const n = Number(m[1]) * SIZE_UNITS[m[2].toLowerCase()];
  return Number.isSafeInteger(n) ? ok(n) : fail(`too large: ${describe(v)}`);
}

// ---- times ---------------------------------------------------------------------------

/** Timers on all three runtimes are signed 32-bit milliseconds; longer ones fire at once. */
export const MAX_TIMER_MS = 2_147_483_647;

const TIME_UNITS: readonly { unit: string; ms: number }[] = [
  { unit: "y", ms: 365 * 86_400_000 },
  { unit: "M", ms: 30 * 86_400_000 },
  { unit: "w", ms: 7 * 86_400_000 },
  { unit: "d", ms: 86_400_000 },
  { unit: "h", ms: 3_600_000 },
  { unit: "m", ms: 60_000 },
  { unit: "s", ms: 1000 },
  { unit: "ms", ms: 1 },
];

export interface TimeOptions {
  /**
   * nginx's "sec" slots (ssl_session_timeout) allow y and M but not ms; its "msec"
   * slots (every other time) allow ms but not y and M.
   */
  readonly seconds?: boolean;
}

/**
 * nginx time: a number of seconds, or a string of decreasing parts like "1h30m",
 * "500ms", "1d 12h"; a bare number is seconds. Returns milliseconds.
 */
export function parseTime(v: unknown, opts: TimeOptions = {}): Parsed<number> {
  const expected = `expected a time like 30s or 1h30m, got ${describe(v)}`;
  const max = opts.seconds ? MAX_TIMER_MS * 1000 : MAX_TIMER_MS;
  const tooLong = opts.seconds
    ? `too long: ${describe(v)}; at most ${MAX_TIMER_MS} seconds`
    : `too long: ${describe(v)}; timers cannot exceed ${MAX_TIMER_MS}ms (24d20h31m23s)`;
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v) || v < 0) return fail(expected);
    return v * 1000 <= max ? ok(v * 1000) : fail(tooLong);
  }
  if (typeof v !== "string") return fail(expected);
  const text = v.trim();
  if (/^\d+$/.test(text)) return parseTime(Number(text), opts);
  const allowed = TIME_UNITS.filter((u) => (opts.seconds ? u.unit !== "ms" : u.unit !== "y" && u.unit !== "M"));
  let total = 0;
  let last = -1; // index into TIME_UNITS of the previous part: units must decrease
  let rest = text;
  if (rest === "") return fail(expected);
  while (rest !== "") {
    const m = /^(\d+)(ms|[yMwdhms])\s*/.exec(rest);
    if (!m) return fail(expected);
    const idx = TIME_UNITS.findIndex((u) => u.unit === m[2]);
    if (!allowed.includes(TIME_UNITS[idx])) {
      return fail(`unit "${m[2]}" is not allowed here, got ${describe(v)}`);
    }
    if (idx <= last) return fail(`${expected}: units must go from larger to smaller, each once`);
    last = idx;
    total += Number(m[1]) * TIME_UNITS[idx].ms;
    if (!Number.isSafeInteger(total)) return fail(tooLong);
    rest = rest.slice(m[0].length);
  }
  return total <= max ? ok(total) : fail(tooLong);
}

/** Milliseconds written back as an nginx time, for messages ("90000" -> "1m30s"). */
export function formatTime(ms: number): string {
  if (ms === 0) return "0s";
  let rest = ms;
  let out = "";
  for (const u of TIME_UNITS) {
    if (u.unit === "y" || u.unit === "M") continue;
    const n = Math.floor(rest / u.ms);
    if (n > 0) {
      out += `${n}${u.unit}`;
      rest -= n * u.ms;
    }
  }
  return out;
}

// ---- flags, enums, numbers -----------------------------------------------------------

/** nginx on/off: a YAML boolean or the strings "on"/"off" (any case). */
export function parseFlag(v: unknown): Parsed<boolean> {
  if (typeof v === "boolean") return ok(v);
  if (typeof v === "string") {
    const s = v.trim().toLowerCase();
    if (s === "on") return ok(true);
    if (s === "off") return ok(false);
  }
  return fail(`expected on or off, got ${describe(v)}`);
}

/**
 * One of a fixed set of words (case-insensitive, as nginx's enum slots). YAML
 * booleans map to `onTrue` / `onFalse` when given, usually "on" / "off".
 */
export function parseEnum<T extends string>(
  v: unknown,
  words: readonly T[],
  bools?: { readonly true: T; readonly false: T },
  aliases: Readonly<Record<string, T>> = {},
): Parsed<T> {
  if (typeof v === "boolean" && bools) return ok(v ? bools.true : bools.false);
  if (typeof v === "string") {
    const s = v.trim().toLowerCase();
    const hit = words.find((w) => w.toLowerCase() === s);
    if (hit !== undefined) return ok(hit);
    if (s in aliases) return ok(aliases[s]);
  }
  const all = [...words, ...Object.keys(aliases)];
  return fail(`expected one of ${all.join(", ")}; got ${describe(v)}`);
}

/** A whole number >= min (nginx's num slots: max_errors, ssl_verify_depth). */
export function parseCount(v: unknown, min = 0): Parsed<number> {
  let n: number | undefined;
  if (typeof v === "number") n = v;
  else if (typeof v === "string" && /^\d+$/.test(v.trim())) n = Number(v.trim());
  if (n === undefined || !Number.isSafeInteger(n) || n < min) {
    return fail(`expected a whole number of at least ${min}, got ${describe(v)}`);
  }
  return ok(n);
}

/** A space-separated string split into words. */
export function splitWords(s: string): string[] {
  return s.split(/\s+/).filter((w) => w !== "");
}

// ---- addresses -----------------------------------------------------------------------

/** Dotted-quad IPv4 to its four bytes; undefined when not one. */
export function parseIpv4(s: string): number[] | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  const bytes: number[] = [];
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    bytes.push(n);
  }
  return bytes;
}

/** IPv6 text (no brackets, no zone) to its sixteen bytes; undefined when not one. */
export function parseIpv6(s: string): number[] | undefined {
  if (!/^[0-9A-Fa-f:.]+$/.test(s)) return undefined;
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const groups = (text: string): number[] | undefined => {
    if (text === "") return [];
    const out: number[] = [];
    const parts = text.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIpv4(p);
        if (!v4) return undefined;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
        continue;
      }
      if (!/^[0-9A-Fa-f]{1,4}$/.test(p)) return undefined;
      out.push(parseInt(p, 16));
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return undefined;
  let all: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    all = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    if (head.length !== 8) return undefined;
    all = head;
  }
  return all.flatMap((g) => [g >> 8, g & 0xff]);
}

/** Canonical IPv6 text (RFC 5952: lower case, longest zero run as "::"). */
export function formatIpv6(bytes: readonly number[]): string {
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((bytes[i] << 8) | bytes[i + 1]);
  let bestAt = -1;
  let bestLen = 1; // a single zero group is not compressed
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (bestAt < 0) return hex(g);
  return `${hex(g.slice(0, bestAt))}::${hex(g.slice(bestAt + bestLen))}`;
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

export function isHostname(s: string): boolean {
  return HOSTNAME.test(s);
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** The host part normalised: IPv4 as is, IPv6 canonical without brackets, names as is. */
export function parseHost(s: string, allowNames: boolean): Parsed<string> {
  if (parseIpv4(s)) return ok(s);
  const v6 = parseIpv6(s);
  if (v6) return ok(formatIpv6(v6));
  if (allowNames && isHostname(s) && !/^[\d.]+$/.test(s)) return ok(s);
  return fail(allowNames ? `invalid host "${s}"` : `expected an IP address, got "${s}"`);
}

function parsePort(s: string, allowZero: boolean): Parsed<number> {
  if (!/^\d{1,5}$/.test(s)) return fail(`invalid port "${s}"`);
  const n = Number(s);
  if (n > 65535 || (n === 0 && !allowZero)) return fail(`invalid port "${s}"`);
  return ok(n);
}

export interface AddressOptions {
  /** Used when the text has no port; absent: a port is required. */
  readonly defaultPort?: number;
  /** "1143" alone means every IPv4 address, port 1143 (listen's rule). */
  readonly barePort?: boolean;
  /** "*:143" means every IPv4 address. */
  readonly wildcard?: boolean;
  readonly allowNames?: boolean;
  /** Port 0 asks the system for a free port (listen only). */
  readonly allowPortZero?: boolean;
}

/**
 * "host:port", "[v6]:port", "*:port", "port" (with barePort), or "host" (with a
 * defaultPort). Unix sockets are not accepted.
 */
export function parseAddress(text: string, opts: AddressOptions = {}): Parsed<HostPort> {
  const s = text.trim();
  const allowZero = opts.allowPortZero ?? false;
  if (s === "") return fail("empty address");
  if (s.startsWith("unix:")) return fail(`not supported by Postern: unix sockets ("${s}")`);
  if (opts.barePort && /^\d+$/.test(s)) {
    const port = parsePort(s, allowZero);
    return port.ok ? ok({ host: "0.0.0.0", port: port.value }) : port;
  }
  let hostText: string;
  let portText: string | undefined;
  if (s.startsWith("[")) {
    const end = s.indexOf("]");
    if (end < 0) return fail(`missing "]" in "${s}"`);
    hostText = s.slice(1, end);
    const after = s.slice(end + 1);
    if (after !== "") {
      if (!after.startsWith(":")) return fail(`invalid address "${s}"`);
      portText = after.slice(1);
    }
    if (!parseIpv6(hostText)) return fail(`invalid IPv6 address "${hostText}"`);
  } else {
    const colons = s.split(":").length - 1;
    if (colons > 1) {
      if (opts.defaultPort !== undefined && parseIpv6(s)) {
        hostText = s;
      } else {
        return fail(`put an IPv6 address in brackets, as "[::1]:143", got "${s}"`);
      }
    } else if (colons === 1) {
      const at = s.indexOf(":");
      hostText = s.slice(0, at);
      portText = s.slice(at + 1);
    } else {
      hostText = s;
    }
  }
  let port: number;
  if (portText === undefined) {
    if (opts.defaultPort === undefined) return fail(`missing port in "${s}"`);
    port = opts.defaultPort;
  } else {
    const p = parsePort(portText, allowZero);
    if (!p.ok) return p;
    port = p.value;
  }
  if (hostText === "*" && opts.wildcard) return ok({ host: "0.0.0.0", port });
  if (hostText === "") return fail(`missing host in "${s}"`);
  const host = parseHost(hostText, opts.allowNames ?? true);
  return host.ok ? ok({ host: host.value, port }) : host;
}

/** "host:port" for messages and duplicate checks; IPv6 in brackets. */
export function formatAddress(a: HostPort): string {
  return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

// ---- CIDRs (set_real_ip_from) --------------------------------------------------------

export interface Cidr {
  readonly family: "ipv4" | "ipv6" | "unix";
  readonly bytes: readonly number[]; // empty for unix
  readonly prefix: number;
  /** True when bits beyond the prefix are set ("10.1.2.3/8"): nginx warns, then ignores them. */
  readonly lowBitsSet: boolean;
}

/** "10.0.0.0/8", "192.168.1.1", "2001:db8::/32", "::1", or "unix:". Host names are not accepted. */
export function parseCidr(text: string): Parsed<Cidr> {
  const s = text.trim();
  if (s === "unix:") return ok({ family: "unix", bytes: [], prefix: 0, lowBitsSet: false });
  const slash = s.indexOf("/");
  const addr = slash < 0 ? s : s.slice(0, slash);
  const v4 = parseIpv4(addr);
  const bytes = v4 ?? parseIpv6(addr);
  if (!bytes) {
    return fail(`expected an IP address, a CIDR like 10.0.0.0/8 or "unix:", got "${s}"`);
  }
  const bits = bytes.length * 8;
  let prefix = bits;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > bits) return fail(`invalid prefix length in "${s}"`);
    prefix = Number(p);
  }
  let lowBitsSet = false;
  for (let bit = prefix; bit < bits; bit++) {
    if (bytes[bit >> 3] & (0x80 >> (bit & 7))) lowBitsSet = true;
  }
  return ok({ family: v4 ? "ipv4" : "ipv6", bytes, prefix, lowBitsSet });
}

/** Whether an address (text) lies inside a CIDR; IPv4-mapped IPv6 matches IPv4 ranges. */
export function cidrContains(c: Cidr, address: string): boolean {
  if (c.family === "unix") return address === "unix:" || address.startsWith("unix:");
  let bytes = parseIpv4(address) ?? parseIpv6(address);
  if (!bytes) return false;
  if (bytes.length === 16 && c.family === "ipv4") {
    const mapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
    if (!mapped) return false;
    bytes = bytes.slice(12);
  }
  if (bytes.length !== c.bytes.length) return false;
  for (let bit = 0; bit < c.prefix; bit++) {
    const mask = 0x80 >> (bit & 7);
    if ((bytes[bit >> 3] & mask) !== (c.bytes[bit >> 3] & mask)) return false;
  }
  return true;
}

// ---- listen --------------------------------------------------------------------------

export interface ListenParams {
  address: HostPort;
  ssl: boolean;
  proxyProtocol: boolean;
  backlog?: number;
  rcvbuf?: number;
  sndbuf?: number;
  bind: boolean;
  ipv6only?: boolean;
  soKeepalive: boolean;
}

export const LISTEN_ADDRESS: AddressOptions = { barePort: true, wildcard: true, allowNames: true, allowPortZero: true };

/** Each listen parameter that is not ssl/proxy_protocol/bind makes nginx bind() the exact address. */
export function parseListenParam(p: ListenParams, word: string): string | undefined {
  const eq = word.indexOf("=");
  const name = eq < 0 ? word : word.slice(0, eq);
  const value = eq < 0 ? undefined : word.slice(eq + 1);
  const needsValue = () => `"${name}" needs a value, as "${name}=..."`;
  switch (name) {
    case "ssl":
    case "proxy_protocol":
    case "bind":
      if (value !== undefined) return `invalid parameter "${word}"`;
      if (name === "ssl") p.ssl = true;
      else if (name === "proxy_protocol") p.proxyProtocol = true;
      else p.bind = true;
      return undefined;
    case "backlog": {
      if (value === undefined) return needsValue();
      const n = /^\d+$/.test(value) ? Number(value) : NaN;
      if (!Number.isSafeInteger(n) || n === 0) return `invalid backlog "${word}"`;
      p.backlog = n;
      p.bind = true;
      return undefined;
    }
    case "rcvbuf":
    case "sndbuf": {
      if (value === undefined) return needsValue();
      const n = parseSize(value);
      if (!n.ok || n.value === 0) return `invalid ${name} "${word}"`;
      if (name === "rcvbuf") p.rcvbuf = n.value;
      else p.sndbuf = n.value;
      p.bind = true;
      return undefined;
    }
    case "ipv6only": {
      if (value === undefined) return needsValue();
      const f = parseFlag(value);
      if (!f.ok) return `invalid ipv6only flags "${value}"`;
      p.ipv6only = f.value;
      p.bind = true;
      return undefined;
    }
    case "so_keepalive": {
      if (value === undefined) return needsValue();
      const f = parseFlag(value);
      if (!f.ok) {
        if (/^[\dsmhd]*:[\dsmhd]*(:\d*)?$/.test(value)) {
          return `not supported by Postern: so_keepalive timings ("${value}"); the runtimes only switch TCP keepalive on or off`;
        }
        return `invalid so_keepalive value "${value}"`;
      }
      p.soKeepalive = f.value;
      p.bind = true;
      return undefined;
    }
    case "multipath":
      return `not supported by Postern: "multipath" (MPTCP sockets are not available on the runtimes)`;
    default:
      return `invalid parameter "${word}"`;
  }
}

/** Finishes a listen item: ipv6only applies to IPv6 wildcard sockets only and defaults to on there. */
export function finishListen(p: ListenParams): string | undefined {
  const v6 = p.address.host.includes(":");
  if (p.ipv6only !== undefined && !v6) return `ipv6only applies to IPv6 addresses only, not "${p.address.host}"`;
  if (v6 && p.ipv6only === undefined) p.ipv6only = true; // nginx's default
  return undefined;
}

/** A listen item in nginx syntax: "127.0.0.1:993 ssl proxy_protocol", "[::1]:143", "1143". */
export function parseListenString(text: string): Parsed<ListenParams> {
  const words = splitWords(text);
  if (words.length === 0) return fail("empty listen item");
  const address = parseAddress(words[0], LISTEN_ADDRESS);
  if (!address.ok) return address;
  const p: ListenParams = { address: address.value, ssl: false, proxyProtocol: false, bind: false, soKeepalive: false };
  for (const w of words.slice(1)) {
    const problem = parseListenParam(p, w);
    if (problem) return fail(problem);
  }
  const problem = finishListen(p);
  return problem ? fail(problem) : ok(p);
}

/** A listen item written back in nginx syntax, for messages. */
export function formatListen(p: ListenParams): string {
  const words = [formatAddress(p.address)];
  if (p.ssl) words.push("ssl");
  if (p.proxyProtocol) words.push("proxy_protocol");
  if (p.backlog !== undefined) words.push(`backlog=${p.backlog}`);
  if (p.rcvbuf !== undefined) words.push(`rcvbuf=${p.rcvbuf}`);
  if (p.sndbuf !== undefined) words.push(`sndbuf=${p.sndbuf}`);
  if (p.ipv6only !== undefined && p.address.host.includes(":")) words.push(`ipv6only=${p.ipv6only ? "on" : "off"}`);
  if (p.soKeepalive) words.push("so_keepalive=on");
  if (p.bind && p.backlog === undefined && p.rcvbuf === undefined && p.sndbuf === undefined) words.push("bind");
  return words.join(" ");
}

// ---- password hashes -----------------------------------------------------------------

export interface ScryptParams {
  readonly N: number;
  readonly r: number;
  readonly p: number;
  readonly salt: string; // base64
  readonly hash: string; // base64
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2,3})?$/;

/** Checks the shape "scrypt$N$r$p$saltB64$hashB64" (N a power of two > 1; r, p >= 1). */
export function parseScryptHash(s: string): Parsed<ScryptParams> {
  const parts = s.split("$");
  const shape = `expected "scrypt$N$r$p$salt$hash" (base64 salt and hash), as "postern hash-password" prints`;
  if (parts.length !== 6 || parts[0] !== "scrypt") return fail(shape);
  const [, nText, rText, pText, salt, hash] = parts;
  const num = (t: string) => (/^\d{1,10}$/.test(t) ? Number(t) : NaN);
  const N = num(nText);
  const r = num(rText);
  const p = num(pText);
  if (!(N > 1) || (N & (N - 1)) !== 0) return fail(`${shape}: N must be a power of two, got "${nText}"`);
  if (!(r >= 1) || !(p >= 1)) return fail(`${shape}: r and p must be at least 1`);
  if (salt === "" || !BASE64.test(salt)) return fail(`${shape}: the salt is not base64`);
  if (hash === "" || !BASE64.test(hash)) return fail(`${shape}: the hash is not base64`);
  return ok({ N, r, p, salt, hash });
}

// ---- suggestions ---------------------------------------------------------------------

/** Edits between two words, a swap of neighbours counting as one ("mial" -> "mail"). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The closest known word when it is close enough to be a slip ("imap_uath" -> "imap_auth"). */
export function closest(word: string, known: Iterable<string>): string | undefined {
  const w = word.toLowerCase();
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = editDistance(w, k);
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  const limit = w.length <= 4 ? 1 : w.length <= 8 ? 2 : 3;
  return bestDistance <= limit ? best : undefined;
}
