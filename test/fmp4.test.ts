import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Fmp4Splitter,
  MAX_BOX_SIZE,
  parseFragment,
  parseInit,
  type Fragment,
  type InitSegment,
} from '../lib/media/fmp4.js';

const CMAF_OUTPUT = [
  '-f', 'mp4',
  '-movflags', 'empty_moov+default_base_moof+frag_keyframe+cmaf+skip_trailer',
  '-frag_duration', '200000',
  'pipe:1',
];
const VIDEO_INPUT = ['-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30'];
const VIDEO_ENCODE = ['-c:v', 'libx264', '-preset', 'ultrafast', '-g', '30', '-keyint_min', '30', '-sc_threshold', '0'];

/** Runs a command to completion and returns its stdout; rejects with its stderr when it fails. */
function run(command: string, args: string[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(stdout));
      else reject(new Error(`${command} exited with ${code}: ${Buffer.concat(stderr).toString()}`));
    });
  });
}

function ffmpeg(args: string[]): Promise<Buffer> {
  return run('ffmpeg', ['-hide_banner', '-loglevel', 'error', ...args]);
}

/** A seeded generator (mulberry32), so that a failing chunking can be replayed from the seed in the message. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Split {
  inits: InitSegment[];
  fragments: Fragment[];
  errors: Error[];
}

function collect(splitter: Fmp4Splitter): Split {
  const split: Split = { inits: [], fragments: [], errors: [] };
  splitter.on('init', (init) => split.inits.push(init));
  splitter.on('fragment', (fragment) => split.fragments.push(fragment));
  splitter.on('error', (error) => split.errors.push(error));
  return split;
}

/** Pushes `data` in chunks of 1..maxChunk bytes chosen by `seed`. */
function pushRandomly(splitter: Fmp4Splitter, data: Buffer, seed: number, maxChunk = 5000): void {
  const next = random(seed);
  for (let offset = 0; offset < data.length; ) {
    const length = 1 + Math.floor(next() * maxChunk);
    splitter.push(data.subarray(offset, offset + length));
    offset += length;
  }
}

function splitRandomly(data: Buffer, seed: number): Split {
  const splitter = new Fmp4Splitter();
  const split = collect(splitter);
  pushRandomly(splitter, data, seed);
  return split;
}

/** Top-level boxes of a buffer as [type, start, size]. */
function topLevelBoxes(data: Buffer): [string, number, number][] {
  const boxes: [string, number, number][] = [];
  for (let offset = 0; offset + 8 <= data.length; ) {
    const size = data.readUInt32BE(offset);
    boxes.push([data.toString('latin1', offset + 4, offset + 8), offset, size]);
    offset += size;
  }
  return boxes;
}

const seed = Date.now() % 1_000_000;
let muxed: Buffer;
let videoOnly: Buffer;
let workDir: string;

before(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'onair-fmp4-'));
  // Sequential: the test machine's cores are shared.
  muxed = await ffmpeg([
    ...VIDEO_INPUT,
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', '3',
    ...VIDEO_ENCODE,
    '-c:a', 'aac', '-b:a', '64k',
    ...CMAF_OUTPUT,
  ]);
  videoOnly = await ffmpeg([...VIDEO_INPUT, '-t', '2', ...VIDEO_ENCODE, '-an', ...CMAF_OUTPUT]);
});

after(async () => {
  if (workDir !== undefined) await rm(workDir, { recursive: true, force: true });
});

test('the splitter emits one init segment with an avc1 video track and an mp4a.40.2 audio track', { timeout: 30000 }, async () => {
  const { inits, errors } = splitRandomly(muxed, seed);
  assert.deepEqual(errors, [], `seed ${seed}`);
  assert.equal(inits.length, 1, `seed ${seed}`);
  const init = inits[0]!;
  assert.deepEqual(init.data, muxed.subarray(0, init.data.length), 'the init segment is the first bytes of the stream');
  assert.deepEqual(topLevelBoxes(init.data).map(([type]) => type), ['ftyp', 'moov']);

  const probe = (await run('ffprobe', [
    '-v', 'error', '-select_streams', 'v:0', '-show_entries', 'stream=level,time_base', '-of', 'default=nw=1',
    await writeTemp('probe-init.mp4', muxed),
  ])).toString();
  const level = Number(/level=(\d+)/.exec(probe)?.[1]);
  const timeBase = Number(/time_base=1\/(\d+)/.exec(probe)?.[1]);

  const video = init.tracks.find((track) => track.kind === 'video');
  const audio = init.tracks.find((track) => track.kind === 'audio');
  assert.ok(video !== undefined && audio !== undefined, JSON.stringify(init.tracks));
  assert.match(video.codec, /^avc1\.[0-9a-f]{6}$/);
  assert.equal(parseInt(video.codec.slice(-2), 16), level, 'the level byte of the codec string is the stream level');
  assert.equal(video.width, 640);
  assert.equal(video.height, 360);
  assert.equal(video.timescale, timeBase);
  assert.equal(audio.codec, 'mp4a.40.2');
  assert.equal(audio.sampleRate, 48000);
  assert.equal(audio.timescale, 48000);
  assert.equal(audio.channels, 1);
  assert.notEqual(video.trackId, audio.trackId);
});

