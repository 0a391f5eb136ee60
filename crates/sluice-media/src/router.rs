//! `Router`: a room's media codecs (its RTP capabilities) and, in its worker, the transports,
//! producers and consumers that forward media among its peers.

use std::sync::Arc;

use sluice_ortc::RtpCapabilities;

use crate::command::{Command, WorkerLink};
use crate::error::MediaError;
use crate::plain_transport::{PlainTransport, PlainTransportOptions};
pub use crate::types::RouterDump;
use crate::webrtc_transport::{WebRtcTransport, WebRtcTransportOptions};

/// The control plane's handle on a router living in a worker.
#[derive(Debug, Clone)]
pub struct Router {
    id: String,
    worker: WorkerLink,
    rtp_capabilities: Arc<RtpCapabilities>,
}

impl Router {
    pub(crate) fn new(
        id: String,
        worker: WorkerLink,
        rtp_capabilities: Arc<RtpCapabilities>,
    ) -> Self {
        Router {
            id,
            worker,
            rtp_capabilities,
        }
    }

    /// The index of the worker that hosts it.
    pub fn worker_index(&self) -> usize {
        self.worker.index()
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The router's capabilities, generated from its media codecs (`getRouterRtpCapabilities`).
    pub fn rtp_capabilities(&self) -> &RtpCapabilities {
        &self.rtp_capabilities
    }

    /// Whether a device with `rtp_capabilities` can consume producer `producer_id`.
    pub async fn can_consume(
        &self,
        producer_id: &str,
        rtp_capabilities: &RtpCapabilities,
    ) -> Result<bool, MediaError> {
        let router_id = self.id.clone();
        let producer_id = producer_id.to_owned();
        let caps = rtp_capabilities.clone();
        self.worker
            .request(|reply| Command::CanConsume {
                router_id,
                producer_id,
                caps,
                reply,
            })
            .await
    }

    /// Creates a WebRTC transport on this router's worker.
    pub async fn create_webrtc_transport(
        &self,
        options: WebRtcTransportOptions,
    ) -> Result<WebRtcTransport, MediaError> {
        let router_id = self.id.clone();
        let created = self
            .worker
            .request(|reply| Command::CreateWebRtcTransport {
                router_id,
                options: Box::new(options),
                reply,
            })
            .await??;
        Ok(WebRtcTransport::new(
            self.worker.clone(),
            self.id.clone(),
            self.rtp_capabilities.clone(),
            created,
        ))
    }

    /// Creates a plain RTP transport on this router's worker, on ports of its own.
    pub async fn create_plain_transport(
        &self,
        options: PlainTransportOptions,
    ) -> Result<PlainTransport, MediaError> {
        let router_id = self.id.clone();
        let created = self
            .worker
            .request(|reply| Command::CreatePlainTransport {
                router_id,
                options: Box::new(options),
                reply,
            })
            .await??;
        Ok(PlainTransport::new(
            self.worker.clone(),
            self.id.clone(),
            self.rtp_capabilities.clone(),
            created,
        ))
    }

    /// Creates a direct (in-process) transport for server-side game data.
    pub async fn create_direct_transport(
        &self,
        events: Option<crate::events::EventSender>,
    ) -> Result<crate::direct_transport::DirectTransport, MediaError> {
        let router_id = self.id.clone();
        let id = self
            .worker
            .request(|reply| Command::CreateDirectTransport {
                router_id,
                events,
                reply,
            })
            .await??;
        Ok(crate::direct_transport::DirectTransport::new(
            self.worker.clone(),
            self.id.clone(),
            id,
        ))
    }

    pub async fn dump(&self) -> Result<RouterDump, MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::RouterDump { id, reply })
            .await?
    }

    /// Closes the router and everything on it.
    pub async fn close(&self) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::CloseRouter { id, reply })
            .await?
    }
}
