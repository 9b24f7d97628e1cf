/*
 * The publisher's own share of glass to glass: from a frame's barcode (the wall clock when it was captured) to the
 * moment its FLV tag leaves the publisher, measured on the same publish command with `pipe:1` as its output. The
 * tags are timed as they arrive on the pipe (FlvTagScanner); a second ffmpeg decodes the same bytes and the strip of
 * each picture gives its barcode, frame by frame in order. What RTMP on loopback adds is not in it (a TCP write).
 */
import { BenchError } from './benchmark.js';
import { FlvTagScanner } from './flv.js';
import { spawnBounded, type BoundedChild } from './process.js';
import { BARCODE, barcodeFilter, publisherArgs, type PublisherOptions } from './publisher.js';
import { summarize } from './stats.js';

/** The strip is decoded at half the source's size (box centres on whole pixels), in grey. */
const WIDTH = BARCODE.sourceWidth / 2;
const HEIGHT = BARCODE.stripHeight / 2;
const MODULO = 2 ** BARCODE.bits;

export interface PublisherDelay {
  p50: number;
  p90: number;
  frames: number;
}

/**
 * Publishes `seconds` of `source` (with the barcode) to a pipe and returns capture → tag out, ms, over the frames
 * after the first second (the encoder's start-up is not what a running publisher costs).
 */
export async function measurePublisherDelay(source: Omit<PublisherOptions, 'output' | 'durationSec' | 'videoFilter'>, seconds: number,
  signal: AbortSignal): Promise<PublisherDelay> {
  const fps = source.fps ?? 30;
  const publisher = spawnBounded('the publisher (delay probe)', 'ffmpeg',
    publisherArgs({ ...source, durationSec: seconds, output: 'pipe:1', videoFilter: barcodeFilter(fps) }),
    { timeoutMs: (seconds + 30) * 1000, signal, stdio: ['ignore', 'pipe'] });
  let decoder: BoundedChild | undefined;
  try {
    decoder = spawnBounded('the barcode decoder', 'ffmpeg', [
      '-hide_banner', '-nostdin', '-loglevel', 'error', '-f', 'flv', '-i', 'pipe:0',
      '-vf', `crop=${BARCODE.sourceWidth}:${BARCODE.stripHeight}:0:0,scale=${WIDTH}:${HEIGHT},format=gray`,
      '-f', 'rawvideo', 'pipe:1',
    ], { timeoutMs: (seconds + 30) * 1000, signal, stdio: ['pipe', 'pipe'] });
    const arrivals: number[] = [];
    const scanner = new FlvTagScanner((tag) => { if (tag.videoFrame) arrivals.push(Date.now()); });
    const decoderIn = decoder.child.stdin!;
    decoderIn.on('error', () => { /* the decoder's exit says why */ });
    publisher.child.stdout!.on('data', (chunk: Buffer) => {
      scanner.push(chunk);
      decoderIn.write(chunk);
    });
    publisher.child.stdout!.on('end', () => decoderIn.end());
    const codes: number[] = [];
    let pending = Buffer.alloc(0);
    const y = Math.round(((BARCODE.top + BARCODE.height / 2) * HEIGHT) / BARCODE.stripHeight);
    const xs = Array.from({ length: BARCODE.bits }, (_, k) =>
      Math.round(((BARCODE.left + k * BARCODE.pitch + BARCODE.width / 2) * WIDTH) / BARCODE.sourceWidth));
    decoder.child.stdout!.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= WIDTH * HEIGHT) {
        const picture = pending.subarray(0, WIDTH * HEIGHT);
        pending = pending.subarray(WIDTH * HEIGHT);
        codes.push(xs.reduce((value, x, k) => (picture[y * WIDTH + x]! > 128 ? value + 2 ** k : value), 0));
      }
    });
    await Promise.all([publisher.exited, decoder.exited]);
    const delays = codes.slice(fps, arrivals.length).map((code, i) => ((((arrivals[i + fps]! % MODULO) - code) % MODULO) + MODULO) % MODULO)
      .filter((ms) => ms < 10_000);
    const summary = summarize(delays);
    if (!summary) throw new BenchError(`the publisher delay probe decoded no frame (${codes.length} pictures, ${arrivals.length} tags)`);
    return { p50: summary.p50, p90: summary.p90, frames: delays.length };
  } finally {
    publisher.kill();
    decoder?.kill();
  }
}
