import { TypedEmitter } from '../emitter.js';

/**
 * Splits the fragmented MP4 that FFmpeg writes to a pipe (`-movflags empty_moov+default_base_moof+frag_keyframe+cmaf`)
 * into one init segment and a stream of CMAF fragments, and reads from them what the packager needs: codecs,
 * timescales, fragment durations and whether a fragment can start playback.
 *
 * Box layouts cite ISO/IEC 14496-12 (ISOBMFF), ISO/IEC 14496-15 (AVC file format), ISO/IEC 14496-1 (ES descriptors),
 * ISO/IEC 14496-3 (AudioSpecificConfig) and ISO/IEC 23000-19 (CMAF).
 */

/** A top-level box larger than this means the byte stream is not the fMP4 we expect (a 200 ms fragment is ~100 KiB). */
export const MAX_BOX_SIZE = 64 * 1024 * 1024;

/** One track of an init segment. */
export interface TrackInfo {
  /** `track_ID` from `tkhd`; fragments refer to the track by it. */
  trackId: number;
  /** From the `hdlr` handler type: `vide`, `soun`, anything else. */
  kind: 'video' | 'audio' | 'other';
  /** Ticks per second of the track's media timeline (`mdhd`); fragment durations are in these ticks. */
  timescale: number;
  /**
   * RFC 6381 codec string: `avc1.PPCCLL` from `avcC`, `mp4a.40.N` from `esds`, `opus`, `flac`, `ac-3`, `ec-3`.
   * Any other sample entry is named by its four-character code.
   */
  codec: string;
  /** Presentation width in pixels (`tkhd`, else the visual sample entry); video only. */
  width?: number;
  /** Presentation height in pixels (`tkhd`, else the visual sample entry); video only. */
  height?: number;
  /** Sampling rate in Hz from the audio sample entry; audio only. */
  sampleRate?: number;
  /** Channel count: from the AudioSpecificConfig for AAC, `dOps` for Opus, else the audio sample entry; audio only. */
  channels?: number;
}

/** The `ftyp` + `moov` that a player needs before any fragment. */
export interface InitSegment {
  /** The `ftyp` and `moov` boxes, byte for byte. */
  data: Buffer;
  tracks: TrackInfo[];
}

/** What one fragment holds of one track (one `traf`). */
export interface FragmentTrack {
  trackId: number;
  /**
   * `tfdt` baseMediaDecodeTime in the track's timescale: a number while it is a safe integer, else a bigint.
   * 0 when the fragment has no `tfdt` (CMAF requires one, ISO/IEC 23000-19 §7.5.16).
   */
  baseMediaDecodeTime: bigint | number;
  /** Sum of the sample durations, in the track's timescale. */
  duration: number;
  sampleCount: number;
}

/** A CMAF fragment: optional `styp`/`prft`/`emsg`, then `moof` and its `mdat`. */
export interface Fragment {
  /** Every box of the fragment, byte for byte, as one buffer. */
  data: Buffer;
  /** `mfhd` sequence_number. */
  sequenceNumber: number;
  /**
   * Duration of the video track's samples in milliseconds (0 when the fragment has none); in a stream without video,
   * of the first track's.
   */
  durationMs: number;
  tracks: FragmentTrack[];
  /**
   * True when the fragment's first video sample is a sync sample (false when it has none); in a stream without
   * video, its first track's first sample.
   */
  independent: boolean;
}

/** The fMP4 bytes cannot be framed or parsed. */
export class Fmp4Error extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Fmp4Error';
  }
}

export interface Fmp4SplitterEvents {
  init: [InitSegment];
  fragment: [Fragment];
  error: [Error];
}

/**
 * Turns a byte stream cut anywhere into init segments and fragments. Pending chunks are kept as a list and joined only
 * once a whole box is in, so every byte is copied once however small the chunks are.
 *
 * After a framing error (a box size that cannot be right) the buffered bytes are dropped and the stream is scanned for
 * the next `ftyp`, since nothing before a new init segment can be trusted. `reset()` starts afresh without scanning:
 * the next byte pushed must be the start of a new init segment.
 *
 * Pushed buffers are kept by reference until their boxes are emitted; do not reuse them.
 */
