// The PROXY protocol (HAProxy's spec, versions 1 and 2): reading the header a load balancer puts
// before the client's bytes, and writing one for the backend. Pure; bounded.

const V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
const V1_MAX_BYTES = 107; // the spec's longest v1 line, CRLF included
const V2_MAX_BYTES = 16 + 4096; // fixed part + addresses and TLVs; no balancer sends more than a few hundred
const V2_MAX_TLVS = 64;

export interface ProxyHeader {
  readonly version: 1 | 2;
  readonly command: "proxy" | "local";
  readonly family: "tcp4" | "tcp6" | "unknown";
  readonly srcAddr?: string;
  readonly srcPort?: number;
  readonly dstAddr?: string;
  readonly dstPort?: number;
  readonly tlvs: readonly { readonly type: number; readonly value: Uint8Array }[];
}

export type ProxyRead =
  | { readonly kind: "incomplete" }
  | { readonly kind: "ok"; readonly header: ProxyHeader; readonly consumed: number }
  | { readonly kind: "error"; readonly why: string };

const LOGGED_BYTES = 64; // of a broken header; enough to tell a plain client from a misconfigured balancer

/** nginx's "broken header" line: the bytes up to the first CR or LF, unprintable ones as \xNN. */
export function brokenHeader(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < Math.min(LOGGED_BYTES, b.length) && b[i] !== 0x0d && b[i] !== 0x0a; i++) {
    s += b[i] >= 0x20 && b[i] < 0x7f && b[i] !== 0x22 && b[i] !== 0x5c ? String.fromCharCode(b[i]) : `\\x${b[i].toString(16).padStart(2, "0")}`;
  }
  return `broken header: "${s}"`;
}

function broken(b: Uint8Array): ProxyRead {
  return { kind: "error", why: brokenHeader(b) };
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function port(text: string): number | null {
  if (!/^(0|[1-9]\d{0,4})$/.test(text)) return null;
  const n = Number(text);
  return n <= 65535 ? n : null;
}

function readV1(b: Uint8Array): ProxyRead {
  const lf = b.indexOf(0x0a);
  if (lf < 0) return b.length >= V1_MAX_BYTES ? broken(b) : { kind: "incomplete" };
  if (lf + 1 > V1_MAX_BYTES || lf === 0 || b[lf - 1] !== 0x0d) return broken(b);
  const line = String.fromCharCode(...b.subarray(0, lf - 1));
  const parts = line.split(" ");
  const bad = broken(b);
  if (parts[0] !== "PROXY") return bad;
  if (parts[1] === "UNKNOWN") return { kind: "ok", header: { version: 1, command: "proxy", family: "unknown", tlvs: [] }, consumed: lf + 1 };
  if (parts.length !== 6 || (parts[1] !== "TCP4" && parts[1] !== "TCP6")) return bad;
  const v4 = parts[1] === "TCP4";
  const okAddr = (a: string) => (v4 ? IPV4.test(a) : ipv6Bytes(a) !== null);
  const sp = port(parts[4]);
  const dp = port(parts[5]);
  if (!okAddr(parts[2]) || !okAddr(parts[3]) || sp === null || dp === null) return bad;
  return {
    kind: "ok",
    header: { version: 1, command: "proxy", family: v4 ? "tcp4" : "tcp6", srcAddr: parts[2], dstAddr: parts[3], srcPort: sp, dstPort: dp, tlvs: [] },
    consumed: lf + 1,
  };
}

/** IPv6 text as inet_ntop writes it (nginx's ngx_inet6_ntop): lower case, the longest zero run
 *  compressed, IPv4-mapped addresses as "::ffff:a.b.c.d". */
function ipv6(b: Uint8Array): string {
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return `::ffff:${Array.from(b.subarray(12)).join(".")}`;
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((b[i] << 8) | b[i + 1]).toString(16));
  // compress the longest run of zero words
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== "0") { i++; continue; }
    let j = i;
    while (j < 8 && words[j] === "0") j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return words.join(":");
  return words.slice(0, best).join(":") + "::" + words.slice(best + bestLen).join(":");
}

