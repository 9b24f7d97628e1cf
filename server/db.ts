import { mkdirSync } from 'node:fs';
import path from 'node:path';
import SqliteDatabase from 'libsql';
import pg from 'pg';
import {
  Kysely,
  Migrator,
  PostgresDialect,
  SqliteDialect,
  type Dialect,
  type Migration,
  type MigrationProvider,
} from 'kysely';
import { CHAT_MIGRATIONS, type ChatCommentsTable } from '../chat/index.js';
import { videoMigrations, type VideosTable } from '../vod-archive/index.js';
import { webhookMigrations, type WebhooksTable } from './Webhooks.js';

export type StreamStatus = 'idle' | 'live' | 'ended';

/** One row per stream. Times are milliseconds since the epoch. */
export interface StreamsTable {
  /** 12 characters from [a-z0-9], made by the store. */
  id: string;
  title: string;
  description: string;
  /** Hex SHA-256 of the stream key's secret part; never leaves the store. */
  key_hash: string;
  /** Starts at 1, grows by one on every rotation. */
  key_version: number;
  status: StreamStatus;
  created_at: number;
  updated_at: number;
}

/** One row per live event: a broadcast, which can span publisher reconnects. */
export interface StreamEventsTable {
  id: string;
  stream_id: string;
  started_at: number;
  ended_at: number | null;
  /** The most viewers at once and the distinct viewers of the event, written at its end (migration 0006; issue #19). */
  audience_peak: number | null;
  audience_total: number | null;
}

/** The kysely schema. Both dialects return integers as JavaScript numbers (see `int8AsNumber`). */
export interface Tables {
  streams: StreamsTable;
  stream_events: StreamEventsTable;
  /** Chat comments on their event's timeline (chat/ChatArchive.ts). */
  chat_comments: ChatCommentsTable;
  /** The VOD catalog (vod-archive/catalog.ts). */
  videos: VideosTable;
  /** Webhooks (server/Webhooks.ts). */
  webhooks: WebhooksTable;
}

export interface Database {
  db: Kysely<Tables>;
  dialect: 'sqlite' | 'postgres';
  /** Closes the connection (SQLite) or the pool (Postgres). Idempotent. */
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** A `postgres://` (or `postgresql://`) URL. Unset: the embedded SQLite file `<dataDir>/onair.db`. */
  databaseUrl?: string;
  /** The data directory; created when missing. */
  dataDir: string;
}

/** How long a SQLite writer waits for another connection's lock before failing with SQLITE_BUSY. */
const SQLITE_BUSY_TIMEOUT_MS = 5000;

/**
 * Migrations, in name order. Each is written once and never edited: add a new entry to change the schema. Only
 * kysely's schema builder and types both dialects share (`text`, `integer`, `bigint`) so the same list runs on both.
 * The rooms' tables come with their rooms: chat (`CHAT_MIGRATIONS`), videos (`videoMigrations`).
 */
const MIGRATIONS: Record<string, Migration> = {
  '0001_streams': {
    async up(db: Kysely<any>): Promise<void> {
      await db.schema
        .createTable('streams')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('title', 'text', (c) => c.notNull())
        .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
        .addColumn('key_hash', 'text', (c) => c.notNull())
        .addColumn('key_version', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('status', 'text', (c) => c.notNull().defaultTo('idle'))
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('streams_created_at_idx').on('streams').column('created_at').execute();
      await db.schema
        .createTable('stream_events')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('stream_id', 'text', (c) => c.notNull())
        .addColumn('started_at', 'bigint', (c) => c.notNull())
        .addColumn('ended_at', 'bigint')
        .execute();
      await db.schema.createIndex('stream_events_stream_id_idx').on('stream_events').column('stream_id').execute();
    },
  },
  '0006_event_audience': {
    async up(db: Kysely<any>): Promise<void> {
      await db.schema.alterTable('stream_events').addColumn('audience_peak', 'integer').execute();
      await db.schema.alterTable('stream_events').addColumn('audience_total', 'integer').execute();
    },
  },
};

/** Every room's migrations with the node's own (kysely runs them in name order: 0001 streams, 0002 chat, 0003 videos…). */
function migrationsFor(dialect: Database['dialect']): Record<string, Migration> {
  return {
    ...MIGRATIONS,
    ...CHAT_MIGRATIONS,
    ...videoMigrations(dialect),
    ...webhookMigrations,
  };
}

/** Postgres OIDs of the integer types that `pg` would otherwise hand back as strings. */
const INT8_OID = 20;

/**
 * Parses int8 (bigint, `count(*)`) as a number. Our bigints are millisecond times and counts, far below 2^53; a
 * value beyond it would lose precision, so it fails loudly instead.
 */
function int8AsNumber(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new RangeError(`int8 value ${text} is beyond Number.MAX_SAFE_INTEGER`);
  return value;
}

/**
 * Per-pool type parsers, so that the rest of the process (another library's pool) keeps pg's global defaults.
 */
const pgTypes = {
  getTypeParser(oid: number, format?: 'text' | 'binary'): (value: string) => unknown {
    if (oid === INT8_OID && format !== 'binary') return int8AsNumber;
    return pg.types.getTypeParser(oid, format as 'text');
  },
} as pg.CustomTypesConfig;

function isPostgresUrl(url: string): boolean {
  return /^postgres(ql)?:\/\//i.test(url);
}

/**
 * Opens the database and brings its schema up to date. Without `databaseUrl` it is the embedded SQLite file in the
 * data directory; with a Postgres URL, a pool against that server.
 */
export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  let dialect: Dialect;
  let kind: Database['dialect'];
  if (options.databaseUrl !== undefined && options.databaseUrl !== '') {
    if (!isPostgresUrl(options.databaseUrl)) {
      throw new Error('databaseUrl: expected a postgres:// or postgresql:// URL');
    }
    kind = 'postgres';
    const pool = new pg.Pool({ connectionString: options.databaseUrl, types: pgTypes, max: 10 });
    // An idle client can lose its server (restart, network); without a listener the pool's 'error' crashes us.
    pool.on('error', () => {});
    dialect = new PostgresDialect({ pool });
  } else {
    kind = 'sqlite';
    mkdirSync(options.dataDir, { recursive: true });
    const file = path.join(options.dataDir, 'onair.db');
    const sqlite = new SqliteDatabase(file);
    try {
      // WAL: readers do not block the writer, and a crash never leaves a half-written page behind.
      sqlite.pragma('journal_mode = WAL');
      sqlite.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
    } catch (error) {
      sqlite.close();
      throw error;
    }
    dialect = new SqliteDialect({ database: sqlite });
  }

  const db = new Kysely<Tables>({ dialect });
  try {
    const migrator = new Migrator({
      db,
      provider: { getMigrations: async () => migrationsFor(kind) } satisfies MigrationProvider,
      migrationTableName: 'onair_migrations',
      migrationLockTableName: 'onair_migrations_lock',
    });
    const { error, results } = await migrator.migrateToLatest();
    if (error !== undefined) {
      const failed = results?.find((r) => r.status === 'Error')?.migrationName;
      throw new Error(`database migration ${failed ?? ''} failed: ${error instanceof Error ? error.message : String(error)}`, {
        cause: error,
      });
    }
  } catch (error) {
    await db.destroy().catch(() => {});
    throw error;
  }

  let closing: Promise<void> | undefined;
  return {
    db,
    dialect: kind,
    close(): Promise<void> {
      closing ??= db.destroy();
      return closing;
    },
  };
}
