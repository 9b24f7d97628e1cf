import { readFileSync } from 'node:fs';
import os from 'node:os';
import { TypedEmitter } from '../lib/emitter.js';
import type { Logger } from '../lib/log.js';
import type { LiveTranscoder } from './LiveTranscoder.js';

/**
 * `degrade` (default): streams that fall behind are made cheaper step by step (degrade.ts) and restored when the node
 * has room; `fixed`: the ladder is never changed (a stream that falls behind stays behind, its input bounded by
 * backpressure).
 */
export type LadderPolicy = 'degrade' | 'fixed';

export interface LoadGovernorOptions {
  policy: LadderPolicy;
  log: Logger;
  /** A stream whose encoder backlog stays above this, not shrinking, for `behindForMs`, is behind. */
  behindMs?: number;
  behindForMs?: number;
  /** After a change, the next one waits this long (the restarted ffmpeg settles, the CPU figures follow). */
  settleMs?: number;
  /** A degraded stream steps back up after keeping up this long; doubled each time a step back up fails. */
  recoverAfterMs?: number;
  /** The longest `recoverAfterMs` grows to. */
  maxRecoverAfterMs?: number;
  /** The node's idle CPU share (0–1, over the last 10 s) needed to step a stream back up. */
  minIdleToRecover?: number;
  /** How often streams are looked at; 0: never by itself (tests call `check` with their own clock). */
  sampleMs?: number;
  /** Idle share of the node's CPU now (tests pass their own). */
  cpuIdle?: () => number;
  /** CPU seconds a stream's ffmpeg has used so far (default: its /proc/<pid>/stat; tests pass their own). */
  cpuSeconds?: (transcoder: LiveTranscoder) => number | undefined;
  /** The node's CPU cores (default: os.availableParallelism()). */
  cores?: number;
}

/**
 * What the node can still take, measured: the full ladder's cost is read from the streams running it (their ffmpeg's
 * CPU time over the last seconds), the room from the node's idle CPU. For a placement across origins (scale-out) and
 * for operators (`/readyz`, `onair_capacity_spare_streams`).
 */
export interface NodeCapacity {
  cores: number;
  /** Cores idle over the last 10 s. */
  idleCores: number;
  /** Cores one full-ladder stream takes here (mean of the streams at level 0); undefined until one has run 5 s. */
  streamCores: number | undefined;
  /**
   * More full-ladder streams that fit while keeping CAPACITY_HEADROOM of the node idle: 0 while any stream is behind
   * or degraded; undefined while the cost is unknown.
   */
  spareStreams: number | undefined;
}

/** Share of the node's cores a capacity estimate keeps free (bursts, Node, the packager, viewers). */
export const CAPACITY_HEADROOM = 0.15;
/** A stream's CPU cost is measured over this much of its recent past (and needs half of it to be known). */
const COST_WINDOW_MS = 10_000;
/** Backlog readings are smoothed by their peak over this long (two readings at the default 1 s sampling). */
const SMOOTH_MS = 1_000;

/** `change`: a stream changed level; `up` is a step back towards the full ladder. */
export type LadderChangeData = { streamId: string; level: number; direction: 'down' | 'up' | 'catch-up'; reason: string };

export type LoadGovernorEvents = {
  change: [LadderChangeData];
};

interface Watched {
  transcoder: LiveTranscoder;
  /** Backlog samples of the last `behindForMs`. */
  samples: { at: number; backlogMs: number }[];
  /** Raw readings of the last SMOOTH_MS: each sample above is their peak. */
  readings: { at: number; backlogMs: number }[];
  lastChangeAt: number;
  /** When it last stepped back up (a fall behind soon after means the step back up failed). */
  recoveredAt: number | undefined;
  recoverAfterMs: number;
  /** Its ffmpeg's CPU seconds over the last COST_WINDOW_MS (a restart starts over). */
  cpu: { at: number; sec: number }[];
}

/**
 * Keeps a node's live streams at live latency when it is short of CPU (issue: overload). Each second it reads every
 * stream's encoder backlog (media time its ffmpeg has not read yet: near 0 while it keeps up). A stream behind —
 * backlog over `behindMs` and not shrinking for `behindForMs` — is degraded one step (a restart from the last keyframe,
 * which also drops the backlog: back at live); one change at a time for the node, the stream with the fewest steps
 * first, so that the cost is spread. At the last step a stream still behind is restarted (catch-up). A degraded stream
 * steps back up, one step at a time, once nothing has been behind for its `recoverAfterMs` and the node has idle CPU;
 * a stream that falls behind again soon after doubles its wait (no flapping).
 */
export class LoadGovernor extends TypedEmitter<LoadGovernorEvents> {
  readonly policy: LadderPolicy;
  readonly #log: Logger;
  readonly #behindMs: number;
  readonly #behindForMs: number;
  readonly #settleMs: number;
  readonly #recoverAfterMs: number;
  readonly #maxRecoverAfterMs: number;
  readonly #minIdle: number;
  readonly #cpuIdle: () => number;
  readonly #cpuSeconds: (transcoder: LiveTranscoder) => number | undefined;
  readonly #cores: number;
  #idle = 1;
  readonly #streams = new Map<string, Watched>();
  readonly #timer: NodeJS.Timeout;
  #lastChangeAt = 0;

