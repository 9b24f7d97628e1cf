import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { io as connect, type Socket } from 'socket.io-client';
import WebSocket from 'ws';
import { SharedState } from '../../chat/SharedState.js';
import type { OnAirNode } from '../../server/node.js';
import { redisOptionsFromUrl, startEmbeddedRedis, type EmbeddedRedis } from '../../server/redis.js';
import { api, publish, startTestNode, waitFor, within } from '../support/harness.js';
import { startPostgres, type TestPostgres } from '../support/postgres.js';

/*
 * The chat end to end: real redis-server (started here, so that the test can restart it), two OnAir nodes with two
 * HTTP servers sharing it and one database, real Socket.IO clients over loopback. Every wait is on an event (or a
 * bounded poll of state that has none) with a deadline.
 */

/** Several OnAir nodes on one Redis the test controls and one database. */
interface Cluster {
  nodes: OnAirNode[];
  redisDir: string;
  redis(): EmbeddedRedis;
  /** Stops redis-server and starts it again on the same socket (and append-only file). */
  restartRedis(): Promise<void>;
  close(): Promise<void>;
}

async function startCluster(env: Record<string, string>, options: { count?: number; databaseUrl?: string } = {}): Promise<Cluster> {
  const redisDir = await mkdtemp(path.join(os.tmpdir(), 'onair-chat-redis-'));
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'onair-chat-'));
  let redis = await startEmbeddedRedis({ dataDir: redisDir });
  const started: Awaited<ReturnType<typeof startTestNode>>[] = [];
  const cleanup = async (): Promise<void> => {
    for (const node of started) await node.close({ keepData: true }).catch(() => {});
    await redis.stop();
    await rm(dataDir, { recursive: true, force: true });
    await rm(redisDir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < (options.count ?? 2); i++) {
      started.push(await startTestNode({
        ONAIR_REDIS_URL: redis.url,
        // No WebRTC: its fixed ports would collide between two nodes; the chat does not need it.
        ONAIR_WEBRTC_LAYERS: 'off',
        ONAIR_LADDER: '240',
        ...(options.databaseUrl === undefined ? {} : { ONAIR_DATABASE_URL: options.databaseUrl }),
        ...env,
      }, dataDir));
    }
  } catch (error) {
    await cleanup();
    throw error;
  }
  return {
    nodes: started.map((s) => s.node),
    redisDir,
    redis: () => redis,
    async restartRedis() {
      await redis.stop();
      redis = await startEmbeddedRedis({ dataDir: redisDir });
    },
    close: cleanup,
  };
}

const openClients = new Set<Socket>();

/** A Socket.IO client on the node's `/chat`, connected (or rejected with the connect error). */
function chatClient(node: OnAirNode, options: { token?: string; localAddress?: string } = {}): Promise<Socket> {
  const socket = connect(`${node.httpUrl}/chat`, {
    transports: ['websocket'],
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    ...(options.token === undefined ? {} : { auth: { token: options.token } }),
    // engine.io-client hands this to ws: the connection comes from another loopback address (127.0.0.0/8).
    ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
  } as Parameters<typeof connect>[1]);
  openClients.add(socket);
  return within('a chat connection', new Promise<Socket>((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (error) => {
      socket.close();
      reject(error);
    });
  }), 10_000);
}

function closeClients(): void {
  for (const socket of openClients) socket.close();
  openClients.clear();
}

/** The next `event` on `socket` that passes `filter`. */
function nextEvent<T = any>(socket: Socket, event: string, filter: (payload: T) => boolean = () => true, timeoutMs = 5000): Promise<T> {
  return within(`"${event}" on a chat client`, new Promise<T>((resolve) => {
    const listener = (payload: T): void => {
      if (!filter(payload)) return;
      socket.off(event, listener);
      resolve(payload);
    };
    socket.on(event, listener);
  }), timeoutMs);
}

/** Everything a client receives, in order. */
function record(socket: Socket): { event: string; payload: any }[] {
  const events: { event: string; payload: any }[] = [];
  socket.onAny((event: string, payload: unknown) => events.push({ event, payload }));
  return events;
}

async function join(socket: Socket, streamId: string, name: string): Promise<any> {
  const response = await socket.timeout(5000).emitWithAck('join', { streamId, name });
  assert.equal(response.ok, true, `join: ${JSON.stringify(response)}`);
  return response;
}

async function comment(socket: Socket, text: unknown): Promise<any> {
  return socket.timeout(5000).emitWithAck('comment', { text });
}

async function createStream(node: OnAirNode, title = 'Chat show'): Promise<{ id: string; streamKey: string }> {
  const created = await api(node, 'POST', '/api/streams', { body: { title } });
  assert.equal(created.status, 201);
  return created.body;
}

/** A live event through real RTMP: ffmpeg publishing a small test picture to `node`. */
async function goLive(node: OnAirNode, streamKey: string, streamId: string): Promise<{ stop(): void; eventId: string; startedAt: number }> {
  const publisher = publish(`${node.rtmpUrl}/${streamKey}`, { width: 320, height: 240, fps: 15 });
  try {
    const stats = await waitFor('the stream to be live', async () => {
      const { body } = await api(node, 'GET', `/api/streams/${streamId}`);
      return body.status === 'live' && body.stats ? body.stats : undefined;
    }, 20_000);
    return { stop: publisher.stop, eventId: stats.eventId, startedAt: stats.startedAt };
  } catch (error) {
    publisher.stop();
    throw error;
  }
}

/** Limits generous enough for the scenarios that are not about limits (all clients share one loopback address). */
const ROOMY = {
  ONAIR_CHAT_COMMENT_LIMIT: '20/1s',
  ONAIR_CHAT_ADDRESS_COMMENT_LIMIT: '10000/1s',
  ONAIR_CHAT_REACTION_LIMIT: '30/3s',
  ONAIR_CHAT_ADDRESS_REACTION_LIMIT: '10000/1s',
  ONAIR_CHAT_JOIN_LIMIT: '1000/1s',
  ONAIR_CHAT_MAX_CONNECTIONS_PER_ADDRESS: '1000',
};


/** Reactions a client has seen, summed over its updates. */
function reactionTally(socket: Socket): { updates: number; counts: Record<string, number> } {
  const tally = { updates: 0, counts: {} as Record<string, number> };
  socket.on('reactions', (update: { counts: Record<string, number>; windowMs: number }) => {
    tally.updates++;
    for (const [emoji, n] of Object.entries(update.counts)) tally.counts[emoji] = (tally.counts[emoji] ?? 0) + n;
  });
  return tally;
}

