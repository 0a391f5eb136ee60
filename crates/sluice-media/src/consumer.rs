//! `Consumer`: one producer's media sent to one client.
//!
//! Consumers are created paused and resumed once the client is ready (mediasoup-demo's
//! `newConsumer` flow). The worker holds each [`ConsumerState`]: its [`Forwarder`] (what to send,
//! with which numbers), its payload-type map, the layers it prefers and its score.

use std::time::Instant;

use serde::Serialize;
use sluice_ortc::{MediaKind, RtpCapabilities, RtpParameters};
use str0m::media::Pt;

use crate::error::MediaError;
use crate::events::{ConsumerLayers, ConsumerScore};
use crate::forwarder::Forwarder;
use crate::layers::RateCalculator;
use crate::producer::ProducerType;
use crate::worker::{Command, Key, Worker};

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
}

impl ConsumerOptions {
    pub fn new(producer_id: impl Into<String>, rtp_capabilities: RtpCapabilities) -> Self {
        ConsumerOptions {
            producer_id: producer_id.into(),
            rtp_capabilities,
            paused: true,
            preferred_layers: None,
            priority: 1,
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

/// The control plane's handle on a consumer.
#[derive(Debug, Clone)]
pub struct Consumer {
    id: String,
    producer_id: String,
    transport_id: String,
    kind: MediaKind,
    r#type: ProducerType,
    rtp_parameters: RtpParameters,
    producer_paused: bool,
    score: ConsumerScore,
    worker: Worker,
}

impl Consumer {
    pub(crate) fn new(
        worker: Worker,
        id: String,
        producer_id: String,
        transport_id: String,
        created: ConsumerCreated,
    ) -> Self {
        Consumer {
            id,
            producer_id,
            transport_id,
            kind: created.kind,
            r#type: created.r#type,
            rtp_parameters: created.rtp_parameters,
            producer_paused: created.producer_paused,
            score: created.score,
            worker,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn producer_id(&self) -> &str {
        &self.producer_id
    }

    pub fn transport_id(&self) -> &str {
        &self.transport_id
    }

    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    pub fn r#type(&self) -> ProducerType {
        self.r#type
    }

    /// What the client receives (its `newConsumer` payload).
    pub fn rtp_parameters(&self) -> &RtpParameters {
        &self.rtp_parameters
    }

    /// Whether the producer was paused when this consumer was created.
    pub fn producer_paused(&self) -> bool {
        self.producer_paused
    }

    /// The score at creation.
    pub fn score(&self) -> &ConsumerScore {
        &self.score
    }

    async fn op(&self, op: ConsumerOp) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::ConsumerOp { id, op, reply })
            .await?
    }

    pub async fn pause(&self) -> Result<(), MediaError> {
        self.op(ConsumerOp::Pause).await
    }

    /// Resumes; video restarts at a keyframe, which is requested.
    pub async fn resume(&self) -> Result<(), MediaError> {
        self.op(ConsumerOp::Resume).await
    }

    pub async fn set_preferred_layers(&self, layers: ConsumerLayers) -> Result<(), MediaError> {
        self.op(ConsumerOp::SetPreferredLayers(layers)).await
    }

    pub async fn set_priority(&self, priority: u8) -> Result<(), MediaError> {
        self.op(ConsumerOp::SetPriority(priority)).await
    }

    pub async fn request_key_frame(&self) -> Result<(), MediaError> {
        self.op(ConsumerOp::RequestKeyFrame).await
    }

    pub async fn close(&self) -> Result<(), MediaError> {
        self.op(ConsumerOp::Close).await
    }

    pub async fn get_stats(&self) -> Result<Vec<ConsumerStat>, MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::ConsumerStats { id, reply })
            .await?
    }

    pub async fn dump(&self) -> Result<ConsumerDump, MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::ConsumerDump { id, reply })
            .await?
    }
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

/// A consumer in its worker.
#[derive(Debug)]
pub(crate) struct ConsumerState {
    pub id: String,
    pub producer: Key,
    pub producer_id: String,
    pub transport: Key,
    pub kind: MediaKind,
    pub r#type: ProducerType,
    pub mid: String,
    pub ssrc: u32,
    pub rtx_ssrc: Option<u32>,
    pub mime_type: String,
    /// Producer payload type → the payload type this consumer sends.
    pub pt_map: Vec<(u8, Pt)>,
    pub forwarder: Forwarder,
    pub preferred_layers: Option<ConsumerLayers>,
    pub priority: u8,
    /// Last layers reported in a `ConsumerLayersChange` event.
    pub reported_layers: Option<ConsumerLayers>,
    pub rate: RateCalculator,
    pub packets: u64,
    pub bytes: u64,
    pub score: u8,
    pub fraction_lost: u8,
    pub nacks: u64,
    pub plis: u64,
    pub firs: u64,
    pub last_score: Option<ConsumerScore>,
}

impl ConsumerState {
    pub fn payload_type_for(&self, producer_pt: u8) -> Option<Pt> {
        self.pt_map
            .iter()
            .find(|(p, _)| *p == producer_pt)
            .map(|(_, c)| *c)
    }

    pub fn current_layers(&self) -> Option<ConsumerLayers> {
        self.forwarder
            .current_layers()
            .map(|(s, t)| ConsumerLayers {
                spatial_layer: s.min(255) as u8,
                temporal_layer: t,
            })
    }

    pub fn on_sent(&mut self, bytes: usize, now: Instant) {
        self.packets += 1;
        self.bytes += bytes as u64;
        self.rate.add(bytes, now);
    }

    pub fn stats(&self, now: Instant, timestamp: u64) -> ConsumerStat {
        ConsumerStat {
            kind: "outbound-rtp",
            timestamp,
            ssrc: self.ssrc,
            rtx_ssrc: self.rtx_ssrc,
            mime_type: self.mime_type.clone(),
            packet_count: self.packets,
            byte_count: self.bytes,
            bitrate: self.rate.rate(now),
            score: self.score,
            fraction_lost: self.fraction_lost,
            nack_count: self.nacks,
            pli_count: self.plis,
            fir_count: self.firs,
        }
    }
}
