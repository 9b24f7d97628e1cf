import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { Fragment, InitSegment, LiveTranscoder } from '../../live-transcoder/index.js';
import type { OnAirNode } from '../../server/node.js';
import { api, isAlive, publish, startTestNode, waitFor } from '../support/harness.js';

const run = promisify(execFile);

/** Everything a transcoder emitted, per generation and rendition. */
class Recorder {
  inits = new Map<string, InitSegment>();
  fragments = new Map<string, { fragment: Fragment; at: number }[]>();
  discontinuities: { generation: number; reason: string; at: number }[] = [];

  constructor(transcoder: LiveTranscoder) {
    transcoder.on('init', ({ generation, rendition, init }) => this.inits.set(`${generation}/${rendition.name}`, init));
    transcoder.on('fragment', ({ generation, rendition, fragment }) => {
      const key = `${generation}/${rendition.name}`;
      const list = this.fragments.get(key) ?? [];
      list.push({ fragment, at: Date.now() });
      this.fragments.set(key, list);
    });
    transcoder.on('discontinuity', ({ generation, reason }) => this.discontinuities.push({ generation, reason, at: Date.now() }));
  }

  count(generation: number, rendition: string): number {
    return this.fragments.get(`${generation}/${rendition}`)?.length ?? 0;
  }
}

async function ffprobeFrames(file: string): Promise<{ frames: number; width: number; height: number; errors: string }> {
  const { stdout, stderr } = await run('ffprobe', ['-v', 'error', '-count_frames', '-select_streams', 'v:0',
    '-show_entries', 'stream=nb_read_frames,width,height', '-of', 'json', file]);
  const stream = JSON.parse(stdout).streams[0];
  return { frames: Number(stream.nb_read_frames), width: stream.width, height: stream.height, errors: stderr };
}

