import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../server/redis.js';
import { loadConfig } from '../../server/config.js';
import { startWorker } from '../../server/worker.js';
import { createLogger } from '../../lib/log.js';
import { launchChromium, sampleVideo } from '../support/browser.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { startS3Server, type S3TestServer } from '../support/s3server.js';

/**
 * A publisher that moves to another origin within the reconnect grace continues the same event (issue #17): two
 * origins and one edge on one real redis-server, PostgreSQL and S3 (Swift). Publish to A, the publisher drops, the
 * same key publishes to B: the same event goes on, its playlists continue A's numbering after a discontinuity, the
 * edge follows without its viewers' numbering going back, and hls.js keeps playing. A lets go without ending the
 * event and hands its piece of the recording to storage; when B's publisher stops for good, the edge's viewers get
 * the final playlist (ENDLIST).
 */

const GRACE_SEC = 6;
const COMMON = {
  ONAIR_ADMIN_TOKEN: 'scale-move-admin-token-0123456789',
  ONAIR_WEBRTC_LAYERS: 'off',
  ONAIR_LADDER: '240',
  ONAIR_RECONNECT_GRACE_SEC: String(GRACE_SEC),
};

interface Sample { at: number; status: number; msn: number; lastMsn: number; dsn: number; endlist: boolean; prefix: string | undefined }

