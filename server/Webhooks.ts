import { createHmac, randomBytes } from 'node:crypto';
import { Queue, Worker, DelayedError, type ConnectionOptions, type Job } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import type { Redis, RedisOptions } from 'ioredis';
import type { Kysely } from 'kysely';
import { OnAirError } from '../lib/errors.js';
import { randomId } from '../lib/ids.js';
import type { Logger } from '../lib/log.js';

/**
 * Webhooks (issue #19): the outside world is told when a stream goes live or ends and when a video is ready or
 * failed. Configured through the admin API; each delivery is a JSON POST signed with HMAC-SHA256 over
 * `<timestamp>.<body>` with the webhook's secret, queued in BullMQ (Redis: it survives restarts) and retried with an
 * exponential backoff while the receiver fails. Each webhook gets its deliveries in the order the events happened:
 * a delivery waits until the one before it to the same webhook was made (or given up).
 */

export const WEBHOOK_EVENTS = ['stream.live', 'stream.ended', 'video.ready', 'video.failed'] as const;
export type WebhookEvent = typeof WEBHOOK_EVENTS[number];

export interface WebhooksTable {
  id: string;
  url: string;
  /** JSON array of WebhookEvent. */
  events: string;
  secret: string;
  created_at: number;
}

export interface Webhook {
  id: string;
  url: string;
  events: WebhookEvent[];
  createdAt: string;
}

/** One line of a webhook's delivery log (the last 100 are kept in Redis). */
export interface DeliveryLogEntry {
  deliveryId: string;
  event: WebhookEvent;
  attempt: number;
  /** The receiver's HTTP status, or 0 when it could not be reached. */
  status: number;
  ok: boolean;
  error?: string;
  at: string;
  durationMs: number;
}

interface DeliveryJob {
  webhookId: string;
  deliveryId: string;
  event: WebhookEvent;
  /** This delivery's place among the webhook's deliveries (1, 2, …). */
  seq: number;
  body: string;
}

export const WEBHOOK_QUEUE = 'onair-webhooks';
const PREFIX = 'onair:webhook:';
const MAX_WEBHOOKS = 20;
const LOG_SIZE = 100;
const TIMEOUT_MS = 10_000;

