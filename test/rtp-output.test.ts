import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { after, before, describe, test } from 'node:test';
import { createLogger } from '../lib/log.js';
import {
  liveLadderArgs, LiveTranscoder, planLadder, type LadderPlan, type RtpTargets, type SourceInfo, type VideoEncoderKind,
} from '../live-transcoder/index.js';
import { loadConfig } from '../server/config.js';

// ---------------------------------------------------------------------------------------------------------------
// Helpers: plans, argv lookups, RTP parsing
// ---------------------------------------------------------------------------------------------------------------

function source(width: number, height: number, fps = 30, audio: SourceInfo['audioCodec'] = 'aac'): SourceInfo {
  return { width, height, fps, videoCodec: 'h264', audioCodec: audio };
}

function plan(src: SourceInfo, webrtcHeights?: number[], heights = [720, 480, 360]): LadderPlan {
  return planLadder(src, { heights, passthrough: false, gopMs: 2000, ...(webrtcHeights ? { webrtcHeights } : {}) });
}

const layers = (p: LadderPlan): string[] => (p.webrtc?.layers ?? []).map((l) => `${l.name} ${l.width}x${l.height}@${l.fps}`);

/** The value after each occurrence of `flag` (flags may carry a stream specifier: `-c:v:0`). */
function valuesOf(args: string[], flag: string): string[] {
  return args.flatMap((arg, i) => (arg === flag || arg.startsWith(`${flag}:`) ? [args[i + 1]!] : []));
}

/** The argv of each output: the options after the previous output's URL (or the filter graph) up to its URL. */
function outputsOf(args: string[]): { url: string; options: string[] }[] {
  let start = args.indexOf('-filter_complex') >= 0 ? args.indexOf('-filter_complex') + 2 : args.indexOf('-i') + 2;
  const outputs: { url: string; options: string[] }[] = [];
  for (let i = start; i < args.length; i++) {
    if (/^(pipe:\d+|rtp:\/\/.*)$/.test(args[i]!) && args[i - 1] !== '-progress') {
      outputs.push({ url: args[i]!, options: args.slice(start, i) });
      start = i + 1;
    }
  }
  return outputs;
}

const TARGETS: RtpTargets = {
  videoPorts: [40000, 40002, 40004],
  audioPort: 40006,
  videoSsrcs: [0x11111111, 0x22222222, 0xdeadbeef],
  audioSsrc: 0x33333333,
  videoPayloadType: 101,
  audioPayloadType: 100,
};

const argsFor = (p: LadderPlan, encoder: VideoEncoderKind = 'libx264', rtp?: RtpTargets): string[] =>
  liveLadderArgs({ plan: p, encoder, x264Preset: 'veryfast', partTargetMs: 200, vaapiDevice: '/dev/dri/renderD128', ...(rtp ? { rtp } : {}) });

interface RtpPacket {
  payloadType: number;
  marker: boolean;
  sequence: number;
  timestamp: number;
  ssrc: number;
  payload: Buffer;
}

/** rfc3550 §5.1; undefined for RTCP (rfc5761 §4: packet types 200–204 in the second byte) and junk. */
function parseRtp(packet: Buffer): RtpPacket | undefined {
  if (packet.length < 12 || packet[0]! >> 6 !== 2) return undefined;
  if (packet[1]! >= 200 && packet[1]! <= 204) return undefined;
  const csrcCount = packet[0]! & 0x0f;
  let offset = 12 + 4 * csrcCount;
  if (packet[0]! & 0x10) offset += 4 + 4 * packet.readUInt16BE(offset + 2);
  let end = packet.length;
  if (packet[0]! & 0x20) end -= packet[packet.length - 1]!;
  return {
    payloadType: packet[1]! & 0x7f,
    marker: (packet[1]! & 0x80) !== 0,
    sequence: packet.readUInt16BE(2),
    timestamp: packet.readUInt32BE(4),
    ssrc: packet.readUInt32BE(8),
    payload: packet.subarray(offset, end),
  };
}