function readV2(b: Uint8Array): ProxyRead {
  if (b.length < 16) return { kind: "incomplete" };
  const verCmd = b[12];
  if (verCmd >> 4 !== 2) return { kind: "error", why: `unknown PROXY protocol version: ${verCmd >> 4}` };
  const cmd = verCmd & 0x0f;
  if (cmd > 1) return { kind: "error", why: `unsupported PROXY protocol v2 command ${cmd}` };
  const len = (b[14] << 8) | b[15];
  // refused before it has all arrived: a balancer never sends this much, so it is not worth waiting for
  if (16 + len > V2_MAX_BYTES) return { kind: "error", why: `header is too large: ${len} bytes` };
  if (b.length < 16 + len) return { kind: "incomplete" };
  const body = b.subarray(16, 16 + len);
  const fam = b[13];
  let header: ProxyHeader;
  let rest: Uint8Array;
  const transport = fam & 0x0f; // 1 stream, 2 dgram
  if (cmd === 0 || (fam >> 4) === 0 || transport !== 1 || (fam >> 4) === 3) {
    // LOCAL (health checks), UNSPEC, datagrams and unix sockets: keep the real peer
    header = { version: 2, command: cmd === 0 ? "local" : "proxy", family: "unknown", tlvs: [] };
    rest = new Uint8Array(0);
  } else if (fam >> 4 === 1) {
    if (len < 12) return { kind: "error", why: "PROXY protocol v2 header too short for IPv4 addresses" };
    const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
    header = {
      version: 2, command: "proxy", family: "tcp4",
      srcAddr: Array.from(body.subarray(0, 4)).join("."), dstAddr: Array.from(body.subarray(4, 8)).join("."),
      srcPort: dv.getUint16(8), dstPort: dv.getUint16(10), tlvs: [],
    };
    rest = body.subarray(12);
  } else {
    if (len < 36) return { kind: "error", why: "PROXY protocol v2 header too short for IPv6 addresses" };
    const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
    header = {
      version: 2, command: "proxy", family: "tcp6",
      srcAddr: ipv6(body.subarray(0, 16)), dstAddr: ipv6(body.subarray(16, 32)),
      srcPort: dv.getUint16(32), dstPort: dv.getUint16(34), tlvs: [],
    };
    rest = body.subarray(36);
  }
  const tlvs: { type: number; value: Uint8Array }[] = [];
  let p = 0;
  while (p < rest.length && header.family !== "unknown") {
    if (p + 3 > rest.length) return { kind: "error", why: "PROXY protocol v2 TLV truncated" };
    const tlen = (rest[p + 1] << 8) | rest[p + 2];
    if (p + 3 + tlen > rest.length) return { kind: "error", why: `PROXY protocol v2 TLV length ${tlen} exceeds the header` };
    if (tlvs.length >= V2_MAX_TLVS) return { kind: "error", why: "PROXY protocol v2 header has too many TLVs" };
    tlvs.push({ type: rest[p], value: rest.slice(p + 3, p + 3 + tlen) });
    p += 3 + tlen;
  }
  return { kind: "ok", header: { ...header, tlvs }, consumed: 16 + len };
}

/** Reads a PROXY header (v1 or v2) from the start of `b`. */
export function readProxyHeader(b: Uint8Array): ProxyRead {
  if (b.length === 0) return { kind: "incomplete" };
  if (b[0] === 0x0d) {
    for (let i = 0; i < Math.min(b.length, 12); i++) {
      if (b[i] !== V2_SIGNATURE[i]) return broken(b);
    }
    return b.length < 12 ? { kind: "incomplete" } : readV2(b);
  }
  const prefix = "PROXY ";
  for (let i = 0; i < Math.min(b.length, prefix.length); i++) {
    if (b[i] !== prefix.charCodeAt(i)) return broken(b);
  }
  return b.length < prefix.length ? { kind: "incomplete" } : readV1(b);
}

