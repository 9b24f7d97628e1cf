import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import type { OnAirNode } from '../server/node.js';
import { api, publish, startTestNode, waitFor } from './support/harness.js';

const DASHBOARD = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../deploy/grafana/onair.json');

interface Panel {
  title: string;
  type: string;
  datasource: { uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets: { expr: string; refId: string }[];
}

/** The metric names a PromQL expression reads (`onair_…`), and the label names it groups by. */
function seriesOf(expr: string): string[] {
  return [...new Set(expr.match(/\bonair_[a-z0-9_]+/g) ?? [])];
}

describe('deploy/grafana/onair.json: every panel reads series a node exports (issue #19)', { timeout: 120_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let publisher: ReturnType<typeof publish> | undefined;
  let exported: Map<string, string>;
  let text: string;
  let panels: Panel[];

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: '240', ONAIR_WEBRTC_WORKERS: '1' }));
    // A live stream, so that the per-stream series have samples too.
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Dashboard' } });
    publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 426, height: 240 });
    await waitFor('the stream to have segments', () => node.packager(String(created.body.id))?.ready, 30_000);
    text = await (await fetch(`${node.httpUrl}/metrics`)).text();
    exported = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
    panels = (JSON.parse(await readFile(DASHBOARD, 'utf8')) as { panels: Panel[] }).panels;
  });

  after(async () => {
    publisher?.stop();
    await close?.();
  });

  test('the dashboard is a Grafana dashboard with a Prometheus data source to pick and queries in every panel', async () => {
    const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as { uid: string; title: string; templating: { list: { name: string; type: string }[] } };
    assert.equal(dashboard.uid, 'onair');
    assert.deepEqual(dashboard.templating.list.map((v) => [v.name, v.type]), [['datasource', 'datasource']]);
    assert.ok(panels.length >= 15, `${panels.length} panels`);
    for (const panel of panels) {
      assert.equal(panel.datasource.uid, '${datasource}', panel.title);
      assert.ok(panel.targets.length > 0 && panel.targets.every((t) => t.expr.includes('onair_')), panel.title);
    }
  });

  test('no panel points at a series /metrics does not have', () => {
    const missing: string[] = [];
    for (const panel of panels) {
      for (const target of panel.targets) {
        for (const name of seriesOf(target.expr)) {
          // A histogram's series are its name with _bucket, _sum and _count.
          const base = name.replace(/_(bucket|sum|count)$/, '');
          const found = exported.get(name) ?? (exported.get(base) === 'histogram' ? 'histogram' : undefined);
          if (!found) missing.push(`${panel.title}: ${name}`);
        }
      }
    }
    assert.deepEqual(missing, []);
  });

  test('base units: no series in kbit/s or milliseconds; bytes, seconds and bits per second instead', () => {
    const names = [...exported.keys()];
    assert.deepEqual(names.filter((n) => /_(kbps|kbits?|ms|milliseconds|kb|mb)(_|$)/.test(n)), []);
    assert.ok(exported.has('onair_stream_input_bits_per_second'));
    assert.ok(exported.has('onair_rendition_bits_per_second'));
  });

  test('what operators look for is there: HTTP durations by route and status, bytes by protocol, LL-HLS and WHEP sessions', () => {
    assert.match(text, /^onair_http_request_duration_seconds_bucket\{[^}]*route="\/api\/streams"[^}]*status="2xx"/m);
    for (const protocol of ['llhls', 'vod', 'web', 'api', 'webrtc']) assert.match(text, new RegExp(`^onair_sent_bytes_total\\{protocol="${protocol}"\\} `, 'm'));
    assert.equal(exported.get('onair_llhls_sessions'), 'gauge');
    assert.equal(exported.get('onair_webrtc_sessions'), 'gauge');
  });

  test('bytes sent are counted: a playlist fetched shows in onair_sent_bytes_total{protocol="llhls"}', async () => {
    const bytes = async (): Promise<number> => Number(/^onair_sent_bytes_total\{protocol="llhls"\} (\S+)$/m.exec(await (await fetch(`${node.httpUrl}/metrics`)).text())?.[1]);
    const before = await bytes();
    const id = String((await api(node, 'GET', '/api/streams')).body.streams[0].id);
    const playlist = await fetch(`${node.httpUrl}/live/${id}/240p/index.m3u8`);
    const length = (await playlist.arrayBuffer()).byteLength;
    assert.ok(length > 0);
    assert.ok((await bytes()) >= before + length, `${before} + ${length}`);
  });
});
