import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { processCpuSec } from './process.js';

/*
 * What the WebRTC benchmarks read from Linux's /proc (proc(5)) about processes they did not spawn themselves: the
 * mediasoup workers of an in-process node (children of this process, whose pids the edge keeps to itself), which of
 * them serves viewers, and how busy the whole machine is. No package needed; /proc/<pid>/task/<tid>/children is not
 * available on every kernel, so children are found by scanning every process's parent pid.
 */

export interface ProcessInfo {
  pid: number;
  /** proc(5) field 2, at most 15 characters (`mediasoup-worke`). */
  comm: string;
  /** Start time after boot in clock ticks (proc(5) field 22): orders processes by creation. */
  startTicks: number;
}

/** Every living process with its parent's pid (zombies left out). */
function allProcesses(): (ProcessInfo & { ppid: number })[] {
  const processes: (ProcessInfo & { ppid: number })[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let text: string;
    try {
      text = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // ended while scanning
    }
    const close = text.lastIndexOf(')');
    const fields = text.slice(close + 2).trim().split(' ');
    // fields[0] is proc(5) field 3 (state): ppid is field 4, starttime field 22.
    if (fields[0] === 'Z') continue;
    processes.push({ pid: Number(entry), ppid: Number(fields[1]), comm: text.slice(text.indexOf('(') + 1, close), startTicks: Number(fields[19]) });
  }
  return processes.sort((a, b) => a.startTicks - b.startTicks);
}

/** The living children of `parent`, oldest first. */
export function childProcesses(parent: number): ProcessInfo[] {
  return allProcesses().filter((p) => p.ppid === parent).map(({ pid, comm, startTicks }) => ({ pid, comm, startTicks }));
}

/**
 * The living descendants of `root` at any depth, oldest first: OnAir runs redis-server and VOD ffmpeg under a small
 * `sh` that ties them to the node (lib/tiedProcess.ts), so they are grandchildren.
 */
export function descendantProcesses(root: number): ProcessInfo[] {
  const all = allProcesses();
  const inTree = new Set([root]);
  // Until nothing is added: a child started in its parent's clock tick may sort before it.
  for (let grew = true; grew;) {
    grew = false;
    for (const p of all) {
      if (!inTree.has(p.pid) && inTree.has(p.ppid)) {
        inTree.add(p.pid);
        grew = true;
      }
    }
  }
  return all.filter((p) => p.pid !== root && inTree.has(p.pid)).map(({ pid, comm, startTicks }) => ({ pid, comm, startTicks }));
}

/** Socket inodes of TCP sockets in the LISTEN state (st 0A in /proc/net/tcp and tcp6). */
function listeningTcpInodes(): Set<string> {
  const inodes = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const columns = line.trim().split(/\s+/);
      if (columns[3] === '0A' && columns[9] !== undefined) inodes.add(columns[9]);
    }
  }
  return inodes;
}

/** Whether `pid` holds a listening TCP socket (its fds are readable: our own children). */
function listensOnTcp(pid: number, listening: Set<string>): boolean {
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return false;
  }
  for (const fd of fds) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      if (inode && listening.has(inode)) return true;
    } catch { /* closed meanwhile */ }
  }
  return false;
}

export interface MediasoupWorkers {
  /** The worker that holds the origin routers (plain-RTP input from ffmpeg, producers). */
  ingest: number;
  /** Workers with a WebRtcServer: the ones viewers' transports live on. */
  viewers: number[];
  /** How the roles were told apart, for the report. */
  how: string;
}

/**
 * The mediasoup workers among `parent`'s children, by role. A viewer worker runs a WebRtcServer, which listens on TCP
 * as well as UDP; the ingest worker only has the plain transport's UDP socket. Should that ever not tell them apart,
 * creation order does (webrtc-edge creates the ingest worker first).
 */
export function mediasoupWorkers(parent = process.pid): MediasoupWorkers {
  const workers = childProcesses(parent).filter((p) => p.comm.startsWith('mediasoup-work'));
  if (workers.length < 2) throw new Error(`expected an ingest and at least one viewer mediasoup worker under pid ${parent}, found ${workers.length}`);
  const listening = listeningTcpInodes();
  const serving = workers.filter((w) => listensOnTcp(w.pid, listening));
  if (serving.length === workers.length - 1) {
    return {
      ingest: workers.find((w) => !serving.includes(w))!.pid,
      viewers: serving.map((w) => w.pid),
      how: 'viewer worker = the mediasoup-worker child holding a listening TCP socket (its WebRtcServer)',
    };
  }
  return { ingest: workers[0]!.pid, viewers: workers.slice(1).map((w) => w.pid), how: 'by creation order (ingest first)' };
}

/** Jiffies of the whole machine from the first line of /proc/stat: busy (all but idle and iowait) and total. */
export function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const values = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = values.reduce((sum, v) => sum + v, 0);
  return { busy: total - values[3]! - values[4]!, total };
}

/**
 * CPU of a set of processes and of the machine over a window: `start()` reads the counters, `stop()` reads them again
 * and returns each process's CPU in % of one core (utime+stime growth / wall time) and the machine's busy % of all its
 * cores. A process that ended within the window reads NaN.
 */
export class CpuWindow {
  readonly #from: Map<number, number | undefined>;
  readonly #machine: { busy: number; total: number };
  readonly #at: number;

  constructor(readonly pids: number[]) {
    this.#from = new Map(pids.map((pid) => [pid, processCpuSec(pid)]));
    this.#machine = machineTicks();
    this.#at = performance.now();
  }

  stop(): { percent: Map<number, number>; machinePercent: number; seconds: number } {
    const seconds = (performance.now() - this.#at) / 1000;
    const machine = machineTicks();
    const percent = new Map<number, number>();
    for (const [pid, from] of this.#from) {
      const to = processCpuSec(pid);
      percent.set(pid, from === undefined || to === undefined ? NaN : ((to - from) / seconds) * 100);
    }
    const total = machine.total - this.#machine.total;
    return { percent, machinePercent: total > 0 ? ((machine.busy - this.#machine.busy) / total) * 100 : NaN, seconds };
  }
}
