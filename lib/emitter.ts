import { EventEmitter } from 'node:events';

/**
 * A typed event emitter whose event map is a plain type (`{ close: []; data: [Buffer] }`), as in mediasoup.
 * `safeEmit` never lets a listener's exception escape into the emitter's own code path.
 */
export class TypedEmitter<Events extends { [K in keyof Events]: unknown[] }> {
  readonly #emitter = new EventEmitter();

  constructor() {
    this.#emitter.setMaxListeners(Infinity);
  }

  on<K extends keyof Events & string>(event: K, listener: (...args: Events[K]) => void): this {
    this.#emitter.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  once<K extends keyof Events & string>(event: K, listener: (...args: Events[K]) => void): this {
    this.#emitter.once(event, listener as (...args: unknown[]) => void);
    return this;
  }

  off<K extends keyof Events & string>(event: K, listener: (...args: Events[K]) => void): this {
    this.#emitter.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  removeAllListeners(): void {
    this.#emitter.removeAllListeners();
  }

  listenerCount<K extends keyof Events & string>(event: K): number {
    return this.#emitter.listenerCount(event);
  }

  /** Resolves with the arguments of the next `event` that passes `filter`, or rejects after `timeoutMs`. */
  next<K extends keyof Events & string>(event: K, timeoutMs: number, filter: (...args: Events[K]) => boolean = () => true): Promise<Events[K]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off(event, listener);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}"`));
      }, timeoutMs);
      const listener = (...args: Events[K]): void => {
        if (!filter(...args)) return;
        clearTimeout(timer);
        this.off(event, listener);
        resolve(args);
      };
      this.on(event, listener);
    });
  }

  /** Emits to every listener; one that throws is reported as a process warning and the others still run. */
  protected safeEmit<K extends keyof Events & string>(event: K, ...args: Events[K]): boolean {
    const listeners = this.#emitter.listeners(event) as ((...a: Events[K]) => void)[];
    for (const listener of listeners) {
      try {
        listener(...args);
      } catch (error) {
        process.emitWarning(`listener for "${event}" threw: ${(error as Error)?.stack ?? String(error)}`);
      }
    }
    return listeners.length > 0;
  }
}
