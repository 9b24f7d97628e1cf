import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { chooseEncoder, liveLadderArgs, planLadder, type LadderPlan, type SourceInfo, type VideoEncoderKind } from '../live-transcoder/index.js';
import { adLadderArgs } from '../cues/index.js';

const DEFAULT_HEIGHTS = [720, 480, 360];

function source(width: number, height: number, fps = 30, audio: SourceInfo['audioCodec'] = 'aac'): SourceInfo {
  return { width, height, fps, videoCodec: 'h264', audioCodec: audio };
}

function plan(src: SourceInfo, options: { heights?: number[]; passthrough?: boolean } = {}): LadderPlan {
  return planLadder(src, { heights: options.heights ?? DEFAULT_HEIGHTS, passthrough: options.passthrough ?? false, gopMs: 2000 });
}

const sizes = (p: LadderPlan): string[] => p.renditions.map((r) => `${r.name} ${r.width}x${r.height}@${r.fps}`);

/** The value after each occurrence of `flag` (flags may carry a stream specifier: `-c:v:0`). */
function valuesOf(args: string[], flag: string): string[] {
  return args.flatMap((arg, i) => (arg === flag || arg.startsWith(`${flag}:`) ? [args[i + 1]!] : []));
}

describe('ladder planning', { timeout: 10_000 }, () => {
  test('a 1080p source gets 720p, 480p and 360p: every configured rung at or below it', () => {
    assert.deepEqual(sizes(plan(source(1920, 1080))), ['720p 1280x720@30', '480p 854x480@30', '360p 640x360@30']);
  });

  test('a 480p source is never upscaled: 480p and 360p only', () => {
    assert.deepEqual(sizes(plan(source(854, 480))), ['480p 854x480@30', '360p 640x360@30']);
  });

  test('a 240p source, below every rung, still gets one rung at its own size', () => {
    const p = plan(source(426, 240));
    assert.deepEqual(sizes(p), ['240p 426x240@30']);
    assert.equal(p.renditions[0]!.passthrough, false);
  });

  test('no rung is ever taller than the source, whatever the configured heights', () => {
    for (const [w, h] of [[1280, 720], [960, 540], [640, 360], [3840, 2160], [1280, 718]] as const) {
      const p = plan(source(w, h), { heights: [2160, 1440, 1080, 720, 540, 480, 360, 240] });
      assert.ok(p.renditions.length > 0);
      for (const r of p.renditions) assert.ok(r.height <= h && r.width <= w + 1, `${w}x${h}: ${r.name} ${r.width}x${r.height}`);
    }
  });

  test('4:3 and portrait sources keep their aspect ratio with even widths', () => {
    const fourThree = plan(source(1440, 1080));
    assert.deepEqual(sizes(fourThree), ['720p 960x720@30', '480p 640x480@30', '360p 480x360@30']);
    const portrait = plan(source(1080, 1920));
    assert.deepEqual(portrait.renditions.map((r) => r.height), [720, 480, 360]);
    for (const p of [fourThree, portrait, plan(source(1000, 750)), plan(source(720, 1280))]) {
      const aspect = p.source.width / p.source.height;
      for (const r of p.renditions) {
        assert.equal(r.width % 2, 0, `${r.name} width ${r.width} is even`);
        assert.equal(r.height % 2, 0, `${r.name} height ${r.height} is even`);
        assert.ok(Math.abs(r.width - r.height * aspect) <= 1, `${r.name} ${r.width}x${r.height} keeps ${p.source.width}x${p.source.height}`);
      }
    }
    // Portrait stays portrait.
    for (const r of portrait.renditions) assert.ok(r.width < r.height, `${r.name} ${r.width}x${r.height}`);
  });

  test('passthrough puts the source first, copied, and keeps the other rungs strictly below it', () => {
    const p = plan({ ...source(1280, 720), declaredVideoKbps: 4500 }, { passthrough: true });
    assert.deepEqual(sizes(p), ['source 1280x720@30', '480p 854x480@30', '360p 640x360@30']);
    assert.deepEqual(p.renditions.map((r) => r.passthrough), [true, false, false]);
    assert.equal(p.renditions[0]!.videoKbps, 4500, 'the source rung advertises what the publisher sends');
    const small = plan(source(640, 360), { passthrough: true });
    assert.deepEqual(sizes(small), ['source 640x360@30'], 'a 360p source with passthrough is just the source');
  });

  test('a 60 fps source keeps 60 fps at 720 lines and above and gets 30 below', () => {
    const p = plan(source(1920, 1080, 60), { heights: [1080, 720, 480, 360] });
    assert.deepEqual(sizes(p), ['1080p 1920x1080@60', '720p 1280x720@60', '480p 854x480@30', '360p 640x360@30']);
    const thirty = plan(source(1920, 1080, 30), { heights: [720] }).renditions[0]!;
    assert.ok(p.renditions[1]!.videoKbps > thirty.videoKbps, '720p60 gets more bits than 720p30');
    assert.deepEqual(plan(source(1280, 720, 120)).renditions.map((r) => r.fps), [60, 30, 30], 'above 60 fps is capped at 60');
  });

  test('audio is copied when the source sends AAC, and a video-only source has no audio bitrate', () => {
    assert.equal(plan(source(854, 480, 30, 'aac')).copyAudio, true);
    assert.equal(plan(source(854, 480, 30, 'mp3')).copyAudio, false);
    const silent = plan({ ...source(854, 480), audioCodec: undefined });
    assert.ok(silent.renditions.every((r) => r.audioKbps === 0));
  });
});

