import type { VideoEncoderKind } from './hwaccel.js';
import type { LadderPlan, Rendition } from './ladder.js';

/**
 * The degradation policy, in the order its steps are taken when a node cannot keep up (and undone in reverse):
 *
 * 1. `drop-top`: the top transcoded rung is no longer encoded; its playlist carries the next rung down (and the top
 *    WebRTC layer goes, if there are two or more).
 * 2. `faster-preset`: x264 at `ultrafast` (nothing for a hardware encoder).
 * 3. `lower-fps`: the lower encoded rungs at half the frame rate, at least 15 fps (the only rung, if one is left).
 * 4. `passthrough`: no video encode for HLS: every rung's playlist carries the publisher's own video, copied — which
 *    never falls behind; WebRTC keeps its lowest layer.
 *
 * A step that would change nothing for a stream (one rung, already `ultrafast`, a 15 fps source) is skipped for it.
 * Every rung's name — and so every media playlist a player holds — stays: a degraded rung's playlist goes on after a
 * discontinuity with another rung's media (a new init, another resolution), which players take like any rendition
 * switch, and the multivariant playlist never loses an entry.
 */
export const DEGRADE_STEPS = ['drop-top', 'faster-preset', 'lower-fps', 'passthrough'] as const;
export type DegradeStep = (typeof DEGRADE_STEPS)[number];

/** The frame rate `lower-fps` never goes under. */
export const MIN_DEGRADED_FPS = 15;

/** What one ffmpeg run encodes at a given level, and which output feeds each rung of the full ladder. */
export interface DegradedLadder {
  /** The steps taken, in order (empty: the full ladder). */
  steps: DegradeStep[];
  /** The outputs ffmpeg makes: the plan handed to the command line. */
  outputs: LadderPlan;
  /**
   * The full ladder's rungs, each with the properties of the output that feeds it now (its name kept): what the
   * packager, the recorder and the multivariant playlist see.
   */
  shown: LadderPlan;
  /** Output name → the names of the rungs it feeds (itself included when it is a rung of the full ladder). */
  feeds: Map<string, string[]>;
  x264Preset: string;
}

/** The steps that change something for this ladder and encoder, in policy order. */
export function applicableSteps(full: LadderPlan, encoder: VideoEncoderKind, x264Preset: string): DegradeStep[] {
  const encoded = full.renditions.filter((r) => !r.passthrough);
  const steps: DegradeStep[] = [];
  if (encoded.length >= 2) steps.push('drop-top');
  if (encoder === 'libx264' && x264Preset !== 'ultrafast') steps.push('faster-preset');
  if (encoded.some((r) => r.fps > MIN_DEGRADED_FPS)) steps.push('lower-fps');
  if (encoded.length > 0) steps.push('passthrough');
  return steps;
}

/** The ladder at `level` (0: the full ladder; the level counts applicable steps, capped at the last one). */
export function degradeLadder(full: LadderPlan, level: number, encoder: VideoEncoderKind, x264Preset: string): DegradedLadder {
  const steps = applicableSteps(full, encoder, x264Preset).slice(0, Math.max(0, level));
  let renditions: Rendition[] = full.renditions.map((r) => ({ ...r }));
  /** Rung name → the name of the output that feeds it. */
  const source = new Map(full.renditions.map((r) => [r.name, r.name]));
  let preset = x264Preset;
  let webrtc = full.webrtc;

  for (const step of steps) {
    if (step === 'drop-top') {
      const encoded = renditions.filter((r) => !r.passthrough);
      const [top, next] = encoded;
      if (!top || !next) continue;
      renditions = renditions.filter((r) => r !== top);
      for (const [rung, output] of source) if (output === top.name) source.set(rung, next.name);
      if (webrtc && webrtc.layers.length >= 2) webrtc = { ...webrtc, layers: webrtc.layers.slice(0, -1) };
    } else if (step === 'faster-preset') {
      preset = 'ultrafast';
    } else if (step === 'lower-fps') {
      const encoded = renditions.filter((r) => !r.passthrough);
      const lower = encoded.length >= 2 ? encoded.slice(1) : encoded;
      renditions = renditions.map((r) => (lower.includes(r) ? { ...r, fps: Math.max(MIN_DEGRADED_FPS, Math.min(r.fps, Math.round(r.fps / 2))) } : r));
    } else {
      const copy: Rendition = {
        name: 'source',
        width: full.source.width,
        height: full.source.height,
        fps: Math.min(full.source.fps > 0 ? full.source.fps : 30, 60),
        videoKbps: full.source.declaredVideoKbps && full.source.declaredVideoKbps > 0 ? Math.round(full.source.declaredVideoKbps) : renditions[0]?.videoKbps ?? 0,
        audioKbps: renditions[0]?.audioKbps ?? 0,
        passthrough: true,
      };
      renditions = [renditions.find((r) => r.passthrough) ?? copy];
      for (const rung of source.keys()) source.set(rung, renditions[0]!.name);
      if (webrtc) webrtc = { ...webrtc, layers: webrtc.layers.slice(0, 1) };
    }
  }

  const byName = new Map(renditions.map((r) => [r.name, r]));
  const feeds = new Map<string, string[]>(renditions.map((r) => [r.name, []]));
  const shown = full.renditions.map((rung): Rendition => {
    const output = byName.get(source.get(rung.name)!)!;
    feeds.get(output.name)!.push(rung.name);
    return { ...output, name: rung.name };
  });
  const outputs: LadderPlan = { ...full, renditions, ...(webrtc ? { webrtc } : {}) };
  return { steps, outputs, shown: { ...full, renditions: shown, ...(webrtc ? { webrtc } : {}) }, feeds, x264Preset: preset };
}
