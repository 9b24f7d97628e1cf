import type { Fragment, InitSegment } from '../lib/media/fmp4.js';
import { AdSplice } from './AdSplice.js';
import type { AdFeed } from '../lib/media/ads.js';
import type { Cue } from '../lib/media/cues.js';
import { renderMediaPlaylist, type RenderOptions } from './PlaylistRender.js';
import { hasReached, partIsComing, PlaylistWaits } from './PlaylistWaits.js';
import { PlaylistWindow, ProgramDates, type Continuation, type Part, type Segment } from './PlaylistWindow.js';

export type { Continuation, Part, Segment } from './PlaylistWindow.js';
export { serverControlFor, type ServerControl } from './PlaylistRender.js';

export interface MediaPlaylistOptions {
  /** Rendition name, as in its URL (`480p`). */
  name: string;
  /** Part target (EXT-X-PART-INF:PART-TARGET) in ms. */
  partTargetMs: number;
  /** Segment target in ms; EXT-X-TARGETDURATION is its ceiling in seconds and never changes. */
  segmentTargetMs: number;
  /** Unique per packager instance so that URIs never repeat across restarts (no CDN cache poisoning). */
  uriPrefix: string;
  /** How much media the playlist keeps (DVR window), ms; at least CAN-SKIP-UNTIL plus a margin. */
  windowMs: number;
  /**
   * Shares the PROGRAM-DATE-TIME anchor of a run between the renditions of a stream, so that one media time has one
   * date in all of them (rfc8216bis §6.2.4). Gets this playlist's own anchor for `generation`; returns the one to use.
   * Absent: the playlist keeps its own.
   */
  clockAnchor?: (generation: number, own: { mediaMs: number; wallMs: number }) => { mediaMs: number; wallMs: number };
  /**
   * When the first frame of run `generation` reached the ingest (ms since the epoch), if known: the run's first
   * fragment is dated from it (EXT-X-PROGRAM-DATE-TIME = ingest time). Unknown: from the fragment's arrival here.
   */
  runInputAt?: (generation: number) => number | undefined;
  /** Sees every segment once it is complete, with the init it needs (the recording of the event keeps them). */
  onSegment?: (segment: Segment, init: InitSegment) => void;
  /** A segment opened at this date and media time (ms): pending cues start on it (StreamPackager). */
  onSegmentStart?: (programDateTime: number, mediaStartMs: number) => void;
  /** The stream's cues (ad breaks, news flashes), shared by every rendition. */
  cues?: () => readonly Cue[];
  /**
   * Asked when a live segment would open at this date (after `onSegmentStart`): the ads of an ad break that starts
   * there, for this rendition. The break's content is then replaced by them until the break is over.
   */
  adBreakAt?: (programDateTime: number) => AdFeed | undefined;
  /** The event continues here from another origin: numbering goes on from there, after a discontinuity. */
  continueFrom?: Continuation;
  /**
   * A content part went out, `delayMs` after its media's end reached the ingest (its PROGRAM-DATE-TIME + duration):
   * the transcode, fragment and package stage of the latency budget.
   */
  onPart?: (delayMs: number) => void;
}

/**
 * One rendition's LL-HLS Media Playlist: turns the transcoder's fragments into parts, segments cut at keyframes once
 * they reach the segment target, and discontinuities with a new EXT-X-MAP for each new run. It drives four small
 * units: the window model (`PlaylistWindow`: segments, parts, numbering, DVR window; `ProgramDates`), the ad splice
 * (`AdSplice`), the waits of blocking requests (`PlaylistWaits`) and the text (`renderMediaPlaylist`).
 */
export class MediaPlaylist {
  readonly name: string;
  readonly partTargetMs: number;
  readonly targetDuration: number;
  readonly #options: MediaPlaylistOptions;
  readonly #window: PlaylistWindow;
  readonly #dates: ProgramDates;
  readonly #splice: AdSplice;
  readonly #waits = new PlaylistWaits();
  #generation = -1;
  #version = 0;
  #init: InitSegment | undefined;

