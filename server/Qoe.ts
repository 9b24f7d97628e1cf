import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { OnAirError } from '../lib/errors.js';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../lib/log.js';

/**
 * Playback-quality reports (issue #19): what viewers' players saw — time to first frame, stalls and their length,
 * rendition switches, errors, latency — posted by the watch page (or any player) to `POST /api/qoe` at most every
 * 10 s. Each report becomes Prometheus series (by protocol, base units) and per-stream or per-video figures kept in
 * Redis for the studio's panel (startup p50/p95, rebuffer ratio, error rate, latency p50).
 *
 * No personal data: a report carries no address, agent or session; what is kept is counters and the last 1,000
 * startup and latency samples of each stream or video, for a week after its last report.
 */

export const QOE_PROTOCOLS = ['llhls', 'webrtc', 'hls'] as const;
export type QoeProtocol = typeof QOE_PROTOCOLS[number];

/** One report: what happened since the player's previous report (startup only in its first). */
export interface QoeReport {
  /** The stream (12 characters) or the video (16) played. */
  id: string;
  protocol: QoeProtocol;
  startupMs?: number;
  stalls?: number;
  stallMs?: number;
  playedMs?: number;
  switches?: number;
  errors?: number;
  latencyMs?: number;
}

/** The body schema of `POST /api/qoe` (fastify validates it; anything else is a 400 ONAIR_ERR_VALIDATION). */
export const QOE_BODY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'protocol'],
  properties: {
    id: { type: 'string', pattern: '^([a-z0-9]{12}|[a-z0-9]{16})$' },
    protocol: { type: 'string', enum: [...QOE_PROTOCOLS] },
    startupMs: { type: 'number', minimum: 0, maximum: 120_000 },
    stalls: { type: 'integer', minimum: 0, maximum: 1_000 },
    stallMs: { type: 'number', minimum: 0, maximum: 600_000 },
    playedMs: { type: 'number', minimum: 0, maximum: 600_000 },
    switches: { type: 'integer', minimum: 0, maximum: 1_000 },
    errors: { type: 'integer', minimum: 0, maximum: 100 },
    latencyMs: { type: 'number', minimum: 0, maximum: 120_000 },
  },
} as const;

/** A report body is small: anything larger is refused before it is parsed (413). */
export const QOE_BODY_LIMIT_BYTES = 1024;

/** The studio's panel for one stream or video (null where nothing was reported). */
export interface QoeSummary {
  reports: number;
  startupP50Ms: number | null;
  startupP95Ms: number | null;
  /** Stalled time / (played + stalled time). */
  rebufferRatio: number | null;
  /** Reports that carried an error / reports. */
  errorRate: number | null;
  latencyP50Ms: number | null;
  stalls: number;
}

const PREFIX = 'onair:qoe:';
const KEEP_MS = 7 * 24 * 3600_000;
const SAMPLES = 1_000;

const quantile = (sorted: number[], q: number): number | null =>
  (sorted.length === 0 ? null : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!);

