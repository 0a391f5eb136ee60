//! Server → client requests and notifications, against JSON as mediasoup-demo's server sends it.

use serde_json::{Value, json};
use sluice_ortc::MediaKind;
use sluice_protocol::*;

fn request_round_trip(method: &str, data: Value) -> ServerRequest {
    let req = ServerRequest::decode(method, data).expect("helper: decodes");
    assert_eq!(req.method(), method);
    assert_eq!(
        ServerRequest::decode(method, req.data()).expect("helper: decodes"),
        req
    );
    let msg = Message::parse(&req.to_message(99).to_json()).expect("helper: decodes");
    assert_eq!(
        ServerRequest::from_message(&msg).expect("helper: decodes"),
        (99, req.clone())
    );
    req
}

/// Decodes, checks the method, and that the notification encodes back to exactly `data`, both as a
/// payload and through a full message.
fn notification_exact(method: &str, data: Value) -> ServerNotification {
    let n = ServerNotification::decode(method, data.clone()).expect("helper: decodes");
    assert_eq!(n.method(), method);
    assert_eq!(n.data(), data, "{method}");
    let text = Message::from(n.clone()).to_json();
    let msg = Message::parse(&text).expect("helper: decodes");
    assert_eq!(
        msg,
        Message::Notification {
            method: method.into(),
            data
        }
    );
    assert_eq!(
        ServerNotification::try_from(&msg).expect("helper: decodes"),
        n
    );
    n
}

