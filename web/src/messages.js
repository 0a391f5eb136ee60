// Data-channel message formats. Pure: no DOM, no mediasoup.
//
// chat   (label "chat", ordered and reliable):    {"from": peerId, "text": "..."}
// cursor (label "cursor", unordered, no retries): {"from": peerId, "x": 12, "y": 34, "t": 1700000000000}

export const CHAT_LABEL = 'chat';
export const CURSOR_LABEL = 'cursor';

/** The arena the cursors live in: every page draws and sends in this coordinate space. */
export const ARENA = { width: 640, height: 360 };

/**
 * The shared flag: a game action (`dispatchAction`) cached under one key, so the server keeps only
 * where it is now and a late joiner receives that right after joining.
 */
export const FLAG_ACTION = 'demo.flag.move';

/** The `dispatchAction` request that moves the flag to (x, y) of the arena. */
export function flagRequest(x, y) {
  return {
    type: FLAG_ACTION,
    payload: { x: Math.round(x), y: Math.round(y) },
    cache: true,
    cacheKey: 'flag',
  };
}

/**
 * The player's position for the server's interest management (label "sluice.position", never
 * relayed to peers): little-endian float32 x, y, z; three NaNs take the player out of the world.
 */
export const POSITION_LABEL = 'sluice.position';

export function encodePosition(x, y, z = 0) {
  const view = new DataView(new ArrayBuffer(12));
  view.setFloat32(0, x, true);
  view.setFloat32(4, y, true);
  view.setFloat32(8, z, true);
  return view.buffer;
}

export function encodeNoPosition() {
  return encodePosition(Number.NaN, Number.NaN, Number.NaN);
}

/** Longest chat text sent or shown. */
export const MAX_CHAT_LENGTH = 500;

export function encodeChat(from, text) {
  return JSON.stringify({ from, text: String(text).slice(0, MAX_CHAT_LENGTH) });
}

export function encodeCursor(from, x, y, t = Date.now()) {
  return JSON.stringify({ from, x: Math.round(x), y: Math.round(y), t });
}

function parseObject(raw) {
  if (typeof raw !== 'string') return null;
  try {
    const value = JSON.parse(raw);
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

/**
 * Decodes a chat message received on a data consumer of `peerId` (null when the server's own).
 * The sender is the data consumer's peer when known, so a peer cannot speak for another; the
 * message's own `from` is used only when the server did not say. Returns null for garbage.
 */
export function decodeChat(raw, peerId) {
  const message = parseObject(raw);
  if (!message || typeof message.text !== 'string') return null;
  const from = peerId ?? (typeof message.from === 'string' ? message.from : null);
  if (!from) return null;
  return { from, text: message.text.slice(0, MAX_CHAT_LENGTH) };
}

/** Decodes a cursor message like `decodeChat`; returns `{from, x, y, t}` or null. */
export function decodeCursor(raw, peerId) {
  const message = parseObject(raw);
  if (!message || !Number.isFinite(message.x) || !Number.isFinite(message.y)) return null;
  const from = peerId ?? (typeof message.from === 'string' ? message.from : null);
  if (!from) return null;
  return {
    from,
    x: clamp(message.x, 0, ARENA.width),
    y: clamp(message.y, 0, ARENA.height),
    t: Number.isFinite(message.t) ? message.t : null,
  };
}

function clamp(value, min, max) {
  return Math.min(max, Math.max(min, value));
}

/**
 * Where the cursor goes when nobody moves the mouse: a slow figure of eight around the arena,
 * phase-shifted per peer so two idle players do not overlap. `t` is in milliseconds.
 */
export function idleCursor(t, seed = 0) {
  const phase = (t / 4000) * 2 * Math.PI + seed;
  return {
    x: ARENA.width / 2 + (ARENA.width / 2 - 40) * Math.sin(phase),
    y: ARENA.height / 2 + (ARENA.height / 2 - 40) * Math.sin(2 * phase) / 1.2,
  };
}

/** A stable number in [0, 2π) from a string, to seed `idleCursor`. */
export function seedOf(text) {
  let hash = 0;
  for (const char of String(text)) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return (hash % 6283) / 1000;
}

/**
 * The server's arena game (crates/sluice-server/examples/arena): it broadcasts the world on
 * `arena.state` and reads where each player wants to go on `arena.input`.
 */
export const ARENA_STATE_LABEL = 'arena.state';
export const ARENA_INPUT_LABEL = 'arena.input';

/**
 * Decodes an `arena.state` snapshot (`{tick, size, players: {peerId: [x, y]}}`, the world a
 * `size` square in the game's units): `{tick, size, players: {peerId: {wx, wy, x, y}}}` with
 * `wx, wy` in the game's units and `x, y` scaled to the page's arena; null for garbage.
 */
export function decodeWorld(raw) {
  const message = parseObject(raw);
  if (!message || !Number.isFinite(message.size) || message.size <= 0) return null;
  if (message.players === null || typeof message.players !== 'object') return null;
  const { size } = message;
  const players = {};
  for (const [id, p] of Object.entries(message.players)) {
    if (!Array.isArray(p) || !Number.isFinite(p[0]) || !Number.isFinite(p[1])) continue;
    const wx = clamp(p[0], 0, size);
    const wy = clamp(p[1], 0, size);
    players[id] = { wx, wy, x: (wx / size) * ARENA.width, y: (wy / size) * ARENA.height };
  }
  return { tick: Number.isFinite(message.tick) ? message.tick : 0, size, players };
}

/**
 * The arena input that steers a player at `from` (a decoded world player) toward the page's
 * arena point `to`: a unit direction in the game's units, or standing still when there.
 */
export function encodeArenaInput(world, from, to) {
  const dx = (to.x / ARENA.width) * world.size - from.wx;
  const dy = (to.y / ARENA.height) * world.size - from.wy;
  const distance = Math.hypot(dx, dy);
  if (distance < world.size / 100) return JSON.stringify({ dx: 0, dy: 0 });
  return JSON.stringify({ dx: dx / distance, dy: dy / distance });
}
