//! The media plane's value types: options, what the core reports back when it creates an
//! object, statistics and dumps. Handles, commands and the core all use them; they use nothing
//! above them.

use std::time::Duration;

use serde::Serialize;
use sluice_ortc::{
    DtlsParameters, IceCandidate, IceParameters, MediaKind, NumSctpStreams, RtpCapabilities,
    RtpMapping, RtpParameters, SctpParameters, SctpStreamParameters, parse_scalability_mode,
};

use crate::events::{ConsumerLayers, ConsumerScore, DtlsState, EventSender, IceState, SctpState};
use crate::message::DataReceiver;
use crate::settings::DEFAULTS;

/// Worker-local key of a transport, producer or consumer.
pub(crate) type Key = u64;

/// A worker's counters and CPU time (`Worker::resource_usage`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceUsage {
    /// CPU time of the worker thread, in milliseconds.
    pub cpu_user_ms: u64,
    pub cpu_system_ms: u64,
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Datagrams from an address no transport validated (and no known ufrag).
    pub dropped_unknown_source: u64,
    /// Datagrams str0m could not parse or refused.
    pub dropped_malformed: u64,
    pub send_errors: u64,
    /// Transports closed because handling them panicked.
    pub session_errors: u64,
    /// Data-channel messages on a stream no data producer declared.
    pub dropped_data: u64,
    /// str0m timeouts handled (all transports).
    pub timeouts: u64,
    /// Wake-ups of the worker loop.
    pub wakeups: u64,
    /// ICE-TCP connections held now, accepted in all, and refused or closed for a limit (too
    /// many from one address, not validated in time, not ICE, a reader too slow).
    pub tcp_connections: u64,
    pub tcp_accepted: u64,
    pub tcp_rejected: u64,
}

/// What a worker holds now (`Worker::dump`); every count is zero once everything is closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerDump {
    pub index: usize,
    pub local_addr: String,
    pub router_ids: Vec<String>,
    pub transports: usize,
    pub producers: usize,
    pub consumers: usize,
    pub data_producers: usize,
    pub data_consumers: usize,
    pub ufrag_entries: usize,
    pub address_entries: usize,
    pub timers: usize,
}

/// What `WebRtcTransport::consume` takes.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub producer_id: String,
    /// The receiving device's capabilities (router numbering, as mediasoup-client sends them).
    pub rtp_capabilities: RtpCapabilities,
    /// Start paused (the default; resume once the client has set up its side).
    pub paused: bool,
    pub preferred_layers: Option<ConsumerLayers>,
    /// Share of the transport's bandwidth relative to its other consumers (1..=255).
    pub priority: u8,
    /// A pipe consumer (plain transports only): every encoding of the producer is sent as its
    /// own stream, with its own SSRC and the producer's numbering, so that the producer at the
    /// pipe's other end has the same layers to choose from.
    pub pipe: bool,
}

impl ConsumerOptions {
    pub fn new(producer_id: impl Into<String>, rtp_capabilities: RtpCapabilities) -> Self {
        ConsumerOptions {
            producer_id: producer_id.into(),
            rtp_capabilities,
            paused: true,
            preferred_layers: None,
            priority: 1,
            pipe: false,
        }
    }
}

/// What the worker says about a consumer it created.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerCreated {
    pub kind: MediaKind,
    pub r#type: ProducerType,
    pub rtp_parameters: RtpParameters,
    pub producer_paused: bool,
    pub score: ConsumerScore,
}

/// Statistics of a consumer (`getConsumerStats`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStat {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: u64,
    pub ssrc: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtx_ssrc: Option<u32>,
    pub mime_type: String,
    pub packet_count: u64,
    pub byte_count: u64,
    pub bitrate: u64,
    pub score: u8,
    pub fraction_lost: u8,
    pub nack_count: u64,
    pub pli_count: u64,
    pub fir_count: u64,
}

/// What a consumer looks like now (`Consumer::dump`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerDump {
    pub id: String,
    pub producer_id: String,
    pub paused: bool,
    pub producer_paused: bool,
    pub priority: u8,
    pub preferred_layers: Option<ConsumerLayers>,
    pub current_layers: Option<ConsumerLayers>,
    pub score: ConsumerScore,
}

/// Operations on a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsumerOp {
    Pause,
    Resume,
    SetPreferredLayers(ConsumerLayers),
    SetPriority(u8),
    RequestKeyFrame,
    Close,
}

/// Default least time between two keyframe requests sent to one producer stream.
/// Bytes a forwarded RTP packet carries besides its payload: an RTP header with a few extensions
/// (≈32), the SRTP authentication tag (10), UDP (8) and IPv4 (20).
pub const WIRE_OVERHEAD_BYTES: usize = 70;

