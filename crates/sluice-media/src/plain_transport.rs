//! `PlainTransport`: plain RTP over UDP on a port of its own, for tools that do not speak WebRTC
//! (mediasoup's PlainTransport): ffmpeg or GStreamer send a producer's RTP to
//! [`ip`](PlainTransport::ip):[`port`](PlainTransport::port), and the router forwards it to
//! WebRTC consumers like any producer's.
//!
//! With `comedia` the first packet's source becomes the remote tuple (a sender that does not
//! know its own address); otherwise [`connect`](PlainTransport::connect) names it. Packets from
//! any other address are dropped. Each producer's encodings need SSRCs: plain RTP has no mid or
//! rid. With `enable_srtp` both directions are SRTP: the transport's key is
//! [`srtp_parameters`](PlainTransport::srtp_parameters), the remote's comes with `connect`, and
//! what does not authenticate is dropped. RTCP is read and dropped; nothing is sent back yet (no receiver reports, no keyframe
//! requests: a tool should send keyframes at an interval). Consumers send the producer's RTP to
//! the remote from the transport's port, a recorder's or a tool's input.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use sluice_ortc::RtpCapabilities;

use crate::command::{Command, WorkerLink};
use crate::consumer::{Consumer, ConsumerOptions};
use crate::error::MediaError;
use crate::producer::{Producer, ProducerOptions};
use crate::types::PlainTransportCreated;
pub use crate::types::{
    PlainTransportConnect, PlainTransportOptions, PlainTransportStat, SrtpCryptoSuite,
    SrtpParameters,
};

/// The control plane's handle on a plain transport living in a worker.
#[derive(Debug, Clone)]
pub struct PlainTransport {
    id: String,
    router_id: String,
    worker: WorkerLink,
    router_capabilities: Arc<RtpCapabilities>,
    ip: IpAddr,
    port: u16,
    rtcp_port: Option<u16>,
    /// The socket's own address (what another worker of this host sends to).
    local: SocketAddr,
    srtp_parameters: Option<SrtpParameters>,
    /// The RTCP CNAME of producers that name none (as mediasoup does per transport): consumers
    /// need one, or a browser cannot tie their SSRCs to their tracks.
    cname: String,
}

impl PlainTransport {
    pub(crate) fn new(
        worker: WorkerLink,
        router_id: String,
        router_capabilities: Arc<RtpCapabilities>,
        created: PlainTransportCreated,
    ) -> Self {
        PlainTransport {
            id: created.id,
            router_id,
            worker,
            router_capabilities,
            ip: created.ip,
            port: created.port,
            rtcp_port: created.rtcp_port,
            local: created.local,
            srtp_parameters: created.srtp_parameters,
            cname: crate::producer::new_cname(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn router_id(&self) -> &str {
        &self.router_id
    }

    /// The address senders send RTP to (the worker's announced address).
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the RTP socket is bound to (the announced address is what remote senders
    /// use).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The RTCP port without `rtcp_mux`.
    pub fn rtcp_port(&self) -> Option<u16> {
        self.rtcp_port
    }

    /// The transport's own SRTP key (what the remote decrypts with), with `enable_srtp`.
    pub fn srtp_parameters(&self) -> Option<&SrtpParameters> {
        self.srtp_parameters.as_ref()
    }

    /// Names the remote tuple (not with `comedia`, which learns it).
    pub async fn connect(&self, remote: SocketAddr) -> Result<(), MediaError> {
        self.connect_with(PlainTransportConnect {
            remote: Some(remote),
            srtp_parameters: None,
        })
        .await
    }

    /// Names the remote tuple (not with `comedia`) and, with SRTP, the remote's key (needed).
    pub async fn connect_with(&self, connect: PlainTransportConnect) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::ConnectPlainTransport { id, connect, reply })
            .await?
    }

    /// A producer whose RTP the sender sends to this transport; each encoding needs its SSRC.
    /// Without an `rtcp.cname` it gets the transport's.
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

    /// Sends producer `options.producer_id` to the transport's remote as plain RTP (the router's
    /// payload types, a new SSRC; no RTX, no header extensions); a keyframe is asked for at once.
    pub async fn consume(&self, options: ConsumerOptions) -> Result<Consumer, MediaError> {
        crate::consumer::consume_on(&self.worker, &self.id, options).await
    }

    pub async fn get_stats(&self) -> Result<PlainTransportStat, MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::PlainTransportStats { id, reply })
            .await?
    }

    /// Closes the transport and its producers (their consumers are told), and its sockets.
    pub async fn close(&self) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::CloseTransport { id, reply })
            .await?
    }
}
