import { DelayedError, Queue, UnrecoverableError, Worker, type ConnectionOptions, type Job } from 'bullmq';
import type { RedisOptions } from 'ioredis';
import type { Logger } from '../lib/log.js';
import { dependencyOf, fromDependency, guardDependency, waitDelayMs, waitingReason, type Dependency } from './faults.js';
import { runPipeline, sweepScratch, videoPrefix, type PipelineDeps } from './pipeline.js';
import { UnusableSourceError } from './probe.js';

export const VOD_QUEUE = 'onair-vod';

/** `waits`: how many times this video's job waited for a dependency so far (its backoff grows with it). */
export type VodJobData = { videoId: string; waits?: number } | { prefix: string };

export interface VodQueueOptions {
  connection: RedisOptions;
  /**
   * Tries per video before it is marked failed (an unusable source fails at once). Waits for a dependency (S3, the
   * disk, the database, Redis) are not tries: they last as long as the outage.
   */
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
   * the video's catalog `source` (`'upload'`, or the stream id of an archived event): live archives go first. A job
   * left failed for a video that is processing (an admin's retry; a job BullMQ failed while Redis was away) goes again.
   */
  async enqueue(videoId: string, source: string): Promise<void> {
    const existing = await this.queue.getJob(`vod-${videoId}`);
    if (existing && (await existing.isFailed())) await existing.remove();
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
  /** First wait for a dependency that is away; it doubles for each later one, up to `waitMaxMs`. */
  backoffMs: number;
  waitMaxMs: number;
  log: Logger;
  /** A video is done: ready (published), or failed for good (webhooks: `video.ready`, `video.failed`). */
  onFinished?: (videoId: string, outcome: 'ready' | 'failed', reason?: string) => void;
}

/**
 * The consumer side: runs the pipeline for `vod` jobs and removes replaced versions for `cleanup` jobs. Runs in the
 * all-in-one node or alone (`ONAIR_ROLE=worker`), as many processes as wanted against one Redis.
 */
export class VodWorker {
  readonly worker: Worker;
  /** Times a job of this process waited for each dependency (`onair_vod_dependency_waits_total`). */
  readonly dependencyWaits = new Map<Dependency, number>();
  readonly #running = new Map<AbortController, Promise<unknown>>();

  constructor(options: VodWorkerOptions) {
    const { queue, log } = options;
    // Errors out of storage and catalog calls say where they came from: an ECONNREFUSED is S3's or the database's.
    const pipeline: PipelineDeps = {
      ...options.pipeline,
      storage: guardDependency(options.pipeline.storage, 'storage'),
      catalog: guardDependency(options.pipeline.catalog, 'database'),
    };
    this.worker = new Worker(VOD_QUEUE, async (job: Job<VodJobData>, token?: string) => {
      if ('prefix' in job.data) {
        await pipeline.storage.deletePrefix(job.data.prefix);
        return;
      }
      const { videoId } = job.data;
      const waited = (job.data.waits ?? 0) > 0;
      let cleared = false;
      const abort = new AbortController();
      let settle!: () => void;
      this.#running.set(abort, new Promise<void>((resolve) => { settle = resolve; }));
      try {
        const result = await runPipeline(pipeline, {
          videoId,
          signal: abort.signal,
          progress: async (value) => {
            await job.updateProgress(value).catch((error: unknown) => { throw fromDependency(error, 'redis'); });
            await pipeline.catalog.setProgress(videoId, value);
            // Past the fetch and the probe: whatever it waited for answers again.
            if (waited && !cleared && value >= 5) {
              cleared = true;
              await pipeline.catalog.setWaiting(videoId, null);
            }
          },
        });
        if (!result) return;
        options.onFinished?.(videoId, 'ready');
        if (result.replaced) await queue.scheduleCleanup(videoPrefix(videoId, result.replaced));
        // Versions left by attempts that died between store and publish: nothing points at them.
        for (const version of await versionsOf(pipeline, videoId)) {
          if (version !== result.version && version !== result.replaced) await pipeline.storage.deletePrefix(videoPrefix(videoId, version));
        }
      } catch (error) {
        if (abort.signal.aborted && !(error instanceof UnusableSourceError)) throw error;
        try {
          if (error instanceof UnusableSourceError) {
            log.warn({ videoId, reason: error.reason }, 'vod source refused');
            await failForGood(pipeline, videoId, error.reason);
            options.onFinished?.(videoId, 'failed', error.reason);
            throw new UnrecoverableError(error.reason);
          }
          const dependency = dependencyOf(error);
          if (dependency) await this.#wait(job, token, dependency, error, options);
          const attempts = job.opts.attempts ?? 1;
          log.error({ videoId, attempt: job.attemptsMade + 1, attempts, err: (error as Error).message }, 'vod job attempt failed');
          if (job.attemptsMade + 1 >= attempts) {
            const reason = `Processing failed after ${attempts} attempts: ${(error as Error).message.slice(0, 200)}`;
            await failForGood(pipeline, videoId, reason);
            options.onFinished?.(videoId, 'failed', reason);
          }
          throw error;
        } catch (thrown) {
          // Marking it failed needed the database or storage, and that is away: it waits too (and fails once back).
          const dependency = thrown === error || thrown instanceof UnrecoverableError || thrown instanceof DelayedError ? undefined : dependencyOf(thrown);
          if (dependency) await this.#wait(job, token, dependency, thrown, options);
          throw thrown;
        }
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

  /**
   * A dependency is away: the job goes back to the queue, delayed by a capped backoff, without spending a try (BullMQ's
   * manual `moveToDelayed` + `DelayedError`), and the video says why it waits. If Redis itself is what is away, the
   * move fails and BullMQ's stalled-job recovery takes the job back once it returns.
   */
  async #wait(job: Job<VodJobData>, token: string | undefined, dependency: Dependency, error: unknown, options: VodWorkerOptions): Promise<never> {
    if ('prefix' in job.data) throw error;
    const waits = (job.data.waits ?? 0) + 1;
    const delay = waitDelayMs(waits, options.backoffMs, options.waitMaxMs);
    const at = Date.now() + delay;
    this.dependencyWaits.set(dependency, (this.dependencyWaits.get(dependency) ?? 0) + 1);
    options.log.warn({ videoId: job.data.videoId, dependency, waits, retryInMs: delay, err: (error as Error).message }, 'vod job waits for a dependency');
    // The database may be what is away: the reason is then written at a later wait.
    await options.pipeline.catalog.setWaiting(job.data.videoId, waitingReason(dependency, error, at)).catch(() => {});
    await job.updateData({ ...job.data, waits });
    await job.moveToDelayed(at, token);
    throw new DelayedError();
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
 * A video that cannot be processed: marked failed with the reason. Its source is kept (the user's only copy, maybe:
 * an admin retries or deletes the video); outputs of attempts that nothing plays are removed, a replay stays playable.
 */
async function failForGood(pipeline: PipelineDeps, videoId: string, reason: string): Promise<void> {
  try {
    const video = await pipeline.catalog.get(videoId);
    for (const version of video ? await versionsOf(pipeline, videoId) : []) {
      if (version !== video?.version) await pipeline.storage.deletePrefix(videoPrefix(videoId, version));
    }
  } finally {
    await pipeline.catalog.fail(videoId, reason);
  }
}
