import net from 'node:net';
import { randomUUID } from 'node:crypto';
import { TypedEmitter } from '../lib/emitter.js';
import type { Logger } from '../lib/log.js';
import { createRtmpProtocol, type AvPacket, type ConnectRequest } from './nms.js';
import { PublishSession } from './PublishSession.js';

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
  /** A publisher that sends nothing for this long is dropped (dead TCP connections never send FIN). */
  idleTimeoutMs?: number;
}

export interface Refusal {
  reason: 'bad-key' | 'busy' | 'bad-app' | 'play-not-supported' | 'unsupported';
  remoteAddress: string;
  streamId?: string;
}

export type RtmpIngestEvents = {
  /** An accepted publisher; `resumed` is true when it continues an event within the reconnect grace. */
  publish: [PublishSession, { resumed: boolean }];
  /** The publisher of a live stream dropped; the event waits `reconnectGraceMs` for it. */
  unpublish: [PublishSession];
  /** The event is over: the grace ran out or the stream was ended. */
  end: [streamId: string];
  refused: [Refusal];
};

interface Broadcast {
  streamId: string;
  publisher: PublishSession | undefined;
  graceTimer: NodeJS.Timeout | undefined;
}

/** Bytes of media a publisher may send between `publish` and the end of the key check. */
const MAX_PENDING_BYTES = 4 * 1024 * 1024;

/**
 * The RTMP server. Owns the stream-key check (before any media is accepted), one publisher per stream, and the
 * reconnect grace that lets a dropped publisher continue its event.
 */
export class RtmpIngest extends TypedEmitter<RtmpIngestEvents> {
  readonly #options: RtmpIngestOptions;
  readonly #log: Logger;
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  readonly #broadcasts = new Map<string, Broadcast>();
  #closed = false;

  constructor(options: RtmpIngestOptions) {
    super();
    this.#options = options;
    this.#log = options.log;
    this.#server = net.createServer((socket) => this.#accept(socket));
  }

  listen(): Promise<{ port: number }> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#options.port, this.#options.host, () => {
        this.#server.off('error', reject);
        resolve({ port: (this.#server.address() as net.AddressInfo).port });
      });
    });
  }

  /** The publisher of a stream, if one is connected now. */
  publisher(streamId: string): PublishSession | undefined {
    return this.#broadcasts.get(streamId)?.publisher;
  }

  /** Is the stream's event going on (publisher connected or within its reconnect grace)? */
  isActive(streamId: string): boolean {
    return this.#broadcasts.has(streamId);
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
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(socket: net.Socket): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    this.#sockets.add(socket);
    socket.setNoDelay(true);
    socket.setTimeout(this.#options.idleTimeoutMs ?? 15_000, () => socket.destroy());
    const remoteAddress = socket.remoteAddress ?? 'unknown';
    const rtmp = createRtmpProtocol();
    let connect: ConnectRequest | undefined;
    let session: PublishSession | undefined;
    let pending: AvPacket[] | undefined;
    let pendingBytes = 0;
    let refused = false;

    const refuse = (refusal: Refusal): void => {
      refused = true;
      pending = undefined;
      // destroy, not end: a graceful close would let buffered media in; nothing of a refused publish is kept.
      socket.destroy();
      this.#log.warn({ remoteAddress, reason: refusal.reason, streamId: refusal.streamId }, 'publish refused');
      this.safeEmit('refused', refusal);
    };

    rtmp.onOutputCallback = (buffer) => {
      if (!socket.destroyed) socket.write(buffer);
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
        session = this.#startSession(result.streamId, remoteAddress, broadcast);
        // `end()` (stream deleted or ended by the operator) closes the session: the publisher must be cut off too.
        session.once('close', () => socket.destroy());
        session.on('unsupported', (message) => {
          this.#log.warn({ streamId: result.streamId, message }, 'unsupported publish');
          refuse({ reason: 'unsupported', remoteAddress, streamId: result.streamId });
        });
        for (const packet of pending ?? []) session.handlePacket(packet);
        pending = undefined;
        socket.resume();
      }, (error: unknown) => {
        this.#log.error({ err: error }, 'stream key check failed');
        refuse({ reason: 'bad-key', remoteAddress });
      });
    };

    socket.on('data', (data: Buffer) => {
      session?.received(data.length);
      const error = rtmp.parserData(data);
      if (error !== null && error !== undefined) {
        this.#log.debug({ remoteAddress, error }, 'RTMP protocol error');
        socket.destroy();
      }
    });
    socket.on('error', (error) => this.#log.debug({ remoteAddress, err: error.message }, 'RTMP socket error'));
    socket.on('close', () => {
      this.#sockets.delete(socket);
      if (session) this.#publisherGone(session);
    });
  }

  #startSession(streamId: string, remoteAddress: string, existing: Broadcast | undefined): PublishSession {
    const session = new PublishSession({ id: randomUUID(), streamId, remoteAddress });
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
    this.safeEmit('unpublish', session);
    broadcast.graceTimer = setTimeout(() => {
      if (this.#broadcasts.get(session.streamId) === broadcast && !broadcast.publisher) this.end(session.streamId);
    }, this.#options.reconnectGraceMs);
  }
}
