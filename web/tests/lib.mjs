// Helpers of the browser end-to-end test that need neither a server nor a browser, so
// tests/unit/ can check them with node's test runner.

import { parseArgs } from 'node:util';

export const USAGE = 'usage: node web/tests/e2e.mjs --sluice <path to the sluice binary> '
  + '[--arena <path to the arena example>] [--turnserver <path to coturn\'s turnserver>] '
  + '[--ffmpeg <path to ffmpeg>] [--redis-server <path to redis-server>] '
  + '[--artifacts <dir>] [--chromium <path>] [--headed]';

/** Parses the e2e script's arguments; throws an Error carrying the usage on a mistake. */
export function parseCliArgs(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        sluice: { type: 'string' },
        arena: { type: 'string' },
        turnserver: { type: 'string' },
        ffmpeg: { type: 'string' },
        'redis-server': { type: 'string' },
        artifacts: { type: 'string' },
        chromium: { type: 'string', default: '/usr/bin/chromium' },
        headed: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new Error(`${error.message}\n${USAGE}`);
  }
  if (!values.help && !values.sluice) throw new Error(`--sluice is required\n${USAGE}`);
  return { ...values };
}

const LISTENING = /^sluice listening on (http:\/\/\S+?)\/?\s*$/;

/** The base URL (no trailing slash) from the server's `sluice listening on http://…` line. */
export function parseListeningLine(line) {
  const match = LISTENING.exec(line);
  return match ? match[1] : null;
}

/**
 * The peer ids in an admin room-state document: `peers` may be an object keyed by peer id or an
 * array of objects with `id` (or `peerId`). Throws when there is no such field.
 */
export function peerIdsOfRoomState(roomState) {
  const peers = roomState?.peers;
  if (Array.isArray(peers)) {
    return peers.map((peer) => (typeof peer === 'string' ? peer : peer?.id ?? peer?.peerId))
      .filter((id) => typeof id === 'string');
  }
  if (peers && typeof peers === 'object') return Object.keys(peers);
  throw new Error(`the room state has no "peers" object or array: ${JSON.stringify(roomState).slice(0, 300)}`);
}

/** A random room or peer suffix. */
export function randomSuffix(length = 8) {
  return Math.random().toString(36).slice(2, 2 + length).padEnd(length, '0');
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** An error that stops polling at once (the condition can no longer become true). */
export class Fatal extends Error {}

/** What `poll` throws when time runs out; its message tells the whole story. */
export class PollTimeout extends Error {}

/**
 * Calls `probe` every `interval` ms until it returns a truthy value, and returns that value.
 * After `timeout` ms throws an Error naming `what` with the last value or error seen. A probe
 * that throws `Fatal` ends the wait at once; other errors are retried.
 */
export async function poll(what, probe, { timeout = 20_000, interval = 250 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  let lastError = null;
  for (;;) {
    try {
      last = await probe();
      lastError = null;
      if (last) return last;
    } catch (error) {
      if (error instanceof Fatal) throw error;
      lastError = error;
    }
    if (Date.now() >= deadline) {
      const seen = lastError ? `last error: ${lastError.message}` : `last value: ${describe(last)}`;
      throw new PollTimeout(`timed out after ${timeout / 1000} s waiting for ${what} (${seen})`);
    }
    await sleep(interval);
  }
}

function describe(value) {
  try {
    const text = JSON.stringify(value);
    return text === undefined ? String(value) : text.slice(0, 500);
  } catch {
    return String(value);
  }
}

/** Keeps the last `limit` lines written to it, for failure reports. */
export class Tail {
  constructor(limit = 200) {
    this.limit = limit;
    this.lines = [];
    this.partial = '';
  }

  /** Adds a chunk of text (lines may be split across chunks). */
  write(chunk) {
    const text = this.partial + chunk;
    const lines = text.split('\n');
    this.partial = lines.pop();
    for (const line of lines) this.push(line);
  }

  push(line) {
    this.lines.push(line);
    if (this.lines.length > this.limit) this.lines.splice(0, this.lines.length - this.limit);
  }

  toString() {
    return [...this.lines, ...(this.partial ? [this.partial] : [])].join('\n');
  }
}

/** Environment for the server: the caller's, without SLUICE_* so the server runs in dev mode. */
export function devModeEnv(env) {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !name.startsWith('SLUICE_')));
}
