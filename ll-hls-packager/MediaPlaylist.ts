import type { Fragment, InitSegment } from '../lib/media/fmp4.js';
import type { AdFeed, AdRendition } from '../lib/media/ads.js';
import { cueTagsBefore, type Cue } from '../lib/media/cues.js';

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
}

/** An ad break in progress: ads go out in place of the live content, at the pace the live content arrives. */
interface Splice {
  feed: AdFeed;
  /** PROGRAM-DATE-TIME of the break's first segment. */
  startPdt: number;
  /** Ad media sent so far, ms: the ads' timeline runs from `startPdt`. */
  sentMs: number;
  /** The current ad's init URI and its clock (its media time at a date). */
  mapUri: string;
  clock: { mediaMs: number; wallMs: number };
}

export interface ServerControl {
  canBlockReload: true;
  partHoldBack: number;
  holdBack: number;
  canSkipUntil: number;
  canSkipDateranges: true;
}

/** The parameters every rendition shares, so that SERVER-CONTROL is identical across them (rfc8216bis §4.4.3.8). */
export function serverControlFor(partTargetMs: number, segmentTargetMs: number): ServerControl {
  const targetDuration = Math.ceil(segmentTargetMs / 1000);
  return {
    canBlockReload: true,
    // §4.4.3.8: PART-HOLD-BACK at least three part targets; five leave hls.js room for one late part.
    partHoldBack: (5 * partTargetMs) / 1000,
    // §4.4.3.8: HOLD-BACK at least three target durations.
    holdBack: 3 * targetDuration,
    // §4.4.3.8: CAN-SKIP-UNTIL at least six target durations.
    canSkipUntil: 6 * targetDuration,
    canSkipDateranges: true,
  };
}

type Waiter = { ready: () => boolean; resolve: () => void };

/** Only the hinted part may be requested before it exists (§6.2.6); anything further is 404 at once. */
const PART_REQUEST_AHEAD = 0;

/**
 * The state and rendering of one rendition's LL-HLS Media Playlist: parts from fragments, segments cut at keyframes
 * once they reach the segment target, discontinuities with a new EXT-X-MAP, a sliding window, and waits for the
 * parts and segments that blocking requests ask for.
 */
export class MediaPlaylist {
  readonly name: string;
  readonly partTargetMs: number;
  readonly targetDuration: number;
  readonly #options: MediaPlaylistOptions;
  readonly #segments: Segment[] = [];
  readonly #inits = new Map<string, InitSegment>();
  readonly #parts = new Map<number, Part>();
  /** A Set: O(1) removal when a client hangs up, and it iterates in insertion order (wake-ups stay first come, first served). */
  readonly #waiters = new Set<Waiter>();
  #mapUri: string | undefined;
  #pendingDiscontinuity = false;
  #generation = -1;
  #nextMediaSequence = 0;
  #nextPartSequence = 0;
  #discontinuitySequence = 0;
  #ended = false;
  #clock: { mediaMs: number; wallMs: number } | undefined;
  /** The date the last fragment's media ends at (for the anchor of the next run). */
  #lastDateEnd: number | undefined;
  #mediaMs = 0;
  #version = 0;
  #init: InitSegment | undefined;
  #splice: Splice | undefined;
  readonly #adInitUris = new Map<AdRendition, string>();

  constructor(options: MediaPlaylistOptions) {
    this.#options = options;
    this.name = options.name;
    this.partTargetMs = options.partTargetMs;
    this.targetDuration = Math.ceil(options.segmentTargetMs / 1000);
  }

