import { cueTagsBefore, type Cue } from '../lib/media/cues.js';
import type { PlaylistWindow } from './PlaylistWindow.js';

export interface ServerControl {
  canBlockReload: true;
  partHoldBack: number;
  holdBack: number;
  canSkipUntil: number;
  canSkipDateranges: true;
}

/** The parameters every rendition shares, so that SERVER-CONTROL is identical across them (rfc8216bis §4.4.3.8). */
export function serverControlFor(partTargetMs: number, segmentTargetMs: number, holdBackParts = 3): ServerControl {
  const targetDuration = Math.ceil(segmentTargetMs / 1000);
  return {
    canBlockReload: true,
    // §4.4.3.8: PART-HOLD-BACK at least three part targets. Players start that far behind the live edge
    // (ONAIR_LLHLS_HOLD_BACK_PARTS): fewer is closer to the glass, more rides out late parts without a stall.
    partHoldBack: (Math.max(3, holdBackParts) * partTargetMs) / 1000,
    // §4.4.3.8: HOLD-BACK at least three target durations.
    holdBack: 3 * targetDuration,
    // §4.4.3.8: CAN-SKIP-UNTIL at least six target durations.
    canSkipUntil: 6 * targetDuration,
    canSkipDateranges: true,
  };
}

export interface RenderOptions {
  serverControl: ServerControl;
  /** A Playlist Delta Update (§6.2.5.1): segments older than CAN-SKIP-UNTIL become EXT-X-SKIP. */
  skip?: 'YES' | 'v2' | undefined;
  /** EXT-X-RENDITION-REPORT for the other renditions. */
  reports?: { uri: string; lastMsn: number; lastPart: number }[];
  /** Appended to every URI (signed playback tokens). */
  query?: string;
}

/** What the text says besides the window: the rendition's fixed targets and the stream's cues. */
export interface RenderContext {
  /** EXT-X-TARGETDURATION, s. */
  targetDuration: number;
  /** EXT-X-PART-INF:PART-TARGET, ms. */
  partTargetMs: number;
  cues: readonly Cue[];
}

/** The Media Playlist text (rfc8216bis §4.4) of a window as it stands. Reads the window, changes nothing. */
export function renderMediaPlaylist(window: PlaylistWindow, context: RenderContext, options: RenderOptions): string {
  const sc = options.serverControl;
  const q = options.query ?? '';
  const segments = window.segments;
  const ended = window.ended;
  const lines = [
    '#EXTM3U',
    '#EXT-X-VERSION:9',
    `#EXT-X-TARGETDURATION:${context.targetDuration}`,
    `#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=${sc.canSkipUntil.toFixed(1)},CAN-SKIP-DATERANGES=YES,` +
      `HOLD-BACK=${sc.holdBack.toFixed(3)},PART-HOLD-BACK=${sc.partHoldBack.toFixed(3)}`,
    `#EXT-X-PART-INF:PART-TARGET=${(context.partTargetMs / 1000).toFixed(3)}`,
    `#EXT-X-MEDIA-SEQUENCE:${window.mediaSequence}`,
    `#EXT-X-DISCONTINUITY-SEQUENCE:${window.discontinuitySequence}`,
    '#EXT-X-INDEPENDENT-SEGMENTS',
  ];

  let skipped = 0;
  if (options.skip && !ended) {
    // §4.4.5.2: skip the segments that start more than CAN-SKIP-UNTIL before the end of the playlist.
    const total = segments.reduce((sum, s) => sum + s.durationMs, 0);
    let fromEnd = total;
    for (const segment of segments) {
      if (fromEnd <= sc.canSkipUntil * 1000) break;
      fromEnd -= segment.durationMs;
      skipped += 1;
    }
    if (skipped > 0) lines.push(`#EXT-X-SKIP:SKIPPED-SEGMENTS=${skipped}`);
  }
  const cues = context.cues;
  if (skipped > 0 && cues.length > 0) {
    // The DATERANGEs of skipped segments stay: a client needs them and may not have seen them yet.
    for (let i = 0; i < skipped; i++) {
      const next = segments[i + 1]?.programDateTime;
      for (const line of cueTagsBefore(cues, segments[i]!, next)) if (line.startsWith('#EXT-X-DATERANGE')) lines.push(line);
    }
  }

  // Parts are listed for the segments that end less than three target durations before the end (§4.4.4.9).
  const totalMs = segments.reduce((sum, s) => sum + s.durationMs, 0);
  const partsFromMs = totalMs - 3 * context.targetDuration * 1000;
  let mapUri: string | undefined;
  let endMs = 0;
  segments.forEach((segment, i) => {
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
      const next = segments[i + 1]?.programDateTime ?? (segment.complete ? segment.programDateTime + segment.durationMs : undefined);
      lines.push(...cueTagsBefore(cues, segment, next));
    }
    if (!segment.complete || (!ended && endMs > partsFromMs)) {
      for (const part of segment.parts) {
        lines.push(`#EXT-X-PART:DURATION=${(part.durationMs / 1000).toFixed(3)},URI="${part.uri}${q}"${part.independent ? ',INDEPENDENT=YES' : ''}`);
      }
    }
    if (segment.complete) lines.push(`#EXTINF:${(segment.durationMs / 1000).toFixed(3)},`, `${segment.uri}${q}`);
  });

  if (ended) {
    lines.push('#EXT-X-ENDLIST');
  } else {
    lines.push(`#EXT-X-PRELOAD-HINT:TYPE=PART,URI="${window.partUri(window.nextPartSequence)}${q}"`);
    for (const report of options.reports ?? []) {
      lines.push(`#EXT-X-RENDITION-REPORT:URI="${report.uri}${q}",LAST-MSN=${report.lastMsn},LAST-PART=${report.lastPart}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
