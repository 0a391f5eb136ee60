//! The signaling server end to end: real server on loopback, driven by sluice-client.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use sluice_client::media::{audio_stamp, vp8_stamp};
use sluice_client::{
    SessionEvent, SessionOptions, SignalingClient, SignalingError, SourceConfig, ws_url,
};
use sluice_media::ortc::MediaKind;
use sluice_protocol::{ClientRequest, ConsumerRef, ProducerRef, ServerNotification};
use sluice_server::auth::Grants;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_join_produce_and_consume_each_other_and_a_late_joiner_gets_existing_producers()
{
    let server = TestServer::start(|_| {}).await;
    let mut alice = server.session("arena", "alice").await;
    assert!(alice.peers.is_empty());
    let video = alice.produce(SourceConfig::video()).await.unwrap();
    let _audio = alice.produce(SourceConfig::audio()).await.unwrap();

    // Bob joins later: he sees Alice and is offered both of her producers.
    let mut bob = server.session("arena", "bob").await;
    assert_eq!(bob.peers.len(), 1);
    assert_eq!(bob.peers[0].id, "alice");
    let new_peer = wait_notification(
        &mut alice,
        Duration::from_secs(5),
        |n| matches!(n, ServerNotification::NewPeer(p) if p.id == "bob"),
    )
    .await;
    assert!(new_peer.is_some(), "alice is told bob arrived");
    let (_vid, vpeer, mut vrx) = wait_consumer(&mut bob, MediaKind::Video).await;
    let (_aid, apeer, mut arx) = wait_consumer(&mut bob, MediaKind::Audio).await;
    assert_eq!((vpeer.as_str(), apeer.as_str()), ("alice", "alice"));

    // Bob produces too: Alice gets it.
    bob.produce(SourceConfig::video()).await.unwrap();
    let (_id, from, mut back) = wait_consumer(&mut alice, MediaKind::Video).await;
    assert_eq!(from, "bob");

    // Media flows both ways, intact (the first packets of each, waited for).
    receive_intact(&mut vrx, MediaKind::Video, 50).await;
    receive_intact(&mut arx, MediaKind::Audio, 30).await;
    receive_intact(&mut back, MediaKind::Video, 50).await;

    // The store knows all of it.
    let state = server.instance.room("arena").await.unwrap().store.state();
    assert_eq!(state.counts(), [2, 4, 3, 3, 0, 0]);
    let _ = video;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_before_the_upgrade() {
    let server = TestServer::start(|_| {}).await;
    let ok = server.token("room", "p", Grants::player());
    let refused = |url: String| async move {
        match SignalingClient::connect(&url).await {
            Err(SignalingError::Refused { status, .. }) => status,
            Ok(_) => 101,
            Err(e) => panic!("{e}"),
        }
    };
    let base = server.base.clone();
    // Missing.
    assert_eq!(
        refused(format!(
            "{}/ws?roomId=room&peerId=p",
            base.replace("http", "ws")
        ))
        .await,
        401
    );
    // Malformed.
    assert_eq!(refused(ws_url(&base, "room", "p", "not.a.jwt")).await, 401);
    // Signed with another key.
    let other =
        sluice_server::auth::TokenAuthority::new("another-secret-that-is-at-least-32-bytes-long")
            .mint(
                "room",
                "p",
                Grants::player(),
                600,
                sluice_server::auth::unix_now(),
            )
            .unwrap();
    assert_eq!(refused(ws_url(&base, "room", "p", &other)).await, 401);
    // Expired (beyond the 5 s leeway).
    let expired = server
        .instance
        .auth
        .mint(
            "room",
            "p",
            Grants::player(),
            1,
            sluice_server::auth::unix_now() - 100,
        )
        .unwrap();
    assert_eq!(refused(ws_url(&base, "room", "p", &expired)).await, 401);
    // alg: none.
    use base64::Engine;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg":"none","typ":"JWT"})),
        b64(json!({"sub":"p","room":"room","exp": sluice_server::auth::unix_now() + 600}))
    );
    assert_eq!(refused(ws_url(&base, "room", "p", &none)).await, 401);
    // Another room or peer.
    assert_eq!(refused(ws_url(&base, "other", "p", &ok)).await, 403);
    assert_eq!(refused(ws_url(&base, "room", "q", &ok)).await, 403);
    // The protoo subprotocol is required.
    let no_protoo = SignalingClient::connect_with(&ws_url(&base, "room", "p", &ok), &[]).await;
    assert!(matches!(
        no_protoo,
        Err(SignalingError::Refused { status: 400, .. })
    ));
    // The token as a bearer header works.
    let url = format!("{}/ws?roomId=room&peerId=p", base.replace("http", "ws"));
    let bearer = format!("Bearer {ok}");
    let c = SignalingClient::connect_with(
        &url,
        &[
            ("Sec-WebSocket-Protocol", "protoo"),
            ("Authorization", &bearer),
        ],
    )
    .await
    .unwrap();
    assert!(
        c.request(ClientRequest::GetRouterRtpCapabilities(Default::default()))
            .await
            .is_ok()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acting_on_another_peers_object_is_forbidden_and_unknown_ids_are_not_found() {
    let server = TestServer::start(|_| {}).await;
    let alice = server.session("r", "alice").await;
    let producer = alice.produce(SourceConfig::video()).await.unwrap();
    let mut bob = server.session("r", "bob").await;
    let (consumer, _, _rx) = wait_consumer(&mut bob, MediaKind::Video).await;
    let code = |r: Result<serde_json::Value, SignalingError>| r.unwrap_err().code();
    // Bob may not pause or close Alice's producer, nor use her transport.
    assert_eq!(
        code(
            bob.request(ClientRequest::PauseProducer(ProducerRef {
                producer_id: producer.clone()
            }))
            .await
        ),
        Some(403)
    );
    assert_eq!(
        code(
            bob.request(ClientRequest::CloseProducer(ProducerRef {
                producer_id: producer.clone()
            }))
            .await
        ),
        Some(403)
    );
    assert_eq!(
        code(
            bob.request_raw(
                "getTransportStats",
                json!({"transportId": alice.send_transport_id})
            )
            .await
        ),
        Some(403)
    );
    // Alice may not pause Bob's consumer.
    assert_eq!(
        code(
            alice
                .request(ClientRequest::PauseConsumer(ConsumerRef {
                    consumer_id: consumer.clone()
                }))
                .await
        ),
        Some(403)
    );
    // Unknown ids.
    assert_eq!(
        code(
            alice
                .request(ClientRequest::PauseProducer(ProducerRef {
                    producer_id: "nope".into()
                }))
                .await
        ),
        Some(404)
    );
    assert_eq!(
        code(
            bob.request(ClientRequest::ResumeConsumer(ConsumerRef {
                consumer_id: "nope".into()
            }))
            .await
        ),
        Some(404)
    );
    // Their own objects work.
    assert!(
        bob.request(ClientRequest::PauseConsumer(ConsumerRef {
            consumer_id: consumer
        }))
        .await
        .is_ok()
    );
    assert!(
        alice
            .request(ClientRequest::PauseProducer(ProducerRef {
                producer_id: producer
            }))
            .await
            .is_ok()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_and_unknown_methods_get_errors_and_the_connection_stays_usable() {
    let server = TestServer::start(|_| {}).await;
    let client = server.signaling("r", "p").await;
    client.send_raw("{not json".into()).unwrap();
    client.send_raw("[1,2,3]".into()).unwrap();
    client
        .send_raw(r#"{"request":true,"id":77,"method":42}"#.into())
        .unwrap();
    assert_eq!(
        client
            .request_raw("noSuchMethod", json!({}))
            .await
            .unwrap_err()
            .code(),
        Some(501)
    );
    assert_eq!(
        client
            .request_raw("produce", json!({"kind": 5}))
            .await
            .unwrap_err()
            .code(),
        Some(400)
    );
    assert_eq!(
        client
            .request_raw("join", json!("a string"))
            .await
            .unwrap_err()
            .code(),
        Some(400)
    );
    // Not joined yet.
    assert_eq!(
        client
            .request_raw(
                "produce",
                json!({"transportId":"x","kind":"audio","rtpParameters":{"codecs":[]}})
            )
            .await
            .unwrap_err()
            .code(),
        Some(409)
    );
    // Still usable.
    let caps = client
        .request(ClientRequest::GetRouterRtpCapabilities(Default::default()))
        .await
        .unwrap();
    assert!(caps["codecs"].as_array().is_some_and(|c| !c.is_empty()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_closes_the_socket_with_1009() {
    let server = TestServer::start(|c| c.limits.max_message_bytes = 10_000).await;
    let client = server.signaling("r", "p").await;
    let big = format!(
        r#"{{"request":true,"id":1,"method":"changeDisplayName","data":{{"displayName":"{}"}}}}"#,
        "x".repeat(20_000)
    );
    client.send_raw(big).unwrap();
    let closed = client
        .wait_for(Duration::from_secs(5), |i| {
            matches!(i, sluice_client::Incoming::Closed { .. })
        })
        .await;
    assert!(
        matches!(
            closed,
            Some(sluice_client::Incoming::Closed {
                code: Some(1009),
                ..
            })
        ),
        "{closed:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_peer_is_removed_the_others_told_and_every_count_returns_to_zero() {
    let server = TestServer::start(|_| {}).await;
    let mut alice = server.session("r", "alice").await;
    alice.produce(SourceConfig::video()).await.unwrap();
    alice.produce_data("chat", true, None).await.unwrap();
    let mut bob = server.session("r", "bob").await;
    bob.produce(SourceConfig::audio()).await.unwrap();
    let _ = wait_consumer(&mut alice, MediaKind::Audio).await;
    let _ = wait_consumer(&mut bob, MediaKind::Video).await;
    let worker = server.instance.workers()[0].clone();
    assert!(worker.dump().await.unwrap().consumers >= 2);

    // Bob's socket drops: Alice gets peerClosed, then consumerClosed for what she got from him.
    bob.close();
    let mut order = Vec::new();
    while order.len() < 2 {
        match alice.next_event(Duration::from_secs(5)).await {
            Some(SessionEvent::Notification(ServerNotification::PeerClosed(p))) => {
                order.push(format!("peerClosed {}", p.peer_id))
            }
            Some(SessionEvent::Notification(ServerNotification::ConsumerClosed(_))) => {
                order.push("consumerClosed".into())
            }
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(order, ["peerClosed bob", "consumerClosed"]);
    let state = server.instance.room("r").await.unwrap().store.state();
    assert!(!state.peers.contains_key("bob"));
    assert!(state.peers.contains_key("alice"));

    // Alice leaves too: the room, its router and every worker object are gone.
    alice.close();
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if server.instance.room("r").await.is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "the empty room closed");
    let dump = worker.dump().await.unwrap();
    assert_eq!(
        (
            dump.router_ids.len(),
            dump.transports,
            dump.producers,
            dump.consumers,
            dump.data_producers,
            dump.data_consumers
        ),
        (0, 0, 0, 0, 0, 0)
    );
    assert_eq!(
        (dump.ufrag_entries, dump.address_entries, dump.timers),
        (0, 0, 0)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_the_same_peer_id_replaces_the_first() {
    let server = TestServer::start(|_| {}).await;
    let mut watcher = server.session("r", "watcher").await;
    let mut first = server.session("r", "dup").await;
    let _ = wait_notification(&mut watcher, Duration::from_secs(5), |n| {
        matches!(n, ServerNotification::NewPeer(_))
    })
    .await;
    let _second = server.session("r", "dup").await;
    let closed = first
        .wait_event(Duration::from_secs(5), |e| {
            matches!(e, SessionEvent::Closed { .. })
        })
        .await;
    assert!(
        matches!(
            closed,
            Some(SessionEvent::Closed {
                code: Some(4000),
                ..
            })
        ),
        "{closed:?}"
    );
    // The watcher saw the old one leave, then the new one join.
    let left = wait_notification(
        &mut watcher,
        Duration::from_secs(5),
        |n| matches!(n, ServerNotification::PeerClosed(p) if p.peer_id == "dup"),
    )
    .await;
    assert!(left.is_some());
    let back = wait_notification(
        &mut watcher,
        Duration::from_secs(5),
        |n| matches!(n, ServerNotification::NewPeer(p) if p.id == "dup"),
    )
    .await;
    assert!(back.is_some());
    assert_eq!(server.instance.room("r").await.unwrap().peer_count(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_decide_what_a_peer_may_do() {
    let server = TestServer::start(|_| {}).await;
    let mut producer = server.session("r", "p").await;
    producer.produce(SourceConfig::audio()).await.unwrap();
    let viewer_grants = Grants {
        subscribe: true,
        ..Grants::default()
    };
    let mut viewer = server
        .session_with("r", "viewer", viewer_grants, SessionOptions::new("viewer"))
        .await;
    let _ = wait_consumer(&mut viewer, MediaKind::Audio).await;
    let err = viewer.produce(SourceConfig::audio()).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let err = viewer.produce_data("chat", true, None).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    // A publisher without subscribe is offered nothing.
    let publish_only = Grants {
        publish: true,
        ..Grants::default()
    };
    let mut blind = server
        .session_with("r", "blind", publish_only, SessionOptions::new("blind"))
        .await;
    assert!(
        blind
            .wait_event(Duration::from_millis(800), |e| matches!(
                e,
                SessionEvent::Consumer { .. }
            ))
            .await
            .is_none()
    );
    let _ = &mut producer;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_close_reach_the_consumers_owner() {
    let server = TestServer::start(|_| {}).await;
    let alice = server.session("r", "alice").await;
    let video = alice.produce(SourceConfig::video()).await.unwrap();
    let mut bob = server.session("r", "bob").await;
    let (consumer, _, _rx) = wait_consumer(&mut bob, MediaKind::Video).await;
    let r = ProducerRef {
        producer_id: video.clone(),
    };
    alice
        .request(ClientRequest::PauseProducer(r.clone()))
        .await
        .unwrap();
    assert!(
        wait_notification(
            &mut bob,
            Duration::from_secs(3),
            |n| matches!(n, ServerNotification::ConsumerPaused(c) if c.consumer_id == consumer)
        )
        .await
        .is_some()
    );
    alice
        .request(ClientRequest::ResumeProducer(r.clone()))
        .await
        .unwrap();
    assert!(
        wait_notification(
            &mut bob,
            Duration::from_secs(3),
            |n| matches!(n, ServerNotification::ConsumerResumed(c) if c.consumer_id == consumer)
        )
        .await
        .is_some()
    );
    alice
        .request(ClientRequest::CloseProducer(r))
        .await
        .unwrap();
    assert!(
        wait_notification(
            &mut bob,
            Duration::from_secs(3),
            |n| matches!(n, ServerNotification::ConsumerClosed(c) if c.consumer_id == consumer)
        )
        .await
        .is_some()
    );
    let state = server.instance.room("r").await.unwrap().store.state();
    assert_eq!(state.counts()[2..4], [0, 0]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_channels_relay_between_peers_through_signaling() {
    let server = TestServer::start(|_| {}).await;
    let alice = server.session("r", "alice").await;
    let (_dp, stream) = alice.produce_data("chat", true, None).await.unwrap();
    let mut bob = server.session("r", "bob").await;
    let Some(SessionEvent::DataConsumer {
        label,
        peer_id,
        mut messages,
        ..
    }) = bob
        .wait_event(Duration::from_secs(5), |e| {
            matches!(e, SessionEvent::DataConsumer { .. })
        })
        .await
    else {
        panic!("no data consumer");
    };
    assert_eq!(
        (label.as_str(), peer_id.as_deref()),
        ("chat", Some("alice"))
    );
    let mut got = None;
    for _ in 0..100 {
        alice
            .send_data(stream, sluice_media::DataMessage::text("gg"))
            .unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), messages.recv()).await
        {
            got = Some(m);
            break;
        }
    }
    assert_eq!(got.unwrap().data, b"gg");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_the_admin_grant_shows_rooms_and_kicks() {
    let server = TestServer::start(|_| {}).await;
    let _alice = server.session("lobby", "alice").await;
    let mut bob = server.session("lobby", "bob").await;
    let player = server.token("lobby", "alice", Grants::player());
    assert_eq!(server.get("/api/rooms", None).await.0, 401);
    assert_eq!(server.get("/api/rooms", Some(&player)).await.0, 403);
    let admin = server.admin_token();
    let (status, body) = server.get("/api/rooms", Some(&admin)).await;
    assert_eq!(status, 200);
    let rooms: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rooms[0]["id"], "lobby");
    assert_eq!(rooms[0]["peers"], 2);
    let (status, body) = server.get("/api/rooms/lobby", Some(&admin)).await;
    assert_eq!(status, 200);
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(state["peers"]["bob"]["joined"].as_bool().unwrap());
    assert_eq!(server.get("/api/rooms/nowhere", Some(&admin)).await.0, 404);
    // A room-scoped admin token sees its room only.
    let scoped = server.token(
        "other",
        "admin",
        Grants {
            admin: true,
            ..Grants::default()
        },
    );
    assert_eq!(server.get("/api/rooms/lobby", Some(&scoped)).await.0, 403);
    // Kick.
    let (status, _) = http(
        "DELETE",
        &server.base,
        "/api/rooms/lobby/peers/bob",
        Some(&admin),
    )
    .await;
    assert_eq!(status, 204);
    let closed = bob
        .wait_event(Duration::from_secs(3), |e| {
            matches!(e, SessionEvent::Closed { .. })
        })
        .await;
    assert!(
        matches!(
            closed,
            Some(SessionEvent::Closed {
                code: Some(4003),
                ..
            })
        ),
        "{closed:?}"
    );
    let (_, body) = server.get("/api/rooms/lobby", Some(&admin)).await;
    assert!(!body.contains("\"bob\""));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_answer() {
    let server = TestServer::start(|_| {}).await;
    let _p = server.session("m", "p").await;
    assert_eq!(server.get("/health", None).await.0, 200);
    assert_eq!(server.get("/ready", None).await.0, 200);
    let (status, body) = server.get("/metrics", None).await;
    assert_eq!(status, 200);
    assert!(body.lines().any(|l| l == "sluice_peers 1"), "{body}");
    assert!(body.contains("sluice_ws_connections_total 1"), "{body}");
    assert!(
        body.contains("sluice_requests_total{method=\"join\",result=\"ok\"} 1"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loudest_peer_is_announced_as_active_speaker() {
    let server = TestServer::start(|_| {}).await;
    let alice = server.session("r", "alice").await;
    let mut bob = server.session("r", "bob").await;
    alice.produce(SourceConfig::audio()).await.unwrap();
    let speaker = wait_notification(&mut bob, Duration::from_secs(5), |n| {
        matches!(n, ServerNotification::ActiveSpeaker(s) if s.peer_id.as_deref() == Some("alice"))
    })
    .await;
    match speaker {
        Some(ServerNotification::ActiveSpeaker(s)) => assert_eq!(s.volume, Some(-30)),
        other => panic!("{other:?}"),
    }
    let state = server.instance.room("r").await.unwrap().store.state();
    assert_eq!(state.active_speaker.as_deref(), Some("alice"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_has_sctp_once_it_has_a_transport_even_without_sctp_capabilities() {
    let server = TestServer::start(|_| {}).await;
    let client = server.signaling("r", "p").await;
    // Join first, so the peer exists before it has any transport.
    client
        .request_raw("getRouterRtpCapabilities", json!({}))
        .await
        .unwrap();
    let peer = server.instance.room("r").await.unwrap().peer("p").unwrap();
    assert!(!peer.has_sctp(), "no transport, no SCTP");
    // mediasoup-client 3.24 sends no sctpCapabilities: the transport offers SCTP all the same.
    let plain = client
        .request_raw("createWebRtcTransport", json!({"consuming": true}))
        .await
        .unwrap();
    assert!(plain.get("sctpParameters").is_some(), "{plain}");
    assert!(peer.has_sctp());
    server.stop().await;
}

/// Waits for `n` packets of `kind`, each carrying its stamp intact.
async fn receive_intact(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<sluice_client::ReceivedRtp>,
    kind: MediaKind,
    n: usize,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for i in 0..n {
        let p = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(p)) => p,
            other => panic!("{kind:?}: {i} of {n} packets ({})", other.is_ok()),
        };
        let ok = match kind {
            MediaKind::Video => vp8_stamp(&p.payload).is_some(),
            MediaKind::Audio => audio_stamp(&p.payload).is_some(),
        };
        assert!(ok, "payload intact");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_transport_that_may_consume_estimates_its_outgoing_bandwidth() {
    let server = TestServer::start(|_| {}).await;
    let client = server.signaling("r", "p").await;
    client
        .request_raw("getRouterRtpCapabilities", json!({}))
        .await
        .unwrap();
    // The default configuration estimates ("twcc") on a router with video codecs.
    for (flags, estimates) in [
        (json!({"producing": true, "consuming": false}), false),
        (json!({"producing": false, "consuming": true}), true),
        (json!({"producing": true, "consuming": true}), true),
        (json!({}), true),
    ] {
        let created = client
            .request_raw("createWebRtcTransport", flags.clone())
            .await
            .unwrap();
        let stats = client
            .request_raw(
                "getTransportStats",
                json!({"transportId": created["id"].clone()}),
            )
            .await
            .unwrap();
        let stat = &stats[0];
        assert_eq!(stat["type"], "webrtc-transport", "{stats}");
        assert_eq!(
            stat.get("availableOutgoingBitrate").is_some(),
            estimates,
            "{flags}: {stats}"
        );
    }
    server.stop().await;
}

/// The status and `error` of a refused WebSocket upgrade.
async fn upgrade_refusal(url: &str) -> (u16, String) {
    match SignalingClient::connect(url).await {
        Err(SignalingError::Refused { status, body }) => {
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            (status, body["error"].as_str().unwrap().to_owned())
        }
        Ok(_) => panic!("{url}: upgraded"),
        Err(e) => panic!("{url}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refusals_say_which_part_is_wrong_without_the_parsers_internals() {
    let server = TestServer::start(|_| {}).await;
    let base = server.base.clone();
    use base64::Engine;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let exp = sluice_server::auth::unix_now() + 600;
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": "p", "room": "room", "exp": exp}))
    );
    let other =
        sluice_server::auth::TokenAuthority::new("another-secret-that-is-at-least-32-bytes")
            .mint(
                "room",
                "p",
                Grants::player(),
                600,
                sluice_server::auth::unix_now(),
            )
            .unwrap();
    // A token of the right key whose claims are not the documented ones.
    let ok = server.token("room", "p", Grants::player());
    let mut parts: Vec<String> = ok.split('.').map(str::to_owned).collect();
    parts[1] = b64(json!({"sub": "p", "room": 7, "exp": exp}));
    let unsigned_claims = parts.join(".");
    for (token, reason) in [
        (none.as_str(), "invalid token: bad header"),
        ("not.a.jwt", "invalid token: bad header"),
        ("nodots", "invalid token: malformed"),
        (other.as_str(), "invalid token: signature"),
        // The claims are read after the signature: a changed payload fails the signature.
        (unsigned_claims.as_str(), "invalid token: signature"),
    ] {
        let url = ws_url(&base, "room", "p", token);
        assert_eq!(
            upgrade_refusal(&url).await,
            (401, reason.to_owned()),
            "{token}"
        );
    }
    let bad_claims = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "p", "room": 7, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(sluice_server::auth::DEV_SECRET.as_bytes()),
    )
    .unwrap();
    let url = ws_url(&base, "room", "p", &bad_claims);
    assert_eq!(
        upgrade_refusal(&url).await,
        (401, "invalid token: claims".to_owned())
    );
    // The admin API says the same.
    let (status, body) = server.get("/api/rooms", Some(&none)).await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid token: bad header"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_id_with_the_admin_wildcard_is_refused_and_an_admin_only_token_for_it_sees_every_room()
 {
    let server = TestServer::start(|_| {}).await;
    let _alice = server.session("lobby", "alice").await;
    let reserved = "roomId must not contain '*' (reserved for the admin wildcard)";
    // A peer token for room "*" (or any room id with a '*') is not accepted on the WebSocket.
    for room in ["*", "a*b"] {
        let url = ws_url(
            &server.base,
            room,
            "p",
            &server.token(room, "p", Grants::player()),
        );
        assert_eq!(upgrade_refusal(&url).await, (400, reserved.to_owned()));
    }
    // Nor minted by /dev/token, with the default grants or any besides admin alone.
    let wildcard = "roomId '*' is the admin wildcard: only a token with the admin grant alone \
                    (grants=admin) is minted for it";
    for query in [
        "roomId=*&peerId=p",
        "roomId=*&peerId=p&grants=publish,subscribe,data",
        "roomId=*&peerId=p&grants=admin,publish",
    ] {
        let (status, body) = server.get(&format!("/dev/token?{query}"), None).await;
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(wildcard)),
            "{query}"
        );
    }
    let (status, body) = server.get("/dev/token?roomId=a*b&peerId=p", None).await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, body["error"].as_str()), (400, Some(reserved)));
    // Nor is a broadcaster created in it.
    let (status, body) = http_body(
        "POST",
        &server.base,
        "/rooms/*/broadcasters",
        Some(&server.token("*", "bcast", Grants::player())),
        &json!({"id": "bcast", "displayName": "B", "device": {"name": "FFmpeg"}}).to_string(),
    )
    .await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, body["error"].as_str()), (400, Some(reserved)));
    // The admin wildcard still works: an admin-only token for "*" sees every room.
    let (status, body) = server
        .get("/dev/token?roomId=*&peerId=ops&grants=admin", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let admin = body["token"].as_str().unwrap();
    let (status, rooms) = server.get("/api/rooms", Some(admin)).await;
    assert_eq!(status, 200, "{rooms}");
    let rooms: serde_json::Value = serde_json::from_str(&rooms).unwrap();
    assert_eq!(rooms[0]["id"], "lobby");
    // And it is no way into a room's signaling.
    let url = ws_url(&server.base, "*", "ops", admin);
    assert_eq!(upgrade_refusal(&url).await, (400, reserved.to_owned()));
    server.stop().await;
}

/// The code and reason of a failed request.
fn failure(r: Result<serde_json::Value, SignalingError>) -> (u16, String) {
    match r {
        Err(SignalingError::Request { code, reason }) => (code, reason),
        other => panic!("not an error answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_reasons_quote_only_a_short_prefix_of_what_the_client_sent() {
    let server = TestServer::start(|_| {}).await;
    let client = server.signaling("r", "p").await;
    let send = transport_raw(&client, true, json!({})).await;
    join_raw(&client, "p").await;
    let prefix = |c: char| c.to_string().repeat(64);
    // A 150 KB method name.
    let method = "x".repeat(150_000);
    let r = client.request_raw(&method, json!({})).await;
    assert_eq!(
        failure(r),
        (501, format!("unknown method \"{}…\"", prefix('x')))
    );
    // A 150 KB transport id.
    let id = "t".repeat(150_000);
    let r = client
        .request_raw("getTransportStats", json!({"transportId": id}))
        .await;
    assert_eq!(failure(r), (404, format!("no transport {}…", prefix('t'))));
    // A 100 KB mid.
    let r = client
        .request_raw(
            "produce",
            json!({
                "transportId": send["id"], "kind": "audio",
                "rtpParameters": {
                    "mid": "m".repeat(100_000),
                    "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}],
                    "encodings": [{"ssrc": 1111}]
                }
            }),
        )
        .await;
    let (code, reason) = failure(r);
    assert_eq!(code, 400, "{reason}");
    assert_eq!(
        reason,
        format!(
            "invalid RTP parameters: mid \"{}…\": up to 16 letters and digits",
            prefix('m')
        )
    );
    // A 100 KB kind, which serde quotes.
    let r = client
        .request_raw(
            "produce",
            json!({"transportId": send["id"], "kind": "k".repeat(100_000), "rtpParameters": {}}),
        )
        .await;
    // (sluice-protocol cuts serde's message at 200 characters first, closing quote included.)
    assert_eq!(
        failure(r),
        (
            400,
            format!(
                "malformed produce payload: kind: unknown variant `{}…",
                prefix('k')
            )
        )
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_needs_a_producing_transport_and_consumers_go_only_to_a_consuming_one() {
    let server = TestServer::start(|_| {}).await;
    let alice = server.signaling("r", "alice").await;
    let recv = transport_raw(&alice, false, json!({})).await;
    let recv_id = recv["id"].as_str().unwrap();
    join_raw(&alice, "alice").await;
    let refused = (
        409,
        format!("transport {recv_id} was created with producing: false"),
    );
    let r = alice
        .request_raw(
            "produce",
            json!({
                "transportId": recv_id, "kind": "audio",
                "rtpParameters": {
                    "mid": "0",
                    "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}],
                    "encodings": [{"ssrc": 1111}]
                }
            }),
        )
        .await;
    assert_eq!(failure(r), refused);
    let r = alice
        .request_raw(
            "produceData",
            json!({"transportId": recv_id, "sctpStreamParameters": {"streamId": 0, "ordered": true}}),
        )
        .await;
    assert_eq!(failure(r), refused);
    // A transport for neither is refused; one flag given means the other is false.
    for flags in [
        json!({"producing": false, "consuming": false}),
        json!({"producing": false}),
    ] {
        let r = alice.request_raw("createWebRtcTransport", flags).await;
        assert_eq!(
            failure(r),
            (
                400,
                "producing and consuming are both false: a transport does at least one".to_owned()
            )
        );
    }
    // Bob only sends: nothing is consumed on his send transport, pushed or asked for.
    let bob = server.signaling("r", "bob").await;
    let bob_send = transport_raw(&bob, true, json!({})).await;
    join_raw(&bob, "bob").await;
    let producer_id =
        produce_audio_raw(&bob, bob_send["id"].as_str().unwrap(), 2222, json!({})).await;
    // Alice is offered it on her receive transport.
    let pushed = next_named(&alice, "newConsumer").await;
    assert_eq!(pushed["producerId"], producer_id.as_str());
    let consumer_id = pushed["id"].as_str().unwrap().to_owned();
    let state = server.instance.room("r").await.unwrap().store.state();
    let state = serde_json::to_value(&state).unwrap();
    assert_eq!(
        state["peers"]["alice"]["consumers"][&consumer_id]["transportId"],
        recv_id
    );
    let alice_send = transport_raw(&alice, true, json!({})).await;
    let alice_producer =
        produce_audio_raw(&alice, alice_send["id"].as_str().unwrap(), 3333, json!({})).await;
    let r = bob
        .request_raw("consume", json!({"producerId": alice_producer}))
        .await;
    assert_eq!(
        failure(r),
        (
            409,
            "no transport to receive on: none was created with consuming: true".to_owned()
        )
    );
    let state = server.instance.room("r").await.unwrap().store.state();
    let state = serde_json::to_value(&state).unwrap();
    assert_eq!(
        state["peers"]["bob"]["consumers"]
            .as_object()
            .map(|c| c.len()),
        Some(0)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_the_server_closes_after_a_dtls_failure_is_announced_to_its_owner() {
    use sluice_client::{ClientNumbering, ClientTransport, ClientTransportOptions};
    let server = TestServer::start(|_| {}).await;
    let alice = server.signaling("r", "alice").await;
    let created = transport_raw(&alice, true, json!({})).await;
    join_raw(&alice, "alice").await;
    let transport_id = created["id"].as_str().unwrap().to_owned();
    let producer_id = produce_audio_raw(&alice, &transport_id, 1111, json!({})).await;
    let response: sluice_protocol::CreateWebRtcTransportResponse =
        serde_json::from_value(created).unwrap();
    let info = sluice_client::ServerTransportInfo {
        ice_parameters: response.ice_parameters,
        ice_candidates: response.ice_candidates,
        dtls_parameters: response.dtls_parameters,
        sctp_parameters: response.sctp_parameters,
    };
    let client = ClientTransport::new(
        &info,
        ClientTransportOptions::new(ClientNumbering::chromium()),
    )
    .await
    .unwrap();
    // A man in the middle: the signaled fingerprint is not of the certificate the client uses.
    let mut params = client.dtls_parameters().clone();
    let value = &mut params.fingerprints[0].value;
    let last = if value.ends_with('0') { "1" } else { "0" };
    value.replace_range(value.len() - 1.., last);
    alice
        .request_raw(
            "connectWebRtcTransport",
            json!({"transportId": transport_id, "dtlsParameters": params}),
        )
        .await
        .unwrap();
    client.start();
    let closed = next_named(&alice, "transportClosed").await;
    assert_eq!(
        closed,
        json!({"transportId": transport_id, "reason": "dtlsFailed"})
    );
    // Gone with its producer, as the notification said.
    let r = alice
        .request_raw("getTransportStats", json!({"transportId": transport_id}))
        .await;
    assert_eq!(failure(r), (404, format!("no transport {transport_id}")));
    let r = alice
        .request_raw("getProducerStats", json!({"producerId": producer_id}))
        .await;
    assert_eq!(failure(r), (404, format!("no producer {producer_id}")));
    client.close();
    server.stop().await;
}
