//! The room's state in the store is the whole media state: transports per peer and direction
//! with the server's ICE and DTLS parameters, and every object with its appData (and a data
//! consumer's protocol), as the admin API shows it. appData is capped.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_shows_transports_with_ice_and_dtls_parameters_and_every_objects_app_data() {
    let server = TestServer::start(|_| {}).await;
    // Bob receives: his transport first, then he joins (as mediasoup-demo's client does).
    let bob = server.signaling("r", "bob").await;
    let recv = transport_raw(&bob, false, json!({"role": "recv"})).await;
    join_raw(&bob, "bob").await;
    let alice = server.signaling("r", "alice").await;
    let send = transport_raw(&alice, true, json!({"role": "send"})).await;
    join_raw(&alice, "alice").await;
    let send_id = send["id"].as_str().unwrap();
    let producer_id = produce_audio_raw(&alice, send_id, 11111111, json!({"source": "mic"})).await;
    let new_consumer = next_named(&bob, "newConsumer").await;
    assert_eq!(new_consumer["appData"], json!({"source": "mic"}));
    let data_producer = alice
        .request_raw(
            "produceData",
            json!({
                "transportId": send_id,
                "sctpStreamParameters": {"streamId": 1, "ordered": true},
                "label": "chat", "protocol": "json", "appData": {"channel": "lobby"}
            }),
        )
        .await
        .unwrap();
    let new_data_consumer = next_named(&bob, "newDataConsumer").await;
    assert_eq!(new_data_consumer["appData"], json!({"channel": "lobby"}));

    let (status, body) = server
        .get("/api/rooms/r", Some(&server.admin_token()))
        .await;
    assert_eq!(status, 200, "{body}");
    let state: Value = serde_json::from_str(&body).unwrap();
    let a = &state["peers"]["alice"];
    let t = &a["transports"][send_id];
    assert_eq!(t["producing"], true);
    assert_eq!(t["consuming"], false);
    assert_eq!(t["iceParameters"], send["iceParameters"]);
    assert_eq!(t["iceCandidates"], send["iceCandidates"]);
    assert_eq!(t["dtlsParameters"], send["dtlsParameters"]);
    assert_eq!(t["sctpParameters"], send["sctpParameters"]);
    assert_eq!(t["appData"], json!({"role": "send"}));
    assert_eq!(
        a["producers"][&producer_id]["appData"],
        json!({"source": "mic"})
    );
    let dp_id = data_producer["id"].as_str().unwrap();
    assert_eq!(
        a["dataProducers"][dp_id]["appData"],
        json!({"channel": "lobby"})
    );
    assert_eq!(a["dataProducers"][dp_id]["protocol"], "json");

    let b = &state["peers"]["bob"];
    let recv_id = recv["id"].as_str().unwrap();
    assert_eq!(b["transports"][recv_id]["consuming"], true);
    assert_eq!(b["transports"][recv_id]["appData"], json!({"role": "recv"}));
    let consumer_id = new_consumer["id"].as_str().unwrap();
    let c = &b["consumers"][consumer_id];
    assert_eq!(c["producerId"], producer_id.as_str());
    assert_eq!(c["appData"], json!({"source": "mic"}));
    let dc_id = new_data_consumer["id"].as_str().unwrap();
    let dc = &b["dataConsumers"][dc_id];
    assert_eq!(dc["dataProducerId"], dp_id);
    assert_eq!(
        (dc["label"].as_str(), dc["protocol"].as_str()),
        (Some("chat"), Some("json"))
    );
    assert_eq!(dc["appData"], json!({"channel": "lobby"}));

    // restartIce: the state follows.
    let ice = alice
        .request_raw("restartIce", json!({"transportId": send_id}))
        .await
        .unwrap();
    let (_, body) = server
        .get("/api/rooms/r", Some(&server.admin_token()))
        .await;
    let state: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        state["peers"]["alice"]["transports"][send_id]["iceParameters"],
        ice
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_app_data_is_refused_with_413_and_creates_nothing() {
    let server = TestServer::start(|c| c.limits.max_app_data_bytes = 100).await;
    let p = server.signaling("r", "p").await;
    // {"x":"…"} is 8 bytes of JSON around the string.
    let fits = json!({"x": "a".repeat(92)});
    let over = json!({"x": "a".repeat(93)});
    let r = p
        .request_raw("createWebRtcTransport", transport_request(true, over))
        .await;
    assert_eq!(r.unwrap_err().code(), Some(413));
    let t = p
        .request_raw("createWebRtcTransport", transport_request(true, fits))
        .await
        .unwrap();
    join_raw(&p, "p").await;
    let r = p
        .request_raw(
            "produceData",
            json!({
                "transportId": t["id"],
                "sctpStreamParameters": {"streamId": 1, "ordered": true},
                "label": "chat", "appData": {"x": "a".repeat(1000)}
            }),
        )
        .await;
    assert_eq!(r.unwrap_err().code(), Some(413));
    let (_, body) = server
        .get("/api/rooms/r", Some(&server.admin_token()))
        .await;
    let state: Value = serde_json::from_str(&body).unwrap();
    let peer = &state["peers"]["p"];
    assert_eq!(peer["transports"].as_object().unwrap().len(), 1, "{peer}");
    assert_eq!(
        peer["dataProducers"].as_object().unwrap().len(),
        0,
        "{peer}"
    );
    server.stop().await;
}
