//! Keyframe requests flow from consumers to producers; a (re)started consumer begins on a keyframe.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use sluice_client::media::vp8_is_keyframe;
use sluice_client::{ClientNumbering, SourceConfig};
use sluice_media::ConsumerOptions;

#[tokio::test(start_paused = true)]
async fn a_pli_from_a_consumer_reaches_the_producer() {
    let (worker, router) = worker_and_router().await;
    let publisher = connect(&router, ClientNumbering::chromium(), None).await;
    let receiver = connect_receiver(&router, None).await;
    let video = produce(&publisher, SourceConfig::video()).await;
    let (consumer, mut rx) = consume(&receiver, &router, &video).await;
    let _ = collect(&mut rx, Duration::from_millis(1500)).await;
    let mid = publisher_mid(&video);
    let before = publisher.client.stats().await.unwrap();
    let before_requests = before.keyframe_requests.get(&mid).copied().unwrap_or(0);
    receiver
        .client
        .request_keyframe(consumer.rtp_parameters().mid.as_deref().unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = publisher.client.stats().await.unwrap();
    assert!(
        after.keyframe_requests.get(&mid).copied().unwrap_or(0) > before_requests,
        "the producer's client got no keyframe request: {after:?}"
    );
    // And the consumer got a keyframe after asking.
    let packets = drain(&mut rx);
    assert!(packets.iter().any(|p| vp8_is_keyframe(&p.payload)));
    worker.close().await;
}

fn publisher_mid(p: &sluice_media::Producer) -> String {
    p.rtp_parameters().mid.clone().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_paused_consumer_sends_nothing_and_resumes_on_a_keyframe() {
    let (worker, router) = worker_and_router().await;
    let publisher = connect(&router, ClientNumbering::chromium(), None).await;
    let receiver = connect_receiver(&router, None).await;
    let video = produce(&publisher, SourceConfig::video()).await;
    // Created paused, as mediasoup-demo does.
    let consumer = receiver
        .server
        .consume(ConsumerOptions::new(
            video.id(),
            router.rtp_capabilities().clone(),
        ))
        .await
        .unwrap();
    let mut rx = receiver
        .client
        .consume(consumer.rtp_parameters().clone())
        .await
        .unwrap();
    let paused = collect(&mut rx, Duration::from_millis(800)).await;
    assert!(
        paused.is_empty(),
        "a paused consumer sent {} packets",
        paused.len()
    );

    // Past the producer's periodic keyframe, so the first one seen was requested by the resume.
    consumer.resume().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .expect("media after resume")
        .unwrap();
    assert!(
        vp8_is_keyframe(&first.payload),
        "resume starts on a keyframe"
    );
    let mut running = collect(&mut rx, Duration::from_millis(500)).await;

    consumer.pause().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.extend(drain(&mut rx));
    let last_seq = running.last().map_or(first.seq, |p| p.seq);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(drain(&mut rx).is_empty());
    consumer.resume().await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .expect("media after the second resume")
        .unwrap();
    assert!(vp8_is_keyframe(&again.payload));
    let mut all = vec![first];
    all.extend(running);
    all.push(again.clone());
    all.extend(collect(&mut rx, Duration::from_millis(300)).await);
    assert!(again.seq > last_seq);
    // Sequence numbers stay continuous across the pause.
    assert_continuous(&all);
    worker.close().await;
}
