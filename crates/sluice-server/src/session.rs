//! One peer's signaling connection: protoo over a WebSocket.
//!
//! The reader handles the peer's requests one at a time, in order (so `pause` then `resume` stay
//! in that order); server→client requests (`newConsumer`) are sent from their own tasks and their
//! answers matched by id, so a client that waits for one of its own requests before answering ours
//! cannot deadlock the connection. A writer task owns the socket's sending half and pings it.
//!
//! Closing: a client's close frame is answered with one (tungstenite queues the answer; the writer
//! flushes it) and the connection then ends. A text frame that is not UTF-8 closes with 1007.
//!
//! Abuse handling: a frame larger than `limits.max_message_bytes` closes the socket with 1009; a
//! peer over `limits.requests_per_second` gets 429 answers, and one that keeps flooding is closed
//! with 1008; a peer silent for `signaling.peer_timeout_secs` is removed; a peer that does not
//! read fast enough (its outbound queue fills) is closed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};
use sluice_media::MediaEvent;
use sluice_media::webrtc_transport::DtlsState;
use sluice_protocol::{ClientRequest, ErrorCode, Message};

use crate::auth::Grants;
use crate::instance::Instance;
use crate::peer::{
    CLOSE_INVALID_PAYLOAD, CLOSE_POLICY, CLOSE_REPLACED, CLOSE_TIMEOUT, CLOSE_TOO_BIG, Outbound,
    Peer, PeerChannels,
};
use crate::rate::TokenBucket;
use crate::room::Room;
use crate::signaling::{self, FollowUp};
use crate::store::Action;

/// How long a closed peer's socket is read for the client's answering close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// How the reader loop ended.
enum Ending {
    /// We close with this code and reason.
    ByUs(u16, String),
    /// The client sent a close frame (answered by the writer).
    ByClient,
    /// The connection failed or ended without a close frame.
    Lost,
}

/// Runs one accepted WebSocket until the peer leaves.
pub async fn run(
    instance: Arc<Instance>,
    socket: WebSocket,
    room_id: String,
    peer_id: String,
    grants: Grants,
) {
    let (mut ws_tx, mut ws_rx) = socket.split();
    let room = match instance.room_or_create(&room_id).await {
        Ok(room) => room,
        Err(e) => {
            let _ = ws_tx
                .send(close_frame(
                    crate::instance::CLOSE_TRY_AGAIN,
                    &e.to_string(),
                ))
                .await;
            return;
        }
    };
    // A second connection with the same peer id replaces the first, which leaves cleanly first.
    while let Some(old) = room.peer(&peer_id) {
        old.close(CLOSE_REPLACED, "replaced by a new connection");
        if tokio::time::timeout(Duration::from_secs(5), old.wait_left())
            .await
            .is_err()
        {
            tracing::warn!(peer = %peer_id, "replaced connection did not leave in time");
            break;
        }
    }
    let limits = instance.config.limits.clone();
    let signaling = instance.config.signaling.clone();
    let (peer, channels) = Peer::new(peer_id.clone(), grants);
    let PeerChannels {
        mut out_rx,
        mut events_rx,
        mut closing_rx,
    } = channels;
    if let Some(other) = room.insert_peer(peer.clone()) {
        // Two new connections raced; the older one goes.
        other.close(CLOSE_REPLACED, "replaced by a new connection");
    }
    room.dispatch(Action::PeerConnected {
        peer_id: peer_id.clone(),
    });
    instance.metrics.connections.inc();
    tracing::info!(room = %room.id, peer = %peer_id, "peer connected");

    // Writer: frames from the outbound queue, and pings.
    let ping_every = Duration::from_secs(signaling.ping_interval_secs);
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(ping_every);
        ping.tick().await;
        loop {
            tokio::select! {
                frame = out_rx.recv() => match frame {
                    Some(Outbound::Text(text)) => {
                        if ws_tx.send(WsMessage::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    Some(Outbound::Close(code, reason)) => {
                        let _ = ws_tx.send(close_frame(code, &reason)).await;
                        break;
                    }
                    Some(Outbound::Finish) | None => break,
                },
                _ = ping.tick() => {
                    if ws_tx.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Flushes what is queued: our close frame, or the one tungstenite queued to answer the
        // client's (it only goes out on a flush; sending another close after the client's is
        // refused). A client that does not read cannot hold the writer past the deadline.
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, ws_tx.close()).await;
    });

    // Media events of this peer's transports become actions.
    let events_room = room.clone();
    let events_peer = peer.clone();
    let events_instance = instance.clone();
    let events_task = tokio::spawn(async move {
        while let Some(event) = events_rx.recv().await {
            if let MediaEvent::DtlsStateChange {
                state: DtlsState::Connected,
                ..
            } = event
                && !events_peer.media_ready.swap(true, Ordering::SeqCst)
            {
                events_instance
                    .metrics
                    .peer_connected(events_peer.connected_at.elapsed());
            }
            signaling::on_media_event(&events_room, &events_peer, event);
        }
    });

    // Reader.
    let timeout = Duration::from_secs(signaling.peer_timeout_secs);
    let mut last_seen = Instant::now();
    let mut watchdog = tokio::time::interval(ping_every);
    let mut bucket = TokenBucket::per_second(limits.requests_per_second, Instant::now());
    let mut refused_in_a_row = 0u32;
    let ending = loop {
        tokio::select! {
            biased;
            changed = closing_rx.changed() => {
                let reason = closing_rx.borrow().clone();
                if changed.is_err() { break Ending::Lost; }
                if let Some((code, reason)) = reason { break Ending::ByUs(code, reason); }
            }
            frame = ws_rx.next() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => break ending_for_read_error(e),
                    None => break Ending::Lost,
                };
                last_seen = Instant::now();
                match frame {
                    WsMessage::Text(text) => {
                        if text.len() > limits.max_message_bytes {
                            break Ending::ByUs(CLOSE_TOO_BIG, format!(
                                "message of {} bytes is over the limit of {}",
                                text.len(),
                                limits.max_message_bytes
                            ));
                        }
                        if let Some((code, reason)) = on_text(&instance, &room, &peer, text.as_str(), &mut bucket, &mut refused_in_a_row).await {
                            break Ending::ByUs(code, reason);
                        }
                    }
                    WsMessage::Binary(_) => {
                        tracing::debug!(peer = %peer.id, "binary frame ignored (protoo is text)");
                    }
                    WsMessage::Close(_) => break Ending::ByClient,
                    WsMessage::Ping(_) | WsMessage::Pong(_) => {}
                }
            }
            _ = watchdog.tick() => {
                if last_seen.elapsed() > timeout {
                    break Ending::ByUs(CLOSE_TIMEOUT, "peer timed out".to_owned());
                }
            }
        }
    };
    if let Ending::ByClient = ending {
        tracing::debug!(room = %room.id, peer = %peer.id, "the client closed");
        let _ = peer.out.try_send(Outbound::Finish);
    }
    if let Ending::ByUs(code, reason) = ending {
        tracing::info!(room = %room.id, peer = %peer.id, code, %reason, "closing peer");
        let _ = peer.out.try_send(Outbound::Close(code, reason));
        // The closing handshake: read and discard until the client answers our close (or
        // a deadline), so the connection ends with FIN. Dropping it with unread frames would
        // reset it, and a reset can destroy our close frame before the client reads it.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                while let Some(Ok(frame)) = ws_rx.next().await {
                    if matches!(frame, WsMessage::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        });
    }
    // Fail what waits for this peer's answers.
    if let Ok(mut pending) = peer.pending.lock() {
        pending.clear();
    }
    room.leave(&peer).await;
    events_task.abort();
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    peer.left.send_replace(true);
    tracing::info!(room = %room.id, peer = %peer.id, "peer left");
    instance.close_room_if_empty(&room).await;
}