/**
 * The NAL units an H.264 RTP payload starts or carries (rfc6184 §5.6–5.8): a single NAL unit, each unit of a STAP-A,
 * or, for an FU-A, the fragmented unit's type on its first fragment only. `data` is the unit from its header on (for an
 * FU-A start: the reconstructed header and the first fragment).
 */
function nalUnits(payload: Buffer): { type: number; data: Buffer }[] {
  const type = payload[0]! & 0x1f;
  if (type >= 1 && type <= 23) return [{ type, data: payload }];
  if (type === 24) {
    const units: { type: number; data: Buffer }[] = [];
    for (let offset = 1; offset + 2 <= payload.length;) {
      const size = payload.readUInt16BE(offset);
      const data = payload.subarray(offset + 2, offset + 2 + size);
      units.push({ type: data[0]! & 0x1f, data });
      offset += 2 + size;
    }
    return units;
  }
  if (type === 28) {
    const fuHeader = payload[1]!;
    if (!(fuHeader & 0x80)) return [];
    const header = Buffer.from([(payload[0]! & 0xe0) | (fuHeader & 0x1f)]);
    return [{ type: fuHeader & 0x1f, data: Buffer.concat([header, payload.subarray(2)]) }];
  }
  return [];
}

/** Packets in sequence order (loopback does not reorder, but a sort costs nothing), with 16-bit wrap handled. */
function inSequence(packets: RtpPacket[]): RtpPacket[] {
  let last = -1;
  let cycles = 0;
  const extended = packets.map((p) => {
    if (last >= 0 && p.sequence < last && last - p.sequence > 0x8000) cycles += 0x10000;
    last = p.sequence;
    return { p, seq: cycles + p.sequence };
  });
  return extended.sort((a, b) => a.seq - b.seq).map((e) => e.p);
}

/** Frames: runs of packets with one timestamp. The last one may still be incomplete and is left out. */
function frames(packets: RtpPacket[]): RtpPacket[][] {
  const result: RtpPacket[][] = [];
  for (const packet of inSequence(packets)) {
    const current = result.at(-1);
    if (current && current[0]!.timestamp === packet.timestamp) current.push(packet);
    else result.push([packet]);
  }
  return result.slice(0, -1);
}

/** Opus frame duration in ms from the TOC byte (rfc6716 §3.1), times the frame count of the packet. */
function opusPacketMs(payload: Buffer): number {
  const config = payload[0]! >> 3;
  const frameMs = config < 12 ? [10, 20, 40, 60][config % 4]! : config < 16 ? [10, 20][config % 2]! : [2.5, 5, 10, 20][config % 4]!;
  const code = payload[0]! & 0x03;
  const count = code === 0 ? 1 : code === 3 ? payload[1]! & 0x3f : 2;
  return frameMs * count;
}

// ---------------------------------------------------------------------------------------------------------------
// Planning
// ---------------------------------------------------------------------------------------------------------------

