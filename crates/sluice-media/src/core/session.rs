//! str0m sessions: demultiplexing datagrams to transports, running their timeouts, draining
//! their output into the outbox, and handling their events; the periodic tick.

use std::time::Instant;

use super::Core;
use super::due_now;
use super::object::Object;
use super::producer::score_from_loss;
use super::webrtc_transport::DataOwner;
use crate::demux::{DatagramKind, Remote, is_client_hello};
use crate::events::{CloseReason, DtlsState, MediaEvent, SctpState};
use crate::message::DataMessage;
use crate::rtcp::Feedback;
use crate::types::{BandwidthEstimation, Key};
use std::panic::{AssertUnwindSafe, catch_unwind};
use str0m::bwe::BweKind;
use str0m::media::KeyframeRequestKind;
use str0m::net::Receive;
use str0m::{Event, Input, Output, Reason};

impl Core {
    pub(super) fn on_datagram(&mut self, data: &[u8], from: Remote, now: Instant) {
        self.usage.datagrams_received += 1;
        self.usage.bytes_received += data.len() as u64;
        let kind = DatagramKind::of(data);
        // A binding request goes to the transport its USERNAME names, wherever it comes from (a
        // TCP port or a NAT mapping reused by another client must not route it to the old
        // owner); everything else by its validated source.
        let by_ufrag = (kind == DatagramKind::Stun)
            .then(|| str0m::ice::StunMessage::parse(data).ok())
            .flatten()
            .filter(|m| m.is_binding_request())
            .and_then(|m| m.split_username().map(|(local, _)| local.to_owned()))
            .and_then(|local| self.demux.by_ufrag(&local));
        let key = by_ufrag.or_else(|| self.demux.by_addr(&from));
        let Some(key) = key else {
            self.usage.dropped_unknown_source += 1;
            return;
        };
        let Some(t) = self.transports.get_mut(&key) else {
            self.usage.dropped_unknown_source += 1;
            return;
        };
        if kind == DatagramKind::Stun
            && let Ok(m) = str0m::ice::StunMessage::parse(data)
            && m.is_binding_request()
            && let Some((local, remote)) = m.split_username()
        {
            if local != t.local_ufrag {
                // An old ufrag after an ICE restart, or a stray request.
                tracing::debug!(transport = %t.id, %from, ufrag = local, "binding request for another ufrag");
                self.usage.dropped_unknown_source += 1;
                return;
            }
            t.learn_remote_ufrag(remote);
            if m.use_candidate() {
                t.nominating = Some(from);
            }
        }
        if kind == DatagramKind::Dtls && t.awaiting_client_hello {
            if !is_client_hello(data) {
                self.usage.dropped_malformed += 1;
                return;
            }
            t.awaiting_client_hello = false;
        }
        let local = t.local_addr_for(&from);
        let Ok(receive) = Receive::new(from.str0m_protocol(), from.addr, local, data) else {
            self.usage.dropped_malformed += 1;
            return;
        };
        t.bytes_received += data.len() as u64;
        t.packets_received += 1;
        if let Some(capture) = t.peer_certificate.as_mut()
            && kind == DatagramKind::Dtls
        {
            capture.on_datagram(data);
        }
        // The client's RTCP about the streams sluice writes itself: str0m ignores what it did
        // not send, so a copy is decrypted and read here (str0m reads the original).
        let feedback = match &t.srtp_rx {
            Some(rx)
                if kind == DatagramKind::RtpOrRtcp
                    && crate::rtcp::is_rtcp(data)
                    && !t.consumers.is_empty() =>
            {
                let mut plain = data.to_vec();
                rx.unprotect_rtcp(&mut plain)
                    .map(|len| {
                        crate::rtcp::read(&plain[..len], self.settings.max_nacked_per_datagram)
                    })
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            t.rtc.handle_input(Input::Receive(now, receive))
        }));
        match result {
            Ok(Ok(())) => self.drain(key, now),
            Ok(Err(e)) => {
                tracing::debug!(transport = %t.id, error = %e, "input refused");
                self.usage.dropped_malformed += 1;
                if matches!(e, str0m::RtcError::Dtls(_)) {
                    t.dtls_state = DtlsState::Failed;
                    t.emit(MediaEvent::DtlsStateChange {
                        transport_id: t.id.clone(),
                        state: DtlsState::Failed,
                    });
                    self.close_object(Object::WebRtcTransport(key), CloseReason::DtlsFailed);
                } else {
                    self.drain(key, now);
                }
            }
            Err(_) => {
                self.usage.session_errors += 1;
                tracing::error!(transport = %t.id, "session panicked; closing it");
                self.close_object(Object::WebRtcTransport(key), CloseReason::SessionError);
            }
        }
        if !feedback.is_empty() {
            self.on_own_feedback(key, feedback, now);
        }
    }

    /// Feedback about consumers of transport `key` that have their own egress: reports give
    /// their score, keyframe requests reach their producer, NACKed packets are resent.
    fn on_own_feedback(&mut self, key: Key, feedback: Vec<Feedback>, now: Instant) {
        for f in feedback {
            let Some(t) = self.transports.get(&key) else {
                return;
            };
            let ssrc = f.ssrc();
            let Some(ckey) = t.consumers.iter().copied().find(|k| {
                self.consumers
                    .get(k)
                    .is_some_and(|c| c.own_egress.is_some() && c.ssrc == ssrc)
            }) else {
                continue;
            };
            let Some(c) = self.consumers.get_mut(&ckey) else {
                continue;
            };
            match f {
                Feedback::Report { fraction_lost, .. } => {
                    c.fraction_lost = fraction_lost;
                    c.score = score_from_loss(f32::from(fraction_lost) / 256.0);
                    self.report_score(ckey);
                }
                Feedback::Pli { .. } | Feedback::Fir { .. } => {
                    if matches!(f, Feedback::Pli { .. }) {
                        c.plis += 1;
                    } else {
                        c.firs += 1;
                    }
                    c.forwarder.request_keyframe(now);
                    self.serve_consumer_keyframe_request(ckey, now);
                }
                Feedback::Nack { lost, .. } => {
                    c.nacks += 1;
                    let interval = self.settings.resend_interval;
                    let Core {
                        transports,
                        outbox,
                        usage,
                        ..
                    } = self;
                    let Some(t) = transports.get_mut(&key) else {
                        return;
                    };
                    let (Some(srtp), Some(destination)) = (&t.srtp, t.selected_remote) else {
                        continue;
                    };
                    let mut resent = Vec::new();
                    for seq in lost {
                        let Some(mut own) = c.resend(seq, srtp.overhead(), interval, now) else {
                            continue;
                        };
                        if own.protect(srtp).is_ok() {
                            resent.push(own.bytes);
                        }
                    }
                    for bytes in resent {
                        super::send_on(outbox, usage, t, destination, bytes);
                    }
                }
            }
        }
    }

    pub(super) fn on_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, key)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.remove(&(deadline, key));
            self.exact_timers.remove(&(deadline, key));
            let Some(t) = self.transports.get_mut(&key) else {
                continue;
            };
            t.next_timeout = None;
            self.usage.timeouts += 1;
            let result = catch_unwind(AssertUnwindSafe(|| t.rtc.handle_input(Input::Timeout(now))));
            match result {
                Ok(_) => self.drain(key, now),
                Err(_) => {
                    self.usage.session_errors += 1;
                    self.close_object(Object::WebRtcTransport(key), CloseReason::SessionError);
                }
            }
        }
    }

    pub(super) fn on_tick(&mut self, now: Instant) {
        for c in self.consumers.values_mut() {
            c.rate.sample(now, c.bytes);
        }
        let keys: Vec<Key> = self.consumers.keys().copied().collect();
        for key in keys {
            self.update_layers(key, now);
            self.serve_consumer_keyframe_request(key, now);
        }
        let transports: Vec<Key> = self.transports.keys().copied().collect();
        for key in transports {
            self.update_bwe_targets(key, now);
        }
        self.observe_speakers(now);
        self.send_sender_reports(now);
        let backed_up: Vec<Key> = self
            .data_consumers
            .iter()
            .filter(|(_, c)| !c.queue.is_empty())
            .map(|(k, _)| *k)
            .collect();
        for key in backed_up {
            self.flush_data_consumer(key);
        }
    }

    /// RTCP sender reports of the consumers with their own egress that are due (str0m sends
    /// those of the others), plain transports' consumers included: a recorder syncs a peer's
    /// audio with its video from them.
    pub(super) fn send_sender_reports(&mut self, now: Instant) {
        let unix_micros = self.unix_micros(now);
        let interval = self.settings.own_sender_report_interval;
        let Core {
            consumers,
            transports,
            plains,
            outbox,
            usage,
            ..
        } = self;
        for c in consumers.values_mut() {
            let due = match &c.own_egress {
                Some(egress) => egress.next_report.is_none_or(|at| at <= now),
                None => false,
            };
            if !due {
                continue;
            }
            if let Some(pt) = plains.get_mut(&c.transport) {
                let Some(remote) = pt.remote else {
                    continue;
                };
                let reserve = pt.srtp.as_ref().map_or(0, |s| s.sender.rtcp_overhead());
                let Some(mut report) = c.sender_report(now, unix_micros, reserve) else {
                    continue;
                };
                let Some(egress) = c.own_egress.as_mut() else {
                    continue;
                };
                egress.next_report = Some(now + interval);
                if let Some(srtp) = &pt.srtp {
                    let index = egress.srtcp_index;
                    egress.srtcp_index = (index + 1) & 0x7fff_ffff;
                    if srtp.sender.protect_rtcp(&mut report, index).is_err() {
                        continue;
                    }
                }
                // RTCP goes where RTP goes with `rtcp_mux`, else to the next port, from the
                // transport's RTCP socket (RFC 3550 §11).
                let (source, destination) = match pt.rtcp_local {
                    None => (pt.local, remote),
                    Some(rtcp) => (
                        rtcp,
                        std::net::SocketAddr::new(remote.ip(), remote.port().saturating_add(1)),
                    ),
                };
                usage.datagrams_sent += 1;
                usage.bytes_sent += report.len() as u64;
                pt.bytes_sent += report.len() as u64;
                pt.packets_sent += 1;
                outbox.push_back(super::Transmit {
                    destination: crate::demux::Remote::udp(destination),
                    source: Some(source),
                    contents: report,
                });
                continue;
            }
            let Some(t) = transports.get_mut(&c.transport) else {
                continue;
            };
            let (Some(srtp), Some(destination)) = (&t.srtp, t.selected_remote) else {
                continue;
            };
            let Some(mut report) = c.sender_report(now, unix_micros, srtp.rtcp_overhead()) else {
                continue;
            };
            let Some(egress) = c.own_egress.as_mut() else {
                continue;
            };
            egress.next_report = Some(now + interval);
            let index = egress.srtcp_index;
            egress.srtcp_index = (index + 1) & 0x7fff_ffff;
            if srtp.protect_rtcp(&mut report, index).is_err() {
                continue;
            }
            super::send_on(outbox, usage, t, destination, report);
        }
    }

    /// Reports each router's loudest audio producer when it changes.
    pub(super) fn observe_speakers(&mut self, now: Instant) {
        let Core {
            routers, producers, ..
        } = self;
        for (router_id, r) in routers.iter_mut() {
            let Some(change) = r.speaker.interval(now) else {
                continue;
            };
            let Some(events) = &r.events else {
                continue;
            };
            let event = match change {
                Some((pkey, volume)) => match producers.get(&pkey) {
                    Some(p) => MediaEvent::ActiveSpeaker {
                        router_id: router_id.clone(),
                        producer_id: Some(p.id.clone()),
                        volume: Some(volume),
                    },
                    None => continue,
                },
                None => MediaEvent::ActiveSpeaker {
                    router_id: router_id.clone(),
                    producer_id: None,
                    volume: None,
                },
            };
            let _ = events.send(event);
        }
    }

    /// Records what this transport's consumers would send at their preferred layers (reported
    /// with each estimate, as mediasoup's `desiredBitrate`), and with TWCC tells str0m's
    /// estimator the rate to sustain (what starts each consumer's next layer) and that desired
    /// bitrate plus headroom (the capacity to probe for), as str0m advises an SFU to.
    pub(super) fn update_bwe_targets(&mut self, tkey: Key, now: Instant) {
        let Some(t) = self.transports.get(&tkey) else {
            return;
        };
        if t.bandwidth_estimation == BandwidthEstimation::Off || t.consumers.is_empty() {
            return;
        }
        // `minimum`: what the consumers send now, with each one below its preferred layer counted
        // at what its next live layer needs (its bitrate plus the upgrade headroom). str0m pads
        // up to that minimum (capped by its estimate), so the estimate can grow while media
        // alone would not fill the link: without it, a consumer that fell back to a low layer
        // sent too little for the estimate to ever reach the next one (str0m probes only when
        // the desired bitrate rises).
        let (mut minimum, mut desired) = (0u64, 0u64);
        for ckey in &t.consumers {
            let Some(c) = self.consumers.get(ckey) else {
                continue;
            };
            // Consumers sluice writes itself are not str0m's to estimate for (nor to pad for).
            if !c.forwarder.is_active() || c.own_egress.is_some() {
                continue;
            }
            let Some(p) = self.producers.get(&c.producer) else {
                continue;
            };
            let statuses = p.layer_statuses(now);
            let (target, _) = c.forwarder.target_layers();
            let preferred = c
                .preferred_layers
                .map_or(statuses.len().saturating_sub(1), |l| {
                    usize::from(l.spatial_layer)
                });
            let live_best = statuses
                .iter()
                .enumerate()
                .filter(|(i, s)| s.active && *i <= preferred)
                .map(|(_, s)| s.bitrate)
                .next_back()
                .unwrap_or(0);
            let current = statuses.get(target).map_or(0, |s| s.bitrate);
            let next = statuses
                .iter()
                .enumerate()
                .find(|(i, s)| s.active && *i > target && *i <= preferred)
                .map(|(_, s)| (s.bitrate as f64 * self.settings.upgrade_headroom) as u64);
            minimum += next.map_or(current, |n| n.max(current));
            desired += live_best;
        }
        // Ask for a little more than needed, so the estimate clears the upgrade headroom.
        let effective =
            (desired as f64 * self.settings.upgrade_headroom * self.settings.probe_margin) as u64;
        let Some(t) = self.transports.get_mut(&tkey) else {
            return;
        };
        t.desired_bitrate = desired;
        t.effective_desired_bitrate = effective;
        if desired == 0 || t.bandwidth_estimation != BandwidthEstimation::Twcc {
            return;
        }
        t.rtc.bwe().set_bitrate(
            str0m::bwe::Bitrate::bps(minimum.min(effective)),
            str0m::bwe::Bitrate::bps(effective),
        );
        self.dirty.push(tkey);
    }

    /// Polls the next dirty transport, one per call, so that the driver sends a transport's
    /// datagrams before the next one is polled (the first subscribers of a fan-out do not wait
    /// for the last to be polled). A round polls each transport dirty at its start once; a
    /// transport dirtied again by another's output is polled in the next round, up to
    /// `max_flush_rounds` rounds per drain. False when there is nothing left to poll.
    pub(super) fn drain_next(&mut self, now: Instant) -> bool {
        if self.flushing.is_empty() {
            if self.dirty.is_empty() || self.flush_rounds >= self.settings.max_flush_rounds {
                self.flush_rounds = 0;
                return false;
            }
            self.flush_rounds += 1;
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable_by(|a, b| b.cmp(a));
            dirty.dedup();
            self.flushing = dirty;
        }
        if let Some(key) = self.flushing.pop() {
            self.drain(key, now);
        }
        true
    }

    /// Polls one transport's output: sends its datagrams, handles its events, arms its timer.
    pub(super) fn drain(&mut self, key: Key, now: Instant) {
        let mut events = Vec::new();
        let mut requeue = false;
        let result = {
            let Some(t) = self.transports.get_mut(&key) else {
                return;
            };
            let usage = &mut self.usage;
            let demux = &mut self.demux;
            let timers = &mut self.timers;
            let exact_timers = &mut self.exact_timers;
            let outbox = &mut self.outbox;
            let immediate_window = self.settings.immediate_window;
            let max_immediate = self.settings.max_immediate_timeouts;
            let idle_estimator_interval = self.settings.idle_estimator_interval;
            catch_unwind(AssertUnwindSafe(|| {
                let mut immediate = 0;
                loop {
                    match t.rtc.poll_output() {
                        Ok(Output::Transmit(tx)) => {
                            let destination = Remote::from_str0m(tx.proto, tx.destination);
                            // A binding success response: str0m checked the request's integrity,
                            // so the address is now a validated tuple of this transport.
                            if tx.contents.len() >= 2
                                && tx.contents[0] == 0x01
                                && tx.contents[1] == 0x01
                            {
                                demux.validate_addr(destination, key);
                                let nominated = t.selected_remote.is_none()
                                    || t.nominating == Some(destination);
                                if nominated && t.selected_remote != Some(destination) {
                                    tracing::debug!(transport = %t.id, %destination, "selected tuple");
                                    t.selected_remote = Some(destination);
                                    t.emit(MediaEvent::IceSelectedTupleChange {
                                        transport_id: t.id.clone(),
                                        remote: destination.addr,
                                        protocol: destination.protocol,
                                    });
                                }
                            }
                            super::send_on(outbox, usage, t, destination, tx.contents.into());
                        }
                        // The peer is checked before anything after the handshake is polled,
                        // so nothing is sent to a peer that fails.
                        Ok(Output::Event(Event::Connected)) => {
                            if let Err(why) = t.verify_peer() {
                                break Ok(Some(why));
                            }
                            events.push(Event::Connected);
                        }
                        Ok(Output::Event(e)) => events.push(e),
                        Ok(Output::Timeout(deadline)) => {
                            // Written media leaves str0m only on a timeout: give it at once
                            // rather than through the timer (no wake-up, no timer latency).
                            // With TWCC, str0m's pacer asks for one 1 µs after each packet it
                            // releases; the timer (1 ms resolution) would hold every further
                            // packet of a frame ≈1.1 ms, so a deadline that close is run now,
                            // at itself.
                            let due = due_now(deadline, now, immediate_window);
                            if let Some(at) = due
                                && immediate < max_immediate
                            {
                                immediate += 1;
                                usage.timeouts += 1;
                                if let Err(e) = t.rtc.handle_input(Input::Timeout(at)) {
                                    break Err(e);
                                }
                                continue;
                            }
                            let reason = t.rtc.last_timeout_reason();
                            let deadline =
                                if reason == Reason::BweDelayControl && nothing_to_estimate(t) {
                                    deadline.max(now + idle_estimator_interval)
                                } else {
                                    deadline
                                };
                            let exact = needs_exact_timer(t, reason);
                            if t.next_timeout != Some(deadline) || t.exact_timeout != exact {
                                if let Some(old) = t.next_timeout.take() {
                                    timers.remove(&(old, key));
                                    exact_timers.remove(&(old, key));
                                }
                                t.next_timeout = Some(deadline);
                                t.exact_timeout = exact;
                                timers.insert((deadline, key));
                                if exact {
                                    exact_timers.insert((deadline, key));
                                }
                            }
                            // Still due after its share of immediate timeouts (str0m's pacer
                            // wants one around every packet with TWCC, so a keyframe burst
                            // needs many): drained again in this flush after the others, not
                            // a timer tick (≥ 1 ms) later.
                            requeue = due.is_some();
                            break Ok(None);
                        }
                        Err(e) => break Err(e),
                    }
                }
            }))
        };
        match result {
            Ok(Ok(None)) => {
                if requeue {
                    self.dirty.push(key);
                }
            }
            Ok(Ok(Some(why))) => {
                if let Some(t) = self.transports.get_mut(&key) {
                    tracing::warn!(transport = %t.id, reason = %why, "DTLS peer refused");
                    t.dtls_state = DtlsState::Failed;
                    t.emit(MediaEvent::DtlsStateChange {
                        transport_id: t.id.clone(),
                        state: DtlsState::Failed,
                    });
                }
                self.close_object(Object::WebRtcTransport(key), CloseReason::DtlsFailed);
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "transport output error; closing it");
                self.close_object(Object::WebRtcTransport(key), CloseReason::SessionError);
                return;
            }
            Err(_) => {
                self.usage.session_errors += 1;
                self.close_object(Object::WebRtcTransport(key), CloseReason::SessionError);
                return;
            }
        }
        for event in events {
            let mut close = None;
            self.guarded(key, |s| close = s.on_event(key, event, now));
            if let Some(reason) = close {
                self.close_object(Object::WebRtcTransport(key), reason);
            }
            if !self.transports.contains_key(&key) {
                return;
            }
        }
    }

    /// Handles one str0m event of transport `key`; `Some(reason)` closes the transport.
    pub(super) fn on_event(&mut self, key: Key, event: Event, now: Instant) -> Option<CloseReason> {
        match event {
            Event::RtpPacket(packet) => self.forward(key, packet, now),
            Event::IceConnectionStateChange(state) => {
                let t = self.transports.get_mut(&key)?;
                if let Some(state) = t.set_ice_state(state) {
                    t.emit(MediaEvent::IceStateChange {
                        transport_id: t.id.clone(),
                        state,
                    });
                }
            }
            Event::Connected => {
                let t = self.transports.get_mut(&key)?;
                t.dtls_state = DtlsState::Connected;
                // The handshake exported its keys just before (same poll): the consumers with
                // their own egress send from now on.
                let keys = t.keys.take();
                t.srtp_rx = keys
                    .as_ref()
                    .and_then(|k| crate::srtp::SrtpReceiver::new(k).ok());
                match keys.map(|k| crate::srtp::SrtpSender::new(&k)) {
                    Some(Ok(sender)) => t.srtp = Some(sender),
                    Some(Err(e)) => {
                        tracing::warn!(transport = %t.id, error = %e, "no SRTP for the own egress; its consumers send nothing");
                    }
                    None => {
                        tracing::warn!(transport = %t.id, "DTLS connected without exported keys; the own egress sends nothing")
                    }
                }
                t.emit(MediaEvent::DtlsStateChange {
                    transport_id: t.id.clone(),
                    state: DtlsState::Connected,
                });
            }
            Event::KeyframeRequest(req) => {
                let t = self.transports.get(&key)?;
                let ckey = *t.consumer_by_mid.get(&req.mid)?;
                if let Some(c) = self.consumers.get_mut(&ckey) {
                    match req.kind {
                        KeyframeRequestKind::Pli => c.plis += 1,
                        KeyframeRequestKind::Fir => c.firs += 1,
                    }
                    c.forwarder.request_keyframe(now);
                }
                self.serve_consumer_keyframe_request(ckey, now);
            }
            Event::StreamPaused(paused) => {
                let t = self.transports.get(&key)?;
                let (pkey, layer) = *t.rx_ssrc.get(&*paused.ssrc)?;
                let p = self.producers.get_mut(&pkey)?;
                if let Some(l) = p.layers.get_mut(layer) {
                    l.stalled = paused.paused;
                }
                let consumers = p.consumers.clone();
                for ckey in consumers {
                    self.update_layers(ckey, now);
                }
            }
            Event::EgressBitrateEstimate(kind) => {
                let t = self.transports.get_mut(&key)?;
                let bps = match (kind, t.bandwidth_estimation) {
                    (BweKind::Twcc { estimate, .. }, BandwidthEstimation::Twcc)
                    | (BweKind::Remb { estimate, .. }, BandwidthEstimation::Remb) => {
                        estimate.as_u64()
                    }
                    _ => return None,
                };
                tracing::trace!(transport = %t.id, bps, "egress bandwidth estimate");
                t.available_bitrate = Some(bps);
                t.emit(MediaEvent::BandwidthEstimate {
                    transport_id: t.id.clone(),
                    bitrate: bps,
                    desired_bitrate: t.desired_bitrate,
                    effective_desired_bitrate: t.effective_desired_bitrate,
                });
                let consumers = t.consumers.clone();
                for ckey in consumers {
                    self.update_layers(ckey, now);
                }
            }
            Event::MediaIngressStats(stats) => {
                let t = self.transports.get(&key)?;
                let pkey = *t.producer_by_mid.get(&stats.mid)?;
                let p = self.producers.get_mut(&pkey)?;
                let layer = p.layer_of(u32::MAX, stats.rid.as_deref()).unwrap_or(0);
                if let Some(l) = p.layers.get_mut(layer) {
                    let loss = stats.loss.unwrap_or(0.0);
                    l.fraction_lost = (loss.clamp(0.0, 1.0) * 255.0) as u8;
                    l.score = if l.is_active(now) {
                        score_from_loss(loss)
                    } else {
                        0
                    };
                    l.nacks = stats.nacks;
                }
                let scores: Vec<u8> = p.layers.iter().map(|l| l.score).collect();
                if scores != p.last_scores {
                    p.last_scores = scores;
                    let event = MediaEvent::ProducerScore {
                        transport_id: String::new(),
                        producer_id: p.id.clone(),
                        scores: p.scores(),
                    };
                    let consumers = p.consumers.clone();
                    self.emit_on(key, event);
                    for ckey in consumers {
                        self.report_score(ckey);
                    }
                }
            }
            Event::MediaEgressStats(stats) => {
                let t = self.transports.get(&key)?;
                let ckey = *t.consumer_by_mid.get(&stats.mid)?;
                let c = self.consumers.get_mut(&ckey)?;
                let loss = stats.loss.unwrap_or(0.0);
                c.fraction_lost = (loss.clamp(0.0, 1.0) * 255.0) as u8;
                c.score = score_from_loss(loss);
                c.nacks = stats.nacks;
                self.report_score(ckey);
            }
            Event::Closed => return Some(CloseReason::RemoteClosed),
            Event::ChannelOpen(cid, _) => {
                let t = self.transports.get_mut(&key)?;
                t.on_channel_open(cid);
                if t.sctp_state != Some(SctpState::Connected) {
                    t.sctp_state = Some(SctpState::Connected);
                    t.emit(MediaEvent::SctpStateChange {
                        transport_id: t.id.clone(),
                        state: SctpState::Connected,
                    });
                }
                if let Some(DataOwner::Consumer(dkey)) = t.data_by_channel.get(&cid).copied() {
                    if let Some(mut ch) = t.rtc.channel(cid) {
                        ch.set_buffered_amount_low_threshold(
                            self.settings.buffered_amount_low_threshold,
                        );
                    }
                    self.flush_data_consumer(dkey);
                }
            }
            Event::ChannelData(data) => {
                let t = self.transports.get(&key)?;
                match t.data_by_channel.get(&data.id).copied() {
                    Some(DataOwner::Producer(dkey)) => {
                        let message = DataMessage {
                            binary: data.binary,
                            data: data.data,
                        };
                        self.relay_data(dkey, message, now, None);
                    }
                    // Data on a consumer's stream, or on a stream no data producer declared.
                    _ => self.usage.dropped_data += 1,
                }
            }
            Event::ChannelBufferedAmountLow(cid) => {
                let t = self.transports.get(&key)?;
                if let Some(DataOwner::Consumer(dkey)) = t.data_by_channel.get(&cid).copied() {
                    self.flush_data_consumer(dkey);
                }
            }
            Event::ChannelClose(cid) => {
                let t = self.transports.get_mut(&key)?;
                if t.on_channel_closed(cid) {
                    return None;
                }
                match t.data_by_channel.get(&cid).copied() {
                    Some(DataOwner::Producer(dkey)) => {
                        self.close_object(Object::DataProducer(dkey), CloseReason::RemoteClosed)
                    }
                    Some(DataOwner::Consumer(dkey)) => {
                        self.close_object(Object::DataConsumer(dkey), CloseReason::RemoteClosed)
                    }
                    None => {}
                }
            }
            _ => {}
        }
        None
    }
}

