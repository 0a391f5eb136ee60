//! The admin HTTP API (a token with the `admin` grant, as `Authorization: Bearer`).
//!
//! - `GET /api/rooms`: every room with its counts.
//! - `GET /api/rooms/{id}`: the room's state (the store), as JSON.
//! - `DELETE /api/rooms/{id}/peers/{peerId}`: kicks a peer (close code 4003); 204.
//!
//! A token whose `room` claim is `*` sees every room; any other admin token sees its own room only.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::instance::Instance;
use crate::peer::CLOSE_KICKED;
use crate::ws::bearer;

/// What an admin token may see: every room, or one.
enum Scope {
    All,
    Room(String),
}

impl Scope {
    fn allows(&self, room: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Room(r) => r == room,
        }
    }
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    (status, Json(json!({ "error": reason }))).into_response()
}

/// The scope of the request's admin token, or the refusal to answer with.
fn authorize(instance: &Instance, headers: &HeaderMap) -> Result<Scope, Box<Response>> {
    let token =
        bearer(headers).ok_or_else(|| Box::new(refuse(StatusCode::UNAUTHORIZED, "no token")))?;
    let claims = instance
        .auth
        .verify(&token)
        .map_err(|e| Box::new(refuse(StatusCode::UNAUTHORIZED, &e.to_string())))?;
    if !claims.grants.admin {
        return Err(Box::new(refuse(
            StatusCode::FORBIDDEN,
            "the token does not grant admin",
        )));
    }
    Ok(if claims.room == "*" {
        Scope::All
    } else {
        Scope::Room(claims.room)
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomSummary {
    id: String,
    worker: usize,
    peers: usize,
    transports: usize,
    producers: usize,
    consumers: usize,
    data_producers: usize,
    data_consumers: usize,
}

pub async fn rooms(State(instance): State<Arc<Instance>>, headers: HeaderMap) -> Response {
    let scope = match authorize(&instance, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let mut out = Vec::new();
    for room in instance.rooms().await {
        if !scope.allows(&room.id) {
            continue;
        }
        let c = room.store.read(|s| s.counts()).unwrap_or_default();
        out.push(RoomSummary {
            id: room.id.clone(),
            worker: room.worker_index,
            peers: c[0],
            transports: c[1],
            producers: c[2],
            consumers: c[3],
            data_producers: c[4],
            data_consumers: c[5],
        });
    }
    Json(out).into_response()
}

pub async fn room(
    State(instance): State<Arc<Instance>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let scope = match authorize(&instance, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if !scope.allows(&id) {
        return refuse(StatusCode::FORBIDDEN, "the token is for another room");
    }
    match instance.room(&id).await {
        Some(room) => Json(room.store.state()).into_response(),
        None => refuse(StatusCode::NOT_FOUND, "no such room"),
    }
}

pub async fn kick(
    State(instance): State<Arc<Instance>>,
    Path((id, peer_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let scope = match authorize(&instance, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if !scope.allows(&id) {
        return refuse(StatusCode::FORBIDDEN, "the token is for another room");
    }
    let Some(room) = instance.room(&id).await else {
        return refuse(StatusCode::NOT_FOUND, "no such room");
    };
    let Some(peer) = room.peer(&peer_id) else {
        return refuse(StatusCode::NOT_FOUND, "no such peer");
    };
    peer.close(CLOSE_KICKED, "kicked by an administrator");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), peer.wait_left()).await;
    StatusCode::NO_CONTENT.into_response()
}
