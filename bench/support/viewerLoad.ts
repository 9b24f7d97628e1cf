import { monitorEventLoopDelay } from 'node:perf_hooks';
import { gunzipSync } from 'node:zlib';
import { epochMs } from './clock.js';
import { HttpConnection } from './httpClient.js';
import { newestPart, nextPartQuery, type NewestPart } from './playlist.js';

/*
 * The load generator of bench/viewers.ts, in a process of its own (started with fork()) so that it never shares an
 * event loop with the server it loads. N simulated low-latency viewers, each on its own keep-alive connection,
 * spread over the renditions given:
 *
 * - 'blocking' (LL-HLS, rfc8216bis §6.2.5.2): GET the media playlist, then forever: GET it with
 *   `_HLS_msn/_HLS_part` for the part after the newest it has (the server holds the request until that part exists),
 *   then GET each part it has not had yet, in order.
 * - 'polling' (the same bytes from a static server that cannot block): GET the playlist every `pollMs` (each viewer
 *   at its own phase, a fixed cadence that does not drift with response times), then GET each new part, in order.
 *
 * Viewers start evenly over `rampMs`; parts are recorded from `measureFrom` to `measureTo`, and the viewers keep going
 * for `tailMs` more so that the last parts of the window are not cut short, then stop. A non-200 answer, a playlist
 * without parts, a transport error or a timeout is an error; with `stopOnError`, the first one ends the run early.
 *
 * Messages: from the parent { type: 'start', options: LoadOptions }; to the parent { type: 'measuring' } when the
 * window opens, { type: 'measured' } when it closes, then { type: 'result', result: LoadResult }.
 */

export interface LoadOptions {
  mode: 'blocking' | 'polling';
  host: string;
  port: number;
  /** Playlist path of each rendition; viewer i follows playlists[i % length]. */
  playlists: { rendition: string; path: string }[];
  viewers: number;
  rampMs: number;
  warmupMs: number;
  measureMs: number;
  tailMs: number;
  pollMs: number;
  requestTimeoutMs: number;
  stopOnError: boolean;
  /** Ask for gzip as browsers do (playlists then come gzipped; the generator inflates them). Default: no. */
  acceptGzip?: boolean;
  /** Each viewer sends a playback session id of its own (`X-Playback-Session-Id`), as players do. Default: no. */
  sessions?: boolean;
}

export interface LoadResult {
  /** `${rendition}/${sequence}` → the times the viewers had the whole part (ms since the epoch). */
  receipts: Record<string, number[]>;
  /** Request sent → whole part received, ms, for the parts received in the window. */
  fetchMs: number[];
  requests: number;
  /** Requests sent within the window. */
  windowRequests: number;
  errors: number;
  firstErrors: string[];
  /** TCP connections opened beyond one per viewer (keep-alive broken). */
  reconnects: number;
  measureFrom: number;
  measureTo: number;
  /** Whether the run ended early on an error. */
  stoppedEarly: boolean;
  /** This process's CPU over the window, core-seconds per second. */
  cpuPerSec: number;
  /** Event-loop delay over the window (a generator too busy to read responses on time inflates every figure). */
  loopDelayP50Ms: number;
  loopDelayP99Ms: number;
}

class Load {
  readonly receipts = new Map<string, number[]>();
  readonly fetchMs: number[] = [];
  requests = 0;
  windowRequests = 0;
  connections = 0;
  errors = 0;
  firstErrors: string[] = [];
  stopped = false;
  stoppedEarly = false;
  readonly #onStop: (() => void)[] = [];

  constructor(readonly options: LoadOptions, readonly measureFrom: number, readonly measureTo: number) {}

  /** Counts a request about to be sent. */
  sent(): void {
    this.requests += 1;
    const now = epochMs();
    if (now >= this.measureFrom && now <= this.measureTo) this.windowRequests += 1;
  }

  record(rendition: string, sequence: number, sentAt: number, at: number): void {
    if (at < this.measureFrom || at > this.measureTo + this.options.tailMs) return;
    const key = `${rendition}/${sequence}`;
    let list = this.receipts.get(key);
    if (!list) this.receipts.set(key, (list = []));
    list.push(at);
    this.fetchMs.push(at - sentAt);
  }

  error(message: string): void {
    if (this.stopped) return;
    this.errors += 1;
    if (this.firstErrors.length < 5) this.firstErrors.push(message);
    if (this.options.stopOnError) {
      this.stoppedEarly = true;
      this.stop();
    }
  }

