//! `DirectTransport`: an in-process transport for a Rust game server on the same router.
//!
//! It carries data only (as mediasoup's DirectTransport is used for game data): its data
//! producers send with [`DataProducer::send`](crate::DataProducer::send), its data consumers
//! deliver through a [`DataReceiver`]. This is how an authoritative server receives every
//! player's inputs and broadcasts world state.

use crate::command::{Command, WorkerLink};
use crate::data_consumer::{DataConsumer, DataConsumerOptions, DataReceiver};
use crate::data_producer::{DataProducer, DataProducerOptions};
use crate::error::MediaError;

/// The control plane's handle on a direct transport.
#[derive(Debug, Clone)]
pub struct DirectTransport {
    id: String,
    router_id: String,
    worker: WorkerLink,
}

impl DirectTransport {
    pub(crate) fn new(worker: WorkerLink, router_id: String, id: String) -> Self {
        DirectTransport {
            id,
            router_id,
            worker,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn router_id(&self) -> &str {
        &self.router_id
    }

    /// A data producer whose messages the server sends with [`DataProducer::send`].
    pub async fn produce_data(
        &self,
        options: DataProducerOptions,
    ) -> Result<DataProducer, MediaError> {
        produce_data(&self.worker, &self.id, options).await
    }

    /// Receives a data producer's messages in this process.
    pub async fn consume_data(
        &self,
        options: DataConsumerOptions,
    ) -> Result<(DataConsumer, DataReceiver), MediaError> {
        let (consumer, receiver) = consume_data(&self.worker, &self.id, options).await?;
        let receiver = receiver.ok_or_else(|| MediaError::Rtc("no receiver".into()))?;
        Ok((consumer, receiver))
    }

    pub async fn close(&self) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::CloseTransport { id, reply })
            .await?
    }
}

pub(crate) async fn produce_data(
    worker: &WorkerLink,
    transport_id: &str,
    options: DataProducerOptions,
) -> Result<DataProducer, MediaError> {
    let id = options.id.clone().unwrap_or_else(crate::new_id);
    let (tid, pid, opts) = (transport_id.to_owned(), id.clone(), options.clone());
    worker
        .request(|reply| Command::ProduceData {
            transport_id: tid,
            id: pid,
            options: Box::new(opts),
            reply,
        })
        .await??;
    Ok(DataProducer::new(
        worker.clone(),
        id,
        transport_id.to_owned(),
        &options,
    ))
}

pub(crate) async fn consume_data(
    worker: &WorkerLink,
    transport_id: &str,
    options: DataConsumerOptions,
) -> Result<(DataConsumer, Option<DataReceiver>), MediaError> {
    let id = crate::new_id();
    let producer_id = options.data_producer_id.clone();
    let (tid, cid) = (transport_id.to_owned(), id.clone());
    let created = worker
        .request(|reply| Command::ConsumeData {
            transport_id: tid,
            id: cid,
            options: Box::new(options),
            reply,
        })
        .await??;
    let consumer = DataConsumer::new(
        worker.clone(),
        id,
        producer_id,
        transport_id.to_owned(),
        &created,
    );
    Ok((consumer, created.receiver))
}
