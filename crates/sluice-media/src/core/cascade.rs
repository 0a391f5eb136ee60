//! The close cascade (docs/closures.md): closing an object closes what depends on it, removes it
//! from every table and index, and reports it where it did not close by its own handle.

use super::Core;
use super::data_consumer::DataSink;
use super::object::Object;
use crate::demux::Remote;
use crate::events::{CloseReason, DtlsState, IceState, MediaEvent};
use crate::types::Key;
use std::panic::{AssertUnwindSafe, catch_unwind};
use str0m::Output;
use str0m::media::Mid;

impl Core {
    pub(super) fn emit_on(&self, tkey: Key, mut event: MediaEvent) {
        if let Some(t) = self.transports.get(&tkey) {
            set_transport_id(&mut event, &t.id);
            t.emit(event);
        }
    }

    pub(super) fn emit_on_any(&self, tkey: Key, mut event: MediaEvent) {
        if let Some(t) = self.transports.get(&tkey) {
            set_transport_id(&mut event, &t.id);
            t.emit(event);
        } else if let Some(d) = self.directs.get(&tkey) {
            set_transport_id(&mut event, &d.id);
            if let Some(events) = &d.events {
                let _ = events.send(event);
            }
        } else if let Some(p) = self.plains.get(&tkey) {
            set_transport_id(&mut event, &p.id);
            if let Some(events) = &p.events {
                let _ = events.send(event);
            }
        }
    }

    /// The one close path (docs/closures.md). Closes `object`'s dependents first, depth first,
    /// each with the reason its parent gives it, then detaches the object from every table and
    /// index. An object is reported on its transport unless a handle asked: its own
    /// (`reason == Closed`) or, for a transport's own objects, the transport's.
    pub(super) fn close_object(&mut self, object: Object, reason: CloseReason) {
        self.cascade(object, reason, reason != CloseReason::Closed);
    }

    /// Closes every router (the worker is closing).
    pub(super) fn close_all(&mut self, reason: CloseReason) {
        let ids: Vec<String> = self.routers.keys().cloned().collect();
        for id in ids {
            self.close_object(Object::Router(id), reason);
        }
    }

    fn cascade(&mut self, object: Object, reason: CloseReason, notify: bool) {
        for (child, child_reason, child_notify) in self.dependents(&object, reason, notify) {
            self.cascade(child, child_reason, child_notify);
        }
        match object {
            Object::Router(id) => {
                self.routers.remove(&id);
            }
            Object::WebRtcTransport(key) => self.detach_transport(key, reason, notify),
            Object::DirectTransport(key) => self.detach_direct_transport(key, reason, notify),
            Object::PlainTransport(key) => self.detach_plain_transport(key, reason, notify),
            Object::Producer(key) => self.detach_producer(key, reason, notify),
            Object::Consumer(key) => self.detach_consumer(key, reason, notify),
            Object::DataProducer(key) => self.detach_data_producer(key, reason, notify),
            Object::DataConsumer(key) => self.detach_data_consumer(key, reason, notify),
        }
    }

    /// What closes with `object` (the arrows of docs/closures.md), with the reason and whether
    /// each is reported. A consumer on another transport is always told its producer closed.
    fn dependents(
        &self,
        object: &Object,
        reason: CloseReason,
        notify: bool,
    ) -> Vec<(Object, CloseReason, bool)> {
        let mut out = Vec::new();
        match object {
            Object::Router(id) => {
                let Some(r) = self.routers.get(id) else {
                    return out;
                };
                let reason = if reason == CloseReason::Closed {
                    CloseReason::RouterClosed
                } else {
                    reason
                };
                let directs = self.directs.iter().filter(|(_, d)| d.router_id == *id);
                out.extend(directs.map(|(k, _)| (Object::DirectTransport(*k), reason, true)));
                let plains = self.plains.iter().filter(|(_, p)| p.router_id == *id);
                out.extend(plains.map(|(k, _)| (Object::PlainTransport(*k), reason, true)));
                let transports = r.transports.iter();
                out.extend(transports.map(|k| (Object::WebRtcTransport(*k), reason, true)));
            }
            Object::WebRtcTransport(key) => {
                let Some(t) = self.transports.get(key) else {
                    return out;
                };
                let own = t.data_consumers.iter().map(|k| Object::DataConsumer(*k));
                let own = own.chain(t.data_producers.iter().map(|k| Object::DataProducer(*k)));
                let own = own.chain(t.consumers.iter().map(|k| Object::Consumer(*k)));
                let own = own.chain(t.producers.iter().map(|k| Object::Producer(*k)));
                out.extend(own.map(|o| (o, CloseReason::TransportClosed, notify)));
            }
            Object::DirectTransport(key) => {
                let Some(d) = self.directs.get(key) else {
                    return out;
                };
                let own = d.data_consumers.iter().map(|k| Object::DataConsumer(*k));
                let own = own.chain(d.data_producers.iter().map(|k| Object::DataProducer(*k)));
                out.extend(own.map(|o| (o, CloseReason::TransportClosed, notify)));
            }
            Object::PlainTransport(key) => {
                let Some(p) = self.plains.get(key) else {
                    return out;
                };
                let own = p.consumers.iter().map(|k| Object::Consumer(*k));
                let own = own.chain(p.producers.iter().map(|k| Object::Producer(*k)));
                out.extend(own.map(|o| (o, CloseReason::TransportClosed, notify)));
            }
            Object::Producer(key) => {
                if let Some(p) = self.producers.get(key) {
                    let consumers = p.consumers.iter().map(|k| Object::Consumer(*k));
                    out.extend(consumers.map(|o| (o, CloseReason::ProducerClosed, true)));
                }
            }
            Object::DataProducer(key) => {
                if let Some(p) = self.data_producers.get(key) {
                    let consumers = p.consumers.iter().map(|k| Object::DataConsumer(*k));
                    out.extend(consumers.map(|o| (o, CloseReason::ProducerClosed, true)));
                }
            }
            Object::Consumer(_) | Object::DataConsumer(_) => {}
        }
        out
    }

