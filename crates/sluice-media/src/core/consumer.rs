//! A consumer in the core ([`ConsumerState`]): one producer's media sent to one client — its
//! [`Forwarder`] (what to send, with which numbers: the rewrite of sequence numbers, timestamps
//! and VP8 picture ids), its payload-type map, the layers it prefers and its score. Consumers are
//! created paused and resumed once the client is ready (mediasoup-demo's `newConsumer` flow).

use std::time::Instant;

use sluice_ortc::MediaKind;
use str0m::media::Pt;
use str0m::rtp::{ExtensionValues, RtpWrite, Vp8Descriptor};

use crate::core::table::Identified;
use crate::events::{ConsumerLayers, ConsumerScore};
use crate::forwarder::{Forwarder, InPacket, Received, Verdict};
use crate::layers::RateCalculator;
use crate::types::{ConsumerStat, Key, ProducerType};

/// A consumer in its worker.
#[derive(Debug)]
pub(crate) struct ConsumerState {
    pub id: String,
    pub producer: Key,
    pub producer_id: String,
    pub transport: Key,
    pub kind: MediaKind,
    pub r#type: ProducerType,
    pub mid: String,
    pub ssrc: u32,
    pub rtx_ssrc: Option<u32>,
    pub mime_type: String,
    /// Producer payload type → the payload type this consumer sends.
    pub pt_map: Vec<(u8, Pt)>,
    pub forwarder: Forwarder,
    pub preferred_layers: Option<ConsumerLayers>,
    pub priority: u8,
    /// Last layers reported in a `ConsumerLayersChange` event.
    pub reported_layers: Option<ConsumerLayers>,
    pub rate: RateCalculator,
    pub packets: u64,
    pub bytes: u64,
    pub score: u8,
    pub fraction_lost: u8,
    pub nacks: u64,
    pub plis: u64,
    pub firs: u64,
    pub last_score: Option<ConsumerScore>,
    /// Set when sluice writes this consumer's packets itself (audio; `MediaSettings::
    /// own_audio_egress`): they never enter str0m.
    pub own_egress: Option<OwnEgress>,
    /// A pipe consumer's SSRC for each encoding of the producer (empty for any other).
    pub pipe_ssrcs: Vec<u32>,
}

/// What a consumer with its own egress writes besides the media: the RFC 8285 header
/// extensions with the ids the client was given, and its RTCP sender reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct OwnEgress {
    /// The consumer's mid.
    pub mid: Option<(u8, Vec<u8>)>,
    /// The producer's audio level (RFC 6464).
    pub audio_level: Option<u8>,
    pub clock_rate: u32,
    /// The CNAME its sender reports carry (the consumer's `rtcp.cname`).
    pub cname: Vec<u8>,
    /// When the last packet left, and its RTP timestamp: a sender report extrapolates from it.
    pub last_sent: Option<(Instant, u32)>,
    /// SRTCP packets sent with this SSRC (RFC 3711 §3.4's index).
    pub srtcp_index: u32,
    pub next_report: Option<Instant>,
}

impl OwnEgress {
    /// The extensions of a consumer with these negotiated parameters.
    pub fn new(params: &sluice_ortc::RtpParameters, mid: &str, clock_rate: u32) -> Self {
        let id_of = |uri: &str| {
            params
                .header_extensions
                .iter()
                .find(|h| h.uri == uri)
                .map(|h| h.id)
                .filter(|id| (1..=14).contains(id))
        };
        OwnEgress {
            mid: id_of(sluice_ortc::supported::MID_URI)
                .filter(|_| !mid.is_empty() && mid.len() <= 16)
                .map(|id| (id, mid.as_bytes().to_vec())),
            audio_level: id_of(sluice_ortc::supported::AUDIO_LEVEL_URI),
            clock_rate: clock_rate.max(1),
            cname: params
                .rtcp
                .cname
                .as_deref()
                .unwrap_or("sluice")
                .bytes()
                .take(255)
                .collect(),
            last_sent: None,
            srtcp_index: 0,
            next_report: None,
        }
    }
}

/// Seconds between the NTP epoch (1900) and the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A packet a consumer with its own egress sends: RTP, not yet protected.
#[derive(Debug)]
pub(crate) struct OwnPacket {
    pub bytes: Vec<u8>,
    /// The SSRC in its header (a pipe consumer has one per encoding).
    pub ssrc: u32,
    pub header_len: usize,
    pub seq: u16,
    pub roc: u32,
}

