import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { chunks, command, MessageType, rawRtmp } from './rtmpClient.js';

/*
 * RTMP fuzzing for the hostile tests (short mode) and `npm run bench -- rtmp-fuzz` (10,000 sessions): each session
 * does a valid handshake, then sends a real ffmpeg publish — connect, createStream, publish, then the chunks of an FLV
 * file that ffmpeg made at run time — mutated in one of several ways (bit flips, cut and spliced chunks, lying
 * headers, random chunk sizes, noise).
 */

const run = promisify(execFile);

/** One publish as RTMP messages: the commands, then the media tags of a short ffmpeg lavfi encode. */
export interface PublishCorpus {
  /** Each message as chunks, ready to send. */
  messages: Buffer[];
}

/** Encodes 2 s of lavfi video and audio to FLV with ffmpeg and cuts it into RTMP messages. */
export async function makePublishCorpus(port: number, streamKey: string): Promise<PublishCorpus> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-fuzz-'));
  try {
    const file = path.join(dir, 'publish.flv');
    await run('ffmpeg', ['-hide_banner', '-nostdin', '-loglevel', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=320x180:rate=15',
      '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000', '-t', '2', '-c:v', 'libx264', '-preset', 'ultrafast',
      '-g', '15', '-c:a', 'aac', '-b:a', '64k', '-f', 'flv', file], { timeout: 30_000 });
    const flv = await readFile(file);
    const messages: Buffer[] = [
      chunks({ cid: 3, type: MessageType.invoke, payload: command('connect', 1, { app: 'live', tcUrl: `rtmp://127.0.0.1:${port}/live`, flashVer: 'FMLE/3.0' }) }),
      chunks({ cid: 3, type: MessageType.invoke, payload: command('createStream', 2, null) }),
      chunks({ cid: 4, type: MessageType.invoke, streamId: 1, payload: command('publish', 3, null, streamKey, 'live') }),
    ];
    // FLV: 9-byte header, 4-byte PreviousTagSize, then tags (11-byte header, body, PreviousTagSize).
    let offset = 13;
    while (offset + 11 <= flv.length) {
      const type = flv[offset]! & 0x1f;
      const size = flv.readUIntBE(offset + 1, 3);
      const timestamp = (flv.readUIntBE(offset + 4, 3) | (flv[offset + 7]! << 24)) >>> 0;
      const body = flv.subarray(offset + 11, offset + 11 + size);
      const cid = type === MessageType.audio ? 4 : type === MessageType.video ? 6 : 5;
      messages.push(chunks({ cid, type, streamId: 1, timestamp, payload: body }));
      offset += 11 + size + 4;
    }
    return { messages };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A small deterministic PRNG (mulberry32): a failing session can be replayed from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const MUTATIONS = ['bitflip', 'splice', 'lying-header', 'chunk-size', 'noise', 'truncate'] as const;
export type Mutation = (typeof MUTATIONS)[number];

/** The bytes of one fuzz session (after the handshake) and the mutation used. */
export function fuzzSession(corpus: PublishCorpus, seed: number): { mutation: Mutation; bytes: Buffer } {
  const random = prng(seed);
  const int = (n: number): number => Math.floor(random() * n);
  const mutation = MUTATIONS[int(MUTATIONS.length)]!;
  // A prefix of the publish: the commands and up to 40 media messages.
  const count = 3 + int(Math.min(40, corpus.messages.length - 3));
  const messages: Buffer[] = corpus.messages.slice(0, count).map((m) => Buffer.from(m));
  switch (mutation) {
    case 'bitflip': {
      const flips = 1 + int(32);
      for (let i = 0; i < flips; i++) {
        const message = messages[int(messages.length)]!;
        const at = int(message.length);
        message[at] = message[at]! ^ (1 << int(8));
      }
      break;
    }
    case 'splice': {
      // Pieces of messages cut at random and put back in another order.
      const pieces = messages.flatMap((m) => {
        const cut = int(m.length);
        return [m.subarray(0, cut), m.subarray(cut)];
      });
      for (let i = pieces.length - 1; i > 0; i--) {
        const j = int(i + 1);
        [pieces[i], pieces[j]] = [pieces[j]!, pieces[i]!];
      }
      return { mutation, bytes: Buffer.concat(pieces) };
    }
    case 'lying-header': {
      // Message headers whose length, type or chunk-stream id is anything at all.
      const lies = 1 + int(8);
      for (let i = 0; i < lies; i++) {
        const payload = Buffer.alloc(int(64));
        messages.splice(int(messages.length + 1), 0, chunks({
          cid: 2 + int(400), type: int(32), streamId: int(3), payload, declaredLength: int(0x1000000),
        }));
      }
      break;
    }
    case 'chunk-size': {
      const size = [0, 1, 2, 127, 129, 4096, 65536, 0x7fffffff, 0x80000000, 0xffffffff][int(10)]!;
      const payload = Buffer.alloc(4);
      payload.writeUInt32BE(size >>> 0);
      messages.splice(int(messages.length + 1), 0, chunks({ cid: 2, type: MessageType.setChunkSize, payload }));
      break;
    }
    case 'noise': {
      const noise = Buffer.alloc(1 + int(4096));
      for (let i = 0; i < noise.length; i++) noise[i] = int(256);
      messages.splice(int(messages.length + 1), 0, noise);
      break;
    }
    case 'truncate': {
      const last = messages.length - 1;
      messages[last] = messages[last]!.subarray(0, int(messages[last]!.length));
      break;
    }
  }
  return { mutation, bytes: Buffer.concat(messages) };
}

export interface FuzzResult {
  sessions: number;
  byMutation: Record<string, number>;
  /** Sessions the server closed itself (as opposed to the client hanging up after its bytes). */
  closedByServer: number;
  /** Sessions whose handshake could not complete (the server refused or closed early). */
  handshakeFailed: number;
}

/**
 * Runs `sessions` fuzz sessions against an RTMP port, `concurrency` at a time, each from one of the loopback addresses
 * 127.0.0.2 … (so per-address caps see many clients), each lasting at most `sessionMs`.
 */
export async function fuzzRtmp(options: {
  port: number; corpus: PublishCorpus; sessions: number; concurrency: number; seed?: number; sessionMs?: number; signal?: AbortSignal;
}): Promise<FuzzResult> {
  const { port, corpus, sessions, concurrency, seed = 1, sessionMs = 1000 } = options;
  const result: FuzzResult = { sessions: 0, byMutation: {}, closedByServer: 0, handshakeFailed: 0 };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < sessions && !options.signal?.aborted) {
      const index = next++;
      const { mutation, bytes } = fuzzSession(corpus, seed * 1_000_003 + index);
      result.byMutation[mutation] = (result.byMutation[mutation] ?? 0) + 1;
      const localAddress = `127.0.0.${2 + (index % 250)}`;
      const client = await rawRtmp(port, { localAddress }).catch(() => undefined);
      result.sessions += 1;
      if (!client) {
        result.handshakeFailed += 1;
        continue;
      }
      // Sent in a few writes, as a network would deliver it.
      for (let offset = 0; offset < bytes.length; offset += 16 * 1024) client.write(bytes.subarray(offset, offset + 16 * 1024));
      const timer = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), sessionMs).unref());
      const outcome = await Promise.race([client.closed.then(() => 'closed' as const), timer]);
      if (outcome === 'closed') result.closedByServer += 1;
      client.socket.destroy();
      await client.closed;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, () => worker()));
  return result;
}
