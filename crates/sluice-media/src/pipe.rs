//! Pipes between routers of this process (mediasoup's `router.pipeToRouter`): a producer of one
//! router made a producer of another, with the same id, so that a room can have its consumers
//! on another worker (issue 15): [`PipedProducer::create`], [`PipedDataProducer::create`].
//!
//! Media go through a pair of plain transports on the loopback: a consumer of the producer on
//! the source router sends its RTP (with sender reports) to a plain transport of the target
//! router, where a producer of the same id and kind takes it in. Keyframe requests cross back
//! as RTCP PLIs from the target's transport to the source's, which asks the producer. Pause and
//! resume of the source producer pause and resume the piped one (its consumers are told), and
//! when the source producer closes, the pipe closes and the piped producer with it (its
//! consumers are told, as for any producer that closes). The pipe carries media only while
//! the piped producer is demanded (`MediaEvent::ProducerDemandChange`: one of its consumers
//! is not paused); it starts paused, and its consumer resumes (asking for a keyframe) when a
//! consumer on the target resumes, and pauses when the last one pauses or closes.
//!
//! Data producers go through direct transports: a direct data consumer of the source producer,
//! and a task that sends each of its messages on a direct data producer of the same id on the
//! target router.
//!
//! The source's consumer is a pipe consumer: each encoding of a simulcast producer crosses as its
//! own stream with the producer's numbering, so the piped producer has the same encodings and
//! the target's consumers pick layers as the source's do; a keyframe request for one encoding
//! crosses back as a PLI for that encoding's SSRC.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::consumer::{Consumer, ConsumerOptions};
use crate::data_consumer::DataConsumerOptions;
use crate::data_producer::{DataProducer, DataProducerOptions};
use crate::direct_transport::DirectTransport;
use crate::error::MediaError;
use crate::events::MediaEvent;
use crate::plain_transport::{PlainTransport, PlainTransportConnect, PlainTransportOptions};
use crate::producer::{Producer, ProducerOptions};
use crate::router::Router;

/// A producer piped to another router: the consumer on the source router and the producer of
/// the same id on the target one.
#[derive(Debug, Clone)]
pub struct PipedProducer {
    pub pipe_consumer: Consumer,
    pub pipe_producer: Producer,
    source: PlainTransport,
    target: PlainTransport,
}

impl PipedProducer {
    /// Closes the pipe: the piped producer closes (its consumers are told).
    pub async fn close(&self) -> Result<(), MediaError> {
        let closed = self.target.close().await;
        let _ = self.source.close().await;
        closed
    }
}

/// A data producer piped to another router: the piped data producer (same id) on the target.
#[derive(Debug, Clone)]
pub struct PipedDataProducer {
    pub pipe_data_producer: DataProducer,
    source: DirectTransport,
    target: DirectTransport,
}

impl PipedDataProducer {
    /// Closes the pipe and the piped data producer (its consumers are told); the task that
    /// carried the messages ends with the source's consumer.
    pub async fn close(&self) -> Result<(), MediaError> {
        let closed = self.target.close().await;
        let _ = self.source.close().await;
        closed
    }
}

/// Where another worker of this host reaches a plain transport: its socket, the loopback when
/// it listens on every address.
fn reachable(t: &PlainTransport) -> SocketAddr {
    let local = t.local_addr();
    if local.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port())
    } else {
        local
    }
}

impl PipedProducer {
    /// Pipes producer `producer_id` of `source` to `target` (see the module's documentation).
    pub async fn create(
        source: &Router,
        target: &Router,
        producer_id: &str,
    ) -> Result<PipedProducer, MediaError> {
        pipe_producer(source, target, producer_id).await
    }
}

impl PipedDataProducer {
    /// Pipes data producer `data_producer_id` of `source` to `target`.
    pub async fn create(
        source: &Router,
        target: &Router,
        data_producer_id: &str,
    ) -> Result<PipedDataProducer, MediaError> {
        pipe_data_producer(source, target, data_producer_id).await
    }
}

