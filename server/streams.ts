import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { randomId } from '../lib/ids.js';
import type { Database, StreamStatus, StreamsTable, StreamEventsTable } from './db.js';

export type { StreamStatus };

/** A stream as the rest of the server sees it: never the key or its hash. Times in milliseconds. */
export interface StreamRecord {
  id: string;
  title: string;
  description: string;
  status: StreamStatus;
  createdAt: number;
  updatedAt: number;
}

/** One live event (a broadcast, which can span publisher reconnects). `endedAt` is null while it runs. */
export interface StreamEvent {
  id: string;
  streamId: string;
  startedAt: number;
  endedAt: number | null;
  /** Written at the event's end: the most viewers at once and the distinct viewers (null before, or if never known). */
  audience: { peak: number; total: number } | null;
}

export interface CreateStreamInput {
  title: string;
  description?: string;
}

const STREAM_ID_LENGTH = 12;
const EVENT_ID_LENGTH = 16;
/** 24 random bytes: 192 bits, 32 characters of base64url without padding. */
const SECRET_BYTES = 24;

const STREAM_ID_RE = /^[a-z0-9]{12}$/;
const EVENT_ID_RE = /^[a-z0-9]{16}$/;
const SECRET_RE = /^[A-Za-z0-9_-]{32}$/;

/** Hashed against when the id is unknown, so that a miss costs the same as a wrong secret. */
const DUMMY_HASH = Buffer.alloc(32);


function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

function newSecret(): string {
  return randomBytes(SECRET_BYTES).toString('base64url');
}

type StreamRow = Pick<StreamsTable, 'id' | 'title' | 'description' | 'status' | 'created_at' | 'updated_at'>;

const RECORD_COLUMNS = ['id', 'title', 'description', 'status', 'created_at', 'updated_at'] as const;

function toRecord(row: StreamRow): StreamRecord {
  return {
    id: row.id,
    title: row.title,
    description: row.description,
    status: row.status,
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
  };
}

function toEvent(row: StreamEventsTable): StreamEvent {
  return {
    id: row.id,
    streamId: row.stream_id,
    startedAt: Number(row.started_at),
    endedAt: row.ended_at === null ? null : Number(row.ended_at),
    audience: row.audience_peak === null || row.audience_total === null ? null
      : { peak: Number(row.audience_peak), total: Number(row.audience_total) },
  };
}

/**
 * Streams and their live events, over SQLite or Postgres. A stream key is `<id>_<secret>`; only the SHA-256 of the
 * secret is stored, so a leaked database does not leak keys, and the key is shown exactly once (create, rotate).
 */
export class StreamStore {
  readonly #database: Database;
  /** Last creation time handed out, so that streams created within one millisecond still list in order. */
  #lastCreatedAt = 0;

  constructor(database: Database) {
    this.#database = database;
  }

