// The page's plain-data state, exposed to tests as `window.sluiceDemo` (together with methods
// added by app.js). Only plain JSON-like values live here; mediasoup objects stay in app.js.
// Every function is pure apart from mutating the state it is given, so node can test them.

import { ARENA, FLAG_ACTION } from './messages.js';

export const MAX_CHAT_ENTRIES = 200;
/** Game actions kept for the page's log. */
export const MAX_ACTIONS = 50;
export const MAX_ERRORS = 50;

export function createState({ roomId = '', peerId = '', displayName = '' } = {}) {
  return {
    joined: false,
    // 'idle' | 'connecting' | 'joining' | 'joined' | 'disconnected' | 'left' | 'failed'
    status: 'idle',
    roomId,
    peerId,
    displayName,
    transports: { send: 'new', recv: 'new' },
    // Other peers by id: {displayName, device, consumerIds, paused: {consumerId: bool}}.
    peers: {},
    // Consumers by id: {peerId, kind, paused, score}.
    consumers: {},
    // Data consumers by id: {peerId, label, readyState}.
    dataConsumers: {},
    producers: { audio: null, video: null },
    dataProducers: { chat: null, cursor: null },
    chat: [],
    // The room's game actions seen (the server's `action` notifications and our own), newest
    // last: {seq, type, from, payload}.
    actions: [],
    // The shared flag, as the last `demo.flag.move` action put it: {x, y, by, seq}, or null.
    flag: null,
    // Whether the page reports its arena position for the server's interest management.
    proximity: false,
    // The room's interest radii, as `join` answered ({audioRadius, videoRadius}), or null.
    interest: null,
    // The server's world when the room runs the arena game (decodeWorld), or null.
    world: null,

    // Other peers' cursors: {x, y, count}.
    cursors: {},
    // Our producers' scores by producer id, as producerScore says.
    producerScores: {},
    activeSpeaker: null,
    downlinkBwe: null,
    error: null,
    errors: [],
  };
}

/** Adds or updates a peer; returns its entry. */
export function addPeer(state, { id, displayName, device }) {
  const existing = state.peers[id];
  if (existing) {
    if (typeof displayName === 'string' && displayName !== '') existing.displayName = displayName;
    if (device && typeof device === 'object') existing.device = device;
    return existing;
  }
  const peer = {
    displayName: typeof displayName === 'string' && displayName !== '' ? displayName : id,
    device: device && typeof device === 'object' ? device : {},
    consumerIds: [],
    paused: {},
  };
  state.peers[id] = peer;
  return peer;
}

/** Removes a peer with its consumers, data consumers and cursor; returns the ids removed. */
export function removePeer(state, peerId) {
  const peer = state.peers[peerId];
  const consumerIds = Object.keys(state.consumers).filter((id) => state.consumers[id].peerId === peerId);
  const dataConsumerIds = Object.keys(state.dataConsumers)
    .filter((id) => state.dataConsumers[id].peerId === peerId);
  for (const id of consumerIds) delete state.consumers[id];
  for (const id of dataConsumerIds) delete state.dataConsumers[id];
  delete state.peers[peerId];
  delete state.cursors[peerId];
  if (state.activeSpeaker === peerId) state.activeSpeaker = null;
  return { existed: Boolean(peer), consumerIds, dataConsumerIds };
}

export function displayNameOf(state, peerId) {
  if (peerId === state.peerId) return state.displayName || peerId;
  return state.peers[peerId]?.displayName ?? peerId ?? 'server';
}

/** Records a consumer of another peer's producer (creating the peer if it is not known yet). */
export function addConsumer(state, { id, peerId, kind, paused = false }) {
  const peer = addPeer(state, { id: peerId });
  if (!peer.consumerIds.includes(id)) peer.consumerIds.push(id);
  peer.paused[id] = Boolean(paused);
  state.consumers[id] = { peerId, kind, paused: Boolean(paused), score: null };
}

/** Forgets a consumer; returns its record, or null when unknown. */
export function removeConsumer(state, consumerId) {
  const consumer = state.consumers[consumerId];
  if (!consumer) return null;
  delete state.consumers[consumerId];
  const peer = state.peers[consumer.peerId];
  if (peer) {
    peer.consumerIds = peer.consumerIds.filter((id) => id !== consumerId);
    delete peer.paused[consumerId];
  }
  return consumer;
}

/** Marks a consumer paused or resumed (its producer's state); returns its record or null. */
export function setConsumerPaused(state, consumerId, paused) {
  const consumer = state.consumers[consumerId];
  if (!consumer) return null;
  consumer.paused = Boolean(paused);
  const peer = state.peers[consumer.peerId];
  if (peer) peer.paused[consumerId] = Boolean(paused);
  return consumer;
}

export function setConsumerScore(state, consumerId, score) {
  const consumer = state.consumers[consumerId];
  if (!consumer) return null;
  consumer.score = score ?? null;
  return consumer;
}

