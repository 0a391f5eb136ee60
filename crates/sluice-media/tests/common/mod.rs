//! Shared set-up of the media-plane integration tests.
//!
//! Most tests run on **virtual time**: `#[tokio::test(start_paused = true)]`, a worker on a
//! `VirtualNet` ([`worker_and_router`]) and sluice-client transports on the same network, so
//! time jumps from deadline to deadline and nothing depends on the machine's speed. Links are
//! conditioned through a [`Relay`] (loss, a rate cap, a blackhole, injected datagrams), which on
//! the virtual network is the client's own address and the conditions of its links. The smoke
//! suite runs on real UDP with [`real_worker_and_router`].
#![allow(dead_code)]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use sluice_client::media::{audio_stamp, vp8_stamp};
use sluice_client::{
    ClientNumbering, ClientTransport, ClientTransportOptions, ReceivedRtp, ServerTransportInfo,
    WallClock,
};
use sluice_media::MediaSettings;
use sluice_media::ortc::{MediaKind, RtpCodecCapability};
use sluice_media::testing::{LinkConditions, NetCounts, VirtualNet};
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

thread_local! {
    /// The virtual network of the test running on this thread (each test has its own thread
    /// and current-thread runtime), and the last client port handed out on it.
    static NET: RefCell<Option<(VirtualNet, u16)>> = const { RefCell::new(None) };
    /// The wall clock every client of the virtual network stamps with (one mapping, so stamps
    /// of different clients compare).
    static WALL: RefCell<Option<WallClock>> = const { RefCell::new(None) };
}

/// Microseconds of the test's wall clock: on the virtual network, virtual time (the clients'
/// stamps are on it too); on real UDP, the system clock.
pub fn now_us() -> u64 {
    WALL.with(|w| match w.borrow().as_ref() {
        Some(wall) => wall.us_at(tokio::time::Instant::now().into_std()),
        None => sluice_client::media::now_us(),
    })
}

/// The server's address on the virtual network.
pub const SERVER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    40000,
);

/// This test's virtual network (`None` on real UDP).
pub fn net() -> Option<VirtualNet> {
    NET.with(|n| n.borrow().as_ref().map(|(net, _)| net.clone()))
}

/// A fresh client address on the virtual network.
pub fn client_addr() -> SocketAddr {
    NET.with(|n| {
        let mut n = n.borrow_mut();
        let (_, port) = n
            .as_mut()
            .expect("a virtual network: call worker_and_router first");
        *port += 1;
        SocketAddr::from(([10, 0, 1, 1], *port))
    })
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A worker on a fresh virtual network (seed 1), and a router on it. Run the test with
/// `#[tokio::test(start_paused = true)]`.
pub async fn worker_and_router() -> (Worker, Router) {
    worker_and_router_with(MediaSettings::default()).await
}

/// [`worker_and_router`] with these settings.
pub async fn worker_and_router_with(settings: MediaSettings) -> (Worker, Router) {
    init_tracing();
    let net = VirtualNet::new(1);
    NET.with(|n| *n.borrow_mut() = Some((net.clone(), 5000)));
    WALL.with(|w| {
        *w.borrow_mut() = Some(WallClock {
            at: tokio::time::Instant::now().into_std(),
            unix_us: sluice_client::media::now_us(),
        })
    });
    let worker = Worker::spawn_virtual(0, &net, SERVER, settings).expect("worker starts");
    let router = worker
        .create_router(&media_codecs())
        .await
        .expect("router is created");
    (worker, router)
}

/// A worker on loopback UDP and the wall clock (the smoke suite), and a router on it.
pub async fn real_worker_and_router() -> (Worker, Router) {
    init_tracing();
    NET.with(|n| *n.borrow_mut() = None);
    WALL.with(|w| *w.borrow_mut() = None);
    let worker = Worker::spawn(0, &WorkerSettings::loopback()).expect("worker starts");
    let router = worker
        .create_router(&media_codecs())
        .await
        .expect("router is created");
    (worker, router)
}

/// A conditioned path between one client and the server on the virtual network: the client
/// binds at [`Relay::addr`], and the relay sets the conditions of its two links.
pub struct Relay {
    net: VirtualNet,
    addr: SocketAddr,
    server: SocketAddr,
}

impl Relay {
    /// A path to `server` losing `loss` of the datagrams each way (drawn from the network's
    /// seeded generator; `_seed` is kept for the relay's old signature).
    pub async fn start(server: SocketAddr, loss: f64, _seed: u64) -> std::io::Result<Relay> {
        let net = net().expect("relays run on the virtual network");
        let relay = Relay {
            net,
            addr: client_addr(),
            server,
        };
        relay.set_loss(loss);
        Ok(relay)
    }

    /// The client's address: pass it to `connect`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn update(&self, to_client: bool, to_server: bool, f: impl Fn(&mut LinkConditions)) {
        for (from, to, on) in [
            (self.server, self.addr, to_client),
            (self.addr, self.server, to_server),
        ] {
            if on {
                let mut c = self.net.link(from, to);
                f(&mut c);
                self.net.set_link(from, to, c);
            }
        }
    }

    pub fn set_loss(&self, loss: f64) {
        self.update(true, true, |c| c.loss = loss);
    }

    /// Caps the bytes per second toward the client, dropping the excess (`None`: no cap).
    pub fn set_rate_to_client(&self, bytes_per_second: Option<u64>) {
        self.update(true, false, |c| c.rate = bytes_per_second);
    }

    /// Drops everything both ways, like a peer that vanished.
    pub fn set_blackhole(&self, on: bool) {
        self.update(true, true, |c| c.blackhole = on);
    }

    /// Sends `datagram` to the server from the client's (validated) address.
    pub async fn inject(&self, datagram: &[u8]) -> std::io::Result<()> {
        self.net.send(self.addr, self.server, datagram);
        Ok(())
    }

    /// (Datagrams passed, datagrams dropped), both ways.
    pub fn counts(&self) -> (u64, u64) {
        let up = self.net.link_counts(self.addr, self.server);
        let down = self.net.link_counts(self.server, self.addr);
        let passed = |c: NetCounts| c.sent - c.lost;
        (passed(up) + passed(down), up.lost + down.lost)
    }
}

/// A server transport and the client connected to it.
pub struct Peer {
    pub server: WebRtcTransport,
    pub client: ClientTransport,
    pub events: mpsc::UnboundedReceiver<MediaEvent>,
}

/// Connects a client (through `relay` when given: on the virtual network, the client binds at
/// the relay's address) numbering its sends with `numbering`.
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
    let info = ServerTransportInfo::from(&server);
    let client = match net() {
        Some(net) => {
            let mut client = client;
            let addr = client.remote_override.take().unwrap_or_else(client_addr);
            client.wall_clock = WALL.with(|w| *w.borrow());
            ClientTransport::new_virtual(&net, addr, &info, client).expect("client binds")
        }
        None => ClientTransport::new(&info, client)
            .await
            .expect("client binds"),
    };
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

/// Waits for the first `n` packets (real-UDP smoke tests: the condition, not a fixed sleep; the
/// minute is only there so that a broken build fails instead of hanging).
pub async fn receive_n(
    rx: &mut mpsc::UnboundedReceiver<ReceivedRtp>,
    n: usize,
) -> Vec<ReceivedRtp> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(p)) => out.push(p),
            Ok(None) => panic!("the stream ended after {} of {n} packets", out.len()),
            Err(_) => panic!("{} of {n} packets in a minute", out.len()),
        }
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