describe('planning the WebRTC layers', { timeout: 10_000 }, () => {
  test('a 1080p60 source gets the default 240 and 480 layers, low to high, at 30 fps at most', () => {
    const p = plan(source(1920, 1080, 60));
    assert.deepEqual(layers(p), ['w240 426x240@30', 'w480 854x480@30']);
    const [low, high] = p.webrtc!.layers;
    assert.ok(low!.kbps < high!.kbps, `${low!.kbps} < ${high!.kbps} kbit/s`);
    assert.equal(p.webrtc!.gopMs, 1000);
  });

  test('layers above the source are dropped: a 360p source gets only w240', () => {
    assert.deepEqual(layers(plan(source(640, 360))), ['w240 426x240@30']);
    assert.deepEqual(layers(plan(source(854, 480))), ['w240 428x240@30', 'w480 854x480@30']);
  });

  test('a source below every layer still gets one, at its own size: never upscaled', () => {
    assert.deepEqual(layers(plan(source(320, 180))), ['w180 320x180@30']);
    assert.deepEqual(layers(plan(source(256, 145))), ['w144 254x144@30'], 'an odd height is rounded down to even');
    for (const [w, h] of [[320, 180], [640, 360], [1280, 720], [3840, 2160], [1080, 1920], [200, 150]] as const) {
      const p = plan(source(w, h), [720, 480, 360, 240, 144]);
      assert.ok(p.webrtc!.layers.length >= 1, `${w}x${h} has a layer`);
      for (const l of p.webrtc!.layers) assert.ok(l.height <= h && l.width <= w + 1, `${w}x${h}: ${l.name} ${l.width}x${l.height}`);
    }
  });

  test('portrait sources keep their aspect ratio with even widths', () => {
    const p = plan(source(720, 1280), [480, 240]);
    assert.deepEqual(layers(p), ['w240 136x240@30', 'w480 270x480@30']);
  });

  test('audio is Opus at 48 kHz stereo, about 64 kbit/s, and absent for a video-only source', () => {
    assert.deepEqual(plan(source(640, 360, 30, 'aac')).webrtc!.audio, { codec: 'opus', sampleRate: 48000, channels: 2, kbps: 64, frameMs: 20 });
    assert.equal(plan(source(640, 360, 30, 'mp3')).webrtc!.audio?.codec, 'opus');
    assert.equal(plan({ ...source(640, 360), audioCodec: undefined }).webrtc!.audio, undefined);
  });

  test('no WebRTC heights turns the feed off', () => {
    assert.equal(plan(source(1280, 720), []).webrtc, undefined);
  });

  test('ONAIR_WEBRTC_LAYERS: default 480,240, "off" for none, bad values name the variable', () => {
    assert.deepEqual(loadConfig({}).webrtcLayers, [240, 480]);
    assert.deepEqual(loadConfig({ ONAIR_WEBRTC_LAYERS: '360, 180,360' }).webrtcLayers, [180, 360]);
    assert.deepEqual(loadConfig({ ONAIR_WEBRTC_LAYERS: 'off' }).webrtcLayers, []);
    for (const bad of ['abc', '481', '1080', '100', '144,180,240,360']) {
      assert.throws(() => loadConfig({ ONAIR_WEBRTC_LAYERS: bad }), /ONAIR_WEBRTC_LAYERS/, bad);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------------------------

describe('RTP outputs of the live command', { timeout: 10_000 }, () => {
  const p = plan(source(1920, 1080), [720, 480, 240]);

  test('without RTP targets the command is the HLS ladder alone, argument for argument', () => {
    const hlsOnly = argsFor(plan(source(1920, 1080), []));
    assert.deepEqual(argsFor(p), hlsOnly);
    assert.ok(!hlsOnly.some((a) => a.startsWith('rtp://') || a === 'libopus'));
    // ONAIR_WEBRTC_LAYERS=off: targets are ignored.
    assert.deepEqual(argsFor(plan(source(1920, 1080), []), 'libx264', TARGETS), hlsOnly);
  });

  test('with targets the HLS outputs are unchanged and one RTP output per layer follows, then Opus', () => {
    const hls = outputsOf(argsFor(p));
    const args = argsFor(p, 'libx264', TARGETS);
    const outputs = outputsOf(args);
    assert.deepEqual(outputs.slice(0, hls.length), hls, 'the fMP4 outputs keep their arguments');
    assert.deepEqual(outputs.slice(hls.length).map((o) => o.url), [
      'rtp://127.0.0.1:40000?pkt_size=1200', 'rtp://127.0.0.1:40002?pkt_size=1200', 'rtp://127.0.0.1:40004?pkt_size=1200',
      'rtp://127.0.0.1:40006?pkt_size=1200',
    ]);
    const filter = args[args.indexOf('-filter_complex') + 1]!;
    assert.match(filter, /^\[0:v:0\]split=6\[s0\]\[s1\]\[s2\]\[r0\]\[r1\]\[r2\];/, 'one decode, one split for HLS and WebRTC');
    for (const [i, size] of ['426:240', '854:480', '1280:720'].entries()) assert.ok(filter.includes(`[r${i}]scale=${size}:`), `${size} in ${filter}`);

    const video = outputs.slice(hls.length, hls.length + 3).map((o) => o.options);
    for (const [i, options] of video.entries()) {
      assert.deepEqual(valuesOf(options, '-map'), [`[w${i}]`]);
      assert.deepEqual(valuesOf(options, '-c'), ['libx264']);
      assert.deepEqual(valuesOf(options, '-profile'), ['baseline']);
      assert.deepEqual(valuesOf(options, '-level'), ['3.1']);
      assert.deepEqual(valuesOf(options, '-tune'), ['zerolatency'], 'no lookahead delay');
      assert.deepEqual(valuesOf(options, '-bf'), ['0']);
      assert.deepEqual(valuesOf(options, '-g'), ['30'], '1 s GOP at 30 fps');
      assert.deepEqual(valuesOf(options, '-keyint_min'), ['30']);
      assert.deepEqual(valuesOf(options, '-sc_threshold'), ['0']);
      assert.deepEqual(valuesOf(options, '-bsf'), ['dump_extra=freq=keyframe'], 'SPS/PPS before every IDR');
      assert.deepEqual(valuesOf(options, '-payload_type'), ['101']);
      assert.deepEqual(valuesOf(options, '-f'), ['rtp']);
      const kbps = p.webrtc!.layers[i]!.kbps;
      assert.deepEqual([valuesOf(options, '-b'), valuesOf(options, '-maxrate'), valuesOf(options, '-bufsize')],
        [[`${kbps}k`], [`${kbps}k`], [`${Math.round(kbps / 2)}k`]], 'CBR-like with a 0.5 s VBV');
    }
    // ffmpeg's -ssrc is a signed 32-bit option: 0xdeadbeef goes as its two's complement, the same bits on the wire.
    assert.deepEqual(video.map((o) => Number(valuesOf(o, '-ssrc')[0]) >>> 0), TARGETS.videoSsrcs);
    assert.equal(valuesOf(video[2]!, '-ssrc')[0], String(0xdeadbeef | 0));

    const audio = outputs.at(-1)!.options;
    assert.deepEqual(valuesOf(audio, '-map'), ['0:a:0']);
    assert.deepEqual(valuesOf(audio, '-c'), ['libopus']);
    assert.deepEqual(valuesOf(audio, '-af'), ['aresample=async=1'], 'contiguous Opus timestamps from millisecond FLV ones');
    assert.deepEqual([valuesOf(audio, '-ar'), valuesOf(audio, '-ac'), valuesOf(audio, '-b'), valuesOf(audio, '-frame_duration')],
      [['48000'], ['2'], ['64k'], ['20']]);
    assert.deepEqual(valuesOf(audio, '-payload_type'), ['100']);
    assert.deepEqual(valuesOf(audio, '-ssrc'), [String(0x33333333)]);
  });

  test('fewer ports than layers sends the lowest layers; extra ports stay unused', () => {
    const two = outputsOf(argsFor(p, 'libx264', { ...TARGETS, videoPorts: [40000, 40002] })).filter((o) => o.url.startsWith('rtp:'));
    assert.deepEqual(two.map((o) => valuesOf(o.options, '-map')[0]), ['[w0]', '[w1]', '0:a:0']);
    const small = plan(source(640, 360));
    const one = outputsOf(argsFor(small, 'libx264', TARGETS)).filter((o) => o.url.startsWith('rtp:'));
    assert.deepEqual(one.map((o) => o.url), ['rtp://127.0.0.1:40000?pkt_size=1200', 'rtp://127.0.0.1:40006?pkt_size=1200']);
  });

  test('a video-only source, or targets without an audio port, send no audio', () => {
    const silent = argsFor(plan({ ...source(1280, 720), audioCodec: undefined }), 'libx264', TARGETS);
    assert.ok(!silent.includes('libopus'));
    const { audioPort: _port, ...noAudio } = TARGETS;
    assert.ok(!argsFor(p, 'libx264', noAudio).includes('libopus'));
  });

  test('bad targets are refused with the field named', () => {
    assert.throws(() => argsFor(p, 'libx264', { ...TARGETS, videoPayloadType: 72 }), /videoPayloadType/);
    assert.throws(() => argsFor(p, 'libx264', { ...TARGETS, videoSsrcs: [0, 1, 2] }), /videoSsrcs\[0\]/);
    assert.throws(() => argsFor(p, 'libx264', { ...TARGETS, audioPort: 70000 }), /audioPort/);
  });

  test('NVENC, VAAPI and QSV use their Baseline, low-latency settings and keep dump_extra', () => {
    const rtpOutputs = (encoder: VideoEncoderKind): string[][] =>
      outputsOf(argsFor(p, encoder, TARGETS)).filter((o) => o.url.startsWith('rtp:') && !o.options.includes('libopus')).map((o) => o.options);
    const expected: Record<Exclude<VideoEncoderKind, 'libx264'>, { codec: string; profile: string; level: string; extra: [string, string][] }> = {
      nvenc: { codec: 'h264_nvenc', profile: 'baseline', level: '3.1', extra: [['-tune', 'ull'], ['-zerolatency', '1'], ['-rc-lookahead', '0'], ['-no-scenecut', '1']] },
      vaapi: { codec: 'h264_vaapi', profile: 'constrained_baseline', level: '3.1', extra: [['-rc_mode', 'CBR']] },
      qsv: { codec: 'h264_qsv', profile: 'baseline', level: '31', extra: [['-look_ahead', '0'], ['-async_depth', '1']] },
    };
    for (const [encoder, want] of Object.entries(expected) as [Exclude<VideoEncoderKind, 'libx264'>, typeof expected.nvenc][]) {
      const outputs = rtpOutputs(encoder);
      assert.equal(outputs.length, 3, encoder);
      for (const options of outputs) {
        assert.deepEqual(valuesOf(options, '-c'), [want.codec], encoder);
        assert.deepEqual(valuesOf(options, '-profile'), [want.profile], encoder);
        assert.deepEqual(valuesOf(options, '-level'), [want.level], encoder);
        assert.deepEqual(valuesOf(options, '-bf'), ['0'], encoder);
        assert.deepEqual(valuesOf(options, '-g'), ['30'], encoder);
        assert.deepEqual(valuesOf(options, '-bsf'), ['dump_extra=freq=keyframe'], encoder);
        for (const [flag, value] of want.extra) assert.deepEqual(valuesOf(options, flag), [value], `${encoder} ${flag}`);
        assert.ok(!options.includes('libx264'), encoder);
      }
    }
    const vaapiFilter = argsFor(p, 'vaapi', TARGETS)[argsFor(p, 'vaapi', TARGETS).indexOf('-filter_complex') + 1]!;
    assert.equal(vaapiFilter.match(/hwupload/g)?.length, 6, 'WebRTC layers upload their frames too');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// A real ffmpeg sending RTP
// ---------------------------------------------------------------------------------------------------------------

/** Splits an FLV byte stream into its header and tags (tag = 11-byte header, body, PreviousTagSize). */
class FlvReader {
  header: Buffer | undefined;
  #buffer = Buffer.alloc(0);

  push(chunk: Buffer): Buffer[] {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    if (!this.header) {
      if (this.#buffer.length < 13) return [];
      this.header = this.#buffer.subarray(0, 13);
      this.#buffer = this.#buffer.subarray(13);
    }
    const tags: Buffer[] = [];
    while (this.#buffer.length >= 11) {
      const size = 11 + this.#buffer.readUIntBE(1, 3) + 4;
      if (this.#buffer.length < size) break;
      tags.push(this.#buffer.subarray(0, size));
      this.#buffer = this.#buffer.subarray(size);
    }
    return tags;
  }
}

const FLV_AUDIO = 8;
const FLV_VIDEO = 9;
const FLV_SCRIPT = 18;

/**
 * An OBS-like publisher without RTMP: ffmpeg from lavfi to FLV on stdout, cut into tags. Keeps what the ingest keeps
 * (metadata, sequence headers, the GOP since the last keyframe) so that the transcoder's `prelude()` is a decodable
 * start, at the first run and at restarts.
 */
class FlvSource {
  readonly child: ChildProcess;
  readonly #reader = new FlvReader();
  #headers: Buffer[] = [];
  #gop: Buffer[] = [];
  #onTag: ((tag: Buffer) => void) | undefined;
  readonly ready: Promise<void>;

  constructor(width: number, height: number) {
    this.child = spawn('ffmpeg', [
      '-hide_banner', '-nostdin', '-loglevel', 'error', '-re',
      '-f', 'lavfi', '-i', `testsrc2=size=${width}x${height}:rate=30`,
      '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
      '-t', '60', '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', '60', '-pix_fmt', 'yuv420p',
      '-c:a', 'aac', '-b:a', '96k', '-ac', '2', '-flvflags', 'no_duration_filesize', '-f', 'flv', 'pipe:1',
    ], { stdio: ['ignore', 'pipe', 'inherit'] });
    let resolveReady: () => void;
    this.ready = new Promise((resolve) => (resolveReady = resolve));
    this.child.stdout!.on('data', (chunk: Buffer) => {
      for (const tag of this.#reader.push(chunk)) {
        const type = tag[0]! & 0x1f;
        const body = tag.subarray(11);
        const sequenceHeader = (type === FLV_VIDEO && body[1] === 0) || (type === FLV_AUDIO && body[1] === 0);
        if (type === FLV_SCRIPT || sequenceHeader) {
          this.#headers.push(tag);
          continue;
        }
        if (type === FLV_VIDEO && body[0]! >> 4 === 1) {
          this.#gop = [tag];
          resolveReady();
        } else if (this.#gop.length > 0) {
          this.#gop.push(tag);
        }
        this.#onTag?.(tag);
      }
    });
  }

  prelude(): Buffer {
    return Buffer.concat([this.#reader.header!, ...this.#headers, ...this.#gop]);
  }

  /** Tags after the prelude taken now. */
  pipeTo(write: (tag: Buffer) => void): void {
    this.#onTag = write;
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }
}

/** A UDP socket on loopback that keeps the RTP packets it receives and wakes up waiters on each. */
class RtpSink {
  readonly packets: RtpPacket[] = [];
  #socket!: dgram.Socket;
  #waiters: { check: () => boolean; resolve: () => void }[] = [];

  static async open(): Promise<RtpSink> {
    const sink = new RtpSink();
    sink.#socket = dgram.createSocket('udp4');
    sink.#socket.on('message', (message) => {
      const packet = parseRtp(message);
      if (!packet) return;
      sink.packets.push(packet);
      sink.#waiters = sink.#waiters.filter((w) => (w.check() ? (w.resolve(), false) : true));
    });
    await new Promise<void>((resolve) => sink.#socket.bind(0, '127.0.0.1', resolve));
    return sink;
  }

  get port(): number {
    return this.#socket.address().port;
  }

  /** Resolves once `check` holds (checked on every packet); rejects after `timeoutMs`. */
  until(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} on port ${this.port}`)), timeoutMs);
      this.#waiters.push({ check, resolve: () => (clearTimeout(timer), resolve()) });
    });
  }

  close(): void {
    this.#socket.close();
  }
}

interface Receivers {
  video: RtpSink[];
  audio: RtpSink;
  targets: RtpTargets;
}

async function receivers(ssrcBase: number): Promise<Receivers> {
  const video = [await RtpSink.open(), await RtpSink.open()];
  const audio = await RtpSink.open();
  return {
    video,
    audio,
    targets: {
      videoPorts: video.map((s) => s.port),
      audioPort: audio.port,
      videoSsrcs: [ssrcBase + 1, ssrcBase + 2],
      audioSsrc: ssrcBase + 3,
      videoPayloadType: 101,
      audioPayloadType: 100,
    },
  };
}

const keyframes = (packets: RtpPacket[]): RtpPacket[][] =>
  frames(packets).filter((frame) => frame.some((p) => nalUnits(p.payload).some((n) => n.type === 5)));

describe('a live transcoder sends its WebRTC layers and Opus over RTP', { timeout: 60_000 }, () => {
  let flv: FlvSource;
  let transcoder: LiveTranscoder;
  let first: Receivers;
  let second: Receivers;
  const asked: LadderPlan[] = [];

  before(async () => {
    first = await receivers(0x9e000000); // above 2^31: ffmpeg's signed -ssrc must still put these bits on the wire
    second = await receivers(0x1000);
    flv = new FlvSource(640, 360);
    await flv.ready;
    transcoder = new LiveTranscoder({
      streamId: 'rtp-test',
      ffmpegPath: 'ffmpeg',
      encoder: 'libx264',
      x264Preset: 'ultrafast',
      partTargetMs: 200,
      vaapiDevice: '/dev/dri/renderD128',
      ladder: { heights: [180], passthrough: false, gopMs: 2000, webrtcHeights: [360, 180] },
      log: createLogger({ level: 'silent' }),
      restartBackoffMs: [0],
      rtp: (plan) => {
        asked.push(plan);
        return (asked.length === 1 ? first : second).targets;
      },
    });
    transcoder.attach({ source: { ...source(640, 360), audioSampleRate: 48000, audioChannels: 2 }, prelude: () => flv.prelude() });
    flv.pipeTo((tag) => transcoder.write(tag));
  });

  after(async () => {
    flv?.stop();
    await transcoder?.close();
    for (const sink of [...(first?.video ?? []), first?.audio, ...(second?.video ?? []), second?.audio]) sink?.close();
  });

  test('every layer port gets H.264 with its SSRC and payload type; SPS leads each keyframe, one per second', async () => {
    // Four keyframes on each layer: three whole GOPs to measure.
    await Promise.all(first.video.map((sink) => sink.until('4 keyframes', () => keyframes(sink.packets).length >= 4, 20_000)));
    assert.equal(asked.length, 1, 'the targets were asked once, at the start');
    assert.deepEqual(asked[0]!.webrtc!.layers.map((l) => l.name), ['w180', 'w360']);
    assert.deepEqual(transcoder.rtp?.video.map((v) => [v.layer.name, v.port, v.ssrc]),
      [['w180', first.targets.videoPorts[0], first.targets.videoSsrcs[0]], ['w360', first.targets.videoPorts[1], first.targets.videoSsrcs[1]]]);

    for (const [i, sink] of first.video.entries()) {
      const layer = `layer ${i}`;
      assert.ok(sink.packets.every((p) => p.ssrc === first.targets.videoSsrcs[i]), `${layer}: SSRC ${first.targets.videoSsrcs[i]}`);
      assert.ok(sink.packets.every((p) => p.payloadType === 101), `${layer}: payload type 101`);
      assert.ok(sink.packets.every((p) => p.payload.length + 12 <= 1200), `${layer}: packets fit 1200 bytes`);

      const all = frames(sink.packets);
      // The marker bit ends every frame and nothing else (rfc6184 §5.1).
      for (const frame of all) {
        assert.deepEqual(frame.map((p) => p.marker), [...frame.slice(1).map(() => false), true], `${layer}: marker at ts ${frame[0]!.timestamp}`);
      }
      // Every keyframe access unit starts with an SPS, ahead of its first IDR slice, in the same timestamp.
      const keys = keyframes(sink.packets);
      for (const frame of keys) {
        const types = frame.flatMap((p) => nalUnits(p.payload).map((n) => n.type));
        const sps = types.indexOf(7);
        assert.ok(sps >= 0 && sps < types.indexOf(5), `${layer}: SPS before IDR in [${types.join(',')}]`);
        assert.ok(types.indexOf(8) > sps && types.indexOf(8) < types.indexOf(5), `${layer}: PPS between them in [${types.join(',')}]`);
        const spsUnit = frame.flatMap((p) => nalUnits(p.payload)).find((n) => n.type === 7)!.data;
        assert.equal(spsUnit[1], 66, `${layer}: profile_idc 66 (Baseline)`);
        assert.ok(spsUnit[2]! & 0x40, `${layer}: constraint_set1_flag (constrained Baseline)`);
        assert.equal(spsUnit[3], 31, `${layer}: level 3.1`);
      }
      // A keyframe every second: 30 frames at 30 fps, 90 000 ticks of the 90 kHz clock.
      const keyIndexes = keys.map((k) => all.indexOf(k));
      for (let k = 1; k < keys.length; k++) {
        const ticks = (keys[k]![0]!.timestamp - keys[k - 1]![0]!.timestamp) >>> 0;
        assert.ok(ticks <= 90_000 * 1.05, `${layer}: keyframes ${ticks / 90} ms apart`);
        assert.ok(keyIndexes[k]! - keyIndexes[k - 1]! <= 30, `${layer}: ${keyIndexes[k]! - keyIndexes[k - 1]!} frames between keyframes`);
      }
      // Frames are 1/30 s apart.
      const steps = all.slice(1).map((f, j) => (f[0]!.timestamp - all[j]![0]!.timestamp) >>> 0);
      const median = [...steps].sort((a, b) => a - b)[steps.length >> 1];
      assert.equal(median, 3000, `${layer}: frame step ${median} ticks`);
    }
  });

  test('the audio port gets Opus: its SSRC and payload type, 20 ms packets, timestamps 960 apart', async () => {
    const sink = first.audio;
    await sink.until('50 Opus packets', () => sink.packets.length >= 50, 10_000);
    assert.ok(sink.packets.every((p) => p.ssrc === first.targets.audioSsrc && p.payloadType === 100));
    const packets = inSequence(sink.packets);
    for (let i = 1; i < packets.length; i++) {
      assert.equal((packets[i]!.timestamp - packets[i - 1]!.timestamp) >>> 0, 960, `timestamp step at packet ${i}`);
    }
    for (const p of packets) assert.equal(opusPacketMs(p.payload), 20, 'one 20 ms Opus frame per packet');
  });

  test('a restarted ffmpeg asks for targets again and sends there; the old run has stopped sending', async () => {
    const restarted = transcoder.next('start', 20_000, ({ reason }) => reason === 'restart');
    process.kill(transcoder.pid!, 'SIGKILL');
    await restarted;
    assert.equal(asked.length, 2, 'asked again at the restart');
    assert.deepEqual(transcoder.rtp?.video.map((v) => v.port), second.targets.videoPorts);

    await Promise.all(second.video.map((sink) => sink.until('first packet', () => sink.packets.length > 0, 20_000)));
    const before = [...first.video, first.audio].map((sink) => sink.packets.length);
    await Promise.all([
      ...second.video.map((sink) => sink.until('2 keyframes', () => keyframes(sink.packets).length >= 2, 20_000)),
      second.audio.until('25 Opus packets', () => second.audio.packets.length >= 25, 20_000),
    ]);
    assert.deepEqual([...first.video, first.audio].map((sink) => sink.packets.length), before, 'nothing more on the first run’s ports');
    for (const [i, sink] of second.video.entries()) {
      assert.ok(sink.packets.every((p) => p.ssrc === second.targets.videoSsrcs[i] && p.payloadType === 101));
      const firstKey = keyframes(sink.packets)[0]!;
      const types = firstKey.flatMap((p) => nalUnits(p.payload).map((n) => n.type));
      assert.ok(types.indexOf(7) >= 0 && types.indexOf(7) < types.indexOf(5), `SPS before IDR after the restart: [${types.join(',')}]`);
    }
    assert.ok(second.audio.packets.every((p) => p.ssrc === second.targets.audioSsrc));
  });

  test('closing the transcoder stops ffmpeg and with it the RTP output', async () => {
    const pid = transcoder.pid!;
    await transcoder.close();
    assert.equal(transcoder.rtp, undefined);
    assert.throws(() => process.kill(pid, 0), /ESRCH/, 'ffmpeg is gone');
  });
});
