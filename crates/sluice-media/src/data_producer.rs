//! `DataProducer`: game data a client (over SCTP) or the server itself (on a `DirectTransport`)
//! sends into a router; its data consumers relay it.
//!
//! The worker enforces each data producer's limits: messages larger than its
//! `max_message_size` and messages beyond its rate (`max_messages_per_second`, a token bucket)
//! are dropped and counted, never queued.

use sluice_ortc::SctpStreamParameters;

use crate::command::{Command, WorkerLink};
use crate::error::MediaError;
pub use crate::message::DataMessage;
pub use crate::types::{DEFAULT_MAX_DATA_MESSAGE_SIZE, DataProducerOptions, DataProducerStat};

/// The control plane's handle on a data producer.
#[derive(Debug, Clone)]
pub struct DataProducer {
    id: String,
    transport_id: String,
    sctp_stream_parameters: Option<SctpStreamParameters>,
    label: String,
    protocol: String,
    worker: WorkerLink,
}

impl DataProducer {
    pub(crate) fn new(
        worker: WorkerLink,
        id: String,
        transport_id: String,
        options: &DataProducerOptions,
    ) -> Self {
        DataProducer {
            id,
            transport_id,
            sctp_stream_parameters: options.sctp_stream_parameters.clone(),
            label: options.label.clone(),
            protocol: options.protocol.clone(),
            worker,
        }
    }

    /// The index of the worker that hosts it.
    pub fn worker_index(&self) -> usize {
        self.worker.index()
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn transport_id(&self) -> &str {
        &self.transport_id
    }

    pub fn sctp_stream_parameters(&self) -> Option<&SctpStreamParameters> {
        self.sctp_stream_parameters.as_ref()
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// Sends a message to every data consumer (data producers of a `DirectTransport` only).
    pub fn send(&self, message: DataMessage) -> Result<(), MediaError> {
        self.worker.send(Command::DirectSend {
            data_producer_id: self.id.clone(),
            message,
        })
    }

    /// Sends a message to the listed data consumers of this producer only (data producers of a
    /// `DirectTransport` only); ids that are not its consumers are skipped.
    pub fn send_to(
        &self,
        message: DataMessage,
        data_consumer_ids: Vec<String>,
    ) -> Result<(), MediaError> {
        self.worker.send(Command::DirectSendTo {
            data_producer_id: self.id.clone(),
            message,
            data_consumer_ids,
        })
    }

    pub async fn pause(&self) -> Result<(), MediaError> {
        self.set_paused(true).await
    }

    pub async fn resume(&self) -> Result<(), MediaError> {
        self.set_paused(false).await
    }

    async fn set_paused(&self, paused: bool) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::PauseDataProducer { id, paused, reply })
            .await?
    }

    pub async fn get_stats(&self) -> Result<Vec<DataProducerStat>, MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::DataProducerStats { id, reply })
            .await?
    }

    /// Closes it; its data consumers close with `CloseReason::ProducerClosed`.
    pub async fn close(&self) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::CloseDataProducer { id, reply })
            .await?
    }
}