  constructor(options: MediaPlaylistOptions) {
    this.#options = options;
    this.name = options.name;
    this.partTargetMs = options.partTargetMs;
    this.targetDuration = Math.ceil(options.segmentTargetMs / 1000);
    this.#window = new PlaylistWindow({
      partTargetMs: options.partTargetMs,
      segmentTargetMs: options.segmentTargetMs,
      uriPrefix: options.uriPrefix,
      windowMs: options.windowMs,
      ...(options.onSegment ? { onSegment: options.onSegment } : {}),
      ...(options.continueFrom ? { continueFrom: options.continueFrom } : {}),
    });
    this.#dates = new ProgramDates(options.clockAnchor, options.runInputAt);
    this.#splice = new AdSplice(this.#window, this.#dates, options.uriPrefix);
  }

  /** Changes whenever the playlist changes: a cache key for rendered text. */
  get version(): number {
    return this.#version;
  }

  get ended(): boolean {
    return this.#window.ended;
  }

  /** The latest init segment (for CODECS and RESOLUTION in the multivariant playlist). */
  get init(): InitSegment | undefined {
    return this.#init;
  }

  get segments(): readonly Segment[] {
    return this.#window.segments;
  }

  /** Sequence number the next part will have (its URI is the preload hint). */
  get nextPartSequence(): number {
    return this.#window.nextPartSequence;
  }

  /** LAST-MSN / LAST-PART for rendition reports and for the advance limits of blocking requests. */
  get last(): { msn: number; part: number } | undefined {
    return this.#window.last;
  }

  /** EXT-X-MEDIA-SEQUENCE: the first segment's number (the next one's while there is none). */
  get mediaSequence(): number {
    return this.#window.mediaSequence;
  }

  /** Media Sequence Number of the last segment in the playlist, complete or not. */
  get lastMediaSequence(): number | undefined {
    return this.#window.lastMediaSequence;
  }

  /** Where another origin continuing the event goes on (next Media Sequence, its Discontinuity Sequence). */
  get continuation(): Continuation {
    return this.#window.continuation;
  }

  initData(uri: string): Buffer | undefined {
    return this.#window.initData(uri);
  }

  segment(mediaSequence: number): Segment | undefined {
    return this.#window.segment(mediaSequence);
  }

  part(sequence: number): Part | undefined {
    return this.#window.part(sequence);
  }

  /** Is a part with this sequence number allowed to be waited for (the hinted one, or just after)? */
  partIsComing(sequence: number): boolean {
    return partIsComing(this.#window, sequence);
  }

  /** A new ffmpeg run (generation) began: its init, and a discontinuity unless it is the first. */
  addInit(generation: number, init: InitSegment): void {
    if (this.#window.ended) return;
    const uri = `${this.#options.uriPrefix}-init${generation}.mp4`;
    this.#window.addInit(uri, init);
    this.#init = init;
    if (generation !== this.#generation) {
      if (this.#generation >= 0) {
        // During an ad break the ad's segment goes on; the content after the break starts a discontinuity anyway.
        if (!this.#splice.active) {
          this.#window.closeOpenSegment();
          this.#window.markDiscontinuity();
        }
        this.#dates.restart();
      }
      this.#generation = generation;
    }
    this.#window.mapUri = uri;
  }

  /**
   * One CMAF fragment becomes one part; a keyframe past the segment target starts a new segment. During an ad break
   * the fragment only paces the ads: as much ad media goes out as content came in.
   */
  addFragment(generation: number, fragment: Fragment, now = Date.now()): void {
    const window = this.#window;
    if (window.ended || generation !== this.#generation || window.mapUri === undefined) return;
    if (fragment.durationMs <= 0) return;
    // PROGRAM-DATE-TIME follows the media timeline, anchored when the first fragment of a run arrives.
    const { date, mediaStartMs: videoStart } = this.#dates.date(generation, fragment, this.#init, now);

    if (this.#splice.active && fragment.independent) {
      // A content keyframe is where the break may end (on the same boundary in every rendition).
      this.#options.onSegmentStart?.(date, videoStart);
      if (this.#splice.endsBy(date)) this.#splice.end();
    }
    let open = window.open;
    if (!this.#splice.active) {
      const boundary = fragment.independent && (!open || window.isFull(open));
      if (!boundary && !open) return; // a segment must start with a keyframe; wait for one
      if (boundary) {
        if (open) window.complete(open);
        this.#options.onSegmentStart?.(date, videoStart);
        const feed = this.#options.adBreakAt?.(date);
        if (feed) this.#splice.start(feed, date);
        else open = window.openSegment(date, window.mapUri);
      }
    }
    if (this.#splice.active) this.#splice.send(date + fragment.durationMs);
    else {
      window.appendPart(open!, fragment);
      this.#options.onPart?.(now - (date + fragment.durationMs));
    }
    window.trim();
    this.#changed();
  }

  /** Something the playlist shows changed outside it (a cue): blocked reloads get a fresh playlist. */
  touch(): void {
    this.#changed();
  }

  /** The stream is over: the open segment completes and EXT-X-ENDLIST goes out. */
  end(): void {
    if (this.#window.ended) return;
    this.#window.end();
    this.#changed();
  }

  /**
   * Resolves when `ready()` holds, or with false after `timeoutMs` (or at once if it already holds: true), or with false
   * as soon as `signal` aborts (the client hung up): the waiter is gone at once, not when its timeout fires.
   * Blocking playlist reloads and hinted part requests wait here.
   */
  waitUntil(ready: () => boolean, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    return this.#waits.waitUntil(ready, timeoutMs, signal);
  }

  /** Requests waiting on this rendition now (blocking reloads, hinted parts). */
  get waiting(): number {
    return this.#waits.size;
  }

  /** Has the playlist got part `part` of segment `msn` (or, without part, the complete segment)? §6.2.5.2 */
  has(msn: number, part: number | undefined): boolean {
    return hasReached(this.#window, msn, part);
  }

  /**
   * The playlist text. `skip`: a Playlist Delta Update (§6.2.5.1) that replaces segments older than CAN-SKIP-UNTIL
   * with EXT-X-SKIP; `reports`: EXT-X-RENDITION-REPORT for the other renditions; `query`: appended to every URI
   * (signed playback tokens).
   */
  render(options: RenderOptions): string {
    const cues = this.#options.cues?.() ?? [];
    return renderMediaPlaylist(this.#window, { targetDuration: this.targetDuration, partTargetMs: this.partTargetMs, cues }, options);
  }

  #changed(): void {
    this.#version += 1;
    this.#waits.wake();
  }
}
