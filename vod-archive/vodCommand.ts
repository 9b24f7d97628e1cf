import { buildFfmpegArgs, planLadder, type FfmpegOption, type Rendition } from '../live-transcoder/index.js';

/** What the probe step learned about a source file (vod-archive/probe.ts). */
export interface ProbedSource {
  durationMs: number;
  width: number;
  height: number;
  fps: number;
  hasAudio: boolean;
  videoCodec: string;
  audioCodec: string | undefined;
}

export interface VodLadderOptions {
  /** Rung heights, high → low; none above the source (no upscaling). */
  heights: readonly number[];
  /** x264 preset for VOD: slower than live, since VOD has no real-time bound. */
  preset: string;
  /** x264 constant rate factor: quality-driven, each rung capped by its maxrate. */
  crf: number;
  /** DASH/HLS segment duration; keyframes are forced on its boundaries in every rung. */
  segmentSec: number;
}

export const DEFAULT_VOD_HEIGHTS: readonly number[] = [1080, 720, 480, 360];
export const VOD_AUDIO_KBPS = 128;

/** The VOD ladder: the live ladder's rungs and bitrates (as maxrate caps), without upscaling. */
export function planVodLadder(source: ProbedSource, heights: readonly number[]): Rendition[] {
  const height = Math.max(2, Math.floor(source.height / 2) * 2);
  const plan = planLadder(
    { width: source.width, height, fps: source.fps, videoCodec: 'h264', audioCodec: source.hasAudio ? 'aac' : undefined },
    { heights: [...heights], passthrough: false, gopMs: 2000, webrtcHeights: [] },
  );
  return plan.renditions;
}

/**
 * The transcode-and-package command: one ffmpeg decodes the source once, scales it into every rung, encodes each with
 * x264 (CRF with a maxrate cap, keyframes forced on segment boundaries so that every rung switches cleanly) and AAC,
 * and the dash muxer writes one set of CMAF segments that both manifests list: `manifest.mpd` (DASH) and `index.m3u8`
 * with `media_<n>.m3u8` (HLS). The same decode feeds `poster.jpg` and `storyboard.jpg`.
 */
export function vodLadderArgs(input: { url: string; concatList?: boolean }, source: ProbedSource, renditions: readonly Rendition[], options: VodLadderOptions, outDir: string, thumbnails = true): string[] {
  const n = renditions.length;
  const filter = [
    `[0:v:0]split=${n + (thumbnails ? 2 : 0)}${renditions.map((_, i) => `[s${i}]`).join('')}${thumbnails ? '[ta][tb]' : ''}`,
    ...renditions.map((r, i) => `[s${i}]scale=${r.width}:${r.height}:flags=bicubic,format=yuv420p[v${i}]`),
    ...(thumbnails ? thumbnailBranches(['[ta]', '[tb]'], source.durationMs) : []),
  ].join(';');
  const video: FfmpegOption[] = [];
  renditions.forEach((r, i) => {
    video.push(
      ['-map', `[v${i}]`],
      [`-c:v:${i}`, 'libx264'],
      [`-preset:v:${i}`, options.preset],
      [`-crf:v:${i}`, options.crf],
      [`-maxrate:v:${i}`, `${r.videoKbps}k`],
      [`-bufsize:v:${i}`, `${r.videoKbps * 2}k`],
      [`-profile:v:${i}`, 'high'],
    );
    if (source.fps > 60) video.push([`-r:v:${i}`, 60]);
  });
  const audio: FfmpegOption[] = source.hasAudio
    ? [['-map', '0:a:0'], ['-c:a', 'aac'], ['-b:a', `${VOD_AUDIO_KBPS}k`], ['-ac', 2], ['-ar', 48000]]
    : [];
  return buildFfmpegArgs({
    global: [['-hide_banner'], ['-nostdin'], ['-y'], ['-loglevel', 'error'], ['-progress', 'pipe:1'], ['-nostats']],
    inputs: [{ options: input.concatList ? [['-f', 'concat'], ['-safe', 0]] : [], url: input.url }],
    filterComplex: filter,
    outputs: [{
      options: [
        ...video,
        ...audio,
        ['-force_key_frames', `expr:gte(t,n_forced*${options.segmentSec})`],
        ['-sc_threshold', 0],
        ['-f', 'dash'],
        ['-seg_duration', options.segmentSec],
        ['-use_template', 1],
        ['-use_timeline', 1],
        ['-hls_playlist', 1],
        ['-hls_master_name', 'index.m3u8'],
        ['-adaptation_sets', source.hasAudio ? 'id=0,streams=v id=1,streams=a' : 'id=0,streams=v'],
        ['-init_seg_name', 'init-$RepresentationID$.m4s'],
        ['-media_seg_name', 'seg-$RepresentationID$-$Number%05d$.m4s'],
      ],
      url: `${outDir}/manifest.mpd`,
    }, ...(thumbnails ? [
      { options: [['-map', '[poster]'], ['-frames:v', 1], ['-q:v', 3], ['-update', 1]] as FfmpegOption[], url: `${outDir}/poster.jpg` },
      { options: [['-map', '[sheet]'], ['-frames:v', 1], ['-q:v', 5], ['-update', 1]] as FfmpegOption[], url: `${outDir}/storyboard.jpg` },
    ] : [])],
  });
}

