//! The consumer flow without `router.auto_consume`: peers learn of producers from `newProducer` /
//! `newDataProducer` and ask for what they want with `consume` / `consumeData`, answered with the
//! parameters `newConsumer` / `newDataConsumer` carry; the server still checks the grants,
//! `canConsume` and the caps.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use common::*;
use serde_json::{Value, json};
use sluice_client::{Incoming, SignalingClient, ws_url};
use sluice_server::auth::Grants;

async fn state(server: &TestServer, room: &str) -> Value {
    let (status, body) = server
        .get(&format!("/api/rooms/{room}"), Some(&server.admin_token()))
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn count(peer: &Value, what: &str) -> usize {
    peer[what].as_object().map_or(0, |m| m.len())
}

/// The notifications named in `methods`, one each, in the order they came (others skipped).
async fn notifications_until(client: &SignalingClient, methods: &[&str]) -> Vec<(String, Value)> {
    let mut seen: Vec<(String, Value)> = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while seen.len() < methods.len() {
            match client.next().await {
                Some(Incoming::Notification { method, data })
                    if methods.contains(&method.as_str())
                        && !seen.iter().any(|(m, _)| *m == method) =>
                {
                    seen.push((method, data));
                }
                Some(Incoming::Closed { code, reason }) => panic!("closed: {code:?} {reason}"),
                None => panic!("connection ended"),
                Some(_) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{methods:?} within 10 s, got {seen:?}"));
    seen
}

fn code(r: Result<Value, sluice_client::SignalingError>) -> Option<u16> {
    r.unwrap_err().code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_consume_peers_are_told_of_producers_and_consume_what_they_ask_for() {
    let server = TestServer::start(|c| c.router.auto_consume = false).await;
    let bob = server.signaling("r", "bob").await;
    transport_raw(&bob, false, json!({})).await;
    join_raw(&bob, "bob").await;
    let alice = server.signaling("r", "alice").await;
    let send = transport_raw(&alice, true, json!({})).await;
    join_raw(&alice, "alice").await;
    let send_id = send["id"].as_str().unwrap();
    let producer_id = produce_audio_raw(&alice, send_id, 2222, json!({"source": "mic"})).await;
    let dp = alice
        .request_raw(
            "produceData",
            json!({
                "transportId": send_id,
                "sctpStreamParameters": {"streamId": 1, "ordered": true},
                "label": "chat", "protocol": "json", "appData": {"channel": "all"}
            }),
        )
        .await
        .unwrap();
    let dp_id = dp["id"].as_str().unwrap();

    let n = next_named(&bob, "newProducer").await;
    assert_eq!(
        n,
        json!({"peerId": "alice", "producerId": producer_id, "kind": "audio", "paused": false,
               "appData": {"source": "mic"}})
    );
    let n = next_named(&bob, "newDataProducer").await;
    assert_eq!(
        n,
        json!({"peerId": "alice", "dataProducerId": dp_id, "label": "chat", "protocol": "json",
               "appData": {"channel": "all"}})
    );
    // Nothing was pushed: bob holds no consumer until he asks.
    let s = state(&server, "r").await;
    assert_eq!(count(&s["peers"]["bob"], "consumers"), 0);
    assert_eq!(count(&s["peers"]["bob"], "dataConsumers"), 0);

    let c = bob
        .request_raw("consume", json!({"producerId": producer_id}))
        .await
        .unwrap();
    assert_eq!(c["peerId"], "alice");
    assert_eq!(c["producerId"], producer_id.as_str());
    assert_eq!(c["kind"], "audio");
    assert_eq!(c["type"], "simple");
    assert_eq!(c["producerPaused"], false);
    assert_eq!(c["appData"], json!({"source": "mic"}));
    assert_eq!(c["rtpParameters"]["codecs"][0]["mimeType"], "audio/opus");
    let consumer_id = c["id"].as_str().unwrap();
    // It starts paused; the client resumes it once set up.
    let s = state(&server, "r").await;
    assert_eq!(count(&s["peers"]["bob"], "consumers"), 1);
    assert_eq!(s["peers"]["bob"]["consumers"][consumer_id]["paused"], true);
    bob.request_raw("resumeConsumer", json!({"consumerId": consumer_id}))
        .await
        .unwrap();
    let s = state(&server, "r").await;
    assert_eq!(s["peers"]["bob"]["consumers"][consumer_id]["paused"], false);

    let d = bob
        .request_raw("consumeData", json!({"dataProducerId": dp_id}))
        .await
        .unwrap();
    assert_eq!(d["peerId"], "alice");
    assert_eq!(d["dataProducerId"], dp_id);
    assert_eq!(
        (d["label"].as_str(), d["protocol"].as_str()),
        (Some("chat"), Some("json"))
    );
    assert!(d["sctpStreamParameters"]["streamId"].is_u64(), "{d}");

    // The same producer twice, an unknown one, one's own: refused.
    let again = bob
        .request_raw("consume", json!({"producerId": producer_id}))
        .await;
    assert_eq!(code(again), Some(409));
    let again = bob
        .request_raw("consumeData", json!({"dataProducerId": dp_id}))
        .await;
    assert_eq!(code(again), Some(409));
    let unknown = bob
        .request_raw("consume", json!({"producerId": "nope"}))
        .await;
    assert_eq!(code(unknown), Some(404));
    let unknown = bob
        .request_raw("consumeData", json!({"dataProducerId": "nope"}))
        .await;
    assert_eq!(code(unknown), Some(404));
    let own = alice
        .request_raw("consume", json!({"producerId": producer_id}))
        .await;
    assert_eq!(code(own), Some(409));
    let s = state(&server, "r").await;
    assert_eq!(count(&s["peers"]["bob"], "consumers"), 1);
    assert_eq!(count(&s["peers"]["bob"], "dataConsumers"), 1);

    // A late joiner is told of what exists; closing a producer is told too.
    let carol = server.signaling("r", "carol").await;
    transport_raw(&carol, false, json!({})).await;
    join_raw(&carol, "carol").await;
    assert_eq!(
        next_named(&carol, "newProducer").await["producerId"],
        producer_id.as_str()
    );
    assert_eq!(
        next_named(&carol, "newDataProducer").await["dataProducerId"],
        dp_id
    );
    alice
        .request_raw("closeProducer", json!({"producerId": producer_id}))
        .await
        .unwrap();
    assert_eq!(
        next_named(&carol, "producerClosed").await,
        json!({"producerId": producer_id})
    );
    // Bob also loses his consumer of it; the two notifications come from two tasks, in either
    // order.
    let mut seen = notifications_until(&bob, &["producerClosed", "consumerClosed"]).await;
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        vec![
            (
                "consumerClosed".to_owned(),
                json!({"consumerId": consumer_id})
            ),
            (
                "producerClosed".to_owned(),
                json!({"producerId": producer_id})
            ),
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_is_checked_for_join_grant_transport_and_duplicates_in_either_mode() {
    // The default (auto_consume): consume still works for what was not pushed, and refuses
    // a producer already consumed.
    let server = TestServer::start(|_| {}).await;
    let alice = server.signaling("r", "alice").await;
    let send = transport_raw(&alice, true, json!({})).await;
    join_raw(&alice, "alice").await;
    let producer_id =
        produce_audio_raw(&alice, send["id"].as_str().unwrap(), 3333, json!({})).await;

    // Before join: 409.
    let early = server.signaling("r", "early").await;
    let r = early
        .request_raw("consume", json!({"producerId": producer_id}))
        .await;
    assert_eq!(code(r), Some(409));
    // Joined without a transport to receive on: 409.
    let bare = server.signaling("r", "bare").await;
    join_raw(&bare, "bare").await;
    let r = bare
        .request_raw("consume", json!({"producerId": producer_id}))
        .await;
    assert_eq!(code(r), Some(409));
    // Without the subscribe grant: 403.
    let grants = Grants {
        subscribe: false,
        ..Grants::player()
    };
    let url = ws_url(
        &server.base,
        "r",
        "mute",
        &server.token("r", "mute", grants),
    );
    let mute = SignalingClient::connect(&url).await.unwrap();
    transport_raw(&mute, false, json!({})).await;
    join_raw(&mute, "mute").await;
    let r = mute
        .request_raw("consume", json!({"producerId": producer_id}))
        .await;
    assert_eq!(code(r), Some(403));
    // Pushed (newConsumer accepted), then asked for: 409, and still one consumer.
    let bob = server.signaling("r", "bob").await;
    transport_raw(&bob, false, json!({})).await;
    join_raw(&bob, "bob").await;
    let pushed = next_named(&bob, "newConsumer").await;
    assert_eq!(pushed["producerId"], producer_id.as_str());
    let r = bob
        .request_raw("consume", json!({"producerId": producer_id}))
        .await;
    assert_eq!(code(r), Some(409));
    let s = state(&server, "r").await;
    assert_eq!(count(&s["peers"]["bob"], "consumers"), 1);
    assert_eq!(count(&s["peers"]["mute"], "consumers"), 0);
    server.stop().await;
}
