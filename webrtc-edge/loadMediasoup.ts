import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

const require = createRequire(import.meta.url);

/** The pinned mediasoup version (see docs/operations.md, *Deploying*: the last line that builds against Debian bookworm's libraries). */
export const MEDIASOUP_VERSION: string = (require('mediasoup/package.json') as { version: string }).version;

/** Where `scripts/mediasoup-worker.mjs` caches the worker it builds: `$ONAIR_CACHE_DIR` or `~/.cache/onair`. */
export function cachedWorkerBin(): string {
  const cache = process.env['ONAIR_CACHE_DIR'] || path.join(os.homedir(), '.cache', 'onair');
  return path.join(cache, `mediasoup-worker-${MEDIASOUP_VERSION}`, 'mediasoup-worker');
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
