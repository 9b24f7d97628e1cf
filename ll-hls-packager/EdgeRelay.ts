import http from 'node:http';
import https from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../lib/log.js';
import { TypedEmitter } from '../lib/emitter.js';
import { signPlaybackToken } from '../lib/signing.js';

/** Sent on the edge's requests to its origin: an edge relaying a stream is not one of its viewers (`routes.ts`). */
export const RELAY_HEADER = 'x-onair-relay';

/** What the edge keeps of one origin response: exactly what the origin sent, and the upstream token inside it. */
export interface RelayedResponse {
  status: number;
  contentType: string | undefined;
  cacheControl: string | undefined;
  retryAfter: string | undefined;
  body: Buffer;
  /** The `?token=` value (URI-encoded) the edge signed its request with; the origin wrote it into playlist URIs. */
  upstreamQuery: string;
  /** Set when the edge could not reach the origin at all (no origin response). */
  unreachable?: true;
}

/** What an upstream request was for (the `kind` label of onair_edge_upstream_requests_total). */
export type UpstreamKind = 'multivariant' | 'playlist' | 'blocking' | 'part' | 'segment' | 'init';

export type EdgeRelayEvents = {
  /** One request went to an origin. */
  upstream: [{ kind: UpstreamKind }];
};

export interface EdgeRelayOptions {
  /** Where a stream is live now (discovery); undefined: nowhere. */
  locate(streamId: string): Promise<{ internalUrl: string; eventId: string } | undefined>;
  /** The shared playback signing key: the edge signs its own upstream requests with it. */
  playbackSigningKey: string | undefined;
  log: Logger;
  /** A rendition nobody asked for this long loses its subscription; a stream with none left is dropped. */
  idleMs?: number;
  /** Streams held at once (beyond: the least recently asked one is dropped). */
  maxStreams?: number;
  /** Renditions per stream. */
  maxRenditions?: number;
  /** Distinct upstream requests in flight per rendition (a viewer asking past them gets 503 with Retry-After). */
  maxInFlight?: number;
}

/** Playlist responses and media files kept per rendition (a 30 s window of 200 ms parts is ~165 files). */
const MAX_PLAYLISTS = 256;
const MAX_MEDIA = 1_000;
/** A media file not in the newest playlist is dropped after this. */
const MEDIA_KEEP_MS = 15_000;
/** The largest response taken from an origin (a 2 s segment of the top rendition is a few MB). */
const MAX_BODY_BYTES = 32 * 1024 * 1024;
/** Connections to each origin (the subscriptions' blocking requests each hold one while parked). */
const MAX_SOCKETS_PER_ORIGIN = 256;
/** Until the first playlist tells the target duration. */
const DEFAULT_TARGET_SEC = 2;

interface Entry {
  promise: Promise<RelayedResponse>;
  at: number;
  /** The rendition generation it was fetched at (a non-blocking playlist is good until the next one). */
  generation: number;
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}

/** The next part a player would block on: the one after the last part the playlist lists. */
export function nextPart(playlist: string): { msn: number; part: number } | undefined {
  const sequence = /#EXT-X-MEDIA-SEQUENCE:(\d+)/.exec(playlist);
  if (!sequence) return undefined;
  let msn = Number(sequence[1]);
  let parts = 0;
  for (const line of playlist.split('\n')) {
    if (line.startsWith('#EXT-X-SKIP:')) msn += Number(/SKIPPED-SEGMENTS=(\d+)/.exec(line)?.[1] ?? 0);
    else if (line.startsWith('#EXT-X-PART:')) parts++;
    else if (line.startsWith('#EXTINF:')) {
      msn++;
      parts = 0;
    }
  }
  return { msn, part: parts };
}

