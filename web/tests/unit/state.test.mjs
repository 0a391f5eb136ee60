import assert from 'node:assert/strict';
import { test } from 'node:test';

import { FLAG_ACTION, flagRequest } from '../../src/messages.js';
import {
  MAX_ACTIONS, MAX_CHAT_ENTRIES, addChat, applyAction, consumerCounts, addConsumer, addDataConsumer, addPeer, createState, displayNameOf,
  presence, presenceOf, recordCursor, recordError, removeConsumer, removeDataConsumer, removePeer, setConsumerPaused,
  setConsumerScore, statusLine,
} from '../../src/state.js';

function room() {
  return createState({ roomId: 'r', peerId: 'alice', displayName: 'Alice' });
}

test('a new state is not joined and knows nobody', () => {
  const state = room();
  assert.equal(state.joined, false);
  assert.deepEqual(state.peers, {});
  assert.deepEqual(state.producers, { audio: null, video: null });
  assert.deepEqual(state.chat, []);
  assert.deepEqual(state.cursors, {});
});

test('addPeer adds once and updates', () => {
  const state = room();
  addPeer(state, { id: 'bob', displayName: 'Bob', device: { name: 'Chromium' } });
  addPeer(state, { id: 'bob', displayName: 'Robert' });
  assert.deepEqual(state.peers.bob, {
    displayName: 'Robert', device: { name: 'Chromium' }, consumerIds: [], paused: {},
  });
  addPeer(state, { id: 'carol' });
  assert.equal(state.peers.carol.displayName, 'carol');
});

test('consumers are tracked per peer with their paused state', () => {
  const state = room();
  addConsumer(state, { id: 'c1', peerId: 'bob', kind: 'video', paused: true });
  addConsumer(state, { id: 'c2', peerId: 'bob', kind: 'audio' });
  assert.deepEqual(state.peers.bob.consumerIds, ['c1', 'c2']);
  assert.deepEqual(state.peers.bob.paused, { c1: true, c2: false });

  assert.equal(setConsumerPaused(state, 'c1', false).peerId, 'bob');
  assert.equal(state.peers.bob.paused.c1, false);
  assert.equal(state.consumers.c1.paused, false);
  assert.equal(setConsumerPaused(state, 'nope', true), null);

  setConsumerScore(state, 'c2', { score: 9 });
  assert.deepEqual(state.consumers.c2.score, { score: 9 });

  assert.equal(removeConsumer(state, 'c1').kind, 'video');
  assert.deepEqual(state.peers.bob.consumerIds, ['c2']);
  assert.deepEqual(state.peers.bob.paused, { c2: false });
  assert.equal(removeConsumer(state, 'c1'), null);
});

test('removePeer drops its consumers, data consumers and cursor', () => {
  const state = room();
  addPeer(state, { id: 'bob', displayName: 'Bob' });
  addConsumer(state, { id: 'c1', peerId: 'bob', kind: 'video' });
  addConsumer(state, { id: 'c2', peerId: 'carol', kind: 'video' });
  addDataConsumer(state, { id: 'd1', peerId: 'bob', label: 'chat' });
  recordCursor(state, { from: 'bob', x: 1, y: 2 });
  state.activeSpeaker = 'bob';

  assert.deepEqual(removePeer(state, 'bob'), { existed: true, consumerIds: ['c1'], dataConsumerIds: ['d1'] });
  assert.deepEqual(Object.keys(state.peers), ['carol']);
  assert.deepEqual(Object.keys(state.consumers), ['c2']);
  assert.deepEqual(state.dataConsumers, {});
  assert.deepEqual(state.cursors, {});
  assert.equal(state.activeSpeaker, null);
  assert.equal(removePeer(state, 'bob').existed, false);
});

test('data consumers', () => {
  const state = room();
  addDataConsumer(state, { id: 'd1', peerId: null, label: 'chat' });
  assert.deepEqual(state.dataConsumers.d1, { peerId: null, label: 'chat', readyState: 'connecting' });
  assert.equal(removeDataConsumer(state, 'd1').label, 'chat');
  assert.equal(removeDataConsumer(state, 'd1'), null);
});

test('chat keeps the last entries', () => {
  const state = room();
  for (let i = 0; i < MAX_CHAT_ENTRIES + 5; i++) addChat(state, { from: 'bob', text: `m${i}` });
  assert.equal(state.chat.length, MAX_CHAT_ENTRIES);
  assert.equal(state.chat[0].text, 'm5');
  assert.equal(state.chat.at(-1).from, 'bob');
});

test('cursor counts grow', () => {
  const state = room();
  recordCursor(state, { from: 'bob', x: 1, y: 2 });
  recordCursor(state, { from: 'bob', x: 3, y: 4 });
  assert.equal(state.cursors.bob.count, 2);
  assert.equal(state.cursors.bob.x, 3);
  assert.equal(state.cursors.bob.y, 4);
});

test('display names', () => {
  const state = room();
  addPeer(state, { id: 'bob', displayName: 'Bob' });
  assert.equal(displayNameOf(state, 'alice'), 'Alice');
  assert.equal(displayNameOf(state, 'bob'), 'Bob');
  assert.equal(displayNameOf(state, 'ghost'), 'ghost');
  assert.equal(displayNameOf(state, null), 'server');
});

