import type { Logger } from '../lib/log.js';

/**
 * The steps of a bounded close(), run one after the other: each within its own budget and within what is left of the
 * whole (less a reserve kept for the last step). A step that fails or runs out is logged, named in `failures`, and
 * left behind; the next one runs anyway.
 */
export class CloseSteps<Name extends string> {
  /** `<name> failed` or `<name> timeout`, in order. */
  readonly failures: string[] = [];
  readonly #log: Logger;
  readonly #budgetsMs: Readonly<Record<Name, number>>;
  readonly #deadline: number;
  readonly #reserveMs: number;

  constructor(options: { log: Logger; budgetsMs: Readonly<Record<Name, number>>; timeoutMs: number; reserveMs: number }) {
    this.#log = options.log;
    this.#budgetsMs = options.budgetsMs;
    this.#deadline = Date.now() + options.timeoutMs;
    this.#reserveMs = options.reserveMs;
  }

  /** Time left before the whole close() is due, reserve included. */
  get leftMs(): number {
    return this.#deadline - Date.now();
  }

  async step(name: Name, work: () => Promise<unknown>): Promise<void> {
    const budgetMs = Math.max(0, Math.min(this.#budgetsMs[name], this.#deadline - this.#reserveMs - Date.now()));
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      Promise.resolve().then(work).then(() => 'done' as const, (error: unknown) => {
        this.#log.error({ err: error, step: name }, 'close: a step failed');
        return 'failed' as const;
      }),
      new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), budgetMs);
      }),
    ]);
    clearTimeout(timer);
    if (outcome === 'timeout') this.#log.error({ step: name, budgetMs }, 'close: a step ran out of time; going on without it');
    if (outcome !== 'done') this.failures.push(`${name} ${outcome}`);
  }
}
