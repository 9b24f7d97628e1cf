import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadConfig } from '../server/config.js';
import { planVodLadder, probeSource, vodLadderArgs, type VodLadderOptions } from '../vod-archive/index.js';
import { api, publish, startTestNode } from '../test/support/harness.js';
import { tusCreate, tusPatch } from '../test/support/tus.js';
import { sleep } from './support/clock.js';
import { BenchError, envInteger, fixed, type BenchContext, type Benchmark, type BenchResult } from './support/benchmark.js';
import { expectSuccess, reapedChildrenCpuSec, spawnBounded } from './support/process.js';

/*
 * Two figures of the VOD path, each against a baseline measured in the same run.
 *
 * 1. VOD ladder CPU (core-seconds per media-second), OnAir vs the ffmpeg CLI, alternating BENCH_VOD_ROUNDS (2) times,
 *    the lowest figure of each side kept.
 *    - Source: a 1080p30 MP4 (x264 veryfast 6 Mbit/s, AAC), BENCH_VOD_SECONDS long (default 30).
 *    - Baselines: the ffmpeg CLI running the argv OnAir runs with its default config (ONAIR_VOD_LADDER
 *      1080/720/480/360, x264 veryfast CRF 23 with maxrate caps, 4 s CMAF segments, DASH + HLS, the poster and
 *      storyboard branches of the same decode) — the goal's baseline: what OnAir's handling adds — and the same
 *      argv without the poster/storyboard outputs (what the thumbnails add as well).
 *    - OnAir: the whole job of an uploaded file, from the end of the upload to `ready`: hand-over (SHA-256, move into
 *      storage), probe, the ladder with its thumbnails, storyboard track, store, publish. Cost: every child process
 *      (ffprobe, ffmpeg) reaped during the job plus this process's CPU over the same window (the node runs in it).
 * 2. Stream end → playable replay (seconds), OnAir vs the ffmpeg CLI remuxing the event's recording to HLS.
 *    - OnAir: a node in this process with ONAIR_RECONNECT_GRACE_SEC=0 (the event ends when the publisher leaves);
 *      the publisher streams BENCH_VOD_LIVE_SECONDS (default 20) of 720p with `-re`; the clock starts at the node's
 *      `ended` event and stops when a client has fetched the replay's multivariant playlist, a media playlist with
 *      ENDLIST and its first segment.
 *    - Baseline: the fastest classic replay — `ffmpeg -i recording.flv -c copy -f hls` (no re-encode) over the same
 *      length of the same source, timed from spawn to exit. PeerTube's replay re-encodes instead (minutes).
 */

const GOAL_RATIO = 1.05;
const REPLAY_GOAL_SEC = 10;

export const benchmark: Benchmark = {
  name: 'vod-archive',
  title: 'VOD: ladder CPU vs the ffmpeg CLI (core-s per media-s); seconds from stream end to a playable replay',
  run,
};

