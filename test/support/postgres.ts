import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

const PG_BIN = '/usr/lib/postgresql/15/bin';

export interface TestPostgres {
  /** `postgres://postgres@127.0.0.1:<port>/postgres`, trust auth, loopback only. */
  url: string;
  /** Stops the server at once (no checkpoint) and removes its directory. Idempotent. */
  stop(): Promise<void>;
  /** Stops the server for real (a fault: connections refused), keeping its data, port and directory. */
  halt(): Promise<void>;
  /** Starts a halted server again on the same port and data. */
  resume(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port from the loopback listener'));
      });
    });
  });
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * Runs a command line as the `postgres` user when we are root (Postgres refuses to run as root), as ourselves
 * otherwise.
 */
async function runAsPostgres(commandLine: string): Promise<void> {
  if (process.getuid?.() === 0) {
    await run('su', ['postgres', '-s', '/bin/sh', '-c', commandLine], { timeout: 60_000 });
  } else {
    await run('/bin/sh', ['-c', commandLine], { timeout: 60_000 });
  }
}

async function lookupPostgresUser(): Promise<{ uid: number; gid: number }> {
  const [uid, gid] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]);
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/**
 * A throwaway Postgres 15 cluster for tests: its own directory under the temp dir, trust auth, fsync off, listening
 * on 127.0.0.1 and a unix socket in that directory only.
 */
export async function startPostgres(): Promise<TestPostgres> {
  const initdb = path.join(PG_BIN, 'initdb');
  const pgCtl = path.join(PG_BIN, 'pg_ctl');
  if (!existsSync(initdb) || !existsSync(pgCtl)) {
    throw new Error(`${initdb} is missing: install PostgreSQL 15 with \`apt-get install postgresql-15\` (or \`postgresql\`)`);
  }

  const root = await mkdtemp(path.join(os.tmpdir(), 'onair-pg-'));
  const dataDir = path.join(root, 'data');
  const logFile = path.join(root, 'postgres.log');
  try {
    if (process.getuid?.() === 0) {
      const { uid, gid } = await lookupPostgresUser();
      await chown(root, uid, gid);
    }
    await runAsPostgres(`${shellQuote(initdb)} -D ${shellQuote(dataDir)} -A trust -U postgres --no-sync -E UTF8 >/dev/null`);

    // The port is free when we look; another process may take it before the server binds, so try a few.
    let port = 0;
    let lastError: unknown;
    // -l: the postmaster writes to a file, not to our pipes, so execFile returns once it is up.
    const startServer = (): Promise<void> => runAsPostgres(
      `${shellQuote(pgCtl)} -w -t 30 -D ${shellQuote(dataDir)} -l ${shellQuote(logFile)} -o ${shellQuote(`-h 127.0.0.1 -p ${port} -k ${shellQuote(root)} -c fsync=off`)} start >/dev/null`,
    );
    for (let attempt = 0; attempt < 3; attempt++) {
      port = await freePort();
      try {
        await startServer();
        lastError = undefined;
        break;
      } catch (error) {
        lastError = error;
      }
    }
    if (lastError !== undefined) {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      throw new Error(`postgres did not start: ${(lastError as Error).message}\n${log.slice(-4000)}`, { cause: lastError });
    }

    let stopping: Promise<void> | undefined;
    return {
      url: `postgres://postgres@127.0.0.1:${port}/postgres`,
      stop(): Promise<void> {
        stopping ??= (async () => {
          try {
            await runAsPostgres(`${shellQuote(pgCtl)} -D ${shellQuote(dataDir)} -m immediate -w stop >/dev/null`);
          } finally {
            await rm(root, { recursive: true, force: true });
          }
        })();
        return stopping;
      },
      halt: () => runAsPostgres(`${shellQuote(pgCtl)} -D ${shellQuote(dataDir)} -m fast -w stop >/dev/null`),
      resume: startServer,
    };
  } catch (error) {
    await runAsPostgres(`${shellQuote(pgCtl)} -D ${shellQuote(dataDir)} -m immediate -w stop >/dev/null 2>&1`).catch(() => {});
    await rm(root, { recursive: true, force: true });
    throw error;
  }
}