    fn detach_consumer(&mut self, key: Key, reason: CloseReason, notify: bool) {
        let Some(c) = self.consumers.remove(&key) else {
            return;
        };
        if let Some(p) = self.producers.get_mut(&c.producer) {
            p.consumers.retain(|k| *k != key);
        }
        if let Some(t) = self.transports.get_mut(&c.transport) {
            t.consumers.retain(|k| *k != key);
            if c.own_egress.is_none() {
                t.str0m_egress_consumers = t.str0m_egress_consumers.saturating_sub(1);
            }
            let mid = Mid::from(c.mid.as_str());
            t.consumer_by_mid.remove(&mid);
            if let Some(m) = t.medias.iter_mut().find(|m| m.mid == c.mid) {
                m.active = false;
            }
            t.rtc.direct_api().remove_stream_tx(c.ssrc.into());
            self.dirty.push(c.transport);
        } else if let Some(t) = self.plains.get_mut(&c.transport) {
            t.consumers.retain(|k| *k != key);
        }
        self.update_demand(c.producer);
        if notify {
            self.emit_on_any(
                c.transport,
                MediaEvent::ConsumerClosed {
                    transport_id: String::new(),
                    consumer_id: c.id,
                    reason,
                },
            );
        }
    }

    fn detach_producer(&mut self, key: Key, reason: CloseReason, notify: bool) {
        let Some(p) = self.producers.remove(&key) else {
            return;
        };
        if let Some(r) = self.routers.get_mut(&p.router_id) {
            r.producers.remove(&key);
        }
        if let Some(t) = self.transports.get_mut(&p.transport) {
            t.producers.retain(|k| *k != key);
            t.producer_by_mid.remove(&Mid::from(p.mid.as_str()));
            t.rx_ssrc.retain(|_, (pk, _)| *pk != key);
            if let Some(m) = t.medias.iter_mut().find(|m| m.mid == p.mid) {
                m.active = false;
            }
            for l in &p.layers {
                if let Some(ssrc) = l.ssrc {
                    t.rtc.direct_api().remove_stream_rx(ssrc.into());
                }
            }
        } else if let Some(t) = self.plains.get_mut(&p.transport) {
            t.producers.retain(|k| *k != key);
            t.rx_ssrc.retain(|_, s| s.producer != key);
        }
        if notify {
            self.emit_on_any(
                p.transport,
                MediaEvent::ProducerClosed {
                    transport_id: String::new(),
                    producer_id: p.id,
                    reason,
                },
            );
        }
    }

