//! The protoo envelope: parsing, serialising, and typed errors for every defect.

use serde_json::{Value, json};
use sluice_protocol::{DecodeError, ErrorCode, MAX_REQUEST_ID, Message, Response};

fn as_json(m: &Message) -> Value {
    serde_json::from_str(&m.to_json()).expect("helper: decodes")
}

#[test]
fn request_parses_and_serialises_back_to_the_same_json() {
    let text = r#"{"request":true,"id":5467892,"method":"join","data":{"displayName":"Alice"}}"#;
    let m = Message::parse(text).unwrap();
    assert_eq!(
        m,
        Message::request(5467892, "join", json!({"displayName": "Alice"}))
    );
    assert_eq!(m.method(), Some("join"));
    assert_eq!(as_json(&m), serde_json::from_str::<Value>(text).unwrap());
}

#[test]
fn notification_parses_and_serialises_back_to_the_same_json() {
    let text = r#"{"notification":true,"method":"peerClosed","data":{"peerId":"bob"}}"#;
    let m = Message::parse(text).unwrap();
    assert_eq!(
        m,
        Message::notification("peerClosed", json!({"peerId": "bob"}))
    );
    assert_eq!(m.to_json(), text);
}

#[test]
fn success_response_without_payload_serialises_empty_data_object() {
    assert_eq!(
        Message::ok_empty(12345).to_json(),
        r#"{"response":true,"id":12345,"ok":true,"data":{}}"#
    );
    assert_eq!(
        Message::ok(12345, Value::Null).to_json(),
        r#"{"response":true,"id":12345,"ok":true,"data":{}}"#
    );
}

#[test]
fn success_response_carries_any_json_payload() {
    let m = Message::ok(9, json!([{"type": "transport"}]));
    assert_eq!(
        m.to_json(),
        r#"{"response":true,"id":9,"ok":true,"data":[{"type":"transport"}]}"#
    );
    assert_eq!(Message::parse(&m.to_json()).unwrap(), m);
}

#[test]
fn error_response_carries_numeric_error_code_and_reason() {
    let m = Message::error(
        12345,
        ErrorCode::NotFound,
        "transport with id \"t1\" not found",
    );
    assert_eq!(
        as_json(&m),
        json!({"response": true, "id": 12345, "ok": false, "errorCode": 404,
               "errorReason": "transport with id \"t1\" not found"})
    );
    let parsed = Message::parse(&m.to_json()).unwrap();
    let Message::Response(r) = &parsed else {
        panic!("not a response: {parsed:?}")
    };
    assert_eq!(r.id(), 12345);
    assert_eq!(r.error_code(), Some(ErrorCode::NotFound));
    assert_eq!(
        *r,
        Response::Error {
            id: 12345,
            error_code: 404,
            error_reason: "transport with id \"t1\" not found".into()
        }
    );
}

