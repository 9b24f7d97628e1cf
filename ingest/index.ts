export { RtmpIngest, RTMP_APP } from './RtmpIngest.js';
export type { RtmpIngestOptions, RtmpIngestEvents, AuthorizeResult, Refusal, Dropped, PublishData } from './RtmpIngest.js';
export { PublishSession } from './PublishSession.js';
export type { PublishSource, PublishStats, PublishSessionEvents } from './PublishSession.js';
export { RTMP_LIMITS } from './limits.js';
export type { RtmpLimits } from './limits.js';
export { WhipIngest, WhipRefusal } from './WhipIngest.js';
export type { WhipIngestOptions, WhipPlace } from './WhipIngest.js';
export { registerWhipRoutes } from './whipRoutes.js';
