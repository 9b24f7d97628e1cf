import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { createHmac } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import type { Logger } from '../lib/log.js';
import { feedSession } from './flvFeed.js';
import type { PublishSession } from './PublishSession.js';
import type { Refusal, RtmpIngest } from './RtmpIngest.js';
import { srtHelperPath } from './srt/helper.js';

export interface SrtIngestOptions {
  ingest: RtmpIngest;
  host: string;
  port: number;
  /** The receiver's latency: what SRT waits for retransmissions (about 4 × the publisher's round trip). */
  latencyMs: number;
  maxConnections: number;
  ffmpegPath: string;
  /** The streams that may publish, as `srtPassphrase` takes them (read at start and every `refreshMs`). */
  credentials: () => Promise<{ id: string; keyHash: string }[]>;
  /** What passphrases are derived with (the admin token: the same on every node of a deployment). */
  secret: string;
  log: Logger;
  /** How often the passphrases are read again (streams made, rotated or deleted on other nodes); default 10 s. */
  refreshMs?: number;
  /** The compiled listener; default the one `npm run setup` built. */
  helperPath?: string;
}

/**
 * A stream's SRT passphrase: derived from its key (through the key's hash, so it changes when the key is rotated) and
 * the deployment's secret; 32 characters (SRT takes 10-79). Never stored: every node derives it the same.
 */
export function srtPassphrase(secret: string, streamId: string, keyHash: string): string {
  return createHmac('sha256', secret).update(`onair-srt:${streamId}:${keyHash}`).digest('base64url').slice(0, 32);
}

/** Bytes of MPEG-TS waiting for a bridge's ffmpeg; a bridge that far behind is dropped. */
const MAX_QUEUED_BYTES = 8 * 1024 * 1024;
const FRAME_OPEN = 1;
const FRAME_DATA = 2;
const FRAME_CLOSE = 3;
const FRAME_STATS = 4;
const FRAME_SYNC = 5;
/** How long a refresh waits for the listener to confirm its passphrases are in effect. */
const SYNC_TIMEOUT_MS = 2_000;
/** Streams whose passphrases the listener holds at most (its table's bound). */
const MAX_STREAMS = 65_536;
/** A caller without usable media (H.264 in MPEG-TS) this long after it connected is let go. */
const START_TIMEOUT_MS = 15_000;
/** A caller that sends nothing for this long (its SRT keepalives hold the connection) is let go. */
const IDLE_TIMEOUT_MS = 10_000;

export interface SrtPacketTotals {
  received: number;
  lost: number;
  retransmitted: number;
  dropped: number;
}

interface Connection {
  id: number;
  streamId: string;
  session: PublishSession;
  ffmpeg: ChildProcessByStdio<Writable, Readable, Readable>;
  closed: boolean;
  /** SRT's counters for it so far (the listener reports them each second). */
  packets: SrtPacketTotals;
  /** When its last data came (a caller that goes silent is let go: IDLE_TIMEOUT_MS). */
  lastDataAt: number;
  start: NodeJS.Timeout | undefined;
}

/**
 * SRT ingest (issue #20): one listener (ingest/srt/onair-srt.c on Debian's libsrt) for every stream. A caller names
 * its stream in the SRT stream id and proves its key with the stream's passphrase (SRT's own handshake: a wrong one
 * never connects). Each accepted connection gets an ffmpeg that remuxes its MPEG-TS into FLV (H.264 copied, audio to
 * AAC) for a `PublishSession` from `RtmpIngest.publishFrom`: RTMP's one-publisher rule, admission, grace and
 * everything downstream. A refused publish (busy, no room) is dropped at once.
 */
