//! Interest management in a room: positions set by the server's code pause the consumers of
//! players out of range (`consumerPaused` to their owner) and resume those back in range.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sluice_client::SignalingClient;
use sluice_server::config::InterestMode;
use sluice_server::interest::Position;

async fn state(server: &TestServer) -> Value {
    let (_, body) = server
        .get("/api/rooms/r", Some(&server.admin_token()))
        .await;
    serde_json::from_str(&body).unwrap()
}

/// `subscriber`'s consumer of `producer_id`: (id, interestPaused, paused).
async fn consumer_of(
    server: &TestServer,
    subscriber: &str,
    producer_id: &str,
) -> (String, bool, bool) {
    let s = state(server).await;
    let consumers = s["peers"][subscriber]["consumers"].as_object().unwrap();
    let (id, c) = consumers
        .iter()
        .find(|(_, c)| c["producerId"] == producer_id)
        .unwrap_or_else(|| panic!("{subscriber} has no consumer of {producer_id}: {s}"));
    (
        id.clone(),
        c["interestPaused"].as_bool().unwrap(),
        c["paused"].as_bool().unwrap(),
    )
}

/// Waits until `subscriber`'s consumer of `producer_id` is interest-paused as asked.
async fn wait_interest(server: &TestServer, subscriber: &str, producer_id: &str, paused: bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while consumer_of(server, subscriber, producer_id).await.1 != paused {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("{subscriber}'s consumer of {producer_id} interest-paused {paused}")
    });
}

/// Waits until `subscriber`'s consumer of `producer_id` is resumed by the server after its
/// `newConsumer` was accepted (the answer and the resume race otherwise).
async fn wait_accepted(server: &TestServer, subscriber: &str, producer_id: &str) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while consumer_of(server, subscriber, producer_id).await.2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{subscriber}'s consumer of {producer_id} resumed"));
}

