import { randomBytes } from 'node:crypto';

const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/**
 * A random id over [a-z0-9] (stream ids, event ids, comment ids). Bytes at or above 252 (= 7 × 36) are dropped so that
 * every character is equally likely.
 */
export function randomId(length: number): string {
  let id = '';
  while (id.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte >= 252) continue;
      id += ID_ALPHABET[byte % 36];
      if (id.length === length) break;
    }
  }
  return id;
}