export class Fmp4Splitter extends TypedEmitter<Fmp4SplitterEvents> {
  #chunks: Buffer[] = [];
  #buffered = 0;
  /** Size and type of the box at the head of `#chunks`, once its header is in. */
  #box: { size: number; type: string } | undefined;
  #ftyp: Buffer | undefined;
  #init: InitSegment | undefined;
  /** Boxes of the fragment being gathered, from its first box (`styp`/`prft`/`emsg`/`moof`) on. */
  #fragment: Buffer[] | undefined;
  #fragmentLength = 0;
  #fragmentHasMoof = false;
  /** Looking for the next `ftyp` after a framing error; `#carry` holds the last bytes of the previous chunk. */
  #resyncing = false;
  #carry: Buffer = Buffer.alloc(0);
  /** Bumped by `reset()`, so that work begun before a reset made by a listener is not carried on after it. */
  #generation = 0;

  /** The latest init segment, or undefined before the first one (and after `reset()`). */
  get init(): InitSegment | undefined {
    return this.#init;
  }

  /** Adds bytes of the stream; emits `init` and `fragment` as boxes complete. */
  push(chunk: Buffer): void {
    let input: Buffer | undefined = chunk;
    while (input !== undefined && input.length > 0) {
      if (this.#resyncing) {
        input = this.#resync(input);
        if (input === undefined) return;
      }
      this.#chunks.push(input);
      this.#buffered += input.length;
      input = this.#drain();
    }
  }

  /** Drops every buffered byte and the current init segment: the next bytes pushed start a new init segment. */
  reset(): void {
    this.#chunks = [];
    this.#buffered = 0;
    this.#box = undefined;
    this.#ftyp = undefined;
    this.#init = undefined;
    this.#dropFragment();
    this.#resyncing = false;
    this.#carry = Buffer.alloc(0);
    this.#generation += 1;
  }