/// mediasoup's producer types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProducerType {
    Simple,
    Simulcast,
    Svc,
}

impl ProducerType {
    /// The type for a producer's encodings: several → simulcast; one with several spatial layers
    /// → SVC; else simple.
    pub fn of(rtp_parameters: &RtpParameters) -> ProducerType {
        match rtp_parameters.encodings.as_slice() {
            [one] if parse_scalability_mode(one.scalability_mode.as_deref()).spatial_layers > 1 => {
                ProducerType::Svc
            }
            [_, _, ..] => ProducerType::Simulcast,
            _ => ProducerType::Simple,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProducerType::Simple => "simple",
            ProducerType::Simulcast => "simulcast",
            ProducerType::Svc => "svc",
        }
    }
}

/// What `WebRtcTransport::produce` takes.
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// The producer's id; a fresh one when `None`.
    pub id: Option<String>,
    pub kind: MediaKind,
    /// In the client's own numbering.
    pub rtp_parameters: RtpParameters,
    pub paused: bool,
    /// Least time between two keyframe requests sent to the client for one stream.
    pub key_frame_request_delay: Duration,
}

impl ProducerOptions {
    pub fn new(kind: MediaKind, rtp_parameters: RtpParameters) -> Self {
        ProducerOptions {
            id: None,
            kind,
            rtp_parameters,
            paused: false,
            key_frame_request_delay: DEFAULTS.key_frame_request_delay,
        }
    }
}

/// What the worker needs to create a producer (computed by the handle).
#[derive(Debug, Clone)]
pub(crate) struct ProducerSpec {
    pub id: String,
    pub kind: MediaKind,
    pub rtp_parameters: RtpParameters,
    pub mapping: RtpMapping,
    pub consumable: RtpParameters,
    pub paused: bool,
    pub key_frame_request_delay: Duration,
}

/// Per-encoding statistics of a producer (`getProducerStats`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerStat {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: u64,
    pub ssrc: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtx_ssrc: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    pub mime_type: String,
    pub packet_count: u64,
    pub byte_count: u64,
    pub bitrate: u64,
    pub score: u8,
    pub fraction_lost: u8,
    pub nack_count: u64,
    pub pli_count: u64,
    pub fir_count: u64,
}

/// What `consume_data` takes.
#[derive(Debug, Clone)]
pub struct DataConsumerOptions {
    pub data_producer_id: String,
    /// Override the producer's reliability (`None`: the producer's).
    pub ordered: Option<bool>,
    pub max_packet_life_time: Option<u32>,
    pub max_retransmits: Option<u32>,
    pub paused: bool,
    /// Bound of the queue; `None`: `MediaSettings::data_queue_limit` or, unreliable,
    /// `unreliable_data_queue_limit`.
    pub queue_limit: Option<usize>,
}

impl DataConsumerOptions {
    pub fn new(data_producer_id: impl Into<String>) -> Self {
        DataConsumerOptions {
            data_producer_id: data_producer_id.into(),
            ordered: None,
            max_packet_life_time: None,
            max_retransmits: None,
            paused: false,
            queue_limit: None,
        }
    }
}

/// What the worker says about a data consumer it created.
#[derive(Debug, Clone)]
pub(crate) struct DataConsumerCreated {
    pub sctp_stream_parameters: Option<SctpStreamParameters>,
    pub label: String,
    pub protocol: String,
    pub receiver: Option<DataReceiver>,
}

/// Statistics of a data consumer (`getDataConsumerStats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataConsumerStat {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: u64,
    pub label: String,
    pub protocol: String,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub buffered_amount: usize,
    pub queued_bytes: usize,
    pub dropped: u64,
}

/// The largest message a data producer accepts by default: what str0m delivers toward a browser.
pub const DEFAULT_MAX_DATA_MESSAGE_SIZE: usize = 65536;

/// What `produce_data` takes.
#[derive(Debug, Clone)]
pub struct DataProducerOptions {
    pub id: Option<String>,
    /// The client's stream (WebRTC transports); `None` on a `DirectTransport`.
    pub sctp_stream_parameters: Option<SctpStreamParameters>,
    pub label: String,
    pub protocol: String,
    pub paused: bool,
    /// Larger messages are dropped and counted.
    pub max_message_size: usize,
    /// Messages beyond this rate are dropped and counted; `None`: no limit.
    pub max_messages_per_second: Option<u32>,
}

