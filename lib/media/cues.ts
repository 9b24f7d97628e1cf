import { encodeSpliceInsert, toHexSequence } from './scte35.js';

export type CueKind = 'ad' | 'news';

/** CLASS values of OnAir's EXT-X-DATERANGE tags (reverse-DNS, rfc8216bis §4.4.5.1). */
export const CUE_CLASS: Record<CueKind, string> = {
  ad: 'com.onair.ad-break',
  news: 'com.onair.news',
};

/**
 * One cue on a stream's timeline, shared by every rendition's playlist so that ID, START-DATE and every attribute are
 * identical across them. An ad break starts on the next segment boundary (the first segment any rendition opens after
 * the request: keyframes are time-aligned, so every rendition has a segment starting at that date) and ends on the
 * first boundary at or after its planned duration.
 */
export interface Cue {
  id: string;
  kind: CueKind;
  /** SCTE-35 splice_event_id (ad breaks). */
  eventId: number;
  requestedAt: number;
  plannedDurationMs: number;
  /** Wall-clock date (ms) of the segment boundary it starts on; undefined until that segment exists. */
  startDate: number | undefined;
  /** 90 kHz media time of that boundary (the splice point). */
  startPts: bigint | undefined;
  /** Set when the break is over: the boundary it ends on. */
  endDate: number | undefined;
  endPts: bigint | undefined;
  /** News flash text (X-TEXT). */
  text?: string;
}

const MS_TO_90K = 90;

/** Quoted-string attribute values cannot hold `"`, CR or LF (rfc8216bis §4.2). */
function quoted(value: string): string {
  return `"${value.replace(/["\r\n]/g, "'")}"`;
}

export function scte35Out(cue: Cue): string {
  return toHexSequence(encodeSpliceInsert({
    spliceEventId: cue.eventId,
    outOfNetwork: true,
    ...(cue.startPts !== undefined ? { ptsTime: cue.startPts } : {}),
    breakDuration: BigInt(Math.round(cue.plannedDurationMs * MS_TO_90K)),
    autoReturn: true,
  }));
}

export function scte35In(cue: Cue): string {
  return toHexSequence(encodeSpliceInsert({
    spliceEventId: cue.eventId,
    outOfNetwork: false,
    ...(cue.endPts !== undefined ? { ptsTime: cue.endPts } : {}),
  }));
}

/** The EXT-X-DATERANGE tag of a cue as it stands now (an ended break adds DURATION, END-DATE and SCTE35-IN). */
export function dateRangeTag(cue: Cue): string {
  const start = cue.startDate ?? cue.requestedAt;
  const attributes = [
    `ID=${quoted(cue.id)}`,
    `CLASS=${quoted(CUE_CLASS[cue.kind])}`,
    `START-DATE=${quoted(new Date(start).toISOString())}`,
  ];
  if (cue.kind === 'ad') {
    attributes.push(`PLANNED-DURATION=${(cue.plannedDurationMs / 1000).toFixed(3)}`);
    if (cue.endDate !== undefined) {
      attributes.push(`DURATION=${((cue.endDate - start) / 1000).toFixed(3)}`);
      attributes.push(`END-DATE=${quoted(new Date(cue.endDate).toISOString())}`);
    }
    attributes.push(`SCTE35-OUT=${scte35Out(cue)}`);
    if (cue.endDate !== undefined) attributes.push(`SCTE35-IN=${scte35In(cue)}`);
  } else {
    attributes.push(`DURATION=${(cue.plannedDurationMs / 1000).toFixed(3)}`);
    attributes.push(`X-TEXT=${quoted(cue.text ?? '')}`);
  }
  return `#EXT-X-DATERANGE:${attributes.join(',')}`;
}

/**
 * The tags that go before one segment: DATERANGEs that start within it, and for ad breaks the de-facto
 * EXT-X-CUE-OUT / EXT-X-CUE-OUT-CONT / EXT-X-CUE-IN (as AWS Elemental and most SSAI vendors read them).
 */
export function cueTagsBefore(cues: readonly Cue[], segment: { programDateTime: number; durationMs: number }, nextStart: number | undefined): string[] {
  const lines: string[] = [];
  const from = segment.programDateTime;
  for (const cue of cues) {
    const start = cue.startDate ?? (cue.kind === 'news' ? cue.requestedAt : undefined);
    if (start === undefined) continue;
    if (start >= from - 1 && (nextStart === undefined || start < nextStart - 1)) lines.push(dateRangeTag(cue));
    if (cue.kind !== 'ad' || cue.startDate === undefined) continue;
    const planned = (cue.plannedDurationMs / 1000).toFixed(3);
    if (Math.abs(cue.startDate - from) <= 1) {
      lines.push(`#EXT-X-CUE-OUT:DURATION=${planned}`);
    } else if (from > cue.startDate && (cue.endDate === undefined || from < cue.endDate - 1)) {
      lines.push(`#EXT-X-CUE-OUT-CONT:ElapsedTime=${((from - cue.startDate) / 1000).toFixed(3)},Duration=${planned}`);
    } else if (cue.endDate !== undefined && Math.abs(cue.endDate - from) <= 1) {
      lines.push('#EXT-X-CUE-IN');
    }
  }
  return lines;
}