impl ConsumerState {
    /// This consumer's copy of a producer's packet, rewritten for it: its payload type, its
    /// continuous sequence numbers and timestamps, its VP8 picture ids; `None` when the forwarder
    /// skips the packet (paused, another layer, waiting for a keyframe).
    pub fn rewrite(
        &mut self,
        packet: &Received,
        input: &InPacket,
        ext_vals: &ExtensionValues,
        nackable: bool,
        now: Instant,
    ) -> Option<RtpWrite> {
        let Verdict::Forward(out) = self.forwarder.on_packet(input, now) else {
            return None;
        };
        let pt = self.payload_type_for(packet.payload_type)?;
        let mut write = RtpWrite::new(
            pt,
            out.seq.into(),
            out.timestamp,
            packet.at,
            packet.payload.clone(),
        )
        .marker(packet.marker)
        .nackable(nackable)
        .ext_vals(ext_vals.clone());
        if (out.picture_id.is_some() || out.tl0_pic_idx.is_some())
            && let Ok(desc) = Vp8Descriptor::parse(&packet.payload)
        {
            let mut patch = desc.patch();
            if let Some(pid) = out.picture_id {
                patch = patch.picture_id(pid);
            }
            if let Some(tl0) = out.tl0_pic_idx {
                patch = patch.tl0_pic_idx(tl0);
            }
            if let Ok(patch) = patch.build() {
                write = write.vp8_patch(patch);
            }
        }
        Some(write)
    }

    /// This consumer's copy of a producer's packet as RTP bytes (consumers with their own
    /// egress): its SSRC, payload type, sequence numbers and timestamps, the mid and audio level
    /// extensions; `reserve` bytes spare at the end for the SRTP tag. `None` when the forwarder
    /// skips the packet.
    pub fn own_packet(
        &mut self,
        packet: &Received,
        input: &InPacket,
        ext_vals: &ExtensionValues,
        reserve: usize,
        now: Instant,
    ) -> Option<OwnPacket> {
        let egress = self.own_egress.as_ref()?;
        let Verdict::Forward(out) = self.forwarder.on_packet(input, now) else {
            return None;
        };
        let pt = *self.payload_type_for(packet.payload_type)?;
        let mid = egress.mid.as_ref();
        let level = egress.audio_level.zip(ext_vals.audio_level);
        // One-byte extensions (RFC 8285 §4.2): id and length − 1, then the value; padded.
        let ext_len = mid.map_or(0, |(_, m)| 1 + m.len()) + if level.is_some() { 2 } else { 0 };
        let ext_words = ext_len.div_ceil(4);
        let header_len = 12 + if ext_words > 0 { 4 + 4 * ext_words } else { 0 };
        let payload = &packet.payload;
        let mut bytes = Vec::with_capacity(header_len + payload.len() + reserve);
        bytes.push(if ext_words > 0 { 0x90 } else { 0x80 });
        bytes.push((u8::from(packet.marker) << 7) | (pt & 0x7f));
        let seq = out.seq as u16;
        bytes.extend_from_slice(&seq.to_be_bytes());
        bytes.extend_from_slice(&out.timestamp.to_be_bytes());
        bytes.extend_from_slice(&self.ssrc.to_be_bytes());
        if ext_words > 0 {
            bytes.extend_from_slice(&[0xbe, 0xde]);
            bytes.extend_from_slice(&(ext_words as u16).to_be_bytes());
            if let Some((id, mid)) = mid {
                bytes.push((id << 4) | (mid.len() as u8 - 1));
                bytes.extend_from_slice(mid);
            }
            if let Some((id, level)) = level {
                let voice = if ext_vals.voice_activity == Some(true) {
                    0x80
                } else {
                    0
                };
                bytes.push(id << 4);
                bytes.push(voice | (level.unsigned_abs() & 0x7f));
            }
            bytes.resize(header_len, 0);
        }
        bytes.extend_from_slice(payload);
        if let Some(egress) = self.own_egress.as_mut() {
            egress.last_sent = Some((now, out.timestamp));
        }
        Some(OwnPacket {
            bytes,
            ssrc: self.ssrc,
            header_len,
            seq,
            roc: (out.seq >> 16) as u32,
        })
    }

