//! `Producer`: media a client sends into a router (audio, video, simulcast).
//!
//! The control plane holds a [`Producer`] handle; the worker holds its [`ProducerState`]: the
//! producer's encodings (simulcast layers) with their live SSRCs, bitrates and scores, its
//! consumers, and the keyframe-request rate limit.

use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_ortc::{MediaKind, RtpMapping, RtpParameters, parse_scalability_mode};
use str0m::format::Codec;

use crate::error::MediaError;
use crate::events::ProducerScore;
use crate::layers::{LAYER_INACTIVE_AFTER, LayerStatus, RateCalculator};
use crate::worker::{Command, Key, Worker};

/// Default least time between two keyframe requests sent to one producer stream.
/// Bytes a forwarded RTP packet carries besides its payload: an RTP header with a few extensions
/// (≈32), the SRTP authentication tag (10), UDP (8) and IPv4 (20).
pub const WIRE_OVERHEAD_BYTES: usize = 70;

pub const DEFAULT_KEY_FRAME_REQUEST_DELAY: Duration = Duration::from_millis(500);

/// mediasoup's producer types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProducerType {
    Simple,
    Simulcast,
    Svc,
}

impl ProducerType {
    /// The type for a producer's encodings: several → simulcast; one with several spatial layers
    /// → SVC; else simple.
    pub fn of(rtp_parameters: &RtpParameters) -> ProducerType {
        match rtp_parameters.encodings.as_slice() {
            [one] if parse_scalability_mode(one.scalability_mode.as_deref()).spatial_layers > 1 => {
                ProducerType::Svc
            }
            [_, _, ..] => ProducerType::Simulcast,
            _ => ProducerType::Simple,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProducerType::Simple => "simple",
            ProducerType::Simulcast => "simulcast",
            ProducerType::Svc => "svc",
        }
    }
}

/// What `WebRtcTransport::produce` takes.
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// The producer's id; a fresh one when `None`.
    pub id: Option<String>,
    pub kind: MediaKind,
    /// In the client's own numbering.
    pub rtp_parameters: RtpParameters,
    pub paused: bool,
    /// Least time between two keyframe requests sent to the client for one stream.
    pub key_frame_request_delay: Duration,
}

impl ProducerOptions {
    pub fn new(kind: MediaKind, rtp_parameters: RtpParameters) -> Self {
        ProducerOptions {
            id: None,
            kind,
            rtp_parameters,
            paused: false,
            key_frame_request_delay: DEFAULT_KEY_FRAME_REQUEST_DELAY,
        }
    }
}

/// What the worker needs to create a producer (computed by the handle).
#[derive(Debug, Clone)]
pub(crate) struct ProducerSpec {
    pub id: String,
    pub kind: MediaKind,
    pub rtp_parameters: RtpParameters,
    pub mapping: RtpMapping,
    pub consumable: RtpParameters,
    pub paused: bool,
    pub key_frame_request_delay: Duration,
}

/// Per-encoding statistics of a producer (`getProducerStats`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerStat {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: u64,
    pub ssrc: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtx_ssrc: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
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

/// The control plane's handle on a producer.
#[derive(Debug, Clone)]
pub struct Producer {
    id: String,
    transport_id: String,
    kind: MediaKind,
    r#type: ProducerType,
    rtp_parameters: RtpParameters,
    consumable_rtp_parameters: RtpParameters,
    worker: Worker,
}

