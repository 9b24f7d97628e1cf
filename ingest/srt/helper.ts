import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The SRT listener's source (C on libsrt); `npm run setup` (scripts/srt-helper.mjs) compiles it once per machine. */
export const SRT_HELPER_SOURCE: string = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..', 'ingest', 'srt', 'onair-srt.c');

/**
 * Where scripts/srt-helper.mjs caches the compiled helper: `$ONAIR_CACHE_DIR` or `~/.cache/onair`, then
 * `onair-srt-<first 12 hex digits of the source's SHA-256>` (a changed source means a new build).
 */
export function srtHelperPath(): string {
  const cache = process.env['ONAIR_CACHE_DIR'] || path.join(os.homedir(), '.cache', 'onair');
  const hash = createHash('sha256').update(readFileSync(SRT_HELPER_SOURCE)).digest('hex').slice(0, 12);
  return path.join(cache, `onair-srt-${hash}`);
}
