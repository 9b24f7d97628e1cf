import { sql, type Kysely, type Migration } from 'kysely';
import { randomId } from '../lib/ids.js';

export type VideoStatus = 'processing' | 'ready' | 'failed';

/** One row per catalog video: an uploaded file or an archived live event. Times in ms since the epoch. */
export interface VideosTable {
  /** 16 characters [a-z0-9]; an archived event keeps its event id (its chat is kept under that id). */
  id: string;
  title: string;
  description: string;
  /** JSON array of strings. */
  tags: string;
  /** Title, description and tags, lower-cased and without diacritics: what full-text search indexes. */
  search: string;
  /** `upload` or the live stream's id. */
  source: string;
  status: VideoStatus;
  progress: number;
  /**
   * Why processing failed, in words a person understands; while `processing`, why the video waits (a dependency
   * outage: S3, the disk, the database or Redis), or null.
   */
  error: string | null;
  duration_ms: number | null;
  /** JSON array of `{ name, width, height, kbps }`. */
  renditions: string;
  /** The storage folder under `videos/<id>/` that playback serves; null until something is playable. */
  version: string | null;
  /** `replay` (the live ladder's own segments) or `archive` (the VOD pipeline's output). */
  kind: string | null;
  /** Storage key of the source file (`sources/<id>/…`), kept for re-processing. */
  source_key: string | null;
  source_sha256: string | null;
  source_bytes: number | null;
  /** 1: the operator marked it as an ad (it replaces live content during ad breaks); 0 otherwise. Migration 0004. */
  ad: number;
  /** Views (sessions that loaded it; server/Audience.ts). Migration 0007. */
  views: number;
  /** JSON array of `{ lang, label }`: its WebVTT subtitle tracks (`subtitles/<id>/<lang>.vtt` in storage). Migration 0009. */
  subtitles: string;
  created_at: number;
  updated_at: number;
}

export interface CatalogTables {
  videos: VideosTable;
}

export interface Rendition {
  name: string;
  width: number;
  height: number;
  kbps: number;
}

export interface Video {
  id: string;
  title: string;
  description: string;
  tags: string[];
  source: string;
  status: VideoStatus;
  progress: number;
  error: string | undefined;
  /** Processing, but waiting for a dependency to come back: why (the admin sees it). */
  waiting: string | undefined;
  durationSec: number | undefined;
  renditions: Rendition[];
  version: string | undefined;
  kind: 'replay' | 'archive' | undefined;
  sourceKey: string | undefined;
  sourceSha256: string | undefined;
  sourceBytes: number | undefined;
  /** An ad: ad breaks of live streams play it; public catalog lists leave it out. */
  ad: boolean;
  /** Sessions that played it (one per session per 30 minutes). */
  views: number;
  /** WebVTT subtitle tracks, in the order they were added. */
  subtitles: SubtitleTrack[];
  createdAt: number;
  updatedAt: number;
}

export interface SubtitleTrack {
  /** BCP 47 language tag (`en`, `fr`, `pt-BR`). */
  lang: string;
  label: string;
}

export interface ListOptions {
  q?: string | undefined;
  limit: number;
  cursor?: string | undefined;
  /** Admin view: every video, failed and not-yet-playable ones too. Public: only playable ones. */
  all: boolean;
}

export const VIDEO_ID_RE = /^[a-z0-9]{16}$/;

function toVideo(row: VideosTable): Video {
  return {
    id: row.id,
    title: row.title,
    description: row.description,
    tags: JSON.parse(row.tags) as string[],
    source: row.source,
    status: row.status,
    progress: Number(row.progress),
    error: row.status === 'processing' ? undefined : row.error ?? undefined,
    waiting: row.status === 'processing' ? row.error ?? undefined : undefined,
    durationSec: row.duration_ms === null ? undefined : Number(row.duration_ms) / 1000,
    renditions: JSON.parse(row.renditions) as Rendition[],
    version: row.version ?? undefined,
    kind: (row.kind ?? undefined) as Video['kind'],
    sourceKey: row.source_key ?? undefined,
    sourceSha256: row.source_sha256 ?? undefined,
    sourceBytes: row.source_bytes === null ? undefined : Number(row.source_bytes),
    ad: Number(row.ad) === 1,
    views: Number(row.views ?? 0),
    subtitles: JSON.parse(row.subtitles ?? '[]') as SubtitleTrack[],
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
  };
}

