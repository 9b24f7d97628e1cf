import { sleep } from './clock.js';

/*
 * What a low-latency client needs from an OnAir media playlist to ask for the next part: the newest part (its URI,
 * its sequence number, which part of which segment it is). Read from the end of the text with lastIndexOf, since a
 * load generator parses thousands of playlists a second and only their tail changes.
 */

export interface NewestPart {
  /** URI as listed (relative to the playlist), without the query. */
  uri: string;
  /** The URI's prefix: `<prefix>-p<sequence>.m4s`. */
  prefix: string;
  /** Part sequence number, counting every part of the rendition. */
  sequence: number;
  /** Media Sequence Number of the segment that holds it. */
  msn: number;
  /** Index within that segment (what _HLS_part counts). */
  part: number;
}

const PART_TAG = '#EXT-X-PART:';
const PART_URI = /URI="([^"?]*?)-p(\d+)\.m4s/y;

/** The newest part of an OnAir media playlist, or undefined when it lists none (no media yet). */
export function newestPart(text: string): NewestPart | undefined {
  const hint = text.lastIndexOf('#EXT-X-PRELOAD-HINT');
  const end = hint >= 0 ? hint : text.length;
  const partAt = text.lastIndexOf(PART_TAG, end);
  if (partAt < 0) return undefined;
  const uriAt = text.indexOf('URI="', partAt);
  PART_URI.lastIndex = uriAt;
  const match = PART_URI.exec(text);
  if (!match) return undefined;
  const prefix = match[1]!;
  const sequence = Number(match[2]);

  // The segment that holds the newest part is the one after the last complete segment (EXTINF + its URI line).
  const extinfAt = text.lastIndexOf('#EXTINF:', partAt);
  let msn: number;
  if (extinfAt >= 0) {
    const segment = /-s(\d+)\.m4s/.exec(text.slice(extinfAt, text.indexOf('\n', text.indexOf('\n', extinfAt) + 1)));
    if (!segment) return undefined;
    msn = Number(segment[1]) + 1;
  } else {
    const sequenceMatch = /#EXT-X-MEDIA-SEQUENCE:(\d+)/.exec(text);
    if (!sequenceMatch) return undefined;
    msn = Number(sequenceMatch[1]);
  }
  let count = 0;
  for (let at = text.indexOf(PART_TAG, Math.max(0, extinfAt)); at >= 0 && at <= partAt; at = text.indexOf(PART_TAG, at + 1)) count += 1;
  return { uri: `${prefix}-p${sequence}.m4s`, prefix, sequence, msn, part: count - 1 };
}

/** The query of a blocking reload for the part after `newest` (rfc8216bis §6.2.5.2). */
export function nextPartQuery(newest: NewestPart): string {
  return `_HLS_msn=${newest.msn}&_HLS_part=${newest.part + 1}`;
}

/** The renditions of the multivariant playlist, once the stream has media. */
export async function liveRenditions(httpUrl: string, streamId: string, signal: AbortSignal): Promise<string[]> {
  for (;;) {
    const response = await fetch(`${httpUrl}/live/${streamId}/index.m3u8`).catch(() => undefined);
    if (response?.status === 200) {
      const text = await response.text();
      return text.split('\n').filter((line) => line.endsWith('/index.m3u8')).map((line) => line.slice(0, line.indexOf('/')));
    }
    await response?.arrayBuffer().catch(() => undefined);
    await sleep(250, signal);
  }
}
