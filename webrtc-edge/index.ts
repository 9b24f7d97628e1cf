export { WebRtcEdge, EdgeError } from './WebRtcEdge.js';
export type { WebRtcEdgeOptions, EdgeRtpInputs, EdgeProducerShape, ViewerStats, WebRtcEdgeEvents, EdgeWorkerRole, OriginLookup } from './WebRtcEdge.js';
export { registerWhepRoutes } from './routes.js';
export type { WhepRoutesOptions } from './routes.js';
export { loadMediasoup, cachedWorkerBin, MEDIASOUP_VERSION } from './loadMediasoup.js';
export { WHEP_LIMITS } from './limits.js';
export type { WhepLimits } from './limits.js';
export type { RelaySource } from './RtpRelay.js';
