//! A room spread over two workers: peers placed by load, producers piped between the room's
//! routers (issue 15, "Across workers, in one process").
#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, wait_consumer, wait_notification};
use serde_json::Value;
use sluice_client::{Session, SessionEvent, SourceConfig};
use sluice_media::DataMessage;
use sluice_media::ortc::MediaKind;
use sluice_protocol::{ClientRequest, ProducerRef, ServerNotification};
use sluice_server::config::RoomPlacement;
use sluice_server::room::Room;

/// Two workers; each new peer goes to the least-loaded one.
fn spread(config: &mut sluice_server::Config) {
    config.workers = 2;
    config.placement.rooms = RoomPlacement::Spread;
    config.placement.spread_above_datagrams_per_second = 0;
}

/// The worker of `peer`'s transports.
fn worker_of(room: &Room, peer: &str) -> Option<usize> {
    room.objects()
        .transports
        .values()
        .find(|t| t.peer_id == peer)
        .map(|t| t.object.transport.worker_index())
}

/// The pipes the room needs: one per producer (or data producer) and other worker that has a
/// consumer of it.
fn needed_pipes(room: &Room) -> usize {
    let objects = room.objects();
    let worker = |peer: &str| {
        objects
            .transports
            .values()
            .find(|t| t.peer_id == peer)
            .map_or(room.worker_index, |t| t.object.transport.worker_index())
    };
    let mut pipes = HashSet::new();
    for c in objects.consumers.values() {
        let Some(p) = objects.producers.get(c.object.producer_id()) else {
            continue;
        };
        if p.object.worker_index() != worker(&c.peer_id) {
            pipes.insert((p.object.id().to_owned(), worker(&c.peer_id)));
        }
    }
    for c in objects.data_consumers.values() {
        let Some(p) = objects.data_producers.get(c.object.data_producer_id()) else {
            continue;
        };
        if p.object.worker_index() != c.object.worker_index() {
            pipes.insert((p.object.id().to_owned(), c.object.worker_index()));
        }
    }
    pipes.len()
}

/// Waits (up to 10 s) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for a data consumer of `label` and returns its messages.
async fn data_consumer(
    session: &mut Session,
    label: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<sluice_client::ReceivedData> {
    match session
        .wait_event(
            Duration::from_secs(10),
            |e| matches!(e, SessionEvent::DataConsumer { label: l, .. } if l == label),
        )
        .await
    {
        Some(SessionEvent::DataConsumer { messages, .. }) => messages,
        other => panic!("no data consumer of {label}: {other:?}"),
    }
}

/// Sends `text` until it arrives on `messages` (SCTP may still be opening).
async fn deliver(
    from: &Session,
    stream: u16,
    messages: &mut tokio::sync::mpsc::UnboundedReceiver<sluice_client::ReceivedData>,
    text: &str,
) {
    for _ in 0..200 {
        from.send_data(stream, DataMessage::text(text)).unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), messages.recv()).await
        {
            assert_eq!(m.data, text.as_bytes());
            return;
        }
    }
    panic!("{text:?} never arrived");
}