/** Lower case without diacritics (é → e), the same way for the index and the query, in both databases. */
export function foldText(text: string): string {
  return text.normalize('NFD').replace(/\p{M}/gu, '').toLowerCase();
}

function searchText(title: string, description: string, tags: readonly string[]): string {
  return foldText([title, description, ...tags].join(' '));
}

/** Search words: letters and digits, folded, at most 8 of them; each matches as a prefix. */
function searchWords(q: string): string[] {
  return (foldText(q).match(/[\p{L}\p{N}]+/gu) ?? []).slice(0, 8);
}

function encodeCursor(video: { createdAt: number; id: string }): string {
  return Buffer.from(`${video.createdAt}.${video.id}`).toString('base64url');
}

function decodeCursor(cursor: string): { createdAt: number; id: string } | undefined {
  const match = /^(\d{1,15})\.([a-z0-9]{16})$/.exec(Buffer.from(cursor, 'base64url').toString());
  return match ? { createdAt: Number(match[1]), id: match[2]! } : undefined;
}

/**
 * The catalog: uploaded and archived videos in the same database as streams, with full-text search (FTS5 on SQLite,
 * a GIN-indexed tsvector on Postgres; migration 0003 in server/db.ts) and cursor paging, newest first.
 */
export class VideoCatalog {
  readonly #db: Kysely<CatalogTables>;
  readonly #dialect: 'sqlite' | 'postgres';

  constructor(db: Kysely<CatalogTables>, dialect: 'sqlite' | 'postgres') {
    this.#db = db;
    this.#dialect = dialect;
  }

  async create(input: { id?: string; title: string; description?: string; tags?: string[]; source: string; at?: number }): Promise<Video> {
    const now = input.at ?? Date.now();
    const row: VideosTable = {
      id: input.id ?? randomId(16),
      title: input.title,
      description: input.description ?? '',
      tags: JSON.stringify(input.tags ?? []),
      search: searchText(input.title, input.description ?? '', input.tags ?? []),
      source: input.source,
      status: 'processing',
      progress: 0,
      error: null,
      duration_ms: null,
      renditions: '[]',
      version: null,
      kind: null,
      source_key: null,
      source_sha256: null,
      source_bytes: null,
      ad: 0,
      views: 0,
      subtitles: '[]',
      created_at: now,
      updated_at: now,
    };
    await this.#db.insertInto('videos').values(row).execute();
    return toVideo(row);
  }

  async setSubtitles(id: string, tracks: SubtitleTrack[]): Promise<void> {
    await this.#db.updateTable('videos').set({ subtitles: JSON.stringify(tracks), updated_at: Date.now() }).where('id', '=', id).execute();
  }

  /** Adds views (video id → how many more); a video deleted meanwhile takes none. */
  async addViews(views: ReadonlyMap<string, number>): Promise<void> {
    for (const [id, count] of views) {
      if (!VIDEO_ID_RE.test(id) || !(count > 0)) continue;
      await this.#db.updateTable('videos').set({ views: sql<number>`views + ${Math.floor(count)}` }).where('id', '=', id).execute();
    }
  }

  async get(id: string): Promise<Video | undefined> {
    if (!VIDEO_ID_RE.test(id)) return undefined;
    const row = await this.#db.selectFrom('videos').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toVideo(row);
  }

  async setSource(id: string, source: { key: string; sha256: string; bytes: number }): Promise<void> {
    await this.#db.updateTable('videos')
      .set({ source_key: source.key, source_sha256: source.sha256, source_bytes: source.bytes, updated_at: Date.now() })
      .where('id', '=', id).execute();
  }

  async setProgress(id: string, progress: number): Promise<void> {
    await this.#db.updateTable('videos')
      .set({ progress: Math.max(0, Math.min(100, Math.round(progress))), updated_at: Date.now() })
      .where('id', '=', id).where('status', '=', 'processing').execute();
  }

