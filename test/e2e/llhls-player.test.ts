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

  test('frames decode from the first one without a stall, the player reaches its target and holds it for 20 s', async (t) => {
    const playlist = await (await fetch(`${node.httpUrl}/live/${streamId}/360p/index.m3u8`)).text();
    const holdBack = Number(/PART-HOLD-BACK=([\d.]+)/.exec(playlist)?.[1]);
    assert.ok(holdBack > 0, 'the playlist has a PART-HOLD-BACK');
    // Join just after a segment boundary, the join most likely to start in the previous segment: the player's start
    // position (PART-HOLD-BACK behind the edge, a page load later) then lies in that segment's last parts, which cannot
    // be decoded alone (only a segment's first part is INDEPENDENT). Not certain (page load and playlist take 2–3
    // parts on 2 cores): the old player failed here 1 run in 5, and every run at a 0.8 s hold-back.
    // It loads that segment from its start, and it used to jump ahead to its start position before the parts up to it
    // had loaded: its first frames froze and hls.js held back a second more for good (3 of 15 CI runs joined there by
    // chance).
    await waitFor('the live edge just past a segment boundary', async () => {
      const text = await (await fetch(`${node.httpUrl}/live/${streamId}/360p/index.m3u8`)).text();
      const open = text.slice(text.lastIndexOf('#EXTINF'));
      return (open.match(/#EXT-X-PART:/g) ?? []).length <= 1;
    }, 10_000, 20);
    await page.goto(`${node.httpUrl}/watch/${streamId}`);
    // Stalls count from here: the join too.
    const first = await sample(page);
    await waitFor('playback to start', async () => (await sample(page)).currentTime > 1, 30_000);
    // The player joins up to a segment behind (it starts where a part can be decoded from) and catches up at up to
    // 1.25x (web/common.js liveCatchUp): it must reach its target within 20 s.
    const joining: string[] = [];
    await waitFor(`hls.js to reach its target (${holdBack} s + 0.25 s)`, async () => {
      const s = await sample(page);
      joining.push(`${s.latency.toFixed(2)}@${s.currentTime.toFixed(1)}/${s.stalls}`);
      return s.latency > 0 && s.latency <= holdBack + 0.25;
    }, 20_000, 250).catch(async (error: Error) => {
      // What the join did (a stall makes hls.js hold back a second more for good): for whoever reads a failure.
      const { stallLog } = await sample(page);
      throw new Error(`${error.message}: hls.latency@currentTime/stalls every 250 ms: ${joining.join(' ')}; stalls: ${stallLog.join('; ')}`);
    });
    const start = await sample(page);
    const latencies: number[] = [];
    const stallsAt: number[] = [];
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const s = await sample(page);
      latencies.push(s.latency);
      stallsAt.push(s.stalls - first.stalls);
      assert.ok(s.brightness > 20, `the picture is not black (mean ${s.brightness.toFixed(1)})`);
      await page.waitForTimeout(1000);
    }
    const end = await sample(page);
    assert.ok(end.currentTime - start.currentTime > 18, `played ${(end.currentTime - start.currentTime).toFixed(1)} s in 20 s`);
    t.diagnostic(`hls.latency each second: ${latencies.map((l) => l.toFixed(2)).join(', ')}; stalls so far: ${stallsAt.join(', ')}`);
    const stalled = end.stallLog.slice(first.stallLog.length);
    assert.equal(end.stalls - first.stalls, 0, `no stalls from the join on (${stalled.join('; ')})`);
    const worst = Math.max(...latencies);
    assert.ok(worst < 3, `hls.latency peaked at ${worst.toFixed(2)} s (${latencies.map((l) => l.toFixed(2)).join(', ')})`);
    // The player keeps to its target, PART-HOLD-BACK (0.6 s: 3 parts of 200 ms), after joining behind it. hls.js's own
    // catch-up only runs with more than a second buffered, so it sat ~0.5 s behind for good (1.15–1.3 s measured with
    // hold-backs of 0.6 and 1 s, 2026-12-03); the watch page's liveCatchUp (web/common.js) closes the gap.
    const median = [...latencies].sort((a, b) => a - b)[Math.floor(latencies.length / 2)]!;
    assert.ok(median <= holdBack + 0.25, `hls.latency median ${median.toFixed(2)} s: the player keeps within 0.25 s of its target (${holdBack} s)`);
    assert.match(end.latencyText, /^\d+\.\d\d s$/, 'the page shows the latency');
  });

  test('a viewer joining as a stream starts loads each part once and plays without a stall', async () => {
    // The first join a waiting audience makes: the stream's first segment complete, the second open. hls.js (1.7) lost
    // track of a segment numbered 0 as its parts were appended (`appendedPart.fragment.sn || -1`), so it loaded that
    // segment's parts again and again, 10 parts every ~30 ms, until the next segment was complete: ~600 requests per
    // viewer, and a stall when the playhead got there first (e2e runs: 1 join in 6).
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Starting now' } });
    const id: string = created.body.id;
    const starting = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 640, height: 360 });
    const viewer = await chromium.browser.newPage();
    try {
      await waitFor('the new stream to have its first part', () => node.packager(id)?.ready, 30_000, 20);
      await waitFor('its first segment to be complete', async () => {
        const text = await (await fetch(`${node.httpUrl}/live/${id}/360p/index.m3u8`)).text();
        return text.includes('#EXTINF');
      }, 10_000, 20);
      const parts = new Map<string, number>();
      viewer.on('request', (r) => {
        const part = /\/live\/[^/]+\/(\w+\/[^/?]+-p\d+\.m4s)/.exec(r.url())?.[1];
        if (part) parts.set(part, (parts.get(part) ?? 0) + 1);
      });
      await viewer.goto(`${node.httpUrl}/watch/${id}`);
      const first = await sample(viewer);
      await waitFor('playback to pass the first segment', async () => (await sample(viewer)).currentTime > 3, 30_000, 250);
      const end = await sample(viewer);
      const again = [...parts].filter(([, n]) => n > 1);
      assert.ok(parts.size >= 10, `hls.js loaded the stream's parts (${parts.size})`);
      assert.deepEqual(again.map(([part, n]) => `${part} x${n}`), [], 'no part loaded twice');
      assert.equal(end.stalls - first.stalls, 0, `no stall (${end.stallLog.join('; ')})`);
    } finally {
      await viewer.close();
      starting.stop();
      await starting.exited;
    }
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