/** The header nginx sends to a backend (`proxy_protocol on`): v1 text; v2 binary with no TLVs. */
export function writeProxyHeader(
  version: 1 | 2,
  src: { host: string; port: number },
  dst: { host: string; port: number },
): Uint8Array {
  const v6 = src.host.includes(":") || dst.host.includes(":");
  // one family for both addresses: an IPv4 address beside an IPv6 one is written IPv4-mapped
  const as6 = (h: string) => (h.includes(":") ? h.replace(/%.*$/, "") : `::ffff:${h}`); // no zone index on the wire
  if (version === 1) {
    const text = v6 ? `PROXY TCP6 ${as6(src.host)} ${as6(dst.host)} ${src.port} ${dst.port}\r\n` : `PROXY TCP4 ${src.host} ${dst.host} ${src.port} ${dst.port}\r\n`;
    return Uint8Array.from(text, (c) => c.charCodeAt(0));
  }
  const addrLen = v6 ? 36 : 12;
  const out = new Uint8Array(16 + addrLen);
  out.set(V2_SIGNATURE, 0);
  out[12] = 0x21;
  out[13] = v6 ? 0x21 : 0x11;
  out[14] = 0;
  out[15] = addrLen;
  const dv = new DataView(out.buffer);
  if (v6) {
    out.set(ipv6Bytes(as6(src.host)) ?? new Uint8Array(16), 16);
    out.set(ipv6Bytes(as6(dst.host)) ?? new Uint8Array(16), 32);
    dv.setUint16(48, src.port);
    dv.setUint16(50, dst.port);
  } else {
    out.set(src.host.split(".").map(Number), 16);
    out.set(dst.host.split(".").map(Number), 20);
    dv.setUint16(24, src.port);
    dv.setUint16(26, dst.port);
  }
  return out;
}

/** IPv6 text (with an optional dotted IPv4 tail) as 16 bytes; null when it is not an IPv6 address. */
function ipv6Bytes(text: string): Uint8Array | null {
  let t = text;
  const tail4: number[] = [];
  const v4 = /:(\d+\.\d+\.\d+\.\d+)$/.exec(t);
  if (v4) {
    if (!IPV4.test(v4[1])) return null;
    tail4.push(...v4[1].split(".").map(Number));
    t = t.slice(0, -v4[1].length) + "0:0"; // two placeholder words, filled in below
  }
  const halves = t.split("::");
  if (halves.length > 2) return null;
  const group = (h: string) => (h === "" ? [] : h.split(":"));
  const head = group(halves[0]);
  const tail = halves.length === 2 ? group(halves[1]) : [];
  const fill = 8 - head.length - tail.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) return null;
  const words = [...head, ...Array(halves.length === 2 ? fill : 0).fill("0"), ...tail];
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    if (!/^[0-9A-Fa-f]{1,4}$/.test(words[i])) return null;
    const n = parseInt(words[i], 16);
    out[i * 2] = n >> 8;
    out[i * 2 + 1] = n & 255;
  }
  if (tail4.length) out.set(tail4, 12);
  return out;
}

/** An address as nginx prints it after parsing (realip's client address): IPv6 canonical. */
export function canonicalAddress(text: string): string {
  if (!text.includes(":")) return text;
  const b = ipv6Bytes(text);
  return b ? ipv6(b) : text;
}

/** nginx's set_real_ip_from: is `addr` inside one of the CIDRs (or equal to one of the addresses)? */
export function addressTrusted(addr: string, from: readonly string[]): boolean {
  const plain = addr.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, "$1");
  for (const entry of from) {
    if (entry === "unix:") continue;
    const [net, bitsText] = entry.split("/");
    const isV4 = !net.includes(":");
    if (isV4 !== !plain.includes(":")) continue;
    const a = isV4 ? Uint8Array.from(plain.split(".").map(Number)) : ipv6Bytes(plain);
    const n = isV4 ? Uint8Array.from(net.split(".").map(Number)) : ipv6Bytes(net);
    if (!a || !n) continue;
    const bits = bitsText === undefined ? a.length * 8 : Number(bitsText);
    let ok = true;
    for (let i = 0; i < a.length && ok; i++) {
      const take = Math.max(0, Math.min(8, bits - i * 8));
      const mask = take === 0 ? 0 : (0xff << (8 - take)) & 0xff;
      if ((a[i] & mask) !== (n[i] & mask)) ok = false;
    }
    if (ok) return true;
  }
  return false;
}