  onStop(callback: () => void): void {
    this.#onStop.push(callback);
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const callback of this.#onStop) callback();
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** One viewer; resolves when the load stops. */
async function viewer(load: Load, index: number): Promise<void> {
  const { options } = load;
  const { rendition, path } = options.playlists[index % options.playlists.length]!;
  const base = path.slice(0, path.lastIndexOf('/') + 1);
  const connection = new HttpConnection(options.host, options.port, options.requestTimeoutMs, {
    acceptGzip: options.acceptGzip === true,
    ...(options.sessions ? { sessionId: `bench-viewer-${index}-${process.pid}` } : {}),
  });
  load.onStop(() => {
    load.connections += connection.connects;
    connection.close();
  });
  await sleep((index * options.rampMs) / options.viewers);

  let have: NewestPart | undefined;
  /** GET the parts after `have` up to `newest`, in order. */
  const fetchParts = async (newest: NewestPart): Promise<void> => {
    const from = have ? have.sequence + 1 : newest.sequence;
    for (let sequence = from; sequence <= newest.sequence && !load.stopped; sequence += 1) {
      const sentAt = epochMs();
      load.sent();
      const response = await connection.get(`${base}${newest.prefix}-p${sequence}.m4s`);
      const at = epochMs();
      if (response.status !== 200 || response.body.length === 0) throw new Error(`part ${sequence} of ${rendition}: ${response.status}`);
      load.record(rendition, sequence, sentAt, at);
    }
    have = newest;
  };

  let nextPoll = epochMs();
  while (!load.stopped) {
    try {
      let url = path;
      if (options.mode === 'blocking' && have) url = `${path}?${nextPartQuery(have)}`;
      if (options.mode === 'polling') {
        await sleep(nextPoll - epochMs());
        // A fixed cadence: a late cycle is followed at once by the next, never by a burst of catch-up polls.
        nextPoll = Math.max(nextPoll + options.pollMs, epochMs());
        if (load.stopped) break;
      }
      load.sent();
      const response = await connection.get(url);
      if (response.status !== 200) throw new Error(`playlist of ${rendition}: ${response.status} ${response.body.toString('utf8').slice(0, 100)}`);
      const newest = newestPart((response.gzipped ? gunzipSync(response.body) : response.body).toString('latin1'));
      if (!newest) throw new Error(`playlist of ${rendition} lists no part`);
      if (!have || newest.sequence > have.sequence) await fetchParts(newest);
    } catch (error) {
      if (load.stopped) break;
      load.error((error as Error).message);
      have = undefined;
      await sleep(options.pollMs);
    }
  }
  return undefined;
}

async function runLoad(options: LoadOptions, send: (message: unknown) => void): Promise<LoadResult> {
  const start = epochMs();
  const measureFrom = start + options.rampMs + options.warmupMs;
  const measureTo = measureFrom + options.measureMs;
  const load = new Load(options, measureFrom, measureTo);
  const delay = monitorEventLoopDelay({ resolution: 10 });
  let cpuFrom = process.cpuUsage();
  const timers = [
    setTimeout(() => {
      cpuFrom = process.cpuUsage();
      delay.enable();
      send({ type: 'measuring' });
    }, measureFrom - start),
    setTimeout(() => send({ type: 'measured' }), measureTo - start),
    setTimeout(() => load.stop(), measureTo + options.tailMs - start),
  ];
  load.onStop(() => {
    for (const timer of timers) clearTimeout(timer);
  });
  const viewers = Array.from({ length: options.viewers }, (_, i) => viewer(load, i));
  await Promise.all(viewers);
  const cpu = process.cpuUsage(cpuFrom);
  delay.disable();
  const windowSec = Math.max(0.001, (Math.min(epochMs(), measureTo) - measureFrom) / 1000);
  return {
    receipts: Object.fromEntries(load.receipts),
    fetchMs: load.fetchMs,
    requests: load.requests,
    windowRequests: load.windowRequests,
    errors: load.errors,
    firstErrors: load.firstErrors,
    reconnects: Math.max(0, load.connections - options.viewers),
    measureFrom,
    measureTo: Math.min(epochMs(), measureTo),
    stoppedEarly: load.stoppedEarly,
    cpuPerSec: (cpu.user + cpu.system) / 1e6 / windowSec,
    loopDelayP50Ms: delay.count > 0 ? delay.percentile(50) / 1e6 : NaN,
    loopDelayP99Ms: delay.count > 0 ? delay.percentile(99) / 1e6 : NaN,
  };
}

if (process.send) {
  const send = (message: unknown): void => {
    process.send?.(message);
  };
  process.once('message', (message: { type: string; options: LoadOptions }) => {
    if (message.type !== 'start') return;
    runLoad(message.options, send).then((result) => {
      // Exit once the (large) result has been handed to the channel.
      process.send?.({ type: 'result', result }, undefined, {}, () => process.exit(0));
    }, (error: unknown) => {
      process.stderr.write(`viewer load: ${(error as Error)?.stack ?? String(error)}\n`);
      process.exit(1);
    });
  });
  // The benchmark went away: do not outlive it.
  process.on('disconnect', () => process.exit(0));
}
