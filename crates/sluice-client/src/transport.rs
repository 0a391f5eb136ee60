//! `ClientTransport`: the client side of one WebRTC transport, on str0m (full ICE, controlling;
//! DTLS client), with its own UDP socket and a task that drives it.
//!
//! It produces synthetic media ([`crate::media`]): VP8 with keyframes (periodic and on request),
//! picture ids, temporal layers and rid-based simulcast, and opus-sized audio; and it consumes
//! what the server sends, handing each packet to the consumer's channel.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_media::DataMessage;
use sluice_media::fingerprint::HashFunction;
use sluice_media::ortc::{
    DtlsFingerprint, DtlsParameters, DtlsRole, IceCandidate, IceParameters, MediaKind,
    RtpEncodingParameters, RtpParameters, SctpParameters, SctpStreamParameters,
};
use str0m::change::DirectApi;
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::config::Fingerprint;
use str0m::media::{KeyframeRequestKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use crate::media::{self, Stamp, Vp8Fields};
use crate::numbering::{ClientNumbering, rid_encoding, ssrc_encoding};

/// Why a client transport call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("cannot bind UDP: {0}")]
    Bind(String),
    #[error("the server's transport parameters are unusable: {0}")]
    BadServerParameters(String),
    #[error("the numbering has no {0} codec")]
    NoCodec(MediaKind),
    #[error("bad consumer parameters: {0}")]
    BadConsumerParameters(String),
    #[error("no producer with mid {0}")]
    UnknownProducer(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the transport is closed")]
    Closed,
}

/// The server transport's parameters (the `createWebRtcTransport` response).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTransportInfo {
    pub ice_parameters: IceParameters,
    pub ice_candidates: Vec<IceCandidate>,
    pub dtls_parameters: DtlsParameters,
    pub sctp_parameters: Option<SctpParameters>,
}

impl From<&sluice_media::WebRtcTransport> for ServerTransportInfo {
    fn from(t: &sluice_media::WebRtcTransport) -> Self {
        ServerTransportInfo {
            ice_parameters: t.ice_parameters().clone(),
            ice_candidates: t.ice_candidates().to_vec(),
            dtls_parameters: t.dtls_parameters().clone(),
            sctp_parameters: t.sctp_parameters().cloned(),
        }
    }
}

/// Options of a client transport.
#[derive(Debug, Clone)]
pub struct ClientTransportOptions {
    /// Numbering of what this transport sends, and of what it can receive.
    pub numbering: ClientNumbering,
    /// Send to this address instead of the server's candidate (a loss relay in tests).
    pub remote_override: Option<SocketAddr>,
    pub bind_ip: IpAddr,
    pub enable_sctp: bool,
    /// The hash function of the fingerprint announced in our DTLS parameters (browsers use
    /// sha-256; pymediasoup with aiortc announces sha-512).
    pub fingerprint_hash: HashFunction,
}

impl ClientTransportOptions {
    pub fn new(numbering: ClientNumbering) -> Self {
        ClientTransportOptions {
            numbering,
            remote_override: None,
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            enable_sctp: true,
            fingerprint_hash: HashFunction::Sha256,
        }
    }
}

/// What a synthetic producer sends.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// VP8 at `fps`; per layer, packets per frame (one entry without simulcast).
    Video {
        fps: u32,
        packets_per_frame: Vec<usize>,
        payload_size: usize,
        /// A keyframe every this many frames (and whenever one is requested).
        keyframe_interval: u32,
        /// Temporal layers per frame pattern (1: none; 2 or 3: L1T2/L1T3 patterns).
        temporal_layers: u8,
        /// Rids for simulcast; empty: one SSRC-based encoding.
        rids: Vec<String>,
    },
    /// Opus-sized audio, one packet every 20 ms.
    Audio { payload_size: usize },
}

impl SourceConfig {
    /// ≈100 packets/s of 1200 bytes: 30 fps, 3 packets per frame (plus 10 % keyframe bursts).
    pub fn video() -> Self {
        SourceConfig::Video {
            fps: 30,
            packets_per_frame: vec![3],
            payload_size: 1200,
            keyframe_interval: 300,
            temporal_layers: 1,
            rids: vec![],
        }
    }

    /// Three rid-based simulcast layers (r0, r1, r2) with three temporal layers.
    pub fn simulcast_video() -> Self {
        SourceConfig::Video {
            fps: 30,
            packets_per_frame: vec![1, 2, 4],
            payload_size: 1000,
            keyframe_interval: 300,
            temporal_layers: 3,
            rids: vec!["r0".into(), "r1".into(), "r2".into()],
        }
    }

    pub fn audio() -> Self {
        SourceConfig::Audio { payload_size: 100 }
    }

    fn kind(&self) -> MediaKind {
        match self {
            SourceConfig::Video { .. } => MediaKind::Video,
            SourceConfig::Audio { .. } => MediaKind::Audio,
        }
    }
}

/// A producer the client declared: send its parameters with `produce`.
#[derive(Debug, Clone)]
pub struct ClientProducer {
    pub mid: String,
    pub kind: MediaKind,
    pub rtp_parameters: RtpParameters,
}

