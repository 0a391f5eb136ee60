//! The control plane's requests: one arm per [`Command`], answered on its reply channel.

use std::time::Instant;

use super::Core;
use super::object::Object;
use super::router::RouterState;
use super::webrtc_transport::TransportState;
use crate::command::Command;
use crate::error::MediaError;
use crate::events::{CloseReason, ConsumerScore, DtlsState, MediaEvent};
use crate::types::{ConsumerDump, Key, RouterDump, TransportCreated, WebRtcTransportOptions};

impl Core {
    /// The transport (session) whose str0m state a command touches first: a panic while
    /// handling the command closes it.
    pub(super) fn session_of(&self, command: &Command) -> Option<Key> {
        match command {
            Command::ConnectTransport { id, .. }
            | Command::RestartIce { id, .. }
            | Command::TransportStats { id, .. }
            | Command::CloseTransport { id, .. }
            | Command::PanicTransport { id } => self.transports.key_of(id),
            Command::Produce { transport_id, .. }
            | Command::Consume { transport_id, .. }
            | Command::ProduceData { transport_id, .. }
            | Command::ConsumeData { transport_id, .. } => self.transports.key_of(transport_id),
            Command::PauseProducer { id, .. }
            | Command::ProducerStats { id, .. }
            | Command::CloseProducer { id, .. } => self.producers.by_id(id).map(|p| p.transport),
            Command::ConsumerOp { id, .. }
            | Command::ConsumerStats { id, .. }
            | Command::ConsumerDump { id, .. } => self.consumers.by_id(id).map(|c| c.transport),
            Command::PauseDataProducer { id, .. }
            | Command::DataProducerStats { id, .. }
            | Command::CloseDataProducer { id, .. } => {
                self.data_producers.by_id(id).map(|p| p.transport)
            }
            Command::PauseDataConsumer { id, .. }
            | Command::DataConsumerStats { id, .. }
            | Command::CloseDataConsumer { id, .. } => {
                self.data_consumers.by_id(id).map(|c| c.transport)
            }
            _ => None,
        }
        .filter(|key| self.transports.contains_key(key))
    }

