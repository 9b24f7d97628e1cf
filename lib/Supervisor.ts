import { TypedEmitter } from './emitter.js';
import type { Logger } from './log.js';

/** How a child ended. `output`: the last lines it printed, when its starter kept them. */
export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  output?: string;
}

/** What a supervised child offers: a way to learn that it ended, and a way to end it on purpose. */
export interface Supervisable {
  /** Resolves once the child has exited, whatever the reason (never rejects). */
  readonly exited: Promise<ExitInfo>;
  /** Ends the child on purpose and waits for it; `timeoutMs` bounds the wait (then it is killed). Idempotent. */
  stop(options?: { timeoutMs?: number }): Promise<void>;
}

/** Waits before restart 1, 2, 3…: the last one repeats. */
export const DEFAULT_BACKOFF_MS: readonly number[] = [100, 500, 1000, 2000, 5000];
/** A child up this long is healthy again: the next crash restarts it after the first backoff step. */
export const DEFAULT_HEALTHY_RESET_MS = 60_000;

export interface SupervisorOptions<C extends Supervisable> {
  /** Names the child in logs and metrics (`redis`, `mediasoup`, `ffmpeg`). */
  name: string;
  /** Starts the child; resolves once it is ready to serve, rejects when it cannot start. */
  start: () => Promise<C>;
  /** Default DEFAULT_BACKOFF_MS. */
  backoffMs?: readonly number[];
  /** Default DEFAULT_HEALTHY_RESET_MS. */
  healthyResetMs?: number;
  log?: Logger;
}

export type SupervisorState = 'starting' | 'up' | 'down' | 'stopped';

/** `up`: the child is ready, on the first start (`restarts` 0) or a restart. */
export type SupervisorUpData<C> = { child: C; restarts: number };
/** `restart`: a restart begins (counted whether it succeeds or not) after `delayMs` of backoff. */
export type SupervisorRestartData = { restarts: number; delayMs: number };

export type SupervisorEvents<C> = {
  up: [SupervisorUpData<C>];
  /** The child ended without being asked to. */
  down: [ExitInfo];
  restart: [SupervisorRestartData];
  /** A restart failed: another follows after the next backoff step. */
  failed: [Error];
};

/**
 * Keeps one child running: start, watch its exit, restart with backoff, count restarts. The same lifecycle for every
 * child OnAir runs (redis-server, mediasoup workers, ffmpeg), so that `/readyz` and `/metrics` read them the same way.
 * The first start is the caller's: its failure is thrown, not retried (a child that never started is a configuration
 * problem); after that, every unexpected exit is repaired until `stop()`.
 */
export class Supervisor<C extends Supervisable> extends TypedEmitter<SupervisorEvents<C>> {
  readonly name: string;
  readonly #options: SupervisorOptions<C>;
  readonly #log: Logger | undefined;
  readonly #backoffMs: readonly number[];
  #state: SupervisorState = 'starting';
  #child: C | undefined;
  #restarts = 0;
  /** Consecutive restarts since the child was last healthy: the index into the backoff steps. */
  #attempt = 0;
  #restartTimer: NodeJS.Timeout | undefined;
  #healthyTimer: NodeJS.Timeout | undefined;
  #pendingStart: Promise<unknown> | undefined;
  #stopping: Promise<void> | undefined;
  #stopOptions: { timeoutMs?: number } = {};

  constructor(options: SupervisorOptions<C>) {
    super();
    this.name = options.name;
    this.#options = options;
    this.#log = options.log;
    this.#backoffMs = options.backoffMs && options.backoffMs.length > 0 ? options.backoffMs : DEFAULT_BACKOFF_MS;
  }

  get state(): SupervisorState {
    return this.#state;
  }

  /** Whether the child is up now (health as `/readyz` reports it). */
  get up(): boolean {
    return this.#state === 'up';
  }

  /** The running child; undefined while it is down or restarting. */
  get child(): C | undefined {
    return this.#child;
  }

  /** Restarts begun since the first start. */
  get restarts(): number {
    return this.#restarts;
  }

  /** The first start: resolves with the ready child, or rejects with why it could not start. */
  async start(): Promise<C> {
    if (this.#child || this.#pendingStart || this.#stopping) throw new Error(`supervisor ${this.name}: already started`);
    const starting = this.#options.start();
    this.#pendingStart = starting;
    try {
      const child = await starting;
      this.#pendingStart = undefined;
      this.#watch(child);
      return child;
    } catch (error) {
      this.#pendingStart = undefined;
      this.#state = 'stopped';
      throw error;
    }
  }

  /** Ends supervision and the child (no restart follows). Idempotent. */
  stop(options: { timeoutMs?: number } = {}): Promise<void> {
    this.#stopping ??= (async () => {
      this.#stopOptions = options;
      this.#state = 'stopped';
      clearTimeout(this.#restartTimer);
      clearTimeout(this.#healthyTimer);
      // A restart under way finishes first (bounded by the child's own start timeout); #restart then stops it.
      await this.#pendingStart?.catch(() => {});
      const child = this.#child;
      this.#child = undefined;
      await child?.stop(options);
    })();
    return this.#stopping;
  }

  #watch(child: C): void {
    this.#child = child;
    this.#state = 'up';
    clearTimeout(this.#healthyTimer);
    this.#healthyTimer = setTimeout(() => {
      this.#attempt = 0;
    }, this.#options.healthyResetMs ?? DEFAULT_HEALTHY_RESET_MS);
    this.#healthyTimer.unref();
    this.safeEmit('up', { child, restarts: this.#restarts });
    void child.exited.then((exit) => {
      if (this.#child !== child || this.#stopping) return;
      clearTimeout(this.#healthyTimer);
      this.#child = undefined;
      this.#state = 'down';
      this.#log?.error({ child: this.name, code: exit.code, signal: exit.signal, output: exit.output }, `${this.name} exited unexpectedly; restarting it`);
      this.safeEmit('down', exit);
      this.#scheduleRestart();
    });
  }

  #scheduleRestart(): void {
    const delayMs = this.#backoffMs[Math.min(this.#attempt, this.#backoffMs.length - 1)]!;
    this.#attempt++;
    this.#restartTimer = setTimeout(() => this.#restart(delayMs), delayMs);
    this.#restartTimer.unref();
  }

  #restart(delayMs: number): void {
    this.#restartTimer = undefined;
    if (this.#stopping) return;
    this.#restarts++;
    this.#state = 'starting';
    this.safeEmit('restart', { restarts: this.#restarts, delayMs });
    const starting = this.#options.start().then(
      async (child) => {
        this.#pendingStart = undefined;
        if (this.#stopping) {
          await child.stop(this.#stopOptions);
          return;
        }
        this.#log?.info({ child: this.name, restarts: this.#restarts }, `${this.name} restarted`);
        this.#watch(child);
      },
      (error: unknown) => {
        this.#pendingStart = undefined;
        if (this.#stopping) return;
        this.#state = 'down';
        const failure = error instanceof Error ? error : new Error(String(error));
        this.#log?.error({ child: this.name, err: failure }, `${this.name} could not be restarted; trying again`);
        this.safeEmit('failed', failure);
        this.#scheduleRestart();
      },
    );
    this.#pendingStart = starting;
  }
}
