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

/**
 * Characters that render as nothing (Unicode Default_Ignorable_Code_Point: the soft hyphen, zero-width spaces and
 * joiners, word joiner, invisible operators, BOM, variation selectors, CGJ, Mongolian selectors, tags): a writer can
 * put them inside a word without changing what readers see.
 */
const INVISIBLE = /\p{Default_Ignorable_Code_Point}/gu;

/**
 * Letters of other scripts that look like Latin ones (Unicode's confusables, the common cases): Cyrillic, Greek and
 * Armenian. Upper case is mapped before lower-casing, because it is the upper case that looks alike (Cyrillic В is B,
 * its lower case в is not b).
 */
const LOOK_ALIKES: Readonly<Record<string, string>> = {
  // Cyrillic
  'А': 'a', 'В': 'b', 'Е': 'e', 'К': 'k', 'М': 'm', 'Н': 'h', 'О': 'o', 'Р': 'p', 'С': 'c', 'Т': 't', 'Х': 'x', 'У': 'y',
  'І': 'i', 'Ј': 'j', 'Ѕ': 's', 'Ү': 'y', 'Ԁ': 'd', 'Ԛ': 'q', 'Ԝ': 'w', 'Ӏ': 'l',
  'а': 'a', 'е': 'e', 'о': 'o', 'р': 'p', 'с': 'c', 'х': 'x', 'у': 'y', 'і': 'i', 'ј': 'j', 'ѕ': 's', 'ԁ': 'd', 'һ': 'h',
  'ԛ': 'q', 'ԝ': 'w', 'ӏ': 'l', 'ү': 'y',
  // Greek
  'Α': 'a', 'Β': 'b', 'Ε': 'e', 'Ζ': 'z', 'Η': 'h', 'Ι': 'i', 'Κ': 'k', 'Μ': 'm', 'Ν': 'n', 'Ο': 'o', 'Ρ': 'p', 'Τ': 't',
  'Υ': 'y', 'Χ': 'x',
  'α': 'a', 'ε': 'e', 'ι': 'i', 'κ': 'k', 'ν': 'v', 'ο': 'o', 'ρ': 'p', 'τ': 't', 'υ': 'u', 'χ': 'x',
  // Armenian
  'ո': 'n', 'ս': 'u', 'օ': 'o', 'հ': 'h',
};
const LOOK_ALIKE = new RegExp(`[${Object.keys(LOOK_ALIKES).join('')}]`, 'gu');

/**
 * Combining marks on Latin, Greek, Cyrillic and Armenian letters and on symbols and spaces (accents, strike-through,
 * "Zalgo" stacks), and marks with no base: after NFKD they are what remains of an accented letter. Marks of the scripts
 * that need them to spell a word (Devanagari, Thai, Hebrew points…) are kept.
 */
const DECORATION = /(^|[\p{sc=Latin}\p{sc=Greek}\p{sc=Cyrillic}\p{sc=Armenian}\p{sc=Common}])\p{M}+/gu;

/**
 * The text a blocked word is looked for in (and each blocked word itself): what a reader sees, not how it is spelt.
 * Compatibility forms become their plain letters (NFKD: fullwidth, mathematical, circled), invisible characters go,
 * look-alike letters become the Latin letter they imitate, everything is lower-cased, and accents go. Letters map to
 * letters and nothing is inserted, so word boundaries stay where the reader sees them. Only for matching: the comment
 * is kept and sent as written.
 */
export function foldForMatching(text: string): string {
  return text
    .normalize('NFKD')
    .replace(INVISIBLE, '')
    .replace(LOOK_ALIKE, (letter) => LOOK_ALIKES[letter]!)
    .toLowerCase()
    // Lower-casing writes Σ at the end of a word as ς: one letter, whatever its place.
    .replace(/ς/gu, 'σ')
    .replace(DECORATION, '$1')
    .normalize('NFC');
}

/** Digits and symbols written for letters inside a word ("b4d", "a$$", "h3ll0"), and the letters they stand for. */
const LEET: Readonly<Record<string, readonly string[]>> = {
  '4': ['a'], '@': ['a'], '3': ['e'], '1': ['i', 'l'], '0': ['o'], '5': ['s'], '$': ['s'], '7': ['t'],
};

/** What a whole word may not touch on either side (the `\b` of every script). */
const WORD_CHAR = /[\p{L}\p{N}\p{M}_]/u;
const SPACE = /\s/u;
const DIGIT = /\p{N}/u;

/** The blocked words, folded, one code point per level; a space stands for any run of spaces in a phrase. */
interface WordTrie {
  next: Map<string, WordTrie>;
  end: boolean;
}

/**
 * A matcher for the blocked words: case-insensitive, on word boundaries (a blocked "ass" does not refuse "class"),
 * through compatibility forms (fullwidth), invisible characters, look-alike letters of other scripts and accents
 * (`foldForMatching`), and digits or symbols written for letters ("b4d", "@$$"). A phrase matches across any run of
 * spaces. A bare number never stands for a word: a blocked "lol" refuses "l0l" but not "Room 101"; a blocked word that
 * is itself a number matches that number.
 *
 * The words are a trie walked from each word start, not one regular expression: with thousands of words an alternation
 * costs V8 a scan of every alternative at every position (over 100 ms for one long comment), the trie only the letters
 * that can still lead to a word.
 */
export function blockedWordsMatcher(words: readonly string[]): (text: string) => boolean {
  const root: WordTrie = { next: new Map(), end: false };
  let empty = true;
  for (const word of words) {
    const parts = foldForMatching(word).split(/\s+/).filter((part) => part !== '');
    if (parts.length === 0) continue;
    let node = root;
    for (const char of parts.join(' ')) {
      let child = node.next.get(char);
      if (!child) {
        child = { next: new Map(), end: false };
        node.next.set(char, child);
      }
      node = child;
    }
    node.end = true;
    empty = false;
  }
  if (empty) return () => false;
  return (text) => {
    const chars = Array.from(foldForMatching(text));
    const isWord = chars.map((char) => WORD_CHAR.test(char));
    for (let start = 0; start < chars.length; start++) {
      if (start > 0 && isWord[start - 1]) continue;
      if (matchesFrom(root, chars, isWord, start, false, true)) return true;
    }
    return false;
  };
}

/**
 * Whether a blocked word starts at `at` below `node`. `substituted`: a digit or symbol stood for a letter on the way;
 * `numeric`: everything on the way was a digit (or space) — such a match is a number, and counts only when exact.
 */
function matchesFrom(node: WordTrie, chars: readonly string[], isWord: readonly boolean[], at: number, substituted: boolean, numeric: boolean): boolean {
  if (node.end && (!substituted || !numeric) && !isWord[at]) return true;
  const char = chars[at];
  if (char === undefined) return false;
  if (SPACE.test(char)) {
    const next = node.next.get(' ');
    if (!next) return false;
    let after = at + 1;
    while (after < chars.length && SPACE.test(chars[after]!)) after++;
    return matchesFrom(next, chars, isWord, after, substituted, numeric);
  }
  const stillNumeric = numeric && DIGIT.test(char);
  const same = node.next.get(char);
  if (same && matchesFrom(same, chars, isWord, at + 1, substituted, stillNumeric)) return true;
  for (const letter of LEET[char] ?? []) {
    const next = node.next.get(letter);
    if (next && matchesFrom(next, chars, isWord, at + 1, true, stillNumeric)) return true;
  }
  return false;
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
