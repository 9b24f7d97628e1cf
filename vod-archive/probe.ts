import { open, stat } from 'node:fs/promises';
import { runTied } from '../lib/tiedProcess.js';
import type { ProbedSource } from './vodCommand.js';

/** A source the pipeline refuses: the job fails at once (no retry) with `reason` shown to the person who uploaded it. */
export class UnusableSourceError extends Error {
  readonly reason: string;
  constructor(reason: string) {
    super(reason);
    this.name = 'UnusableSourceError';
    this.reason = reason;
  }
}

/**
 * A VOD ffmpeg or ffprobe ran past its time limit and was stopped (SIGTERM, then SIGKILL). An ordinary failure of the
 * attempt: the job goes through the retry path; the message is the reason a person reads (`code` for programs).
 */
export class VodTimeLimitError extends Error {
  readonly code = 'ONAIR_VOD_TIME_LIMIT';
  readonly step: 'probe' | 'transcode';
  readonly limitMs: number;
  constructor(step: 'probe' | 'transcode', limitMs: number, detail = '') {
    super(`Time limit: ${step === 'probe' ? 'ffprobe' : 'ffmpeg (transcode)'} ran past its limit of ${formatSeconds(limitMs)}${detail} and was stopped.`);
    this.name = 'VodTimeLimitError';
    this.step = step;
    this.limitMs = limitMs;
  }
}

/** `1.5 s`, `42 s`, `5 min`, `2.5 h`: durations in a reason a person reads. */
export function formatSeconds(ms: number): string {
  if (ms < 120_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  if (ms < 2 * 3600_000) return `${Math.round(ms / 60_000)} min`;
  return `${Math.round(ms / 360_000) / 10} h`;
}

/** Default time limit of one ffprobe: reading a file's headers takes well under a second; 60 s is a file that never ends. */
export const PROBE_TIMEOUT_MS = 60_000;

/** Limits of what OnAir accepts; beyond them a file is more likely a mistake (or an attack) than a video. */
export const SOURCE_LIMITS = {
  maxDurationSec: 12 * 3600,
  minDurationSec: 0.1,
  maxWidth: 7680,
  maxHeight: 4320,
  minSide: 16,
  maxFps: 240,
} as const;

interface FfprobeOutput {
  format?: { duration?: string; format_name?: string };
  streams?: {
    codec_type?: string;
    codec_name?: string;
    width?: number;
    height?: number;
    avg_frame_rate?: string;
    r_frame_rate?: string;
    duration?: string;
    disposition?: { attached_pic?: number };
  }[];
}

function rate(text: string | undefined): number {
  const match = /^(\d+)\/(\d+)$/.exec(text ?? '');
  if (!match || Number(match[2]) === 0) return 0;
  return Number(match[1]) / Number(match[2]);
}

/** ffprobe's first error line, in the words ffprobe uses (kept short). */
function ffprobeReason(stderr: string): string {
  const line = stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '').pop() ?? '';
  // `/path/to/file: Invalid data…`: the path is ours, not the user's business.
  return line.replace(/^.*?: /, '').slice(0, 200);
}

/**
 * The probe step: ffprobe reads the file; a zero-byte file, something that is not a video, a truncated MP4 (no index),
 * or absurd numbers (a 100-hour or 20000-pixel "video") end as an UnusableSourceError whose reason a person
 * understands. Anything else (ffprobe missing, I/O) is an ordinary error and the job is retried.
 */
