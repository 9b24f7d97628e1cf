import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { MAX_STDIN_BACKLOG } from '../../live-transcoder/index.js';
import type { OnAirNode } from '../../server/node.js';
import { api, startTestNode, waitFor, within } from '../support/harness.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/**
 * Backpressure (issue #14 §4): a publisher faster than real time — here ffmpeg copying a 20 s, 10 Mbit/s file to RTMP
 * at 15× real time, 25 MB in about a second — must not be buffered without bound in front of the transcoder: the RTMP
 * socket is paused while ffmpeg's stdin holds more than MAX_STDIN_BACKLOG, and every byte is still read (TCP holds the
 * rest at the publisher).
 */
describe('a publisher faster than real time is paused, not buffered', { timeout: 180_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let dir: string;
  let file: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'onair-burst-'));
    file = path.join(dir, 'burst.flv');
    await run('ffmpeg', ['-hide_banner', '-nostdin', '-loglevel', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30',
      '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000', '-t', '20', '-c:v', 'libx264', '-preset', 'ultrafast',
      '-g', '60', '-b:v', '10M', '-maxrate', '10M', '-bufsize', '10M', '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-ar', '48000',
      '-f', 'flv', file], { timeout: 90_000 });
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '720,360', ONAIR_WEBRTC_LAYERS: 'off' }));
  });

  after(async () => {
    await close?.();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('ffmpeg\'s input never holds more than the bound; the publisher is not cut off and the stream is packaged', { timeout: 150_000 }, async () => {
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Burst' } });
    // 15× real time: fast enough to outrun the ladder, slow enough that the transcoder is up before the burst is over
    // (at full loopback speed the whole file can be in before ffmpeg starts, and then nothing is backlogged).
    const publisher = spawn('ffmpeg', ['-hide_banner', '-nostdin', '-loglevel', 'error', '-readrate', '15', '-i', file, '-c', 'copy', '-f', 'flv',
      `${node.rtmpUrl}/${created.body.streamKey}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    publisher.stderr!.setEncoding('utf8').on('data', (text: string) => { stderr += text; });
    const exited = new Promise<number | null>((resolve) => publisher.on('close', (code) => resolve(code)));
    const transcoder = await waitFor('the transcoder', () => node.transcoder(created.body.id), 30_000, 50);
    let paused = false;
    const watch = setInterval(() => { paused ||= node.rtmpConnections().open > 0 && transcoder.stdinBacklog.bytes > MAX_STDIN_BACKLOG / 2; }, 20);
    try {
      const code = await within('the publisher to send everything', exited, 120_000);
      assert.equal(code, 0, `the publisher was not cut off: ${stderr}`);
    } finally {
      clearInterval(watch);
    }
    const { maxBytes } = transcoder.stdinBacklog;
    assert.ok(maxBytes <= MAX_STDIN_BACKLOG + 2 * MiB, `ffmpeg's stdin held up to ${(maxBytes / MiB).toFixed(1)} MiB`);
    assert.ok(paused, 'the backlog reached the bound: the publisher really was faster than the transcoder');
    // The stream was packaged from what arrived. (How many segments a 20 s burst becomes is the packager's business: it
    // keeps about 4 of them today, with or without backpressure — left open in issue #14.)
    const playlist = node.packager(created.body.id)!.playlist(node.packager(created.body.id)!.renditionNames[0]!)!;
    await waitFor('segments packaged', () => playlist.segments.filter((s) => s.complete).length >= 3, 60_000, 200);
    const metrics = await (await fetch(`${node.httpUrl}/metrics`)).text();
    assert.doesNotMatch(metrics, /onair_rtmp_dropped_total\{reason="timeout"\} [1-9]/, 'a paused publisher is not taken for a slow one');
  });
});
