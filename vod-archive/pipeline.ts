import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../lib/log.js';
import { randomId } from '../lib/ids.js';
import { runTied } from '../lib/tiedProcess.js';
import { ProgressParser } from '../live-transcoder/index.js';
import type { VideoCatalog } from './catalog.js';
import { formatSeconds, probeSources, UnusableSourceError, VodTimeLimitError } from './probe.js';
import type { Storage } from './storage.js';
import { planVodLadder, storyboardInterval, storyboardVtt, vodLadderArgs, type VodLadderOptions } from './vodCommand.js';

export interface PipelineDeps {
  storage: Storage;
  catalog: VideoCatalog;
  ffmpegPath: string;
  ffprobePath: string;
  /**
   * Local scratch space, shared by the processes of one machine: each process works under its own folder in it
   * (SCRATCH_FOLDER), each attempt in its own folder there, removed at the end.
   */
  workDir: string;
  ladder: VodLadderOptions;
  /** How long ffprobe and the transcode may take (see `transcodeLimitMs`); past it they are stopped. */
  timeLimits?: VodTimeLimits;
  /** A probe or a transcode was stopped at its time limit (for `/metrics`). */
  onTimeLimit?: (step: 'probe' | 'transcode') => void;
  log: Logger;
}

export interface VodTimeLimits {
  /** One ffprobe. */
  probeMs: number;
  /** The transcode: the media's duration × `factor`, at least `minMs`. */
  factor: number;
  minMs: number;
}

/** 60 s per ffprobe; a transcode may take 6× the media's duration, at least 5 minutes (see README: measured). */
export const DEFAULT_TIME_LIMITS: VodTimeLimits = { probeMs: 60_000, factor: 6, minMs: 300_000 };

/** The transcode's time limit for media of this duration. */
export function transcodeLimitMs(durationMs: number, limits: VodTimeLimits): number {
  return Math.max(limits.minMs, Math.ceil(durationMs * limits.factor));
}

export interface PipelineRun {
  videoId: string;
  /** Job progress 0–100 (BullMQ's and the catalog's). */
  progress(value: number): Promise<void>;
  signal?: AbortSignal;
}

export interface PipelineResult {
  version: string;
  /** The version it replaced (to remove once players are done with it), if any. */
  replaced: string | undefined;
  durationMs: number;
}

/** `videos/<id>/<version>/…`: what `/vod/:id/` serves; the catalog row names the current version. */
export const videoPrefix = (id: string, version: string): string => `videos/${id}/${version}`;
export const sourcePrefix = (id: string): string => `sources/${id}`;

/** Where the transcode step's share of the progress bar starts and ends. */
const TRANSCODE_FROM = 5;
const TRANSCODE_TO = 85;
/** A decode that yields less than this share of the probed duration means the file is cut short. */
const MIN_DECODED_SHARE = 0.9;

/** stderr lines of ffmpeg that mean the input itself is broken (retrying cannot help). */
const BROKEN_INPUT_RE = /Invalid data found|partial file|corrupt|error while decoding|Truncat|moov atom not found|End of file/i;

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * One video through the VOD path: fetch the source from storage → probe → transcode and package (HLS + DASH over one
 * set of CMAF segments) → thumbnails (poster, storyboard, WebVTT track) → store under a fresh version → publish (one
 * catalog update points playback at it). Outputs are written aside and committed by that last update, so a crash at
 * any step leaves the previous state playable and a retry starts clean. An unusable source throws
 * UnusableSourceError (the job fails for good, with the reason).
 */
