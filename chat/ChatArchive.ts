import { sql, type Kysely } from 'kysely';

/**
 * One row per accepted comment (the migration `0002_chat_comments` in migrations.ts creates it). Times are
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
  /**
   * Where it sits in the replay: `at` minus the event's start while the event lasts, then (`placeOnTimeline`) its
   * place in the video made of the event. Null outside an event.
   */
  offset_ms: number | null;
  /**
   * How far behind the live edge its writer's picture was, ms, as their player said (`comment { behindMs }`); null:
   * not said, LIVE_VIEWER_LAG_MS is assumed. Migration 0005.
   */
  behind_ms: number | null;
  /** 1 once a moderator removed it: never replayed. */
  removed: number;
}

export interface ChatTables {
  chat_comments: ChatCommentsTable;
}

/**
 * How far behind the media's PROGRAM-DATE-TIME a live viewer's picture is when they write: an LL-HLS player sits
 * ~1.3–2 s behind the live edge (BENCHMARKS.md, hls.latency); WebRTC viewers (~0.25 s) are rarer and read faster
 * than they type.
 */
export const LIVE_VIEWER_LAG_MS = 1500;

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

  /**
   * The event became a video: each comment moves to where its writer was in the picture. A viewer writes about what
   * they see, `behind_ms` behind the live edge (`lagMs` when their player did not say); the video's `spans` say where each stretch of the wall clock landed in
   * it (see vod-archive's TimelineSpan). A comment written while no picture went out (a publisher away) goes where the
   * picture came back. Idempotent.
   */
  async placeOnTimeline(eventId: string, spans: readonly { wallMs: number; videoMs: number; durationMs: number }[], lagMs: number): Promise<void> {
    const first = spans[0];
    if (!first) return;
    // When the writer's picture went out: the comment's time less how far behind the live edge they were.
    const seen = sql<number>`${sql.ref('at')} - coalesce(${sql.ref('behind_ms')}, ${Math.round(lagMs)})`;
    const update = (from: number | undefined, to: number | undefined) => {
      let query = this.#db.updateTable('chat_comments').where('event_id', '=', eventId);
      if (from !== undefined) query = query.where(seen, '>=', Math.round(from));
      if (to !== undefined) query = query.where(seen, '<', Math.round(to));
      return query;
    };
    await update(undefined, first.wallMs).set({ offset_ms: 0 }).execute();
    for (const [i, span] of spans.entries()) {
      const end = span.wallMs + span.durationMs;
      await update(span.wallMs, end).set({ offset_ms: sql<number>`${seen} - ${Math.round(span.wallMs - span.videoMs)}` }).execute();
      await update(end, spans[i + 1]?.wallMs).set({ offset_ms: Math.round(span.videoMs + span.durationMs) }).execute();
    }
  }

  /** Forgets a deleted stream's comments. */
  async deleteStream(streamId: string): Promise<void> {
    await this.#db.deleteFrom('chat_comments').where('stream_id', '=', streamId).execute();
  }
}
