/** What the publisher sends, read from the RTMP stream itself (SPS, sequence headers, timestamps, metadata). */
export interface SourceInfo {
  width: number;
  height: number;
  /** Frames per second, measured from timestamps or taken from onMetaData. */
  fps: number;
  videoCodec: 'h264';
  /** Undefined for a video-only publish. */
  audioCodec: 'aac' | 'mp3' | 'other' | undefined;
  audioSampleRate?: number;
  audioChannels?: number;
  /** Publisher's declared video bitrate in kbit/s (onMetaData), if any. */
  declaredVideoKbps?: number;
}

/** One rung of the ladder. */
export interface Rendition {
  /** Stable name used in URLs and metrics: `720p`, `480p`, or `source` for passthrough. */
  name: string;
  width: number;
  height: number;
  fps: number;
  /** Target video bitrate in kbit/s; for passthrough the publisher's declared bitrate (or an estimate). */
  videoKbps: number;
  /** Audio bitrate in kbit/s; 0 when the source has no audio. */
  audioKbps: number;
  /** Copies the source video instead of encoding it. */
  passthrough: boolean;
}

export interface LadderPlan {
  source: SourceInfo;
  renditions: Rendition[];
  /** Keyframe interval in milliseconds, identical for every rung so that segments align. */
  gopMs: number;
  /** Copy the source audio into every rung (AAC) instead of re-encoding it. */
  copyAudio: boolean;
  /** The WebRTC feed (plain RTP to the WebRTC room) the same ffmpeg can send; absent when it is turned off. */
  webrtc?: WebRtcPlan;
}

/** One simulcast layer of the WebRTC feed: H.264 constrained baseline, sent as plain RTP. */
export interface WebRtcLayer {
  /** Stable name for logs and metrics: `w480`, `w240`. */
  name: string;
  width: number;
  height: number;
  /** At most 30: WebRTC viewers are phones and laptops on any link. */
  fps: number;
  /** Target video bitrate in kbit/s (also the layer's `maxBitrate` for the SFU). */
  kbps: number;
}

/** The WebRTC feed's audio: Opus, the one codec every browser decodes. */
export interface WebRtcAudio {
  codec: 'opus';
  sampleRate: 48000;
  channels: 2;
  kbps: number;
  /** Opus frame duration: 20 ms, i.e. an RTP timestamp step of 960 at 48 kHz. */
  frameMs: 20;
}

export interface WebRtcPlan {
  /** Low to high, as simulcast encodings are listed. */
  layers: WebRtcLayer[];
  /** Undefined for a video-only source. */
  audio: WebRtcAudio | undefined;
  /**
   * Keyframe interval of every layer. Short and fixed: ffmpeg cannot answer a viewer's PLI, so a new viewer or a
   * layer switch waits for the next scheduled keyframe.
   */
  gopMs: number;
}

export interface LadderOptions {
  /** Rung heights, highest first; rungs above the source height are dropped (no upscaling). */
  heights: number[];
  /** Add the source itself as the top rung, copied. */
  passthrough: boolean;
  /** Keyframe interval: the segment target duration, so that every segment starts with a keyframe. */
  gopMs: number;
  /**
   * WebRTC layer heights (`ONAIR_WEBRTC_LAYERS`), any order; layers above the source are dropped and the lowest one is
   * always kept. Empty turns the WebRTC feed off; absent means `DEFAULT_WEBRTC_HEIGHTS`.
   */
  webrtcHeights?: readonly number[];
}

export const DEFAULT_WEBRTC_HEIGHTS: readonly number[] = [480, 240];
export const WEBRTC_AUDIO_KBPS = 64;
export const WEBRTC_GOP_MS = 1000;
export const WEBRTC_MAX_FPS = 30;

/**
 * kbit/s at 30 fps by height for the WebRTC layers: below the HLS table (Baseline has no B-frames and no CABAC, but
 * WebRTC viewers favour a stream that never stalls over detail), near what browsers' own simulcast sends.
 */
const WEBRTC_KBPS: readonly [number, number][] = [
  [720, 1500], [540, 1000], [480, 800], [360, 500], [240, 250], [144, 120],
];