impl DataProducerOptions {
    pub fn new(label: impl Into<String>) -> Self {
        DataProducerOptions {
            id: None,
            sctp_stream_parameters: None,
            label: label.into(),
            protocol: String::new(),
            paused: false,
            max_message_size: DEFAULT_MAX_DATA_MESSAGE_SIZE,
            max_messages_per_second: None,
        }
    }

    /// On a WebRTC transport: the stream the client opened.
    pub fn sctp(stream: SctpStreamParameters, label: impl Into<String>) -> Self {
        DataProducerOptions {
            sctp_stream_parameters: Some(stream),
            ..Self::new(label)
        }
    }
}

/// Statistics of a data producer (`getDataProducerStats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataProducerStat {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: u64,
    pub label: String,
    pub protocol: String,
    pub messages_received: u64,
    pub bytes_received: u64,
    /// Dropped for being larger than `max_message_size`.
    pub dropped_oversize: u64,
    /// Dropped for exceeding `max_messages_per_second`.
    pub dropped_rate: u64,
}

/// What a router holds now (`Router::dump`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouterDump {
    pub id: String,
    pub transport_ids: Vec<String>,
    pub producer_ids: Vec<String>,
    pub consumer_ids: Vec<String>,
    pub data_producer_ids: Vec<String>,
    pub data_consumer_ids: Vec<String>,
}

/// The SCTP port mediasoup announces (RFC 8841's default).
pub const SCTP_PORT: u16 = 5000;

/// The largest SCTP message str0m's Direct API delivers toward a browser (DESIGN §4).
pub const MAX_SCTP_MESSAGE_SIZE: u32 = 65536;

/// The egress bandwidth estimate a transport starts from (mediasoup's default).
pub const INITIAL_AVAILABLE_OUTGOING_BITRATE: u64 = 600_000;

/// How a transport estimates its egress bandwidth, from which its consumers' simulcast layers
/// are picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BandwidthEstimation {
    /// Send side: the client's transport-wide congestion feedback feeds str0m's estimator, which
    /// paces what we send and probes for more.
    #[default]
    Twcc,
    /// Receive side: the client's REMB reports (consumers negotiate `goog-remb` with
    /// abs-send-time instead of `transport-cc`). No pacing or probing: cheaper per packet.
    Remb,
    /// None: layers follow preferences and live layers only.
    Off,
}

/// Options of a new WebRTC transport.
#[derive(Debug, Clone)]
pub struct WebRtcTransportOptions {
    /// Offer a UDP candidate (mediasoup's `enableUdp`; mediasoup-client's `forceTcp` clears it).
    pub enable_udp: bool,
    /// Offer a passive TCP candidate (RFC 6544) when the worker listens on TCP; UDP's has the
    /// higher priority, so TCP is the fallback where UDP is blocked.
    pub enable_tcp: bool,
    /// Open an SCTP association for data channels (mediasoup-demo always does).
    pub enable_sctp: bool,
    /// SCTP streams announced in `sctpParameters`.
    pub num_sctp_streams: NumSctpStreams,
    /// Largest SCTP message accepted and announced.
    pub max_sctp_message_size: u32,
    /// How the egress bandwidth is estimated (simulcast layers are picked from it).
    pub bandwidth_estimation: BandwidthEstimation,
    pub initial_available_outgoing_bitrate: u64,
    /// Where the transport's events go.
    pub events: Option<EventSender>,
}

impl Default for WebRtcTransportOptions {
    fn default() -> Self {
        WebRtcTransportOptions {
            enable_udp: true,
            enable_tcp: true,
            enable_sctp: true,
            num_sctp_streams: NumSctpStreams::default(),
            max_sctp_message_size: MAX_SCTP_MESSAGE_SIZE,
            bandwidth_estimation: BandwidthEstimation::default(),
            initial_available_outgoing_bitrate: INITIAL_AVAILABLE_OUTGOING_BITRATE,
            events: None,
        }
    }
}

/// Transport statistics (`getTransportStats`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportStat {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub transport_id: String,
    pub timestamp: u64,
    pub ice_role: &'static str,
    pub ice_state: IceState,
    pub dtls_state: DtlsState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sctp_state: Option<SctpState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ice_selected_tuple: Option<TransportTuple>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub packets_sent: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_outgoing_bitrate: Option<u64>,
}