/** One rendition of a relayed stream: its playlist responses, its media, its one upstream subscription. */
class RelayRendition {
  readonly playlists = new Map<string, Entry>();
  readonly media = new Map<string, Entry>();
  generation = 0;
  latest = '';
  targetSec = DEFAULT_TARGET_SEC;
  lastAsked = Date.now();
  subscribed = false;
  inFlight = 0;
  /** The origin's final playlist (ENDLIST): every playlist request is answered with it from then on. */
  final: Entry | undefined;
}

/** One relayed stream: the origin it comes from now, the token the edge signs with, its renditions. */
class RelayStream {
  readonly renditions = new Map<string, RelayRendition>();
  /** Aborts the stream's upstream requests in flight when the stream is dropped or the relay closes. */
  readonly abort = new AbortController();
  multivariant: Entry | undefined;
  lastAsked = Date.now();
  token = '';
  tokenExpiresAtSec = 0;
  closed = false;

  constructor(readonly id: string, public origin: string, public eventId: string) {}

  /** Some rendition got the origin's final playlist: the event is over (kept for viewers until idle). */
  get ended(): boolean {
    return [...this.renditions.values()].some((r) => r.final !== undefined);
  }

  reset(origin: string, eventId: string): void {
    this.origin = origin;
    this.eventId = eventId;
    this.multivariant = undefined;
    for (const rendition of this.renditions.values()) {
      rendition.playlists.clear();
      rendition.media.clear();
      rendition.latest = '';
      rendition.final = undefined;
      rendition.generation++;
    }
  }
}

/**
 * The LL-HLS edge relay. Per stream and rendition it keeps ONE upstream blocking-reload subscription to the origin
 * that holds the stream (found through discovery): it asks for the next part with `_HLS_msn`/`_HLS_part`, fetches
 * each new part once, and keeps the origin's exact responses in memory. Viewers' requests are answered from those
 * responses, keyed by their directives; identical requests in flight share one upstream request (like nginx's
 * `proxy_cache_lock`). What a viewer gets is byte for byte what the origin sent (its token substituted in URIs).
 */