  get #db(): Database['db'] {
    return this.#database.db;
  }

  /** Creates an idle stream; the returned `streamKey` is never stored and cannot be read back later. */
  async create(input: CreateStreamInput): Promise<{ stream: StreamRecord; streamKey: string }> {
    const now = Math.max(Date.now(), this.#lastCreatedAt + 1);
    this.#lastCreatedAt = now;
    const secret = newSecret();
    const row: StreamsTable = {
      id: randomId(STREAM_ID_LENGTH),
      title: input.title,
      description: input.description ?? '',
      key_hash: hashSecret(secret).toString('hex'),
      key_version: 1,
      status: 'idle',
      created_at: now,
      updated_at: now,
    };
    await this.#db.insertInto('streams').values(row).execute();
    return { stream: toRecord(row), streamKey: `${row.id}_${secret}` };
  }

  async get(id: string): Promise<StreamRecord | undefined> {
    if (!STREAM_ID_RE.test(id)) return undefined;
    const row = await this.#db.selectFrom('streams').select(RECORD_COLUMNS).where('id', '=', id).executeTakeFirst();
    return row === undefined ? undefined : toRecord(row);
  }

  /** All streams, newest first. */
  async list(): Promise<StreamRecord[]> {
    const rows = await this.#db
      .selectFrom('streams')
      .select(RECORD_COLUMNS)
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .execute();
    return rows.map(toRecord);
  }

  /**
   * What each stream's SRT passphrase is derived from (ingest/SrtIngest.ts `srtPassphrase`): its id and its key's hash,
   * which changes with every rotation. At most `limit` streams, newest first.
   */
  async keyHashes(limit: number, id?: string): Promise<{ id: string; keyHash: string }[]> {
    let query = this.#db.selectFrom('streams').select(['id', 'key_hash']).orderBy('created_at', 'desc').limit(limit);
    if (id !== undefined) query = query.where('id', '=', id);
    return (await query.execute()).map((row) => ({ id: row.id, keyHash: row.key_hash }));
  }

  /** Deletes the stream and its events; false when there was no such stream. */
  async delete(id: string): Promise<boolean> {
    if (!STREAM_ID_RE.test(id)) return false;
    return this.#db.transaction().execute(async (trx) => {
      await trx.deleteFrom('stream_events').where('stream_id', '=', id).execute();
      const result = await trx.deleteFrom('streams').where('id', '=', id).executeTakeFirst();
      return Number(result.numDeletedRows) > 0;
    });
  }

  /** Replaces the key: the old one stops working at once. Undefined when there is no such stream. */
  async rotateKey(id: string): Promise<string | undefined> {
    if (!STREAM_ID_RE.test(id)) return undefined;
    const secret = newSecret();
    const result = await this.#db
      .updateTable('streams')
      .set((eb) => ({
        key_hash: hashSecret(secret).toString('hex'),
        key_version: eb('key_version', '+', 1),
        updated_at: Date.now(),
      }))
      .where('id', '=', id)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0 ? `${id}_${secret}` : undefined;
  }

  /**
   * The stream this key publishes to, or undefined. The id is everything before the first `_` (the secret, being
   * base64url, may itself hold `_`). Shapes are checked before any query, and hashes compared in constant time.
   */
  async verifyKey(streamKey: string): Promise<StreamRecord | undefined> {
    if (typeof streamKey !== 'string') return undefined;
    const cut = streamKey.indexOf('_');
    if (cut < 0) return undefined;
    const id = streamKey.slice(0, cut);
    const secret = streamKey.slice(cut + 1);
    if (!STREAM_ID_RE.test(id) || !SECRET_RE.test(secret)) return undefined;

    const row = await this.#db
      .selectFrom('streams')
      .select([...RECORD_COLUMNS, 'key_hash'])
      .where('id', '=', id)
      .executeTakeFirst();
    const given = hashSecret(secret);
    const stored = row !== undefined && /^[0-9a-f]{64}$/.test(row.key_hash) ? Buffer.from(row.key_hash, 'hex') : DUMMY_HASH;
    const equal = timingSafeEqual(given, stored);
    if (row === undefined || stored === DUMMY_HASH || !equal) return undefined;
    return toRecord(row);
  }

  /** Sets the status; false when there is no such stream. */
  async setStatus(id: string, status: StreamStatus): Promise<boolean> {
    if (!STREAM_ID_RE.test(id)) return false;
    const result = await this.#db
      .updateTable('streams')
      .set({ status, updated_at: Date.now() })
      .where('id', '=', id)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  /** Opens a live event for the stream and returns its id. */
  async startEvent(streamId: string, startedAt: number = Date.now()): Promise<string> {
    const id = randomId(EVENT_ID_LENGTH);
    await this.#db.insertInto('stream_events').values({ id, stream_id: streamId, started_at: startedAt, ended_at: null }).execute();
    return id;
  }

  /** Closes a live event; closing one already closed keeps its first end time. False when none was open. */
  async endEvent(eventId: string, endedAt: number = Date.now()): Promise<boolean> {
    const result = await this.#db
      .updateTable('stream_events')
      .set({ ended_at: endedAt })
      .where('id', '=', eventId)
      .where('ended_at', 'is', null)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  /** Keeps an event's audience (its end; a later call, from another origin that continued it, raises the figures). */
  async setEventAudience(eventId: string, audience: { peak: number; total: number }): Promise<void> {
    const row = await this.#db.selectFrom('stream_events').select(['audience_peak', 'audience_total']).where('id', '=', eventId).executeTakeFirst();
    if (!row) return;
    await this.#db
      .updateTable('stream_events')
      .set({
        audience_peak: Math.max(audience.peak, Number(row.audience_peak ?? 0)),
        audience_total: Math.max(audience.total, Number(row.audience_total ?? 0)),
      })
      .where('id', '=', eventId)
      .execute();
  }

  /** The stream's newest ended event, or undefined. */
  async lastEndedEvent(streamId: string): Promise<StreamEvent | undefined> {
    const row = await this.#db
      .selectFrom('stream_events')
      .selectAll()
      .where('stream_id', '=', streamId)
      .where('ended_at', 'is not', null)
      .orderBy('ended_at', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row === undefined ? undefined : toEvent(row);
  }

  /** The stream's open live event (the newest one, should several be open), or undefined. */
  async currentEvent(streamId: string): Promise<StreamEvent | undefined> {
    const row = await this.#db
      .selectFrom('stream_events')
      .selectAll()
      .where('stream_id', '=', streamId)
      .where('ended_at', 'is', null)
      .orderBy('started_at', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row === undefined ? undefined : toEvent(row);
  }

  /** A live event (current or past) by id; undefined for an id of another shape, without a query. */
  async event(eventId: string): Promise<{ id: string; streamId: string; startedAt: number } | undefined> {
    if (!EVENT_ID_RE.test(eventId)) return undefined;
    const row = await this.#db
      .selectFrom('stream_events')
      .select(['id', 'stream_id', 'started_at'])
      .where('id', '=', eventId)
      .executeTakeFirst();
    return row && { id: row.id, streamId: row.stream_id, startedAt: Number(row.started_at) };
  }

  /** The stream's live events, newest first. */
  async listEvents(streamId: string): Promise<StreamEvent[]> {
    const rows = await this.#db
      .selectFrom('stream_events')
      .selectAll()
      .where('stream_id', '=', streamId)
      .orderBy('started_at', 'desc')
      .orderBy('id', 'desc')
      .execute();
    return rows.map(toEvent);
  }
}

export { randomId };
