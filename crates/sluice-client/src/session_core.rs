//! `ClientSession`: the sans-IO core of a client transport. It owns the str0m [`Rtc`] (full
//! ICE, controlling; DTLS client) and everything a client does with it: ICE/DTLS/SCTP start,
//! producers with synthetic media ([`crate::media`]), consumers, keyframe and REMB requests,
//! data channels, stats and connection state.
//!
//! It does no I/O and never reads a clock: every input comes with its time, and nothing happens
//! between inputs. Drive it like str0m's `Rtc` or quinn-proto's `Endpoint`:
//!
//! - feed datagrams with [`handle_datagram`](ClientSession::handle_datagram) and wake it at
//!   [`poll_timeout`](ClientSession::poll_timeout) with
//!   [`handle_timeout`](ClientSession::handle_timeout);
//! - after any call, send what [`poll_transmit`](ClientSession::poll_transmit) gives until it
//!   gives `None`;
//! - received RTP and data-channel messages go to the channels that
//!   [`consume`](ClientSession::consume), [`consume_data`](ClientSession::consume_data) and
//!   [`receive_all`](ClientSession::receive_all) return (unbounded, usable without a runtime);
//!   [`connection_state`](ClientSession::connection_state) and
//!   [`stats`](ClientSession::stats) are read at any time.
//!
//! [`ClientTransport`](crate::transport::ClientTransport) is the async driver of one session on
//! a real UDP socket and the real clock; a test can instead drive sessions on a virtual network
//! at virtual time. With [`ClientTransportOptions::seed`] the session's own choices (ICE
//! credentials, SSRCs, CNAME, sequence numbers, picture ids) are reproducible; the DTLS
//! certificate and str0m's internal randomness are not.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
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
use tokio::sync::mpsc;

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

impl ServerTransportInfo {
    /// The address of the server's UDP candidate, or of its TCP one.
    pub fn candidate_addr(&self, tcp: bool) -> Result<SocketAddr, ClientError> {
        let wanted = if tcp {
            sluice_media::ortc::Protocol::Tcp
        } else {
            sluice_media::ortc::Protocol::Udp
        };
        let c = self
            .ice_candidates
            .iter()
            .find(|c| c.protocol == wanted)
            .ok_or_else(|| ClientError::BadServerParameters(format!("no {wanted:?} candidate")))?;
        let ip: IpAddr = c
            .address
            .parse()
            .map_err(|_| ClientError::BadServerParameters(format!("bad address {}", c.address)))?;
        Ok(SocketAddr::new(ip, c.port))
    }
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
    /// Seeds the session's own random choices (ICE credentials, SSRCs, CNAME, initial sequence
    /// numbers, picture ids) for reproducible runs; `None`: random.
    pub seed: Option<u64>,
    /// How instants map to the microseconds in payload stamps and receive times. `None`: the
    /// system clock for a [`ClientTransport`](crate::transport::ClientTransport); for a bare
    /// [`ClientSession`], microsecond 0 at its creation.
    pub wall_clock: Option<WallClock>,
    /// ICE over TCP: connect to the server's TCP candidate (RFC 6544's active side, RFC 4571
    /// framing) instead of its UDP one, as a browser behind a network that blocks UDP does.
    pub tcp: bool,
}

