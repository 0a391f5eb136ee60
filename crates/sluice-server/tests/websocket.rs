//! The WebSocket closing handshake as a raw client sees it.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
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
