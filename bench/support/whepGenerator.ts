import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BenchError } from './benchmark.js';
import { within } from './process.js';
import type { LoadCommand, LoadMessage } from './whepLoad.js';

/*
 * The parent's side of bench/support/whepLoad.ts (WHEP viewers on werift in a process of their own), shared by
 * bench/webrtcConsumers.ts and the soak run (bench/soak/): one command at a time, each answered over IPC.
 */

const LOAD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'whepLoad.js');

/** The load generator process, with a request/answer channel over IPC. */
export class WhepGenerator {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  #stderr = '';
  #waiting: ((message: LoadMessage) => void) | undefined;

  constructor(signal: AbortSignal) {
    this.child = fork(LOAD, [], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    this.child.stderr!.setEncoding('utf8').on('data', (text: string) => { this.#stderr = (this.#stderr + text).slice(-4000); });
    this.child.on('message', (message: LoadMessage) => this.#waiting?.(message));
    const stop = (): void => this.kill();
    signal.addEventListener('abort', stop, { once: true });
    this.exited = new Promise((resolve) => this.child.once('exit', () => {
      signal.removeEventListener('abort', stop);
      resolve();
    }));
  }

  get pid(): number {
    return this.child.pid!;
  }

  ask<T extends LoadMessage['type']>(command: LoadCommand, answer: T, timeoutMs: number, signal: AbortSignal): Promise<Extract<LoadMessage, { type: T }>> {
    const reply = new Promise<Extract<LoadMessage, { type: T }>>((resolve, reject) => {
      this.#waiting = (message) => {
        if (message.type !== answer) return;
        this.#waiting = undefined;
        resolve(message as Extract<LoadMessage, { type: T }>);
      };
      void this.exited.then(() => reject(new BenchError(`the load generator exited: ${this.#stderr.trim().slice(-500) || 'no stderr'}`)));
    });
    this.child.send(command);
    return within(`the load generator (${command.type})`, reply, timeoutMs, signal);
  }

  /** DELETEs the sessions and exits; killed if that takes too long. */
  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    if (this.child.connected) this.child.send({ type: 'close' } satisfies LoadCommand);
    const timer = setTimeout(() => this.kill(), 20_000);
    await this.exited;
    clearTimeout(timer);
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