test('errors are recorded with their context', () => {
  const state = room();
  assert.equal(recordError(state, 'join', new Error('boom')), 'join: boom');
  recordError(state, 'token', 'plain');
  assert.equal(state.error, 'token: plain');
  assert.deepEqual(state.errors, ['join: boom', 'token: plain']);
});

test('the status line', () => {
  const state = room();
  assert.equal(statusLine(state), 'idle');
  state.status = 'joined';
  state.joined = true;
  state.transports = { send: 'connected', recv: 'connecting' };
  addPeer(state, { id: 'bob' });
  state.downlinkBwe = { availableBitrate: 1_800_000 };
  assert.equal(statusLine(state), 'joined · send: connected · recv: connecting · 1 other peer · downlink 1800 kbit/s');
});

test('flag moves are game actions cached under one key', () => {
  assert.deepEqual(flagRequest(10.4, 20.6), {
    type: FLAG_ACTION, payload: { x: 10, y: 21 }, cache: true, cacheKey: 'flag',
  });
});

test('applyAction logs actions in sequence order and moves the flag to the newest move', () => {
  const state = room();
  assert.equal(state.flag, null);
  assert.equal(applyAction(state, { type: FLAG_ACTION, payload: { x: 5, y: 6 }, from: 'bob', seq: 3 }), true);
  assert.deepEqual(state.flag, { x: 5, y: 6, by: 'bob', seq: 3 });
  // Our own answer arriving after a later notification: logged in order, the flag stays newer.
  assert.equal(applyAction(state, { type: FLAG_ACTION, payload: { x: 1, y: 2 }, from: 'alice', seq: 2 }), true);
  assert.deepEqual(state.flag, { x: 5, y: 6, by: 'bob', seq: 3 });
  applyAction(state, { type: 'demo.round', payload: null, from: null, seq: 4 });
  assert.deepEqual(state.actions.map((a) => [a.seq, a.from]), [[2, 'alice'], [3, 'bob'], [4, null]]);
  // The same number twice is one action.
  assert.equal(applyAction(state, { type: FLAG_ACTION, payload: { x: 9, y: 9 }, from: 'bob', seq: 3 }), false);
  assert.deepEqual(state.flag, { x: 5, y: 6, by: 'bob', seq: 3 });
});

test('applyAction ignores garbage and keeps the flag inside the arena', () => {
  const state = room();
  for (const bad of [{}, { type: 1, seq: 1 }, { type: 'x' }, { type: 'x', seq: 0 }, { type: 'x', seq: 1.5 }]) {
    assert.equal(applyAction(state, bad), false, JSON.stringify(bad));
  }
  applyAction(state, { type: FLAG_ACTION, payload: { x: -1, y: 5 }, from: 'bob', seq: 1 });
  applyAction(state, { type: FLAG_ACTION, payload: { x: 'a', y: 5 }, from: 'bob', seq: 2 });
  applyAction(state, { type: FLAG_ACTION, payload: null, from: 'bob', seq: 3 });
  assert.equal(state.flag, null);
  assert.equal(state.actions.length, 3, 'still logged');
});

test('the action log is bounded', () => {
  const state = room();
  for (let seq = 1; seq <= MAX_ACTIONS + 10; seq += 1) applyAction(state, { type: 't', seq });
  assert.equal(state.actions.length, MAX_ACTIONS);
  assert.equal(state.actions[0].seq, 11);
});

test('consumerCounts counts the consumers not paused', () => {
  const state = room();
  assert.deepEqual(consumerCounts(state), { active: 0, total: 0 });
  addConsumer(state, { id: 'c1', peerId: 'bob', kind: 'audio' });
  addConsumer(state, { id: 'c2', peerId: 'bob', kind: 'video', paused: true });
  addConsumer(state, { id: 'c3', peerId: 'carol', kind: 'audio' });
  setConsumerPaused(state, 'c3', true);
  assert.deepEqual(consumerCounts(state), { active: 1, total: 3 });
});

test('presence is full within a third of the radius and fades to nothing at it', () => {
  assert.equal(presence(0, 30), 1);
  assert.equal(presence(10, 30), 1);
  assert.equal(presence(20, 30), 0.5);
  assert.equal(presence(30, 30), 0);
  assert.equal(presence(100, 30), 0);
  assert.equal(presence(5, undefined), 1, 'no radius: no fading');
  assert.equal(presence(Number.NaN, 30), 1);
});

test("a peer's presence comes from the server's world, else from cursors with proximity on", () => {
  const state = room();
  state.cursors.bob = { x: 200, y: 0, count: 1, at: 0 };
  const own = { x: 0, y: 0 };
  assert.equal(presenceOf(state, 'bob', own), 1, 'no interest management');
  state.interest = { audioRadius: 300, videoRadius: 300 };
  assert.equal(presenceOf(state, 'bob', own), 1, 'proximity off');
  state.proximity = true;
  assert.equal(presenceOf(state, 'bob', own), 0.5);
  assert.equal(presenceOf(state, 'carol', own), 1, 'no cursor');
  // The server's world wins over the cursors, in the game's units.
  state.interest = { audioRadius: 30, videoRadius: 30 };
  state.world = { tick: 1, size: 200, players: { alice: { wx: 0, wy: 0 }, bob: { wx: 0, wy: 25 } } };
  assert.equal(presenceOf(state, 'bob', own), 0.25);
  assert.equal(presenceOf(state, 'carol', own), 1, 'not in the world');
});
