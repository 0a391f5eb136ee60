//! The per-packet fan-out: an RTP packet of a producer goes to each of its consumers, rewritten
//! by the consumer's forwarder, written into the consumer's transport (polled later, once per
//! batch).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use sluice_ortc::MediaKind;

use super::Core;
use super::object::Object;
use crate::events::CloseReason;
use crate::forwarder::{InPacket, Received};
use crate::payload;
use crate::types::{Key, ProducerType};
use str0m::rtp::{ExtensionValues, RtpPacket};

impl Core {
    /// A packet str0m received on WebRTC transport `key`: its producer (and layer) found by
    /// SSRC, or learnt from str0m's mid/rid mapping, then the fan-out.
    pub(super) fn forward(&mut self, key: Key, packet: RtpPacket, now: Instant) {
        let ssrc = *packet.header.ssrc;
        let Some(t) = self.transports.get_mut(&key) else {
            return;
        };
        let (pkey, layer) = match t.rx_ssrc.get(&ssrc) {
            Some(found) => *found,
            None => {
                // A stream str0m mapped by mid/rid (simulcast by rid): learn its SSRC.
                let Some((mid, rid)) = t
                    .rtc
                    .direct_api()
                    .stream_rx(&packet.header.ssrc)
                    .map(|s| (s.mid(), s.rid()))
                else {
                    return;
                };
                let Some(&pkey) = t.producer_by_mid.get(&mid) else {
                    // RTP before `produce` completed: dropped quietly.
                    return;
                };
                let Some(p) = self.producers.get_mut(&pkey) else {
                    return;
                };
                let rid = rid.map(|r| r.to_string());
                let Some(layer) = p.layer_of(ssrc, rid.as_deref()) else {
                    return;
                };
                if let Some(l) = p.layers.get_mut(layer)
                    && l.ssrc.is_none()
                {
                    l.ssrc = Some(ssrc);
                }
                t.rx_ssrc.insert(ssrc, (pkey, layer));
                (pkey, layer)
            }
        };
        self.fan_out(pkey, layer, Received::from(packet), now);
    }

