//! Events the media plane reports to the control plane (mediasoup's object events and observers).
//!
//! Each WebRTC transport is created with an optional [`EventSender`]; every event about the
//! transport and the producers, consumers and data objects on it goes there. All events carry the
//! ids they concern, so one receiver can serve all of a peer's transports.

use std::net::SocketAddr;

use serde::Serialize;
use str0m::IceConnectionState;

/// Where a transport's events go.
pub type EventSender = tokio::sync::mpsc::UnboundedSender<MediaEvent>;

/// Why an object closed without being asked to by its own handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CloseReason {
    /// Its handle's `close()` (or the signaling layer) closed it.
    Closed,
    /// Its producer closed (mediasoup's `producerclose` / `dataproducerclose`).
    ProducerClosed,
    /// Its transport closed.
    TransportClosed,
    /// Its router closed.
    RouterClosed,
    /// The worker closed.
    WorkerClosed,
    /// The remote closed DTLS or SCTP.
    RemoteClosed,
    /// DTLS failed (bad fingerprint, handshake error).
    DtlsFailed,
    /// The session hit an internal error and was closed to protect the others.
    SessionError,
}

/// A consumer's spatial and temporal layers (`consumerLayersChanged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerLayers {
    pub spatial_layer: u8,
    pub temporal_layer: u8,
}

/// The score of one producer encoding, 0..=10 (mediasoup's `ProducerScore`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerScore {
    pub encoding_idx: u32,
    pub ssrc: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    pub score: u8,
}

/// A consumer's score and its producer's (mediasoup's `ConsumerScore`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerScore {
    pub score: u8,
    pub producer_score: u8,
    pub producer_scores: Vec<u8>,
}

/// Something that happened in a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    IceStateChange {
        transport_id: String,
        state: IceState,
    },
    /// The client's address for this transport (first validated, or after a change).
    IceSelectedTupleChange {
        transport_id: String,
        remote: SocketAddr,
        protocol: sluice_ortc::Protocol,
    },
    DtlsStateChange {
        transport_id: String,
        state: DtlsState,
    },
    SctpStateChange {
        transport_id: String,
        state: SctpState,
    },
    /// The transport closed on its own (remote close, DTLS failure, session error, router or
    /// worker closed). Its producers and consumers are closed too (each reported).
    TransportClosed {
        transport_id: String,
        reason: CloseReason,
    },
    ProducerScore {
        transport_id: String,
        producer_id: String,
        scores: Vec<ProducerScore>,
    },
    /// A producer closed by cascade (transport, router or worker close).
    ProducerClosed {
        transport_id: String,
        producer_id: String,
        reason: CloseReason,
    },
    /// A consumer closed by cascade; `ProducerClosed` is mediasoup's `producerclose`.
    ConsumerClosed {
        transport_id: String,
        consumer_id: String,
        reason: CloseReason,
    },
    ConsumerProducerPaused {
        transport_id: String,
        consumer_id: String,
    },
    ConsumerProducerResumed {
        transport_id: String,
        consumer_id: String,
    },
    ConsumerScore {
        transport_id: String,
        consumer_id: String,
        score: ConsumerScore,
    },
    /// Whether any consumer of the producer is not paused changed (`demanded`). A producer
    /// starts without demand and is reported on each change; a pipe feeds its producer only
    /// while demanded (`sluice_media::pipe`, the cluster's pipes).
    ProducerDemandChange {
        transport_id: String,
        producer_id: String,
        demanded: bool,
    },
    /// The layers a simulcast/SVC consumer sends changed (`None`: nothing is sent).
    ConsumerLayersChange {
        transport_id: String,
        consumer_id: String,
        layers: Option<ConsumerLayers>,
    },
    /// The egress bandwidth estimate toward this transport's client, bits per second, with what
    /// its consumers would send at their preferred layers (`desired_bitrate`, on the wire) and
    /// what the estimator is asked to probe for (`effective_desired_bitrate`: the desired plus
    /// the headroom a layer switch up needs). Both desired figures are 0 before the first tick
    /// after a consumer is created.
    BandwidthEstimate {
        transport_id: String,
        bitrate: u64,
        desired_bitrate: u64,
        effective_desired_bitrate: u64,
    },
    DataProducerClosed {
        transport_id: String,
        data_producer_id: String,
        reason: CloseReason,
    },
    DataConsumerClosed {
        transport_id: String,
        data_consumer_id: String,
        reason: CloseReason,
    },
    /// A data consumer's send buffer fell below its low-water mark.
    DataConsumerBufferedAmountLow {
        transport_id: String,
        data_consumer_id: String,
        buffered_amount: usize,
    },
    /// (On the router's event sender.) The loudest audio producer of the last interval, with its
    /// average level in dBov; `None` once everyone is below the threshold (silence).
    ActiveSpeaker {
        router_id: String,
        producer_id: Option<String>,
        volume: Option<i8>,
    },
}

impl MediaEvent {
    /// The transport the event concerns (`None` for router events).
    pub fn transport_id(&self) -> Option<&str> {
        Some(match self {
            MediaEvent::IceStateChange { transport_id, .. }
            | MediaEvent::IceSelectedTupleChange { transport_id, .. }
            | MediaEvent::DtlsStateChange { transport_id, .. }
            | MediaEvent::SctpStateChange { transport_id, .. }
            | MediaEvent::TransportClosed { transport_id, .. }
            | MediaEvent::ProducerScore { transport_id, .. }
            | MediaEvent::ProducerClosed { transport_id, .. }
            | MediaEvent::ConsumerClosed { transport_id, .. }
            | MediaEvent::ConsumerProducerPaused { transport_id, .. }
            | MediaEvent::ConsumerProducerResumed { transport_id, .. }
            | MediaEvent::ConsumerScore { transport_id, .. }
            | MediaEvent::ProducerDemandChange { transport_id, .. }
            | MediaEvent::ConsumerLayersChange { transport_id, .. }
            | MediaEvent::BandwidthEstimate { transport_id, .. }
            | MediaEvent::DataProducerClosed { transport_id, .. }
            | MediaEvent::DataConsumerClosed { transport_id, .. }
            | MediaEvent::DataConsumerBufferedAmountLow { transport_id, .. } => transport_id,
            MediaEvent::ActiveSpeaker { .. } => return None,
        })
    }
}

/// ICE state as mediasoup names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IceState {
    New,
    Connected,
    Completed,
    Disconnected,
    Closed,
}

impl IceState {
    pub(crate) fn from_str0m(state: IceConnectionState) -> IceState {
        match state {
            IceConnectionState::New | IceConnectionState::Checking => IceState::New,
            IceConnectionState::Connected => IceState::Connected,
            IceConnectionState::Completed => IceState::Completed,
            IceConnectionState::Disconnected => IceState::Disconnected,
        }
    }
}

/// DTLS state as mediasoup names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DtlsState {
    New,
    Connecting,
    Connected,
    Failed,
    Closed,
}

/// SCTP association state as mediasoup names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SctpState {
    New,
    Connecting,
    Connected,
    Failed,
    Closed,
}