describe('the one ffmpeg command for a live ladder', { timeout: 10_000 }, () => {
  const ladder = plan(source(1920, 1080));
  const argsFor = (encoder: VideoEncoderKind, p: LadderPlan = ladder): string[] =>
    liveLadderArgs({ plan: p, encoder, x264Preset: 'veryfast', partTargetMs: 200, vaapiDevice: '/dev/dri/renderD129' });

  test('libx264: fixed GOPs, one fMP4 pipe per rendition from fd 4, progress on fd 3, 200 ms fragments', () => {
    const args = argsFor('libx264');
    assert.equal(args.filter((a) => a.startsWith('-sc_threshold')).length, 3, 'no scene-cut keyframes in any rung');
    assert.deepEqual(valuesOf(args, '-sc_threshold'), ['0', '0', '0']);
    assert.deepEqual(valuesOf(args, '-c:v'), ['libx264', 'libx264', 'libx264']);
    assert.deepEqual(valuesOf(args, '-g'), ['60', '60', '60'], '2 s GOP at 30 fps');
    assert.deepEqual(valuesOf(args, '-progress'), ['pipe:3']);
    assert.deepEqual(args.filter((a) => /^pipe:\d+$/.test(a) && Number(a.slice(5)) >= 4), ['pipe:4', 'pipe:5', 'pipe:6']);
    assert.equal(args.at(-1), 'pipe:6', 'each output ends with its pipe');
    assert.deepEqual(valuesOf(args, '-frag_duration'), ['200000', '200000', '200000']);
    const movflags = valuesOf(args, '-movflags');
    assert.equal(movflags.length, 3);
    for (const value of movflags) {
      for (const flag of ['empty_moov', 'default_base_moof', 'frag_keyframe', 'cmaf']) assert.ok(value.split('+').includes(flag), `${flag} in ${value}`);
    }
    assert.equal(args[args.indexOf('-i') + 1], 'pipe:0', 'FLV comes in on stdin');
    assert.deepEqual(valuesOf(args, '-c:a'), ['copy', 'copy', 'copy'], 'AAC from the publisher is copied');
    const filter = args[args.indexOf('-filter_complex') + 1]!;
    assert.match(filter, /split=3/);
    for (const size of ['1280:720', '854:480', '640:360']) assert.ok(filter.includes(`scale=${size}`), `${size} in ${filter}`);
    for (const hw of ['h264_nvenc', 'h264_vaapi', 'h264_qsv', 'hwupload', '-vaapi_device', '-init_hw_device']) {
      assert.ok(!args.includes(hw) && !filter.includes(hw), `no ${hw}`);
    }
  });

  test('a passthrough rung copies the video and gets its own pipe, first', () => {
    const args = argsFor('libx264', plan(source(1280, 720), { passthrough: true }));
    assert.deepEqual(valuesOf(args, '-c:v'), ['copy', 'libx264', 'libx264']);
    assert.deepEqual(args.filter((a) => /^pipe:\d+$/.test(a) && Number(a.slice(5)) >= 4), ['pipe:4', 'pipe:5', 'pipe:6']);
    assert.match(args[args.indexOf('-filter_complex') + 1]!, /split=2/, 'only encoded rungs are scaled');
  });

  test('NVENC, VAAPI and QSV commands use their encoder and device set-up, and never libx264', () => {
    const nvenc = argsFor('nvenc');
    assert.deepEqual(valuesOf(nvenc, '-c:v'), ['h264_nvenc', 'h264_nvenc', 'h264_nvenc']);
    assert.ok(!nvenc.includes('libx264'));

    const vaapi = argsFor('vaapi');
    assert.deepEqual(valuesOf(vaapi, '-vaapi_device'), ['/dev/dri/renderD129']);
    assert.ok(vaapi.indexOf('-vaapi_device') < vaapi.indexOf('-i'), 'the device is set up before the input');
    assert.equal(vaapi[vaapi.indexOf('-filter_complex') + 1]!.match(/hwupload/g)?.length, 3, 'every rung uploads its frames');
    assert.deepEqual(valuesOf(vaapi, '-c:v'), ['h264_vaapi', 'h264_vaapi', 'h264_vaapi']);
    assert.ok(!vaapi.includes('libx264'));

    const qsv = argsFor('qsv');
    assert.deepEqual(valuesOf(qsv, '-init_hw_device'), ['qsv=hw']);
    assert.ok(qsv.indexOf('-init_hw_device') < qsv.indexOf('-i'));
    assert.match(qsv[qsv.indexOf('-filter_complex') + 1]!, /hwupload/);
    assert.deepEqual(valuesOf(qsv, '-c:v'), ['h264_qsv', 'h264_qsv', 'h264_qsv']);
    assert.ok(!qsv.includes('libx264'));

    for (const args of [nvenc, vaapi, qsv]) {
      assert.deepEqual(valuesOf(args, '-bf'), ['0', '0', '0'], 'no B-frames: the same stream feeds WebRTC');
      assert.deepEqual(valuesOf(args, '-frag_duration'), ['200000', '200000', '200000']);
    }
  });
});

