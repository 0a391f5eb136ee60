//! `[turn]`: `createWebRtcTransport` hands the client TURN servers with credentials the TURN
//! server can check on its own (TURN REST API), and none when TURN is not configured.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use base64::Engine;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transports_carry_turn_servers_with_credentials_for_their_peer() {
    let server = TestServer::start(|c| {
        c.turn.urls = vec!["turn:127.0.0.1:3478?transport=udp".into()];
        c.turn.secret = Some("coturn-shared-secret".into());
        c.turn.credential_ttl_secs = 600;
    })
    .await;
    let alice = server.signaling("r", "alice").await;
    let before = sluice_server::auth::unix_now();
    let t = transport_raw(&alice, true, json!({})).await;
    let after = sluice_server::auth::unix_now();
    let servers = t["iceServers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{t}");
    assert_eq!(
        servers[0]["urls"],
        json!(["turn:127.0.0.1:3478?transport=udp"])
    );
    let username = servers[0]["username"].as_str().unwrap();
    let (expiry, peer) = username.split_once(':').unwrap();
    assert_eq!(peer, "alice");
    let expiry: u64 = expiry.parse().unwrap();
    assert!((before + 600..=after + 600).contains(&expiry), "{expiry}");
    // What coturn computes with `use-auth-secret`.
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        b"coturn-shared-secret",
    );
    let expected = base64::engine::general_purpose::STANDARD
        .encode(aws_lc_rs::hmac::sign(&key, username.as_bytes()));
    assert_eq!(servers[0]["credential"], expected.as_str());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_turn_transports_carry_no_ice_servers() {
    let server = TestServer::start(|_| {}).await;
    let alice = server.signaling("r", "alice").await;
    let t = transport_raw(&alice, true, json!({})).await;
    assert!(t.get("iceServers").is_none(), "{t}");
    server.stop().await;
}
