import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  applicableSteps, CAPACITY_HEADROOM, degradeLadder, liveLadderArgs, LoadGovernor, planLadder, processCpuSeconds,
  type LiveTranscoder, type SourceInfo,
} from '../live-transcoder/index.js';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createLogger } from '../lib/log.js';

const source: SourceInfo = { width: 1280, height: 720, fps: 30, videoCodec: 'h264', audioCodec: 'aac', declaredVideoKbps: 3000 };
const full = planLadder(source, { heights: [720, 480, 360], passthrough: false, gopMs: 2000, webrtcHeights: [480, 240] });
const log = createLogger({ level: 'silent' });

describe('degradation policy (live-transcoder/degrade.ts)', () => {
  test('the steps apply in order, and each keeps every rung name fed by some output', () => {
    assert.deepEqual(applicableSteps(full, 'libx264', 'superfast'), ['drop-top', 'faster-preset', 'lower-fps', 'passthrough']);
    const names = full.renditions.map((r) => r.name);
    for (let level = 0; level <= 4; level++) {
      const d = degradeLadder(full, level, 'libx264', 'superfast');
      assert.deepEqual(d.shown.renditions.map((r) => r.name), names, `level ${level}: every rung keeps its playlist`);
      const fed = [...d.feeds.values()].flat().sort();
      assert.deepEqual(fed, [...names].sort(), `level ${level}: every rung is fed exactly once`);
      for (const output of d.outputs.renditions) assert.ok(d.feeds.has(output.name));
    }
  });

  test('level 1 stops encoding the top rung: its playlist carries the next rung, and the top WebRTC layer goes', () => {
    const d = degradeLadder(full, 1, 'libx264', 'superfast');
    assert.deepEqual(d.outputs.renditions.map((r) => r.name), ['480p', '360p']);
    assert.deepEqual(d.feeds.get('480p'), ['720p', '480p']);
    const top = d.shown.renditions.find((r) => r.name === '720p')!;
    assert.equal(top.height, 480);
    assert.deepEqual(d.outputs.webrtc?.layers.map((l) => l.height), [240]);
    assert.equal(d.x264Preset, 'superfast');
  });

  test('level 2 encodes ultrafast; level 3 halves the lower rungs\' frame rate; level 4 copies the source only', () => {
    assert.equal(degradeLadder(full, 2, 'libx264', 'superfast').x264Preset, 'ultrafast');
    const three = degradeLadder(full, 3, 'libx264', 'superfast');
    assert.deepEqual(three.outputs.renditions.map((r) => [r.name, r.fps]), [['480p', 30], ['360p', 15]]);
    const four = degradeLadder(full, 4, 'libx264', 'superfast');
    assert.deepEqual(four.outputs.renditions.map((r) => [r.name, r.passthrough]), [['source', true]]);
    assert.deepEqual(four.feeds.get('source'), ['720p', '480p', '360p']);
    // The command has no HLS video encode left: one copied video output, and the one WebRTC layer.
    const argv = liveLadderArgs({ plan: four.outputs, encoder: 'libx264', x264Preset: four.x264Preset, partTargetMs: 200, vaapiDevice: '' });
    assert.equal(argv.filter((a) => a === 'copy').length, 2, 'video and AAC audio copied');
    assert.ok(!argv.join(' ').includes('libx264'), 'no x264 output without RTP targets');
  });

  test('steps that change nothing are skipped: one rung, a hardware encoder, ultrafast already, a 15 fps source', () => {
    const one = planLadder(source, { heights: [480], passthrough: false, gopMs: 2000, webrtcHeights: [] });
    assert.deepEqual(applicableSteps(one, 'nvenc', 'superfast'), ['lower-fps', 'passthrough']);
    const slow = planLadder({ ...source, fps: 15 }, { heights: [720, 480], passthrough: false, gopMs: 2000, webrtcHeights: [] });
    assert.deepEqual(applicableSteps(slow, 'libx264', 'ultrafast'), ['drop-top', 'passthrough']);
    // A level past the last step is the last step.
    assert.deepEqual(degradeLadder(slow, 9, 'libx264', 'ultrafast').steps, ['drop-top', 'passthrough']);
  });
});

