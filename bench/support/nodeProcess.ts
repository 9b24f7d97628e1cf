import type { NodeProcessMessage } from './onairNodeProcess.js';
import { BenchError } from './benchmark.js';
import { within, type forkBounded } from './process.js';

type ForkedNode = ReturnType<typeof forkBounded>;
type Ready = Extract<NodeProcessMessage, { type: 'ready' }>;
type Part = Extract<NodeProcessMessage, { type: 'part' }>;

/** Rejects with the last lines of the node's stderr when it exits; never an unhandled rejection (awaiting it is optional). */
export function nodeDied(node: ForkedNode): Promise<never> {
  const died = node.exited.then((): never => {
    throw new BenchError(`the OnAir node process exited: ${node.stderr().trim().split('\n').slice(-3).join(' | ')}`);
  });
  died.catch(() => undefined);
  return died;
}

/**
 * Waits for a forked node (bench/support/onairNodeProcess.ts) to say it is on air, or fails with the last lines of its
 * stderr if it exits first. `onPart`: every part message it sends, from the start.
 */
export async function nodeReady(node: ForkedNode, signal: AbortSignal, onPart?: (part: Part) => void): Promise<Ready> {
  const ready = new Promise<Ready>((resolve) => {
    node.child.on('message', (message: NodeProcessMessage) => {
      if (message.type === 'ready') resolve(message);
      else onPart?.(message);
    });
  });
  return within('the OnAir node process to start', Promise.race([ready, nodeDied(node)]), 60_000, signal);
}

/** A new stream on a node, over its HTTP API. */
export async function createStream(httpUrl: string, adminToken: string, title: string): Promise<{ id: string; streamKey: string }> {
  const created = await fetch(`${httpUrl}/api/streams`, {
    method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ title }),
  });
  if (created.status !== 201) throw new BenchError(`POST /api/streams answered ${created.status}`);
  return (await created.json()) as { id: string; streamKey: string };
}