export async function runPipeline(deps: PipelineDeps, run: PipelineRun): Promise<PipelineResult | undefined> {
  const { storage, catalog, log } = deps;
  const video = await catalog.get(run.videoId);
  if (!video) return undefined; // deleted meanwhile
  if (video.status === 'ready' && video.kind === 'archive' && video.version) {
    return { version: video.version, replaced: undefined, durationMs: (video.durationSec ?? 0) * 1000 };
  }
  const work = path.join(deps.workDir, SCRATCH_FOLDER, `${video.id}-${randomId(6)}`);
  await mkdir(work, { recursive: true });
  try {
    await run.progress(1);
    // Fetch.
    const keys = (await storage.list(sourcePrefix(video.id))).filter((k) => !k.endsWith('.json'));
    if (keys.length === 0) throw new UnusableSourceError('There is no source file to process (the upload or the recording is missing).');
    const files: string[] = [];
    for (const [i, key] of keys.entries()) {
      const file = path.join(work, `source-${i}${path.extname(key)}`);
      await storage.download(key, file);
      files.push(file);
    }
    let input: { url: string; concatList?: boolean };
    if (files.length === 1) {
      input = { url: files[0]! };
    } else {
      // Several publishes of one event: the concat demuxer plays them back to back (paths are ours, quoted).
      const list = path.join(work, 'sources.txt');
      await writeFile(list, files.map((f) => `file '${f.replace(/'/g, `'\\''`)}'`).join('\n'));
      input = { url: list, concatList: true };
    }
    await run.progress(3);

    // Probe.
    const limits = deps.timeLimits ?? DEFAULT_TIME_LIMITS;
    const source = await probeSources(deps.ffprobePath, files, { timeoutMs: limits.probeMs });
    log.info({ videoId: video.id, width: source.width, height: source.height, durationMs: source.durationMs }, 'vod source probed');
    await run.progress(TRANSCODE_FROM);

    // Transcode + package (+ thumbnail images, from the same decode).
    const out = path.join(work, 'out');
    await mkdir(out);
    const renditions = planVodLadder(source, deps.ladder.heights);
    const parser = new ProgressParser();
    let lastReported = TRANSCODE_FROM;
    let lastReportedAt = 0;
    let reporting = Promise.resolve();
    parser.on('progress', (p) => {
      const share = Math.min(1, p.outTimeMs / Math.max(1, source.durationMs));
      const value = Math.floor(TRANSCODE_FROM + share * (TRANSCODE_TO - TRANSCODE_FROM));
      // At most one write a second (ffmpeg reports twice a second): progress bars need no more.
      if (value > lastReported && Date.now() - lastReportedAt >= 1000) {
        lastReported = value;
        lastReportedAt = Date.now();
        reporting = reporting.then(() => run.progress(value)).catch(() => {});
      }
    });
    const limitMs = transcodeLimitMs(source.durationMs, limits);
    const transcode = await runTied(deps.ffmpegPath, vodLadderArgs(input, source, renditions, deps.ladder, out), {
      onStdout: (chunk) => parser.push(chunk),
      timeoutMs: limitMs,
      ...(run.signal ? { signal: run.signal } : {}),
    });
    await reporting;
    if (transcode.timedOut) {
      log.warn({ videoId: video.id, limitMs, durationMs: source.durationMs }, 'vod transcode ran past its time limit: stopped');
      throw new VodTimeLimitError('transcode', limitMs, ` (${formatSeconds(source.durationMs)} of media × ${limits.factor}, at least ${formatSeconds(limits.minMs)})`);
    }
    if (transcode.code !== 0) {
      const why = transcode.stderr.trim().split('\n').pop() ?? '';
      // The work disk filled up: an outage to wait out (the job waits for space), not the file's fault.
      const full = /No space left on device|Disk quota exceeded/.exec(transcode.stderr);
      if (full) throw Object.assign(new Error(`ffmpeg (transcode) could not write its output: ${full[0]}`), { code: 'ENOSPC' });
      if (transcode.code !== null && BROKEN_INPUT_RE.test(transcode.stderr)) {
        throw new UnusableSourceError(`The file is damaged or truncated: ffmpeg could not decode it (${why.slice(0, 160)}).`);
      }
      throw new Error(`ffmpeg (transcode) exited with ${transcode.code ?? transcode.signal}: ${why}`);
    }
    const decodedMs = mpdDurationMs(await readFile(path.join(out, 'manifest.mpd'), 'utf8'));
    if (decodedMs < source.durationMs * MIN_DECODED_SHARE) {
      throw new UnusableSourceError(`The file is truncated: only ${(decodedMs / 1000).toFixed(1)} s of its ${(source.durationMs / 1000).toFixed(1)} s could be decoded.`);
    }
    await run.progress(TRANSCODE_TO);

    // Thumbnails: the poster and the storyboard sheet came out of the same decode; the track that indexes it is ours.
    for (const image of ['poster.jpg', 'storyboard.jpg']) {
      if (!(await stat(path.join(out, image)).catch(() => undefined))?.size) throw new Error(`ffmpeg wrote no ${image}`);
    }
    await writeFile(path.join(out, 'thumbnails.vtt'), storyboardVtt(decodedMs, storyboardInterval(source.durationMs)));
    await run.progress(90);

    // Store: media first, manifests last, under a version nobody plays yet.
    const version = `a${randomId(8)}`;
    const names = await readdir(out);
    const prefix = videoPrefix(video.id, version);
    const concurrency = storage.kind === 's3' ? 4 : 1;
    for (const batch of [names.filter((n) => !isManifest(n)), names.filter(isManifest)]) {
      const queue = [...batch];
      await Promise.all(Array.from({ length: concurrency }, async () => {
        for (let name = queue.shift(); name !== undefined; name = queue.shift()) await storage.putFile(`${prefix}/${name}`, path.join(out, name));
      }));
    }
    await run.progress(98);

    // Publish: one row update switches playback to the new version.
    const replaced = await catalog.publish(video.id, version, {
      kind: 'archive',
      durationMs: decodedMs,
      renditions: renditions.map((r) => ({ name: r.name, width: r.width, height: r.height, kbps: r.videoKbps })),
      ready: true,
    });
    log.info({ videoId: video.id, version, replaced }, 'vod published');
    return { version, replaced, durationMs: decodedMs };
  } catch (error) {
    if (error instanceof VodTimeLimitError) deps.onTimeLimit?.(error.step);
    throw error;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** This process's scratch folder: `<hostname>.<pid>`, so that another process can tell whether its owner is gone. */
const SCRATCH_FOLDER = `${os.hostname().replace(/[^A-Za-z0-9-]/g, '_')}.${process.pid}`;

/**
 * Removes the scratch folders of this machine's processes that are gone: a worker killed mid-job (SIGKILL, the OOM
 * killer, a power cut) leaves its ffmpeg outputs there; nothing else does. Folders of live processes, of other
 * machines (a shared disk) and names it did not make are left alone.
 */
export async function sweepScratch(workDir: string, log: Logger): Promise<void> {
  const host = SCRATCH_FOLDER.slice(0, SCRATCH_FOLDER.lastIndexOf('.'));
  for (const name of await readdir(workDir).catch(() => [] as string[])) {
    const match = /^(.+)\.(\d+)$/.exec(name);
    if (!match || match[1] !== host || name === SCRATCH_FOLDER || processExists(Number(match[2]))) continue;
    await rm(path.join(workDir, name), { recursive: true, force: true });
    log.info({ folder: name }, 'removed the scratch folder of a VOD worker that died');
  }
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function isManifest(name: string): boolean {
  return /\.(m3u8|mpd)$/.test(name);
}

/** `mediaPresentationDuration="PT1M8.5S"` → ms. */
export function mpdDurationMs(mpd: string): number {
  const match = /mediaPresentationDuration="PT(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?"/.exec(mpd);
  if (!match) return 0;
  return Math.round(((Number(match[1] ?? 0) * 60 + Number(match[2] ?? 0)) * 60 + Number(match[3] ?? 0)) * 1000);
}