/// The admin API's summary of room `id`.
async fn summary(server: &TestServer, id: &str) -> Value {
    let (status, body) = server.get("/api/rooms", Some(&server.admin_token())).await;
    assert_eq!(status, 200, "{body}");
    let rooms: Value = serde_json::from_str(&body).unwrap();
    rooms
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Every worker's object counts are zero.
async fn workers_empty(server: &TestServer) -> bool {
    for w in server.instance.workers() {
        let d = w.dump().await.unwrap();
        if d.transports + d.producers + d.consumers + d.data_producers + d.data_consumers > 0 {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_on_two_workers_exchange_media_and_data_through_pipes_that_close_with_their_last_user()
 {
    let server = TestServer::start(spread).await;
    let mut alice = server.session("r", "alice").await;
    let mut bob = server.session("r", "bob").await;
    let room = server.instance.room("r").await.unwrap();
    let (a, b) = (
        worker_of(&room, "alice").unwrap(),
        worker_of(&room, "bob").unwrap(),
    );
    assert_eq!((a, b), (0, 1), "the second peer goes to the idle worker");

    // Media and data both ways.
    let video = alice.produce(SourceConfig::video()).await.unwrap();
    let audio = alice.produce(SourceConfig::audio()).await.unwrap();
    let (_, alice_chat) = alice.produce_data("chat", true, None).await.unwrap();
    bob.produce(SourceConfig::audio()).await.unwrap();
    let (_, bob_chat) = bob.produce_data("chat", true, None).await.unwrap();
    let mut bob_events = bob.take_events();
    let mut consumers = std::collections::HashMap::new();
    let mut bob_messages = None;
    while consumers.len() < 2 || bob_messages.is_none() {
        match tokio::time::timeout(Duration::from_secs(10), bob_events.recv()).await {
            Ok(Some(SessionEvent::Consumer {
                id,
                producer_id,
                kind,
                packets,
                ..
            })) => {
                consumers.insert(producer_id, (id, kind, packets));
            }
            Ok(Some(SessionEvent::DataConsumer { messages, .. })) => bob_messages = Some(messages),
            Ok(Some(_)) => {}
            other => panic!("bob did not get alice's producers: {other:?}"),
        }
    }
    let (_, alice_audio_packets) = {
        let (_, _, packets) = consumers.remove(&audio).unwrap();
        ((), packets)
    };
    let (video_consumer, kind, mut video_packets) = consumers.remove(&video).unwrap();
    assert_eq!(kind, MediaKind::Video);
    let first = tokio::time::timeout(Duration::from_secs(10), video_packets.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        sluice_client::media::vp8_is_keyframe(&first.payload),
        "the first piped video packet starts a keyframe"
    );
    let mut alice_audio_packets = alice_audio_packets;
    tokio::time::timeout(Duration::from_secs(10), alice_audio_packets.recv())
        .await
        .unwrap()
        .unwrap();
    let (_, _, mut bob_audio) = wait_consumer(&mut alice, MediaKind::Audio).await;
    tokio::time::timeout(Duration::from_secs(10), bob_audio.recv())
        .await
        .unwrap()
        .unwrap();
    let mut alice_messages = data_consumer(&mut alice, "chat").await;
    deliver(&alice, alice_chat, bob_messages.as_mut().unwrap(), "gg").await;
    deliver(&bob, bob_chat, &mut alice_messages, "wp").await;

    // One pipe per producer and other worker: alice's three to worker 1, bob's two to worker 0.
    assert_eq!(needed_pipes(&room), 5);
    until("five pipes", || room.routers.pipe_count() == 5).await;
    let s = summary(&server, "r").await;
    assert_eq!(s["workers"], serde_json::json!([0, 1]), "{s}");
    assert_eq!(s["pipes"], 5, "{s}");

    // Pause and resume cross the pipe with the usual notifications.
    alice
        .request(ClientRequest::PauseProducer(ProducerRef {
            producer_id: video.clone(),
        }))
        .await
        .unwrap();
    let mut bob_session_events = BobEvents(bob_events);
    bob_session_events
        .notification(|n| matches!(n, ServerNotification::ConsumerPaused(c) if c.consumer_id == video_consumer))
        .await;
    alice
        .request(ClientRequest::ResumeProducer(ProducerRef {
            producer_id: video.clone(),
        }))
        .await
        .unwrap();
    bob_session_events
        .notification(|n| matches!(n, ServerNotification::ConsumerResumed(c) if c.consumer_id == video_consumer))
        .await;

    // Closing the producer closes its consumer on the other worker, and its pipe.
    alice
        .request(ClientRequest::CloseProducer(ProducerRef {
            producer_id: video.clone(),
        }))
        .await
        .unwrap();
    bob_session_events
        .notification(|n| matches!(n, ServerNotification::ConsumerClosed(c) if c.consumer_id == video_consumer))
        .await;
    until("four pipes", || room.routers.pipe_count() == 4).await;
    assert_eq!(needed_pipes(&room), 4);

    // Bob leaves: alice hears it; his pipes and hers to worker 1 (no consumer left there) go.
    bob.close();
    drop(bob);
    assert!(
        wait_notification(&mut alice, Duration::from_secs(10), |n| matches!(
            n,
            ServerNotification::PeerClosed(p) if p.peer_id == "bob"
        ))
        .await
        .is_some()
    );
    until("no pipe", || room.routers.pipe_count() == 0).await;
    alice.close();
    drop(alice);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.instance.room("r").await.is_some() || !workers_empty(&server).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "objects left on the workers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// Bob's session events after `take_events`.
struct BobEvents(tokio::sync::mpsc::UnboundedReceiver<SessionEvent>);

impl BobEvents {
    async fn notification(&mut self, f: impl Fn(&ServerNotification) -> bool) {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.0.recv()).await {
                Ok(Some(SessionEvent::Notification(n))) if f(&n) => return,
                Ok(Some(_)) => {}
                other => panic!("notification never came: {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_placement_keeps_a_room_on_one_worker_without_pipes() {
    let server = TestServer::start(|c| {
        spread(c);
        c.placement.rooms = RoomPlacement::Single;
    })
    .await;
    let alice = server.session("r", "alice").await;
    alice.produce(SourceConfig::audio()).await.unwrap();
    let mut bob = server.session("r", "bob").await;
    let (_, _, mut packets) = wait_consumer(&mut bob, MediaKind::Audio).await;
    tokio::time::timeout(Duration::from_secs(10), packets.recv())
        .await
        .unwrap()
        .unwrap();
    let room: Arc<Room> = server.instance.room("r").await.unwrap();
    assert_eq!(worker_of(&room, "alice"), worker_of(&room, "bob"));
    assert_eq!(room.routers.workers().len(), 1);
    assert_eq!(room.routers.pipe_count(), 0);
    server.stop().await;
}

/// `subscriber`'s consumer of `producer_id`: (preferred spatial layer, current spatial layer).
async fn layers_of(room: &Room, subscriber: &str, producer_id: &str) -> (Option<u8>, Option<u8>) {
    let consumer = room
        .objects()
        .consumers
        .values()
        .find(|c| c.peer_id == subscriber && c.object.producer_id() == producer_id)
        .map(|c| c.object.clone())
        .unwrap();
    let dump = consumer.dump().await.unwrap();
    (
        dump.preferred_layers.map(|l| l.spatial_layer),
        dump.current_layers.map(|l| l.spatial_layer),
    )
}

/// Waits for a whole frame (RTP timestamp) of exactly `want` packets; panics if none of the
/// next 500 frames is one.
async fn whole_frame_of(
    packets: &mut tokio::sync::mpsc::UnboundedReceiver<sluice_client::ReceivedRtp>,
    want: usize,
) {
    let mut sizes: Vec<(u32, usize)> = Vec::new();
    loop {
        let p = tokio::time::timeout(Duration::from_secs(10), packets.recv())
            .await
            .unwrap()
            .unwrap();
        match sizes.last_mut() {
            Some((ts, count)) if *ts == p.timestamp => *count += 1,
            _ => sizes.push((p.timestamp, 1)),
        }
        // The first frame may be cut; a frame is whole once the next one starts.
        if sizes.len() >= 3 && sizes[sizes.len() - 2].1 == want {
            return;
        }
        assert!(sizes.len() < 500, "no frame of {want} packets: {sizes:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_simulcast_producer_keeps_its_layers_and_keyframe_requests_cross_back() {
    let server = TestServer::start(spread).await;
    let alice = server.session("r", "alice").await;
    let mut bob = server.session("r", "bob").await;
    let room = server.instance.room("r").await.unwrap();
    assert_ne!(worker_of(&room, "alice"), worker_of(&room, "bob"));
    // Keyframes only when asked for: a layer switch on bob's worker completes only if its
    // request crosses the pipe back to alice.
    let SourceConfig::Video {
        fps,
        packets_per_frame,
        payload_size,
        temporal_layers,
        rids,
        ..
    } = SourceConfig::simulcast_video()
    else {
        unreachable!("simulcast_video is video")
    };
    let source = SourceConfig::Video {
        fps,
        packets_per_frame,
        payload_size,
        keyframe_interval: u32::MAX,
        temporal_layers,
        rids,
    };
    let video = alice.produce(source).await.unwrap();
    let (consumer_id, _, mut packets) = wait_consumer(&mut bob, MediaKind::Video).await;
    let until_layer = |preferred: Option<u8>, current: u8| {
        let (room, video) = (room.clone(), video.clone());
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let seen = layers_of(&room, "bob", &video).await;
                if seen == (preferred, Some(current)) {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "bob's layers: want {preferred:?}/{current}, have {seen:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // The top layer (four packets a frame) reaches bob through the pipe…
    until_layer(None, 2).await;
    // (The bandwidth estimate may move the layer afterwards: not what this test is about.)
    whole_frame_of(&mut packets, 4).await;
    // …and bob's preference picks the lowest (one packet a frame) on his own worker.
    bob.request_raw(
        "setConsumerPreferredLayers",
        serde_json::json!({"consumerId": consumer_id, "spatialLayer": 0, "temporalLayer": 2}),
    )
    .await
    .unwrap();
    until_layer(Some(0), 0).await;
    whole_frame_of(&mut packets, 1).await;
    assert_eq!(room.routers.pipe_count(), 1);
    server.stop().await;
}
