import { Queue, UnrecoverableError, Worker, type ConnectionOptions, type Job } from 'bullmq';
import type { RedisOptions } from 'ioredis';
import type { Logger } from '../lib/log.js';
import { runPipeline, sourcePrefix, sweepScratch, videoPrefix, type PipelineDeps } from './pipeline.js';
import { UnusableSourceError } from './probe.js';

export const VOD_QUEUE = 'onair-vod';

export type VodJobData = { videoId: string } | { prefix: string };

export interface VodQueueOptions {
  connection: RedisOptions;
  /** Tries per video before it is marked failed (an unusable source fails at once). */
  attempts: number;
  /** First retry delay; it doubles for each later try. */
  backoffMs: number;
  /** How long a replaced version stays in storage for players that still have its playlists. */
  replacedRetentionMs: number;
}

/** The producer side: enqueue a video (idempotent per video) or a delayed clean-up of a replaced version. */
export class VodQueue {
  readonly queue: Queue;
  readonly #options: VodQueueOptions;

  constructor(options: VodQueueOptions) {
    this.#options = options;
    this.queue = new Queue(VOD_QUEUE, { connection: bullConnection(options.connection) });
    this.queue.on('error', () => { /* connection errors surface in readiness; ioredis reconnects */ });
  }

  /**
   * The job id is the video's: enqueueing twice (a restart re-enqueueing unfinished videos) adds nothing. `source` is
   * the video's catalog `source` (`'upload'`, or the stream id of an archived event): live archives go first.
   */
  async enqueue(videoId: string, source: string): Promise<void> {
    await this.queue.add('vod', { videoId }, {
      jobId: `vod-${videoId}`,
      priority: jobPriority(source),
      attempts: this.#options.attempts,
      backoff: { type: 'exponential', delay: this.#options.backoffMs },
      removeOnComplete: { age: 3600 },
      removeOnFail: { age: 7 * 24 * 3600 },
    });
  }

  async scheduleCleanup(prefix: string, delayMs = this.#options.replacedRetentionMs): Promise<void> {
    await this.queue.add('cleanup', { prefix }, {
      jobId: `cleanup-${prefix.replace(/\//g, '-')}`,
      delay: delayMs,
      attempts: 5,
      backoff: { type: 'exponential', delay: 10_000 },
      removeOnComplete: true,
      removeOnFail: { age: 24 * 3600 },
    });
  }

  /** Job counts by state (for /metrics and tests). */
  counts(): Promise<Record<string, number>> {
    return this.queue.getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized');
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}

export interface VodWorkerOptions {
  connection: RedisOptions;
  /** Videos processed at once by this process. */
  concurrency: number;
  /** A job whose worker stops renewing its lock for this long is taken back and retried (stalled-job recovery). */
  lockMs: number;
  pipeline: PipelineDeps;
  queue: VodQueue;
  log: Logger;
}

/**
 * The consumer side: runs the pipeline for `vod` jobs and removes replaced versions for `cleanup` jobs. Runs in the
 * all-in-one node or alone (`ONAIR_ROLE=worker`), as many processes as wanted against one Redis.
 */
export class VodWorker {
  readonly worker: Worker;
  readonly #running = new Map<AbortController, Promise<unknown>>();

  constructor(options: VodWorkerOptions) {
    const { pipeline, queue, log } = options;
    this.worker = new Worker(VOD_QUEUE, async (job: Job<VodJobData>) => {
      if ('prefix' in job.data) {
        await pipeline.storage.deletePrefix(job.data.prefix);
        return;
      }
      const { videoId } = job.data;
      const abort = new AbortController();
      let settle!: () => void;
      this.#running.set(abort, new Promise<void>((resolve) => { settle = resolve; }));
      try {
        const result = await runPipeline(pipeline, {
          videoId,
          signal: abort.signal,
          progress: async (value) => {
            await job.updateProgress(value);
            await pipeline.catalog.setProgress(videoId, value);
          },
        });
        if (!result) return;
        if (result.replaced) await queue.scheduleCleanup(videoPrefix(videoId, result.replaced));
        // Versions left by attempts that died between store and publish: nothing points at them.
        for (const version of await versionsOf(pipeline, videoId)) {
          if (version !== result.version && version !== result.replaced) await pipeline.storage.deletePrefix(videoPrefix(videoId, version));
        }
      } catch (error) {
        if (error instanceof UnusableSourceError) {
          log.warn({ videoId, reason: error.reason }, 'vod source refused');
          await failForGood(pipeline, videoId, error.reason);
          throw new UnrecoverableError(error.reason);
        }
        const attempts = job.opts.attempts ?? 1;
        if (abort.signal.aborted) throw error;
        log.error({ videoId, attempt: job.attemptsMade + 1, attempts, err: (error as Error).message }, 'vod job attempt failed');
        if (job.attemptsMade + 1 >= attempts && !abort.signal.aborted) {
          await failForGood(pipeline, videoId, `Processing failed after ${attempts} attempts: ${(error as Error).message.slice(0, 200)}`);
        }
        throw error;
      } finally {
        this.#running.delete(abort);
        settle();
      }
    }, {
      connection: bullConnection(options.connection),
      concurrency: options.concurrency,
      lockDuration: options.lockMs,
      stalledInterval: Math.max(1000, Math.floor(options.lockMs / 2)),
      maxStalledCount: 2,
    });
    this.worker.on('error', (error) => log.debug({ err: error.message }, 'vod worker connection error'));
    void sweepScratch(pipeline.workDir, log).catch((error: unknown) => log.warn({ err: error }, 'could not sweep the VOD scratch folders'));
  }

  /** Stops taking jobs; running ffmpeg processes are stopped and their jobs go back to the queue for a retry. */
  async close(): Promise<void> {
    const running = [...this.#running.values()];
    for (const abort of this.#running.keys()) abort.abort();
    await this.worker.close(true);
    // The aborted runs end quickly (ffmpeg is stopped); wait so that none touches a closed database.
    await Promise.all(running);
  }
}

/**
 * BullMQ priorities (1 is taken first): an event's archive before uploads, so that one huge upload does not hold back
 * the archives of the events that end behind it. Within one priority, first in first out.
 */
export const VOD_PRIORITY = { archive: 1, upload: 10 } as const;

export function jobPriority(source: string): number {
  return source === 'upload' ? VOD_PRIORITY.upload : VOD_PRIORITY.archive;
}

/** BullMQ's blocking commands need `maxRetriesPerRequest: null` (its docs); its option type is its own. */
function bullConnection(options: RedisOptions): ConnectionOptions {
  return { ...options, maxRetriesPerRequest: null } as ConnectionOptions;
}

async function versionsOf(pipeline: PipelineDeps, videoId: string): Promise<Set<string>> {
  const versions = new Set<string>();
  for (const key of await pipeline.storage.list(`videos/${videoId}`)) {
    const version = key.split('/')[2];
    if (version) versions.add(version);
  }
  return versions;
}

/**
 * A video that cannot be processed: marked failed with the reason. An upload leaves nothing behind in storage; an
 * archived event keeps its replay (still playable) and its recording.
 */
async function failForGood(pipeline: PipelineDeps, videoId: string, reason: string): Promise<void> {
  try {
    const video = await pipeline.catalog.get(videoId);
    if (video?.source !== 'upload') return;
    // Cleaned up before it says `failed`: whoever sees the failure finds nothing of the upload left in storage.
    await pipeline.storage.deletePrefix(`videos/${videoId}`);
    await pipeline.storage.deletePrefix(sourcePrefix(videoId));
  } finally {
    await pipeline.catalog.fail(videoId, reason);
  }
}
