import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  checkKey, DiskStorage, mpdDurationMs, parseRange, parseUploadMetadata, planVodLadder, probeSource, renderReplayPlaylist,
  storyboardVtt, timelineOf, UnusableSourceError, vodLadderArgs, type ProbedSource,
  DEFAULT_TIME_LIMITS, transcodeLimitMs,
} from '../vod-archive/index.js';
import { dependencyOf, guardDependency, waitDelayMs } from '../vod-archive/faults.js';
import { digestFile, StorageVerifyError } from '../vod-archive/storage.js';
import { jobPriority, VOD_PRIORITY } from '../vod-archive/jobs.js';
import { formatSeconds } from '../vod-archive/probe.js';
import { sweepExpiredUploads } from '../vod-archive/uploads.js';
import { loadConfig } from '../server/config.js';

const source = (over: Partial<ProbedSource> = {}): ProbedSource => ({
  durationMs: 60_000, width: 1280, height: 720, fps: 30, hasAudio: true, videoCodec: 'h264', audioCodec: 'aac', ...over,
});

describe('VOD ladder and command', () => {
  test('the ladder never upscales and keeps the aspect ratio; a small source gets one rung at its size', () => {
    assert.deepEqual(planVodLadder(source(), [1080, 720, 480, 360]).map((r) => `${r.width}x${r.height}`), ['1280x720', '854x480', '640x360']);
    assert.deepEqual(planVodLadder(source({ width: 320, height: 181 }), [1080, 720]).map((r) => `${r.width}x${r.height}`), ['320x180']);
  });

  test('one ffmpeg: CRF with a maxrate cap per rung, keyframes forced on segment boundaries, DASH + HLS over one set of CMAF segments', () => {
    const renditions = planVodLadder(source(), [720, 360]);
    const argv = vodLadderArgs({ url: '/work/in.mp4' }, source(), renditions, { heights: [720, 360], preset: 'veryfast', crf: 23, segmentSec: 4 }, '/work/out');
    const after = (flag: string): string | undefined => argv[argv.indexOf(flag) + 1];
    assert.equal(after('-crf:v:0'), '23');
    assert.equal(after('-maxrate:v:0'), `${renditions[0]!.videoKbps}k`);
    assert.equal(after('-bufsize:v:1'), `${renditions[1]!.videoKbps * 2}k`);
    assert.equal(after('-force_key_frames'), 'expr:gte(t,n_forced*4)');
    assert.equal(after('-sc_threshold'), '0');
    assert.equal(after('-f'), 'dash');
    assert.equal(after('-hls_playlist'), '1');
    assert.equal(after('-hls_master_name'), 'index.m3u8');
    assert.equal(after('-adaptation_sets'), 'id=0,streams=v id=1,streams=a');
    assert.ok(argv.includes('/work/out/manifest.mpd'));
    assert.match(after('-filter_complex')!, /split=4\[s0\]\[s1\]\[ta\]\[tb\].*scale=1280:720.*scale=640:360/);
    // Poster and storyboard come from the same decode: frames are dropped before they are scaled.
    assert.match(after('-filter_complex')!, /\[ta\]trim=start=6\.000:end=7\.000,.*\[poster\]/);
    assert.match(after('-filter_complex')!, /\[tb\]fps=1\/1,scale=160:90.*tile=10x10.*\[sheet\]/);
    assert.equal(argv[argv.length - 1], '/work/out/storyboard.jpg');
    assert.ok(argv.includes('/work/out/poster.jpg'));
    // Video-only sources get no audio mapping and one adaptation set.
    const silent = vodLadderArgs({ url: 'x' }, source({ hasAudio: false }), renditions, { heights: [720], preset: 'veryfast', crf: 23, segmentSec: 4 }, '/o');
    assert.ok(!silent.includes('0:a:0'));
    assert.equal(silent[silent.indexOf('-adaptation_sets') + 1], 'id=0,streams=v');
  });

  test('the storyboard track covers the whole video with tiles of its sheet', () => {
    const vtt = storyboardVtt(250_000); // 250 s → one tile every 3 s, 84 tiles
    const cues = vtt.split('\n').filter((l) => l.includes('-->'));
    assert.equal(cues.length, 84);
    assert.equal(cues[0], '00:00:00.000 --> 00:00:03.000');
    assert.equal(cues[83], '00:04:09.000 --> 00:04:10.000');
    assert.match(vtt, /storyboard\.jpg#xywh=160,0,160,90/);
    assert.match(vtt, /storyboard\.jpg#xywh=480,720,160,90/); // tile 83: column 3, row 8
  });

  test('mpd durations parse', () => {
    assert.equal(mpdDurationMs('mediaPresentationDuration="PT8.0S"'), 8000);
    assert.equal(mpdDurationMs('mediaPresentationDuration="PT1H2M3.5S"'), 3_723_500);
    assert.equal(mpdDurationMs('nothing'), 0);
  });

  test('the replay playlist is a VOD playlist with discontinuities and a new map after a restart', () => {
    const text = renderReplayPlaylist([
      { file: 's0.m4s', durationMs: 2000, discontinuity: false, map: 'init0.mp4', programDateTime: Date.UTC(2026, 0, 1) },
      { file: 's1.m4s', durationMs: 1960, discontinuity: false, map: 'init0.mp4', programDateTime: Date.UTC(2026, 0, 1, 0, 0, 2) },
      { file: 's2.m4s', durationMs: 2000, discontinuity: true, map: 'init1.mp4', programDateTime: Date.UTC(2026, 0, 1, 0, 0, 9) },
    ]);
    assert.match(text, /#EXT-X-PLAYLIST-TYPE:VOD/);
    assert.match(text, /#EXT-X-TARGETDURATION:2\n/);
    assert.match(text, /s1\.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI="init1.mp4"\n#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:09.000Z\n#EXTINF:2.000,\ns2\.m4s/);
    assert.ok(text.trimEnd().endsWith('#EXT-X-ENDLIST'));
  });

  test('the replay\'s timeline: one span per run between discontinuities; the publisher\'s absence is not in the video', () => {
    const t0 = Date.UTC(2026, 0, 1);
    assert.deepEqual(timelineOf([
      { durationMs: 2000, discontinuity: false, programDateTime: t0 },
      { durationMs: 1960, discontinuity: false, programDateTime: t0 + 2000 },
      { durationMs: 2000, discontinuity: true, programDateTime: t0 + 9000 },
      { durationMs: 2000, discontinuity: false, programDateTime: t0 + 11_000 },
    ]), [
      { wallMs: t0, videoMs: 0, durationMs: 3960 },
      { wallMs: t0 + 9000, videoMs: 3960, durationMs: 4000 },
    ]);
  });
});

describe('VOD input checks', () => {
  test('storage keys refuse traversal, absolute paths and hidden names', () => {
    for (const bad of ['../etc/passwd', '/abs', 'a/../b', 'a//b', '.hidden', 'a/.x', 'a\\b', '']) {
      assert.throws(() => checkKey(bad), /invalid storage key/, bad);
    }
    assert.equal(checkKey('videos/abc/replay/360p/s1.m4s'), 'videos/abc/replay/360p/s1.m4s');
  });

  test('Range headers: single ranges only', () => {
    assert.deepEqual(parseRange('bytes=0-99'), { start: 0, end: 99 });
    assert.deepEqual(parseRange('bytes=100-'), { start: 100, end: Number.MAX_SAFE_INTEGER });
    assert.equal(parseRange('bytes=9-1'), 'invalid');
    assert.equal(parseRange('bytes=0-1,5-6'), 'invalid');
    assert.equal(parseRange(undefined), undefined);
  });

  test('upload metadata: a title (or a file name) is needed; tags and sizes are bounded', () => {
    assert.deepEqual(parseUploadMetadata({ filename: 'My trip.MP4' }), { title: 'My trip', description: '', tags: [], extension: '.mp4' });
    assert.deepEqual(parseUploadMetadata({ title: 'T', tags: 'a, b,,c', filename: 'x.weird-ext' }).tags, ['a', 'b', 'c']);
    assert.equal(parseUploadMetadata({ title: 'T', filename: 'x.weird-ext' }).extension, '');
    assert.throws(() => parseUploadMetadata({}), /title/);
    assert.throws(() => parseUploadMetadata({ title: 'x'.repeat(201) }), /title/);
    assert.throws(() => parseUploadMetadata({ title: 'a\u0007b' }), /title/);
    assert.throws(() => parseUploadMetadata({ title: 'T', tags: Array.from({ length: 21 }, (_, i) => `t${i}`).join(',') }), /tags/);
  });

  test('disk storage: put, ranged get, list, delete; a get outside the root is impossible', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-storage-'));
    try {
      const storage = new DiskStorage(dir);
      await storage.putBuffer('videos/v1/a/x.m4s', Buffer.from('0123456789'));
      await storage.putBuffer('videos/v1/a/y.m4s', 'y');
      const ranged = await storage.get('videos/v1/a/x.m4s', { start: 2, end: 4 });
      const chunks: Buffer[] = [];
      for await (const chunk of ranged!.body) chunks.push(chunk as Buffer);
      assert.equal(Buffer.concat(chunks).toString(), '234');
      assert.equal(ranged!.size, 10);
      assert.deepEqual(await storage.list('videos/v1'), ['videos/v1/a/x.m4s', 'videos/v1/a/y.m4s']);
      await storage.deletePrefix('videos/v1');
      assert.deepEqual(await storage.list('videos/v1'), []);
      assert.equal(await storage.get('videos/v1/a/x.m4s'), undefined);
      await assert.rejects(storage.get('../../etc/passwd'), /invalid storage key/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('probe refuses what is not a usable video, with a reason a person understands', { timeout: 60_000 }, () => {
  let dir: string;
  let good: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'onair-probe-'));
    good = path.join(dir, 'good.mp4');
    const made = spawnSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=25', '-f', 'lavfi', '-i', 'sine',
      '-t', '3', '-c:v', 'libx264', '-preset', 'ultrafast', '-c:a', 'aac', '-shortest', good]);
    assert.equal(made.status, 0, made.stderr?.toString());
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  const refused = async (file: string, pattern: RegExp): Promise<void> => {
    await assert.rejects(probeSource('ffprobe', file), (error: unknown) => {
      assert.ok(error instanceof UnusableSourceError, String(error));
      assert.match(error.reason, pattern);
      return true;
    });
  };

  test('a good file probes', async () => {
    const probed = await probeSource('ffprobe', good);
    assert.equal(probed.width, 320);
    assert.equal(probed.hasAudio, true);
    assert.ok(Math.abs(probed.durationMs - 3000) < 200, String(probed.durationMs));
  });

  test('zero bytes', async () => {
    const file = path.join(dir, 'empty.mp4');
    await writeFile(file, '');
    await refused(file, /empty/);
  });

  test('garbage', async () => {
    const file = path.join(dir, 'garbage.mp4');
    await writeFile(file, Buffer.from('this is a text file, not a video\n'.repeat(100)));
    await refused(file, /not a video OnAir can read/);
  });

  test('a truncated MP4 (its index at the end is gone)', async () => {
    const file = path.join(dir, 'cut.mp4');
    await writeFile(file, await readFile(good));
    const size = (await readFile(good)).length;
    await truncate(file, Math.floor(size / 2));
    await refused(file, /incomplete|truncated/);
  });

  test('absurd sizes: wider than 8K, faster than 240 fps', async () => {
    const make = (name: string, lavfi: string, extra: string[]): string => {
      const file = path.join(dir, name);
      const made = spawnSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', lavfi, ...extra, '-c:v', 'libx264', '-preset', 'ultrafast', file]);
      assert.equal(made.status, 0, made.stderr?.toString());
      return file;
    };
    await refused(make('wide.mp4', 'color=size=7696x64:rate=5', ['-frames:v', '5']), /too large \(7696×64\)/);
    await refused(make('fast.mp4', 'color=size=64x64:rate=300', ['-t', '0.5']), /frame rate \(300 fps\) is beyond 240/);
  });

  test('sound only', async () => {
    const file = path.join(dir, 'sound.m4a');
    const made = spawnSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'sine', '-t', '1', '-c:a', 'aac', file]);
    assert.equal(made.status, 0);
    await refused(file, /no video/);
  });
});

describe('outage or not (vod-archive/faults.ts)', () => {
  test('a refused connection counts for the dependency the call went to; an untagged one is no outage', async () => {
    const refused = await new Promise<Error>((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port: 1 });
      socket.once('error', resolve);
    });
    assert.equal((refused as NodeJS.ErrnoException).code, 'ECONNREFUSED');
    assert.equal(dependencyOf(refused), undefined, 'where it came from is unknown');
    const catalog = guardDependency({ get: async () => { throw refused; } }, 'database');
    const error = await catalog.get().catch((e: unknown) => e);
    assert.equal(dependencyOf(error), 'database');
    assert.equal(dependencyOf(new Error('wrapped', { cause: error })), 'database', 'through a cause');
  });

  test('S3 5xx and timeouts are storage outages; 4xx and bugs are not; a full disk is the disk wherever it shows', () => {
    const s3 = (name: string, status: number) => Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });
    assert.equal(dependencyOf(s3('ServiceUnavailable', 503)), 'storage');
    assert.equal(dependencyOf(s3('InternalError', 500)), 'storage');
    assert.equal(dependencyOf(Object.assign(new Error('timed out'), { name: 'TimeoutError', $metadata: {} })), 'storage');
    assert.equal(dependencyOf(s3('AccessDenied', 403)), undefined);
    assert.equal(dependencyOf(new TypeError('x is undefined')), undefined);
    assert.equal(dependencyOf(Object.assign(new Error('write failed'), { code: 'ENOSPC' })), 'disk');
    assert.equal(dependencyOf(new Error('ffmpeg: No space left on device')), 'disk');
    assert.equal(dependencyOf(new AggregateError([Object.assign(new Error('q'), { code: 'EDQUOT' })])), 'disk');
  });

  test('waits back off exponentially up to the cap', () => {
    assert.deepEqual([1, 2, 3, 4, 10, 1000].map((n) => waitDelayMs(n, 5000, 60_000)), [5000, 10_000, 20_000, 40_000, 60_000, 60_000]);
  });

  test('DiskStorage.putVerified stores a file that reads back the same, and refuses one that does not match', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-verify-'));
    try {
      const storage = new DiskStorage(path.join(dir, 'store'));
      const file = path.join(dir, 'seg.m4s');
      await writeFile(file, 'segment bytes');
      const digest = await digestFile(file);
      await storage.putVerified('videos/v/replay/s1.m4s', file, digest);
      assert.equal(await readFile(path.join(dir, 'store/videos/v/replay/s1.m4s'), 'utf8'), 'segment bytes');
      assert.equal(await readFile(file, 'utf8'), 'segment bytes', 'the local file stays');
      await assert.rejects(storage.putVerified('videos/v/replay/s2.m4s', file, { ...digest, bytes: digest.bytes + 1 }), StorageVerifyError);
      assert.equal(await storage.exists('videos/v/replay/s2.m4s'), false, 'nothing stored when it does not match');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('VOD limits and housekeeping (units)', () => {
  test('the transcode limit is duration × factor with a floor; the defaults come from the config', () => {
    assert.equal(transcodeLimitMs(10_000, { probeMs: 1, factor: 0.01, minMs: 1000 }), 1000);
    assert.equal(transcodeLimitMs(3600_000, DEFAULT_TIME_LIMITS), 6 * 3600_000);
    assert.equal(transcodeLimitMs(5_000, DEFAULT_TIME_LIMITS), 300_000);
    const config = loadConfig({ ONAIR_VOD_TIME_FACTOR: '2.5', ONAIR_VOD_MIN_TIME_SEC: '10', ONAIR_VOD_PROBE_TIMEOUT_SEC: '5', ONAIR_UPLOAD_EXPIRY_HOURS: '0.5' });
    assert.deepEqual(config.vod.timeLimits, { probeMs: 5000, factor: 2.5, minMs: 10_000 });
    assert.equal(config.vod.uploadExpiryMs, 1800_000);
    assert.deepEqual(loadConfig({}).vod.timeLimits, DEFAULT_TIME_LIMITS);
    assert.throws(() => loadConfig({ ONAIR_VOD_TIME_FACTOR: '-1' }), /ONAIR_VOD_TIME_FACTOR/);
    assert.throws(() => loadConfig({ ONAIR_UPLOAD_EXPIRY_HOURS: 'soon' }), /ONAIR_UPLOAD_EXPIRY_HOURS/);
  });

  test('durations in reasons read as a person would say them', () => {
    assert.deepEqual([1000, 42_000, 300_000, 3 * 3600_000].map(formatSeconds), ['1.0 s', '42 s', '5 min', '3 h']);
  });

  test('archives of live events go before uploads', () => {
    assert.equal(jobPriority('upload'), VOD_PRIORITY.upload);
    assert.equal(jobPriority('k3j5h2g4f6d8s0a1'), VOD_PRIORITY.archive);
    assert.ok(VOD_PRIORITY.archive < VOD_PRIORITY.upload, 'BullMQ takes the lower number first');
  });

  test('the upload sweep removes only expired, unfinished uploads; complete ones and foreign names stay', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-sweep-'));
    try {
      const old = new Date(Date.now() - 2 * 3600_000).toISOString();
      const write = async (id: string, size: number, bytes: number, created: string): Promise<void> => {
        await writeFile(path.join(dir, id), Buffer.alloc(bytes));
        await writeFile(path.join(dir, `${id}.json`), JSON.stringify({ id, size, offset: 0, creation_date: created }));
      };
      await write('aaaaaaaaaaaaaaa1', 100, 40, old); // expired, unfinished
      await write('aaaaaaaaaaaaaaa2', 100, 100, old); // expired but complete: its hand-over is pending
      await write('aaaaaaaaaaaaaaa3', 100, 40, new Date().toISOString()); // still in time
      await writeFile(path.join(dir, '../../etc.json'.replace(/\//g, '_')), '{}'); // not an upload id
      await writeFile(path.join(dir, 'bbbbbbbbbbbbbbb4.json'), 'not json');
      assert.deepEqual(await sweepExpiredUploads(dir, 3600_000), ['aaaaaaaaaaaaaaa1']);
      const left = (await readdir(dir)).sort();
      assert.deepEqual(left, ['.._.._etc.json', 'aaaaaaaaaaaaaaa2', 'aaaaaaaaaaaaaaa2.json', 'aaaaaaaaaaaaaaa3', 'aaaaaaaaaaaaaaa3.json', 'bbbbbbbbbbbbbbb4.json']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
