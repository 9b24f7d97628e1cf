import {
  buildFfmpegArgs, cmafOptions, hwGlobalOptions, hwUploadFilter, rungAudioOptions, rungVideoOptions,
  type FfmpegOption as Option, type FfmpegOutput, type LadderPlan, type Rendition, type VideoEncoderKind,
} from '../live-transcoder/index.js';

export interface AdCommandOptions {
  /** The live stream's plan: the ad comes out in exactly its renditions (sizes, rates, GOP, part duration). */
  plan: LadderPlan;
  encoder: VideoEncoderKind;
  x264Preset: string;
  partTargetMs: number;
  vaapiDevice: string;
  /** The ad video's source file. */
  input: string;
  /** Without an audio stream in the source, silence is muxed in: the live renditions carry audio, so must the ad. */
  inputHasAudio: boolean;
  /** Seconds of the ad to package. */
  durationSec: number;
  /** The fMP4 file written for each rendition. */
  output: (rendition: Rendition) => string;
}

/**
 * One ffmpeg that packages an ad video in a live stream's ladder, so that its segments can replace the stream's
 * during an ad break: every rendition at the plan's size (letterboxed, never stretched), frame rate, bitrate and GOP,
 * AAC at 48 kHz when the live renditions have audio, CMAF fragments of the part duration. Passthrough rungs are
 * encoded at the source's size (the ad is not the publisher's H.264).
 */
export function adLadderArgs(o: AdCommandOptions): string[] {
  const { plan } = o;
  const liveHasAudio = plan.source.audioCodec !== undefined;
  const silence = liveHasAudio && !o.inputHasAudio;
  const n = plan.renditions.length;
  const fit = (r: Rendition, i: number): string =>
    `[s${i}]scale=${r.width}:${r.height}:force_original_aspect_ratio=decrease:force_divisible_by=2:flags=bicubic,` +
    `pad=${r.width}:${r.height}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps=${r.fps}${hwUploadFilter(o.encoder)}[v${i}]`;
  const filterComplex = [
    `[0:v:0]split=${n}${plan.renditions.map((_, i) => `[s${i}]`).join('')}`,
    ...plan.renditions.map(fit),
  ].join(';');

  const outputs: FfmpegOutput[] = plan.renditions.map((r, i) => {
    const options: Option[] = [['-map', `[v${i}]`], ...rungVideoOptions(r, o.encoder, o.x264Preset, plan.gopMs)];
    if (liveHasAudio) {
      options.push(['-map', silence ? '1:a:0' : '0:a:0'], ...rungAudioOptions({ ...r, audioKbps: r.audioKbps || 128 }));
    }
    options.push(...cmafOptions(o.partTargetMs));
    return { options, url: o.output(r) };
  });

  const duration = o.durationSec.toFixed(3);
  return buildFfmpegArgs({
    global: [['-hide_banner'], ['-nostdin'], ['-loglevel', 'error'], ['-y'], ...hwGlobalOptions(o.encoder, o.vaapiDevice)],
    inputs: [
      // `file:`: a path is never read as another protocol.
      { options: [['-t', duration]], url: `file:${o.input}` },
      ...(silence ? [{ options: [['-f', 'lavfi'], ['-t', duration]] as Option[], url: 'anullsrc=r=48000:cl=stereo' }] : []),
    ],
    filterComplex,
    outputs,
  });
}
