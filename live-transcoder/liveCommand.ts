import { buildFfmpegArgs, type FfmpegOutput, type Option } from './ffmpegArgs.js';
import { hwGlobalOptions, hwUploadFilter, videoEncoderOptions, type VideoEncoderKind } from './hwaccel.js';
import type { LadderPlan, Rendition } from './ladder.js';
import { rtpAudioOutput, rtpFeed, rtpVideoOutput, type RtpTargets } from './rtpOutput.js';

export interface LiveCommandOptions {
  plan: LadderPlan;
  encoder: VideoEncoderKind;
  x264Preset: string;
  /** Fragment (LL-HLS part) target in ms: `-frag_duration`. */
  partTargetMs: number;
  vaapiDevice: string;
  /**
   * Also send the plan's WebRTC feed as plain RTP to these loopback ports (after the fMP4 outputs, from the same
   * decoded frames). Absent, or a plan without `webrtc`: the command is the HLS ladder alone, argument for argument.
   */
  rtp?: RtpTargets;
  /**
   * Burn this text file into the picture before the split (every encoded rung and WebRTC layer shows it), re-read on
   * every frame: writing the file shows or clears a news ticker with no restart. Passthrough rungs cannot show it.
   */
  tickerFile?: string;
}

/** The ticker's font: DejaVu Sans Bold from Debian's fonts-dejavu-core (a dependency of ffmpeg's libass/fontconfig). */
export const TICKER_FONT = '/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf';

/**
 * A scrolling line at the bottom, white with a black outline, sized to the picture (drawtext, re-read each frame).
 * The text comes from a file, never from the filter string, so `:` `'` `,` in it need no filter escaping; and
 * `expansion=none` shows it as typed: by default drawtext reads a backslash as an escape and `%{…}` as a function, and a
 * stray `%` makes it drop the whole line on every frame.
 */
export function tickerFilter(file: string): string {
  if (!/^[A-Za-z0-9/._-]+$/.test(file)) throw new Error(`ticker file path must be plain (letters, digits, / . _ -): ${file}`);
  return `drawtext=fontfile=${TICKER_FONT}:textfile=${file}:reload=1:expansion=none:fontsize=h/14:fontcolor=white:borderw=3:bordercolor=black:` +
    `x=w-mod(t*w/6\\,w+tw):y=h-th-h/24`;
}

/** File descriptors of the spawned process: 0 = FLV in, 3 = `-progress`, 4.. = one fMP4 pipe per rendition. */
export const PROGRESS_FD = 3;
export const FIRST_RENDITION_FD = 4;

/**
 * CMAF fragments on a pipe: an empty moov up front (the init segment), every fragment self-contained, cut at every
 * keyframe and every `partTargetMs` — each moof+mdat becomes one LL-HLS part.
 */
export const FMP4_MOVFLAGS = 'empty_moov+default_base_moof+frag_keyframe+cmaf+skip_trailer';

/** One encoded rung's video: the rate and GOP of the plan, keyframes on the plan's time grid. */
export function rungVideoOptions(r: Rendition, encoder: VideoEncoderKind, x264Preset: string, gopMs: number): Option[] {
  const gopSec = gopMs / 1000;
  return [
    ...videoEncoderOptions(encoder, 0, { kbps: r.videoKbps, gopFrames: Math.max(1, Math.round(r.fps * gopSec)), x264Preset }),
    // Keyframes by time from the first frame, not by frame count, so that rungs of different frame rates cut at
    // the same instants (the tolerance absorbs float error in frame times).
    ['-force_key_frames:v:0', `expr:if(isnan(prev_forced_t),1,gte(t-prev_forced_t,${gopSec}-0.005))`],
  ];
}

/** One rung's encoded audio: AAC-LC, 48 kHz stereo. */
export function rungAudioOptions(r: Rendition): Option[] {
  return [['-c:a', 'aac'], ['-b:a', `${r.audioKbps}k`], ['-ar', 48000], ['-ac', 2]];
}

