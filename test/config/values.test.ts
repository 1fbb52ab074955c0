import assert from "node:assert/strict";
import { test } from "node:test";
import {
  cidrContains,
  closest,
  formatIpv6,
  formatTime,
  parseAddress,
  parseCidr,
  parseCount,
  parseEnum,
  parseFlag,
  parseIpv6,
  parseListenString,
  parseScryptHash,
  parseSize,
  parseTime,
} from "../../src/config/values.ts";
import type { Parsed } from "../../src/config/values.ts";

function value<T>(r: Parsed<T>): T {
  if (!r.ok) assert.fail(`expected a value, got the message ${JSON.stringify(r.message)}`);
  return r.value;
}

function message<T>(r: Parsed<T>): string {
  if (r.ok) assert.fail(`expected a message, got the value ${JSON.stringify(r.value)}`);
  return r.message;
}

test("parseSize reads plain numbers, digit strings and k/m/g suffixes in either case", () => {
  assert.equal(value(parseSize(4096)), 4096);
  assert.equal(value(parseSize("4096")), 4096);
  assert.equal(value(parseSize("16k")), 16384);
  assert.equal(value(parseSize("16K")), 16384);
  assert.equal(value(parseSize("1m")), 1048576);
  assert.equal(value(parseSize("2M")), 2097152);
  assert.equal(value(parseSize("1g")), 1073741824);
  assert.equal(value(parseSize(0)), 0);
});

test("parseSize rejects words, fractions, negatives and spaces with the expected form", () => {
  assert.equal(message(parseSize("abc")), `expected a size like 16k, got "abc"`);
  assert.equal(message(parseSize(1.5)), "expected a size like 16k, got 1.5");
  assert.equal(message(parseSize(-1)), "expected a size like 16k, got -1");
  assert.equal(message(parseSize("16 k")), `expected a size like 16k, got "16 k"`);
  assert.equal(message(parseSize("16kb")), `expected a size like 16k, got "16kb"`);
  assert.equal(message(parseSize(true)), "expected a size like 16k, got true");
  assert.equal(message(parseSize([])), "expected a size like 16k, got a list");
});

test("parseTime reads numbers as seconds and nginx time strings as milliseconds", () => {
  assert.equal(value(parseTime(60)), 60_000);
  assert.equal(value(parseTime("60")), 60_000);
  assert.equal(value(parseTime("15s")), 15_000);
  assert.equal(value(parseTime("500ms")), 500);
  assert.equal(value(parseTime("5m")), 300_000);
  assert.equal(value(parseTime("24h")), 86_400_000);
  assert.equal(value(parseTime("1d")), 86_400_000);
  assert.equal(value(parseTime("1w")), 7 * 86_400_000);
  assert.equal(value(parseTime("1h30m")), 5_400_000);
  assert.equal(value(parseTime("1h 30m 5s")), 5_405_000);
  assert.equal(value(parseTime("1m500ms")), 60_500);
  assert.equal(value(parseTime(0)), 0);
});

test("parseTime rejects units out of order, repeated units, and garbage", () => {
  assert.match(message(parseTime("30m1h")), /units must go from larger to smaller/);
  assert.match(message(parseTime("1s1s")), /units must go from larger to smaller/);
  assert.equal(message(parseTime("soon")), `expected a time like 30s or 1h30m, got "soon"`);
  assert.equal(message(parseTime("1x")), `expected a time like 30s or 1h30m, got "1x"`);
  assert.equal(message(parseTime("")), `expected a time like 30s or 1h30m, got ""`);
  assert.equal(message(parseTime(1.5)), "expected a time like 30s or 1h30m, got 1.5");
  assert.equal(message(parseTime(-3)), "expected a time like 30s or 1h30m, got -3");
});

