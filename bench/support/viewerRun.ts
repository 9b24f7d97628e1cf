import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BenchError } from './benchmark.js';
import { forkBounded, within } from './process.js';
import type { LoadOptions, LoadResult } from './viewerLoad.js';

const VIEWER_LOAD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'viewerLoad.js');

/**
 * One step of LL-HLS viewers: a fresh load generator process (viewerLoad.ts) runs `options`, and `mark()` is taken
 * when its measurement window opens and when it closes (at `measured`, or at the result if that never came). `from`
 * and `to` are undefined when the window never opened. Bounded by the step's own length plus 30 s.
 */
export async function runViewerLoad<M>(what: string, options: LoadOptions, mark: () => M, signal: AbortSignal): Promise<{ result: LoadResult; from: M | undefined; to: M | undefined }> {
  const limitMs = options.rampMs + options.warmupMs + options.measureMs + options.tailMs + 30_000;
  const generator = forkBounded(VIEWER_LOAD, process.env, limitMs, signal);
  let from: M | undefined;
  let to: M | undefined;
  const result = await within(what, new Promise<LoadResult>((resolve, reject) => {
    generator.child.on('message', (message: { type: string; result?: LoadResult }) => {
      if (message.type === 'measuring') from = mark();
      else if (message.type === 'measured' && from !== undefined && to === undefined) to = mark();
      else if (message.type === 'result') {
        if (from !== undefined && to === undefined) to = mark();
        resolve(message.result!);
      }
    });
    void generator.exited.then(() => reject(new BenchError(`the load generator exited without a result: ${generator.stderr().trim().slice(-500)}`)));
    generator.child.send({ type: 'start', options });
  }), limitMs, signal).finally(() => generator.stop());
  await generator.exited;
  return { result, from, to };
}