/// One RTP packet received on a consumer.
#[derive(Debug, Clone)]
pub struct ReceivedRtp {
    pub ssrc: u32,
    pub payload_type: u8,
    /// Extended sequence number.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Arc<[u8]>,
    pub audio_level: Option<i8>,
    pub received_us: u64,
}

/// A data channel the client opened to produce on (`produceData`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientDataProducer {
    pub label: String,
    pub sctp_stream_parameters: SctpStreamParameters,
}

/// One data-channel message received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedData {
    pub binary: bool,
    pub data: Vec<u8>,
    pub received_us: u64,
}

/// Counters of a client transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub rtp_sent: u64,
    pub rtp_received: u64,
    /// Keyframe requests (PLI/FIR) the server sent us, per producer mid.
    pub keyframe_requests: HashMap<String, u64>,
    /// Keyframes sent, per producer mid.
    pub keyframes_sent: HashMap<String, u64>,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub data_sent: u64,
    /// Messages SCTP had no room for (or whose channel was not open yet).
    pub data_refused: u64,
    pub data_received: u64,
}

/// Connection progress of a client transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionState {
    pub ice_connected: bool,
    pub dtls_connected: bool,
    pub closed: bool,
}

enum Cmd {
    Start,
    Produce {
        source: SourceConfig,
        paused: bool,
        reply: oneshot::Sender<Result<ClientProducer, ClientError>>,
    },
    Consume {
        params: RtpParameters,
        reply: oneshot::Sender<Result<mpsc::UnboundedReceiver<ReceivedRtp>, ClientError>>,
    },
    RequestKeyframe {
        mid: String,
    },
    RequestRemb {
        mid: String,
        bps: u64,
    },
    SetSending {
        mid: String,
        sending: bool,
    },
    SetLayerActive {
        mid: String,
        layer: usize,
        active: bool,
    },
    ProduceData {
        label: String,
        ordered: bool,
        max_retransmits: Option<u16>,
        max_packet_life_time: Option<u16>,
        stream_id: Option<u16>,
        reply: oneshot::Sender<ClientDataProducer>,
    },
    ConsumeData {
        params: SctpStreamParameters,
        label: String,
        reply: oneshot::Sender<mpsc::UnboundedReceiver<ReceivedData>>,
    },
    SendData {
        stream_id: u16,
        message: DataMessage,
    },
    Stats {
        reply: oneshot::Sender<ClientStats>,
    },
    /// SDP mode: an offer sending these sources.
    CreateOffer {
        sources: Vec<SourceConfig>,
        reply: oneshot::Sender<Result<String, ClientError>>,
    },
    AcceptAnswer {
        answer: String,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    AcceptOffer {
        offer: String,
        reply: oneshot::Sender<Result<String, ClientError>>,
    },
    ReceiveAll {
        reply: oneshot::Sender<mpsc::UnboundedReceiver<ReceivedRtp>>,
    },
    Close,
}

/// The client side of one WebRTC transport.
#[derive(Clone)]
pub struct ClientTransport {
    commands: mpsc::UnboundedSender<Cmd>,
    local_addr: SocketAddr,
    dtls_parameters: DtlsParameters,
    state: watch::Receiver<ConnectionState>,
}

impl std::fmt::Debug for ClientTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTransport")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl ClientTransport {
    /// Binds a socket and prepares ICE and DTLS toward `server`; nothing is sent before
    /// [`start`](Self::start) (give the server our [`dtls_parameters`](Self::dtls_parameters) first).
    pub async fn new(
        server: &ServerTransportInfo,
        options: ClientTransportOptions,
    ) -> Result<ClientTransport, ClientError> {
        let socket = UdpSocket::bind(SocketAddr::new(options.bind_ip, 0))
            .await
            .map_err(|e| ClientError::Bind(e.to_string()))?;
        let local_addr = socket
            .local_addr()
            .map_err(|e| ClientError::Bind(e.to_string()))?;
        let remote = match options.remote_override {
            Some(addr) => addr,
            None => {
                let c = server
                    .ice_candidates
                    .iter()
                    .find(|c| c.protocol == sluice_media::ortc::Protocol::Udp)
                    .ok_or_else(|| ClientError::BadServerParameters("no UDP candidate".into()))?;
                let ip: IpAddr = c.address.parse().map_err(|_| {
                    ClientError::BadServerParameters(format!("bad address {}", c.address))
                })?;
                SocketAddr::new(ip, c.port)
            }
        };
        let fp = server
            .dtls_parameters
            .fingerprints
            .iter()
            .find(|f| f.algorithm.eq_ignore_ascii_case("sha-256"))
            .ok_or_else(|| ClientError::BadServerParameters("no sha-256 fingerprint".into()))?;
        let fingerprint: Fingerprint = format!("sha-256 {}", fp.value)
            .parse()
            .map_err(|e: String| ClientError::BadServerParameters(e))?;

        let now = Instant::now();
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| ClientError::Bind("cannot generate a DTLS certificate".into()))?;
        let announced = options.fingerprint_hash.digest(&cert.certificate);
        let mut rtc =
            sluice_media::numbering::rtc_config_for_router(options.numbering.capabilities())
                .set_rtp_mode(true)
                .set_stats_interval(Some(Duration::from_secs(1)))
                .set_dtls_cert(cert)
                .build(now);
        let local =
            Candidate::host(local_addr, "udp").map_err(|e| ClientError::Bind(e.to_string()))?;
        rtc.add_local_candidate(local);
        let remote_candidate = Candidate::host(remote, "udp")
            .map_err(|e| ClientError::BadServerParameters(e.to_string()))?;
        rtc.add_remote_candidate(remote_candidate);
        let mut api = rtc.direct_api();
        api.set_remote_fingerprint(fingerprint);
        api.set_remote_ice_credentials(IceCreds {
            ufrag: server.ice_parameters.username_fragment.clone(),
            pass: server.ice_parameters.password.clone(),
        });
        api.set_ice_controlling(true);
        // Transport-wide congestion feedback lets the server estimate its bandwidth toward us.
        api.enable_twcc_feedback();
        let dtls_parameters = DtlsParameters {
            role: Some(DtlsRole::Client),
            fingerprints: vec![DtlsFingerprint {
                algorithm: options.fingerprint_hash.name().to_owned(),
                value: announced
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            }],
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(ConnectionState::default());
        let driver = Driver {
            rtc,
            socket,
            local_addr,
            numbering: options.numbering,
            enable_sctp: options.enable_sctp,
            sources: Vec::new(),
            receivers: HashMap::new(),
            catch_all: None,
            stats: ClientStats::default(),
            state: state_tx,
            next_mid: 0,
            next_stream_id: 0,
            channels: HashMap::new(),
            pending_offer: None,
            data_receivers: HashMap::new(),
            next_ssrc: rand::random::<u32>() % 1_000_000_000 + 1_000_000,
            cname: format!("sluice-client-{}", rand::random::<u32>()),
        };
        tokio::spawn(driver.run(rx));
        Ok(ClientTransport {
            commands: tx,
            local_addr,
            dtls_parameters,
            state: state_rx,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `{role: "client", fingerprints}` for `connectWebRtcTransport`.
    pub fn dtls_parameters(&self) -> &DtlsParameters {
        &self.dtls_parameters
    }

    /// Starts ICE, DTLS and (if enabled) SCTP.
    pub fn start(&self) {
        let _ = self.commands.send(Cmd::Start);
    }

    /// Waits until DTLS is connected.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut state = self.state.clone();
        tokio::time::timeout(timeout, state.wait_for(|s| s.dtls_connected || s.closed))
            .await
            .map_err(|_| ClientError::Timeout("DTLS"))?
            .map_err(|_| ClientError::Closed)
            .and_then(|s| {
                if s.closed {
                    Err(ClientError::Closed)
                } else {
                    Ok(())
                }
            })
    }

    /// Waits until ICE is connected (before DTLS completes).
    pub async fn wait_ice_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut state = self.state.clone();
        tokio::time::timeout(timeout, state.wait_for(|s| s.ice_connected || s.closed))
            .await
            .map_err(|_| ClientError::Timeout("ICE"))?
            .map_err(|_| ClientError::Closed)
            .and_then(|s| {
                if s.closed {
                    Err(ClientError::Closed)
                } else {
                    Ok(())
                }
            })
    }

    pub fn connection_state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    async fn ask<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(f(tx)).map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Declares a synthetic producer; it sends once started and not paused.
    pub async fn produce(
        &self,
        source: SourceConfig,
        paused: bool,
    ) -> Result<ClientProducer, ClientError> {
        self.ask(|reply| Cmd::Produce {
            source,
            paused,
            reply,
        })
        .await?
    }

    /// Receives a consumer with these (server-given) parameters.
    pub async fn consume(
        &self,
        params: RtpParameters,
    ) -> Result<mpsc::UnboundedReceiver<ReceivedRtp>, ClientError> {
        self.ask(|reply| Cmd::Consume { params, reply }).await?
    }

    /// Sends a PLI for the consumer with this mid.
    pub fn request_keyframe(&self, mid: &str) {
        let _ = self.commands.send(Cmd::RequestKeyframe { mid: mid.into() });
    }

    /// Sends a REMB (receiver-estimated maximum bitrate) for the consumer with this mid, as a
    /// browser does when it estimates bandwidth on the receiving side (abs-send-time).
    pub fn request_remb(&self, mid: &str, bps: u64) {
        let _ = self.commands.send(Cmd::RequestRemb {
            mid: mid.into(),
            bps,
        });
    }

    /// Stops or restarts a producer's packets (what a browser does on pause).
    pub fn set_sending(&self, mid: &str, sending: bool) {
        let _ = self.commands.send(Cmd::SetSending {
            mid: mid.into(),
            sending,
        });
    }

    /// Stops or restarts one simulcast layer (as Chromium drops its top layer under load).
    pub fn set_layer_active(&self, mid: &str, layer: usize, active: bool) {
        let _ = self.commands.send(Cmd::SetLayerActive {
            mid: mid.into(),
            layer,
            active,
        });
    }

    /// Opens a negotiated data channel to produce on; send its parameters with `produceData`.
    /// `stream_id`: pick one (tests of hostile clients), else the next free.
    pub async fn produce_data(
        &self,
        label: &str,
        ordered: bool,
        max_retransmits: Option<u16>,
        max_packet_life_time: Option<u16>,
        stream_id: Option<u16>,
    ) -> Result<ClientDataProducer, ClientError> {
        self.ask(|reply| Cmd::ProduceData {
            label: label.to_owned(),
            ordered,
            max_retransmits,
            max_packet_life_time,
            stream_id,
            reply,
        })
        .await
    }

    /// Opens the negotiated channel a server data consumer sends on.
    pub async fn consume_data(
        &self,
        params: SctpStreamParameters,
        label: &str,
    ) -> Result<mpsc::UnboundedReceiver<ReceivedData>, ClientError> {
        self.ask(|reply| Cmd::ConsumeData {
            params,
            label: label.to_owned(),
            reply,
        })
        .await
    }

    /// Sends a message on a data producer's stream.
    pub fn send_data(&self, stream_id: u16, message: DataMessage) -> Result<(), ClientError> {
        self.commands
            .send(Cmd::SendData { stream_id, message })
            .map_err(|_| ClientError::Closed)
    }

    /// A transport negotiated with SDP offer/answer instead of mediasoup's parameters (for SFUs
    /// that speak SDP, such as Janus, in side-by-side benchmarks). ICE and DTLS start once the
    /// first offer/answer completes.
    pub async fn new_sdp(options: ClientTransportOptions) -> Result<ClientTransport, ClientError> {
        let socket = UdpSocket::bind(SocketAddr::new(options.bind_ip, 0))
            .await
            .map_err(|e| ClientError::Bind(e.to_string()))?;
        let local_addr = socket
            .local_addr()
            .map_err(|e| ClientError::Bind(e.to_string()))?;
        let mut rtc =
            sluice_media::numbering::rtc_config_for_router(options.numbering.capabilities())
                .set_rtp_mode(true)
                .build(Instant::now());
        let local =
            Candidate::host(local_addr, "udp").map_err(|e| ClientError::Bind(e.to_string()))?;
        rtc.add_local_candidate(local);
        let (tx, rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(ConnectionState::default());
        let driver = Driver {
            rtc,
            socket,
            local_addr,
            numbering: options.numbering,
            enable_sctp: false,
            sources: Vec::new(),
            receivers: HashMap::new(),
            catch_all: None,
            stats: ClientStats::default(),
            state: state_tx,
            next_mid: 0,
            next_stream_id: 0,
            channels: HashMap::new(),
            pending_offer: None,
            data_receivers: HashMap::new(),
            next_ssrc: rand::random::<u32>() % 1_000_000_000 + 1_000_000,
            cname: format!("sluice-client-{}", rand::random::<u32>()),
        };
        tokio::spawn(driver.run(rx));
        Ok(ClientTransport {
            commands: tx,
            local_addr,
            dtls_parameters: DtlsParameters {
                role: None,
                fingerprints: vec![],
            },
            state: state_rx,
        })
    }

    /// SDP mode: an offer that sends these sources (each its own m-line, send-only).
    pub async fn create_offer(&self, sources: Vec<SourceConfig>) -> Result<String, ClientError> {
        self.ask(|reply| Cmd::CreateOffer { sources, reply })
            .await?
    }

    /// SDP mode: the answer to our offer.
    pub async fn accept_answer(&self, answer: String) -> Result<(), ClientError> {
        self.ask(|reply| Cmd::AcceptAnswer { answer, reply })
            .await?
    }

    /// SDP mode: answers the remote's offer (receiving what it offers).
    pub async fn accept_offer(&self, offer: String) -> Result<String, ClientError> {
        self.ask(|reply| Cmd::AcceptOffer { offer, reply }).await?
    }

    /// Every RTP packet received on a stream no consumer was declared for.
    pub async fn receive_all(&self) -> Result<mpsc::UnboundedReceiver<ReceivedRtp>, ClientError> {
        self.ask(|reply| Cmd::ReceiveAll { reply }).await
    }

    pub async fn stats(&self) -> Result<ClientStats, ClientError> {
        self.ask(|reply| Cmd::Stats { reply }).await
    }

    pub fn close(&self) {
        let _ = self.commands.send(Cmd::Close);
    }
}

struct SourceLayer {
    ssrc: Ssrc,
    rid: Option<Rid>,
    active: bool,
    frame: u32,
    picture_id: u16,
    tl0: u8,
    force_keyframe: bool,
    seq: u64,
}

struct Source {
    mid: Mid,
    mid_text: String,
    pt: Pt,
    config: SourceConfig,
    layers: Vec<SourceLayer>,
    sending: bool,
    next_at: Option<Instant>,
    interval: Duration,
}

struct Driver {
    rtc: Rtc,
    socket: UdpSocket,
    local_addr: SocketAddr,
    numbering: ClientNumbering,
    enable_sctp: bool,
    sources: Vec<Source>,
    receivers: HashMap<u32, mpsc::UnboundedSender<ReceivedRtp>>,
    /// Where packets of undeclared streams go (SDP mode).
    catch_all: Option<mpsc::UnboundedSender<ReceivedRtp>>,
    stats: ClientStats,
    state: watch::Sender<ConnectionState>,
    next_mid: u32,
    next_stream_id: u16,
    channels: HashMap<u16, ChannelId>,
    pending_offer: Option<str0m::change::SdpPendingOffer>,
    data_receivers: HashMap<ChannelId, mpsc::UnboundedSender<ReceivedData>>,
    next_ssrc: u32,
    cname: String,
}

impl Driver {
    fn ssrc(&mut self) -> u32 {
        self.next_ssrc = self.next_ssrc.wrapping_add(2).max(2);
        self.next_ssrc
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Cmd>) {
        let mut buf = vec![0u8; 2048];
        let mut rtc_deadline = Instant::now();
        loop {
            let now = Instant::now();
            let source_deadline = self.sources.iter().filter_map(|s| s.next_at).min();
            let deadline = source_deadline.map_or(rtc_deadline, |d| d.min(rtc_deadline));
            let wait = deadline.saturating_duration_since(now);
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    None | Some(Cmd::Close) => break,
                    Some(command) => self.command(command),
                },
                received = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = received {
                        self.stats.datagrams_in += 1;
                        if let Ok(r) = Receive::new(Protocol::Udp, from, self.local_addr, &buf[..n]) {
                            let _ = self.rtc.handle_input(Input::Receive(Instant::now(), r));
                            if let Some(d) = self.drain() { rtc_deadline = d; } else { break; }
                        }
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
            let now = Instant::now();
            if now >= rtc_deadline {
                let _ = self.rtc.handle_input(Input::Timeout(now));
            }
            self.send_due(now);
            match self.drain() {
                Some(d) => rtc_deadline = d,
                None => break,
            }
        }
        self.state.send_modify(|s| s.closed = true);
    }

    fn command(&mut self, command: Cmd) {
        match command {
            Cmd::Start => {
                let mut api = self.rtc.direct_api();
                let _ = api.start_dtls(true);
                if self.enable_sctp {
                    api.start_sctp(true);
                }
                let now = Instant::now();
                for s in &mut self.sources {
                    if s.sending {
                        s.next_at = Some(now);
                    }
                }
            }
            Cmd::Produce {
                source,
                paused,
                reply,
            } => {
                let _ = reply.send(self.produce(source, paused));
            }
            Cmd::Consume { params, reply } => {
                let _ = reply.send(self.consume(params));
            }
            Cmd::RequestKeyframe { mid } => {
                let mid = Mid::from(mid.as_str());
                let mut api = self.rtc.direct_api();
                if let Some(s) = api.stream_rx_by_mid(mid, None) {
                    s.request_keyframe(KeyframeRequestKind::Pli);
                }
            }
            Cmd::RequestRemb { mid, bps } => {
                let mid = Mid::from(mid.as_str());
                let mut api = self.rtc.direct_api();
                if let Some(s) = api.stream_rx_by_mid(mid, None) {
                    s.request_remb(str0m::bwe::Bitrate::bps(bps));
                }
            }
            Cmd::SetSending { mid, sending } => {
                let now = Instant::now();
                if let Some(s) = self.sources.iter_mut().find(|s| s.mid_text == mid) {
                    s.sending = sending;
                    s.next_at = sending.then_some(now);
                    if sending {
                        for l in &mut s.layers {
                            l.force_keyframe = true;
                        }
                    }
                }
            }
            Cmd::SetLayerActive { mid, layer, active } => {
                if let Some(s) = self.sources.iter_mut().find(|s| s.mid_text == mid)
                    && let Some(l) = s.layers.get_mut(layer)
                {
                    l.active = active;
                    l.force_keyframe |= active;
                }
            }
            Cmd::ProduceData {
                label,
                ordered,
                max_retransmits,
                max_packet_life_time,
                stream_id,
                reply,
            } => {
                let stream_id = stream_id.unwrap_or_else(|| {
                    let id = self.next_stream_id;
                    self.next_stream_id = self.next_stream_id.wrapping_add(1);
                    id
                });
                let params = SctpStreamParameters {
                    stream_id,
                    ordered: Some(ordered),
                    max_packet_life_time: max_packet_life_time.map(u32::from),
                    max_retransmits: max_retransmits.map(u32::from),
                };
                let cid = self
                    .rtc
                    .direct_api()
                    .create_data_channel(channel_config(&params, &label));
                self.channels.insert(stream_id, cid);
                let _ = reply.send(ClientDataProducer {
                    label,
                    sctp_stream_parameters: params,
                });
            }
            Cmd::ConsumeData {
                params,
                label,
                reply,
            } => {
                let cid = self
                    .rtc
                    .direct_api()
                    .create_data_channel(channel_config(&params, &label));
                self.channels.insert(params.stream_id, cid);
                let (tx, rx) = mpsc::unbounded_channel();
                self.data_receivers.insert(cid, tx);
                let _ = reply.send(rx);
            }
            Cmd::SendData { stream_id, message } => {
                // str0m cannot send an empty message (see sluice-media's data_consumer.rs).
                let written = !message.data.is_empty()
                    && self
                        .channels
                        .get(&stream_id)
                        .and_then(|cid| self.rtc.channel(*cid))
                        .map(|mut ch| matches!(ch.write(message.binary, &message.data), Ok(true)))
                        .unwrap_or(false);
                if written {
                    self.stats.data_sent += 1;
                } else {
                    self.stats.data_refused += 1;
                }
            }
            Cmd::Stats { reply } => {
                let _ = reply.send(self.stats.clone());
            }
            Cmd::CreateOffer { sources, reply } => {
                let mut api = self.rtc.sdp_api();
                let mut added = Vec::new();
                for source in sources {
                    let kind = match source.kind() {
                        MediaKind::Audio => str0m::media::MediaKind::Audio,
                        MediaKind::Video => str0m::media::MediaKind::Video,
                    };
                    let mid =
                        api.add_media(kind, str0m::media::Direction::SendOnly, None, None, None);
                    added.push((mid, source));
                }
                let result = match api.apply() {
                    Some((offer, pending)) => {
                        self.pending_offer = Some(pending);
                        for (mid, source) in added {
                            self.add_sdp_source(mid, source);
                        }
                        Ok(offer.to_sdp_string())
                    }
                    None => Err(ClientError::BadServerParameters("nothing to offer".into())),
                };
                let _ = reply.send(result);
            }
            Cmd::AcceptAnswer { answer, reply } => {
                let result = match (
                    self.pending_offer.take(),
                    str0m::change::SdpAnswer::from_sdp_string(&answer),
                ) {
                    (Some(pending), Ok(answer)) => self
                        .rtc
                        .sdp_api()
                        .accept_answer(pending, answer)
                        .map_err(|e| ClientError::BadServerParameters(e.to_string())),
                    (None, _) => Err(ClientError::BadServerParameters("no pending offer".into())),
                    (_, Err(e)) => Err(ClientError::BadServerParameters(e.to_string())),
                };
                let _ = reply.send(result);
            }
            Cmd::AcceptOffer { offer, reply } => {
                let result = str0m::change::SdpOffer::from_sdp_string(&offer)
                    .map_err(|e| ClientError::BadServerParameters(e.to_string()))
                    .and_then(|offer| {
                        self.rtc
                            .sdp_api()
                            .accept_offer(offer)
                            .map(|a| a.to_sdp_string())
                            .map_err(|e| ClientError::BadServerParameters(e.to_string()))
                    });
                let _ = reply.send(result);
            }
            Cmd::ReceiveAll { reply } => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.catch_all = Some(tx);
                let _ = reply.send(rx);
            }
            Cmd::Close => {}
        }
    }

    fn produce(
        &mut self,
        config: SourceConfig,
        paused: bool,
    ) -> Result<ClientProducer, ClientError> {
        let kind = config.kind();
        let mid_text = format!("c{}", self.next_mid);
        self.next_mid += 1;
        let mid = Mid::from(mid_text.as_str());
        let main_pt = self
            .numbering
            .capabilities()
            .codecs
            .iter()
            .find(|c| c.kind == kind && !c.mime_type.to_ascii_lowercase().ends_with("/rtx"))
            .and_then(|c| c.preferred_payload_type)
            .ok_or(ClientError::NoCodec(kind))?;
        let has_rtx = kind == MediaKind::Video && self.numbering.rtx_for(main_pt).is_some();
        let rids: Vec<String> = match &config {
            SourceConfig::Video { rids, .. } => rids.clone(),
            SourceConfig::Audio { .. } => vec![],
        };
        let temporal = match &config {
            SourceConfig::Video {
                temporal_layers, ..
            } => *temporal_layers,
            SourceConfig::Audio { .. } => 1,
        };
        let str0m_kind = match kind {
            MediaKind::Audio => str0m::media::MediaKind::Audio,
            MediaKind::Video => str0m::media::MediaKind::Video,
        };
        let mut layers = Vec::new();
        let mut encodings: Vec<RtpEncodingParameters> = Vec::new();
        let layer_count = rids.len().max(1);
        let mut ssrcs = Vec::new();
        for _ in 0..layer_count {
            let ssrc = self.ssrc();
            let rtx = has_rtx.then(|| ssrc + 1);
            ssrcs.push((ssrc, rtx));
        }
        let mut api: DirectApi<'_> = self.rtc.direct_api();
        api.declare_media(mid, str0m_kind);
        for (i, (ssrc, rtx)) in ssrcs.into_iter().enumerate() {
            let rid = rids.get(i).map(|r| Rid::from(r.as_str()));
            api.declare_stream_tx(ssrc.into(), rtx.map(Into::into), mid, rid);
            layers.push(SourceLayer {
                ssrc: ssrc.into(),
                rid,
                active: true,
                frame: 0,
                picture_id: rand::random::<u16>() & 0x7fff,
                tl0: rand::random(),
                force_keyframe: true,
                seq: u64::from(rand::random::<u16>() & 0x3fff) + 1,
            });
            encodings.push(match rids.get(i) {
                Some(rid) => rid_encoding(rid, &format!("L1T{temporal}")),
                None => {
                    let mut e = ssrc_encoding(ssrc, rtx);
                    if temporal > 1 {
                        e.scalability_mode = Some(format!("L1T{temporal}"));
                    }
                    e
                }
            });
        }
        let rtp_parameters = self
            .numbering
            .producer_parameters(kind, &mid_text, encodings, &self.cname)
            .ok_or(ClientError::NoCodec(kind))?;
        let interval = match &config {
            SourceConfig::Video { fps, .. } => {
                Duration::from_micros(1_000_000 / u64::from((*fps).max(1)))
            }
            SourceConfig::Audio { .. } => Duration::from_millis(20),
        };
        let started = self.state.borrow().dtls_connected || self.rtc.is_connected();
        self.sources.push(Source {
            mid,
            mid_text: mid_text.clone(),
            pt: main_pt.into(),
            config,
            layers,
            sending: !paused,
            next_at: (!paused && started).then(Instant::now),
            interval,
        });
        Ok(ClientProducer {
            mid: mid_text,
            kind,
            rtp_parameters,
        })
    }

    fn consume(
        &mut self,
        params: RtpParameters,
    ) -> Result<mpsc::UnboundedReceiver<ReceivedRtp>, ClientError> {
        let mid_text = params
            .mid
            .clone()
            .ok_or_else(|| ClientError::BadConsumerParameters("no mid".into()))?;
        let mid = Mid::from(mid_text.as_str());
        let encoding = params
            .encodings
            .first()
            .ok_or_else(|| ClientError::BadConsumerParameters("no encoding".into()))?;
        let ssrc = encoding
            .ssrc
            .ok_or_else(|| ClientError::BadConsumerParameters("no ssrc".into()))?;
        let rtx = encoding.rtx.map(|r| r.ssrc);
        let kind = if params
            .codecs
            .first()
            .is_some_and(|c| c.mime_type.to_ascii_lowercase().starts_with("audio/"))
        {
            str0m::media::MediaKind::Audio
        } else {
            str0m::media::MediaKind::Video
        };
        let mut api = self.rtc.direct_api();
        api.declare_media(mid, kind);
        let stream = api.expect_stream_rx(ssrc.into(), rtx.map(Into::into), mid, None);
        if kind == str0m::media::MediaKind::Audio {
            stream.suppress_nack(true);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.receivers.insert(ssrc, tx);
        Ok(rx)
    }

    /// A source on an SDP m-line; its SSRC and payload type are known once negotiated.
    fn add_sdp_source(&mut self, mid: Mid, config: SourceConfig) {
        let interval = match &config {
            SourceConfig::Video { fps, .. } => {
                Duration::from_micros(1_000_000 / u64::from((*fps).max(1)))
            }
            SourceConfig::Audio { .. } => Duration::from_millis(20),
        };
        self.sources.push(Source {
            mid,
            mid_text: mid.to_string(),
            pt: Pt::from(0),
            config,
            layers: vec![SourceLayer {
                ssrc: Ssrc::from(0),
                rid: None,
                active: true,
                frame: 0,
                picture_id: rand::random::<u16>() & 0x7fff,
                tl0: rand::random(),
                force_keyframe: true,
                seq: u64::from(rand::random::<u16>() & 0x3fff) + 1,
            }],
            sending: true,
            next_at: None,
            interval,
        });
    }

    /// Fills in an SDP source's SSRC and payload type from the negotiated session.
    fn resolve_sdp_source(&mut self, index: usize) -> bool {
        let s = &self.sources[index];
        if *s.layers[0].ssrc != 0 {
            return true;
        }
        let mid = s.mid;
        let Some(pt) = self
            .rtc
            .media(mid)
            .and_then(|m| m.remote_pts().first().copied())
        else {
            return false;
        };
        let Some(ssrc) = self
            .rtc
            .direct_api()
            .stream_tx_by_mid(mid, None)
            .map(|s| s.ssrc())
        else {
            return false;
        };
        let s = &mut self.sources[index];
        s.pt = pt;
        s.layers[0].ssrc = ssrc;
        true
    }

    /// Sends every source's due frames.
    fn send_due(&mut self, now: Instant) {
        let connected = self.state.borrow().dtls_connected;
        if !connected {
            return;
        }
        for i in 0..self.sources.len() {
            while let Some(at) = self.sources[i].next_at {
                if at > now {
                    break;
                }
                self.send_frame(i, now);
                let s = &mut self.sources[i];
                let next = at + s.interval;
                // Do not burst to catch up after a stall.
                s.next_at = Some(if next + s.interval < now {
                    now + s.interval
                } else {
                    next
                });
            }
        }
    }

    fn send_frame(&mut self, index: usize, now: Instant) {
        if !self.resolve_sdp_source(index) {
            return;
        }
        let sent_us = media::now_us();
        let mut api = self.rtc.direct_api();
        let s = &mut self.sources[index];
        if !s.sending {
            return;
        }
        match s.config.clone() {
            SourceConfig::Audio { payload_size } => {
                let l = &mut s.layers[0];
                let stamp = Stamp {
                    layer: 0,
                    frame: l.frame,
                    index: 0,
                    count: 1,
                    sent_us,
                };
                let payload = media::audio_payload(stamp, payload_size);
                let ts = l.frame.wrapping_mul(960);
                if let Some(stream) = api.stream_tx(&l.ssrc) {
                    stream.write_rtp(
                        RtpWrite::new(s.pt, l.seq.into(), ts, now, payload)
                            .marker(l.frame == 0)
                            .ext_vals(ExtensionValues {
                                audio_level: Some(-30),
                                voice_activity: Some(true),
                                ..Default::default()
                            }),
                    );
                    self.stats.rtp_sent += 1;
                }
                l.seq += 1;
                l.frame = l.frame.wrapping_add(1);
            }
            SourceConfig::Video {
                fps,
                packets_per_frame,
                payload_size,
                keyframe_interval,
                temporal_layers,
                ..
            } => {
                let ticks = 90_000 / fps.max(1);
                for (li, l) in s.layers.iter_mut().enumerate() {
                    if !l.active {
                        continue;
                    }
                    let keyframe = l.force_keyframe
                        || (keyframe_interval > 0 && l.frame % keyframe_interval == 0);
                    l.force_keyframe = false;
                    let tid = temporal_id(l.frame, temporal_layers);
                    if tid == 0 && l.frame > 0 {
                        l.tl0 = l.tl0.wrapping_add(1);
                    }
                    let fields = Vp8Fields {
                        picture_id: l.picture_id,
                        tl0_pic_idx: l.tl0,
                        temporal_id: tid,
                        layer_sync: tid > 0,
                    };
                    let count = packets_per_frame
                        .get(li)
                        .or(packets_per_frame.last())
                        .copied()
                        .unwrap_or(1)
                        .max(1)
                        * if keyframe { 2 } else { 1 };
                    let ts = l.frame.wrapping_mul(ticks);
                    for p in 0..count {
                        let stamp = Stamp {
                            layer: li as u8,
                            frame: l.frame,
                            index: p as u16,
                            count: count as u16,
                            sent_us,
                        };
                        let payload = media::vp8_payload(keyframe, fields, stamp, payload_size);
                        if let Some(stream) = api.stream_tx(&l.ssrc) {
                            stream.write_rtp(
                                RtpWrite::new(s.pt, l.seq.into(), ts, now, payload)
                                    .marker(p + 1 == count)
                                    .nackable(true),
                            );
                            self.stats.rtp_sent += 1;
                        }
                        l.seq += 1;
                    }
                    if keyframe {
                        *self
                            .stats
                            .keyframes_sent
                            .entry(s.mid_text.clone())
                            .or_default() += 1;
                    }
                    l.frame = l.frame.wrapping_add(1);
                    l.picture_id = (l.picture_id + 1) & 0x7fff;
                }
            }
        }
    }

    /// Polls str0m's output: sends datagrams, handles events; returns the next deadline, or
    /// `None` when the session is over.
    fn drain(&mut self) -> Option<Instant> {
        let mut immediate = 0;
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    self.stats.datagrams_out += 1;
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                // Written media leaves str0m only on a timeout: give it at once.
                Ok(Output::Timeout(t)) if immediate < 2 && t <= Instant::now() => {
                    immediate += 1;
                    let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                }
                Ok(Output::Timeout(t)) => return Some(t),
                Ok(Output::Event(e)) => self.event(e),
                Err(_) => return None,
            }
            if !self.rtc.is_alive() {
                return None;
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::IceConnectionStateChange(s) => {
                let connected = matches!(
                    s,
                    IceConnectionState::Connected | IceConnectionState::Completed
                );
                self.state.send_modify(|st| st.ice_connected = connected);
            }
            Event::Connected => {
                self.state.send_modify(|st| st.dtls_connected = true);
                let now = Instant::now();
                for s in &mut self.sources {
                    if s.sending {
                        s.next_at = Some(now);
                    }
                }
            }
            Event::RtpPacket(p) => {
                self.stats.rtp_received += 1;
                let ssrc = *p.header.ssrc;
                if let Some(tx) = self.receivers.get(&ssrc).or(self.catch_all.as_ref()) {
                    let _ = tx.send(ReceivedRtp {
                        ssrc,
                        payload_type: *p.header.payload_type,
                        seq: *p.seq_no,
                        timestamp: p.header.timestamp,
                        marker: p.header.marker,
                        payload: p.payload.clone(),
                        audio_level: p.header.ext_vals.audio_level,
                        received_us: media::now_us(),
                    });
                }
            }
            Event::KeyframeRequest(req) => {
                if let Some(s) = self.sources.iter_mut().find(|s| s.mid == req.mid) {
                    *self
                        .stats
                        .keyframe_requests
                        .entry(s.mid_text.clone())
                        .or_default() += 1;
                    for l in &mut s.layers {
                        if req.rid.is_none() || l.rid == req.rid {
                            l.force_keyframe = true;
                        }
                    }
                }
            }
            Event::ChannelData(d) => {
                self.stats.data_received += 1;
                if let Some(tx) = self.data_receivers.get(&d.id) {
                    let _ = tx.send(ReceivedData {
                        binary: d.binary,
                        data: d.data,
                        received_us: media::now_us(),
                    });
                }
            }
            Event::Closed => self.state.send_modify(|st| st.closed = true),
            _ => {}
        }
    }
}

fn channel_config(params: &SctpStreamParameters, label: &str) -> ChannelConfig {
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    ChannelConfig {
        label: label.to_owned(),
        ordered: params.ordered.unwrap_or(true),
        reliability: match (params.max_packet_life_time, params.max_retransmits) {
            (Some(l), _) => Reliability::MaxPacketLifetime { lifetime: clamp(l) },
            (None, Some(r)) => Reliability::MaxRetransmits {
                retransmits: clamp(r),
            },
            (None, None) => Reliability::Reliable,
        },
        negotiated: Some(params.stream_id),
        protocol: String::new(),
    }
}

/// Temporal layer of frame `n` in the usual L1T2 / L1T3 patterns (0,1 / 0,2,1,2).
pub fn temporal_id(n: u32, layers: u8) -> u8 {
    match layers {
        0 | 1 => 0,
        2 => (n % 2) as u8,
        _ => [0, 2, 1, 2][(n % 4) as usize],
    }
}
