//! The control plane's requests to a worker ([`Command`]) and the cloneable link that handles
//! hold to send them ([`WorkerLink`]).
//!
//! Each request that expects an answer carries its own reply channel; the core answers on it
//! while it handles the command (a channel send: no runtime, no I/O).

use std::sync::Arc;

use sluice_ortc::{DtlsParameters, IceParameters, RtpCapabilities};
use tokio::sync::{mpsc, oneshot};

use crate::error::MediaError;
use crate::events::EventSender;
use crate::message::DataMessage;
use crate::types::{
    ConsumerCreated, ConsumerDump, ConsumerOp, ConsumerOptions, ConsumerStat, DataConsumerCreated,
    DataConsumerOptions, DataConsumerStat, DataProducerOptions, DataProducerStat,
    PlainTransportCreated, PlainTransportOptions, PlainTransportStat, ProducerSpec, ProducerStat,
    ResourceUsage, RouterDump, TransportCreated, TransportStat, WebRtcTransportOptions, WorkerDump,
};

/// Where the answer to a command goes.
pub(crate) type Reply<T> = oneshot::Sender<T>;

/// A request to a worker.
pub(crate) enum Command {
    CreateRouter {
        id: String,
        caps: Arc<RtpCapabilities>,
        events: Option<EventSender>,
        reply: Reply<Result<(), MediaError>>,
    },
    CloseRouter {
        id: String,
        reply: Reply<Result<(), MediaError>>,
    },
    RouterDump {
        id: String,
        reply: Reply<Result<RouterDump, MediaError>>,
    },
    CanConsume {
        router_id: String,
        producer_id: String,
        caps: RtpCapabilities,
        reply: Reply<bool>,
    },
    CreateWebRtcTransport {
        router_id: String,
        options: Box<WebRtcTransportOptions>,
        reply: Reply<Result<TransportCreated, MediaError>>,
    },
    ConnectTransport {
        id: String,
        dtls_parameters: Box<DtlsParameters>,
        reply: Reply<Result<(), MediaError>>,
    },
    RestartIce {
        id: String,
        reply: Reply<Result<IceParameters, MediaError>>,
    },
    TransportStats {
        id: String,
        reply: Reply<Result<TransportStat, MediaError>>,
    },
    CloseTransport {
        id: String,
        reply: Reply<Result<(), MediaError>>,
    },
    Produce {
        transport_id: String,
        spec: Box<ProducerSpec>,
        reply: Reply<Result<(), MediaError>>,
    },
    PauseProducer {
        id: String,
        paused: bool,
        reply: Reply<Result<(), MediaError>>,
    },
    ProducerStats {
        id: String,
        reply: Reply<Result<Vec<ProducerStat>, MediaError>>,
    },
    CloseProducer {
        id: String,
        reply: Reply<Result<(), MediaError>>,
    },
    Consume {
        transport_id: String,
        id: String,
        options: Box<ConsumerOptions>,
        reply: Reply<Result<ConsumerCreated, MediaError>>,
    },
    ConsumerOp {
        id: String,
        op: ConsumerOp,
        reply: Reply<Result<(), MediaError>>,
    },
    ConsumerStats {
        id: String,
        reply: Reply<Result<Vec<ConsumerStat>, MediaError>>,
    },
    ConsumerDump {
        id: String,
        reply: Reply<Result<ConsumerDump, MediaError>>,
    },
    /// The driver binds the transport's sockets, then hands it to the core.
    CreatePlainTransport {
        router_id: String,
        options: Box<PlainTransportOptions>,
        reply: Reply<Result<PlainTransportCreated, MediaError>>,
    },
    ConnectPlainTransport {
        id: String,
        connect: crate::types::PlainTransportConnect,
        reply: Reply<Result<(), MediaError>>,
    },
    PlainTransportStats {
        id: String,
        reply: Reply<Result<PlainTransportStat, MediaError>>,
    },
    CreateDirectTransport {
        router_id: String,
        events: Option<EventSender>,
        reply: Reply<Result<String, MediaError>>,
    },
    ProduceData {
        transport_id: String,
        id: String,
        options: Box<DataProducerOptions>,
        reply: Reply<Result<(), MediaError>>,
    },
    ConsumeData {
        transport_id: String,
        id: String,
        options: Box<DataConsumerOptions>,
        reply: Reply<Result<DataConsumerCreated, MediaError>>,
    },
    /// A message from a direct data producer.
    DirectSend {
        data_producer_id: String,
        message: DataMessage,
    },
    /// A message from a direct data producer to some of its data consumers only.
    DirectSendTo {
        data_producer_id: String,
        message: DataMessage,
        data_consumer_ids: Vec<String>,
    },
    PauseDataProducer {
        id: String,
        paused: bool,
        reply: Reply<Result<(), MediaError>>,
    },
    PauseDataConsumer {
        id: String,
        paused: bool,
        reply: Reply<Result<(), MediaError>>,
    },
    DataProducerStats {
        id: String,
        reply: Reply<Result<Vec<DataProducerStat>, MediaError>>,
    },
    DataConsumerStats {
        id: String,
        reply: Reply<Result<Vec<DataConsumerStat>, MediaError>>,
    },
    CloseDataProducer {
        id: String,
        reply: Reply<Result<(), MediaError>>,
    },
    CloseDataConsumer {
        id: String,
        reply: Reply<Result<(), MediaError>>,
    },
    Dump {
        reply: Reply<WorkerDump>,
    },
    ResourceUsage {
        reply: Reply<ResourceUsage>,
    },
    /// Makes the worker thread panic (tests of the "died" report).
    Crash,
    /// Panics while handling one transport (tests that only that session closes).
    PanicTransport {
        id: String,
    },
    Close {
        reply: Reply<()>,
    },
}

/// What handles hold to reach their worker: its index and the sending end of its command
/// channel. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct WorkerLink {
    index: usize,
    commands: mpsc::UnboundedSender<Command>,
}

impl WorkerLink {
    pub(crate) fn new(index: usize, commands: mpsc::UnboundedSender<Command>) -> Self {
        WorkerLink { index, commands }
    }

    /// The worker's index.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Sends a command that expects no answer.
    pub(crate) fn send(&self, command: Command) -> Result<(), MediaError> {
        self.commands
            .send(command)
            .map_err(|_| MediaError::WorkerClosed(self.index))
    }

    /// Sends a command and awaits its answer.
    pub(crate) async fn request<T>(
        &self,
        command: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, MediaError> {
        let (tx, rx) = oneshot::channel();
        self.send(command(tx))?;
        rx.await.map_err(|_| MediaError::WorkerClosed(self.index))
    }
}
