import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { TypedEmitter } from '../lib/emitter.js';

type TickEvents = { tick: [count: number] };

/** A room's emitter as the rooms use it: safeEmit from its own code path. */
class Ticker extends TypedEmitter<TickEvents> {
  count = 0;

  tick(): boolean {
    this.count += 1;
    return this.safeEmit('tick', this.count);
  }
}

/** Warnings emitted while `run` runs (a listener that throws is reported as one). */
async function warningsDuring(run: () => void): Promise<string[]> {
  const warnings: string[] = [];
  const onWarning = (warning: Error): void => { warnings.push(warning.message); };
  process.on('warning', onWarning);
  try {
    run();
    await once(process, 'warning');
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off('warning', onWarning);
  }
  return warnings;
}

test('a listener that throws does not reach the emitter: the other listeners still run, the next emit too', async () => {
  const ticker = new Ticker();
  const seen: number[] = [];
  ticker.on('tick', () => { throw new Error('listener bug'); });
  ticker.on('tick', (count) => seen.push(count));
  const warnings = await warningsDuring(() => {
    assert.equal(ticker.tick(), true);
    assert.equal(ticker.tick(), true);
  });
  assert.deepEqual(seen, [1, 2]);
  assert.equal(ticker.count, 2);
  assert.ok(warnings.some((w) => w.includes('listener for "tick" threw') && w.includes('listener bug')), warnings.join('\n'));
});

test('a listener that throws becomes a typed listenererror event naming the event and the error', async () => {
  const ticker = new Ticker();
  const errors: [string, Error][] = [];
  ticker.on('listenererror', (event, error) => errors.push([event, error]));
  ticker.on('tick', (count) => { if (count === 2) throw new TypeError('second tick'); });
  await warningsDuring(() => { ticker.tick(); ticker.tick(); });
  assert.equal(errors.length, 1);
  assert.equal(errors[0]![0], 'tick');
  assert.ok(errors[0]![1] instanceof TypeError);
  assert.equal(errors[0]![1].message, 'second tick');
});

test('a listenererror listener that throws is reported, not looped on or thrown', async () => {
  const ticker = new Ticker();
  let reports = 0;
  ticker.on('listenererror', () => { reports += 1; throw new Error('error handler bug'); });
  ticker.on('tick', () => { throw new Error('listener bug'); });
  const warnings = await warningsDuring(() => assert.equal(ticker.tick(), true));
  assert.equal(reports, 1);
  assert.equal(ticker.count, 1);
  assert.ok(warnings.some((w) => w.includes('listener for "listenererror" threw')), warnings.join('\n'));
});

test('a thrown non-Error reaches listenererror as an Error; an event without listeners says so', async () => {
  const ticker = new Ticker();
  assert.equal(ticker.tick(), false);
  const errors: Error[] = [];
  ticker.on('listenererror', (_event, error) => errors.push(error));
  // eslint-disable-next-line @typescript-eslint/only-throw-error
  ticker.on('tick', () => { throw 'a string'; });
  await warningsDuring(() => ticker.tick());
  assert.equal(errors[0]?.message, 'a string');
});
