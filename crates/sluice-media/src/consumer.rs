//! `Consumer`: one producer's media sent to one client.
//!
//! Consumers are created paused and resumed once the client is ready (mediasoup-demo's
//! `newConsumer` flow). The worker holds each [`ConsumerState`]: its [`Forwarder`] (what to send,
//! with which numbers), its payload-type map, the layers it prefers and its score.

use sluice_ortc::{MediaKind, RtpParameters};

use crate::command::{Command, WorkerLink};
use crate::error::MediaError;
use crate::events::{ConsumerLayers, ConsumerScore};
use crate::types::{ConsumerCreated, ConsumerOp, ProducerType};
pub use crate::types::{ConsumerDump, ConsumerOptions, ConsumerStat};

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
    worker: WorkerLink,
}

/// Creates a consumer on transport `transport_id` of `worker` (a WebRTC or plain transport's
/// `consume`).
pub(crate) async fn consume_on(
    worker: &WorkerLink,
    transport_id: &str,
    options: ConsumerOptions,
) -> Result<Consumer, MediaError> {
    let id = crate::new_id();
    let producer_id = options.producer_id.clone();
    let consumer_id = id.clone();
    let transport = transport_id.to_owned();
    let created = worker
        .request(|reply| Command::Consume {
            transport_id: transport,
            id: consumer_id,
            options: Box::new(options),
            reply,
        })
        .await??;
    Ok(Consumer::new(
        worker.clone(),
        id,
        producer_id,
        transport_id.to_owned(),
        created,
    ))
}

impl Consumer {
    pub(crate) fn new(
        worker: WorkerLink,
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
