import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  devTokenPath, parseRoomParams, randomDefaults, randomId, resolveToken, signalingUrl,
} from '../../src/params.js';

test('parseRoomParams reads room, peer, name and token', () => {
  const params = parseRoomParams('?roomId=arena-1&peerId=p%2042&displayName=Al%C3%AFce&token=abc.def.ghi');
  assert.deepEqual(params, {
    roomId: 'arena-1',
    peerId: 'p 42',
    displayName: 'Alïce',
    token: 'abc.def.ghi',
    simulcast: false,
    iceTransportPolicy: 'all',
    forceTcp: false,
    complete: true,
  });
});

test('parseRoomParams reads the ICE transport policy, relay or all', () => {
  assert.equal(parseRoomParams('?iceTransportPolicy=relay').iceTransportPolicy, 'relay');
  assert.equal(parseRoomParams('?iceTransportPolicy=all').iceTransportPolicy, 'all');
  assert.equal(parseRoomParams('?iceTransportPolicy=bogus').iceTransportPolicy, 'all');
});

test('parseRoomParams reads forceTcp as a flag', () => {
  assert.equal(parseRoomParams('?forceTcp=true').forceTcp, true);
  assert.equal(parseRoomParams('?forceTcp=1').forceTcp, true);
  assert.equal(parseRoomParams('?forceTcp=false').forceTcp, false);
  assert.equal(parseRoomParams('').forceTcp, false);
});

test('parseRoomParams: the name defaults to the peer id, the token to null', () => {
  const params = parseRoomParams('roomId=r&peerId=bob');
  assert.equal(params.displayName, 'bob');
  assert.equal(params.token, null);
  assert.equal(params.complete, true);
});

test('parseRoomParams is incomplete without a room or a peer', () => {
  assert.equal(parseRoomParams('').complete, false);
  assert.equal(parseRoomParams('?roomId=r').complete, false);
  assert.equal(parseRoomParams('?peerId=p&roomId=%20').complete, false);
});

test('parseRoomParams reads simulcast as a flag', () => {
  assert.equal(parseRoomParams('?simulcast=1').simulcast, true);
  assert.equal(parseRoomParams('?simulcast=true').simulcast, true);
  assert.equal(parseRoomParams('?simulcast=0').simulcast, false);
});

test('signalingUrl picks ws or wss and encodes the query', () => {
  assert.equal(
    signalingUrl({ protocol: 'http:', host: '127.0.0.1:8800' }, { roomId: 'a b', peerId: 'p&1', token: 't.k=' }),
    'ws://127.0.0.1:8800/ws?roomId=a+b&peerId=p%261&token=t.k%3D',
  );
  assert.match(signalingUrl({ protocol: 'https:', host: 'sfu.example' }, { roomId: 'r', peerId: 'p', token: 't' }),
    /^wss:\/\/sfu\.example\/ws\?/);
});

test('devTokenPath names the room and the peer', () => {
  assert.equal(devTokenPath({ roomId: 'r 1', peerId: 'p' }), '/dev/token?roomId=r+1&peerId=p');
});

test('randomId and randomDefaults', () => {
  assert.match(randomId(12), /^[a-z0-9]{12}$/);
  const defaults = randomDefaults();
  assert.match(defaults.roomId, /^room-[a-z0-9]{6}$/);
  assert.match(defaults.peerId, /^peer-[a-z0-9]{6}$/);
  assert.ok(defaults.displayName.length > 0);
});

function fakeFetch(status, body) {
  const calls = [];
  const fetchImpl = async (url) => {
    calls.push(url);
    return {
      ok: status >= 200 && status < 300,
      status,
      text: async () => (typeof body === 'string' ? body : JSON.stringify(body)),
      json: async () => (typeof body === 'string' ? JSON.parse(body) : body),
    };
  };
  return { fetchImpl, calls };
}

test('resolveToken prefers the URL token', async () => {
  const { fetchImpl, calls } = fakeFetch(200, { token: 'fetched' });
  assert.equal(await resolveToken({ roomId: 'r', peerId: 'p', token: 'given' }, fetchImpl), 'given');
  assert.equal(calls.length, 0);
});

test('resolveToken fetches the dev token', async () => {
  const { fetchImpl, calls } = fakeFetch(200, { token: 'jwt' });
  assert.equal(await resolveToken({ roomId: 'r', peerId: 'p', token: null }, fetchImpl), 'jwt');
  assert.deepEqual(calls, ['/dev/token?roomId=r&peerId=p']);
});

test('resolveToken explains failures', async () => {
  const params = { roomId: 'r', peerId: 'p', token: null };
  await assert.rejects(resolveToken(params, fakeFetch(404, 'not found').fetchImpl), /HTTP 404: not found.*not in dev mode/);
  await assert.rejects(resolveToken(params, fakeFetch(500, '').fetchImpl), /HTTP 500$/);
  await assert.rejects(resolveToken(params, fakeFetch(200, 'nope').fetchImpl), /did not return JSON/);
  await assert.rejects(resolveToken(params, fakeFetch(200, { jwt: 'x' }).fetchImpl), /no "token" string/);
  await assert.rejects(resolveToken(params, async () => { throw new Error('ECONNREFUSED'); }), /cannot reach .*ECONNREFUSED/);
});
