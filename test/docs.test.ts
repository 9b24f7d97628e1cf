import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ERRORS } from '../lib/errors.js';
import { errorsMarkdown } from '../lib/errorsDoc.js';
import { limitRows } from '../lib/limits.js';
import { CONFIG_VARIABLES, LIMIT_TABLES } from '../server/config.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const README = readFileSync(path.join(root, 'README.md'), 'utf8');
const ERRORS_DOC = readFileSync(path.join(root, 'docs/errors.md'), 'utf8');

describe('the docs document what the code bounds and answers', () => {
  test('every limit of every room is a row of the README\'s "Limits" tables, with its variable and default', () => {
    const start = README.indexOf('### Limits');
    assert.ok(start >= 0, 'README has a "### Limits" section');
    const section = README.slice(start);
    for (const [room, table] of Object.entries(LIMIT_TABLES)) {
      for (const row of limitRows(table)) assert.ok(section.includes(row), `${room}: README lacks the row\n${row}`);
    }
  });

  test('every variable the configuration reads is in the README', () => {
    for (const variable of CONFIG_VARIABLES) {
      // Families are written once: `ONAIR_S3_ENDPOINT`, `_BUCKET`, … and `ONAIR_A` / `ONAIR_B`.
      const suffix = variable.slice(variable.indexOf('_', 'ONAIR_'.length));
      assert.ok(README.includes(`\`${variable}\``) || README.includes(`\`${suffix}\``), `README lacks ${variable}`);
    }
  });

  test('docs/errors.md is what lib/errors.ts gives now (run `npm run docs` after changing the catalogue)', () => {
    const want = errorsMarkdown().split('\n');
    const have = ERRORS_DOC.split('\n');
    const line = Math.max(want.findIndex((text, i) => text !== have[i]), have.length > want.length ? want.length : -1);
    assert.equal(line, -1, `docs/errors.md is stale from line ${line + 1}: run \`npm run docs\`\n  file: ${have[line]}\n  code: ${want[line]}`);
  });

  test('every error code of the catalogue is in docs/errors.md with its status', () => {
    for (const [code, { status }] of Object.entries(ERRORS)) {
      assert.match(ERRORS_DOC, new RegExp(`\`${code}\`[^\\n]*\\| ${status} \\|`), `docs/errors.md lists ${code} (${status})`);
    }
  });
});