/// A peer with a receive and a send transport that produces opus and accepts what it is offered.
async fn player(server: &TestServer, name: &str, ssrc: u32) -> (SignalingClient, String) {
    let client = server.signaling("r", name).await;
    transport_raw(&client, false, json!({})).await;
    let send = transport_raw(&client, true, json!({})).await;
    join_raw(&client, name).await;
    let producer = produce_audio_raw(&client, send["id"].as_str().unwrap(), ssrc, json!({})).await;
    (client, producer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_out_of_range_are_paused_and_resumed_as_they_move() {
    let server = TestServer::start(|c| {
        c.interest.mode = InterestMode::Proximity;
        c.interest.audio_radius = 10.0;
        c.interest.hysteresis = 1.0;
        c.interest.rate_hz = 50;
    })
    .await;
    let (alice, a_producer) = player(&server, "alice", 1001).await;
    let (bob, b_producer) = player(&server, "bob", 1002).await;
    // Each accepts the other's consumer (pushed: auto_consume is on).
    next_named(&alice, "newConsumer").await;
    next_named(&bob, "newConsumer").await;
    wait_accepted(&server, "alice", &b_producer).await;
    wait_accepted(&server, "bob", &a_producer).await;
    // Without positions everybody hears everybody.
    assert!(!consumer_of(&server, "alice", &b_producer).await.1);
    assert!(!consumer_of(&server, "bob", &a_producer).await.1);

    let room = server.instance.room("r").await.unwrap();
    assert!(room.set_position("alice", Some(Position::new(0.0, 0.0, 0.0))));
    assert!(room.set_position("bob", Some(Position::new(50.0, 0.0, 0.0))));
    wait_interest(&server, "alice", &b_producer, true).await;
    wait_interest(&server, "bob", &a_producer, true).await;
    let (alice_consumer, _, owner_paused) = consumer_of(&server, "alice", &b_producer).await;
    assert!(!owner_paused, "alice did not pause it herself");
    assert_eq!(
        next_named(&alice, "consumerPaused").await,
        json!({"consumerId": alice_consumer})
    );

    // Bob walks up to Alice: both hear each other again.
    assert!(room.set_position("bob", Some(Position::new(9.0, 0.0, 0.0))));
    wait_interest(&server, "alice", &b_producer, false).await;
    wait_interest(&server, "bob", &a_producer, false).await;
    assert_eq!(
        next_named(&alice, "consumerResumed").await,
        json!({"consumerId": alice_consumer})
    );

    // A consumer Alice paused herself stays paused when Bob leaves and comes back in range.
    alice
        .request_raw("pauseConsumer", json!({"consumerId": alice_consumer}))
        .await
        .unwrap();
    room.set_position("bob", Some(Position::new(40.0, 0.0, 0.0)));
    wait_interest(&server, "alice", &b_producer, true).await;
    room.set_position("bob", Some(Position::new(1.0, 0.0, 0.0)));
    wait_interest(&server, "alice", &b_producer, false).await;
    assert!(
        consumer_of(&server, "alice", &b_producer).await.2,
        "still paused by Alice"
    );

    // A late joiner far away ends up with its consumers of the others paused.
    room.set_position("bob", Some(Position::new(0.0, 0.0, 0.0)));
    let (carol, _c_producer) = player(&server, "carol", 1003).await;
    room.set_position("carol", Some(Position::new(0.0, 100.0, 0.0)));
    for _ in 0..2 {
        next_named(&carol, "newConsumer").await;
    }
    wait_interest(&server, "carol", &a_producer, true).await;
    wait_interest(&server, "carol", &b_producer, true).await;
    assert!(!room.set_position("nobody", Some(Position::new(0.0, 0.0, 0.0))));
    assert!(!room.set_position("alice", Some(Position::new(f32::INFINITY, 0.0, 0.0))));
    drop(bob);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_interest_management_positions_are_refused_and_nothing_pauses() {
    let server = TestServer::start(|_| {}).await;
    let (alice, _) = player(&server, "alice", 2001).await;
    let (_bob, b_producer) = player(&server, "bob", 2002).await;
    next_named(&alice, "newConsumer").await;
    wait_accepted(&server, "alice", &b_producer).await;
    let room = server.instance.room("r").await.unwrap();
    assert!(!room.set_position("alice", Some(Position::new(0.0, 0.0, 0.0))));
    assert_eq!(room.evaluate_interest().await, 0);
    let (_, interest_paused, paused) = consumer_of(&server, "alice", &b_producer).await;
    assert!(!interest_paused && !paused);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_reported_on_the_position_channel_reach_the_server_and_no_peer() {
    let server = TestServer::start(|c| {
        c.interest.mode = InterestMode::Proximity;
        c.interest.rate_hz = 50;
    })
    .await;
    let alice = server.session("r", "alice").await;
    let bob = server.session("r", "bob").await;
    let (dp_id, stream) = alice
        .produce_data("sluice.position", false, Some(0))
        .await
        .unwrap();
    let room = server.instance.room("r").await.unwrap();
    let mut message = Vec::new();
    for v in [12.5f32, -3.0, 7.25, 1.0] {
        message.extend_from_slice(&v.to_le_bytes());
    }
    // Sent unreliably while the channel opens: resend until the server has it.
    tokio::time::timeout(Duration::from_secs(20), async {
        while room.position("alice") != Some(Position::new(12.5, -3.0, 7.25)) {
            let _ = alice.send_data(stream, sluice_media::DataMessage::binary(message.clone()));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("alice's position within 20 s");
    // The channel is the server's: no peer consumes it.
    let s = state(&server).await;
    let offered = s["peers"]["bob"]["dataConsumers"]
        .as_object()
        .unwrap()
        .values()
        .any(|c| c["dataProducerId"] == dp_id.as_str());
    assert!(!offered, "{s}");
    assert_eq!(
        room.position("alice"),
        Some(Position::new(12.5, -3.0, 7.25))
    );
    drop(bob);
    server.stop().await;
}

/// The layers `subscriber`'s consumer of `producer_id` prefers and receives now.
async fn layers_of(
    server: &TestServer,
    subscriber: &str,
    producer_id: &str,
) -> (Option<(u8, u8)>, Option<u8>) {
    let room = server.instance.room("r").await.unwrap();
    let consumer = room
        .objects()
        .consumers
        .values()
        .find(|c| c.peer_id == subscriber && c.object.producer_id() == producer_id)
        .map(|c| c.object.clone())
        .unwrap();
    let dump = consumer.dump().await.unwrap();
    (
        dump.preferred_layers
            .map(|l| (l.spatial_layer, l.temporal_layer)),
        dump.current_layers.map(|l| l.spatial_layer),
    )
}

async fn wait_layers(
    server: &TestServer,
    subscriber: &str,
    producer_id: &str,
    preferred: Option<(u8, u8)>,
    current: u8,
) {
    let mut seen = (None, None);
    let reached = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            seen = layers_of(server, subscriber, producer_id).await;
            if seen == (preferred, Some(current)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "{subscriber}'s layers of {producer_id}: want {preferred:?}/{current}, have {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seen_players_video_drops_to_a_lower_layer_with_distance_under_the_peers_own_preference()
{
    let server = TestServer::start(|c| {
        c.interest.mode = InterestMode::Proximity;
        c.interest.video_radius = 30.0;
        c.interest.audio_radius = 30.0;
        c.interest.hysteresis = 1.0;
        c.interest.rate_hz = 50;
    })
    .await;
    let alice = server.session("r", "alice").await;
    let mut bob = server.session("r", "bob").await;
    let producer = alice
        .produce(sluice_client::SourceConfig::simulcast_video())
        .await
        .unwrap();
    bob.wait_event(Duration::from_secs(20), |e| {
        matches!(e, sluice_client::SessionEvent::Consumer { .. })
    })
    .await
    .expect("bob consumes alice's video");
    let room = server.instance.room("r").await.unwrap();
    room.set_position("bob", Some(Position::new(0.0, 0.0, 0.0)));
    room.set_position("alice", Some(Position::new(5.0, 0.0, 0.0)));
    // Near (within a third of the radius): the top layer, as without interest management.
    wait_layers(&server, "bob", &producer, None, 2).await;
    // Two thirds away and beyond: layer 1, then 0.
    room.set_position("alice", Some(Position::new(15.0, 0.0, 0.0)));
    wait_layers(&server, "bob", &producer, Some((1, u8::MAX)), 1).await;
    room.set_position("alice", Some(Position::new(25.0, 0.0, 0.0)));
    wait_layers(&server, "bob", &producer, Some((0, u8::MAX)), 0).await;
    // Bob's own preference stays the upper bound when Alice comes near again.
    let consumer_id = consumer_of(&server, "bob", &producer).await.0;
    bob.request_raw(
        "setConsumerPreferredLayers",
        json!({"consumerId": consumer_id, "spatialLayer": 1, "temporalLayer": 2}),
    )
    .await
    .unwrap();
    wait_layers(&server, "bob", &producer, Some((0, 2)), 0).await;
    room.set_position("alice", Some(Position::new(1.0, 0.0, 0.0)));
    wait_layers(&server, "bob", &producer, Some((1, 2)), 1).await;
    drop(alice);
    server.stop().await;
}
