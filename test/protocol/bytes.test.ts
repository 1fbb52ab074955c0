import assert from "node:assert/strict";
import { test } from "node:test";
import { decodeSaslPlain } from "../../src/protocol/sasl.ts";
import { encodeBase64, escapeForLog, fromBytes, toBytes } from "../../src/util/bytes.ts";

const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);

test("fromBytes gives one char per byte, the byte's own code, for all 256 bytes (0x80-0x9f too)", () => {
  const s = fromBytes(ALL_BYTES);
  assert.equal(s.length, 256);
  for (let i = 0; i < 256; i++) assert.equal(s.charCodeAt(i), i, `byte 0x${i.toString(16)}`);
  assert.deepEqual(toBytes(s), ALL_BYTES);
});

test("fromBytes decodes a range like subarray does", () => {
  assert.equal(fromBytes(ALL_BYTES, 0x80, 0x83), "\x80\x81\x82");
  assert.equal(fromBytes(ALL_BYTES, 0x41, 0x44), "ABC");
  assert.equal(fromBytes(ALL_BYTES, 10, 10), "");
  assert.equal(fromBytes(ALL_BYTES, 250), "\xfa\xfb\xfc\xfd\xfe\xff");
});

test("a UTF-8 password with continuation bytes 0x80-0x9f survives SASL PLAIN byte for byte", () => {
  const password = new TextEncoder().encode("zażółć-€"); // ł = c5 82, ć = c4 87, € = e2 82 ac
  const plain = new Uint8Array([0, ...new TextEncoder().encode("zofia"), 0, ...password]);
  const r = decodeSaslPlain(encodeBase64(plain));
  assert.ok(r.ok);
  assert.deepEqual(toBytes(r.value.password), password);
});

test("escapeForLog passes printable ASCII through and writes every other byte, quote and backslash as \\xNN", () => {
  const plain = "MAIL FROM:<alice@example.com> SIZE=10 ~!#$%&'()*+,-./:;<=>?@[]^_`{|}";
  assert.equal(escapeForLog(plain), plain);
  assert.equal(escapeForLog(""), "");
  assert.equal(escapeForLog('a"b\\c'), "a\\x22b\\x5cc");
  assert.equal(escapeForLog("x\r\n\x00\x1f\x7f\x80\xe9\xff"), "x\\x0d\\x0a\\x00\\x1f\\x7f\\x80\\xe9\\xff");
  for (let c = 0; c < 256; c++) {
    const ch = String.fromCharCode(c);
    const want = c < 0x20 || c >= 0x7f || ch === '"' || ch === "\\" ? `\\x${c.toString(16).padStart(2, "0")}` : ch;
    assert.equal(escapeForLog(`<${ch}>`), `<${want}>`, `byte ${c}`);
  }
});
