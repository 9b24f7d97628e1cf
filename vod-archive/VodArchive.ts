import { createHash } from 'node:crypto';
import { appendFile, readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Kysely } from 'kysely';
import type { RedisOptions } from 'ioredis';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../lib/log.js';
import { VIDEO_ID_RE, VideoCatalog, type CatalogTables, type Video } from './catalog.js';
import { VodQueue, VodWorker } from './jobs.js';
import { sha256File, sourcePrefix, videoPrefix, type VodTimeLimits } from './pipeline.js';
import { EventRecorder, type TimelineSpan } from './recorder.js';
import { DEPENDENCIES, dependencyOf, fromDependency, guardDependency, waitDelayMs, waitingReason } from './faults.js';
import { digestFile, type Storage } from './storage.js';
import type { UploadMetadata } from './uploads.js';
import type { VodLadderOptions } from './vodCommand.js';
import type { Cue } from '../lib/media/cues.js';

export interface VodArchiveOptions {
  /** A video this process processed is ready, or failed for good (the webhooks tell the outside world). */
  onVideoFinished?: (videoId: string, outcome: 'ready' | 'failed', reason?: string) => void;
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
  /** The longest wait between two tries while a dependency (S3, disk, database, Redis) is away. */
  waitMaxMs: number;
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
  /** Aborted by close(): hand-overs waiting for a dependency stop waiting (the upload stays for the next start). */
  readonly #closing = new AbortController();
  /** Archives running, by event id (one entry per event that ended on this node and is being archived). */
  readonly #archiving = new Map<string, Promise<Video | undefined>>();
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
        backoffMs: options.backoffMs,
        waitMaxMs: options.waitMaxMs,
        queue: this.queue,
        log: options.log,
        ...(options.onVideoFinished ? { onFinished: options.onVideoFinished } : {}),
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
   *
   * Nothing is lost on the way: each file is copied and verified (size, SHA-256) before an archive journal beside the
   * recording (`archive.jsonl`) records it, and the local recording is removed only after the replay is published and
   * the job queued. Every step is idempotent: called again after failing anywhere (S3 or the database away), or after
   * a restart on the recovered recording, it goes on from its journal: nothing stored twice, comments placed once.
   */
  async archiveEvent(event: ArchiveEventInput): Promise<Video | undefined> {
    // One archive of an event at a time (a retry of the end of the event, the start's recovery): a second call waits
    // for the first, then finds its work done or goes on from the journal.
    const before = this.#archiving.get(event.eventId);
    const run = (before ?? Promise.resolve()).catch(() => {}).then(() => this.#archiveEvent(event));
    this.#archiving.set(event.eventId, run);
    try {
      return await run;
    } finally {
      if (this.#archiving.get(event.eventId) === run) this.#archiving.delete(event.eventId);
    }
  }

  async #archiveEvent(event: ArchiveEventInput): Promise<Video | undefined> {
    const { eventId, recorder } = event;
    // Archived already (a second call after a success): the recording is gone, the video is what there is.
    if (!(await stat(recorder.dir).catch(() => undefined))) return this.catalog.get(eventId);
    const recording = await recorder.finish(event.cues);
    if (recording.replayFiles.length === 0 && recording.sourceFiles.length === 0) {
      await recorder.remove();
      return undefined;
    }
    const journal = await ArchiveJournal.open(recording.dir);
    // The archive re-encodes the same publishes back to back: the replay's timeline is its timeline too.
    if (!journal.has('comments')) {
      await event.placeComments?.(recording.timeline);
      await journal.add('comments');
    }
    let video = await this.catalog.get(eventId);
    video ??= await this.catalog.create({ id: eventId, title: event.title, description: event.description, source: event.streamId, at: event.startedAt });
    if (recording.replayFiles.length > 0 && !journal.has('replay')) {
      const ladder = path.join(recording.dir, 'ladder');
      await this.#store(journal, recording.replayFiles.map((name) => ({ key: `${videoPrefix(eventId, 'replay')}/${name}`, file: path.join(ladder, ...name.split('/')) })));
      // An archive that a first call got as far as queueing may be published already: it stays what plays.
      if (video.kind !== 'archive') {
        await this.catalog.publish(eventId, 'replay', { kind: 'replay', durationMs: recording.durationMs, renditions: recording.renditions, ready: false });
        this.#log.info({ videoId: eventId, durationMs: recording.durationMs }, 'replay published');
      }
      await journal.add('replay');
    }
    const sources: { key: string; file: string }[] = [];
    for (const name of recording.sourceFiles) {
      const file = path.join(recording.dir, name);
      if ((await stat(file).catch(() => undefined))?.size) sources.push({ key: `${sourcePrefix(eventId)}/${name}`, file });
    }
    if (!journal.has('queued')) {
      await this.#store(journal, sources);
      if (sources.length > 0) await this.queue.enqueue(eventId, event.streamId);
      else await this.catalog.fail(eventId, 'The event recorded no media to archive.');
      await journal.add('queued');
    }
    // Only now: everything the recording holds is in storage, published or queued.
    await recorder.remove();
    return this.catalog.get(eventId);
  }

  /**
   * The event went on at another origin (issue #17): this node's piece of it, its publishes' FLVs as recorded, is
   * stored beside the event's sources as `sources/<eventId>/piece-<heldSince>-source-<n>.flv`, copied and verified
   * through the archive journal, then the local recording is removed. The archive job of the origin that ends the
   * event lists every key under `sources/<eventId>/` in order: the pieces (named by when each origin took the event)
   * come before that origin's own `source-<n>.flv`, so the archive is the whole event, back to back. Idempotent and
   * run one at a time per event, like archiveEvent. `heldSince` absent (a recording left by a node that died): the
   * recording's first segment's date.
   */
  async storePiece(piece: { eventId: string; recorder: EventRecorder; heldSince?: number }): Promise<void> {
    const before = this.#archiving.get(piece.eventId);
    const run = (before ?? Promise.resolve()).catch(() => {}).then(async () => {
      await this.#storePiece(piece);
      return undefined;
    });
    this.#archiving.set(piece.eventId, run);
    try {
      await run;
    } finally {
      if (this.#archiving.get(piece.eventId) === run) this.#archiving.delete(piece.eventId);
    }
  }

  async #storePiece(piece: { eventId: string; recorder: EventRecorder; heldSince?: number }): Promise<void> {
    const { eventId, recorder } = piece;
    if (!(await stat(recorder.dir).catch(() => undefined))) return;
    const recording = await recorder.finish([]);
    const journal = await ArchiveJournal.open(recording.dir);
    // A recording left by a node that died has no hold time: its first segment's date stands in.
    const since = piece.heldSince ?? recording.startDate ?? 0;
    const tag = `piece-${String(Math.max(0, Math.floor(since))).padStart(15, '0')}`;
    const sources: { key: string; file: string }[] = [];
    for (const name of recording.sourceFiles) {
      const file = path.join(recording.dir, name);
      if ((await stat(file).catch(() => undefined))?.size) sources.push({ key: `${sourcePrefix(eventId)}/${tag}-${name}`, file });
    }
    await this.#store(journal, sources);
    this.#log.info({ eventId, files: sources.length }, 'piece of a moved event stored beside its sources');
    await recorder.remove();
  }

  /**
   * Copy → verify → record, for each file the journal does not name yet (4 at a time to S3, playlists last). The
   * local files stay: the recording is removed as a whole once it is archived.
   */
  async #store(journal: ArchiveJournal, items: { key: string; file: string }[]): Promise<void> {
    const storage = this.storage;
    const pending = items.filter((item) => !journal.stored(item.key));
    const playlists = pending.filter((i) => /\.(m3u8|mpd)$/.test(i.key));
    const media = pending.filter((i) => !/\.(m3u8|mpd)$/.test(i.key));
    for (const batch of [media, playlists]) {
      const queue = [...batch];
      await Promise.all(Array.from({ length: storage.kind === 's3' ? 4 : 1 }, async () => {
        for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
          const digest = await digestFile(item.file);
          await storage.putVerified(item.key, item.file, digest);
          await journal.addStored(item.key, digest.bytes, digest.sha256);
        }
      }));
    }
  }

  /** A tus upload was declared: its video exists from now on (processing, visible to the admin only). */
  async uploadCreated(id: string, metadata: UploadMetadata & { at?: number }): Promise<void> {
    await this.catalog.create({ id, title: metadata.title, description: metadata.description, tags: metadata.tags, source: 'upload' });
    await this.catalog.setSource(id, { key: `${sourcePrefix(id)}/source${metadata.extension}`, sha256: '', bytes: 0 });
  }

  /** Every byte of an upload arrived: it becomes the video's source, its SHA-256 is kept, and its job is queued. */
  async uploadFinished(id: string, file: string): Promise<void> {
    // S3, the database or Redis away: the hand-over waits (the file stays in the upload folder) and goes on after.
    for (let waits = 1; ; waits++) {
      try {
        await this.#handOver(id, file);
        return;
      } catch (error) {
        const dependency = dependencyOf(error);
        if (!dependency || this.#closing.signal.aborted) throw error;
        const delay = waitDelayMs(waits, this.#options.backoffMs, this.#options.waitMaxMs);
        this.#log.warn({ videoId: id, dependency, waits, retryInMs: delay, err: (error as Error).message }, 'upload hand-over waits for a dependency');
        await this.catalog.setWaiting(id, waitingReason(dependency, error, Date.now() + delay)).catch(() => {});
        const waited = await sleep(delay, undefined, { signal: this.#closing.signal }).then(() => true, () => false);
        if (!waited) throw error;
      }
    }
  }

  /** Each step can be done again: a file already moved is found in storage (and hashed there). */
  async #handOver(id: string, file: string): Promise<void> {
    const catalog = guardDependency(this.catalog, 'database');
    const storage = guardDependency(this.storage, 'storage');
    const video = await catalog.get(id);
    if (!video) return;
    const key = video.sourceKey ?? `${sourcePrefix(id)}/source`;
    let digest: { sha256: string; bytes: number };
    if (await stat(file).catch(() => undefined)) {
      digest = { sha256: await sha256File(file), bytes: (await stat(file)).size };
      await this.#move([{ key, file }]);
    } else {
      const stored = await storage.get(key);
      if (!stored) throw new Error(`the upload ${id} is neither in ${file} nor in storage`);
      const hash = createHash('sha256');
      for await (const chunk of stored.body) hash.update(chunk as Buffer);
      digest = { sha256: hash.digest('hex'), bytes: stored.size };
    }
    await rm(`${file}.json`, { force: true });
    await catalog.setSource(id, { key, ...digest });
    await this.queue.enqueue(id, 'upload').catch((error: unknown) => { throw fromDependency(error, 'redis'); });
    await catalog.setWaiting(id, null);
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
   * processing has its job (enqueueing is idempotent per video), except an event whose recording is still here.
   */
  async recover(): Promise<void> {
    // An event whose recording is still on this disk is queued by its archive (once its sources are stored).
    const recordings = new Set(await this.recordings());
    for (const video of await this.catalog.processing()) {
      if (recordings.has(video.id)) continue;
      if (video.source === 'upload' && !video.sourceSha256) {
        const file = path.join(this.uploadDir, video.id);
        const info = await readUploadInfo(`${file}.json`);
        const size = (await stat(file).catch(() => undefined))?.size;
        // In the background: a hand-over that waits for S3 must not hold the start up.
        if (info?.size !== undefined && size === info.size) {
          void this.uploadFinished(video.id, file).catch((error: unknown) => this.#log.error({ err: error, videoId: video.id }, 'could not hand an upload over (it stays for the next start)'));
        }
        continue;
      }
      await this.queue.enqueue(video.id, video.source);
    }
  }

  /**
   * An admin's retry of a failed video (its source was kept): processing again, its job queued anew. Undefined when
   * there is no such video; false when it is not failed.
   */
  async retryVideo(id: string): Promise<boolean | undefined> {
    const video = await this.catalog.get(id);
    if (!video) return undefined;
    if (!(await this.catalog.retry(id))) return false;
    await this.queue.enqueue(id, video.source);
    return true;
  }

  /**
   * `onair_vod_jobs{state}`: the queue's jobs by state (shared by every process on the same Redis);
   * `onair_vod_time_limit_total{step}`: probes and transcodes of this process stopped at their time limit;
   * `onair_uploads_expired_total`: tus uploads swept because their last byte never came;
   * `onair_vod_waiting`: videos waiting for a dependency now (from the catalog); `onair_vod_dependency_waits_total`:
   * the waits this process's worker began, by dependency.
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
    const { queue, catalog, worker } = this;
    new Gauge({
      name: 'onair_vod_waiting',
      help: 'VOD videos processing but waiting for a dependency (S3, disk, database, Redis) to come back',
      registers: [registry],
      async collect() {
        try {
          this.set(await catalog.waitingCount());
        } catch {
          // The database is away: the gauge keeps its last value.
        }
      },
    });
    new Counter({
      name: 'onair_vod_dependency_waits_total',
      help: 'Times a VOD job of this process waited for a dependency that was away, by dependency',
      labelNames: ['dependency'],
      registers: [registry],
      collect() {
        this.reset();
        for (const dependency of DEPENDENCIES) this.inc({ dependency }, worker?.dependencyWaits.get(dependency) ?? 0);
      },
    });
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
    await this.storage.deletePrefix(`subtitles/${id}`);
    await this.queue.queue.remove(`vod-${id}`).catch(() => 0);
    return true;
  }

  async close(): Promise<void> {
    this.#closing.abort();
    await this.worker?.close();
    await this.queue.close();
    this.storage.close();
  }

  /** Files into storage: a rename on local disk, an upload (4 at a time) to S3. Playlists go last. */
  async #move(items: { key: string; file: string }[]): Promise<void> {
    const storage = guardDependency(this.storage, 'storage');
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

/** An ended event to archive (`VodArchive.archiveEvent`). */
export interface ArchiveEventInput {
  eventId: string;
  streamId: string;
  title: string;
  description: string;
  startedAt: number;
  recorder: EventRecorder;
  cues?: readonly Cue[];
  placeComments?: (timeline: readonly TimelineSpan[]) => Promise<void>;
}

/**
 * What `archiveEvent` has done for one recording, one JSON line per step in `<recording>/archive.jsonl` (appended
 * once the step is done; a torn last line is a step not done): `comments` placed, each file `stored` and verified,
 * the `replay` published, the job `queued`. It lives and dies with the recording.
 */
class ArchiveJournal {
  readonly #file: string;
  readonly #steps = new Set<string>();
  readonly #stored = new Set<string>();

  private constructor(file: string) {
    this.#file = file;
  }

  static async open(dir: string): Promise<ArchiveJournal> {
    const journal = new ArchiveJournal(path.join(dir, 'archive.jsonl'));
    const text = await readFile(journal.#file, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      try {
        const entry = JSON.parse(line) as { step?: unknown; stored?: unknown };
        if (typeof entry.step === 'string') journal.#steps.add(entry.step);
        if (typeof entry.stored === 'string') journal.#stored.add(entry.stored);
      } catch {
        // The line being written when the node died: that step was not done.
      }
    }
    return journal;
  }

  has(step: 'comments' | 'replay' | 'queued'): boolean {
    return this.#steps.has(step);
  }

  stored(key: string): boolean {
    return this.#stored.has(key);
  }

  async add(step: 'comments' | 'replay' | 'queued'): Promise<void> {
    await appendFile(this.#file, `${JSON.stringify({ step, at: Date.now() })}\n`);
    this.#steps.add(step);
  }

  async addStored(key: string, bytes: number, sha256: string): Promise<void> {
    await appendFile(this.#file, `${JSON.stringify({ stored: key, bytes, sha256 })}\n`);
    this.#stored.add(key);
  }
}
