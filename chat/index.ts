export { ChatServer, CHAT_NAMESPACE, CHAT_PATH, MAX_FRAME_BYTES, MAX_SLOW_MODE_SEC } from './ChatServer.js';
export type {
  BanRequest, ChatComment, ChatCue, ChatErrorPayload, ChatLimits, ChatServerOptions, ServerToClientEvents,
} from './ChatServer.js';
export { registerChatRoutes } from './routes.js';
export type { ChatRoutesOptions } from './routes.js';
export type { ChatCommentsTable, ChatTables, ReplayComment } from './ChatArchive.js';
export type { ChatBan, ChatSettings } from './SharedState.js';
export type { ReactionCounts } from './ReactionCoalescer.js';
export type { RateLimit } from './TokenBucket.js';
export { MAX_COMMENT_CHARS, MAX_NAME_CHARS } from './validation.js';
export { CHAT_LIMITS } from './limits.js';
export { CHAT_MIGRATIONS } from './migrations.js';
