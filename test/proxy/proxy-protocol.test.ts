import assert from "node:assert/strict";
import { test } from "node:test";
import { addressTrusted, canonicalAddress, readProxyHeader, writeProxyHeader } from "../../src/proxy/proxy-protocol.ts";

const enc = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

test("readProxyHeader reads v1 TCP4 and TCP6 lines and waits for the whole line at every split", () => {
  const line = enc("PROXY TCP4 192.0.2.7 127.0.0.1 51000 993\r\nA1 LOGIN");
  const end = line.indexOf(0x0a) + 1;
  for (let k = 0; k < end; k++) assert.equal(readProxyHeader(line.subarray(0, k)).kind, "incomplete", `split ${k}`);
  const r = readProxyHeader(line);
  assert.deepEqual(r, { kind: "ok", consumed: end, header: { version: 1, command: "proxy", family: "tcp4", srcAddr: "192.0.2.7", dstAddr: "127.0.0.1", srcPort: 51000, dstPort: 993, tlvs: [] } });
  const v6 = readProxyHeader(enc("PROXY TCP6 2001:db8::1 ::1 4000 143\r\n"));
  assert.ok(v6.kind === "ok" && v6.header.srcAddr === "2001:db8::1");
  const unknown = readProxyHeader(enc("PROXY UNKNOWN whatever\r\n"));
  assert.ok(unknown.kind === "ok" && unknown.header.family === "unknown" && unknown.header.srcAddr === undefined);
});