impl Producer {
    pub(crate) fn new(
        worker: Worker,
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

/// One encoding (simulcast layer) of a producer, in the worker.
#[derive(Debug, Clone)]
pub(crate) struct ProducerLayer {
    pub rid: Option<String>,
    /// Signalled, or learnt from the first packet of a rid-based layer.
    pub ssrc: Option<u32>,
    pub rtx_ssrc: Option<u32>,
    pub rate: RateCalculator,
    pub last_packet_at: Option<Instant>,
    pub packets: u64,
    pub bytes: u64,
    /// str0m reported the stream paused (no media for a while).
    pub stalled: bool,
    pub score: u8,
    pub fraction_lost: u8,
    pub nacks: u64,
    pub plis: u64,
    pub firs: u64,
    pub last_keyframe_request: Option<Instant>,
}

impl ProducerLayer {
    pub fn is_active(&self, now: Instant) -> bool {
        !self.stalled
            && self
                .last_packet_at
                .is_some_and(|t| now.saturating_duration_since(t) < LAYER_INACTIVE_AFTER)
    }
}

/// A producer in its worker.
#[derive(Debug)]
pub(crate) struct ProducerState {
    pub id: String,
    pub transport: Key,
    pub router_id: String,
    pub kind: MediaKind,
    pub r#type: ProducerType,
    pub mid: String,
    pub mapping: RtpMapping,
    pub consumable: RtpParameters,
    pub codec: Codec,
    pub mime_type: String,
    pub clock_rate: u32,
    pub paused: bool,
    pub layers: Vec<ProducerLayer>,
    pub temporal_layers: u8,
    pub consumers: Vec<Key>,
    pub key_frame_request_delay: Duration,
    pub last_scores: Vec<u8>,
}

impl ProducerState {
    pub fn new(spec: ProducerSpec, transport: Key, router_id: String, mid: String) -> Self {
        let r#type = ProducerType::of(&spec.rtp_parameters);
        let main = spec
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| !c.mime_type.to_ascii_lowercase().ends_with("/rtx"));
        let codec = main
            .and_then(|c| crate::numbering::codec_from_mime(&c.mime_type))
            .unwrap_or(Codec::Null);
        let clock_rate = main.map_or(90000, |c| c.clock_rate);
        let mime_type = main.map_or_else(String::new, |c| c.mime_type.clone());
        let temporal_layers = spec
            .rtp_parameters
            .encodings
            .iter()
            .map(|e| parse_scalability_mode(e.scalability_mode.as_deref()).temporal_layers)
            .max()
            .unwrap_or(1);
        let layers = spec
            .rtp_parameters
            .encodings
            .iter()
            .map(|e| ProducerLayer {
                rid: e.rid.clone(),
                ssrc: e.ssrc,
                rtx_ssrc: e.rtx.map(|r| r.ssrc),
                rate: RateCalculator::new(Duration::from_secs(1)),
                last_packet_at: None,
                packets: 0,
                bytes: 0,
                stalled: false,
                score: 0,
                fraction_lost: 0,
                nacks: 0,
                plis: 0,
                firs: 0,
                last_keyframe_request: None,
            })
            .collect();
        ProducerState {
            id: spec.id,
            transport,
            router_id,
            kind: spec.kind,
            r#type,
            mid,
            mapping: spec.mapping,
            consumable: spec.consumable,
            codec,
            mime_type,
            clock_rate,
            paused: spec.paused,
            layers,
            temporal_layers,
            consumers: Vec::new(),
            key_frame_request_delay: spec.key_frame_request_delay,
            last_scores: Vec::new(),
        }
    }

    /// The layer an incoming stream belongs to, by SSRC or (simulcast by rid) by rid.
    pub fn layer_of(&self, ssrc: u32, rid: Option<&str>) -> Option<usize> {
        if let Some(i) = self.layers.iter().position(|l| l.ssrc == Some(ssrc)) {
            return Some(i);
        }
        match rid {
            Some(rid) => self
                .layers
                .iter()
                .position(|l| l.rid.as_deref() == Some(rid)),
            None if self.layers.len() == 1 && self.layers[0].rid.is_none() => Some(0),
            None => None,
        }
    }

    /// Counts one received packet of `bytes` payload bytes. The layer's bitrate is measured on
    /// the wire (payload plus [`WIRE_OVERHEAD_BYTES`]), as bandwidth estimates and str0m's pacer
    /// count it: for small audio packets the headers are nearly half of what is sent.
    pub fn on_packet(&mut self, layer: usize, bytes: usize, now: Instant) {
        if let Some(l) = self.layers.get_mut(layer) {
            l.packets += 1;
            l.bytes += bytes as u64;
            l.rate.add(bytes + WIRE_OVERHEAD_BYTES, now);
            l.last_packet_at = Some(now);
            l.stalled = false;
            if l.score == 0 {
                l.score = 10;
            }
        }
    }

    pub fn layer_statuses(&self, now: Instant) -> Vec<LayerStatus> {
        self.layers
            .iter()
            .map(|l| LayerStatus {
                active: l.is_active(now),
                bitrate: l.rate.rate(now),
            })
            .collect()
    }

    /// Whether a keyframe request for `layer` may go out now (rate limit); records it if so.
    pub fn allow_keyframe_request(&mut self, layer: usize, now: Instant) -> Option<u32> {
        let delay = self.key_frame_request_delay;
        let l = self.layers.get_mut(layer)?;
        let ssrc = l.ssrc?;
        if l.last_keyframe_request
            .is_some_and(|t| now.saturating_duration_since(t) < delay)
        {
            return None;
        }
        l.last_keyframe_request = Some(now);
        Some(ssrc)
    }

    pub fn scores(&self) -> Vec<ProducerScore> {
        self.layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                Some(ProducerScore {
                    encoding_idx: i as u32,
                    ssrc: l.ssrc?,
                    rid: l.rid.clone(),
                    score: l.score,
                })
            })
            .collect()
    }

    /// The producer's overall score: its best layer's.
    pub fn score(&self) -> u8 {
        self.layers.iter().map(|l| l.score).max().unwrap_or(0)
    }

    pub fn stats(&self, now: Instant, timestamp: u64) -> Vec<ProducerStat> {
        self.layers
            .iter()
            .filter_map(|l| {
                Some(ProducerStat {
                    kind: "inbound-rtp",
                    timestamp,
                    ssrc: l.ssrc?,
                    rtx_ssrc: l.rtx_ssrc,
                    rid: l.rid.clone(),
                    mime_type: self.mime_type.clone(),
                    packet_count: l.packets,
                    byte_count: l.bytes,
                    bitrate: l.rate.rate(now),
                    score: l.score,
                    fraction_lost: l.fraction_lost,
                    nack_count: l.nacks,
                    pli_count: l.plis,
                    fir_count: l.firs,
                })
            })
            .collect()
    }
}

/// A 0..=10 score from a loss fraction (0.0..=1.0): 10 at no loss, minus one per 2 % lost.
pub(crate) fn score_from_loss(loss: f32) -> u8 {
    let lost_percent = (loss.clamp(0.0, 1.0) * 100.0).round() as u32;
    10u32.saturating_sub(lost_percent.div_ceil(2)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_ortc::RtpEncodingParameters;

    #[test]
    fn producer_type_follows_encodings() {
        let mut p = RtpParameters {
            encodings: vec![RtpEncodingParameters::default()],
            ..Default::default()
        };
        assert_eq!(ProducerType::of(&p), ProducerType::Simple);
        p.encodings[0].scalability_mode = Some("L3T3".into());
        assert_eq!(ProducerType::of(&p), ProducerType::Svc);
        p.encodings = vec![RtpEncodingParameters::default(); 3];
        assert_eq!(ProducerType::of(&p), ProducerType::Simulcast);
    }

    #[test]
    fn score_drops_with_loss() {
        assert_eq!(score_from_loss(0.0), 10);
        assert_eq!(score_from_loss(0.05), 7);
        assert_eq!(score_from_loss(1.0), 0);
        assert_eq!(score_from_loss(f32::NAN), 10);
    }
}
