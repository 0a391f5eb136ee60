//! Peer churn: after rounds of peers joining (one room each) and leaving, the heap in use comes
//! back to its baseline. A counting wrapper around the system allocator (this test binary only)
//! measures the bytes live, so the bound does not depend on the allocator's retention or on speed.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::alloc::System;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The tests of this binary measure the whole process's heap: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed, in the whole process (server and test clients).
fn live_bytes() -> i64 {
    let s = GLOBAL.stats();
    // A realloc is already counted in both (its growth or its shrinking).
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

const PEERS: usize = 200;
const ROUNDS: usize = 3;
/// What may stay allocated after all rounds, beyond the baseline. The rooms of one round alone
/// take several MiB; what a round may leave behind must stay far below that, so a leak or a map
/// that keeps a round's capacity is caught.
const BOUND_BYTES: i64 = 256 * 1024;

async fn join(server: &TestServer, room: &str, peer: &str) -> common_socket::Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = server.url(room, peer).into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "protoo".parse().unwrap());
    // A small read buffer, so the clients' share of the heap stays small next to the server's.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false)
        .await
        .unwrap();
    let join =
        format!(r#"{{"request":true,"id":1,"method":"join","data":{{"displayName":"{peer}"}}}}"#);
    socket.send(Message::Text(join.into())).await.unwrap();
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(t))) if t.contains(r#""response":true"#) => {
                assert!(t.contains(r#""ok":true"#), "{t}");
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("join of {peer}: {other:?}"),
        }
    }
    socket
}

async fn close(mut socket: common_socket::Socket) {
    socket.close(None).await.unwrap();
    // Until the server's answer and the end of the stream.
    while let Some(Ok(_)) = socket.next().await {}
}

mod common_socket {
    pub type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;
}

/// Waits until every room is closed, then until the heap is back within the bound (or the
/// deadline, which only turns a leak into a failure rather than a hang).
async fn settle(server: &TestServer, baseline: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !server.instance.rooms().await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "rooms left open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        let live = live_bytes();
        if live - baseline <= BOUND_BYTES || tokio::time::Instant::now() >= deadline {
            return live;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heap_in_use_returns_to_its_baseline_after_rounds_of_peer_churn() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start(|c| c.limits.peers_per_room = 10).await;
    // One peer joins and leaves first, so what is created once per process (thread-locals,
    // lazily built tables) is in the baseline.
    close(join(&server, "warm-up", "w").await).await;
    let baseline = settle(&server, i64::MAX / 2).await;
    let baseline = baseline.max(live_bytes());
    let mut after = Vec::new();
    for round in 0..ROUNDS {
        let mut sockets = Vec::with_capacity(PEERS);
        for i in 0..PEERS {
            sockets.push(join(&server, &format!("room-{round}-{i}"), &format!("p{i}")).await);
        }
        let peak = live_bytes();
        for socket in sockets {
            close(socket).await;
        }
        let live = settle(&server, baseline).await;
        after.push((peak - baseline, live - baseline));
    }
    let report: Vec<String> = after
        .iter()
        .map(|(peak, left)| format!("peak +{} KiB, left +{} KiB", peak / 1024, left / 1024))
        .collect();
    eprintln!("churn: {PEERS} peers × {ROUNDS} rounds: {report:?}");
    for (round, (peak, left)) in after.iter().enumerate() {
        assert!(
            *peak > 4 * BOUND_BYTES,
            "round {round}: the peers took only {peak} bytes; the bound would not catch a leak"
        );
        assert!(
            *left <= BOUND_BYTES,
            "round {round}: {left} bytes still allocated beyond the baseline ({report:?})"
        );
    }
    server.stop().await;
}

/// Heap for one joined peer alone in its room, server and client side together.
const BYTES_PER_PEER_AND_ROOM: i64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_and_its_peer_take_less_than_64_kib_of_heap_when_nobody_subscribes_to_the_room() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start(|_| {}).await;
    close(join(&server, "warm-up", "w").await).await;
    let baseline = settle(&server, i64::MAX / 2).await;
    let mut sockets = Vec::with_capacity(PEERS);
    for i in 0..PEERS {
        sockets.push(join(&server, &format!("room-{i}"), "p").await);
    }
    let per_peer = (live_bytes() - baseline) / PEERS as i64;
    for socket in sockets {
        close(socket).await;
    }
    assert!(
        per_peer < BYTES_PER_PEER_AND_ROOM,
        "{per_peer} bytes per peer and room"
    );
    server.stop().await;
}
