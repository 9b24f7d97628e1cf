import { ERRORS, ERROR_HELP, type ErrorCode } from './errors.js';

type Section = 'http' | 'chat' | 'publish' | 'rtmp';

/** Where a code is documented: by what carries it to the client. */
function sectionOf(code: ErrorCode): Section {
  if (code.startsWith('ONAIR_ERR_CHAT_')) return 'chat';
  if (code.startsWith('ONAIR_ERR_PUBLISH_') || code.startsWith('ONAIR_ERR_WHIP_') || code === 'ONAIR_ERR_PLAY_NOT_SUPPORTED') return 'publish';
  if (code.startsWith('ONAIR_ERR_RTMP_')) return 'rtmp';
  return 'http';
}

/** The sections of `docs/errors.md`, in order. */
const SECTIONS: Record<Section, { title: string; intro: string }> = {
  http: {
    title: 'HTTP API, playback and WHEP',
    intro: 'Every HTTP answer that is not a success: `{ "error": { "code", "message" } }` with the status below.',
  },
  chat: {
    title: 'Chat',
    intro: 'Sent as Socket.IO `error { code, message, retryAfterMs? }` events and in refused acknowledgements; the status is '
      + 'what the chat\'s HTTP routes send.',
  },
  publish: {
    title: 'Publishing (RTMP, RTMPS, WHIP)',
    intro: 'A refused RTMP or RTMPS publish gets an `onStatus` error whose description is `<code>: <message>` (ffmpeg prints '
      + 'it, OBS logs it), then the connection closes; RTMP has no status: the column says what the HTTP equivalent would '
      + 'be. A refused WHIP offer (`POST /live/:id/whip`) gets that status with `{ "error": { "code", "message" } }`. '
      + '`onair_publish_refused_total{reason}` counts the refusals of both.',
  },
  rtmp: {
    title: 'RTMP connections',
    intro: 'Not on the wire: a connection the ingest guard closes gets one log line (`RTMP connection closed`) with its code, '
      + 'and `onair_rtmp_dropped_total{reason}` counts it. The status says what the HTTP equivalent would be.',
  },
};

function cell(text: string): string {
  return text.replace(/\|/g, '\\|');
}

/** `docs/errors.md`, made from the catalogue (scripts/errors-doc.mjs writes it; test/docs.test.ts compares it). */
export function errorsMarkdown(): string {
  const lines = [
    '# Errors',
    '',
    '<!-- Generated from lib/errors.ts by `npm run docs`: edit the catalogue there, not this file. -->',
    '',
    'Every error OnAir sends has a stable code from one catalogue (`lib/errors.ts`); clients, docs and tests rely on it.',
    'The message may be more precise than the catalogue\'s default (it names the field, the limit, the reason).',
    '',
  ];
  const codes = Object.keys(ERRORS) as ErrorCode[];
  for (const [key, section] of Object.entries(SECTIONS)) {
    lines.push(`## ${section.title}`, '', section.intro, '', '| code | status | meaning | what to do |', '|---|---|---|---|');
    for (const code of codes.filter((c) => sectionOf(c) === key)) {
      const { when, fix } = ERROR_HELP[code];
      lines.push(`| \`${code}\` | ${ERRORS[code].status} | ${cell(when)} | ${cell(fix)} |`);
    }
    lines.push('');
  }
  return lines.join('\n');
}
