import { setTimeout as sleep } from 'node:timers/promises';
import { TypedEmitter } from '../lib/emitter.js';
import type { Logger } from '../lib/log.js';
import type { PublishSession } from '../ingest/index.js';
import type { LadderPlan, LiveTranscoder } from '../live-transcoder/index.js';
import type { StreamPackager } from '../ll-hls-packager/index.js';
import type { Cue } from '../cues/index.js';
import type { EventRecorder, VodArchive } from '../vod-archive/index.js';
import type { WebRtcEdge } from '../webrtc-edge/index.js';
import { LiveEvent, type LiveEventOptions } from './LiveEvent.js';
import type { StreamStore } from './streams.js';
import type { EventHandover, EventHandovers } from './handover.js';

/** An ended stream's playlists (with ENDLIST) stay this long for players finishing up. */
const ENDED_PLAYLIST_RETENTION_MS = 10 * 60_000;

/**
 * The end of an event whose dependency (database, Redis, storage) fails is tried again after 0.5 s, then twice as
 * long each time up to this cap, for as long as the node runs.
 */
const ENDING_RETRY_FIRST_MS = 500;
const ENDING_RETRY_MAX_MS = 10_000;

export type LiveEventsEvents = {
  /** A live event began: its transcoder is ready to listen to. */
  live: [{ streamId: string; eventId: string; transcoder: LiveTranscoder; /** The event went on from another origin. */ continued: boolean }];
  /** A live event ended (grace ran out, stream deleted, node closing). */
  ended: [{ streamId: string; eventId: string }];
  /** The event went on at another origin (`origin`): this node let it go without ending it (issue #17). */
  handedOver: [{ streamId: string; eventId: string; origin: string }];
  /**
   * The publisher came back here within this node's grace after the event had gone on at another origin: this node
   * takes the event back (its discovery registration is written again).
   */
  takenBack: [{ streamId: string; eventId: string }];
  /** An ended event's replay is published (catalog video `videoId`, playable at /vod/:videoId/index.m3u8). */
  archived: [{ streamId: string; eventId: string; videoId: string }];
};

export interface LiveEventsOptions extends Pick<LiveEventOptions, 'config' | 'encoder' | 'governor' | 'transcoderRestarted' | 'partPublished'> {
  log: Logger;
  streams: Pick<StreamStore, 'list' | 'get' | 'setStatus' | 'startEvent' | 'endEvent' | 'currentEvent' | 'event'>;
  vod: Pick<VodArchive, 'startRecording' | 'recordings' | 'recoverRecording' | 'archiveEvent' | 'storePiece'>;
  edge: Pick<WebRtcEdge, 'openStream' | 'setProducers' | 'closeStream'> | undefined;
  /** Moves the event's chat onto its replay's timeline. */
  placeComments: (eventId: string, timeline: readonly { wallMs: number; videoMs: number; durationMs: number }[]) => Promise<void>;
  /** A live event's transcoder (re)started with `plan` (its ads are packaged in it). */
  planChanged: (event: LiveEvent, plan: LadderPlan) => void;
  /**
   * Is the stream live on another origin now (discovery, server/discovery.ts)? Its `live` status in the shared
   * database is then that origin's, not this node's to end. Absent: never.
   */
  heldElsewhere?: (streamId: string) => Promise<boolean>;
  /**
   * Events that move between origins (issue #17, shared Redis only): the hand-over records, and this origin's
   * internal URL as they name it. Absent: a publish always starts a new event (a single node).
   */
  handover?: { records: Pick<EventHandovers, 'read' | 'write' | 'release' | 'forget'>; origin: () => string };
}

/**
 * The live events of this node, one per stream, from the publish that starts one to its end: the database marked,
 * the replay published and the archive queued, each tried again until its dependency is back. Also the LL-HLS
 * packagers, kept a while after their event for players finishing up.
 */
