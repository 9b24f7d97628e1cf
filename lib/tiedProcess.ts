import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

/**
 * The shell script that ties a command's life to ours. A process we spawn survives a SIGKILL of its Node parent; a
 * pipe does not: the kernel closes our end however we die. So the shell starts the command in the background, hands
 * the pipe to a watcher that blocks until EOF (through fd 3: an asynchronous list's stdin is /dev/null before its
 * redirections apply, so `<&0` would hand it /dev/null) and then signals the command, and itself waits on the command
 * so that it exits with its status and reaps it (no zombie left holding the pid). Used for redis-server (TERM: it
 * flushes its append-only file), ffmpeg in VOD jobs (KILL: a half-made output is thrown away anyway) and the test S3
 * server.
 *
 * `pidTag`: prints `<pidTag>-pid=<pid>` first on stdout (the command's pid, not the shell's).
 * `logToFirstArg`: the first argument is a log file for the command's stdout and stderr; the command follows it.
 */
export function tieScript(options: { signal: 'TERM' | 'KILL'; pidTag?: string; logToFirstArg?: boolean }): string {
  return [
    ...(options.logToFirstArg ? ['log=$1', 'shift', '"$@" </dev/null >>"$log" 2>&1 &'] : ['"$@" </dev/null &']),
    'pid=$!',
    ...(options.pidTag ? [`echo "${options.pidTag}-pid=$pid"`] : []),
    `trap 'kill -TERM "$pid" 2>/dev/null' TERM INT HUP`,
    'exec 3<&0',
    `( while IFS= read -r _; do :; done; kill -${options.signal} "$pid" 2>/dev/null ) <&3 3<&- &`,
    'watcher=$!',
    'exec 3<&- 0</dev/null',
    'wait "$pid"',
    'status=$?',
    'while kill -0 "$pid" 2>/dev/null; do wait "$pid"; status=$?; done',
    'kill "$watcher" 2>/dev/null',
    'exit "$status"',
  ].join('\n');
}

const WRAPPER = tieScript({ signal: 'KILL' });

export type TiedProcess = ChildProcessByStdio<Writable, Readable, Readable>;

export function spawnTied(command: string, args: readonly string[], options: { cwd?: string } = {}): TiedProcess {
  return spawn('/bin/sh', ['-c', WRAPPER, 'onair-tied', command, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  /** The last 8 KiB of stderr. */
  stderr: string;
  /** It ran past `timeoutMs` and was stopped. */
  timedOut: boolean;
}

export interface RunOptions {
  onStdout?: (chunk: Buffer) => void;
  /** Stops it (SIGTERM, then SIGKILL after `graceMs`). */
  signal?: AbortSignal;
  keepStdout?: boolean;
  /** A time limit: past it the command gets SIGTERM, then SIGKILL after `graceMs`, and the result says `timedOut`. */
  timeoutMs?: number;
  /** How long a stopped command has to exit before it is killed; default 5 s. */
  graceMs?: number;
}

/**
 * Runs a tied command to its end; `onStdout` sees output as it comes; `signal` or `timeoutMs` stops it: SIGTERM (the
 * wrapper passes it on), then, if it is still there after `graceMs`, our end of the tie pipe is closed so that the
 * watcher SIGKILLs it (a command blocked in an uninterruptible-looking wait, such as an open() on a FIFO, ends too).
 */
export function runTied(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawnTied(command, args);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    child.stdout.on('data', (chunk: Buffer) => {
      options.onStdout?.(chunk);
      if (options.keepStdout) stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-8192);
    });
    const stop = (): void => {
      if (killTimer) return;
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.stdin.destroy(), options.graceMs ?? 5000);
    };
    const limit = options.timeoutMs === undefined ? undefined : setTimeout(() => {
      timedOut = true;
      stop();
    }, options.timeoutMs);
    options.signal?.addEventListener('abort', stop, { once: true });
    child.once('error', reject);
    child.once('close', (code, signal) => {
      options.signal?.removeEventListener('abort', stop);
      clearTimeout(limit);
      clearTimeout(killTimer);
      child.stdin.destroy();
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}
