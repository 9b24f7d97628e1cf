import { addressKey as keyOfAddress, isIpAddress } from '../lib/address.js';
import type { ErrorCode } from '../lib/errors.js';

/** Comment text after trimming, in code points (SPEC: 1–500 characters). */
export const MAX_COMMENT_CHARS = 500;
/** Display names after trimming, in code points. */
export const MAX_NAME_CHARS = 32;

/**
 * What a comment or a name may not hold: control characters (Unicode Cc: C0, DEL, C1 — newlines and tabs included,
 * a comment is one line), the bidirectional embedding/override/isolate controls that reorder the text around them
 * (Trojan Source, CVE-2021-42574), and lone surrogates (not text; a database would store them as U+FFFD).
 */
const FORBIDDEN = /[\p{Cc}\u202A-\u202E\u2066-\u2069]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/u;

export type Checked<T> = { ok: true; value: T } | { ok: false; code: ErrorCode; message?: string };

const refuse = (code: ErrorCode, message?: string): Checked<never> => (message === undefined ? { ok: false, code } : { ok: false, code, message });

function codePoints(text: string): number {
  let count = 0;
  for (const _ of text) count++;
  return count;
}

/** A comment's text: trimmed, 1–500 code points, no control characters. The text is data: nothing here escapes it. */
export function checkCommentText(raw: unknown): Checked<string> {
  if (typeof raw !== 'string') return refuse('ONAIR_ERR_CHAT_BAD_PAYLOAD', 'comment { text } needs text as a string');
  // Cheap bound before any work on a string that cannot pass (UTF-16 units ≥ code points, 2 per astral one).
  if (raw.length > 4 * MAX_COMMENT_CHARS) return refuse('ONAIR_ERR_CHAT_TEXT_TOO_LONG');
  const text = raw.trim();
  if (text === '') return refuse('ONAIR_ERR_CHAT_TEXT_EMPTY');
  if (FORBIDDEN.test(text)) return refuse('ONAIR_ERR_CHAT_TEXT_INVALID');
  if (codePoints(text) > MAX_COMMENT_CHARS) return refuse('ONAIR_ERR_CHAT_TEXT_TOO_LONG');
  return { ok: true, value: text };
}

/** The most a writer's picture can be behind the live edge: a DVR window of an hour. */
export const MAX_BEHIND_MS = 3_600_000;

/**
 * `comment { behindMs }`: how far behind the live edge the writer's picture was, in ms (a player knows it: hls.js's
 * `latency`), so that the replay shows the comment beside what its writer saw. Optional; a number from 0 to
 * MAX_BEHIND_MS, rounded.
 */
export function checkBehindMs(raw: unknown): Checked<number | undefined> {
  if (raw === undefined || raw === null) return { ok: true, value: undefined };
  if (typeof raw !== 'number' || !Number.isFinite(raw) || raw < 0 || raw > MAX_BEHIND_MS) {
    return refuse('ONAIR_ERR_CHAT_BAD_PAYLOAD', `comment { behindMs } is a number of milliseconds from 0 to ${MAX_BEHIND_MS}`);
  }
  return { ok: true, value: Math.round(raw) };
}

/** A display name: trimmed, 1–32 code points, no control characters. */
export function checkName(raw: unknown): Checked<string> {
  if (typeof raw !== 'string') return refuse('ONAIR_ERR_CHAT_NAME_INVALID', 'join { name } needs the name as a string');
  if (raw.length > 4 * MAX_NAME_CHARS) return refuse('ONAIR_ERR_CHAT_NAME_INVALID');
  const name = raw.trim();
  if (name === '' || FORBIDDEN.test(name) || codePoints(name) > MAX_NAME_CHARS) return refuse('ONAIR_ERR_CHAT_NAME_INVALID');
  return { ok: true, value: name };
}

const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * A matcher for the blocked words: case-insensitive, on word boundaries (a blocked "ass" does not refuse "class"),
 * after NFKC normalisation (fullwidth and other compatibility forms match their plain letters). A phrase matches
 * across any run of spaces.
 */
export function blockedWordsMatcher(words: readonly string[]): (text: string) => boolean {
  const patterns = words
    .map((word) => word.normalize('NFKC').trim())
    .filter((word) => word !== '')
    .map((word) => word.split(/\s+/).map(escapeRegExp).join('\\s+'));
  if (patterns.length === 0) return () => false;
  const re = new RegExp(`(?<![\\p{L}\\p{N}\\p{M}_])(?:${patterns.join('|')})(?![\\p{L}\\p{N}\\p{M}_])`, 'iu');
  return (text) => re.test(text.normalize('NFKC'));
}

/** U+FE0F (emoji presentation selector): clients send ❤️ and ❤ alike; both mean the configured reaction. */
const VARIATION_SELECTOR = /\uFE0F/g;

/** The configured reactions, and a lookup that maps what a client sent onto one of them. */
export class ReactionSet {
  readonly list: readonly string[];
  readonly #byKey: Map<string, string>;

  constructor(reactions: readonly string[]) {
    this.list = [...reactions];
    this.#byKey = new Map(reactions.map((emoji) => [emoji.replace(VARIATION_SELECTOR, ''), emoji]));
  }

  /** The configured spelling of `raw`, or undefined when it is not one of the reactions. */
  resolve(raw: unknown): string | undefined {
    if (typeof raw !== 'string' || raw.length > 64) return undefined;
    return this.#byKey.get(raw.trim().replace(VARIATION_SELECTOR, ''));
  }
}

/**
 * lib/address.ts's key (IPv4 as is, IPv6 by its /64), or undefined when `address` is not an IP address: chat's callers
 * choose their own fallback then.
 */
export function addressKey(address: string): string | undefined {
  return isIpAddress(address) ? keyOfAddress(address) : undefined;
}

/** A plain object (not an array, not null): the only payload shape the chat events take. */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value) && !ArrayBuffer.isView(value);
}
