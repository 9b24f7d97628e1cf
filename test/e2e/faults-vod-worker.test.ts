import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { OnAirNode } from '../../server/node.js';
import { probeDuration } from '../support/ffprobe.js';
import { api, isAlive, spawnNode, startTestNode, waitFor, type NodeProcess } from '../support/harness.js';
import { makeVideo, tusCreate, tusPatch } from '../support/tus.js';

/**
 * Processes working in this data dir's VOD scratch folders (`<dataDir>/work`): the ffmpeg of a job and the shell
 * that ties it to its worker; `onlyFfmpeg` keeps ffmpeg itself.
 */
function ffmpegsIn(dataDir: string, onlyFfmpeg = false): number[] {
  const result = spawnSync('pgrep', ['-f', `ffmpeg.*${path.join(dataDir, 'work')}`], { encoding: 'utf8' });
  const pids = result.stdout.split('\n').filter((l) => l.trim() !== '').map(Number);
  const comm = (pid: number): string => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      return ''; // gone meanwhile
    }
  };
  return onlyFfmpeg ? pids.filter((pid) => comm(pid) === 'ffmpeg') : pids;
}

describe('VOD workers as separate processes (ONAIR_ROLE=worker): crashes mid-job', { timeout: 240_000 }, () => {
  let node: OnAirNode;
  let dataDir: string;
  let close: () => Promise<void>;
  let media: string;
  const workers: NodeProcess[] = [];
  // The same slow-enough ladder in the workers: the kill must land mid-transcode.
  const vodEnv = { ONAIR_VOD_LADDER: '720,480,360', ONAIR_VOD_X264_PRESET: 'veryfast', ONAIR_VOD_SEGMENT_SEC: '2', ONAIR_VOD_LOCK_MS: '3000', ONAIR_VOD_BACKOFF_MS: '200', ONAIR_VOD_ATTEMPTS: '2' };

  const startWorker = async (): Promise<NodeProcess> => {
    const worker = spawnNode({ ...vodEnv, ONAIR_ROLE: 'worker', ONAIR_DATA_DIR: dataDir, ONAIR_LOG_LEVEL: 'info' });
    workers.push(worker);
    await worker.waitForStdout(/VOD worker ready/, 20_000);
    return worker;
  };

  before(async () => {
    // The origin runs no jobs itself: only the worker processes do.
    ({ node, dataDir, close } = await startTestNode({ ...vodEnv, ONAIR_VOD_CONCURRENCY: '0', ONAIR_WEBRTC_LAYERS: 'off' }));
    media = await mkdtemp(path.join(os.tmpdir(), 'onair-worker-media-'));
  });

  after(async () => {
    for (const worker of workers) worker.child.kill('SIGKILL');
    await Promise.all(workers.map((w) => w.exited));
    await close?.();
    await rm(media, { recursive: true, force: true });
  });

  test('the job goes back to the queue, another worker completes it, and the published outputs are complete and consistent', async () => {
    const file = path.join(media, 'long.mp4');
    makeVideo(file, { seconds: 20, megabytes: 8 });
    const data = await readFile(file);
    const first = await startWorker();
    const created = await tusCreate(node.httpUrl, node.adminToken, data.length, { filename: 'long.mp4' });
    assert.equal(created.status, 201);
    await tusPatch(created.url!, node.adminToken, data, 0);
    const id = created.url!.split('/').pop()!;

    let last: unknown;
    const history: string[] = [];
    let transcodingSince: number | undefined;
    await waitFor('the first worker to be transcoding', async () => {
      const body = (await api(node, 'GET', `/api/videos/${id}`)).body;
      last = { status: body.status, progress: body.progress, ffmpegs: ffmpegsIn(dataDir).length };
      if (history.at(-1) !== JSON.stringify(last)) history.push(JSON.stringify(last));
      // Mid-transcode: ffmpeg has been running for 2 s (progress alone is no sign: it sometimes stays at 5 % until the
      // transcode ends, a reporting gap left open in the closing note).
      if (ffmpegsIn(dataDir).length === 0) transcodingSince = undefined;
      else transcodingSince ??= Date.now();
      return body.status === 'processing' && transcodingSince !== undefined && Date.now() - transcodingSince >= 2000;
    }, 60_000, 100).catch((error: Error) => {
      // What the worker said, for a failure that only shows on a loaded machine.
      throw new Error(`${error.message}; seen ${history.join(' → ')}; worker stdout:\n${first.stdout().slice(-3000)}\nstderr:\n${first.stderr().slice(-2000)}`);
    });
    const ffmpegs = ffmpegsIn(dataDir);
    first.child.kill('SIGKILL');
    await first.exited;
    // Its ffmpeg does not outlive it (no orphan burning CPU).
    await waitFor('the killed worker\'s ffmpeg to exit', () => ffmpegs.every((pid) => !isAlive(pid)), 5000, 50);
    const stalled = (await api(node, 'GET', `/api/videos/${id}`)).body;
    assert.equal(stalled.status, 'processing');
    const scratch = path.join(dataDir, 'work');
    const killedScratch = (await readdir(scratch)).find((name) => name.endsWith(`.${first.child.pid}`));
    assert.ok(killedScratch, 'the killed worker left its scratch folder');

    const second = await startWorker();
    const video = await waitFor('the video to be ready after the retry', async () => {
      const body = (await api(node, 'GET', `/api/videos/${id}`)).body;
      assert.notEqual(body.status, 'failed', body.error);
      return body.status === 'ready' ? body : undefined;
    }, 150_000, 250);
    assert.deepEqual(video.renditions.map((r: { height: number }) => r.height), [720, 480, 360]);

    // One version in storage (the killed attempt published nothing and left nothing there), and every segment the
    // manifests name is present.
    const keys = await node.vod.storage.list(`videos/${id}`);
    const versions = new Set(keys.map((k) => k.split('/')[2]));
    assert.equal(versions.size, 1, [...versions].join(', '));
    const version = [...versions][0]!;
    const names = new Set(keys.map((k) => k.split('/').slice(3).join('/')));
    for (const playlist of [...names].filter((n) => n.endsWith('.m3u8') && n !== 'index.m3u8')) {
      const text = await (await fetch(`${node.httpUrl}/vod/${id}/${version}/${playlist}`)).text();
      const uris = [...text.matchAll(/^(seg-[^\s]+)$/gm)].map((m) => m[1]!);
      assert.ok(uris.length >= 10, `${playlist} lists ${uris.length} segments`);
      for (const uri of uris) assert.ok(names.has(uri), `${playlist} names ${uri}, which is stored`);
      assert.match(text, /#EXT-X-ENDLIST/);
    }
    const dash = await probeDuration(video.playback.dash);
    assert.ok(Math.abs(dash - 20) < 1, `DASH lasts ${dash} s`);

    // The killed worker's scratch (its partial ffmpeg outputs) went when the next worker started; the one that
    // finished the job cleaned up after itself.
    const left = await readdir(scratch);
    assert.ok(!left.includes(killedScratch), `still there: ${killedScratch}`);
    const own = left.find((name) => name.endsWith(`.${second.child.pid}`));
    assert.deepEqual(own ? await readdir(path.join(scratch, own)) : [], []);
  });

  test('an ffmpeg killed mid-transcode fails the attempt: the job is retried after its backoff; killed on every attempt, the upload ends failed with a reason, nothing published, its source kept', async () => {
    if (!workers.some((w) => w.child.exitCode === null && w.child.signalCode === null)) await startWorker();
    const file = path.join(media, 'short.mp4');
    makeVideo(file, { seconds: 8, megabytes: 3 });
    const data = await readFile(file);
    const uploadOne = async (title: string): Promise<string> => {
      const created = await tusCreate(node.httpUrl, node.adminToken, data.length, { filename: 'short.mp4', title });
      assert.equal(created.status, 201);
      await tusPatch(created.url!, node.adminToken, data, 0);
      return created.url!.split('/').pop()!;
    };
    // The OOM killer, say: ffmpeg dies, its worker lives.
    const killTranscode = async (what: string, spare: readonly number[] = []): Promise<number[]> => {
      const pids = await waitFor(what, () => {
        const found = ffmpegsIn(dataDir, true).filter((pid) => !spare.includes(pid));
        return found.length > 0 ? found : undefined;
      }, 60_000, 50);
      for (const pid of pids) process.kill(pid, 'SIGKILL');
      return pids;
    };

    const once = await uploadOne('Killed once');
    await killTranscode('the first attempt\'s ffmpeg');
    const video = await waitFor('the retry to make the video ready', async () => {
      const body = (await api(node, 'GET', `/api/videos/${once}`)).body;
      assert.notEqual(body.status, 'failed', body.error);
      return body.status === 'ready' ? body : undefined;
    }, 90_000, 250);
    assert.ok(Math.abs(await probeDuration(video.playback.hls) - 8) < 1, 'the retry made the whole video');
    assert.equal(new Set((await node.vod.storage.list(`videos/${once}`)).map((k) => k.split('/')[2])).size, 1);

    const always = await uploadOne('Killed always');
    const killed = await killTranscode('the first attempt\'s ffmpeg');
    await killTranscode('the second attempt\'s ffmpeg', killed);
    const failed = await waitFor('the video to fail for good', async () => {
      const body = (await api(node, 'GET', `/api/videos/${always}`)).body;
      return body.status === 'failed' ? body : undefined;
    }, 30_000, 250);
    assert.match(failed.error, /failed after 2 attempts: ffmpeg \(transcode\) exited with/);
    assert.deepEqual(await node.vod.storage.list(`videos/${always}`), []);
    assert.equal((await node.vod.storage.list(`sources/${always}`)).length, 1, 'the source is kept until the admin deletes the video');
    assert.equal((await api(node, 'GET', '/api/videos', { token: null })).body.videos.some((v: { id: string }) => v.id === always), false);
  });
});