/** A stand-in for a live transcoder: what the governor reads and calls. */
class FakeTranscoder {
  backlogMs = 0;
  /** CPU seconds its ffmpeg has used. */
  cpuSec = 0;
  level = 0;
  maxLevel = 4;
  catchUps = 0;
  changes: number[] = [];
  constructor(readonly streamId: string) {}
  setLevel(level: number): void {
    this.level = level;
    this.changes.push(level);
    this.backlogMs = 0;
  }
  catchUp(): void {
    this.catchUps += 1;
    this.backlogMs = 0;
  }
}

/** A governor driven by the test's own clock: `advance(ms)` looks at the streams every 100 ms of it. */
function governor(over: Partial<ConstructorParameters<typeof LoadGovernor>[0]> = {}): { g: LoadGovernor; advance(ms: number, during?: () => void): void; add(t: FakeTranscoder): void } {
  let now = 1_000_000;
  const g = new LoadGovernor({
    policy: 'degrade', log, behindMs: 1000, behindForMs: 2000, settleMs: 3000, recoverAfterMs: 10_000, sampleMs: 0,
    cpuIdle: () => 0.9, cpuSeconds: (t) => (t as unknown as FakeTranscoder).cpuSec, cores: 2, ...over,
  });
  return {
    g,
    add: (t) => g.add(t as unknown as LiveTranscoder, now),
    advance(ms, during) {
      for (const end = now + ms; now < end;) {
        now += 100;
        during?.();
        g.check(now);
      }
    },
  };
}

