//! The signaling endpoint `GET /ws` (protoo over WebSocket) and dev mode's `GET /dev/token`.
//!
//! Everything is checked before the upgrade: the token (401 missing/invalid/expired/wrong key,
//! 403 for another room or peer), the origin (403 when not allowed), the `protoo` subprotocol
//! (400), the ids (400), the room's capacity (429) and whether the server is draining (503).

use std::sync::Arc;

use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, Grants};
use crate::instance::Instance;

/// Query of `GET /ws`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WsQuery {
    room_id: Option<String>,
    peer_id: Option<String>,
    token: Option<String>,
}

/// Longest room or peer id accepted.
pub const MAX_ID_LEN: usize = 128;

/// Room and peer ids: 1..=128 visible ASCII characters.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.chars().all(|c| c.is_ascii_graphic())
}

/// The `room` claim of an admin token that sees every room (docs/protocol.md).
pub const ADMIN_WILDCARD: &str = "*";

/// Why `room_id` cannot name a room, if it cannot: a room id is a valid id ([`valid_id`])
/// without `*`, which is reserved for the admin wildcard (a room named `*` would be every room
/// to an admin token, and a peer token for it would be one for the wildcard).
pub fn room_id_error(room_id: &str) -> Option<String> {
    if !valid_id(room_id) {
        Some(format!(
            "roomId is required: 1 to {MAX_ID_LEN} visible ASCII characters"
        ))
    } else if room_id.contains('*') {
        Some("roomId must not contain '*' (reserved for the admin wildcard)".to_owned())
    } else {
        None
    }
}

/// Why the `roomId` and `peerId` of a request cannot be used, if they cannot (400).
fn ids_error(room_id: &str, peer_id: &str) -> Option<String> {
    if !valid_id(room_id) || !valid_id(peer_id) {
        return Some(format!(
            "roomId and peerId are required: 1 to {MAX_ID_LEN} visible ASCII characters"
        ));
    }
    room_id_error(room_id)
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, Json(json!({ "error": reason.into() }))).into_response()
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

fn origin_allowed(instance: &Instance, headers: &HeaderMap) -> bool {
    let allowed = &instance.config.http.allowed_origins;
    if allowed.iter().any(|o| o == "*") {
        return true;
    }
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        // Not a browser: the token alone decides.
        None => true,
        Some(origin) => allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)),
    }
}

pub async fn upgrade(
    State(instance): State<Arc<Instance>>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let result = authorize(&instance, &query, &headers).await;
    let (room_id, peer_id, grants) = match result {
        Ok(ok) => ok,
        Err((status, reason)) => {
            instance.metrics.refusal(status.as_u16());
            return refuse(status, reason);
        }
    };
    let Ok(ws) = ws else {
        return refuse(StatusCode::BAD_REQUEST, "a WebSocket upgrade is required");
    };
    let max = instance.config.limits.max_message_bytes;
    ws.protocols(["protoo"])
        // Frames up to 4× the limit are read and answered with close code 1009; larger ones
        // make the read fail, which closes the socket the same way.
        .max_message_size(max.saturating_mul(4))
        .max_frame_size(max.saturating_mul(4))
        // Signaling messages are a few KiB; the 128 KiB default read buffer, allocated per
        // peer, was most of what an idle peer cost. Larger messages still arrive (the buffer
        // grows up to the message limit).
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| crate::session::run(instance, socket, room_id, peer_id, grants))
}

/// Initial read buffer of a peer's WebSocket.
const WS_READ_BUFFER_BYTES: usize = 8 * 1024;

async fn authorize(
    instance: &Arc<Instance>,
    query: &WsQuery,
    headers: &HeaderMap,
) -> Result<(String, String, Grants), (StatusCode, String)> {
    if instance.is_draining() {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        ));
    }
    let room_id = query.room_id.clone().unwrap_or_default();
    let peer_id = query.peer_id.clone().unwrap_or_default();
    if let Some(reason) = ids_error(&room_id, &peer_id) {
        return Err((StatusCode::BAD_REQUEST, reason));
    }
    let token = query
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| bearer(headers))
        .ok_or((StatusCode::UNAUTHORIZED, "no token".to_owned()))?;
    let claims = instance
        .auth
        .authorize(&token, &room_id, &peer_id)
        .map_err(|e| {
            (
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED),
                e.to_string(),
            )
        })?;
    if !origin_allowed(instance, headers) {
        return Err((StatusCode::FORBIDDEN, "origin not allowed".into()));
    }
    let protoo = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "protoo");
    if !protoo {
        return Err((
            StatusCode::BAD_REQUEST,
            "the protoo subprotocol is required".into(),
        ));
    }
    if let Some(room) = instance.room(&room_id).await
        && room.peer(&peer_id).is_none()
        && room.peer_count() >= instance.config.limits.peers_per_room
    {
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "room {room_id} is full ({} peers)",
                instance.config.limits.peers_per_room
            ),
        ));
    }
    Ok((room_id, peer_id, claims.grants))
}

/// Query of `GET /dev/token`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevTokenQuery {
    room_id: Option<String>,
    peer_id: Option<String>,
    /// Comma-separated: publish, subscribe, data, admin (default: the first three).
    grants: Option<String>,
}

/// Dev mode only: a token for the demo page (the route does not exist in production).
pub async fn dev_token(
    State(instance): State<Arc<Instance>>,
    Query(query): Query<DevTokenQuery>,
) -> Response {
    let room_id = query.room_id.unwrap_or_default();
    let peer_id = query.peer_id.unwrap_or_default();
    let admin_only = Grants {
        admin: true,
        ..Grants::default()
    };
    let grants = match query.grants.as_deref() {
        None | Some("") => Grants::player(),
        Some(list) => {
            let mut g = Grants::default();
            for name in list.split(',').map(str::trim) {
                match name {
                    "publish" => g.publish = true,
                    "subscribe" => g.subscribe = true,
                    "data" => g.data = true,
                    "admin" => g.admin = true,
                    other => {
                        return refuse(
                            StatusCode::BAD_REQUEST,
                            format!("unknown grant {:?}", crate::error::clip(other)),
                        );
                    }
                }
            }
            g
        }
    };
    // The admin wildcard: a token that may only use the admin API, for every room. Any other
    // token for `*` (a peer's) is refused with the room ids no room may have.
    let wildcard = room_id == ADMIN_WILDCARD && grants == admin_only && valid_id(&peer_id);
    if !wildcard && let Some(reason) = ids_error(&room_id, &peer_id) {
        let reason = if room_id == ADMIN_WILDCARD {
            "roomId '*' is the admin wildcard: only a token with the admin grant alone \
             (grants=admin) is minted for it"
                .to_owned()
        } else {
            reason
        };
        return refuse(StatusCode::BAD_REQUEST, reason);
    }
    match instance.auth.mint(
        &room_id,
        &peer_id,
        grants,
        instance.config.auth.token_ttl_secs,
        auth::unix_now(),
    ) {
        Ok(token) => {
            Json(json!({ "token": token, "roomId": room_id, "peerId": peer_id })).into_response()
        }
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
