import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/*
 * The house rules, read from the sources (no node started): a room (a top-level folder with an index.ts) is entered
 * only through its index.ts; rooms do not import each other in a cycle; lib/ is a toolbox that imports no room; no
 * room imports the composition root (server/), the tests or the benchmarks. server/, test/ and bench/ are outside the
 * first rule (they may open a room's file), lib/ files may be imported one by one.
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Folders that are not rooms: the toolbox, the composition root, tests, benchmarks, pages and build scripts. */
const NOT_ROOMS = new Set(['lib', 'server', 'test', 'bench', 'web', 'scripts', 'dist', 'node_modules', 'docs', 'shared']);

function rooms(): string[] {
  return readdirSync(ROOT, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith('.') && !NOT_ROOMS.has(e.name))
    .filter((e) => statSync(path.join(ROOT, e.name, 'index.ts'), { throwIfNoEntry: false })?.isFile())
    .map((e) => e.name)
    .sort();
}

function sources(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' ? [] : sources(rel);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [rel] : [];
  });
}

interface Import {
  /** The importing file, relative to the repository root (posix separators). */
  from: string;
  /** The imported file, relative to the repository root, `.js` read as `.ts`. */
  to: string;
}

/** Every relative import, export-from and dynamic import() of a file (type-only ones included). */
function importsOf(file: string): Import[] {
  const text = readFileSync(path.join(ROOT, file), 'utf8');
  const { importedFiles } = ts.preProcessFile(text, true, true);
  return importedFiles
    .map((i) => i.fileName)
    .filter((name) => name.startsWith('.'))
    .map((name) => ({
      from: file.split(path.sep).join('/'),
      to: path.join(path.dirname(file), name).split(path.sep).join('/').replace(/\.js$/, '.ts'),
    }));
}

const top = (file: string): string => file.split('/')[0]!;

/** What breaks the rules in a set of imports (`rooms`: the room folders). */
export function violations(imports: readonly Import[], roomNames: readonly string[]): string[] {
  const isRoom = new Set(roomNames);
  const found: string[] = [];
  const edges = new Map<string, Set<string>>();
  for (const { from, to } of imports) {
    const a = top(from);
    const b = top(to);
    if (a === b) continue;
    if (a === 'lib' && (isRoom.has(b) || b === 'server')) found.push(`lib/ imports a room: ${from} -> ${to}`);
    if (!isRoom.has(a)) continue;
    if (b === 'server' || b === 'test' || b === 'bench') found.push(`a room imports ${b}/: ${from} -> ${to}`);
    if (!isRoom.has(b)) continue;
    if (to !== `${b}/index.ts`) found.push(`imports past ${b}/index.ts: ${from} -> ${to}`);
    if (!edges.has(a)) edges.set(a, new Set());
    edges.get(a)!.add(b);
  }
  // Cycles between rooms: a depth-first walk that meets a room still on its path.
  const state = new Map<string, 'open' | 'done'>();
  const walk = (room: string, trail: string[]): void => {
    state.set(room, 'open');
    for (const next of [...(edges.get(room) ?? [])].sort()) {
      if (state.get(next) === 'open') found.push(`import cycle between rooms: ${[...trail.slice(trail.indexOf(next)), next].join(' -> ')}`);
      else if (!state.has(next)) walk(next, [...trail, next]);
    }
    state.set(room, 'done');
  };
  for (const room of [...edges.keys()].sort()) if (!state.has(room)) walk(room, [room]);
  return found;
}

test('every room is entered through its index.ts, rooms import each other without a cycle, lib/ imports no room', () => {
  const roomNames = rooms();
  assert.ok(roomNames.includes('ingest') && roomNames.includes('chat'), `rooms found: ${roomNames.join(', ')}`);
  const imports = [...roomNames, 'lib'].flatMap(sources).flatMap(importsOf);
  assert.ok(imports.length > 50, 'the sources were read');
  assert.deepEqual(violations(imports, roomNames), []);
});

test('the rules catch a file imported past an index, a cycle between rooms and lib/ importing a room', () => {
  const roomNames = ['a', 'b', 'c'];
  assert.deepEqual(violations([{ from: 'a/x.ts', to: 'b/index.ts' }, { from: 'a/x.ts', to: 'lib/log.ts' }], roomNames), []);
  assert.deepEqual(violations([{ from: 'a/x.ts', to: 'b/y.ts' }], roomNames), ['imports past b/index.ts: a/x.ts -> b/y.ts']);
  assert.deepEqual(violations([{ from: 'a/x.ts', to: 'b/index.ts' }, { from: 'b/y.ts', to: 'c/index.ts' }, { from: 'c/z.ts', to: 'a/index.ts' }], roomNames),
    ['import cycle between rooms: a -> b -> c -> a']);
  assert.deepEqual(violations([{ from: 'lib/t.ts', to: 'a/index.ts' }], roomNames), ['lib/ imports a room: lib/t.ts -> a/index.ts']);
  assert.deepEqual(violations([{ from: 'a/x.ts', to: 'server/node.ts' }], roomNames), ['a room imports server/: a/x.ts -> server/node.ts']);
});
