//! Every JSON example in `docs/protocol.md` is a valid frame that the typed decoders accept, and
//! every method has an example, so the reference cannot drift from the code.

use serde_json::Value;
use sluice_ortc::{IceParameters, RtpCapabilities};
use sluice_protocol::*;

const DOC: &str = include_str!("../../../docs/protocol.md");

/// The frames of every ```json block: the whole block if it is one object, else one per line.
fn frames() -> Vec<String> {
    let mut frames = Vec::new();
    let mut block: Option<String> = None;
    for line in DOC.lines() {
        match (&mut block, line.trim_start()) {
            (None, "```json") => block = Some(String::new()),
            (Some(text), "```") => {
                if serde_json::from_str::<Value>(text).is_ok() {
                    frames.push(text.clone());
                } else {
                    frames.extend(
                        text.lines()
                            .filter(|l| !l.trim().is_empty())
                            .map(str::to_owned),
                    );
                }
                block = None;
            }
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    frames
}

/// Decodes a success response's data as the result type of `method`.
fn decode_result(method: &'static str, data: Value) -> Result<(), DecodeError> {
    match method {
        "getRouterRtpCapabilities" => decode_payload::<RtpCapabilities>(method, data).map(drop),
        "join" => decode_payload::<JoinResponse>(method, data).map(drop),
        "createWebRtcTransport" => {
            decode_payload::<CreateWebRtcTransportResponse>(method, data).map(drop)
        }
        "restartIce" => decode_payload::<IceParameters>(method, data).map(drop),
        "produce" | "produceData" => decode_payload::<IdResponse>(method, data).map(drop),
        "dispatchAction" => decode_payload::<DispatchActionResponse>(method, data).map(drop),
        "consume" => decode_payload::<NewConsumerRequest>(method, data).map(drop),
        "consumeData" => decode_payload::<NewDataConsumerRequest>(method, data).map(drop),
        m if m.starts_with("get") && m.ends_with("Stats") => {
            decode_payload::<Stats>(method, data).map(drop)
        }
        _ => decode_payload::<Empty>(method, data).map(drop),
    }
}

#[test]
fn every_json_example_in_the_protocol_doc_decodes_with_the_typed_decoders() {
    let mut last_request: Option<&'static str> = None;
    let mut seen = Vec::new();
    let frames = frames();
    assert!(frames.len() > 40, "found only {} frames", frames.len());
    for frame in &frames {
        let message = Message::parse(frame).unwrap_or_else(|e| panic!("{e}: {frame}"));
        match message {
            Message::Request { method, data, .. } => {
                let name = match ClientRequest::decode(&method, data.clone()) {
                    Ok(r) => r.method(),
                    Err(DecodeError::UnknownMethod(_)) => ServerRequest::decode(&method, data)
                        .unwrap_or_else(|e| panic!("{e}: {frame}"))
                        .method(),
                    Err(e) => panic!("{e}: {frame}"),
                };
                seen.push(name);
                last_request = Some(name);
            }
            Message::Response(Response::Ok { data, .. }) => {
                let method = last_request.unwrap_or_else(|| panic!("response first: {frame}"));
                decode_result(method, data).unwrap_or_else(|e| panic!("{e}: {frame}"));
            }
            Message::Response(Response::Error { error_code, .. }) => {
                assert!(ErrorCode::from_u16(error_code).is_some(), "{frame}");
            }
            Message::Notification { method, data } => {
                let n = ServerNotification::decode(&method, data)
                    .unwrap_or_else(|e| panic!("{e}: {frame}"));
                seen.push(n.method());
            }
        }
    }
    // Every method and notification is documented, as a frame or by name.
    for method in ClientRequest::METHODS
        .iter()
        .chain(ServerRequest::METHODS)
        .chain(ServerNotification::METHODS)
    {
        assert!(
            seen.contains(method) || DOC.contains(&format!("`{method}`")),
            "{method} is not documented"
        );
    }
}

#[test]
fn every_error_code_is_in_the_protocol_doc_table() {
    for code in ErrorCode::ALL {
        let row = format!("| {} | `{}` |", code.as_u16(), code.name());
        assert!(DOC.contains(&row), "missing row {row}");
    }
}
