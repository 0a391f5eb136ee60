//! Client → server requests and their responses, against JSON as mediasoup-client 3.24 and
//! mediasoup-demo send it.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sluice_ortc::{IceParameters, MediaKind, RtpCapabilities};
use sluice_protocol::*;

/// Decodes `data` as `method`, checks the method name, and that encoding and decoding again gives
/// the same value.
fn round_trip(method: &str, data: Value) -> ClientRequest {
    let req = ClientRequest::decode(method, data).expect("helper: decodes");
    assert_eq!(req.method(), method);
    let again = ClientRequest::decode(method, req.data()).expect("helper: decodes");
    assert_eq!(again, req);
    // And through a full message.
    let msg = Message::parse(&req.to_message(4242).to_json()).expect("helper: decodes");
    assert_eq!(
        ClientRequest::from_message(&msg).expect("helper: decodes"),
        (4242, req.clone())
    );
    req
}

/// Like `round_trip`, and the encoded payload is exactly the input.
fn exact_round_trip(method: &str, data: Value) -> ClientRequest {
    let req = round_trip(method, data.clone());
    assert_eq!(req.data(), data, "{method}");
    req
}

/// A response payload decodes and encodes back to exactly the input.
fn exact_response<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    method: &'static str,
    data: Value,
) -> T {
    let typed: T = decode_payload(method, data.clone()).expect("helper: decodes");
    assert_eq!(encode_payload(&typed), data, "{method}");
    typed
}

