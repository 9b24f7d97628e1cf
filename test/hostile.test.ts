import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { io as connectChat, type Socket } from 'socket.io-client';
import type { OnAirNode } from '../server/node.js';
import { api, publish, startTestNode, waitFor, within } from './support/harness.js';
import { chunks, command, MessageType, rawRtmp, type RawRtmp } from './support/rtmpClient.js';

/**
 * Hostile input (issue #13): each attack is tried against one node that serves a live stream and a chat. Every test
 * asserts what the attacker sees (a closed socket, a coded 4xx/429/503) and that the stream published before the
 * attack keeps advancing its playlist and a chat client keeps chatting.
 */

const MiB = 1024 * 1024;

interface Bystanders {
  node: OnAirNode;
  streamId: string;
  /** The media playlist of the live stream's only rendition. */
  playlistUrl: string;
  chat: Socket;
  listener: Socket;
}

function lastMsn(playlist: string): number {
  const sequence = Number(/#EXT-X-MEDIA-SEQUENCE:(\d+)/.exec(playlist)?.[1] ?? NaN);
  const segments = playlist.split('\n').filter((line) => line.startsWith('#EXTINF')).length;
  return sequence + segments - 1;
}

/** The live stream is still advancing (a new segment arrives) and chat still goes round between two clients. */
async function assertUnharmed(b: Bystanders, what: string): Promise<void> {
  const before = lastMsn(await (await fetch(b.playlistUrl)).text());
  // rfc8216bis §6.2.5.2: blocks until the next segment is complete.
  const response = await fetch(`${b.playlistUrl}?_HLS_msn=${before + 1}`);
  assert.equal(response.status, 200, `${what}: the live playlist still answers`);
  assert.ok(lastMsn(await response.text()) >= before + 1, `${what}: the live stream advanced`);
  const text = `still here after ${what} ${Math.random().toString(36).slice(2)}`;
  const heard = within(`${what}: the other chat client hears a comment`, new Promise<void>((resolve) => {
    const listen = (payload: { text: string }): void => {
      if (payload.text !== text) return;
      b.listener.off('comment', listen);
      resolve();
    };
    b.listener.on('comment', listen);
  }), 5000);
  const ack = await b.chat.timeout(5000).emitWithAck('comment', { text });
  assert.equal(ack.ok, true, `${what}: the comment was taken: ${JSON.stringify(ack)}`);
  await heard;
}

async function joinChat(node: OnAirNode, streamId: string, name: string): Promise<Socket> {
  const socket = connectChat(`${node.httpUrl}/chat`, { transports: ['websocket'], reconnection: false });
  const ack = await socket.timeout(5000).emitWithAck('join', { streamId, name });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  return socket;
}

async function closedWithin(client: RawRtmp, ms: number, what: string): Promise<void> {
  await within(`${what}: the server closes the connection`, client.closed, ms);
}

describe('hostile input: a stranger costs only their own connection', { timeout: 300_000 }, () => {
  let b: Bystanders;
  let close: () => Promise<void>;
  let publisher: ReturnType<typeof publish>;
  let rtmpPort: number;

  before(async () => {
    const started = await startTestNode({
      ONAIR_LADDER: '240',
      ONAIR_RTMP_HANDSHAKE_TIMEOUT_MS: '2000',
      ONAIR_RTMP_RATE_WINDOW_MS: '1000',
      ONAIR_RTMP_MAX_UNAUTHENTICATED_PER_ADDRESS: '3',
      ONAIR_RTMP_MAX_CONNECTIONS_PER_ADDRESS: '6',
    });
    close = started.close;
    const node = started.node;
    rtmpPort = node.rtmpPort;
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Under attack' } });
    assert.equal(created.status, 201);
    publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 426, height: 240 });
    const multivariant = `${node.httpUrl}/live/${created.body.id}/index.m3u8`;
    const text = await waitFor('the multivariant playlist', async () => {
      const response = await fetch(multivariant);
      return response.status === 200 ? response.text() : undefined;
    }, 30_000, 250);
    const rendition = text.split('\n').find((line) => line.endsWith('.m3u8'))!;
    const playlistUrl = new URL(rendition, multivariant).href.replace(/\?.*$/, '');
    const chat = await joinChat(node, created.body.id, 'Regular');
    const listener = await joinChat(node, created.body.id, 'Listener');
    b = { node, streamId: created.body.id, playlistUrl, chat, listener };
    await assertUnharmed(b, 'start');
  });

  after(async () => {
    b?.chat.close();
    b?.listener.close();
    publisher?.stop();
    await close?.();
  });

  test('an RTMP connect without tcUrl closes that connection only', { timeout: 30_000 }, async () => {
    const client = await rawRtmp(rtmpPort);
    client.connect({ app: 'live' });
    await closedWithin(client, 5000, 'connect without tcUrl');
    await assertUnharmed(b, 'a connect without tcUrl');
  });

  test('an RTMP publish without a stream name closes that connection only', { timeout: 30_000 }, async () => {
    const client = await rawRtmp(rtmpPort);
    client.connect();
    client.publish(undefined);
    await closedWithin(client, 5000, 'publish without a name');
    await assertUnharmed(b, 'a publish without a stream name');
  });

  test('chunk headers declaring 16 MB messages on many chunk streams are refused before memory is reserved', { timeout: 30_000 }, async () => {
    const rssBefore = process.memoryUsage().rss;
    const client = await rawRtmp(rtmpPort);
    client.connect();
    // Each header declares 16 MB and sends 10 bytes of it: NMS would reserve 16 MB per chunk stream at once.
    const headers: Buffer[] = [];
    for (let cid = 10; cid < 60; cid++) {
      headers.push(chunks({ cid, type: MessageType.video, payload: Buffer.alloc(10), declaredLength: 16 * MiB - 1 }));
    }
    client.write(Buffer.concat(headers));
    await closedWithin(client, 5000, '16 MB declarations');
    // Under the per-type limit but many of them: the connection's buffer budget ends it.
    const second = await rawRtmp(rtmpPort);
    second.connect();
    const big: Buffer[] = [];
    for (let cid = 10; cid < 60; cid++) big.push(chunks({ cid, type: MessageType.video, payload: Buffer.alloc(10), declaredLength: 6 * MiB }));
    second.write(Buffer.concat(big));
    await closedWithin(second, 5000, '6 MB declarations on 50 chunk streams');
    // Tiny messages on more chunk streams than anyone needs.
    const third = await rawRtmp(rtmpPort);
    const many: Buffer[] = [];
    for (let cid = 10; cid < 300; cid++) many.push(chunks({ cid, type: MessageType.data, payload: Buffer.alloc(4) }));
    third.write(Buffer.concat(many));
    await closedWithin(third, 5000, '290 chunk streams');
    const grownMiB = (process.memoryUsage().rss - rssBefore) / MiB;
    assert.ok(grownMiB < 100, `RSS grew by ${grownMiB.toFixed(0)} MiB`);
    await assertUnharmed(b, 'oversized chunk headers');
  });

  test('a chunk size of 0 closes that connection only', { timeout: 30_000 }, async () => {
    const client = await rawRtmp(rtmpPort);
    const payload = Buffer.alloc(4);
    client.write(chunks({ cid: 2, type: MessageType.setChunkSize, payload }));
    client.connect();
    await closedWithin(client, 5000, 'chunk size 0');
    await assertUnharmed(b, 'a chunk size of 0');
  });

  test('random bytes after a valid handshake close that connection only', { timeout: 30_000 }, async () => {
    for (let i = 0; i < 20; i++) {
      const client = await rawRtmp(rtmpPort);
      client.connect();
      // A command whose AMF is cut and garbled, then noise.
      const garbled = command('connect', 1, { app: 'live', tcUrl: 'rtmp://x/live' }).subarray(0, 20 + i);
      client.write(chunks({ cid: 3, type: MessageType.invoke, payload: Buffer.concat([garbled, Buffer.from(Array.from({ length: 64 }, (_, k) => (k * 37 + i) & 0xff))]) }));
      client.socket.destroy();
    }
    await assertUnharmed(b, 'garbled commands');
  });

  test('connections from one address past the caps are closed on accept; closing them frees the slots', { timeout: 30_000 }, async () => {
    const held: RawRtmp[] = [];
    for (let i = 0; i < 3; i++) held.push(await rawRtmp(rtmpPort));
    const fourth = await rawRtmp(rtmpPort, { handshake: false });
    await closedWithin(fourth, 2000, 'a fourth connection without a publish');
    for (const client of held) client.socket.destroy();
    await Promise.all(held.map((client) => client.closed));
    // The slots come back as soon as the server has seen the closes.
    const again = await waitFor('a connection accepted again', async () => {
      const client = await rawRtmp(rtmpPort).catch(() => undefined);
      return client;
    }, 5000, 100);
    again.socket.destroy();
    await assertUnharmed(b, 'too many connections');
  });

  test('a connection that never publishes is closed at the handshake deadline, trickle or not', { timeout: 30_000 }, async () => {
    const silent = await rawRtmp(rtmpPort);
    const trickling = await rawRtmp(rtmpPort);
    const started = Date.now();
    const trickle = setInterval(() => trickling.write(Buffer.from([0x03])), 200);
    try {
      await closedWithin(silent, 5000, 'a silent connection');
      await closedWithin(trickling, 5000, 'a trickling connection');
    } finally {
      clearInterval(trickle);
    }
    const took = Date.now() - started;
    assert.ok(took >= 1500, `closed after ${took} ms, not before the 2 s deadline`);
    await assertUnharmed(b, 'slow handshakes');
  });

  test('a publisher with a valid key that only trickles bytes is closed under the minimum bitrate', { timeout: 30_000 }, async () => {
    const created = await api(b.node, 'POST', '/api/streams', { body: { title: 'Trickle' } });
    const client = await rawRtmp(rtmpPort);
    client.connect();
    client.publish(created.body.streamKey);
    await waitFor('the publish accepted', () => client.received().includes('NetStream.Publish.Start'), 5000, 50);
    const trickle = setInterval(() => client.write(Buffer.from([0xc4])), 250);
    try {
      await closedWithin(client, 6000, 'a trickling publisher');
    } finally {
      clearInterval(trickle);
    }
    await api(b.node, 'DELETE', `/api/streams/${created.body.id}`);
    await assertUnharmed(b, 'a trickling publisher');
  });
});
