import { createWriteStream, type WriteStream } from 'node:fs';
import { appendFile, mkdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { InitSegment } from '../lib/media/fmp4.js';
import type { Rendition } from '../live-transcoder/index.js';
import type { Segment } from '../ll-hls-packager/index.js';
import { cueTagsBefore, type Cue } from '../lib/media/cues.js';
import { CLOSED_CAPTIONS_ATTRIBUTE, CLOSED_CAPTIONS_MEDIA, hasCaptions } from '../lib/media/captions.js';
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
  /** It carries the publisher's CEA-608/708 captions (kept in the journal: a recovered replay declares them too). */
  captions?: true;
}

interface RecordedRendition {
  rendition: Rendition;
  /** The segments on disk and in the journal (a write that failed left its segment out). */
  segments: RecordedSegment[];
  /** init file name by the live playlist's map URI (one whose write failed is dropped, and written again). */
  inits: Map<string, string>;
  /** The init files on disk and in the journal: a segment plays only with its own. */
  written: Set<string>;
  /** Inits named so far (the next one's number). */
  initCount: number;
  codecs: string;
}

/** A write that failed because the disk is full (or the user's quota is): the recording waits for space. */
function isDiskFull(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/** The 32-bit timestamp of an FLV tag (24 bits, then the extension byte as the high 8). */
function tagTime(tag: Buffer, at = 0): number {
  return ((tag[at + 7]! << 24) | tag.readUIntBE(at + 4, 3)) >>> 0;
}

/**
 * For an FLV file begun mid-publish: rewrites `prelude` (header, then whole tags, the last GOP from its keyframe) in
 * place so that its keyframe is at 0, and returns the same shift for the tags that follow (copies: the session's
 * buffers are shared). Tags before the keyframe (headers, audio) are clamped at 0.
 */
function rebaseTags(prelude: Buffer): (tag: Buffer) => Buffer {
  const tags: number[] = [];
  for (let at = 13; at + 11 <= prelude.length; at += 11 + prelude.readUIntBE(at + 1, 3) + 4) tags.push(at);
  const keyframe = tags.find((at) => isKeyframeTag(prelude.subarray(at)));
  const base = keyframe === undefined ? 0 : tagTime(prelude, keyframe);
  const set = (buffer: Buffer, at: number): void => {
    const time = Math.max(0, tagTime(buffer, at) - base);
    buffer.writeUIntBE(time & 0xffffff, at + 4, 3);
    buffer[at + 7] = (time >>> 24) & 0xff;
  };
  for (const at of tags) set(prelude, at);
  return (tag) => {
    const copy = Buffer.from(tag);
    set(copy, 0);
    return copy;
  };
}

/** An FLV video tag carrying an H.264 keyframe (not a sequence header): where a new source file can begin. */
function isKeyframeTag(tag: Buffer): boolean {
  return tag.length > 12 && tag[0] === 9 && tag[11]! >> 4 === 1 && tag[12] === 1;
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

/** A source file that failed (disk full) is replaced by a new one at most this often. */
const SOURCE_RETRY_MS = 1000;

/**
 * The recording of one live event, on local disk while it lasts: every publish's FLV as received (copied, not
 * re-encoded: the VOD pipeline's source) and every complete segment of the live ladder with its inits (the instant
 * replay: the same bytes viewers got, no re-encode). Reconnects of the same event add a source file and a
 * discontinuity. `finish()` writes the replay's VOD playlists.
 *
 * A journal beside the files names each one once it is complete, so that a node that died mid-event finds its
 * recording at the next start (`EventRecorder.recover`) and archives it like any ended event.
 *
 * A write that fails (the disk is full) never stops the event: the segment is left out of the recording (the replay
 * has a discontinuity there), `diskFull` says so, and the next segment is tried again; once one is written the
 * recording goes on. The source goes on in a new file (tried once a second) from the publisher's last keyframe. What
 * was recorded before is kept.
 */
export class EventRecorder {
  readonly eventId: string;
  readonly dir: string;
  readonly #log: Logger;
  readonly #renditions = new Map<string, RecordedRendition>();
  readonly #sources: string[] = [];
  readonly #pending = new Set<Promise<void>>();
  #openSource: WriteStream | undefined;
  /** Source files named so far (the next one's number; names are never reused within a run). */
  #sourceCount = 0;
  /** Writes fail (the disk is full): segments are left out until one is written again. */
  #diskFull = false;
  /** A journal line may have been cut off by a failed write: the next one starts on a new line. */
  #journalTorn = false;
  /** Segments left out of the recording because their write failed. */
  #lost = 0;
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

  /** True while writes fail (the disk is full): the event goes on live, its recording waits for space. */
  get diskFull(): boolean {
    return this.#diskFull;
  }

  /**
   * A publish began: its FLV (header, metadata, sequence headers, current GOP, then every tag) goes to a new file.
   * `prelude` is read again when a file that failed (the disk was full) is replaced by a new one at a keyframe.
   */
  startSource(prelude: Buffer | (() => Buffer)): (tag: Buffer) => void {
    this.endSource();
    if (this.#finished) return () => {};
    const readPrelude = typeof prelude === 'function' ? prelude : () => prelude;
    let { stream, write } = this.#openSourceFile(readPrelude());
    let nextTry = 0;
    return (tag) => {
      if (this.#openSource !== stream) return;
      if (!stream.destroyed && !stream.errored) {
        write(tag);
        return;
      }
      // The file failed (disk full): a new one is tried at most once a second, from the session's prelude (its
      // current GOP, which ends with this very tag); one that fails before its prelude is on disk is removed.
      const now = Date.now();
      if (this.#finished || now < nextTry) return;
      nextTry = now + SOURCE_RETRY_MS;
      this.#openSource = undefined;
      ({ stream, write } = this.#openSourceFile(readPrelude(), true));
    };
  }

  /**
   * A new source file, starting with `prelude`. Every chunk written is whole FLV tags; if a write fails (the disk is
   * full) the file is cut back to the end of the last chunk on disk, so that it ends on a whole tag (a demuxer reads
   * its duration from the last tag), or emptied (and then left out) when not even the prelude made it.
   */
  #openSourceFile(prelude: Buffer, rebase = false): { stream: WriteStream; write: (chunk: Buffer) => void } {
    // A file begun mid-publish starts its clock at 0, like a publish's first file: a demuxer takes the last tag's
    // time for the file's duration, and the archive plays the files back to back.
    const shift = rebase ? rebaseTags(prelude) : undefined;
    const name = `source-${this.#sourceCount++}.flv`;
    this.#sources.push(name);
    const file = path.join(this.dir, name);
    const stream = createWriteStream(file);
    let queued = 0;
    let durable = 0;
    const put = (chunk: Buffer): void => {
      const end = (queued += chunk.length);
      stream.write(chunk, (error) => {
        if (!error) durable = end;
      });
    };
    stream.on('error', (error) => {
      this.#writeFailed(error, name);
      const keep = durable >= prelude.length ? durable : 0;
      if (keep === 0) this.#sources.splice(this.#sources.indexOf(name), 1);
      this.#track(new Promise<void>((resolve) => {
        if (stream.closed) resolve();
        else stream.once('close', () => resolve());
      }).then(() => (keep > 0 ? truncate(file, keep) : rm(file, { force: true }))));
    });
    const write = (tag: Buffer): void => put(shift ? shift(tag) : tag);
    put(prelude);
    this.#track(this.#journal({ source: name }));
    this.#openSource = stream;
    return { stream, write };
  }

  /** The publisher left: its source file is closed. */
  endSource(): void {
    const stream = this.#openSource;
    if (!stream) return;
    this.#openSource = undefined;
    // A file that failed (disk full) has nothing left to flush.
    if (stream.destroyed || stream.errored) return;
    this.#track(new Promise<void>((resolve) => stream.end(() => resolve())));
  }

  /** A complete live segment of one rendition (StreamPackager's onSegment). */
  addSegment(rendition: Rendition, segment: Segment, init: InitSegment): void {
    if (this.#finished || !segment.data) return;
    let recorded = this.#renditions.get(rendition.name);
    if (!recorded) {
      recorded = { rendition, segments: [], inits: new Map(), written: new Set(), initCount: 0, codecs: '' };
      this.#renditions.set(rendition.name, recorded);
    }
    const current = recorded;
    current.rendition = rendition;
    const folder = path.join(this.dir, 'ladder', rendition.name);
    let map = current.inits.get(segment.mapUri);
    if (map === undefined) {
      const initName = `init${current.initCount++}.mp4`;
      map = initName;
      current.inits.set(segment.mapUri, initName);
      // The programme's codecs name the replay's rendition (an ad's may differ in profile or level).
      const codecs = !segment.ad || current.codecs === '' ? init.tracks.filter((t) => t.kind !== 'other').map((t) => t.codec).join(',') : undefined;
      if (codecs !== undefined) current.codecs = codecs;
      const entry: JournalEntry = { init: { rendition, map, codecs } };
      const file = path.join(folder, map);
      const mapUri = segment.mapUri;
      this.#track(mkdir(folder, { recursive: true }).then(() => writeFile(file, init.data)).then(() => this.#journal(entry)).then(
        () => void current.written.add(initName),
        (error: unknown) => {
          // Written again with the next segment that needs it.
          if (current.inits.get(mapUri) === initName) current.inits.delete(mapUri);
          this.#writeFailed(error, `${rendition.name}/${initName}`);
        },
      ));
    }
    const recordedSegment: RecordedSegment = {
      sequence: segment.mediaSequence,
      file: `s${segment.mediaSequence}.m4s`,
      durationMs: segment.durationMs,
      discontinuity: segment.discontinuity,
      map,
      programDateTime: segment.programDateTime,
      bytes: segment.data.length,
      ...(!segment.ad && hasCaptions(segment.data) ? { captions: true as const } : {}),
    };
    const data = segment.data;
    const entry: JournalEntry = { segment: { ...recordedSegment, rendition: rendition.name } };
    this.#track(mkdir(folder, { recursive: true }).then(() => writeFile(path.join(folder, recordedSegment.file), data)).then(() => this.#journal(entry)).then(
      () => {
        current.segments.push(recordedSegment);
        this.#wrote();
      },
      (error: unknown) => {
        this.#lost++;
        this.#writeFailed(error, `${rendition.name}/${recordedSegment.file}`);
      },
    ));
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
    recorder.#sourceCount = Math.max(0, ...recorder.#sources.map((name) => order(name) + 1));
    return recorder;
  }

  /** Waits for every write, then writes the replay's playlists (with the event's ad breaks and news flashes). */
  async finish(cues: readonly Cue[] = []): Promise<RecordingResult> {
    this.endSource();
    this.#finished = true;
    while (this.#pending.size > 0) await Promise.all([...this.#pending]);
    if (this.#lost > 0) this.#log.warn({ eventId: this.eventId, lost: this.#lost }, 'segments the disk had no room for are missing from the replay (a discontinuity marks each gap)');
    const replayFiles: string[] = [];
    const variants: string[] = [];
    const renditions: RecordingResult['renditions'] = [];
    let durationMs = 0;
    let startDate: number | undefined;
    let timeline: TimelineSpan[] = [];
    const ordered = [...this.#renditions.values()].sort((a, b) => b.rendition.height - a.rendition.height);
    // The live playlists declared the publisher's captions once they came; so does the replay (docs/api.md).
    const captions = ordered.some((recorded) => recorded.segments.some((s) => s.captions));
    for (const recorded of ordered) {
      // Only segments whose init is on disk, in order; a gap (segments the disk had no room for) is a discontinuity.
      recorded.segments = recorded.segments.filter((s) => recorded.written.has(s.map)).sort((a, b) => a.sequence - b.sequence)
        .map((s, i, all) => (i > 0 && !s.discontinuity && s.sequence !== all[i - 1]!.sequence + 1 ? { ...s, discontinuity: true } : s));
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
          `RESOLUTION=${rendition.width}x${rendition.height},FRAME-RATE=${rendition.fps.toFixed(3)}${captions ? CLOSED_CAPTIONS_ATTRIBUTE : ''}`,
        `${name}/index.m3u8`,
      );
      renditions.push({ name, width: rendition.width, height: rendition.height, kbps: Math.round(average / 1000) });
    }
    if (variants.length > 0) {
      await writeFile(path.join(this.dir, 'ladder', 'index.m3u8'), `${['#EXTM3U', '#EXT-X-VERSION:7', '#EXT-X-INDEPENDENT-SEGMENTS', ...(captions ? [CLOSED_CAPTIONS_MEDIA] : []), ...variants].join('\n')}\n`);
      replayFiles.push('index.m3u8');
    }
    return { dir: this.dir, replayFiles, sourceFiles: [...this.#sources], durationMs, renditions, startDate, timeline };
  }

  /** Removes the recording from local disk (once storage has it). */
  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  #journal(entry: JournalEntry): Promise<void> {
    // After a failed append the last line may be cut: a fresh line keeps this one readable (recover skips the torn one).
    const line = `${this.#journalTorn ? '\n' : ''}${JSON.stringify(entry)}\n`;
    return appendFile(path.join(this.dir, JOURNAL), line).then(
      () => { this.#journalTorn = false; },
      (error: unknown) => {
        this.#journalTorn = true;
        throw error;
      },
    );
  }

  #replay(entry: JournalEntry): void {
    if ('source' in entry) {
      // A name can come twice: a file that failed before its prelude was on disk was removed and its name reused.
      if (!this.#sources.includes(entry.source)) this.#sources.push(entry.source);
      return;
    }
    const name = 'init' in entry ? entry.init.rendition.name : entry.segment.rendition;
    let recorded = this.#renditions.get(name);
    if ('init' in entry) {
      recorded ??= { rendition: entry.init.rendition, segments: [], inits: new Map(), written: new Set(), initCount: 0, codecs: '' };
      this.#renditions.set(name, recorded);
      recorded.rendition = entry.init.rendition;
      recorded.inits.set(entry.init.map, entry.init.map);
      recorded.written.add(entry.init.map);
      if (entry.init.codecs !== undefined) recorded.codecs = entry.init.codecs;
      return;
    }
    const { rendition: _name, ...segment } = entry.segment;
    // A segment is journaled after its init: one whose init never made it is not playable.
    if (recorded && [...recorded.inits.values()].includes(segment.map)) recorded.segments.push(segment);
  }

  #track(promise: Promise<unknown>): void {
    const tracked: Promise<void> = promise.then(() => {}, (error: unknown) => this.#writeFailed(error, 'journal')).finally(() => this.#pending.delete(tracked));
    this.#pending.add(tracked);
  }

  /** A write failed: logged once per outage; the recording waits (the next segment is tried again). */
  #writeFailed(error: unknown, what: string): void {
    if (this.#diskFull) return;
    this.#diskFull = true;
    const code = (error as NodeJS.ErrnoException | undefined)?.code;
    this.#log.error({ err: error, code, eventId: this.eventId, what }, isDiskFull(error)
      ? 'the recording waits: the disk is full; segments are left out until space is freed (live playback goes on)'
      : 'the recording waits: a write failed; segments are left out until one can be written (live playback goes on)');
  }

  /** A segment was written: after an outage, the recording goes on. */
  #wrote(): void {
    if (!this.#diskFull) return;
    this.#diskFull = false;
    this.#log.warn({ eventId: this.eventId, lost: this.#lost }, 'the recording goes on: segments can be written again');
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