export function addDataConsumer(state, { id, peerId, label }) {
  state.dataConsumers[id] = { peerId: peerId ?? null, label: label ?? '', readyState: 'connecting' };
}

export function removeDataConsumer(state, dataConsumerId) {
  const record = state.dataConsumers[dataConsumerId] ?? null;
  delete state.dataConsumers[dataConsumerId];
  return record;
}

/** Appends a chat entry, keeping the last MAX_CHAT_ENTRIES. */
export function addChat(state, entry) {
  state.chat.push({ from: entry.from, text: entry.text, at: entry.at ?? Date.now() });
  if (state.chat.length > MAX_CHAT_ENTRIES) state.chat.splice(0, state.chat.length - MAX_CHAT_ENTRIES);
}

/** Records another peer's cursor position; `count` grows with each message received. */
export function recordCursor(state, { from, x, y }) {
  const cursor = state.cursors[from] ?? { x: 0, y: 0, count: 0, at: 0 };
  cursor.x = x;
  cursor.y = y;
  cursor.count += 1;
  cursor.at = Date.now();
  state.cursors[from] = cursor;
  return cursor;
}

/** Records an error for the status line and for tests; returns its message. */
export function recordError(state, context, error) {
  const message = `${context}: ${error?.message ?? String(error)}`;
  state.error = message;
  state.errors.push(message);
  if (state.errors.length > MAX_ERRORS) state.errors.splice(0, state.errors.length - MAX_ERRORS);
  return message;
}

/** One line summing up the connection, for the status bar. */
export function statusLine(state) {
  const parts = [state.status];
  if (state.status !== 'idle') {
    parts.push(`send: ${state.transports.send}`, `recv: ${state.transports.recv}`);
  }
  const others = Object.keys(state.peers).length;
  if (state.joined) parts.push(`${others} other peer${others === 1 ? '' : 's'}`);
  if (state.downlinkBwe && Number.isFinite(state.downlinkBwe.availableBitrate)) {
    parts.push(`downlink ${Math.round(state.downlinkBwe.availableBitrate / 1000)} kbit/s`);
  }
  return parts.join(' · ');
}

/**
 * Records a game action (`{type, payload, from, seq}` as the `action` notification carries it, or
 * our own with the `seq` the server answered) in the log, and moves the flag if it is a flag move
 * inside the arena newer than the flag's. Returns true if it was recorded; garbage is ignored.
 */
export function applyAction(state, { type, payload = null, from = null, seq } = {}) {
  if (typeof type !== 'string' || !Number.isSafeInteger(seq) || seq < 1) return false;
  if (state.actions.some((entry) => entry.seq === seq)) return false;
  const entry = { seq, type, from: typeof from === 'string' ? from : null, payload };
  // In sequence order, even if our own answer arrives after a later notification.
  let at = state.actions.length;
  while (at > 0 && state.actions[at - 1].seq > seq) at -= 1;
  state.actions.splice(at, 0, entry);
  if (state.actions.length > MAX_ACTIONS) state.actions.splice(0, state.actions.length - MAX_ACTIONS);
  const { x, y } = payload ?? {};
  if (type === FLAG_ACTION && Number.isFinite(x) && Number.isFinite(y)
    && x >= 0 && x <= ARENA.width && y >= 0 && y <= ARENA.height
    && (state.flag === null || state.flag.seq < seq)) {
    state.flag = { x, y, by: entry.from, seq };
  }
  return true;
}

/** Consumers receiving now (not paused by us, their producer or interest management) and all. */
export function consumerCounts(state) {
  const all = Object.values(state.consumers);
  return { active: all.filter((c) => !c.paused).length, total: all.length };
}

/**
 * How present a player at distance `d` is, 0..1, for a radius: fully within a third of it,
 * fading to nothing at it (where the server stops forwarding its audio). 1 without a radius.
 */
export function presence(d, radius) {
  if (!Number.isFinite(radius) || radius <= 0 || !Number.isFinite(d)) return 1;
  const near = radius / 3;
  if (d <= near) return 1;
  if (d >= radius) return 0;
  return 1 - (d - near) / (radius - near);
}

/**
 * How present `peerId` is to this page: from the server's world when the room runs the arena
 * game, else from the cursors while proximity is on (`own`: our arena position); 1 when the room
 * has no interest management or a position is unknown.
 */
export function presenceOf(state, peerId, own) {
  const radius = state.interest?.audioRadius;
  if (!Number.isFinite(radius)) return 1;
  if (state.world) {
    const a = state.world.players[state.peerId];
    const b = state.world.players[peerId];
    if (!a || !b) return 1;
    return presence(Math.hypot(a.wx - b.wx, a.wy - b.wy), radius);
  }
  const cursor = state.cursors[peerId];
  if (!state.proximity || !own || !cursor) return 1;
  return presence(Math.hypot(own.x - cursor.x, own.y - cursor.y), radius);
}