test('the splitter cuts fragments of about 200 ms that add up to the whole stream', { timeout: 30000 }, () => {
  const { inits, fragments, errors } = splitRandomly(muxed, seed + 1);
  assert.deepEqual(errors, [], `seed ${seed + 1}`);
  const init = inits[0]!;
  assert.deepEqual(
    Buffer.concat([init.data, ...fragments.map((fragment) => fragment.data)]),
    muxed,
    `init and fragments are the stream byte for byte (seed ${seed + 1})`,
  );
  assert.ok(fragments.length >= 10, `${fragments.length} fragments`);
  fragments.forEach((fragment, index) => {
    assert.equal(fragment.sequenceNumber, index + 1);
    assert.deepEqual(topLevelBoxes(fragment.data).map(([type]) => type), ['moof', 'mdat']);
    if (index < fragments.length - 1) assert.ok(fragment.durationMs <= 300, `fragment ${index}: ${fragment.durationMs} ms`);
    assert.ok(fragment.durationMs > 0);
    assert.equal(fragment.tracks.length, 2);
  });
  const totalMs = fragments.reduce((sum, fragment) => sum + fragment.durationMs, 0);
  assert.ok(Math.abs(totalMs - 3000) < 50, `total ${totalMs} ms`);

  // Each track's timeline continues where the previous fragment left it.
  for (const track of init.tracks) {
    let expected = 0;
    for (const fragment of fragments) {
      const run = fragment.tracks.find((candidate) => candidate.trackId === track.trackId);
      assert.ok(run !== undefined);
      assert.equal(Number(run.baseMediaDecodeTime), expected, `track ${track.trackId}`);
      expected += run.duration;
    }
  }
  const video = init.tracks.find((track) => track.kind === 'video')!;
  const videoSamples = fragments.reduce(
    (sum, fragment) => sum + fragment.tracks.find((run) => run.trackId === video.trackId)!.sampleCount,
    0,
  );
  assert.equal(videoSamples, 90);
});

test('a fragment is independent exactly when its first video sample is a keyframe', { timeout: 30000 }, async () => {
  const { inits, fragments } = splitRandomly(muxed, seed + 2);
  const video = inits[0]!.tracks.find((track) => track.kind === 'video')!;
  const keyframeDts = (await run('ffprobe', [
    '-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=dts,flags', '-of', 'csv=p=0',
    await writeTemp('probe-keyframes.mp4', muxed),
  ]))
    .toString()
    .trim()
    .split('\n')
    .map((line) => line.split(','))
    .filter(([, flags]) => flags?.includes('K'))
    .map(([dts]) => Number(dts));
  // -g 30 at 30 fps: a keyframe each second.
  assert.deepEqual(keyframeDts, [0, 1, 2].map((second) => second * video.timescale));

  const independentStarts = fragments
    .filter((fragment) => fragment.independent)
    .map((fragment) => Number(fragment.tracks.find((run) => run.trackId === video.trackId)!.baseMediaDecodeTime));
  assert.deepEqual(independentStarts, keyframeDts);
  assert.equal(fragments[0]!.independent, true);
});

test('init plus fragments written to a file decode to 90 video frames', { timeout: 30000 }, async () => {
  const { inits, fragments } = splitRandomly(muxed, seed + 3);
  const path = join(workDir, 'rebuilt.mp4');
  await writeFile(path, Buffer.concat([inits[0]!.data, ...fragments.map((fragment) => fragment.data)]));
  const frames = (await run('ffprobe', [
    '-v', 'error', '-count_frames', '-select_streams', 'v:0', '-show_entries', 'stream=nb_read_frames',
    '-of', 'csv=p=0', path,
  ])).toString().trim();
  assert.equal(Number(frames), 90);
});

