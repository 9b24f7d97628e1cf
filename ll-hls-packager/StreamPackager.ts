import type { LadderPlan, Rendition } from '../live-transcoder/index.js';
import type { Fragment, InitSegment } from '../lib/media/fmp4.js';
import { CLOSED_CAPTIONS_ATTRIBUTE, CLOSED_CAPTIONS_MEDIA, hasCaptions } from '../lib/media/captions.js';
import { MediaPlaylist, serverControlFor, type Continuation, type Segment, type ServerControl } from './MediaPlaylist.js';
import { AdFeed, type AdMedia } from '../lib/media/ads.js';
import type { Cue } from '../lib/media/cues.js';

export interface StreamPackagerOptions {
  streamId: string;
  partTargetMs: number;
  segmentTargetMs: number;
  /** PART-HOLD-BACK, in parts (at least 3; 5 when absent). */
  holdBackParts?: number;
  /** Media kept in each playlist (DVR window), ms. */
  windowMs: number;
  /** Makes every URI of this packager unique across node restarts and stream restarts. */
  uriPrefix?: string;
  /** Every complete segment of every rendition, with its init (for the event's recording). */
  onSegment?: (rendition: Rendition, segment: Segment, init: InitSegment) => void;
  /**
   * The event continues here from another origin (issue #17): each rendition's numbering goes on from that origin's
   * (`continuation()`), after a discontinuity. A rendition it did not have goes on from the furthest one it had.
   */
  continueFrom?: Readonly<Record<string, Continuation>>;
  /** Each content part of every rendition as it goes out: ms since its media's end reached the ingest. */
  onPart?: (delayMs: number) => void;
  /**
   * An ad break starts (on its first segment's boundary, as soon as any rendition opens that segment) or ends (on the
   * boundary where CUE-IN goes, or with the stream): the WebRTC feed switches on the same boundaries (issue #18).
   */
  onBreak?: (cue: Cue, phase: 'start' | 'end') => void;
}

interface RenditionState {
  rendition: Rendition;
  playlist: MediaPlaylist;
}

/**
 * All renditions of one live stream: their media playlists and the multivariant playlist, with BANDWIDTH and
 * AVERAGE-BANDWIDTH measured from the segments actually produced and CODECS read from the real init segments.
 */
export class StreamPackager {
  readonly streamId: string;
  readonly serverControl: ServerControl;
  readonly uriPrefix: string;
  readonly #options: StreamPackagerOptions;
  readonly #renditions = new Map<string, RenditionState>();
  /** PROGRAM-DATE-TIME anchor of each transcoder run, set by the first rendition to get a fragment of it. */
  readonly #clockAnchors = new Map<number, { mediaMs: number; wallMs: number }>();
  /** When each recent run's first frame reached the ingest (`runInput`). */
  readonly #runInputs = new Map<number, () => number>();
  #ended = false;
  #endedAt: number | undefined;
  /** CEA-608/708 captions seen in a fragment of this event: declared in the multivariant playlist from then on. */
  #captions = false;
  readonly #cues: Cue[] = [];
  #cueWaiters: { cue: Cue; resolve: () => void }[] = [];
  #ads: readonly AdMedia[] = [];
  /** The ads each ad break plays, chosen when it starts. */
  readonly #breakAds = new Map<string, readonly AdMedia[]>();

  constructor(options: StreamPackagerOptions) {
    this.#options = options;
    this.streamId = options.streamId;
    this.serverControl = serverControlFor(options.partTargetMs, options.segmentTargetMs, options.holdBackParts);
    this.uriPrefix = options.uriPrefix ?? Date.now().toString(36);
  }

  get ended(): boolean {
    return this.#ended;
  }

  get endedAt(): number | undefined {
    return this.#endedAt;
  }

