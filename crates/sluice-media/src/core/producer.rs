//! A producer in the core ([`ProducerState`]): media a client sends into a router (audio, video,
//! simulcast) — its encodings (simulcast layers) with their live SSRCs, bitrates and scores, its
//! consumers, and the keyframe-request rate limit. The control plane's handle is
//! `crate::producer::Producer`.

use std::time::{Duration, Instant};

use sluice_ortc::{MediaKind, RtpMapping, RtpParameters, parse_scalability_mode};
use str0m::format::Codec;

use crate::core::table::Identified;
use crate::error::MediaError;
use crate::events::ProducerScore;
use crate::forwarder::Forwarder;
use crate::layers::{LayerStatus, RateCalculator};
use crate::settings::DEFAULTS;
use crate::types::{Key, ProducerSpec, ProducerStat, ProducerType, WIRE_OVERHEAD_BYTES};

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
                .is_some_and(|t| now.saturating_duration_since(t) < DEFAULTS.layer_inactive_after)
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
    /// Whether any of `consumers` is not paused, as last reported (`ProducerDemandChange`).
    pub demanded: bool,
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
            demanded: false,
            key_frame_request_delay: spec.key_frame_request_delay,
            last_scores: Vec::new(),
        }
    }

    /// The layer an incoming stream belongs to, by SSRC or (simulcast by rid) by rid.
    /// Whether a consumer on router `router_id` receiving with `caps` can consume this producer.
    pub fn check_consumable(
        &self,
        router_id: &str,
        caps: &sluice_ortc::RtpCapabilities,
    ) -> Result<(), MediaError> {
        if self.router_id != router_id {
            return Err(MediaError::CannotConsume(
                "the producer is on another router".into(),
            ));
        }
        if !sluice_ortc::can_consume(&self.consumable, caps)
            .map_err(|e| MediaError::CannotConsume(e.into()))?
        {
            return Err(MediaError::CannotConsume(
                "the device cannot receive any of the producer's codecs".into(),
            ));
        }
        Ok(())
    }

    /// A new consumer's forwarder of this producer's packets (a random initial sequence number;
    /// paused as the consumer asks and as the producer is).
    pub fn new_forwarder(&self, paused: bool, now: Instant) -> Forwarder {
        let initial_seq = u64::from(rand::random::<u16>() & 0x7fff) + 1;
        let mut forwarder = Forwarder::new(
            self.codec,
            self.clock_rate,
            self.kind == MediaKind::Video,
            initial_seq,
        );
        forwarder.set_producer_paused(self.paused, now);
        if !paused {
            forwarder.set_paused(false, now);
        }
        forwarder
    }

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

impl Identified for ProducerState {
    fn id(&self) -> &str {
        &self.id
    }
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
