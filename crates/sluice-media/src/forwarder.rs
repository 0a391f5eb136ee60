//! `Forwarder`: a consumer's per-packet decision, sans IO.
//!
//! Given each packet of the producer (any simulcast layer), it decides whether the consumer sends
//! it and with which sequence number, timestamp and (VP8) picture id / TL0PICIDX, so that what the
//! consumer sends is one continuous, decodable stream across pauses, temporal-layer drops and
//! simulcast-layer switches:
//!
//! - nothing is sent while the consumer or its producer is paused;
//! - after a start, resume or layer switch, video waits for a keyframe of the wanted layer (and
//!   asks for one through [`Forwarder::take_keyframe_request`]) before sending anything;
//! - sequence numbers continue without gaps ([`SeqManager`]); timestamps continue by the wall
//!   time elapsed since the last packet sent; VP8 picture ids and TL0PICIDX continue by one.
//!
//! Time comes in as `now`; tests drive it with a virtual clock.

use crate::settings::DEFAULTS;
use std::sync::Arc;
use std::time::Instant;

use str0m::rtp::{ExtensionValues, RtpPacket};

use str0m::format::Codec;

use crate::payload::{PayloadInfo, detects_keyframes};
use crate::seq_manager::SeqManager;

/// What the fan-out needs of a received RTP packet: str0m's (WebRTC transports), or one a plain
/// transport read itself.
pub struct Received {
    pub payload_type: u8,
    /// Extended (no wrap-around).
    pub seq: u64,
    pub rtp_timestamp: u32,
    pub marker: bool,
    /// The header extensions' values (what the transport's negotiation let it read).
    pub ext_vals: ExtensionValues,
    pub payload: Arc<[u8]>,
    /// When it arrived.
    pub at: Instant,
}

impl From<RtpPacket> for Received {
    fn from(p: RtpPacket) -> Self {
        Received {
            payload_type: *p.header.payload_type,
            seq: *p.seq_no,
            rtp_timestamp: p.header.timestamp,
            marker: p.header.marker,
            ext_vals: p.header.ext_vals,
            payload: p.payload,
            at: p.timestamp,
        }
    }
}

/// One packet of the producer, as the forwarder sees it.
#[derive(Debug, Clone, Copy)]
pub struct InPacket {
    /// Simulcast layer (encoding index) it belongs to; 0 without simulcast.
    pub layer: usize,
    /// Extended sequence number.
    pub seq: u64,
    pub timestamp: u32,
    pub info: PayloadInfo,
}

/// What to send instead of the input's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutPacket {
    pub seq: u64,
    pub timestamp: u32,
    /// VP8 (picture id, TL0PICIDX) to patch in, where the input has them.
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
}

/// Why a packet was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    Paused,
    /// Not the layer being sent.
    OtherLayer,
    /// A temporal layer above the one being sent.
    TemporalLayer,
    WaitingForKeyframe,
    /// Older than the current sync point or too far behind.
    TooOld,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward(OutPacket),
    Drop(Drop),
}

#[derive(Debug, Clone)]
pub struct Forwarder {
    codec: Codec,
    clock_rate: u32,
    waits_for_keyframes: bool,
    paused: bool,
    producer_paused: bool,
    /// Layer being sent; `None` until the first (key)frame after a (re)start.
    current_spatial: Option<usize>,
    target_spatial: usize,
    current_temporal: u8,
    target_temporal: u8,
    seq: SeqManager,
    ts_offset: u32,
    /// Last (timestamp sent, when).
    last_ts: Option<(u32, Instant)>,
    pid_offset: u16,
    tl0_offset: u8,
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
    /// Last input picture id of a dropped temporal-layer frame (the offset moved once for it).
    last_dropped_pid: Option<u16>,
    keyframe_request: Option<usize>,
    last_keyframe_request: Option<Instant>,
}

