import { spawn } from 'node:child_process';
import { buildFfmpegArgs, type Option } from './ffmpegArgs.js';

export type HwaccelSetting = 'auto' | 'none' | 'nvenc' | 'vaapi' | 'qsv';
export type VideoEncoderKind = 'libx264' | 'nvenc' | 'vaapi' | 'qsv';

export interface EncoderChoice {
  kind: VideoEncoderKind;
  /** Why this encoder: which probes failed and how (shown in the start-up log and in /readyz details). */
  reason: string;
}

export interface HwProbeOptions {
  ffmpegPath: string;
  vaapiDevice: string;
  /** Per-probe limit; a hanging driver must not hold up start-up. */
  timeoutMs?: number;
}

/** Global options a hardware encoder needs (device set-up), in front of the inputs. */
export function hwGlobalOptions(kind: VideoEncoderKind, vaapiDevice: string): Option[] {
  switch (kind) {
    case 'vaapi':
      return [['-vaapi_device', vaapiDevice]];
    case 'qsv':
      return [['-init_hw_device', 'qsv=hw'], ['-filter_hw_device', 'hw']];
    default:
      return [];
  }
}

/** The tail of a rendition's filter chain that hands frames to the encoder (upload for VAAPI/QSV). */
export function hwUploadFilter(kind: VideoEncoderKind): string {
  switch (kind) {
    case 'vaapi':
      return ',format=nv12,hwupload';
    case 'qsv':
      return ',format=nv12,hwupload=extra_hw_frames=64';
    default:
      return ',format=yuv420p';
  }
}

export interface VideoEncodeParams {
  kbps: number;
  gopFrames: number;
  /** libx264 preset; hardware encoders use their low-latency presets. */
  x264Preset: string;
}

/**
 * Encoder options for one rendition. Every kind gets a fixed GOP (no scene-cut keyframes) so that segment boundaries
 * line up across rungs, CBR-like rate control with a VBV buffer of one second, and no B-frames: the same fragments
 * feed WebRTC, which has no B-frames, and the encoder delay stays at a frame.
 */
export function videoEncoderOptions(kind: VideoEncoderKind, stream: number, p: VideoEncodeParams): Option[] {
  const v = `:v:${stream}` as const;
  const rate: Option[] = [[`-b${v}`, `${p.kbps}k`], [`-maxrate${v}`, `${Math.round(p.kbps * 1.2)}k`], [`-bufsize${v}`, `${p.kbps}k`]];
  const gop: Option[] = [[`-g${v}`, p.gopFrames], [`-keyint_min${v}`, p.gopFrames]];
  switch (kind) {
    case 'libx264':
      return [[`-c${v}`, 'libx264'], [`-preset${v}`, p.x264Preset], [`-tune${v}`, 'zerolatency'], [`-profile${v}`, 'high'], ...gop, [`-sc_threshold${v}`, 0],
        [`-bf${v}`, 0], ...rate];
    case 'nvenc':
      return [[`-c${v}`, 'h264_nvenc'], [`-preset${v}`, 'p4'], [`-tune${v}`, 'll'], [`-rc${v}`, 'cbr'], ...gop,
        [`-no-scenecut${v}`, 1], [`-forced-idr${v}`, 1], [`-bf${v}`, 0], ...rate];
    case 'vaapi':
      return [[`-c${v}`, 'h264_vaapi'], [`-rc_mode${v}`, 'CBR'], ...gop, [`-bf${v}`, 0], ...rate];
    case 'qsv':
      return [[`-c${v}`, 'h264_qsv'], [`-preset${v}`, 'veryfast'], [`-look_ahead${v}`, 0], ...gop, [`-idr_interval${v}`, 0],
        [`-bf${v}`, 0], ...rate];
  }
}

const PROBE_ORDER: readonly Exclude<VideoEncoderKind, 'libx264'>[] = ['nvenc', 'qsv', 'vaapi'];

/** Arguments of the one-frame test encode for a hardware kind. */
export function probeArgs(kind: Exclude<VideoEncoderKind, 'libx264'>, vaapiDevice: string): string[] {
  return buildFfmpegArgs({
    global: [['-hide_banner'], ['-nostdin'], ['-loglevel', 'error'], ...hwGlobalOptions(kind, vaapiDevice)],
    inputs: [{ options: [['-f', 'lavfi']], url: 'color=c=black:size=320x180:rate=30' }],
    filterComplex: `[0:v]scale=320:180${hwUploadFilter(kind)}[v]`,
    outputs: [{
      options: [['-map', '[v]'], ['-frames:v', 1], ...videoEncoderOptions(kind, 0, { kbps: 500, gopFrames: 30, x264Preset: 'ultrafast' }), ['-f', 'null']],
      url: '-',
    }],
  });
}

function runProbe(ffmpegPath: string, argv: string[], timeoutMs: number): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    const child = spawn(ffmpegPath, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      if (stderr.length < 4000) stderr += text;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      resolve({ ok: false, detail: error.message });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const lastLine = stderr.trim().split('\n').pop() ?? '';
      resolve({ ok: code === 0, detail: code === 0 ? 'ok' : signal ? `killed by ${signal}` : lastLine || `exit ${code}` });
    });
  });
}

/**
 * Chooses the video encoder: `auto` tries NVENC, QSV and VAAPI with a one-frame test encode and falls back to
 * libx264; a named kind that fails its probe also falls back, with the reason, so a node never refuses to stream.
 */
export async function chooseEncoder(setting: HwaccelSetting, options: HwProbeOptions): Promise<EncoderChoice> {
  if (setting === 'none') return { kind: 'libx264', reason: 'ONAIR_HWACCEL=none' };
  const candidates = setting === 'auto' ? PROBE_ORDER : [setting];
  const failures: string[] = [];
  for (const kind of candidates) {
    const result = await runProbe(options.ffmpegPath, probeArgs(kind, options.vaapiDevice), options.timeoutMs ?? 5000);
    if (result.ok) return { kind, reason: `${kind} test encode succeeded` };
    failures.push(`${kind}: ${result.detail}`);
  }
  return { kind: 'libx264', reason: `no hardware encoder (${failures.join('; ')})` };
}
