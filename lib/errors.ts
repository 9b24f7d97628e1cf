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
  ONAIR_ERR_INTERNAL: { status: 500, message: 'Internal error' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

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