test("readProxyHeader refuses broken v1 headers: garbage, bad addresses, bad ports, no CRLF within 107 bytes", () => {
  for (const bad of ["GET / HTTP/1.0\r\n", "PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\n", "PROXY TCP4 1.2.3.4 1.2.3.4 70000 2\r\n", "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "PROXY TCP5 a b 1 2\r\n", "PROXY " + "x".repeat(120)]) {
    assert.equal(readProxyHeader(enc(bad)).kind, "error", bad);
  }
});

test("v2 headers round-trip for IPv4 and IPv6 and are read at every split", () => {
  for (const [src, dst] of [[{ host: "203.0.113.9", port: 40000 }, { host: "127.0.0.1", port: 143 }], [{ host: "2001:db8::42", port: 1 }, { host: "::1", port: 993 }]]) {
    const h = writeProxyHeader(2, src, dst);
    for (let k = 0; k < h.length; k++) assert.equal(readProxyHeader(h.subarray(0, k)).kind, "incomplete");
    const r = readProxyHeader(h);
    assert.ok(r.kind === "ok");
    assert.deepEqual([r.header.srcAddr, r.header.srcPort, r.header.dstAddr, r.header.dstPort], [src.host, src.port, dst.host, dst.port]);
    assert.equal(r.consumed, h.length);
    const v1 = readProxyHeader(writeProxyHeader(1, src, dst));
    assert.ok(v1.kind === "ok" && v1.header.srcAddr === src.host && v1.header.dstPort === dst.port);
  }
});

test("v2 TLVs are parsed and bounded; a lying length waits, then oversized or inconsistent headers are refused", () => {
  const base = writeProxyHeader(2, { host: "10.1.2.3", port: 5 }, { host: "10.0.0.1", port: 6 });
  const tlv = Uint8Array.of(0x02, 0x00, 0x03, 0x61, 0x62, 0x63); // authority "abc"
  const withTlv = new Uint8Array(base.length + tlv.length);
  withTlv.set(base);
  withTlv.set(tlv, base.length);
  withTlv[15] = 12 + tlv.length;
  const r = readProxyHeader(withTlv);
  assert.ok(r.kind === "ok");
  assert.deepEqual(r.header.tlvs.map((t) => [t.type, String.fromCharCode(...t.value)]), [[2, "abc"]]);
  // the length says more than arrived: wait (the driver's timeout bounds it)
  const lying = withTlv.slice();
  lying[15] = 200;
  assert.equal(readProxyHeader(lying).kind, "incomplete");
  // a TLV longer than the header
  const badTlv = withTlv.slice();
  badTlv[base.length + 2] = 50;
  assert.equal(readProxyHeader(badTlv).kind, "error");
  // a header larger than Postern accepts
  const huge = base.slice();
  huge[14] = 0xff;
  huge[15] = 0xff;
  assert.equal(readProxyHeader(huge).kind, "error");
  // LOCAL (a balancer's health check) keeps the real peer
  const local = base.slice(0, 16);
  local[12] = 0x20;
  local[15] = 0;
  const l = readProxyHeader(local);
  assert.ok(l.kind === "ok" && l.header.command === "local" && l.header.srcAddr === undefined);
});

test("addressTrusted matches set_real_ip_from addresses and CIDRs of both families", () => {
  assert.equal(addressTrusted("127.0.0.1", ["127.0.0.0/8"]), true);
  assert.equal(addressTrusted("::ffff:127.0.0.1", ["127.0.0.1"]), true);
  assert.equal(addressTrusted("10.1.2.3", ["10.0.0.0/16"]), false);
  assert.equal(addressTrusted("2001:db8::5", ["2001:db8::/32"]), true);
  assert.equal(addressTrusted("2001:db9::5", ["2001:db8::/32", "10.0.0.0/8"]), false);
  assert.equal(addressTrusted("192.168.1.1", []), false);
});

test("readProxyHeader logs a broken header as nginx does: up to the first CR or LF, unprintable bytes escaped", () => {
  const why = (s: string | Uint8Array) => {
    const r = readProxyHeader(typeof s === "string" ? enc(s) : s);
    return r.kind === "error" ? r.why : r.kind;
  };
  assert.equal(why("a1 CAPABILITY\r\n"), 'broken header: "a1 CAPABILITY"');
  assert.equal(why(Uint8Array.of(0x16, 0x03, 0x01, 0x22, 0x5c)), 'broken header: "\\x16\\x03\\x01\\x22\\x5c"');
  assert.equal(why("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), 'broken header: "PROXY TCP4 1.2.3.4 5.6.7.8 1"');
  assert.equal(why("PROXY TCP4 " + "1".repeat(200)), `broken header: "PROXY TCP4 ${"1".repeat(53)}"`);
  const v2 = writeProxyHeader(2, { host: "10.0.0.1", port: 1 }, { host: "10.0.0.2", port: 2 });
  const badVersion = v2.slice();
  badVersion[12] = 0x31;
  assert.equal(why(badVersion), "unknown PROXY protocol version: 3");
  const huge = v2.slice(0, 16);
  huge[14] = 0x10;
  huge[15] = 0x01; // 4097 bytes after the fixed part
  assert.equal(why(huge), "header is too large: 4097 bytes");
});

test("v1 TCP6 addresses are checked strictly; the realip address is printed as nginx prints a parsed address", () => {
  for (const bad of ["1:::2", "1::2::3", "12345::1", "1:2:3:4:5:6:7:8:9", "::g", "::1.2.3.256", "1.2.3.4"]) {
    assert.equal(readProxyHeader(enc(`PROXY TCP6 ${bad} ::1 1 2\r\n`)).kind, "error", bad);
  }
  for (const good of ["::", "::1", "1::", "2001:DB8:0:0::7", "1:2:3:4:5:6:7:8", "::ffff:192.0.2.1", "64:ff9b::10.0.0.1"]) {
    assert.equal(readProxyHeader(enc(`PROXY TCP6 ${good} ::1 1 2\r\n`)).kind, "ok", good);
  }
  assert.equal(canonicalAddress("2001:DB8:0:0::7"), "2001:db8::7");
  assert.equal(canonicalAddress("0:0:0:0:0:ffff:c000:0201"), "::ffff:192.0.2.1");
  assert.equal(canonicalAddress("2001:db8:0:1:0:0:0:1"), "2001:db8:0:1::1");
  assert.equal(canonicalAddress("192.0.2.1"), "192.0.2.1");
});

test("writeProxyHeader puts an IPv4 address beside an IPv6 one as IPv4-mapped, in v1 and v2", () => {
  const src = { host: "2001:db8::5", port: 1000 };
  const dst = { host: "127.0.0.1", port: 143 };
  assert.equal(String.fromCharCode(...writeProxyHeader(1, src, dst)), "PROXY TCP6 2001:db8::5 ::ffff:127.0.0.1 1000 143\r\n");
  const r = readProxyHeader(writeProxyHeader(2, dst, src));
  assert.ok(r.kind === "ok");
  assert.deepEqual([r.header.family, r.header.srcAddr, r.header.dstAddr], ["tcp6", "::ffff:127.0.0.1", "2001:db8::5"]);
  assert.equal(String.fromCharCode(...writeProxyHeader(1, { host: "fe80::1%eth0", port: 1 }, { host: "fe80::2", port: 2 })), "PROXY TCP6 fe80::1 fe80::2 1 2\r\n");
});