export class SrtIngest {
  readonly #options: SrtIngestOptions;
  readonly #log: Logger;
  #helper: ChildProcessByStdio<Writable, Readable, Readable> | undefined;
  readonly #connections = new Map<number, Connection>();
  /** The passphrase each stream has in the listener now. */
  readonly #passphrases = new Map<string, string>();
  #refreshTimer: NodeJS.Timeout | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  /** Refreshes waiting for the listener's sync frame, by number. */
  readonly #syncs = new Map<number, () => void>();
  #nextSync = 1;
  /** The refresh running now: refreshes run one at a time, so an older snapshot never lands after a newer one. */
  #refreshing: Promise<void> = Promise.resolve();
  #closed = false;
  /** SRT's packet counts over the connections that ended (from the listener's close frames). */
  readonly #totals: SrtPacketTotals = { received: 0, lost: 0, retransmitted: 0, dropped: 0 };

  constructor(options: SrtIngestOptions) {
    this.#options = options;
    this.#log = options.log;
  }

  get connections(): number {
    return this.#connections.size;
  }

  /**
   * Packets since start, the open connections' so far included: received, lost on the way (SRT asked for them again),
   * retransmissions received, and dropped (too late to play: what a viewer would see as a glitch).
   */
  get totals(): SrtPacketTotals {
    const sum = { ...this.#totals };
    for (const { packets } of this.#connections.values()) {
      sum.received += packets.received;
      sum.lost += packets.lost;
      sum.retransmitted += packets.retransmitted;
      sum.dropped += packets.dropped;
    }
    return sum;
  }

  /** Starts the listener with every stream's passphrase; resolves with its port. */
  async listen(): Promise<number> {
    const helper = spawn(this.#options.helperPath ?? srtHelperPath(), [
      this.#options.host === '::' ? '::' : this.#options.host, String(this.#options.port), String(this.#options.latencyMs),
      String(this.#options.maxConnections),
    ], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#helper = helper;
    const port = await new Promise<number>((resolve, reject) => {
      let text = '';
      const onData = (chunk: Buffer): void => {
        text += chunk.toString();
        const match = /listening (\d+)/.exec(text);
        if (match) {
          helper.stderr.off('data', onData);
          resolve(Number(match[1]));
        }
      };
      helper.stderr.on('data', onData);
      helper.once('error', reject);
      helper.once('exit', (code) => reject(new Error(`the SRT listener exited (${code}): ${text.trim()}`)));
    });
    helper.stderr.on('data', (chunk: Buffer) => this.#log.warn({ output: chunk.toString().trim().slice(0, 500) }, 'SRT listener says'));
    helper.on('exit', (code, signal) => {
      if (!this.#closed) this.#log.error({ code, signal }, 'the SRT listener exited: SRT publishing is off until a restart');
      for (const connection of [...this.#connections.values()]) this.#drop(connection, 'the SRT listener exited');
    });
    helper.stdin.on('error', () => undefined);
    this.#read(helper.stdout);
    await this.refresh();
    this.#refreshTimer = setInterval(() => void this.refresh().catch((error: unknown) => {
      this.#log.warn({ err: (error as Error).message }, 'could not read the streams\' SRT passphrases (kept the last ones)');
    }), this.#options.refreshMs ?? 10_000);
    this.#refreshTimer.unref();
    this.#idleTimer = setInterval(() => {
      const now = Date.now();
      for (const connection of [...this.#connections.values()]) {
        if (now - connection.lastDataAt > IDLE_TIMEOUT_MS) this.#drop(connection, `nothing received for ${IDLE_TIMEOUT_MS} ms`);
      }
    }, 1000);
    this.#idleTimer.unref();
    return port;
  }

  /** Reads every stream's passphrase again and tells the listener what changed (also after a create, rotate or delete here). */
  async refresh(): Promise<void> {
    const run = this.#refreshing.then(() => this.#refresh());
    this.#refreshing = run.catch(() => undefined);
    return run;
  }

  async #refresh(): Promise<void> {
    const streams = (await this.#options.credentials()).slice(0, MAX_STREAMS);
    const wanted = new Map(streams.map(({ id, keyHash }) => [id, srtPassphrase(this.#options.secret, id, keyHash)]));
    // Deletions first: the listener's table is bounded, and room for the new ones comes from the gone ones.
    for (const id of [...this.#passphrases.keys()]) {
      if (wanted.has(id)) continue;
      this.#passphrases.delete(id);
      this.#command(`del ${id}`);
    }
    let changed = false;
    for (const [id, passphrase] of wanted) {
      if (this.#passphrases.get(id) === passphrase) continue;
      this.#passphrases.set(id, passphrase);
      this.#command(`set ${id} ${passphrase}`);
      changed = true;
    }
    // A key just made or rotated is usable over SRT when the API answers: wait until the listener has it.
    if (changed) await this.#sync();
  }

  #sync(): Promise<void> {
    const n = this.#nextSync++;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#syncs.delete(n);
        resolve();
      }, SYNC_TIMEOUT_MS);
      this.#syncs.set(n, () => {
        clearTimeout(timer);
        this.#syncs.delete(n);
        resolve();
      });
      this.#command(`sync ${n}`);
    });
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#refreshTimer);
    clearInterval(this.#idleTimer);
    for (const connection of [...this.#connections.values()]) this.#drop(connection, 'the node is closing');
    this.#helper?.stdin.end();
    this.#helper?.kill('SIGTERM');
  }

  #command(line: string): void {
    if (this.#helper && !this.#helper.stdin.destroyed) this.#helper.stdin.write(`${line}\n`);
  }

  /** The listener's frames: a 9-byte header (type, connection, length) and the payload. */
  #read(stdout: Readable): void {
    let pending: Buffer = Buffer.alloc(0);
    stdout.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      let offset = 0;
      while (pending.length - offset >= 9) {
        const length = pending.readUInt32BE(offset + 5);
        if (pending.length - offset < 9 + length) break;
        const type = pending[offset]!;
        const id = pending.readUInt32BE(offset + 1);
        const payload = pending.subarray(offset + 9, offset + 9 + length);
        offset += 9 + length;
        try {
          this.#frame(type, id, payload);
        } catch (error) {
          this.#log.error({ err: error, connection: id }, 'SRT frame not handled');
        }
      }
      pending = offset === pending.length ? Buffer.alloc(0) : Buffer.from(pending.subarray(offset));
    });
  }

  #frame(type: number, id: number, payload: Buffer): void {
    if (type === FRAME_OPEN) {
      const [streamId = '', host = '', port = ''] = payload.toString().split(' ');
      this.#open(id, streamId, host, Number(port));
    } else if (type === FRAME_DATA) {
      const connection = this.#connections.get(id);
      if (!connection || connection.closed) return;
      if (connection.ffmpeg.stdin.writableLength > MAX_QUEUED_BYTES) {
        this.#drop(connection, `its remux is ${MAX_QUEUED_BYTES} bytes behind`);
        return;
      }
      connection.lastDataAt = Date.now();
      // A copy: the payload is a view of a 64 KiB read holding other connections' data too.
      connection.ffmpeg.stdin.write(Buffer.from(payload));
    } else if (type === FRAME_SYNC) {
      this.#syncs.get(id)?.();
    } else if (type === FRAME_STATS) {
      const connection = this.#connections.get(id);
      if (connection) connection.packets = packetCounts(payload.toString());
    } else if (type === FRAME_CLOSE) {
      const [why = '', counts = ''] = payload.toString().split('|');
      const packets = packetCounts(counts);
      this.#totals.received += packets.received;
      this.#totals.lost += packets.lost;
      this.#totals.retransmitted += packets.retransmitted;
      this.#totals.dropped += packets.dropped;
      const connection = this.#connections.get(id);
      if (connection) {
        connection.packets = { received: 0, lost: 0, retransmitted: 0, dropped: 0 };
        this.#gone(connection, `SRT: ${why}`, packets);
      }
    }
  }

  #open(id: number, streamId: string, host: string, port: number): void {
    const remoteAddress = host;
    const taken = this.#options.ingest.publishFrom(streamId, remoteAddress);
    if (!('id' in taken)) {
      this.#log.info({ streamId, remoteAddress, port, reason: (taken as Refusal).reason }, 'SRT publish refused: dropped');
      this.#command(`drop ${id}`);
      return;
    }
    // Reading its stdin, the remux ends with us: the pipe closes however this process dies.
    const ffmpeg = spawn(this.#options.ffmpegPath, srtFfmpegArgs(), { stdio: ['pipe', 'pipe', 'pipe'] });
    const connection: Connection = {
      id, streamId, session: taken, ffmpeg, closed: false, packets: { received: 0, lost: 0, retransmitted: 0, dropped: 0 }, lastDataAt: Date.now(), start: undefined,
    };
    this.#connections.set(id, connection);
    ffmpeg.stdin.on('error', () => undefined);
    // A spawn that fails (EAGAIN, EMFILE) drops the caller: never an uncaught error.
    ffmpeg.once('error', (error) => this.#drop(connection, `the remux could not start: ${error.message}`));
    feedSession(ffmpeg, taken, (reason) => this.#drop(connection, reason));
    // A caller that holds the connection (SRT keepalives) but sends nothing usable is let go.
    connection.start = setTimeout(() => {
      if (!taken.source) this.#drop(connection, `no usable media within ${START_TIMEOUT_MS} ms`);
    }, START_TIMEOUT_MS);
    // The operator ended the stream (or deleted it): the caller is cut off.
    taken.once('close', () => this.#drop(connection, 'the publish session closed'));
    taken.on('unsupported', (message) => this.#drop(connection, `unsupported: ${message}`));
    this.#log.info({ streamId, remoteAddress, port, connection: id }, 'SRT publisher connected');
  }

  /** The caller closed (or its link broke): the remux finishes what it has, then the grace starts. */
  #gone(connection: Connection, reason: string, packets?: SrtPacketTotals): void {
    if (connection.closed) return;
    connection.closed = true;
    this.#connections.delete(connection.id);
    clearTimeout(connection.start);
    // The session is left at once: what the remux still holds has nowhere to go, and a remux whose stdout downstream
    // paused would never exit by itself.
    connection.ffmpeg.stdout.destroy();
    connection.ffmpeg.kill('SIGKILL');
    this.#log.info({ streamId: connection.streamId, reason, ...(packets ? { packets } : {}) }, 'SRT publisher gone');
    this.#options.ingest.leave(connection.session);
  }

  /** OnAir ends the connection (refused, ended, its remux failed). */
  #drop(connection: Connection, reason: string): void {
    if (connection.closed) return;
    this.#command(`drop ${connection.id}`);
    this.#gone(connection, reason);
  }
}

/** "<received> <lost> <retransmitted> <dropped>" from the listener. */
function packetCounts(text: string): SrtPacketTotals {
  const [received = 0, lost = 0, retransmitted = 0, dropped = 0] = text.split(' ').map((n) => Math.max(0, Number(n) || 0));
  return { received, lost, retransmitted, dropped };
}

/**
 * The remux of one SRT publish: MPEG-TS on stdin (what OBS and ffmpeg send over SRT), H.264 copied, audio (AAC, MP2,
 * AC-3… whatever the caller chose) made AAC, FLV on stdout.
 */
export function srtFfmpegArgs(): string[] {
  return [
    '-hide_banner', '-loglevel', 'warning', '-nostdin',
    '-probesize', '1000000', '-analyzeduration', '1000000',
    '-f', 'mpegts', '-i', 'pipe:0',
    '-map', '0:v:0', '-map', '0:a:0?',
    '-c:v', 'copy', '-c:a', 'aac', '-b:a', '160k', '-ar', '48000',
    '-f', 'flv', '-flvflags', 'no_duration_filesize', 'pipe:1',
  ];
}