#[test]
fn error_response_with_foreign_code_keeps_the_number() {
    let m =
        Message::parse(r#"{"response":true,"id":1,"ok":false,"errorCode":4000,"errorReason":"x"}"#)
            .unwrap();
    let Message::Response(r) = m else { panic!() };
    assert_eq!(r.error_code(), None);
    assert!(matches!(
        r,
        Response::Error {
            error_code: 4000,
            ..
        }
    ));
}

#[test]
fn error_response_without_reason_reads_as_empty_reason() {
    let m = Message::parse(r#"{"response":true,"id":1,"ok":false,"errorCode":500}"#).unwrap();
    assert_eq!(
        m,
        Message::Response(Response::Error {
            id: 1,
            error_code: 500,
            error_reason: String::new()
        })
    );
}

#[test]
fn absent_or_null_data_reads_as_empty_object() {
    let empty = json!({});
    for text in [
        r#"{"request":true,"id":1,"method":"getRouterRtpCapabilities"}"#,
        r#"{"request":true,"id":1,"method":"getRouterRtpCapabilities","data":null}"#,
    ] {
        let Message::Request { data, .. } = Message::parse(text).unwrap() else {
            panic!()
        };
        assert_eq!(data, empty);
    }
    let Message::Notification { data, .. } =
        Message::parse(r#"{"notification":true,"method":"x"}"#).unwrap()
    else {
        panic!()
    };
    assert_eq!(data, empty);
    let Message::Response(Response::Ok { data, .. }) =
        Message::parse(r#"{"response":true,"id":3,"ok":true}"#).unwrap()
    else {
        panic!()
    };
    assert_eq!(data, empty);
}

#[test]
fn unknown_envelope_fields_are_ignored() {
    let m =
        Message::parse(r#"{"request":true,"id":1,"method":"m","data":{},"extra":[1,2]}"#).unwrap();
    assert_eq!(m, Message::request(1, "m", json!({})));
}

#[test]
fn malformed_json_is_not_json_error() {
    for text in ["", "{", "{\"request\":true,", "nope", "{'request':true}"] {
        assert!(
            matches!(Message::parse(text), Err(DecodeError::NotJson(_))),
            "{text:?}"
        );
    }
}

#[test]
fn non_object_json_is_not_an_object_error() {
    for text in [
        "[]",
        "[{\"request\":true}]",
        "42",
        "\"request\"",
        "null",
        "true",
    ] {
        assert_eq!(
            Message::parse(text),
            Err(DecodeError::NotAnObject),
            "{text:?}"
        );
    }
}

#[test]
fn object_without_kind_flag_is_unknown_kind_error() {
    for text in [
        r#"{}"#,
        r#"{"id":1,"method":"join"}"#,
        r#"{"request":false,"id":1,"method":"join"}"#,
        r#"{"request":"true","id":1,"method":"join"}"#,
        r#"{"request":1,"id":1,"method":"join"}"#,
    ] {
        assert_eq!(
            Message::parse(text),
            Err(DecodeError::UnknownKind),
            "{text:?}"
        );
    }
}

#[test]
fn request_without_id_is_missing_field_error() {
    assert_eq!(
        Message::parse(r#"{"request":true,"method":"join","data":{}}"#),
        Err(DecodeError::MissingField("id"))
    );
    assert_eq!(
        Message::parse(r#"{"response":true,"ok":true,"data":{}}"#),
        Err(DecodeError::MissingField("id"))
    );
}

#[test]
fn string_negative_fractional_or_huge_id_is_invalid_field_error() {
    for id in [
        r#""12345""#,
        "-1",
        "1.5",
        "9007199254740992",
        "1e300",
        "[1]",
        "{}",
        "true",
    ] {
        let text = format!(r#"{{"request":true,"id":{id},"method":"join","data":{{}}}}"#);
        assert!(
            matches!(
                Message::parse(&text),
                Err(DecodeError::InvalidField { field: "id", .. })
            ),
            "{text}"
        );
    }
}

#[test]
fn ids_up_to_max_safe_integer_and_integral_floats_are_accepted() {
    for (id, expected) in [
        ("0", 0),
        ("9999999", 9_999_999),
        ("9007199254740991", MAX_REQUEST_ID),
        ("12345.0", 12345),
    ] {
        let text = format!(r#"{{"request":true,"id":{id},"method":"join"}}"#);
        let Message::Request { id, .. } = Message::parse(&text).unwrap() else {
            panic!()
        };
        assert_eq!(id, expected);
    }
}

#[test]
fn request_without_method_is_missing_field_error() {
    assert_eq!(
        Message::parse(r#"{"request":true,"id":1,"data":{}}"#),
        Err(DecodeError::MissingField("method"))
    );
    assert_eq!(
        Message::parse(r#"{"notification":true,"data":{}}"#),
        Err(DecodeError::MissingField("method"))
    );
}

#[test]
fn non_string_or_empty_method_is_invalid_field_error() {
    for method in ["42", "\"\"", "[\"join\"]"] {
        let text = format!(r#"{{"request":true,"id":1,"method":{method}}}"#);
        assert!(
            matches!(
                Message::parse(&text),
                Err(DecodeError::InvalidField {
                    field: "method",
                    ..
                })
            ),
            "{text}"
        );
    }
}

#[test]
fn response_with_missing_or_mistyped_ok_or_error_code_is_typed_error() {
    assert_eq!(
        Message::parse(r#"{"response":true,"id":1,"data":{}}"#),
        Err(DecodeError::MissingField("ok"))
    );
    assert!(matches!(
        Message::parse(r#"{"response":true,"id":1,"ok":"yes"}"#),
        Err(DecodeError::InvalidField { field: "ok", .. })
    ));
    assert_eq!(
        Message::parse(r#"{"response":true,"id":1,"ok":false,"errorReason":"x"}"#),
        Err(DecodeError::MissingField("errorCode"))
    );
    for code in ["\"404\"", "70000", "-1", "4.5"] {
        let text = format!(r#"{{"response":true,"id":1,"ok":false,"errorCode":{code}}}"#);
        assert!(
            matches!(
                Message::parse(&text),
                Err(DecodeError::InvalidField {
                    field: "errorCode",
                    ..
                })
            ),
            "{text}"
        );
    }
    assert!(matches!(
        Message::parse(r#"{"response":true,"id":1,"ok":false,"errorCode":500,"errorReason":5}"#),
        Err(DecodeError::InvalidField {
            field: "errorReason",
            ..
        })
    ));
}

#[test]
fn kind_flags_are_checked_in_protoo_order() {
    let m = Message::parse(r#"{"notification":true,"request":true,"id":1,"method":"m"}"#).unwrap();
    assert!(matches!(m, Message::Request { .. }));
}

#[test]
fn request_id_is_recovered_from_a_request_that_fails_to_parse() {
    let text = r#"{"request":true,"id":77,"data":{}}"#;
    assert!(Message::parse(text).is_err());
    assert_eq!(Message::recover_request_id(text), Some(77));
    assert_eq!(Message::recover_request_id(r#"{"request":true}"#), None);
    assert_eq!(
        Message::recover_request_id(r#"{"notification":true,"id":3}"#),
        None
    );
    assert_eq!(Message::recover_request_id("garbage"), None);
}

#[test]
fn request_id_is_recovered_from_a_request_serde_json_cannot_parse() {
    let deep = format!(
        r#"{{"request":true,"data":{}{},"id":9}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let cases: [(&str, &str); 8] = [
        (
            "lone surrogate",
            r#"{"request":true,"id":3,"method":"join","data":{"displayName":"\ud800"}}"#,
        ),
        ("nesting beyond 128", deep.as_str()),
        (
            "NaN",
            r#"{"request":true,"id":4,"method":"m","data":{"x":NaN}}"#,
        ),
        ("trailing comma", r#"{"request":true,"id":5,"method":"m",}"#),
        (
            "trailing comma inside data",
            r#"{"id":6,"data":{"a":[1,],},"request":true,"method":"m"}"#,
        ),
        ("integral float", r#"{"request":true,"id":7.0,"x":NaN}"#),
        (
            "escaped quotes and braces in strings",
            r#"{"request":true,"data":{"s":"\"}{["},"id":8,"x":NaN}"#,
        ),
        (
            "truncated after the id",
            r#"{"request":true,"id":10,"method":"jo"#,
        ),
    ];
    for (what, text) in cases {
        assert!(
            Message::parse(text).is_err(),
            "{what}: serde_json refuses it"
        );
        assert!(
            Message::recover_request_id(text).is_some(),
            "{what}: the id is recovered from {text}"
        );
    }
    assert_eq!(Message::recover_request_id(cases[0].1), Some(3));
    assert_eq!(Message::recover_request_id(&deep), Some(9));
    assert_eq!(Message::recover_request_id(cases[5].1), Some(7));
    assert_eq!(Message::recover_request_id(cases[7].1), Some(10));
    // Not a request, or no valid id: nothing to answer with.
    for text in [
        r#"{"request":false,"id":3,"x":NaN}"#,
        r#"{"notification":true,"id":3,"x":NaN}"#,
        r#"{"request":true,"id":"abc","x":NaN}"#,
        r#"{"request":true,"id":-1,"x":NaN}"#,
        r#"{"request":true,"id":1.5,"x":NaN}"#,
        r#"{"request":true,"id":true,"x":NaN}"#,
        r#"{"request":true,"id":9007199254740992,"x":NaN}"#,
        r#"{"request":true,"id":NaN}"#,
        r#"{"request":true,"x":NaN}"#,
        r#"{"data":{"request":true,"id":3},"x":NaN}"#,
        r#"[{"request":true,"id":3}"#,
        "{",
        "",
        "\"",
    ] {
        assert_eq!(Message::recover_request_id(text), None, "{text}");
    }
    // Valid JSON with a bad id is not answered either.
    for text in [
        r#"{"request":true,"id":"abc"}"#,
        r#"{"request":true,"id":-1}"#,
        r#"{"request":true,"id":1.5}"#,
    ] {
        assert_eq!(Message::recover_request_id(text), None, "{text}");
    }
}

#[test]
fn a_lone_surrogate_escape_is_named_in_the_error() {
    let text = r#"{"request":true,"id":3,"method":"join","data":{"displayName":"ab\ud800"}}"#;
    let err = Message::parse(text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not JSON: lone surrogate \\ud800 in a string at line 1 column 65 (half of a UTF-16 pair)"
    );
    assert_eq!(err.error_code(), ErrorCode::BadRequest);
    // A whole pair is fine, an escaped backslash before "ud800" is no escape, and a lone trailing
    // half is named too.
    assert!(
        Message::parse(r#"{"notification":true,"method":"m","data":{"s":"\ud83d\ude00"}}"#).is_ok()
    );
    assert!(Message::parse(r#"{"notification":true,"method":"m","data":{"s":"\\ud800"}}"#).is_ok());
    let err = Message::parse(r#"{"s":"\udc00"}"#).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("not JSON: lone surrogate \\udc00"),
        "{err}"
    );
    // Another defect before it is reported as serde_json words it.
    let err = Message::parse(r#"{"x":NaN,"s":"\ud800"}"#).unwrap_err();
    assert!(!err.to_string().contains("surrogate"), "{err}");
}

#[test]
fn message_implements_serde_both_ways() {
    let m = Message::error(3, ErrorCode::Conflict, "already joined");
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(v, m.to_value());
    let back: Message = serde_json::from_value(v).unwrap();
    assert_eq!(back, m);
    assert!(serde_json::from_value::<Message>(json!({"request": true})).is_err());
}

#[test]
fn decode_errors_map_to_bad_request_except_unknown_method() {
    let errors = [
        Message::parse("{").unwrap_err(),
        Message::parse("[]").unwrap_err(),
        Message::parse("{}").unwrap_err(),
        Message::parse(r#"{"request":true,"method":"x"}"#).unwrap_err(),
        Message::parse(r#"{"request":true,"id":"1","method":"x"}"#).unwrap_err(),
    ];
    for e in errors {
        assert_eq!(e.error_code(), ErrorCode::BadRequest, "{e}");
        assert_eq!(e.error_code().as_u16(), 400);
    }
}