#[test]
fn new_consumer_request_from_mediasoup_demo_round_trips() {
    let data = json!({
        "peerId": "alice", "producerId": "p1", "id": "c1", "kind": "video",
        "rtpParameters": {
            "codecs": [
                {"mimeType": "video/VP8", "payloadType": 101, "clockRate": 90000, "parameters": {},
                 "rtcpFeedback": [{"type": "transport-cc", "parameter": ""},
                                  {"type": "ccm", "parameter": "fir"},
                                  {"type": "nack", "parameter": ""},
                                  {"type": "nack", "parameter": "pli"}]},
                {"mimeType": "video/rtx", "payloadType": 102, "clockRate": 90000,
                 "parameters": {"apt": 101}, "rtcpFeedback": []}
            ],
            "headerExtensions": [
                {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 1, "encrypt": false, "parameters": {}},
                {"uri": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
                 "id": 5, "encrypt": false, "parameters": {}}
            ],
            "encodings": [{"ssrc": 436283622, "rtx": {"ssrc": 617484312},
                           "scalabilityMode": "L3T3", "maxBitrate": 5000000}],
            "rtcp": {"cname": "9bE5nVbNgrSIdWFZ", "reducedSize": true, "mux": true},
            "mid": "1"
        },
        "type": "simulcast",
        "appData": {"source": "webcam"},
        "producerPaused": false
    });
    let ServerRequest::NewConsumer(c) = request_round_trip("newConsumer", data) else {
        panic!()
    };
    assert_eq!(c.kind, MediaKind::Video);
    assert_eq!(c.r#type, ConsumerType::Simulcast);
    assert_eq!(c.rtp_parameters.encodings[0].rtx.unwrap().ssrc, 617484312);
    assert!(!c.producer_paused);
    // The client's answer.
    assert_eq!(
        Message::ok(99, encode_payload(&Empty {})).to_json(),
        r#"{"response":true,"id":99,"ok":true,"data":{}}"#
    );
}

#[test]
fn every_consumer_type_reads_and_writes_lowercase() {
    for (t, s) in [
        (ConsumerType::Simple, "simple"),
        (ConsumerType::Simulcast, "simulcast"),
        (ConsumerType::Svc, "svc"),
        (ConsumerType::Pipe, "pipe"),
    ] {
        assert_eq!(encode_payload(&t), json!(s));
        assert_eq!(
            decode_payload::<ConsumerType>("newConsumer", json!(s)).unwrap(),
            t
        );
    }
}

#[test]
fn new_data_consumer_request_round_trips_exactly_with_and_without_peer() {
    for peer in [json!("alice"), Value::Null] {
        let data = json!({
            "peerId": peer, "dataProducerId": "dp1", "id": "dc1",
            "sctpStreamParameters": {"streamId": 1, "ordered": true},
            "label": "chat", "protocol": "", "appData": {"info": "my-chat-DataProducer"}
        });
        let req = request_round_trip("newDataConsumer", data.clone());
        assert_eq!(req.data(), data);
        let ServerRequest::NewDataConsumer(d) = req else {
            panic!()
        };
        assert_eq!(d.peer_id.is_none(), peer.is_null());
    }
}

#[test]
fn peer_notifications_round_trip_exactly() {
    let n = notification_exact(
        "newPeer",
        json!({"id": "bob", "displayName": "Bob",
               "device": {"flag": "safari", "name": "Safari", "version": "17.2", "os": "macos"}}),
    );
    let ServerNotification::NewPeer(p) = n else {
        panic!()
    };
    assert_eq!(p.device.extra.get("os"), Some(&json!("macos")));
    notification_exact("peerClosed", json!({"peerId": "bob"}));
    notification_exact(
        "peerDisplayNameChanged",
        json!({"peerId": "bob", "displayName": "Robert", "oldDisplayName": "Bob"}),
    );
}

#[test]
fn score_notifications_round_trip_exactly() {
    let ServerNotification::ProducerScore(s) = notification_exact(
        "producerScore",
        json!({"producerId": "p1", "score": [
            {"encodingIdx": 0, "ssrc": 1111, "rid": "r0", "score": 10},
            {"encodingIdx": 1, "ssrc": 2222, "rid": "r1", "score": 9},
            {"encodingIdx": 2, "ssrc": 3333, "rid": "r2", "score": 0}
        ]}),
    ) else {
        panic!()
    };
    assert_eq!(s.score[1].score, 9);
    notification_exact(
        "producerScore",
        json!({"producerId": "p2", "score": [{"encodingIdx": 0, "ssrc": 4444, "score": 10}]}),
    );
    notification_exact(
        "consumerScore",
        json!({"consumerId": "c1",
               "score": {"score": 10, "producerScore": 9, "producerScores": [0, 9, 10]}}),
    );
}

#[test]
fn consumer_state_notifications_round_trip_exactly() {
    for method in ["consumerClosed", "consumerPaused", "consumerResumed"] {
        notification_exact(method, json!({"consumerId": "c1"}));
    }
    notification_exact("dataConsumerClosed", json!({"dataConsumerId": "dc1"}));
    notification_exact(
        "consumerLayersChanged",
        json!({"consumerId": "c1", "spatialLayer": 2, "temporalLayer": 1}),
    );
    let ServerNotification::ConsumerLayersChanged(l) = notification_exact(
        "consumerLayersChanged",
        json!({"consumerId": "c1", "spatialLayer": null, "temporalLayer": null}),
    ) else {
        panic!()
    };
    assert_eq!((l.spatial_layer, l.temporal_layer), (None, None));
}

#[test]
fn active_speaker_and_downlink_bwe_round_trip_exactly() {
    notification_exact("activeSpeaker", json!({"peerId": "alice", "volume": -42}));
    let ServerNotification::ActiveSpeaker(s) =
        notification_exact("activeSpeaker", json!({"peerId": null}))
    else {
        panic!()
    };
    assert_eq!(s.peer_id, None);
    notification_exact(
        "downlinkBwe",
        json!({"desiredBitrate": 2500000, "effectiveDesiredBitrate": 2600000,
               "availableBitrate": 1800000}),
    );
}

#[test]
fn transport_closed_round_trips_exactly() {
    let ServerNotification::TransportClosed(t) = notification_exact(
        "transportClosed",
        json!({"transportId": "t1", "reason": "dtlsFailed"}),
    ) else {
        panic!()
    };
    assert_eq!(
        (t.transport_id.as_str(), t.reason.as_str()),
        ("t1", "dtlsFailed")
    );
}

#[test]
fn action_notifications_round_trip_exactly() {
    let ServerNotification::Action(a) = notification_exact(
        "action",
        json!({"type": "game.flag.move", "payload": {"x": 3}, "from": "alice", "seq": 42,
               "cacheKey": "red"}),
    ) else {
        panic!()
    };
    assert_eq!((a.seq, a.from.as_deref()), (42, Some("alice")));
    let ServerNotification::Action(a) = notification_exact(
        "action",
        json!({"type": "round.start", "payload": null, "from": null, "seq": 1}),
    ) else {
        panic!()
    };
    assert_eq!((a.from, a.cache_key), (None, None));
}

#[test]
fn producer_announcements_round_trip_exactly() {
    notification_exact(
        "newProducer",
        json!({"peerId": "alice", "producerId": "p1", "kind": "video", "paused": false,
               "appData": {"share": true}}),
    );
    notification_exact(
        "newDataProducer",
        json!({"peerId": "alice", "dataProducerId": "dp1", "label": "chat", "protocol": "",
               "appData": {}}),
    );
    notification_exact("producerClosed", json!({"producerId": "p1"}));
    notification_exact("dataProducerClosed", json!({"dataProducerId": "dp1"}));
}

#[test]
fn every_server_method_is_listed_once() {
    assert_eq!(ServerRequest::METHODS, ["newConsumer", "newDataConsumer"]);
    let mut names = ServerNotification::METHODS.to_vec();
    assert_eq!(names.len(), 18);
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 18);
}
