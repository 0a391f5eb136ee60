// Pure helpers for the page's URL, ids and endpoints. No DOM access, so node's test runner can
// import them.

const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** A random lowercase alphanumeric string of `length` characters. */
export function randomId(length = 8, random = Math.random) {
  let id = '';
  for (let i = 0; i < length; i++) {
    id += ID_ALPHABET[Math.floor(random() * ID_ALPHABET.length)];
  }
  return id;
}

/** Defaults offered by the join form when the URL does not name a room and a peer. */
export function randomDefaults(random = Math.random) {
  const suffix = randomId(6, random);
  return {
    roomId: `room-${randomId(6, random)}`,
    peerId: `peer-${suffix}`,
    displayName: `Player ${suffix.slice(0, 3).toUpperCase()}`,
  };
}

function truthy(value) {
  return value !== null && ['1', 'true', 'yes', 'on'].includes(value.toLowerCase());
}

/**
 * Reads the page's query string.
 *
 * Returns `{roomId, peerId, displayName, token, simulcast, iceTransportPolicy, forceTcp, complete}`;
 * `complete` is true when both `roomId` and `peerId` are present (the page then joins at once,
 * otherwise it shows the form). `displayName` defaults to the peer id; `token` is null when
 * absent; `iceTransportPolicy` is `"relay"` (only through the TURN servers the server names) with
 * `?iceTransportPolicy=relay`, else `"all"`; `forceTcp` (`?forceTcp=true`) asks the server for
 * ICE-TCP candidates only, for networks that block UDP.
 */
export function parseRoomParams(search) {
  const query = new URLSearchParams(search);
  const get = (name) => {
    const value = query.get(name);
    return value === null ? '' : value.trim();
  };
  const roomId = get('roomId');
  const peerId = get('peerId');
  return {
    roomId,
    peerId,
    displayName: get('displayName') || peerId,
    token: get('token') || null,
    simulcast: truthy(query.get('simulcast')),
    iceTransportPolicy: get('iceTransportPolicy') === 'relay' ? 'relay' : 'all',
    forceTcp: truthy(query.get('forceTcp')),
    complete: roomId !== '' && peerId !== '',
  };
}

/** The protoo WebSocket URL for a page served from `location` (`{protocol, host}`). */
export function signalingUrl(location, { roomId, peerId, token }) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const query = new URLSearchParams({ roomId, peerId, token });
  return `${scheme}://${location.host}/ws?${query}`;
}

/** The dev-mode token endpoint's path for a room and a peer. */
export function devTokenPath({ roomId, peerId }) {
  return `/dev/token?${new URLSearchParams({ roomId, peerId })}`;
}

/**
 * The peer token: the URL's `token=` if given, else one fetched from `GET /dev/token` (dev mode
 * only). Throws an Error whose message says what went wrong.
 */
export async function resolveToken(params, fetchImpl = fetch) {
  if (params.token) return params.token;
  const path = devTokenPath(params);
  let response;
  try {
    response = await fetchImpl(path, { headers: { Accept: 'application/json' } });
  } catch (error) {
    throw new Error(`cannot reach ${path}: ${error.message}`);
  }
  if (!response.ok) {
    let body = '';
    try {
      body = (await response.text()).trim().slice(0, 200);
    } catch {
      // The status alone will do.
    }
    const hint = response.status === 404
      ? ' (the server is not in dev mode: pass a token in the URL with ?token=…)'
      : '';
    throw new Error(`GET ${path} failed with HTTP ${response.status}${body ? `: ${body}` : ''}${hint}`);
  }
  let json;
  try {
    json = await response.json();
  } catch {
    throw new Error(`GET ${path} did not return JSON`);
  }
  if (!json || typeof json.token !== 'string' || json.token === '') {
    throw new Error(`GET ${path} returned no "token" string`);
  }
  return json.token;
}
