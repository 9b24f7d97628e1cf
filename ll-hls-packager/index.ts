export { MediaPlaylist, serverControlFor } from './MediaPlaylist.js';
export type { Part, Segment, MediaPlaylistOptions, ServerControl } from './MediaPlaylist.js';
export { StreamPackager } from './StreamPackager.js';
export type { StreamPackagerOptions } from './StreamPackager.js';
export { registerLiveRoutes, parseDirectives } from './routes.js';
export type { LiveRoutesOptions } from './routes.js';
export { signPlaybackToken, verifyPlaybackToken, playbackRefusal } from './signing.js';
