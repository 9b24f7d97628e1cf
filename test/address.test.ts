import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { rangeProblem, TrustedProxies } from '../lib/address.js';
import { loadConfig } from '../server/config.js';

describe('TrustedProxies (ONAIR_TRUST_PROXY)', () => {
  test('addresses and CIDR ranges, IPv4 and IPv6; IPv4-mapped peers match IPv4 ranges', () => {
    const trusted = new TrustedProxies(['10.0.0.0/8', '192.168.1.7', 'fd00::/8', '172.16.0.0/12']);
    for (const address of ['10.1.2.3', '192.168.1.7', '::ffff:10.9.9.9', 'fd12::1', '172.31.255.255']) assert.ok(trusted.has(address), address);
    for (const address of ['11.0.0.1', '192.168.1.8', 'fe80::1', '172.32.0.0', 'nonsense', '']) assert.ok(!trusted.has(address), address);
    assert.ok(new TrustedProxies([]).empty);
  });

  test('bad items are named by the config check', () => {
    for (const item of ['10.0.0.0/33', '::/129', '10.0.0.0/8/1', 'example.com', '10.0.0.0/x']) assert.ok(rangeProblem(item), item);
    for (const item of ['0.0.0.0/0', '::/0', '127.0.0.1', '2001:db8::/32']) assert.equal(rangeProblem(item), undefined, item);
  });

  test('the client is the first untrusted hop from the right; a forged hop on the left is never reached', () => {
    const trusted = new TrustedProxies(['127.0.0.1', '10.0.0.0/8']);
    assert.equal(trusted.clientAddress('127.0.0.1', '203.0.113.9'), '203.0.113.9');
    assert.equal(trusted.clientAddress('127.0.0.1', '1.1.1.1, 203.0.113.9'), '203.0.113.9', 'a client wrote 1.1.1.1 itself');
    assert.equal(trusted.clientAddress('127.0.0.1', '203.0.113.9, 10.0.0.5'), '203.0.113.9', 'through a CDN then nginx');
    assert.equal(trusted.clientAddress('198.51.100.1', '1.1.1.1'), '198.51.100.1', 'an untrusted peer is the client');
    assert.equal(trusted.clientAddress('127.0.0.1', undefined), '127.0.0.1');
    assert.equal(trusted.clientAddress('127.0.0.1', 'junk, 10.0.0.5'), '10.0.0.5', 'junk stops the walk');
    assert.equal(trusted.clientAddress('127.0.0.1', ['1.1.1.1', '203.0.113.9']), '203.0.113.9');
    assert.equal(trusted.clientAddress('127.0.0.1', `${'10.0.0.1,'.repeat(10_000)}10.0.0.2`), '10.0.0.1', 'bounded walk');
  });

  test('ONAIR_TRUST_PROXY: a list of addresses and ranges, default none; a bad item stops start-up naming it', () => {
    assert.deepEqual(loadConfig({}).trustProxy, []);
    assert.deepEqual(loadConfig({ ONAIR_TRUST_PROXY: '10.0.0.0/8, 127.0.0.1,fd00::/8' }).trustProxy, ['10.0.0.0/8', '127.0.0.1', 'fd00::/8']);
    assert.throws(() => loadConfig({ ONAIR_TRUST_PROXY: '10.0.0.0/8,proxy.example' }), /ONAIR_TRUST_PROXY.*proxy\.example/);
  });
});
