//! A consumer in the core ([`ConsumerState`]): one producer's media sent to one client — its
//! [`Forwarder`] (what to send, with which numbers: the rewrite of sequence numbers, timestamps
//! and VP8 picture ids), its payload-type map, the layers it prefers and its score. Consumers are
//! created paused and resumed once the client is ready (mediasoup-demo's `newConsumer` flow).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_ortc::MediaKind;
use str0m::media::Pt;
use str0m::rtp::{ExtensionValues, RtpWrite, Vp8Descriptor};

use crate::core::table::Identified;
use crate::events::{ConsumerLayers, ConsumerScore};
use crate::forwarder::{Forwarder, InPacket, Received, Verdict};
use crate::layers::SampledRate;
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
    pub rate: SampledRate,
    pub packets: u64,
    pub bytes: u64,
    pub score: u8,
    pub fraction_lost: u8,
    pub nacks: u64,
    pub plis: u64,
    pub firs: u64,
    pub last_score: Option<ConsumerScore>,
    /// Set when sluice writes this consumer's packets itself (audio, and video of a
    /// single-encoding producer; `MediaSettings::own_audio_egress`, `own_video_egress`): they
    /// never enter str0m.
    pub own_egress: Option<OwnEgress>,
    /// A pipe consumer's SSRC for each encoding of the producer (empty for any other).
    pub pipe_ssrcs: Vec<u32>,
    /// A video pipe consumer with NACK negotiated: what it sent lately, to resend.
    pub pipe_history: Option<PipeHistory>,
}

/// A pipe consumer's packets sent lately, as they left (SRTP-protected on an encrypted pipe),
/// to send again when the pipe's other end NACKs them. A resend is the same bytes, so it
/// encrypts no new plaintext with a used keystream. Resends are bounded as a consumer's
/// ([`History`]): `ratio` of the packets sent beyond a `burst`, so RTCP forged from the pipe's
/// host cannot make it a packet pump.
#[derive(Debug)]
pub(crate) struct PipeHistory {
    sent: VecDeque<PipeSent>,
    capacity: usize,
    window: Duration,
    credit: ResendCredit,
}

/// Resends allowed now: each packet sent adds `ratio` of one, up to `burst` (a link that loses
/// more is better served by a keyframe, and a hostile receiver cannot make a consumer send more
/// than `1 + ratio` times its media).
#[derive(Debug, Clone)]
struct ResendCredit {
    credit: f32,
    ratio: f32,
    burst: f32,
}

impl ResendCredit {
    /// A full credit of `burst`.
    fn new(ratio: f32, burst: f32) -> Self {
        ResendCredit {
            credit: burst,
            ratio,
            burst,
        }
    }

    /// A packet was sent.
    fn earn(&mut self) {
        self.credit = (self.credit + self.ratio).min(self.burst);
    }

    fn allows(&self) -> bool {
        self.credit >= 1.0
    }

    /// A packet was resent.
    fn spend(&mut self) {
        self.credit -= 1.0;
    }
}

#[derive(Debug)]
struct PipeSent {
    ssrc: u32,
    seq: u16,
    at: Instant,
    resent: Option<Instant>,
    bytes: Vec<u8>,
}

impl PipeHistory {
    pub fn new(capacity: usize, window: Duration, ratio: f32, burst: f32) -> Self {
        PipeHistory {
            sent: VecDeque::new(),
            capacity: capacity.max(1),
            window,
            credit: ResendCredit::new(ratio, burst),
        }
    }

    /// Keeps `bytes`, packet `seq` of `ssrc`, sent at `now`.
    pub fn push(&mut self, ssrc: u32, seq: u16, bytes: &[u8], now: Instant) {
        self.credit.earn();
        while self.sent.len() >= self.capacity
            || self
                .sent
                .front()
                .is_some_and(|old| now.saturating_duration_since(old.at) > self.window)
        {
            self.sent.pop_front();
        }
        self.sent.push_back(PipeSent {
            ssrc,
            seq,
            at: now,
            resent: None,
            bytes: bytes.to_vec(),
        });
    }

