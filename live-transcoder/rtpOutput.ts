import type { FfmpegOutput, Option } from './ffmpegArgs.js';
import type { VideoEncoderKind } from './hwaccel.js';
import type { LadderPlan, WebRtcAudio, WebRtcLayer, WebRtcPlan } from './ladder.js';

/**
 * Where the live ffmpeg sends its WebRTC feed: plain RTP on loopback, one UDP port per simulcast layer and one for
 * audio, as the WebRTC room hands them out. RTCP goes to `port + 1` (ffmpeg's rtp muxer default).
 */
export interface RtpTargets {
  /** One per layer, low → high. Extra ports are left unused; with fewer ports than layers the highest are not sent. */
  videoPorts: number[];
  /** Absent: no audio on the feed. */
  audioPort?: number;
  /** One per layer, low → high, in step with `videoPorts` (unsigned 32-bit, not 0). */
  videoSsrcs: number[];
  audioSsrc?: number;
  /** Dynamic payload types (96–127) the SFU's producers were created with. */
  videoPayloadType: number;
  audioPayloadType: number;
}

/** One layer as it is sent. */
export interface RtpVideoStream {
  layer: WebRtcLayer;
  port: number;
  ssrc: number;
  payloadType: number;
}

export interface RtpAudioStream {
  audio: WebRtcAudio;
  port: number;
  ssrc: number;
  payloadType: number;
}

/** What one ffmpeg run actually sends: the plan's layers matched with the targets. */
export interface RtpFeed {
  /** Low → high; may be fewer than the plan's layers when fewer ports were given. */
  video: RtpVideoStream[];
  audio: RtpAudioStream | undefined;
  gopMs: number;
}

/** An RTP packet (12-byte header included) fits a 1280-byte IPv6 MTU with room for SRTP and header extensions. */
export const RTP_PACKET_SIZE = 1200;
export const RTP_HOST = '127.0.0.1';

/** Checks the targets a WebRTC room handed out; throws a `RangeError` naming the bad field. */
export function validateRtpTargets(targets: RtpTargets): void {
  const port = (value: unknown, name: string): void => {
    if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > 65534) {
      throw new RangeError(`RtpTargets.${name}: expected a UDP port from 1 to 65534 (RTCP goes to port + 1), got ${String(value)}`);
    }
  };
  const ssrc = (value: unknown, name: string): void => {
    // ffmpeg's rtp muxer draws a random SSRC for 0, which the SFU would not know.
    if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > 0xffffffff) {
      throw new RangeError(`RtpTargets.${name}: expected an SSRC from 1 to 2^32-1, got ${String(value)}`);
    }
  };
  const payloadType = (value: unknown, name: string): void => {
    // rfc3551 §6: 96–127 are dynamic; 72–76 would also clash with RTCP on a muxed port (rfc5761 §4).
    if (!Number.isInteger(value) || (value as number) < 96 || (value as number) > 127) {
      throw new RangeError(`RtpTargets.${name}: expected a dynamic payload type from 96 to 127, got ${String(value)}`);
    }
  };
  targets.videoPorts.forEach((p, i) => port(p, `videoPorts[${i}]`));
  targets.videoSsrcs.forEach((s, i) => ssrc(s, `videoSsrcs[${i}]`));
  if (targets.audioPort !== undefined) port(targets.audioPort, 'audioPort');
  if (targets.audioSsrc !== undefined) ssrc(targets.audioSsrc, 'audioSsrc');
  payloadType(targets.videoPayloadType, 'videoPayloadType');
  payloadType(targets.audioPayloadType, 'audioPayloadType');
}

/**
 * Matches a plan's WebRTC layers with the targets: layer i goes to `videoPorts[i]` with `videoSsrcs[i]`. Undefined
 * when there is nothing to send (WebRTC off in the plan, or no targets).
 */
export function rtpFeed(plan: LadderPlan, targets: RtpTargets | undefined): RtpFeed | undefined {
  const webrtc: WebRtcPlan | undefined = plan.webrtc;
  if (!webrtc || !targets) return undefined;
  validateRtpTargets(targets);
  const count = Math.min(webrtc.layers.length, targets.videoPorts.length, targets.videoSsrcs.length);
  const video = webrtc.layers.slice(0, count).map((layer, i) => ({
    layer,
    port: targets.videoPorts[i]!,
    ssrc: targets.videoSsrcs[i]!,
    payloadType: targets.videoPayloadType,
  }));
  const audio = webrtc.audio && targets.audioPort !== undefined && targets.audioSsrc !== undefined
    ? { audio: webrtc.audio, port: targets.audioPort, ssrc: targets.audioSsrc, payloadType: targets.audioPayloadType }
    : undefined;
  if (video.length === 0 && !audio) return undefined;
  return { video, audio, gopMs: webrtc.gopMs };
}

/** H.264 levels by macroblocks per frame and per second (H.264 Table A-1), the ones a WebRTC layer may need. */
const H264_LEVELS: readonly { level: string; frameMbs: number; mbsPerSec: number }[] = [
  { level: '3.1', frameMbs: 3600, mbsPerSec: 108_000 },
  { level: '3.2', frameMbs: 5120, mbsPerSec: 216_000 },
  { level: '4.0', frameMbs: 8192, mbsPerSec: 245_760 },
  { level: '4.2', frameMbs: 8704, mbsPerSec: 522_240 },
  { level: '5.1', frameMbs: 36_864, mbsPerSec: 983_040 },
];

/** The lowest level at or above 3.1 (browsers' `42e01f`) that holds the layer. */
export function h264LevelFor(width: number, height: number, fps: number): string {
  const frameMbs = Math.ceil(width / 16) * Math.ceil(height / 16);
  const fit = H264_LEVELS.find((l) => frameMbs <= l.frameMbs && frameMbs * fps <= l.mbsPerSec);
  return (fit ?? H264_LEVELS[H264_LEVELS.length - 1]!).level;
}

