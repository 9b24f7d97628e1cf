import { readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Kysely } from 'kysely';
import type { RedisOptions } from 'ioredis';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../lib/log.js';
import { VIDEO_ID_RE, VideoCatalog, type CatalogTables, type Video } from './catalog.js';
import { VodQueue, VodWorker } from './jobs.js';
import { sha256File, sourcePrefix, videoPrefix, type VodTimeLimits } from './pipeline.js';
import { EventRecorder, type TimelineSpan } from './recorder.js';
import type { Storage } from './storage.js';
import type { UploadMetadata } from './uploads.js';
import type { VodLadderOptions } from './vodCommand.js';
import type { Cue } from '../ll-hls-packager/cues.js';

export interface VodArchiveOptions {
  db: Kysely<CatalogTables>;
  dialect: 'sqlite' | 'postgres';
  storage: Storage;
  redis: RedisOptions;
  dataDir: string;
  ffmpegPath: string;
  ffprobePath: string;
  ladder: VodLadderOptions;
  attempts: number;
  backoffMs: number;
  lockMs: number;
  /** Jobs this process runs at once; 0: none (an origin that leaves the work to `ONAIR_ROLE=worker` processes). */
  concurrency: number;
  replacedRetentionMs: number;
  /** ffprobe's and the transcode's time limits (pipeline.ts DEFAULT_TIME_LIMITS when absent). */
  timeLimits?: VodTimeLimits;
  log: Logger;
}

/**
 * The VOD room's front: the catalog, storage, the job queue (and, unless concurrency is 0, a worker in this process),
 * the live events' recordings and the uploads' hand-over. Both paths end in the same job.
 */
export class VodArchive {
  readonly catalog: VideoCatalog;
  readonly storage: Storage;
  readonly queue: VodQueue;
  readonly worker: VodWorker | undefined;
  readonly #options: VodArchiveOptions;
  readonly #log: Logger;
  /** Housekeeping counters, once registerMetrics has given them a registry. */
  #stopped: Counter<'step'> | undefined;
  #expired: Counter | undefined;

  constructor(options: VodArchiveOptions) {
    this.#options = options;
    this.#log = options.log;
    this.storage = options.storage;
    this.catalog = new VideoCatalog(options.db, options.dialect);
    this.queue = new VodQueue({
      connection: options.redis,
      attempts: options.attempts,
      backoffMs: options.backoffMs,
      replacedRetentionMs: options.replacedRetentionMs,
    });
    this.worker = options.concurrency > 0
      ? new VodWorker({
        connection: options.redis,
        concurrency: options.concurrency,
        lockMs: options.lockMs,
        queue: this.queue,
        log: options.log,
        pipeline: {
          storage: options.storage,
          catalog: this.catalog,
          ffmpegPath: options.ffmpegPath,
          ffprobePath: options.ffprobePath,
          workDir: path.join(options.dataDir, 'work'),
          ladder: options.ladder,
          ...(options.timeLimits ? { timeLimits: options.timeLimits } : {}),
          onTimeLimit: (step) => this.#stopped?.inc({ step }),
          log: options.log,
        },
      })
      : undefined;
  }