  /**
   * Points playback at a new storage version in one update (the commit of "written aside, then committed").
   * `ready`: the pipeline is done. Returns the version it replaced.
   */
  async publish(id: string, version: string, fields: { kind: 'replay' | 'archive'; durationMs: number; renditions: Rendition[]; ready: boolean }): Promise<string | undefined> {
    const before = await this.get(id);
    await this.#db.updateTable('videos')
      .set({
        version,
        kind: fields.kind,
        duration_ms: Math.round(fields.durationMs),
        renditions: JSON.stringify(fields.renditions),
        ...(fields.ready ? { status: 'ready' as const, progress: 100, error: null } : {}),
        updated_at: Date.now(),
      })
      .where('id', '=', id).execute();
    return before?.version !== version ? before?.version : undefined;
  }

  /** The pipeline gave up: the reason is kept; a replay already playable stays playable. */
  async fail(id: string, reason: string): Promise<void> {
    await this.#db.updateTable('videos')
      .set({ status: 'failed', error: reason.slice(0, 500), updated_at: Date.now() })
      .where('id', '=', id).execute();
  }

  /** A processing video waits for a dependency (`reason`), or no longer does (null). */
  async setWaiting(id: string, reason: string | null): Promise<void> {
    await this.#db.updateTable('videos')
      .set({ error: reason === null ? null : reason.slice(0, 500), updated_at: Date.now() })
      .where('id', '=', id).where('status', '=', 'processing').execute();
  }

