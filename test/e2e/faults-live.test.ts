import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { OnAirNode } from '../../server/node.js';
import { startPostgres } from '../support/postgres.js';
import { probeDuration } from '../support/ffprobe.js';
import { api, captureLog, isAlive, publish, spawnNode, startTestNode, waitFor, within, type NodeProcess } from '../support/harness.js';

const run = promisify(execFile);

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

/** The media sequence numbers of the segments a recording's journal names (written to disk, complete). */
async function journaled(dataDir: string, rendition = '240p'): Promise<Set<number>> {
  const recordings = path.join(dataDir, 'recordings');
  const [eventId] = await readdir(recordings).catch(() => [] as string[]);
  const text = eventId ? await readFile(path.join(recordings, eventId, 'journal.jsonl'), 'utf8').catch(() => '') : '';
  const found = new Set<number>();
  for (const line of text.split('\n')) {
    try {
      const entry = JSON.parse(line) as { segment?: { rendition: string; sequence: number } };
      if (entry.segment?.rendition === rendition) found.add(entry.segment.sequence);
    } catch {
      // A torn line.
    }
  }
  return found;
}

/** Processes (not zombies) whose command line mentions `text`: what a dead node may have left running. */
function processesMentioning(text: string): number[] {
  return readdirSync('/proc').filter((entry) => /^\d+$/.test(entry) && Number(entry) !== process.pid).filter((entry) => {
    try {
      return readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text);
    } catch {
      return false;
    }
  }).map(Number);
}

const maxOf = (values: Iterable<number>): number => Math.max(-1, ...values);