  get uploadDir(): string {
    return path.join(this.#options.dataDir, 'uploads');
  }

  /** A live event began: its recording starts (local disk until the event ends). */
  startRecording(eventId: string): Promise<EventRecorder> {
    return EventRecorder.create({ dir: this.#recordingDir(eventId), eventId, log: this.#log });
  }

  /** The events whose recordings are on this node's disk (at start: what a node that died mid-event left). */
  async recordings(): Promise<string[]> {
    const names = await readdir(path.join(this.#options.dataDir, 'recordings')).catch(() => [] as string[]);
    return names.filter((name) => VIDEO_ID_RE.test(name));
  }

  /** The recording a node that died mid-event left, from its journal (EventRecorder.recover). */
  recoverRecording(eventId: string): Promise<EventRecorder> {
    return EventRecorder.recover({ dir: this.#recordingDir(eventId), eventId, log: this.#log });
  }

  #recordingDir(eventId: string): string {
    if (!VIDEO_ID_RE.test(eventId)) throw new Error(`not an event id: ${JSON.stringify(eventId)}`);
    return path.join(this.#options.dataDir, 'recordings', eventId);
  }

  /**
   * A live event ended: its replay (the live ladder's segments, no re-encode) is stored and published at once, its
   * source recording stored, and the archive job queued. The video keeps the event's id, so the chat kept under that
   * id is the replay's chat; `placeComments` moves that chat onto the video's timeline before the replay shows.
   */
  async archiveEvent(event: {
    eventId: string; streamId: string; title: string; description: string; startedAt: number; recorder: EventRecorder; cues?: readonly Cue[];
    placeComments?: (timeline: readonly TimelineSpan[]) => Promise<void>;
  }): Promise<Video | undefined> {
    const { eventId, recorder } = event;
    const recording = await recorder.finish(event.cues);
    if (recording.replayFiles.length === 0 && recording.sourceFiles.length === 0) {
      await recorder.remove();
      return undefined;
    }
    // The archive re-encodes the same publishes back to back: the replay's timeline is its timeline too.
    await event.placeComments?.(recording.timeline);
    let video = await this.catalog.get(eventId);
    video ??= await this.catalog.create({ id: eventId, title: event.title, description: event.description, source: event.streamId, at: event.startedAt });
    if (recording.replayFiles.length > 0) {
      const ladder = path.join(recording.dir, 'ladder');
      await this.#move(recording.replayFiles.map((name) => ({ key: `${videoPrefix(eventId, 'replay')}/${name}`, file: path.join(ladder, ...name.split('/')) })));
      await this.catalog.publish(eventId, 'replay', { kind: 'replay', durationMs: recording.durationMs, renditions: recording.renditions, ready: false });
      this.#log.info({ videoId: eventId, durationMs: recording.durationMs }, 'replay published');
    }
    const sources: { key: string; file: string }[] = [];
    for (const name of recording.sourceFiles) {
      const file = path.join(recording.dir, name);
      if ((await stat(file).catch(() => undefined))?.size) sources.push({ key: `${sourcePrefix(eventId)}/${name}`, file });
    }
    await this.#move(sources);
    await recorder.remove();
    if (sources.length > 0) await this.queue.enqueue(eventId, event.streamId);
    else await this.catalog.fail(eventId, 'The event recorded no media to archive.');
    return this.catalog.get(eventId);
  }

  /** A tus upload was declared: its video exists from now on (processing, visible to the admin only). */
  async uploadCreated(id: string, metadata: UploadMetadata & { at?: number }): Promise<void> {
    await this.catalog.create({ id, title: metadata.title, description: metadata.description, tags: metadata.tags, source: 'upload' });
    await this.catalog.setSource(id, { key: `${sourcePrefix(id)}/source${metadata.extension}`, sha256: '', bytes: 0 });
  }

  /** Every byte of an upload arrived: it becomes the video's source, its SHA-256 is kept, and its job is queued. */
  async uploadFinished(id: string, file: string): Promise<void> {
    const video = await this.catalog.get(id);
    if (!video) return;
    const key = video.sourceKey ?? `${sourcePrefix(id)}/source`;
    const sha256 = await sha256File(file);
    const bytes = (await stat(file)).size;
    await this.#move([{ key, file }]);
    await rm(`${file}.json`, { force: true });
    await this.catalog.setSource(id, { key, sha256, bytes });
    await this.queue.enqueue(id, 'upload');
  }

  /**
   * A tus upload expired before its last byte arrived (its partial file is gone): its video, still processing and
   * without a source, fails with a reason the uploader reads in the admin view. It stays listed for the admin (not
   * publicly) until deleted, like any failed upload; a video that has its source meanwhile is left alone.
   */
  async uploadExpired(id: string, expiryMs: number): Promise<void> {
    const video = await this.catalog.get(id);
    if (!video || video.source !== 'upload' || video.status !== 'processing' || video.sourceSha256) return;
    const hours = expiryMs / 3600_000;
    this.#expired?.inc();
    await this.catalog.fail(id, `The upload expired: not every byte arrived within ${hours >= 1 ? `${Math.round(hours)} h` : `${Math.round(expiryMs / 1000)} s`} of its start, and its partial file was removed. Upload the file again.`);
    this.#log.info({ videoId: id }, 'expired upload removed');
  }

  /**
   * After a restart: uploads that completed but were not handed over are handed over, and every video still
   * processing has its job (enqueueing is idempotent per video).
   */
  async recover(): Promise<void> {
    for (const video of await this.catalog.processing()) {
      if (video.source === 'upload' && !video.sourceSha256) {
        const file = path.join(this.uploadDir, video.id);
        const info = await readUploadInfo(`${file}.json`);
        const size = (await stat(file).catch(() => undefined))?.size;
        if (info?.size !== undefined && size === info.size) await this.uploadFinished(video.id, file);
        continue;
      }
      await this.queue.enqueue(video.id, video.source);
    }
  }

  /**
   * `onair_vod_jobs{state}`: the queue's jobs by state (shared by every process on the same Redis);
   * `onair_vod_time_limit_total{step}`: probes and transcodes of this process stopped at their time limit;
   * `onair_uploads_expired_total`: tus uploads swept because their last byte never came.
   */
  registerMetrics(registry: Registry): void {
    this.#stopped = new Counter({
      name: 'onair_vod_time_limit_total',
      help: 'VOD ffprobe (step=probe) and ffmpeg (step=transcode) runs stopped at their time limit by this process',
      labelNames: ['step'],
      registers: [registry],
    });
    for (const step of ['probe', 'transcode']) this.#stopped.inc({ step }, 0);
    this.#expired = new Counter({
      name: 'onair_uploads_expired_total',
      help: 'tus uploads removed because they were not finished within ONAIR_UPLOAD_EXPIRY_HOURS',
      registers: [registry],
    });
    const queue = this.queue;
    new Gauge({
      name: 'onair_vod_jobs',
      help: 'VOD queue jobs by state (waiting, active, delayed, completed, failed, prioritized)',
      labelNames: ['state'],
      registers: [registry],
      async collect() {
        try {
          const counts = await queue.counts();
          for (const [state, count] of Object.entries(counts)) this.set({ state }, count);
        } catch {
          // Redis unreachable: /readyz says so; the gauge keeps its last values.
        }
      },
    });
  }

  async deleteVideo(id: string): Promise<boolean> {
    const video = await this.catalog.get(id);
    if (!video) return false;
    await this.catalog.delete(id);
    await this.storage.deletePrefix(`videos/${id}`);
    await this.storage.deletePrefix(sourcePrefix(id));
    await this.queue.queue.remove(`vod-${id}`).catch(() => 0);
    return true;
  }

  async close(): Promise<void> {
    await this.worker?.close();
    await this.queue.close();
    this.storage.close();
  }

  /** Files into storage: a rename on local disk, an upload (4 at a time) to S3. Playlists go last. */
  async #move(items: { key: string; file: string }[]): Promise<void> {
    const storage = this.storage;
    const playlists = items.filter((i) => /\.(m3u8|mpd)$/.test(i.key));
    const media = items.filter((i) => !/\.(m3u8|mpd)$/.test(i.key));
    for (const batch of [media, playlists]) {
      const queue = [...batch];
      await Promise.all(Array.from({ length: storage.kind === 's3' ? 4 : 1 }, async () => {
        for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
          if (storage.moveFile) await storage.moveFile(item.key, item.file);
          else {
            await storage.putFile(item.key, item.file);
            await rm(item.file, { force: true });
          }
        }
      }));
    }
  }
}

async function readUploadInfo(file: string): Promise<{ size?: number } | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as { size?: number };
  } catch {
    return undefined;
  }
}
