/** Counts by emoji. */
export type ReactionCounts = Record<string, number>;

export interface ReactionWindow {
  streamId: string;
  /** Everything to show for this window: this process's reactions and those other processes forwarded. */
  counts: ReactionCounts;
  /** This process's own reactions only: what it forwards to the other processes. */
  own: ReactionCounts;
}

interface Pending {
  own: Map<string, number>;
  all: Map<string, number>;
  timer: NodeJS.Timeout;
}

/**
 * Coalesces reactions per stream into windows of `windowMs`. The first reaction after a quiet period opens a window;
 * when it closes, `flush` gets the counts of the window once — so what goes out per stream is at most one update per
 * window, however many viewers reacted in it.
 */
export class ReactionCoalescer {
  readonly windowMs: number;
  readonly #flush: (window: ReactionWindow) => void;
  readonly #pending = new Map<string, Pending>();

  constructor(windowMs: number, flush: (window: ReactionWindow) => void) {
    this.windowMs = windowMs;
    this.#flush = flush;
  }

  /** Adds `count` of `emoji` to the stream's open window (opening one if needed). `own`: from this process's viewers. */
  add(streamId: string, emoji: string, count: number, own: boolean): void {
    let pending = this.#pending.get(streamId);
    if (!pending) {
      const timer = setTimeout(() => this.#close(streamId), this.windowMs);
      pending = { own: new Map(), all: new Map(), timer };
      this.#pending.set(streamId, pending);
    }
    pending.all.set(emoji, (pending.all.get(emoji) ?? 0) + count);
    if (own) pending.own.set(emoji, (pending.own.get(emoji) ?? 0) + count);
  }

  #close(streamId: string): void {
    const pending = this.#pending.get(streamId);
    if (!pending) return;
    this.#pending.delete(streamId);
    this.#flush({ streamId, counts: Object.fromEntries(pending.all), own: Object.fromEntries(pending.own) });
  }

  /** Drops every open window without flushing. */
  close(): void {
    for (const pending of this.#pending.values()) clearTimeout(pending.timer);
    this.#pending.clear();
  }
}