impl Forwarder {
    /// A forwarder that starts paused (consumers are created paused), sending `initial_seq` first.
    pub fn new(codec: Codec, clock_rate: u32, is_video: bool, initial_seq: u64) -> Self {
        Forwarder {
            codec,
            clock_rate: clock_rate.max(1),
            waits_for_keyframes: is_video && detects_keyframes(codec),
            paused: true,
            producer_paused: false,
            current_spatial: None,
            target_spatial: 0,
            current_temporal: u8::MAX,
            target_temporal: u8::MAX,
            seq: SeqManager::new(initial_seq),
            ts_offset: 0,
            last_ts: None,
            pid_offset: 0,
            tl0_offset: 0,
            last_pid: None,
            last_tl0: None,
            last_dropped_pid: None,
            keyframe_request: None,
            last_keyframe_request: None,
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn is_producer_paused(&self) -> bool {
        self.producer_paused
    }

    /// Whether packets flow (neither side paused).
    pub fn is_active(&self) -> bool {
        !self.paused && !self.producer_paused
    }

    /// Pauses or resumes the consumer. A resume restarts at the next keyframe.
    pub fn set_paused(&mut self, paused: bool, now: Instant) {
        let was_active = self.is_active();
        self.paused = paused;
        self.restart_if_resumed(was_active, now);
    }

    /// Follows the producer's pause state.
    pub fn set_producer_paused(&mut self, paused: bool, now: Instant) {
        let was_active = self.is_active();
        self.producer_paused = paused;
        self.restart_if_resumed(was_active, now);
    }

    fn restart_if_resumed(&mut self, was_active: bool, now: Instant) {
        if !was_active && self.is_active() {
            self.current_spatial = None;
            self.want_keyframe(self.target_spatial, now);
        }
    }

    /// The layers to send; a spatial change takes effect at the target layer's next keyframe.
    pub fn set_target_layers(&mut self, spatial: usize, temporal: u8, now: Instant) {
        let changed = spatial != self.target_spatial;
        self.target_spatial = spatial;
        self.target_temporal = temporal;
        if self.current_temporal > temporal {
            self.current_temporal = temporal;
        }
        if changed && self.is_active() && self.current_spatial != Some(spatial) {
            self.want_keyframe(spatial, now);
        }
    }

    pub fn target_layers(&self) -> (usize, u8) {
        (self.target_spatial, self.target_temporal)
    }

    /// The layers being sent, `None` while nothing is (paused, or waiting for a keyframe).
    pub fn current_layers(&self) -> Option<(usize, u8)> {
        if !self.is_active() {
            return None;
        }
        self.current_spatial.map(|s| (s, self.current_temporal))
    }

    /// The layer whose producer stream should be asked for a keyframe, at most once per call.
    pub fn take_keyframe_request(&mut self) -> Option<usize> {
        self.keyframe_request.take()
    }

    /// Asks for a keyframe of the target layer (a PLI/FIR from the consumer's client).
    pub fn request_keyframe(&mut self, now: Instant) {
        if self.is_active() {
            let layer = self.current_spatial.unwrap_or(self.target_spatial);
            self.want_keyframe(layer, now);
        }
    }

    fn want_keyframe(&mut self, layer: usize, now: Instant) {
        if self.waits_for_keyframes {
            self.keyframe_request = Some(layer);
            self.last_keyframe_request = Some(now);
        }
    }

    /// Decides what to do with `p`.
    pub fn on_packet(&mut self, p: &InPacket, now: Instant) -> Verdict {
        if !self.is_active() {
            return Verdict::Drop(Drop::Paused);
        }
        let switching = self.current_spatial != Some(self.target_spatial);
        if switching {
            let can_start = !self.waits_for_keyframes || p.info.keyframe_start;
            let without_simulcast_wait =
                !self.waits_for_keyframes && self.current_spatial.is_none();
            if p.layer == self.target_spatial && (can_start || without_simulcast_wait) {
                self.switch_to(p, now);
            } else if Some(p.layer) != self.current_spatial {
                // Asked again while the target layer's keyframe does not come, whether the
                // consumer is starting or switching (a request may be lost or rate-limited).
                if p.layer == self.target_spatial
                    && self
                        .last_keyframe_request
                        .is_none_or(|t| now.saturating_duration_since(t) >= DEFAULTS.keyframe_retry)
                {
                    self.want_keyframe(self.target_spatial, now);
                }
                return Verdict::Drop(if self.current_spatial.is_none() {
                    Drop::WaitingForKeyframe
                } else {
                    Drop::OtherLayer
                });
            }
        }

        if Some(p.layer) != self.current_spatial {
            return Verdict::Drop(Drop::OtherLayer);
        }

        // Temporal layers.
        if let Some(tid) = p.info.temporal_id {
            if tid > self.current_temporal {
                if tid <= self.target_temporal && p.info.layer_sync {
                    self.current_temporal = tid;
                } else {
                    self.seq.drop_input(p.seq);
                    self.note_dropped_frame(p);
                    return Verdict::Drop(Drop::TemporalLayer);
                }
            }
        }

        let Some(seq) = self.seq.input(p.seq) else {
            return Verdict::Drop(Drop::TooOld);
        };
        let timestamp = p.timestamp.wrapping_add(self.ts_offset);
        if self
            .last_ts
            .is_none_or(|(last, _)| timestamp.wrapping_sub(last) < 0x8000_0000)
        {
            self.last_ts = Some((timestamp, now));
        }
        let (picture_id, tl0_pic_idx) = self.map_vp8(p);
        Verdict::Forward(OutPacket {
            seq,
            timestamp,
            picture_id,
            tl0_pic_idx,
        })
    }

    fn switch_to(&mut self, p: &InPacket, now: Instant) {
        self.current_spatial = Some(p.layer);
        // A keyframe is a sync point for every temporal layer.
        self.current_temporal = self.target_temporal;
        self.seq.sync(p.seq);
        // Timestamps continue by the time elapsed since the last packet sent.
        if let Some((last, at)) = self.last_ts {
            let elapsed = now.saturating_duration_since(at);
            let ticks = (elapsed.as_micros() * u128::from(self.clock_rate) / 1_000_000)
                .clamp(1, u128::from(u32::MAX / 2)) as u32;
            self.ts_offset = last.wrapping_add(ticks).wrapping_sub(p.timestamp);
        }
        if let Some((pid, long)) = p.info.picture_id
            && let Some(last) = self.last_pid
        {
            let mask = if long { 0x7fff } else { 0x7f };
            self.pid_offset = last.wrapping_add(1).wrapping_sub(pid) & mask;
        }
        if let (Some(tl0), Some(last)) = (p.info.tl0_pic_idx, self.last_tl0) {
            self.tl0_offset = last.wrapping_add(1).wrapping_sub(tl0);
        }
        self.last_dropped_pid = None;
        self.keyframe_request = None;
    }

    fn note_dropped_frame(&mut self, p: &InPacket) {
        if let Some((pid, long)) = p.info.picture_id
            && self.last_dropped_pid != Some(pid)
        {
            // One picture id fewer for every later frame.
            let mask = if long { 0x7fff } else { 0x7f };
            self.pid_offset = self.pid_offset.wrapping_sub(1) & mask;
            self.last_dropped_pid = Some(pid);
        }
    }

    fn map_vp8(&mut self, p: &InPacket) -> (Option<u16>, Option<u8>) {
        let pid = p.info.picture_id.map(|(pid, long)| {
            let mask = if long { 0x7fff } else { 0x7f };
            let out = pid.wrapping_add(self.pid_offset) & mask;
            self.last_pid = Some(out);
            out
        });
        let tl0 = p.info.tl0_pic_idx.map(|tl0| {
            let out = tl0.wrapping_add(self.tl0_offset);
            self.last_tl0 = Some(out);
            out
        });
        (pid, tl0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(layer: usize, seq: u64, ts: u32, key: bool, pid: u16, tid: u8) -> InPacket {
        InPacket {
            layer,
            seq,
            timestamp: ts,
            info: PayloadInfo {
                keyframe_start: key,
                temporal_id: Some(tid),
                layer_sync: key,
                picture_id: Some((pid, true)),
                tl0_pic_idx: Some(pid as u8),
            },
        }
    }

    fn out(v: Verdict) -> OutPacket {
        match v {
            Verdict::Forward(o) => o,
            Verdict::Drop(d) => panic!("dropped: {d:?}"),
        }
    }

    #[test]
    fn a_new_consumer_sends_nothing_until_resumed_then_starts_on_a_keyframe() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(Codec::Vp8, 90000, true, 100);
        assert_eq!(
            f.on_packet(&frame(0, 1, 0, true, 1, 0), t0),
            Verdict::Drop(Drop::Paused)
        );
        f.set_paused(false, t0);
        assert_eq!(f.take_keyframe_request(), Some(0));
        assert_eq!(
            f.on_packet(&frame(0, 2, 3000, false, 2, 0), t0),
            Verdict::Drop(Drop::WaitingForKeyframe)
        );
        let o = out(f.on_packet(&frame(0, 3, 6000, true, 3, 0), t0));
        assert_eq!(o.seq, 100);
        let o = out(f.on_packet(&frame(0, 4, 9000, false, 4, 0), t0));
        assert_eq!(o.seq, 101);
        assert_eq!(o.timestamp, 9000);
        assert_eq!(f.current_layers(), Some((0, u8::MAX)));
    }

    #[test]
    fn pause_and_resume_keep_sequence_and_timestamps_continuous() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(Codec::Vp8, 90000, true, 1);
        f.set_paused(false, t0);
        let a = out(f.on_packet(&frame(0, 10, 90000, true, 10, 0), t0));
        f.set_paused(true, t0);
        // Two seconds and many packets later the consumer resumes.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(
            f.on_packet(&frame(0, 50, 270000, false, 50, 0), t1),
            Verdict::Drop(Drop::Paused)
        );
        f.set_paused(false, t1);
        assert_eq!(f.take_keyframe_request(), Some(0));
        let b = out(f.on_packet(&frame(0, 60, 280000, true, 60, 0), t1));
        assert_eq!(b.seq, a.seq + 1);
        assert_eq!(b.timestamp.wrapping_sub(a.timestamp), 180000);
        assert_eq!(b.picture_id, Some(a.picture_id.unwrap() + 1));
        assert_eq!(b.tl0_pic_idx, Some(a.tl0_pic_idx.unwrap() + 1));
    }

    #[test]
    fn producer_pause_stops_the_consumer_and_its_resume_waits_for_a_keyframe() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(Codec::Vp8, 90000, true, 1);
        f.set_paused(false, t0);
        out(f.on_packet(&frame(0, 1, 0, true, 1, 0), t0));
        f.set_producer_paused(true, t0);
        assert!(!f.is_active());
        assert_eq!(f.current_layers(), None);
        f.set_producer_paused(false, t0);
        assert_eq!(f.take_keyframe_request(), Some(0));
        assert_eq!(
            f.on_packet(&frame(0, 2, 3000, false, 2, 0), t0),
            Verdict::Drop(Drop::WaitingForKeyframe)
        );
    }