  /** Handles every whole box buffered; returns the bytes left after a framing error, to be scanned for a new `ftyp`. */
  #drain(): Buffer | undefined {
    const generation = this.#generation;
    while (this.#generation === generation) {
      if (this.#box === undefined) {
        if (this.#buffered < 8) return undefined;
        const header = this.#peek(Math.min(16, this.#buffered));
        const size32 = header.readUInt32BE(0);
        const type = header.toString('latin1', 4, 8);
        let size: number;
        let headerSize = 8;
        if (size32 === 1) {
          // ISO/IEC 14496-12 §4.2: size 1 means a 64-bit largesize follows the type.
          if (header.length < 16) return undefined;
          size = Number(header.readBigUInt64BE(8));
          headerSize = 16;
        } else {
          size = size32;
        }
        if (size32 === 0) return this.#fail(`box "${printable(type)}" has size 0 (to end of file), which a live stream cannot have`);
        if (size < headerSize) return this.#fail(`box "${printable(type)}" has size ${size}, smaller than its header`);
        if (size > MAX_BOX_SIZE) return this.#fail(`box "${printable(type)}" has size ${size}, over the ${MAX_BOX_SIZE} byte limit`);
        this.#box = { size, type };
      }
      if (this.#buffered < this.#box.size) return undefined;
      const { size, type } = this.#box;
      this.#box = undefined;
      this.#onBox(type, this.#take(size), size);
    }
    return undefined;
  }

  #onBox(type: string, parts: Buffer[], size: number): void {
    switch (type) {
      case 'ftyp':
        if (this.#fragment !== undefined) this.#dropFragment(new Fmp4Error('ftyp inside a fragment: the fragment is dropped'));
        this.#ftyp = Buffer.concat(parts, size);
        return;
      case 'moov': {
        if (this.#fragment !== undefined) this.#dropFragment(new Fmp4Error('moov inside a fragment: the fragment is dropped'));
        const ftyp = this.#ftyp;
        this.#ftyp = undefined;
        if (ftyp === undefined) {
          this.safeEmit('error', new Fmp4Error('moov without a preceding ftyp: no init segment'));
          return;
        }
        let init: InitSegment;
        try {
          init = parseInit(Buffer.concat([ftyp, ...parts], ftyp.length + size));
        } catch (error) {
          this.safeEmit('error', error as Error);
          return;
        }
        this.#init = init;
        this.safeEmit('init', init);
        return;
      }
      // ISO/IEC 23000-19 §7.3.2.3: a CMAF chunk may open with styp, prft and emsg boxes before its moof.
      case 'styp':
      case 'prft':
      case 'emsg':
        if (this.#fragmentHasMoof) this.#dropFragment(new Fmp4Error(`moof without an mdat before ${type}: the fragment is dropped`));
        this.#appendToFragment(parts, size);
        return;
      case 'moof':
        if (this.#fragmentHasMoof) this.#dropFragment(new Fmp4Error('moof without an mdat before the next moof: the fragment is dropped'));
        this.#appendToFragment(parts, size);
        this.#fragmentHasMoof = true;
        return;
      case 'mdat':
        if (!this.#fragmentHasMoof) {
          this.#dropFragment();
          this.safeEmit('error', new Fmp4Error('mdat without a moof: dropped'));
          return;
        }
        this.#appendToFragment(parts, size);
        this.#completeFragment();
        return;
      default:
        // Boxes between fragments (free, skip, sidx, mfra) carry nothing the packager needs.
        if (this.#fragment !== undefined) this.#appendToFragment(parts, size);
    }
  }

  #appendToFragment(parts: Buffer[], size: number): void {
    this.#fragment ??= [];
    this.#fragment.push(...parts);
    this.#fragmentLength += size;
  }

  #completeFragment(): void {
    const data = Buffer.concat(this.#fragment ?? [], this.#fragmentLength);
    this.#dropFragment();
    const init = this.#init;
    if (init === undefined) {
      this.safeEmit('error', new Fmp4Error('fragment before any init segment: dropped'));
      return;
    }
    let fragment: Fragment;
    try {
      fragment = { data, ...parseFragment(data, init) };
    } catch (error) {
      this.safeEmit('error', error as Error);
      return;
    }
    this.safeEmit('fragment', fragment);
  }

  #dropFragment(error?: Error): void {
    this.#fragment = undefined;
    this.#fragmentLength = 0;
    this.#fragmentHasMoof = false;
    if (error !== undefined) this.safeEmit('error', error);
  }

  /** Resets, reports, and hands back what followed the bad box header so that it is scanned for a new `ftyp`. */
  #fail(message: string): Buffer | undefined {
    // Skip the bad header itself: if it was an ftyp, the scan must not find it again.
    this.#take(8);
    const rest = this.#buffered > 0 ? Buffer.concat(this.#chunks, this.#buffered) : undefined;
    this.reset();
    this.#resyncing = true;
    const generation = this.#generation;
    this.safeEmit('error', new Fmp4Error(message));
    return this.#generation === generation ? rest : undefined;
  }

  /** Returns the bytes from the next `ftyp` box header on, or undefined when the chunk has none. */
  #resync(chunk: Buffer): Buffer | undefined {
    const data = this.#carry.length > 0 ? Buffer.concat([this.#carry, chunk]) : chunk;
    // The four bytes of the size come before the type, so a match below offset 4 cannot be used.
    const at = data.indexOf('ftyp', 4, 'latin1');
    if (at < 0) {
      // An 8-byte header split across chunks leaves at most 7 of its bytes in this one.
      this.#carry = Buffer.from(data.subarray(Math.max(0, data.length - 7)));
      return undefined;
    }
    this.#carry = Buffer.alloc(0);
    this.#resyncing = false;
    return data.subarray(at - 4);
  }

  /** Copies the first `length` (≤ 16) buffered bytes, across chunk boundaries. */
  #peek(length: number): Buffer {
    const out = Buffer.alloc(length);
    let filled = 0;
    for (const chunk of this.#chunks) {
      filled += chunk.copy(out, filled, 0, Math.min(chunk.length, length - filled));
      if (filled === length) break;
    }
    return out;
  }

  /** Removes the first `length` buffered bytes and returns them as slices of the pushed chunks, without copying. */
  #take(length: number): Buffer[] {
    const parts: Buffer[] = [];
    let remaining = length;
    let whole = 0;
    while (remaining > 0) {
      const chunk = this.#chunks[whole];
      if (chunk === undefined) break;
      if (chunk.length <= remaining) {
        parts.push(chunk);
        remaining -= chunk.length;
        whole += 1;
      } else {
        parts.push(chunk.subarray(0, remaining));
        this.#chunks[whole] = chunk.subarray(remaining);
        remaining = 0;
      }
    }
    this.#chunks.splice(0, whole);
    this.#buffered -= length - remaining;
    return parts;
  }
}

