import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Worker } from 'bullmq';
import { redisOptionsFromUrl, startEmbeddedRedis, type EmbeddedRedis } from '../server/redis.js';
import type { OnAirNode } from '../server/node.js';
import { probeSource, VOD_QUEUE, VodQueue } from '../vod-archive/index.js';
import { api, startTestNode, waitFor, within } from './support/harness.js';
import { makeVideo, tusCreate, tusPatch } from './support/tus.js';

/** Processes whose command line names this path (ffmpeg/ffprobe of a job, and the shell tying each to its worker). */
function processesOn(where: string): number[] {
  const result = spawnSync('pgrep', ['-f', `ff(mpeg|probe).*${where}`], { encoding: 'utf8' });
  return result.stdout.split('\n').filter((l) => l.trim() !== '').map(Number);
}

let media: string;
before(async () => {
  media = await mkdtemp(path.join(os.tmpdir(), 'onair-vod-limits-'));
});
after(async () => {
  if (media) await rm(media, { recursive: true, force: true });
});

describe('VOD time limits: ffmpeg and ffprobe are stopped past their limit', { timeout: 120_000 }, () => {
  test('ffprobe on an input that never ends (a FIFO nobody writes to) is killed at its limit, and nothing is left running', async () => {
    const fifo = path.join(media, 'never-ends.mp4');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const started = Date.now();
    await within('probe to give up', assert.rejects(probeSource('ffprobe', fifo, { timeoutMs: 1000 }), (error: Error) => {
      assert.equal(error.name, 'VodTimeLimitError', error.message);
      assert.match(error.message, /Time limit: ffprobe ran past its limit of 1\.0 s/);
      return true;
    }), 10_000);
    // 1 s limit, then SIGTERM and at most 2 s of grace before SIGKILL.
    assert.ok(Date.now() - started < 5000, `gave up after ${Date.now() - started} ms`);
    assert.deepEqual(processesOn(fifo), [], 'no ffprobe left');
  });

  describe('a transcode past duration × factor', () => {
    let node: OnAirNode;
    let dataDir: string;
    let close: () => Promise<void>;
    before(async () => {
      // A tiny factor and floor: a normal transcode of 10 s of 720p media (a 720p ladder, ~5 s here) gets 1 s.
      ({ node, dataDir, close } = await startTestNode({
        ONAIR_WEBRTC_LAYERS: 'off', ONAIR_VOD_CONCURRENCY: '1', ONAIR_VOD_ATTEMPTS: '1',
        ONAIR_VOD_LADDER: '720,480,360', ONAIR_VOD_X264_PRESET: 'veryfast',
        ONAIR_VOD_TIME_FACTOR: '0.01', ONAIR_VOD_MIN_TIME_SEC: '1',
      }));
    });
    after(async () => close?.());

    test('its ffmpeg is stopped (none left), and the attempt fails with the time limit as its reason', async () => {
      const file = path.join(media, 'normal.mp4');
      makeVideo(file, { seconds: 10, megabytes: 3 });
      const data = await readFile(file);
      const created = await tusCreate(node.httpUrl, node.adminToken, data.length, { filename: 'normal.mp4' });
      assert.equal(created.status, 201, created.body);
      await tusPatch(created.url!, node.adminToken, data, 0);
      const id = created.url!.split('/').pop()!;
      const settled = await waitFor('the video to settle', async () => {
        const body = (await api(node, 'GET', `/api/videos/${id}`)).body;
        return body.status === 'processing' ? undefined : body;
      }, 60_000, 200);
      assert.equal(settled.status, 'failed', `expected the time limit to fail the attempt; the video is ${settled.status}`);
      assert.match(settled.error, /Time limit: ffmpeg \(transcode\) ran past its limit of 1\.0 s \(10 s of media × 0\.01, at least 1\.0 s\)/);
      assert.deepEqual(processesOn(path.join(dataDir, 'work')), [], 'no ffmpeg left');
      const job = await node.vod.queue.queue.getJob(`vod-${id}`);
      assert.match(job?.failedReason ?? '', /Time limit/);
    });
  });
});

describe('VOD priority: live archives before uploads (real Redis)', { timeout: 60_000 }, () => {
  let redis: EmbeddedRedis;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'onair-prio-'));
    redis = await startEmbeddedRedis({ dataDir: dir });
  });
  after(async () => {
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('with no worker free, uploads then an archive are queued: the archive is taken first, the uploads after it in order', async () => {
    const connection = redisOptionsFromUrl(redis.url);
    const queue = new VodQueue({ connection, attempts: 1, backoffMs: 100, replacedRetentionMs: 1000 });
    const taken: string[] = [];
    let worker: Worker | undefined;
    try {
      await queue.enqueue('upload0000000001', 'upload');
      await queue.enqueue('upload0000000002', 'upload');
      await queue.enqueue('archive000000001', 'stream0000000001');
      worker = new Worker(VOD_QUEUE, async (job) => {
        taken.push((job.data as { videoId: string }).videoId);
      }, { connection: { ...connection, maxRetriesPerRequest: null } as never, concurrency: 1 });
      await waitFor('every job to be taken', () => taken.length === 3, 20_000, 50);
      assert.deepEqual(taken, ['archive000000001', 'upload0000000001', 'upload0000000002']);
    } finally {
      await worker?.close();
      await queue.close();
    }
  });
});

describe('housekeeping: expired tus uploads are swept', { timeout: 120_000 }, () => {
  let node: OnAirNode;
  let dataDir: string;
  let close: () => Promise<void>;
  before(async () => {
    // 0.001 h = 3.6 s; swept every second.
    ({ node, dataDir, close } = await startTestNode({ ONAIR_WEBRTC_LAYERS: 'off', ONAIR_UPLOAD_EXPIRY_HOURS: '0.001' }));
  });
  after(async () => close?.());

  test('a half-sent upload past its expiry: partial file and record removed, its video failed with the reason, tus refuses to resume', async () => {
    const data = Buffer.alloc(256 * 1024, 7);
    const created = await tusCreate(node.httpUrl, node.adminToken, data.length, { filename: 'half.mp4', title: 'Half sent' });
    assert.equal(created.status, 201, created.body);
    await tusPatch(created.url!, node.adminToken, data.subarray(0, data.length / 2), 0);
    const id = created.url!.split('/').pop()!;
    const uploads = path.join(dataDir, 'uploads');
    assert.ok(existsSync(path.join(uploads, id)), 'the partial file is there at first');
    const failed = await waitFor('the upload to be swept', async () => {
      const body = (await api(node, 'GET', `/api/videos/${id}`)).body;
      return body.status === 'failed' ? body : undefined;
    }, 20_000, 250);
    assert.match(failed.error, /The upload expired: not every byte arrived within 4 s of its start/);
    assert.deepEqual((await readdir(uploads)).filter((name) => name.startsWith(id)), []);
    const resumed = await fetch(created.url!, {
      method: 'PATCH',
      headers: { 'tus-resumable': '1.0.0', 'upload-offset': String(data.length / 2), 'content-type': 'application/offset+octet-stream', authorization: `Bearer ${node.adminToken}` },
      body: data.subarray(data.length / 2),
    });
    assert.ok([404, 410].includes(resumed.status), `resume answered ${resumed.status}`);
  });
});
