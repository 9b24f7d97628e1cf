import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import type { OnAirNode } from '../../server/node.js';
import { countStalls, launchChromium, plays } from '../support/browser.js';
import { api, metric, publish, startTestNode, waitFor } from '../support/harness.js';

/** A series' value in /metrics (0 when absent). */
describe('playback-quality reports from the players (POST /api/qoe, issue #19)', { timeout: 180_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let publisher: ReturnType<typeof publish>;
  let streamId: string;
  let streamKey: string;
  let page: Page;

  const post = (body: string, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(`${node.httpUrl}/api/qoe`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: 'off', ONAIR_RECONNECT_GRACE_SEC: '30', ONAIR_RATE_QOE_PER_MIN: '30' }));
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Reported' } });
    streamId = created.body.id;
    streamKey = created.body.streamKey;
    publisher = publish(`${node.rtmpUrl}/${streamKey}`, { width: 426, height: 240 });
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);
    chromium = await launchChromium();
  });

  after(async () => {
    publisher?.stop();
    await chromium?.close();
    await close?.();
  });

  test('a player that stalls reports it: the stall shows in /metrics and in the stream\'s figures for the studio', async () => {
    page = await chromium.browser.newPage();
    await page.goto(`${node.httpUrl}/watch/${streamId}`);
    await plays(page, 'the watch page');
    await page.evaluate(countStalls);
    await waitFor('the first report (time to first frame)', async () => (await metric(node, 'onair_qoe_startup_seconds_count{protocol="llhls"}')) >= 1, 15_000, 500);
    // Stalls the page saw so far, as of its second report (joining 0.6 s behind the live edge, a player can stall
    // once as it starts).
    await waitFor('the second report', async () => (await metric(node, 'onair_qoe_reports_total{protocol="llhls"}')) >= 2, 15_000, 250);
    const stallsBefore = await metric(node, 'onair_qoe_stalls_total{protocol="llhls"}');
    const stalledBefore = await metric(node, 'onair_qoe_stall_seconds_total{protocol="llhls"}');

    // The publisher drops (within the grace): the playlist stops growing and the player runs dry; it comes back.
    const pageStalls = await page.evaluate(countStalls);
    publisher.stop();
    await publisher.exited;
    await waitFor('the player to stall', async () => (await page.evaluate(countStalls)) > pageStalls, 20_000, 200);
    publisher = publish(`${node.rtmpUrl}/${streamKey}`, { width: 426, height: 240 });
    await waitFor('the stall reported', async () => (await metric(node, 'onair_qoe_stalls_total{protocol="llhls"}')) > stallsBefore, 30_000, 500);
    // A stall still going on is reported as far as it went; the next report carries the rest.
    await waitFor('its length reported (the publisher was away for seconds)',
      async () => (await metric(node, 'onair_qoe_stall_seconds_total{protocol="llhls"}')) > stalledBefore + 0.5, 25_000, 500);
    assert.ok(await metric(node, 'onair_qoe_played_seconds_total{protocol="llhls"}') > 1);

    const summary = await api(node, 'GET', `/api/qoe/${streamId}`);
    assert.equal(summary.status, 200);
    assert.ok(summary.body.stalls >= 1, JSON.stringify(summary.body));
    assert.ok(summary.body.rebufferRatio > 0 && summary.body.rebufferRatio < 1, JSON.stringify(summary.body));
    assert.ok(summary.body.startupP50Ms > 0 && summary.body.startupP50Ms < 30_000, JSON.stringify(summary.body));
    assert.equal(summary.body.errorRate, 0);
    assert.ok(summary.body.latencyP50Ms > 0, 'the live latency the player estimated');
    assert.equal((await fetch(`${node.httpUrl}/api/qoe/${streamId}`)).status, 401, 'the figures are the admin\'s');
    await page.close();
  });

  test('bad reports get a clear, coded error and make nothing', async () => {
    const refused = async (body: string, status: number, code: string, headers: Record<string, string> = {}): Promise<void> => {
      const response = await post(body, headers);
      assert.equal(response.status, status, body.slice(0, 80));
      assert.equal(((await response.json()) as { error: { code: string } }).error.code, code, body.slice(0, 80));
    };
    await refused('{"id":', 400, 'ONAIR_ERR_BAD_JSON');
    await refused(JSON.stringify({ id: streamId, protocol: 'llhls', ip: '1.2.3.4' }), 400, 'ONAIR_ERR_VALIDATION');
    await refused(JSON.stringify({ id: streamId, protocol: 'rtmp' }), 400, 'ONAIR_ERR_VALIDATION');
    await refused(JSON.stringify({ id: streamId, protocol: 'llhls', stallMs: -5 }), 400, 'ONAIR_ERR_VALIDATION');
    await refused(JSON.stringify({ id: '../../etc/passwd', protocol: 'llhls' }), 400, 'ONAIR_ERR_VALIDATION');
    await refused(JSON.stringify({ id: 'zzzzzzzzzzzz', protocol: 'llhls', stalls: 1 }), 404, 'ONAIR_ERR_NOT_FOUND');
    await refused(JSON.stringify({ id: streamId, protocol: 'llhls', pad: 'x'.repeat(2048) }), 413, 'ONAIR_ERR_PAYLOAD_TOO_LARGE');
    const figures = await api(node, 'GET', '/api/qoe/zzzzzzzzzzzz');
    assert.equal(figures.body.reports, 0, 'nothing kept for an id that is no stream or video');
  });

  test('an address that floods reports is slowed down (429 with Retry-After)', async () => {
    let limited: Response | undefined;
    for (let i = 0; i < 40 && !limited; i += 1) {
      const response = await post(JSON.stringify({ id: streamId, protocol: 'llhls', playedMs: 10 }));
      if (response.status === 429) limited = response;
      else assert.equal(response.status, 204);
    }
    assert.ok(limited, 'refused within 40 reports (ONAIR_RATE_QOE_PER_MIN=30)');
    assert.ok(Number(limited.headers.get('retry-after')) > 0);
    assert.equal(((await limited.json()) as { error: { code: string } }).error.code, 'ONAIR_ERR_RATE_LIMITED');
  });
});
