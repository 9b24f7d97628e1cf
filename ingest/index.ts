export { RtmpIngest, RTMP_APP } from './RtmpIngest.js';
export type { RtmpIngestOptions, RtmpIngestEvents, AuthorizeResult, Refusal } from './RtmpIngest.js';
export { PublishSession } from './PublishSession.js';
export type { PublishSource, PublishStats, PublishSessionEvents } from './PublishSession.js';