/// Device.recvRtpCapabilities of Chrome with mediasoup-client 3.24 (trimmed to a few codecs).
fn recv_rtp_capabilities() -> Value {
    json!({
        "codecs": [
            {"mimeType": "audio/opus", "kind": "audio", "preferredPayloadType": 100,
             "clockRate": 48000, "channels": 2,
             "parameters": {"minptime": 10, "useinbandfec": 1},
             "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]},
            {"mimeType": "video/VP8", "kind": "video", "preferredPayloadType": 101,
             "clockRate": 90000, "parameters": {},
             "rtcpFeedback": [{"type": "goog-remb", "parameter": ""},
                              {"type": "transport-cc", "parameter": ""},
                              {"type": "ccm", "parameter": "fir"},
                              {"type": "nack", "parameter": ""},
                              {"type": "nack", "parameter": "pli"}]},
            {"mimeType": "video/rtx", "kind": "video", "preferredPayloadType": 102,
             "clockRate": 90000, "parameters": {"apt": 101}, "rtcpFeedback": []}
        ],
        "headerExtensions": [
            {"kind": "audio", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "preferredId": 1,
             "preferredEncrypt": false, "direction": "sendrecv"},
            {"kind": "video", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "preferredId": 1,
             "preferredEncrypt": false, "direction": "sendrecv"},
            {"kind": "video", "uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
             "preferredId": 4, "preferredEncrypt": false, "direction": "sendrecv"}
        ]
    })
}

/// The rtpParameters mediasoup-client 3.24 sends in `produce` for VP8 simulcast from Chrome.
fn vp8_simulcast_rtp_parameters() -> Value {
    json!({
        "codecs": [
            {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": {},
             "rtcpFeedback": [{"type": "goog-remb", "parameter": ""},
                              {"type": "transport-cc", "parameter": ""},
                              {"type": "ccm", "parameter": "fir"},
                              {"type": "nack", "parameter": ""},
                              {"type": "nack", "parameter": "pli"}]},
            {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000,
             "parameters": {"apt": 96}, "rtcpFeedback": []}
        ],
        "headerExtensions": [
            {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 4, "encrypt": false, "parameters": {}},
            {"uri": "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id", "id": 10, "encrypt": false, "parameters": {}},
            {"uri": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
             "id": 3, "encrypt": false, "parameters": {}}
        ],
        "encodings": [
            {"active": true, "scaleResolutionDownBy": 4, "maxBitrate": 500000, "rid": "r0",
             "scalabilityMode": "L1T3", "dtx": false},
            {"active": true, "scaleResolutionDownBy": 2, "maxBitrate": 1000000, "rid": "r1",
             "scalabilityMode": "L1T3", "dtx": false},
            {"active": true, "scaleResolutionDownBy": 1, "maxBitrate": 5000000, "rid": "r2",
             "scalabilityMode": "L1T3", "dtx": false}
        ],
        "rtcp": {"cname": "9bE5nVbNgrSIdWFZ", "reducedSize": true},
        "mid": "0"
    })
}

#[test]
fn get_router_rtp_capabilities_request_and_response_round_trip() {
    let req = exact_round_trip("getRouterRtpCapabilities", json!({}));
    assert_eq!(req, ClientRequest::GetRouterRtpCapabilities(Empty {}));
    let caps: RtpCapabilities =
        decode_payload("getRouterRtpCapabilities", recv_rtp_capabilities()).unwrap();
    assert_eq!(caps.codecs.len(), 3);
    let again: RtpCapabilities =
        decode_payload("getRouterRtpCapabilities", encode_payload(&caps)).unwrap();
    assert_eq!(again, caps);
}

#[test]
fn join_request_from_mediasoup_demo_round_trips() {
    let data = json!({
        "displayName": "Gorgeous Pikachu",
        "device": {"flag": "chrome", "name": "Chrome", "version": "120.0.0.0",
                   "os": "linux", "platform": "desktop"},
        "rtpCapabilities": recv_rtp_capabilities(),
        "sctpCapabilities": {"numStreams": {"OS": 1024, "MIS": 1024}}
    });
    let ClientRequest::Join(join) = round_trip("join", data) else {
        panic!("not a join")
    };
    assert_eq!(join.display_name, "Gorgeous Pikachu");
    assert_eq!(join.device.flag.as_deref(), Some("chrome"));
    assert_eq!(join.device.version.as_deref(), Some("120.0.0.0"));
    assert_eq!(join.device.extra.get("os"), Some(&json!("linux")));
    let caps = join.rtp_capabilities.unwrap();
    assert_eq!(caps.codecs[0].mime_type, "audio/opus");
    assert_eq!(caps.header_extensions.len(), 3);
    assert_eq!(join.sctp_capabilities.unwrap().num_streams.os, 1024);
}

#[test]
fn join_request_without_capabilities_round_trips_exactly() {
    let data = json!({"displayName": "Bot", "device": {"flag": "broadcaster", "name": "Bot"}});
    let ClientRequest::Join(join) = exact_round_trip("join", data) else {
        panic!()
    };
    assert_eq!(join.rtp_capabilities, None);
    assert_eq!(join.sctp_capabilities, None);
}

#[test]
fn join_response_round_trips_exactly() {
    let resp: JoinResponse = exact_response(
        "join",
        json!({"peers": [
            {"id": "a1b2c3", "displayName": "Alice",
             "device": {"flag": "firefox", "name": "Firefox", "version": "121.0"}},
            {"id": "d4e5f6", "displayName": "Bob", "device": {}}
        ]}),
    );
    assert_eq!(resp.peers.len(), 2);
    assert_eq!(resp.peers[1].device, Device::default());
    exact_response::<JoinResponse>("join", json!({"peers": []}));
}

#[test]
fn create_web_rtc_transport_request_round_trips_exactly() {
    let ClientRequest::CreateWebRtcTransport(t) = exact_round_trip(
        "createWebRtcTransport",
        json!({"forceTcp": false, "producing": true, "consuming": false,
               "sctpCapabilities": {"numStreams": {"OS": 1024, "MIS": 1024}}}),
    ) else {
        panic!()
    };
    assert_eq!((t.producing, t.consuming), (Some(true), Some(false)));
    assert!(!t.force_tcp);
    exact_round_trip(
        "createWebRtcTransport",
        json!({"forceTcp": true, "producing": false, "consuming": true,
               "appData": {"purpose": "recv"}}),
    );
}

#[test]
fn create_web_rtc_transport_request_keeps_absent_flags_absent() {
    let ClientRequest::CreateWebRtcTransport(t) = round_trip("createWebRtcTransport", json!({}))
    else {
        panic!()
    };
    assert_eq!(t, CreateWebRtcTransportRequest::default());
    assert_eq!((t.producing, t.consuming), (None, None));
}

#[test]
fn create_web_rtc_transport_response_round_trips_exactly() {
    let resp: CreateWebRtcTransportResponse = exact_response(
        "createWebRtcTransport",
        json!({
            "id": "0f7b4e0a-2f7d-4a3c-9a43-9b0b7e6f8f21",
            "iceParameters": {"usernameFragment": "zmqc4a5l0pn2d8ht", "password": "yvst4wvsxmyw2fqbn9n8q1jlq8yfzw3n", "iceLite": true},
            "iceCandidates": [
                {"foundation": "udpcandidate", "priority": 1076302079, "ip": "203.0.113.7",
                 "address": "203.0.113.7", "protocol": "udp", "port": 40000, "type": "host"},
                {"foundation": "tcpcandidate", "priority": 1076276479, "ip": "203.0.113.7",
                 "address": "203.0.113.7", "protocol": "tcp", "port": 40001, "type": "host",
                 "tcpType": "passive"}
            ],
            "dtlsParameters": {"role": "auto", "fingerprints": [
                {"algorithm": "sha-256", "value": "A9:F4:E0:D2:74:D3:0F:D9:CA:A5:2F:9F:7F:47:FA:F0:C4:72:DD:73:49:D0:3B:14:90:20:51:30:1B:90:8E:71"}
            ]},
            "sctpParameters": {"port": 5000, "OS": 1024, "MIS": 1024, "maxMessageSize": 262144}
        }),
    );
    assert_eq!(resp.ice_candidates.len(), 2);
    assert_eq!(resp.sctp_parameters.unwrap().max_message_size, 262144);
}

#[test]
fn connect_web_rtc_transport_request_round_trips_exactly() {
    let ClientRequest::ConnectWebRtcTransport(c) = exact_round_trip(
        "connectWebRtcTransport",
        json!({"transportId": "t1", "dtlsParameters": {"role": "client", "fingerprints": [
            {"algorithm": "sha-256", "value": "82:5A:68:3D:36:C3:0A:DE:AF:E7:32:43:D2:88:83:57:B8:F4:7C:A1:2A:8C:5A:C1:43:D3:E9:54:41:79:8B:9F"}
        ]}}),
    ) else {
        panic!()
    };
    assert_eq!(c.transport_id, "t1");
    exact_response::<Empty>("connectWebRtcTransport", json!({}));
}

#[test]
fn restart_ice_request_and_response_round_trip_exactly() {
    let req = exact_round_trip("restartIce", json!({"transportId": "t1"}));
    assert_eq!(
        req,
        ClientRequest::RestartIce(TransportRef {
            transport_id: "t1".into()
        })
    );
    let ice: IceParameters = exact_response(
        "restartIce",
        json!({"usernameFragment": "u2", "password": "p2", "iceLite": true}),
    );
    assert_eq!(ice.ice_lite, Some(true));
}

#[test]
fn produce_request_from_mediasoup_client_round_trips() {
    let data = json!({
        "transportId": "t1", "kind": "video",
        "rtpParameters": vp8_simulcast_rtp_parameters(),
        "appData": {"source": "webcam"}
    });
    let ClientRequest::Produce(p) = round_trip("produce", data) else {
        panic!()
    };
    assert_eq!(p.kind, MediaKind::Video);
    assert_eq!(p.rtp_parameters.encodings.len(), 3);
    assert_eq!(p.rtp_parameters.encodings[2].rid.as_deref(), Some("r2"));
    assert_eq!(p.rtp_parameters.mid.as_deref(), Some("0"));
    assert_eq!(p.app_data.get("source"), Some(&json!("webcam")));
    let id: IdResponse = exact_response("produce", json!({"id": "p1"}));
    assert_eq!(id.id, "p1");
}

#[test]
fn produce_request_for_opus_round_trips() {
    let data = json!({
        "transportId": "t1", "kind": "audio",
        "rtpParameters": {
            "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000,
                        "channels": 2, "parameters": {"minptime": 10, "useinbandfec": 1, "sprop-stereo": 1},
                        "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]}],
            "headerExtensions": [{"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 4, "encrypt": false, "parameters": {}}],
            "encodings": [{"ssrc": 1541519226, "dtx": false}],
            "rtcp": {"cname": "9bE5nVbNgrSIdWFZ", "reducedSize": true},
            "mid": "1"
        },
        "appData": {"source": "mic"}
    });
    let ClientRequest::Produce(p) = round_trip("produce", data) else {
        panic!()
    };
    assert_eq!(p.rtp_parameters.encodings[0].ssrc, Some(1541519226));
}

#[test]
fn producer_requests_round_trip_exactly() {
    for method in ["closeProducer", "pauseProducer", "resumeProducer"] {
        let req = exact_round_trip(method, json!({"producerId": "p1"}));
        assert!(matches!(
            req,
            ClientRequest::CloseProducer(ProducerRef { .. })
                | ClientRequest::PauseProducer(ProducerRef { .. })
                | ClientRequest::ResumeProducer(ProducerRef { .. })
        ));
        exact_response::<Empty>(method, json!({}));
    }
}

#[test]
fn produce_data_request_round_trips_exactly() {
    let ClientRequest::ProduceData(d) = exact_round_trip(
        "produceData",
        json!({"transportId": "t1",
               "sctpStreamParameters": {"streamId": 0, "ordered": false, "maxRetransmits": 1},
               "label": "chat", "protocol": "", "appData": {"info": "my-chat-DataProducer"}}),
    ) else {
        panic!()
    };
    assert_eq!(d.sctp_stream_parameters.max_retransmits, Some(1));
    assert_eq!(d.label, "chat");
    exact_response::<IdResponse>("produceData", json!({"id": "dp1"}));
}

#[test]
fn produce_data_request_defaults_label_protocol_and_app_data() {
    let ClientRequest::ProduceData(d) = round_trip(
        "produceData",
        json!({"transportId": "t1", "sctpStreamParameters": {"streamId": 3}}),
    ) else {
        panic!()
    };
    assert_eq!(d.label, "");
    assert_eq!(d.protocol, "");
    assert!(d.app_data.is_empty());
}

#[test]
fn consumer_requests_round_trip_exactly() {
    for method in ["pauseConsumer", "resumeConsumer", "requestConsumerKeyFrame"] {
        let req = exact_round_trip(method, json!({"consumerId": "c1"}));
        assert_eq!(req.method(), method);
        exact_response::<Empty>(method, json!({}));
    }
}

#[test]
fn set_consumer_preferred_layers_round_trips_with_and_without_temporal_layer() {
    let ClientRequest::SetConsumerPreferredLayers(l) = exact_round_trip(
        "setConsumerPreferredLayers",
        json!({"consumerId": "c1", "spatialLayer": 2, "temporalLayer": 1}),
    ) else {
        panic!()
    };
    assert_eq!((l.spatial_layer, l.temporal_layer), (2, Some(1)));
    exact_round_trip(
        "setConsumerPreferredLayers",
        json!({"consumerId": "c1", "spatialLayer": 0}),
    );
}

#[test]
fn set_consumer_priority_and_change_display_name_round_trip_exactly() {
    let req = exact_round_trip(
        "setConsumerPriority",
        json!({"consumerId": "c1", "priority": 2}),
    );
    assert_eq!(
        req,
        ClientRequest::SetConsumerPriority(SetConsumerPriorityRequest {
            consumer_id: "c1".into(),
            priority: 2
        })
    );
    let req = exact_round_trip("changeDisplayName", json!({"displayName": "Zed"}));
    assert_eq!(
        req,
        ClientRequest::ChangeDisplayName(ChangeDisplayNameRequest {
            display_name: "Zed".into()
        })
    );
}

#[test]
fn stats_requests_and_array_responses_round_trip_exactly() {
    for (method, data) in [
        ("getTransportStats", json!({"transportId": "t1"})),
        ("getProducerStats", json!({"producerId": "p1"})),
        ("getConsumerStats", json!({"consumerId": "c1"})),
        ("getDataProducerStats", json!({"dataProducerId": "dp1"})),
        ("getDataConsumerStats", json!({"dataConsumerId": "dc1"})),
    ] {
        exact_round_trip(method, data);
    }
    let stats: Stats = exact_response(
        "getTransportStats",
        json!([{"type": "webrtc-transport", "transportId": "t1", "timestamp": 1700000000000_u64,
                "bytesReceived": 123456, "iceState": "completed", "dtlsState": "connected"}]),
    );
    assert_eq!(stats.len(), 1);
}

#[test]
fn dispatch_action_round_trips_exactly_and_defaults_what_is_absent() {
    let req = exact_round_trip(
        "dispatchAction",
        json!({"type": "game.flag.move", "payload": {"x": 3}, "cache": true, "cacheKey": "red"}),
    );
    let ClientRequest::DispatchAction(d) = req else {
        panic!("{req:?}")
    };
    assert_eq!(
        (d.cache, d.cache_key.as_deref(), d.to),
        (true, Some("red"), None)
    );
    let ClientRequest::DispatchAction(d) = round_trip("dispatchAction", json!({"type": "chat"}))
    else {
        panic!()
    };
    assert_eq!((d.payload, d.cache), (Value::Null, false));
    exact_response::<DispatchActionResponse>("dispatchAction", json!({"seq": 7}));
}

#[test]
fn consume_and_consume_data_round_trip_exactly() {
    let req = exact_round_trip("consume", json!({"producerId": "p1"}));
    assert_eq!(
        req,
        ClientRequest::Consume(ConsumeRequest {
            producer_id: "p1".into()
        })
    );
    let req = exact_round_trip("consumeData", json!({"dataProducerId": "dp1"}));
    assert_eq!(
        req,
        ClientRequest::ConsumeData(ConsumeDataRequest {
            data_producer_id: "dp1".into()
        })
    );
}

#[test]
fn every_client_method_is_listed_once_and_decodes_by_its_name() {
    let mut names = ClientRequest::METHODS.to_vec();
    assert_eq!(names.len(), 24);
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 24);
    for method in ClientRequest::METHODS {
        // Wrong payload: never UnknownMethod for a listed name.
        let err = ClientRequest::decode(method, json!({"x": 1}));
        assert!(
            !matches!(err, Err(DecodeError::UnknownMethod(_))),
            "{method}"
        );
    }
}

#[test]
fn unknown_fields_in_payloads_are_ignored() {
    let ClientRequest::ResumeConsumer(c) = ClientRequest::decode(
        "resumeConsumer",
        json!({"consumerId": "c1", "futureField": {"a": [1, 2]}, "another": null}),
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(c.consumer_id, "c1");
    let mut data = json!({"transportId": "t1", "kind": "audio", "rtpParameters": {
        "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000,
                    "channels": 2, "newCodecField": true}],
        "encodings": [{"ssrc": 1, "active": true, "codecPayloadType": 111}],
        "rtcp": {"cname": "x"}}, "appData": {}});
    data["somethingNew"] = json!(42);
    assert!(ClientRequest::decode("produce", data).is_ok());
}

#[test]
fn null_app_data_reads_as_empty_object() {
    let ClientRequest::ProduceData(d) = ClientRequest::decode(
        "produceData",
        json!({"transportId": "t1", "sctpStreamParameters": {"streamId": 1}, "appData": null}),
    )
    .unwrap() else {
        panic!()
    };
    assert!(d.app_data.is_empty());
}

#[test]
fn null_data_reads_as_empty_object() {
    assert_eq!(
        ClientRequest::decode("getRouterRtpCapabilities", Value::Null).unwrap(),
        ClientRequest::GetRouterRtpCapabilities(Empty {})
    );
}
