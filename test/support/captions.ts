import { spawn, type ChildProcess } from 'node:child_process';
import { Transform, type TransformCallback } from 'node:stream';

/**
 * A publisher whose H.264 carries CEA-608 captions, as OBS and broadcast encoders send them: ATSC A/53 `GA94` user data
 * in SEI messages (ITU-T T.35, payload type 4), one CEA-608 byte pair per frame, field 1, channel 1 (CC1). Debian's
 * ffmpeg has no CEA-608 encoder, so the SEI is written here: ffmpeg encodes (Annex B on a pipe), `SeiCaptionInjector`
 * puts one SEI before the first slice of each picture, and a second ffmpeg copies the video into FLV beside the audio.
 */

/** The byte with odd parity in its top bit, as CEA-608 sends every byte. */
function odd(byte: number): number {
  let ones = 0;
  for (let b = byte & 0x7f; b; b >>= 1) ones += b & 1;
  return ones % 2 === 0 ? (byte & 0x7f) | 0x80 : byte & 0x7f;
}

const pair = (a: number, b: number): [number, number] => [odd(a), odd(b)];
/** Control codes go twice, in successive frames (CEA-608 §D.2: a receiver ignores the repeat). */
const control = (a: number, b: number): [number, number][] => [pair(a, b), pair(a, b)];
const NULL_PAIR: [number, number] = [0x80, 0x80];

/**
 * The byte pairs of roll-up captions, two rows (RU2): each line starts on a new row (carriage return), at column 0 of
 * row 15, followed by padding so that a line stays on screen about `framesPerLine` frames.
 */
export function rollUpPairs(lines: readonly string[], framesPerLine = 45): [number, number][] {
  const pairs: [number, number][] = [];
  for (const line of lines) {
    const start = pairs.length;
    pairs.push(...control(0x14, 0x25)); // RU2: roll-up, two rows
    pairs.push(...control(0x14, 0x2d)); // CR: the rows roll up, the cursor to the base row's start
    pairs.push(...control(0x14, 0x70)); // PAC: row 15, column 0, white
    const text = line.replace(/[^ -~]/g, ' ');
    for (let i = 0; i < text.length; i += 2) pairs.push(pair(text.charCodeAt(i), i + 1 < text.length ? text.charCodeAt(i + 1) : 0));
    while (pairs.length - start < framesPerLine) pairs.push(NULL_PAIR);
  }
  return pairs;
}

/** The SEI NAL unit (with emulation prevention) carrying `cc` as A/53 cc_data, field 1. */
export function captionSei(cc: [number, number]): Buffer {
  const payload = [
    0xb5, 0x00, 0x31, // ITU-T T.35: United States, ATSC
    0x47, 0x41, 0x39, 0x34, // 'GA94'
    0x03, // user_data_type_code: cc_data
    0x40 | 1, // process_cc_data_flag, cc_count 1
    0xff, // em_data
    0xfc, cc[0], cc[1], // marker bits, cc_valid, cc_type 0 (NTSC field 1)
    0xff, // marker bits
  ];
  const rbsp = [4, payload.length, ...payload, 0x80];
  const out = [0x06];
  let zeros = 0;
  for (const byte of rbsp) {
    if (zeros >= 2 && byte <= 3) {
      out.push(0x03);
      zeros = 0;
    }
    out.push(byte);
    zeros = byte === 0 ? zeros + 1 : 0;
  }
  return Buffer.from(out);
}

/**
 * An Annex B H.264 stream in, the same stream out with a caption SEI before the first slice of each picture (a slice
 * whose first_mb_in_slice is 0: its ue(v) starts with a 1 bit). Each picture takes the next pair of `pairs`, round.
 */
export class SeiCaptionInjector extends Transform {
  #pending = Buffer.alloc(0);
  #next = 0;
  readonly #pairs: readonly [number, number][];

  constructor(pairs: readonly [number, number][]) {
    super();
    this.#pairs = pairs;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.#pending = Buffer.concat([this.#pending, chunk]);
    // Emit every complete NAL unit: those followed by the next start code.
    let start = startCode(this.#pending, 0);
    if (start < 0) return done();
    for (;;) {
      const next = startCode(this.#pending, start + 3);
      if (next < 0) break;
      this.#emit(this.#pending.subarray(start, next));
      start = next;
    }
    this.#pending = this.#pending.subarray(start);
    done();
  }

  override _flush(done: TransformCallback): void {
    if (this.#pending.length) this.#emit(this.#pending);
    done();
  }

  #emit(unit: Buffer): void {
    const header = unit[2] === 1 ? 3 : 4;
    const type = unit[header]! & 0x1f;
    if ((type === 1 || type === 5) && (unit[header + 1]! & 0x80) !== 0) {
      const cc = this.#pairs[this.#next++ % this.#pairs.length]!;
      this.push(Buffer.concat([Buffer.from([0, 0, 0, 1]), captionSei(cc)]));
    }
    this.push(unit);
  }
}

/** The offset of the next 00 00 01 (or 00 00 00 01) from `from`, -1 if none. */
function startCode(data: Buffer, from: number): number {
  for (let i = from; i + 2 < data.length; i++) {
    if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 1) return i > from && data[i - 1] === 0 ? i - 1 : i;
  }
  return -1;
}

export interface CaptionedPublisher {
  exited: Promise<void>;
  stop(): void;
  stderr(): string;
}

/** Publishes `testsrc2` with a sine tone and CEA-608 roll-up captions of `lines` (round) to `rtmpUrl`, in real time. */
export function publishCaptioned(rtmpUrl: string, lines: readonly string[], options: { width?: number; height?: number; fps?: number } = {}): CaptionedPublisher {
  const { width = 640, height = 360, fps = 30 } = options;
  const encoder = spawn('ffmpeg', [
    '-hide_banner', '-nostdin', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', `testsrc2=size=${width}x${height}:rate=${fps}`,
    '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', String(fps * 2), '-keyint_min', String(fps * 2),
    '-b:v', '1500k', '-pix_fmt', 'yuv420p', '-f', 'h264', 'pipe:1',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const muxer = spawn('ffmpeg', [
    '-hide_banner', '-nostdin', '-loglevel', 'error',
    '-probesize', '65536', '-analyzeduration', '200000', '-f', 'h264', '-framerate', String(fps), '-i', 'pipe:0',
    '-re', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-map', '0:v', '-map', '1:a', '-c:v', 'copy', '-c:a', 'aac', '-b:a', '128k', '-f', 'flv', rtmpUrl,
  ], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  const keep = (child: ChildProcess) => child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-8192);
  });
  keep(encoder);
  keep(muxer);
  const injector = new SeiCaptionInjector(rollUpPairs(lines, fps + fps / 2));
  encoder.stdout!.pipe(injector).pipe(muxer.stdin!);
  // A muxer gone (the server refused it) must not throw an EPIPE into the test.
  muxer.stdin!.on('error', () => {});
  const exited = Promise.all([
    new Promise<void>((resolve) => encoder.on('close', () => resolve())),
    new Promise<void>((resolve) => muxer.on('close', () => resolve())),
  ]).then(() => {});
  return {
    exited,
    stop() {
      encoder.kill('SIGKILL');
      muxer.kill('SIGKILL');
    },
    stderr: () => stderr,
  };
}
