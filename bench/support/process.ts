import { fork, spawn, spawnSync, type ChildProcess, type IOType } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { BenchError } from './benchmark.js';

/*
 * Processes with a time limit, and their CPU time.
 *
 * CPU is read from the kernel's own accounting, not from samples: when a process ends and its parent reaps it, the
 * kernel adds its whole utime+stime (its threads and its reaped children included) to the parent's cutime+cstime,
 * proc(5) fields 16 and 17 of /proc/<parent>/stat, the same rusage figure that wait4(2) and /usr/bin/time report.
 * So the growth of this process's cutime+cstime over a window is the exact CPU of the children that ended in it;
 * Node reaps its children before it emits 'exit'/'close'. No package is needed (only Linux's /proc), and the child
 * being measured need not be spawned by the benchmark itself: the OnAir node's ffmpeg is a child of this process too.
 * Where a window holds other children (a publisher), they run under `sh -c '…; times'` and their own figure is
 * subtracted. Samples of /proc/<pid>/stat (utime+stime until the process goes) serve only as a cross-check: they
 * miss the last interval before the exit, an encoder's flush included.
 */

/** Kernel clock ticks per second: the unit of the times in /proc/<pid>/stat (USER_HZ, 100 on common kernels). */
const CLOCK_TICKS = ((): number => {
  const result = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5000 });
  const ticks = Number(result.stdout?.trim());
  return Number.isInteger(ticks) && ticks > 0 ? ticks : 100;
})();

/** The fields of /proc/<pid>/stat from field 3 (state) on; undefined when the process is gone. */
function statFields(pid: number | 'self'): string[] | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Field 2 (comm) may hold spaces and parentheses: count from after its closing parenthesis.
  return text.slice(text.lastIndexOf(')') + 2).trim().split(' ');
}

/** proc(5) field `n` (1-based) in seconds. */
const ticksField = (fields: string[], n: number): number => Number(fields[n - 3]) / CLOCK_TICKS;

/** utime+stime of a running process (all its threads), in seconds; undefined once it is gone. */
export function processCpuSec(pid: number): number | undefined {
  const fields = statFields(pid);
  return fields && ticksField(fields, 14) + ticksField(fields, 15);
}

/** cutime+cstime of this process: the CPU seconds of all its children that have ended and been reaped so far. */
export function reapedChildrenCpuSec(): number {
  const fields = statFields('self');
  if (!fields) throw new BenchError('cannot read /proc/self/stat: CPU benchmarks need Linux');
  return ticksField(fields, 16) + ticksField(fields, 17);
}

/**
 * Polls a process's utime+stime every `intervalMs` and keeps the last figure read: a lower bound of its CPU, for
 * cross-checking the exact figure.
 */
export class CpuSampler {
  #last = 0;
  readonly #timer: NodeJS.Timeout;

  constructor(readonly pid: number, intervalMs = 100) {
    const sample = (): void => {
      const cpu = processCpuSec(pid);
      if (cpu !== undefined) this.#last = cpu;
    };
    sample();
    this.#timer = setInterval(sample, intervalMs);
  }

  /** Stops polling; returns the last figure read. */
  stop(): number {
    clearInterval(this.#timer);
    return this.#last;
  }
}

/**
 * `command args` under POSIX sh, followed by the `times` builtin: two lines on stdout, the user and system CPU of the
 * shell itself, then of its children (POSIX format `%dm%fs %dm%fs`). The exit status is the command's.
 */
export function withTimes(command: string, args: readonly string[]): [string, string[]] {
  return ['/bin/sh', ['-c', '"$0" "$@"; status=$?; times; exit $status', command, ...args]];
}

/** The total CPU seconds (shell and children) of `withTimes`' report at the end of `stdout`. */
export function parseTimes(stdout: string): number | undefined {
  const values = [...stdout.matchAll(/(\d+)m(\d+(?:\.\d+)?)s/g)].slice(-4);
  if (values.length < 4) return undefined;
  return values.reduce((sum, [, minutes, seconds]) => sum + Number(minutes) * 60 + Number(seconds), 0);
}

export interface BoundedExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The last few kB of stderr, for error messages. */
  stderrTail: string;
}

export interface BoundedChild {
  child: ChildProcess;
  /**
   * Resolves once the process has ended, been reaped and closed its stdio. Rejects when it could not start, ran past
   * its limit, or the run was aborted (it is killed first).
   */
  exited: Promise<BoundedExit>;
  /** SIGKILL to the process, or to its whole process group when spawned with `group`; idempotent. */
  kill(): void;
}

export interface BoundedOptions {
  timeoutMs: number;
  signal: AbortSignal;
  /** stdio from fd 0 on; fd 2 is always a pipe (its tail goes into errors). Missing entries are 'ignore'. */
  stdio?: IOType[];
  /** Start a process group and kill all of it (for a shell wrapper and its child). */
  group?: boolean;
}

