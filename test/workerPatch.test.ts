import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { cachedWorkerBin, MEDIASOUP_VERSION, WORKER_PATCH } from '../webrtc-edge/loadMediasoup.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

interface WorkerScript {
  workerBinPath(): string;
  WORKER_PATCH: string;
  MEDIASOUP_VERSION: string;
}
const script = await import(pathToFileURL(path.join(root, 'scripts', 'mediasoup-worker.mjs')).href) as WorkerScript;

test('setup and the edge agree on where the patched worker is cached, keyed by the patch', () => {
  assert.equal(script.MEDIASOUP_VERSION, MEDIASOUP_VERSION);
  assert.equal(script.WORKER_PATCH, WORKER_PATCH);
  const hash = createHash('sha256').update(readFileSync(WORKER_PATCH)).digest('hex').slice(0, 12);
  for (const cache of [undefined, '/tmp/onair-cache-test']) {
    const saved = process.env['ONAIR_CACHE_DIR'];
    if (cache === undefined) delete process.env['ONAIR_CACHE_DIR'];
    else process.env['ONAIR_CACHE_DIR'] = cache;
    try {
      assert.equal(script.workerBinPath(), cachedWorkerBin());
      assert.match(cachedWorkerBin(), new RegExp(`mediasoup-worker-${MEDIASOUP_VERSION.replace(/\./g, '\\.')}-${hash}/mediasoup-worker$`));
    } finally {
      if (saved === undefined) delete process.env['ONAIR_CACHE_DIR'];
      else process.env['ONAIR_CACHE_DIR'] = saved;
    }
  }
});

test('the worker patch applies cleanly to the installed mediasoup worker sources', { skip: spawnSync('patch', ['--version']).status !== 0 && 'no `patch` here' }, () => {
  const worker = path.join(root, 'node_modules', 'mediasoup', 'worker');
  const run = spawnSync('patch', ['-p1', '--forward', '--batch', '--dry-run', '-d', worker, '-i', WORKER_PATCH], { encoding: 'utf8' });
  assert.equal(run.status, 0, `${run.stdout}${run.stderr}`);
  assert.doesNotMatch(run.stdout, /offset|fuzz|FAILED/i, run.stdout);
});
