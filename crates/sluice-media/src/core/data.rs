//! Data producers and consumers in the core: creating them on WebRTC (SCTP) and direct
//! transports, relaying a message to each data consumer, and SCTP back-pressure.

use std::time::Instant;

use super::Core;
use super::data_consumer::{DataConsumerState, DataSink, channel_config, try_write};
use super::data_producer::{DataProducerState, RateLimiter};
use super::direct_transport::DirectTransportState;
use super::table::Table;
use super::webrtc_transport::{DataOwner, TransportState};
use crate::error::MediaError;
use crate::events::{EventSender, MediaEvent};
use crate::message::{DataMessage, DataReceiver, Pushed, SendQueue};
use crate::types::{
    DataConsumerCreated, DataConsumerOptions, DataConsumerStat, DataProducerOptions, Key,
};

impl Core {
    pub(super) fn create_direct_transport(
        &mut self,
        router_id: String,
        events: Option<EventSender>,
    ) -> Result<String, MediaError> {
        if !self.routers.contains_key(&router_id) {
            return Err(MediaError::UnknownRouter(router_id));
        }
        let id = crate::new_id();
        let key = self.key();
        self.directs.insert(
            key,
            DirectTransportState {
                id: id.clone(),
                router_id,
                events,
                data_producers: Vec::new(),
                data_consumers: Vec::new(),
            },
        );
        Ok(id)
    }

    pub(super) fn router_of(&self, tkey: Key) -> Option<String> {
        self.transports
            .get(&tkey)
            .map(|t| t.router_id.clone())
            .or_else(|| self.directs.get(&tkey).map(|d| d.router_id.clone()))
    }

    pub(super) fn produce_data(
        &mut self,
        transport_id: &str,
        id: String,
        options: DataProducerOptions,
        now: Instant,
    ) -> Result<(), MediaError> {
        let tkey = self
            .transport_key(transport_id)
            .ok_or_else(|| MediaError::UnknownTransport(transport_id.to_owned()))?;
        if self.data_producers.contains_id(&id) {
            return Err(MediaError::DuplicateId(id));
        }
        let router_id = self
            .router_of(tkey)
            .ok_or_else(|| MediaError::UnknownTransport(transport_id.to_owned()))?;
        let key = self.key();
        let mut channel = None;
        let mut stream = options.sctp_stream_parameters.clone();
        if let Some(t) = self.transports.get_mut(&tkey) {
            let Some(params) = stream.as_mut() else {
                return Err(MediaError::InvalidSctpParameters(
                    "sctpStreamParameters are required on a WebRTC transport".into(),
                ));
            };
            sluice_ortc::validate_sctp_stream_parameters(params)
                .map_err(|e| MediaError::InvalidSctpParameters(e.into()))?;
            let streams = t
                .sctp_streams
                .as_mut()
                .ok_or_else(|| MediaError::SctpDisabled(transport_id.to_owned()))?;
            streams.reserve(params.stream_id).map_err(|e| {
                MediaError::InvalidSctpParameters(
                    format!("stream {}: {e}", params.stream_id).into(),
                )
            })?;
            let partial = params.max_packet_life_time.is_some() || params.max_retransmits.is_some();
            params.ordered = Some(params.ordered.unwrap_or(!partial));
            let config = channel_config(params, &options.label, &options.protocol);
            let cid = t.rtc.direct_api().create_data_channel(config);
            t.data_by_channel.insert(cid, DataOwner::Producer(key));
            t.data_producers.push(key);
            channel = Some(cid);
            self.dirty.push(tkey);
        } else if let Some(d) = self.directs.get_mut(&tkey) {
            stream = None;
            d.data_producers.push(key);
        }
        if let Some(r) = self.routers.get_mut(&router_id) {
            r.data_producers.insert(key);
        }
        self.data_producers.insert(
            key,
            DataProducerState {
                id,
                transport: tkey,
                router_id,
                stream,
                channel,
                label: options.label,
                protocol: options.protocol,
                paused: options.paused,
                consumers: Vec::new(),
                max_message_size: options.max_message_size,
                limiter: options
                    .max_messages_per_second
                    .map(|rate| RateLimiter::new(rate, now)),
                messages: 0,
                bytes: 0,
                dropped_oversize: 0,
                dropped_rate: 0,
            },
        );
        Ok(())
    }

