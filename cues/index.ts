export { AdLibrary, MAX_AD_SEC, DEFAULT_AD_LIMITS } from './AdLibrary.js';
export type { AdLibraryOptions, AdPackaging, AdLimits } from './AdLibrary.js';
export { adLadderArgs } from './adCommand.js';
export type { AdCommandOptions } from './adCommand.js';
export { registerCueRoutes, DEFAULT_NEWS_SEC, MAX_NEWS_TEXT } from './routes.js';
export type { CueInput, CueRoutesOptions } from './routes.js';
// The cue and ad media primitives that the packager and the archive write live in lib/media/ (both sides import them).
export { dateRangeTag, cueTagsBefore, CUE_CLASS } from '../lib/media/cues.js';
export type { Cue, CueKind } from '../lib/media/cues.js';
export { encodeSpliceInsert, decodeSpliceInfo, crc32Mpeg2, toHexSequence } from '../lib/media/scte35.js';
export type { SpliceInsert, SpliceInfo } from '../lib/media/scte35.js';
export { AdFeed, splitAdRendition } from '../lib/media/ads.js';
export type { AdMedia, AdRendition } from '../lib/media/ads.js';
export { LiveCues, openEventCues, closeEventCues, adBreakView } from './LiveCues.js';
export type { LiveCuesOptions, LiveEventCues, CueTarget } from './LiveCues.js';
export { WebRtcAds, webrtcAdArgs, MAX_AD_INPUTS } from './WebRtcAds.js';
export type { WebRtcAdsOptions, WebRtcAdCommandOptions, WebRtcFeed } from './WebRtcAds.js';
