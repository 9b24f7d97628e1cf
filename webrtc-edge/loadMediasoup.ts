import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/** The pinned mediasoup version (see docs/operations.md, *Deploying*: the last line that builds against Debian bookworm's libraries). */
export const MEDIASOUP_VERSION: string = (require('mediasoup/package.json') as { version: string }).version;

/** Our worker patch (see README.md): its hash is part of the cache key, so a changed patch means a new build. */
export const WORKER_PATCH: string = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..', 'patches',
  `mediasoup-${MEDIASOUP_VERSION}.patch`);

/**
 * Where `scripts/mediasoup-worker.mjs` caches the worker it builds: `$ONAIR_CACHE_DIR` or `~/.cache/onair`, then
 * `mediasoup-worker-<version>-<first 12 hex digits of the patch's SHA-256>` (the same path as its workerBinPath()).
 */
export function cachedWorkerBin(): string {
  const cache = process.env['ONAIR_CACHE_DIR'] || path.join(os.homedir(), '.cache', 'onair');
  const patch = createHash('sha256').update(readFileSync(WORKER_PATCH)).digest('hex').slice(0, 12);
  return path.join(cache, `mediasoup-worker-${MEDIASOUP_VERSION}-${patch}`, 'mediasoup-worker');
}

type Mediasoup = typeof import('mediasoup');
let loaded: Promise<Mediasoup> | undefined;

/**
 * Imports mediasoup with `MEDIASOUP_WORKER_BIN` pointing at the cached worker (mediasoup reads it once, at import).
 * An operator's own `MEDIASOUP_WORKER_BIN` wins.
 */
export function loadMediasoup(): Promise<Mediasoup> {
  if (!process.env['MEDIASOUP_WORKER_BIN']) {
    const bin = cachedWorkerBin();
    if (!existsSync(bin)) {
      return Promise.reject(new Error(`mediasoup worker not found at ${bin}: run \`npm run setup\` (it builds it once)`));
    }
    process.env['MEDIASOUP_WORKER_BIN'] = bin;
  }
  loaded ??= import('mediasoup');
  return loaded;
}
