import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  ARENA, MAX_CHAT_LENGTH, decodeChat, decodeCursor, decodeWorld, encodeArenaInput, encodeChat,
  encodeCursor, encodeNoPosition, encodePosition, idleCursor, seedOf,
} from '../../src/messages.js';

test('chat messages round-trip', () => {
  const raw = encodeChat('alice', 'hi there');
  assert.deepEqual(JSON.parse(raw), { from: 'alice', text: 'hi there' });
  assert.deepEqual(decodeChat(raw, 'alice'), { from: 'alice', text: 'hi there' });
});

test('the data consumer\'s peer is the sender, whatever the message says', () => {
  assert.equal(decodeChat(encodeChat('mallory', 'x'), 'bob').from, 'bob');
  assert.equal(decodeCursor(encodeCursor('mallory', 1, 2), 'bob').from, 'bob');
  // Without a peer (the server's own data producer), the message's word is all there is.
  assert.equal(decodeChat(encodeChat('carol', 'x'), null).from, 'carol');
});

test('garbage chat is dropped', () => {
  for (const raw of ['', 'not json', '[]', 'null', '{"from":"a"}', '{"text":1}', 42]) {
    assert.equal(decodeChat(raw, 'a'), null, String(raw));
  }
  assert.equal(decodeChat('{"text":"x"}', null), null);
});

test('chat text is capped', () => {
  const long = 'x'.repeat(MAX_CHAT_LENGTH + 10);
  assert.equal(JSON.parse(encodeChat('a', long)).text.length, MAX_CHAT_LENGTH);
  assert.equal(decodeChat(JSON.stringify({ text: long }), 'a').text.length, MAX_CHAT_LENGTH);
});

test('cursor messages round-trip with rounding and a timestamp', () => {
  const raw = encodeCursor('alice', 10.4, 20.6, 1234);
  assert.deepEqual(JSON.parse(raw), { from: 'alice', x: 10, y: 21, t: 1234 });
  assert.deepEqual(decodeCursor(raw, 'alice'), { from: 'alice', x: 10, y: 21, t: 1234 });
});

test('cursor positions are clamped to the arena and garbage is dropped', () => {
  assert.deepEqual(decodeCursor('{"x":-5,"y":99999}', 'a'), { from: 'a', x: 0, y: ARENA.height, t: null });
  for (const raw of ['{}', '{"x":"1","y":2}', '{"x":1}', 'nope', '{"x":null,"y":1}']) {
    assert.equal(decodeCursor(raw, 'a'), null, raw);
  }
});

test('the idle cursor stays inside the arena and moves', () => {
  const seed = seedOf('alice');
  let previous = null;
  for (let t = 0; t < 8000; t += 33) {
    const { x, y } = idleCursor(t, seed);
    assert.ok(x >= 0 && x <= ARENA.width && y >= 0 && y <= ARENA.height, `${x},${y} at ${t}`);
    if (previous) assert.ok(x !== previous.x || y !== previous.y);
    previous = { x, y };
  }
  assert.notEqual(seedOf('alice'), seedOf('bob'));
});

test('positions are 12 bytes of little-endian float32 x, y, z, and NaNs to leave the world', () => {
  const view = new DataView(encodePosition(12.5, 300, -1));
  assert.equal(view.byteLength, 12);
  assert.deepEqual([view.getFloat32(0, true), view.getFloat32(4, true), view.getFloat32(8, true)], [12.5, 300, -1]);
  assert.deepEqual([...new Uint8Array(encodePosition(1, 0, 0)).slice(0, 4)], [0, 0, 0x80, 0x3f]);
  const none = new DataView(encodeNoPosition());
  assert.ok([0, 4, 8].every((at) => Number.isNaN(none.getFloat32(at, true))));
});

test("the arena's world decodes into the game's units and the page's, and garbage does not", () => {
  const world = decodeWorld(JSON.stringify({ tick: 7, size: 200, players: { a: [100, 50], b: [300, -1], c: 'x' } }));
  assert.deepEqual(world, {
    tick: 7,
    size: 200,
    players: {
      a: { wx: 100, wy: 50, x: ARENA.width / 2, y: ARENA.height / 4 },
      b: { wx: 200, wy: 0, x: ARENA.width, y: 0 },
    },
  });
  assert.equal(decodeWorld('{"tick": 1, "players": {}}'), null, 'no size');
  assert.equal(decodeWorld('{"size": 10, "players": null}'), null);
  assert.equal(decodeWorld('not json'), null);
});

test('arena inputs steer toward the cursor and stand still once there', () => {
  const world = { size: 200, players: {} };
  const me = { wx: 100, wy: 100 };
  assert.deepEqual(JSON.parse(encodeArenaInput(world, me, { x: ARENA.width, y: ARENA.height / 2 })), { dx: 1, dy: 0 });
  assert.deepEqual(JSON.parse(encodeArenaInput(world, me, { x: ARENA.width / 2, y: 0 })), { dx: 0, dy: -1 });
  assert.deepEqual(JSON.parse(encodeArenaInput(world, me, { x: ARENA.width / 2, y: ARENA.height / 2 })), { dx: 0, dy: 0 });
});
