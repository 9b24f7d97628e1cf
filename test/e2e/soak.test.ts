import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runSoak } from '../../bench/soak/soak.js';

/*
 * The soak run of `npm run soak` (bench/soak/), short: 80 s with 5 LL-HLS viewers, 2 WHEP viewers, 20 chat clients,
 * one publisher reconnect, one ad break and one upload, sampled every 15 s. It checks what the long run checks at its
 * end — everything still works — and that the sampler reads every figure. Growth is printed, not asserted: in 80 s
 * the heap, the JIT and the pools are still warming up, so a few per cent say nothing about a leak (the 10-minute run
 * judges growth after its second minute; its figures are in BENCHMARKS.md).
 */

test('a short soak: after a reconnect, an ad break and an upload under load, every kind of client is still served', { timeout: 170_000 }, async (t) => {
  const lines: string[] = [];
  const result = await runSoak({
    durationMs: 80_000,
    sampleEveryMs: 15_000,
    growthFromMs: 30_000,
    growthGoalPercent: undefined,
    hlsViewers: 5,
    whepViewers: 2,
    chatClients: 20,
    commentEveryMs: 10_000,
    reconnect: { firstMs: 40_000, everyMs: 120_000 },
    adBreak: { firstMs: 20_000, everyMs: 60_000, durationSec: 6 },
    uploads: { count: 1, firstMs: 10_000 },
    source: { width: 640, height: 360, fps: 30 },
    ladder: '360,240',
    webrtcLayers: '240',
  }, (line) => lines.push(line), new AbortController().signal);
  const account = [...lines, ...result.checks.map((c) => `${c.ok ? 'ok' : 'FAILED'} ${c.name}: ${c.detail}`),
    ...result.growth.map((g) => `${g.figure}: ${g.percent.toFixed(1)} %`), `node warnings: ${result.log.firstWarnings.join(' | ')}`].join('\n');
  // The account in the test's output, pass or fail: what the short run saw.
  for (const line of account.split('\n')) t.diagnostic(line);
  for (const c of result.checks) assert.ok(c.ok, `${c.name}: ${c.detail}\n${account}`);
  assert.ok(result.samples.length >= 5, account);
  for (const s of result.samples) {
    assert.ok(s.rssBytes > 10 * 1024 * 1024 && s.heapUsedBytes > 1024 * 1024 && s.fds > 10 && s.handles > 0, `a sample with implausible figures\n${account}`);
    assert.ok(s.rssMedianBytes > 10 * 1024 * 1024 && s.heapFloorBytes > 0 && s.heapFloorBytes <= s.heapUsedBytes, `a median or floor out of place\n${account}`);
    assert.equal(s.children.redis, 1, `the embedded redis-server runs under the node\n${account}`);
    assert.ok(s.children.mediasoup >= 2, `the ingest and viewer mediasoup workers\n${account}`);
  }
  assert.equal(result.growth.length, 4, account);
  assert.ok(result.growth.every((g) => Number.isFinite(g.percent) && g.ok === undefined), account);
});