describe('load governor (live-transcoder/LoadGovernor.ts)', () => {
  test('a stream whose backlog stays high is degraded one step at a time, each after the last settled', () => {
    const { g, add, advance } = governor({ recoverAfterMs: 600_000 });
    const t = new FakeTranscoder('a');
    add(t);
    assert.equal(g.refusal(), undefined);
    advance(3000);
    t.backlogMs = 3000;
    advance(1000);
    assert.deepEqual(t.changes, [], 'one second behind is not yet behind');
    advance(1500);
    assert.deepEqual(t.changes, [1]);
    assert.match(g.refusal() ?? '', /short of CPU/, 'a degraded stream closes the node to new publishers');
    t.backlogMs = 3000;
    advance(2500);
    assert.deepEqual(t.changes, [1], 'the next step waits for the last one to settle');
    advance(1000);
    assert.deepEqual(t.changes, [1, 2]);
    g.close();
  });

  test('a backlog that shrinks (a burst after a network stall being caught up) is not behind', () => {
    const { g, add, advance } = governor();
    const t = new FakeTranscoder('a');
    add(t);
    advance(3000);
    t.backlogMs = 6000;
    advance(5000, () => { t.backlogMs = Math.max(0, t.backlogMs - 100); });
    assert.deepEqual(t.changes, []);
    assert.equal(g.refusal(), undefined);
    g.close();
  });

  test('sampled once a second by a timer that drifts (1001 ms), a backlog held over the bound is behind within a few samples', () => {
    // The window kept only the samples of the last 3 s: with a timer a millisecond late, three samples spanning 2 s,
    // never the 2.25 s asked for; the stream was found behind only when the timer happened to run early (6–20 s).
    const g = new LoadGovernor({
      policy: 'degrade', log, behindMs: 1000, behindForMs: 3000, settleMs: 8000, sampleMs: 0,
      cpuIdle: () => 0.9, cpuSeconds: () => undefined, cores: 2,
    });
    const t = new FakeTranscoder('a');
    let now = 1_000_000;
    g.add(t as unknown as LiveTranscoder, now);
    t.backlogMs = 3000;
    let tookMs: number | undefined;
    for (let at = now; at < now + 20_000; at += 1001) {
      g.check(at);
      if (t.changes.length > 0) {
        tookMs = at - now;
        break;
      }
    }
    assert.ok(tookMs !== undefined && tookMs <= 9_100, `found behind after ${tookMs} ms (settle 8 s, window 3 s)`);
    g.close();
  });

  test('a noisy backlog (a publisher sending in bursts to an encoder short of CPU) is behind when it sits over the bound', () => {
    // Measured in the overload test: an encoder at ~0.95x real time read 1.7, 3.0, 1.0, 3.4, 2.1 s… behind, its
    // readings dipping under the bound now and then; the governor waited until the dips stopped (6–12 s behind).
    const { g, add, advance } = governor();
    const t = new FakeTranscoder('a');
    add(t);
    advance(3000);
    const noise = [1500, -1600, 700, -1200, 1100, -400, 300, -1500, 900, -300];
    let i = 0;
    advance(3000, () => { t.backlogMs = 2500 + noise[i++ % noise.length]!; });
    assert.deepEqual(t.changes, [1], 'degraded within one window and a half of sitting ~2.5 s behind');
    g.close();
  });

  test('the fewest-steps stream is degraded first; at the last step a stream behind is restarted at live', () => {
    const { g, add, advance } = governor({ recoverAfterMs: 600_000 });
    const a = new FakeTranscoder('a');
    const b = new FakeTranscoder('b');
    a.level = 1;
    b.maxLevel = 0;
    add(a);
    add(b);
    advance(3000);
    a.backlogMs = 2000;
    b.backlogMs = 2000;
    advance(2500);
    // b has the fewest steps but none left: a takes the step; b is caught up (restarted) at the next change.
    assert.deepEqual(a.changes, [2]);
    assert.equal(b.catchUps, 0);
    advance(3500);
    assert.equal(b.catchUps, 1);
    g.close();
  });

  test('a degraded stream steps back up once the node has kept up and has idle CPU; a failed step back doubles the wait', () => {
    let idle = 0.1;
    const { g, add, advance } = governor({ cpuIdle: () => idle });
    const t = new FakeTranscoder('a');
    add(t);
    advance(3000);
    t.backlogMs = 3000;
    advance(2500);
    assert.deepEqual(t.changes, [1]);
    advance(20_000);
    assert.deepEqual(t.changes, [1], 'no idle CPU: it stays degraded');
    idle = 0.8;
    advance(200);
    assert.deepEqual(t.changes, [1, 0], 'room: back to the full ladder');
    advance(3000);
    t.backlogMs = 3000;
    advance(2500);
    assert.deepEqual(t.changes, [1, 0, 1], 'behind again soon after');
    // The wait before the next step back up is now 20 s, not 10.
    advance(15_000);
    assert.deepEqual(t.changes, [1, 0, 1]);
    advance(6000);
    assert.deepEqual(t.changes, [1, 0, 1, 0]);
    g.close();
  });

  test('the fixed policy changes nothing and refuses nobody', () => {
    const { g, add, advance } = governor({ policy: 'fixed' });
    const t = new FakeTranscoder('a');
    add(t);
    t.backlogMs = 9000;
    advance(20_000);
    assert.deepEqual(t.changes, []);
    assert.equal(t.catchUps, 0);
    assert.equal(g.refusal(), undefined);
    g.close();
  });

  test('capacity: a full ladder\'s cost is measured from the streams running it; spare streams keep the headroom free', () => {
    let idle = 0.6;
    const { g, add, advance } = governor({ cpuIdle: () => idle, cores: 4 });
    const a = new FakeTranscoder('a');
    add(a);
    assert.equal(g.capacity().streamCores, undefined, 'unknown before it is measured');
    assert.equal(g.capacity().spareStreams, undefined);
    // 0.8 cores: 0.08 CPU seconds every 100 ms.
    advance(6000, () => { a.cpuSec += 0.08; });
    const c = g.capacity();
    assert.ok(Math.abs(c.streamCores! - 0.8) < 0.01, `measured ${c.streamCores} cores`);
    assert.equal(c.idleCores, 2.4);
    assert.equal(c.spareStreams, Math.floor((2.4 - CAPACITY_HEADROOM * 4) / 0.8));
    // A restarted ffmpeg starts its measurement over; a stream behind leaves no room at all.
    a.cpuSec = 0.1;
    advance(100);
    assert.equal(g.streamCores('a'), undefined);
    idle = 0.1;
    a.backlogMs = 5000;
    advance(3000, () => { a.cpuSec += 0.08; });
    assert.equal(g.capacity().spareStreams, 0);
    g.close();
  });

  test('a process\'s CPU seconds are read from /proc: a busy child gains about its wall time', async () => {
    const child = spawn(process.execPath, ['-e', 'const end = Date.now() + 1500; while (Date.now() < end);']);
    const before = processCpuSeconds(child.pid!)!;
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const after = processCpuSeconds(child.pid!)!;
    assert.ok(after - before > 0.15 && after - before < 1.3, `${after - before} CPU seconds in 1 s`);
    await once(child, 'exit');
    assert.equal(processCpuSeconds(child.pid!), undefined, 'gone');
    assert.equal(processCpuSeconds(2 ** 22 + 17), undefined);
  });
});
