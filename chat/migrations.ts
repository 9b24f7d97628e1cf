import type { Kysely, Migration } from 'kysely';

/**
 * The chat's migrations (server/db.ts runs them with every room's, in name order). Each is written once and never
 * edited: add a new entry to change the schema. Only kysely's schema builder and types both dialects share.
 */
export const CHAT_MIGRATIONS: Record<string, Migration> = {
  '0002_chat_comments': {
    async up(db: Kysely<any>): Promise<void> {
      await db.schema
        .createTable('chat_comments')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('stream_id', 'text', (c) => c.notNull())
        .addColumn('event_id', 'text')
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('text', 'text', (c) => c.notNull())
        .addColumn('at', 'bigint', (c) => c.notNull())
        .addColumn('offset_ms', 'bigint')
        .addColumn('removed', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
      // The replay reads an event's comments in offset order; removal and deletion go by stream.
      await db.schema.createIndex('chat_comments_event_offset_idx').on('chat_comments').columns(['event_id', 'offset_ms']).execute();
      await db.schema.createIndex('chat_comments_stream_idx').on('chat_comments').column('stream_id').execute();
    },
  },
  '0005_chat_behind': { up: (db: Kysely<any>) => db.schema.alterTable('chat_comments').addColumn('behind_ms', 'bigint').execute() },
};