/** Parses `ftyp` + `moov` into its tracks. Throws `Fmp4Error` when there is no `moov` or a box is malformed. */
export function parseInit(data: Buffer): InitSegment {
  const moov = findChild(data, topLevel(data), 'moov');
  if (moov === undefined) throw new Fmp4Error('init segment has no moov');
  const tracks = childrenOfType(data, moov, 'trak').map((trak) => parseTrak(data, trak));
  const init: InitSegment = { data, tracks };
  trackExtendsCache.set(init, parseTrackExtends(data, moov));
  return init;
}

/**
 * Parses the `moof` of a fragment (`data` may also hold `styp`, `prft`, `mdat`...). Needs the init segment for the
 * track timescales and the `trex` defaults. Throws `Fmp4Error` when there is no `moof` or a box is malformed.
 */
export function parseFragment(data: Buffer, init: InitSegment): Omit<Fragment, 'data'> {
  const moof = findChild(data, topLevel(data), 'moof');
  if (moof === undefined) throw new Fmp4Error('fragment has no moof');
  const mfhd = findChild(data, moof, 'mfhd');
  if (mfhd === undefined) throw new Fmp4Error('moof has no mfhd');
  const sequenceNumber = new BoxReader(data, mfhd).skip(4).u32();

  const trackExtends = trackExtendsOf(init);
  const runs = new Map<number, FragmentTrack & { firstSampleFlags: number | undefined }>();
  for (const traf of childrenOfType(data, moof, 'traf')) {
    const tfhdBox = findChild(data, traf, 'tfhd');
    if (tfhdBox === undefined) throw new Fmp4Error('traf has no tfhd');
    const tfhd = parseTfhd(data, tfhdBox, trackExtends);
    let run = runs.get(tfhd.trackId);
    if (run === undefined) {
      const tfdt = findChild(data, traf, 'tfdt');
      run = {
        trackId: tfhd.trackId,
        baseMediaDecodeTime: tfdt === undefined ? 0 : parseTfdt(data, tfdt),
        duration: 0,
        sampleCount: 0,
        firstSampleFlags: undefined,
      };
      runs.set(tfhd.trackId, run);
    }
    for (const trun of childrenOfType(data, traf, 'trun')) addTrun(data, trun, tfhd, run);
  }

  const tracks = [...runs.values()];
  const videoTrack = init.tracks.find((track) => track.kind === 'video');
  // A fragment of a stream with video that holds no video samples (FFmpeg flushes trailing audio alone) has no
  // duration and cannot start playback: the audio would play over a missing picture.
  const reference = videoTrack !== undefined ? runs.get(videoTrack.trackId) : tracks[0];
  let durationMs = 0;
  let independent = false;
  if (reference !== undefined) {
    const track = init.tracks.find((candidate) => candidate.trackId === reference.trackId);
    if (track === undefined) throw new Fmp4Error(`fragment refers to track ${reference.trackId}, not in the init segment`);
    durationMs = track.timescale > 0 ? (reference.duration * 1000) / track.timescale : 0;
    // ISO/IEC 14496-12 §8.8.3.1: sample_is_non_sync_sample is bit 16 of the sample flags.
    independent = reference.firstSampleFlags !== undefined && (reference.firstSampleFlags & SAMPLE_IS_NON_SYNC) === 0;
  }
  return {
    sequenceNumber,
    durationMs,
    tracks: tracks.map(({ trackId, baseMediaDecodeTime, duration, sampleCount }) => ({
      trackId,
      baseMediaDecodeTime,
      duration,
      sampleCount,
    })),
    independent,
  };
}

const SAMPLE_IS_NON_SYNC = 0x10000;

/** Per-track defaults from `mvex/trex` (ISO/IEC 14496-12 §8.8.3), used when `tfhd` and `trun` leave a field out. */
interface TrackExtends {
  defaultSampleDuration: number;
  defaultSampleFlags: number;
}

const trackExtendsCache = new WeakMap<InitSegment, Map<number, TrackExtends>>();

/** The `trex` defaults of an init segment, parsed once (an init built by hand is parsed on first use). */
function trackExtendsOf(init: InitSegment): Map<number, TrackExtends> {
  let trackExtends = trackExtendsCache.get(init);
  if (trackExtends === undefined) {
    const moov = findChild(init.data, topLevel(init.data), 'moov');
    trackExtends = moov === undefined ? new Map() : parseTrackExtends(init.data, moov);
    trackExtendsCache.set(init, trackExtends);
  }
  return trackExtends;
}