async function run(context: BenchContext): Promise<BenchResult> {
  const { report, signal } = context;
  const seconds = envInteger('BENCH_VOD_SECONDS', 30, 5, 3600);
  const liveSeconds = envInteger('BENCH_VOD_LIVE_SECONDS', 20, 5, 600);
  const defaults = loadConfig({});
  const ladder: VodLadderOptions = { heights: defaults.vod.heights, preset: defaults.vod.preset, crf: defaults.vod.crf, segmentSec: defaults.vod.segmentSec };
  const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-vod-'));
  try {
    const file = path.join(dir, 'source.mp4');
    await makeSource(file, seconds, 1920, 1080, signal);
    const source = await probeSource(defaults.ffprobePath, file);
    const renditions = planVodLadder(source, ladder.heights);
    report(`source    1920x1080 30 fps, ${seconds} s; ladder ${renditions.map((r) => r.name).join('/')} x264 ${ladder.preset} CRF ${ladder.crf}, ${ladder.segmentSec} s segments`);

    // CLI and OnAir alternate, BENCH_VOD_ROUNDS times each; the lowest figure of each side counts (on a shared
    // machine, noise only ever adds CPU).
    const rounds = envInteger('BENCH_VOD_ROUNDS', 2, 1, 10);
    // Two CLI baselines: the very argv OnAir runs (ladder + poster + storyboard: what OnAir's handling costs on top),
    // and the ladder alone (what the thumbnails cost as well).
    const cli = { same: { cpu: Infinity, wall: 0 }, ladderOnly: { cpu: Infinity, wall: 0 } };
    let job = { cpuSec: Infinity, childrenSec: 0, nodeSec: 0, wallSec: 0 };
    for (let round = 0; round < rounds; round++) {
      const figures: string[] = [];
      for (const [name, thumbnails] of [['same', true], ['ladderOnly', false]] as const) {
        const out = path.join(dir, `cli-${name}-${round}`);
        await mkdir(out);
        const before = reapedChildrenCpuSec();
        const start = performance.now();
        const child = spawnBounded('ffmpeg CLI ladder', defaults.ffmpegPath, vodLadderArgs({ url: file }, source, renditions, ladder, out, thumbnails), { timeoutMs: seconds * 20_000, signal });
        expectSuccess('ffmpeg CLI ladder', await child.exited);
        const cpu = reapedChildrenCpuSec() - before;
        if (cpu < cli[name].cpu) cli[name] = { cpu, wall: (performance.now() - start) / 1000 };
        figures.push(`CLI ${thumbnails ? 'same argv' : 'ladder only'} ${fixed(cpu, 1)} core-s`);
        await rm(out, { recursive: true, force: true });
      }
      const onair = await runOnAirJob(file, seconds, signal);
      if (onair.cpuSec < job.cpuSec) job = onair;
      report(`round ${round + 1}   ${figures.join(', ')}, OnAir ${fixed(onair.cpuSec, 1)} core-s`);
    }
    const sameRate = cli.same.cpu / seconds;
    const ladderRate = cli.ladderOnly.cpu / seconds;
    const onairRate = job.cpuSec / seconds;
    const ratio = onairRate / sameRate;
    report(`ladder    ffmpeg CLI, same argv ${fixed(cli.same.cpu, 1)} core-s (${fixed(sameRate)} /media-s, ${fixed(cli.same.wall, 1)} s wall); ` +
      `ladder only ${fixed(cli.ladderOnly.cpu, 1)} core-s (${fixed(ladderRate)} /media-s); OnAir job ${fixed(job.cpuSec, 1)} core-s ` +
      `(${fixed(onairRate)} /media-s: children ${fixed(job.childrenSec, 1)} + node ${fixed(job.nodeSec, 1)}; ${fixed(job.wallSec, 1)} s upload → ready)`);
    report(`ratio     OnAir/CLI same argv ${fixed(ratio)} (goal ≤ ${GOAL_RATIO}: ${ratio <= GOAL_RATIO ? 'met' : 'MISSED'}); OnAir/CLI ladder only ${fixed(onairRate / ladderRate)} (the poster and storyboard included)`);

    // 2. Stream end → playable replay, and the remux baseline.
    const replay = await measureReplay(liveSeconds, signal);
    const remuxSource = path.join(dir, 'recording.flv');
    await makeSource(remuxSource, liveSeconds, 1280, 720, signal, 'flv');
    const remuxOut = path.join(dir, 'remux');
    await mkdir(remuxOut);
    const remuxStart = performance.now();
    const remux = spawnBounded('ffmpeg remux', defaults.ffmpegPath, [
      '-hide_banner', '-nostdin', '-loglevel', 'error', '-i', remuxSource, '-c', 'copy', '-f', 'hls', '-hls_time', '2',
      '-hls_playlist_type', 'vod', '-hls_segment_type', 'fmp4', path.join(remuxOut, 'index.m3u8'),
    ], { timeoutMs: 120_000, signal });
    expectSuccess('ffmpeg remux', await remux.exited);
    const remuxSec = (performance.now() - remuxStart) / 1000;
    report(`replay    stream end → playable replay ${fixed(replay.sec, 3)} s (playlist ${fixed(replay.playlistSec, 3)} s) for ${liveSeconds} s of live; ` +
      `ffmpeg remux of the recording ${fixed(remuxSec, 3)} s; ratio ${fixed(replay.sec / remuxSec, 2)}`);

    return {
      rows: [
        { metric: 'VOD ladder + thumbnails, ffmpeg CLI core-s/media-s', value: fixed(sameRate) },
        { metric: 'VOD ladder only, ffmpeg CLI core-s/media-s', value: fixed(ladderRate) },
        { metric: 'VOD job, OnAir core-s/media-s (incl. thumbnails)', value: fixed(onairRate) },
        { metric: 'VOD OnAir / CLI same argv', value: fixed(ratio), goal: `≤ ${GOAL_RATIO}`, met: ratio <= GOAL_RATIO },
        { metric: 'VOD OnAir / CLI ladder only', value: fixed(onairRate / ladderRate) },
        { metric: `stream end → playable replay (s, ${liveSeconds} s event)`, value: fixed(replay.sec, 3), goal: `≤ ${REPLAY_GOAL_SEC}`, met: replay.sec <= REPLAY_GOAL_SEC },
        { metric: 'replay / ffmpeg remux of the recording', value: fixed(replay.sec / remuxSec, 2) },
      ],
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function makeSource(file: string, seconds: number, width: number, height: number, signal: AbortSignal, format = 'mp4'): Promise<void> {
  const maker = spawnBounded('making the source', 'ffmpeg', [
    '-hide_banner', '-nostdin', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', `testsrc2=size=${width}x${height}:rate=30`, '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', String(seconds), '-c:v', 'libx264', '-preset', 'veryfast', '-g', '60', '-pix_fmt', 'yuv420p',
    '-b:v', '6000k', '-maxrate', '6000k', '-bufsize', '6000k', '-c:a', 'aac', '-b:a', '160k', '-f', format, file,
  ], { timeoutMs: Math.max(120_000, seconds * 10_000), signal });
  expectSuccess('making the source', await maker.exited);
}

/** A node with the default VOD config; the file uploaded by tus; CPU from the end of the upload to `ready`. */
async function runOnAirJob(file: string, seconds: number, signal: AbortSignal): Promise<{ cpuSec: number; childrenSec: number; nodeSec: number; wallSec: number }> {
  const { node, close } = await startTestNode({
    ONAIR_VOD_LADDER: '', ONAIR_VOD_X264_PRESET: '', ONAIR_VOD_SEGMENT_SEC: '', ONAIR_VOD_CONCURRENCY: '1', ONAIR_WEBRTC_LAYERS: 'off',
  });
  try {
    const data = await readFile(file);
    const created = await tusCreate(node.httpUrl, node.adminToken, data.length, { filename: 'bench.mp4' });
    const id = created.url!.split('/').pop()!;
    // All but the last byte first: the window opens with the byte that completes the upload.
    await tusPatch(created.url!, node.adminToken, data.subarray(0, data.length - 1), 0);
    const childrenBefore = reapedChildrenCpuSec();
    const nodeBefore = process.cpuUsage();
    await tusPatch(created.url!, node.adminToken, data, data.length - 1);
    const start = performance.now();
    const deadline = Date.now() + seconds * 30_000;
    for (;;) {
      if (signal.aborted) throw new BenchError('aborted');
      const video = (await api(node, 'GET', `/api/videos/${id}`)).body;
      if (video.status === 'ready') break;
      if (video.status === 'failed') throw new BenchError(`the VOD job failed: ${video.error}`);
      if (Date.now() > deadline) throw new BenchError('the VOD job did not finish in time');
      // Seldom: the poll runs in this process, whose CPU is counted as OnAir's.
      await sleep(500, signal);
    }
    const wallSec = (performance.now() - start) / 1000;
    const nodeUsage = process.cpuUsage(nodeBefore);
    const childrenSec = reapedChildrenCpuSec() - childrenBefore;
    const nodeSec = (nodeUsage.user + nodeUsage.system) / 1e6;
    return { cpuSec: childrenSec + nodeSec, childrenSec, nodeSec, wallSec };
  } finally {
    await close();
  }
}

/** Seconds from the node's `ended` to a client holding the replay's playlists and first segment. */
async function measureReplay(liveSeconds: number, signal: AbortSignal): Promise<{ sec: number; playlistSec: number }> {
  const { node, close } = await startTestNode({ ONAIR_RECONNECT_GRACE_SEC: '0', ONAIR_WEBRTC_LAYERS: 'off', ONAIR_X264_PRESET: '' });
  try {
    const created = (await api(node, 'POST', '/api/streams', { body: { title: 'Bench replay' } })).body;
    const ended = node.next('ended', (liveSeconds + 60) * 1000);
    const publisher = publish(`${node.rtmpUrl}/${created.streamKey}`, { width: 1280, height: 720, durationSec: liveSeconds });
    await publisher.exited;
    await ended;
    const endedAt = performance.now();
    let playlistSec = 0;
    for (;;) {
      if (signal.aborted) throw new BenchError('aborted');
      if (performance.now() - endedAt > 60_000) throw new BenchError('no replay within 60 s');
      const stream = (await api(node, 'GET', `/api/streams/${created.id}`, { token: null })).body;
      if (stream.replay) {
        const master = await fetchText(stream.replay.hls);
        const variant = master?.split('\n').find((l) => l !== '' && !l.startsWith('#'));
        const media = variant ? await fetchText(new URL(variant, stream.replay.hls).toString()) : undefined;
        if (media?.includes('#EXT-X-ENDLIST')) {
          playlistSec = (performance.now() - endedAt) / 1000;
          const base = new URL(variant!, stream.replay.hls);
          const map = /#EXT-X-MAP:URI="([^"]+)"/.exec(media)?.[1];
          const first = media.split('\n').find((l) => l !== '' && !l.startsWith('#'));
          const ok = map && first && (await fetch(new URL(map, base))).ok && (await fetch(new URL(first, base))).ok;
          if (ok) return { sec: (performance.now() - endedAt) / 1000, playlistSec };
        }
      }
      await sleep(20, signal);
    }
  } finally {
    await close();
  }
}

async function fetchText(url: string): Promise<string | undefined> {
  const response = await fetch(url);
  return response.ok ? response.text() : undefined;
}
