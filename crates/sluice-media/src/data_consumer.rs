//! `DataConsumer`: one data producer's messages sent to one client (over SCTP) or to the server
//! (on a `DirectTransport`), with bounded memory whatever the sender does.
//!
//! Messages go straight into SCTP while it has room; otherwise they wait in the consumer's
//! [`SendQueue`], bounded in bytes. When it is full, an unreliable consumer (`maxRetransmits` or
//! `maxPacketLifeTime`) drops its *oldest* messages, so a slow receiver gets fresh state instead
//! of a growing backlog; a reliable one refuses the newest and counts it (`dropped`), reporting
//! itself full. When SCTP's buffer falls below the low-water mark the queue drains and the
//! consumer reports `DataConsumerBufferedAmountLow`.
//!
//! Empty messages reach `DirectTransport` consumers; toward SCTP they are dropped and counted:
//! str0m 0.25 cannot send them (it writes no chunk but advances the stream sequence number,
//! which would stall an ordered stream).

use sluice_ortc::SctpStreamParameters;

use crate::command::{Command, WorkerLink};
use crate::error::MediaError;
pub use crate::message::DataReceiver;
use crate::types::DataConsumerCreated;
pub use crate::types::{DataConsumerOptions, DataConsumerStat};

/// The control plane's handle on a data consumer.
#[derive(Debug, Clone)]
pub struct DataConsumer {
    id: String,
    data_producer_id: String,
    transport_id: String,
    sctp_stream_parameters: Option<SctpStreamParameters>,
    label: String,
    protocol: String,
    worker: WorkerLink,
}

impl DataConsumer {
    pub(crate) fn new(
        worker: WorkerLink,
        id: String,
        data_producer_id: String,
        transport_id: String,
        created: &DataConsumerCreated,
    ) -> Self {
        DataConsumer {
            id,
            data_producer_id,
            transport_id,
            sctp_stream_parameters: created.sctp_stream_parameters.clone(),
            label: created.label.clone(),
            protocol: created.protocol.clone(),
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

    pub fn data_producer_id(&self) -> &str {
        &self.data_producer_id
    }

    pub fn transport_id(&self) -> &str {
        &self.transport_id
    }

    /// The stream the server chose (WebRTC transports; the client opens it as `negotiated`).
    pub fn sctp_stream_parameters(&self) -> Option<&SctpStreamParameters> {
        self.sctp_stream_parameters.as_ref()
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn protocol(&self) -> &str {
        &self.protocol
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
            .request(|reply| Command::PauseDataConsumer { id, paused, reply })
            .await?
    }

    pub async fn get_stats(&self) -> Result<Vec<DataConsumerStat>, MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::DataConsumerStats { id, reply })
            .await?
    }

    pub async fn close(&self) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::CloseDataConsumer { id, reply })
            .await?
    }
}
