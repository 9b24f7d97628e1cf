import { Fmp4Splitter, type Fragment, type InitSegment } from './fmp4.js';

/** An ad in one rendition of a live ladder: its init segment and its CMAF fragments (each one becomes a part). */
export interface AdRendition {
  init: InitSegment;
  fragments: readonly Fragment[];
  durationMs: number;
}

/** An ad video packaged in a live stream's ladder: one AdRendition per rendition name of the plan it was made for. */
export interface AdMedia {
  /** The catalog video's id. */
  id: string;
  durationMs: number;
  renditions: ReadonlyMap<string, AdRendition>;
}

/** Splits a whole fMP4 file (ffmpeg's CMAF output for one rendition) into its init and fragments. */
export function splitAdRendition(data: Buffer): AdRendition | undefined {
  const splitter = new Fmp4Splitter();
  const fragments: Fragment[] = [];
  splitter.on('fragment', (fragment) => {
    if (fragment.durationMs > 0) fragments.push(fragment);
  });
  splitter.push(data);
  const init = splitter.init;
  if (!init || fragments.length === 0 || !fragments[0]!.independent) return undefined;
  return { init, fragments, durationMs: fragments.reduce((sum, f) => sum + f.durationMs, 0) };
}

/**
 * The ads of one break for one rendition, in order and round again until the break is over. Each ad begins its own
 * timeline (`first`): the playlist puts a DISCONTINUITY and the ad's EXT-X-MAP before it.
 */
export class AdFeed {
  readonly cueId: string;
  readonly #ads: readonly AdRendition[];
  readonly #endDate: () => number | undefined;
  #ad = 0;
  #fragment = 0;

  constructor(cueId: string, ads: readonly AdRendition[], endDate: () => number | undefined) {
    this.cueId = cueId;
    this.#ads = ads.filter((ad) => ad.fragments.length > 0);
    this.#endDate = endDate;
  }

  /** Is the break over at this date (the live segment starting then is content again)? */
  endsBy(programDateTime: number): boolean {
    const end = this.#endDate();
    return end !== undefined && programDateTime >= end - 1;
  }

  next(): { ad: AdRendition; fragment: Fragment; first: boolean } | undefined {
    if (this.#ads.length === 0) return undefined;
    let ad = this.#ads[this.#ad]!;
    if (this.#fragment >= ad.fragments.length) {
      this.#ad = (this.#ad + 1) % this.#ads.length;
      this.#fragment = 0;
      ad = this.#ads[this.#ad]!;
    }
    const first = this.#fragment === 0;
    return { ad, fragment: ad.fragments[this.#fragment++]!, first };
  }
}