/** kbit/s at 30 fps by height; 60 fps rungs get 1.5x. Chosen from Apple's HLS authoring table, rounded. */
const VIDEO_KBPS: readonly [number, number][] = [
  [2160, 14000], [1440, 8000], [1080, 5000], [720, 2800], [540, 2000], [480, 1400], [360, 800], [240, 400], [144, 200],
];

export const AUDIO_KBPS = 128;

function videoKbpsFor(height: number, fps: number): number {
  const row = VIDEO_KBPS.find(([h]) => height >= h) ?? VIDEO_KBPS[VIDEO_KBPS.length - 1]!;
  // Interpolate linearly by pixel rows between table rows so odd heights get sensible rates.
  const kbps = Math.round((row[1] * height) / row[0]);
  return fps > 30 ? Math.round(kbps * 1.5) : kbps;
}

const even = (value: number): number => Math.max(2, Math.round(value / 2) * 2);

function interpolateKbps(table: readonly (readonly [number, number])[], height: number): number {
  const row = table.find(([h]) => height >= h) ?? table[table.length - 1]!;
  return Math.round((row[1] * height) / row[0]);
}

/**
 * The WebRTC layers for a source: no upscaling, the aspect ratio kept, at most 30 fps, and at least one layer — the
 * lowest configured one, or the source's own size when the source is smaller still.
 */
export function planWebRtc(source: SourceInfo, heights: readonly number[]): WebRtcPlan | undefined {
  if (heights.length === 0) return undefined;
  const aspect = source.width / source.height;
  const fps = Math.min(source.fps > 0 ? source.fps : 30, WEBRTC_MAX_FPS);
  const sorted = [...new Set(heights)].sort((a, b) => a - b);
  const kept = sorted.filter((h) => h <= source.height);
  // A source below every layer gets one at its own size (rounded down to even: never a line more than the source).
  if (kept.length === 0) kept.push(Math.max(2, Math.floor(source.height / 2) * 2));
  const layers = kept.map((height): WebRtcLayer => ({
    name: `w${height}`, width: even(height * aspect), height, fps, kbps: interpolateKbps(WEBRTC_KBPS, height),
  }));
  const audio: WebRtcAudio | undefined = source.audioCodec === undefined
    ? undefined
    : { codec: 'opus', sampleRate: 48000, channels: 2, kbps: WEBRTC_AUDIO_KBPS, frameMs: 20 };
  return { layers, audio, gopMs: WEBRTC_GOP_MS };
}

/**
 * Plans the ladder for a source: never upscales, keeps the aspect ratio, keeps the source frame rate up to 60 for
 * rungs of 720 lines and more and caps the others at 30 (they are for weak links and small screens).
 */
export function planLadder(source: SourceInfo, options: LadderOptions): LadderPlan {
  const aspect = source.width / source.height;
  const sourceFps = Math.min(source.fps > 0 ? source.fps : 30, 60);
  const audioKbps = source.audioCodec === undefined ? 0 : AUDIO_KBPS;
  const renditions: Rendition[] = [];

  if (options.passthrough) {
    renditions.push({
      name: 'source',
      width: source.width,
      height: source.height,
      fps: sourceFps,
      videoKbps: source.declaredVideoKbps && source.declaredVideoKbps > 0
        ? Math.round(source.declaredVideoKbps)
        : videoKbpsFor(source.height, sourceFps),
      audioKbps,
      passthrough: true,
    });
  }

  const heights = options.heights.filter((h) => (options.passthrough ? h < source.height : h <= source.height));
  // A source smaller than every configured rung still gets one rung at its own size.
  if (heights.length === 0 && renditions.length === 0) heights.push(even(source.height));

  for (const height of heights) {
    const fps = height >= 720 ? sourceFps : Math.min(sourceFps, 30);
    renditions.push({
      name: `${height}p`,
      width: even(height * aspect),
      height,
      fps,
      videoKbps: videoKbpsFor(height, fps),
      audioKbps,
      passthrough: false,
    });
  }

  const webrtc = planWebRtc(source, options.webrtcHeights ?? DEFAULT_WEBRTC_HEIGHTS);
  return { source, renditions, gopMs: options.gopMs, copyAudio: source.audioCodec === 'aac', ...(webrtc ? { webrtc } : {}) };
}