describe('faults: the live event survives its dependencies dying', { timeout: 300_000 }, () => {
  test('PostgreSQL stopped mid-event and at the end of the event: LL-HLS goes on, the stream goes offline, the replay appears with every segment once it is back', { timeout: 180_000 }, async (t) => {
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
      const offlineMs = Date.now() - endedAt;
      assert.ok(offlineMs < 10_000, `offline ${offlineMs} ms after the publisher left`);
      await waitFor('a log line saying the end of the event waits for the database', () => /end of the event waits/.test(log.text()), 15_000, 250);
      const waiting = await (await fetch(`${node.httpUrl}/metrics`)).text();
      assert.match(waiting, /onair_event_endings_waiting 1/);

      // PostgreSQL back: the event ends in the database and its replay appears, nothing missing.
      const archived = node.next('archived', 60_000);
      const resumingAt = Date.now();
      await pg.resume();
      const [{ videoId }] = await archived;
      t.diagnostic(`ENDLIST ${offlineMs} ms after the publisher left (grace 1 s); replay ${Date.now() - resumingAt} ms after PostgreSQL was started again`);
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

  test('a node stopped while the end of an event waits for PostgreSQL stops within 10 s and leaves the recording; its next start archives it', { timeout: 120_000 }, async (t) => {
    const pg = await startPostgres();
    const log = captureLog();
    const started = await startTestNode({ ...LEAN, ONAIR_DATABASE_URL: pg.url }, undefined, { logDestination: log.stream, logLevel: 'info' });
    let publisher: ReturnType<typeof publish> | undefined;
    let closed = false;
    try {
      const { node } = started;
      const created = await api(node, 'POST', '/api/streams', { body: { title: 'Stopped while waiting' } });
      const streamId: string = created.body.id;
      publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 426, height: 240, fps: 25 });
      await waitFor('two live segments', async () => (await liveSegments(node, streamId)).segments.size >= 2, 30_000, 250);
      await pg.halt();
      publisher.stop();
      const ended = await waitFor('the live playlist to end', async () => {
        const live = await liveSegments(node, streamId);
        return live.playlist.includes('#EXT-X-ENDLIST') ? live : undefined;
      }, 15_000, 250);
      await waitFor('the end of the event to wait', () => /end of the event waits/.test(log.text()), 15_000, 250);
      const stoppingAt = Date.now();
      await within('the node to stop', started.close({ keepData: true }), 10_000);
      closed = true;
      const stopMs = Date.now() - stoppingAt;
      t.diagnostic(`stopped in ${stopMs} ms while the end waited`);
      assert.match(log.text(), /the recording stays on disk/);
      assert.equal((await readdir(path.join(started.dataDir, 'recordings'))).length, 1, 'the recording is kept for the next start');

      await pg.resume();
      const next = await startTestNode({ ...LEAN, ONAIR_DATABASE_URL: pg.url }, started.dataDir);
      try {
        const replay = await waitFor('the replay at the next start', async () => (await api(next.node, 'GET', `/api/streams/${streamId}`, { token: null })).body.replay, 20_000, 250);
        assert.equal((await api(next.node, 'GET', `/api/streams/${streamId}`, { token: null })).body.status, 'ended');
        assertAllKept(ended.segments, (await replaySegments(next.node, replay.videoId)).segments);
        assert.ok(stopMs < 10_000, `stopped in ${stopMs} ms`);
      } finally {
        await next.close();
      }
    } finally {
      publisher?.stop();
      await pg.resume().catch(() => {});
      if (!closed) await started.close().catch(() => {});
      await pg.stop();
    }
  });

  test('the ladder ffmpeg SIGKILLed mid-event: restarted after a discontinuity, and the replay has the segments from before and after', { timeout: 120_000 }, async (t) => {
    const { node, close } = await startTestNode(LEAN);
    let publisher: ReturnType<typeof publish> | undefined;
    try {
      const created = await api(node, 'POST', '/api/streams', { body: { title: 'Encoder crash' } });
      const streamId: string = created.body.id;
      publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 426, height: 240, fps: 25 });
      await waitFor('two live segments', async () => (await liveSegments(node, streamId)).segments.size >= 2, 30_000, 250);
      const transcoder = node.transcoder(streamId)!;
      const pid = transcoder.pid!;
      const discontinuity = transcoder.next('discontinuity', 10_000);
      const killedAt = Date.now();
      process.kill(pid, 'SIGKILL');
      await discontinuity;
      const before = maxOf((await liveSegments(node, streamId)).segments.keys());
      await waitFor('two segments from the restarted ffmpeg', async () => maxOf((await liveSegments(node, streamId)).segments.keys()) >= before + 2, 20_000, 250);
      t.diagnostic(`new segments ${Date.now() - killedAt} ms after the kill`);
      assert.ok(!isAlive(pid));

      const archived = node.next('archived', 30_000);
      publisher.stop();
      const [{ videoId }] = await archived;
      const live = await liveSegments(node, streamId);
      assert.match(live.playlist, /#EXT-X-ENDLIST/);
      assert.match(live.playlist, /#EXT-X-DISCONTINUITY/);
      const replay = await replaySegments(node, videoId);
      assertAllKept(live.segments, replay.segments);
      assert.match(replay.playlist, /#EXT-X-DISCONTINUITY/, 'the restart is a discontinuity in the replay too');
      const total = [...replay.segments.values()].reduce((sum, d) => sum + d, 0);
      const played = await probeDuration(`${node.httpUrl}/vod/${videoId}/index.m3u8`);
      assert.ok(Math.abs(played - total) < 1, `a player reads ${played} s of ${total} s`);
    } finally {
      publisher?.stop();
      await close();
    }
  });

  test('the data directory fills up during a recording: live goes on, /readyz says the disk is full, and once space is freed nothing recorded is lost', { timeout: 150_000 }, async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-full-'));
    try {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=48m,mode=0700', 'tmpfs', dir]);
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      t.skip(`cannot mount a tmpfs here (needs root): ${(error as Error).message}`);
      return;
    }
    const log = captureLog();
    const filler = path.join(dir, 'filler');
    let publisher: ReturnType<typeof publish> | undefined;
    let close: (() => Promise<void>) | undefined;
    try {
      const started = await startTestNode({ ...LEAN, ONAIR_VOD_CONCURRENCY: '1' }, dir, { logDestination: log.stream, logLevel: 'info' });
      const node = started.node;
      close = () => started.close({ keepData: true });
      const created = await api(node, 'POST', '/api/streams', { body: { title: 'Full disk' } });
      const streamId: string = created.body.id;
      publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 426, height: 240, fps: 25 });
      await waitFor('two segments recorded', async () => (await journaled(dir)).size >= 2, 30_000, 250);

      // The disk fills up (another program's file): every write in the data dir fails with ENOSPC.
      await run('sh', ['-c', `dd if=/dev/zero of='${filler}' bs=1M 2>/dev/null; true`]);
      const recordedBefore = await journaled(dir);
      const fullAt = maxOf((await liveSegments(node, streamId)).segments.keys());
      await waitFor('live segments while the disk is full', async () => maxOf((await liveSegments(node, streamId)).segments.keys()) >= fullAt + 3, 20_000, 250);
      await waitFor('a log line saying the recording waits for disk space', () => /recording waits: the disk is full/.test(log.text()), 10_000, 250);
      const full = await (await fetch(`${node.httpUrl}/readyz`)).json() as { checks: Record<string, unknown> };
      assert.match(String(full.checks['disk']), /full/);
      assert.match(await (await fetch(`${node.httpUrl}/metrics`)).text(), /onair_recordings_disk_full 1/);

      // Space freed: the recording goes on, the end of the event makes the replay, nothing recorded before is lost.
      await rm(filler);
      const freedAt = maxOf((await liveSegments(node, streamId)).segments.keys());
      await waitFor('segments recorded again after space is freed', async () => maxOf(await journaled(dir)) >= freedAt + 3, 20_000, 250);
      const ready = await (await fetch(`${node.httpUrl}/readyz`)).json() as { checks: Record<string, unknown> };
      assert.equal(ready.checks['disk'], true);
      const archived = node.next('archived', 30_000);
      publisher.stop();
      const [{ videoId }] = await archived;
      const replay = await replaySegments(node, videoId);
      const lost = [...recordedBefore].filter((sequence) => !replay.segments.has(sequence));
      assert.deepEqual(lost, [], 'every segment recorded before the disk filled up is in the replay');
      assert.ok(maxOf(replay.segments.keys()) >= freedAt + 2, 'segments recorded after space was freed are in the replay');
      assert.match(replay.playlist, /#EXT-X-DISCONTINUITY/, 'the segments missed while the disk was full are a discontinuity');
      const total = [...replay.segments.values()].reduce((sum, d) => sum + d, 0);
      const played = await probeDuration(`${node.httpUrl}/vod/${videoId}/index.m3u8`);
      assert.ok(Math.abs(played - total) < 1, `a player reads ${played} s of ${total} s`);
      t.diagnostic(`replay: ${replay.segments.size} segments, ${total.toFixed(1)} s; missed while full: ${freedAt - fullAt} or so`);
      // The source goes on in a new file from the first keyframe after space was freed: the archive covers both parts.
      const sources = await node.vod.storage.list(`sources/${videoId}`);
      assert.ok(sources.filter((key) => key.endsWith('.flv')).length >= 2, `a source file from before and one from after: ${sources.join(', ')}`);
      const video = await waitFor('the archive to be ready', async () => {
        const body = (await api(node, 'GET', `/api/videos/${videoId}`)).body;
        assert.notEqual(body.status, 'failed', body.error);
        return body.status === 'ready' ? body : undefined;
      }, 60_000, 500);
      assert.equal(video.kind, 'archive');
      // The source goes on within a second of the space coming back, from the publisher's last keyframe.
      assert.ok(video.durationSec >= total - 1.5, `the archive (${video.durationSec} s) covers the replay (${total.toFixed(1)} s)`);
      t.diagnostic(`archive ${video.durationSec} s from ${sources.length} source files`);
    } finally {
      publisher?.stop();
      await close?.();
      await run('umount', [dir]).catch(() => run('umount', ['-l', dir]));
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('the OnAir process SIGKILLed mid-event: restarted on the same data dir, it archives the recording with every segment viewers had', { timeout: 120_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-killed-'));
    let proc: NodeProcess | undefined;
    let publisher: ReturnType<typeof publish> | undefined;
    try {
      proc = spawnNode({
        ...LEAN, ONAIR_DATA_DIR: dir, ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0', ONAIR_HWACCEL: 'none',
        ONAIR_X264_PRESET: 'ultrafast', ONAIR_VOD_CONCURRENCY: '0', ONAIR_LOG_LEVEL: 'warn',
      });
      const [, origin] = await proc.waitForStdout(/Dashboard:\s+(\S+)\/studio/, 30_000);
      const [, rtmpUrl] = await proc.waitForStdout(/RTMP server:\s+(\S+)/, 5_000);
      const remote = { httpUrl: origin!, adminToken: (await readFile(path.join(dir, 'admin-token'), 'utf8')).trim() } as unknown as OnAirNode;
      const created = await api(remote, 'POST', '/api/streams', { body: { title: 'Killed node' } });
      const streamId: string = created.body.id;
      publisher = publish(`${rtmpUrl}/${created.body.streamKey}`, { width: 426, height: 240, fps: 25 });
      await waitFor('three segments recorded', async () => (await journaled(dir)).size >= 3, 30_000, 250);
      // What viewers had: every complete segment of the live playlist, each on disk (journaled) when the node dies.
      const { segments: served } = await liveSegments(remote, streamId);
      await waitFor('the served segments on disk', async () => {
        const onDisk = await journaled(dir);
        return [...served.keys()].every((sequence) => onDisk.has(sequence));
      }, 5_000, 50);
      proc.child.kill('SIGKILL');
      await within('the node to die', proc.exited, 10_000);
      publisher.stop();
      await waitFor('the dead node\'s children (redis-server, ffmpeg) to exit', () => processesMentioning(dir).length === 0, 10_000, 50);

      const next = await startTestNode(LEAN, dir);
      try {
        const replay = await waitFor('the replay of the cut-off event', async () => (await api(next.node, 'GET', `/api/streams/${streamId}`, { token: null })).body.replay, 20_000);
        assert.equal((await api(next.node, 'GET', `/api/streams/${streamId}`, { token: null })).body.status, 'ended');
        assertAllKept(served, (await replaySegments(next.node, replay.videoId)).segments);
        // The local copy goes last, once the replay is published and the archive job queued.
        await waitFor('the recording to leave the node\'s disk', async () => (await readdir(path.join(dir, 'recordings'))).length === 0, 20_000, 100);
      } finally {
        await next.close({ keepData: true });
      }
    } finally {
      publisher?.stop();
      proc?.child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
