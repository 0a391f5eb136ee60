//! Shared set-up of the media-plane integration tests: a worker and router on loopback, and
//! sluice-client transports connected to it over real UDP.
#![allow(dead_code)]

use std::time::Duration;

use sluice_client::media::{audio_stamp, vp8_stamp};
use sluice_client::{
    ClientNumbering, ClientTransport, ClientTransportOptions, ReceivedRtp, ServerTransportInfo,
};
use sluice_media::ortc::{MediaKind, RtpCodecCapability};
use sluice_media::{
    Consumer, ConsumerOptions, MediaEvent, Producer, ProducerOptions, Router, WebRtcTransport,
    WebRtcTransportOptions, Worker, WorkerSettings,
};
use tokio::sync::mpsc;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn media_codecs() -> Vec<RtpCodecCapability> {
    serde_json::from_str(
        r#"[
        {"kind":"audio","mimeType":"audio/opus","clockRate":48000,"channels":2},
        {"kind":"video","mimeType":"video/VP8","clockRate":90000},
        {"kind":"video","mimeType":"video/H264","clockRate":90000,
         "parameters":{"packetization-mode":1,"profile-level-id":"42e01f","level-asymmetry-allowed":1}}
    ]"#,
    )
    .expect("static codec list parses")
}

pub async fn worker_and_router() -> (Worker, Router) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let worker = Worker::spawn(0, &WorkerSettings::loopback()).expect("worker starts");
    let router = worker
        .create_router(&media_codecs())
        .await
        .expect("router is created");
    (worker, router)
}

/// A server transport and the client connected to it.
pub struct Peer {
    pub server: WebRtcTransport,
    pub client: ClientTransport,
    pub events: mpsc::UnboundedReceiver<MediaEvent>,
}

/// Connects a client (through `relay` when given) numbering its sends with `numbering`.
pub async fn connect(
    router: &Router,
    numbering: ClientNumbering,
    relay: Option<std::net::SocketAddr>,
) -> Peer {
    let mut client = ClientTransportOptions::new(numbering);
    client.remote_override = relay;
    connect_with(router, client, WebRtcTransportOptions::default()).await
}

/// A client with `client` options connected to a transport created with `server` options (its
/// `events` are the peer's).
pub async fn connect_with(
    router: &Router,
    client: ClientTransportOptions,
    server: WebRtcTransportOptions,
) -> Peer {
    let (server, client, events) = connect_unchecked(router, client, server).await;
    server
        .connect(client.dtls_parameters().clone())
        .await
        .expect("server accepts the client's DTLS parameters");
    client.start();
    client
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .expect("client connects");
    Peer {
        server,
        client,
        events,
    }
}

/// A server transport and a client for it, neither connected nor started.
pub async fn connect_unchecked(
    router: &Router,
    client: ClientTransportOptions,
    server: WebRtcTransportOptions,
) -> (
    WebRtcTransport,
    ClientTransport,
    mpsc::UnboundedReceiver<MediaEvent>,
) {
    let (tx, events) = mpsc::unbounded_channel();
    let server = router
        .create_webrtc_transport(WebRtcTransportOptions {
            events: Some(tx),
            ..server
        })
        .await
        .expect("transport is created");
    let client = ClientTransport::new(&ServerTransportInfo::from(&server), client)
        .await
        .expect("client binds");
    (server, client, events)
}

/// A receiving peer (router numbering).
pub async fn connect_receiver(router: &Router, relay: Option<std::net::SocketAddr>) -> Peer {
    connect(
        router,
        ClientNumbering::from_router(router.rtp_capabilities()),
        relay,
    )
    .await
}

/// Declares a synthetic producer on the client and produces it on the server.
pub async fn produce(peer: &Peer, source: sluice_client::SourceConfig) -> Producer {
    let p = peer
        .client
        .produce(source, false)
        .await
        .expect("client declares the producer");
    peer.server
        .produce(ProducerOptions::new(p.kind, p.rtp_parameters))
        .await
        .expect("server accepts the producer")
}

/// Consumes `producer` on `peer` (resumed) and returns the consumer and its packet stream.
pub async fn consume(
    peer: &Peer,
    router: &Router,
    producer: &Producer,
) -> (Consumer, mpsc::UnboundedReceiver<ReceivedRtp>) {
    let consumer = peer
        .server
        .consume(ConsumerOptions::new(
            producer.id(),
            router.rtp_capabilities().clone(),
        ))
        .await
        .expect("server creates the consumer");
    let rx = peer
        .client
        .consume(consumer.rtp_parameters().clone())
        .await
        .expect("client accepts the consumer");
    consumer.resume().await.expect("consumer resumes");
    (consumer, rx)
}

/// Collects packets for `duration`.
pub async fn collect(
    rx: &mut mpsc::UnboundedReceiver<ReceivedRtp>,
    duration: Duration,
) -> Vec<ReceivedRtp> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + duration;
    while let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        out.push(p);
    }
    out
}

/// Drains what has arrived so far.
pub fn drain(rx: &mut mpsc::UnboundedReceiver<ReceivedRtp>) -> Vec<ReceivedRtp> {
    let mut out = Vec::new();
    while let Ok(p) = rx.try_recv() {
        out.push(p);
    }
    out
}

pub fn stamp_of(kind: MediaKind, p: &ReceivedRtp) -> Option<sluice_client::media::Stamp> {
    match kind {
        MediaKind::Video => vp8_stamp(&p.payload),
        MediaKind::Audio => audio_stamp(&p.payload),
    }
}

/// Asserts sequence numbers have no gap and no duplicate (after sorting).
pub fn assert_continuous(packets: &[ReceivedRtp]) {
    let mut seqs: Vec<u64> = packets.iter().map(|p| p.seq).collect();
    seqs.sort_unstable();
    let before = seqs.len();
    seqs.dedup();
    assert_eq!(before, seqs.len(), "duplicate sequence numbers");
    if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
        assert_eq!(
            (last - first + 1) as usize,
            seqs.len(),
            "gap in sequence numbers {first}..={last}"
        );
    }
}

/// Waits for an event matching `f`.
pub async fn wait_event(
    events: &mut mpsc::UnboundedReceiver<MediaEvent>,
    timeout: Duration,
    mut f: impl FnMut(&MediaEvent) -> bool,
) -> Option<MediaEvent> {
    let deadline = tokio::time::Instant::now() + timeout;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if f(&e) {
            return Some(e);
        }
    }
    None
}