/**
 * The replay API over a real live event: comments kept with their offset from the event start, removed ones absent,
 * comments from before the event not replayed; the viewer count in the stats and /metrics.
 */
async function replayScenario(cluster: Cluster): Promise<void> {
  const [a, b] = cluster.nodes as [OnAirNode, OnAirNode];
  const stream = await createStream(a, 'Replay show');
  const alice = await chatClient(a);
  const anna = await chatClient(a);
  const bob = await chatClient(b);
  const studio = await chatClient(b, { token: b.adminToken });
  for (const [socket, name] of [[alice, 'Alice'], [anna, 'Anna'], [bob, 'Bob'], [studio, 'Studio']] as const) await join(socket, stream.id, name);
  const early = await comment(alice, 'before the show');
  assert.equal(early.ok, true);

  const live = await goLive(a, stream.streamKey, stream.id);
  try {
    // Three viewers on two processes; the admin connection (the studio) is not a viewer.
    await waitFor('3 chat viewers in the stream stats', async () => {
      const { body } = await api(a, 'GET', `/api/streams/${stream.id}`);
      return body.stats?.chatViewers === 3;
    }, 10_000);
    const metrics = await api(a, 'GET', '/metrics', { token: null });
    assert.match(metrics.body as string, new RegExp(`onair_chat_viewers\\{stream="${stream.id}"\\} 3`));
    // This process's connections: alice and anna at least (earlier tests' clients may still be there).
    const connections = Number(/^onair_chat_connections (\d+)$/m.exec(metrics.body as string)?.[1]);
    assert.ok(connections >= 2, `onair_chat_connections ${connections}`);

    const first = await comment(alice, 'first!');
    const script = await comment(bob, '<script>alert("replay")</script>');
    const doomed = await comment(anna, 'this one goes');
    const fourth = await comment(studio, 'thanks for watching');
    for (const ack of [first, script, doomed, fourth]) assert.equal(ack.ok, true, JSON.stringify(ack));
    assert.equal((await api(b, 'DELETE', `/api/streams/${stream.id}/comments/${doomed.id}`)).status, 204);

    const replay = await api(b, 'GET', `/api/videos/${live.eventId}/chat`, { token: null });
    assert.equal(replay.status, 200);
    assert.match(replay.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(replay.body.videoId, live.eventId);
    // Replay order: by offset, then by id. Two comments sent one after the other from two processes may share a
    // millisecond (CI saw it once): those go by id.
    const order = [first, script, fourth].sort((x, y) => x.at - y.at || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
    assert.deepEqual(replay.body.comments.map((c: { id: string }) => c.id), order.map((ack) => ack.id));
    order.forEach((ack, index) => {
      const kept = replay.body.comments[index];
      assert.equal(kept.at, ack.at);
      assert.equal(kept.offsetSec, (ack.at - live.startedAt) / 1000);
      assert.ok(kept.offsetSec >= 0);
    });
    const bobs = replay.body.comments.find((c: { id: string }) => c.id === script.id);
    assert.equal(bobs.text, '<script>alert("replay")</script>');
    assert.equal(bobs.name, 'Bob');
    assert.equal(replay.body.nextCursor, undefined);

    // A window: [fromSec, toSec): Bob's millisecond, and what else was said in it.
    const windowed = await api(a, 'GET', `/api/videos/${live.eventId}/chat?fromSec=${bobs.offsetSec}&toSec=${bobs.offsetSec + 0.001}`);
    assert.deepEqual(windowed.body.comments.map((c: { id: string }) => c.id),
      replay.body.comments.filter((c: { offsetSec: number }) => c.offsetSec === bobs.offsetSec).map((c: { id: string }) => c.id));
    assert.ok(windowed.body.comments.some((c: { id: string }) => c.id === script.id));
    // Pages.
    const page1 = await api(a, 'GET', `/api/videos/${live.eventId}/chat?limit=2`);
    assert.equal(page1.body.comments.length, 2);
    assert.equal(typeof page1.body.nextCursor, 'string');
    const page2 = await api(a, 'GET', `/api/videos/${live.eventId}/chat?limit=2&cursor=${page1.body.nextCursor}`);
    assert.deepEqual(page2.body.comments.map((c: { id: string }) => c.id), [order[2]!.id]);
    assert.equal(page2.body.nextCursor, undefined);
  } finally {
    live.stop();
  }

  const bad: [string, number, string][] = [
    ['?fromSec=-1', 400, 'ONAIR_ERR_VALIDATION'],
    ['?fromSec=abc', 400, 'ONAIR_ERR_VALIDATION'],
    ['?fromSec=10&toSec=5', 400, 'ONAIR_ERR_VALIDATION'],
    ['?toSec=-0.5', 400, 'ONAIR_ERR_VALIDATION'],
    ['?limit=0', 400, 'ONAIR_ERR_VALIDATION'],
    ['?cursor=nonsense', 400, 'ONAIR_ERR_VALIDATION'],
    ['?since=3', 400, 'ONAIR_ERR_VALIDATION'],
  ];
  for (const [query, status, code] of bad) {
    const response = await api(a, 'GET', `/api/videos/${live.eventId}/chat${query}`);
    assert.equal(response.status, status, query);
    assert.equal(response.body.error.code, code, query);
  }
  const unknown = await api(a, 'GET', '/api/videos/abcdefghij012345/chat');
  assert.equal(unknown.status, 404);
  assert.equal(unknown.body.error.code, 'ONAIR_ERR_VIDEO_NOT_FOUND');
}

describe('chat across two OnAir processes on one Redis', { timeout: 180_000 }, () => {
  let cluster: Cluster;
  let a: OnAirNode;
  let b: OnAirNode;

  before(async () => {
    cluster = await startCluster(ROOMY);
    [a, b] = cluster.nodes as [OnAirNode, OnAirNode];
  });

  after(async () => {
    closeClients();
    await cluster?.close();
  });

  test('a comment posted through one process reaches a client connected to the other, and so does its removal', { timeout: 30_000 }, async () => {
    const stream = await createStream(a);
    const alice = await chatClient(a);
    const bob = await chatClient(b);
    await join(alice, stream.id, 'Alice');
    await join(bob, stream.id, 'Bob');

    const seenByBob = nextEvent(bob, 'comment');
    const seenByAlice = nextEvent(alice, 'comment');
    const ack = await comment(alice, '  hello from node A  ');
    assert.equal(ack.ok, true);
    const received = await seenByBob;
    assert.deepEqual(received, { id: ack.id, name: 'Alice', text: 'hello from node A', at: ack.at });
    assert.deepEqual(await seenByAlice, received);

    const back = nextEvent(alice, 'comment', (c) => c.name === 'Bob');
    await comment(bob, 'hi Alice, from node B');
    assert.equal((await back).text, 'hi Alice, from node B');

    // A moderator removes Alice's comment through node B's API: both see the removal.
    const removedAtAlice = nextEvent(alice, 'removed');
    const removedAtBob = nextEvent(bob, 'removed');
    assert.equal((await api(b, 'DELETE', `/api/streams/${stream.id}/comments/${ack.id}`)).status, 204);
    assert.deepEqual(await removedAtAlice, { id: ack.id });
    assert.deepEqual(await removedAtBob, { id: ack.id });
  });

  test('the sharded adapter carries the rooms on Redis 7', { timeout: 5_000 }, () => {
    assert.equal(a.chat.adapterKind, 'sharded');
    assert.equal(b.chat.adapterKind, 'sharded');
  });

  test('a cue from the composition root reaches viewers on every process', { timeout: 15_000 }, async () => {
    const stream = await createStream(a);
    const viewer = await chatClient(b);
    await join(viewer, stream.id, 'Viewer');
    const cue = nextEvent(viewer, 'cue');
    a.chat.sendCue(stream.id, { kind: 'news', text: 'Breaking', durationSec: 10 });
    assert.deepEqual(await cue, { kind: 'news', text: 'Breaking', durationSec: 10 });
  });

  test('<script>-style comments and names come back as the same inert text', { timeout: 20_000 }, async () => {
    const stream = await createStream(a);
    const mallory = await chatClient(a);
    const reader = await chatClient(b);
    const name = '<b onmouseover=x>M</b>';
    await join(mallory, stream.id, name);
    await join(reader, stream.id, 'Reader');
    const payloads = [
      '<script>alert(document.cookie)</script>',
      '<img src=x onerror="alert(1)">',
      '&lt;b&gt; &amp; "double" \'single\' `back`',
      '{{constructor.constructor(\'alert(1)\')()}}',
      'javascript:alert(1)',
      '</textarea><svg/onload=alert(1)>',
    ];
    for (const text of payloads) {
      const arrived = nextEvent(reader, 'comment', (c) => c.text === text);
      const ack = await comment(mallory, text);
      assert.equal(ack.ok, true, `${text}: ${JSON.stringify(ack)}`);
      const received = await arrived;
      assert.equal(received.text, text);
      assert.equal(received.name, name);
    }
  });

  test('malformed payloads get catalogued errors; the sender and everyone else stay connected', { timeout: 30_000 }, async () => {
    const stream = await createStream(a);
    const sender = await chatClient(a);
    const errors: any[] = [];
    sender.on('error', (error: unknown) => errors.push(error));
    // Before joining.
    sender.emit('comment', { text: 'too early' });
    sender.emit('reaction', { emoji: '🔥' });
    await join(sender, stream.id, 'Sender');
    const cases: [string, unknown, string][] = [
      ['comment', null, 'ONAIR_ERR_CHAT_BAD_PAYLOAD'],
      ['comment', 42, 'ONAIR_ERR_CHAT_BAD_PAYLOAD'],
      ['comment', 'just a string', 'ONAIR_ERR_CHAT_BAD_PAYLOAD'],
      ['comment', [1, 2, 3], 'ONAIR_ERR_CHAT_BAD_PAYLOAD'],
      ['comment', { text: 5 }, 'ONAIR_ERR_CHAT_BAD_PAYLOAD'],
      ['comment', { text: { toString: 'x' } }, 'ONAIR_ERR_CHAT_BAD_PAYLOAD'],
      ['comment', { text: '   \t ' }, 'ONAIR_ERR_CHAT_TEXT_EMPTY'],
      ['comment', { text: 'x'.repeat(501) }, 'ONAIR_ERR_CHAT_TEXT_TOO_LONG'],
      ['comment', { text: '😀'.repeat(501) }, 'ONAIR_ERR_CHAT_TEXT_TOO_LONG'],
      ['comment', { text: 'bell\u0007' }, 'ONAIR_ERR_CHAT_TEXT_INVALID'],
      ['comment', { text: 'two\nlines' }, 'ONAIR_ERR_CHAT_TEXT_INVALID'],
      ['comment', { text: 'nul\u0000byte' }, 'ONAIR_ERR_CHAT_TEXT_INVALID'],
      ['comment', { text: 'evil \u202Egnp.exe' }, 'ONAIR_ERR_CHAT_TEXT_INVALID'],
      ['comment', { text: 'lone \uD800 surrogate' }, 'ONAIR_ERR_CHAT_TEXT_INVALID'],
      ['reaction', { emoji: '💩' }, 'ONAIR_ERR_CHAT_REACTION_INVALID'],
      ['reaction', 'fire', 'ONAIR_ERR_CHAT_BAD_PAYLOAD'],
      ['join', 'a string', 'ONAIR_ERR_CHAT_BAD_PAYLOAD'],
      ['join', { streamId: 5, name: 'x' }, 'ONAIR_ERR_CHAT_BAD_PAYLOAD'],
      ['join', { streamId: 'zzzzzzzzzzzz', name: 'Sender' }, 'ONAIR_ERR_CHAT_STREAM_NOT_FOUND'],
      ['join', { streamId: '../../etc', name: 'Sender' }, 'ONAIR_ERR_CHAT_STREAM_NOT_FOUND'],
      ['join', { streamId: stream.id, name: 'n'.repeat(33) }, 'ONAIR_ERR_CHAT_NAME_INVALID'],
      ['join', { streamId: stream.id, name: '' }, 'ONAIR_ERR_CHAT_NAME_INVALID'],
      ['join', { streamId: stream.id, name: 'tab\tname' }, 'ONAIR_ERR_CHAT_NAME_INVALID'],
      ['join', { streamId: stream.id }, 'ONAIR_ERR_CHAT_NAME_INVALID'],
      ['hack', { __proto__: { admin: true } }, 'ONAIR_ERR_CHAT_BAD_PAYLOAD'],
      ['error', { code: 'x' }, 'ONAIR_ERR_CHAT_BAD_PAYLOAD'],
    ];
    for (const [event, payload] of cases) sender.emit(event, payload);
    // With an acknowledgement, the refusal also comes back as { ok: false, error }.
    const acked = await comment(sender, '');
    assert.deepEqual(acked, { ok: false, error: { code: 'ONAIR_ERR_CHAT_TEXT_EMPTY', message: 'A comment needs some text' } });
    const expected = ['ONAIR_ERR_CHAT_NOT_JOINED', 'ONAIR_ERR_CHAT_NOT_JOINED', ...cases.map((c) => c[2]), 'ONAIR_ERR_CHAT_TEXT_EMPTY'];
    await waitFor('every refusal', () => errors.length >= expected.length, 5000, 20);
    assert.deepEqual(errors.map((e) => e.code), expected);
    for (const error of errors) assert.equal(typeof error.message, 'string');
    assert.equal(sender.connected, true);

    // Exactly 500 code points (astral ones included) pass, and the connection still works after all that.
    const reader = await chatClient(b);
    await join(reader, stream.id, 'Reader');
    const full = '😀'.repeat(500);
    const arrived = nextEvent(reader, 'comment', (c) => c.text === full);
    assert.equal((await comment(sender, full)).ok, true);
    await arrived;
  });

  test('an oversized frame closes only its sender; the others keep chatting', { timeout: 30_000 }, async () => {
    const stream = await createStream(a);
    const big = await chatClient(a);
    const left = await chatClient(a);
    const right = await chatClient(b);
    await join(big, stream.id, 'Big');
    await join(left, stream.id, 'Left');
    await join(right, stream.id, 'Right');
    const disconnected = nextEvent<string>(big, 'disconnect');
    big.io.reconnection(false);
    big.emit('comment', { text: 'x'.repeat(1024 * 1024) });
    assert.match(await disconnected, /transport close|transport error/);
    const arrived = nextEvent(right, 'comment', (c) => c.text === 'still here');
    assert.equal((await comment(left, 'still here')).ok, true);
    await arrived;
    assert.equal(left.connected && right.connected, true);
  });

  test('1,000 reactions in a second from 100 clients arrive as at most 5 coalesced updates with exact totals', { timeout: 60_000 }, async () => {
    const stream = await createStream(a);
    const viewers: Socket[] = [];
    for (let i = 0; i < 100; i++) viewers.push(await chatClient(i % 2 === 0 ? a : b));
    await Promise.all(viewers.map((socket, i) => join(socket, stream.id, `viewer ${i}`)));
    const watcherA = await chatClient(a);
    const watcherB = await chatClient(b);
    await join(watcherA, stream.id, 'Watcher A');
    await join(watcherB, stream.id, 'Watcher B');
    const tallies = [...viewers, watcherA, watcherB].map(reactionTally);

    const emojis = ['❤️', '👏', '😂', '🔥'];
    const expected: Record<string, number> = {};
    const startedAt = Date.now();
    viewers.forEach((socket, i) => {
      for (let k = 0; k < 10; k++) {
        const emoji = emojis[(i + k) % emojis.length]!;
        expected[emoji] = (expected[emoji] ?? 0) + 1;
        socket.emit('reaction', { emoji });
      }
    });
    const sentMs = Date.now() - startedAt;
    assert.ok(sentMs < 1000, `1,000 reactions were sent within a second (${sentMs} ms)`);
    const total = (counts: Record<string, number>): number => Object.values(counts).reduce((sum, n) => sum + n, 0);
    await waitFor('every client to see all 1,000 reactions', () => tallies.every((t) => total(t.counts) >= 1000), 15_000, 50);
    for (const [i, tally] of tallies.entries()) {
      assert.deepEqual(tally.counts, expected, `client ${i} totals`);
      assert.ok(tally.updates >= 1 && tally.updates <= 5, `client ${i} got ${tally.updates} updates`);
    }
  });

  test('the replay API returns the kept comments with their offsets, without the removed ones (SQLite)', { timeout: 60_000 }, async () => {
    await replayScenario(cluster);
  });
});

describe('chat limits and moderation', { timeout: 120_000 }, () => {
  let cluster: Cluster;
  let a: OnAirNode;
  let b: OnAirNode;

  before(async () => {
    cluster = await startCluster({
      ONAIR_CHAT_COMMENT_LIMIT: '5/10s',
      ONAIR_CHAT_ADDRESS_COMMENT_LIMIT: '8/60s',
      ONAIR_CHAT_BLOCKED_WORDS: 'spamword, buy now, bad',
      ONAIR_CHAT_MAX_CONNECTIONS_PER_ADDRESS: '4',
    });
    [a, b] = cluster.nodes as [OnAirNode, OnAirNode];
  });

  after(async () => {
    closeClients();
    await cluster?.close();
  });

  test('a flood from one client is cut with RATE_LIMITED while the others keep chatting', { timeout: 30_000 }, async () => {
    const stream = await createStream(a);
    const flooder = await chatClient(a, { localAddress: '127.0.0.9' });
    const left = await chatClient(a, { localAddress: '127.0.0.10' });
    const right = await chatClient(b, { localAddress: '127.0.0.11' });
    await join(flooder, stream.id, 'Flooder');
    await join(left, stream.id, 'Left');
    await join(right, stream.id, 'Right');
    const floodSeen: string[] = [];
    right.on('comment', (c: { name: string; text: string }) => {
      if (c.name === 'Flooder') floodSeen.push(c.text);
    });

    const acks = await Promise.all(Array.from({ length: 40 }, (_, i) => comment(flooder, `flood ${i}`)));
    const accepted = acks.filter((ack) => ack.ok);
    const limited = acks.filter((ack) => !ack.ok);
    assert.equal(accepted.length, 5, 'the burst of the connection bucket');
    assert.equal(limited.length, 35);
    for (const ack of limited) {
      assert.equal(ack.error.code, 'ONAIR_ERR_CHAT_RATE_LIMITED');
      assert.ok(ack.error.retryAfterMs > 0 && ack.error.retryAfterMs <= 2000, `retryAfterMs ${ack.error.retryAfterMs}`);
    }

    // Meanwhile, on both processes, the others chat as usual.
    const toRight = nextEvent(right, 'comment', (c) => c.text === 'can you hear me?');
    assert.equal((await comment(left, 'can you hear me?')).ok, true);
    await toRight;
    const toLeft = nextEvent(left, 'comment', (c) => c.text === 'loud and clear');
    assert.equal((await comment(right, 'loud and clear')).ok, true);
    await toLeft;
    await waitFor('the accepted flood comments to arrive', () => floodSeen.length === 5, 5000, 20);
    assert.equal(flooder.connected, true);
  });

  test('the address limit holds across connections from one address, not for its neighbours', { timeout: 30_000 }, async () => {
    const stream = await createStream(a);
    const first = await chatClient(a, { localAddress: '127.0.0.12' });
    const second = await chatClient(a, { localAddress: '127.0.0.12' });
    const third = await chatClient(a, { localAddress: '127.0.0.12' });
    const neighbour = await chatClient(a, { localAddress: '127.0.0.13' });
    for (const [socket, name] of [[first, 'One'], [second, 'Two'], [third, 'Three'], [neighbour, 'Neighbour']] as const) await join(socket, stream.id, name);
    for (let i = 0; i < 5; i++) assert.equal((await comment(first, `one ${i}`)).ok, true);
    for (let i = 0; i < 3; i++) assert.equal((await comment(second, `two ${i}`)).ok, true);
    assert.equal((await comment(second, 'two more')).error?.code, 'ONAIR_ERR_CHAT_RATE_LIMITED');
    assert.equal((await comment(third, 'three')).error?.code, 'ONAIR_ERR_CHAT_RATE_LIMITED');
    assert.equal((await comment(neighbour, 'next door')).ok, true);
  });

  test('slow mode holds on every process; admin connections are exempt; turning it off frees the viewers', { timeout: 30_000 }, async () => {
    const stream = await createStream(a);
    const viewer = await chatClient(b, { localAddress: '127.0.0.14' });
    const other = await chatClient(a, { localAddress: '127.0.0.15' });
    const studio = await chatClient(a, { token: a.adminToken });
    await join(viewer, stream.id, 'Viewer');
    await join(other, stream.id, 'Other');
    await join(studio, stream.id, 'Studio');

    const set = await api(a, 'PUT', `/api/streams/${stream.id}/chat`, { body: { slowModeSec: 30 } });
    assert.equal(set.status, 200);
    assert.equal(set.body.slowModeSec, 30);
    await waitFor('node B to apply slow mode', async () => (await api(b, 'GET', `/api/streams/${stream.id}/chat`)).body.slowModeSec === 30, 5000, 20);

    assert.equal((await comment(viewer, 'first')).ok, true);
    const second = await comment(viewer, 'second');
    assert.equal(second.error.code, 'ONAIR_ERR_CHAT_SLOW_MODE');
    assert.ok(second.error.retryAfterMs > 25_000 && second.error.retryAfterMs <= 30_000, `retryAfterMs ${second.error.retryAfterMs}`);
    assert.equal((await comment(other, 'my first')).ok, true);
    assert.equal((await comment(other, 'my second')).error.code, 'ONAIR_ERR_CHAT_SLOW_MODE');
    assert.equal((await comment(studio, 'the broadcaster')).ok, true);
    assert.equal((await comment(studio, 'speaks freely')).ok, true);
    // A rejoin keeps the connection's clock.
    await join(viewer, stream.id, 'Viewer again');
    assert.equal((await comment(viewer, 'sneaky')).error.code, 'ONAIR_ERR_CHAT_SLOW_MODE');

    assert.equal((await api(b, 'PUT', `/api/streams/${stream.id}/chat`, { body: { slowModeSec: 0 } })).status, 200);
    await waitFor('node A to drop slow mode', async () => (await api(a, 'GET', `/api/streams/${stream.id}/chat`)).body.slowModeSec === 0, 5000, 20);
    assert.equal((await comment(viewer, 'free again')).ok, true);
    assert.equal((await comment(other, 'me too')).ok, true);
  });

  test('blocked words are refused in comments and names, on word boundaries', { timeout: 20_000 }, async () => {
    const stream = await createStream(a);
    const viewer = await chatClient(a, { localAddress: '127.0.0.16' });
    const refused = await viewer.timeout(5000).emitWithAck('join', { streamId: stream.id, name: 'SpamWord King' });
    assert.equal(refused.error.code, 'ONAIR_ERR_CHAT_BLOCKED_WORD');
    await join(viewer, stream.id, 'Viewer');
    assert.equal((await comment(viewer, 'great SPAMWORD here')).error.code, 'ONAIR_ERR_CHAT_BLOCKED_WORD');
    assert.equal((await comment(viewer, 'please BUY   NOW')).error.code, 'ONAIR_ERR_CHAT_BLOCKED_WORD');
    assert.equal((await comment(viewer, 'ｓｐａｍｗｏｒｄ in fullwidth')).error.code, 'ONAIR_ERR_CHAT_BLOCKED_WORD');
    assert.equal((await comment(viewer, 'spamwords and buy nowhere are fine')).ok, true);

    // Invisible characters and look-alike letters do not hide a blocked word (a soft hyphen, a zero-width space, a
    // Cyrillic а); what others see of an accepted comment is exactly what was sent.
    const sly = await chatClient(a, { localAddress: '127.0.0.20' });
    await join(sly, stream.id, 'Sly');
    for (const text of ['so b\u00ADad', 'so b\u200Bad', 'so b\u0430d']) {
      assert.equal((await comment(sly, text)).error?.code, 'ONAIR_ERR_CHAT_BLOCKED_WORD', JSON.stringify(text));
    }
    const reader = await chatClient(b, { localAddress: '127.0.0.19' });
    await join(reader, stream.id, 'Reader');
    const kept = 'caf\u00E9 \u2764\uFE0F, a classy show at 5 pm';
    const arrived = nextEvent(reader, 'comment', (c) => c.name === 'Sly');
    assert.equal((await comment(sly, kept)).ok, true);
    assert.equal((await arrived).text, kept);
  });

  test('chat connections from one address are capped across processes; the one over the cap is told why, the others chat on', { timeout: 30_000 }, async () => {
    const stream = await createStream(a);
    const from = { localAddress: '127.0.0.21' };
    // The cap is 4: two connections on each process.
    const held = [await chatClient(a, from), await chatClient(b, from), await chatClient(a, from), await chatClient(b, from)];
    for (const [i, socket] of held.entries()) await join(socket, stream.id, `Held ${i}`);
    for (const node of [a, b]) {
      await assert.rejects(chatClient(node, from), (error: Error & { data?: { code: string; message: string } }) => {
        assert.equal(error.data?.code, 'ONAIR_ERR_CHAT_TOO_MANY_CONNECTIONS');
        assert.match(error.data?.message ?? '', /connections/);
        return true;
      });
    }
    // A client that ignores the refusal does not keep its transport either: the server closes it.
    const raw = new WebSocket(`${a.httpUrl.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`, { localAddress: from.localAddress });
    const frames: string[] = [];
    raw.on('message', (data: Buffer) => {
      const frame = data.toString();
      frames.push(frame);
      if (frame.startsWith('0{')) raw.send('40/chat,'); // engine.io open → Socket.IO CONNECT to /chat
    });
    await within('the server to close a refused client\'s transport', new Promise((resolve) => raw.once('close', resolve)), 5000);
    assert.ok(frames.some((frame) => frame.startsWith('44/chat,') && frame.includes('ONAIR_ERR_CHAT_TOO_MANY_CONNECTIONS')), frames.join(' | '));

    // The broadcaster's studio (admin token) is not counted; a neighbouring address is not affected.
    const studio = await chatClient(a, { ...from, token: a.adminToken });
    await join(studio, stream.id, 'Studio');
    const neighbour = await chatClient(b, { localAddress: '127.0.0.22' });
    await join(neighbour, stream.id, 'Neighbour');
    // The held connections keep chatting across processes.
    const arrived = nextEvent(held[1]!, 'comment', (c) => c.text === 'still here');
    assert.equal((await comment(held[0]!, 'still here')).ok, true);
    await arrived;
    assert.ok(held.every((socket) => socket.connected));

    // Closing one (on node B) frees a slot, on either process.
    held[3]!.close();
    const again = await waitFor('a freed slot', () => chatClient(a, from).catch(() => undefined), 5000, 50);
    await join(again, stream.id, 'Again');
    await assert.rejects(chatClient(b, from), (error: Error & { data?: { code: string } }) => error.data?.code === 'ONAIR_ERR_CHAT_TOO_MANY_CONNECTIONS');
  });

  test('the connections of a process that died stop counting once their entries expire', { timeout: 15_000 }, async () => {
    const redis = new Redis({ ...redisOptionsFromUrl(cluster.redis().url), lazyConnect: true });
    await redis.connect();
    try {
      const state = new SharedState(redis);
      const address = '192.0.2.1';
      // The whole allowance of an address, short-lived: three connections of a process that died (never refreshed) and
      // one of a process that lives and refreshes its entries.
      for (const member of ['dead/0', 'dead/1', 'dead/2', 'alive/0']) assert.equal(await state.acquireConnection(address, member, 4, 300), true);
      await state.refreshConnections(new Map([[address, ['alive/0']]]), 60_000);
      assert.equal(await state.acquireConnection(address, 'new/0', 4, 60_000), false);
      await waitFor('the dead entries to expire', () => state.acquireConnection(address, 'new/0', 4, 60_000), 5000, 50);
      // The refreshed entry still counts: with a cap of 2, alive/0 and new/0 fill it.
      assert.equal(await state.acquireConnection(address, 'new/1', 2, 60_000), false);
      assert.equal(await state.acquireConnection(address, 'new/0', 2, 60_000), true, 'a member holding a slot keeps it');
      // A released entry frees its slot at once.
      await state.releaseConnections([[address, 'new/0']]);
      assert.equal(await state.acquireConnection(address, 'new/1', 2, 60_000), true);
    } finally {
      redis.disconnect();
    }
  });

  test('a ban by address disconnects that address on every process and holds for new connections', { timeout: 30_000 }, async () => {
    const stream = await createStream(a);
    const troll = await chatClient(a, { localAddress: '127.0.0.5' });
    const trollOnB = await chatClient(b, { localAddress: '127.0.0.5' });
    const good = await chatClient(b, { localAddress: '127.0.0.6' });
    await join(troll, stream.id, 'Troll');
    await join(trollOnB, stream.id, 'Troll 2');
    await join(good, stream.id, 'Good');
    const bad = await comment(troll, 'something nasty');
    assert.equal(bad.ok, true);

    const bannedA = nextEvent(troll, 'error', (e) => e.code === 'ONAIR_ERR_CHAT_BANNED');
    const bannedB = nextEvent(trollOnB, 'error', (e) => e.code === 'ONAIR_ERR_CHAT_BANNED');
    const goneA = nextEvent<string>(troll, 'disconnect');
    const goneB = nextEvent<string>(trollOnB, 'disconnect');
    const ban = await api(b, 'POST', `/api/streams/${stream.id}/bans`, { body: { commentId: bad.id } });
    assert.equal(ban.status, 201);
    assert.equal(ban.body.kind, 'address');
    assert.equal(ban.body.target, '127.0.0.5');
    assert.equal(ban.body.expiresAt, null);
    await bannedA;
    await bannedB;
    assert.equal(await goneA, 'io server disconnect');
    assert.equal(await goneB, 'io server disconnect');

    // A new connection from the address is refused on either process; its neighbour chats on.
    for (const node of [a, b]) {
      const again = await chatClient(node, { localAddress: '127.0.0.5' });
      const refused = await again.timeout(5000).emitWithAck('join', { streamId: stream.id, name: 'Troll returns' });
      assert.equal(refused.error.code, 'ONAIR_ERR_CHAT_BANNED');
      again.close();
    }
    assert.equal((await comment(good, 'peace at last')).ok, true);

    const listed = await api(a, 'GET', `/api/streams/${stream.id}/bans`);
    assert.deepEqual(listed.body.bans.map((x: { id: string }) => x.id), [ban.body.id]);
    assert.equal((await api(a, 'DELETE', `/api/streams/${stream.id}/bans/${ban.body.id}`)).status, 204);
    const forgiven = await chatClient(a, { localAddress: '127.0.0.5' });
    await join(forgiven, stream.id, 'Reformed');
    assert.equal((await api(a, 'DELETE', `/api/streams/${stream.id}/bans/${ban.body.id}`)).body.error.code, 'ONAIR_ERR_CHAT_BAN_NOT_FOUND');

    // An address given directly (IPv4-mapped IPv6 is the same address).
    const direct = await api(a, 'POST', `/api/streams/${stream.id}/bans`, { body: { address: '::ffff:127.0.0.8', durationSec: 60 } });
    assert.equal(direct.status, 201);
    assert.equal(direct.body.target, '127.0.0.8');
    const blocked = await chatClient(a, { localAddress: '127.0.0.8' });
    assert.equal((await blocked.timeout(5000).emitWithAck('join', { streamId: stream.id, name: 'Eight' })).error.code, 'ONAIR_ERR_CHAT_BANNED');
  });

  test('a ban by connection ends that connection only', { timeout: 30_000 }, async () => {
    const stream = await createStream(a);
    const rude = await chatClient(b, { localAddress: '127.0.0.7' });
    await join(rude, stream.id, 'Rude');
    const said = await comment(rude, 'rude words');
    const gone = nextEvent<string>(rude, 'disconnect');
    const ban = await api(a, 'POST', `/api/streams/${stream.id}/bans`, { body: { commentId: said.id, scope: 'connection' } });
    assert.equal(ban.status, 201);
    assert.equal(ban.body.kind, 'connection');
    assert.equal(await gone, 'io server disconnect');
    const back = await chatClient(b, { localAddress: '127.0.0.7' });
    await join(back, stream.id, 'Polite');
    assert.equal((await comment(back, 'sorry')).ok, true);
  });

  test('moderation routes need the admin token (401 without, 403 wrong) and validate what they get', { timeout: 30_000 }, async () => {
    const stream = await createStream(a);
    const viewer = await chatClient(a, { localAddress: '127.0.0.17' });
    await join(viewer, stream.id, 'Viewer');
    const said = await comment(viewer, 'moderate me');
    const routes: [string, string, unknown][] = [
      ['PUT', `/api/streams/${stream.id}/chat`, { slowModeSec: 5 }],
      ['DELETE', `/api/streams/${stream.id}/comments/${said.id}`, undefined],
      ['POST', `/api/streams/${stream.id}/bans`, { commentId: said.id }],
      ['GET', `/api/streams/${stream.id}/bans`, undefined],
      ['DELETE', `/api/streams/${stream.id}/bans/abcdefghijkl`, undefined],
    ];
    for (const [method, url, body] of routes) {
      const missing = await api(a, method, url, { token: null, ...(body === undefined ? {} : { body }) });
      assert.equal(missing.status, 401, `${method} ${url}`);
      assert.equal(missing.body.error.code, 'ONAIR_ERR_UNAUTHORIZED');
      const wrong = await api(b, method, url, { token: 'not-the-admin-token-at-all', ...(body === undefined ? {} : { body }) });
      assert.equal(wrong.status, 403, `${method} ${url}`);
      assert.equal(wrong.body.error.code, 'ONAIR_ERR_FORBIDDEN');
    }
    // Nothing happened.
    assert.equal((await api(a, 'GET', `/api/streams/${stream.id}/chat`, { token: null })).body.slowModeSec, 0);

    const invalid: [string, string, unknown, number, string][] = [
      ['PUT', `/api/streams/${stream.id}/chat`, { slowModeSec: -1 }, 400, 'ONAIR_ERR_VALIDATION'],
      ['PUT', `/api/streams/${stream.id}/chat`, { slowModeSec: '10' }, 400, 'ONAIR_ERR_VALIDATION'],
      ['PUT', `/api/streams/${stream.id}/chat`, { slowModeSec: 10, extra: true }, 400, 'ONAIR_ERR_VALIDATION'],
      ['PUT', `/api/streams/${stream.id}/chat`, { slowModeSec: 100_000 }, 400, 'ONAIR_ERR_VALIDATION'],
      ['PUT', '/api/streams/zzzzzzzzzzzz/chat', { slowModeSec: 10 }, 404, 'ONAIR_ERR_STREAM_NOT_FOUND'],
      ['POST', `/api/streams/${stream.id}/bans`, {}, 400, 'ONAIR_ERR_VALIDATION'],
      ['POST', `/api/streams/${stream.id}/bans`, { commentId: said.id, address: '10.0.0.1' }, 400, 'ONAIR_ERR_VALIDATION'],
      ['POST', `/api/streams/${stream.id}/bans`, { address: 'not an address' }, 400, 'ONAIR_ERR_VALIDATION'],
      ['POST', `/api/streams/${stream.id}/bans`, { address: '10.0.0.1', scope: 'connection' }, 400, 'ONAIR_ERR_VALIDATION'],
      ['POST', `/api/streams/${stream.id}/bans`, { commentId: 'abcdefghijklmnop' }, 404, 'ONAIR_ERR_CHAT_COMMENT_NOT_FOUND'],
      ['POST', `/api/streams/${stream.id}/bans`, { commentId: said.id, durationSec: 0 }, 400, 'ONAIR_ERR_VALIDATION'],
      ['DELETE', `/api/streams/${stream.id}/comments/abcdefghijklmnop`, undefined, 404, 'ONAIR_ERR_CHAT_COMMENT_NOT_FOUND'],
      ['DELETE', `/api/streams/${stream.id}/comments/short`, undefined, 400, 'ONAIR_ERR_VALIDATION'],
      ['DELETE', `/api/streams/zzzzzzzzzzzz/comments/${said.id}`, undefined, 404, 'ONAIR_ERR_STREAM_NOT_FOUND'],
    ];
    for (const [method, url, body, status, code] of invalid) {
      const response = await api(a, method, url, body === undefined ? {} : { body });
      assert.equal(response.status, status, `${method} ${url} ${JSON.stringify(body)}: ${JSON.stringify(response.body)}`);
      assert.equal(response.body.error.code, code, `${method} ${url} ${JSON.stringify(body)}`);
    }
  });

  test('a wrong admin token in the handshake, or another namespace, is refused at connection', { timeout: 15_000 }, async () => {
    await assert.rejects(chatClient(a, { token: 'wrong-token-wrong-token' }), (error: Error & { data?: { code: string } }) => {
      assert.equal(error.data?.code, 'ONAIR_ERR_FORBIDDEN');
      return true;
    });
    const root = connect(a.httpUrl, { transports: ['websocket'], forceNew: true, reconnection: false });
    openClients.add(root);
    const error = await nextEvent<Error & { data?: { code: string } }>(root, 'connect_error');
    assert.equal(error.data?.code, 'ONAIR_ERR_NOT_FOUND');
  });

  test('a deleted stream tells its viewers and forgets its comments', { timeout: 15_000 }, async () => {
    const stream = await createStream(a);
    const viewer = await chatClient(b, { localAddress: '127.0.0.18' });
    await join(viewer, stream.id, 'Viewer');
    const told = nextEvent(viewer, 'error', (e) => e.code === 'ONAIR_ERR_CHAT_STREAM_NOT_FOUND');
    assert.equal((await api(a, 'DELETE', `/api/streams/${stream.id}`)).status, 204);
    await told;
    assert.equal((await comment(viewer, 'anyone?')).error.code, 'ONAIR_ERR_CHAT_NOT_JOINED');
  });
});

for (const adapter of ['sharded', 'classic'] as const) describe(`chat through a Redis restart (${adapter} adapter)`, { timeout: 120_000 }, () => {
  let cluster: Cluster;

  before(async () => {
    cluster = await startCluster({ ...ROOMY, ONAIR_CHAT_REDIS_ADAPTER: adapter });
    for (const node of cluster.nodes) assert.equal(node.chat.adapterKind, adapter);
  });

  after(async () => {
    closeClients();
    await cluster?.close();
  });

  test('clients stay (or come back) and chat across processes resumes without a node restart', { timeout: 60_000 }, async () => {
    const [a, b] = cluster.nodes as [OnAirNode, OnAirNode];
    const stream = await createStream(a);
    const alice = await chatClient(a);
    const amy = await chatClient(a);
    const bob = await chatClient(b);
    await join(alice, stream.id, 'Alice');
    await join(amy, stream.id, 'Amy');
    await join(bob, stream.id, 'Bob');
    const before = nextEvent(bob, 'comment', (c) => c.text === 'before');
    await comment(alice, 'before');
    await before;

    const oldPid = cluster.redis().pid;
    await cluster.redis().stop();
    // Redis away: viewers on the same process still chat (and comments are still kept).
    const local = nextEvent(amy, 'comment', (c) => c.text === 'while redis is away');
    assert.equal((await comment(alice, 'while redis is away')).ok, true);
    await local;
    // The connection cap is counted in Redis: without it, new viewers are still let in.
    const late = await chatClient(a);
    await join(late, stream.id, 'Late');

    await cluster.restartRedis();
    assert.notEqual(cluster.redis().pid, oldPid);
    await waitFor('both nodes to be ready again', async () => {
      const ready = await Promise.all([a, b].map((node) => api(node, 'GET', '/readyz', { token: null })));
      return ready.every((r) => r.status === 200);
    }, 15_000, 100);

    // Resubscription takes a moment after the reconnection: post until a comment crosses over, each way.
    for (const [from, to, label] of [[alice, bob, 'A→B'], [bob, alice, 'B→A']] as const) {
      let crossed = false;
      const deadline = Date.now() + 20_000;
      for (let i = 0; !crossed && Date.now() < deadline; i++) {
        const text = `${label} after restart ${i}`;
        const arrived = nextEvent(to, 'comment', (c) => c.text === text, 500).then(() => true, () => false);
        assert.equal((await comment(from, text)).ok, true);
        crossed = await arrived;
      }
      assert.ok(crossed, `a comment crossed ${label} after the restart`);
    }
    for (const socket of [alice, amy, bob]) assert.equal(socket.connected, true);

    // Reactions and removals cross again too.
    const reacted = nextEvent(bob, 'reactions', (r) => r.counts['🔥'] === 1);
    alice.emit('reaction', { emoji: '🔥' });
    await reacted;
    const said = await comment(bob, 'remove me');
    const removed = nextEvent(alice, 'removed', (r) => r.id === said.id);
    assert.equal((await api(a, 'DELETE', `/api/streams/${stream.id}/comments/${said.id}`)).status, 204);
    await removed;
  });
});

describe('chat on PostgreSQL', { timeout: 180_000 }, () => {
  let postgres: TestPostgres;
  let cluster: Cluster;

  before(async () => {
    postgres = await startPostgres();
    cluster = await startCluster(ROOMY, { databaseUrl: postgres.url });
  });

  after(async () => {
    closeClients();
    await cluster?.close();
    await postgres?.stop();
  });

  test('the replay API returns the kept comments with their offsets, without the removed ones (PostgreSQL)', { timeout: 60_000 }, async () => {
    await replayScenario(cluster);
  });
});

describe('chat over HTTPS (HTTP/2 with HTTP/1.1 allowed)', { timeout: 60_000 }, () => {
  test('WebSocket and long-polling clients chat on a TLS node', { timeout: 40_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-chat-tls-'));
    const key = path.join(dir, 'k.pem');
    const cert = path.join(dir, 'c.pem');
    await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1',
      '-keyout', key, '-out', cert], { timeout: 30_000 });
    const started = await startTestNode({ ONAIR_TLS_CERT: cert, ONAIR_TLS_KEY: key, ONAIR_WEBRTC_LAYERS: 'off', ...ROOMY });
    try {
      const node = started.node;
      assert.match(node.httpUrl, /^https:/);
      // Straight to the store: fetch would refuse the self-signed certificate.
      const { stream } = await node.streams.create({ title: 'TLS chat' });
      const options = { forceNew: true, rejectUnauthorized: false, reconnection: false } as const;
      const ws = connect(`${node.httpUrl}/chat`, { ...options, transports: ['websocket'] });
      const polling = connect(`${node.httpUrl}/chat`, { ...options, transports: ['polling'] });
      openClients.add(ws);
      openClients.add(polling);
      await Promise.all([ws, polling].map((socket) => within('a TLS chat connection', new Promise((resolve, reject) => {
        socket.once('connect', () => resolve(undefined));
        socket.once('connect_error', reject);
      }), 10_000)));
      await join(ws, stream.id, 'Secure WS');
      await join(polling, stream.id, 'Secure polling');
      const arrived = nextEvent(polling, 'comment', (c) => c.text === 'over TLS');
      assert.equal((await comment(ws, 'over TLS')).ok, true);
      await arrived;
      closeClients();
    } finally {
      closeClients();
      await started.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
