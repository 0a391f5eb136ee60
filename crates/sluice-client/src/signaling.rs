//! `SignalingClient`: protoo over a WebSocket, as protoo-client speaks it: requests both ways,
//! responses matched by id, notifications.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sluice_protocol::{ClientRequest, Message, Response, ServerNotification, ServerRequest};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Why signaling failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalingError {
    /// The server refused the WebSocket upgrade with this HTTP status.
    #[error("upgrade refused with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("cannot connect: {0}")]
    Connect(String),
    /// An error response: the protoo `errorCode` and `errorReason`.
    #[error("request failed: {code} {reason}")]
    Request { code: u16, reason: String },
    #[error("timed out")]
    Timeout,
    #[error("the connection is closed")]
    Closed,
}

impl SignalingError {
    /// The protoo error code of a failed request.
    pub fn code(&self) -> Option<u16> {
        match self {
            SignalingError::Request { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Something the server sent that is not a response.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A server request; answer it with [`SignalingClient::respond`].
    Request {
        id: u64,
        method: String,
        data: Value,
    },
    Notification {
        method: String,
        data: Value,
    },
    /// The server closed the connection (code and reason of its close frame, if any).
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

impl Incoming {
    /// The typed server request, if this is one sluice knows.
    pub fn server_request(&self) -> Option<ServerRequest> {
        match self {
            Incoming::Request { method, data, .. } => {
                ServerRequest::decode(method, data.clone()).ok()
            }
            _ => None,
        }
    }

    /// The typed notification, if this is one sluice knows.
    pub fn notification(&self) -> Option<ServerNotification> {
        match self {
            Incoming::Notification { method, data } => {
                ServerNotification::decode(method, data.clone()).ok()
            }
            _ => None,
        }
    }
}

enum Frame {
    Text(String),
    Close,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

/// A protoo peer over one WebSocket.
pub struct SignalingClient {
    out: mpsc::UnboundedSender<Frame>,
    pending: Pending,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<Incoming>>,
    timeout: Duration,
}

impl std::fmt::Debug for SignalingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalingClient").finish_non_exhaustive()
    }
}

/// `ws://host/ws?roomId=…&peerId=…&token=…` for a server's HTTP base URL.
pub fn ws_url(base: &str, room: &str, peer: &str, token: &str) -> String {
    let base = base
        .trim_end_matches('/')
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    format!(
        "{base}/ws?roomId={}&peerId={}&token={}",
        encode(room),
        encode(peer),
        encode(token)
    )
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl SignalingClient {
    /// Connects with the `protoo` subprotocol.
    pub async fn connect(url: &str) -> Result<SignalingClient, SignalingError> {
        Self::connect_with(url, &[("Sec-WebSocket-Protocol", "protoo")]).await
    }

    /// Connects with these extra headers (tests of refusals use this).
    pub async fn connect_with(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<SignalingClient, SignalingError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| SignalingError::Connect(e.to_string()))?;
        for (name, value) in headers {
            let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| SignalingError::Connect(e.to_string()))?;
            let value = tungstenite::http::HeaderValue::from_str(value)
                .map_err(|e| SignalingError::Connect(e.to_string()))?;
            request.headers_mut().insert(name, value);
        }
        let (socket, _) = match tokio_tungstenite::connect_async(request).await {
            Ok(ok) => ok,
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                return Err(SignalingError::Refused { status, body });
            }
            Err(e) => return Err(SignalingError::Connect(e.to_string())),
        };
        let (mut ws_tx, mut ws_rx) = socket.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Frame>();
        let (in_tx, incoming) = mpsc::unbounded_channel();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                let result = match frame {
                    Frame::Text(t) => ws_tx.send(tungstenite::Message::Text(t.into())).await,
                    Frame::Close => {
                        let _ = ws_tx.close().await;
                        break;
                    }
                };
                if result.is_err() {
                    break;
                }
            }
        });
        let reader_pending = pending.clone();
        tokio::spawn(async move {
            let mut closed = (None, String::new());
            while let Some(frame) = ws_rx.next().await {
                match frame {
                    Ok(tungstenite::Message::Text(text)) => match Message::parse(text.as_str()) {
                        Ok(Message::Response(r)) => {
                            let waiter = reader_pending
                                .lock()
                                .ok()
                                .and_then(|mut p| p.remove(&r.id()));
                            if let Some(w) = waiter {
                                let _ = w.send(r);
                            }
                        }
                        Ok(Message::Request { id, method, data }) => {
                            let _ = in_tx.send(Incoming::Request { id, method, data });
                        }
                        Ok(Message::Notification { method, data }) => {
                            let _ = in_tx.send(Incoming::Notification { method, data });
                        }
                        Err(_) => {}
                    },
                    Ok(tungstenite::Message::Close(frame)) => {
                        if let Some(f) = frame {
                            closed = (Some(u16::from(f.code)), f.reason.to_string());
                        }
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            if let Ok(mut p) = reader_pending.lock() {
                p.clear();
            }
            let _ = in_tx.send(Incoming::Closed {
                code: closed.0,
                reason: closed.1,
            });
        });
        Ok(SignalingClient {
            out,
            pending,
            incoming: tokio::sync::Mutex::new(incoming),
            timeout: Duration::from_secs(15),
        })
    }

    /// Sends a request and waits for its response.
    pub async fn request(&self, request: ClientRequest) -> Result<Value, SignalingError> {
        self.request_raw(request.method(), request.data()).await
    }

    /// Sends a request by method name with any payload.
    pub async fn request_raw(&self, method: &str, data: Value) -> Result<Value, SignalingError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut pending = self.pending.lock().map_err(|_| SignalingError::Closed)?;
            let mut id = rand::random::<u64>() % 10_000_000;
            while pending.contains_key(&id) {
                id = rand::random::<u64>() % 10_000_000;
            }
            pending.insert(id, tx);
            id
        };
        self.send_raw(Message::request(id, method, data).to_json())?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Response::Ok { data, .. })) => Ok(data),
            Ok(Ok(Response::Error {
                error_code,
                error_reason,
                ..
            })) => Err(SignalingError::Request {
                code: error_code,
                reason: error_reason,
            }),
            Ok(Err(_)) => Err(SignalingError::Closed),
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                Err(SignalingError::Timeout)
            }
        }
    }

    /// Sends a text frame as is (tests of malformed input).
    pub fn send_raw(&self, text: String) -> Result<(), SignalingError> {
        self.out
            .send(Frame::Text(text))
            .map_err(|_| SignalingError::Closed)
    }

    /// Answers a server request.
    pub fn respond(
        &self,
        id: u64,
        result: Result<Value, (u16, String)>,
    ) -> Result<(), SignalingError> {
        let message = match result {
            Ok(data) => Message::ok(id, data),
            Err((code, reason)) => Message::Response(Response::Error {
                id,
                error_code: code,
                error_reason: reason,
            }),
        };
        self.send_raw(message.to_json())
    }

    /// The next request or notification from the server (`Closed` at the end).
    pub async fn next(&self) -> Option<Incoming> {
        self.incoming.lock().await.recv().await
    }

    /// Waits for something matching `f`, answering nothing on the way.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&Incoming) -> bool,
    ) -> Option<Incoming> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut incoming = self.incoming.lock().await;
        while let Ok(Some(i)) = tokio::time::timeout_at(deadline, incoming.recv()).await {
            if f(&i) {
                return Some(i);
            }
        }
        None
    }

    /// Closes the connection.
    pub fn close(&self) {
        let _ = self.out.send(Frame::Close);
    }
}
