//! A real sluice server on loopback, started by the test, and helpers to talk to it.
#![allow(dead_code, clippy::unwrap_used)] // Test scaffolding: a panic is a test failure.

use std::sync::Arc;
use std::time::Duration;

use sluice_client::{Session, SessionEvent, SessionOptions, SignalingClient, ws_url};
use sluice_server::auth::Grants;
use sluice_server::instance::Instance;
use sluice_server::{Config, Server};
use tokio::sync::oneshot;

pub struct TestServer {
    pub base: String,
    pub instance: Arc<Instance>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_built(tweak, Server::builder).await
    }

    /// A server whose rooms run the game logic `factory` makes.
    pub async fn start_with_game(
        tweak: impl FnOnce(&mut Config),
        factory: impl Fn(&str) -> Option<Box<dyn sluice_server::game::GameLogic>>
        + Send
        + Sync
        + 'static,
    ) -> TestServer {
        Self::start_built(tweak, |config| Server::builder(config).game_logic(factory)).await
    }

    async fn start_built(
        tweak: impl FnOnce(&mut Config),
        build: impl FnOnce(Config) -> sluice_server::ServerBuilder,
    ) -> TestServer {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut config = Config::embedded_default().unwrap();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.rtc.port = 0;
        config.workers = 1;
        tweak(&mut config);
        let server = build(config).bind().await.unwrap();
        let base = format!("http://{}", server.local_addr());
        let instance = server.instance().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        TestServer {
            base,
            instance,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn token(&self, room: &str, peer: &str, grants: Grants) -> String {
        self.instance
            .auth
            .mint(room, peer, grants, 600, sluice_server::auth::unix_now())
            .unwrap()
    }

    pub fn url(&self, room: &str, peer: &str) -> String {
        ws_url(
            &self.base,
            room,
            peer,
            &self.token(room, peer, Grants::player()),
        )
    }

    pub async fn signaling(&self, room: &str, peer: &str) -> SignalingClient {
        SignalingClient::connect(&self.url(room, peer))
            .await
            .unwrap()
    }

    pub async fn session(&self, room: &str, peer: &str) -> Session {
        self.session_with(room, peer, Grants::player(), SessionOptions::new(peer))
            .await
    }

    pub async fn session_with(
        &self,
        room: &str,
        peer: &str,
        grants: Grants,
        options: SessionOptions,
    ) -> Session {
        let url = ws_url(&self.base, room, peer, &self.token(room, peer, grants));
        let signaling = SignalingClient::connect(&url).await.unwrap();
        Session::join(signaling, options).await.unwrap()
    }

    pub fn admin_token(&self) -> String {
        let grants = Grants {
            admin: true,
            ..Grants::default()
        };
        self.token("*", "admin", grants)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        http("GET", &self.base, path, token).await
    }

    /// Stops the server the way SIGTERM does and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
    }
}

/// A minimal HTTP/1.1 request over a TCP socket (no client crate needed for a few admin calls).
pub async fn http(method: &str, base: &str, path: &str, token: Option<&str>) -> (u16, String) {
    http_body(method, base, path, token, "").await
}

/// The same with a JSON body.
pub async fn http_body(
    method: &str,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Waits for a consumer event of `kind` and returns its packet stream.
pub async fn wait_consumer(
    session: &mut Session,
    kind: sluice_media::ortc::MediaKind,
) -> (
    String,
    String,
    tokio::sync::mpsc::UnboundedReceiver<sluice_client::ReceivedRtp>,
) {
    match session
        .wait_event(
            Duration::from_secs(10),
            |e| matches!(e, SessionEvent::Consumer { kind: k, .. } if *k == kind),
        )
        .await
    {
        Some(SessionEvent::Consumer {
            id,
            peer_id,
            packets,
            ..
        }) => (id, peer_id, packets),
        other => panic!("no {kind} consumer: {other:?}"),
    }
}

/// Waits for a notification matching `f`.
pub async fn wait_notification(
    session: &mut Session,
    timeout: Duration,
    mut f: impl FnMut(&sluice_protocol::ServerNotification) -> bool,
) -> Option<sluice_protocol::ServerNotification> {
    match session
        .wait_event(
            timeout,
            |e| matches!(e, SessionEvent::Notification(n) if f(n)),
        )
        .await
    {
        Some(SessionEvent::Notification(n)) => Some(n),
        _ => None,
    }
}

/// `getRouterRtpCapabilities` then `join` over a bare signaling client.
pub async fn join_raw(client: &SignalingClient, name: &str) {
    let caps = client
        .request_raw("getRouterRtpCapabilities", serde_json::json!({}))
        .await
        .unwrap();
    client
        .request_raw(
            "join",
            serde_json::json!({"displayName": name, "device": {"name": "test"}, "rtpCapabilities": caps}),
        )
        .await
        .unwrap();
}

/// The next server request or notification named `method`, skipping others; a request is
/// answered `{}`. Panics after 10 s or if the connection ends.
pub async fn next_named(client: &SignalingClient, method: &str) -> serde_json::Value {
    use sluice_client::Incoming;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match client.next().await {
                Some(Incoming::Request {
                    id,
                    method: m,
                    data,
                }) if m == method => {
                    client.respond(id, Ok(serde_json::json!({}))).unwrap();
                    return data;
                }
                Some(Incoming::Notification { method: m, data }) if m == method => return data,
                Some(Incoming::Closed { code, reason }) => panic!("closed: {code:?} {reason}"),
                None => panic!("connection ended"),
                Some(_) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{method} within 10 s"))
}

/// `createWebRtcTransport`'s data for a send (`producing`) or receive transport with SCTP.
pub fn transport_request(producing: bool, app_data: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "producing": producing, "consuming": !producing,
        "sctpCapabilities": {"numStreams": {"OS": 1024, "MIS": 1024}},
        "appData": app_data,
    })
}

/// A WebRTC transport over a bare signaling client, with SCTP.
pub async fn transport_raw(
    client: &SignalingClient,
    producing: bool,
    app_data: serde_json::Value,
) -> serde_json::Value {
    client
        .request_raw(
            "createWebRtcTransport",
            transport_request(producing, app_data),
        )
        .await
        .unwrap()
}

/// An opus producer on `transport_id` (no media needs to flow for the server to hold it).
pub async fn produce_audio_raw(
    client: &SignalingClient,
    transport_id: &str,
    ssrc: u32,
    app_data: serde_json::Value,
) -> String {
    let answer = client
        .request_raw(
            "produce",
            serde_json::json!({
                "transportId": transport_id, "kind": "audio",
                "rtpParameters": {
                    "mid": "0",
                    "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}],
                    "encodings": [{"ssrc": ssrc}]
                },
                "appData": app_data
            }),
        )
        .await
        .unwrap();
    answer["id"].as_str().unwrap().to_owned()
}
