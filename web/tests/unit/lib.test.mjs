import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  Fatal, PollTimeout, Tail, devModeEnv, parseCliArgs, parseListeningLine, peerIdsOfRoomState, poll,
} from '../lib.mjs';

test('parseCliArgs', () => {
  assert.deepEqual(parseCliArgs(['--sluice', '/bin/sluice']), {
    sluice: '/bin/sluice', chromium: '/usr/bin/chromium', headed: false, help: false,
  });
  assert.equal(parseCliArgs(['--sluice', 's', '--artifacts', 'out']).artifacts, 'out');
  assert.equal(parseCliArgs(['--sluice', 's', '--ffmpeg', '/usr/bin/ffmpeg']).ffmpeg, '/usr/bin/ffmpeg');
  assert.equal(parseCliArgs(['--sluice', 's', '--redis-server', '/usr/bin/redis-server'])['redis-server'],
    '/usr/bin/redis-server');
  assert.throws(() => parseCliArgs([]), /--sluice is required/);
  assert.throws(() => parseCliArgs(['--sluice', 's', '--nope']), /usage:/);
  assert.equal(parseCliArgs(['--help']).help, true);
});

test('parseListeningLine', () => {
  assert.equal(parseListeningLine('sluice listening on http://127.0.0.1:43127'), 'http://127.0.0.1:43127');
  assert.equal(parseListeningLine('sluice listening on http://[::1]:8800/\r'), 'http://[::1]:8800');
  assert.equal(parseListeningLine('2024-01-01 INFO sluice listening on http://127.0.0.1:1'), null);
  assert.equal(parseListeningLine(''), null);
});

test('peerIdsOfRoomState accepts an object or an array of peers', () => {
  assert.deepEqual(peerIdsOfRoomState({ peers: { alice: {}, bob: {} } }), ['alice', 'bob']);
  assert.deepEqual(peerIdsOfRoomState({ peers: [{ id: 'alice' }, { peerId: 'bob' }, 'carol', {}] }),
    ['alice', 'bob', 'carol']);
  assert.deepEqual(peerIdsOfRoomState({ peers: [] }), []);
  assert.throws(() => peerIdsOfRoomState({ id: 'r' }), /no "peers"/);
  assert.throws(() => peerIdsOfRoomState(null), /no "peers"/);
});

test('poll returns the first truthy value', async () => {
  let calls = 0;
  const value = await poll('three calls', async () => (++calls >= 3 ? { done: calls } : null), { interval: 1 });
  assert.deepEqual(value, { done: 3 });
});

test('poll times out naming what it waited for and what it saw', async () => {
  await assert.rejects(poll('the moon', () => 0, { timeout: 20, interval: 5 }),
    /timed out after 0.02 s waiting for the moon \(last value: 0\)/);
  await assert.rejects(poll('a thrower', () => { throw new Error('nope'); }, { timeout: 20, interval: 5 }),
    /waiting for a thrower \(last error: nope\)/);
});

test('poll times out with a PollTimeout', async () => {
  await assert.rejects(poll('x', () => false, { timeout: 1, interval: 1 }), PollTimeout);
});

test('poll stops at once on Fatal', async () => {
  const start = Date.now();
  await assert.rejects(poll('x', () => { throw new Fatal('gone'); }, { timeout: 10_000 }), /gone/);
  assert.ok(Date.now() - start < 1000);
});

test('Tail keeps the last lines across chunks', () => {
  const tail = new Tail(2);
  tail.write('one\ntw');
  tail.write('o\nthree\nfour');
  assert.equal(tail.toString(), 'two\nthree\nfour');
  tail.push('five');
  assert.deepEqual(tail.lines, ['three', 'five']);
});

test('devModeEnv drops SLUICE_ variables only', () => {
  assert.deepEqual(devModeEnv({ PATH: '/bin', SLUICE_AUTH_SECRET: 's', SLUICE_LOG: 'debug', RUST_LOG: 'x' }),
    { PATH: '/bin', RUST_LOG: 'x' });
});