/// Whether what transport `t` sends and receives gives str0m's estimator nothing to measure:
/// connected, no producers or data channels, and every consumer writing its own packets (str0m
/// only measures what it sends). See `MediaSettings::idle_estimator_interval`.
fn nothing_to_estimate(t: &super::webrtc_transport::TransportState) -> bool {
    t.dtls_state == DtlsState::Connected
        && t.producers.is_empty()
        && t.data_producers.is_empty()
        && t.data_consumers.is_empty()
        && t.str0m_egress_consumers == 0
}

/// Whether transport `t`'s next str0m deadline, of `reason`, must run on time. str0m's pacer
/// and probes time media. A transport with a str0m send stream may have paced media behind any
/// deadline, and one with producers NACKs behind any (str0m reports only the earliest deadline,
/// and a late NACK costs a loss its repair: str0m tries five times, RTT + 5 ms apart). The
/// rest, a receiving transport's reports, estimator, ICE, DTLS and SCTP timers, may wait
/// `MediaSettings::timer_slack` for a datagram's wake-up.
fn needs_exact_timer(t: &super::webrtc_transport::TransportState, reason: Reason) -> bool {
    t.str0m_egress_consumers > 0
        || !t.producers.is_empty()
        || matches!(
            reason,
            Reason::Pacer(_) | Reason::BweProbeControl | Reason::BweProbeEstimator
        )
}