    /// A pipe consumer's copy of a packet of encoding `layer`: the producer's sequence number
    /// and timestamp, the encoding's pipe SSRC, the router's payload type, no header
    /// extension; `None` while the consumer is paused or for an encoding it does not know.
    pub fn pipe_packet(
        &self,
        packet: &Received,
        layer: usize,
        reserve: usize,
    ) -> Option<OwnPacket> {
        if self.forwarder.is_paused() {
            return None;
        }
        let ssrc = *self.pipe_ssrcs.get(layer)?;
        let pt = *self.payload_type_for(packet.payload_type)?;
        let mut bytes = Vec::with_capacity(12 + packet.payload.len() + reserve);
        bytes.push(0x80);
        bytes.push((u8::from(packet.marker) << 7) | (pt & 0x7f));
        let seq = packet.seq as u16;
        bytes.extend_from_slice(&seq.to_be_bytes());
        bytes.extend_from_slice(&packet.rtp_timestamp.to_be_bytes());
        bytes.extend_from_slice(&ssrc.to_be_bytes());
        bytes.extend_from_slice(&packet.payload);
        Some(OwnPacket {
            bytes,
            ssrc,
            header_len: 12,
            seq,
            roc: (packet.seq >> 16) as u32,
        })
    }

    /// An RTCP sender report (RFC 3550 §6.4.1) with the consumer's CNAME (§6.5.1), not yet
    /// protected, for a consumer with its own egress that has sent something: `unix_micros` is
    /// the wall clock at `now`, and the RTP timestamp is the last packet's extrapolated to
    /// `now`, as str0m reports its own streams (from when packets leave).
    pub fn sender_report(&self, now: Instant, unix_micros: u64, reserve: usize) -> Option<Vec<u8>> {
        let egress = self.own_egress.as_ref()?;
        let (at, timestamp) = egress.last_sent?;
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        let rtp_timestamp = timestamp.wrapping_add((elapsed * f64::from(egress.clock_rate)) as u32);
        let seconds = unix_micros / 1_000_000 + NTP_UNIX_OFFSET;
        let fraction = ((unix_micros % 1_000_000) << 32) / 1_000_000;
        let mut report = Vec::with_capacity(28 + 12 + egress.cname.len() + reserve);
        report.extend_from_slice(&[0x80, 200, 0x00, 0x06]);
        report.extend_from_slice(&self.ssrc.to_be_bytes());
        report.extend_from_slice(&(seconds as u32).to_be_bytes());
        report.extend_from_slice(&(fraction as u32).to_be_bytes());
        report.extend_from_slice(&rtp_timestamp.to_be_bytes());
        report.extend_from_slice(&(self.packets as u32).to_be_bytes());
        report.extend_from_slice(&(self.bytes as u32).to_be_bytes());
        // SDES with one chunk: SSRC, CNAME item, END, padded to 32 bits.
        let chunk = (4 + 2 + egress.cname.len() + 1).div_ceil(4) * 4;
        report.extend_from_slice(&[0x81, 202]);
        report.extend_from_slice(&((chunk / 4) as u16).to_be_bytes());
        report.extend_from_slice(&self.ssrc.to_be_bytes());
        report.push(1);
        report.push(egress.cname.len() as u8);
        report.extend_from_slice(&egress.cname);
        report.resize(28 + 4 + chunk, 0);
        Some(report)
    }

    pub fn payload_type_for(&self, producer_pt: u8) -> Option<Pt> {
        self.pt_map
            .iter()
            .find(|(p, _)| *p == producer_pt)
            .map(|(_, c)| *c)
    }

    pub fn current_layers(&self) -> Option<ConsumerLayers> {
        self.forwarder
            .current_layers()
            .map(|(s, t)| ConsumerLayers {
                spatial_layer: s.min(255) as u8,
                temporal_layer: t,
            })
    }

    pub fn on_sent(&mut self, bytes: usize, now: Instant) {
        self.packets += 1;
        self.bytes += bytes as u64;
        self.rate.add(bytes, now);
    }

    pub fn stats(&self, now: Instant, timestamp: u64) -> ConsumerStat {
        ConsumerStat {
            kind: "outbound-rtp",
            timestamp,
            ssrc: self.ssrc,
            rtx_ssrc: self.rtx_ssrc,
            mime_type: self.mime_type.clone(),
            packet_count: self.packets,
            byte_count: self.bytes,
            bitrate: self.rate.rate(now),
            score: self.score,
            fraction_lost: self.fraction_lost,
            nack_count: self.nacks,
            pli_count: self.plis,
            fir_count: self.firs,
        }
    }
}

impl Identified for ConsumerState {
    fn id(&self) -> &str {
        &self.id
    }
}