/** ffmpeg's `-ssrc` is a signed 32-bit option; the muxer writes its bits as they are. */
export function ssrcOption(ssrc: number): number {
  return ssrc | 0;
}

export interface RtpVideoEncodeParams {
  kbps: number;
  gopFrames: number;
  level: string;
  /** libx264 preset; hardware encoders use their low-latency presets. */
  x264Preset: string;
}

/**
 * Encoder options for one WebRTC layer: constrained Baseline (what every browser decodes in hardware and software,
 * `profile-level-id=42e01f`), no B-frames, no lookahead, a fixed one-second GOP without scene cuts, and CBR-like rate
 * control with a half-second VBV so that a layer's bitrate stays near what the SFU's bandwidth estimate expects.
 */
export function rtpVideoEncoderOptions(kind: VideoEncoderKind, p: RtpVideoEncodeParams): Option[] {
  const rate: Option[] = [['-b:v', `${p.kbps}k`], ['-maxrate:v', `${p.kbps}k`], ['-bufsize:v', `${Math.max(1, Math.round(p.kbps / 2))}k`]];
  const gop: Option[] = [['-g:v', p.gopFrames], ['-keyint_min:v', p.gopFrames]];
  switch (kind) {
    case 'libx264':
      // zerolatency: no lookahead, no frame threads (sliced threads instead), so a frame leaves as soon as it is coded.
      return [['-c:v', 'libx264'], ['-preset:v', p.x264Preset], ['-tune:v', 'zerolatency'], ['-profile:v', 'baseline'],
        ['-level:v', p.level], ...gop, ['-sc_threshold:v', 0], ['-bf:v', 0], ...rate];
    case 'nvenc':
      return [['-c:v', 'h264_nvenc'], ['-preset:v', 'p4'], ['-tune:v', 'ull'], ['-profile:v', 'baseline'], ['-level:v', p.level],
        ['-rc:v', 'cbr'], ['-zerolatency:v', 1], ['-delay:v', 0], ['-rc-lookahead:v', 0], ...gop, ['-no-scenecut:v', 1],
        ['-bf:v', 0], ...rate];
    case 'vaapi':
      return [['-c:v', 'h264_vaapi'], ['-profile:v', 'constrained_baseline'], ['-level:v', p.level], ['-rc_mode:v', 'CBR'],
        ...gop, ['-bf:v', 0], ...rate];
    case 'qsv':
      // h264_qsv takes the level as a number (31), not as a named constant.
      return [['-c:v', 'h264_qsv'], ['-preset:v', 'veryfast'], ['-profile:v', 'baseline'], ['-level:v', Math.round(Number(p.level) * 10)],
        ['-look_ahead:v', 0], ['-async_depth:v', 1], ...gop, ['-idr_interval:v', 0], ['-bf:v', 0], ...rate];
  }
}

function rtpUrl(port: number): string {
  return `rtp://${RTP_HOST}:${port}?pkt_size=${RTP_PACKET_SIZE}`;
}

function rtpMuxerOptions(payloadType: number, ssrc: number): Option[] {
  return [['-max_muxing_queue_size', 1024], ['-payload_type', payloadType], ['-ssrc', ssrcOption(ssrc)], ['-f', 'rtp']];
}

/** The output of one layer, reading the filter graph's `[label]`. */
export function rtpVideoOutput(stream: RtpVideoStream, label: string, kind: VideoEncoderKind, x264Preset: string, gopMs: number): FfmpegOutput {
  const { layer } = stream;
  const options: Option[] = [
    ['-map', `[${label}]`],
    ...rtpVideoEncoderOptions(kind, {
      kbps: layer.kbps,
      gopFrames: Math.max(1, Math.round((layer.fps * gopMs) / 1000)),
      level: h264LevelFor(layer.width, layer.height, layer.fps),
      x264Preset,
    }),
    // SPS and PPS in front of every IDR: the SFU (mediasoup) detects keyframes by the SPS, and a viewer joining
    // mid-stream can decode from any keyframe.
    ['-bsf:v', 'dump_extra=freq=keyframe'],
    ...rtpMuxerOptions(stream.payloadType, stream.ssrc),
  ];
  return { options, url: rtpUrl(stream.port) };
}

/**
 * The Opus output: 20 ms frames, the packetization every WebRTC stack expects (a timestamp step of 960 at 48 kHz).
 * `label`: read the filter graph's `[label]` instead of the first input's audio (the graph then does the resampling).
 */
export function rtpAudioOutput(stream: RtpAudioStream, label?: string): FfmpegOutput {
  const { audio } = stream;
  const options: Option[] = [
    // FLV carries millisecond timestamps: ±0.5 ms of rounding on every input frame would reach the Opus packets'
    // RTP timestamps (steps of 944/976 instead of 960). aresample's async mode keeps its own sample count and only
    // corrects drift beyond 1 ms (filling or trimming gaps over 100 ms), so the timestamps stay contiguous.
    ...(label === undefined ? [['-map', '0:a:0'], ['-af', 'aresample=async=1']] as Option[] : [['-map', `[${label}]`]] as Option[]),
    ['-c:a', 'libopus'], ['-b:a', `${audio.kbps}k`], ['-ar', audio.sampleRate], ['-ac', audio.channels],
    ['-frame_duration', audio.frameMs], ['-application', 'audio'],
    ...rtpMuxerOptions(stream.payloadType, stream.ssrc),
  ];
  return { options, url: rtpUrl(stream.port) };
}
