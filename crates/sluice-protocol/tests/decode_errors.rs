//! Payloads that do not fit their method are typed errors naming the method, never panics.

use serde_json::{Value, json};
use sluice_protocol::*;

fn malformed(method: &str, data: Value) -> (String, String) {
    match ClientRequest::decode(method, data) {
        Err(DecodeError::MalformedPayload { method, reason }) => (method.to_owned(), reason),
        other => panic!("expected MalformedPayload for {method}, got {other:?}"),
    }
}

#[test]
fn unknown_method_is_unknown_method_error_with_501() {
    let err = ClientRequest::decode("applyNetworkThrottle", json!({})).unwrap_err();
    assert_eq!(
        err,
        DecodeError::UnknownMethod("applyNetworkThrottle".into())
    );
    assert_eq!(err.error_code(), ErrorCode::UnknownMethod);
    assert_eq!(err.error_code().as_u16(), 501);
    // Method names are case-sensitive, as in protoo.
    assert!(matches!(
        ClientRequest::decode("JOIN", json!({})),
        Err(DecodeError::UnknownMethod(_))
    ));
    // A server→client method is not a client request.
    assert!(matches!(
        ClientRequest::decode("newConsumer", json!({})),
        Err(DecodeError::UnknownMethod(_))
    ));
}

#[test]
fn very_long_unknown_method_is_truncated_in_the_error() {
    let long = "x".repeat(10_000);
    let DecodeError::UnknownMethod(m) = ClientRequest::decode(&long, json!({})).unwrap_err() else {
        panic!()
    };
    assert!(m.chars().count() <= MAX_REASON_CHARS + 1);
}

#[test]
fn produce_request_missing_rtp_parameters_is_malformed_payload() {
    let (method, reason) = malformed(
        "produce",
        json!({"transportId": "t1", "kind": "video", "appData": {}}),
    );
    assert_eq!(method, "produce");
    assert!(reason.contains("rtpParameters"), "{reason}");
    let err = ClientRequest::decode("produce", json!({"transportId": "t1", "kind": "video"}))
        .unwrap_err();
    assert_eq!(err.error_code(), ErrorCode::BadRequest);
    assert!(
        err.to_string().starts_with("malformed produce payload"),
        "{err}"
    );
}

#[test]
fn required_fields_missing_are_malformed_payload_naming_the_field() {
    for (method, data, field) in [
        ("join", json!({"device": {}}), "displayName"),
        (
            "connectWebRtcTransport",
            json!({"transportId": "t1"}),
            "dtlsParameters",
        ),
        ("restartIce", json!({}), "transportId"),
        ("closeProducer", json!({"consumerId": "c1"}), "producerId"),
        (
            "produceData",
            json!({"transportId": "t1"}),
            "sctpStreamParameters",
        ),
        (
            "setConsumerPreferredLayers",
            json!({"consumerId": "c1"}),
            "spatialLayer",
        ),
        (
            "setConsumerPriority",
            json!({"consumerId": "c1"}),
            "priority",
        ),
        ("changeDisplayName", json!({}), "displayName"),
        (
            "getDataConsumerStats",
            json!({"dataProducerId": "x"}),
            "dataConsumerId",
        ),
    ] {
        let (m, reason) = malformed(method, data);
        assert_eq!(m, method);
        assert!(reason.contains(field), "{method}: {reason}");
    }
}

#[test]
fn wrong_types_are_malformed_payload() {
    for (method, data) in [
        ("join", json!({"displayName": 42})),
        (
            "join",
            json!({"displayName": "a", "rtpCapabilities": "all"}),
        ),
        ("join", json!({"displayName": "a", "device": {"flag": 1}})),
        ("createWebRtcTransport", json!({"producing": "yes"})),
        ("createWebRtcTransport", json!({"appData": [1, 2]})),
        (
            "produce",
            json!({"transportId": "t1", "kind": "screen", "rtpParameters": {"codecs": []}}),
        ),
        (
            "produce",
            json!({"transportId": 7, "kind": "audio", "rtpParameters": {"codecs": []}}),
        ),
        (
            "produce",
            json!({"transportId": "t1", "kind": "audio",
                           "rtpParameters": {"codecs": [{"mimeType": "audio/opus", "payloadType": 300, "clockRate": 48000}]}}),
        ),
        (
            "setConsumerPreferredLayers",
            json!({"consumerId": "c1", "spatialLayer": -1}),
        ),
        (
            "setConsumerPreferredLayers",
            json!({"consumerId": "c1", "spatialLayer": 1.5}),
        ),
        (
            "setConsumerPriority",
            json!({"consumerId": "c1", "priority": 256}),
        ),
        ("resumeConsumer", json!({"consumerId": null})),
        ("resumeConsumer", json!({"consumerId": ["c1"]})),
    ] {
        let (m, _) = malformed(method, data.clone());
        assert_eq!(m, method, "{data}");
    }
}

#[test]
fn non_object_data_is_malformed_payload() {
    for data in [json!([]), json!(["t1"]), json!("t1"), json!(1), json!(true)] {
        let (_, reason) = malformed("restartIce", data);
        assert_eq!(reason, "data must be a JSON object");
    }
}

#[test]
fn server_side_decoders_return_typed_errors_too() {
    assert!(matches!(
        ServerRequest::decode("join", json!({})),
        Err(DecodeError::UnknownMethod(_))
    ));
    assert!(matches!(
        ServerNotification::decode("newPeer", json!({"id": "p"})),
        Err(DecodeError::MalformedPayload {
            method: "newPeer",
            ..
        })
    ));
    assert!(matches!(
        ServerRequest::from_message(&Message::notification("newConsumer", json!({}))),
        Err(DecodeError::UnexpectedKind {
            expected: "request"
        })
    ));
    assert!(matches!(
        ServerNotification::from_message(&Message::ok_empty(1)),
        Err(DecodeError::UnexpectedKind {
            expected: "notification"
        })
    ));
    assert!(matches!(
        ClientRequest::from_message(&Message::notification("join", json!({}))),
        Err(DecodeError::UnexpectedKind {
            expected: "request"
        })
    ));
}

#[test]
fn decode_payload_reports_the_method_for_response_types() {
    let err = decode_payload::<JoinResponse>("join", json!({"peers": {}})).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::MalformedPayload { method: "join", .. }
    ));
}

#[test]
fn malformed_payload_names_the_path_of_a_nested_bad_field() {
    let (method, reason) = malformed(
        "produce",
        json!({
            "transportId": "t1",
            "kind": "audio",
            "rtpParameters": {
                "codecs": [{"mimeType": "audio/opus", "payloadType": "one-eleven", "clockRate": 48000}]
            }
        }),
    );
    assert_eq!(method, "produce");
    assert!(
        reason.starts_with("rtpParameters.codecs[0].payloadType: "),
        "{reason}"
    );
}
