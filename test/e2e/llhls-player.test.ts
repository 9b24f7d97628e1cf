import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import type { OnAirNode } from '../../server/node.js';
import { launchChromium, sampleVideo } from '../support/browser.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';

const sample = (page: Page) => sampleVideo(page);

describe('hls.js in headless Chromium plays /watch/:id in low-latency mode', { timeout: 170_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let page: Page;
  let publisher: ReturnType<typeof publish>;
  let streamId: string;
  let streamKey: string;

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '360,240', ONAIR_RECONNECT_GRACE_SEC: '20' }));
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Player test' } });
    streamId = created.body.id;
    streamKey = created.body.streamKey;
    publisher = publish(`${node.rtmpUrl}/${streamKey}`, { width: 640, height: 360 });
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);
    chromium = await launchChromium();
    page = await chromium.browser.newPage();
  });

  after(async () => {
    publisher?.stop();
    await chromium?.close();
    await close();
  });

  test('frames decode, latency stays under 3 s and nothing stalls over 20 s of play', async (t) => {
    await page.goto(`${node.httpUrl}/watch/${streamId}`);
    await waitFor('playback to start', async () => (await sample(page)).currentTime > 1, 30_000);
    // hls.js may start a few parts behind and catch up within its first second or two (one CI run in about ten read
    // 4.4 s on the first sample, then 2.1 s); what a viewer keeps is the latency after that, so the bound below holds
    // from the moment it first settles, and settling itself must happen quickly.
    await waitFor('hls.js to settle under 3 s', async () => {
      const { latency } = await sample(page);
      return latency > 0 && latency < 3;
    }, 10_000, 250);
    const start = await sample(page);
    const latencies: number[] = [];
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const s = await sample(page);
      latencies.push(s.latency);
      assert.ok(s.brightness > 20, `the picture is not black (mean ${s.brightness.toFixed(1)})`);
      await page.waitForTimeout(1000);
    }
    const end = await sample(page);
    assert.ok(end.currentTime - start.currentTime > 18, `played ${(end.currentTime - start.currentTime).toFixed(1)} s in 20 s`);
    assert.equal(end.stalls - start.stalls, 0, 'no stalls');
    const worst = Math.max(...latencies);
    t.diagnostic(`hls.latency each second: ${latencies.map((l) => l.toFixed(2)).join(', ')}`);
    // hls.js settles one part early or late at start: 2.4 s or 2.6–2.7 s on this 2-core machine, the code of
    // 2026-11 included (measured 2026-12-02), so 2.5 s failed one run in two. Issue #18 is about getting it lower; this
    // bound is about LL-HLS staying low latency at all (plain HLS with 2 s segments sits at 6 s and more).
    assert.ok(worst < 3, `hls.latency peaked at ${worst.toFixed(2)} s (${latencies.map((l) => l.toFixed(2)).join(', ')})`);
    // The player keeps to its target, PART-HOLD-BACK (0.6 s: 3 parts of 200 ms), after joining behind it. hls.js's own
    // catch-up only runs with more than a second buffered, so it sat ~0.5 s behind for good (1.15–1.3 s measured with
    // hold-backs of 0.6 and 1 s, 2026-12-03); the watch page's liveCatchUp (web/common.js) closes the gap.
    const playlist = await (await fetch(`${node.httpUrl}/live/${streamId}/360p/index.m3u8`)).text();
    const holdBack = Number(/PART-HOLD-BACK=([\d.]+)/.exec(playlist)?.[1]);
    assert.ok(holdBack > 0, 'the playlist has a PART-HOLD-BACK');
    const median = [...latencies].sort((a, b) => a - b)[Math.floor(latencies.length / 2)]!;
    assert.ok(median <= holdBack + 0.25, `hls.latency median ${median.toFixed(2)} s: the player keeps within 0.25 s of its target (${holdBack} s)`);
    assert.match(end.latencyText, /^\d+\.\d\d s$/, 'the page shows the latency');
  });

  test('an ffmpeg restart keeps hls.js playing across the discontinuity', async () => {
    const transcoder = node.transcoder(streamId)!;
    const before = await sample(page);
    const restarted = transcoder.next('discontinuity', 10_000);
    process.kill(transcoder.pid!, 'SIGKILL');
    await restarted;
    await waitFor('playback to move 6 s past the restart', async () => (await sample(page)).currentTime > before.currentTime + 6, 30_000, 250);
    const after = await sample(page);
    assert.ok(after.brightness > 20);
  });

  test('a publisher reconnect keeps hls.js playing across the discontinuity', async () => {
    const transcoder = node.transcoder(streamId)!;
    const before = await sample(page);
    publisher.stop();
    await publisher.exited;
    const reconnected = transcoder.next('discontinuity', 20_000, (d) => d.reason === 'reconnect');
    publisher = publish(`${node.rtmpUrl}/${streamKey}`, { width: 640, height: 360 });
    await reconnected;
    await waitFor('playback to move 6 s past the reconnect', async () => (await sample(page)).currentTime > before.currentTime + 6, 40_000, 250);
    assert.ok((await sample(page)).brightness > 20);
  });
});