    fn detach_transport(&mut self, key: Key, reason: CloseReason, notify: bool) {
        let Some(mut t) = self.transports.remove(&key) else {
            return;
        };
        self.demux.remove_transport(key);
        if let Some(deadline) = t.next_timeout.take() {
            self.timers.remove(&(deadline, key));
            self.exact_timers.remove(&(deadline, key));
        }
        if let Some(r) = self.routers.get_mut(&t.router_id) {
            r.transports.remove(&key);
        }
        // Say goodbye (DTLS close_notify, RTCP BYE) where str0m has something to send.
        let mut goodbye = Vec::new();
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let _ = t.rtc.close();
            for _ in 0..16 {
                match t.rtc.poll_output() {
                    Ok(Output::Transmit(tx)) => goodbye.push((
                        Remote::from_str0m(tx.proto, tx.destination),
                        tx.contents.into(),
                    )),
                    Ok(Output::Event(_)) => {}
                    _ => break,
                }
            }
        }));
        for (destination, contents) in goodbye {
            self.transmit(destination, contents);
        }
        if notify {
            t.emit(MediaEvent::IceStateChange {
                transport_id: t.id.clone(),
                state: IceState::Closed,
            });
            t.emit(MediaEvent::DtlsStateChange {
                transport_id: t.id.clone(),
                state: DtlsState::Closed,
            });
            t.emit(MediaEvent::TransportClosed {
                transport_id: t.id.clone(),
                reason,
            });
        }
    }

    fn detach_plain_transport(&mut self, key: Key, reason: CloseReason, notify: bool) {
        let Some(p) = self.plains.remove(&key) else {
            return;
        };
        self.plain_by_local.remove(&p.local);
        if let Some(rtcp) = p.rtcp_local {
            self.plain_by_local.remove(&rtcp);
        }
        if notify && let Some(events) = &p.events {
            let _ = events.send(MediaEvent::TransportClosed {
                transport_id: p.id.clone(),
                reason,
            });
        }
    }

    fn detach_direct_transport(&mut self, key: Key, reason: CloseReason, notify: bool) {
        if let Some(d) = self.directs.remove(&key)
            && notify
            && let Some(events) = &d.events
        {
            let _ = events.send(MediaEvent::TransportClosed {
                transport_id: d.id.clone(),
                reason,
            });
        }
    }

    fn detach_data_consumer(&mut self, dkey: Key, reason: CloseReason, notify: bool) {
        let Some(c) = self.data_consumers.remove(&dkey) else {
            return;
        };
        if let Some(p) = self.data_producers.get_mut(&c.data_producer) {
            p.consumers.retain(|k| *k != dkey);
        }
        match &c.sink {
            DataSink::Direct(receiver) => {
                receiver.close();
                if let Some(d) = self.directs.get_mut(&c.transport) {
                    d.data_consumers.retain(|k| *k != dkey);
                }
            }
            DataSink::Sctp { stream_id, channel } => {
                if let Some(t) = self.transports.get_mut(&c.transport) {
                    t.data_consumers.retain(|k| *k != dkey);
                    t.close_data_channel(*channel, *stream_id, reason == CloseReason::RemoteClosed);
                    self.dirty.push(c.transport);
                }
            }
        }
        if notify {
            self.emit_on_any(
                c.transport,
                MediaEvent::DataConsumerClosed {
                    transport_id: String::new(),
                    data_consumer_id: c.id,
                    reason,
                },
            );
        }
    }

    fn detach_data_producer(&mut self, pkey: Key, reason: CloseReason, notify: bool) {
        let Some(p) = self.data_producers.remove(&pkey) else {
            return;
        };
        if let Some(r) = self.routers.get_mut(&p.router_id) {
            r.data_producers.remove(&pkey);
        }
        if let Some(t) = self.transports.get_mut(&p.transport) {
            t.data_producers.retain(|k| *k != pkey);
            if let (Some(cid), Some(stream)) = (p.channel, p.stream.as_ref()) {
                t.close_data_channel(cid, stream.stream_id, reason == CloseReason::RemoteClosed);
            }
            self.dirty.push(p.transport);
        } else if let Some(d) = self.directs.get_mut(&p.transport) {
            d.data_producers.retain(|k| *k != pkey);
        }
        if notify {
            self.emit_on_any(
                p.transport,
                MediaEvent::DataProducerClosed {
                    transport_id: String::new(),
                    data_producer_id: p.id,
                    reason,
                },
            );
        }
    }
}

pub(super) fn set_transport_id(event: &mut MediaEvent, id: &str) {
    match event {
        MediaEvent::IceStateChange { transport_id, .. }
        | MediaEvent::IceSelectedTupleChange { transport_id, .. }
        | MediaEvent::DtlsStateChange { transport_id, .. }
        | MediaEvent::SctpStateChange { transport_id, .. }
        | MediaEvent::TransportClosed { transport_id, .. }
        | MediaEvent::ProducerScore { transport_id, .. }
        | MediaEvent::ProducerClosed { transport_id, .. }
        | MediaEvent::ConsumerClosed { transport_id, .. }
        | MediaEvent::ConsumerProducerPaused { transport_id, .. }
        | MediaEvent::ConsumerProducerResumed { transport_id, .. }
        | MediaEvent::ConsumerScore { transport_id, .. }
        | MediaEvent::ProducerDemandChange { transport_id, .. }
        | MediaEvent::ConsumerLayersChange { transport_id, .. }
        | MediaEvent::BandwidthEstimate { transport_id, .. }
        | MediaEvent::DataProducerClosed { transport_id, .. }
        | MediaEvent::DataConsumerClosed { transport_id, .. }
        | MediaEvent::DataConsumerBufferedAmountLow { transport_id, .. } => {
            *transport_id = id.to_owned();
        }
        MediaEvent::ActiveSpeaker { .. } => {}
    }
}
