//! The WebSocket as a raw client sees it: the closing handshake, frames the server cannot
//! parse, binary frames, and a client that stops reading.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sluice_server::config::{ActionRule, ActionSender};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw_socket(server: &TestServer, room: &str, peer: &str) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = server.url(room, peer).into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "protoo".parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The next frame that is not a ping or pong (a deadline only turns a hang into a failure).
async fn next_frame(
    socket: &mut Socket,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the server neither answered nor closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_is_answered_with_a_close_frame_and_the_connection_ends_cleanly() {
    let server = TestServer::start(|_| {}).await;
    let mut socket = raw_socket(&server, "r", "p").await;
    socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    match next_frame(&mut socket).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the server's close frame, got {other:?}"),
    }
    // After the handshake the stream ends without an error (no reset).
    assert!(
        next_frame(&mut socket).await.is_none(),
        "the connection ends after the close handshake"
    );
    let room = server.instance.room("r").await;
    assert!(room.is_none_or(|r| r.peer("p").is_none()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_that_is_not_utf8_closes_the_connection_with_1007() {
    let server = TestServer::start(|_| {}).await;
    let mut socket = raw_socket(&server, "r", "p").await;
    let invalid = vec![b'{', 0xff, 0xfe, b'}'];
    socket
        .send(Message::Frame(Frame::message(
            invalid,
            OpCode::Data(Data::Text),
            true,
        )))
        .await
        .unwrap();
    match next_frame(&mut socket).await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1007, "{frame:?}")
        }
        other => panic!("expected a close frame with 1007, got {other:?}"),
    }
    server.stop().await;
}

/// The next text frame, as JSON.
async fn next_json(socket: &mut Socket) -> Value {
    match next_frame(socket).await {
        Some(Ok(Message::Text(text))) => serde_json::from_str(text.as_str()).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_serde_json_refuses_are_answered_400_with_their_id() {
    let server = TestServer::start(|_| {}).await;
    let mut socket = raw_socket(&server, "r", "p").await;
    // JSON.stringify writes a name cut in the middle of an emoji this way.
    let lone_surrogate =
        r#"{"request":true,"id":3,"method":"join","data":{"displayName":"\ud800"}}"#;
    let deep = format!(
        r#"{{"request":true,"id":4,"method":"join","data":{{"x":{}{}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let nan = r#"{"request":true,"id":5,"method":"join","data":{"x":NaN}}"#;
    let trailing_comma = r#"{"request":true,"id":6,"method":"join","data":{},}"#;
    let expected = [
        (
            lone_surrogate,
            3,
            "not JSON: lone surrogate \\ud800 in a string at line 1 column 63 (half of a UTF-16 pair)",
        ),
        (deep.as_str(), 4, "not JSON: recursion limit exceeded"),
        (nan, 5, "not JSON: expected value"),
        (trailing_comma, 6, "not JSON: trailing comma"),
    ];
    for (frame, id, reason) in expected {
        socket.send(Message::Text(frame.into())).await.unwrap();
        let answer = next_json(&mut socket).await;
        assert_eq!(answer["response"], json!(true), "{answer}");
        assert_eq!(answer["id"], json!(id), "{answer}");
        assert_eq!(answer["ok"], json!(false), "{answer}");
        assert_eq!(answer["errorCode"], json!(400), "{answer}");
        let got = answer["errorReason"].as_str().unwrap();
        if id == 3 {
            assert_eq!(got, reason);
        } else {
            assert!(got.starts_with(reason), "{id}: {got:?}");
        }
    }
    // Ids protoo cannot match are not answered: the next answer is the next valid request's.
    for id in [r#""abc""#, "-1", "1.5", "true"] {
        let frame = format!(r#"{{"request":true,"id":{id},"method":"join","data":{{"x":NaN}}}}"#);
        socket.send(Message::Text(frame.into())).await.unwrap();
    }
    let caps = r#"{"request":true,"id":7,"method":"getRouterRtpCapabilities","data":{}}"#;
    socket.send(Message::Text(caps.into())).await.unwrap();
    let answer = next_json(&mut socket).await;
    assert_eq!(answer["id"], json!(7), "{answer}");
    assert_eq!(answer["ok"], json!(true), "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_are_dropped_and_a_flood_of_them_is_closed_with_1008() {
    let server = TestServer::start(|c| c.limits.requests_per_second = 5).await;
    let mut socket = raw_socket(&server, "r", "p").await;
    socket
        .send(Message::Binary(b"{}".to_vec().into()))
        .await
        .unwrap();
    // Not answered, and the connection stays usable.
    let caps = r#"{"request":true,"id":1,"method":"getRouterRtpCapabilities","data":{}}"#;
    socket.send(Message::Text(caps.into())).await.unwrap();
    let answer = next_json(&mut socket).await;
    assert_eq!(answer["id"], json!(1), "{answer}");
    assert_eq!(answer["ok"], json!(true), "{answer}");
    // Each binary frame takes a token of the request limiter (5/s, bursts of 10): a flood is
    // refused, and more than twice the burst refused in a row closes the connection. 200 frames
    // are more than 10 + 20 + what 5/s refills in any time the sends can take before the close.
    for _ in 0..200 {
        if socket
            .send(Message::Binary(vec![0u8; 64].into()))
            .await
            .is_err()
        {
            break;
        }
    }
    match next_frame(&mut socket).await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
            assert_eq!(frame.reason.as_str(), "request flood");
        }
        other => panic!("expected a close frame with 1008, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_closed_with_4002_once_8_mib_are_queued_and_receives_the_code()
{
    let server = TestServer::start(|c| {
        c.limits.requests_per_second = 100_000;
        c.actions = vec![ActionRule {
            r#type: "*".to_owned(),
            sender: ActionSender::Any,
            max_payload_bytes: 200_000,
            max_per_second: None,
            burst: None,
            cache: false,
            max_cached: 1,
        }];
    })
    .await;
    // A peer that joins and then does not read.
    let mut slow = raw_socket(&server, "r", "slow").await;
    let join = r#"{"request":true,"id":1,"method":"join","data":{"displayName":"slow"}}"#;
    slow.send(Message::Text(join.into())).await.unwrap();
    // The room exists once the join is handled, not when the socket is upgraded.
    let room = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(room) = server.instance.room("r").await
                && room.peer("slow").is_some_and(|p| p.is_joined())
            {
                break room;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    // Another peer sends it actions of 190 KB until the server gives up on it: far fewer than
    // the 4096 frames the queue also allows, so the byte limit is what closes it.
    let sender = server.signaling("r", "sender").await;
    join_raw(&sender, "sender").await;
    let payload = "x".repeat(190_000);
    let mut sent = 0;
    while room.peer("slow").is_some() {
        assert!(sent < 4096, "the slow peer was never closed");
        let _ = sender
            .request_raw(
                "dispatchAction",
                json!({"type": "game.x", "payload": payload, "to": ["slow"]}),
            )
            .await;
        sent += 1;
    }
    // Reading now, it gets what the socket buffered (its backlog was dropped), then the close.
    let mut received = 0;
    let close = loop {
        match next_frame(&mut slow).await {
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(Message::Close(frame))) => break frame,
            other => panic!("expected frames then a close, got {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 4002, "{close:?}");
    assert_eq!(close.reason.as_str(), "too slow: over 8388608 bytes queued");
    assert!(
        received < sent + 1,
        "the backlog was dropped: {received} of {sent}"
    );
    server.stop().await;
}
