import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { childProcesses, mediasoupWorkers } from '../../bench/support/procfs.js';
import type { OnAirNode } from '../../server/node.js';
import { restartWithBackoff } from '../../webrtc-edge/restartWithBackoff.js';
import { api, fixedFreePorts, isAlive, publish, startTestNode, waitFor } from '../support/harness.js';
import { connectWhep, type WhepClient } from '../support/whepClient.js';

/** What a player that lost its session does: POST again until a 201 (a 503 during the restart says when to retry). */
async function repost(url: string, deadlineMs: number): Promise<{ client: WhepClient; statuses: number[] }> {
  const statuses: number[] = [];
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const client = await connectWhep(url, { congestionControl: false, timeoutMs: Math.max(1000, deadline - Date.now()) });
    statuses.push(client.status);
    if (client.status === 201) return { client, statuses };
    await client.close();
    if (Date.now() > deadline) throw new Error(`no WHEP session within ${deadlineMs} ms: ${statuses.join(', ')} (${client.answer})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function mediasoupChildren(): number[] {
  return childProcesses(process.pid).filter((p) => p.comm.startsWith('mediasoup-work')).map((p) => p.pid);
}

/** The ports of the answer's ICE candidates: where the viewer's worker's WebRtcServer listens. */
function candidatePorts(answer: string): Set<number> {
  return new Set([...answer.matchAll(/^a=candidate:\S+ \d+ \S+ \d+ \S+ (\d+) typ/gm)].map((m) => Number(m[1])));
}

async function restartCount(node: OnAirNode): Promise<number> {
  const text = await (await fetch(`${node.httpUrl}/metrics`)).text();
  const match = /^onair_child_restarts_total\{child="mediasoup"\} (\d+)$/m.exec(text);
  return match ? Number(match[1]) : 0;
}

describe('restartWithBackoff: how a dead mediasoup worker\'s replacement is retried', () => {
  test('a replacement that fails to start is tried again after each backoff delay, the last one repeating', async () => {
    const attempts: number[] = [];
    const failures: { attempt: number; retryInMs: number }[] = [];
    const started = await restartWithBackoff(async () => {
      attempts.push(performance.now());
      if (attempts.length < 4) throw new Error(`spawn failed (${attempts.length})`);
    }, {
      backoffMs: [0, 30, 60],
      signal: new AbortController().signal,
      onFailure: (_error, attempt, retryInMs) => failures.push({ attempt, retryInMs }),
    });
    assert.equal(started, true);
    assert.equal(attempts.length, 4);
    assert.deepEqual(failures, [{ attempt: 1, retryInMs: 30 }, { attempt: 2, retryInMs: 60 }, { attempt: 3, retryInMs: 60 }]);
    const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!);
    for (const [i, min] of [30, 60, 60].entries()) assert.ok(gaps[i]! >= min - 2, `gap ${i}: ${gaps[i]} ms, at least ${min}`);
  });

  test('closing the edge ends a replacement waiting in backoff, with no further attempt', async () => {
    const closing = new AbortController();
    let attempts = 0;
    const began = performance.now();
    const started = await restartWithBackoff(async () => {
      attempts += 1;
      throw new Error('spawn failed');
    }, {
      backoffMs: [0, 60_000],
      signal: closing.signal,
      // The edge closes while the next attempt waits its 60 s.
      onFailure: () => setImmediate(() => closing.abort()),
    });
    assert.equal(started, false);
    assert.equal(attempts, 1);
    assert.ok(performance.now() - began < 1_000, 'the wait ended with the close');
  });
});

describe('Faults: a dead mediasoup worker is replaced, its viewers re-POST and are served within 5 s', { timeout: 240_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let publisher: ReturnType<typeof publish>;
  let streamId: string;
  let whepUrl: string;
  const open = new Set<WhepClient>();
  // A fixed port, as an operator configures one: the replacement must listen where the dead worker did.
  let basePort: number;

  const connect = async (): Promise<WhepClient> => {
    const client = await connectWhep(whepUrl, { congestionControl: false });
    open.add(client);
    assert.equal(client.status, 201, `WHEP POST answered ${client.status}: ${client.answer}`);
    return client;
  };

  before(async () => {
    basePort = await fixedFreePorts(2);
    ({ node, close } = await startTestNode({
      ONAIR_LADDER: '360', ONAIR_WEBRTC_LAYERS: '180', ONAIR_WEBRTC_WORKERS: '2', ONAIR_WEBRTC_PORT: String(basePort),
      // Every viewer comes from 127.0.0.1, and players re-POST in bursts.
      ONAIR_WHEP_MAX_SESSIONS_PER_ADDRESS: '1000', ONAIR_RATE_WHEP_PER_MIN: '0',
    }));
    assert.ok(node.edge, 'the WebRTC edge started');
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'mediasoup faults' } });
    streamId = created.body.id;
    whepUrl = `${node.httpUrl}/live/${streamId}/whep`;
    publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 640, height: 360 });
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);
  });

  after(async () => {
    await Promise.all([...open].map((c) => c.close()));
    publisher?.stop();
    await close?.();
  });

  test('a SIGKILLed viewer worker ends its viewers\' sessions, spares the other worker\'s, and new viewers get video within 5 s', async (t) => {
    const edge = node.edge!;
    const viewers = [await connect(), await connect(), await connect(), await connect()];
    await Promise.all(viewers.map((c, i) => c.waitFor(`viewer ${i}: video with a keyframe`, (s) => s.videoPackets >= 20 && s.keyframes > 0, 30_000)));
    const placed = new Map(edge.sessionStats(streamId).map((s) => [s.sessionId, s.worker]));
    assert.deepEqual(new Set(placed.values()), new Set([0, 1]), 'viewers on both workers');
    const before = await restartCount(node);

    const victim = mediasoupWorkers().viewers[0]!;
    process.kill(victim, 'SIGKILL');
    const killedAt = Date.now();
    await waitFor('the killed worker\'s viewers to be dropped', () => edge.viewers(streamId) < viewers.length, 5_000, 20);
    const left = new Set(edge.sessionStats(streamId).map((s) => s.sessionId));
    const dropped = viewers.filter((c) => !left.has(c.sessionId!));
    const kept = viewers.filter((c) => left.has(c.sessionId!));
    const deadWorker = placed.get(dropped[0]!.sessionId!);
    assert.ok(dropped.length > 0 && dropped.every((c) => placed.get(c.sessionId!) === deadWorker), 'only one worker\'s viewers were dropped');
    assert.ok(kept.length > 0 && kept.every((c) => placed.get(c.sessionId!) !== deadWorker), 'every viewer of the other worker kept its session');
    for (const c of dropped) {
      const response = await fetch(new URL(c.location!, whepUrl), { method: 'DELETE' });
      assert.equal(response.status, 404, 'the dropped session is gone');
      open.delete(c);
      await c.close();
    }

    const { client: fresh, statuses } = await repost(whepUrl, 5_000 - (Date.now() - killedAt));
    open.add(fresh);
    await fresh.waitFor('the new viewer: video with a keyframe', (s) => s.videoPackets >= 10 && s.keyframes > 0, Math.max(1_000, 5_000 - (Date.now() - killedAt)));
    t.diagnostic(`a new viewer received video ${Date.now() - killedAt} ms after the kill (POSTs: ${statuses.join(', ')})`);

    // The other worker's viewers kept receiving.
    const counts = kept.map((c) => c.stats().videoPackets);
    await Promise.all(kept.map((c, i) => c.waitFor(`kept viewer ${i}: more video`, (s) => s.videoPackets > counts[i]! + 20, 5_000)));

    await waitFor('both viewer workers serving again', () => !edge.degraded && mediasoupWorkers().viewers.length === 2, 5_000, 50);
    assert.ok(!isAlive(victim) || !mediasoupChildren().includes(victim));
    assert.equal(await restartCount(node) - before, 1, 'one mediasoup restart counted');
    // Viewers spread over both workers again, the replacement included.
    const more = [await connect(), await connect(), await connect()];
    await Promise.all(more.map((c, i) => c.waitFor(`later viewer ${i}: video`, (s) => s.videoPackets >= 10, 10_000)));
    const workerOf = new Map(edge.sessionStats(streamId).map((s) => [s.sessionId, s.worker]));
    assert.deepEqual(new Set(workerOf.values()), new Set([0, 1]));
    const onReplacement = more.find((c) => workerOf.get(c.sessionId!) === deadWorker)!;
    assert.deepEqual([...candidatePorts(onReplacement.answer)], [basePort + deadWorker!], 'the replacement listens on the dead worker\'s port');
    for (const c of [...open]) {
      await c.close();
      open.delete(c);
    }
    assert.equal(edge.viewers(streamId), 0);
  });

  test('with every mediasoup worker SIGKILLed, ingest included, /readyz says webrtc is degraded and new viewers get video within 5 s', async (t) => {
    const edge = node.edge!;
    const viewers = [await connect(), await connect()];
    await Promise.all(viewers.map((c, i) => c.waitFor(`viewer ${i}: video`, (s) => s.videoPackets >= 20 && s.keyframes > 0, 30_000)));
    const ready = await api(node, 'GET', '/readyz', { token: null });
    assert.equal(ready.body.checks.webrtc, true, 'webrtc ready before the fault');
    const before = await restartCount(node);

    // /readyz polled back to back from before the kill to after the recovery: what an orchestrator would see.
    const seen: unknown[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) seen.push((await api(node, 'GET', '/readyz', { token: null })).body.checks.webrtc);
    })();
    const pids = mediasoupChildren();
    assert.equal(pids.length, 3, 'an ingest worker and two viewer workers');
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    const killedAt = Date.now();
    try {
      await waitFor('every viewer dropped', () => edge.viewers(streamId) === 0, 5_000, 20);
      for (const c of viewers) {
        open.delete(c);
        await c.close();
      }
      const { client: fresh, statuses } = await repost(whepUrl, 5_000 - (Date.now() - killedAt));
      open.add(fresh);
      await fresh.waitFor('the new viewer: video with a keyframe', (s) => s.videoPackets >= 10 && s.keyframes > 0, Math.max(1_000, 5_000 - (Date.now() - killedAt)));
    t.diagnostic(`a new viewer received video ${Date.now() - killedAt} ms after the kill (POSTs: ${statuses.join(', ')})`);
      await waitFor('webrtc ready again', () => !edge.degraded, 5_000, 50);
    } finally {
      polling = false;
      await poller;
    }
    const after = await api(node, 'GET', '/readyz', { token: null });
    assert.equal(after.body.checks.webrtc, true, `webrtc ready after the recovery: ${JSON.stringify(after.body.checks)}`);
    assert.ok(seen.some((v) => typeof v === 'string' && v.includes('degraded')), `/readyz said webrtc was degraded meanwhile: ${JSON.stringify([...new Set(seen)])}`);
    assert.equal(await restartCount(node) - before, 3, 'three mediasoup restarts counted');
    const now = mediasoupChildren();
    assert.equal(now.length, 3);
    for (const pid of pids) assert.ok(!now.includes(pid), 'fresh worker processes');
  });
});
