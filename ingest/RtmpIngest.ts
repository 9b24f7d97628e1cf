import net from 'node:net';
import tls from 'node:tls';
import { constants as cryptoConstants, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { addressKey } from '../lib/address.js';
import { TypedEmitter } from '../lib/emitter.js';
import { ERRORS, type ErrorCode } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import { defaultLimits } from '../lib/limits.js';
import { RTMP_LIMITS, type RtmpLimits } from './limits.js';
import { createRtmpProtocol, RtmpViolation, type AvPacket, type ConnectRequest } from './nms.js';
import { PublishSession, type RtpPassthrough } from './PublishSession.js';

/** The RTMP application OBS publishes to: `rtmp://host/live` + stream key. */
export const RTMP_APP = 'live';

export type AuthorizeResult = { ok: true; streamId: string } | { ok: false; reason: string };

export interface RtmpIngestOptions {
  host: string;
  port: number;
  /** Checks a stream key; must compare in constant time and never log the key. */
  authorize: (streamKey: string) => Promise<AuthorizeResult>;
  /** A publisher that drops and returns within this window continues the same event. */
  reconnectGraceMs: number;
  log: Logger;
  /** Bounds on what one client may cost (ingest/limits.ts); defaults when absent. */
  limits?: Partial<RtmpLimits>;
  /**
   * Admission control for a publish that would start a new event (a reconnect within the grace is always let in):
   * returns why it is refused (`no-capacity`, with a detail for the log), or undefined to let it in. `live` counts
   * the events on this ingest, those waiting for their publisher included.
   */
  admit?: (request: { streamId: string; live: number }) => string | undefined;
  /**
   * RTMPS: RTMP over TLS on a second port, with these PEM files (ONAIR_RTMPS_PORT, ONAIR_TLS_CERT, ONAIR_TLS_KEY). The
   * same guard counts the TCP connection before its TLS handshake, and the handshake deadline covers the handshake.
   */
  tls?: { port: number; certFile: string; keyFile: string };
}

export interface Refusal {
  reason: 'bad-key' | 'busy' | 'bad-app' | 'play-not-supported' | 'unsupported' | 'no-capacity';
  remoteAddress: string;
  streamId?: string;
  /** Why, for the log (never the key). */
  detail?: string;
}

/**
 * The catalogued code of each refusal: sent to the client as the description of an `onStatus` error (ffmpeg prints
 * it as `Server error: <code>: <message>`; OBS logs it), logged, and counted by reason.
 */
export const REFUSAL_CODES = {
  'bad-key': 'ONAIR_ERR_PUBLISH_BAD_KEY',
  busy: 'ONAIR_ERR_PUBLISH_BUSY',
  'bad-app': 'ONAIR_ERR_PUBLISH_BAD_APP',
  'play-not-supported': 'ONAIR_ERR_PLAY_NOT_SUPPORTED',
  unsupported: 'ONAIR_ERR_PUBLISH_UNSUPPORTED',
  'no-capacity': 'ONAIR_ERR_PUBLISH_NO_CAPACITY',
} as const satisfies Record<Refusal['reason'], ErrorCode>;

/** A refused client gets this long to read its `onStatus` error before its socket is destroyed. */
const REFUSAL_LINGER_MS = 1000;

/**
 * Why a connection was closed by the guard at the socket's boundary, as its log line's `code` and the metrics label:
 * `protocol` (bytes that are not RTMP, or a command missing what it needs), `limit` (a size or count bound),
 * `timeout` (no publish within the handshake deadline, idle, or below the minimum bitrate), `too-many` (connection
 * caps), `slow-reader` (the client does not read what OnAir answers).
 */
export interface Dropped {
  reason: 'protocol' | 'limit' | 'timeout' | 'too-many' | 'slow-reader';
  code: 'ONAIR_ERR_RTMP_PROTOCOL' | 'ONAIR_ERR_RTMP_LIMIT' | 'ONAIR_ERR_RTMP_TIMEOUT' | 'ONAIR_ERR_RTMP_TOO_MANY_CONNECTIONS';
  remoteAddress: string;
  streamId?: string;
}

/** `publish`, beside the session: `resumed` is true when it continues an event within the reconnect grace. */
export type PublishData = { resumed: boolean };

export type RtmpIngestEvents = {
  /** An accepted publisher. */
  publish: [PublishSession, PublishData];
  /** The event is over: the grace ran out or the stream was ended. */
  end: [streamId: string];
  refused: [Refusal];
  /** The guard closed a connection (see `Dropped`). */
  dropped: [Dropped];
};

interface Broadcast {
  streamId: string;
  publisher: PublishSession | undefined;
  graceTimer: NodeJS.Timeout | undefined;
}

/** Bytes of media a publisher may send between `publish` and the end of the key check. */
const MAX_PENDING_BYTES = 4 * 1024 * 1024;
/** OnAir's answers (handshake, command results) a client may leave unread before it is dropped. */
const MAX_UNREAD_OUTPUT_BYTES = 1024 * 1024;

const DROP_CODES = {
  protocol: 'ONAIR_ERR_RTMP_PROTOCOL',
  limit: 'ONAIR_ERR_RTMP_LIMIT',
  timeout: 'ONAIR_ERR_RTMP_TIMEOUT',
  'too-many': 'ONAIR_ERR_RTMP_TOO_MANY_CONNECTIONS',
  'slow-reader': 'ONAIR_ERR_RTMP_LIMIT',
} as const satisfies Record<Dropped['reason'], Dropped['code']>;

/** Connections of one address: all of them, and those without an accepted publish yet. */
interface AddressCount {
  open: number;
  unauthenticated: number;
}

/**
 * The RTMP server. Owns the stream-key check (before any media is accepted), one publisher per stream, and the
 * reconnect grace that lets a dropped publisher continue its event.
 */
export class RtmpIngest extends TypedEmitter<RtmpIngestEvents> {
  readonly #options: RtmpIngestOptions;
  readonly #limits: RtmpLimits;
  readonly #log: Logger;
  readonly #addresses = new Map<string, AddressCount>();
  readonly #server: net.Server;
  #tlsServer: net.Server | undefined;
  readonly #sockets = new Set<net.Socket>();
  readonly #broadcasts = new Map<string, Broadcast>();
  #closed = false;

  constructor(options: RtmpIngestOptions) {
    super();
    this.#options = options;
    this.#limits = { ...defaultLimits(RTMP_LIMITS), ...options.limits };
    this.#log = options.log;
    this.#server = net.createServer((socket) => this.#accept(socket));
  }

  /** Listens for RTMP, and for RTMPS when configured: the ports bound (0 in the options picks a free one). */
  async listen(): Promise<{ port: number; tlsPort?: number }> {
    // The certificate first: a file that cannot be read fails the start before anything listens.
    const options = this.#options.tls;
    // No renegotiation: Node limits a client's renegotiations only on sockets a tls.Server made, and each one costs
    // the server a private-key operation (a TLS 1.2 client could ask without end, before any key check).
    const secureContext = options && tls.createSecureContext({
      cert: await readFile(options.certFile), key: await readFile(options.keyFile), secureOptions: cryptoConstants.SSL_OP_NO_RENEGOTIATION,
    });
    const port = await listenOn(this.#server, this.#options.port, this.#options.host);
    if (!options || !secureContext) return { port };
    this.#tlsServer = net.createServer((socket) => this.#accept(socket, secureContext));
    try {
      return { port, tlsPort: await listenOn(this.#tlsServer, options.port, this.#options.host) };
    } catch (error) {
      // RTMPS could not bind (its port taken): nothing of this ingest stays listening.
      await new Promise<void>((resolve) => this.#server.close(() => resolve()));
      this.#tlsServer = undefined;
      throw error;
    }
  }

  /** The publisher of a stream, if one is connected now. */
  publisher(streamId: string): PublishSession | undefined {
    return this.#broadcasts.get(streamId)?.publisher;
  }

  /** Is the stream's event going on (publisher connected or within its reconnect grace)? */
  isActive(streamId: string): boolean {
    return this.#broadcasts.has(streamId);
  }

  /**
   * A publish that came another way than RTMP (WHIP: `WhipIngest`), its key already checked: the same rules as an
   * RTMP publish (one publisher per stream, admission, the reconnect grace) and the same `publish` event. The caller
   * feeds the session FLV packets and calls `leave(session)` when its publisher is gone. `passthrough`: the publisher's
   * own media, for WebRTC viewers (a WHIP publisher, issue #20).
   */
  publishFrom(streamId: string, remoteAddress: string, options: { passthrough?: RtpPassthrough | undefined } = {}): PublishSession | Refusal {
    const broadcast = this.#broadcasts.get(streamId);
    let refusal: Refusal | undefined;
    if (this.#closed) {
      refusal = { reason: 'no-capacity', remoteAddress, streamId, detail: 'the node is closing' };
    } else if (broadcast?.publisher) {
      refusal = { reason: 'busy', remoteAddress, streamId };
    } else {
      const full = broadcast ? undefined : this.#options.admit?.({ streamId, live: this.#broadcasts.size });
      if (full !== undefined) refusal = { reason: 'no-capacity', remoteAddress, streamId, detail: full };
    }
    if (refusal) {
      this.#refused(refusal);
      return refusal;
    }
    return this.#startSession(streamId, remoteAddress, broadcast, options.passthrough);
  }

  /** The publisher of a `publishFrom` session is gone: the reconnect grace starts, as when an RTMP socket closes. */
  leave(session: PublishSession): void {
    this.#publisherGone(session);
  }

  /** Disconnects the publisher and ends the event now (stream deleted or ended by the operator). */
  end(streamId: string): void {
    const broadcast = this.#broadcasts.get(streamId);
    if (!broadcast) return;
    this.#broadcasts.delete(streamId);
    clearTimeout(broadcast.graceTimer);
    const publisher = broadcast.publisher;
    broadcast.publisher = undefined;
    publisher?.close();
    this.safeEmit('end', streamId);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const streamId of [...this.#broadcasts.keys()]) this.end(streamId);
    for (const socket of this.#sockets) socket.destroy();
    await Promise.all([this.#server, this.#tlsServer].map((server) => server && new Promise<void>((resolve) => server.close(() => resolve()))));
  }

  /** Open connections and, among them, those without an accepted publish, for one address. */
  connections(remoteAddress?: string): AddressCount {
    if (remoteAddress !== undefined) return { ...(this.#addresses.get(addressKey(remoteAddress)) ?? { open: 0, unauthenticated: 0 }) };
    let unauthenticated = 0;
    for (const count of this.#addresses.values()) unauthenticated += count.unauthenticated;
    return { open: this.#sockets.size, unauthenticated };
  }

  /**
   * The room's one boundary: every byte from a socket goes through here. Whatever the parser or a callback throws
   * closes that connection with one log line; caps, deadlines and the minimum rate are enforced here too.
   */
  #accept(tcp: net.Socket, secureContext?: tls.SecureContext): void {
    if (this.#closed) {
      tcp.destroy();
      return;
    }
    const limits = this.#limits;
    const remoteAddress = tcp.remoteAddress ?? 'unknown';
    const key = addressKey(remoteAddress);
    const count = this.#addresses.get(key) ?? { open: 0, unauthenticated: 0 };
    const tooMany = this.#sockets.size >= limits.maxConnections ? `${limits.maxConnections} connections in all`
      : count.open >= limits.maxConnectionsPerAddress ? `${limits.maxConnectionsPerAddress} connections from this address`
        : count.unauthenticated >= limits.maxUnauthenticatedPerAddress ? `${limits.maxUnauthenticatedPerAddress} connections without a publish from this address`
          : undefined;
    if (tooMany !== undefined) {
      tcp.on('error', () => undefined);
      tcp.destroy();
      this.#dropped({ reason: 'too-many', remoteAddress }, `over ${tooMany}`);
      return;
    }
    count.open += 1;
    count.unauthenticated += 1;
    this.#addresses.set(key, count);
    // RTMPS: TLS over the counted connection; from here every byte in and out is the TLS socket's.
    const socket: net.Socket = secureContext ? new tls.TLSSocket(tcp, { isServer: true, secureContext }) : tcp;
    let secured = !secureContext;
    if (secureContext) {
      socket.once('secure', () => {
        secured = true;
      });
      tcp.on('error', () => undefined);
    }
    let authenticated = false;
    const authenticate = (): void => {
      if (authenticated) return;
      authenticated = true;
      count.unauthenticated -= 1;
      clearTimeout(handshakeTimer);
    };

    this.#sockets.add(socket);
    socket.setNoDelay(true);
    let session: PublishSession | undefined;
    let dropped = false;
    const drop = (reason: Dropped['reason'], detail: string): void => {
      if (dropped || socket.destroyed) return;
      dropped = true;
      socket.destroy();
      this.#dropped({ reason, remoteAddress, ...(session ? { streamId: session.streamId } : {}) }, detail);
    };
    socket.setTimeout(limits.idleTimeoutMs, () => drop('timeout', `nothing received for ${limits.idleTimeoutMs} ms`));
    const handshakeTimer = setTimeout(() => drop('timeout', `no accepted publish within ${limits.handshakeTimeoutMs} ms`), limits.handshakeTimeoutMs);
    // A trickle of bytes must not keep a session: each window needs its share of the minimum bitrate.
    let windowBytes = 0;
    const minWindowBytes = Math.floor((limits.minBitrateKbps * 1000 / 8) * (limits.rateWindowMs / 1000));
    let rateTimer: NodeJS.Timeout | undefined;

    const rtmp = createRtmpProtocol(limits);
    let connect: ConnectRequest | undefined;
    let pending: AvPacket[] | undefined;
    let pendingBytes = 0;
    let refused = false;

    const refuse = (refusal: Refusal): void => {
      if (refused) return;
      refused = true;
      pending = undefined;
      const code = REFUSAL_CODES[refusal.reason];
      // The client learns why (an onStatus error), then the socket closes. Nothing it sends from now on is read: no
      // byte of a refused publish is kept.
      try {
        rtmp.sendStatusMessage(rtmp.streamId, 'error', refusal.reason === 'play-not-supported' ? 'NetStream.Play.Failed' : 'NetStream.Publish.BadName', `${code}: ${ERRORS[code].message}`);
      } catch {
        // Nothing to tell a client that never got as far as a stream.
      }
      socket.end();
      setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
      this.#refused(refusal);
    };

    rtmp.onOutputCallback = (buffer) => {
      if (socket.destroyed) return;
      // A client that sends commands but never reads the answers would grow our write buffer without end.
      if (socket.writableLength > MAX_UNREAD_OUTPUT_BYTES) {
        drop('slow-reader', `over ${MAX_UNREAD_OUTPUT_BYTES} bytes of answers left unread`);
        return;
      }
      socket.write(buffer);
    };
    rtmp.onConnectCallback = (request) => {
      connect = request;
    };
    rtmp.onPlayCallback = () => refuse({ reason: 'play-not-supported', remoteAddress });
    rtmp.onPacketCallback = (packet) => {
      if (session) {
        session.handlePacket(packet);
      } else if (pending && !refused) {
        // Media that arrived in the same read as the publish command, while the key is being checked.
        pendingBytes += packet.size;
        if (pendingBytes > MAX_PENDING_BYTES) return;
        pending.push({ ...packet, data: Buffer.from(packet.data.subarray(0, packet.size)) });
      }
    };
    rtmp.onPushCallback = () => {
      if (pending !== undefined || session) throw new RtmpViolation('protocol', 'a second publish on one connection');
      if (!connect || connect.app !== RTMP_APP) {
        refuse({ reason: 'bad-app', remoteAddress });
        return;
      }
      const streamKey = connect.name;
      pending = [];
      socket.pause();
      this.#options.authorize(streamKey).then((result) => {
        if (socket.destroyed || this.#closed) return;
        if (!result.ok) {
          refuse({ reason: 'bad-key', remoteAddress });
          return;
        }
        const broadcast = this.#broadcasts.get(result.streamId);
        if (broadcast?.publisher) {
          refuse({ reason: 'busy', remoteAddress, streamId: result.streamId });
          return;
        }
        const full = broadcast ? undefined : this.#options.admit?.({ streamId: result.streamId, live: this.#broadcasts.size });
        if (full !== undefined) {
          refuse({ reason: 'no-capacity', remoteAddress, streamId: result.streamId, detail: full });
          return;
        }
        authenticate();
        session = this.#startSession(result.streamId, remoteAddress, broadcast);
        // `end()` (stream deleted or ended by the operator) closes the session: the publisher must be cut off too.
        session.once('close', () => socket.destroy());
        session.on('unsupported', (message) => {
          this.#log.warn({ streamId: result.streamId, message }, 'unsupported publish');
          refuse({ reason: 'unsupported', remoteAddress, streamId: result.streamId });
        });
        // Paused by downstream (ffmpeg backlogged), the socket is not read: neither idle nor slow is the publisher's doing.
        let pausedInWindow = false;
        session.on('flow', (flowing) => {
          if (socket.destroyed) return;
          if (flowing) {
            socket.setTimeout(limits.idleTimeoutMs);
            socket.resume();
          } else {
            pausedInWindow = true;
            socket.setTimeout(0);
            socket.pause();
          }
        });
        if (minWindowBytes > 0) {
          windowBytes = 0;
          rateTimer = setInterval(() => {
            const excused = pausedInWindow || session!.paused;
            pausedInWindow = false;
            if (!excused && windowBytes < minWindowBytes) {
              drop('timeout', `${Math.round(windowBytes * 8 / limits.rateWindowMs)} kbit/s, under the minimum of ${limits.minBitrateKbps}`);
            }
            windowBytes = 0;
          }, limits.rateWindowMs);
        }
        const queued = pending ?? [];
        pending = undefined;
        this.#guard(drop, () => {
          for (const packet of queued) session!.handlePacket(packet);
        });
        if (!socket.destroyed && !session.paused) socket.resume();
      }).catch((error: unknown) => {
        this.#log.error({ err: error }, 'stream key check failed');
        refuse({ reason: 'bad-key', remoteAddress });
      });
    };

    socket.on('data', (data: Buffer) => {
      if (refused) return;
      windowBytes += data.length;
      this.#guard(drop, () => {
        session?.received(data.length);
        const error = rtmp.parserData(data);
        if (error !== null && error !== undefined) throw new RtmpViolation('protocol', String(error));
      });
    });
    socket.on('error', (error) => {
      // A TLS error (plain RTMP on the RTMPS port, a client refusing the certificate, a renegotiation, a bad record)
      // is a protocol error of this connection; a TCP error is the connection going away.
      if (secureContext && !dropped) {
        dropped = true;
        socket.destroy();
        const what = secured ? 'TLS error' : 'TLS handshake failed';
        this.#dropped({ reason: 'protocol', remoteAddress, ...(session ? { streamId: session.streamId } : {}) }, `${what}: ${(error as NodeJS.ErrnoException).code ?? error.message.split('\n')[0]}`);
        return;
      }
      this.#log.debug({ remoteAddress, err: error.message }, 'RTMP socket error');
    });
    socket.on('close', () => {
      clearTimeout(handshakeTimer);
      clearInterval(rateTimer);
      this.#sockets.delete(socket);
      if (!authenticated) count.unauthenticated -= 1;
      count.open -= 1;
      if (count.open === 0) this.#addresses.delete(key);
      if (session) this.#publisherGone(session);
    });
  }

  /** Runs `work` at the socket boundary: anything it throws closes this connection only. */
  #guard(drop: (reason: Dropped['reason'], detail: string) => void, work: () => void): void {
    try {
      work();
    } catch (error) {
      if (error instanceof RtmpViolation) drop(error.kind, error.message);
      else drop('protocol', error instanceof Error ? `${error.name}: ${error.message}` : String(error));
    }
  }

  #dropped(drop: Omit<Dropped, 'code'>, detail: string): void {
    const code = DROP_CODES[drop.reason];
    this.#log.warn({ code, remoteAddress: drop.remoteAddress, streamId: drop.streamId, detail }, 'RTMP connection closed');
    this.safeEmit('dropped', { ...drop, code });
  }

  #refused(refusal: Refusal): void {
    const { remoteAddress, reason, streamId, detail } = refusal;
    this.#log.warn({ code: REFUSAL_CODES[reason], remoteAddress, reason, streamId, detail }, 'publish refused');
    this.safeEmit('refused', refusal);
  }

  #startSession(streamId: string, remoteAddress: string, existing: Broadcast | undefined, passthrough?: RtpPassthrough): PublishSession {
    const session = new PublishSession({ id: randomUUID(), streamId, remoteAddress, passthrough });
    const resumed = existing !== undefined;
    const broadcast = existing ?? { streamId, publisher: undefined, graceTimer: undefined };
    clearTimeout(broadcast.graceTimer);
    broadcast.graceTimer = undefined;
    broadcast.publisher = session;
    this.#broadcasts.set(streamId, broadcast);
    this.#log.info({ streamId, remoteAddress, resumed }, 'publish accepted');
    this.safeEmit('publish', session, { resumed });
    return session;
  }

  #publisherGone(session: PublishSession): void {
    session.close();
    const broadcast = this.#broadcasts.get(session.streamId);
    if (!broadcast || broadcast.publisher !== session) return;
    broadcast.publisher = undefined;
    this.#log.info({ streamId: session.streamId, graceMs: this.#options.reconnectGraceMs }, 'publisher dropped');
    broadcast.graceTimer = setTimeout(() => {
      if (this.#broadcasts.get(session.streamId) === broadcast && !broadcast.publisher) this.end(session.streamId);
    }, this.#options.reconnectGraceMs);
  }
}

function listenOn(server: net.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}
