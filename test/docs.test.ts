import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ERRORS } from '../lib/errors.js';
import { limitRows } from '../lib/limits.js';
import { LIMIT_TABLES } from '../server/config.js';

const README = readFileSync(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../README.md'), 'utf8');

describe('the README documents what the code bounds and answers', () => {
  test('every limit of every room is a row of "Limits and hardening", with its variable and default', () => {
    const section = README.slice(README.indexOf('## Limits and hardening'));
    assert.ok(section.length > 0, 'README has a "Limits and hardening" section');
    for (const [room, table] of Object.entries(LIMIT_TABLES)) {
      for (const row of limitRows(table)) assert.ok(section.includes(row), `${room}: README lacks the row\n${row}`);
    }
  });

  test('every error code of the catalogue is in the README with its status', () => {
    for (const [code, { status }] of Object.entries(ERRORS)) {
      assert.match(README, new RegExp(`\`${code}\`[^\\n]*\\| ${status} \\|`), `README lists ${code} (${status})`);
    }
  });
});
