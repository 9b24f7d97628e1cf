import { EventEmitter } from 'node:events';

/** The event every TypedEmitter has besides its own (mediasoup's `listenererror`). */
export type ListenerErrorEvents = {
  /** A listener of `event` threw `error`: `safeEmit` went on with the other listeners. */
  listenererror: [event: string, error: Error];
};

/** An emitter's events with `listenererror`. */
type AllEvents<Events> = Events & ListenerErrorEvents;
type Args<Events, K> = K extends keyof AllEvents<Events> ? (AllEvents<Events>[K] extends unknown[] ? AllEvents<Events>[K] : never) : never;

/**
 * A typed event emitter whose event map is a plain type (`{ close: []; data: [Buffer] }`), as in mediasoup.
 * `safeEmit` never lets a listener's exception escape into the emitter's own code path: it becomes a process warning
 * and a `listenererror` event (mediasoup's `safeEmit`).
 */
export class TypedEmitter<Events extends { [K in keyof Events]: unknown[] }> {
  readonly #emitter = new EventEmitter();

  constructor() {
    this.#emitter.setMaxListeners(Infinity);
  }

  on<K extends keyof AllEvents<Events> & string>(event: K, listener: (...args: Args<Events, K>) => void): this {
    this.#emitter.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  once<K extends keyof AllEvents<Events> & string>(event: K, listener: (...args: Args<Events, K>) => void): this {
    this.#emitter.once(event, listener as (...args: unknown[]) => void);
    return this;
  }

  off<K extends keyof AllEvents<Events> & string>(event: K, listener: (...args: Args<Events, K>) => void): this {
    this.#emitter.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  removeAllListeners(): void {
    this.#emitter.removeAllListeners();
  }

  listenerCount<K extends keyof AllEvents<Events> & string>(event: K): number {
    return this.#emitter.listenerCount(event);
  }

  /** Resolves with the arguments of the next `event` that passes `filter`, or rejects after `timeoutMs`. */
  next<K extends keyof Events & string>(event: K, timeoutMs: number, filter: (...args: Events[K]) => boolean = () => true): Promise<Events[K]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#emitter.off(event, listener);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}"`));
      }, timeoutMs);
      const listener = (...args: unknown[]): void => {
        if (!filter(...(args as Events[K]))) return;
        clearTimeout(timer);
        this.#emitter.off(event, listener);
        resolve(args as Events[K]);
      };
      this.#emitter.on(event, listener);
    });
  }

  /**
   * Emits to every listener; one that throws is reported as a process warning and as a `listenererror` event, and the
   * others still run. A `listenererror` listener that throws is only reported (no event about an event about it).
   */
  protected safeEmit<K extends keyof Events & string>(event: K, ...args: Events[K]): boolean {
    const listeners = this.#emitter.listeners(event) as ((...a: Events[K]) => void)[];
    for (const listener of listeners) {
      try {
        listener(...args);
      } catch (error) {
        process.emitWarning(`listener for "${event}" threw: ${(error as Error)?.stack ?? String(error)}`);
        if (event !== 'listenererror') this.#listenerError(event, error instanceof Error ? error : new Error(String(error)));
      }
    }
    return listeners.length > 0;
  }

  #listenerError(event: string, error: Error): void {
    for (const listener of this.#emitter.listeners('listenererror') as ((...a: ListenerErrorEvents['listenererror']) => void)[]) {
      try {
        listener(event, error);
      } catch (again) {
        process.emitWarning(`listener for "listenererror" threw: ${(again as Error)?.stack ?? String(again)}`);
      }
    }
  }
}