describe('the ffmpeg command that packages an ad in a live ladder', { timeout: 10_000 }, () => {
  const argsFor = (p: LadderPlan, inputHasAudio: boolean, encoder: VideoEncoderKind = 'libx264'): string[] => adLadderArgs({
    plan: p, encoder, x264Preset: 'veryfast', partTargetMs: 200, vaapiDevice: '/dev/dri/renderD128',
    input: '/data/ads/k/v/source', inputHasAudio, durationSec: 15, output: (r) => `/data/ads/k/v/${r.name}.mp4`,
  });

  test('every rung of the plan, letterboxed to its size, at its rate, GOP and part duration, with AAC audio', () => {
    const live = plan(source(1920, 1080, 30));
    const args = argsFor(live, true);
    assert.equal(args[args.indexOf('-i') + 1], 'file:/data/ads/k/v/source', 'a path is never read as a protocol');
    assert.deepEqual(valuesOf(args, '-t'), ['15.000']);
    assert.deepEqual(args.filter((a) => a.endsWith('.mp4')), ['/data/ads/k/v/720p.mp4', '/data/ads/k/v/480p.mp4', '/data/ads/k/v/360p.mp4']);
    const filter = args[args.indexOf('-filter_complex') + 1]!;
    for (const r of live.renditions) {
      assert.ok(filter.includes(`scale=${r.width}:${r.height}:force_original_aspect_ratio=decrease`), `${r.name} keeps the ad's shape`);
      assert.ok(filter.includes(`pad=${r.width}:${r.height}:`), `${r.name} is padded to the rung's size`);
      assert.ok(filter.includes(`fps=${r.fps}`));
    }
    // The same encoder settings as the live rungs, so that the ad's segments line up with the programme's.
    const liveArgs = liveLadderArgs({ plan: live, encoder: 'libx264', x264Preset: 'veryfast', partTargetMs: 200, vaapiDevice: '' });
    for (const flag of ['-g', '-b:v', '-maxrate', '-force_key_frames', '-frag_duration', '-movflags', '-preset']) {
      assert.deepEqual(valuesOf(args, flag), valuesOf(liveArgs, flag), flag);
    }
    assert.deepEqual(valuesOf(args, '-c:a'), ['aac', 'aac', 'aac']);
    assert.deepEqual(valuesOf(args, '-ar'), ['48000', '48000', '48000']);
    assert.deepEqual(valuesOf(args, '-map').filter((m) => m.includes(':a')), ['0:a:0', '0:a:0', '0:a:0']);
  });

  test('a silent ad gets silence muxed in; a programme without sound gets an ad without sound', () => {
    const silent = argsFor(plan(source(1280, 720)), false);
    assert.ok(silent.includes('anullsrc=r=48000:cl=stereo'));
    assert.deepEqual(valuesOf(silent, '-map').filter((m) => m.includes(':a')), ['1:a:0', '1:a:0', '1:a:0']);
    const mute = argsFor(plan({ ...source(1280, 720), audioCodec: undefined }), true);
    assert.ok(!mute.includes('-c:a') && !mute.some((a) => a.startsWith('anullsrc')));
  });

  test('a passthrough rung is encoded at the source size (an ad is not the publisher\'s H.264); VAAPI uploads frames', () => {
    const args = argsFor(plan(source(1280, 720), { passthrough: true }), true);
    assert.deepEqual(valuesOf(args, '-c:v'), ['libx264', 'libx264', 'libx264']);
    assert.match(args[args.indexOf('-filter_complex') + 1]!, /scale=1280:720:/);
    const vaapi = argsFor(plan(source(1280, 720)), true, 'vaapi');
    assert.deepEqual(valuesOf(vaapi, '-c:v'), ['h264_vaapi', 'h264_vaapi', 'h264_vaapi']);
    assert.equal(vaapi[vaapi.indexOf('-filter_complex') + 1]!.match(/hwupload/g)?.length, 3);
  });
});

