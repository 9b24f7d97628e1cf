// Builds OnAir's SRT listener (ingest/srt/onair-srt.c) against Debian's libsrt once per machine and caches it beside
// the mediasoup worker. ingest/srt/helper.ts computes the same path; test/srtHelper.test.ts checks they agree.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
export const SRT_SOURCE = path.join(ROOT, 'ingest', 'srt', 'onair-srt.c');
/** What compiling it needs from Debian (libsrt-gnutls is the flavour Debian's ffmpeg links). */
export const SRT_BUILD_PACKAGES = ['libsrt-gnutls-dev', 'gcc', 'libc6-dev'];

export function srtHelperPath() {
  const cache = process.env.ONAIR_CACHE_DIR || path.join(os.homedir(), '.cache', 'onair');
  const hash = createHash('sha256').update(readFileSync(SRT_SOURCE)).digest('hex').slice(0, 12);
  return path.join(cache, `onair-srt-${hash}`);
}

export function ensureSrtHelper(say) {
  const target = srtHelperPath();
  if (existsSync(target)) return target;
  say('compiling the SRT listener (ingest/srt/onair-srt.c)');
  mkdirSync(path.dirname(target), { recursive: true });
  const partial = `${target}.partial-${process.pid}`;
  const result = spawnSync('gcc', ['-O2', '-Wall', '-o', partial, SRT_SOURCE, '-lsrt-gnutls', '-lpthread'], { stdio: 'inherit' });
  if (result.status !== 0) throw new Error(`compiling ${SRT_SOURCE} failed (gcc exit ${result.status}); Debian packages: ${SRT_BUILD_PACKAGES.join(' ')}`);
  renameSync(partial, target);
  return target;
}