export async function probeSource(ffprobePath: string, file: string, options: { timeoutMs?: number } = {}): Promise<ProbedSource> {
  const info = await stat(file);
  if (info.isFile() && info.size === 0) throw new UnusableSourceError('The file is empty (0 bytes).');
  const timeoutMs = options.timeoutMs ?? PROBE_TIMEOUT_MS;
  const result = await runTied(ffprobePath, [
    '-v', 'error',
    '-show_entries', 'format=duration,format_name:stream=codec_type,codec_name,width,height,avg_frame_rate,r_frame_rate,duration:stream_disposition=attached_pic',
    '-of', 'json',
    file,
  ], { keepStdout: true, timeoutMs, graceMs: 2000 });
  if (result.timedOut) throw new VodTimeLimitError('probe', timeoutMs);
  if (result.code !== 0) {
    const why = ffprobeReason(result.stderr);
    if (/moov atom not found/i.test(result.stderr) && await looksLikeMp4(file)) {
      throw new UnusableSourceError('The file is incomplete: its MP4 index (moov) is missing, as happens when an upload or a recording was cut short.');
    }
    if (result.code === null) throw new Error(`ffprobe was stopped (${result.signal ?? 'unknown'})`);
    throw new UnusableSourceError(`The file is not a video OnAir can read (${why || 'unknown format'}).`);
  }
  let parsed: FfprobeOutput;
  try {
    parsed = JSON.parse(result.stdout) as FfprobeOutput;
  } catch {
    throw new UnusableSourceError('The file is not a video OnAir can read.');
  }
  const streams = parsed.streams ?? [];
  const video = streams.find((s) => s.codec_type === 'video' && s.disposition?.attached_pic !== 1);
  const audio = streams.find((s) => s.codec_type === 'audio');
  if (!video) {
    throw new UnusableSourceError(audio ? 'The file has sound but no video stream.' : 'The file is not a video: it has no video stream.');
  }
  const width = video.width ?? 0;
  const height = video.height ?? 0;
  const fps = rate(video.avg_frame_rate) || rate(video.r_frame_rate);
  const durationSec = Number(parsed.format?.duration ?? video.duration ?? NaN);
  const L = SOURCE_LIMITS;
  if (width < L.minSide || height < L.minSide) throw new UnusableSourceError(`The video is too small (${width}×${height}); at least ${L.minSide}×${L.minSide} is needed.`);
  if (width > L.maxWidth || height > L.maxHeight) throw new UnusableSourceError(`The video is too large (${width}×${height}); at most ${L.maxWidth}×${L.maxHeight} is accepted.`);
  if (!Number.isFinite(durationSec) || durationSec < L.minDurationSec) throw new UnusableSourceError('The video has no playable duration (is the file truncated?).');
  if (durationSec > L.maxDurationSec) throw new UnusableSourceError(`The video is too long (${Math.round(durationSec / 3600)} h); at most ${L.maxDurationSec / 3600} h is accepted.`);
  if (fps > L.maxFps) throw new UnusableSourceError(`The frame rate (${Math.round(fps)} fps) is beyond ${L.maxFps} fps.`);
  return {
    durationMs: Math.round(durationSec * 1000),
    width,
    height,
    fps: fps > 0 ? fps : 30,
    hasAudio: audio !== undefined,
    videoCodec: video.codec_name ?? 'unknown',
    audioCodec: audio?.codec_name,
  };
}

/** Does the file start like an ISO BMFF (MP4) file? Then a missing index means a cut-short file, not a non-video. */
async function looksLikeMp4(file: string): Promise<boolean> {
  const handle = await open(file, 'r');
  try {
    const { buffer, bytesRead } = await handle.read(Buffer.alloc(8), 0, 8, 0);
    return bytesRead === 8 && ['ftyp', 'moov', 'mdat', 'free', 'wide', 'skip'].includes(buffer.toString('latin1', 4, 8));
  } finally {
    await handle.close();
  }
}

/**
 * Several files played back to back (the publishes of one live event): each is probed, durations add up, the first
 * one's picture size leads the ladder.
 */
export async function probeSources(ffprobePath: string, files: readonly string[], options: { timeoutMs?: number } = {}): Promise<ProbedSource> {
  const probed: ProbedSource[] = [];
  for (const file of files) probed.push(await probeSource(ffprobePath, file, options));
  const first = probed[0]!;
  const durationMs = probed.reduce((sum, p) => sum + p.durationMs, 0);
  if (durationMs > SOURCE_LIMITS.maxDurationSec * 1000) throw new UnusableSourceError(`The video is too long; at most ${SOURCE_LIMITS.maxDurationSec / 3600} h is accepted.`);
  return { ...first, durationMs, hasAudio: probed.some((p) => p.hasAudio) };
}