export class EdgeRelay extends TypedEmitter<EdgeRelayEvents> {
  readonly #options: EdgeRelayOptions;
  readonly #streams = new Map<string, RelayStream>();
  readonly #idleMs: number;
  readonly #timer: NodeJS.Timeout;
  /** The edge's own connection pools to origins: bounded, and destroyed at close (nothing left open on an origin). */
  readonly #agents = {
    http: new http.Agent({ keepAlive: true, maxSockets: MAX_SOCKETS_PER_ORIGIN }),
    https: new https.Agent({ keepAlive: true, maxSockets: MAX_SOCKETS_PER_ORIGIN }),
  };
  #closed = false;

  constructor(options: EdgeRelayOptions) {
    super();
    this.#options = options;
    this.#idleMs = options.idleMs ?? 30_000;
    this.#timer = setInterval(() => this.#sweep(), Math.min(5_000, this.#idleMs));
    this.#timer.unref();
  }

  /** Streams held now (the onair_edge_streams gauge). */
  get streams(): number {
    return this.#streams.size;
  }

  /** Blocking requests on a rendition time out at the origin after three target durations. */
  blockMs(streamId: string, rendition: string): number {
    return 3 * (this.#streams.get(streamId)?.renditions.get(rendition)?.targetSec ?? DEFAULT_TARGET_SEC) * 1000;
  }

  /**
   * The stream, where it is live now; undefined when no origin holds it. Follows a stream that moved (the event
   * continued at another origin, or a new event). An event that ended here (the origin's final playlist came) is
   * served, ENDLIST and all, after the origin left discovery, until nobody asks for it.
   */
  async stream(streamId: string): Promise<RelayStream | undefined> {
    if (this.#closed) return undefined;
    const location = await this.#options.locate(streamId);
    let stream = this.#streams.get(streamId);
    if (!location) {
      if (stream?.ended) {
        stream.lastAsked = Date.now();
        return stream;
      }
      if (stream) this.#drop(stream);
      return undefined;
    }
    if (!stream) {
      const max = this.#options.maxStreams ?? 500;
      if (this.#streams.size >= max) {
        const oldest = [...this.#streams.values()].sort((a, b) => a.lastAsked - b.lastAsked)[0]!;
        this.#drop(oldest);
      }
      stream = new RelayStream(streamId, location.internalUrl, location.eventId);
      this.#streams.set(streamId, stream);
    } else if (stream.origin !== location.internalUrl || stream.eventId !== location.eventId) {
      this.#options.log.info({ streamId, origin: location.internalUrl, eventId: location.eventId }, 'edge: the stream moved to another origin or a new event began; following it');
      stream.reset(location.internalUrl, location.eventId);
    }
    stream.lastAsked = Date.now();
    return stream;
  }

  /** The multivariant playlist (kept a second: the origin's changes only with measured bandwidth). */
  multivariant(stream: RelayStream): Promise<RelayedResponse> {
    const entry = stream.multivariant;
    if (entry && Date.now() - entry.at < 1_000) return entry.promise;
    const promise = this.#fetch(stream, 'multivariant', 'index.m3u8', 10_000 + 2_000);
    stream.multivariant = { promise, at: Date.now(), generation: 0 };
    void promise.then((response) => {
      if (response.status !== 200 && stream.multivariant?.promise === promise) stream.multivariant = undefined;
    });
    return promise;
  }

  /**
   * A media playlist for these directives: the response kept for them, the request in flight for them, or a new
   * upstream request. Undefined when the rendition cap or the in-flight cap is reached.
   */
  playlist(stream: RelayStream, rendition: string, directives: { msn?: number; part?: number; skip?: string }): Promise<RelayedResponse> | undefined {
    const state = this.#rendition(stream, rendition);
    if (!state) return undefined;
    state.lastAsked = Date.now();
    this.#subscribe(stream, rendition, state);
    return this.#playlist(stream, rendition, state, directives);
  }

  /** A part, segment or init: fetched once from the origin, then kept while the playlists name it. */
  media(stream: RelayStream, rendition: string, file: string): Promise<RelayedResponse> | undefined {
    const state = this.#rendition(stream, rendition);
    if (!state) return undefined;
    state.lastAsked = Date.now();
    this.#subscribe(stream, rendition, state);
    return this.#media(stream, rendition, state, file);
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    for (const stream of this.#streams.values()) this.#drop(stream);
    this.#agents.http.destroy();
    this.#agents.https.destroy();
  }

  #rendition(stream: RelayStream, rendition: string): RelayRendition | undefined {
    let state = stream.renditions.get(rendition);
    if (!state) {
      if (stream.renditions.size >= (this.#options.maxRenditions ?? 16)) return undefined;
      state = new RelayRendition();
      stream.renditions.set(rendition, state);
    }
    return state;
  }

  #playlist(stream: RelayStream, rendition: string, state: RelayRendition, directives: { msn?: number; part?: number; skip?: string }): Promise<RelayedResponse> | undefined {
    // §6.2.5: directives are ignored once the playlist has EXT-X-ENDLIST (the origin answers so too).
    if (state.final) return state.final.promise;
    const key = `${directives.msn ?? ''}|${directives.part ?? ''}|${directives.skip ?? ''}`;
    const blocking = directives.msn !== undefined;
    const entry = state.playlists.get(key);
    // A blocking response stays right for its directives; a plain reload only until the subscription moves on.
    if (entry && (blocking || (entry.generation === state.generation && Date.now() - entry.at < 1_000))) return entry.promise;
    if (state.inFlight >= (this.#options.maxInFlight ?? 64)) return undefined;
    const query = [
      directives.msn === undefined ? '' : `_HLS_msn=${directives.msn}`,
      directives.part === undefined ? '' : `_HLS_part=${directives.part}`,
      directives.skip === undefined ? '' : `_HLS_skip=${directives.skip}`,
    ].filter(Boolean).join('&');
    state.inFlight++;
    const promise = this.#fetch(stream, blocking ? 'blocking' : 'playlist', `${rendition}/index.m3u8`, 3 * state.targetSec * 1000 + 2_000, query);
    const generation = state.generation;
    state.playlists.delete(key);
    if (state.playlists.size >= MAX_PLAYLISTS) state.playlists.delete(state.playlists.keys().next().value!);
    state.playlists.set(key, { promise, at: Date.now(), generation });
    void promise.then((response) => {
      state.inFlight--;
      // Errors are not kept: the next viewer asks again (a new upstream request, itself shared).
      if (response.status !== 200 && state.playlists.get(key)?.promise === promise) state.playlists.delete(key);
    });
    return promise;
  }

  #media(stream: RelayStream, rendition: string, state: RelayRendition, file: string): Promise<RelayedResponse> | undefined {
    const entry = state.media.get(file);
    if (entry) return entry.promise;
    if (state.inFlight >= (this.#options.maxInFlight ?? 64)) return undefined;
    const kind: UpstreamKind = /-a?init\d+\.mp4$/.test(file) ? 'init' : /-s\d+\.m4s$/.test(file) ? 'segment' : 'part';
    state.inFlight++;
    const promise = this.#fetch(stream, kind, `${rendition}/${file}`, 3 * state.targetSec * 1000 + 2_000);
    if (state.media.size >= MAX_MEDIA) state.media.delete(state.media.keys().next().value!);
    state.media.set(file, { promise, at: Date.now(), generation: state.generation });
    void promise.then((response) => {
      state.inFlight--;
      if (response.status !== 200 && state.media.get(file)?.promise === promise) state.media.delete(file);
    });
    return promise;
  }

  /**
   * The rendition's one upstream subscription: blocking reloads for the next part, in a loop, while viewers ask for
   * the rendition; each new part (and the hinted one) fetched once. Stops after `idleMs` without a viewer, when the
   * stream is gone from discovery or has ended.
   */
  #subscribe(stream: RelayStream, rendition: string, state: RelayRendition): void {
    if (state.subscribed || state.final || this.#closed || stream.closed) return;
    state.subscribed = true;
    void this.#run(stream, rendition, state).catch((error: unknown) => {
      this.#options.log.warn({ err: (error as Error).message, streamId: stream.id, rendition }, 'edge: subscription failed');
    }).finally(() => {
      state.subscribed = false;
    });
  }

  async #run(stream: RelayStream, rendition: string, state: RelayRendition): Promise<void> {
    let next: { msn: number; part: number } | undefined;
    let origin = stream.origin;
    while (!this.#closed && !stream.closed && Date.now() - state.lastAsked < this.#idleMs) {
      if (stream.origin !== origin) {
        origin = stream.origin;
        next = undefined;
      }
      const promise = this.#playlist(stream, rendition, state, next ?? {});
      const response = await promise;
      if (!response) {
        await sleep(200);
        continue;
      }
      // The stream moved while the request was out: that origin's answer is not this rendition's any more.
      if (stream.origin !== origin) continue;
      if (response.status !== 200) {
        // The origin timed out on the part (503): ask again. Anything else: start over from a plain reload.
        if (response.status !== 503 || response.unreachable) next = undefined;
        await sleep(response.status === 503 && !response.unreachable ? 0 : 500);
        // Gone from discovery: the stream is over here.
        if (response.unreachable || response.status === 404) {
          const found = await this.stream(stream.id);
          if (found !== stream) return;
        }
        continue;
      }
      const text = response.body.toString('utf8');
      const target = /#EXT-X-TARGETDURATION:(\d+)/.exec(text);
      if (target) state.targetSec = Number(target[1]);
      state.latest = text;
      state.generation++;
      this.#prefetch(stream, rendition, state, text);
      if (text.includes('#EXT-X-ENDLIST')) {
        // The event is over: this final playlist answers every viewer from now on, whatever discovery says next.
        state.final = { promise: Promise.resolve(response), at: Date.now(), generation: state.generation };
        return;
      }
      next = nextPart(text);
    }
  }

  /** Fetches each part the playlist lists and the hinted one (parked at the origin until it exists), once. */
  #prefetch(stream: RelayStream, rendition: string, state: RelayRendition, text: string): void {
    const files = [...text.matchAll(/#EXT-X-(?:PART|PRELOAD-HINT):[^\n]*URI="([^"?]+)/g)].map((m) => m[1]!);
    // Only the newest few: the earlier ones were fetched when they were new (or are asked for on demand).
    for (const file of files.slice(-3)) void this.#media(stream, rendition, state, file);
    const now = Date.now();
    for (const [file, entry] of state.media) {
      if (now - entry.at > MEDIA_KEEP_MS && !text.includes(file)) state.media.delete(file);
    }
  }

  async #fetch(stream: RelayStream, kind: UpstreamKind, path: string, timeoutMs: number, query = ''): Promise<RelayedResponse> {
    const token = this.#token(stream);
    const upstreamQuery = token === '' ? '' : `token=${encodeURIComponent(token)}`;
    const search = [query, upstreamQuery].filter(Boolean).join('&');
    const url = `${stream.origin}/live/${encodeURIComponent(stream.id)}/${path}${search ? `?${search}` : ''}`;
    this.safeEmit('upstream', { kind });
    const failed = (error: Error): RelayedResponse => {
      this.#options.log.debug({ err: error.message, streamId: stream.id, kind }, 'edge: upstream request failed');
      return { status: 503, contentType: undefined, cacheControl: 'no-store', retryAfter: '1', body: Buffer.alloc(0), upstreamQuery, unreachable: true };
    };
    return new Promise<RelayedResponse>((resolve) => {
      let target: URL;
      try {
        target = new URL(url);
      } catch (error) {
        resolve(failed(error as Error));
        return;
      }
      const secure = target.protocol === 'https:';
      const request = (secure ? https : http).request(target, {
        agent: secure ? this.#agents.https : this.#agents.http,
        headers: { [RELAY_HEADER]: '1' },
        signal: AbortSignal.any([AbortSignal.timeout(timeoutMs), stream.abort.signal]),
      }, (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_BODY_BYTES) request.destroy(new Error(`response over ${MAX_BODY_BYTES} bytes`));
          else chunks.push(chunk);
        });
        response.on('end', () => resolve({
          status: response.statusCode ?? 502,
          contentType: header(response.headers['content-type']),
          cacheControl: header(response.headers['cache-control']),
          retryAfter: header(response.headers['retry-after']),
          body: Buffer.concat(chunks),
          upstreamQuery,
        }));
        response.on('error', (error) => resolve(failed(error)));
      });
      request.on('error', (error) => resolve(failed(error)));
      request.end();
    });
  }

  /** The edge's own playback token for a stream (signed with the shared key), renewed well before it expires. */
  #token(stream: RelayStream): string {
    const key = this.#options.playbackSigningKey;
    if (key === undefined) return '';
    const nowSec = Math.floor(Date.now() / 1000);
    if (stream.tokenExpiresAtSec - nowSec < 600) {
      stream.tokenExpiresAtSec = nowSec + 3600;
      stream.token = signPlaybackToken(key, stream.id, stream.tokenExpiresAtSec);
    }
    return stream.token;
  }

  #sweep(): void {
    const now = Date.now();
    for (const stream of this.#streams.values()) {
      for (const [name, rendition] of stream.renditions) {
        if (now - rendition.lastAsked > this.#idleMs && !rendition.subscribed) stream.renditions.delete(name);
      }
      if (now - stream.lastAsked > this.#idleMs && stream.renditions.size === 0) this.#drop(stream);
    }
  }

  #drop(stream: RelayStream): void {
    stream.closed = true;
    stream.abort.abort();
    this.#streams.delete(stream.id);
  }
}
