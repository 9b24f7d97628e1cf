import type { Kysely } from 'kysely';

/**
 * One row per accepted comment (the migration `0002_chat_comments` in server/db.ts creates it). Times are
 * milliseconds. A comment posted while the stream had no live event has no `event_id` and is not replayed.
 */
export interface ChatCommentsTable {
  id: string;
  stream_id: string;
  /** The live event the comment belongs to; null outside an event. */
  event_id: string | null;
  name: string;
  text: string;
  /** When the server accepted it, ms since the epoch. */
  at: number;
  /** `at` minus the event's start: where it sits in the replay. Null outside an event. */
  offset_ms: number | null;
  /** 1 once a moderator removed it: never replayed. */
  removed: number;
}

export interface ChatTables {
  chat_comments: ChatCommentsTable;
}

/** A comment as the replay API returns it. */
export interface ReplayComment {
  id: string;
  name: string;
  text: string;
  at: number;
  /** Seconds into the video, millisecond precision. */
  offsetSec: number;
}

export interface ReplayQuery {
  fromMs: number;
  /** Exclusive; undefined: to the end. */
  toMs: number | undefined;
  limit: number;
  /** Continue after this comment (a `nextCursor` from the previous page). */
  after: { offsetMs: number; id: string } | undefined;
}

/** Comments kept with their event's timeline, on SQLite or Postgres (portable SQL only). */
export class ChatArchive {
  readonly #db: Kysely<ChatTables>;

  constructor(db: Kysely<ChatTables>) {
    this.#db = db;
  }

  async insert(row: ChatCommentsTable): Promise<void> {
    await this.#db.insertInto('chat_comments').values(row).execute();
  }

  /** Marks the comment removed; false when the stream has no comment with this id. Removing twice is fine. */
  async remove(streamId: string, commentId: string): Promise<boolean> {
    const result = await this.#db
      .updateTable('chat_comments')
      .set({ removed: 1 })
      .where('id', '=', commentId)
      .where('stream_id', '=', streamId)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  async exists(streamId: string, commentId: string): Promise<boolean> {
    const row = await this.#db
      .selectFrom('chat_comments')
      .select('id')
      .where('id', '=', commentId)
      .where('stream_id', '=', streamId)
      .executeTakeFirst();
    return row !== undefined;
  }

  /** The kept (not removed) comments of an event in replay order, one page; `next` when there are more. */
  async replay(eventId: string, query: ReplayQuery): Promise<{ comments: ReplayComment[]; next: { offsetMs: number; id: string } | undefined }> {
    let select = this.#db
      .selectFrom('chat_comments')
      .select(['id', 'name', 'text', 'at', 'offset_ms'])
      .where('event_id', '=', eventId)
      .where('removed', '=', 0)
      .where('offset_ms', '>=', query.fromMs);
    if (query.toMs !== undefined) select = select.where('offset_ms', '<', query.toMs);
    const after = query.after;
    if (after !== undefined) {
      select = select.where((eb) => eb.or([
        eb('offset_ms', '>', after.offsetMs),
        eb.and([eb('offset_ms', '=', after.offsetMs), eb('id', '>', after.id)]),
      ]));
    }
    const rows = await select.orderBy('offset_ms').orderBy('id').limit(query.limit + 1).execute();
    const page = rows.slice(0, query.limit);
    const comments = page.map((row) => ({
      id: row.id,
      name: row.name,
      text: row.text,
      at: Number(row.at),
      offsetSec: Number(row.offset_ms) / 1000,
    }));
    const last = page[page.length - 1];
    const next = rows.length > query.limit && last ? { offsetMs: Number(last.offset_ms), id: last.id } : undefined;
    return { comments, next };
  }

  /** Forgets a deleted stream's comments. */
  async deleteStream(streamId: string): Promise<void> {
    await this.#db.deleteFrom('chat_comments').where('stream_id', '=', streamId).execute();
  }
}
