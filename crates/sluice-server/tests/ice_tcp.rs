//! ICE over TCP through signaling: mediasoup-client's `forceTcp` gets TCP candidates only,
//! other transports UDP first and TCP as fallback, and a server without TCP says so.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use common::*;
use serde_json::{Value, json};

fn protocols(transport: &Value) -> Vec<(String, u64, Option<String>)> {
    transport["iceCandidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["protocol"].as_str().unwrap().to_owned(),
                c["priority"].as_u64().unwrap(),
                c["tcpType"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn force_tcp(producing: bool) -> Value {
    let mut request = transport_request(producing, json!({}));
    request["forceTcp"] = json!(true);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_tcp_transports_carry_only_a_passive_tcp_candidate_and_others_prefer_udp() {
    let server = TestServer::start(|_| {}).await;
    let alice = server.signaling("r", "alice").await;
    let both = protocols(&transport_raw(&alice, true, json!({})).await);
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!((both[0].0.as_str(), both[1].0.as_str()), ("udp", "tcp"));
    assert!(
        both[0].1 > both[1].1,
        "UDP has the higher priority: {both:?}"
    );
    assert_eq!(both[1].2.as_deref(), Some("passive"));
    let tcp = alice
        .request_raw("createWebRtcTransport", force_tcp(false))
        .await
        .unwrap();
    let only = protocols(&tcp);
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(
        (only[0].0.as_str(), only[0].2.as_deref()),
        ("tcp", Some("passive"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tcp_turned_off_force_tcp_is_refused_and_transports_are_udp_only() {
    let server = TestServer::start(|c| c.rtc.tcp = false).await;
    let alice = server.signaling("r", "alice").await;
    let udp = protocols(&transport_raw(&alice, true, json!({})).await);
    assert_eq!(udp.len(), 1, "{udp:?}");
    assert_eq!(udp[0].0, "udp");
    let err = alice
        .request_raw("createWebRtcTransport", force_tcp(true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(422), "{err}");
    server.stop().await;
}