function parseTrackExtends(data: Buffer, moov: Box): Map<number, TrackExtends> {
  const trackExtends = new Map<number, TrackExtends>();
  const mvex = findChild(data, moov, 'mvex');
  if (mvex === undefined) return trackExtends;
  for (const trex of childrenOfType(data, mvex, 'trex')) {
    const reader = new BoxReader(data, trex).skip(4);
    const trackId = reader.u32();
    reader.skip(4); // default_sample_description_index
    const defaultSampleDuration = reader.u32();
    reader.skip(4); // default_sample_size
    trackExtends.set(trackId, { defaultSampleDuration, defaultSampleFlags: reader.u32() });
  }
  return trackExtends;
}

interface TrackFragmentHeader {
  trackId: number;
  defaultSampleDuration: number;
  defaultSampleFlags: number;
}

/** ISO/IEC 14496-12 §8.8.7: optional fields present by tf_flags; absent defaults fall back to `trex`. */
function parseTfhd(data: Buffer, box: Box, trackExtends: Map<number, TrackExtends>): TrackFragmentHeader {
  const reader = new BoxReader(data, box);
  const flags = reader.u32() & 0xffffff;
  const trackId = reader.u32();
  const defaults = trackExtends.get(trackId);
  if (flags & 0x000001) reader.skip(8); // base_data_offset
  if (flags & 0x000002) reader.skip(4); // sample_description_index
  const defaultSampleDuration = flags & 0x000008 ? reader.u32() : (defaults?.defaultSampleDuration ?? 0);
  if (flags & 0x000010) reader.skip(4); // default_sample_size
  const defaultSampleFlags = flags & 0x000020 ? reader.u32() : (defaults?.defaultSampleFlags ?? 0);
  return { trackId, defaultSampleDuration, defaultSampleFlags };
}

/** ISO/IEC 14496-12 §8.8.12: version 1 carries a 64-bit baseMediaDecodeTime. */
function parseTfdt(data: Buffer, box: Box): bigint | number {
  const reader = new BoxReader(data, box);
  const version = reader.u8();
  reader.skip(3);
  if (version !== 1) return reader.u32();
  const time = reader.u64();
  return time <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(time) : time;
}

/** ISO/IEC 14496-12 §8.8.8: per-sample fields present by tr_flags, in the order duration, size, flags, cto. */
function addTrun(
  data: Buffer,
  box: Box,
  tfhd: TrackFragmentHeader,
  run: { duration: number; sampleCount: number; firstSampleFlags: number | undefined },
): void {
  const reader = new BoxReader(data, box);
  const flags = reader.u32() & 0xffffff;
  const sampleCount = reader.u32();
  if (flags & 0x000001) reader.skip(4); // data_offset
  const firstSampleFlags = flags & 0x000004 ? reader.u32() : undefined;
  const hasDuration = (flags & 0x000100) !== 0;
  const hasSize = (flags & 0x000200) !== 0;
  const hasFlags = (flags & 0x000400) !== 0;
  const hasCompositionOffset = (flags & 0x000800) !== 0;
  const entrySize = 4 * (Number(hasDuration) + Number(hasSize) + Number(hasFlags) + Number(hasCompositionOffset));
  reader.need(entrySize * sampleCount);
  for (let i = 0; i < sampleCount; i += 1) {
    run.duration += hasDuration ? reader.u32() : tfhd.defaultSampleDuration;
    if (hasSize) reader.skip(4);
    let sampleFlags = hasFlags ? reader.u32() : tfhd.defaultSampleFlags;
    if (hasCompositionOffset) reader.skip(4);
    if (i === 0 && firstSampleFlags !== undefined) sampleFlags = firstSampleFlags;
    if (run.sampleCount === 0 && i === 0) run.firstSampleFlags = sampleFlags;
  }
  run.sampleCount += sampleCount;
}

