//! `Session`: a whole peer as mediasoup-demo's client runs it, for bots, load tests and tests:
//! router capabilities → a send and a receive transport → join → produce; incoming
//! `newConsumer` / `newDataConsumer` requests are accepted automatically and their media and
//! messages handed out as [`SessionEvent`]s.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_media::DataMessage;
use sluice_media::ortc::{MediaKind, RtpCapabilities};
use sluice_protocol::{
    ClientRequest, ConnectWebRtcTransportRequest, CreateWebRtcTransportRequest,
    CreateWebRtcTransportResponse, Device, Empty, IdResponse, JoinRequest, JoinResponse, PeerInfo,
    ProduceDataRequest, ProduceRequest, ServerNotification, ServerRequest,
};
use tokio::sync::mpsc;

use crate::numbering::ClientNumbering;
use crate::signaling::{Incoming, SignalingClient, SignalingError};
use crate::transport::{
    ClientError, ClientTransport, ClientTransportOptions, ReceivedData, ReceivedRtp,
    ServerTransportInfo, SourceConfig,
};

/// Why a session step failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Signaling(#[from] SignalingError),
    #[error(transparent)]
    Transport(#[from] ClientError),
    #[error("unexpected response: {0}")]
    Response(String),
}

/// What a session hands out.
#[derive(Debug)]
pub enum SessionEvent {
    /// A consumer was accepted; its packets arrive on `packets`.
    Consumer {
        id: String,
        peer_id: String,
        producer_id: String,
        kind: MediaKind,
        packets: mpsc::UnboundedReceiver<ReceivedRtp>,
    },
    /// A data consumer was accepted; its messages arrive on `messages`.
    DataConsumer {
        id: String,
        peer_id: Option<String>,
        data_producer_id: String,
        label: String,
        messages: mpsc::UnboundedReceiver<ReceivedData>,
    },
    Notification(ServerNotification),
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

/// How a session joins.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub display_name: String,
    /// How the send transport numbers what it sends.
    pub numbering: ClientNumbering,
    /// Receive media (a receive transport and `rtpCapabilities` in `join`).
    pub consume: bool,
    /// Connect through this address instead of the server's candidate (a loss relay).
    pub relay: Option<std::net::SocketAddr>,
}

impl SessionOptions {
    pub fn new(display_name: &str) -> Self {
        SessionOptions {
            display_name: display_name.to_owned(),
            numbering: ClientNumbering::chromium(),
            consume: true,
            relay: None,
        }
    }
}

/// A joined peer.
pub struct Session {
    signaling: std::sync::Arc<SignalingClient>,
    pub send: ClientTransport,
    pub send_transport_id: String,
    pub recv: Option<ClientTransport>,
    pub router_capabilities: RtpCapabilities,
    /// The peers already in the room when we joined.
    pub peers: Vec<PeerInfo>,
    events: mpsc::UnboundedReceiver<SessionEvent>,
    /// Events `wait_event` passed over, handed out first later.
    stash: std::collections::VecDeque<SessionEvent>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("send", &self.send_transport_id)
            .finish()
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, SessionError> {
    serde_json::from_value(v).map_err(|e| SessionError::Response(e.to_string()))
}

async fn transport(
    signaling: &SignalingClient,
    numbering: ClientNumbering,
    producing: bool,
    relay: Option<std::net::SocketAddr>,
) -> Result<(ClientTransport, String), SessionError> {
    let created: CreateWebRtcTransportResponse = parse(
        signaling
            .request(ClientRequest::CreateWebRtcTransport(
                CreateWebRtcTransportRequest {
                    producing: Some(producing),
                    consuming: Some(!producing),
                    sctp_capabilities: Some(Default::default()),
                    ..Default::default()
                },
            ))
            .await?,
    )?;
    let info = ServerTransportInfo {
        ice_parameters: created.ice_parameters,
        ice_candidates: created.ice_candidates,
        dtls_parameters: created.dtls_parameters,
        sctp_parameters: created.sctp_parameters,
    };
    let mut options = ClientTransportOptions::new(numbering);
    options.remote_override = relay;
    let client = ClientTransport::new(&info, options).await?;
    signaling
        .request(ClientRequest::ConnectWebRtcTransport(
            ConnectWebRtcTransportRequest {
                transport_id: created.id.clone(),
                dtls_parameters: client.dtls_parameters().clone(),
            },
        ))
        .await?;
    client.start();
    Ok((client, created.id))
}

impl Session {
    /// Runs the mediasoup-demo flow on an open signaling connection.
    pub async fn join(
        signaling: SignalingClient,
        options: SessionOptions,
    ) -> Result<Session, SessionError> {
        let router_capabilities: RtpCapabilities = parse(
            signaling
                .request(ClientRequest::GetRouterRtpCapabilities(Empty {}))
                .await?,
        )?;
        let (send, send_transport_id) =
            transport(&signaling, options.numbering.clone(), true, options.relay).await?;
        let recv = if options.consume {
            Some(
                transport(
                    &signaling,
                    ClientNumbering::from_router(&router_capabilities),
                    false,
                    options.relay,
                )
                .await?,
            )
        } else {
            None
        };
        let join: JoinResponse = parse(
            signaling
                .request(ClientRequest::Join(JoinRequest {
                    display_name: options.display_name.clone(),
                    device: Device {
                        flag: Some("sluice-client".into()),
                        name: Some("sluice-client".into()),
                        version: Some(env!("CARGO_PKG_VERSION").into()),
                        extra: Default::default(),
                    },
                    rtp_capabilities: options.consume.then(|| router_capabilities.clone()),
                    sctp_capabilities: Some(Default::default()),
                }))
                .await?,
        )?;
        send.wait_connected(Duration::from_secs(10)).await?;
        let (events_tx, events) = mpsc::unbounded_channel();
        // Server requests and notifications are answered and forwarded by their own task.
        let signaling = std::sync::Arc::new(signaling);
        let recv_transport = recv.as_ref().map(|(c, _)| c.clone());
        spawn_incoming(signaling.clone(), recv_transport, events_tx);
        Ok(Session {
            signaling,
            send,
            send_transport_id,
            recv: recv.map(|(c, _)| c),
            router_capabilities,
            peers: join.peers,
            events,
            stash: Default::default(),
        })
    }