test('a video-only rendition gives one video track and independent fragments at each second', { timeout: 30000 }, () => {
  const { inits, fragments, errors } = splitRandomly(videoOnly, seed + 4);
  assert.deepEqual(errors, [], `seed ${seed + 4}`);
  assert.equal(inits.length, 1);
  const tracks = inits[0]!.tracks;
  assert.equal(tracks.length, 1);
  assert.equal(tracks[0]!.kind, 'video');
  assert.match(tracks[0]!.codec, /^avc1\./);
  const totalMs = fragments.reduce((sum, fragment) => sum + fragment.durationMs, 0);
  assert.ok(Math.abs(totalMs - 2000) < 50, `total ${totalMs} ms`);
  assert.equal(fragments.filter((fragment) => fragment.independent).length, 2);
  for (const fragment of fragments) assert.equal(fragment.tracks.length, 1);
});

test('an Opus rendition is named opus, and a trailing fragment without video is neither timed nor independent', { timeout: 30000 }, async () => {
  const opus = await ffmpeg([
    '-f', 'lavfi', '-i', 'testsrc2=size=320x180:rate=30',
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', '1', ...VIDEO_ENCODE, '-c:a', 'libopus', '-ac', '2', ...CMAF_OUTPUT,
  ]);
  const { inits, fragments, errors } = splitRandomly(opus, seed + 10);
  assert.deepEqual(errors, []);
  const audio = inits[0]!.tracks.find((track) => track.kind === 'audio');
  assert.deepEqual(
    { codec: audio?.codec, sampleRate: audio?.sampleRate, channels: audio?.channels },
    { codec: 'opus', sampleRate: 48000, channels: 2 },
  );
  const video = inits[0]!.tracks.find((track) => track.kind === 'video')!;
  for (const fragment of fragments) {
    if (fragment.tracks.some((run) => run.trackId === video.trackId)) continue;
    // FFmpeg flushes the encoder's last packet alone after the video has ended.
    assert.equal(fragment.durationMs, 0);
    assert.equal(fragment.independent, false);
  }
  const totalMs = fragments.reduce((sum, fragment) => sum + fragment.durationMs, 0);
  assert.ok(Math.abs(totalMs - 1000) < 50, `total ${totalMs} ms`);
});

test('the splitter accepts one byte at a time and the whole stream at once alike', { timeout: 30000 }, () => {
  const expected = splitRandomly(muxed, seed + 5);
  const wholeSplitter = new Fmp4Splitter();
  const whole = collect(wholeSplitter);
  wholeSplitter.push(muxed);
  const byteSplitter = new Fmp4Splitter();
  const byByte = collect(byteSplitter);
  for (let offset = 0; offset < muxed.length; offset += 1) byteSplitter.push(muxed.subarray(offset, offset + 1));
  for (const split of [whole, byByte]) {
    assert.deepEqual(split.errors, []);
    assert.equal(split.inits.length, 1);
    assert.deepEqual(split.fragments, expected.fragments);
  }
});

test('boxes with a 64-bit size are framed and parsed like the others', { timeout: 30000 }, () => {
  // Rewrite every top-level header as size=1 + largesize; the content of each box is unchanged.
  const rewritten = Buffer.concat(
    topLevelBoxes(muxed).map(([type, start, size]) => {
      const header = Buffer.alloc(16);
      header.writeUInt32BE(1, 0);
      header.write(type, 4, 'latin1');
      header.writeBigUInt64BE(BigInt(size + 8), 8);
      return Buffer.concat([header, muxed.subarray(start + 8, start + size)]);
    }),
  );
  const original = splitRandomly(muxed, seed + 6);
  const { inits, fragments, errors } = splitRandomly(rewritten, seed + 6);
  assert.deepEqual(errors, [], `seed ${seed + 6}`);
  assert.deepEqual(inits[0]!.tracks, original.inits[0]!.tracks);
  assert.equal(fragments.length, original.fragments.length);
  fragments.forEach((fragment, index) => {
    const { data, ...parsed } = original.fragments[index]!;
    assert.equal(fragment.data.length, data.length + 16);
    assert.deepEqual({ ...fragment, data: undefined }, { ...parsed, data: undefined });
  });
});

