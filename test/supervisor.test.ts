import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, mock, test } from 'node:test';
import { Supervisor, type ExitInfo, type Supervisable } from '../lib/Supervisor.js';

/** A child that exits when the test says (`crash`) or when stopped. */
class FakeChild implements Supervisable {
  readonly exited: Promise<ExitInfo>;
  stopped = false;
  #exit!: (info: ExitInfo) => void;

  constructor(readonly id: number) {
    this.exited = new Promise((resolve) => {
      this.#exit = resolve;
    });
  }

  crash(): void {
    this.#exit({ code: null, signal: 'SIGKILL' });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.#exit({ code: 0, signal: null });
  }
}

/** A supervisor over fake children; `failNext` makes the next starts reject. */
function fakeSupervisor(options: { backoffMs?: number[]; healthyResetMs?: number } = {}) {
  const children: FakeChild[] = [];
  /** One entry per start (first, restarts, failed ones). */
  const startedAt: number[] = [];
  let failNext = 0;
  const supervisor = new Supervisor<FakeChild>({
    name: 'fake',
    backoffMs: options.backoffMs ?? [10, 40, 80],
    ...(options.healthyResetMs === undefined ? {} : { healthyResetMs: options.healthyResetMs }),
    start: async () => {
      startedAt.push(Date.now());
      if (failNext > 0) {
        failNext--;
        throw new Error('cannot start');
      }
      const child = new FakeChild(children.length);
      children.push(child);
      return child;
    },
  });
  return { supervisor, children, startedAt, failNext: (n: number) => { failNext = n; } };
}

/** Lets pending promise callbacks run (setImmediate is not mocked). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Advances the mocked clock step by step, letting the supervisor react between steps. */
async function advance(ms: number, stepMs = 10): Promise<void> {
  for (let t = 0; t < ms; t += stepMs) {
    mock.timers.tick(stepMs);
    await settle();
  }
}

describe('Supervisor', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout'] }));
  afterEach(() => mock.timers.reset());

  test('a child that dies is started again after the first backoff step and the restart is counted', async () => {
    const { supervisor, children } = fakeSupervisor();
    await supervisor.start();
    assert.equal(supervisor.up, true);
    const ups: number[] = [];
    supervisor.on('up', ({ restarts }) => ups.push(restarts));
    children[0]!.crash();
    await settle();
    assert.equal(supervisor.up, false);
    assert.equal(supervisor.state, 'down');
    await advance(10);
    assert.deepEqual(ups, [1]);
    assert.equal(supervisor.up, true);
    assert.equal(supervisor.restarts, 1);
    assert.equal(supervisor.child, children[1]);
    await supervisor.stop();
  });

  test('restarts back off step by step, the last step repeating, while starts keep failing', async () => {
    const { supervisor, children, failNext } = fakeSupervisor({ backoffMs: [10, 60, 120] });
    await supervisor.start();
    failNext(3);
    const delays: number[] = [];
    supervisor.on('restart', ({ delayMs }) => delays.push(delayMs));
    children[0]!.crash();
    await settle();
    // Tries at 10, 70 and 190 ms fail; the fourth waits the last step again.
    await advance(10 + 60 + 120);
    assert.deepEqual(delays, [10, 60, 120]);
    assert.equal(supervisor.up, false);
    await advance(120);
    assert.deepEqual(delays, [10, 60, 120, 120]);
    assert.equal(supervisor.up, true);
    assert.equal(supervisor.restarts, 4);
    await supervisor.stop();
  });

  test('a child that stayed up long enough restarts after the first step again', async () => {
    const { supervisor, children } = fakeSupervisor({ backoffMs: [10, 500], healthyResetMs: 100 });
    await supervisor.start();
    const delays: number[] = [];
    supervisor.on('restart', ({ delayMs }) => delays.push(delayMs));
    children[0]!.crash();
    await settle();
    await advance(10);
    await advance(100);
    children[1]!.crash();
    await settle();
    await advance(10);
    // Crashing again at once: the backoff grows.
    children[2]!.crash();
    await settle();
    await advance(500);
    assert.deepEqual(delays, [10, 10, 500]);
    assert.equal(supervisor.up, true);
    await supervisor.stop();
  });

  test('stop ends the child and no restart follows, even with one pending', async () => {
    const { supervisor, children } = fakeSupervisor({ backoffMs: [50] });
    await supervisor.start();
    children[0]!.crash();
    await settle();
    await supervisor.stop();
    await supervisor.stop(); // idempotent
    await advance(200);
    assert.equal(children.length, 1);
    assert.equal(supervisor.state, 'stopped');

    const second = fakeSupervisor();
    await second.supervisor.start();
    await second.supervisor.stop();
    assert.equal(second.children[0]!.stopped, true);
    await advance(100);
    assert.equal(second.supervisor.restarts, 0);
  });

  test('a first start that fails is thrown, not retried', async () => {
    const { supervisor, failNext, startedAt } = fakeSupervisor();
    failNext(1);
    await assert.rejects(supervisor.start(), /cannot start/);
    await advance(100);
    assert.equal(startedAt.length, 1);
    assert.equal(supervisor.state, 'stopped');
  });
});