test("parseTime allows y and M only in seconds slots, and ms only in millisecond slots", () => {
  assert.match(message(parseTime("1y")), /unit "y" is not allowed here/);
  assert.match(message(parseTime("1M")), /unit "M" is not allowed here/);
  assert.equal(value(parseTime("1M", { seconds: true })), 30 * 86_400_000);
  assert.equal(value(parseTime("1y", { seconds: true })), 365 * 86_400_000);
  assert.match(message(parseTime("500ms", { seconds: true })), /unit "ms" is not allowed here/);
});

test("parseTime rejects times the runtimes' timers cannot hold", () => {
  assert.equal(value(parseTime("24d")), 24 * 86_400_000);
  assert.match(message(parseTime("25d")), /too long: "25d"; timers cannot exceed 2147483647ms/);
  assert.match(message(parseTime(3_000_000)), /too long/);
});

test("formatTime writes milliseconds back as an nginx time", () => {
  assert.equal(formatTime(5_400_000), "1h30m");
  assert.equal(formatTime(60_500), "1m500ms");
  assert.equal(formatTime(0), "0s");
});

test("parseFlag takes YAML booleans and on/off in any case, nothing else", () => {
  assert.equal(value(parseFlag(true)), true);
  assert.equal(value(parseFlag(false)), false);
  assert.equal(value(parseFlag("on")), true);
  assert.equal(value(parseFlag("OFF")), false);
  assert.equal(message(parseFlag("yes")), `expected on or off, got "yes"`);
  assert.equal(message(parseFlag(1)), "expected on or off, got 1");
});

test("parseEnum matches case-insensitively and maps booleans and aliases", () => {
  const words = ["off", "on", "only"] as const;
  assert.equal(value(parseEnum("ONLY", words)), "only");
  assert.equal(value(parseEnum(true, words, { true: "on", false: "off" })), "on");
  assert.equal(value(parseEnum("on", ["off", "v1", "v2"] as const, undefined, { on: "v1" })), "v1");
  assert.equal(message(parseEnum("maybe", words)), `expected one of off, on, only; got "maybe"`);
  assert.equal(message(parseEnum(true, words)), "expected one of off, on, only; got true");
});

test("parseCount takes whole numbers from the minimum up", () => {
  assert.equal(value(parseCount(0)), 0);
  assert.equal(value(parseCount("7")), 7);
  assert.equal(message(parseCount(-1)), "expected a whole number of at least 0, got -1");
  assert.equal(message(parseCount(0, 1)), "expected a whole number of at least 1, got 0");
  assert.equal(message(parseCount("many")), `expected a whole number of at least 0, got "many"`);
});

