import assert from "node:assert/strict";
import { test } from "node:test";
import { addressTrusted, readProxyHeader, writeProxyHeader } from "../../src/proxy/proxy-protocol.ts";

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
