import { randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * A request the node makes to its own routes (`app.inject`) to put a page together, marked so that routes which count
 * viewers do not count it: the page is no viewer until its player plays. The mark is a random value made at start and
 * known only to this process, compared in constant time; a client that sends the header only stops itself being
 * counted, which it could do anyway by not asking.
 */
const SELF_HEADER = 'x-onair-self';
const mark = randomBytes(16).toString('hex');

/** The headers of a request the node makes to itself. */
export const selfRequestHeaders: Readonly<Record<string, string>> = Object.freeze({ [SELF_HEADER]: mark });

/** Whether a request came from the node itself (see selfRequestHeaders). */
export function isSelfRequest(headers: Record<string, string | string[] | undefined>): boolean {
  const value = headers[SELF_HEADER];
  if (typeof value !== 'string' || value.length !== mark.length) return false;
  return timingSafeEqual(Buffer.from(value), Buffer.from(mark));
}