    pub(super) fn consume_data(
        &mut self,
        transport_id: &str,
        id: String,
        options: DataConsumerOptions,
    ) -> Result<DataConsumerCreated, MediaError> {
        let tkey = self
            .transport_key(transport_id)
            .ok_or_else(|| MediaError::UnknownTransport(transport_id.to_owned()))?;
        let pkey = self
            .data_producers
            .key_of(&options.data_producer_id)
            .ok_or_else(|| MediaError::UnknownDataProducer(options.data_producer_id.clone()))?;
        let router_id = self
            .router_of(tkey)
            .ok_or_else(|| MediaError::UnknownTransport(transport_id.to_owned()))?;
        let Some(producer) = self.data_producers.get(&pkey) else {
            return Err(MediaError::UnknownDataProducer(options.data_producer_id));
        };
        if producer.router_id != router_id {
            return Err(MediaError::CannotConsume(
                "the data producer is on another router".into(),
            ));
        }
        let base = producer.stream.clone().unwrap_or_default();
        let label = producer.label.clone();
        let protocol = producer.protocol.clone();
        let key = self.key();
        let (sink, params, receiver, reliable) = if let Some(t) = self.transports.get_mut(&tkey) {
            let streams = t
                .sctp_streams
                .as_mut()
                .ok_or_else(|| MediaError::SctpDisabled(transport_id.to_owned()))?;
            let stream_id = streams
                .allocate()
                .map_err(|e| MediaError::Limit(format!("SCTP streams of this transport: {e}")))?;
            let mut params =
                sluice_ortc::get_data_consumer_sctp_stream_parameters(&base, stream_id);
            if options.ordered.is_some()
                || options.max_packet_life_time.is_some()
                || options.max_retransmits.is_some()
            {
                params.max_packet_life_time = options.max_packet_life_time;
                params.max_retransmits = options.max_retransmits;
                let partial =
                    params.max_packet_life_time.is_some() || params.max_retransmits.is_some();
                params.ordered = Some(options.ordered.unwrap_or(!partial));
            }
            let reliable =
                params.max_packet_life_time.is_none() && params.max_retransmits.is_none();
            let cid = t
                .rtc
                .direct_api()
                .create_data_channel(channel_config(&params, &label, &protocol));
            t.data_by_channel.insert(cid, DataOwner::Consumer(key));
            t.data_consumers.push(key);
            self.dirty.push(tkey);
            (
                DataSink::Sctp {
                    stream_id,
                    channel: cid,
                },
                Some(params),
                None,
                reliable,
            )
        } else if let Some(d) = self.directs.get_mut(&tkey) {
            let reliable = options.max_packet_life_time.is_none()
                && options.max_retransmits.is_none()
                && base.max_packet_life_time.is_none()
                && base.max_retransmits.is_none();
            let limit = options.queue_limit.unwrap_or(if reliable {
                self.settings.data_queue_limit
            } else {
                self.settings.unreliable_data_queue_limit
            });
            let receiver = DataReceiver::new(reliable, limit);
            d.data_consumers.push(key);
            (
                DataSink::Direct(receiver.clone()),
                None,
                Some(receiver),
                reliable,
            )
        } else {
            return Err(MediaError::UnknownTransport(transport_id.to_owned()));
        };
        let limit = options.queue_limit.unwrap_or(if reliable {
            self.settings.data_queue_limit
        } else {
            self.settings.unreliable_data_queue_limit
        });
        if let Some(p) = self.data_producers.get_mut(&pkey) {
            p.consumers.push(key);
        }
        self.data_consumers.insert(
            key,
            DataConsumerState {
                id,
                data_producer: pkey,
                transport: tkey,
                label: label.clone(),
                protocol: protocol.clone(),
                paused: options.paused,
                sink,
                queue: SendQueue::new(reliable, limit),
                max_buffered: if reliable {
                    self.settings.reliable_sctp_buffer
                } else {
                    self.settings.unreliable_sctp_buffer
                },
                messages: 0,
                bytes: 0,
                last_buffered: 0,
                backed_up: false,
            },
        );
        Ok(DataConsumerCreated {
            sctp_stream_parameters: params,
            label,
            protocol,
            receiver,
        })
    }

