import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

/**
 * Runs a command whose life is tied to ours: a shell starts it in the background and kills it when our end of its
 * stdin pipe closes — which the kernel does however we die, SIGKILL included. A plainly spawned ffmpeg reading a file
 * would outlive a killed worker and keep burning CPU (server/redis.ts does the same for redis-server).
 */
const WRAPPER = `
"$@" </dev/null &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT HUP
exec 3<&0
( while IFS= read -r _; do :; done; kill -KILL "$pid" 2>/dev/null ) <&3 3<&- &
watcher=$!
exec 3<&- 0</dev/null
wait "$pid"
status=$?
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; status=$?; done
kill "$watcher" 2>/dev/null
exit "$status"
`;

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
}

/** Runs a tied command to its end; `onStdout` sees output as it comes; `signal` stops it (SIGTERM). */
export function runTied(command: string, args: readonly string[], options: { onStdout?: (chunk: Buffer) => void; signal?: AbortSignal; keepStdout?: boolean } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawnTied(command, args);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      options.onStdout?.(chunk);
      if (options.keepStdout) stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-8192);
    });
    const abort = (): void => {
      child.kill('SIGTERM');
    };
    options.signal?.addEventListener('abort', abort, { once: true });
    child.once('error', reject);
    child.once('close', (code, signal) => {
      options.signal?.removeEventListener('abort', abort);
      child.stdin.destroy();
      resolve({ code, signal, stdout, stderr });
    });
  });
}
