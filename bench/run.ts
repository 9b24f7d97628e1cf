import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { abortOnSignals, type Benchmark, type SummaryRow } from './support/benchmark.js';

/*
 * `npm run bench [-- filter…]`: runs every benchmark in bench/ in turn (or those whose name contains one of the
 * filters) and ends with a summary table. A benchmark is a top-level module of bench/ exporting `benchmark`
 * (see support/benchmark.ts); adding one needs no change here. Exit status: 1 when a benchmark failed to produce its
 * figures, 2 for a filter that matches nothing; a figure that misses its goal is reported, not an error.
 */

const here = path.dirname(fileURLToPath(import.meta.url));
/** bench/ in the source tree: a compiled module whose .ts is gone is a stale build output, not a benchmark. */
const sourceDir = path.resolve(here, '..', '..', 'bench');

const write = (line = ''): void => {
  process.stdout.write(`${line}\n`);
};

async function discover(): Promise<Benchmark[]> {
  const files = readdirSync(here)
    .filter((file) => file.endsWith('.js') && file !== 'run.js')
    .filter((file) => existsSync(path.join(sourceDir, file.replace(/\.js$/, '.ts'))))
    .sort();
  const benchmarks: Benchmark[] = [];
  for (const file of files) {
    const module = (await import(pathToFileURL(path.join(here, file)).href)) as { benchmark?: Benchmark };
    const benchmark = module.benchmark;
    if (!benchmark || typeof benchmark.run !== 'function' || typeof benchmark.name !== 'string') {
      throw new Error(`bench/${file.replace(/\.js$/, '.ts')} exports no \`benchmark\` (helpers belong in bench/support/)`);
    }
    if (benchmarks.some((b) => b.name === benchmark.name)) throw new Error(`two benchmarks are named ${benchmark.name}`);
    benchmarks.push(benchmark);
  }
  return benchmarks;
}

function ffmpegVersion(): string {
  const result = spawnSync('ffmpeg', ['-version'], { encoding: 'utf8', timeout: 10_000 });
  return /ffmpeg version (\S+)/.exec(result.stdout ?? '')?.[1] ?? 'unknown';
}

function machine(): string {
  const cpu = os.cpus()[0]?.model.trim() ?? 'unknown CPU';
  const load = os.loadavg().map((l) => l.toFixed(2)).join(' ');
  return `${cpu}, nproc ${os.availableParallelism()}, ${os.platform()} ${os.release()} ${os.arch()}, ` +
    `node ${process.version}, ffmpeg ${ffmpegVersion()}, load ${load}`;
}

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const line = (row: string[]): string => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)];
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const all = await discover();
  if (args.includes('--list')) {
    for (const b of all) write(`${b.name.padEnd(20)} ${b.title}`);
    return 0;
  }
  const filters = args.filter((arg) => !arg.startsWith('--')).map((arg) => arg.toLowerCase());
  const chosen = filters.length === 0 ? all : all.filter((b) => filters.some((f) => b.name.toLowerCase().includes(f)));
  if (chosen.length === 0) {
    process.stderr.write(`no benchmark matches ${filters.join(', ')}; there are: ${all.map((b) => b.name).join(', ')}\n`);
    return 2;
  }

  // Ctrl-C: the benchmark stops its processes and removes its files; a second one quits at once.
  const signal = abortOnSignals();

  write(`OnAir benchmarks, ${new Date().toISOString()}`);
  write(`machine: ${machine()}`);
  const summary: { benchmark: string; row: SummaryRow; error?: boolean }[] = [];
  let failed = false;
  for (const benchmark of chosen) {
    if (signal.aborted) break;
    write();
    write(`== ${benchmark.name}: ${benchmark.title}`);
    const startedAt = Date.now();
    try {
      const result = await benchmark.run({ report: (line) => write(`  ${line}`), signal });
      for (const row of result.rows) summary.push({ benchmark: benchmark.name, row });
      write(`  (${((Date.now() - startedAt) / 1000).toFixed(1)} s)`);
    } catch (error) {
      failed = true;
      const message = error instanceof Error ? error.message : String(error);
      write(`  FAILED: ${message}`);
      if (error instanceof Error && error.name !== 'BenchError' && error.stack) write(error.stack.replace(/^/gm, '    '));
      summary.push({ benchmark: benchmark.name, row: { metric: 'error', value: message.slice(0, 100) }, error: true });
    }
  }

  write();
  write('Summary');
  const status = (entry: (typeof summary)[number]): string =>
    entry.error ? 'ERROR' : entry.row.met === undefined ? '' : entry.row.met ? 'met' : 'MISSED';
  const rows = [['benchmark', 'metric', 'value', 'goal', 'status'],
    ...summary.map((e) => [e.benchmark, e.row.metric, e.row.value, e.row.goal ?? '', status(e)])];
  for (const line of table(rows)) write(line);
  return failed || signal.aborted ? 1 : 0;
}

/** After the summary, a process still alive this long is held by something a benchmark (or OnAir) left behind. */
const EXIT_GRACE_MS = 5000;

// The node's own logs are noise between the figures; ONAIR_LOG_LEVEL=warn brings them back.
process.env['ONAIR_LOG_LEVEL'] ??= 'error';

main().then((code) => {
  process.exitCode = code;
}, (error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
  process.exitCode = 1;
}).finally(() => {
  // Unref'd: fires only if something else keeps the process alive. Say what, then exit rather than hang.
  setTimeout(() => {
    const held = process.getActiveResourcesInfo();
    held.splice(held.indexOf('Timeout'), 1); // this one
    process.stderr.write(`warning: the process was still held ${EXIT_GRACE_MS} ms after the last benchmark ` +
      `(active resources, stdio included: ${held.join(', ')}); exiting\n`);
    process.exit();
  }, EXIT_GRACE_MS).unref();
});
