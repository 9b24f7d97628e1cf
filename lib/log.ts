import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/**
 * The value of any `…token=` (query parameters such as `?token=`, `&access_token=`, also percent-encoded) and of any
 * `Bearer` credential. Values end where a URL or a JSON string does; over-redacting a few characters is harmless.
 */
const SECRETS_IN_TEXT = /(token(?:=|%3D)|\bBearer\s+)[^&\s"'#\\]+/gi;

/** `text` with every token value in a URL and every bearer credential replaced by `[redacted]`. */
export function redactSecrets(text: string): string {
  return text.replace(SECRETS_IN_TEXT, '$1[redacted]');
}

/**
 * The one pino logger. Child loggers carry context (`{ streamId }`). Secrets are redacted here so that no module has
 * to remember it: fields that hold one by name (`redact`), and, in every finished line at every level, token values in
 * URLs and bearer credentials wherever they appear (a request URL, a message, ffmpeg's stderr, an error's stack).
 */
export function createLogger(options: {
  level?: string;
  pretty?: boolean;
  /** Where the JSON lines go; default stdout. Tests pass a stream that keeps them. */
  destination?: DestinationStream;
} = {}): Logger {
  const settings = {
    level: options.level ?? process.env.ONAIR_LOG_LEVEL ?? 'info',
    base: undefined,
    redact: {
      paths: [
        'streamKey', '*.streamKey', 'token', '*.token', 'adminToken', '*.adminToken',
        'authorization', '*.authorization', 'req.headers.authorization', 'headers.authorization', 'password', '*.password',
      ],
      censor: '[redacted]',
    },
    hooks: { streamWrite: redactSecrets },
  };
  return options.destination === undefined ? pino(settings) : pino(settings, options.destination);
}

/** Replaces the stream key in an RTMP path (`/live/<key>`) so log lines never carry it. */
export function redactStreamPath(text: string): string {
  return text.replace(/(\/live\/)[^\s/?]+/g, '$1[redacted]');
}
