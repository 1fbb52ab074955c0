// MD5 and HMAC-MD5 (RFC 1321, RFC 2104) for CRAM-MD5 and APOP in the built-in auth service, and
// for its verified-credentials cache (one HMAC per login). Web Crypto has no MD5, and the core
// stays free of runtime modules. All arithmetic is on int32 values, which JITs keep in registers
// (a uint32 above 2^31 would be a double): ~2 µs per HMAC on Bun instead of ~13.

const S = Uint8Array.of(7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21); // per round, per i % 4
const K = Int32Array.from({ length: 64 }, (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32) | 0);
/** The message word each step reads. */
const G = Uint8Array.from({ length: 64 }, (_, i) => i < 16 ? i : i < 32 ? (5 * i + 1) % 16 : i < 48 ? (3 * i + 5) % 16 : (7 * i) % 16);

/** MD5 state: four int32 words, updated in place by each 64-byte block. */
function compress(h: Int32Array, m: Int32Array): void {
  let a = h[0], b = h[1], c = h[2], d = h[3];
  for (let i = 0; i < 64; i++) {
    let f: number;
    if (i < 16) f = (b & c) | (~b & d);
    else if (i < 32) f = (d & b) | (~d & c);
    else if (i < 48) f = b ^ c ^ d;
    else f = c ^ (b | ~d);
    const s = S[((i >> 4) << 2) | (i & 3)];
    const x = (a + f + K[i] + m[G[i]]) | 0;
    a = d;
    d = c;
    c = b;
    b = (b + ((x << s) | (x >>> (32 - s)))) | 0;
  }
  h[0] = (h[0] + a) | 0;
  h[1] = (h[1] + b) | 0;
  h[2] = (h[2] + c) | 0;
  h[3] = (h[3] + d) | 0;
}

/** MD5 of `parts` one after the other (HMAC hashes a pad block and then the data). */
function md5Of(parts: readonly Uint8Array[]): Uint8Array {
  const h = Int32Array.of(0x67452301, 0xefcdab89 | 0, 0x98badcfe | 0, 0x10325476);
  const m = new Int32Array(16);
  const block = new Uint8Array(64);
  let fill = 0;
  let total = 0;
  const put = (byte: number) => {
    block[fill++] = byte;
    if (fill === 64) {
      for (let i = 0; i < 16; i++) m[i] = block[i * 4] | (block[i * 4 + 1] << 8) | (block[i * 4 + 2] << 16) | (block[i * 4 + 3] << 24);
      compress(h, m);
      fill = 0;
    }
  };
  for (const p of parts) {
    for (let i = 0; i < p.length; i++) put(p[i]);
    total += p.length;
  }
  const bitLen = total * 8;
  put(0x80);
  while (fill !== 56) put(0);
  const lo = bitLen >>> 0, hi = Math.floor(bitLen / 2 ** 32);
  for (let i = 0; i < 4; i++) put((lo >>> (8 * i)) & 0xff);
  for (let i = 0; i < 4; i++) put((hi >>> (8 * i)) & 0xff);
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = (h[i >> 2] >>> (8 * (i & 3))) & 0xff;
  return out;
}

export function md5(data: Uint8Array): Uint8Array {
  return md5Of([data]);
}

export function hmacMd5(key: Uint8Array, data: Uint8Array): Uint8Array {
  const k = key.length > 64 ? md5(key) : key;
  const ipad = new Uint8Array(64).fill(0x36);
  const opad = new Uint8Array(64).fill(0x5c);
  for (let i = 0; i < k.length; i++) {
    ipad[i] ^= k[i];
    opad[i] ^= k[i];
  }
  return md5Of([opad, md5Of([ipad, data])]);
}
