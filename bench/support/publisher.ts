/*
 * The publish command the latency benchmarks share: what test/support/harness.ts `publish()` sends (an OBS-like
 * ffmpeg: lavfi test sources, `-re`, x264 ultrafast/zerolatency with a 2 s keyframe interval, AAC 48 kHz, FLV), with
 * any output (RTMP URL or `pipe:1`) and an optional video filter.
 */

export interface PublisherOptions {
  width: number;
  height: number;
  fps?: number;
  /** Media seconds: the publisher stops by itself after this. */
  durationSec: number;
  /** `-f flv` output: an RTMP URL or `pipe:1`. */
  output: string;
  /** A `-vf` chain applied to the test picture (the barcode below). */
  videoFilter?: string;
  videoKbps?: number;
}

export function publisherArgs(o: PublisherOptions): string[] {
  const fps = o.fps ?? 30;
  return [
    '-hide_banner', '-nostdin', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', `testsrc2=size=${o.width}x${o.height}:rate=${fps}`,
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', String(o.durationSec),
    ...(o.videoFilter === undefined ? [] : ['-vf', o.videoFilter]),
    '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', String(fps * 2), '-keyint_min', String(fps * 2),
    '-b:v', `${o.videoKbps ?? 1500}k`, '-pix_fmt', 'yuv420p',
    '-c:a', 'aac', '-b:a', '128k', '-ar', '48000',
    '-f', 'flv', o.output,
  ];
}

/**
 * The wall-clock barcode of /work/shared/measuring-latency.md, in source pixels of a 1280x720 picture: a black strip
 * on top, and in it one white box per bit of the capture time in ms modulo 2^20, least significant bit on the left.
 */
export const BARCODE = {
  bits: 20,
  sourceWidth: 1280,
  sourceHeight: 720,
  stripHeight: 48,
  /** Box k spans x from left + k * pitch, `width` wide; y from top, `height` high. */
  left: 32,
  pitch: 60,
  width: 40,
  top: 8,
  height: 32,
} as const;

/**
 * The filter chain that burns the capture time into each frame: the frame time becomes the wall clock at filtering
 * (microsecond time base first, so that it is not rounded to a frame), one drawbox per bit enabled by that bit of
 * floor(t*1000), then regular 30 fps timestamps again. With `-re`, a frame is filtered when it is "captured".
 */
export function barcodeFilter(fps = 30): string {
  const b = BARCODE;
  const boxes = Array.from({ length: b.bits }, (_, k) =>
    `drawbox=x=${b.left + k * b.pitch}:y=${b.top}:w=${b.width}:h=${b.height}:color=white:t=fill:` +
    `enable='eq(mod(floor(t*1000/${2 ** k}),2),1)'`);
  return [
    'settb=AVTB', 'setpts=RTCTIME/(TB*1000000)',
    `drawbox=x=0:y=0:w=iw:h=${b.stripHeight}:color=black:t=fill`,
    ...boxes,
    `setpts=N/${fps}/TB`, `settb=1/${fps}`,
  ].join(',');
}