    pub(super) fn on_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::CreateRouter {
                id,
                caps,
                events,
                reply,
            } => {
                let result = match self.routers.entry(id) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        Err(MediaError::DuplicateId(e.key().clone()))
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(RouterState {
                            rtp_capabilities: caps,
                            transports: Default::default(),
                            producers: Default::default(),
                            data_producers: Default::default(),
                            events,
                            speaker: Default::default(),
                        });
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            Command::CloseRouter { id, reply } => {
                let result = if self.routers.contains_key(&id) {
                    self.close_object(Object::Router(id.clone()), CloseReason::Closed);
                    Ok(())
                } else {
                    Err(MediaError::UnknownRouter(id))
                };
                let _ = reply.send(result);
            }
            Command::RouterDump { id, reply } => {
                let _ = reply.send(self.router_dump(&id));
            }
            Command::CanConsume {
                router_id,
                producer_id,
                caps,
                reply,
            } => {
                let ok = self
                    .producers
                    .by_id(&producer_id)
                    .filter(|p| p.router_id == router_id)
                    .is_some_and(|p| {
                        sluice_ortc::can_consume(&p.consumable, &caps).unwrap_or(false)
                    });
                let _ = reply.send(ok);
            }
            Command::CreateWebRtcTransport {
                router_id,
                options,
                reply,
            } => {
                let _ = reply.send(self.create_transport(router_id, *options, now));
            }
            Command::ConnectTransport {
                id,
                dtls_parameters,
                reply,
            } => {
                let result = self.with_transport(&id, |t| {
                    t.connect(&dtls_parameters)?;
                    if t.offer_pending {
                        t.apply_offer()?;
                    }
                    t.emit(MediaEvent::DtlsStateChange {
                        transport_id: t.id.clone(),
                        state: DtlsState::Connecting,
                    });
                    Ok(())
                });
                let _ = reply.send(result);
            }
            Command::RestartIce { id, reply } => {
                let result = match self.transport_key(&id) {
                    Some(key) => {
                        let t = self.transports.get_mut(&key);
                        match t {
                            Some(t) => {
                                let (params, old) = t.restart_ice();
                                self.demux.remove_ufrag(&old);
                                self.demux.add_ufrag(&params.username_fragment, key);
                                self.dirty.push(key);
                                Ok(params)
                            }
                            None => Err(MediaError::UnknownTransport(id)),
                        }
                    }
                    None => Err(MediaError::UnknownTransport(id)),
                };
                let _ = reply.send(result);
            }
            Command::TransportStats { id, reply } => {
                let ts = self.unix_millis(now);
                let result = self.with_transport(&id, |t| Ok(t.stats(ts)));
                let _ = reply.send(result);
            }
            Command::CloseTransport { id, reply } => {
                let result = match self.transport_key(&id) {
                    Some(key) if self.directs.contains_key(&key) => {
                        self.close_object(Object::DirectTransport(key), CloseReason::Closed);
                        Ok(())
                    }
                    Some(key) if self.plains.contains_key(&key) => {
                        self.close_object(Object::PlainTransport(key), CloseReason::Closed);
                        Ok(())
                    }
                    Some(key) => {
                        self.close_object(Object::WebRtcTransport(key), CloseReason::Closed);
                        Ok(())
                    }
                    None => Err(MediaError::UnknownTransport(id)),
                };
                let _ = reply.send(result);
            }
            Command::Produce {
                transport_id,
                spec,
                reply,
            } => {
                let result = match self.plains.key_of(&transport_id) {
                    Some(key) => self.produce_plain(key, *spec),
                    None => self.produce(&transport_id, *spec, now),
                };
                let _ = reply.send(result);
            }
            Command::PauseProducer { id, paused, reply } => {
                let _ = reply.send(self.pause_producer(&id, paused, now));
            }
            Command::ProducerStats { id, reply } => {
                let result = match self.producers.by_id(&id) {
                    Some(p) => Ok(p.stats(now, self.unix_millis(now))),
                    None => Err(MediaError::UnknownProducer(id)),
                };
                let _ = reply.send(result);
            }
            Command::CloseProducer { id, reply } => {
                let result = match self.producers.key_of(&id) {
                    Some(key) => {
                        self.close_object(Object::Producer(key), CloseReason::Closed);
                        Ok(())
                    }
                    None => Err(MediaError::UnknownProducer(id)),
                };
                let _ = reply.send(result);
            }
            Command::Consume {
                transport_id,
                id,
                options,
                reply,
            } => {
                let result = match self.plains.key_of(&transport_id) {
                    Some(key) => self.consume_plain(key, id, *options, now),
                    None => self.consume(&transport_id, id, *options, now),
                };
                let _ = reply.send(result);
            }
            Command::ConsumerOp { id, op, reply } => {
                let _ = reply.send(self.consumer_op(&id, op, now));
            }
            Command::ConsumerStats { id, reply } => {
                let result = match self.consumers.by_id(&id) {
                    Some(c) => Ok(vec![c.stats(now, self.unix_millis(now))]),
                    None => Err(MediaError::UnknownConsumer(id)),
                };
                let _ = reply.send(result);
            }
            Command::ConsumerDump { id, reply } => {
                let result = match self.consumers.key_of(&id) {
                    Some(key) => Ok(self.consumer_dump(key)),
                    None => Err(MediaError::UnknownConsumer(id)),
                };
                let _ = reply.send(result);
            }
            Command::CreatePlainTransport { reply, .. } => {
                // The driver binds the sockets and calls `create_plain_transport`; a core
                // without a driver that can (a virtual network) says so.
                let _ = reply.send(Err(MediaError::Bind {
                    addr: self.local_addr,
                    reason: "this worker cannot bind plain transport sockets".into(),
                }));
            }
            Command::ConnectPlainTransport { id, connect, reply } => {
                let _ = reply.send(self.connect_plain_transport(&id, connect));
            }
            Command::PlainTransportStats { id, reply } => {
                let _ = reply.send(self.plain_stats(&id, self.unix_millis(now)));
            }
            Command::CreateDirectTransport {
                router_id,
                events,
                reply,
            } => {
                let _ = reply.send(self.create_direct_transport(router_id, events));
            }
            Command::ProduceData {
                transport_id,
                id,
                options,
                reply,
            } => {
                let _ = reply.send(self.produce_data(&transport_id, id, *options, now));
            }
            Command::ConsumeData {
                transport_id,
                id,
                options,
                reply,
            } => {
                let _ = reply.send(self.consume_data(&transport_id, id, *options));
            }
            Command::DirectSend {
                data_producer_id,
                message,
            } => {
                if let Some(key) = self.data_producers.key_of(&data_producer_id) {
                    self.relay_data(key, message, now, None);
                }
            }
            Command::DirectSendTo {
                data_producer_id,
                message,
                data_consumer_ids,
            } => {
                if let Some(key) = self.data_producers.key_of(&data_producer_id) {
                    let to: Vec<Key> = data_consumer_ids
                        .iter()
                        .filter_map(|id| self.data_consumers.key_of(id))
                        .collect();
                    self.relay_data(key, message, now, Some(&to));
                }
            }
            Command::PauseDataProducer { id, paused, reply } => {
                let result = match self.data_producers.by_id_mut(&id) {
                    Some(p) => {
                        p.paused = paused;
                        Ok(())
                    }
                    None => Err(MediaError::UnknownDataProducer(id)),
                };
                let _ = reply.send(result);
            }
            Command::PauseDataConsumer { id, paused, reply } => {
                let result = match self.data_consumers.by_id_mut(&id) {
                    Some(c) => {
                        c.paused = paused;
                        Ok(())
                    }
                    None => Err(MediaError::UnknownDataConsumer(id)),
                };
                let _ = reply.send(result);
            }
            Command::DataProducerStats { id, reply } => {
                let result = match self.data_producers.by_id(&id) {
                    Some(p) => Ok(vec![p.stats(self.unix_millis(now))]),
                    None => Err(MediaError::UnknownDataProducer(id)),
                };
                let _ = reply.send(result);
            }
            Command::DataConsumerStats { id, reply } => {
                let result = match self.data_consumers.key_of(&id) {
                    Some(key) => Ok(vec![self.data_consumer_stats(key, now)]),
                    None => Err(MediaError::UnknownDataConsumer(id)),
                };
                let _ = reply.send(result);
            }
            Command::CloseDataProducer { id, reply } => {
                let result = match self.data_producers.key_of(&id) {
                    Some(key) => {
                        self.close_object(Object::DataProducer(key), CloseReason::Closed);
                        Ok(())
                    }
                    None => Err(MediaError::UnknownDataProducer(id)),
                };
                let _ = reply.send(result);
            }
            Command::CloseDataConsumer { id, reply } => {
                let result = match self.data_consumers.key_of(&id) {
                    Some(key) => {
                        self.close_object(Object::DataConsumer(key), CloseReason::Closed);
                        Ok(())
                    }
                    None => Err(MediaError::UnknownDataConsumer(id)),
                };
                let _ = reply.send(result);
            }
            Command::Dump { reply } => {
                let _ = reply.send(self.dump());
            }
            Command::ResourceUsage { reply } => {
                let _ = reply.send(self.usage.clone());
            }
            // Panics in the command path like a bug in a session would: the guard of
            // `Core::handle_command` closes that session only.
            Command::PanicTransport { id } => {
                if self.transport_key(&id).is_some() {
                    panic!("session panic requested");
                }
            }
            Command::Close { reply } => {
                self.close_all(CloseReason::WorkerClosed);
                self.closed = true;
                let _ = reply.send(());
            }
            // The driver's to act on: it makes the worker thread panic.
            Command::Crash => {}
        }
    }

    pub(super) fn with_transport<T>(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut TransportState) -> Result<T, MediaError>,
    ) -> Result<T, MediaError> {
        let key = self
            .transport_key(id)
            .ok_or_else(|| MediaError::UnknownTransport(id.to_owned()))?;
        let t = self
            .transports
            .get_mut(&key)
            .ok_or_else(|| MediaError::UnknownTransport(id.to_owned()))?;
        let result = f(t);
        self.dirty.push(key);
        result
    }

    pub(super) fn create_transport(
        &mut self,
        router_id: String,
        options: WebRtcTransportOptions,
        now: Instant,
    ) -> Result<TransportCreated, MediaError> {
        let caps = self
            .routers
            .get(&router_id)
            .ok_or_else(|| MediaError::UnknownRouter(router_id.clone()))?
            .rtp_capabilities
            .clone();
        let id = crate::new_id();
        let (state, created) = TransportState::new(
            id.clone(),
            router_id.clone(),
            &caps,
            &self.cert,
            self.local_addr,
            self.tcp_local_addr,
            self.announced_ip,
            &options,
            now,
        )?;
        let key = self.key();
        self.demux.add_ufrag(&state.local_ufrag, key);
        self.transports.insert(key, Box::new(state));
        if let Some(r) = self.routers.get_mut(&router_id) {
            r.transports.insert(key);
        }
        self.dirty.push(key);
        Ok(created)
    }

    pub(super) fn router_dump(&self, id: &str) -> Result<RouterDump, MediaError> {
        let r = self
            .routers
            .get(id)
            .ok_or_else(|| MediaError::UnknownRouter(id.to_owned()))?;
        let mut transport_ids = Vec::new();
        let mut producer_ids = Vec::new();
        let mut consumer_ids = Vec::new();
        // WebRTC and plain transports hold producers and consumers alike.
        let media = r
            .transports
            .iter()
            .filter_map(|k| self.transports.get(k))
            .map(|t| (&t.id, &t.producers, &t.consumers))
            .chain(
                self.plains
                    .values()
                    .filter(|p| p.router_id == id)
                    .map(|p| (&p.id, &p.producers, &p.consumers)),
            );
        for (tid, producers, consumers) in media {
            transport_ids.push(tid.clone());
            producer_ids.extend(
                producers
                    .iter()
                    .filter_map(|k| self.producers.get(k).map(|p| p.id.clone())),
            );
            consumer_ids.extend(
                consumers
                    .iter()
                    .filter_map(|k| self.consumers.get(k).map(|c| c.id.clone())),
            );
        }
        let mut data_producer_ids: Vec<String> = r
            .data_producers
            .iter()
            .filter_map(|k| self.data_producers.get(k).map(|p| p.id.clone()))
            .collect();
        let mut data_consumer_ids: Vec<String> = self
            .data_consumers
            .values()
            .filter(|c| r.data_producers.contains(&c.data_producer))
            .map(|c| c.id.clone())
            .collect();
        for d in self.directs.values().filter(|d| d.router_id == id) {
            transport_ids.push(d.id.clone());
        }
        transport_ids.sort();
        producer_ids.sort();
        consumer_ids.sort();
        data_producer_ids.sort();
        data_consumer_ids.sort();
        Ok(RouterDump {
            id: id.to_owned(),
            transport_ids,
            producer_ids,
            consumer_ids,
            data_producer_ids,
            data_consumer_ids,
        })
    }

    pub(super) fn consumer_dump(&self, key: Key) -> ConsumerDump {
        let c = &self.consumers[&key];
        let producer = self.producers.get(&c.producer);
        ConsumerDump {
            id: c.id.clone(),
            producer_id: c.producer_id.clone(),
            paused: c.forwarder.is_paused(),
            producer_paused: c.forwarder.is_producer_paused(),
            priority: c.priority,
            preferred_layers: c.preferred_layers,
            current_layers: c.current_layers(),
            score: ConsumerScore {
                score: c.score,
                producer_score: producer.map_or(0, |p| p.score()),
                producer_scores: producer
                    .map(|p| p.layers.iter().map(|l| l.score).collect())
                    .unwrap_or_default(),
            },
        }
    }
}
