import type { AdFeed, AdRendition } from '../lib/media/ads.js';
import type { PlaylistWindow, ProgramDates } from './PlaylistWindow.js';

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

/**
 * Splices the ads of an ad break into one rendition's window in place of its content: a DISCONTINUITY and the ad's
 * EXT-X-MAP before each ad, the ads dated on from the break's start, and a DISCONTINUITY where the content resumes.
 * Media Sequence Numbers go on counting through the break (ad segments are segments of the playlist).
 */
export class AdSplice {
  readonly #window: PlaylistWindow;
  readonly #dates: ProgramDates;
  readonly #uriPrefix: string;
  readonly #adInitUris = new Map<AdRendition, string>();
  #splice: Splice | undefined;

  constructor(window: PlaylistWindow, dates: ProgramDates, uriPrefix: string) {
    this.#window = window;
    this.#dates = dates;
    this.#uriPrefix = uriPrefix;
  }

  /** Is an ad break being played now? */
  get active(): boolean {
    return this.#splice !== undefined;
  }

  /** Is the running break over at this date (the content segment starting then is content again)? */
  endsBy(date: number): boolean {
    return this.#splice !== undefined && this.#splice.feed.endsBy(date);
  }

  start(feed: AdFeed, date: number): void {
    this.#window.markDiscontinuity();
    this.#splice = { feed, startPdt: date, sentMs: 0, mapUri: '', clock: { mediaMs: 0, wallMs: date } };
  }

  /** The break is over: the ad's last segment closes, and the content resumes after a discontinuity. */
  end(): void {
    this.#window.closeOpenSegment();
    this.#window.markDiscontinuity();
    this.#splice = undefined;
  }

  /** Sends ad fragments until the ads' timeline reaches `until` (the date the content has reached). */
  send(until: number): void {
    const splice = this.#splice!;
    const window = this.#window;
    while (splice.startPdt + splice.sentMs < until - 1) {
      const next = splice.feed.next();
      if (!next) break;
      const { ad, fragment } = next;
      const mediaStart = this.#dates.mediaStartMs(fragment, ad.init);
      if (next.first) {
        // Each ad has its own timeline and init: DISCONTINUITY and EXT-X-MAP before it (rfc8216bis §4.4.4.3, §4.4.4.5).
        window.closeOpenSegment();
        window.markDiscontinuity();
        splice.mapUri = this.#adInitUri(ad);
        splice.clock = { mediaMs: mediaStart, wallMs: splice.startPdt + splice.sentMs };
      }
      let open = window.open;
      if (!open || (fragment.independent && window.isFull(open))) {
        if (open) window.complete(open);
        open = window.openSegment(Math.round(splice.clock.wallMs + (mediaStart - splice.clock.mediaMs)), splice.mapUri, true);
      }
      window.appendPart(open, fragment);
      splice.sentMs += fragment.durationMs;
    }
  }

  /** The URI of an ad's init segment in this playlist, registered (again) for serving. */
  #adInitUri(ad: AdRendition): string {
    let uri = this.#adInitUris.get(ad);
    if (uri === undefined) {
      uri = `${this.#uriPrefix}-ainit${this.#adInitUris.size}.mp4`;
      this.#adInitUris.set(ad, uri);
    }
    this.#window.addInit(uri, ad.init);
    return uri;
  }
}
