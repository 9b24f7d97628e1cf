import { io, type Socket } from 'socket.io-client';

/*
 * The soak run's chat: N socket.io-client connections to `/chat` joined to one stream, each posting a comment now and
 * then (at its own random phase, every `commentEveryMs` on average), every one counting the comments it receives.
 * Text is `soak <n>`; a probe (`probe <n>`) posted by one client at the end must reach all of them.
 */

const CONNECT_BATCH = 20;
const ACK_TIMEOUT_MS = 10_000;

export interface ChatFigures {
  clients: number;
  /** Clients connected and joined now. */
  connected: number;
  posted: number;
  /** Comments the server acknowledged with `ok: true`. */
  accepted: number;
  refused: number;
  /** Comments received, all clients together. */
  received: number;
  /** Disconnections seen (socket.io-client reconnects by itself). */
  disconnects: number;
  firstErrors: string[];
}

class ChatClient {
  readonly socket: Socket;
  received = 0;
  probes = new Set<number>();
  joined = false;

  constructor(origin: string) {
    this.socket = io(`${origin}/chat`, { transports: ['websocket'], reconnectionDelay: 500, timeout: 10_000 });
    this.socket.on('comment', (comment: { text?: unknown }) => {
      this.received += 1;
      const probe = typeof comment.text === 'string' ? /^probe (\d+)$/.exec(comment.text) : null;
      if (probe) this.probes.add(Number(probe[1]));
    });
  }
}

export class ChatCrowd {
  readonly #clients: ChatClient[] = [];
  readonly #timers = new Set<NodeJS.Timeout>();
  #posted = 0;
  #accepted = 0;
  #refused = 0;
  #disconnects = 0;
  #probe = 0;
  #stopped = false;
  readonly #errors: string[] = [];

  constructor(readonly origin: string, readonly streamId: string, readonly count: number, readonly commentEveryMs: number) {}

  /** Connects and joins every client, `CONNECT_BATCH` at a time; rejects if one cannot join within the timeout. */
  async connect(): Promise<void> {
    for (let i = 0; i < this.count; i += CONNECT_BATCH) {
      await Promise.all(Array.from({ length: Math.min(CONNECT_BATCH, this.count - i) }, async (_, k) => {
        const client = new ChatClient(this.origin);
        this.#clients.push(client);
        const name = `soak${i + k}`;
        // A reconnection (socket.io-client does it by itself) must join again: the room is per connection.
        client.socket.on('connect', () => {
          if (!client.joined) return;
          void this.#join(client, name).catch((error: unknown) => this.#error(`rejoin: ${String(error)}`));
        });
        client.socket.on('disconnect', () => {
          if (!this.#stopped) this.#disconnects += 1;
        });
        await new Promise<void>((resolve, reject) => {
          client.socket.once('connect', resolve);
          client.socket.once('connect_error', (error) => reject(new Error(`a chat client could not connect: ${error.message}`)));
        });
        await this.#join(client, name);
        client.joined = true;
      }));
    }
  }

  async #join(client: ChatClient, name: string): Promise<void> {
    const answer = await client.socket.timeout(ACK_TIMEOUT_MS).emitWithAck('join', { streamId: this.streamId, name }) as { ok?: boolean; error?: { code?: string } };
    if (answer?.ok !== true) throw new Error(`join refused: ${answer?.error?.code ?? JSON.stringify(answer)}`);
  }

  /** Each client posts every `commentEveryMs` on average, at its own phase, until `stop()`. */
  startPosting(): void {
    this.#clients.forEach((client) => {
      const next = (): void => {
        if (this.#stopped) return;
        // Uniform in [0.5, 1.5] × the period: clients do not fall into step.
        const timer = setTimeout(() => {
          this.#timers.delete(timer);
          void this.#post(client, `soak ${this.#posted + 1}`).finally(next);
        }, this.commentEveryMs * (0.5 + Math.random()));
        this.#timers.add(timer);
      };
      next();
    });
  }

  async #post(client: ChatClient, text: string): Promise<boolean> {
    if (!client.socket.connected) return false;
    this.#posted += 1;
    try {
      const answer = await client.socket.timeout(ACK_TIMEOUT_MS).emitWithAck('comment', { text }) as { ok?: boolean; error?: { code?: string } };
      if (answer?.ok === true) {
        this.#accepted += 1;
        return true;
      }
      this.#refused += 1;
      this.#error(`comment refused: ${answer?.error?.code ?? JSON.stringify(answer)}`);
    } catch (error) {
      this.#refused += 1;
      this.#error(`comment: ${(error as Error).message}`);
    }
    return false;
  }

  /**
   * One client posts a probe; resolves with how many clients received it within `timeoutMs` (polled: the clients'
   * counters are in this process).
   */
  async probe(timeoutMs: number): Promise<{ reached: number; of: number }> {
    const n = ++this.#probe;
    const sender = this.#clients.find((c) => c.socket.connected);
    if (!sender || !(await this.#post(sender, `probe ${n}`))) return { reached: 0, of: this.#clients.length };
    const reached = (): number => this.#clients.filter((c) => c.probes.has(n)).length;
    const deadline = Date.now() + timeoutMs;
    while (reached() < this.#clients.length && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    return { reached: reached(), of: this.#clients.length };
  }

  figures(): ChatFigures {
    return {
      clients: this.count,
      connected: this.#clients.filter((c) => c.socket.connected).length,
      posted: this.#posted,
      accepted: this.#accepted,
      refused: this.#refused,
      received: this.#clients.reduce((sum, c) => sum + c.received, 0),
      disconnects: this.#disconnects,
      firstErrors: [...this.#errors],
    };
  }

  #error(message: string): void {
    if (this.#errors.length < 5) this.#errors.push(message);
  }

  /** Stops posting and closes every connection; idempotent. */
  close(): void {
    this.#stopped = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const client of this.#clients) client.socket.disconnect();
  }
}