function parseTrak(data: Buffer, trak: Box): TrackInfo {
  const tkhd = findChild(data, trak, 'tkhd');
  const mdia = findChild(data, trak, 'mdia');
  if (tkhd === undefined || mdia === undefined) throw new Fmp4Error('trak has no tkhd or mdia');
  const header = parseTkhd(data, tkhd);
  const mdhd = findChild(data, mdia, 'mdhd');
  const hdlr = findChild(data, mdia, 'hdlr');
  if (mdhd === undefined || hdlr === undefined) throw new Fmp4Error(`track ${header.trackId} has no mdhd or hdlr`);

  // ISO/IEC 14496-12 §8.4.2: timescale follows the creation and modification times, 64-bit in version 1.
  const mdhdReader = new BoxReader(data, mdhd);
  const timescale = mdhdReader.skip(mdhdReader.u8() === 1 ? 3 + 16 : 3 + 8).u32();
  // §8.4.3: version/flags, pre_defined, then handler_type.
  const handlerType = new BoxReader(data, hdlr).skip(8).fourCc();
  const kind = handlerType === 'vide' ? 'video' : handlerType === 'soun' ? 'audio' : 'other';

  const track: TrackInfo = { trackId: header.trackId, kind, timescale, codec: '' };
  const sampleEntry = findSampleEntry(data, mdia);
  if (sampleEntry === undefined) throw new Fmp4Error(`track ${header.trackId} has no sample entry`);
  track.codec = sampleEntry.type;
  if (kind === 'video') {
    const visual = parseVisualSampleEntry(data, sampleEntry);
    track.codec = visual.codec;
    track.width = header.width > 0 ? header.width : visual.width;
    track.height = header.height > 0 ? header.height : visual.height;
  } else if (kind === 'audio') {
    const audio = parseAudioSampleEntry(data, sampleEntry);
    track.codec = audio.codec;
    track.sampleRate = audio.sampleRate > 0 ? audio.sampleRate : timescale;
    track.channels = audio.channels;
  }
  return track;
}

/** ISO/IEC 14496-12 §8.3.2: width and height are 16.16 fixed point after the times, layer, volume and matrix. */
function parseTkhd(data: Buffer, box: Box): { trackId: number; width: number; height: number } {
  const reader = new BoxReader(data, box);
  const version = reader.u8();
  reader.skip(3 + (version === 1 ? 16 : 8));
  const trackId = reader.u32();
  reader.skip(4 + (version === 1 ? 8 : 4)); // reserved, duration
  reader.skip(8 + 2 + 2 + 2 + 2 + 36); // reserved, layer, alternate_group, volume, reserved, matrix
  const width = Math.round(reader.u32() / 65536);
  const height = Math.round(reader.u32() / 65536);
  return { trackId, width, height };
}

/** The first sample entry of `mdia/minf/stbl/stsd` (ISO/IEC 14496-12 §8.5.2). */
function findSampleEntry(data: Buffer, mdia: Box): Box | undefined {
  const minf = findChild(data, mdia, 'minf');
  const stbl = minf && findChild(data, minf, 'stbl');
  const stsd = stbl && findChild(data, stbl, 'stsd');
  if (stsd === undefined) return undefined;
  // version/flags and entry_count come before the entries.
  return boxesIn(data, stsd.contentStart + 8, stsd.end)[0];
}

/** ISO/IEC 14496-12 §12.1.3: VisualSampleEntry's fixed fields take 78 bytes before its child boxes. */
function parseVisualSampleEntry(data: Buffer, entry: Box): { codec: string; width: number; height: number } {
  const reader = new BoxReader(data, entry).skip(24);
  const width = reader.u16();
  const height = reader.u16();
  let codec = entry.type;
  if (entry.type === 'avc1' || entry.type === 'avc3') {
    const avcC = findChild(data, boxesIn(data, entry.contentStart + 78, entry.end), 'avcC');
    if (avcC !== undefined) {
      // ISO/IEC 14496-15 §5.3.3.1.2 and RFC 6381 §3.3: profile_idc, constraint flags and level_idc as hex.
      const config = new BoxReader(data, avcC).skip(1);
      codec = `${entry.type}.${hex(config.u8())}${hex(config.u8())}${hex(config.u8())}`;
    }
  }
  return { codec, width, height };
}

