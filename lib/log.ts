import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/**
 * The one pino logger. Child loggers carry context (`{ streamId }`). Paths that could carry a secret are redacted
 * here so that no module has to remember it.
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
        'req.headers.authorization', 'headers.authorization', 'password', '*.password',
      ],
      censor: '[redacted]',
    },
  };
  return options.destination === undefined ? pino(settings) : pino(settings, options.destination);
}

/** Replaces the stream key in an RTMP path (`/live/<key>`) so log lines never carry it. */
export function redactStreamPath(text: string): string {
  return text.replace(/(\/live\/)[^\s/?]+/g, '$1[redacted]');
}
