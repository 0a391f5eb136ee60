//! The admin HTTP API (a token with the `admin` grant, as `Authorization: Bearer`).
//!
//! - `GET /api/rooms`: every room with its counts.
//! - `GET /api/rooms/{id}`: the room's state (the store), as JSON.
//! - `DELETE /api/rooms/{id}/peers/{peerId}`: kicks a peer (close code 4003); 204.
//! - `POST /api/rooms/{id}/recording` (`{"producerIds": [...]}` or no body: the whole room),
//!   `DELETE /api/rooms/{id}/recording[?producerId=P]`, `GET /api/rooms/{id}/recording`:
//!   recordings (docs/recording.md).
//!
//! A token whose `room` claim is `*` sees every room; any other admin token sees its own room only.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::instance::Instance;
use crate::peer::CLOSE_KICKED;
use crate::recording::RecordingError;
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
    /// The worker of its first router.
    worker: usize,
    /// Every worker it has a router on, that one first.
    workers: Vec<usize>,
    /// Producers and data producers piped from one of its routers to another now.
    pipes: usize,
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
            workers: room.routers.workers(),
            pipes: room.routers.pipe_count(),
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
    let Some(room) = instance.room(&id).await else {
        // In a cluster, the room may live on other nodes only.
        if let Some(cluster) = instance.cluster()
            && let Ok(peers) = cluster.room_peers(&id).await
            && !peers.is_empty()
        {
            return Json(serde_json::json!({
                "id": id,
                "peers": {},
                "remotePeers": remote_peers_json(&peers),
            }))
            .into_response();
        }
        return refuse(StatusCode::NOT_FOUND, "no such room");
    };
    let mut state = match serde_json::to_value(room.store.state()) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    if let Some(cluster) = instance.cluster()
        && let Some(map) = state.as_object_mut()
    {
        map.insert(
            "remotePeers".to_owned(),
            remote_peers_json(&room.remote_peers()),
        );
        let pipes =
            serde_json::to_value(cluster.pipes_out(&id).await).unwrap_or(serde_json::Value::Null);
        map.insert("pipesOut".to_owned(), pipes);
    }
    Json(state).into_response()
}

/// A room's peers on other nodes: id → their node, name and device.
fn remote_peers_json(peers: &[(String, crate::cluster::RemotePeer)]) -> serde_json::Value {
    serde_json::Value::Object(
        peers
            .iter()
            .filter_map(|(id, p)| Some((id.clone(), serde_json::to_value(p).ok()?)))
            .collect(),
    )
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaceQuery {
    room_id: Option<String>,
}

/// `GET /api/place?roomId=R`: the node a new peer of room R should connect to (`{nodeId,
/// url}`): its least-loaded node in the cluster, else the least-loaded node; without a cluster,
/// this one. Public, as the WebSocket URL it answers is.
pub async fn place(
    State(instance): State<Arc<Instance>>,
    axum::extract::Query(query): axum::extract::Query<PlaceQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(room_id) = query.room_id.filter(|r| !r.is_empty()) else {
        return refuse(StatusCode::BAD_REQUEST, "roomId is required");
    };
    let here = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(
            || format!("http://{}", instance.config.listen),
            |h| format!("http://{h}"),
        );
    Json(instance.place(&room_id, here).await).into_response()
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

/// The status a recording error answers with.
fn recording_refusal(e: &RecordingError) -> Response {
    let status = match e {
        RecordingError::NoProducer(_) => StatusCode::NOT_FOUND,
        RecordingError::AlreadyRecording(_) | RecordingError::NotRecording(_) => {
            StatusCode::CONFLICT
        }
        RecordingError::Codec(_) => StatusCode::UNPROCESSABLE_ENTITY,
        RecordingError::Draining | RecordingError::TooMany(_) => StatusCode::SERVICE_UNAVAILABLE,
        RecordingError::RoomFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        RecordingError::Io { .. }
        | RecordingError::Spawn { .. }
        | RecordingError::Ffmpeg(_)
        | RecordingError::NoPort
        | RecordingError::Media(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refuse(status, &e.to_string())
}

/// The room an admin request is about, or the refusal.
async fn admin_room(
    instance: &Instance,
    headers: &HeaderMap,
    id: &str,
) -> Result<Arc<crate::room::Room>, Response> {
    let scope = authorize(instance, headers).map_err(|r| *r)?;
    if !scope.allows(id) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the token is for another room",
        ));
    }
    instance
        .room(id)
        .await
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no such room"))
}

/// `POST /api/rooms/{id}/recording`'s body: the producers to record; none (or no body): the
/// whole room, and its producers to come.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StartRecording {
    producer_ids: Option<Vec<String>>,
}

/// `POST /api/rooms/{id}/recording`: starts recording; 201 with the recordings started.
pub async fn start_recording(
    State(instance): State<Arc<Instance>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let room = match admin_room(&instance, &headers, &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let request: StartRecording = if body.iter().all(u8::is_ascii_whitespace) {
        StartRecording::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, &format!("bad body: {e}")),
        }
    };
    if request.producer_ids.as_ref().is_some_and(Vec::is_empty) {
        return refuse(StatusCode::BAD_REQUEST, "producerIds is empty");
    }
    match instance.recorder.start(&room, request.producer_ids).await {
        Ok(started) => (
            StatusCode::CREATED,
            Json(json!({
                "roomWide": instance.recorder.is_recording_room(&id),
                "recordings": started,
            })),
        )
            .into_response(),
        Err(e) => recording_refusal(&e),
    }
}

/// `?producerId=` of a stop.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopQuery {
    producer_id: Option<String>,
}

/// `DELETE /api/rooms/{id}/recording[?producerId=P]`: stops the room's recordings (or one
/// producer's); answers them once their files are finished.
pub async fn stop_recording(
    State(instance): State<Arc<Instance>>,
    Path(id): Path<String>,
    Query(query): Query<StopQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin_room(&instance, &headers, &id).await {
        return r;
    }
    match instance
        .recorder
        .stop(&id, query.producer_id.as_deref())
        .await
    {
        Ok(stopped) => Json(json!({ "recordings": stopped })).into_response(),
        Err(e) => recording_refusal(&e),
    }
}

/// `GET /api/rooms/{id}/recording`: the room's recordings, running and recently finished
/// (also once the room has closed, for a while: docs/recording.md).
pub async fn recordings(
    State(instance): State<Arc<Instance>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let room = admin_room(&instance, &headers, &id).await;
    let listed = instance.recorder.list(&id);
    match (room, listed) {
        (Err(refusal), None) => refusal,
        (Err(refusal), Some(_)) if refusal.status() != StatusCode::NOT_FOUND => refusal,
        (_, listed) => Json(json!({
            "roomWide": instance.recorder.is_recording_room(&id),
            "recordings": listed.unwrap_or_default(),
        }))
        .into_response(),
    }
}
