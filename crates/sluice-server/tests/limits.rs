//! Every limit of `[limits]` and `[signaling]`, with its error code.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use sluice_client::{Incoming, SessionEvent, SignalingClient, SignalingError, SourceConfig};
use sluice_media::ortc::MediaKind;
use sluice_protocol::{ClientRequest, CreateWebRtcTransportRequest, ServerNotification};
use sluice_server::config::{LabelRule, Relay};

fn code(r: Result<serde_json::Value, SignalingError>) -> Option<u16> {
    r.unwrap_err().code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_refuses_one_more_peer_with_429() {
    let server = TestServer::start(|c| c.limits.peers_per_room = 2).await;
    let _a = server.signaling("r", "a").await;
    let _b = server.signaling("r", "b").await;
    // The upgrade completes before the peer is in the room: wait until both are.
    tokio::time::timeout(Duration::from_secs(5), async {
        while server.instance.room("r").await.map(|r| r.peer_count()) != Some(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    match SignalingClient::connect(&server.url("r", "c")).await {
        Err(SignalingError::Refused { status, .. }) => assert_eq!(status, 429),
        other => panic!("{other:?}"),
    }
    // Another room is not affected.
    assert!(
        SignalingClient::connect(&server.url("r2", "c"))
            .await
            .is_ok()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transports_producers_and_data_producers_per_peer_are_capped_with_429() {
    let server = TestServer::start(|c| {
        c.limits.transports_per_peer = 2;
        c.limits.producers_per_peer = 1;
        c.limits.data_producers_per_peer = 2;
    })
    .await;
    let session = server.session("r", "p").await;
    // The session already made its two transports.
    let more = session
        .request(ClientRequest::CreateWebRtcTransport(
            CreateWebRtcTransportRequest::default(),
        ))
        .await;
    assert_eq!(code(more), Some(429));
    session.produce(SourceConfig::audio()).await.unwrap();
    let err = session.produce(SourceConfig::video()).await.unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");
    session.produce_data("a", true, None).await.unwrap();
    session.produce_data("b", true, None).await.unwrap();
    let err = session.produce_data("c", true, None).await.unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_opening_a_thousand_channels_is_capped() {
    let server = TestServer::start(|_| {}).await;
    let session = server.session("r", "p").await;
    let limit = server.instance.config.limits.data_producers_per_peer;
    let mut refused = 0;
    for i in 0..1000 {
        if let Err(e) = session.produce_data(&format!("ch{i}"), true, None).await {
            assert!(e.to_string().contains("429"), "{e}");
            refused += 1;
        }
    }
    assert_eq!(refused, 1000 - limit);
    let state = server.instance.room("r").await.unwrap().store.state();
    assert_eq!(state.counts()[4], limit);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_per_peer_caps_what_a_peer_is_offered() {
    let server = TestServer::start(|c| c.limits.consumers_per_peer = 1).await;
    let alice = server.session("r", "alice").await;
    alice.produce(SourceConfig::audio()).await.unwrap();
    alice.produce(SourceConfig::video()).await.unwrap();
    let mut bob = server.session("r", "bob").await;
    let _first = bob
        .wait_event(Duration::from_secs(5), |e| {
            matches!(e, SessionEvent::Consumer { .. })
        })
        .await
        .unwrap();
    assert!(
        bob.wait_event(Duration::from_millis(800), |e| matches!(
            e,
            SessionEvent::Consumer { .. }
        ))
        .await
        .is_none()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_gets_429_then_the_socket_is_closed_with_1008() {
    let server = TestServer::start(|c| c.limits.requests_per_second = 5).await;
    let client = server.signaling("r", "p").await;
    // The burst (2 s worth) passes, the next are refused.
    let mut codes = Vec::new();
    for _ in 0..14 {
        codes.push(
            client
                .request(ClientRequest::GetRouterRtpCapabilities(Default::default()))
                .await
                .err()
                .and_then(|e| e.code()),
        );
    }
    assert!(codes[..10].iter().all(Option::is_none), "{codes:?}");
    assert!(codes[10..].iter().all(|c| *c == Some(429)), "{codes:?}");
    // Keep flooding without waiting for answers.
    for i in 0..100 {
        let _ = client.send_raw(format!(
            r#"{{"request":true,"id":{i},"method":"getRouterRtpCapabilities","data":{{}}}}"#
        ));
    }
    let closed = client
        .wait_for(Duration::from_secs(5), |i| {
            matches!(i, Incoming::Closed { .. })
        })
        .await;
    assert!(
        matches!(
            closed,
            Some(Incoming::Closed {
                code: Some(1008),
                ..
            })
        ),
        "{closed:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_malformed_frames_is_limited_like_requests_and_closed_with_1008() {
    let server = TestServer::start(|c| c.limits.requests_per_second = 5).await;
    let client = server.signaling("r", "p").await;
    // A readable id with a bad envelope, a frame padded to 200 KB, and one that is not JSON:
    // each takes a token of the limiter (5/s, bursts of 10); more than twice the burst refused
    // in a row closes the connection. 300 frames are more than 10 + 20 + what 5/s refills in
    // any time the sends can take before the close.
    let padded = format!(
        r#"{{"request":true,"id":2,"method":"noSuchMethod","data":{{}},"pad":"{}"}}"#,
        " ".repeat(200_000)
    );
    for i in 0..300 {
        let frame = match i % 3 {
            0 => r#"{"request":true,"id":1}"#.to_owned(),
            1 => padded.clone(),
            _ => "{not json".to_owned(),
        };
        if client.send_raw(frame).is_err() {
            break;
        }
    }
    let closed = client
        .wait_for(Duration::from_secs(10), |i| {
            matches!(i, Incoming::Closed { .. })
        })
        .await;
    assert_eq!(
        closed,
        Some(Incoming::Closed {
            code: Some(1008),
            reason: "request flood".to_owned()
        })
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_heartbeats_is_removed() {
    let server = TestServer::start(|c| {
        c.signaling.ping_interval_secs = 1;
        c.signaling.peer_timeout_secs = 3;
    })
    .await;
    let mut watcher = server.session("r", "watcher").await;
    // A raw socket that joins and then never reads again (so never answers a ping).
    let (mut socket, _) = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = server.url("r", "ghost").into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "protoo".parse().unwrap());
        tokio_tungstenite::connect_async(req).await.unwrap()
    };
    {
        use futures_util::SinkExt;
        let join = r#"{"request":true,"id":1,"method":"join","data":{"displayName":"ghost"}}"#;
        socket
            .send(tokio_tungstenite::tungstenite::Message::Text(join.into()))
            .await
            .unwrap();
    }
    assert!(
        wait_notification(
            &mut watcher,
            Duration::from_secs(3),
            |n| matches!(n, ServerNotification::NewPeer(p) if p.id == "ghost")
        )
        .await
        .is_some()
    );
    let started = tokio::time::Instant::now();
    let gone = wait_notification(
        &mut watcher,
        Duration::from_secs(8),
        |n| matches!(n, ServerNotification::PeerClosed(p) if p.peer_id == "ghost"),
    )
    .await;
    assert!(gone.is_some(), "the silent peer was removed");
    assert!(started.elapsed() < Duration::from_secs(6));
    drop(socket);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_label_registry_refuses_unregistered_labels_and_keeps_server_only_labels_from_peers() {
    let server = TestServer::start(|c| {
        c.data.label_registry = true;
        c.data.labels = vec![
            LabelRule {
                name: "chat".into(),
                allowed: true,
                relay: Relay::Peers,
                ordered: None,
                max_retransmits: None,
                max_packet_life_time: None,
                max_message_size: Some(512),
                max_messages_per_second: None,
            },
            LabelRule {
                name: "input".into(),
                allowed: true,
                relay: Relay::Server,
                ordered: None,
                max_retransmits: None,
                max_packet_life_time: None,
                max_message_size: None,
                max_messages_per_second: None,
            },
            LabelRule {
                name: "banned".into(),
                allowed: false,
                relay: Relay::Peers,
                ordered: None,
                max_retransmits: None,
                max_packet_life_time: None,
                max_message_size: None,
                max_messages_per_second: None,
            },
        ];
    })
    .await;
    let alice = server.session("r", "alice").await;
    let err = alice
        .produce_data("whatever", true, None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("403") && err.to_string().contains("not registered"),
        "{err}"
    );
    let err = alice.produce_data("banned", true, None).await.unwrap_err();
    assert!(err.to_string().contains("not allowed"), "{err}");
    alice.produce_data("input", false, Some(0)).await.unwrap();
    alice.produce_data("chat", true, None).await.unwrap();
    let mut bob = server.session("r", "bob").await;
    let Some(SessionEvent::DataConsumer { label, .. }) = bob
        .wait_event(Duration::from_secs(5), |e| {
            matches!(e, SessionEvent::DataConsumer { .. })
        })
        .await
    else {
        panic!("bob gets chat");
    };
    assert_eq!(label, "chat");
    assert!(
        bob.wait_event(Duration::from_millis(800), |e| matches!(
            e,
            SessionEvent::DataConsumer { .. }
        ))
        .await
        .is_none(),
        "input is for the server only"
    );
    let _ = MediaKind::Audio;
    let _ = json!({});
    server.stop().await;
}

/// The protoo error code and reason of a refused request.
fn refusal(r: Result<serde_json::Value, SignalingError>) -> (u16, String) {
    match r {
        Err(SignalingError::Request { code, reason }) => (code, reason),
        other => panic!("expected an error response, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_display_name_or_device_is_refused_with_413_and_a_refused_join_can_be_retried()
{
    let server = TestServer::start(|_| {}).await;
    let p = server.signaling("r", "p").await;
    let join = |name: String, device: serde_json::Value| {
        p.request_raw("join", json!({"displayName": name, "device": device}))
    };
    let (code, reason) = refusal(join("a".repeat(257), json!({})).await);
    assert_eq!(code, 413);
    assert_eq!(reason, "displayName of 257 bytes is over the limit of 256");
    let (code, reason) = refusal(join("bell\u{7}".into(), json!({})).await);
    assert_eq!(code, 400);
    assert_eq!(reason, "displayName must not contain control characters");
    // {"name":"…"} is 11 bytes of JSON around the string.
    let (code, reason) = refusal(join("Alice".into(), json!({"name": "x".repeat(1014)})).await);
    assert_eq!(code, 413);
    assert_eq!(reason, "device of 1025 bytes is over the limit of 1024");
    join("a".repeat(256), json!({"name": "x".repeat(1013)}))
        .await
        .unwrap();
    let (code, reason) = refusal(
        p.request_raw("changeDisplayName", json!({"displayName": "é".repeat(129)}))
            .await,
    );
    assert_eq!(code, 413);
    assert_eq!(reason, "displayName of 258 bytes is over the limit of 256");
    p.request_raw("changeDisplayName", json!({"displayName": "Alice"}))
        .await
        .unwrap();
    let (_, body) = server
        .get("/api/rooms/r", Some(&server.admin_token()))
        .await;
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["peers"]["p"]["displayName"], "Alice", "{state}");
    server.stop().await;
}

/// A VP8 producer's `rtpParameters` with these encodings and VP8 parameters.
fn vp8(encodings: serde_json::Value, parameters: serde_json::Value) -> serde_json::Value {
    json!({
        "codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000,
                    "parameters": parameters}],
        "encodings": encodings,
        "rtcp": {"cname": "test"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_encodings_a_bad_scalability_mode_or_oversize_codec_parameters_are_refused() {
    let server = TestServer::start(|_| {}).await;
    let p = server.signaling("r", "p").await;
    let t = transport_raw(&p, true, json!({})).await;
    join_raw(&p, "p").await;
    let produce = |rtp: serde_json::Value| {
        p.request_raw(
            "produce",
            json!({"transportId": t["id"], "kind": "video", "rtpParameters": rtp}),
        )
    };
    let five: Vec<_> = (0..5).map(|i| json!({"rid": format!("r{i}")})).collect();
    let (code, reason) = refusal(produce(vp8(json!(five), json!({}))).await);
    assert_eq!(code, 400);
    assert_eq!(
        reason,
        "rtpParameters.encodings: 5 encodings, at most 4 are allowed"
    );
    let (code, reason) = refusal(
        produce(vp8(
            json!([{"ssrc": 1111, "scalabilityMode": "L99T99"}]),
            json!({}),
        ))
        .await,
    );
    assert_eq!(code, 400);
    assert_eq!(
        reason,
        "rtpParameters.encodings[0].scalabilityMode: \"L99T99\" has 99 spatial and 99 temporal \
         layers; at most 3 and 4 are supported"
    );
    let (code, reason) = refusal(
        produce(vp8(
            json!([{"ssrc": 1111, "scalabilityMode": "L1T3junk"}]),
            json!({}),
        ))
        .await,
    );
    assert_eq!(code, 400);
    assert_eq!(
        reason,
        "rtpParameters.encodings[0].scalabilityMode: \"L1T3junk\" is not a scalability mode like \
         L1T3, L3T3_KEY or S2T1h"
    );
    let parameters: serde_json::Map<_, _> = (0..100)
        .map(|i| (format!("key{i:03}"), json!("value")))
        .collect();
    let size = serde_json::to_vec(&parameters).unwrap().len();
    let (code, reason) = refusal(
        produce(vp8(
            json!([{"ssrc": 1111}]),
            serde_json::Value::Object(parameters),
        ))
        .await,
    );
    assert_eq!(code, 413);
    assert_eq!(
        reason,
        format!("rtpParameters.codecs[0].parameters of {size} bytes is over the limit of 1024")
    );
    // Within every limit, the same producer is created.
    let three: Vec<_> = (0..3)
        .map(|i| json!({"rid": format!("r{i}"), "scalabilityMode": "L1T3"}))
        .collect();
    produce(vp8(json!(three), json!({"x-google-start-bitrate": 1000})))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_data_label_or_protocol_or_one_with_control_characters_is_refused() {
    let server = TestServer::start(|_| {}).await;
    let p = server.signaling("r", "p").await;
    let t = transport_raw(&p, true, json!({})).await;
    join_raw(&p, "p").await;
    let produce_data = |label: String, protocol: String| {
        p.request_raw(
            "produceData",
            json!({
                "transportId": t["id"],
                "sctpStreamParameters": {"streamId": 1, "ordered": true},
                "label": label, "protocol": protocol
            }),
        )
    };
    let (code, reason) = refusal(produce_data("a".repeat(1025), String::new()).await);
    assert_eq!(code, 413);
    assert_eq!(reason, "label of 1025 bytes is over the limit of 1024");
    let (code, reason) = refusal(produce_data("chat".into(), "p".repeat(200_000)).await);
    assert_eq!(code, 413);
    assert_eq!(reason, "protocol of 200000 bytes is over the limit of 1024");
    let (code, reason) = refusal(produce_data("chat\n".into(), String::new()).await);
    assert_eq!(code, 400);
    assert_eq!(reason, "label must not contain control characters");
    let (code, reason) = refusal(produce_data("chat".into(), "json\u{0}".into()).await);
    assert_eq!(code, 400);
    assert_eq!(reason, "protocol must not contain control characters");
    produce_data("a".repeat(1024), "json".into()).await.unwrap();
    server.stop().await;
}

/// A TCP connection to `server` from the loopback address `from` (any of 127.0.0.0/8), which
/// has sent the start of a request and not the blank line that ends its header.
async fn half_open(server: &TestServer, from: [u8; 4]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    let addr = server.base.trim_start_matches("http://").parse().unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    stream
}

/// Waits (at most 10 s) until the server closes `stream`: end of stream or a reset.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// `GET /health` from the loopback address `from`; its HTTP status.
async fn health_from(server: &TestServer, from: [u8; 4]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    let addr = server.base.trim_start_matches("http://").parse().unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_address_and_total_caps_are_closed_counted_and_the_others_served()
 {
    // A header timeout far beyond the test's waits: every close seen here is a cap's.
    let server = TestServer::start(|c| {
        c.http.header_read_timeout_ms = 600_000;
        c.http.max_connections_per_ip = 4;
        c.http.max_connections = 7;
    })
    .await;
    // An established WebSocket; `ws_url` dials the server's address, so it comes from
    // 127.0.0.1 and holds one of that address's four places.
    let ws = sluice_client::SignalingClient::connect(&server.url("r", "p"))
        .await
        .unwrap();
    // The listener accepts in connection order: the next three of 127.0.0.1 hold its places.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(half_open(&server, [127, 0, 0, 1]).await);
    }
    let mut over = Vec::new();
    for _ in 0..6 {
        over.push(half_open(&server, [127, 0, 0, 1]).await);
    }
    for stream in &mut over {
        assert!(closed_by_server(stream).await, "over the address's cap");
    }
    // Another address is served; the WebSocket still answers.
    assert_eq!(health_from(&server, [127, 0, 0, 2]).await, 200);
    ws.request_raw("getRouterRtpCapabilities", json!({}))
        .await
        .unwrap();
    // The WebSocket, the 3 held and 3 more from a third address fill the total of 7; an eighth
    // from a fourth address is closed.
    let mut third = Vec::new();
    for _ in 0..3 {
        third.push(half_open(&server, [127, 0, 0, 3]).await);
    }
    let mut eighth = half_open(&server, [127, 0, 0, 4]).await;
    assert!(closed_by_server(&mut eighth).await, "over the total cap");
    // Each refusal is counted by the cap that refused it (read in-process: every HTTP place is
    // taken).
    let metrics = server
        .instance
        .metrics
        .render(&server.instance.rooms().await, &server.instance.workers())
        .await;
    for line in [
        r#"sluice_http_connections_refused_total{reason="per_ip"} 6"#,
        r#"sluice_http_connections_refused_total{reason="total"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
    }
    // Once those close, a new connection is served again.
    third.clear();
    tokio::time::timeout(Duration::from_secs(10), async {
        while health_from(&server, [127, 0, 0, 4]).await != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    drop(held);
    ws.request_raw("getRouterRtpCapabilities", json!({}))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_header_not_finished_in_time_is_closed_and_an_open_websocket_is_not() {
    let server = TestServer::start(|c| c.http.header_read_timeout_ms = 300).await;
    let p = server.session("r", "p").await;
    let mut slow = half_open(&server, [127, 0, 0, 1]).await;
    let mut silent = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    assert!(closed_by_server(&mut slow).await, "a trickled header");
    assert!(
        closed_by_server(&mut silent).await,
        "a connection that sends nothing"
    );
    // The WebSocket opened before them has outlived the header timeout and still works.
    p.request_raw("getRouterRtpCapabilities", json!({}))
        .await
        .unwrap();
    assert_eq!(health_from(&server, [127, 0, 0, 1]).await, 200);
    server.stop().await;
}