export class LiveEvents extends TypedEmitter<LiveEventsEvents> {
  readonly #options: LiveEventsOptions;
  readonly log: Logger;
  readonly #live = new Map<string, LiveEvent>();
  /** LL-HLS packagers by stream: live ones, and ended ones kept for ENDED_PLAYLIST_RETENTION_MS. */
  readonly #packagers = new Map<string, StreamPackager>();
  readonly #retentionTimers = new Set<NodeJS.Timeout>();
  /** Event endings in progress: close() waits for them before it closes the database. */
  readonly #endings = new Set<Promise<void>>();
  /**
   * Events whose end is in progress (and may wait for a dependency), by stream: one per stream, a stream has one event
   * at a time. The API shows such a stream `ended` at once, whatever the database still says.
   */
  readonly #waitingEnds = new Map<string, string>();
  /** Steps of an event's end now waiting between two tries (`onair_event_endings_waiting`). */
  #endingsWaiting = 0;
  /** Aborted when the node begins to close: retries of ends of events stop (their recordings stay for the next start). */
  readonly #stopping = new AbortController();

  constructor(options: LiveEventsOptions) {
    super();
    this.#options = options;
    this.log = options.log;
  }

  /** The stream's live event on this node. */
  get(streamId: string): LiveEvent | undefined {
    return this.#live.get(streamId);
  }

  values(): IterableIterator<LiveEvent> {
    return this.#live.values();
  }

  /** The LL-HLS packager of a stream: while it is live, and for a while after it ended. */
  packager(streamId: string): StreamPackager | undefined {
    return this.#packagers.get(streamId);
  }

  /** The stream's event is over on this node and its end is still in progress. */
  endWaiting(streamId: string): boolean {
    return this.#waitingEnds.has(streamId);
  }

  /** Steps of an event's end now waiting between two tries. */
  get endingsWaiting(): number {
    return this.#endingsWaiting;
  }