    /// Produces a synthetic source; returns the producer id.
    pub async fn produce(&self, source: SourceConfig) -> Result<String, SessionError> {
        let p = self.send.produce(source, false).await?;
        let id: IdResponse = parse(
            self.signaling
                .request(ClientRequest::Produce(ProduceRequest {
                    transport_id: self.send_transport_id.clone(),
                    kind: p.kind,
                    rtp_parameters: p.rtp_parameters,
                    app_data: Default::default(),
                }))
                .await?,
        )?;
        Ok(id.id)
    }

    /// Opens a data channel and produces it; returns (data producer id, stream id).
    pub async fn produce_data(
        &self,
        label: &str,
        ordered: bool,
        max_retransmits: Option<u16>,
    ) -> Result<(String, u16), SessionError> {
        let p = self
            .send
            .produce_data(label, ordered, max_retransmits, None, None)
            .await?;
        let id: IdResponse = parse(
            self.signaling
                .request(ClientRequest::ProduceData(ProduceDataRequest {
                    transport_id: self.send_transport_id.clone(),
                    sctp_stream_parameters: p.sctp_stream_parameters.clone(),
                    label: label.to_owned(),
                    protocol: String::new(),
                    app_data: Default::default(),
                }))
                .await?,
        )?;
        Ok((id.id, p.sctp_stream_parameters.stream_id))
    }

    pub fn send_data(&self, stream_id: u16, message: DataMessage) -> Result<(), SessionError> {
        Ok(self.send.send_data(stream_id, message)?)
    }

    /// A request by name (everything the typed helpers do not cover).
    pub async fn request(&self, request: ClientRequest) -> Result<Value, SignalingError> {
        self.signaling.request(request).await
    }

    pub async fn request_raw(&self, method: &str, data: Value) -> Result<Value, SignalingError> {
        self.signaling.request_raw(method, data).await
    }

    /// The next event, waiting at most `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<SessionEvent> {
        if let Some(e) = self.stash.pop_front() {
            return Some(e);
        }
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for an event matching `f`; the others stay queued for later calls.
    pub async fn wait_event(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&SessionEvent) -> bool,
    ) -> Option<SessionEvent> {
        if let Some(i) = self.stash.iter().position(&mut f) {
            return self.stash.remove(i);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if f(&e) {
                return Some(e);
            }
            self.stash.push_back(e);
        }
        None
    }

    /// Takes the event stream out of the session, for a task of its own; `next_event` and
    /// `wait_event` see nothing afterwards.
    pub fn take_events(&mut self) -> mpsc::UnboundedReceiver<SessionEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        for e in self.stash.drain(..) {
            let _ = tx.send(e);
        }
        let (_, empty) = mpsc::unbounded_channel();
        let mut old = std::mem::replace(&mut self.events, empty);
        tokio::spawn(async move {
            while let Some(e) = old.recv().await {
                if tx.send(e).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// Leaves: closes the signaling connection and the transports.
    pub fn close(&self) {
        self.signaling.close();
        self.send.close();
        if let Some(r) = &self.recv {
            r.close();
        }
    }
}

fn spawn_incoming(
    signaling: std::sync::Arc<SignalingClient>,
    recv: Option<ClientTransport>,
    events: mpsc::UnboundedSender<SessionEvent>,
) {
    tokio::spawn(async move {
        while let Some(incoming) = signaling.next().await {
            match &incoming {
                Incoming::Request { id, .. } => {
                    let id = *id;
                    let answer = match (incoming.server_request(), &recv) {
                        (Some(ServerRequest::NewConsumer(req)), Some(recv)) => {
                            match recv.consume(req.rtp_parameters.clone()).await {
                                Ok(packets) => {
                                    let _ = events.send(SessionEvent::Consumer {
                                        id: req.id.clone(),
                                        peer_id: req.peer_id.clone(),
                                        producer_id: req.producer_id.clone(),
                                        kind: req.kind,
                                        packets,
                                    });
                                    Ok(json!({}))
                                }
                                Err(e) => Err((500, e.to_string())),
                            }
                        }
                        (Some(ServerRequest::NewDataConsumer(req)), Some(recv)) => {
                            match recv
                                .consume_data(req.sctp_stream_parameters.clone(), &req.label)
                                .await
                            {
                                Ok(messages) => {
                                    let _ = events.send(SessionEvent::DataConsumer {
                                        id: req.id.clone(),
                                        peer_id: req.peer_id.clone(),
                                        data_producer_id: req.data_producer_id.clone(),
                                        label: req.label.clone(),
                                        messages,
                                    });
                                    Ok(json!({}))
                                }
                                Err(e) => Err((500, e.to_string())),
                            }
                        }
                        (Some(_), None) => Err((409, "not consuming".to_owned())),
                        (None, _) => Err((501, "unknown request".to_owned())),
                    };
                    let _ = signaling.respond(id, answer);
                }
                Incoming::Notification { .. } => {
                    if let Some(n) = incoming.notification() {
                        let _ = events.send(SessionEvent::Notification(n));
                    }
                }
                Incoming::Closed { code, reason } => {
                    let _ = events.send(SessionEvent::Closed {
                        code: *code,
                        reason: reason.clone(),
                    });
                    break;
                }
            }
        }
    });
}