/** What a viewer's player reads from one media playlist. */
function read(status: number, text: string): Sample {
  const msn = Number(/#EXT-X-MEDIA-SEQUENCE:(\d+)/.exec(text)?.[1] ?? -1);
  const segments = text.split('\n').filter((line) => line.startsWith('#EXTINF:')).length;
  return {
    at: Date.now(),
    status,
    msn,
    lastMsn: msn + segments - 1,
    dsn: Number(/#EXT-X-DISCONTINUITY-SEQUENCE:(\d+)/.exec(text)?.[1] ?? 0),
    endlist: text.includes('#EXT-X-ENDLIST'),
    prefix: /URI="([a-z0-9]+)-p/.exec(text)?.[1],
  };
}

async function playlist(url: string): Promise<Sample> {
  const response = await fetch(url, { signal: AbortSignal.timeout(10_000) }).catch(() => undefined);
  if (!response) return read(0, '');
  return read(response.status, await response.text());
}

describe('a publisher that moves to another origin continues the same event; the edge follows and serves the end', { timeout: 300_000 }, () => {
  let postgres: TestPostgres;
  let s3: S3TestServer;
  let redis: EmbeddedRedis;
  let redisDir: string;
  let originA: Awaited<ReturnType<typeof startTestNode>>;
  let originB: Awaited<ReturnType<typeof startTestNode>>;
  let edge: Awaited<ReturnType<typeof startTestNode>>;
  let publisher: ReturnType<typeof publish> | undefined;
  let streamId: string;
  let streamKey: string;
  /** How long the publisher sent to each origin, ms. */
  const published = { a: 0, b: 0 };
  let publishedToBAt = 0;
  /** The edge viewer's playlists, polled every 250 ms from the first publish to the end. */
  const samples: Sample[] = [];
  let polling = true;
  let poller: Promise<void> | undefined;

  before(async () => {
    [postgres, s3] = await Promise.all([startPostgres(), startS3Server()]);
    redisDir = await mkdtemp(path.join(os.tmpdir(), 'onair-sm-'));
    redis = await startEmbeddedRedis({ dataDir: redisDir });
    const shared = { ...COMMON, ...s3.env, ONAIR_REDIS_URL: redis.url, ONAIR_DATABASE_URL: postgres.url };
    originA = await startTestNode({ ...shared, ONAIR_ROLE: 'origin' });
    originB = await startTestNode({ ...shared, ONAIR_ROLE: 'origin' });
    edge = await startTestNode({ ...shared, ONAIR_ROLE: 'edge' });
    const created = await api(originA.node, 'POST', '/api/streams', { body: { title: 'Moving publisher' } });
    assert.equal(created.status, 201);
    ({ id: streamId, streamKey } = created.body);
  });

  after(async () => {
    polling = false;
    await poller;
    publisher?.stop();
    const failures: unknown[] = [];
    for (const [name, node] of [['edge', edge], ['origin A', originA], ['origin B', originB]] as const) {
      await node?.close().catch((error: unknown) => failures.push(new Error(`${name}: ${(error as Error).message}`)));
    }
    await redis?.stop();
    await s3?.stop();
    await postgres?.stop();
    await rm(redisDir, { recursive: true, force: true });
    if (failures.length > 0) throw failures[0];
  });

  test('the event goes on at origin B with A\'s numbering continued; the edge and hls.js follow; A lets go and keeps its piece', { timeout: 200_000 }, async (t) => {
    const edgeUrl = `${edge.node.httpUrl}/live/${streamId}/240p/index.m3u8`;
    const urlA = `${originA.node.httpUrl}/live/${streamId}/240p/index.m3u8`;
    const urlB = `${originB.node.httpUrl}/live/${streamId}/240p/index.m3u8`;
    const publishedToAAt = Date.now();
    publisher = publish(`${originA.node.rtmpUrl}/${streamKey}`, { width: 426, height: 240, fps: 25 });
    await waitFor('the edge to serve the stream from A with 3 segments', async () => (await playlist(edgeUrl)).lastMsn >= 2, 40_000, 250);
    poller = (async () => {
      while (polling) {
        samples.push(await playlist(edgeUrl));
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    })();
    const viewA = await api(originA.node, 'GET', `/api/streams/${streamId}`);
    const eventId = viewA.body.stats.eventId as string;
    assert.ok(eventId);

    const chromium = await launchChromium();
    try {
      const page: Page = await chromium.browser.newPage();
      await page.goto(`${edge.node.httpUrl}/watch/${streamId}`);
      await waitFor('hls.js to play through the edge', async () => (await sampleVideo(page)).currentTime > 1, 40_000, 500);

      // The publisher drops and comes back on origin B within the grace.
      const lastA = await playlist(urlA);
      publisher.stop();
      await publisher.exited;
      const movedAt = Date.now();
      published.a = movedAt - publishedToAAt;
      publishedToBAt = movedAt;
      publisher = publish(`${originB.node.rtmpUrl}/${streamKey}`, { width: 426, height: 240, fps: 25 });
      const firstB = await waitFor('origin B to serve the stream', async () => {
        const s = await playlist(urlB);
        return s.status === 200 && s.lastMsn >= s.msn && s.msn >= 0 ? s : undefined;
      }, 40_000, 250);
      t.diagnostic(`A's last playlist: msn ${lastA.msn}..${lastA.lastMsn} dsn ${lastA.dsn}; B's first: msn ${firstB.msn}..${firstB.lastMsn} dsn ${firstB.dsn}`);
      assert.ok(firstB.msn > lastA.lastMsn, `B's first media sequence ${firstB.msn} continues after A's last ${lastA.lastMsn}`);
      assert.ok(firstB.dsn > lastA.dsn, `B's discontinuity sequence ${firstB.dsn} is past A's ${lastA.dsn}`);
      const viewB = await api(originB.node, 'GET', `/api/streams/${streamId}`);
      assert.equal(viewB.body.status, 'live');
      assert.equal(viewB.body.stats.eventId, eventId, 'the same event goes on at origin B');

      const followed = await waitFor('the edge to serve origin B\'s playlist', async () => {
        const s = await playlist(edgeUrl);
        return s.status === 200 && s.prefix === originB.node.packager(streamId)?.uriPrefix ? s : undefined;
      }, 30_000, 250);
      t.diagnostic(`the edge served origin B ${Date.now() - movedAt} ms after the publisher moved`);
      assert.ok(followed.msn > lastA.lastMsn);
      const start = await sampleVideo(page);
      await waitFor('hls.js to play 5 s of origin B through the edge', async () => (await sampleVideo(page)).currentTime > start.currentTime + 5, 40_000, 500);
      const played = await sampleVideo(page);
      assert.ok(played.brightness > 20, 'the picture is not black');
      assert.equal(played.mode, 'live', 'the watch page still plays the live event');
      t.diagnostic(`hls.js through the edge: ${played.stalls} stall(s) across the move, latency ${played.latency.toFixed(1)} s after it`);
    } finally {
      await chromium.close();
    }

    // A's grace runs out: it lets go (the event is not ended) and its piece of the recording reaches storage.
    await waitFor('origin A to let go of the event', () => originA.node.transcoder(streamId) === undefined, (GRACE_SEC + 20) * 1000, 250);
    const still = await api(originB.node, 'GET', `/api/streams/${streamId}`);
    assert.equal(still.body.status, 'live', 'A did not end the event');
    assert.equal(still.body.stats.eventId, eventId);
    assert.ok(!(await playlist(urlA)).endlist, 'A\'s playlist does not say the event ended');
    await waitFor('A\'s piece of the recording in storage', async () => (await originB.node.vod.storage.list(`sources/${eventId}`)).some((k) => /\/piece-/.test(k)), 20_000, 500);

    const good = samples.filter((s) => s.status === 200);
    for (let i = 1; i < good.length; i++) {
      assert.ok(good[i]!.msn >= good[i - 1]!.msn && good[i]!.lastMsn >= good[i - 1]!.lastMsn,
        `the edge's media sequence never goes back: ${JSON.stringify(good[i - 1])} then ${JSON.stringify(good[i])}`);
      assert.ok(good[i]!.dsn >= good[i - 1]!.dsn, 'nor does its discontinuity sequence');
    }
    assert.ok(good.some((s) => s.prefix === originB.node.packager(streamId)?.uriPrefix), 'the poller saw origin B\'s playlists');
    assert.ok(good.at(-1)!.dsn > good[0]!.dsn, 'the edge\'s discontinuity sequence advanced across the move');
    let longest = 0;
    for (let i = 1, since = good[0]!.at; i < good.length; i++) {
      if (good[i]!.lastMsn > good[i - 1]!.lastMsn) since = good[i]!.at;
      longest = Math.max(longest, good[i]!.at - since);
    }
    t.diagnostic(`edge viewer: ${good.length} playlists polled, longest time without a new segment ${longest} ms, ${samples.length - good.length} non-200 answers`);
  });

  test('when the event really ends, the edge\'s viewers get the final playlist (ENDLIST), then the stream is ended', { timeout: 60_000 }, async () => {
    const edgeUrl = `${edge.node.httpUrl}/live/${streamId}/240p/index.m3u8`;
    const eventId = (await api(originB.node, 'GET', `/api/streams/${streamId}`)).body.stats.eventId as string;
    const endedAt = Date.now();
    publisher?.stop();
    published.b = endedAt - publishedToBAt;
    await waitFor('the event to end', async () => (await api(originB.node, 'GET', `/api/streams/${streamId}`)).body.status === 'ended', (GRACE_SEC + 20) * 1000, 250);
    await waitFor('origin B to leave discovery', async () => (await edge.node.discovery.lookup(streamId, { fresh: true })) === undefined, 10_000, 100);
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // past the edge's 1 s lookup cache
    // A viewer that reloads now (after the end, the origin gone from discovery) gets the final playlist, not a 404.
    const final = await playlist(edgeUrl);
    assert.equal(final.status, 200, `the edge answered ${final.status} after the end`);
    assert.ok(final.endlist, 'the final playlist ends with #EXT-X-ENDLIST');
    assert.ok(Date.now() - endedAt < (GRACE_SEC + 20) * 1000);
    polling = false;
    await poller;
    const after = samples.filter((s) => s.at > endedAt && s.status !== 200);
    assert.deepEqual(after.map((s) => s.status), [], 'no error for a viewer between the last media and the end');
    // Both origins' pieces are in the event's sources: the archive job transcodes them back to back.
    const sources = await originB.node.vod.storage.list(`sources/${eventId}`);
    assert.ok(sources.some((k) => /\/piece-/.test(k)) && sources.some((k) => /\/source-\d+\.flv$/.test(k)), sources.join(' '));
  });

  test('a VOD worker archives the whole event: origin A\'s piece and origin B\'s, back to back', { timeout: 120_000 }, async (t) => {
    const replay = await waitFor('the instant replay', async () => {
      const video = await originB.node.vod.catalog.latestOfStream(streamId);
      return video?.version ? video : undefined;
    }, 20_000, 250);
    assert.equal(replay.kind, 'replay');
    const eventId = replay.id;
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'onair-sm-worker-'));
    const config = loadConfig({
      ...COMMON, ...s3.env, ONAIR_REDIS_URL: redis.url, ONAIR_DATABASE_URL: postgres.url, ONAIR_ROLE: 'worker', ONAIR_DATA_DIR: dataDir,
      ONAIR_VOD_CONCURRENCY: '1', ONAIR_VOD_LADDER: '240', ONAIR_VOD_X264_PRESET: 'ultrafast', ONAIR_VOD_SEGMENT_SEC: '2',
    });
    const worker = await startWorker(config, createLogger({ level: 'warn' }));
    try {
      const archived = await waitFor('the archive of the event', async () => {
        const video = await originB.node.vod.catalog.get(eventId);
        assert.notEqual(video?.status, 'failed', video?.error);
        return video?.kind === 'archive' ? video : undefined;
      }, 100_000, 500);
      t.diagnostic(`published ${(published.a / 1000).toFixed(1)} s to A and ${(published.b / 1000).toFixed(1)} s to B; replay (B's piece) ${replay.durationSec} s, archive ${archived.durationSec} s`);
      assert.ok(archived.durationSec! > replay.durationSec! + published.a / 2000, 'the archive holds more than B\'s piece: A\'s is in it');
      assert.ok(archived.durationSec! >= (published.a + published.b) / 1000 - 8, 'nothing of either piece is missing');
    } finally {
      await worker.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
  test('away to origin B and back to A within A\'s grace: A takes the event back, B lets it go without ending it', { timeout: 90_000 }, async () => {
    const urlA = `${originA.node.httpUrl}/live/${streamId}/240p/index.m3u8`;
    publisher = publish(`${originA.node.rtmpUrl}/${streamKey}`, { width: 426, height: 240, fps: 25 });
    await waitFor('origin A to serve a new event', async () => (await playlist(urlA)).lastMsn >= 1, 40_000, 250);
    const eventId = (await api(originA.node, 'GET', `/api/streams/${streamId}`)).body.stats.eventId as string;
    publisher.stop();
    await publisher.exited;
    publisher = publish(`${originB.node.rtmpUrl}/${streamKey}`, { width: 426, height: 240, fps: 25 });
    await waitFor('origin B to continue the event', async () => originB.node.transcoder(streamId) !== undefined
      && (await edge.node.discovery.lookup(streamId, { fresh: true }))?.internalUrl === originB.node.internalUrl, (GRACE_SEC - 2) * 1000, 100);
    publisher.stop();
    await publisher.exited;
    publisher = publish(`${originA.node.rtmpUrl}/${streamKey}`, { width: 426, height: 240, fps: 25 });
    await waitFor('origin A to take the event back', async () => (await edge.node.discovery.lookup(streamId, { fresh: true }))?.internalUrl === originA.node.internalUrl, 15_000, 100);
    await waitFor('origin B to let go at the end of its grace', () => originB.node.transcoder(streamId) === undefined, (GRACE_SEC + 15) * 1000, 250);
    const view = await api(originA.node, 'GET', `/api/streams/${streamId}`);
    assert.equal(view.body.status, 'live', 'B did not end the event');
    assert.equal(view.body.stats.eventId, eventId, 'the same event');
    assert.equal(view.body.stats.publishing, true);
    await waitFor('A to go on serving it', async () => {
      const s = await playlist(urlA);
      return s.status === 200 && !s.endlist;
    }, 10_000, 250);
  });
});