async fn pipe_producer(
    source: &Router,
    target: &Router,
    producer_id: &str,
) -> Result<PipedProducer, MediaError> {
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let a = source
        .create_plain_transport(PlainTransportOptions {
            events: Some(events_tx.clone()),
            ..PlainTransportOptions::default()
        })
        .await?;
    let b = match target
        .create_plain_transport(PlainTransportOptions {
            events: Some(events_tx),
            ..PlainTransportOptions::default()
        })
        .await
    {
        Ok(b) => b,
        Err(e) => {
            let _ = a.close().await;
            return Err(e);
        }
    };
    let made = async {
        a.connect(reachable(&b)).await?;
        b.connect_with(PlainTransportConnect {
            remote: Some(reachable(&a)),
            srtp_parameters: None,
        })
        .await?;
        let mut options = ConsumerOptions::new(producer_id, source.rtp_capabilities().clone());
        options.paused = true;
        options.pipe = true;
        let consumer = a.consume(options).await?;
        let mut produce = ProducerOptions::new(consumer.kind(), consumer.rtp_parameters().clone());
        produce.id = Some(producer_id.to_owned());
        produce.paused = consumer.producer_paused();
        // The consumer stays paused until a consumer of the piped producer wants media.
        let producer = b.produce(produce).await?;
        Ok::<_, MediaError>((consumer, producer))
    };
    let (consumer, producer) = match made.await {
        Ok(v) => v,
        Err(e) => {
            let _ = a.close().await;
            let _ = b.close().await;
            return Err(e);
        }
    };
    let piped = PipedProducer {
        pipe_consumer: consumer.clone(),
        pipe_producer: producer.clone(),
        source: a.clone(),
        target: b.clone(),
    };
    // The source's fate reaches the piped producer; the target's demand sets whether the
    // pipe carries media (a resume asks for a keyframe).
    let consumer_id = consumer.id().to_owned();
    let producer_id = producer.id().to_owned();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                MediaEvent::ProducerDemandChange {
                    producer_id: p,
                    demanded,
                    ..
                } if p == producer_id => {
                    let _ = if demanded {
                        consumer.resume().await
                    } else {
                        consumer.pause().await
                    };
                }
                MediaEvent::ConsumerProducerPaused { consumer_id: c, .. } if c == consumer_id => {
                    let _ = producer.pause().await;
                }
                MediaEvent::ConsumerProducerResumed { consumer_id: c, .. } if c == consumer_id => {
                    let _ = producer.resume().await;
                }
                MediaEvent::ConsumerClosed { consumer_id: c, .. } if c == consumer_id => break,
                MediaEvent::TransportClosed { .. } => break,
                _ => {}
            }
        }
        let _ = b.close().await;
        let _ = a.close().await;
    });
    Ok(piped)
}

async fn pipe_data_producer(
    source: &Router,
    target: &Router,
    data_producer_id: &str,
) -> Result<PipedDataProducer, MediaError> {
    let a = source.create_direct_transport(None).await?;
    let b = match target.create_direct_transport(None).await {
        Ok(b) => b,
        Err(e) => {
            let _ = a.close().await;
            return Err(e);
        }
    };
    let made = async {
        let (consumer, receiver) = a
            .consume_data(DataConsumerOptions::new(data_producer_id))
            .await?;
        let mut options = DataProducerOptions::new(consumer.label());
        options.id = Some(data_producer_id.to_owned());
        options.protocol = consumer.protocol().to_owned();
        let producer = b.produce_data(options).await?;
        Ok::<_, MediaError>((receiver, producer))
    };
    let (receiver, producer) = match made.await {
        Ok(v) => v,
        Err(e) => {
            let _ = a.close().await;
            let _ = b.close().await;
            return Err(e);
        }
    };
    let piped = PipedDataProducer {
        pipe_data_producer: producer.clone(),
        source: a.clone(),
        target: b.clone(),
    };
    tokio::spawn(async move {
        // Ends when the source data producer (so its consumer) closes, or the pipe does.
        while let Some(message) = receiver.recv().await {
            if producer.send(message).is_err() {
                break;
            }
        }
        let _ = b.close().await;
        let _ = a.close().await;
    });
    Ok(piped)
}