  /** Changes whenever the playlist changes: a cache key for rendered text. */
  get version(): number {
    return this.#version;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** The latest init segment (for CODECS and RESOLUTION in the multivariant playlist). */
  get init(): InitSegment | undefined {
    return this.#init;
  }

  get segments(): readonly Segment[] {
    return this.#segments;
  }

  /** Sequence number the next part will have (its URI is the preload hint). */
  get nextPartSequence(): number {
    return this.#nextPartSequence;
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

  initData(uri: string): Buffer | undefined {
    return this.#inits.get(uri)?.data;
  }

  segment(mediaSequence: number): Segment | undefined {
    const first = this.#segments[0];
    return first ? this.#segments[mediaSequence - first.mediaSequence] : undefined;
  }

  part(sequence: number): Part | undefined {
    return this.#parts.get(sequence);
  }

  /** Is a part with this sequence number allowed to be waited for (the hinted one, or just after)? */
  partIsComing(sequence: number): boolean {
    return !this.#ended && sequence >= this.#nextPartSequence && sequence <= this.#nextPartSequence + PART_REQUEST_AHEAD;
  }

  /** A new ffmpeg run (generation) began: its init, and a discontinuity unless it is the first. */
  addInit(generation: number, init: InitSegment): void {
    if (this.#ended) return;
    const uri = `${this.#options.uriPrefix}-init${generation}.mp4`;
    this.#inits.set(uri, init);
    this.#init = init;
    if (generation !== this.#generation) {
      if (this.#generation >= 0) {
        // During an ad break the ad's segment goes on; the content after the break starts a discontinuity anyway.
        if (!this.#splice) {
          this.#closeOpenSegment();
          this.#pendingDiscontinuity = true;
        }
        this.#clock = undefined;
      }
      this.#generation = generation;
    }
    this.#mapUri = uri;
  }

  /**
   * One CMAF fragment becomes one part; a keyframe past the segment target starts a new segment. During an ad break
   * the fragment only paces the ads: as much ad media goes out as content came in.
   */
  addFragment(generation: number, fragment: Fragment, now = Date.now()): void {
    if (this.#ended || generation !== this.#generation || this.#mapUri === undefined) return;
    if (fragment.durationMs <= 0) return;
    const videoStart = this.#mediaStartMs(fragment, this.#init);
    // PROGRAM-DATE-TIME follows the media timeline, anchored when the first fragment of a run arrives.
    if (!this.#clock) {
      let wallMs = now - fragment.durationMs;
      // A run restarted from the publisher's last keyframe dates media the last run may have dated ahead of its
      // arrival: rfc8216bis §6.2.1 allows dates after a discontinuity to overlap the previous ones by less than a
      // second. Keep the overlap within RESTART_OVERLAP_MS, moving a run's dates at most a second past its arrival.
      if (this.#lastDateEnd !== undefined) wallMs = Math.max(wallMs, Math.min(this.#lastDateEnd - RESTART_OVERLAP_MS, wallMs + 1000));
      const own = { mediaMs: videoStart, wallMs };
      this.#clock = this.#options.clockAnchor?.(generation, own) ?? own;
    }
    const date = Math.round(this.#clock.wallMs + (videoStart - this.#clock.mediaMs));
    this.#lastDateEnd = date + fragment.durationMs;
    this.#mediaMs = videoStart + fragment.durationMs;

    if (this.#splice && fragment.independent) {
      // A content keyframe is where the break may end (on the same boundary in every rendition).
      this.#options.onSegmentStart?.(date, videoStart);
      if (this.#splice.feed.endsBy(date)) this.#endSplice();
    }
    let open = this.#segments[this.#segments.length - 1];
    if (!this.#splice) {
      const boundary = fragment.independent && (!open || open.complete || open.durationMs >= this.#options.segmentTargetMs - this.partTargetMs / 2);
      if (!boundary && (!open || open.complete)) return; // a segment must start with a keyframe; wait for one
      if (boundary) {
        if (open && !open.complete) this.#complete(open);
        this.#options.onSegmentStart?.(date, videoStart);
        const feed = this.#options.adBreakAt?.(date);
        if (feed) this.#startSplice(feed, date);
        else open = this.#openSegment(date, this.#mapUri);
      }
    }
    if (this.#splice) this.#sendAds(date + fragment.durationMs);
    else this.#appendPart(open!, fragment);
    this.#trimWindow();
    this.#changed();
  }

  #appendPart(segment: Segment, fragment: Fragment): void {
    const part: Part = {
      sequence: this.#nextPartSequence++,
      index: segment.parts.length,
      durationMs: fragment.durationMs,
      independent: fragment.independent,
      data: fragment.data,
      uri: `${this.#options.uriPrefix}-p${this.#nextPartSequence - 1}.m4s`,
    };
    segment.parts.push(part);
    segment.durationMs += part.durationMs;
    this.#parts.set(part.sequence, part);
  }

  #startSplice(feed: AdFeed, date: number): void {
    this.#pendingDiscontinuity = true;
    this.#splice = { feed, startPdt: date, sentMs: 0, mapUri: '', clock: { mediaMs: 0, wallMs: date } };
  }

  /** The break is over: the ad's last segment closes, and the content resumes after a discontinuity. */
  #endSplice(): void {
    this.#closeOpenSegment();
    this.#pendingDiscontinuity = true;
    this.#splice = undefined;
  }

  /** Sends ad fragments until the ads' timeline reaches `until` (the date the content has reached). */
  #sendAds(until: number): void {
    const splice = this.#splice!;
    while (splice.startPdt + splice.sentMs < until - 1) {
      const next = splice.feed.next();
      if (!next) break;
      const { ad, fragment } = next;
      const mediaStart = this.#mediaStartMs(fragment, ad.init);
      if (next.first) {
        // Each ad has its own timeline and init: DISCONTINUITY and EXT-X-MAP before it (rfc8216bis §4.4.4.3, §4.4.4.5).
        this.#closeOpenSegment();
        this.#pendingDiscontinuity = true;
        splice.mapUri = this.#adInitUri(ad);
        splice.clock = { mediaMs: mediaStart, wallMs: splice.startPdt + splice.sentMs };
      }
      let open = this.#segments[this.#segments.length - 1];
      if (!open || open.complete || (fragment.independent && open.durationMs >= this.#options.segmentTargetMs - this.partTargetMs / 2)) {
        if (open && !open.complete) this.#complete(open);
        open = this.#openSegment(Math.round(splice.clock.wallMs + (mediaStart - splice.clock.mediaMs)), splice.mapUri, true);
      }
      this.#appendPart(open, fragment);
      splice.sentMs += fragment.durationMs;
    }
  }

  /** The URI of an ad's init segment in this playlist, registered (again) for serving. */
  #adInitUri(ad: AdRendition): string {
    let uri = this.#adInitUris.get(ad);
    if (uri === undefined) {
      uri = `${this.#options.uriPrefix}-ainit${this.#adInitUris.size}.mp4`;
      this.#adInitUris.set(ad, uri);
    }
    this.#inits.set(uri, ad.init);
    return uri;
  }

  /** Something the playlist shows changed outside it (a cue): blocked reloads get a fresh playlist. */
  touch(): void {
    this.#changed();
  }

  /** The stream is over: the open segment completes and EXT-X-ENDLIST goes out. */
  end(): void {
    if (this.#ended) return;
    this.#closeOpenSegment();
    this.#ended = true;
    this.#changed();
  }

  /**
   * Resolves when `ready()` holds, or with false after `timeoutMs` (or at once if it already holds: true), or with false
   * as soon as `signal` aborts (the client hung up): the waiter is gone at once, not when its timeout fires.
   * Blocking playlist reloads and hinted part requests wait here.
   */
  waitUntil(ready: () => boolean, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    if (ready()) return Promise.resolve(true);
    if (signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const settle = (arrived: boolean): void => {
        this.#waiters.delete(waiter);
        clearTimeout(timer);
        signal?.removeEventListener('abort', abandon);
        resolve(arrived);
      };
      const abandon = (): void => settle(false);
      const waiter: Waiter = { ready, resolve: () => settle(true) };
      const timer = setTimeout(abandon, timeoutMs);
      signal?.addEventListener('abort', abandon, { once: true });
      this.#waiters.add(waiter);
    });
  }

  /** Requests waiting on this rendition now (blocking reloads, hinted parts). */
  get waiting(): number {
    return this.#waiters.size;
  }

  /** Has the playlist got part `part` of segment `msn` (or, without part, the complete segment)? §6.2.5.2 */
  has(msn: number, part: number | undefined): boolean {
    if (this.#ended) return true;
    const segment = this.segment(msn);
    if (!segment) {
      const first = this.#segments[0];
      return first !== undefined && msn < first.mediaSequence; // already slid out: the current playlist answers
    }
    if (part === undefined) return segment.complete;
    // A part index beyond the last part of a complete segment means part 0 of the next segment.
    if (segment.complete && part >= segment.parts.length) return this.has(msn + 1, 0);
    return part < segment.parts.length;
  }

  /**
   * The playlist text. `skip`: a Playlist Delta Update (§6.2.5.1) that replaces segments older than CAN-SKIP-UNTIL
   * with EXT-X-SKIP; `reports`: EXT-X-RENDITION-REPORT for the other renditions; `query`: appended to every URI
   * (signed playback tokens).
   */
  render(options: {
    serverControl: ServerControl;
    skip?: 'YES' | 'v2' | undefined;
    reports?: { uri: string; lastMsn: number; lastPart: number }[];
    query?: string;
  }): string {
    const sc = options.serverControl;
    const q = options.query ?? '';
    const lines = [
      '#EXTM3U',
      '#EXT-X-VERSION:9',
      `#EXT-X-TARGETDURATION:${this.targetDuration}`,
      `#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=${sc.canSkipUntil.toFixed(1)},CAN-SKIP-DATERANGES=YES,` +
        `HOLD-BACK=${sc.holdBack.toFixed(3)},PART-HOLD-BACK=${sc.partHoldBack.toFixed(3)}`,
      `#EXT-X-PART-INF:PART-TARGET=${(this.partTargetMs / 1000).toFixed(3)}`,
      `#EXT-X-MEDIA-SEQUENCE:${this.#segments[0]?.mediaSequence ?? this.#nextMediaSequence}`,
      `#EXT-X-DISCONTINUITY-SEQUENCE:${this.#discontinuitySequence}`,
      '#EXT-X-INDEPENDENT-SEGMENTS',
    ];

    let skipped = 0;
    if (options.skip && !this.#ended) {
      // §4.4.5.2: skip the segments that start more than CAN-SKIP-UNTIL before the end of the playlist.
      const total = this.#segments.reduce((sum, s) => sum + s.durationMs, 0);
      let fromEnd = total;
      for (const segment of this.#segments) {
        if (fromEnd <= sc.canSkipUntil * 1000) break;
        fromEnd -= segment.durationMs;
        skipped += 1;
      }
      if (skipped > 0) lines.push(`#EXT-X-SKIP:SKIPPED-SEGMENTS=${skipped}`);
    }
    const cues = this.#options.cues?.() ?? [];
    if (skipped > 0 && cues.length > 0) {
      // The DATERANGEs of skipped segments stay: a client needs them and may not have seen them yet.
      for (let i = 0; i < skipped; i++) {
        const next = this.#segments[i + 1]?.programDateTime;
        for (const line of cueTagsBefore(cues, this.#segments[i]!, next)) if (line.startsWith('#EXT-X-DATERANGE')) lines.push(line);
      }
    }

    // Parts are listed for the segments that end less than three target durations before the end (§4.4.4.9).
    const totalMs = this.#segments.reduce((sum, s) => sum + s.durationMs, 0);
    const partsFromMs = totalMs - 3 * this.targetDuration * 1000;
    let mapUri: string | undefined;
    let endMs = 0;
    this.#segments.forEach((segment, i) => {
      endMs += segment.durationMs;
      if (i < skipped) return;
      // The first segment's discontinuity was counted in DISCONTINUITY-SEQUENCE when its predecessor slid out.
      if (segment.discontinuity && i > 0) lines.push('#EXT-X-DISCONTINUITY');
      if (segment.mapUri !== mapUri) {
        lines.push(`#EXT-X-MAP:URI="${segment.mapUri}${q}"`);
        mapUri = segment.mapUri;
      }
      lines.push(`#EXT-X-PROGRAM-DATE-TIME:${new Date(segment.programDateTime).toISOString()}`);
      if (cues.length > 0) {
        // A complete last segment ends where the next one will start: a cue from there on waits for that segment
        // (an ad break's start is known the moment the boundary passes, before the next segment's first part).
        const next = this.#segments[i + 1]?.programDateTime ?? (segment.complete ? segment.programDateTime + segment.durationMs : undefined);
        lines.push(...cueTagsBefore(cues, segment, next));
      }
      if (!segment.complete || (!this.#ended && endMs > partsFromMs)) {
        for (const part of segment.parts) {
          lines.push(`#EXT-X-PART:DURATION=${(part.durationMs / 1000).toFixed(3)},URI="${part.uri}${q}"${part.independent ? ',INDEPENDENT=YES' : ''}`);
        }
      }
      if (segment.complete) lines.push(`#EXTINF:${(segment.durationMs / 1000).toFixed(3)},`, `${segment.uri}${q}`);
    });

    if (this.#ended) {
      lines.push('#EXT-X-ENDLIST');
    } else {
      lines.push(`#EXT-X-PRELOAD-HINT:TYPE=PART,URI="${this.#options.uriPrefix}-p${this.#nextPartSequence}.m4s${q}"`);
      for (const report of options.reports ?? []) {
        lines.push(`#EXT-X-RENDITION-REPORT:URI="${report.uri}${q}",LAST-MSN=${report.lastMsn},LAST-PART=${report.lastPart}`);
      }
    }
    return `${lines.join('\n')}\n`;
  }

  /** Media time (ms) of a fragment's first video sample, in the timescale its init gives. */
  #mediaStartMs(fragment: Fragment, init: InitSegment | undefined): number {
    const videoTrackId = init?.tracks.find((t) => t.kind === 'video')?.trackId;
    const track = fragment.tracks.find((t) => t.trackId === videoTrackId) ?? fragment.tracks[0];
    const info = init?.tracks.find((t) => t.trackId === track?.trackId);
    if (!track || !info) return this.#mediaMs;
    return (Number(track.baseMediaDecodeTime) * 1000) / info.timescale;
  }

  #openSegment(programDateTime: number, mapUri: string, ad = false): Segment {
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

  #closeOpenSegment(): void {
    const open = this.#segments[this.#segments.length - 1];
    if (!open || open.complete) return;
    if (open.parts.length === 0) {
      this.#segments.pop();
      this.#nextMediaSequence -= 1;
      if (open.discontinuity) this.#pendingDiscontinuity = true;
      return;
    }
    this.#complete(open);
  }

  #complete(segment: Segment): void {
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

  #trimWindow(): void {
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

  #changed(): void {
    this.#version += 1;
    // Deleting the entry being visited is safe while iterating a Set; `settle` does it.
    for (const waiter of this.#waiters) if (waiter.ready()) waiter.resolve();
  }
}
