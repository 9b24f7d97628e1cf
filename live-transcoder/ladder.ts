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
}

export interface LadderOptions {
  /** Rung heights, highest first; rungs above the source height are dropped (no upscaling). */
  heights: number[];
  /** Add the source itself as the top rung, copied. */
  passthrough: boolean;
  /** Keyframe interval: the segment target duration, so that every segment starts with a keyframe. */
  gopMs: number;
}

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

  return { source, renditions, gopMs: options.gopMs, copyAudio: source.audioCodec === 'aac' };
}
