// The ClientHello reader that lets a one-pair TLS stack (rustls in Deno) serve the RSA or the
// ECDSA pair the client can use. Pure bytes: runs on every runtime.

import assert from "node:assert/strict";
import { test } from "node:test";
import { pickPair, scanClientHello } from "../../platform/client-hello.ts";

const u16 = (n: number) => [n >> 8, n & 255];
const u24 = (n: number) => [n >> 16, (n >> 8) & 255, n & 255];

/** A ClientHello with the given signature algorithms (none: no extension), in records of at most `recordSize` bytes. */
function clientHello(sigalgs: number[] | undefined, recordSize = 16384): Uint8Array {
  const ext: number[] = [...u16(0x000a), ...u16(4), ...u16(2), ...u16(0x001d)]; // supported_groups: x25519
  if (sigalgs) ext.push(...u16(13), ...u16(2 + sigalgs.length * 2), ...u16(sigalgs.length * 2), ...sigalgs.flatMap(u16));
  const body = [
    3, 3, ...new Array(32).fill(7), // legacy_version, random
    0, // session id
    ...u16(4), 0x13, 0x01, 0x13, 0x02, // cipher suites
    1, 0, // compression
    ...u16(ext.length), ...ext,
  ];
  const msg = [1, ...u24(body.length), ...body];
  const out: number[] = [];
  for (let i = 0; i < msg.length; i += recordSize) {
    const part = msg.slice(i, i + recordSize);
    out.push(22, 3, 1, ...u16(part.length), ...part);
  }
  return Uint8Array.from(out);
}

test("scanClientHello needs the whole message, however the bytes arrive", () => {
  const hello = clientHello([0x0403, 0x0804]);
  for (let i = 0; i < hello.length; i++) assert.equal(scanClientHello(hello.subarray(0, i)).kind, "incomplete", `at ${i}`);
  assert.deepEqual(scanClientHello(hello), { kind: "done", sigalgs: [0x0403, 0x0804] });
});

test("scanClientHello reads a ClientHello split over several records", () => {
  const hello = clientHello([0x0807, 0x0403], 10);
  assert.ok(hello.length > 60, "several records");
  for (let i = 0; i < hello.length; i++) assert.equal(scanClientHello(hello.subarray(0, i)).kind, "incomplete", `at ${i}`);
  assert.deepEqual(scanClientHello(hello), { kind: "done", sigalgs: [0x0807, 0x0403] });
});

test("scanClientHello takes a ClientHello without signature_algorithms, and refuses what is not one", () => {
  assert.deepEqual(scanClientHello(clientHello(undefined)), { kind: "done" });
  assert.equal(scanClientHello(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n")).kind, "invalid");
  assert.equal(scanClientHello(Uint8Array.from([22, 3, 1, 0, 4, 2, 0, 0, 0])).kind, "invalid"); // a ServerHello
  assert.equal(scanClientHello(Uint8Array.from([22, 3, 1, 0, 0])).kind, "invalid"); // an empty record
});

test("pickPair serves the first pair the client's first usable scheme can sign with", () => {
  const pairs = ["rsa", "ec"];
  assert.equal(pickPair(pairs, [0x0403, 0x0804]), 1); // ecdsa_secp256r1_sha256 first
  assert.equal(pickPair(pairs, [0x0804, 0x0403]), 0); // rsa_pss_rsae_sha256 first
  assert.equal(pickPair(pairs, [0x0807, 0x0503]), 1); // no Ed25519 key: ECDSA
  assert.equal(pickPair(pairs, [0x0401]), 0); // rsa_pkcs1_sha256
  assert.equal(pickPair(["ec", "rsa"], undefined), 1); // no extension (TLS 1.2 and older): RSA
  assert.equal(pickPair(["ec"], [0x0804]), 0); // nothing fits: the first pair, and the handshake says the rest
});
