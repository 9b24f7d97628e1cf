import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { clusterSecretMatches, parsePipeEndpoint, parsePipeOffer } from '../webrtc-edge/pipeProtocol.js';

const KEY = 'ZGVhZGJlZWZkZWFkYmVlZmRlYWRiZWVmZGVhZGJlZWZkZWFkYmVlZmRlYWRiZWVm';
const SRTP = { cryptoSuite: 'AEAD_AES_256_GCM', keyBase64: KEY };

describe('the node-to-node pipe protocol checks what it reads from the network', () => {
  test('a pipe endpoint is an IP, a port and an AEAD_AES_256_GCM key; anything else is refused, never thrown', () => {
    assert.deepEqual(parsePipeEndpoint({ ip: '127.0.0.1', port: 40100, srtpParameters: SRTP }), { ip: '127.0.0.1', port: 40100, srtpParameters: SRTP });
    assert.ok(parsePipeEndpoint({ ip: '::1', port: 1, srtpParameters: SRTP }));
    for (const bad of [
      undefined, null, 'x', [], {},
      { ip: 'example.com', port: 40100, srtpParameters: SRTP },
      { ip: '127.0.0.1', port: 0, srtpParameters: SRTP },
      { ip: '127.0.0.1', port: 65536, srtpParameters: SRTP },
      { ip: '127.0.0.1', port: 1.5, srtpParameters: SRTP },
      { ip: '127.0.0.1', port: '40100', srtpParameters: SRTP },
      { ip: '127.0.0.1', port: 40100 },
      { ip: '127.0.0.1', port: 40100, srtpParameters: { ...SRTP, cryptoSuite: 'AES_CM_128_HMAC_SHA1_80' } },
      { ip: '127.0.0.1', port: 40100, srtpParameters: { ...SRTP, keyBase64: 'not base64!' } },
      { ip: '127.0.0.1', port: 40100, srtpParameters: { ...SRTP, keyBase64: 'A'.repeat(10_000) } },
    ]) assert.equal(parsePipeEndpoint(bad), undefined, JSON.stringify(bad));
  });

  test('an origin\'s offer has a pipe id and one or two producers of distinct kinds', () => {
    const base = { ip: '127.0.0.1', port: 40100, srtpParameters: SRTP, pipeId: '0b0c8a4e-64a4-4a8e-9a43-6f1f4d0c1e2a' };
    const video = { kind: 'video', rtpParameters: { codecs: [], encodings: [] }, paused: false };
    const audio = { ...video, kind: 'audio' };
    assert.equal(parsePipeOffer({ ...base, producers: [video, audio] })?.producers.length, 2);
    for (const producers of [[], [video, video], [video, audio, audio], [{ ...video, kind: 'data' }], [{ ...video, paused: 'no' }], [{ ...video, rtpParameters: 1 }], 'x']) {
      assert.equal(parsePipeOffer({ ...base, producers }), undefined, JSON.stringify(producers));
    }
    assert.equal(parsePipeOffer({ ...base, pipeId: '../../x', producers: [video] }), undefined);
  });

  test('the cluster secret is a Bearer token, matched whole', () => {
    const secret = 's'.repeat(40);
    assert.equal(clusterSecretMatches(`Bearer ${secret}`, secret), true);
    for (const header of [undefined, '', 'Bearer ', `Bearer ${secret}x`, `Bearer ${secret.slice(1)}`, `Basic ${secret}`, secret]) {
      assert.equal(clusterSecretMatches(header, secret), false, String(header));
    }
  });
});