    #[test]
    fn layer_switch_happens_at_the_target_layers_keyframe_and_stays_decodable() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(Codec::Vp8, 90000, true, 1);
        f.set_target_layers(0, 2, t0);
        f.set_paused(false, t0);
        f.take_keyframe_request();
        out(f.on_packet(&frame(0, 100, 1000, true, 500, 0), t0));
        out(f.on_packet(&frame(0, 101, 4000, false, 501, 0), t0));
        // Switch up to layer 2: its packets are dropped until its keyframe, layer 0 keeps going.
        f.set_target_layers(2, 2, t0);
        assert_eq!(f.take_keyframe_request(), Some(2));
        assert_eq!(
            f.on_packet(&frame(2, 9000, 777, false, 20, 0), t0),
            Verdict::Drop(Drop::OtherLayer)
        );
        let last = out(f.on_packet(&frame(0, 102, 7000, false, 502, 0), t0));
        let t1 = t0 + Duration::from_millis(33);
        let first = out(f.on_packet(&frame(2, 9001, 800, true, 21, 0), t1));
        assert_eq!(first.seq, last.seq + 1);
        assert_eq!(first.picture_id, Some(last.picture_id.unwrap() + 1));
        assert_eq!(first.timestamp.wrapping_sub(last.timestamp), 33 * 90);
        // Layer 0 is now dropped.
        assert_eq!(
            f.on_packet(&frame(0, 103, 10000, false, 503, 0), t1),
            Verdict::Drop(Drop::OtherLayer)
        );
        let next = out(f.on_packet(&frame(2, 9002, 3800, false, 22, 0), t1));
        assert_eq!(next.seq, first.seq + 1);
        assert_eq!(next.picture_id, Some(first.picture_id.unwrap() + 1));
        assert_eq!(f.current_layers(), Some((2, 2)));
    }

    #[test]
    fn higher_temporal_layers_are_dropped_without_gaps() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(Codec::Vp8, 90000, true, 1);
        f.set_target_layers(0, 0, t0);
        f.set_paused(false, t0);
        let a = out(f.on_packet(&frame(0, 1, 0, true, 1, 0), t0));
        assert_eq!(
            f.on_packet(&frame(0, 2, 3000, false, 2, 2), t0),
            Verdict::Drop(Drop::TemporalLayer)
        );
        assert_eq!(
            f.on_packet(&frame(0, 3, 6000, false, 3, 1), t0),
            Verdict::Drop(Drop::TemporalLayer)
        );
        let b = out(f.on_packet(&frame(0, 4, 9000, false, 4, 0), t0));
        assert_eq!(b.seq, a.seq + 1);
        assert_eq!(b.picture_id, Some(a.picture_id.unwrap() + 1));
    }

    #[test]
    fn temporal_layer_goes_up_only_at_a_layer_sync() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(Codec::Vp8, 90000, true, 1);
        f.set_target_layers(0, 0, t0);
        f.set_paused(false, t0);
        out(f.on_packet(&frame(0, 1, 0, true, 1, 0), t0));
        f.set_target_layers(0, 2, t0);
        assert_eq!(
            f.on_packet(&frame(0, 2, 3000, false, 2, 1), t0),
            Verdict::Drop(Drop::TemporalLayer)
        );
        let mut sync = frame(0, 3, 6000, false, 3, 1);
        sync.info.layer_sync = true;
        out(f.on_packet(&sync, t0));
        assert_eq!(f.current_layers(), Some((0, 1)));
    }

    #[test]
    fn audio_starts_immediately_after_resume() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(Codec::Opus, 48000, false, 7);
        f.set_paused(false, t0);
        assert_eq!(f.take_keyframe_request(), None);
        let p = InPacket {
            layer: 0,
            seq: 1000,
            timestamp: 960,
            info: PayloadInfo::default(),
        };
        assert_eq!(out(f.on_packet(&p, t0)).seq, 7);
    }

    #[test]
    fn a_switch_waiting_for_the_new_layers_keyframe_asks_again_after_the_retry_interval() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(Codec::Vp8, 90000, true, 1);
        f.set_paused(false, t0);
        f.set_target_layers(1, 0, t0);
        f.take_keyframe_request();
        out(f.on_packet(&frame(1, 1, 0, true, 1, 0), t0));
        assert_eq!(f.current_layers(), Some((1, 0)));
        f.set_target_layers(0, 0, t0);
        assert_eq!(f.take_keyframe_request(), Some(0));
        // Layer 0 without a keyframe: layer 1 goes on, and no new request before the interval…
        let t1 = t0 + Duration::from_millis(500);
        assert!(matches!(
            f.on_packet(&frame(0, 2, 3000, false, 1, 0), t1),
            Verdict::Drop(_)
        ));
        assert_eq!(f.take_keyframe_request(), None);
        // …then one, until the keyframe comes.
        let t2 = t0 + DEFAULTS.keyframe_retry;
        assert!(matches!(
            f.on_packet(&frame(0, 3, 6000, false, 2, 0), t2),
            Verdict::Drop(_)
        ));
        assert_eq!(f.take_keyframe_request(), Some(0));
        out(f.on_packet(&frame(0, 4, 9000, true, 3, 0), t2));
        assert_eq!(f.current_layers(), Some((0, 0)));
    }

    #[test]
    fn waiting_for_a_keyframe_asks_again_after_the_retry_interval() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(Codec::Vp8, 90000, true, 1);
        f.set_paused(false, t0);
        assert_eq!(f.take_keyframe_request(), Some(0));
        f.on_packet(
            &frame(0, 1, 0, false, 1, 0),
            t0 + Duration::from_millis(500),
        );
        assert_eq!(f.take_keyframe_request(), None);
        f.on_packet(&frame(0, 2, 0, false, 2, 0), t0 + DEFAULTS.keyframe_retry);
        assert_eq!(f.take_keyframe_request(), Some(0));
    }
}