  /** Live recordings waiting for disk space. */
  recordingsDiskFull(): number {
    return [...this.#live.values()].filter((live) => live.diskFull).length;
  }

  /** A node that died mid-event left streams marked live: their events are over. */
  async recoverAfterCrash(): Promise<void> {
    const { streams } = this.#options;
    for (const stream of await streams.list()) {
      if (stream.status !== 'live') continue;
      if (await this.#heldElsewhere(stream.id)) continue;
      const event = await streams.currentEvent(stream.id);
      if (event) await streams.endEvent(event.id);
      await streams.setStatus(stream.id, 'ended');
    }
  }

  /** Discovery down reads as "not elsewhere": the stream is ended here as before scale-out. */
  async #heldElsewhere(streamId: string): Promise<boolean> {
    return this.#options.heldElsewhere ? this.#options.heldElsewhere(streamId).catch(() => false) : false;
  }

  /** Work that outlives the call that started it: logged if it fails, awaited by settled(). */
  #background(work: Promise<void>, failure: string, fields: Record<string, unknown> = {}): void {
    const tracked: Promise<void> = work
      .catch((error: unknown) => this.log.error({ ...fields, err: error }, failure))
      .finally(() => this.#endings.delete(tracked));
    this.#endings.add(tracked);
  }

  /** A publisher was accepted: a new event starts, or (`resumed`, within the grace) the stream's event goes on. */
  async publish(session: PublishSession, resumed: boolean): Promise<void> {
    const streamId = session.streamId;
    let live = this.#live.get(streamId);
    if (live && resumed && this.#options.handover && (await this.#movedTo(live)) !== undefined) {
      // Away to another origin and back within this node's grace: the event is taken back here as it was (its
      // numbering is this node's, behind the other origin's; see server/README.md), so that the other origin lets
      // it go at the end of its grace instead of ending it.
      const { records, origin } = this.#options.handover;
      this.log.warn({ streamId, eventId: live.eventId }, 'the publisher came back from another origin within the grace: the event is taken back here');
      await records.write(streamId, { eventId: live.eventId, startedAt: live.startedAt, origin: origin(), renditions: live.packager.continuation() }, true);
      this.safeEmit('takenBack', { streamId, eventId: live.eventId });
    }
    if (!live || !resumed) {
      const { streams, vod, edge } = this.#options;
      const log = this.log.child({ streamId });
      // The publisher moved here from another origin within its grace: the same event goes on (issue #17).
      const continued = live ? undefined : await this.#continuable(streamId);
      const startedAt = continued?.startedAt ?? Date.now();
      const eventId = continued?.eventId ?? await streams.startEvent(streamId, startedAt);
      if (continued) log.info({ eventId, from: continued.origin }, 'the event continues here from another origin');
      const recorder = await vod.startRecording(eventId).catch((error: unknown) => {
        log.error({ err: error }, 'the event cannot be recorded (no replay or archive for it)');
        return undefined;
      });
      // The WebRTC room's plain-RTP input exists before ffmpeg starts: the transcoder asks for it at every (re)start.
      const rtpInputs = edge ? await edge.openStream(streamId) : undefined;
      const { config, encoder, governor, transcoderRestarted, partPublished } = this.#options;
      const handover = this.#options.handover;
      // The record another origin needs to continue the event: written now, and again as segments complete.
      const writeRecord = (force: boolean): void => {
        if (!handover) return;
        const renditions = { ...continued?.renditions, ...event.packager.continuation() };
        void handover.records.write(streamId, { eventId, startedAt, origin: handover.origin(), renditions }, force);
      };
      const event: LiveEvent = new LiveEvent({
        streamId, eventId, startedAt, recorder, rtpInputs, log, config, encoder, edge, governor, transcoderRestarted,
        ...(continued ? { continueFrom: continued.renditions } : {}),
        ...(handover ? { segmentDone: () => writeRecord(false) } : {}),
        ...(partPublished ? { partPublished } : {}),
      });
      writeRecord(true);
      event.on('plan', (plan) => this.#options.planChanged(event, plan));
      this.#packagers.get(streamId)?.end();
      this.#packagers.set(streamId, event.packager);
      live = event;
      this.#live.set(streamId, live);
      // Marked live only now: a client that sees `live` also sees the event's stats.
      await streams.setStatus(streamId, 'live');
      this.safeEmit('live', { streamId, eventId, transcoder: event.transcoder, continued: continued !== undefined });
    }
    live.attach(session);
  }

  /** The stream's event ends (its publisher's grace ran out, or it was ended): in the background. */
  end(streamId: string): void {
    this.#background(this.#onEnd(streamId), 'could not end the live event', { streamId });
  }

  async #onEnd(streamId: string): Promise<void> {
    const live = this.#live.get(streamId);
    if (!live) return;
    this.#live.delete(streamId);
    const movedTo = await this.#movedTo(live);
    if (movedTo !== undefined) {
      await this.#letGo(live, movedTo);
      return;
    }
    await live.close();
    if (!this.#stopping.signal.aborted) {
      const timer = setTimeout(() => {
        this.#retentionTimers.delete(timer);
        if (this.#packagers.get(streamId) === live.packager) this.#packagers.delete(streamId);
      }, ENDED_PLAYLIST_RETENTION_MS);
      timer.unref();
      this.#retentionTimers.add(timer);
    }
    // Viewers saw the end already (ENDLIST). What follows needs the database, Redis and storage: each step is
    // idempotent and tried again until it succeeds; a node that stops meanwhile leaves the recording on disk, and the
    // next start ends the event and archives it (recoverAfterCrash, archiveLeftRecordings).
    const { eventId } = live;
    const { streams } = this.#options;
    this.#waitingEnds.set(streamId, eventId);
    try {
      const ended = await this.#untilDone({ streamId, eventId }, 'marking the event ended', async () => {
        // A deleted stream has no row left: both updates then touch nothing. A new event on the same stream (the
        // publisher came back once the database did) keeps its `live`.
        await streams.endEvent(eventId);
        if (!this.#live.has(streamId) && !(await this.#heldElsewhere(streamId))) await streams.setStatus(streamId, 'ended');
      });
      if (!ended) return;
      // The event is over: no other origin may continue it (a stale record would be refused anyway: its event ended).
      const handover = this.#options.handover;
      if (handover) void handover.records.release(streamId, eventId, handover.origin());
      this.safeEmit('ended', { streamId, eventId });
      await this.#untilDone({ streamId, eventId }, 'publishing the replay and queueing the archive', () => this.#archive(live));
    } finally {
      if (this.#waitingEnds.get(streamId) === eventId) this.#waitingEnds.delete(streamId);
    }
  }

  /**
   * A fresh hand-over record for the stream whose event is still open in the database (not ended): the event to
   * continue here. Redis or the database away: none (a new event starts, as on a single node).
   */
  async #continuable(streamId: string): Promise<EventHandover | undefined> {
    const handover = this.#options.handover;
    if (!handover) return undefined;
    const record = await handover.records.read(streamId);
    if (!record) return undefined;
    const current = await this.#options.streams.currentEvent(streamId).catch(() => undefined);
    return current?.id === record.eventId ? record : undefined;
  }

  /** The origin the event went on at, if the hand-over record names this event and another origin now. */
  async #movedTo(live: LiveEvent): Promise<string | undefined> {
    const handover = this.#options.handover;
    // Also while the node stops: an event that went on elsewhere is not this node's to end, then either.
    if (!handover) return undefined;
    const record = await handover.records.read(live.streamId);
    return record?.eventId === live.eventId && record.origin !== handover.origin() ? record.origin : undefined;
  }