/** ISO/IEC 14496-12 §12.2.3: AudioSampleEntry's fixed fields take 28 bytes before its child boxes. */
function parseAudioSampleEntry(data: Buffer, entry: Box): { codec: string; sampleRate: number; channels: number } {
  const reader = new BoxReader(data, entry).skip(8);
  // QuickTime sound descriptions reuse the first reserved field as a version that adds fields (16 or 36 bytes).
  const quickTimeVersion = reader.u16();
  reader.skip(6);
  const channels = reader.u16();
  reader.skip(6);
  const sampleRate = reader.u32() >>> 16;
  const childrenStart = entry.contentStart + 28 + (quickTimeVersion === 1 ? 16 : quickTimeVersion === 2 ? 36 : 0);
  const children = boxesIn(data, childrenStart, entry.end);
  switch (entry.type) {
    case 'mp4a': {
      // ISO BMFF writers (FFmpeg's included) may leave channelcount at its template value 2: the AudioSpecificConfig
      // has the real layout.
      const esds = findChild(data, children, 'esds');
      const config = esds === undefined ? { codec: 'mp4a', channels: undefined } : parseEsds(data, esds);
      return { codec: config.codec, sampleRate, channels: config.channels ?? channels };
    }
    case 'Opus': {
      // Opus in ISOBMFF §4.3.2: dOps carries Version then OutputChannelCount.
      const dOps = findChild(data, children, 'dOps');
      return { codec: 'opus', sampleRate, channels: dOps === undefined ? channels : new BoxReader(data, dOps).skip(1).u8() };
    }
    case 'fLaC':
      return { codec: 'flac', sampleRate, channels };
    default:
      return { codec: entry.type, sampleRate, channels };
  }
}

/** ISO/IEC 14496-3 Table 1.19: channelConfiguration to channel count; 0 means a program config element decides. */
const AAC_CHANNELS: Record<number, number> = { 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8 };

/**
 * RFC 6381 §3.3: `mp4a.` + objectTypeIndication in hex, then for MPEG-4 audio (0x40) the audioObjectType of the
 * AudioSpecificConfig in decimal. The descriptors are ISO/IEC 14496-1 §7.2.6.5 (ES_Descriptor, tag 3),
 * §7.2.6.6 (DecoderConfigDescriptor, tag 4) and §7.2.6.7 (DecoderSpecificInfo, tag 5).
 */
function parseEsds(data: Buffer, esds: Box): { codec: string; channels: number | undefined } {
  const reader = new BoxReader(data, esds).skip(4);
  const esDescriptor = readDescriptor(reader);
  if (esDescriptor.tag !== 0x03) throw new Fmp4Error('esds does not start with an ES_Descriptor');
  reader.skip(2); // ES_ID
  const esFlags = reader.u8();
  if (esFlags & 0x80) reader.skip(2); // dependsOn_ES_ID
  if (esFlags & 0x40) reader.skip(reader.u8()); // URLstring
  if (esFlags & 0x20) reader.skip(2); // OCR_ES_Id
  while (reader.remaining > 0) {
    const descriptor = readDescriptor(reader);
    if (descriptor.tag !== 0x04) {
      reader.skip(descriptor.size);
      continue;
    }
    const end = reader.offset + descriptor.size;
    const objectTypeIndication = reader.u8();
    reader.skip(12); // streamType, upStream, bufferSizeDB, maxBitrate, avgBitrate
    const codec = `mp4a.${hex(objectTypeIndication).toUpperCase()}`;
    if (objectTypeIndication !== 0x40) return { codec, channels: undefined };
    while (reader.offset < end) {
      const inner = readDescriptor(reader);
      if (inner.tag !== 0x05) {
        reader.skip(inner.size);
        continue;
      }
      const config = parseAudioSpecificConfig(reader.bytes(inner.size));
      return { codec: `${codec}.${config.audioObjectType}`, channels: AAC_CHANNELS[config.channelConfiguration] };
    }
    return { codec, channels: undefined };
  }
  throw new Fmp4Error('esds has no DecoderConfigDescriptor');
}

/** ISO/IEC 14496-3 §1.6.2.1: audioObjectType (5 bits, 31 escapes to 32 + 6 more), frequency index, channels. */
function parseAudioSpecificConfig(config: Buffer): { audioObjectType: number; channelConfiguration: number } {
  let bitOffset = 0;
  const bits = (count: number): number => {
    let value = 0;
    for (let i = 0; i < count; i += 1, bitOffset += 1) {
      const byte = config[bitOffset >> 3];
      if (byte === undefined) throw new Fmp4Error('AudioSpecificConfig is cut short');
      value = (value << 1) | ((byte >> (7 - (bitOffset & 7))) & 1);
    }
    return value;
  };
  let audioObjectType = bits(5);
  if (audioObjectType === 31) audioObjectType = 32 + bits(6);
  if (bits(4) === 0x0f) bits(24); // an explicit samplingFrequency instead of an index
  return { audioObjectType, channelConfiguration: bits(4) };
}