/** The CMAF fMP4 muxer settings: one moof+mdat per keyframe and per `partTargetMs`. */
export function cmafOptions(partTargetMs: number): Option[] {
  return [['-max_muxing_queue_size', 1024], ['-f', 'mp4'], ['-movflags', FMP4_MOVFLAGS], ['-frag_duration', partTargetMs * 1000]];
}

/**
 * The one ffmpeg command for a live stream's whole ladder: FLV on stdin, one fMP4 pipe per rendition, and, with `rtp`,
 * one RTP output per WebRTC layer plus one for Opus audio.
 */
export function liveLadderArgs(o: LiveCommandOptions): string[] {
  const { plan } = o;
  const encoded = plan.renditions.filter((r) => !r.passthrough);
  const hasAudio = plan.source.audioCodec !== undefined;

  const feed = o.rtp === undefined ? undefined : rtpFeed(plan, o.rtp);
  const layers = feed?.video ?? [];

  // WebRTC layers branch off the same split after the HLS rungs ([r0], [r1], …), so decoding happens once.
  const branches = encoded.map((_, i) => `[s${i}]`).join('') + layers.map((_, i) => `[r${i}]`).join('');
  const scale = (input: string, size: { width: number; height: number; fps: number }, output: string): string => {
    const fps = size.fps < plan.source.fps - 0.5 ? `,fps=${size.fps}` : '';
    return `[${input}]scale=${size.width}:${size.height}:flags=bicubic,setsar=1${fps}${hwUploadFilter(o.encoder)}[${output}]`;
  };
  const chains = [...encoded.map((r, i) => scale(`s${i}`, r, `v${i}`)), ...layers.map((l, i) => scale(`r${i}`, l.layer, `w${i}`))];
  const splits = encoded.length + layers.length;
  const ticker = o.tickerFile !== undefined ? `${tickerFilter(o.tickerFile)},` : '';
  const filterComplex = splits === 0 ? undefined : [`[0:v:0]${ticker}split=${splits}${branches}`, ...chains].join(';');

  let encodedIndex = 0;
  const outputs: FfmpegOutput[] = plan.renditions.map((r, i) => {
    const options: Option[] = [];
    if (r.passthrough) {
      options.push(['-map', '0:v:0'], ['-c:v', 'copy']);
    } else {
      const index = encodedIndex++;
      options.push(['-map', `[v${index}]`], ...rungVideoOptions(r, o.encoder, o.x264Preset, plan.gopMs));
    }
    if (hasAudio) {
      options.push(['-map', '0:a:0']);
      if (plan.copyAudio) options.push(['-c:a', 'copy']);
      else options.push(...rungAudioOptions(r));
    }
    options.push(...cmafOptions(o.partTargetMs), ['-flush_packets', 1]);
    return { options, url: `pipe:${FIRST_RENDITION_FD + i}` };
  });
  for (const [i, layer] of layers.entries()) outputs.push(rtpVideoOutput(layer, `w${i}`, o.encoder, o.x264Preset, feed!.gopMs));
  if (feed?.audio && hasAudio) outputs.push(rtpAudioOutput(feed.audio));

  return buildFfmpegArgs({
    global: [
      ['-hide_banner'], ['-nostdin'], ['-loglevel', 'warning'],
      ['-progress', `pipe:${PROGRESS_FD}`], ['-stats_period', 0.5],
      ...hwGlobalOptions(o.encoder, o.vaapiDevice),
    ],
    inputs: [{
      // The probe stops at 0.5 s of media: short start-ups and restarts, yet enough to meet an audio packet after a
      // big keyframe (a byte limit alone can end inside a 6 Mbit/s keyframe and miss the audio parameters). No
      // `nobuffer`: it drops what the probe read, and the copied audio then began that much early (0.5 s out of lip
      // sync, and LL-HLS players waited 0.5 s for the audio under each part; test/e2e/av-sync.test.ts).
      options: [['-fflags', '+genpts'], ['-probesize', 2_000_000], ['-analyzeduration', 500000], ['-f', 'flv']],
      url: 'pipe:0',
    }],
    ...(filterComplex === undefined ? {} : { filterComplex }),
    outputs,
  });
}
