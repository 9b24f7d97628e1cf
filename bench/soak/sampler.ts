import { readdirSync, readFileSync } from 'node:fs';
import { descendantProcesses } from '../support/procfs.js';
import { processCpuSec } from '../support/process.js';

/*
 * What the soak run reads of the OnAir process once a minute: from Linux's /proc (proc(5)) its resident set
 * (VmRSS), its open file descriptors (entries of /proc/<pid>/fd) and its direct children by name; from its own
 * /metrics (prom-client's default metrics, prefix `onair_`) the V8 heap in use and the active libuv handles.
 */

export interface Sample {
  /** Milliseconds since the soak's load started. */
  atMs: number;
  rssBytes: number;
  heapUsedBytes: number;
  /**
   * The median RSS of the readings since the previous sample (polled every few seconds): RSS moves both ways, up with
   * garbage and buffers, down when the allocator hands pages back, and a median ignores both kinds of excursion.
   */
  rssMedianBytes: number;
  /**
   * The lowest heap in use since the previous sample: the floor the GC comes back to. Garbage swings the heap by
   * ±20 % within a minute under the soak's load; leaked objects raise the floor.
   */
  heapFloorBytes: number;
  fds: number;
  /** `onair_nodejs_active_handles_total`: sockets, timers, child processes and the like that keep the loop alive. */
  handles: number;
  /**
   * The node's descendant processes by name: the live, ad and VOD ffmpeg, the embedded redis-server, the mediasoup
   * workers, the `sh` that ties some of them to the node (lib/tiedProcess.ts), anything else.
   */
  children: { ffmpeg: number; redis: number; mediasoup: number; sh: number; other: number };
  /** The node process's own CPU (all its threads) since the previous sample, in % of one core. */
  cpuPercent: number;
}

/** A metric's value in Prometheus text format (the first series of that name); NaN when missing. */
export function metricValue(text: string, name: string): number {
  const match = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'm').exec(text);
  return match ? Number(match[1]) : NaN;
}

/** VmRSS of a process in bytes (proc(5): /proc/<pid>/status reports it in kB); NaN once it is gone. */
function rssBytes(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

function openFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

/** Samples one OnAir process; `take()` reads every figure now. */
export class ProcessSampler {
  readonly samples: Sample[] = [];
  #lastCpu: { sec: number; at: number } | undefined;
  #rss: number[] = [];
  #heapFloor = Infinity;

  constructor(readonly pid: number, readonly metricsUrl: string, readonly startedAt: number) {
    this.#lastCpu = { sec: processCpuSec(pid) ?? NaN, at: performance.now() };
  }

  async #metrics(): Promise<string> {
    try {
      const response = await fetch(this.metricsUrl, { signal: AbortSignal.timeout(10_000) });
      return response.status === 200 ? await response.text() : '';
    } catch {
      return ''; // the figures read NaN: the table shows it
    }
  }

  #note(rss: number, heap: number): void {
    if (Number.isFinite(rss)) this.#rss.push(rss);
    if (heap < this.#heapFloor) this.#heapFloor = heap;
  }

  /** Reads RSS and heap only, for the median and the floor (call every few seconds between samples). */
  async poll(): Promise<void> {
    this.#note(rssBytes(this.pid), metricValue(await this.#metrics(), 'onair_nodejs_heap_size_used_bytes'));
  }

  async take(): Promise<Sample> {
    const metrics = await this.#metrics();
    const children = { ffmpeg: 0, redis: 0, mediasoup: 0, sh: 0, other: 0 };
    for (const child of descendantProcesses(this.pid)) {
      if (child.comm === 'ffmpeg') children.ffmpeg += 1;
      // Debian's redis-server is a link to redis-check-rdb, which becomes the server when called by that name.
      else if (child.comm === 'redis-server' || child.comm === 'redis-check-rdb') children.redis += 1;
      else if (child.comm.startsWith('mediasoup-work')) children.mediasoup += 1;
      else if (child.comm === 'sh') children.sh += 1;
      else children.other += 1;
    }
    const cpuSec = processCpuSec(this.pid) ?? NaN;
    const now = performance.now();
    const cpuPercent = this.#lastCpu ? ((cpuSec - this.#lastCpu.sec) / ((now - this.#lastCpu.at) / 1000)) * 100 : NaN;
    this.#lastCpu = { sec: cpuSec, at: now };
    const rss = rssBytes(this.pid);
    const heap = metricValue(metrics, 'onair_nodejs_heap_size_used_bytes');
    this.#note(rss, heap);
    const sorted = [...this.#rss].sort((a, b) => a - b);
    const sample: Sample = {
      atMs: Date.now() - this.startedAt,
      rssBytes: rss,
      heapUsedBytes: heap,
      rssMedianBytes: sorted.length > 0 ? sorted[Math.floor(sorted.length / 2)]! : NaN,
      heapFloorBytes: Number.isFinite(this.#heapFloor) ? this.#heapFloor : NaN,
      fds: openFds(this.pid),
      handles: metricValue(metrics, 'onair_nodejs_active_handles_total'),
      children,
      cpuPercent,
    };
    this.#rss = [];
    this.#heapFloor = Infinity;
    this.samples.push(sample);
    return sample;
  }
}

const MiB = 1024 * 1024;
const COLUMNS: [string, number][] = [['t', 6], ['RSS MiB', 8], ['median', 7], ['heap MiB', 9], ['floor', 6], ['fds', 5], ['handles', 8], ['ffmpeg', 7],
  ['redis', 6], ['mediasoup', 10], ['sh', 3], ['other', 6], ['CPU %', 6]];

export function sampleHeader(): string {
  return COLUMNS.map(([name, width]) => name.padStart(width)).join(' ');
}

export function sampleRow(s: Sample): string {
  const cells = [`${Math.round(s.atMs / 1000)}s`, (s.rssBytes / MiB).toFixed(1), (s.rssMedianBytes / MiB).toFixed(1),
    (s.heapUsedBytes / MiB).toFixed(1), (s.heapFloorBytes / MiB).toFixed(1), String(s.fds),
    String(s.handles), String(s.children.ffmpeg), String(s.children.redis), String(s.children.mediasoup), String(s.children.sh), String(s.children.other),
    s.cpuPercent.toFixed(0)];
  return cells.map((cell, i) => cell.padStart(COLUMNS[i]![1])).join(' ');
}
