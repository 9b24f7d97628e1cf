/**
 * The one catalogue of errors OnAir can send to a client. Every code is stable: clients, docs and tests rely on it.
 * Shape on the wire (SPEC): `{ "error": { "code", "message" } }` with the catalogued status.
 */
export const ERRORS = {
  ONAIR_ERR_VALIDATION: { status: 400, message: 'The request is not valid' },
  ONAIR_ERR_BAD_JSON: { status: 400, message: 'The request body is not valid JSON' },
  ONAIR_ERR_UNAUTHORIZED: { status: 401, message: 'An admin token is required: Authorization: Bearer <token>' },
  ONAIR_ERR_FORBIDDEN: { status: 403, message: 'The token is not valid' },
  ONAIR_ERR_NOT_FOUND: { status: 404, message: 'Not found' },
  ONAIR_ERR_STREAM_NOT_FOUND: { status: 404, message: 'No stream with this id' },
  ONAIR_ERR_STREAM_LIVE: { status: 409, message: 'The stream is live' },
  ONAIR_ERR_STREAM_NOT_LIVE: { status: 404, message: 'The stream is not live' },
  ONAIR_ERR_AD_BREAK_RUNNING: { status: 409, message: 'An ad break is already on: one break at a time' },
  ONAIR_ERR_HLS_DIRECTIVE: { status: 400, message: 'Bad delivery directive (_HLS_msn, _HLS_part, _HLS_skip)' },
  ONAIR_ERR_HLS_TIMEOUT: { status: 503, message: 'The requested part or segment did not arrive in time' },
  ONAIR_ERR_PLAYBACK_FORBIDDEN: { status: 403, message: 'A valid, unexpired playback token is required' },
  ONAIR_ERR_WHEP_SDP: { status: 400, message: 'The SDP offer cannot be used' },
  ONAIR_ERR_WHEP_NO_MEDIA: { status: 422, message: 'The offer cannot receive this stream\'s media' },
  ONAIR_ERR_WHEP_SESSION_NOT_FOUND: { status: 404, message: 'No such WHEP session' },
  ONAIR_ERR_WHIP_SDP: { status: 400, message: 'The WHIP offer cannot be used' },
  ONAIR_ERR_WHIP_SESSION_NOT_FOUND: { status: 404, message: 'No such WHIP publish' },
  ONAIR_ERR_WEBRTC_DISABLED: { status: 503, message: 'WebRTC playback is not available on this node' },
  ONAIR_ERR_PAYLOAD_TOO_LARGE: { status: 413, message: 'The request body is too large' },
  ONAIR_ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Unsupported Content-Type' },
  ONAIR_ERR_RATE_LIMITED: { status: 429, message: 'Too many requests' },
  ONAIR_ERR_NOT_READY: { status: 503, message: 'The node is not ready' },
  ONAIR_ERR_RANGE_NOT_SATISFIABLE: { status: 416, message: 'The Range header is not one this server serves (one bytes range)' },
  ONAIR_ERR_OVERLOADED: { status: 503, message: 'The node is at capacity: retry after Retry-After seconds' },
  ONAIR_ERR_VIDEO_NOT_FOUND: { status: 404, message: 'No video with this id' },
  ONAIR_ERR_VIDEO_NOT_FAILED: { status: 409, message: 'Only a failed video can be retried' },
  // Chat (Socket.IO `error { code, message }` events, and the chat's HTTP routes). The status is what the HTTP routes send.
  ONAIR_ERR_CHAT_BAD_PAYLOAD: { status: 400, message: 'The chat message is malformed' },
  ONAIR_ERR_CHAT_NOT_JOINED: { status: 409, message: 'Join a stream first: join { streamId, name }' },
  ONAIR_ERR_CHAT_STREAM_NOT_FOUND: { status: 404, message: 'No stream with this id' },
  ONAIR_ERR_CHAT_NAME_INVALID: { status: 400, message: 'A name is 1 to 32 characters without control characters' },
  ONAIR_ERR_CHAT_TEXT_EMPTY: { status: 400, message: 'A comment needs some text' },
  ONAIR_ERR_CHAT_TEXT_TOO_LONG: { status: 400, message: 'A comment is at most 500 characters' },
  ONAIR_ERR_CHAT_TEXT_INVALID: { status: 400, message: 'A comment cannot hold control characters' },
  ONAIR_ERR_CHAT_BLOCKED_WORD: { status: 400, message: 'The comment contains a blocked word' },
  ONAIR_ERR_CHAT_REACTION_INVALID: { status: 400, message: 'Not one of this server\'s reactions' },
  ONAIR_ERR_CHAT_RATE_LIMITED: { status: 429, message: 'Too many messages: slow down' },
  ONAIR_ERR_CHAT_SLOW_MODE: { status: 429, message: 'Slow mode is on: wait before commenting again' },
  ONAIR_ERR_CHAT_BANNED: { status: 403, message: 'You are banned from this chat' },
  ONAIR_ERR_CHAT_TOO_MANY_CONNECTIONS: { status: 429, message: 'Too many chat connections from this address: close one first' },
  ONAIR_ERR_CHAT_COMMENT_NOT_FOUND: { status: 404, message: 'No comment with this id in this stream' },
  ONAIR_ERR_CHAT_BAN_NOT_FOUND: { status: 404, message: 'No ban with this id in this stream' },
  ONAIR_ERR_CHAT_UNAVAILABLE: { status: 503, message: 'Chat state (Redis or the database) is unavailable; try again' },
  ONAIR_ERR_PUBLISH_BAD_KEY: { status: 401, message: 'The stream key is not valid' },
  ONAIR_ERR_PUBLISH_BUSY: { status: 409, message: 'Someone is already publishing with this key' },
  ONAIR_ERR_PUBLISH_BAD_APP: { status: 404, message: 'Publish to the live application: rtmp://<host>/live' },
  ONAIR_ERR_PUBLISH_UNSUPPORTED: { status: 415, message: 'Only H.264 video with AAC or MP3 audio can be published' },
  ONAIR_ERR_PUBLISH_NO_CAPACITY: { status: 503, message: 'This node takes no more live streams now (ONAIR_MAX_STREAMS): try again later or another node' },
  ONAIR_ERR_PLAY_NOT_SUPPORTED: { status: 405, message: 'RTMP playback is not offered: watch over LL-HLS or WebRTC' },
  ONAIR_ERR_WHEP_BUSY: { status: 503, message: 'Too many WebRTC viewers here now: try again shortly' },
  // RTMP connections closed by the ingest's guard: these codes are in the log line and the metrics, not on the wire
  // (RTMP has no error body); the status says what the HTTP equivalent would be.
  ONAIR_ERR_RTMP_PROTOCOL: { status: 400, message: 'The RTMP client sent bytes or commands that are not valid RTMP' },
  ONAIR_ERR_RTMP_LIMIT: { status: 413, message: 'The RTMP client passed a size or count limit' },
  ONAIR_ERR_RTMP_TIMEOUT: { status: 408, message: 'The RTMP client was too slow (handshake deadline, idle or under the minimum bitrate)' },
  ONAIR_ERR_RTMP_TOO_MANY_CONNECTIONS: { status: 429, message: 'Too many RTMP connections (in all or from this address)' },
  // Logged only (no request fails): an ad break that WebRTC viewers cannot be shown.
  ONAIR_ERR_AD_WEBRTC_FEED: { status: 500, message: 'The ad break cannot be played to WebRTC viewers: they keep the programme' },
  ONAIR_ERR_INTERNAL: { status: 500, message: 'Internal error' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

/**
 * What each code means and what a client or operator does about it: `docs/errors.md` is generated from this and
 * `ERRORS` (`npm run docs`; `test/docs.test.ts` fails when the checked-in file differs). A code without its entry does
 * not compile.
 */
export const ERROR_HELP: { readonly [C in ErrorCode]: { when: string; fix: string } } = {
  ONAIR_ERR_VALIDATION: {
    when: 'A body, query or path parameter fails its schema; the message names the field.',
    fix: 'Correct the field the message names: docs/api.md gives every body and parameter.',
  },
  ONAIR_ERR_BAD_JSON: {
    when: 'The body is not JSON.',
    fix: 'Send a well-formed JSON body with `Content-Type: application/json`.',
  },
  ONAIR_ERR_UNAUTHORIZED: {
    when: 'An admin route was called without a token.',
    fix: 'Send `Authorization: Bearer <admin token>` (set by `ONAIR_ADMIN_TOKEN`, or generated once and kept in `<data>/admin-token`).',
  },
  ONAIR_ERR_FORBIDDEN: {
    when: 'The admin token is wrong (HTTP, or `auth.token` of a chat connection).',
    fix: 'Use the token of `ONAIR_ADMIN_TOKEN` or `<data>/admin-token`. Too many wrong tokens from one address turn into 429 until the minute is over.',
  },
  ONAIR_ERR_NOT_FOUND: {
    when: 'No such route.',
    fix: 'Check the method and path against docs/api.md.',
  },
  ONAIR_ERR_STREAM_NOT_FOUND: {
    when: 'No stream with this id.',
    fix: 'List the streams with `GET /api/streams`; the stream may have been deleted.',
  },
  ONAIR_ERR_STREAM_LIVE: {
    when: 'The operation needs the stream not to be live (catalogued; no route sends it today).',
    fix: 'Wait for the event to end, or end it with `POST /api/streams/:id/end`.',
  },
  ONAIR_ERR_STREAM_NOT_LIVE: {
    when: '`/live/<id>/…`, a WHEP offer, a cue or `POST /api/streams/:id/end` for a stream with no live (or recently ended) event.',
    fix: 'Start publishing first; after the event, play the replay (`replay.hls` of the stream\'s view).',
  },
  ONAIR_ERR_AD_BREAK_RUNNING: {
    when: 'An `ad` cue while another ad break is on (one break at a time).',
    fix: 'Wait for the running break to end (`stats.adBreak` in the stream\'s view gives its start and planned duration).',
  },
  ONAIR_ERR_HLS_DIRECTIVE: {
    when: 'Malformed `_HLS_msn`/`_HLS_part`/`_HLS_skip`, `_HLS_part` without `_HLS_msn`, or a request beyond the advance limits (2 segments, 15 parts).',
    fix: 'Use a player that follows rfc8216bis §6.2.5 (hls.js with `lowLatencyMode`, Safari); ask only for the next parts the playlist announces.',
  },
  ONAIR_ERR_HLS_TIMEOUT: {
    when: 'The requested part or segment did not arrive within 3 × the target duration.',
    fix: 'Reload the playlist: the publisher may have stopped.',
  },
  ONAIR_ERR_PLAYBACK_FORBIDDEN: {
    when: 'Signed playback is on (`ONAIR_PLAYBACK_SIGNING_KEY`) and the `?token=` is missing, wrong, expired, or for another stream or video.',
    fix: 'Take playback URLs from the admin API or the studio\'s *Watch page* link; they carry a token valid `ONAIR_PLAYBACK_TOKEN_TTL_SEC`.',
  },
  ONAIR_ERR_WHEP_SDP: {
    when: 'The WHEP offer is not usable SDP; the message says why.',
    fix: 'Send a recvonly audio + video offer with BUNDLE and rtcp-mux, as browsers and WHEP players do.',
  },
  ONAIR_ERR_WHEP_NO_MEDIA: {
    when: 'No codec in common for a kind the offer asks for (the message says what OnAir sends: H.264 constrained baseline, Opus), or an audio-only offer for a stream without audio.',
    fix: 'Offer H.264 (constrained baseline) and Opus, or watch over LL-HLS.',
  },
  ONAIR_ERR_WHEP_SESSION_NOT_FOUND: {
    when: 'No such WHEP session (already ended, or its mediasoup worker was replaced).',
    fix: 'POST a new offer to `/live/:id/whep`.',
  },
  ONAIR_ERR_WHIP_SDP: {
    when: 'The WHIP offer is not usable SDP, or has no sendonly H.264 (packetization-mode 1) video; the message says why.',
    fix: 'In OBS 30+, choose the WHIP service with an H.264 encoder (x264, NVENC, QSV…) and Opus audio; a browser offers sendonly H.264 with setCodecPreferences.',
  },
  ONAIR_ERR_WHIP_SESSION_NOT_FOUND: {
    when: 'A `DELETE` for a WHIP publish that is over (or never was on this node).',
    fix: 'Nothing to end; POST a new offer to `/live/:id/whip` to publish again.',
  },
  ONAIR_ERR_WEBRTC_DISABLED: {
    when: 'WebRTC is off (`ONAIR_WEBRTC_LAYERS=off`) or mediasoup is unavailable on this node.',
    fix: 'Watch over LL-HLS, which keeps working; the node\'s log says why mediasoup did not start.',
  },
  ONAIR_ERR_PAYLOAD_TOO_LARGE: {
    when: 'The body is over its bound (JSON 1 MiB, WHEP offers 64 KiB).',
    fix: 'Send a smaller body; media goes through tus uploads (`/api/uploads`), not JSON.',
  },
  ONAIR_ERR_UNSUPPORTED_MEDIA_TYPE: {
    when: 'The `Content-Type` is not the route\'s (`application/json`; `application/sdp` for WHEP).',
    fix: 'Send the body with the Content-Type the route takes.',
  },
  ONAIR_ERR_RATE_LIMITED: {
    when: 'Too many requests from this address (the HTTP rate limits, or too many parked blocking LL-HLS requests).',
    fix: 'Wait `Retry-After` seconds. Behind a proxy every client shares the proxy\'s address: see docs/operations.md.',
  },
  ONAIR_ERR_NOT_READY: {
    when: 'The node is not ready (catalogued; `/readyz` answers with its own body).',
    fix: 'Check `GET /readyz`: its `degraded` list names what is missing.',
  },
  ONAIR_ERR_RANGE_NOT_SATISFIABLE: {
    when: 'A `/vod` request with a `Range` other than one bytes range.',
    fix: 'Ask for one `bytes=start-end` range, or the whole file.',
  },
  ONAIR_ERR_OVERLOADED: {
    when: 'The node is at capacity (too many blocking LL-HLS requests in all).',
    fix: 'Retry after `Retry-After` seconds, or add a node.',
  },
  ONAIR_ERR_VIDEO_NOT_FOUND: {
    when: 'No video with this id, or none playable yet (`/api/videos/:id`, `/vod/:id/…`, the replay chat).',
    fix: 'List the catalog with `GET /api/videos`; a video being processed is seen only with the admin token.',
  },
  ONAIR_ERR_VIDEO_NOT_FAILED: {
    when: '`POST /api/videos/:id/retry` of a video that is not `failed`.',
    fix: 'Only a failed video is retried; a processing one goes on by itself.',
  },
  ONAIR_ERR_CHAT_BAD_PAYLOAD: {
    when: 'A chat message that is not the documented shape, or an unknown event.',
    fix: 'Send the events and payloads of docs/api.md (*Chat*).',
  },
  ONAIR_ERR_CHAT_NOT_JOINED: {
    when: '`comment` or `reaction` before a successful `join`.',
    fix: 'Send `join { streamId, name }` first and wait for its acknowledgement.',
  },
  ONAIR_ERR_CHAT_STREAM_NOT_FOUND: {
    when: '`join` to a stream that does not exist (or was just deleted).',
    fix: 'Join with the id of an existing stream.',
  },
  ONAIR_ERR_CHAT_NAME_INVALID: {
    when: 'A name that is not 1–32 characters, or holds control characters.',
    fix: 'Choose a name of 1 to 32 printable characters.',
  },
  ONAIR_ERR_CHAT_TEXT_EMPTY: {
    when: 'Comment text empty after trimming.',
    fix: 'Send some text.',
  },
  ONAIR_ERR_CHAT_TEXT_TOO_LONG: {
    when: 'Comment text over 500 characters (code points).',
    fix: 'Shorten the comment.',
  },
  ONAIR_ERR_CHAT_TEXT_INVALID: {
    when: 'Comment text with control characters, bidi overrides or lone surrogates.',
    fix: 'Send plain text on one line.',
  },
  ONAIR_ERR_CHAT_BLOCKED_WORD: {
    when: 'The comment or name holds a word of `ONAIR_CHAT_BLOCKED_WORDS`.',
    fix: 'Rephrase; the operator sets the list.',
  },
  ONAIR_ERR_CHAT_REACTION_INVALID: {
    when: 'Not one of `ONAIR_CHAT_REACTIONS`.',
    fix: 'Send one of the reactions `join`\'s acknowledgement lists.',
  },
  ONAIR_ERR_CHAT_RATE_LIMITED: {
    when: 'A connection or address bucket is empty (`retryAfterMs` says for how long).',
    fix: 'Wait `retryAfterMs` before the next message.',
  },
  ONAIR_ERR_CHAT_SLOW_MODE: {
    when: 'Slow mode: this connection commented less than `slowModeSec` ago (`retryAfterMs`).',
    fix: 'Wait `retryAfterMs`; the moderator sets slow mode.',
  },
  ONAIR_ERR_CHAT_BANNED: {
    when: 'The connection or its address is banned from this stream\'s chat.',
    fix: 'A moderator lifts bans (`DELETE /api/streams/:id/bans/:banId`).',
  },
  ONAIR_ERR_CHAT_TOO_MANY_CONNECTIONS: {
    when: '`connect_error` `data.code`: the address holds `ONAIR_CHAT_MAX_CONNECTIONS_PER_ADDRESS` chat connections already (across processes).',
    fix: 'Close a connection first. Behind a reverse proxy list it in `ONAIR_TRUST_PROXY`, or every viewer shares the proxy\'s address.',
  },
  ONAIR_ERR_CHAT_COMMENT_NOT_FOUND: {
    when: 'No such comment in this stream (or, for a ban by comment, its author is no longer known: authors are kept 24 h).',
    fix: 'Check the comment id; ban by `address` instead.',
  },
  ONAIR_ERR_CHAT_BAN_NOT_FOUND: {
    when: 'No such ban in this stream.',
    fix: 'List the active bans with `GET /api/streams/:id/bans`.',
  },
  ONAIR_ERR_CHAT_UNAVAILABLE: {
    when: 'Redis or the database failed under a chat operation.',
    fix: 'Try again; `/readyz` shows whether Redis or the database is degraded.',
  },
  ONAIR_ERR_PUBLISH_BAD_KEY: {
    when: 'Publish refused: the stream key is not valid (RTMP: the `onStatus` error\'s description; WHIP: a missing or wrong `Authorization: Bearer`, or another stream\'s key).',
    fix: 'Copy the current key from the studio or `POST /api/streams/:id/key`; a rotated key is refused.',
  },
  ONAIR_ERR_PUBLISH_BUSY: {
    when: 'Publish refused: another publisher (RTMP, RTMPS or WHIP) is live with this key.',
    fix: 'Stop the other encoder, or wait for its event to end.',
  },
  ONAIR_ERR_PUBLISH_BAD_APP: {
    when: 'RTMP publish refused: the application is not `live`.',
    fix: 'Publish to `rtmp://<host>/live` with the stream key as the stream name.',
  },
  ONAIR_ERR_PUBLISH_UNSUPPORTED: {
    when: 'RTMP publish refused: the video is not H.264 (or the audio not AAC/MP3).',
    fix: 'Set the encoder to H.264 (x264 or hardware) with AAC audio.',
  },
  ONAIR_ERR_PUBLISH_NO_CAPACITY: {
    when: 'Publish refused (RTMP or WHIP): the node holds `ONAIR_MAX_STREAMS` live streams, or is short of CPU (a live stream behind or degraded).',
    fix: 'Try again later or publish to another node; see *Overload* in docs/operations.md.',
  },
  ONAIR_ERR_PLAY_NOT_SUPPORTED: {
    when: 'RTMP play refused.',
    fix: 'Watch over LL-HLS (`/live/:id/index.m3u8`) or WebRTC (WHEP).',
  },
  ONAIR_ERR_WHEP_BUSY: {
    when: 'A WHEP session cap is reached (per address, per worker, codec variants per stream), or a mediasoup worker is being replaced.',
    fix: 'Retry after `Retry-After` seconds; the caps are `ONAIR_WHEP_*`.',
  },
  ONAIR_ERR_RTMP_PROTOCOL: {
    when: 'Bytes or commands that are not valid RTMP (a `connect` without `tcUrl`, a `publish` without a name, a chunk size of 0, garbled AMF…). Log and metrics only.',
    fix: 'Use a standard RTMP encoder (OBS, ffmpeg).',
  },
  ONAIR_ERR_RTMP_LIMIT: {
    when: 'A message, chunk-stream or buffer limit passed, or OnAir\'s answers left unread. Log and metrics only.',
    fix: 'Keep frames under `ONAIR_RTMP_MAX_*_MESSAGE_BYTES`; read the server\'s answers.',
  },
  ONAIR_ERR_RTMP_TIMEOUT: {
    when: 'No accepted publish within the handshake deadline, idle, or under the minimum bitrate. Log and metrics only.',
    fix: 'Check the network between encoder and server; see `ONAIR_RTMP_*_TIMEOUT_MS` and `ONAIR_RTMP_MIN_KBPS`.',
  },
  ONAIR_ERR_RTMP_TOO_MANY_CONNECTIONS: {
    when: 'A connection cap (in all, per address, without a publish per address). Log and metrics only.',
    fix: 'Close idle encoders; see `ONAIR_RTMP_MAX_CONNECTIONS*`.',
  },
  ONAIR_ERR_AD_WEBRTC_FEED: {
    when: 'An ad break started but its ffmpeg for WebRTC viewers could not start or died (the log line gives the reason). Log only: HLS viewers see the ads, WebRTC viewers the programme for the rest of the break.',
    fix: 'Check the ffmpeg named by `ONAIR_FFMPEG` and the hardware encoder (the ad is encoded like the live WebRTC layers); the next break tries again.',
  },
  ONAIR_ERR_INTERNAL: {
    when: 'A bug: the log has the details.',
    fix: 'Report it with the log lines around the request.',
  },
};

/** An error that maps to one catalogued code; `message` may be more precise than the catalogue's default. */
export class OnAirError extends Error {
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, message?: string) {
    super(message ?? ERRORS[code].message);
    this.name = 'OnAirError';
    this.code = code;
    this.status = ERRORS[code].status;
  }

  toJSON(): { error: { code: ErrorCode; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

/** Thrown at start-up when an environment variable has a bad value; the message names the variable. */
export class ConfigError extends Error {
  readonly variable: string;

  constructor(variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
    this.variable = variable;
  }
}

/** An operation on something already closed, or in the wrong state for it (mediasoup's InvalidStateError). */
export class InvalidStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidStateError';
  }
}
