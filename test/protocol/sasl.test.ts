import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { test } from "node:test";
import { decodeSaslCramMd5, decodeSaslPlain } from "../../src/protocol/sasl.ts";
import { decodeBase64, encodeBase64, toBytes } from "../../src/util/bytes.ts";
import { hmacMd5, md5 } from "../../src/util/md5.ts";
import { toHex } from "../../src/util/bytes.ts";

test("decodeSaslPlain takes authcid and password and rejects malformed input", () => {
  assert.deepEqual(decodeSaslPlain("AGFsaWNlAHNlY3JldA=="), { ok: true, value: { login: "alice", password: "secret" } });
  assert.equal(decodeSaslPlain("YWxpY2U=").ok, false);
  assert.equal(decodeSaslPlain("not base64!").ok, false);
});

test("decodeSaslCramMd5 wants a 32-character digest", () => {
  assert.equal(decodeSaslCramMd5(encodeBase64(toBytes("alice short"))).ok, false);
});

test("base64 round-trips every length and refuses bad symbols", () => {
  for (let n = 0; n < 40; n++) {
    const b = Uint8Array.from({ length: n }, (_, i) => (i * 37 + n) & 255);
    assert.deepEqual(decodeBase64(encodeBase64(b)), b);
    assert.deepEqual(decodeBase64(encodeBase64(b).replace(/=+$/, "")), b);
  }
  assert.equal(decodeBase64("ab$c"), null);
  assert.equal(decodeBase64("abcde"), null);
});

test("md5 and hmacMd5 match RFC 1321 and RFC 2195 vectors", () => {
  assert.equal(toHex(md5(toBytes(""))), "d41d8cd98f00b204e9800998ecf8427e");
  assert.equal(toHex(md5(toBytes("a".repeat(1000)))), "cabe45dcc9ae5b66ba86600cca6b8ba8");
  const digest = hmacMd5(toBytes("tanstaaftanstaaf"), toBytes("<1896.697170952@postoffice.reston.mci.net>"));
  assert.equal(toHex(digest), "b913a602c7eda7a495b4e6e7334d3890");
});

test("md5 and hmacMd5 agree with the runtime's own at every length around the block edges", () => {
  const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 131 + seed * 17 + 7) & 255);
  for (let n = 0; n <= 200; n++) {
    const data = bytes(n, 1);
    assert.equal(toHex(md5(data)), createHash("md5").update(data).digest("hex"), `md5 of ${n} bytes`);
    for (const k of [0, 16, 64, 65, 100]) {
      const key = bytes(k, n);
      assert.equal(toHex(hmacMd5(key, data)), createHmac("md5", key).update(data).digest("hex"), `hmac, ${k}-byte key, ${n} bytes`);
    }
  }
});
