import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { OnAirNode } from '../server/node.js';
import { startPostgres } from './support/postgres.js';
import { api, captureLog, publish, startTestNode, waitFor } from './support/harness.js';

/**
 * The live event survives its dependencies dying (issue #14): each fault injected for real, each test asserting what
 * a viewer sees and that nothing recorded is lost — every segment the live ladder made is in the replay.
 */

/** A small ladder, no WebRTC, a short reconnect grace, a DVR window that keeps the whole event. */
const LEAN = { ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: 'off', ONAIR_RECONNECT_GRACE_SEC: '1', ONAIR_DVR_WINDOW_SEC: '300' };

/** The media sequence numbers and durations of a live rendition's complete segments, as a player would list them. */
async function liveSegments(node: OnAirNode, streamId: string, rendition = '240p'): Promise<{ playlist: string; segments: Map<number, number> }> {
  const playlist = await (await fetch(`${node.httpUrl}/live/${streamId}/${rendition}/index.m3u8`)).text();
  return { playlist, segments: segmentsOf(playlist, /-s(\d+)\.m4s(?:\?.*)?$/) };
}

/** `#EXTINF` durations by the sequence number a playlist's segment URIs carry (live: from the packager's names). */
function segmentsOf(playlist: string, uri: RegExp): Map<number, number> {
  const segments = new Map<number, number>();
  const lines = playlist.split('\n');
  let duration: number | undefined;
  for (const line of lines) {
    const extinf = /^#EXTINF:([\d.]+)/.exec(line);
    if (extinf) duration = Number(extinf[1]);
    else if (!line.startsWith('#') && line.trim() !== '' && duration !== undefined) {
      const sequence = uri.exec(line.trim());
      assert.ok(sequence, `a segment URI with its sequence number: ${line}`);
      segments.set(Number(sequence[1]), duration);
      duration = undefined;
    }
  }
  return segments;
}

/** The replay's segments of one rendition (the recorder names them `s<media sequence>.m4s`). */
async function replaySegments(node: OnAirNode, videoId: string, rendition = '240p'): Promise<{ playlist: string; segments: Map<number, number> }> {
  const response = await fetch(`${node.httpUrl}/vod/${videoId}/replay/${rendition}/index.m3u8`);
  assert.equal(response.status, 200, `the replay's ${rendition} playlist`);
  const playlist = await response.text();
  return { playlist, segments: segmentsOf(playlist, /^(?:.*\/)?s(\d+)\.m4s(?:\?.*)?$/) };
}

/** Nothing lost: every segment viewers got live is in the replay, with its duration. */
function assertAllKept(live: Map<number, number>, replay: Map<number, number>): void {
  const missing = [...live.keys()].filter((sequence) => !replay.has(sequence));
  assert.deepEqual(missing, [], `live segments missing from the replay (live ${[...live.keys()].join(',')}; replay ${[...replay.keys()].join(',')})`);
  for (const [sequence, duration] of live) assert.ok(Math.abs(replay.get(sequence)! - duration) < 0.05, `segment ${sequence}: ${replay.get(sequence)} s in the replay, ${duration} s live`);
}

async function readyz(node: OnAirNode): Promise<{ status: number; checks: Record<string, unknown> }> {
  const response = await fetch(`${node.httpUrl}/readyz`);
  const body = await response.json() as { checks: Record<string, unknown> };
  return { status: response.status, checks: body.checks };
}

describe('faults: the live event survives its dependencies dying', { timeout: 300_000 }, () => {
  test('PostgreSQL stopped mid-event and at the end of the event: LL-HLS goes on, the stream goes offline, the replay appears with every segment once it is back', { timeout: 180_000 }, async () => {
    const pg = await startPostgres();
    const log = captureLog();
    const { node, close } = await startTestNode({ ...LEAN, ONAIR_DATABASE_URL: pg.url }, undefined, { logDestination: log.stream, logLevel: 'info' });
    let publisher: ReturnType<typeof publish> | undefined;
    try {
      const created = await api(node, 'POST', '/api/streams', { body: { title: 'Database outage' } });
      const streamId: string = created.body.id;
      publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 426, height: 240, fps: 25 });
      await waitFor('two live segments', async () => (await liveSegments(node, streamId)).segments.size >= 2, 30_000, 250);

      // Mid-event: PostgreSQL stopped for real. Viewers keep getting new segments; /readyz says the database is down.
      await pg.halt();
      const before = Math.max(...(await liveSegments(node, streamId)).segments.keys());
      await waitFor('new live segments while PostgreSQL is down', async () => Math.max(...(await liveSegments(node, streamId)).segments.keys()) >= before + 2, 15_000, 250);
      const down = await readyz(node);
      assert.equal(down.status, 503);
      assert.equal(down.checks['database'], false);
      await pg.resume();
      await waitFor('/readyz to see the database again', async () => (await readyz(node)).checks['database'] === true, 15_000, 250);
      const resumedAt = Math.max(...(await liveSegments(node, streamId)).segments.keys());
      await waitFor('live segments after PostgreSQL is back', async () => Math.max(...(await liveSegments(node, streamId)).segments.keys()) >= resumedAt + 1, 15_000, 250);

      // PostgreSQL stopped again just as the event ends: the stream goes offline for viewers at once.
      await pg.halt();
      const endedAt = Date.now();
      publisher.stop();
      const ended = await waitFor('the live playlist to end', async () => {
        const live = await liveSegments(node, streamId);
        return live.playlist.includes('#EXT-X-ENDLIST') ? live : undefined;
      }, 15_000, 250);
      assert.ok(Date.now() - endedAt < 10_000, `offline ${Date.now() - endedAt} ms after the publisher left`);
      await waitFor('a log line saying the end of the event waits for the database', () => /end of the event waits/.test(log.text()), 15_000, 250);
      const waiting = await (await fetch(`${node.httpUrl}/metrics`)).text();
      assert.match(waiting, /onair_event_endings_waiting 1/);

      // PostgreSQL back: the event ends in the database and its replay appears, nothing missing.
      const archived = node.next('archived', 60_000);
      await pg.resume();
      const [{ videoId }] = await archived;
      const stream = (await api(node, 'GET', `/api/streams/${streamId}`, { token: null })).body;
      assert.equal(stream.status, 'ended');
      assert.equal(stream.replay.videoId, videoId);
      const events = await node.streams.listEvents(streamId);
      assert.ok(events[0]!.endedAt !== null && events[0]!.endedAt <= Date.now(), 'the event has its end');
      const replay = await replaySegments(node, videoId);
      assertAllKept(ended.segments, replay.segments);
      assert.match(await (await fetch(`${node.httpUrl}/metrics`)).text(), /onair_event_endings_waiting 0/);
    } finally {
      publisher?.stop();
      await pg.resume().catch(() => {});
      await close();
      await pg.stop();
    }
  });
});
