//! Pipes between the routers of two workers in one process: a producer on worker 0 consumed
//! on worker 1 through its piped twin, with keyframe requests crossing back, pause, resume and
//! close crossing forward, and nothing left behind; a data producer likewise. Real sockets on
//! loopback; every wait is for a condition.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use sluice_client::media::{vp8_is_keyframe, vp8_stamp};
use sluice_client::{ClientNumbering, SourceConfig};
use sluice_media::{
    DataConsumerOptions, DataMessage, DataProducerOptions, MediaEvent, PipedDataProducer,
    PipedProducer, Router, Worker, WorkerSettings,
};
use tokio::sync::mpsc::UnboundedReceiver;

/// Routers on two workers (two threads, two sockets).
async fn two_routers() -> (Worker, Router, Worker, Router) {
    let (w0, a) = real_worker_and_router().await;
    let w1 = Worker::spawn(1, &WorkerSettings::loopback()).unwrap();
    let b = w1.create_router(&media_codecs()).await.unwrap();
    (w0, a, w1, b)
}

/// Waits (ten seconds at most) for an event `f` matches.
async fn wait_event(
    events: &mut UnboundedReceiver<MediaEvent>,
    f: impl Fn(&MediaEvent) -> bool,
) -> MediaEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) if f(&e) => return e,
            Ok(Some(_)) => {}
            other => panic!("no such event: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_piped_to_another_workers_router_feeds_its_consumers_and_follows_its_source() {
    let (w0, a, w1, b) = two_routers().await;
    let publisher = connect(&a, ClientNumbering::chromium(), None).await;
    let video = produce(&publisher, SourceConfig::video()).await;
    let piped = PipedProducer::create(&a, &b, video.id()).await.unwrap();
    assert_eq!(
        piped.pipe_producer.id(),
        video.id(),
        "the same id on both routers"
    );
    assert_eq!(piped.pipe_producer.kind(), video.kind());

    let mut viewer = connect_receiver(&b, None).await;
    let (consumer, mut rx) = consume(&viewer, &b, &piped.pipe_producer).await;
    let packets = receive_n(&mut rx, 60).await;
    assert!(vp8_is_keyframe(&packets[0].payload), "starts on a keyframe");
    assert!(
        packets.iter().all(|p| vp8_stamp(&p.payload).is_some()),
        "intact"
    );

    // A keyframe request of the viewer crosses the pipe back to the publisher.
    let mid = video.rtp_parameters().mid.clone().unwrap();
    let asked =
        |stats: sluice_client::ClientStats| stats.keyframe_requests.get(&mid).copied().unwrap_or(0);
    let before = asked(publisher.client.stats().await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while asked(publisher.client.stats().await.unwrap()) == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no keyframe request crossed"
        );
        viewer
            .client
            .request_keyframe(consumer.rtp_parameters().mid.as_deref().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Pause and resume on worker 0 reach the consumer on worker 1.
    video.pause().await.unwrap();
    wait_event(&mut viewer.events, |e| {
        matches!(e, MediaEvent::ConsumerProducerPaused { consumer_id, .. } if consumer_id == consumer.id())
    })
    .await;
    video.resume().await.unwrap();
    wait_event(&mut viewer.events, |e| {
        matches!(e, MediaEvent::ConsumerProducerResumed { consumer_id, .. } if consumer_id == consumer.id())
    })
    .await;
    let _ = receive_n(&mut rx, 10).await;

    // Closing the source closes the pipe, the piped producer and its consumer.
    video.close().await.unwrap();
    wait_event(&mut viewer.events, |e| {
        matches!(e, MediaEvent::ConsumerClosed { consumer_id, .. } if consumer_id == consumer.id())
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (da, db) = (a.dump().await.unwrap(), b.dump().await.unwrap());
        let left = da.transport_ids.len() + db.transport_ids.len();
        let objects = da.consumer_ids.len() + db.producer_ids.len() + db.consumer_ids.len();
        // Only the two clients' transports remain.
        if left == 2 && objects == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{da:?} {db:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w0.close().await;
    w1.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_producer_piped_to_another_workers_router_delivers_in_order_until_it_closes() {
    let (w0, a, w1, b) = two_routers().await;
    let server_a = a.create_direct_transport(None).await.unwrap();
    let source = server_a
        .produce_data(DataProducerOptions::new("world"))
        .await
        .unwrap();
    let piped = PipedDataProducer::create(&a, &b, source.id())
        .await
        .unwrap();
    assert_eq!(piped.pipe_data_producer.id(), source.id());
    assert_eq!(piped.pipe_data_producer.label(), "world");
    let server_b = b.create_direct_transport(None).await.unwrap();
    let (_, received) = server_b
        .consume_data(DataConsumerOptions::new(source.id()))
        .await
        .unwrap();
    for i in 0..20 {
        source.send(DataMessage::text(format!("tick {i}"))).unwrap();
    }
    for i in 0..20 {
        let m = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("a message in time")
            .expect("the consumer is open");
        assert_eq!(m.data, format!("tick {i}").into_bytes());
    }
    source.close().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("the piped data producer closes");
    assert!(end.is_none(), "its consumer ends");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let db = b.dump().await.unwrap();
        if db.data_producer_ids.is_empty() && db.transport_ids.len() == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{db:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w0.close().await;
    w1.close().await;
}
