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
//! Abuse handling: a frame larger than `limits.max_message_bytes` closes the socket with 1009;
//! every frame (text or binary, well-formed or not) except an answer to one of the server's own
//! pending requests takes a token of the peer's `limits.requests_per_second` limiter: beyond it
//! requests get 429 answers, and a peer that keeps flooding is closed with 1008; frames that are
//! not handled are counted (`sluice_ws_dropped_frames_total`); a peer silent for
//! `signaling.peer_timeout_secs` is removed; a peer that does not read fast enough (its outbound
//! queue over 4096 frames or 8 MiB) is closed with 4002, its backlog discarded so that the close
//! frame goes out next.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};
use sluice_media::MediaEvent;
use sluice_media::webrtc_transport::DtlsState;
use sluice_protocol::{ClientRequest, DecodeError, ErrorCode, Message};

use crate::auth::Grants;
use crate::error::{clip, clip_reason};
use crate::instance::Instance;
use crate::metrics::DroppedFrame;
use crate::peer::{
    CLOSE_INVALID_PAYLOAD, CLOSE_POLICY, CLOSE_REPLACED, CLOSE_TIMEOUT, CLOSE_TOO_BIG,
    CLOSE_TOO_SLOW, Outbound, Peer, PeerChannels,
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
        out_bytes,
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

    // Writer: frames from the outbound queue, and pings, until the peer is closed (it then writes
    // the close frame itself, so the code gets through even when the queue is full) or the
    // session stops it (the client closed, or the connection was lost).
    let ping_every = Duration::from_secs(signaling.ping_interval_secs);
    let mut writer_closing = closing_rx.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(ping_every);
        ping.tick().await;
        // Both signals are level-triggered (`wait_for` sees a value set before it is called).
        let close = loop {
            let text = tokio::select! {
                biased;
                closing = closing_requested(&mut writer_closing) => break closing,
                _ = stop_requested(&mut stop_rx) => break None,
                frame = out_rx.recv() => match frame {
                    Some(Outbound::Text(text)) => {
                        out_bytes.fetch_sub(text.len(), Ordering::SeqCst);
                        text
                    }
                    None => break None,
                },
                _ = ping.tick() => {
                    if ws_tx.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                        break None;
                    }
                    continue;
                }
            };
            // A client that does not read blocks this send; a close or stop must not wait for it
            // (the frame stays buffered and is flushed, if ever, before the close frame).
            let sent = tokio::select! {
                biased;
                _ = closing_requested(&mut writer_closing) => true,
                _ = stop_requested(&mut stop_rx) => true,
                sent = ws_tx.send(WsMessage::Text(text.into())) => sent.is_ok(),
            };
            if !sent {
                break None;
            }
        };
        // Everything below, for a client that does not read, ends by this deadline.
        let deadline = tokio::time::Instant::now() + CLOSE_HANDSHAKE_TIMEOUT;
        if let Some((code, reason)) = close {
            // What was queued before the close goes first, except for a peer closed because it
            // does not read: its backlog is dropped and the close frame goes next.
            if code != CLOSE_TOO_SLOW {
                while let Ok(Outbound::Text(text)) = out_rx.try_recv() {
                    out_bytes.fetch_sub(text.len(), Ordering::SeqCst);
                    let sent =
                        tokio::time::timeout_at(deadline, ws_tx.send(WsMessage::Text(text.into())))
                            .await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                }
            }
            let _ = tokio::time::timeout_at(deadline, ws_tx.send(close_frame(code, &reason))).await;
        }
        drop(out_rx);
        // Flushes what is queued: our close frame, or the one tungstenite queued to answer the
        // client's (it only goes out on a flush; sending another close after the client's is
        // refused). A client that does not read cannot hold the writer past the deadline.
        let _ = tokio::time::timeout_at(deadline, ws_tx.close()).await;
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
                let (text, len) = match &frame {
                    WsMessage::Text(text) => (Some(text.as_str()), text.len()),
                    WsMessage::Binary(bytes) => (None, bytes.len()),
                    WsMessage::Close(_) => break Ending::ByClient,
                    WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                };
                if len > limits.max_message_bytes {
                    break Ending::ByUs(CLOSE_TOO_BIG, format!(
                        "message of {len} bytes is over the limit of {}",
                        limits.max_message_bytes
                    ));
                }
                if let Some((code, reason)) = on_frame(&instance, &room, &peer, text, &mut bucket, &mut refused_in_a_row).await {
                    break Ending::ByUs(code, reason);
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
    }
    let mut handshake = None;
    if let Ending::ByUs(code, reason) = ending {
        tracing::info!(room = %room.id, peer = %peer.id, code, %reason, "closing peer");
        // The writer sends the close frame (the first close asked for wins).
        peer.close(code, &reason);
        // The closing handshake: read and discard until the client answers our close (or
        // a deadline), so the connection ends with FIN. Dropping it with unread frames would
        // reset it, and a reset can destroy our close frame before the client reads it.
        handshake = Some(tokio::spawn(async move {
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                while let Some(Ok(frame)) = ws_rx.next().await {
                    if matches!(frame, WsMessage::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }));
    }
    // Ends the writer unless it is closing the connection.
    stop_tx.send_replace(true);
    // Fail what waits for this peer's answers.
    if let Ok(mut pending) = peer.pending.lock() {
        pending.clear();
    }
    room.leave(&peer).await;
    events_task.abort();
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    peer.left.send_replace(true);
    tracing::info!(room = %room.id, peer = %peer.id, "peer left");
    // The room (and so a draining server, which waits for its rooms to empty) ends only after
    // the handshake (bounded by its deadline): a process that exits with the client's answer
    // unread resets the connection, and the client may never read our close frame (1001).
    if let Some(handshake) = handshake {
        let _ = handshake.await;
    }
    instance.close_room_if_empty(&room).await;
}

/// Handles one text frame, or a binary one (`text` is `None`); `Some(close)` when the peer must
/// be disconnected.
///
/// Every frame takes a token of the peer's request limiter, whatever it holds, except an answer
/// to one of the server's own pending requests (those are as many as the server sent). A frame
/// beyond the limit is dropped (a request with a readable id is answered 429); more than twice
/// the burst of them in a row closes the connection with 1008.
async fn on_frame(
    instance: &Arc<Instance>,
    room: &Arc<Room>,
    peer: &Arc<Peer>,
    text: Option<&str>,
    bucket: &mut TokenBucket,
    refused_in_a_row: &mut u32,
) -> Option<(u16, String)> {
    let metrics = &instance.metrics;
    let parsed = match text.map(Message::parse) {
        Some(Ok(Message::Response(response))) => {
            let waiter = peer
                .pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&response.id()));
            if let Some(w) = waiter {
                let _ = w.send(response);
                return None;
            }
            Some(Ok(Message::Response(response)))
        }
        other => other,
    };
    if !bucket.take(Instant::now()) {
        *refused_in_a_row += 1;
        metrics.dropped_frame(DroppedFrame::RateLimited);
        let request = match &parsed {
            Some(Ok(Message::Request { id, method, .. })) => Some((*id, method.as_str())),
            Some(Err(_)) => text
                .and_then(Message::recover_request_id)
                .map(|id| (id, "")),
            _ => None,
        };
        if let Some((_, method)) = request {
            metrics.request(method, ErrorCode::LimitReached.name());
        }
        if *refused_in_a_row > bucket.burst() * 2 {
            return Some((CLOSE_POLICY, "request flood".to_owned()));
        }
        if let Some((id, _)) = request {
            peer.respond(Message::error(
                id,
                ErrorCode::LimitReached,
                format!(
                    "more than {} requests per second",
                    instance.config.limits.requests_per_second
                ),
            ));
        }
        return None;
    }
    *refused_in_a_row = 0;
    let message = match parsed {
        None => {
            metrics.dropped_frame(DroppedFrame::Binary);
            tracing::debug!(peer = %peer.id, "binary frame dropped (protoo is text)");
            return None;
        }
        Some(Ok(message)) => message,
        Some(Err(e)) => {
            metrics.dropped_frame(match e {
                DecodeError::NotJson(_) => DroppedFrame::NotJson,
                _ => DroppedFrame::InvalidMessage,
            });
            if let Some(id) = text.and_then(Message::recover_request_id) {
                peer.respond(Message::error(
                    id,
                    e.error_code(),
                    clip_reason(&e.to_string()),
                ));
            } else {
                tracing::debug!(peer = %peer.id, error = %e, "unreadable frame dropped");
            }
            return None;
        }
    };
    match message {
        Message::Request { id, method, data } => {
            *refused_in_a_row = 0;
            let request = match ClientRequest::decode(&method, data) {
                Ok(r) => r,
                Err(e) => {
                    instance.metrics.request(&method, e.error_code().name());
                    // The method name and serde's message quote what the client sent.
                    let reason = clip_reason(&e.to_string());
                    tracing::debug!(peer = %peer.id, method = %clip(&method), %reason, "request refused");
                    peer.respond(Message::error(id, e.error_code(), reason));
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
        // Answers to pending requests were delivered above.
        Message::Response(_) => metrics.dropped_frame(DroppedFrame::UnmatchedResponse),
        Message::Notification { .. } => metrics.dropped_frame(DroppedFrame::Notification),
    }
    None
}

/// The close the peer was asked for ([`Peer::close`]), once there is one; `None` when the peer
/// is gone without one.
async fn closing_requested(
    closing: &mut tokio::sync::watch::Receiver<Option<(u16, String)>>,
) -> Option<(u16, String)> {
    closing
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|c| (*c).clone())
}

/// Resolves once the session stops the writer (or is gone).
async fn stop_requested(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
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