  /**
   * The event went on at another origin: this node lets it go. Its media stops, its playlists are dropped without
   * ENDLIST (the event is not over; edges follow the other origin), the database is not told anything, and this
   * node's piece of the recording goes to shared storage beside the event's sources, where the archive of the origin
   * that ends the event finds it (vod-archive/README.md, "Events that move between origins").
   */
  async #letGo(live: LiveEvent, origin: string): Promise<void> {
    const { streamId, eventId, recorder } = live;
    this.#options.handover?.records.forget(streamId);
    if (this.#packagers.get(streamId) === live.packager) this.#packagers.delete(streamId);
    await live.letGo();
    this.log.info({ streamId, eventId, origin }, 'the event went on at another origin: this origin lets go of it (not ended) and stores its piece of the recording');
    this.safeEmit('handedOver', { streamId, eventId, origin });
    if (recorder) {
      await this.#untilDone({ streamId, eventId }, 'storing this origin\'s piece of the recording',
        () => this.#options.vod.storePiece({ eventId, recorder, heldSince: live.heldSince }));
    }
  }

  /**
   * Runs `step` until it succeeds: after a failure (a dependency down) it waits with capped backoff and tries again,
   * logging each wait. False when the node began stopping first: the step is left for the next start.
   */
  async #untilDone(fields: Record<string, unknown>, what: string, step: () => Promise<void>): Promise<boolean> {
    let waiting = false;
    try {
      return await this.#tryUntilDone(fields, what, step, () => {
        if (!waiting) this.#endingsWaiting++;
        waiting = true;
      });
    } finally {
      if (waiting) this.#endingsWaiting--;
    }
  }

  /** The first try always runs (a node that stops ends its live events); tries again only while it is not stopping. */
  async #tryUntilDone(fields: Record<string, unknown>, what: string, step: () => Promise<void>, failed: () => void): Promise<boolean> {
    const stopping = (error?: unknown): false => {
      this.log.warn({ ...fields, ...(error === undefined ? {} : { err: error }) }, `the node is stopping before ${what}: the recording stays on disk and the next start finishes it`);
      return false;
    };
    for (let attempt = 1; ; attempt++) {
      try {
        await step();
        if (attempt > 1) this.log.info({ ...fields, attempt }, `the end of the event went on: ${what} succeeded`);
        return true;
      } catch (error) {
        if (this.#stopping.signal.aborted) return stopping(error);
        failed();
        const retryInMs = Math.min(ENDING_RETRY_MAX_MS, ENDING_RETRY_FIRST_MS * 2 ** (attempt - 1));
        this.log.warn({ ...fields, err: error, attempt, retryInMs }, `the end of the event waits: ${what} failed (a dependency is down); tried again`);
        await sleep(retryInMs, undefined, { signal: this.#stopping.signal }).catch(() => {});
        if (this.#stopping.signal.aborted) return stopping();
      }
    }
  }

  /** The ended event's replay is published at once and its archive job queued; a deleted stream keeps nothing. */
  async #archive(live: LiveEvent): Promise<void> {
    if (live.recorder) await this.#archiveRecording({ eventId: live.eventId, streamId: live.streamId, startedAt: live.startedAt, recorder: live.recorder, cues: live.packager.cues });
  }

  async #archiveRecording(event: { eventId: string; streamId: string; startedAt: number; recorder: EventRecorder; cues: readonly Cue[] }): Promise<void> {
    const { eventId, streamId, recorder } = event;
    const stream = await this.#options.streams.get(streamId);
    if (!stream) {
      await recorder.remove();
      return;
    }
    const video = await this.#options.vod.archiveEvent({
      ...event,
      title: stream.title,
      description: stream.description,
      // A chat that cannot move keeps its offsets from the event's start: the replay still goes out.
      placeComments: (timeline) => this.#options.placeComments(eventId, timeline)
        .catch((error: unknown) => this.log.warn({ err: error, eventId }, 'could not place the chat on the replay\'s timeline')),
    });
    if (video?.version) this.safeEmit('archived', { streamId, eventId, videoId: video.id });
  }

  /**
   * A node that died mid-event left its recording on disk (the event itself was ended by recoverAfterCrash): it
   * is archived like any ended event, its replay from the segments the journal names, then the job. Its cues were
   * in memory and are gone. In the background.
   */
  archiveLeftRecordings(): void {
    this.#background(this.#archiveLeftRecordings(), 'could not archive a recording left by the last run (kept on disk for the next start)');
  }

  async #archiveLeftRecordings(): Promise<void> {
    const { streams, vod } = this.#options;
    for (const eventId of await vod.recordings()) {
      if ([...this.#live.values()].some((live) => live.eventId === eventId)) continue;
      const event = await streams.event(eventId);
      const recorder = await vod.recoverRecording(eventId);
      if (!event) {
        await recorder.remove();
        continue;
      }
      if (await this.#continuedElsewhere(event.streamId, eventId)) {
        this.log.info({ eventId, streamId: event.streamId }, 'the event cut off when the node stopped went on at another origin: storing this node\'s piece of it');
        await this.#untilDone({ eventId, streamId: event.streamId }, 'storing a piece left by the last run', () => vod.storePiece({ eventId, recorder }));
        continue;
      }
      this.log.info({ eventId, streamId: event.streamId }, 'archiving the recording of an event cut off when the node stopped');
      await this.#untilDone({ eventId, streamId: event.streamId }, 'archiving a recording left by the last run',
        () => this.#archiveRecording({ eventId, streamId: event.streamId, startedAt: event.startedAt, recorder, cues: [] }));
    }
  }

  /**
   * Did the event of a recording left by the last run go on at another origin (issue #17)? Its hand-over record names
   * another origin, or it is still open in the database and discovery shows it live elsewhere. Then the recording is
   * a piece of the event, not the whole of it.
   */
  async #continuedElsewhere(streamId: string, eventId: string): Promise<boolean> {
    const handover = this.#options.handover;
    if (!handover) return false;
    const record = await handover.records.read(streamId);
    if (record?.eventId === eventId) return record.origin !== handover.origin();
    return (await this.#options.streams.currentEvent(streamId))?.id === eventId && await this.#heldElsewhere(streamId);
  }

  /** The node begins to close: ends of events stop retrying (a recording they leave is archived by the next start). */
  stop(): void {
    this.#stopping.abort();
  }

  /** Resolves when the endings in progress (and other background work) are over. */
  async settled(): Promise<void> {
    await Promise.all([...this.#endings]);
  }

  /** Closes the transcoders of the events still live (their ends were cut off by the node closing). */
  async closeTranscoders(): Promise<void> {
    await Promise.all([...this.#live.values()].map((live) => live.transcoder.close()));
  }

  /** Stops the timers that keep ended playlists. */
  clearRetention(): void {
    for (const timer of this.#retentionTimers) clearTimeout(timer);
  }
}