impl ClientTransportOptions {
    pub fn new(numbering: ClientNumbering) -> Self {
        ClientTransportOptions {
            numbering,
            remote_override: None,
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            enable_sctp: true,
            fingerprint_hash: HashFunction::Sha256,
            seed: None,
            wall_clock: None,
            tcp: false,
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
    /// The last RTCP sender report of the stream received before this packet, if any.
    pub sender_report: Option<ReceivedSenderReport>,
}

/// What a sender report of a received stream said (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedSenderReport {
    pub ssrc: u32,
    /// Its NTP time, in milliseconds since the Unix epoch.
    pub ntp_unix_ms: u64,
    pub rtp_time: u64,
    pub packet_count: u32,
    pub octet_count: u32,
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
    /// Data channels opened so far (the SCTP association is up once one is).
    pub channels_opened: u32,
    pub closed: bool,
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

/// Maps the session's instants to the microseconds stamped in synthetic payloads
/// ([`Stamp::sent_us`]) and in [`ReceivedRtp::received_us`] / [`ReceivedData::received_us`].
///
/// A real client maps its clock to UNIX time (so two clients on one machine can measure
/// latency); sessions on one virtual network share one mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    /// An instant of the session's clock...
    pub at: Instant,
    /// ...and the microseconds it stands for.
    pub unix_us: u64,
}

impl WallClock {
    /// Microseconds at `now`.
    pub fn us_at(&self, now: Instant) -> u64 {
        match now.checked_duration_since(self.at) {
            Some(d) => self.unix_us.saturating_add(micros(d)),
            None => self
                .unix_us
                .saturating_sub(micros(self.at.duration_since(now))),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A datagram the session wants sent (from its local address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// Alphabet of ICE ufrag and password characters (RFC 8445 ice-chars minus `+` and `/`).
const ICE_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn ice_token(rng: &mut StdRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(ICE_CHARS[rng.random_range(0..ICE_CHARS.len())]))
        .collect()
}

/// The sans-IO client side of one WebRTC transport (see the module docs).
pub struct ClientSession {
    rtc: Rtc,
    local_addr: SocketAddr,
    /// What our datagrams travel by: UDP, or frames of a TCP connection.
    protocol: Protocol,
    dtls_parameters: DtlsParameters,
    ice_ufrag: String,
    numbering: ClientNumbering,
    enable_sctp: bool,
    sources: Vec<Source>,
    receivers: HashMap<u32, mpsc::UnboundedSender<ReceivedRtp>>,
    /// Where packets of undeclared streams go (SDP mode).
    catch_all: Option<mpsc::UnboundedSender<ReceivedRtp>>,
    stats: ClientStats,
    state: ConnectionState,
    next_mid: u32,
    next_stream_id: u16,
    channels: HashMap<u16, ChannelId>,
    pending_offer: Option<str0m::change::SdpPendingOffer>,
    data_receivers: HashMap<ChannelId, mpsc::UnboundedSender<ReceivedData>>,
    next_ssrc: u32,
    cname: String,
    rng: StdRng,
    wall_clock: WallClock,
    /// The latest time given (never goes back).
    now: Instant,
    /// str0m's next deadline.
    rtc_deadline: Option<Instant>,
    /// Closed, or str0m is done: inputs are ignored and nothing more comes out.
    finished: bool,
    outbox: VecDeque<Transmit>,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("local_addr", &self.local_addr)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// A session at `local_addr` (no socket: datagrams are given to it and taken from it)
    /// prepared for ICE and DTLS toward `server`; nothing is sent before
    /// [`start`](Self::start) (give the server our [`dtls_parameters`](Self::dtls_parameters)
    /// first). `options.bind_ip` is ignored.
    pub fn new(
        now: Instant,
        local_addr: SocketAddr,
        server: &ServerTransportInfo,
        options: ClientTransportOptions,
    ) -> Result<ClientSession, ClientError> {
        let (protocol, proto_name) = if options.tcp {
            (Protocol::Tcp, "tcp")
        } else {
            (Protocol::Udp, "udp")
        };
        let remote = match options.remote_override {
            Some(addr) => addr,
            None => server.candidate_addr(options.tcp)?,
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

        let mut rng = seeded_rng(options.seed);
        let creds = IceCreds {
            ufrag: ice_token(&mut rng, 8),
            pass: ice_token(&mut rng, 24),
        };
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| ClientError::Bind("cannot generate a DTLS certificate".into()))?;
        let announced = options.fingerprint_hash.digest(&cert.certificate);
        let mut rtc =
            sluice_media::numbering::rtc_config_for_router(options.numbering.capabilities())
                .set_rtp_mode(true)
                .set_stats_interval(Some(Duration::from_secs(1)))
                .set_local_ice_credentials(creds.clone())
                .set_dtls_cert(cert)
                .build(now);
        let local = Candidate::host(local_addr, proto_name)
            .map_err(|e| ClientError::Bind(e.to_string()))?;
        rtc.add_local_candidate(local);
        let remote_candidate = Candidate::host(remote, proto_name)
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
        let enable_sctp = options.enable_sctp;
        let mut session = ClientSession::assemble(
            now,
            rtc,
            rng,
            creds.ufrag,
            local_addr,
            dtls_parameters,
            enable_sctp,
            options,
        );
        session.protocol = protocol;
        Ok(session)
    }

    /// A session negotiated with SDP offer/answer instead of mediasoup's parameters (for SFUs
    /// that speak SDP, such as Janus). ICE and DTLS start once the first offer/answer
    /// completes. `options.bind_ip` and `options.enable_sctp` are ignored.
    pub fn new_sdp(
        now: Instant,
        local_addr: SocketAddr,
        options: ClientTransportOptions,
    ) -> Result<ClientSession, ClientError> {
        let mut rng = seeded_rng(options.seed);
        let creds = IceCreds {
            ufrag: ice_token(&mut rng, 8),
            pass: ice_token(&mut rng, 24),
        };
        let mut rtc =
            sluice_media::numbering::rtc_config_for_router(options.numbering.capabilities())
                .set_rtp_mode(true)
                .set_local_ice_credentials(creds.clone())
                .build(now);
        let local =
            Candidate::host(local_addr, "udp").map_err(|e| ClientError::Bind(e.to_string()))?;
        rtc.add_local_candidate(local);
        let dtls_parameters = DtlsParameters {
            role: None,
            fingerprints: vec![],
        };
        Ok(ClientSession::assemble(
            now,
            rtc,
            rng,
            creds.ufrag,
            local_addr,
            dtls_parameters,
            false,
            options,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        now: Instant,
        rtc: Rtc,
        mut rng: StdRng,
        ice_ufrag: String,
        local_addr: SocketAddr,
        dtls_parameters: DtlsParameters,
        enable_sctp: bool,
        options: ClientTransportOptions,
    ) -> ClientSession {
        let next_ssrc = rng.random::<u32>() % 1_000_000_000 + 1_000_000;
        let cname = format!("sluice-client-{}", rng.random::<u32>());
        let mut session = ClientSession {
            rtc,
            local_addr,
            protocol: Protocol::Udp,
            dtls_parameters,
            ice_ufrag,
            numbering: options.numbering,
            enable_sctp,
            sources: Vec::new(),
            receivers: HashMap::new(),
            catch_all: None,
            stats: ClientStats::default(),
            state: ConnectionState::default(),
            next_mid: 0,
            next_stream_id: 0,
            channels: HashMap::new(),
            pending_offer: None,
            data_receivers: HashMap::new(),
            next_ssrc,
            cname,
            rng,
            wall_clock: options.wall_clock.unwrap_or(WallClock {
                at: now,
                unix_us: 0,
            }),
            now,
            rtc_deadline: Some(now),
            finished: false,
            outbox: VecDeque::new(),
        };
        session.drain();
        session
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `{role: "client", fingerprints}` for `connectWebRtcTransport` (no fingerprint in SDP
    /// mode).
    pub fn dtls_parameters(&self) -> &DtlsParameters {
        &self.dtls_parameters
    }

    /// Our ICE username fragment (the second half of our STUN requests' USERNAME).
    pub fn local_ice_ufrag(&self) -> &str {
        &self.ice_ufrag
    }

    pub fn connection_state(&self) -> ConnectionState {
        self.state
    }

    /// Whether the session still runs (not closed, and str0m not done).
    pub fn is_alive(&self) -> bool {
        !self.finished
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// A datagram that arrived at our local address from `from` at `now`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if self.finished {
            return;
        }
        let now = self.advance(now);
        self.stats.datagrams_in += 1;
        if let Ok(r) = Receive::new(self.protocol, from, self.local_addr, bytes) {
            let _ = self.rtc.handle_input(Input::Receive(now, r));
            self.drain();
        }
    }

    /// Time passed until `now`: runs str0m's timers if due and sends due media frames.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        let now = self.advance(now);
        if self.rtc_deadline.is_some_and(|d| now >= d) {
            let _ = self.rtc.handle_input(Input::Timeout(now));
        }
        self.send_due(now);
        self.drain();
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next: the earliest of str0m's
    /// deadline and the next synthetic frame; `None` once the session is over (closed, or
    /// str0m is done).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let frames = if self.state.dtls_connected {
            self.sources.iter().filter_map(|s| s.next_at).min()
        } else {
            // Frames wait for DTLS; `Event::Connected` schedules them.
            None
        };
        match (self.rtc_deadline, frames) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts ICE, DTLS and (if enabled) SCTP.
    pub fn start(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        let now = self.advance(now);
        let mut api = self.rtc.direct_api();
        let _ = api.start_dtls(true);
        if self.enable_sctp {
            api.start_sctp(true);
        }
        for s in &mut self.sources {
            if s.sending {
                s.next_at = Some(now);
            }
        }
        self.drain();
    }

    /// Declares a synthetic producer; it sends once connected and not paused.
    pub fn produce(
        &mut self,
        now: Instant,
        source: SourceConfig,
        paused: bool,
    ) -> Result<ClientProducer, ClientError> {
        if self.finished {
            return Err(ClientError::Closed);
        }
        let now = self.advance(now);
        let produced = self.declare_producer(now, source, paused);
        self.drain();
        produced
    }

    /// Receives a consumer with these (server-given) parameters: its packets go to the channel.
    pub fn consume(
        &mut self,
        params: RtpParameters,
    ) -> Result<mpsc::UnboundedReceiver<ReceivedRtp>, ClientError> {
        if self.finished {
            return Err(ClientError::Closed);
        }
        let consumed = self.declare_consumer(params);
        self.drain();
        consumed
    }

    /// Sends a PLI for the consumer with this mid.
    pub fn request_keyframe(&mut self, mid: &str) {
        let mid = Mid::from(mid);
        let mut api = self.rtc.direct_api();
        if let Some(s) = api.stream_rx_by_mid(mid, None) {
            s.request_keyframe(KeyframeRequestKind::Pli);
        }
        self.drain();
    }

    /// Sends a REMB (receiver-estimated maximum bitrate) for the consumer with this mid, as a
    /// browser does when it estimates bandwidth on the receiving side (abs-send-time).
    pub fn request_remb(&mut self, mid: &str, bps: u64) {
        let mid = Mid::from(mid);
        let mut api = self.rtc.direct_api();
        if let Some(s) = api.stream_rx_by_mid(mid, None) {
            s.request_remb(str0m::bwe::Bitrate::bps(bps));
        }
        self.drain();
    }

    /// Stops or restarts a producer's packets (what a browser does on pause); a restart sends
    /// a keyframe first.
    pub fn set_sending(&mut self, now: Instant, mid: &str, sending: bool) {
        let now = self.advance(now);
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

    /// Stops or restarts one simulcast layer (as Chromium drops its top layer under load).
    pub fn set_layer_active(&mut self, mid: &str, layer: usize, active: bool) {
        if let Some(s) = self.sources.iter_mut().find(|s| s.mid_text == mid)
            && let Some(l) = s.layers.get_mut(layer)
        {
            l.active = active;
            l.force_keyframe |= active;
        }
    }

    /// Opens a negotiated data channel to produce on; send its parameters with `produceData`.
    /// `stream_id`: pick one (tests of hostile clients), else the next free.
    pub fn produce_data(
        &mut self,
        label: &str,
        ordered: bool,
        max_retransmits: Option<u16>,
        max_packet_life_time: Option<u16>,
        stream_id: Option<u16>,
    ) -> ClientDataProducer {
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
            .create_data_channel(channel_config(&params, label));
        self.channels.insert(stream_id, cid);
        self.drain();
        ClientDataProducer {
            label: label.to_owned(),
            sctp_stream_parameters: params,
        }
    }

    /// Opens the negotiated channel a server data consumer sends on: its messages go to the
    /// channel.
    pub fn consume_data(
        &mut self,
        params: SctpStreamParameters,
        label: &str,
    ) -> mpsc::UnboundedReceiver<ReceivedData> {
        let cid = self
            .rtc
            .direct_api()
            .create_data_channel(channel_config(&params, label));
        self.channels.insert(params.stream_id, cid);
        let (tx, rx) = mpsc::unbounded_channel();
        self.data_receivers.insert(cid, tx);
        self.drain();
        rx
    }

    /// Sends a message on a data producer's stream; counted in
    /// [`ClientStats::data_refused`] when SCTP has no room or the channel is not open yet.
    pub fn send_data(&mut self, stream_id: u16, message: &DataMessage) {
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
        self.drain();
    }

    /// SDP mode: an offer that sends these sources (each its own m-line, send-only).
    pub fn create_offer(&mut self, sources: Vec<SourceConfig>) -> Result<String, ClientError> {
        let mut api = self.rtc.sdp_api();
        let mut added = Vec::new();
        for source in sources {
            let kind = match source.kind() {
                MediaKind::Audio => str0m::media::MediaKind::Audio,
                MediaKind::Video => str0m::media::MediaKind::Video,
            };
            let mid = api.add_media(kind, str0m::media::Direction::SendOnly, None, None, None);
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
        self.drain();
        result
    }

    /// SDP mode: the answer to our offer.
    pub fn accept_answer(&mut self, answer: &str) -> Result<(), ClientError> {
        let result = match (
            self.pending_offer.take(),
            str0m::change::SdpAnswer::from_sdp_string(answer),
        ) {
            (Some(pending), Ok(answer)) => self
                .rtc
                .sdp_api()
                .accept_answer(pending, answer)
                .map_err(|e| ClientError::BadServerParameters(e.to_string())),
            (None, _) => Err(ClientError::BadServerParameters("no pending offer".into())),
            (_, Err(e)) => Err(ClientError::BadServerParameters(e.to_string())),
        };
        self.drain();
        result
    }

    /// SDP mode: answers the remote's offer (receiving what it offers).
    pub fn accept_offer(&mut self, offer: &str) -> Result<String, ClientError> {
        let result = str0m::change::SdpOffer::from_sdp_string(offer)
            .map_err(|e| ClientError::BadServerParameters(e.to_string()))
            .and_then(|offer| {
                self.rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map(|a| a.to_sdp_string())
                    .map_err(|e| ClientError::BadServerParameters(e.to_string()))
            });
        self.drain();
        result
    }

    /// Every RTP packet received on a stream no consumer was declared for.
    pub fn receive_all(&mut self) -> mpsc::UnboundedReceiver<ReceivedRtp> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.catch_all = Some(tx);
        rx
    }

    /// Ends the session: nothing more is sent (pending datagrams are dropped), inputs are
    /// ignored, and [`poll_timeout`](Self::poll_timeout) gives `None`.
    pub fn close(&mut self) {
        self.rtc.disconnect();
        self.finish();
        self.outbox.clear();
    }

    fn finish(&mut self) {
        self.finished = true;
        self.state.closed = true;
        self.rtc_deadline = None;
        // Receivers see their channel end.
        self.receivers.clear();
        self.catch_all = None;
        self.data_receivers.clear();
    }

    /// Takes `now` as the latest time, never going back.
    fn advance(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    fn ssrc(&mut self) -> u32 {
        self.next_ssrc = self.next_ssrc.wrapping_add(2).max(2);
        self.next_ssrc
    }

    /// Polls str0m's output at the latest time: queues datagrams, handles events, records the
    /// next deadline (or closes when str0m is done).
    fn drain(&mut self) {
        let mut immediate = 0;
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    self.stats.datagrams_out += 1;
                    self.outbox.push_back(Transmit {
                        destination: t.destination,
                        contents: t.contents.into(),
                    });
                }
                // Written media leaves str0m only on a timeout: give it at once.
                Ok(Output::Timeout(t)) if immediate < 2 && t <= self.now => {
                    immediate += 1;
                    let _ = self.rtc.handle_input(Input::Timeout(self.now));
                }
                Ok(Output::Timeout(t)) => {
                    self.rtc_deadline = Some(t);
                    return;
                }
                Ok(Output::Event(e)) => self.event(e),
                Err(_) => {
                    self.finish();
                    return;
                }
            }
            if !self.rtc.is_alive() {
                self.finish();
                return;
            }
        }
    }

    fn declare_producer(
        &mut self,
        now: Instant,
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
                picture_id: self.rng.random::<u16>() & 0x7fff,
                tl0: self.rng.random(),
                force_keyframe: true,
                seq: u64::from(self.rng.random::<u16>() & 0x3fff) + 1,
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
        let started = self.state.dtls_connected || self.rtc.is_connected();
        self.sources.push(Source {
            mid,
            mid_text: mid_text.clone(),
            pt: main_pt.into(),
            config,
            layers,
            sending: !paused,
            next_at: (!paused && started).then_some(now),
            interval,
        });
        Ok(ClientProducer {
            mid: mid_text,
            kind,
            rtp_parameters,
        })
    }

    fn declare_consumer(
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
                picture_id: self.rng.random::<u16>() & 0x7fff,
                tl0: self.rng.random(),
                force_keyframe: true,
                seq: u64::from(self.rng.random::<u16>() & 0x3fff) + 1,
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
        let connected = self.state.dtls_connected;
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
        let sent_us = self.wall_clock.us_at(now);
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

    fn event(&mut self, event: Event) {
        match event {
            Event::IceConnectionStateChange(s) => {
                let connected = matches!(
                    s,
                    IceConnectionState::Connected | IceConnectionState::Completed
                );
                self.state.ice_connected = connected;
            }
            Event::Connected => {
                self.state.dtls_connected = true;
                let now = self.now;
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
                        received_us: self.wall_clock.us_at(self.now),
                        sender_report: p.last_sender_info.map(|s| ReceivedSenderReport {
                            ssrc: *s.ssrc,
                            ntp_unix_ms: s
                                .ntp_time
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_millis() as u64),
                            rtp_time: s.rtp_time.numer(),
                            packet_count: s.sender_packet_count,
                            octet_count: s.sender_octet_count,
                        }),
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
                        received_us: self.wall_clock.us_at(self.now),
                    });
                }
            }
            Event::ChannelOpen(..) => {
                self.state.channels_opened = self.state.channels_opened.saturating_add(1);
            }
            Event::Closed => self.state.closed = true,
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

fn seeded_rng(seed: Option<u64>) -> StdRng {
    StdRng::seed_from_u64(seed.unwrap_or_else(rand::random))
}
