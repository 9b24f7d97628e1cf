import { StringDecoder } from 'node:string_decoder';
import { TypedEmitter } from '../lib/emitter.js';

/** One block of FFmpeg's `-progress` report. Fields FFmpeg prints as `N/A` read as 0 unless noted. */
export interface Progress {
  /** Frames encoded so far (of the first video output stream). */
  frame: number;
  /** Encoding rate in frames per second. */
  fps: number;
  /** Output bitrate in kbit/s; undefined while FFmpeg prints `N/A` (always so for pipes and `-f null`). */
  bitrateKbps: number | undefined;
  /** Bytes written so far (`total_size`). */
  totalSize: number;
  /** Output position in integer milliseconds; 0 before the first timestamp. */
  outTimeMs: number;
  /** Encoding speed as a multiple of real time (`1.01x` → 1.01); undefined while FFmpeg prints `N/A`. */
  speed: number | undefined;
  /** Frames duplicated to keep the output rate. */
  dupFrames: number;
  /** Frames dropped to keep the output rate. */
  dropFrames: number;
  /** True for the last block (`progress=end`): FFmpeg is finishing. */
  end: boolean;
}

export interface ProgressParserEvents {
  progress: [Progress];
}

/**
 * Reads FFmpeg's `-progress pipe:N` output: blocks of `key=value` lines, each block closed by `progress=continue` or
 * `progress=end`. Chunks may cut lines anywhere; a block is emitted once its `progress=` line is complete.
 */
export class ProgressParser extends TypedEmitter<ProgressParserEvents> {
  readonly #decoder = new StringDecoder('utf8');
  #partialLine = '';
  #fields = new Map<string, string>();

  push(chunk: Buffer | string): void {
    const text = this.#partialLine + (typeof chunk === 'string' ? chunk : this.#decoder.write(chunk));
    const lines = text.split('\n');
    this.#partialLine = lines.pop() ?? '';
    for (const line of lines) this.#onLine(line);
  }

  #onLine(rawLine: string): void {
    const line = rawLine.trim();
    const equals = line.indexOf('=');
    if (equals <= 0) return;
    const key = line.slice(0, equals).trim();
    const value = line.slice(equals + 1).trim();
    if (key !== 'progress') {
      this.#fields.set(key, value);
      return;
    }
    const fields = this.#fields;
    this.#fields = new Map();
    this.safeEmit('progress', toProgress(fields, value === 'end'));
  }
}

function toProgress(fields: Map<string, string>, end: boolean): Progress {
  return {
    frame: numberOr0(fields.get('frame')),
    fps: numberOr0(fields.get('fps')),
    bitrateKbps: leadingNumber(fields.get('bitrate')),
    totalSize: numberOr0(fields.get('total_size')),
    outTimeMs: outTimeMs(fields),
    speed: leadingNumber(fields.get('speed')),
    dupFrames: numberOr0(fields.get('dup_frames')),
    dropFrames: numberOr0(fields.get('drop_frames')),
    end,
  };
}

/**
 * `out_time_us` is microseconds; so is `out_time_ms`, despite its name (kept by FFmpeg for compatibility). Before the
 * first timestamp FFmpeg prints `N/A` or a huge negative value (AV_NOPTS_VALUE), both read as 0.
 */
function outTimeMs(fields: Map<string, string>): number {
  for (const key of ['out_time_us', 'out_time_ms']) {
    const microseconds = Number(fields.get(key));
    if (Number.isFinite(microseconds) && fields.get(key) !== '') return Math.max(0, Math.round(microseconds / 1000));
  }
  const clock = /^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$/.exec(fields.get('out_time') ?? '');
  if (clock === null) return 0;
  const [, hours, minutes, seconds] = clock;
  return Math.round(((Number(hours) * 60 + Number(minutes)) * 60 + Number(seconds)) * 1000);
}

function numberOr0(value: string | undefined): number {
  const number = Number(value);
  return value !== undefined && value !== '' && Number.isFinite(number) ? number : 0;
}

/** `512.3kbits/s` → 512.3, `1.01x` → 1.01, `N/A` → undefined. */
function leadingNumber(value: string | undefined): number | undefined {
  const match = /^[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?/i.exec(value ?? '');
  return match === null ? undefined : Number(match[0]);
}