  /** How many videos wait for a dependency now (`onair_vod_waiting`). */
  async waitingCount(): Promise<number> {
    const row = await this.#db.selectFrom('videos').select((eb) => eb.fn.countAll<number>().as('n'))
      .where('status', '=', 'processing').where('error', 'is not', null).executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  /** An admin's retry of a failed video: processing again from 0 %. False when it was not failed. */
  async retry(id: string): Promise<boolean> {
    const result = await this.#db.updateTable('videos')
      .set({ status: 'processing', progress: 0, error: null, updated_at: Date.now() })
      .where('id', '=', id).where('status', '=', 'failed').executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  async update(id: string, fields: { title?: string; description?: string; tags?: string[]; ad?: boolean }): Promise<Video | undefined> {
    const before = await this.get(id);
    if (!before) return undefined;
    const title = fields.title ?? before.title;
    const description = fields.description ?? before.description;
    const tags = fields.tags ?? before.tags;
    const ad = fields.ad ?? before.ad;
    await this.#db.updateTable('videos')
      .set({ title, description, tags: JSON.stringify(tags), search: searchText(title, description, tags), ad: ad ? 1 : 0, updated_at: Date.now() })
      .where('id', '=', id).execute();
    return this.get(id);
  }

  /** The ads live ad breaks can play: marked as ads, processed, with a source; oldest first (the break's order). */
  async ads(): Promise<Video[]> {
    const rows = await this.#db.selectFrom('videos').selectAll()
      .where('ad', '=', 1).where('status', '=', 'ready').where('source_key', 'is not', null)
      .orderBy('created_at', 'asc').orderBy('id', 'asc').execute();
    return rows.map(toVideo);
  }

  async delete(id: string): Promise<boolean> {
    const result = await this.#db.deleteFrom('videos').where('id', '=', id).executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  /** The newest archived video of a live stream (its replay), if any. */
  async latestOfStream(streamId: string): Promise<Video | undefined> {
    const row = await this.#db.selectFrom('videos').selectAll()
      .where('source', '=', streamId)
      .orderBy('created_at', 'desc').orderBy('id', 'desc')
      .limit(1).executeTakeFirst();
    return row && toVideo(row);
  }

  /** Newest first; `q` searches title, description and tags (every word, as a prefix). */
  async list(options: ListOptions): Promise<{ videos: Video[]; nextCursor: string | undefined }> {
    let query = this.#db.selectFrom('videos').selectAll('videos');
    if (!options.all) query = query.where('videos.version', 'is not', null).where('videos.ad', '=', 0);
    const words = options.q === undefined ? [] : searchWords(options.q);
    if (words.length > 0) {
      if (this.#dialect === 'sqlite') {
        // FTS5 query syntax: each word quoted (no operators from the user), `*` for a prefix match.
        const match = words.map((w) => `"${w}"*`).join(' ');
        query = query.where(sql<boolean>`videos.rowid in (select rowid from videos_fts where videos_fts match ${match})`);
      } else {
        const tsquery = words.map((w) => `${w}:*`).join(' & ');
        query = query.where(sql<boolean>`to_tsvector('simple', videos.search) @@ to_tsquery('simple', ${tsquery})`);
      }
    }
    const after = options.cursor === undefined ? undefined : decodeCursor(options.cursor);
    if (after) {
      query = query.where((eb) => eb.or([
        eb('videos.created_at', '<', after.createdAt),
        eb.and([eb('videos.created_at', '=', after.createdAt), eb('videos.id', '<', after.id)]),
      ]));
    }
    const rows = await query.orderBy('videos.created_at', 'desc').orderBy('videos.id', 'desc').limit(options.limit + 1).execute();
    const videos = rows.slice(0, options.limit).map(toVideo);
    const last = videos[videos.length - 1];
    return { videos, nextCursor: rows.length > options.limit && last ? encodeCursor(last) : undefined };
  }

  /** Videos the pipeline has not finished (a node restart re-enqueues their jobs; BullMQ dedupes by job id). */
  async processing(): Promise<Video[]> {
    const rows = await this.#db.selectFrom('videos').selectAll().where('status', '=', 'processing').execute();
    return rows.map(toVideo);
  }
}

export function isValidCursor(cursor: string): boolean {
  return decodeCursor(cursor) !== undefined;
}

/** The catalog's migrations (server/db.ts runs them with every room's, in name order); 0003's SQL differs by dialect. */
export function videoMigrations(dialect: 'sqlite' | 'postgres'): Record<string, Migration> {
  return {
    '0003_videos': { up: (db: Kysely<any>) => createVideosSchema(db, dialect) },
    '0004_video_ads': { up: (db: Kysely<any>) => addAdColumn(db) },
    '0009_video_subtitles': { up: (db: Kysely<any>) => db.schema.alterTable('videos').addColumn('subtitles', 'text', (c) => c.notNull().defaultTo('[]')).execute() },
    '0007_video_views': { up: (db: Kysely<any>) => db.schema.alterTable('videos').addColumn('views', 'bigint', (c) => c.notNull().defaultTo(0)).execute() },
  };
}

/** Migration 0004: the `ad` flag. */
export async function addAdColumn(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('videos').addColumn('ad', 'integer', (c) => c.notNull().defaultTo(0)).execute();
}

/** Migration 0003 (`videoMigrations` runs it with the database's dialect): the videos table and its full-text index. */
export async function createVideosSchema(db: Kysely<any>, dialect: 'sqlite' | 'postgres'): Promise<void> {
  await db.schema
    .createTable('videos')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('title', 'text', (c) => c.notNull())
    .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('tags', 'text', (c) => c.notNull().defaultTo('[]'))
    .addColumn('search', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('source', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('progress', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('error', 'text')
    .addColumn('duration_ms', 'bigint')
    .addColumn('renditions', 'text', (c) => c.notNull().defaultTo('[]'))
    .addColumn('version', 'text')
    .addColumn('kind', 'text')
    .addColumn('source_key', 'text')
    .addColumn('source_sha256', 'text')
    .addColumn('source_bytes', 'bigint')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('videos_created_idx').on('videos').columns(['created_at', 'id']).execute();
  await db.schema.createIndex('videos_source_idx').on('videos').column('source').execute();
  if (dialect === 'sqlite') {
    // External-content FTS5 kept in step by triggers (the FTS5 manual's recipe): the text lives once, in `videos`.
    await sql`create virtual table videos_fts using fts5(search, content='videos', content_rowid='rowid')`.execute(db);
    await sql`create trigger videos_fts_ai after insert on videos begin
      insert into videos_fts(rowid, search) values (new.rowid, new.search); end`.execute(db);
    await sql`create trigger videos_fts_ad after delete on videos begin
      insert into videos_fts(videos_fts, rowid, search) values ('delete', old.rowid, old.search); end`.execute(db);
    await sql`create trigger videos_fts_au after update of search on videos begin
      insert into videos_fts(videos_fts, rowid, search) values ('delete', old.rowid, old.search);
      insert into videos_fts(rowid, search) values (new.rowid, new.search); end`.execute(db);
  } else {
    await sql`create index videos_search_idx on videos using gin (to_tsvector('simple', search))`.execute(db);
  }
}