export class QualityReports {
  readonly #redis: Redis;
  readonly #metrics: {
    reports: Counter<'protocol'>;
    startup: Histogram<'protocol'>;
    stalls: Counter<'protocol'>;
    stallSeconds: Counter<'protocol'>;
    playedSeconds: Counter<'protocol'>;
    switches: Counter<'protocol'>;
    errors: Counter<'protocol'>;
    latency: Histogram<'protocol'>;
  };

  readonly log: Logger;

  constructor(options: { redis: Redis; registry: Registry; log: Logger }) {
    this.#redis = options.redis;
    this.log = options.log;
    const registers = [options.registry];
    const labelNames = ['protocol'] as const;
    this.#metrics = {
      reports: new Counter({ name: 'onair_qoe_reports_total', help: 'Playback-quality reports accepted from players, by protocol (llhls, webrtc, hls: on demand).', labelNames, registers }),
      startup: new Histogram({
        name: 'onair_qoe_startup_seconds', help: 'Time to first frame players reported (navigation → playing), by protocol.',
        labelNames, buckets: [0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10], registers,
      }),
      stalls: new Counter({ name: 'onair_qoe_stalls_total', help: 'Stalls players reported (playback waited for data after it had started), by protocol.', labelNames, registers }),
      stallSeconds: new Counter({ name: 'onair_qoe_stall_seconds_total', help: 'Time players reported stalled, by protocol (rebuffer ratio: this / (this + played)).', labelNames, registers }),
      playedSeconds: new Counter({ name: 'onair_qoe_played_seconds_total', help: 'Time players reported playing, by protocol.', labelNames, registers }),
      switches: new Counter({ name: 'onair_qoe_switches_total', help: 'Rendition switches players reported, by protocol.', labelNames, registers }),
      errors: new Counter({ name: 'onair_qoe_errors_total', help: 'Fatal playback errors players reported, by protocol.', labelNames, registers }),
      latency: new Histogram({
        name: 'onair_qoe_latency_seconds', help: 'Live latency players reported (their own estimate), by protocol.',
        labelNames, buckets: [0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13], registers,
      }),
    };
  }

  /** Counts a validated report: the metrics at once, the stream's or video's figures in Redis (awaited). */
  async record(report: QoeReport): Promise<void> {
    const { protocol } = report;
    const m = this.#metrics;
    m.reports.inc({ protocol });
    if (report.startupMs !== undefined) m.startup.observe({ protocol }, report.startupMs / 1000);
    if (report.stalls) m.stalls.inc({ protocol }, report.stalls);
    if (report.stallMs) m.stallSeconds.inc({ protocol }, report.stallMs / 1000);
    if (report.playedMs) m.playedSeconds.inc({ protocol }, report.playedMs / 1000);
    if (report.switches) m.switches.inc({ protocol }, report.switches);
    if (report.errors) m.errors.inc({ protocol }, report.errors);
    if (report.latencyMs !== undefined) m.latency.observe({ protocol }, report.latencyMs / 1000);

    const key = `${PREFIX}${report.id}`;
    const pipeline = this.#redis.pipeline();
    pipeline.hincrby(key, 'reports', 1);
    if (report.errors) pipeline.hincrby(key, 'erroneous', 1);
    if (report.stalls) pipeline.hincrby(key, 'stalls', report.stalls);
    if (report.stallMs) pipeline.hincrbyfloat(key, 'stallMs', report.stallMs);
    if (report.playedMs) pipeline.hincrbyfloat(key, 'playedMs', report.playedMs);
    pipeline.pexpire(key, KEEP_MS);
    for (const [name, value] of [['startup', report.startupMs], ['latency', report.latencyMs]] as const) {
      if (value === undefined) continue;
      pipeline.lpush(`${key}:${name}`, Math.round(value));
      pipeline.ltrim(`${key}:${name}`, 0, SAMPLES - 1);
      pipeline.pexpire(`${key}:${name}`, KEEP_MS);
    }
    const results = await pipeline.exec();
    const failed = results?.find(([error]) => error)?.[0];
    if (failed) throw failed;
  }

  /** The panel's figures for a stream or video, from every process's reports. */
  async summary(id: string): Promise<QoeSummary> {
    const key = `${PREFIX}${id}`;
    const [counters, startup, latency] = await Promise.all([
      this.#redis.hgetall(key),
      this.#redis.lrange(`${key}:startup`, 0, SAMPLES - 1),
      this.#redis.lrange(`${key}:latency`, 0, SAMPLES - 1),
    ]);
    const number = (name: string): number => Number(counters[name] ?? 0) || 0;
    const sorted = (values: string[]): number[] => values.map(Number).filter(Number.isFinite).sort((a, b) => a - b);
    const startups = sorted(startup);
    const latencies = sorted(latency);
    const reports = number('reports');
    const watched = number('playedMs') + number('stallMs');
    return {
      reports,
      startupP50Ms: quantile(startups, 0.5),
      startupP95Ms: quantile(startups, 0.95),
      rebufferRatio: watched > 0 ? number('stallMs') / watched : null,
      errorRate: reports > 0 ? number('erroneous') / reports : null,
      latencyP50Ms: quantile(latencies, 0.5),
      stalls: number('stalls'),
    };
  }
}

/** How long an id found (or not) is remembered before the database is asked again, and how many are remembered. */
const KNOWN_MS = 60_000;
const MAX_KNOWN = 10_000;

/**
 * `POST /api/qoe` (anyone; validated, rate-limited per address by `ONAIR_RATE_QOE_PER_MIN`, 1 kB at most; `204`) and
 * `GET /api/qoe/:id` (admin: the panel's figures). A report for an id that is no stream or video is `404`: no key
 * is made in Redis for it. Redis away: `503 ONAIR_ERR_NOT_READY` (the metrics counted the report).
 */
export function registerQoeRoutes(app: FastifyInstance, options: { reports: QualityReports; exists: (id: string) => Promise<boolean> }): void {
  const known = new Map<string, { until: number; exists: boolean }>();
  const exists = async (id: string): Promise<boolean> => {
    const now = Date.now();
    const cached = known.get(id);
    if (cached && cached.until > now) return cached.exists;
    const found = await options.exists(id);
    known.delete(id);
    if (known.size >= MAX_KNOWN) known.delete(known.keys().next().value!);
    known.set(id, { until: now + KNOWN_MS, exists: found });
    return found;
  };

  app.post('/api/qoe', { bodyLimit: QOE_BODY_LIMIT_BYTES, schema: { body: QOE_BODY_SCHEMA } }, async (request, reply) => {
    const report = request.body as QoeReport;
    if (!(await exists(report.id))) throw new OnAirError('ONAIR_ERR_NOT_FOUND', 'No stream or video with this id');
    try {
      await options.reports.record(report);
    } catch (error) {
      options.reports.log.debug({ err: error }, 'qoe: a report could not be kept (Redis)');
      throw new OnAirError('ONAIR_ERR_NOT_READY', 'Quality reports cannot be kept now');
    }
    return reply.code(204).send();
  });

  app.get('/api/qoe/:id', {
    onRequest: app.requireAdmin,
    schema: { params: { type: 'object', required: ['id'], properties: { id: QOE_BODY_SCHEMA.properties.id } } },
  }, async (request) => options.reports.summary((request.params as { id: string }).id));
}