/// Handles one text frame; `Some(close)` when the peer must be disconnected.
async fn on_text(
    instance: &Arc<Instance>,
    room: &Arc<Room>,
    peer: &Arc<Peer>,
    text: &str,
    bucket: &mut TokenBucket,
    refused_in_a_row: &mut u32,
) -> Option<(u16, String)> {
    let message = match Message::parse(text) {
        Ok(m) => m,
        Err(e) => {
            if let Some(id) = Message::recover_request_id(text) {
                peer.respond(Message::error(id, e.error_code(), e.to_string()));
            } else {
                tracing::debug!(peer = %peer.id, error = %e, "unreadable frame ignored");
            }
            return None;
        }
    };
    match message {
        Message::Request { id, method, data } => {
            if !bucket.take(Instant::now()) {
                *refused_in_a_row += 1;
                instance
                    .metrics
                    .request(&method, ErrorCode::LimitReached.name());
                if *refused_in_a_row > bucket.burst() * 2 {
                    return Some((CLOSE_POLICY, "request flood".to_owned()));
                }
                peer.respond(Message::error(
                    id,
                    ErrorCode::LimitReached,
                    format!(
                        "more than {} requests per second",
                        instance.config.limits.requests_per_second
                    ),
                ));
                return None;
            }
            *refused_in_a_row = 0;
            let request = match ClientRequest::decode(&method, data) {
                Ok(r) => r,
                Err(e) => {
                    instance.metrics.request(&method, e.error_code().name());
                    tracing::debug!(peer = %peer.id, %method, error = %e, "request refused");
                    peer.respond(Message::error(id, e.error_code(), e.to_string()));
                    return None;
                }
            };
            let known = request.method();
            let started = Instant::now();
            let (result, follow_up) = signaling::handle(instance, room, peer, request).await;
            instance.metrics.request_duration(known, started.elapsed());
            match result {
                Ok(data) => {
                    instance.metrics.request(known, "ok");
                    peer.respond(Message::ok(id, data));
                }
                Err(e) => {
                    instance.metrics.request(known, e.code.name());
                    tracing::debug!(
                        peer = %peer.id, method = known, code = e.code.name(), reason = %e.reason,
                        "request refused"
                    );
                    peer.respond(Message::error(id, e.code, e.reason));
                }
            }
            if let Some(FollowUp::Joined) = follow_up {
                room.replay_for(peer);
            }
        }
        Message::Response(response) => {
            let waiter = peer
                .pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&response.id()));
            if let Some(w) = waiter {
                let _ = w.send(response);
            }
        }
        Message::Notification { .. } => {}
    }
    None
}

/// What a failed read means: a frame over the size limit closes with 1009, a text frame that is
/// not UTF-8 with 1007; anything else (a reset, a protocol error) has lost the connection.
fn ending_for_read_error(error: axum::Error) -> Ending {
    match error.into_inner().downcast::<tungstenite::Error>() {
        Ok(e) => match *e {
            tungstenite::Error::Capacity(_) => {
                Ending::ByUs(CLOSE_TOO_BIG, "message too big".to_owned())
            }
            tungstenite::Error::Utf8(_) => Ending::ByUs(
                CLOSE_INVALID_PAYLOAD,
                "text frame is not valid UTF-8".to_owned(),
            ),
            _ => Ending::Lost,
        },
        Err(_) => Ending::Lost,
    }
}

fn close_frame(code: u16, reason: &str) -> WsMessage {
    // RFC 6455 limits the close reason to 123 bytes.
    let mut reason = reason.to_owned();
    while reason.len() > 123 {
        reason.pop();
    }
    WsMessage::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