const STDERR_TAIL = 4000;

/** A child process that cannot outlive its time limit or an abort of the run. */
export function spawnBounded(what: string, command: string, args: readonly string[], options: BoundedOptions): BoundedChild {
  if (options.signal.aborted) throw new BenchError(`${what}: aborted`);
  const stdio: IOType[] = [...(options.stdio ?? ['ignore', 'ignore'])];
  while (stdio.length < 3) stdio.push('ignore');
  stdio[2] = 'pipe';
  const child = spawn(command, args, { stdio, detached: options.group === true });
  let stderrTail = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => {
    stderrTail = (stderrTail + text).slice(-STDERR_TAIL);
  });
  const kill = (): void => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    try {
      if (options.group) process.kill(-child.pid, 'SIGKILL');
      else child.kill('SIGKILL');
    } catch { /* already gone */ }
  };
  const exited = new Promise<BoundedExit>((resolve, reject) => {
    let failure: Error | undefined;
    const timer = setTimeout(() => {
      failure ??= new BenchError(`${what} ran past ${options.timeoutMs} ms and was killed`);
      kill();
    }, options.timeoutMs);
    const onAbort = (): void => {
      failure ??= new BenchError(`${what}: aborted`);
      kill();
    };
    options.signal.addEventListener('abort', onAbort, { once: true });
    const settle = (): void => {
      clearTimeout(timer);
      options.signal.removeEventListener('abort', onAbort);
    };
    child.once('error', (error) => {
      settle();
      reject(new BenchError(`${what} could not start: ${error.message}`));
    });
    child.once('close', (code, signal) => {
      settle();
      if (failure) reject(failure);
      else resolve({ code, signal, stderrTail });
    });
  });
  // Callers may await it late; a rejection before then is theirs to see, not an unhandled one.
  exited.catch(() => undefined);
  return { child, exited, kill };
}

/** Throws unless the process exited with status 0, quoting its stderr. */
export function expectSuccess(what: string, exit: BoundedExit): void {
  if (exit.code === 0) return;
  const how = exit.signal ? `signal ${exit.signal}` : `status ${exit.code}`;
  throw new BenchError(`${what} failed (${how}): ${exit.stderrTail.trim().split('\n').slice(-5).join(' | ') || 'no stderr'}`);
}

/**
 * `promise`, or a rejection after `timeoutMs` or on abort. A value that arrives too late is handed to `late` (to
 * close what it holds).
 */
export async function within<T>(what: string, promise: Promise<T>, timeoutMs: number, signal: AbortSignal, late?: (value: T) => unknown): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new BenchError(`${what}: no result within ${timeoutMs} ms`)), timeoutMs);
    onAbort = () => reject(new BenchError(`${what}: aborted`));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, bound]);
  } catch (error) {
    if (late) promise.then((value) => Promise.resolve(late(value)).catch(() => undefined), () => undefined);
    throw error;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort!);
  }
}

/**
 * A forked Node process that cannot outlive its time limit or the run: SIGTERM (the node then closes its ffmpeg and
 * Redis), SIGKILL if it is still there 10 s later. Its stdout is ignored unless `onStdout` reads it (the soak run
 * counts the node's log lines by level). `execArgv`: Node's own flags for the child (`--cpu-prof`, which NODE_OPTIONS refuses).
 */
export function forkBounded(module: string, env: NodeJS.ProcessEnv, timeoutMs: number, signal: AbortSignal, options: {
  onStdout?: (text: string) => void;
  execArgv?: string[];
} = {}): {
  child: ChildProcess; exited: Promise<void>; stderr(): string; stop(): void;
} {
  const child = fork(module, [], { env, stdio: ['ignore', options.onStdout ? 'pipe' : 'ignore', 'pipe', 'ipc'], ...(options.execArgv ? { execArgv: options.execArgv } : {}) });
  if (options.onStdout) child.stdout!.setEncoding('utf8').on('data', options.onStdout);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => { stderr = (stderr + text).slice(-4000); });
  const alive = (): boolean => child.exitCode === null && child.signalCode === null;
  let killTimer: NodeJS.Timeout | undefined;
  const stop = (): void => {
    if (!alive() || killTimer) return;
    child.kill('SIGTERM');
    killTimer = setTimeout(() => { if (alive()) child.kill('SIGKILL'); }, 10_000);
  };
  const timer = setTimeout(stop, timeoutMs);
  signal.addEventListener('abort', stop, { once: true });
  const exited = new Promise<void>((resolve) => child.once('exit', () => {
    clearTimeout(timer);
    clearTimeout(killTimer);
    signal.removeEventListener('abort', stop);
    resolve();
  }));
  return { child, exited, stderr: () => stderr, stop };
}

/** The shell's ONAIR_* would change what is measured: the bench runs the defaults, with only what it sets. */
export function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) if (!name.startsWith('ONAIR_')) env[name] = value;
  return { ...env, ...extra };
}