export const webhookMigrations = {
  '0008_webhooks': {
    async up(db: Kysely<any>): Promise<void> {
      await db.schema
        .createTable('webhooks')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('url', 'text', (c) => c.notNull())
        .addColumn('events', 'text', (c) => c.notNull())
        .addColumn('secret', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
    },
  },
};

/** The signature a receiver checks: `sha256=` + hex HMAC-SHA256(secret, `${timestamp}.${body}`). */
export function signDelivery(secret: string, timestamp: number, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

const toWebhook = (row: WebhooksTable): Webhook => ({
  id: row.id, url: row.url, events: JSON.parse(row.events) as WebhookEvent[], createdAt: new Date(Number(row.created_at)).toISOString(),
});

export interface WebhooksOptions {
  db: Kysely<{ webhooks: WebhooksTable }>;
  /** For the queue's and the worker's own connections (BullMQ). */
  redisOptions: RedisOptions;
  /** For the sequence numbers and the delivery log. */
  redis: Redis;
  log: Logger;
  /** Tries per delivery before it is given up (the next one to the same webhook then goes). */
  attempts: number;
  /** First retry delay; it doubles for each later try. */
  backoffMs: number;
  /** Deliver from this process (false: only enqueue). */
  deliver: boolean;
}

export class Webhooks {
  readonly #options: WebhooksOptions;
  readonly #queue: Queue<DeliveryJob>;
  readonly #worker: Worker<DeliveryJob> | undefined;
  /** Emits run one after the other: sequence numbers follow the order of the calls. */
  #chain: Promise<void> = Promise.resolve();

  constructor(options: WebhooksOptions) {
    this.#options = options;
    const connection = { ...options.redisOptions, maxRetriesPerRequest: null } as ConnectionOptions;
    this.#queue = new Queue<DeliveryJob>(WEBHOOK_QUEUE, { connection });
    this.#queue.on('error', () => { /* ioredis reconnects; readiness reports Redis */ });
    this.#worker = options.deliver
      ? new Worker<DeliveryJob>(WEBHOOK_QUEUE, (job, token) => this.#deliver(job, token), { connection, concurrency: 4 })
      : undefined;
    this.#worker?.on('error', (error) => options.log.debug({ err: error.message }, 'webhook worker connection error'));
  }

  async list(): Promise<Webhook[]> {
    return (await this.#options.db.selectFrom('webhooks').selectAll().orderBy('created_at').execute()).map(toWebhook);
  }

  /** A new webhook; its secret is returned here only. */
  async create(url: string, events: WebhookEvent[]): Promise<Webhook & { secret: string }> {
    const count = (await this.list()).length;
    if (count >= MAX_WEBHOOKS) throw new OnAirError('ONAIR_ERR_VALIDATION', `At most ${MAX_WEBHOOKS} webhooks`);
    const row: WebhooksTable = { id: randomId(12), url, events: JSON.stringify(events), secret: randomBytes(32).toString('base64url'), created_at: Date.now() };
    await this.#options.db.insertInto('webhooks').values(row).execute();
    return { ...toWebhook(row), secret: row.secret };
  }

  async delete(id: string): Promise<boolean> {
    const result = await this.#options.db.deleteFrom('webhooks').where('id', '=', id).executeTakeFirst();
    await this.#options.redis.del(`${PREFIX}${id}:log`, `${PREFIX}${id}:seq`, `${PREFIX}${id}:done`).catch(() => undefined);
    return Number(result.numDeletedRows) > 0;
  }

  async deliveries(id: string): Promise<DeliveryLogEntry[]> {
    return (await this.#options.redis.lrange(`${PREFIX}${id}:log`, 0, LOG_SIZE - 1)).map((line) => JSON.parse(line) as DeliveryLogEntry);
  }

  /**
   * An event happened: one delivery per webhook that wants it, queued (in Redis) in the order of the calls. A
   * failure to queue (the database or Redis away) is logged: the event is not retried later.
   */
  emit(event: WebhookEvent, data: Record<string, unknown>): Promise<void> {
    this.#chain = this.#chain.then(() => this.#enqueue(event, data));
    return this.#chain;
  }

  async #enqueue(event: WebhookEvent, data: Record<string, unknown>): Promise<void> {
    try {
      const hooks = (await this.list()).filter((hook) => hook.events.includes(event));
      for (const hook of hooks) {
        const deliveryId = randomId(16);
        const seq = await this.#options.redis.incr(`${PREFIX}${hook.id}:seq`);
        const body = JSON.stringify({ id: deliveryId, event, createdAt: new Date().toISOString(), data });
        await this.#queue.add(event, { webhookId: hook.id, deliveryId, event, seq, body }, {
          jobId: deliveryId,
          attempts: this.#options.attempts,
          backoff: { type: 'exponential', delay: this.#options.backoffMs },
          removeOnComplete: { age: 24 * 3600, count: 1000 },
          removeOnFail: { age: 7 * 24 * 3600 },
        });
      }
    } catch (error) {
      this.#options.log.error({ err: error, event }, 'webhook: the event could not be queued for delivery');
    }
  }

  async #deliver(job: Job<DeliveryJob>, token: string | undefined): Promise<void> {
    const { webhookId, deliveryId, event, seq, body } = job.data;
    const redis = this.#options.redis;
    const done = Number(await redis.get(`${PREFIX}${webhookId}:done`) ?? 0);
    if (seq <= done) return;
    if (seq > done + 1) {
      // The delivery before it to the same webhook is not made yet: wait for it (this is no try).
      await job.moveToDelayed(Date.now() + 250, token);
      throw new DelayedError();
    }
    const hook = await this.#options.db.selectFrom('webhooks').selectAll().where('id', '=', webhookId).executeTakeFirst();
    if (!hook) return;
    const attempt = job.attemptsMade + 1;
    const timestamp = Math.floor(Date.now() / 1000);
    const started = Date.now();
    let status = 0;
    let error: string | undefined;
    try {
      const response = await fetch(hook.url, {
        method: 'POST',
        redirect: 'manual',
        signal: AbortSignal.timeout(TIMEOUT_MS),
        headers: {
          'content-type': 'application/json',
          'user-agent': 'OnAir-Webhooks/1',
          'x-onair-event': event,
          'x-onair-delivery': deliveryId,
          'x-onair-timestamp': String(timestamp),
          'x-onair-signature': signDelivery(hook.secret, timestamp, body),
        },
        body,
      });
      status = response.status;
      await response.body?.cancel().catch(() => undefined);
      if (status < 200 || status >= 300) error = `the receiver answered ${status}`;
    } catch (thrown) {
      error = (thrown as Error).message.slice(0, 200);
    }
    const ok = error === undefined;
    const entry: DeliveryLogEntry = { deliveryId, event, attempt, status, ok, ...(error ? { error } : {}), at: new Date(started).toISOString(), durationMs: Date.now() - started };
    await redis.multi().lpush(`${PREFIX}${webhookId}:log`, JSON.stringify(entry)).ltrim(`${PREFIX}${webhookId}:log`, 0, LOG_SIZE - 1).exec();
    const last = attempt >= (job.opts.attempts ?? 1);
    if (ok || last) {
      // Made, or given up: the next delivery to this webhook may go.
      await redis.set(`${PREFIX}${webhookId}:done`, seq);
      if (!ok) this.#options.log.warn({ webhookId, deliveryId, event, attempts: attempt, err: error }, 'webhook: delivery given up');
      if (ok) return;
    }
    throw new Error(error);
  }

  /** Stops delivering (a delivery cut off is retried by whichever process takes the job back) and closes the queue. */
  async close(): Promise<void> {
    await this.#chain;
    // Forced: a worker waiting on Redis (away, or a receiver that does not answer) must not hold the process open.
    await this.#worker?.close(true);
    await this.#queue.close();
  }
}

const ID = { type: 'string', pattern: '^[a-z0-9]{12}$' } as const;

/** Admin routes: `GET/POST /api/webhooks`, `DELETE /api/webhooks/:id`, `GET /api/webhooks/:id/deliveries`. */
export function registerWebhookRoutes(app: FastifyInstance, webhooks: Webhooks): void {
  const admin = { onRequest: app.requireAdmin };
  app.get('/api/webhooks', admin, async () => ({ webhooks: await webhooks.list() }));
  app.post('/api/webhooks', {
    ...admin,
    schema: {
      body: {
        type: 'object', additionalProperties: false, required: ['url'],
        properties: {
          url: { type: 'string', minLength: 8, maxLength: 2000, pattern: '^https?://' },
          events: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', enum: [...WEBHOOK_EVENTS] } },
        },
      },
    },
  }, async (request, reply) => {
    const body = request.body as { url: string; events?: WebhookEvent[] };
    try {
      new URL(body.url);
    } catch {
      throw new OnAirError('ONAIR_ERR_VALIDATION', 'body/url is not a URL');
    }
    return reply.code(201).send(await webhooks.create(body.url, body.events ?? [...WEBHOOK_EVENTS]));
  });
  app.delete('/api/webhooks/:id', { ...admin, schema: { params: { type: 'object', required: ['id'], properties: { id: ID } } } }, async (request, reply) => {
    if (!(await webhooks.delete((request.params as { id: string }).id))) throw new OnAirError('ONAIR_ERR_NOT_FOUND', 'No webhook with this id');
    return reply.code(204).send();
  });
  app.get('/api/webhooks/:id/deliveries', { ...admin, schema: { params: { type: 'object', required: ['id'], properties: { id: ID } } } },
    async (request) => ({ deliveries: await webhooks.deliveries((request.params as { id: string }).id) }));
}