  /** Sum of the renditions' versions: changes whenever any playlist (and so any rendition report) changes. */
  get version(): number {
    let version = 0;
    for (const { playlist } of this.#renditions.values()) version += playlist.version;
    return version;
  }

  /** The stream's cues, oldest first (ad breaks and news flashes; the replay keeps them). */
  get cues(): readonly Cue[] {
    return this.#cues;
  }

  /**
   * The ads that replace the content of ad breaks from now on, packaged in this stream's current plan (every one has
   * every rendition). Empty: breaks carry markers only.
   */
  setAds(ads: readonly AdMedia[]): void {
    const names = this.renditionNames;
    this.#ads = ads.filter((ad) => names.every((name) => ad.renditions.has(name)));
  }

  get ads(): readonly AdMedia[] {
    return this.#ads;
  }

  /** The ad videos an ad break plays (empty for markers only), once it has started. */
  adsOf(cueId: string): readonly AdMedia[] {
    return this.#breakAds.get(cueId) ?? [];
  }

  /** An ad break whose content is not over yet (started or waiting for its boundary). */
  get runningBreak(): Cue | undefined {
    return this.#cues.find((c) => c.kind === 'ad' && c.endDate === undefined);
  }

  /**
   * Adds a cue. An ad break waits for the next segment boundary (any rendition's next segment: they are aligned) and
   * resolves once it has its START-DATE; a news flash starts now. Every playlist renders it from then on.
   */
  addCue(cue: Cue): Promise<void> {
    this.#cues.push(cue);
    if (cue.kind !== 'ad' || cue.startDate !== undefined) {
      this.#touch();
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#cueWaiters.push({ cue, resolve }));
  }

  /** A segment opened in some rendition: pending breaks start on it, running breaks past their duration end on it. */
  #segmentStarted(programDateTime: number, mediaStartMs: number): void {
    let changed = false;
    const pts = BigInt(Math.round(mediaStartMs * 90));
    const breaks: [Cue, 'start' | 'end'][] = [];
    for (const cue of this.#cues) {
      if (cue.kind === 'ad' && cue.startDate !== undefined && cue.endDate === undefined && programDateTime > cue.startDate
        && programDateTime >= cue.startDate + cue.plannedDurationMs - this.#options.partTargetMs) {
        cue.endDate = programDateTime;
        cue.endPts = pts;
        changed = true;
        breaks.push([cue, 'end']);
      }
    }
    for (const cue of this.#cues) {
      // One break at a time: a break asked for during another starts when that one is over.
      if (cue.kind !== 'ad' || cue.startDate !== undefined || programDateTime < cue.requestedAt - this.#options.segmentTargetMs) continue;
      if (this.#cues.some((c) => c.kind === 'ad' && c.startDate !== undefined && c.endDate === undefined)) break;
      cue.startDate = programDateTime;
      cue.startPts = pts;
      if (this.#ads.length > 0) this.#breakAds.set(cue.id, this.#ads);
      changed = true;
      breaks.push([cue, 'start']);
    }
    if (!changed) return;
    for (const [cue, phase] of breaks) this.#breakChanged(cue, phase);
    const waiting = this.#cueWaiters;
    this.#cueWaiters = [];
    for (const waiter of waiting) {
      if (waiter.cue.startDate !== undefined) waiter.resolve();
      else this.#cueWaiters.push(waiter);
    }
  }

  #breakChanged(cue: Cue, phase: 'start' | 'end'): void {
    try {
      this.#options.onBreak?.(cue, phase);
    } catch {
      // The playlists go on whatever a listener does (it catches its own errors).
    }
  }

  /** Wakes blocked playlist requests so that a new cue goes out without waiting for the next part. */
  #touch(): void {
    for (const { playlist } of this.#renditions.values()) playlist.touch();
  }

  /** The ads of the break starting at this date, for one rendition. */
  #adFeed(name: string, programDateTime: number): AdFeed | undefined {
    const cue = this.#cues.find((c) => c.kind === 'ad' && c.startDate !== undefined && Math.abs(c.startDate - programDateTime) <= 1);
    const ads = cue && this.#breakAds.get(cue.id);
    if (!cue || !ads) return undefined;
    const renditions = ads.map((ad) => ad.renditions.get(name)).filter((r) => r !== undefined);
    return renditions.length > 0 ? new AdFeed(cue.id, renditions, () => cue.endDate) : undefined;
  }

  playlist(name: string): MediaPlaylist | undefined {
    return this.#renditions.get(name)?.playlist;
  }

  get renditionNames(): string[] {
    return [...this.#renditions.keys()];
  }

  /** A transcoder run starts with this plan; new renditions get a playlist, known ones keep theirs. */
  /**
   * Run `generation` of the transcoder starts with a frame that reached the ingest at `at()` (ms since the epoch, asked
   * when the run's first fragment is out): its media is dated from there in every rendition (EXT-X-PROGRAM-DATE-TIME
   * = ingest time). The last few runs are kept.
   */
  runInput(generation: number, at: () => number): void {
    this.#runInputs.set(generation, at);
    for (const known of this.#runInputs.keys()) if (known < generation - 3) this.#runInputs.delete(known);
  }

  setPlan(plan: LadderPlan): void {
    for (const rendition of plan.renditions) {
      const known = this.#renditions.get(rendition.name);
      if (known) {
        known.rendition = rendition;
        continue;
      }
      this.#renditions.set(rendition.name, {
        rendition,
        playlist: new MediaPlaylist({
          name: rendition.name,
          partTargetMs: this.#options.partTargetMs,
          segmentTargetMs: this.#options.segmentTargetMs,
          uriPrefix: this.uriPrefix,
          windowMs: Math.max(this.#options.windowMs, (this.serverControl.canSkipUntil + 2 * Math.ceil(this.#options.segmentTargetMs / 1000)) * 1000),
          // rfc8216bis §6.2.4: the same date for the same media in every rendition, whichever got its fragment first.
          clockAnchor: (generation, own) => {
            const anchor = this.#clockAnchors.get(generation) ?? own;
            this.#clockAnchors.set(generation, anchor);
            for (const known of this.#clockAnchors.keys()) if (known < generation - 3) this.#clockAnchors.delete(known);
            return anchor;
          },
          runInputAt: (generation) => this.#runInputs.get(generation)?.(),
          onSegmentStart: (programDateTime: number, mediaStartMs: number) => this.#segmentStarted(programDateTime, mediaStartMs),
          cues: () => this.#cues,
          adBreakAt: (programDateTime: number) => this.#adFeed(rendition.name, programDateTime),
          ...(this.#continueFrom(rendition.name)),
          ...(this.#options.onPart ? { onPart: this.#options.onPart } : {}),
          ...(this.#options.onSegment ? {
            onSegment: (segment: Segment, init: InitSegment) => {
              const state = this.#renditions.get(rendition.name);
              if (state) this.#options.onSegment!(state.rendition, segment, init);
            },
          } : {}),
        }),
      });
    }
  }

  /** Where each rendition's numbering goes on if another origin continues the event (issue #17). */
  continuation(): Record<string, Continuation> {
    const renditions: Record<string, Continuation> = {};
    for (const [name, { playlist }] of this.#renditions) renditions[name] = playlist.continuation;
    return renditions;
  }

  #continueFrom(name: string): { continueFrom?: Continuation } {
    const from = this.#options.continueFrom;
    if (!from) return {};
    const own = Object.hasOwn(from, name) ? from[name] : undefined;
    if (own) return { continueFrom: own };
    const all = Object.values(from);
    if (all.length === 0) return {};
    return {
      continueFrom: {
        mediaSequence: Math.max(...all.map((c) => c.mediaSequence)),
        discontinuitySequence: Math.max(...all.map((c) => c.discontinuitySequence)),
      },
    };
  }

  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#endedAt = Date.now();
    // A break still running when the stream ends ends with it (the replay then shows its real length).
    for (const cue of this.#cues) {
      if (cue.kind === 'ad' && cue.startDate !== undefined && cue.endDate === undefined) {
        cue.endDate = this.#endedAt;
        this.#breakChanged(cue, 'end');
      }
    }
    for (const { playlist } of this.#renditions.values()) playlist.end();
    for (const waiter of this.#cueWaiters) waiter.resolve();
    this.#cueWaiters = [];
  }

  /** Is every rendition's init known (CODECS can be written)? */
  get ready(): boolean {
    return this.#renditions.size > 0 && [...this.#renditions.values()].every(({ playlist }) => playlist.init !== undefined
      && playlist.segments.length > 0);
  }

  /** EXT-X-RENDITION-REPORT entries for every rendition but `name` (§4.4.5.4). */
  reportsFor(name: string): { uri: string; lastMsn: number; lastPart: number }[] {
    const reports: { uri: string; lastMsn: number; lastPart: number }[] = [];
    for (const [other, { playlist }] of this.#renditions) {
      if (other === name) continue;
      const last = playlist.last;
      if (last) reports.push({ uri: `../${other}/index.m3u8`, lastMsn: last.msn, lastPart: last.part });
    }
    return reports;
  }

  /** A fragment of run `generation` for rendition `name`: into its playlist, and looked at for captions. */
  addFragment(generation: number, name: string, fragment: Fragment): void {
    this.#renditions.get(name)?.playlist.addFragment(generation, fragment);
    if (!this.#captions && hasCaptions(fragment.data)) this.#captions = true;
  }

  /** The publisher's video carries CEA-608/708 captions (seen in a fragment of the event; declared from then on). */
  get captions(): boolean {
    return this.#captions;
  }

  /**
   * The multivariant playlist (§4.4.6), highest rendition first. Captions in the video (the publisher's, carried
   * through every rung) are declared as one CLOSED-CAPTIONS rendition, CC1, that every variant refers to (§4.4.6.1,
   * §4.4.6.2): Safari lists them, hls.js names its text track after them. Until captions are seen nothing is said
   * (`CLOSED-CAPTIONS=NONE` would tell players to ignore any that come later).
   */
  renderMultivariant(query = ''): string {
    const lines = ['#EXTM3U', '#EXT-X-VERSION:9', '#EXT-X-INDEPENDENT-SEGMENTS'];
    if (this.#captions) lines.push(CLOSED_CAPTIONS_MEDIA);
    for (const [name, { rendition, playlist }] of this.#renditions) {
      const init = playlist.init;
      if (!init) continue;
      const { peak, average } = measureBandwidth(playlist, rendition);
      const codecs = init.tracks.filter((t) => t.kind !== 'other').map((t) => t.codec).join(',');
      // The coded size from the plan: an init's tkhd carries the display size, which a sample aspect ratio can skew.
      const { width, height } = rendition;
      lines.push(
        `#EXT-X-STREAM-INF:BANDWIDTH=${peak},AVERAGE-BANDWIDTH=${average},CODECS="${codecs}",` +
          `RESOLUTION=${width}x${height},FRAME-RATE=${rendition.fps.toFixed(3)}${this.#captions ? CLOSED_CAPTIONS_ATTRIBUTE : ''}`,
        `${name}/index.m3u8${query}`,
      );
    }
    return `${lines.join('\n')}\n`;
  }
}

/**
 * BANDWIDTH is the peak segment bitrate, AVERAGE-BANDWIDTH the mean over the window (§4.4.6.2); until a segment is
 * complete, the ladder's targets plus 10 % for the container stand in.
 */
function measureBandwidth(playlist: MediaPlaylist, rendition: Rendition): { peak: number; average: number } {
  const complete = playlist.segments.filter((s) => s.complete && s.durationMs > 0 && s.data);
  if (complete.length === 0) {
    const estimate = Math.round((rendition.videoKbps + rendition.audioKbps) * 1000 * 1.1);
    return { peak: estimate, average: estimate };
  }
  let peak = 0;
  let bits = 0;
  let ms = 0;
  for (const segment of complete) {
    const segmentBits = segment.data!.length * 8;
    peak = Math.max(peak, Math.round((segmentBits * 1000) / segment.durationMs));
    bits += segmentBits;
    ms += segment.durationMs;
  }
  return { peak, average: Math.round((bits * 1000) / ms) };
}
