//! Pause, resume and close propagate (docs/closures.md), and every count returns to zero.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use sluice_client::media::vp8_is_keyframe;
use sluice_client::{ClientNumbering, SourceConfig};
use sluice_media::{CloseReason, MediaError, MediaEvent};

#[tokio::test(start_paused = true)]
async fn a_paused_producer_pauses_its_consumers_and_its_resume_restarts_them_on_a_keyframe() {
    let (worker, router) = worker_and_router().await;
    let publisher = connect(&router, ClientNumbering::chromium(), None).await;
    let mut receiver = connect_receiver(&router, None).await;
    let video = produce(&publisher, SourceConfig::video()).await;
    let (consumer, mut rx) = consume(&receiver, &router, &video).await;
    assert!(
        !collect(&mut rx, Duration::from_millis(600))
            .await
            .is_empty()
    );

    video.pause().await.unwrap();
    let paused = wait_event(&mut receiver.events, Duration::from_secs(2), |e| {
        matches!(e, MediaEvent::ConsumerProducerPaused { consumer_id, .. } if consumer_id == consumer.id())
    })
    .await;
    assert!(paused.is_some(), "consumer was told its producer paused");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = drain(&mut rx);
    assert!(
        collect(&mut rx, Duration::from_millis(600))
            .await
            .is_empty(),
        "nothing flows while paused"
    );
    assert!(consumer.dump().await.unwrap().producer_paused);

    video.resume().await.unwrap();
    let resumed = wait_event(&mut receiver.events, Duration::from_secs(2), |e| {
        matches!(e, MediaEvent::ConsumerProducerResumed { .. })
    })
    .await;
    assert!(resumed.is_some());
    let first = tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(vp8_is_keyframe(&first.payload));
    worker.close().await;
}

#[tokio::test(start_paused = true)]
async fn closing_a_producer_closes_its_consumers_with_producer_closed() {
    let (worker, router) = worker_and_router().await;
    let publisher = connect(&router, ClientNumbering::chromium(), None).await;
    let mut a = connect_receiver(&router, None).await;
    let mut b = connect_receiver(&router, None).await;
    let video = produce(&publisher, SourceConfig::video()).await;
    let (ca, _ra) = consume(&a, &router, &video).await;
    let (cb, _rb) = consume(&b, &router, &video).await;

    video.close().await.unwrap();
    for (peer, consumer) in [(&mut a, &ca), (&mut b, &cb)] {
        let event = wait_event(&mut peer.events, Duration::from_secs(2), |e| {
            matches!(e, MediaEvent::ConsumerClosed { .. })
        })
        .await
        .expect("consumer closed event");
        assert_eq!(
            event,
            MediaEvent::ConsumerClosed {
                transport_id: peer.server.id().to_owned(),
                consumer_id: consumer.id().to_owned(),
                reason: CloseReason::ProducerClosed,
            }
        );
        assert!(matches!(
            consumer.pause().await,
            Err(MediaError::UnknownConsumer(_))
        ));
    }
    let dump = router.dump().await.unwrap();
    assert!(dump.producer_ids.is_empty() && dump.consumer_ids.is_empty());
    assert!(matches!(
        video.pause().await,
        Err(MediaError::UnknownProducer(_))
    ));
    worker.close().await;
}

#[tokio::test(start_paused = true)]
async fn closing_transports_and_the_router_cascades_and_every_count_returns_to_zero() {
    let (worker, router) = worker_and_router().await;
    let publisher = connect(&router, ClientNumbering::chromium(), None).await;
    let mut receiver = connect_receiver(&router, None).await;
    let video = produce(&publisher, SourceConfig::video()).await;
    let audio = produce(&publisher, SourceConfig::audio()).await;
    let (vc, _vr) = consume(&receiver, &router, &video).await;
    let (_ac, _ar) = consume(&receiver, &router, &audio).await;
    // A second, empty router on the same worker.
    let other = worker.create_router(&media_codecs()).await.unwrap();
    let dump = worker.dump().await.unwrap();
    assert_eq!((dump.transports, dump.producers, dump.consumers), (2, 2, 2));
    assert_eq!(dump.router_ids.len(), 2);

    // The publisher's transport closes: its producers, then their consumers elsewhere.
    publisher.server.close().await.unwrap();
    let closed = wait_event(
        &mut receiver.events,
        Duration::from_secs(2),
        |e| matches!(e, MediaEvent::ConsumerClosed { consumer_id, .. } if consumer_id == vc.id()),
    )
    .await;
    assert!(matches!(
        closed,
        Some(MediaEvent::ConsumerClosed {
            reason: CloseReason::ProducerClosed,
            ..
        })
    ));
    let dump = worker.dump().await.unwrap();
    assert_eq!((dump.transports, dump.producers, dump.consumers), (1, 0, 0));

    // The router closes: the remaining transport reports it.
    router.close().await.unwrap();
    let gone = wait_event(&mut receiver.events, Duration::from_secs(2), |e| {
        matches!(e, MediaEvent::TransportClosed { .. })
    })
    .await;
    assert_eq!(
        gone,
        Some(MediaEvent::TransportClosed {
            transport_id: receiver.server.id().to_owned(),
            reason: CloseReason::RouterClosed,
        })
    );
    other.close().await.unwrap();
    let dump = worker.dump().await.unwrap();
    assert_eq!(dump.router_ids.len(), 0);
    assert_eq!((dump.transports, dump.producers, dump.consumers), (0, 0, 0));
    assert_eq!(
        (dump.ufrag_entries, dump.address_entries, dump.timers),
        (0, 0, 0)
    );
    assert!(matches!(
        receiver.server.close().await,
        Err(MediaError::UnknownTransport(_))
    ));

    worker.close().await;
    assert!(matches!(
        worker.dump().await,
        Err(MediaError::WorkerClosed(0))
    ));
}