test('a box larger than 64 MiB is an error, after which the splitter waits for the next init segment', { timeout: 30000 }, () => {
  const splitter = new Fmp4Splitter();
  const { inits, fragments, errors } = collect(splitter);
  const firstFragmentEnd = topLevelBoxes(muxed)[3]!;
  splitter.push(muxed.subarray(0, firstFragmentEnd[1] + firstFragmentEnd[2]));
  assert.equal(inits.length, 1);
  assert.equal(fragments.length, 1);

  const absurd = Buffer.alloc(8);
  absurd.writeUInt32BE(MAX_BOX_SIZE + 1, 0);
  absurd.write('mdat', 4, 'latin1');
  const absurd64 = Buffer.alloc(16);
  absurd64.writeUInt32BE(1, 0);
  absurd64.write('moof', 4, 'latin1');
  absurd64.writeBigUInt64BE(2n ** 40n, 8);

  splitter.push(absurd);
  assert.equal(errors.length, 1);
  assert.match(errors[0]!.message, /over the 67108864 byte limit/);
  assert.equal(splitter.init, undefined, 'the old init segment is dropped');
  // Bytes of the broken stream are skipped until a new ftyp shows up, even inside the same chunk.
  splitter.push(Buffer.concat([muxed.subarray(100, 3000), muxed.subarray(0, 5)]));
  pushRandomly(splitter, muxed.subarray(5), seed + 7);
  assert.equal(errors.length, 1);
  assert.equal(inits.length, 2);
  assert.equal(fragments.length, 1 + topLevelBoxes(muxed).filter(([type]) => type === 'moof').length);

  splitter.reset();
  splitter.push(Buffer.concat([absurd64, muxed]));
  assert.equal(errors.length, 2);
  assert.match(errors[1]!.message, /"moof" has size 1099511627776/);
  assert.equal(inits.length, 3);
});

test('reset drops a half-received box and expects a new init segment', { timeout: 30000 }, () => {
  const splitter = new Fmp4Splitter();
  const { inits, fragments, errors } = collect(splitter);
  pushRandomly(splitter, muxed.subarray(0, Math.floor(muxed.length / 2)), seed + 8);
  const firstPass = fragments.length;
  assert.ok(firstPass > 0);
  splitter.reset();
  assert.equal(splitter.init, undefined);
  pushRandomly(splitter, muxed, seed + 9);
  assert.deepEqual(errors, []);
  assert.equal(inits.length, 2);
  assert.deepEqual(
    fragments.slice(firstPass).map((fragment) => fragment.sequenceNumber),
    fragments.slice(firstPass).map((_, index) => index + 1),
  );
});

test('fragment parsing falls back to the trex defaults when tfhd and trun leave samples out', { timeout: 30000 }, () => {
  const init = parseInit(Buffer.from(muxed.subarray(0, topLevelBoxes(muxed)[1]![1] + topLevelBoxes(muxed)[1]![2])));
  const video = init.tracks.find((track) => track.kind === 'video')!;
  // Give the video trex a sample duration of 512 and non-sync default flags.
  const trexAt = init.data.indexOf('trex', 0, 'latin1');
  assert.equal(init.data.readUInt32BE(trexAt + 8), video.trackId);
  const data = Buffer.from(init.data);
  data.writeUInt32BE(512, trexAt + 16);
  data.writeUInt32BE(0x01010000, trexAt + 24);
  const patched = parseInit(data);

  const box = (type: string, ...content: Buffer[]): Buffer => {
    const body = Buffer.concat(content);
    const header = Buffer.alloc(8);
    header.writeUInt32BE(8 + body.length, 0);
    header.write(type, 4, 'latin1');
    return Buffer.concat([header, body]);
  };
  const u32 = (...values: number[]): Buffer => {
    const out = Buffer.alloc(4 * values.length);
    values.forEach((value, index) => out.writeUInt32BE(value, 4 * index));
    return out;
  };
  const moof = (firstSampleFlags?: number): Buffer =>
    box('moof',
      box('mfhd', u32(0, 7)),
      box('traf',
        box('tfhd', u32(0x020000, video.trackId)),
        box('tfdt', u32(0, 1024)),
        firstSampleFlags === undefined ? box('trun', u32(0, 6)) : box('trun', u32(0x000004, 6, firstSampleFlags))));
  const mdat = box('mdat');

  const withoutFlags = parseFragment(Buffer.concat([moof(), mdat]), patched);
  assert.equal(withoutFlags.sequenceNumber, 7);
  assert.deepEqual(withoutFlags.tracks, [{ trackId: video.trackId, baseMediaDecodeTime: 1024, duration: 6 * 512, sampleCount: 6 }]);
  assert.equal(withoutFlags.durationMs, (6 * 512 * 1000) / video.timescale);
  assert.equal(withoutFlags.independent, false, 'the trex default flags say non-sync');

  const withSyncFirst = parseFragment(Buffer.concat([box('styp', Buffer.from('msdh')), moof(0x02000000), mdat]), patched);
  assert.equal(withSyncFirst.independent, true, 'first_sample_flags override the default');
});

async function writeTemp(name: string, data: Buffer): Promise<string> {
  const path = join(workDir, name);
  await writeFile(path, data);
  return path;
}
