import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { InitSegment, Rendition } from '../live-transcoder/index.js';
import type { Segment } from '../ll-hls-packager/index.js';
import { cueTagsBefore, type Cue } from '../ll-hls-packager/cues.js';
import type { Logger } from '../lib/log.js';

interface RecordedSegment {
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
}

/**
 * The recording of one live event, on local disk while it lasts: every publish's FLV as received (copied, not
 * re-encoded: the VOD pipeline's source) and every complete segment of the live ladder with its inits (the instant
 * replay: the same bytes viewers got, no re-encode). Reconnects of the same event add a source file and a
 * discontinuity. `finish()` writes the replay's VOD playlists.
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
      if (!segment.ad || recorded.codecs === '') recorded.codecs = init.tracks.filter((t) => t.kind !== 'other').map((t) => t.codec).join(',');
      const file = path.join(folder, map);
      this.#track(mkdir(folder, { recursive: true }).then(() => writeFile(file, init.data)));
    }
    const file = `s${segment.mediaSequence}.m4s`;
    recorded.segments.push({
      file,
      durationMs: segment.durationMs,
      discontinuity: segment.discontinuity,
      map,
      programDateTime: segment.programDateTime,
      bytes: segment.data.length,
    });
    const data = segment.data;
    this.#track(mkdir(folder, { recursive: true }).then(() => writeFile(path.join(folder, file), data)));
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
    return { dir: this.dir, replayFiles, sourceFiles: [...this.#sources], durationMs, renditions, startDate };
  }

  /** Removes the recording from local disk (once storage has it). */
  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
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
