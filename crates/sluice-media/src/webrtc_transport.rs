//! `WebRtcTransport`: one ICE-lite, DTLS-SRTP (and SCTP) connection with one client, on str0m.
//!
//! The control plane holds a [`WebRtcTransport`] handle (ids, ICE/DTLS/SCTP parameters, and
//! methods that send commands to the worker). The worker thread owns the [`TransportState`]:
//! str0m's `Rtc`, driven with the time the worker loop passes in, and the media lines of the
//! transport's producers and consumers.

use std::sync::Arc;

use sluice_ortc::{DtlsParameters, IceCandidate, IceParameters, RtpCapabilities, SctpParameters};

use crate::command::{Command, WorkerLink};
use crate::consumer::{Consumer, ConsumerOptions};
use crate::error::MediaError;
pub use crate::events::{DtlsState, IceState, SctpState};
use crate::producer::{Producer, ProducerOptions};
use crate::types::TransportCreated;
pub use crate::types::{
    BandwidthEstimation, INITIAL_AVAILABLE_OUTGOING_BITRATE, MAX_SCTP_MESSAGE_SIZE, SCTP_PORT,
    TransportStat, WebRtcTransportOptions,
};

/// The control plane's handle on a WebRTC transport living in a worker.
#[derive(Debug, Clone)]
pub struct WebRtcTransport {
    id: String,
    router_id: String,
    worker: WorkerLink,
    router_capabilities: Arc<RtpCapabilities>,
    ice_parameters: IceParameters,
    ice_candidates: Vec<IceCandidate>,
    dtls_parameters: DtlsParameters,
    sctp_parameters: Option<SctpParameters>,
    /// The RTCP CNAME of producers whose client names none (browsers always do).
    cname: String,
}

impl WebRtcTransport {
    pub(crate) fn new(
        worker: WorkerLink,
        router_id: String,
        router_capabilities: Arc<RtpCapabilities>,
        created: TransportCreated,
    ) -> Self {
        WebRtcTransport {
            id: created.id,
            router_id,
            worker,
            router_capabilities,
            ice_parameters: created.ice_parameters,
            ice_candidates: created.ice_candidates,
            dtls_parameters: created.dtls_parameters,
            sctp_parameters: created.sctp_parameters,
            cname: crate::producer::new_cname(),
        }
    }

    /// The index of the worker that hosts it.
    pub fn worker_index(&self) -> usize {
        self.worker.index()
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn router_id(&self) -> &str {
        &self.router_id
    }

    /// `{usernameFragment, password, iceLite: true}` as created (see [`Self::restart_ice`]).
    pub fn ice_parameters(&self) -> &IceParameters {
        &self.ice_parameters
    }

    pub fn ice_candidates(&self) -> &[IceCandidate] {
        &self.ice_candidates
    }

    /// `{role: "auto", fingerprints: [sha-256]}`.
    pub fn dtls_parameters(&self) -> &DtlsParameters {
        &self.dtls_parameters
    }

    pub fn sctp_parameters(&self) -> Option<&SctpParameters> {
        self.sctp_parameters.as_ref()
    }

    /// Gives the client's DTLS parameters and starts DTLS (and SCTP, when enabled).
    pub async fn connect(&self, dtls_parameters: DtlsParameters) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::ConnectTransport {
                id,
                dtls_parameters: Box::new(dtls_parameters),
                reply,
            })
            .await?
    }

    /// New local ICE credentials, installed at once; the client must restart ICE with them.
    pub async fn restart_ice(&self) -> Result<IceParameters, MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::RestartIce { id, reply })
            .await?
    }

    /// Receives a producer from the client, whatever its payload-type and extension numbering.
    pub async fn produce(&self, options: ProducerOptions) -> Result<Producer, MediaError> {
        crate::producer::produce_on(
            &self.worker,
            &self.id,
            options,
            &self.router_capabilities,
            &self.cname,
        )
        .await
    }

    /// Sends producer `options.producer_id` to the client through this transport.
    pub async fn consume(&self, options: ConsumerOptions) -> Result<Consumer, MediaError> {
        crate::consumer::consume_on(&self.worker, &self.id, options).await
    }

    pub async fn get_stats(&self) -> Result<TransportStat, MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::TransportStats { id, reply })
            .await?
    }

    /// Receives a data channel the client opened (`produceData`).
    pub async fn produce_data(
        &self,
        options: crate::data_producer::DataProducerOptions,
    ) -> Result<crate::data_producer::DataProducer, MediaError> {
        crate::direct_transport::produce_data(&self.worker, &self.id, options).await
    }

    /// Sends a data producer's messages to the client on a stream the server picks.
    pub async fn consume_data(
        &self,
        options: crate::data_consumer::DataConsumerOptions,
    ) -> Result<crate::data_consumer::DataConsumer, MediaError> {
        crate::direct_transport::consume_data(&self.worker, &self.id, options)
            .await
            .map(|(c, _)| c)
    }

    /// Makes the worker panic while handling this transport, to test that only this session
    /// closes (with `CloseReason::SessionError`).
    #[doc(hidden)]
    pub async fn panic_for_test(&self) -> Result<(), MediaError> {
        self.worker.send(Command::PanicTransport {
            id: self.id.clone(),
        })
    }

    /// Closes the transport and everything on it.
    pub async fn close(&self) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::CloseTransport { id, reply })
            .await?
    }
}