/// What `Router::create_plain_transport` takes (mediasoup's `PlainTransportOptions`).
#[derive(Debug, Clone)]
pub struct PlainTransportOptions {
    /// RTCP on the RTP port (RFC 5761); `false` binds a second port for it.
    pub rtcp_mux: bool,
    /// Learn the remote tuple from the first packet (a sender that does not know its own
    /// address, such as ffmpeg behind NAT) instead of `connect`.
    pub comedia: bool,
    /// SRTP with keys exchanged in the clear (SDES-style): the transport's own key comes back
    /// in [`PlainTransport::srtp_parameters`](crate::PlainTransport::srtp_parameters), the
    /// remote's is given to `connect`.
    pub enable_srtp: bool,
    pub srtp_crypto_suite: SrtpCryptoSuite,
    /// Where the transport's events go.
    pub events: Option<EventSender>,
}

impl Default for PlainTransportOptions {
    fn default() -> Self {
        PlainTransportOptions {
            rtcp_mux: true,
            comedia: false,
            enable_srtp: false,
            srtp_crypto_suite: SrtpCryptoSuite::AesCm128HmacSha1_80,
            events: None,
        }
    }
}

/// An SRTP crypto suite of plain transports (mediasoup's `SrtpCryptoSuite`, less the 32-bit
/// tag variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum SrtpCryptoSuite {
    #[serde(rename = "AEAD_AES_256_GCM")]
    AeadAes256Gcm,
    #[serde(rename = "AEAD_AES_128_GCM")]
    AeadAes128Gcm,
    #[serde(rename = "AES_CM_128_HMAC_SHA1_80")]
    AesCm128HmacSha1_80,
}

impl SrtpCryptoSuite {
    /// The master key's and master salt's lengths in bytes.
    pub fn key_and_salt_len(self) -> (usize, usize) {
        match self {
            SrtpCryptoSuite::AeadAes256Gcm => (32, 12),
            SrtpCryptoSuite::AeadAes128Gcm => (16, 12),
            SrtpCryptoSuite::AesCm128HmacSha1_80 => (16, 14),
        }
    }

    pub(crate) fn profile(self) -> str0m::crypto::dtls::SrtpProfile {
        use str0m::crypto::dtls::SrtpProfile;
        match self {
            SrtpCryptoSuite::AeadAes256Gcm => SrtpProfile::AEAD_AES_256_GCM,
            SrtpCryptoSuite::AeadAes128Gcm => SrtpProfile::AEAD_AES_128_GCM,
            SrtpCryptoSuite::AesCm128HmacSha1_80 => SrtpProfile::AES128_CM_SHA1_80,
        }
    }
}

/// One side's SRTP key (mediasoup's `SrtpParameters`): the suite, and the master key followed by
/// the master salt, in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SrtpParameters {
    pub crypto_suite: SrtpCryptoSuite,
    pub key_base64: String,
}

/// What `PlainTransport::connect` takes: the remote tuple (not with `comedia`) and, with SRTP,
/// the remote's key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlainTransportConnect {
    pub remote: Option<std::net::SocketAddr>,
    pub srtp_parameters: Option<SrtpParameters>,
}

/// What the worker reports back when it created a plain transport.
#[derive(Debug, Clone)]
pub(crate) struct PlainTransportCreated {
    pub id: String,
    /// The socket RTP arrives at (what another worker of this host sends to).
    pub local: std::net::SocketAddr,
    /// The address senders use (the worker's announced one).
    pub ip: std::net::IpAddr,
    pub port: u16,
    pub rtcp_port: Option<u16>,
    /// The transport's own SRTP key, with `enable_srtp`.
    pub srtp_parameters: Option<SrtpParameters>,
}

/// Plain transport statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlainTransportStat {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub transport_id: String,
    pub timestamp: u64,
    pub comedia: bool,
    pub rtcp_mux: bool,
    pub tuple_local_port: u16,
    /// The remote tuple, once connected or (comedia) once the first packet came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuple_remote: Option<String>,
    pub bytes_received: u64,
    pub packets_received: u64,
    /// RTCP, and RTP of an SSRC no producer declared.
    pub packets_dropped: u64,
    /// What its consumers sent.
    pub bytes_sent: u64,
    pub packets_sent: u64,
}

/// A transport's selected ICE tuple, in mediasoup's form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportTuple {
    pub local_address: String,
    pub local_port: u16,
    pub remote_ip: String,
    pub remote_port: u16,
    pub protocol: sluice_ortc::Protocol,
}

/// What the worker reports back when it created a transport.
#[derive(Debug, Clone)]
pub(crate) struct TransportCreated {
    pub id: String,
    pub ice_parameters: IceParameters,
    pub ice_candidates: Vec<IceCandidate>,
    pub dtls_parameters: DtlsParameters,
    pub sctp_parameters: Option<SctpParameters>,
}

/// A fresh object id in UUID v4 form, as mediasoup's ids are.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
