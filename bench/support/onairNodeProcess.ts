import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createLogger } from '../../lib/log.js';
import { loadConfig } from '../../server/config.js';
import { OnAirNode } from '../../server/node.js';
import { epochMs } from './clock.js';

/*
 * An OnAir node in a process of its own for bench/viewers.ts (started with fork(), configured by ONAIR_* in its
 * environment): what server/main.ts does, plus one listener on each transcoder's 'fragment' event, registered after the
 * packager's, that tells the parent over IPC when each part appeared (the part is then in the playlist and blocked
 * requests have been released). On request it also writes each new part and the playlist that lists it to a
 * directory (the same bytes, for a static server to serve), and then reports the time the playlist file was in place.
 *
 * Messages to the parent: { type: 'ready', httpUrl, rtmpUrl, adminToken }, { type: 'part', rendition, sequence, at,
 * mirrored }. From the parent: { type: 'mirror', dir: string | null }.
 */

export type NodeProcessMessage =
  | { type: 'ready'; httpUrl: string; rtmpUrl: string; adminToken: string }
  | { type: 'part'; rendition: string; sequence: number; at: number; mirrored: boolean };

export type NodeProcessCommand = { type: 'mirror'; dir: string | null };

const send = (message: NodeProcessMessage): void => {
  process.send?.(message);
};

async function main(): Promise<void> {
  const config = loadConfig();
  const node = await OnAirNode.start(config, createLogger({ level: config.logLevel }));
  let mirror: string | undefined;
  process.on('message', (command: NodeProcessCommand) => {
    if (command.type === 'mirror') mirror = command.dir ?? undefined;
  });

  node.on('live', ({ streamId, transcoder }) => {
    const last = new Map<string, number>();
    transcoder.on('fragment', ({ rendition }) => {
      let at = epochMs();
      const packager = node.packager(streamId);
      const playlist = packager?.playlist(rendition.name);
      if (!packager || !playlist) return;
      const sequence = playlist.nextPartSequence - 1;
      // The packager drops fragments before a segment's first keyframe: only parts it added count.
      if (sequence < 0 || last.get(rendition.name) === sequence) return;
      last.set(rendition.name, sequence);
      const part = playlist.part(sequence);
      if (mirror && part) {
        const dir = path.join(mirror, rendition.name);
        mkdirSync(dir, { recursive: true });
        // The part first, then the playlist that lists it, replaced atomically: a poller never sees a dangling URI.
        writeFileSync(path.join(dir, part.uri), part.data);
        const text = playlist.render({ serverControl: packager.serverControl, reports: packager.reportsFor(rendition.name) });
        writeFileSync(path.join(dir, 'index.m3u8.tmp'), text);
        renameSync(path.join(dir, 'index.m3u8.tmp'), path.join(dir, 'index.m3u8'));
        at = epochMs();
      }
      send({ type: 'part', rendition: rendition.name, sequence, at, mirrored: mirror !== undefined });
    });
  });

  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    node.close().then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // The benchmark went away: do not outlive it.
  process.on('disconnect', stop);
  send({ type: 'ready', httpUrl: node.httpUrl, rtmpUrl: node.rtmpUrl, adminToken: node.adminToken });
}

main().catch((error: unknown) => {
  process.stderr.write(`onair node process: ${(error as Error)?.stack ?? String(error)}\n`);
  process.exit(1);
});