    /// Packet `seq` of `ssrc` again, if it was sent within the window and not resent within
    /// `interval` (marked resent).
    pub fn resend(
        &mut self,
        ssrc: u32,
        seq: u16,
        now: Instant,
        interval: Duration,
    ) -> Option<Vec<u8>> {
        if !self.credit.allows() {
            return None;
        }
        let window = self.window;
        // NACKs ask for recent packets: searched from the newest.
        let sent = self
            .sent
            .iter_mut()
            .rev()
            .take_while(|s| now.saturating_duration_since(s.at) <= window)
            .find(|s| s.ssrc == ssrc && s.seq == seq)?;
        if sent
            .resent
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return None;
        }
        sent.resent = Some(now);
        let bytes = sent.bytes.clone();
        self.credit.spend();
        Some(bytes)
    }
}

/// What a consumer with its own egress writes besides the media: the RFC 8285 header
/// extensions with the ids the client was given, its RTCP sender reports and (video) what it
/// keeps to answer NACKs.
#[derive(Debug, Clone, Default)]
pub(crate) struct OwnEgress {
    /// The consumer's mid.
    pub mid: Option<(u8, Vec<u8>)>,
    /// The producer's audio level (RFC 6464).
    pub audio_level: Option<u8>,
    /// The producer's video orientation (3GPP TS 26.114 §7.4.5; the rotation bits).
    pub video_orientation: Option<u8>,
    pub clock_rate: u32,
    /// The CNAME its sender reports carry (the consumer's `rtcp.cname`).
    pub cname: Vec<u8>,
    /// When the last packet left, and its RTP timestamp: a sender report extrapolates from it.
    pub last_sent: Option<(Instant, u32)>,
    /// SRTCP packets sent with this SSRC (RFC 3711 §3.4's index).
    pub srtcp_index: u32,
    pub next_report: Option<Instant>,
    /// Video: the packets sent lately, to resend on a NACK (audio is not resent).
    pub history: Option<History>,
    /// Video with RTX negotiated: the stream resends go on (RFC 4588).
    pub rtx: Option<OwnRtx>,
}

/// A consumer's RTX stream: its SSRC, the RTX payload type of each media payload type, and
/// its own sequence numbers.
#[derive(Debug, Clone)]
pub(crate) struct OwnRtx {
    pub ssrc: u32,
    /// (media payload type, RTX payload type), as sent.
    pub payload_types: Vec<(u8, u8)>,
    /// The next RTX sequence number, extended (its high bits are the ROC).
    pub seq: u64,
}

/// The packets a video consumer sent lately, oldest first, by increasing sequence number: at
/// most `capacity`, none older than `window` (str0m's and mediasoup's bounds for resends).
/// A packet's payload is the producer's, shared by all its consumers, not a copy.
#[derive(Debug, Clone)]
pub(crate) struct History {
    sent: VecDeque<Sent>,
    capacity: usize,
    window: Duration,
    credit: ResendCredit,
}

/// One packet as a consumer wrote it: enough to write it again.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    /// The consumer's extended sequence number.
    pub seq: u64,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    /// VP8 picture id and TL0PICIDX as rewritten by the forwarder.
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
    /// (audio level, voice activity) of an audio packet.
    pub audio_level: Option<(i8, bool)>,
    pub video_orientation: Option<u8>,
    pub payload: Arc<[u8]>,
    pub at: Instant,
    /// When it was last resent.
    pub resent: Option<Instant>,
}

impl History {
    pub fn new(capacity: usize, window: Duration, ratio: f32, burst: f32) -> Self {
        History {
            sent: VecDeque::new(),
            capacity: capacity.max(1),
            window,
            credit: ResendCredit::new(ratio, burst),
        }
    }

