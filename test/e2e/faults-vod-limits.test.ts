import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Worker } from 'bullmq';
import { Registry } from 'prom-client';
import { redisOptionsFromUrl, startEmbeddedRedis, type EmbeddedRedis } from '../../server/redis.js';
import type { OnAirNode } from '../../server/node.js';
import { execFileSync } from 'node:child_process';
import { createLogger } from '../../lib/log.js';
import { runTied } from '../../lib/tiedProcess.js';
import { planLadder } from '../../live-transcoder/index.js';
import { AdLibrary, adLadderArgs } from '../../cues/index.js';
import { openDatabase, type Database } from '../../server/db.js';
import { DiskStorage, probeSource, VideoCatalog, VOD_QUEUE, VodQueue, type CatalogTables } from '../../vod-archive/index.js';
import { api, startTestNode, waitFor, within } from '../support/harness.js';
import { makeVideo, tusCreate, tusPatch } from '../support/tus.js';

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

  test('an ffmpeg deaf to SIGTERM (blocked opening a FIFO) is SIGKILLed once the grace is over', async () => {
    const fifo = path.join(media, 'deaf.flv');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const started = Date.now();
    const result = await within('ffmpeg to be stopped', runTied('ffmpeg', ['-v', 'error', '-i', fifo, '-f', 'null', '-'], { timeoutMs: 500, graceMs: 1000 }), 10_000);
    assert.equal(result.timedOut, true);
    assert.equal(result.code, 137, 'killed (128 + SIGKILL), not ended by SIGTERM');
    assert.ok(Date.now() - started >= 1500, `stopped after ${Date.now() - started} ms`);
    assert.deepEqual(processesOn(fifo), [], 'no ffmpeg left');
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
      const metrics = await (await fetch(`${node.httpUrl}/metrics`)).text();
      assert.match(metrics, /onair_vod_time_limit_total\{step="transcode"\} 1\n/);
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
    assert.match(await (await fetch(`${node.httpUrl}/metrics`)).text(), /onair_uploads_expired_total 1\n/);
  });
});

describe('housekeeping: packaged ads are evicted least recently used, never one a running break plays', { timeout: 180_000 }, () => {
  let dir: string;
  let database: Database;
  let catalog: VideoCatalog;
  const adIds = ['adspot0000000001', 'adspot0000000002'];
  const plan = (height: number) => planLadder(
    { width: 640, height: 360, fps: 25, videoCodec: 'h264', audioCodec: 'aac' },
    { heights: [height], passthrough: false, gopMs: 2000 },
  );
  const planA = plan(240);
  const planB = plan(144);
  let inUse = new Set<string>();
  let library: AdLibrary;
  const registry = new Registry();
  const packagedOnDisk = async (): Promise<string[]> => {
    const found: string[] = [];
    for (const key of await readdir(path.join(dir, 'ads')).catch(() => [] as string[])) {
      for (const video of await readdir(path.join(dir, 'ads', key))) found.push(`${key}/${video}`);
    }
    return found.sort();
  };

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'onair-ads-lru-'));
    database = await openDatabase({ dataDir: dir });
    catalog = new VideoCatalog(database.db as never as import('kysely').Kysely<CatalogTables>, database.dialect);
    const storage = new DiskStorage(path.join(dir, 'storage'));
    for (const [i, id] of adIds.entries()) {
      const file = path.join(media, `${id}.mp4`);
      execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', `color=c=${i ? 'blue' : 'red'}:size=320x180:rate=25:duration=1`, '-f', 'lavfi', '-i', 'sine=f=660:duration=1',
        '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-shortest', file]);
      await storage.putFile(`sources/${id}/source.mp4`, file);
      await catalog.create({ id, title: `Spot ${i}`, source: 'upload' });
      await catalog.setSource(id, { key: `sources/${id}/source.mp4`, sha256: 'x', bytes: 1 });
      await catalog.publish(id, 'a00000001', { kind: 'archive', durationMs: 1000, renditions: [], ready: true });
      await catalog.update(id, { ad: true });
    }
    library = new AdLibrary({
      catalog, storage, dir: path.join(dir, 'ads'), ffmpegPath: 'ffmpeg', ffprobePath: 'ffprobe',
      args: (packaging) => adLadderArgs({ ...packaging, encoder: 'libx264', x264Preset: 'ultrafast', partTargetMs: 200, vaapiDevice: '' }),
      settings: 'test',
      // Two entries on disk at most, one in memory.
      limits: { maxPackaged: 2, maxDiskBytes: 64 * 1024 * 1024, maxMemoryBytes: 1 },
      inUse: () => inUse,
      log: createLogger({ level: 'warn' }),
    } as ConstructorParameters<typeof AdLibrary>[0]);
    library.registerMetrics(registry);
  });
  after(async () => {
    await database?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('a second plan evicts the first plan\'s ads from disk and memory; one in a running break stays; a later request packages again', async () => {
    const a = library.planKey(planA);
    const b = library.planKey(planB);
    assert.equal((await library.forPlan(planA)).length, 2);
    assert.deepEqual(await packagedOnDisk(), adIds.map((id) => `${a}/${id}`).sort());
    // Plan B is used now; A's first spot plays in a running ad break.
    inUse = new Set([`${a}/${adIds[0]}`]);
    assert.equal((await library.forPlan(planB)).length, 2);
    assert.deepEqual(await packagedOnDisk(), [`${a}/${adIds[0]}`, ...adIds.map((id) => `${b}/${id}`)].sort(),
      'past 2 entries the least recently used goes, except the one a running break plays');
    // Memory (1 byte allowed): only what is in use or was just asked for is held.
    assert.deepEqual((await library.stored()).memory.sort(), [`${a}/${adIds[0]}`, ...adIds.map((id) => `${b}/${id}`)].sort());
    // The break is over; plan A is asked for again: its evicted spot is packaged again, B's oldest go.
    inUse = new Set();
    const again = await library.forPlan(planA);
    assert.deepEqual(again.map((ad) => ad.id).sort(), [...adIds].sort());
    assert.deepEqual(await packagedOnDisk(), adIds.map((id) => `${a}/${id}`).sort());
    const metrics = await registry.metrics();
    assert.match(metrics, /onair_ads_packaged\{where="disk"\} 2\n/);
    assert.match(metrics, /onair_ads_evicted_total\{from="disk"\} 3\n/, 'A\'s second spot, then B\'s two');
  });
});
