import type { Fragment, InitSegment } from '../lib/media/fmp4.js';

/** The most the dates of a new run may overlap the last run's (rfc8216bis §6.2.1: under a second). */
const RESTART_OVERLAP_MS = 500;

/** One Partial Segment (rfc8216bis §4.4.4.9): one CMAF fragment (moof+mdat) from ffmpeg. */
export interface Part {
  /** Counts every part of the rendition: the URI never depends on which segment the part lands in. */
  sequence: number;
  /** Index within its Parent Segment. */
  index: number;
  durationMs: number;
  independent: boolean;
  data: Buffer;
  uri: string;
}

/** One Media Segment: its parts concatenated. */
export interface Segment {
  mediaSequence: number;
  parts: Part[];
  durationMs: number;
  /** Wall-clock time of the segment's first sample (EXT-X-PROGRAM-DATE-TIME), ms since the epoch. */
  programDateTime: number;
  /** A timeline break precedes this segment (ffmpeg restart, publisher reconnect). */
  discontinuity: boolean;
  /** URI of the init segment (EXT-X-MAP) that applies. */
  mapUri: string;
  /** An ad's segment, played in place of the content during an ad break. */
  ad: boolean;
  uri: string;
  complete: boolean;
  /** The whole segment, set when it completes; parts then become views into it (no second copy). */
  data: Buffer | undefined;
}

export interface PlaylistWindowOptions {
  /** Part target (EXT-X-PART-INF:PART-TARGET) in ms. */
  partTargetMs: number;
  /** Segment target in ms: a keyframe this close to it (half a part) may start the next segment. */
  segmentTargetMs: number;
  /** Unique per packager instance so that URIs never repeat across restarts (no CDN cache poisoning). */
  uriPrefix: string;
  /** How much media the window keeps (DVR window), ms. */
  windowMs: number;
  /** Sees every segment once it is complete, with the init it needs. */
  onSegment?: (segment: Segment, init: InitSegment) => void;
  /**
   * The event continues here from another origin (issue #17): numbering starts where that origin's left off (its
   * `continuation`), and the first segment is a discontinuity.
   */
  continueFrom?: Continuation;
}

/** Where a rendition's numbering goes on when its event continues on another origin (`PlaylistWindow.continuation`). */
export interface Continuation {
  /** The Media Sequence Number of the next segment. */
  mediaSequence: number;
  /** The Discontinuity Sequence Number of that next segment, a discontinuity (one past the last segment's). */
  discontinuitySequence: number;
}

/**
 * The model of one rendition's Media Playlist, and nothing else (no text, no timers, no ads): its segments and parts,
 * their numbering (Media Sequence Numbers, part sequence numbers, the Discontinuity Sequence Number), the init
 * segments in use, and the sliding DVR window. Bounded: segments slide out past `windowMs`, and their parts and the
 * inits no one needs any more go with them.
 */
export class PlaylistWindow {
  readonly #options: PlaylistWindowOptions;
  readonly #segments: Segment[] = [];
  readonly #inits = new Map<string, InitSegment>();
  readonly #parts = new Map<number, Part>();
  /** The content's current init URI (ads have their own; the content comes back to this one). */
  #mapUri: string | undefined;
  #pendingDiscontinuity = false;
  // An event's first segment is 1, not 0 (rfc8216bis lets a playlist start anywhere). hls.js (to 1.7 at least) loses a
  // segment numbered 0 as its parts are appended (`appendedPart.fragment.sn || -1`) and loads its parts again, ~60 times
  // a second, until the next segment completes: every viewer joining as a stream starts (e2e/llhls-player).
  #nextMediaSequence = 1;
  #nextPartSequence = 0;
  #discontinuitySequence = 0;
  #ended = false;

  constructor(options: PlaylistWindowOptions) {
    this.#options = options;
    if (options.continueFrom) {
      this.#nextMediaSequence = options.continueFrom.mediaSequence;
      // The first segment is the discontinuity; it is first in the window, so DISCONTINUITY-SEQUENCE counts it.
      this.#discontinuitySequence = options.continueFrom.discontinuitySequence;
      this.#pendingDiscontinuity = true;
    }
  }

