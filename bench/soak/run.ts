import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { abortOnSignals } from '../support/benchmark.js';
import { runSoak, type SoakOptions } from './soak.js';

/*
 * `npm run soak [-- --minutes N]`: the soak run of bench/soak/soak.ts with the load of issue #14 (50 LL-HLS viewers,
 * 20 WHEP viewers, 200 chat clients, a publisher reconnect every 2 minutes, an ad break every minute, uploads),
 * 10 minutes by default. Client counts are flags, for machines where the default load would starve the node it is
 * meant to measure: --hls, --whep, --chat, --uploads. Exit status 1 when a goal is missed (growth over 5 % after
 * minute 2, or a health check), 2 for bad flags.
 */

const MINUTE = 60_000;

function fail(message: string): never {
  process.stderr.write(`soak: ${message}\n`);
  process.exit(2);
}

function integer(value: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) fail(`--${name} must be an integer from ${min} to ${max}, not ${JSON.stringify(value)}`);
  return n;
}

function machine(): string {
  const ffmpeg = /ffmpeg version (\S+)/.exec(spawnSync('ffmpeg', ['-version'], { encoding: 'utf8', timeout: 10_000 }).stdout ?? '')?.[1] ?? 'unknown';
  return `${os.cpus()[0]?.model.trim() ?? 'unknown CPU'}, nproc ${os.availableParallelism()}, ${os.platform()} ${os.release()}, ` +
    `node ${process.version}, ffmpeg ${ffmpeg}, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`;
}

async function main(): Promise<number> {
  let values: Record<string, string | undefined>;
  try {
    ({ values } = parseArgs({
      options: { minutes: { type: 'string' }, hls: { type: 'string' }, whep: { type: 'string' }, chat: { type: 'string' }, uploads: { type: 'string' } },
      strict: true,
    }) as { values: Record<string, string | undefined> });
  } catch (error) {
    fail((error as Error).message);
  }
  // Growth is measured from the end of minute 2: a run needs at least two minutes after it.
  const minutes = integer(values.minutes, 'minutes', 10, 3, 24 * 60);
  const options: SoakOptions = {
    durationMs: minutes * MINUTE,
    sampleEveryMs: MINUTE,
    growthFromMs: 2 * MINUTE,
    growthGoalPercent: 5,
    hlsViewers: integer(values.hls, 'hls', 50, 1, 10_000),
    whepViewers: integer(values.whep, 'whep', 20, 1, 1000),
    chatClients: integer(values.chat, 'chat', 200, 1, 10_000),
    commentEveryMs: MINUTE,
    reconnect: { firstMs: 105_000, everyMs: 2 * MINUTE },
    adBreak: { firstMs: 15_000, everyMs: MINUTE, durationSec: 10 },
    uploads: { count: integer(values.uploads, 'uploads', 3, 0, 100), firstMs: 30_000 },
    source: { width: 640, height: 360, fps: 30 },
    ladder: '360,240',
    webrtcLayers: '240',
  };

  const signal = abortOnSignals();

  const write = (line: string): void => {
    process.stdout.write(`${line}\n`);
  };
  write(`soak      ${new Date().toISOString()}, ${minutes} min; ${machine()}`);
  write(`publisher ${options.source.width}x${options.source.height} ${options.source.fps} fps, reconnecting every 2 min (first at 1:45); ` +
    `live ladder ${options.ladder} (x264 ultrafast); an ad break (${options.adBreak.durationSec} s) every minute from 0:15; ${options.uploads.count} uploads`);
  const result = await runSoak(options, write, signal);
  write('');
  write('growth from the end of minute 2 to the end (goal ≤ 5 %):');
  for (const g of result.growth) {
    write(`  ${g.figure.padEnd(26)} ${fmt(g.figure, g.from).padStart(10)} → ${fmt(g.figure, g.to).padStart(10)}  ${g.percent >= 0 ? '+' : ''}${g.percent.toFixed(1)} %` +
      `  ${g.ok ? 'ok    ' : 'MISSED'}  (from minute 2 on: ${fmt(g.figure, g.min)} – ${fmt(g.figure, g.max)})`);
  }
  write('health:');
  for (const c of result.checks) write(`  ${c.ok ? 'ok    ' : 'FAILED'} ${c.name}: ${c.detail}`);
  if (result.log.firstWarnings.length > 0) write(`node warnings (first ${result.log.firstWarnings.length} of ${result.log.warnings}): ${result.log.firstWarnings.join(' | ')}`);
  write(result.ok ? 'soak: every goal met' : 'soak: a goal was MISSED');
  return result.ok ? 0 : 1;
}

function fmt(figure: string, value: number): string {
  return figure.startsWith('RSS') || figure.startsWith('heap') ? `${(value / 1024 / 1024).toFixed(1)} MiB` : value.toFixed(figure.includes('mean') ? 1 : 0);
}

main().then((code) => process.exit(code), (error: unknown) => {
  process.stderr.write(`soak: ${(error as Error)?.stack ?? String(error)}\n`);
  process.exit(1);
});