/** Storyboard geometry: tiles of 160×90 in one 10×10 sheet, one tile every `intervalSec`. */
export const STORYBOARD = { tileWidth: 160, tileHeight: 90, columns: 10, rows: 10 } as const;

export function storyboardInterval(durationMs: number): number {
  const tiles = STORYBOARD.columns * STORYBOARD.rows;
  return Math.max(1, Math.ceil(durationMs / 1000 / tiles));
}

/**
 * The thumbnails, as two more branches of the ladder's filter graph (the same decode; measured at +1–2 % CPU where a
 * second ffmpeg costs +27 %): a poster (the frame at 10 % of the video, at most 10 s in, 640 wide) and a storyboard
 * sheet for the WebVTT thumbnails track. Each branch drops frames before it scales.
 */
function thumbnailBranches(input: string[], durationMs: number): string[] {
  const { tileWidth, tileHeight, columns, rows } = STORYBOARD;
  const posterAt = Math.min(durationMs / 1000 / 10, 10);
  return [
    `${input[0]}trim=start=${posterAt.toFixed(3)}:end=${(posterAt + 1).toFixed(3)},setpts=PTS-STARTPTS,scale='min(640,iw)':-2,format=yuvj420p[poster]`,
    `${input[1]}fps=1/${storyboardInterval(durationMs)},scale=${tileWidth}:${tileHeight}:force_original_aspect_ratio=decrease,` +
      `pad=${tileWidth}:${tileHeight}:(ow-iw)/2:(oh-ih)/2,tile=${columns}x${rows},format=yuvj420p[sheet]`,
  ];
}

/** The WebVTT thumbnails track for the storyboard (`storyboard.jpg#xywh=x,y,w,h` per interval). */
export function storyboardVtt(durationMs: number, intervalSec = storyboardInterval(durationMs)): string {
  const { tileWidth, tileHeight, columns, rows } = STORYBOARD;
  const interval = intervalSec * 1000;
  const lines = ['WEBVTT', ''];
  for (let i = 0; i < columns * rows && i * interval < durationMs; i++) {
    const start = i * interval;
    const end = Math.min(start + interval, durationMs);
    const x = (i % columns) * tileWidth;
    const y = Math.floor(i / columns) * tileHeight;
    lines.push(`${vttTime(start)} --> ${vttTime(end)}`, `storyboard.jpg#xywh=${x},${y},${tileWidth},${tileHeight}`, '');
  }
  return lines.join('\n');
}

function vttTime(ms: number): string {
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = Math.floor((ms % 60_000) / 1000);
  const f = Math.floor(ms % 1000);
  return `${String(h).padStart(2, '0')}:${String(m).padStart(2, '0')}:${String(s).padStart(2, '0')}.${String(f).padStart(3, '0')}`;
}