  /**
   * What another origin continuing this event starts from: the next Media Sequence Number, and the Discontinuity
   * Sequence Number of a discontinuity after the last segment (DISCONTINUITY-SEQUENCE counts the first segment's own
   * discontinuity; a later segment adds one for each it carries).
   */
  get continuation(): Continuation {
    const inWindow = this.#segments.filter((segment, i) => i > 0 && segment.discontinuity).length;
    return { mediaSequence: this.#nextMediaSequence, discontinuitySequence: this.#discontinuitySequence + inWindow + 1 };
  }

  get segments(): readonly Segment[] {
    return this.#segments;
  }

  /** The segment still being filled (the last one, if not complete). */
  get open(): Segment | undefined {
    const last = this.#segments[this.#segments.length - 1];
    return last && !last.complete ? last : undefined;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** EXT-X-MEDIA-SEQUENCE: the first segment's number (the next one's while there is none). */
  get mediaSequence(): number {
    return this.#segments[0]?.mediaSequence ?? this.#nextMediaSequence;
  }

  /** EXT-X-DISCONTINUITY-SEQUENCE: the discontinuities that slid out of the window. */
  get discontinuitySequence(): number {
    return this.#discontinuitySequence;
  }

  /** Sequence number the next part will have (its URI is the preload hint). */
  get nextPartSequence(): number {
    return this.#nextPartSequence;
  }

  /** The URI of part `sequence` (existing or not: the preload hint names the next one). */
  partUri(sequence: number): string {
    return `${this.#options.uriPrefix}-p${sequence}.m4s`;
  }

  /** LAST-MSN / LAST-PART for rendition reports and for the advance limits of blocking requests. */
  get last(): { msn: number; part: number } | undefined {
    const open = this.#segments[this.#segments.length - 1];
    if (!open) return undefined;
    if (open.parts.length > 0) return { msn: open.mediaSequence, part: open.parts.length - 1 };
    const previous = this.#segments[this.#segments.length - 2];
    return previous ? { msn: previous.mediaSequence, part: previous.parts.length - 1 } : undefined;
  }

  /** Media Sequence Number of the last segment in the playlist, complete or not. */
  get lastMediaSequence(): number | undefined {
    return this.#segments[this.#segments.length - 1]?.mediaSequence;
  }

  /** The content's current init URI: undefined until the first init. */
  get mapUri(): string | undefined {
    return this.#mapUri;
  }

  set mapUri(uri: string | undefined) {
    this.#mapUri = uri;
  }

  initData(uri: string): Buffer | undefined {
    return this.#inits.get(uri)?.data;
  }

  /** Registers (again) an init segment for serving under `uri`. */
  addInit(uri: string, init: InitSegment): void {
    this.#inits.set(uri, init);
  }

  segment(mediaSequence: number): Segment | undefined {
    const first = this.#segments[0];
    return first ? this.#segments[mediaSequence - first.mediaSequence] : undefined;
  }

  part(sequence: number): Part | undefined {
    return this.#parts.get(sequence);
  }

  /** A timeline break comes: the next segment opened carries EXT-X-DISCONTINUITY. */
  markDiscontinuity(): void {
    this.#pendingDiscontinuity = true;
  }

  /** May an independent part start a new segment after `segment` (it is within half a part of the target)? */
  isFull(segment: Segment): boolean {
    return segment.durationMs >= this.#options.segmentTargetMs - this.#options.partTargetMs / 2;
  }

  openSegment(programDateTime: number, mapUri: string, ad = false): Segment {
    const segment: Segment = {
      mediaSequence: this.#nextMediaSequence++,
      parts: [],
      durationMs: 0,
      programDateTime,
      discontinuity: this.#pendingDiscontinuity,
      mapUri,
      ad,
      uri: `${this.#options.uriPrefix}-s${this.#nextMediaSequence - 1}.m4s`,
      complete: false,
      data: undefined,
    };
    this.#pendingDiscontinuity = false;
    this.#segments.push(segment);
    return segment;
  }

  appendPart(segment: Segment, fragment: Fragment): void {
    const part: Part = {
      sequence: this.#nextPartSequence++,
      index: segment.parts.length,
      durationMs: fragment.durationMs,
      independent: fragment.independent,
      data: fragment.data,
      uri: this.partUri(this.#nextPartSequence - 1),
    };
    segment.parts.push(part);
    segment.durationMs += part.durationMs;
    this.#parts.set(part.sequence, part);
  }

  /** The open segment completes; one without parts is withdrawn (its number and discontinuity go to the next). */
  closeOpenSegment(): void {
    const open = this.#segments[this.#segments.length - 1];
    if (!open || open.complete) return;
    if (open.parts.length === 0) {
      this.#segments.pop();
      this.#nextMediaSequence -= 1;
      if (open.discontinuity) this.#pendingDiscontinuity = true;
      return;
    }
    this.complete(open);
  }

  complete(segment: Segment): void {
    segment.complete = true;
    segment.data = Buffer.concat(segment.parts.map((p) => p.data));
    let offset = 0;
    for (const part of segment.parts) {
      part.data = segment.data.subarray(offset, offset + part.data.length);
      offset += part.data.length;
    }
    const init = this.#inits.get(segment.mapUri);
    if (init && this.#options.onSegment) this.#options.onSegment(segment, init);
  }

  /** The stream is over: the open segment completes, and nothing changes any more. */
  end(): void {
    this.closeOpenSegment();
    this.#ended = true;
  }

  trim(): void {
    // §6.2.2: never shorter than three target durations; we keep the configured window (≥ CAN-SKIP-UNTIL).
    let total = this.#segments.reduce((sum, s) => sum + s.durationMs, 0);
    while (this.#segments.length > 1) {
      const first = this.#segments[0]!;
      if (!first.complete || total - first.durationMs < this.#options.windowMs) break;
      this.#segments.shift();
      total -= first.durationMs;
      for (const part of first.parts) this.#parts.delete(part.sequence);
      const next = this.#segments[0];
      if (next?.discontinuity) this.#discontinuitySequence += 1;
      // An init goes when no segment left needs it and the content will not come back to it (after an ad break).
      if (first.mapUri !== this.#mapUri && !this.#segments.some((s) => s.mapUri === first.mapUri)) this.#inits.delete(first.mapUri);
    }
  }
}

/** Media time (ms) of a fragment's first video sample in the timescale its init gives; undefined if it has none. */
export function fragmentStartMs(fragment: Fragment, init: InitSegment | undefined): number | undefined {
  const videoTrackId = init?.tracks.find((t) => t.kind === 'video')?.trackId;
  const track = fragment.tracks.find((t) => t.trackId === videoTrackId) ?? fragment.tracks[0];
  const info = init?.tracks.find((t) => t.trackId === track?.trackId);
  if (!track || !info) return undefined;
  return (Number(track.baseMediaDecodeTime) * 1000) / info.timescale;
}

/**
 * EXT-X-PROGRAM-DATE-TIME of one rendition's content: the media timeline of a transcoder run, anchored to the wall
 * clock at the time the run's first frame reached the ingest (or, unknown, when its first fragment arrives here), or
 * to the anchor the stream's renditions share (§6.2.4). A date is when its media reached OnAir, never in the future.
 */
export class ProgramDates {
  readonly #anchor: ((generation: number, own: { mediaMs: number; wallMs: number }) => { mediaMs: number; wallMs: number }) | undefined;
  readonly #runInputAt: ((generation: number) => number | undefined) | undefined;
  #clock: { mediaMs: number; wallMs: number } | undefined;
  /** The date the last fragment's media ends at (for the anchor of the next run). */
  #lastDateEnd: number | undefined;
  #mediaMs = 0;

  constructor(
    anchor?: (generation: number, own: { mediaMs: number; wallMs: number }) => { mediaMs: number; wallMs: number },
    runInputAt?: (generation: number) => number | undefined,
  ) {
    this.#anchor = anchor;
    this.#runInputAt = runInputAt;
  }

  /** A new run began: its timeline gets a new anchor on its first fragment. */
  restart(): void {
    this.#clock = undefined;
  }

  /** Media time (ms) of a fragment's first video sample; without one, where the last content fragment ended. */
  mediaStartMs(fragment: Fragment, init: InitSegment | undefined): number {
    return fragmentStartMs(fragment, init) ?? this.#mediaMs;
  }

  /** The date of a content fragment of run `generation` that arrived at `now`, and its media start (ms). */
  date(generation: number, fragment: Fragment, init: InitSegment | undefined, now: number): { date: number; mediaStartMs: number } {
    const videoStart = this.mediaStartMs(fragment, init);
    if (!this.#clock) {
      // The fragment's media began at most its duration before it got here; its first frame reached the ingest
      // earlier still, by ffmpeg's start-up and encoding delay (~1.9 s measured when that was left out).
      const arrived = now - fragment.durationMs;
      const ingested = this.#runInputAt?.(generation);
      let wallMs = ingested === undefined ? arrived : Math.min(ingested, arrived);
      // A run restarted from the publisher's last keyframe dates media the last run may have dated ahead of its
      // arrival: rfc8216bis §6.2.1 allows dates after a discontinuity to overlap the previous ones by less than a
      // second. Keep the overlap within RESTART_OVERLAP_MS, moving a run's dates at most a second past its arrival.
      if (this.#lastDateEnd !== undefined) wallMs = Math.max(wallMs, Math.min(this.#lastDateEnd - RESTART_OVERLAP_MS, wallMs + 1000));
      const own = { mediaMs: videoStart, wallMs };
      this.#clock = this.#anchor?.(generation, own) ?? own;
    }
    const date = Math.round(this.#clock.wallMs + (videoStart - this.#clock.mediaMs));
    this.#lastDateEnd = date + fragment.durationMs;
    this.#mediaMs = videoStart + fragment.durationMs;
    return { date, mediaStartMs: videoStart };
  }
}