    /// Keeps a packet just sent; one out of order (older than the newest) is not kept.
    fn push(&mut self, sent: Sent) {
        self.credit.earn();
        if self.sent.back().is_some_and(|last| last.seq >= sent.seq) {
            return;
        }
        while self.sent.len() >= self.capacity
            || self
                .sent
                .front()
                .is_some_and(|old| sent.at.saturating_duration_since(old.at) > self.window)
        {
            self.sent.pop_front();
        }
        self.sent.push_back(sent);
    }

    /// The packet whose 16-bit sequence number is `seq`, sent within the window before `now`
    /// and not resent within `interval`: marked resent.
    fn take_for_resend(&mut self, seq: u16, now: Instant, interval: Duration) -> Option<&Sent> {
        if !self.credit.allows() {
            return None;
        }
        let newest = self.sent.back()?.seq;
        // The extended number of `seq`: the newest one at or below the newest sent.
        let behind = (newest as u16).wrapping_sub(seq);
        let wanted = newest.checked_sub(u64::from(behind))?;
        let index = self.sent.binary_search_by_key(&wanted, |s| s.seq).ok()?;
        let sent = self.sent.get_mut(index)?;
        if now.saturating_duration_since(sent.at) > self.window
            || sent
                .resent
                .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return None;
        }
        sent.resent = Some(now);
        self.credit.spend();
        Some(sent)
    }

    /// How many packets it holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sent.len()
    }
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
            video_orientation: id_of(sluice_ortc::supported::VIDEO_ORIENTATION_URI),
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
            history: None,
            rtx: None,
        }
    }

    /// RTP bytes of `sent` on the media stream (`rtx` none) or resent on the RTX stream (its
    /// SSRC, payload type and sequence number, the original sequence number before the
    /// payload); `reserve` bytes spare at the end for the SRTP tag.
    fn write(
        &self,
        sent: &Sent,
        ssrc: u32,
        rtx: Option<(u32, u8, u64)>,
        reserve: usize,
    ) -> OwnPacket {
        let mid = self.mid.as_ref();
        let level = self.audio_level.zip(sent.audio_level);
        let orientation = self.video_orientation.zip(sent.video_orientation);
        // One-byte extensions (RFC 8285 §4.2): id and length − 1, then the value; padded.
        let ext_len = mid.map_or(0, |(_, m)| 1 + m.len())
            + if level.is_some() { 2 } else { 0 }
            + if orientation.is_some() { 2 } else { 0 };
        let ext_words = ext_len.div_ceil(4);
        let header_len = 12 + if ext_words > 0 { 4 + 4 * ext_words } else { 0 };
        let (ssrc, pt, seq) = match rtx {
            Some(rtx) => rtx,
            None => (ssrc, sent.payload_type, sent.seq),
        };
        let osn = if rtx.is_some() { 2 } else { 0 };
        let mut bytes = Vec::with_capacity(header_len + osn + sent.payload.len() + reserve);
        bytes.push(if ext_words > 0 { 0x90 } else { 0x80 });
        bytes.push((u8::from(sent.marker) << 7) | (pt & 0x7f));
        bytes.extend_from_slice(&(seq as u16).to_be_bytes());
        bytes.extend_from_slice(&sent.timestamp.to_be_bytes());
        bytes.extend_from_slice(&ssrc.to_be_bytes());
        if ext_words > 0 {
            bytes.extend_from_slice(&[0xbe, 0xde]);
            bytes.extend_from_slice(&(ext_words as u16).to_be_bytes());
            if let Some((id, mid)) = mid {
                bytes.push((id << 4) | (mid.len() as u8 - 1));
                bytes.extend_from_slice(mid);
            }
            if let Some((id, (level, voice))) = level {
                bytes.push(id << 4);
                bytes.push((u8::from(voice) << 7) | (level.unsigned_abs() & 0x7f));
            }
            if let Some((id, rotation)) = orientation {
                bytes.push(id << 4);
                bytes.push(rotation & 0x03);
            }
            bytes.resize(header_len, 0);
        }
        if rtx.is_some() {
            bytes.extend_from_slice(&(sent.seq as u16).to_be_bytes());
        }
        let start = bytes.len();
        bytes.extend_from_slice(&sent.payload);
        if sent.picture_id.is_some() || sent.tl0_pic_idx.is_some() {
            crate::payload::patch_vp8(&mut bytes[start..], sent.picture_id, sent.tl0_pic_idx);
        }
        OwnPacket {
            bytes,
            ssrc,
            header_len,
            seq: seq as u16,
            roc: (seq >> 16) as u32,
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

impl OwnPacket {
    /// SRTP-protects the packet in place with `sender`, from the header fields it was written with.
    pub fn protect(
        &mut self,
        sender: &crate::srtp::SrtpSender,
    ) -> Result<(), crate::srtp::SrtpError> {
        sender.protect_rtp(
            &mut self.bytes,
            self.header_len,
            self.ssrc,
            self.roc,
            self.seq,
        )
    }
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
    /// egress): its SSRC, payload type, sequence numbers and timestamps, VP8 picture ids, the
    /// mid, audio level and video orientation extensions; `reserve` bytes spare at the end for
    /// the SRTP tag. `None` when the forwarder skips the packet. A video packet is kept for
    /// NACKs.
    pub fn own_packet(
        &mut self,
        packet: &Received,
        input: &InPacket,
        ext_vals: &ExtensionValues,
        reserve: usize,
        now: Instant,
    ) -> Option<OwnPacket> {
        self.own_egress.as_ref()?;
        let Verdict::Forward(out) = self.forwarder.on_packet(input, now) else {
            return None;
        };
        let pt = *self.payload_type_for(packet.payload_type)?;
        let sent = Sent {
            seq: out.seq,
            timestamp: out.timestamp,
            payload_type: pt,
            marker: packet.marker,
            picture_id: out.picture_id,
            tl0_pic_idx: out.tl0_pic_idx,
            audio_level: ext_vals
                .audio_level
                .map(|l| (l, ext_vals.voice_activity == Some(true))),
            video_orientation: ext_vals.video_orientation.map(|o| o as u8),
            payload: packet.payload.clone(),
            at: now,
            resent: None,
        };
        let egress = self.own_egress.as_mut()?;
        let own = egress.write(&sent, self.ssrc, None, reserve);
        egress.last_sent = Some((now, out.timestamp));
        if let Some(history) = egress.history.as_mut() {
            history.push(sent);
        }
        Some(own)
    }

    /// The packet a NACK asks again for (by its 16-bit sequence number), written again: on the
    /// RTX stream when there is one, else as it was. `None` when it is no longer kept, was
    /// resent within `interval`, or the consumer keeps nothing (audio).
    pub fn resend(
        &mut self,
        seq: u16,
        reserve: usize,
        interval: Duration,
        now: Instant,
    ) -> Option<OwnPacket> {
        let egress = self.own_egress.as_mut()?;
        let sent = egress
            .history
            .as_mut()?
            .take_for_resend(seq, now, interval)?
            .clone();
        let rtx = match egress.rtx.as_mut() {
            Some(rtx) => {
                let pt = rtx
                    .payload_types
                    .iter()
                    .find(|(media, _)| *media == sent.payload_type)
                    .map(|(_, rtx)| *rtx)?;
                let seq = rtx.seq;
                rtx.seq += 1;
                Some((rtx.ssrc, pt, seq))
            }
            None => None,
        };
        Some(egress.write(&sent, self.ssrc, rtx, reserve))
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

    pub fn on_sent(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }

    /// Bits per second sent over about the last second (sampled on the worker's tick).
    pub fn bitrate(&self, now: Instant) -> u64 {
        self.rate.rate(now, self.bytes)
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
            bitrate: self.bitrate(now),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

    use super::*;

    fn sent(seq: u64, at: Instant) -> Sent {
        Sent {
            seq,
            timestamp: 9000 + seq as u32,
            payload_type: 96,
            marker: seq % 2 == 0,
            picture_id: None,
            tl0_pic_idx: None,
            audio_level: None,
            video_orientation: None,
            payload: Arc::from(&[0xaa, 0xbb, 0xcc][..]),
            at,
            resent: None,
        }
    }

    #[test]
    fn a_nacked_packet_is_found_by_its_16_bit_number_across_the_wrap_once_per_interval() {
        let t0 = Instant::now();
        let interval = Duration::from_millis(20);
        let mut h = History::new(8, Duration::from_secs(1), 0.5, 4.0);
        // Sequence numbers 65533 … 65538: 16-bit 65533, 65534, 65535, 0, 1, 2.
        for seq in 65533..65539 {
            h.push(sent(seq, t0));
        }
        assert_eq!(h.take_for_resend(0, t0, interval).unwrap().seq, 65536);
        assert_eq!(h.take_for_resend(65534, t0, interval).unwrap().seq, 65534);
        // Asked again within the interval: not resent; after it: resent.
        assert!(h.take_for_resend(0, t0 + interval / 2, interval).is_none());
        assert!(h.take_for_resend(0, t0 + interval, interval).is_some());
        // Never sent (ahead of the newest, or long gone).
        assert!(h.take_for_resend(3, t0, interval).is_none());
        assert!(h.take_for_resend(65000, t0, interval).is_none());
    }

    #[test]
    fn a_pipe_resends_what_it_sent_within_its_window_once_per_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut h = PipeHistory::new(3, Duration::from_secs(1), 1.0, 100.0);
        h.push(7, 100, b"a", t0);
        h.push(8, 100, b"b", t0);
        h.push(7, 101, b"c", t0 + ms(10));
        assert_eq!(h.resend(8, 100, t0 + ms(20), ms(20)), Some(b"b".to_vec()));
        // Not again within the interval; again after it.
        assert_eq!(h.resend(8, 100, t0 + ms(30), ms(20)), None);
        assert_eq!(h.resend(8, 100, t0 + ms(40), ms(20)), Some(b"b".to_vec()));
        // Unknown SSRC or sequence number.
        assert_eq!(h.resend(9, 100, t0 + ms(40), ms(20)), None);
        assert_eq!(h.resend(7, 102, t0 + ms(40), ms(20)), None);
        // At capacity the oldest goes; past the window nothing is resent.
        h.push(7, 102, b"d", t0 + ms(50));
        assert_eq!(h.resend(7, 100, t0 + ms(60), ms(20)), None);
        assert_eq!(h.resend(7, 102, t0 + ms(60), ms(20)), Some(b"d".to_vec()));
        assert_eq!(h.resend(7, 101, t0 + ms(1011), ms(20)), None);
    }

    #[test]
    fn a_pipe_resends_at_most_its_share_of_what_it_sends_beyond_a_burst() {
        let t0 = Instant::now();
        let mut h = PipeHistory::new(100, Duration::from_secs(1), 0.5, 2.0);
        for seq in 0..10 {
            h.push(1, seq, b"x", t0);
        }
        let resent = (0..10)
            .filter(|&seq| h.resend(1, seq, t0, Duration::ZERO).is_some())
            .count();
        assert_eq!(resent, 2, "the burst");
        // Two packets sent earn one resend.
        h.push(1, 10, b"x", t0);
        h.push(1, 11, b"x", t0);
        assert!(h.resend(1, 5, t0, Duration::ZERO).is_some());
        assert!(h.resend(1, 6, t0, Duration::ZERO).is_none());
    }

    #[test]
    fn resends_are_limited_to_a_share_of_what_is_sent_beyond_a_burst() {
        let t0 = Instant::now();
        let mut h = History::new(100, Duration::from_secs(1), 0.25, 2.0);
        for seq in 0..8 {
            h.push(sent(seq, t0));
        }
        // The burst: two resends, then none until four more packets were sent.
        assert!(h.take_for_resend(1, t0, Duration::ZERO).is_some());
        assert!(h.take_for_resend(2, t0, Duration::ZERO).is_some());
        assert!(h.take_for_resend(3, t0, Duration::ZERO).is_none());
        for seq in 8..11 {
            h.push(sent(seq, t0));
        }
        assert!(h.take_for_resend(3, t0, Duration::ZERO).is_none());
        h.push(sent(11, t0));
        assert!(h.take_for_resend(3, t0, Duration::ZERO).is_some());
        assert!(h.take_for_resend(4, t0, Duration::ZERO).is_none());
    }

    #[test]
    fn the_history_keeps_at_most_its_capacity_and_nothing_older_than_its_window() {
        let t0 = Instant::now();
        let window = Duration::from_secs(1);
        let mut h = History::new(4, window, 1.0, 100.0);
        for seq in 0..10 {
            h.push(sent(seq, t0));
        }
        assert_eq!(h.len(), 4);
        assert!(h.take_for_resend(5, t0, Duration::ZERO).is_none());
        assert!(h.take_for_resend(6, t0, Duration::ZERO).is_some());
        // An out-of-order packet (older than the newest) is not kept.
        h.push(sent(7, t0));
        assert_eq!(h.len(), 4);
        // A packet sent after the window pushes out everything older than the window.
        h.push(sent(10, t0 + window + Duration::from_millis(1)));
        assert_eq!(h.len(), 1);
        // …and a kept packet is not resent once the window has passed.
        assert!(
            h.take_for_resend(10, t0 + 3 * window, Duration::ZERO)
                .is_none()
        );
    }

    #[test]
    fn a_resend_on_rtx_carries_the_original_number_before_the_payload() {
        let egress = OwnEgress {
            mid: Some((1, b"3".to_vec())),
            clock_rate: 90_000,
            ..Default::default()
        };
        let mut packet = sent(0x1_0005, Instant::now());
        packet.payload = Arc::from(&crate::payload::tests::vp8_packet(true, 300, 4, 0, false)[..]);
        packet.picture_id = Some(77);
        packet.tl0_pic_idx = Some(9);
        let media = egress.write(&packet, 0x1111, None, 10);
        let rtx = egress.write(&packet, 0x1111, Some((0x2222, 97, 0x2_0003)), 10);
        // Media: version 2 with an extension, PT 96, seq 5, ROC 1, SSRC 0x1111, mid "3".
        assert_eq!(&media.bytes[..2], &[0x90, 96]);
        assert_eq!(&media.bytes[2..4], &5u16.to_be_bytes());
        assert_eq!(&media.bytes[8..12], &0x1111u32.to_be_bytes());
        assert_eq!(&media.bytes[12..18], &[0xbe, 0xde, 0, 1, 0x10, b'3']);
        assert_eq!((media.header_len, media.seq, media.roc), (20, 5, 1));
        let payload = &media.bytes[media.header_len..];
        let info = crate::payload::inspect(str0m::format::Codec::Vp8, payload);
        assert_eq!(
            info.picture_id,
            Some((77, true)),
            "the forwarder's picture id"
        );
        assert_eq!(info.tl0_pic_idx, Some(9));
        assert!(
            media.bytes.capacity() >= media.bytes.len() + 10,
            "room for the tag"
        );
        // RTX: its PT, SSRC and number; the media timestamp; OSN 5, then the same payload.
        assert_eq!(&rtx.bytes[..2], &[0x90, 97]);
        assert_eq!(&rtx.bytes[2..4], &3u16.to_be_bytes());
        assert_eq!(&rtx.bytes[4..8], &media.bytes[4..8]);
        assert_eq!(&rtx.bytes[8..12], &0x2222u32.to_be_bytes());
        assert_eq!((rtx.ssrc, rtx.seq, rtx.roc), (0x2222, 3, 2));
        assert_eq!(
            &rtx.bytes[rtx.header_len..rtx.header_len + 2],
            &5u16.to_be_bytes()
        );
        assert_eq!(&rtx.bytes[rtx.header_len + 2..], payload);
    }
}
