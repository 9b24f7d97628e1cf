import net from 'node:net';
import { randomBytes } from 'node:crypto';

/**
 * A raw RTMP client for hostile tests and the fuzz bench: a real handshake, then whatever chunks the test writes —
 * including the ones OBS would never send.
 */

/** AMF0 values the commands need (rtmp_specification_1.0 §7.1; amf0-file-format-specification). */
export type Amf0 = number | string | boolean | null | { [key: string]: Amf0 };

export function amf0(value: Amf0): Buffer {
  if (value === null) return Buffer.from([0x05]);
  if (typeof value === 'number') {
    const out = Buffer.alloc(9);
    out[0] = 0x00;
    out.writeDoubleBE(value, 1);
    return out;
  }
  if (typeof value === 'boolean') return Buffer.from([0x01, value ? 1 : 0]);
  if (typeof value === 'string') {
    const text = Buffer.from(value, 'utf8');
    const head = Buffer.alloc(3);
    head[0] = 0x02;
    head.writeUInt16BE(text.length, 1);
    return Buffer.concat([head, text]);
  }
  const parts: Buffer[] = [Buffer.from([0x03])];
  for (const [key, inner] of Object.entries(value)) {
    const name = Buffer.from(key, 'utf8');
    const length = Buffer.alloc(2);
    length.writeUInt16BE(name.length);
    parts.push(length, name, amf0(inner));
  }
  parts.push(Buffer.from([0x00, 0x00, 0x09]));
  return Buffer.concat(parts);
}

export function command(...values: Amf0[]): Buffer {
  return Buffer.concat(values.map(amf0));
}

export const MessageType = { setChunkSize: 1, audio: 8, video: 9, data: 18, invoke: 20 } as const;

/**
 * One message as chunks: a type-0 chunk header on `cid`, then type-3 continuations every `chunkSize` bytes.
 * `declaredLength` lets a test lie about the message's size.
 */
export function chunks(options: { cid: number; type: number; streamId?: number; timestamp?: number; payload: Buffer; chunkSize?: number; declaredLength?: number }): Buffer {
  const { cid, type, streamId = 0, timestamp = 0, payload, chunkSize = 128 } = options;
  const basic = (fmt: number): Buffer => {
    if (cid < 64) return Buffer.from([(fmt << 6) | cid]);
    if (cid < 320) return Buffer.from([(fmt << 6) | 0, cid - 64]);
    return Buffer.from([(fmt << 6) | 1, (cid - 64) & 0xff, (cid - 64) >> 8]);
  };
  const header = Buffer.alloc(11);
  header.writeUIntBE(Math.min(timestamp, 0xffffff), 0, 3);
  header.writeUIntBE(options.declaredLength ?? payload.length, 3, 3);
  header[6] = type;
  header.writeUInt32LE(streamId, 7);
  const parts: Buffer[] = [basic(0), header];
  for (let offset = 0; offset < payload.length; offset += chunkSize) {
    if (offset > 0) parts.push(basic(3));
    parts.push(payload.subarray(offset, offset + chunkSize));
  }
  return Buffer.concat(parts);
}

export interface RawRtmp {
  socket: net.Socket;
  /** Resolves when the server closes the connection (or it errors). */
  closed: Promise<void>;
  isClosed(): boolean;
  write(data: Buffer): void;
  /** Everything the server sent after the handshake. */
  received(): Buffer;
  /** `connect` with the given command object (defaults: app `live`, a tcUrl). */
  connect(commandObject?: Record<string, Amf0>): void;
  /** `createStream` then `publish` of `name` (an absent name when undefined). */
  publish(name: string | undefined): void;
}

/** Opens a TCP connection to `port` on loopback and completes the RTMP handshake (C0/C1 → S0/S1/S2 → C2). */
export async function rawRtmp(port: number, options: { handshake?: boolean; localAddress?: string } = {}): Promise<RawRtmp> {
  const socket = net.connect({ host: '127.0.0.1', port, ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
  let closed = false;
  const closedPromise = new Promise<void>((resolve) => {
    socket.on('close', () => {
      closed = true;
      resolve();
    });
  });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('close', () => reject(new Error('closed before connecting')));
  });
  let inbox = Buffer.alloc(0);
  const arrived = new Set<() => void>();
  socket.on('data', (data: Buffer) => {
    inbox = Buffer.concat([inbox, data]);
    for (const wake of arrived) wake();
  });
  const client: RawRtmp = {
    socket,
    closed: closedPromise,
    isClosed: () => closed,
    write: (data) => {
      if (!socket.destroyed) socket.write(data);
    },
    received: () => inbox,
    connect: (commandObject = { app: 'live', tcUrl: `rtmp://127.0.0.1:${port}/live`, flashVer: 'FMLE/3.0', type: 'nonprivate' }) => {
      client.write(chunks({ cid: 3, type: MessageType.invoke, payload: command('connect', 1, commandObject) }));
    },
    publish: (name) => {
      client.write(chunks({ cid: 3, type: MessageType.invoke, payload: command('createStream', 2, null) }));
      const args: Amf0[] = name === undefined ? ['publish', 3, null] : ['publish', 3, null, name, 'live'];
      client.write(chunks({ cid: 4, type: MessageType.invoke, streamId: 1, payload: command(...args) }));
    },
  };
  if (options.handshake === false) return client;
  const c1 = Buffer.concat([Buffer.alloc(8), randomBytes(1528)]);
  socket.write(Buffer.concat([Buffer.from([0x03]), c1]));
  await new Promise<void>((resolve, reject) => {
    const check = (): void => {
      if (inbox.length >= 1 + 1536 * 2) {
        arrived.delete(check);
        resolve();
      }
    };
    arrived.add(check);
    void closedPromise.then(() => reject(new Error('closed during the handshake')));
    check();
  });
  const s1 = inbox.subarray(1, 1 + 1536);
  socket.write(s1); // C2 echoes S1
  inbox = inbox.subarray(1 + 1536 * 2);
  return client;
}
