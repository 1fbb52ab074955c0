// Password hashes for the built-in auth service: "scrypt$N$r$p$saltB64$hashB64".

import { decodeBase64, encodeBase64, equalBytes, utf8 } from "../util/bytes.ts";

export type Scrypt = (password: Uint8Array, salt: Uint8Array, keyLen: number, cost: { N: number; r: number; p: number }) => Promise<Uint8Array>;

export const SCRYPT_COST = { N: 16384, r: 8, p: 1 }; // OWASP's minimum for scrypt; ~40 ms per check here
const KEY_BYTES = 32;

export async function hashPassword(password: string, salt: Uint8Array, scrypt: Scrypt): Promise<string> {
  const key = await scrypt(utf8(password), salt, KEY_BYTES, SCRYPT_COST);
  return `scrypt$${SCRYPT_COST.N}$${SCRYPT_COST.r}$${SCRYPT_COST.p}$${encodeBase64(salt)}$${encodeBase64(key)}`;
}

export interface ParsedHash {
  readonly N: number;
  readonly r: number;
  readonly p: number;
  readonly salt: Uint8Array;
  readonly key: Uint8Array;
}

export function parsePasswordHash(text: string): ParsedHash | null {
  const m = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(text);
  if (!m) return null;
  const salt = decodeBase64(m[4]);
  const key = decodeBase64(m[5]);
  if (!salt || !key || key.length < 16) return null;
  return { N: Number(m[1]), r: Number(m[2]), p: Number(m[3]), salt, key };
}

/** `password` is the latin1 form of the bytes the client sent; it is hashed as those bytes. */
export async function verifyPassword(password: Uint8Array, hash: ParsedHash, scrypt: Scrypt): Promise<boolean> {
  const key = await scrypt(password, hash.salt, hash.key.length, { N: hash.N, r: hash.r, p: hash.p });
  return equalBytes(key, hash.key);
}
