//! Producers and consumers in the core: creating them on a transport, pausing, keyframe
//! requests (rate-limited per producer stream) and a consumer's layers and score.

use std::time::{Duration, Instant};

use sluice_ortc::MediaKind;

use super::Core;
use super::consumer::{ConsumerState, History, OwnEgress, OwnRtx};
use super::object::Object;
use super::producer::ProducerState;
use super::webrtc_transport::{Egress, MediaLine, MediaOwner, Retransmission};
use crate::error::MediaError;
use crate::events::{CloseReason, ConsumerLayers, ConsumerScore, MediaEvent};
use crate::layers::{SampledRate, select_spatial_layer};
use crate::types::{
    BandwidthEstimation, ConsumerCreated, ConsumerOp, ConsumerOptions, Key, ProducerSpec,
    ProducerType,
};
use str0m::media::{KeyframeRequestKind, Mid};

impl Core {
    pub(super) fn produce(
        &mut self,
        transport_id: &str,
        spec: ProducerSpec,
        now: Instant,
    ) -> Result<(), MediaError> {
        let tkey = self
            .transport_key(transport_id)
            .ok_or_else(|| MediaError::UnknownTransport(transport_id.to_owned()))?;
        if self.producers.contains_id(&spec.id) {
            return Err(MediaError::DuplicateId(spec.id));
        }
        let t = self
            .transports
            .get_mut(&tkey)
            .ok_or_else(|| MediaError::UnknownTransport(transport_id.to_owned()))?;
        let mid = match spec.rtp_parameters.mid.clone() {
            Some(mid) => {
                if mid.is_empty()
                    || mid.len() > 16
                    || !mid.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    return Err(MediaError::InvalidRtpParameters(
                        format!("mid {mid:?}: up to 16 letters and digits").into(),
                    ));
                }
                if t.medias.iter().any(|m| m.mid == mid && m.active) {
                    return Err(MediaError::InvalidRtpParameters(
                        format!("mid {mid:?} is already in use on this transport").into(),
                    ));
                }
                mid
            }
            None => t.allocate_mid(),
        };
        // A client may reuse the mid of a closed producer: the m-line is recycled.
        let mut params = spec.rtp_parameters.clone();
        params.mid = Some(mid.clone());
        for e in &spec.rtp_parameters.encodings {
            let taken = |ssrc: u32| t.rx_ssrc.contains_key(&ssrc);
            if e.ssrc.is_some_and(taken) || e.rtx.is_some_and(|r| taken(r.ssrc)) {
                return Err(MediaError::InvalidRtpParameters(
                    "an SSRC of these encodings is already in use on this transport".into(),
                ));
            }
        }
        let line = MediaLine {
            mid: mid.clone(),
            kind: spec.kind,
            owner: MediaOwner::Producer(0),
            rtp_parameters: params,
            active: true,
        };
        let slot = match t.medias.iter().position(|m| m.mid == mid) {
            Some(i) => {
                t.medias[i] = line;
                i
            }
            None => {
                t.medias.push(line);
                t.medias.len() - 1
            }
        };
        if let Err(e) = t.apply_offer() {
            t.medias[slot].active = false;
            return Err(e);
        }
        if t.dtls_started
            && let Err(e) = crate::numbering::check_producer_numbering(
                t.rtc.codec_config(),
                &spec.rtp_parameters,
            )
        {
            t.medias[slot].active = false;
            return Err(MediaError::Numbering(e.0));
        }
        let key = self.key();
        // Re-borrow after allocating the key.
        let Some(t) = self.transports.get_mut(&tkey) else {
            return Err(MediaError::UnknownTransport(transport_id.to_owned()));
        };
        t.medias[slot].owner = MediaOwner::Producer(key);
        let producer = ProducerState::new(spec, tkey, t.router_id.clone(), mid.clone());
        if producer.kind == MediaKind::Audio {
            for l in &producer.layers {
                if let Some(ssrc) = l.ssrc
                    && let Some(s) = t.rtc.direct_api().stream_rx(&ssrc.into())
                {
                    s.suppress_nack(true);
                }
            }
        }
        for (i, l) in producer.layers.iter().enumerate() {
            if let Some(ssrc) = l.ssrc {
                t.rx_ssrc.insert(ssrc, (key, i));
            }
        }
        t.producer_by_mid.insert(Mid::from(mid.as_str()), key);
        t.producers.push(key);
        if let Some(r) = self.routers.get_mut(&t.router_id) {
            r.producers.insert(key);
        }
        self.producers.insert(key, producer);
        self.dirty.push(tkey);
        let _ = now;
        Ok(())
    }

    pub(super) fn pause_producer(
        &mut self,
        id: &str,
        paused: bool,
        now: Instant,
    ) -> Result<(), MediaError> {
        let key = self
            .producers
            .key_of(id)
            .ok_or_else(|| MediaError::UnknownProducer(id.to_owned()))?;
        let Some(p) = self.producers.get_mut(&key) else {
            return Err(MediaError::UnknownProducer(id.to_owned()));
        };
        if p.paused == paused {
            return Ok(());
        }
        p.paused = paused;
        let consumers = p.consumers.clone();
        for ckey in consumers {
            let Some(c) = self.consumers.get_mut(&ckey) else {
                continue;
            };
            c.forwarder.set_producer_paused(paused, now);
            let event = if paused {
                MediaEvent::ConsumerProducerPaused {
                    transport_id: String::new(),
                    consumer_id: c.id.clone(),
                }
            } else {
                MediaEvent::ConsumerProducerResumed {
                    transport_id: String::new(),
                    consumer_id: c.id.clone(),
                }
            };
            let tkey = c.transport;
            // Plain transports' consumers too: a pipe passes the pause on.
            self.emit_on_any(tkey, event);
        }
        if !paused {
            self.serve_keyframe_requests(key, now);
        }
        Ok(())
    }

    pub(super) fn consume(
        &mut self,
        transport_id: &str,
        id: String,
        options: ConsumerOptions,
        now: Instant,
    ) -> Result<ConsumerCreated, MediaError> {
        if options.pipe {
            return Err(MediaError::CannotConsume(
                "a pipe consumer needs a plain transport".into(),
            ));
        }
        let tkey = self
            .transport_key(transport_id)
            .ok_or_else(|| MediaError::UnknownTransport(transport_id.to_owned()))?;
        let pkey = self
            .producers
            .key_of(&options.producer_id)
            .ok_or_else(|| MediaError::UnknownProducer(options.producer_id.clone()))?;
        let key = self.key();
        let Some(producer) = self.producers.get(&pkey) else {
            return Err(MediaError::UnknownProducer(options.producer_id.clone()));
        };
        let Some(t) = self.transports.get_mut(&tkey) else {
            return Err(MediaError::UnknownTransport(transport_id.to_owned()));
        };
        producer.check_consumable(&t.router_id, &options.rtp_capabilities)?;
        // With REMB the device must not be offered transport-wide sequence numbers: a browser
        // that has them estimates on the send side and sends no REMB.
        let remb_caps;
        let caps = if t.bandwidth_estimation == BandwidthEstimation::Remb {
            let mut c = options.rtp_capabilities.clone();
            c.header_extensions
                .retain(|e| e.uri != sluice_ortc::supported::TRANSPORT_WIDE_CC_URI);
            remb_caps = c;
            &remb_caps
        } else {
            &options.rtp_capabilities
        };
        let ssrcs = &mut self.ssrcs;
        let mut params = sluice_ortc::get_consumer_rtp_parameters(
            &producer.consumable,
            caps,
            false,
            &mut || ssrcs.next_ssrc(),
        )
        .map_err(|e| MediaError::CannotConsume(e.into()))?;
        let mid = t.allocate_mid();
        params.mid = Some(mid.clone());
        let retransmission = Retransmission {
            window: self.settings.retransmission_window,
            packets: self.settings.retransmission_packets,
        };
        let own = match producer.kind {
            MediaKind::Audio => self.settings.own_audio_egress,
            // One encoding: no layer for the estimator to choose.
            MediaKind::Video => {
                self.settings.own_video_egress && producer.r#type == ProducerType::Simple
            }
        };
        let egress = if own { Egress::Own } else { Egress::Str0m };
        let declared =
            t.declare_consumer_media(&mid, producer.kind, &mut params, retransmission, egress)?;
        let own_egress = (egress == Egress::Own).then(|| {
            let mut own = OwnEgress::new(&params, &mid, producer.clock_rate);
            if producer.kind == MediaKind::Video {
                own.history = Some(History::new(
                    self.settings.retransmission_packets,
                    self.settings.retransmission_window,
                    self.settings.max_resend_ratio,
                    self.settings.resend_burst,
                ));
                own.rtx = declared.rtx.map(|ssrc| OwnRtx {
                    ssrc,
                    payload_types: declared.rtx_payload_types.clone(),
                    seq: u64::from(ssrc & 0x7fff),
                });
            }
            own
        });
        let pt_map = producer
            .mapping
            .codecs
            .iter()
            .filter_map(|m| {
                declared
                    .payload_types
                    .iter()
                    .find(|(router_pt, _)| *router_pt == m.mapped_payload_type)
                    .map(|(_, sent)| (m.payload_type, *sent))
            })
            .collect();
        let main = params
            .codecs
            .iter()
            .find(|c| !c.mime_type.to_ascii_lowercase().ends_with("/rtx"));
        let mime_type = main.map_or_else(String::new, |c| c.mime_type.clone());
        let forwarder = producer.new_forwarder(options.paused, now);
        let Some(t) = self.transports.get_mut(&tkey) else {
            return Err(MediaError::UnknownTransport(transport_id.to_owned()));
        };
        t.medias.push(MediaLine {
            mid: mid.clone(),
            kind: producer.kind,
            owner: MediaOwner::Consumer(key),
            rtp_parameters: params.clone(),
            active: true,
        });
        t.consumer_by_mid.insert(Mid::from(mid.as_str()), key);
        t.consumers.push(key);
        if egress == Egress::Str0m {
            t.str0m_egress_consumers += 1;
        }
        let producer_score = producer.score();
        let producer_scores: Vec<u8> = producer.layers.iter().map(|l| l.score).collect();
        let created = ConsumerCreated {
            kind: producer.kind,
            r#type: producer.r#type,
            rtp_parameters: params.clone(),
            producer_paused: producer.paused,
            score: ConsumerScore {
                score: 10,
                producer_score,
                producer_scores,
            },
        };
        let consumer = ConsumerState {
            id: id.clone(),
            producer: pkey,
            producer_id: options.producer_id.clone(),
            transport: tkey,
            kind: producer.kind,
            r#type: producer.r#type,
            mid,
            ssrc: declared.ssrc,
            rtx_ssrc: declared.rtx,
            mime_type,
            pt_map,
            forwarder,
            preferred_layers: options.preferred_layers,
            priority: options.priority.max(1),
            reported_layers: None,
            rate: SampledRate::new(Duration::from_secs(1), now),
            packets: 0,
            bytes: 0,
            score: 10,
            fraction_lost: 0,
            nacks: 0,
            plis: 0,
            firs: 0,
            last_score: None,
            own_egress,
            pipe_ssrcs: Vec::new(),
            pipe_history: None,
        };
        if let Some(p) = self.producers.get_mut(&pkey) {
            p.consumers.push(key);
        }
        self.consumers.insert(key, consumer);
        self.update_layers(key, now);
        self.serve_consumer_keyframe_request(key, now);
        self.update_demand(pkey);
        self.dirty.push(tkey);
        Ok(created)
    }

    pub(super) fn consumer_op(
        &mut self,
        id: &str,
        op: ConsumerOp,
        now: Instant,
    ) -> Result<(), MediaError> {
        let key = self
            .consumers
            .key_of(id)
            .ok_or_else(|| MediaError::UnknownConsumer(id.to_owned()))?;
        let Some(c) = self.consumers.get_mut(&key) else {
            return Err(MediaError::UnknownConsumer(id.to_owned()));
        };
        // Only a pause or a resume can change whether its producer is wanted.
        let demand = matches!(op, ConsumerOp::Pause | ConsumerOp::Resume).then_some(c.producer);
        match op {
            ConsumerOp::Pause => c.forwarder.set_paused(true, now),
            ConsumerOp::Resume => c.forwarder.set_paused(false, now),
            ConsumerOp::SetPreferredLayers(layers) => {
                c.preferred_layers = Some(layers);
                self.update_layers(key, now);
            }
            ConsumerOp::SetPriority(priority) => c.priority = priority.max(1),
            ConsumerOp::RequestKeyFrame => c.forwarder.request_keyframe(now),
            ConsumerOp::Close => {
                self.close_object(Object::Consumer(key), CloseReason::Closed);
                return Ok(());
            }
        }
        self.serve_consumer_keyframe_request(key, now);
        self.report_layers(key);
        if let Some(pkey) = demand {
            self.update_demand(pkey);
        }
        Ok(())
    }

    /// Records whether producer `pkey` has a consumer that is not paused, and reports a change
    /// (`ProducerDemandChange`). Its streams arriving on a plain transport (a pipe's) start
    /// their loss bookkeeping over: a pipe paused and resumed leaves a gap that is not loss.
    pub(super) fn update_demand(&mut self, pkey: Key) {
        let Some(p) = self.producers.get(&pkey) else {
            return;
        };
        let demanded = p.consumers.iter().any(|k| {
            self.consumers
                .get(k)
                .is_some_and(|c| !c.forwarder.is_paused())
        });
        if demanded == p.demanded {
            return;
        }
        let (tkey, producer_id) = (p.transport, p.id.clone());
        if let Some(p) = self.producers.get_mut(&pkey) {
            p.demanded = demanded;
        }
        if let Some(t) = self.plains.get_mut(&tkey) {
            for stream in t.rx_ssrc.values_mut().filter(|s| s.producer == pkey) {
                if let Some(nack) = stream.nack.as_mut() {
                    nack.restart();
                }
            }
        }
        self.emit_on_any(
            tkey,
            MediaEvent::ProducerDemandChange {
                transport_id: String::new(),
                producer_id,
                demanded,
            },
        );
    }

    /// Passes a consumer's pending keyframe request to its producer.
    pub(super) fn serve_consumer_keyframe_request(&mut self, ckey: Key, now: Instant) {
        let Some(c) = self.consumers.get_mut(&ckey) else {
            return;
        };
        if let Some(layer) = c.forwarder.take_keyframe_request() {
            let pkey = c.producer;
            self.request_producer_keyframe(pkey, layer, now);
        }
    }

    /// After a producer resumes, its consumers want keyframes.
    pub(super) fn serve_keyframe_requests(&mut self, pkey: Key, now: Instant) {
        let consumers = self
            .producers
            .get(&pkey)
            .map(|p| p.consumers.clone())
            .unwrap_or_default();
        for ckey in consumers {
            self.serve_consumer_keyframe_request(ckey, now);
        }
    }

    /// Sends a PLI to the producer's client for `layer`, rate-limited per stream.
    pub(super) fn request_producer_keyframe(&mut self, pkey: Key, layer: usize, now: Instant) {
        let Some(p) = self.producers.get_mut(&pkey) else {
            return;
        };
        if p.kind != MediaKind::Video {
            return;
        }
        let Some(ssrc) = p.allow_keyframe_request(layer, now) else {
            return;
        };
        if let Some(l) = p.layers.get_mut(layer) {
            l.plis += 1;
        }
        let tkey = p.transport;
        if self.plains.contains_key(&tkey) {
            self.request_plain_keyframe(tkey, ssrc);
            return;
        }
        let Some(t) = self.transports.get_mut(&tkey) else {
            return;
        };
        if let Some(stream) = t.rtc.direct_api().stream_rx(&ssrc.into()) {
            stream.request_keyframe(KeyframeRequestKind::Pli);
            self.dirty.push(tkey);
        }
    }

    /// Re-selects a simulcast consumer's layers from its producer's live layers, its preference
    /// and its share of the transport's bandwidth estimate.
    pub(super) fn update_layers(&mut self, ckey: Key, now: Instant) {
        let Some(c) = self.consumers.get(&ckey) else {
            return;
        };
        let Some(p) = self.producers.get(&c.producer) else {
            return;
        };
        if p.layers.len() < 2 {
            let temporal = c.preferred_layers.map_or(u8::MAX, |l| {
                l.temporal_layer.min(p.temporal_layers.saturating_sub(1))
            });
            let temporal = if p.temporal_layers > 1 {
                temporal
            } else {
                u8::MAX
            };
            if let Some(c) = self.consumers.get_mut(&ckey) {
                c.forwarder.set_target_layers(0, temporal, now);
            }
            return;
        }
        let statuses = p.layer_statuses(now);
        let preferred = c
            .preferred_layers
            .map_or(p.layers.len() - 1, |l| usize::from(l.spatial_layer));
        let share = self.bandwidth_share(ckey, now);
        let current = c.forwarder.current_layers().map(|(s, _)| s);
        let Some(spatial) = select_spatial_layer(&statuses, preferred, current, share) else {
            return;
        };
        let temporal = c
            .preferred_layers
            .map_or(p.temporal_layers.saturating_sub(1), |l| {
                l.temporal_layer.min(p.temporal_layers.saturating_sub(1))
            });
        if let Some(c) = self.consumers.get_mut(&ckey) {
            c.forwarder.set_target_layers(spatial, temporal, now);
        }
    }

    /// A video consumer's share of its transport's estimate, by priority.
    pub(super) fn bandwidth_share(&self, ckey: Key, now: Instant) -> Option<u64> {
        let c = self.consumers.get(&ckey)?;
        let t = self.transports.get(&c.transport)?;
        let available = t.available_bitrate?;
        let mut audio = 0u64;
        let mut weights = 0u64;
        for k in &t.consumers {
            let Some(o) = self.consumers.get(k) else {
                continue;
            };
            if !o.forwarder.is_active() {
                continue;
            }
            match o.kind {
                MediaKind::Audio => audio += o.bitrate(now),
                MediaKind::Video => weights += u64::from(o.priority),
            }
        }
        let weights = weights.max(u64::from(c.priority));
        Some(available.saturating_sub(audio) * u64::from(c.priority) / weights)
    }

    pub(super) fn report_layers(&mut self, ckey: Key) {
        let Some(c) = self.consumers.get_mut(&ckey) else {
            return;
        };
        if c.r#type == crate::producer::ProducerType::Simple {
            return;
        }
        let layers = c.current_layers();
        if layers == c.reported_layers {
            return;
        }
        c.reported_layers = layers;
        let event = MediaEvent::ConsumerLayersChange {
            transport_id: String::new(),
            consumer_id: c.id.clone(),
            layers: layers.map(|l| ConsumerLayers {
                spatial_layer: l.spatial_layer,
                temporal_layer: l.temporal_layer.min(15),
            }),
        };
        let tkey = c.transport;
        self.emit_on(tkey, event);
    }

    pub(super) fn report_score(&mut self, ckey: Key) {
        let Some(c) = self.consumers.get(&ckey) else {
            return;
        };
        let Some(p) = self.producers.get(&c.producer) else {
            return;
        };
        let score = ConsumerScore {
            score: c.score,
            producer_score: p.score(),
            producer_scores: p.layers.iter().map(|l| l.score).collect(),
        };
        if c.last_score.as_ref() == Some(&score) {
            return;
        }
        let event = MediaEvent::ConsumerScore {
            transport_id: String::new(),
            consumer_id: c.id.clone(),
            score: score.clone(),
        };
        let tkey = c.transport;
        if let Some(c) = self.consumers.get_mut(&ckey) {
            c.last_score = Some(score);
        }
        self.emit_on(tkey, event);
    }
}