  constructor(options: LoadGovernorOptions) {
    super();
    this.policy = options.policy;
    this.#log = options.log;
    // A stream that keeps up shows its newest media ~0.5 s behind the wall clock (encode + one part); 1 s of backlog
    // on top, held 3 s, is acted on before viewers see the live edge drift past 2 s.
    this.#behindMs = options.behindMs ?? 1000;
    this.#behindForMs = options.behindForMs ?? 3000;
    this.#settleMs = options.settleMs ?? 8000;
    this.#recoverAfterMs = options.recoverAfterMs ?? 60_000;
    this.#maxRecoverAfterMs = options.maxRecoverAfterMs ?? 10 * 60_000;
    this.#minIdle = options.minIdleToRecover ?? 0.3;
    this.#cpuIdle = options.cpuIdle ?? cpuIdleSampler();
    this.#cpuSeconds = options.cpuSeconds ?? ((t) => (t.pid === undefined ? undefined : processCpuSeconds(t.pid)));
    this.#cores = options.cores ?? os.availableParallelism();
    const sampleMs = options.sampleMs ?? 1000;
    this.#timer = setInterval(() => this.check(), sampleMs > 0 ? sampleMs : 2 ** 30);
    this.#timer.unref();
  }

  add(transcoder: LiveTranscoder, now = Date.now()): void {
    this.#streams.set(transcoder.streamId, {
      transcoder, samples: [], readings: [], lastChangeAt: now, recoveredAt: undefined, recoverAfterMs: this.#recoverAfterMs, cpu: [],
    });
  }

  remove(transcoder: LiveTranscoder): void {
    if (this.#streams.get(transcoder.streamId)?.transcoder === transcoder) this.#streams.delete(transcoder.streamId);
  }

  /**
   * Admission control: why a new stream cannot be given its ladder now (a stream here is behind or degraded: the
   * node is already short of CPU), or undefined when it can.
   */
  refusal(): string | undefined {
    if (this.policy === 'fixed') return undefined;
    const short = [...this.#streams.values()].filter((w) => w.transcoder.level > 0 || this.#isBehind(w));
    return short.length === 0 ? undefined : `the node is short of CPU: ${short.length} live stream(s) behind or degraded`;
  }

  /** The cores a stream's ffmpeg has used over its last seconds; undefined until measured for half the window. */
  streamCores(streamId: string): number | undefined {
    const cpu = this.#streams.get(streamId)?.cpu;
    const first = cpu?.[0];
    const last = cpu?.[cpu.length - 1];
    if (!first || !last || last.at - first.at < COST_WINDOW_MS / 2) return undefined;
    return (last.sec - first.sec) / ((last.at - first.at) / 1000);
  }

  capacity(): NodeCapacity {
    const idleCores = this.#idle * this.#cores;
    const costs = [...this.#streams.values()]
      .filter((w) => w.transcoder.level === 0)
      .map((w) => this.streamCores(w.transcoder.streamId))
      .filter((c): c is number => c !== undefined && c > 0);
    const streamCores = costs.length === 0 ? undefined : costs.reduce((a, b) => a + b, 0) / costs.length;
    const short = this.policy !== 'fixed' && this.refusal() !== undefined;
    const spareStreams = short ? 0
      : streamCores === undefined ? undefined
      : Math.max(0, Math.floor((idleCores - CAPACITY_HEADROOM * this.#cores) / streamCores));
    return { cores: this.#cores, idleCores: Math.round(idleCores * 100) / 100, streamCores: streamCores === undefined ? undefined : Math.round(streamCores * 1000) / 1000, spareStreams };
  }

  close(): void {
    clearInterval(this.#timer);
    this.#streams.clear();
  }

  #isBehind(watched: Watched): boolean {
    const { samples } = watched;
    const first = samples[0];
    const last = samples[samples.length - 1];
    if (!first || !last || last.at - first.at < this.#behindForMs * 0.75) return false;
    // Over the bound the whole time, and not catching up: a burst after a network stall shrinks steadily as the
    // encoder's spare speed eats it (more than a quarter of a second per second: not behind); an encoder short of
    // CPU hovers or grows.
    return samples.every((s) => s.backlogMs > this.#behindMs) && last.backlogMs - first.backlogMs > -0.25 * (last.at - first.at);
  }

  /** One look at every stream (every `sampleMs`): a change if one is due. */
  check(now = Date.now()): void {
    const idle = this.#cpuIdle();
    this.#idle = idle;
    for (const watched of this.#streams.values()) {
      // A publisher that sends in bursts makes single readings jump by a second or more either way (measured: 1.7,
      // 3.0, 1.0, 3.4 s… for an encoder steadily ~2.5 s behind); one that dips under the bound would reset the count.
      // Each sample is the peak of the readings of the last SMOOTH_MS.
      watched.readings.push({ at: now, backlogMs: watched.transcoder.backlogMs });
      while (now - watched.readings[0]!.at > SMOOTH_MS) watched.readings.shift();
      watched.samples.push({ at: now, backlogMs: Math.max(...watched.readings.map((r) => r.backlogMs)) });
      // The window keeps one sample at or past its far edge, so that it spans the whole `behindForMs`: trimmed to the
      // samples strictly inside it, a timer a millisecond late left 2 s of a 3 s window, never enough to judge.
      while (watched.samples.length > 1 && now - watched.samples[1]!.at >= this.#behindForMs) watched.samples.shift();
      const sec = this.#cpuSeconds(watched.transcoder);
      // A restarted ffmpeg (fewer seconds than before) or none running: its cost is measured afresh.
      if (sec === undefined || sec < (watched.cpu[watched.cpu.length - 1]?.sec ?? 0)) watched.cpu = [];
      if (sec !== undefined) watched.cpu.push({ at: now, sec });
      while (watched.cpu.length > 0 && now - watched.cpu[0]!.at > COST_WINDOW_MS) watched.cpu.shift();
    }
    if (this.policy === 'fixed' || now - this.#lastChangeAt < this.#settleMs) return;
    const settled = [...this.#streams.values()].filter((w) => now - w.lastChangeAt >= this.#settleMs);
    const behind = settled.filter((w) => this.#isBehind(w));
    if (behind.length > 0) {
      // The fewest steps first: spread the cost rather than strip one stream to the bone.
      behind.sort((a, b) => a.transcoder.level - b.transcoder.level);
      const degradable = behind.find((w) => w.transcoder.level < w.transcoder.maxLevel);
      const watched = degradable ?? behind[0]!;
      const backlogMs = Math.round(watched.samples[watched.samples.length - 1]!.backlogMs);
      if (watched.recoveredAt !== undefined && now - watched.recoveredAt < watched.recoverAfterMs) {
        watched.recoverAfterMs = Math.min(this.#maxRecoverAfterMs, watched.recoverAfterMs * 2);
      }
      watched.recoveredAt = undefined;
      if (degradable) {
        this.#change(now, watched, watched.transcoder.level + 1, 'down', `the encoder is ${backlogMs} ms behind its input`);
      } else {
        this.#change(now, watched, watched.transcoder.level, 'catch-up', `the encoder is ${backlogMs} ms behind its input at the last step`);
        watched.transcoder.catchUp();
      }
      return;
    }
    // Steps back up: only when nothing is behind or close to it, and the node has idle CPU.
    if (idle < this.#minIdle) return;
    if ([...this.#streams.values()].some((w) => (w.samples[w.samples.length - 1]?.backlogMs ?? 0) > this.#behindMs / 2)) return;
    const recoverable = settled
      .filter((w) => w.transcoder.level > 0 && now - w.lastChangeAt >= w.recoverAfterMs)
      .sort((a, b) => b.transcoder.level - a.transcoder.level)[0];
    if (!recoverable) return;
    recoverable.recoveredAt = now;
    this.#change(now, recoverable, recoverable.transcoder.level - 1, 'up', `the node has room again (${Math.round(idle * 100)} % CPU idle)`);
  }

  #change(now: number, watched: Watched, level: number, direction: 'down' | 'up' | 'catch-up', reason: string): void {
    watched.lastChangeAt = now;
    watched.samples = [];
    watched.readings = [];
    watched.cpu = [];
    this.#lastChangeAt = now;
    const { transcoder } = watched;
    this.#log.warn({ streamId: transcoder.streamId, level, direction, reason }, 'load: ladder change');
    if (direction !== 'catch-up') transcoder.setLevel(level, reason);
    this.safeEmit('change', { streamId: transcoder.streamId, level, direction, reason });
  }
}

/** The node's idle CPU share over about the last 10 s, from /proc/stat through os.cpus(). */
export function cpuIdleSampler(windowMs = 10_000): () => number {
  const samples: { at: number; idle: number; total: number }[] = [];
  const read = (): { idle: number; total: number } => {
    let idle = 0;
    let total = 0;
    for (const cpu of os.cpus()) {
      const t = cpu.times;
      idle += t.idle;
      total += t.user + t.nice + t.sys + t.irq + t.idle;
    }
    return { idle, total };
  };
  return () => {
    const now = Date.now();
    samples.push({ at: now, ...read() });
    while (samples.length > 2 && now - samples[1]!.at >= windowMs) samples.shift();
    const first = samples[0]!;
    const last = samples[samples.length - 1]!;
    const total = last.total - first.total;
    return total > 0 ? (last.idle - first.idle) / total : 1;
  };
}

/**
 * CPU seconds (user + system) a process has used, from /proc/<pid>/stat; undefined when it is gone or there is no
 * procfs. Ticks are USER_HZ, 100 on every Linux Node runs on.
 */
export function processCpuSeconds(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: the fields counted from after its last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return Number.isFinite(utime) && Number.isFinite(stime) ? (utime + stime) / 100 : undefined;
}
