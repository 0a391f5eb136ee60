//! `Producer`: media a client sends into a router (audio, video, simulcast).
//!
//! The control plane holds a [`Producer`] handle; the worker holds its [`ProducerState`]: the
//! producer's encodings (simulcast layers) with their live SSRCs, bitrates and scores, its
//! consumers, and the keyframe-request rate limit.

use sluice_ortc::{MediaKind, RtpCapabilities, RtpParameters};

use crate::command::{Command, WorkerLink};
use crate::error::MediaError;
use crate::types::ProducerSpec;
pub use crate::types::{ProducerOptions, ProducerStat, ProducerType, WIRE_OVERHEAD_BYTES};

/// The control plane's handle on a producer.
#[derive(Debug, Clone)]
pub struct Producer {
    id: String,
    transport_id: String,
    kind: MediaKind,
    r#type: ProducerType,
    rtp_parameters: RtpParameters,
    consumable_rtp_parameters: RtpParameters,
    worker: WorkerLink,
}

/// Creates a producer on transport `transport_id` of `worker` (a WebRTC or plain transport's
/// `produce`): [`spec_for`], then the worker.
pub(crate) async fn produce_on(
    worker: &WorkerLink,
    transport_id: &str,
    options: ProducerOptions,
    router_capabilities: &RtpCapabilities,
    cname: &str,
) -> Result<Producer, MediaError> {
    let (spec, r#type) = spec_for(options, router_capabilities, cname)?;
    let sent = spec.clone();
    let transport = transport_id.to_owned();
    worker
        .request(|reply| Command::Produce {
            transport_id: transport,
            spec: Box::new(sent),
            reply,
        })
        .await??;
    Ok(Producer::new(
        worker.clone(),
        transport_id.to_owned(),
        spec,
        r#type,
    ))
}

/// A random RTCP CNAME for a transport's producers that name none.
pub(crate) fn new_cname() -> String {
    crate::new_id().chars().take(8).collect()
}

/// What a transport's worker needs of a new producer: its parameters checked against the
/// router's capabilities, mapped onto the router's numbering, and what consumers will be offered.
/// Parameters without an `rtcp.cname` get `cname` (the transport's, as mediasoup does): a
/// browser ties a consumer's SSRC to its track by it.
pub(crate) fn spec_for(
    mut options: ProducerOptions,
    router_capabilities: &RtpCapabilities,
    cname: &str,
) -> Result<(ProducerSpec, ProducerType), MediaError> {
    let rtcp = &mut options.rtp_parameters.rtcp;
    if rtcp.cname.as_deref().is_none_or(str::is_empty) {
        rtcp.cname = Some(cname.to_owned());
    }
    let params = &options.rtp_parameters;
    sluice_ortc::validate_producer_rtp_parameters(options.kind, params)
        .map_err(|e| MediaError::InvalidRtpParameters(e.into()))?;
    let mut ssrcs = sluice_ortc::SsrcGenerator::new(rand::random());
    let mapping =
        sluice_ortc::get_producer_rtp_parameters_mapping(params, router_capabilities, &mut || {
            ssrcs.next_ssrc()
        })
        .map_err(|e| MediaError::InvalidRtpParameters(e.into()))?;
    let consumable = sluice_ortc::get_consumable_rtp_parameters(
        options.kind,
        params,
        router_capabilities,
        &mapping,
    );
    let r#type = ProducerType::of(params);
    let spec = ProducerSpec {
        id: options.id.unwrap_or_else(crate::new_id),
        kind: options.kind,
        rtp_parameters: options.rtp_parameters,
        mapping,
        consumable,
        paused: options.paused,
        key_frame_request_delay: options.key_frame_request_delay,
    };
    Ok((spec, r#type))
}

impl Producer {
    pub(crate) fn new(
        worker: WorkerLink,
        transport_id: String,
        spec: ProducerSpec,
        r#type: ProducerType,
    ) -> Self {
        Producer {
            id: spec.id,
            transport_id,
            kind: spec.kind,
            r#type,
            rtp_parameters: spec.rtp_parameters,
            consumable_rtp_parameters: spec.consumable,
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

    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    pub fn r#type(&self) -> ProducerType {
        self.r#type
    }

    /// As the client sent them.
    pub fn rtp_parameters(&self) -> &RtpParameters {
        &self.rtp_parameters
    }

    /// In the router's numbering, what consumers are cut from.
    pub fn consumable_rtp_parameters(&self) -> &RtpParameters {
        &self.consumable_rtp_parameters
    }

    pub async fn pause(&self) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::PauseProducer {
                id,
                paused: true,
                reply,
            })
            .await?
    }

    pub async fn resume(&self) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::PauseProducer {
                id,
                paused: false,
                reply,
            })
            .await?
    }

    pub async fn get_stats(&self) -> Result<Vec<ProducerStat>, MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::ProducerStats { id, reply })
            .await?
    }

    /// Closes the producer; its consumers close with `CloseReason::ProducerClosed`.
    pub async fn close(&self) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::CloseProducer { id, reply })
            .await?
    }
}