/** ISO/IEC 14496-1 §8.3.3: a tag byte, then a size in 7-bit groups with a continuation bit, at most four bytes. */
function readDescriptor(reader: BoxReader): { tag: number; size: number } {
  const tag = reader.u8();
  let size = 0;
  for (let i = 0; i < 4; i += 1) {
    const byte = reader.u8();
    size = (size << 7) | (byte & 0x7f);
    if ((byte & 0x80) === 0) break;
  }
  return { tag, size };
}

interface Box {
  type: string;
  /** First byte after the header (size, type, largesize). */
  contentStart: number;
  /** One past the last byte of the box. */
  end: number;
}

function topLevel(data: Buffer): Box[] {
  return boxesIn(data, 0, data.length);
}

/** The boxes laid end to end in `data[start, end)` (ISO/IEC 14496-12 §4.2). Trailing bytes too short for a header are ignored. */
function boxesIn(data: Buffer, start: number, end: number): Box[] {
  const boxes: Box[] = [];
  let offset = start;
  while (offset + 8 <= end) {
    const size32 = data.readUInt32BE(offset);
    const type = data.toString('latin1', offset + 4, offset + 8);
    let size = size32;
    let headerSize = 8;
    if (size32 === 1) {
      if (offset + 16 > end) throw new Fmp4Error(`box "${printable(type)}" is cut inside its 64-bit size`);
      size = Number(data.readBigUInt64BE(offset + 8));
      headerSize = 16;
    } else if (size32 === 0) {
      size = end - offset; // the box runs to the end of its container
    }
    if (size < headerSize || offset + size > end) {
      throw new Fmp4Error(`box "${printable(type)}" of size ${size} at offset ${offset} does not fit in its container`);
    }
    boxes.push({ type, contentStart: offset + headerSize, end: offset + size });
    offset += size;
  }
  return boxes;
}

function findChild(data: Buffer, parent: Box | Box[], type: string): Box | undefined {
  const boxes = Array.isArray(parent) ? parent : boxesIn(data, parent.contentStart, parent.end);
  return boxes.find((box) => box.type === type);
}

function childrenOfType(data: Buffer, parent: Box, type: string): Box[] {
  return boxesIn(data, parent.contentStart, parent.end).filter((box) => box.type === type);
}

/** Big-endian reads inside one box's content; running past the box is an `Fmp4Error`, never a read of its neighbour. */
class BoxReader {
  readonly #data: Buffer;
  readonly #end: number;
  #offset: number;

  constructor(data: Buffer, box: Box) {
    this.#data = data;
    this.#offset = box.contentStart;
    this.#end = box.end;
  }

  get offset(): number {
    return this.#offset;
  }

  get remaining(): number {
    return this.#end - this.#offset;
  }

  need(length: number): void {
    if (this.#offset + length > this.#end) throw new Fmp4Error(`box content is ${length - this.remaining} bytes short`);
  }

  skip(length: number): this {
    this.need(length);
    this.#offset += length;
    return this;
  }

  u8(): number {
    this.need(1);
    const value = this.#data.readUInt8(this.#offset);
    this.#offset += 1;
    return value;
  }

  u16(): number {
    this.need(2);
    const value = this.#data.readUInt16BE(this.#offset);
    this.#offset += 2;
    return value;
  }

  u32(): number {
    this.need(4);
    const value = this.#data.readUInt32BE(this.#offset);
    this.#offset += 4;
    return value;
  }

  u64(): bigint {
    this.need(8);
    const value = this.#data.readBigUInt64BE(this.#offset);
    this.#offset += 8;
    return value;
  }

  bytes(length: number): Buffer {
    this.need(length);
    const value = this.#data.subarray(this.#offset, this.#offset + length);
    this.#offset += length;
    return value;
  }

  fourCc(): string {
    this.need(4);
    const value = this.#data.toString('latin1', this.#offset, this.#offset + 4);
    this.#offset += 4;
    return value;
  }
}

function hex(byte: number): string {
  return byte.toString(16).padStart(2, '0');
}

/** A box type for an error message: garbage bytes would otherwise print as control characters. */
function printable(type: string): string {
  return type.replace(/[^\x20-\x7e]/g, '?');
}