    /// A packet of layer `layer` of producer `pkey` to each of its consumers.
    pub(super) fn fan_out(&mut self, pkey: Key, layer: usize, packet: Received, now: Instant) {
        let Some(p) = self.producers.get_mut(&pkey) else {
            return;
        };
        p.on_packet(layer, packet.payload.len(), now);
        if let Some(level) = packet.ext_vals.audio_level
            && !p.paused
            && let Some(r) = self.routers.get_mut(&p.router_id)
        {
            r.speaker.record(pkey, level);
        }
        if p.paused || p.consumers.is_empty() {
            return;
        }
        let info = payload::inspect(p.codec, &packet.payload);
        if info.keyframe_start
            && let Some(l) = p.layers.get_mut(layer)
        {
            l.last_keyframe_request = None;
        }
        let input = InPacket {
            layer,
            seq: packet.seq,
            timestamp: packet.rtp_timestamp,
            info,
        };
        let ext = &packet.ext_vals;
        let ext_vals = ExtensionValues {
            audio_level: ext.audio_level,
            voice_activity: ext.voice_activity,
            video_orientation: ext.video_orientation,
            ..Default::default()
        };
        let mut keyframe_layers: Vec<usize> = Vec::new();
        let mut broken: Vec<Key> = Vec::new();
        let nackable = p.kind == MediaKind::Video;
        let Core {
            consumers,
            transports,
            plains,
            dirty,
            outbox,
            usage,
            ..
        } = self;
        for ckey in &p.consumers {
            let Some(c) = consumers.get_mut(ckey) else {
                continue;
            };
            if let Some(pt) = plains.get_mut(&c.transport) {
                // Plain RTP from the transport's own port, once it has a remote.
                let Some(remote) = pt.remote else {
                    continue;
                };
                let reserve = pt.srtp.as_ref().map_or(0, |s| s.sender.overhead());
                let own = if c.pipe_ssrcs.is_empty() {
                    c.own_packet(&packet, &input, &ext_vals, reserve, now)
                } else {
                    c.pipe_packet(&packet, layer, reserve)
                };
                let Some(mut own) = own else {
                    continue;
                };
                if let Some(srtp) = &pt.srtp
                    && let Err(e) = own.protect(&srtp.sender)
                {
                    tracing::debug!(consumer = %c.id, error = %e, "plain SRTP packet not protected");
                    continue;
                }
                c.on_sent(packet.payload.len());
                if let Some(history) = c.pipe_history.as_mut() {
                    history.push(own.ssrc, own.seq, &own.bytes, now);
                }
                usage.datagrams_sent += 1;
                usage.bytes_sent += own.bytes.len() as u64;
                pt.bytes_sent += own.bytes.len() as u64;
                pt.packets_sent += 1;
                outbox.push_back(super::Transmit {
                    destination: crate::demux::Remote::udp(remote),
                    source: Some(pt.local),
                    contents: own.bytes,
                });
                continue;
            }
            if c.own_egress.is_some() {
                // Written and protected here, straight into the outbox: no str0m stream.
                let Some(ct) = transports.get_mut(&c.transport) else {
                    continue;
                };
                let (Some(srtp), Some(destination)) = (&ct.srtp, ct.selected_remote) else {
                    // Not connected yet: what the forwarder would send is dropped, as a
                    // stream that cannot send yet drops it.
                    continue;
                };
                let own = c.own_packet(&packet, &input, &ext_vals, srtp.overhead(), now);
                if let Some(l) = c.forwarder.take_keyframe_request() {
                    keyframe_layers.push(l);
                }
                let Some(mut own) = own else {
                    continue;
                };
                if let Err(e) = own.protect(srtp) {
                    tracing::debug!(consumer = %c.id, error = %e, "own egress packet not protected");
                    continue;
                }
                c.on_sent(packet.payload.len());
                super::send_on(outbox, usage, ct, destination, own.bytes);
                continue;
            }
            let write = c.rewrite(&packet, &input, &ext_vals, nackable, now);
            if let Some(l) = c.forwarder.take_keyframe_request() {
                keyframe_layers.push(l);
            }
            let Some(write) = write else {
                continue;
            };
            let Some(ct) = transports.get_mut(&c.transport) else {
                continue;
            };
            // Writing enters the consumer's session: a panic there closes that session (after
            // the loop), not the producer's.
            let written = catch_unwind(AssertUnwindSafe(|| {
                ct.rtc
                    .direct_api()
                    .stream_tx(&c.ssrc.into())
                    .map(|stream| stream.write_rtp(write))
                    .is_some()
            }));
            match written {
                Ok(true) => {
                    c.on_sent(packet.payload.len());
                    dirty.push(c.transport);
                }
                Ok(false) => {}
                Err(_) => broken.push(c.transport),
            }
        }
        // Only simulcast and SVC consumers have layers to report (a simple producer's consumers
        // are simple): no second look at each consumer for a voice packet.
        let reported: Vec<Key> = if p.r#type == ProducerType::Simple {
            Vec::new()
        } else {
            p.consumers
                .iter()
                .copied()
                .filter(|k| {
                    consumers
                        .get(k)
                        .is_some_and(|c| c.current_layers() != c.reported_layers)
                })
                .collect()
        };
        keyframe_layers.sort_unstable();
        keyframe_layers.dedup();
        for l in keyframe_layers {
            self.request_producer_keyframe(pkey, l, now);
        }
        for ckey in reported {
            self.report_layers(ckey);
        }
        for tkey in broken {
            self.usage.session_errors += 1;
            tracing::error!("a session panicked on forwarded media; closing it");
            self.close_object(Object::WebRtcTransport(tkey), CloseReason::SessionError);
        }
    }
}