    /// Relays one message of data producer `pkey` to its data consumers (with `to`, only to
    /// those of them listed). SCTP copies the bytes it takes, so the message is cloned only
    /// for a consumer that keeps it (a direct transport's, or one whose SCTP has no room).
    pub(super) fn relay_data(
        &mut self,
        pkey: Key,
        message: DataMessage,
        now: Instant,
        to: Option<&[Key]>,
    ) {
        let Core {
            data_producers,
            data_consumers,
            transports,
            dirty,
            ..
        } = self;
        let Some(p) = data_producers.get_mut(&pkey) else {
            return;
        };
        if !p.admit(message.data.len(), now) {
            tracing::debug!(data_producer = %p.id, len = message.data.len(), "data message dropped (size or rate limit)");
            return;
        }
        if p.paused {
            return;
        }
        for dkey in &p.consumers {
            if to.is_some_and(|to| !to.contains(dkey)) {
                continue;
            }
            if let Some(c) = data_consumers.get_mut(dkey) {
                deliver(c, transports, dirty, &message);
            }
        }
    }

    /// Sends what a data consumer queued while SCTP had no room.
    pub(super) fn flush_data_consumer(&mut self, dkey: Key) {
        let Some(c) = self.data_consumers.get_mut(&dkey) else {
            return;
        };
        let DataSink::Sctp { channel, .. } = c.sink else {
            return;
        };
        let Some(t) = self.transports.get_mut(&c.transport) else {
            return;
        };
        while let Some(m) = c.queue.front() {
            if !try_write(&mut t.rtc, channel, m, c.max_buffered) {
                break;
            }
            c.messages += 1;
            c.bytes += m.data.len() as u64;
            c.queue.pop();
        }
        c.last_buffered = t
            .rtc
            .channel(channel)
            .map_or(0, |mut ch| ch.buffered_amount());
        self.dirty.push(c.transport);
        if c.queue.is_empty() && c.backed_up {
            c.backed_up = false;
            let event = MediaEvent::DataConsumerBufferedAmountLow {
                transport_id: t.id.clone(),
                data_consumer_id: c.id.clone(),
                buffered_amount: c.last_buffered,
            };
            t.emit(event);
        }
    }

    pub(super) fn data_consumer_stats(&mut self, dkey: Key, now: Instant) -> DataConsumerStat {
        let Some(c) = self.data_consumers.get(&dkey) else {
            return DataConsumerStat {
                kind: "data-consumer",
                timestamp: self.unix_millis(now),
                label: String::new(),
                protocol: String::new(),
                messages_sent: 0,
                bytes_sent: 0,
                buffered_amount: 0,
                queued_bytes: 0,
                dropped: 0,
            };
        };
        let (buffered, queued, dropped) = match &c.sink {
            DataSink::Direct(r) => (0, r.queued_bytes(), r.dropped()),
            DataSink::Sctp { channel, .. } => {
                let buffered = self
                    .transports
                    .get_mut(&c.transport)
                    .and_then(|t| t.rtc.channel(*channel).map(|mut ch| ch.buffered_amount()))
                    .unwrap_or(0);
                (buffered, c.queue.bytes(), c.queue.dropped)
            }
        };
        DataConsumerStat {
            kind: "data-consumer",
            timestamp: self.unix_millis(now),
            label: c.label.clone(),
            protocol: c.protocol.clone(),
            messages_sent: c.messages,
            bytes_sent: c.bytes,
            buffered_amount: buffered,
            queued_bytes: queued,
            dropped,
        }
    }
}

/// Hands `message` to data consumer `c`: into its direct receiver, or written into SCTP on its
/// transport (`dirty` then), or queued while SCTP has no room.
fn deliver(
    c: &mut DataConsumerState,
    transports: &mut Table<Box<TransportState>>,
    dirty: &mut Vec<Key>,
    message: &DataMessage,
) {
    if c.paused {
        return;
    }
    let len = message.data.len() as u64;
    match &c.sink {
        DataSink::Direct(receiver) => {
            if receiver.push(message.clone()) != Pushed::Full {
                c.messages += 1;
                c.bytes += len;
            }
        }
        DataSink::Sctp { channel, .. } => {
            if message.data.is_empty() {
                // str0m 0.25 writes no chunk for an empty message yet advances the stream
                // sequence number, which would stall an ordered stream: drop it, counted.
                c.queue.dropped += 1;
                return;
            }
            let Some(t) = transports.get_mut(&c.transport) else {
                return;
            };
            if c.queue.is_empty() && try_write(&mut t.rtc, *channel, message, c.max_buffered) {
                c.messages += 1;
                c.bytes += len;
            } else {
                if c.queue.push(message.clone()) == Pushed::Full {
                    tracing::debug!(data_consumer = %c.id, "data consumer full: message dropped");
                }
                c.backed_up = true;
            }
            dirty.push(c.transport);
        }
    }
}