describe('choosing the video encoder', { timeout: 60_000 }, () => {
  // A machine with a GPU device may pass a probe; the fallback tests are about machines without one.
  const gpuDevice = ['/dev/nvidia0', '/dev/dri/renderD128'].find((device) => existsSync(device));
  const noGpu = gpuDevice === undefined ? false : `this machine has ${gpuDevice}`;

  test('auto on a machine without hardware encoders picks libx264 and says why for each probe', { timeout: 45_000, skip: noGpu }, async () => {
    const choice = await chooseEncoder('auto', { ffmpegPath: 'ffmpeg', vaapiDevice: '/dev/dri/renderD128', timeoutMs: 10_000 });
    assert.equal(choice.kind, 'libx264');
    for (const kind of ['nvenc', 'qsv', 'vaapi']) assert.match(choice.reason, new RegExp(`\\b${kind}\\b`), choice.reason);
  });

  test('asking for NVENC where it fails falls back to libx264 with the NVENC failure', { timeout: 20_000, skip: noGpu }, async () => {
    const choice = await chooseEncoder('nvenc', { ffmpegPath: 'ffmpeg', vaapiDevice: '/dev/dri/renderD128', timeoutMs: 10_000 });
    assert.equal(choice.kind, 'libx264');
    assert.match(choice.reason, /nvenc: \S/, choice.reason);
    assert.doesNotMatch(choice.reason, /vaapi|qsv/, 'only the asked-for encoder is probed');
  });

  test('none answers libx264 without running ffmpeg at all', { timeout: 5_000 }, async () => {
    const missing = '/nonexistent/onair/ffmpeg';
    const choice = await chooseEncoder('none', { ffmpegPath: missing, vaapiDevice: '/dev/dri/renderD128' });
    assert.deepEqual(choice.kind, 'libx264');
    assert.match(choice.reason, /ONAIR_HWACCEL=none/);
    // The same missing binary makes a real probe fail, so `none` did not try one.
    const probed = await chooseEncoder('nvenc', { ffmpegPath: missing, vaapiDevice: '/dev/dri/renderD128' });
    assert.equal(probed.kind, 'libx264');
    assert.match(probed.reason, /ENOENT/);
  });
});