test("parseIpv6 and formatIpv6 canonicalise IPv6 text", () => {
  const canon = (s: string) => {
    const b = parseIpv6(s);
    assert.ok(b, `"${s}" should parse`);
    return formatIpv6(b);
  };
  assert.equal(canon("::"), "::");
  assert.equal(canon("::1"), "::1");
  assert.equal(canon("0:0:0:0:0:0:0:1"), "::1");
  assert.equal(canon("2001:DB8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
  assert.equal(canon("2001:db8::"), "2001:db8::");
  assert.equal(canon("::ffff:10.0.0.1"), "::ffff:a00:1");
  assert.equal(canon("1:0:2:3:4:5:6:7"), "1:0:2:3:4:5:6:7");
  assert.equal(parseIpv6("1::2::3"), undefined);
  assert.equal(parseIpv6("12345::"), undefined);
  assert.equal(parseIpv6("1:2:3:4:5:6:7"), undefined);
  assert.equal(parseIpv6("fe80::1%eth0"), undefined);
});

test("parseAddress reads host:port, [v6]:port, names and default ports", () => {
  assert.deepEqual(value(parseAddress("127.0.0.1:143")), { host: "127.0.0.1", port: 143 });
  assert.deepEqual(value(parseAddress("[::1]:143")), { host: "::1", port: 143 });
  assert.deepEqual(value(parseAddress("mail.example.com:25")), { host: "mail.example.com", port: 25 });
  assert.deepEqual(value(parseAddress("10.0.0.1", { defaultPort: 53 })), { host: "10.0.0.1", port: 53 });
  assert.deepEqual(value(parseAddress("2001:db8::1", { defaultPort: 53 })), { host: "2001:db8::1", port: 53 });
  assert.deepEqual(value(parseAddress("[2001:db8::1]", { defaultPort: 53 })), { host: "2001:db8::1", port: 53 });
});

test("parseAddress explains a missing port, a bad port, unbracketed IPv6 and unix sockets", () => {
  assert.equal(message(parseAddress("127.0.0.1")), `missing port in "127.0.0.1"`);
  assert.equal(message(parseAddress("127.0.0.1:70000")), `invalid port "70000"`);
  assert.equal(message(parseAddress("127.0.0.1:0")), `invalid port "0"`);
  assert.equal(message(parseAddress("::1:143")), `put an IPv6 address in brackets, as "[::1]:143", got "::1:143"`);
  assert.equal(message(parseAddress("unix:/run/x.sock")), `not supported by Postern: unix sockets ("unix:/run/x.sock")`);
  assert.equal(message(parseAddress("999.1.1.1:1")), `invalid host "999.1.1.1"`);
  assert.equal(message(parseAddress("mx.test:53", { defaultPort: 53, allowNames: false })), `expected an IP address, got "mx.test"`);
});

test("parseListenString reads nginx listen items with their parameters", () => {
  assert.deepEqual(value(parseListenString("127.0.0.1:993 ssl proxy_protocol")), {
    address: { host: "127.0.0.1", port: 993 },
    ssl: true,
    proxyProtocol: true,
    bind: false,
    soKeepalive: false,
  });
  assert.deepEqual(value(parseListenString("1143")).address, { host: "0.0.0.0", port: 1143 });
  assert.deepEqual(value(parseListenString("*:143")).address, { host: "0.0.0.0", port: 143 });
  const v6 = value(parseListenString("[::]:143"));
  assert.deepEqual(v6.address, { host: "::", port: 143 });
  assert.equal(v6.ipv6only, true);
  assert.equal(v6.bind, false);
});

test("parseListenString sets bind for backlog, buffers, ipv6only and so_keepalive, as nginx does", () => {
  const p = value(parseListenString("[::]:143 backlog=128 rcvbuf=64k sndbuf=1m ipv6only=off so_keepalive=on"));
  assert.equal(p.backlog, 128);
  assert.equal(p.rcvbuf, 65536);
  assert.equal(p.sndbuf, 1048576);
  assert.equal(p.ipv6only, false);
  assert.equal(p.soKeepalive, true);
  assert.equal(p.bind, true);
  assert.equal(value(parseListenString("127.0.0.1:143 bind")).bind, true);
  assert.equal(value(parseListenString("127.0.0.1:143 so_keepalive=off")).soKeepalive, false);
});

test("parseListenString rejects bad and unsupported parameters with nginx's words", () => {
  assert.equal(message(parseListenString("143 backlog=0")), `invalid backlog "backlog=0"`);
  assert.equal(message(parseListenString("143 backlog=x")), `invalid backlog "backlog=x"`);
  assert.equal(message(parseListenString("143 rcvbuf=lots")), `invalid rcvbuf "rcvbuf=lots"`);
  assert.equal(message(parseListenString("143 reuseport")), `invalid parameter "reuseport"`);
  assert.equal(message(parseListenString("143 ssl=on")), `invalid parameter "ssl=on"`);
  assert.equal(message(parseListenString("[::]:143 ipv6only=maybe")), `invalid ipv6only flags "maybe"`);
  assert.equal(message(parseListenString("143 ipv6only=on")), `ipv6only applies to IPv6 addresses only, not "0.0.0.0"`);
  assert.match(message(parseListenString("143 so_keepalive=30m::10")), /^not supported by Postern: so_keepalive timings/);
  assert.match(message(parseListenString("143 multipath")), /^not supported by Postern: "multipath"/);
  assert.equal(message(parseListenString("unix:/run/mail.sock")), `not supported by Postern: unix sockets ("unix:/run/mail.sock")`);
  assert.equal(message(parseListenString("127.0.0.1")), `missing port in "127.0.0.1"`);
});

test("parseListenString accepts port 0 so the system picks a free port", () => {
  assert.deepEqual(value(parseListenString("127.0.0.1:0")).address, { host: "127.0.0.1", port: 0 });
});

test("parseCidr reads addresses, CIDRs and unix:, and flags meaningless low bits", () => {
  assert.deepEqual(value(parseCidr("10.0.0.0/8")), { family: "ipv4", bytes: [10, 0, 0, 0], prefix: 8, lowBitsSet: false });
  assert.equal(value(parseCidr("192.168.1.1")).prefix, 32);
  assert.equal(value(parseCidr("2001:db8::/32")).family, "ipv6");
  assert.equal(value(parseCidr("::1")).prefix, 128);
  assert.equal(value(parseCidr("unix:")).family, "unix");
  assert.equal(value(parseCidr("10.1.2.3/8")).lowBitsSet, true);
  assert.match(message(parseCidr("10.0.0.0/33")), /invalid prefix length/);
  assert.match(message(parseCidr("proxy.example.com")), /expected an IP address, a CIDR like 10.0.0.0\/8 or "unix:"/);
});

test("cidrContains matches addresses inside a range, including IPv4-mapped IPv6", () => {
  const net = value(parseCidr("10.0.0.0/8"));
  assert.equal(cidrContains(net, "10.20.30.40"), true);
  assert.equal(cidrContains(net, "11.0.0.1"), false);
  assert.equal(cidrContains(net, "::ffff:10.1.1.1"), true);
  assert.equal(cidrContains(value(parseCidr("2001:db8::/32")), "2001:db8:1::5"), true);
  assert.equal(cidrContains(value(parseCidr("2001:db8::/32")), "2001:db9::5"), false);
});

test("parseScryptHash accepts the hash-password shape and names what is wrong otherwise", () => {
  const good = "scrypt$16384$8$1$j7KZIBnY1GzPTTrJlIzSoA==$GfXtXLNAybjkWGPra0WXry+rem5Ko9UYvJKjKYWr18U=";
  assert.deepEqual(value(parseScryptHash(good)), {
    N: 16384,
    r: 8,
    p: 1,
    salt: "j7KZIBnY1GzPTTrJlIzSoA==",
    hash: "GfXtXLNAybjkWGPra0WXry+rem5Ko9UYvJKjKYWr18U=",
  });
  assert.match(message(parseScryptHash("bcrypt$...")), /^expected "scrypt\$N\$r\$p\$salt\$hash"/);
  assert.match(message(parseScryptHash("scrypt$1000$8$1$c2FsdA==$aGFzaA==")), /N must be a power of two, got "1000"/);
  assert.match(message(parseScryptHash("scrypt$16384$0$1$c2FsdA==$aGFzaA==")), /r and p must be at least 1/);
  assert.match(message(parseScryptHash("scrypt$16384$8$1$not base64!$aGFzaA==")), /the salt is not base64/);
  assert.match(message(parseScryptHash("scrypt$16384$8$1$c2FsdA==$")), /the hash is not base64/);
});

test("closest suggests a known word within a few typos and nothing when far off", () => {
  const known = ["imap_auth", "imap_capabilities", "proxy_timeout", "timeout"];
  assert.equal(closest("imap_uath", known), "imap_auth");
  assert.equal(closest("proxy_timout", known), "proxy_timeout");
  assert.equal(closest("Timeout", known), "timeout");
  assert.equal(closest("mial", ["mail", "http", "auth"]), "mail");
  assert.equal(closest("banana", known), undefined);
});
