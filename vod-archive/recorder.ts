import { createWriteStream, type WriteStream } from 'node:fs';
import { appendFile, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { InitSegment, Rendition } from '../live-transcoder/index.js';
import type { Segment } from '../ll-hls-packager/index.js';
import { cueTagsBefore, type Cue } from '../ll-hls-packager/cues.js';
import type { Logger } from '../lib/log.js';

interface RecordedSegment {
  /** The live playlist's media sequence number: the segment's order (writes may finish out of order). */
  sequence: number;
  file: string;
  durationMs: number;
  discontinuity: boolean;
  map: string;
  programDateTime: number;
  bytes: number;
}

interface RecordedRendition {
  rendition: Rendition;
  segments: RecordedSegment[];
  /** init file name by the live playlist's map URI. */
  inits: Map<string, string>;
  codecs: string;
}

export interface RecordingResult {
  /** The recording's folder: `ladder/` holds the replay (playlists included), `source-<n>.flv` the publishes. */
  dir: string;
  /** Replay files relative to `dir/ladder`, playlists last (so a reader never sees a playlist before its media). */
  replayFiles: string[];
  /** Source files relative to `dir`, in publish order. */
  sourceFiles: string[];
  durationMs: number;
  renditions: { name: string; width: number; height: number; kbps: number }[];
  /** Wall-clock date of the replay's first media (its EXT-X-PROGRAM-DATE-TIME), ms since the epoch. */
  startDate: number | undefined;
  /** Where the event's wall clock lands in the replay: one span per run of media between discontinuities. */
  timeline: TimelineSpan[];
}

/**
 * A run of the replay without a discontinuity: media that went out from `wallMs` (its PROGRAM-DATE-TIME) on is at
 * `videoMs` in the video, for `durationMs`. Between two runs (a publisher away, an ffmpeg restart) the wall clock
 * goes on while the video does not.
 */
export interface TimelineSpan {
  wallMs: number;
  videoMs: number;
  durationMs: number;
}

/** One line of a recording's journal (`journal.jsonl`), written once the file it names is on disk. */
type JournalEntry =
  | { source: string }
  | { init: { rendition: Rendition; map: string; codecs: string | undefined } }
  | { segment: RecordedSegment & { rendition: string } };

const JOURNAL = 'journal.jsonl';

/**
 * The recording of one live event, on local disk while it lasts: every publish's FLV as received (copied, not
 * re-encoded: the VOD pipeline's source) and every complete segment of the live ladder with its inits (the instant
 * replay: the same bytes viewers got, no re-encode). Reconnects of the same event add a source file and a
 * discontinuity. `finish()` writes the replay's VOD playlists.
 *
 * A journal beside the files names each one once it is complete, so that a node that died mid-event finds its
 * recording at the next start (`EventRecorder.recover`) and archives it like any ended event.
 */
export class EventRecorder {
  readonly eventId: string;
  readonly dir: string;
  readonly #log: Logger;
  readonly #renditions = new Map<string, RecordedRendition>();
  readonly #sources: string[] = [];
  readonly #pending = new Set<Promise<void>>();
  #openSource: WriteStream | undefined;
  #failed = false;
  #finished = false;

  constructor(options: { dir: string; eventId: string; log: Logger }) {
    this.dir = options.dir;
    this.eventId = options.eventId;
    this.#log = options.log;
  }

  static async create(options: { dir: string; eventId: string; log: Logger }): Promise<EventRecorder> {
    await mkdir(path.join(options.dir, 'ladder'), { recursive: true });
    return new EventRecorder(options);
  }

  /** A publish began: its FLV (header, metadata, sequence headers, current GOP, then every tag) goes to a new file. */
  startSource(prelude: Buffer): (tag: Buffer) => void {
    this.endSource();
    if (this.#finished) return () => {};
    const name = `source-${this.#sources.length}.flv`;
    this.#sources.push(name);
    const stream = createWriteStream(path.join(this.dir, name));
    stream.on('error', (error) => this.#fail(error, name));
    stream.write(prelude);
    this.#track(this.#journal({ source: name }));
    this.#openSource = stream;
    return (tag) => {
      if (this.#openSource === stream && !stream.destroyed) stream.write(tag);
    };
  }

  /** The publisher left: its source file is closed. */
  endSource(): void {
    const stream = this.#openSource;
    if (!stream) return;
    this.#openSource = undefined;
    this.#track(new Promise<void>((resolve) => stream.end(() => resolve())));
  }

  /** A complete live segment of one rendition (StreamPackager's onSegment). */
  addSegment(rendition: Rendition, segment: Segment, init: InitSegment): void {
    if (this.#finished || this.#failed || !segment.data) return;
    let recorded = this.#renditions.get(rendition.name);
    if (!recorded) {
      recorded = { rendition, segments: [], inits: new Map(), codecs: '' };
      this.#renditions.set(rendition.name, recorded);
    }
    recorded.rendition = rendition;
    const folder = path.join(this.dir, 'ladder', rendition.name);
    let map = recorded.inits.get(segment.mapUri);
    if (map === undefined) {
      map = `init${recorded.inits.size}.mp4`;
      recorded.inits.set(segment.mapUri, map);
      // The programme's codecs name the replay's rendition (an ad's may differ in profile or level).
      const codecs = !segment.ad || recorded.codecs === '' ? init.tracks.filter((t) => t.kind !== 'other').map((t) => t.codec).join(',') : undefined;
      if (codecs !== undefined) recorded.codecs = codecs;
      const entry: JournalEntry = { init: { rendition, map, codecs } };
      const file = path.join(folder, map);
      this.#track(mkdir(folder, { recursive: true }).then(() => writeFile(file, init.data)).then(() => this.#journal(entry)));
    }
    const recordedSegment: RecordedSegment = {
      sequence: segment.mediaSequence,
      file: `s${segment.mediaSequence}.m4s`,
      durationMs: segment.durationMs,
      discontinuity: segment.discontinuity,
      map,
      programDateTime: segment.programDateTime,
      bytes: segment.data.length,
    };
    recorded.segments.push(recordedSegment);
    const data = segment.data;
    const entry: JournalEntry = { segment: { ...recordedSegment, rendition: rendition.name } };
    this.#track(mkdir(folder, { recursive: true }).then(() => writeFile(path.join(folder, recordedSegment.file), data)).then(() => this.#journal(entry)));
  }

  /**
   * The recording a node left behind when it died mid-event, from its journal: the files it names are complete (a
   * torn last line or a half-written file is left out). Then `finish()` as for any ended event.
   */
  static async recover(options: { dir: string; eventId: string; log: Logger }): Promise<EventRecorder> {
    const recorder = new EventRecorder(options);
    const text = await readFile(path.join(options.dir, JOURNAL), 'utf8').catch(() => '');
    const entries: JournalEntry[] = [];
    for (const line of text.split('\n')) {
      try {
        entries.push(JSON.parse(line) as JournalEntry);
      } catch {
        // The line being written when the node died.
      }
    }
    // Writes finish in any order: inits first, so that every segment finds its own.
    for (const entry of entries) if (!('segment' in entry)) recorder.#replay(entry);
    for (const entry of entries) if ('segment' in entry) recorder.#replay(entry);
    for (const recorded of recorder.#renditions.values()) recorded.segments.sort((a, b) => a.sequence - b.sequence);
    // A source is named when it opens; one the node never wrote to is left out.
    const sources = [];
    for (const name of recorder.#sources) {
      if ((await stat(path.join(options.dir, name)).catch(() => undefined))?.size) sources.push(name);
    }
    const order = (name: string): number => Number(/\d+/.exec(name)?.[0]);
    recorder.#sources.splice(0, Infinity, ...sources.sort((a, b) => order(a) - order(b)));
    return recorder;
  }

  /** Waits for every write, then writes the replay's playlists (with the event's ad breaks and news flashes). */
  async finish(cues: readonly Cue[] = []): Promise<RecordingResult> {
    this.endSource();
    this.#finished = true;
    while (this.#pending.size > 0) await Promise.all([...this.#pending]);
    if (this.#failed) throw new Error(`the recording of event ${this.eventId} lost data (disk error); see the log`);
    const replayFiles: string[] = [];
    const variants: string[] = [];
    const renditions: RecordingResult['renditions'] = [];
    let durationMs = 0;
    let startDate: number | undefined;
    let timeline: TimelineSpan[] = [];
    const ordered = [...this.#renditions.values()].sort((a, b) => b.rendition.height - a.rendition.height);
    for (const recorded of ordered) {
      if (recorded.segments.length === 0) continue;
      const { rendition } = recorded;
      const name = rendition.name;
      for (const map of recorded.inits.values()) replayFiles.push(`${name}/${map}`);
      for (const segment of recorded.segments) replayFiles.push(`${name}/${segment.file}`);
      const total = recorded.segments.reduce((sum, s) => sum + s.durationMs, 0);
      const bits = recorded.segments.reduce((sum, s) => sum + s.bytes * 8, 0);
      const peak = Math.max(...recorded.segments.map((s) => Math.round((s.bytes * 8 * 1000) / Math.max(1, s.durationMs))));
      const average = Math.round((bits * 1000) / Math.max(1, total));
      durationMs = Math.max(durationMs, total);
      const first = recorded.segments[0]!.programDateTime;
      startDate = startDate === undefined ? first : Math.min(startDate, first);
      if (timeline.length === 0) timeline = timelineOf(recorded.segments);
      await writeFile(path.join(this.dir, 'ladder', name, 'index.m3u8'), renderReplayPlaylist(recorded.segments, cues));
      replayFiles.push(`${name}/index.m3u8`);
      variants.push(
        `#EXT-X-STREAM-INF:BANDWIDTH=${peak},AVERAGE-BANDWIDTH=${average},CODECS="${recorded.codecs}",` +
          `RESOLUTION=${rendition.width}x${rendition.height},FRAME-RATE=${rendition.fps.toFixed(3)}`,
        `${name}/index.m3u8`,
      );
      renditions.push({ name, width: rendition.width, height: rendition.height, kbps: Math.round(average / 1000) });
    }
    if (variants.length > 0) {
      await writeFile(path.join(this.dir, 'ladder', 'index.m3u8'), `${['#EXTM3U', '#EXT-X-VERSION:7', '#EXT-X-INDEPENDENT-SEGMENTS', ...variants].join('\n')}\n`);
      replayFiles.push('index.m3u8');
    }
    return { dir: this.dir, replayFiles, sourceFiles: [...this.#sources], durationMs, renditions, startDate, timeline };
  }

  /** Removes the recording from local disk (once storage has it). */
  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  #journal(entry: JournalEntry): Promise<void> {
    return appendFile(path.join(this.dir, JOURNAL), `${JSON.stringify(entry)}\n`);
  }

  #replay(entry: JournalEntry): void {
    if ('source' in entry) {
      this.#sources.push(entry.source);
      return;
    }
    const name = 'init' in entry ? entry.init.rendition.name : entry.segment.rendition;
    let recorded = this.#renditions.get(name);
    if ('init' in entry) {
      recorded ??= { rendition: entry.init.rendition, segments: [], inits: new Map(), codecs: '' };
      this.#renditions.set(name, recorded);
      recorded.rendition = entry.init.rendition;
      recorded.inits.set(entry.init.map, entry.init.map);
      if (entry.init.codecs !== undefined) recorded.codecs = entry.init.codecs;
      return;
    }
    const { rendition: _name, ...segment } = entry.segment;
    // A segment is journaled after its init: one whose init never made it is not playable.
    if (recorded && [...recorded.inits.values()].includes(segment.map)) recorded.segments.push(segment);
  }

  #track(promise: Promise<unknown>): void {
    const tracked: Promise<void> = promise.then(() => {}, (error: unknown) => this.#fail(error, 'segment')).finally(() => this.#pending.delete(tracked));
    this.#pending.add(tracked);
  }

  #fail(error: unknown, what: string): void {
    if (!this.#failed) this.#log.error({ err: error, eventId: this.eventId, what }, 'recording write failed');
    this.#failed = true;
  }
}

/** The runs of a rendition's segments between discontinuities, on the wall clock and in the video. */
export function timelineOf(segments: readonly { durationMs: number; discontinuity: boolean; programDateTime: number }[]): TimelineSpan[] {
  const spans: TimelineSpan[] = [];
  let videoMs = 0;
  segments.forEach((segment, i) => {
    const last = spans[spans.length - 1];
    if (!last || (segment.discontinuity && i > 0)) spans.push({ wallMs: segment.programDateTime, videoMs, durationMs: segment.durationMs });
    else last.durationMs += segment.durationMs;
    videoMs += segment.durationMs;
  });
  return spans;
}

/** A VOD media playlist (rfc8216bis §4.4.3.5 PLAYLIST-TYPE VOD) over the recorded live segments. */
export function renderReplayPlaylist(segments: readonly { file: string; durationMs: number; discontinuity: boolean; map: string; programDateTime: number }[], cues: readonly Cue[] = []): string {
  const target = Math.max(1, ...segments.map((s) => Math.round(s.durationMs / 1000)));
  const lines = ['#EXTM3U', '#EXT-X-VERSION:7', `#EXT-X-TARGETDURATION:${target}`, '#EXT-X-PLAYLIST-TYPE:VOD', '#EXT-X-MEDIA-SEQUENCE:0', '#EXT-X-INDEPENDENT-SEGMENTS'];
  let map: string | undefined;
  segments.forEach((segment, i) => {
    if (segment.discontinuity && i > 0) lines.push('#EXT-X-DISCONTINUITY');
    if (segment.map !== map) {
      map = segment.map;
      lines.push(`#EXT-X-MAP:URI="${map}"`);
    }
    // Every segment dated when there are cues: their DATERANGEs are placed by date.
    if (i === 0 || segment.discontinuity || cues.length > 0) lines.push(`#EXT-X-PROGRAM-DATE-TIME:${new Date(segment.programDateTime).toISOString()}`);
    if (cues.length > 0) lines.push(...cueTagsBefore(cues, segment, segments[i + 1]?.programDateTime));
    lines.push(`#EXTINF:${(segment.durationMs / 1000).toFixed(3)},`, segment.file);
  });
  lines.push('#EXT-X-ENDLIST');
  return `${lines.join('\n')}\n`;
}
