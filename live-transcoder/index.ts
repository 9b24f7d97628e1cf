export { MAX_STDIN_BACKLOG, LiveTranscoder } from './LiveTranscoder.js';
export type { LiveTranscoderOptions, LiveTranscoderEvents, TranscoderInput, TranscoderStats, RenditionStats, DiscontinuityReason } from './LiveTranscoder.js';
export type { TranscoderStartData, DiscontinuityData, RenditionInitData, RenditionFragmentData, TranscoderExitData } from './LiveTranscoder.js';
export { planLadder, planWebRtc, AUDIO_KBPS, DEFAULT_WEBRTC_HEIGHTS, WEBRTC_AUDIO_KBPS, WEBRTC_GOP_MS } from './ladder.js';
export type { SourceInfo, Rendition, LadderPlan, LadderOptions, WebRtcLayer, WebRtcAudio, WebRtcPlan } from './ladder.js';
export { rtpFeed, validateRtpTargets, h264LevelFor, rtpVideoOutput, rtpAudioOutput, RTP_PACKET_SIZE } from './rtpOutput.js';
export type { RtpTargets, RtpFeed, RtpVideoStream, RtpAudioStream } from './rtpOutput.js';
export { chooseEncoder, probeArgs, videoEncoderOptions, hwGlobalOptions, hwUploadFilter } from './hwaccel.js';
export type { EncoderChoice, HwaccelSetting, VideoEncoderKind } from './hwaccel.js';
export { liveLadderArgs } from './liveCommand.js';
/** The rung building blocks of the live ladder: an ad packaged for a live stream (cues/) is encoded with them. */
export { cmafOptions, rungAudioOptions, rungVideoOptions } from './liveCommand.js';
export { buildFfmpegArgs, formatCommandLine } from './ffmpegArgs.js';
export type { Option as FfmpegOption, FfmpegOutput } from './ffmpegArgs.js';
/** What the transcoder's events carry (the fMP4 primitives live in lib/media/fmp4.ts). */
export type { InitSegment, TrackInfo, Fragment } from '../lib/media/fmp4.js';
export { ProgressParser } from './progress.js';
export type { Progress } from './progress.js';
export { CAPACITY_HEADROOM, LoadGovernor, cpuIdleSampler, processCpuSeconds } from './LoadGovernor.js';
export type { LadderPolicy, LoadGovernorOptions, LoadGovernorEvents, LadderChangeData, NodeCapacity } from './LoadGovernor.js';
export { DEGRADE_STEPS, applicableSteps, degradeLadder } from './degrade.js';
export type { DegradeStep, DegradedLadder } from './degrade.js';