describe('live spine: RTMP publish → one ffmpeg → CMAF fragments per rendition', { timeout: 150_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let streamId: string;
  let streamKey: string;
  let transcoder: LiveTranscoder;
  let recorder: Recorder;
  let publisher: ReturnType<typeof publish>;
  let tmp: string;

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '720,480,360', ONAIR_RECONNECT_GRACE_SEC: '6' }));
    tmp = await mkdtemp(path.join(os.tmpdir(), 'onair-spine-'));
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Spine' } });
    assert.equal(created.status, 201);
    streamId = created.body.id;
    streamKey = created.body.streamKey;
  });

  after(async () => {
    publisher?.stop();
    await close();
    await rm(tmp, { recursive: true, force: true });
  });

  test('an OBS-like publish makes the stream live and a 480p source gets only 480p and 360p rungs', async () => {
    const live = node.next('live', 20_000);
    publisher = publish(`${node.rtmpUrl}/${streamKey}`, { width: 854, height: 480 });
    [{ transcoder }] = await live;
    recorder = new Recorder(transcoder);
    await transcoder.next('start', 20_000);
    assert.deepEqual(transcoder.plan!.renditions.map((r) => r.name), ['480p', '360p']);
    assert.deepEqual(transcoder.plan!.renditions.map((r) => [r.width, r.height]), [[854, 480], [640, 360]]);
    await waitFor('6 s of fragments in both renditions', () => recorder.count(0, '480p') >= 30 && recorder.count(0, '360p') >= 30, 30_000);

    const { body } = await api(node, 'GET', `/api/streams/${streamId}`, { token: null });
    assert.equal(body.status, 'live');
    assert.equal(body.stats.input.width, 854);
    assert.equal(body.stats.input.height, 480);
    assert.ok(body.stats.input.kbps > 100, `input bitrate ${body.stats.input.kbps}`);
    assert.ok(body.stats.input.fps > 20, `input fps ${body.stats.input.fps}`);
    assert.equal(body.stats.encoder.kind, 'libx264');
    assert.ok(body.stats.encoder.speed > 0.5, `encoder speed ${body.stats.encoder.speed}`);
    assert.deepEqual(body.stats.renditions.map((r: { name: string }) => r.name), ['480p', '360p']);
    for (const r of body.stats.renditions) {
      assert.ok(r.fps > 20 && r.fps < 40, `${r.name} fps ${r.fps}`);
      assert.ok(r.kbps > 50, `${r.name} kbps ${r.kbps}`);
    }
    const metrics = await (await fetch(`${node.httpUrl}/metrics`)).text();
    assert.match(metrics, new RegExp(`onair_rendition_fps\\{stream="${streamId}",rendition="360p"\\} [1-9]`));
    assert.match(metrics, /onair_process_cpu_seconds_total/);
    // The server's share of the latency budget: every part counted, out well within a second of its media's end
    // reaching the ingest (one 200 ms part of two renditions ≈ 10 parts a second).
    const count = Number(/^onair_llhls_part_delay_seconds_count (\S+)$/m.exec(metrics)?.[1]);
    const sum = Number(/^onair_llhls_part_delay_seconds_sum (\S+)$/m.exec(metrics)?.[1]);
    assert.ok(count >= 30, `parts counted: ${count}`);
    assert.ok(sum / count > 0 && sum / count < 1, `mean ingest → part delay ${sum / count} s`);
  });

  test('every rendition yields an init segment and ~200 ms fragments that ffprobe decodes', async () => {
    for (const name of ['480p', '360p']) {
      const init = recorder.inits.get(`0/${name}`);
      assert.ok(init, `init for ${name}`);
      assert.match(init.tracks.find((t) => t.kind === 'video')!.codec, /^avc1\.[0-9a-f]{6}$/);
      assert.equal(init.tracks.find((t) => t.kind === 'audio')?.codec, 'mp4a.40.2');
      const fragments = recorder.fragments.get(`0/${name}`)!.map((f) => f.fragment);
      // All but the last fragment of each GOP are one part target long; none is longer.
      for (const f of fragments.slice(0, -1)) assert.ok(f.durationMs > 0 && f.durationMs <= 210, `fragment of ${f.durationMs} ms`);
      const full = fragments.filter((f) => Math.abs(f.durationMs - 200) < 1).length;
      assert.ok(full / fragments.length > 0.8, `${full} of ${fragments.length} fragments are 200 ms`);
      const file = path.join(tmp, `${name}.mp4`);
      await writeFile(file, Buffer.concat([init.data, ...fragments.map((f) => f.data)]));
      const probe = await ffprobeFrames(file);
      const expectedFrames = Math.round(fragments.reduce((sum, f) => sum + f.durationMs, 0) / (1000 / 30));
      assert.equal(probe.errors, '');
      assert.equal(probe.height, name === '480p' ? 480 : 360);
      assert.ok(Math.abs(probe.frames - expectedFrames) <= 2, `${probe.frames} frames decoded, ${expectedFrames} expected`);
    }
  });

  test('keyframes are aligned across rungs: independent fragments start at the same media times', () => {
    const keyTimes = (name: string): number[] => {
      const init = recorder.inits.get(`0/${name}`)!;
      const video = init.tracks.find((t) => t.kind === 'video')!;
      return recorder.fragments.get(`0/${name}`)!
        .filter(({ fragment }) => fragment.independent)
        .map(({ fragment }) => fragment.tracks.find((t) => t.trackId === video.trackId)!)
        .map((track) => Math.round((Number(track.baseMediaDecodeTime) * 1000) / video.timescale));
    };
    const high = keyTimes('480p');
    const low = keyTimes('360p');
    assert.ok(high.length >= 3, `${high.length} keyframes`);
    const common = Math.min(high.length, low.length);
    assert.deepEqual(high.slice(0, common), low.slice(0, common));
    // One keyframe per segment target (2 s).
    for (let i = 1; i < high.length; i++) assert.ok(Math.abs(high[i]! - high[i - 1]! - 2000) <= 34, `GOP of ${high[i]! - high[i - 1]!} ms`);
  });

  test('a wrong stream key is refused before media flows and the live stream keeps going', async () => {
    const before = recorder.count(0, '480p');
    const liveEvents: string[] = [];
    const onLive = ({ streamId: id }: { streamId: string }): void => void liveEvents.push(id);
    node.on('live', onLive);
    const wrong = publish(`${node.rtmpUrl}/${streamId}_${'x'.repeat(32)}`, { durationSec: 5 });
    const code = await wrong.exited;
    assert.notEqual(code, 0, 'the publishing ffmpeg fails');
    assert.match(wrong.stderr(), /ONAIR_ERR_PUBLISH_BAD_KEY: The stream key is not valid/, 'the publisher is told why');
    const garbage = publish(`${node.rtmpUrl}/not-a-key`, { durationSec: 5 });
    assert.notEqual(await garbage.exited, 0);
    node.off('live', onLive);
    assert.deepEqual(liveEvents, []);
    const metrics = await (await fetch(`${node.httpUrl}/metrics`)).text();
    assert.match(metrics, /onair_publish_refused_total\{reason="bad-key"\} 2/);
    await waitFor('more fragments of the good stream', () => recorder.count(0, '480p') > before + 5, 10_000);
  });

  test('a second publisher on a live key is refused', async () => {
    const second = publish(`${node.rtmpUrl}/${streamKey}`, { durationSec: 5 });
    assert.notEqual(await second.exited, 0);
    assert.match(second.stderr(), /ONAIR_ERR_PUBLISH_BUSY/, 'the publisher is told why');
    const metrics = await (await fetch(`${node.httpUrl}/metrics`)).text();
    assert.match(metrics, /onair_publish_refused_total\{reason="busy"\} 1/);
    assert.ok(!publisher.child.killed && publisher.child.exitCode === null, 'the first publisher is still on air');
  });

  test('kill -9 of the stream\'s ffmpeg: fragments resume within 3 s after a discontinuity', async () => {
    const pid = transcoder.pid!;
    const killedAt = Date.now();
    const discontinuity = transcoder.next('discontinuity', 10_000);
    process.kill(pid, 'SIGKILL');
    const [{ generation, reason }] = await discontinuity;
    assert.equal(reason, 'restart');
    assert.equal(generation, 1);
    await waitFor('fragments from the restarted ffmpeg', () => recorder.count(1, '480p') > 0 && recorder.count(1, '360p') > 0, 3_000, 20);
    const first = recorder.fragments.get('1/480p')![0]!;
    assert.ok(first.at - killedAt <= 3000, `resumed after ${first.at - killedAt} ms`);
    assert.ok(first.fragment.independent, 'the restart begins with a keyframe');
    assert.ok(recorder.inits.has('1/480p'), 'a new init segment follows the discontinuity');
    assert.ok(!isAlive(pid));
    const { body } = await api(node, 'GET', `/api/streams/${streamId}`, { token: null });
    assert.equal(body.stats.encoder.restarts, 1);
  });

  test('a publisher that drops and returns within the grace period continues the same event', async () => {
    const { body: before } = await api(node, 'GET', `/api/streams/${streamId}`, { token: null });
    const eventId = before.stats.eventId;
    const ended: string[] = [];
    node.on('ended', ({ streamId: id }) => void ended.push(id));
    publisher.stop();
    await publisher.exited;
    await waitFor('the node to see the drop', async () => (await api(node, 'GET', `/api/streams/${streamId}`, { token: null })).body.stats?.publishing === false, 10_000);
    const discontinuity = transcoder.next('discontinuity', 20_000);
    publisher = publish(`${node.rtmpUrl}/${streamKey}`, { width: 854, height: 480 });
    const [{ reason, generation }] = await discontinuity;
    assert.equal(reason, 'reconnect');
    await waitFor('fragments after the reconnect', () => recorder.count(generation, '480p') > 3, 15_000);
    const { body: afterwards } = await api(node, 'GET', `/api/streams/${streamId}`, { token: null });
    assert.equal(afterwards.status, 'live');
    assert.equal(afterwards.stats.eventId, eventId, 'same event');
    assert.equal(node.transcoder(streamId), transcoder, 'same transcoder');
    assert.deepEqual(ended, []);
  });

  test('when the publisher stays away past the grace period the event ends', async () => {
    const ended = node.next('ended', 20_000);
    publisher.stop();
    const [{ streamId: id }] = await ended;
    assert.equal(id, streamId);
    const { body } = await api(node, 'GET', `/api/streams/${streamId}`, { token: null });
    assert.equal(body.status, 'ended');
    assert.equal(body.stats, undefined);
    const events = await node.streams.listEvents(streamId);
    assert.equal(events.length, 1);
    assert.ok(events[0]!.endedAt! > events[0]!.startedAt);
  });
});
