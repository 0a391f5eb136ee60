//! What wakes a worker besides datagrams: str0m's timeouts, counted on the virtual clock.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use sluice_client::{ClientNumbering, SourceConfig};
use sluice_media::{BandwidthEstimation, Worker};

/// str0m timeouts the worker ran over `span` of virtual time.
async fn timeouts_over(worker: &Worker, span: Duration) -> u64 {
    let before = worker.resource_usage().await.unwrap().timeouts;
    tokio::time::sleep(span).await;
    worker.resource_usage().await.unwrap().timeouts - before
}

#[tokio::test(start_paused = true)]
async fn a_listening_transport_wakes_its_worker_for_the_estimator_ten_times_a_second_not_forty() {
    let (worker, router) = worker_and_router().await;
    // A listener in a voice room: it estimates (by default, with TWCC), and its audio consumer
    // writes its own packets, so str0m's delay-based estimator has nothing to measure.
    assert_eq!(BandwidthEstimation::default(), BandwidthEstimation::Twcc);
    let listener = connect_receiver(&router, None).await;
    let speaker = connect(&router, ClientNumbering::chromium(), None).await;
    let audio = produce(&speaker, SourceConfig::audio()).await;
    let (_consumer, mut rx) = consume(&listener, &router, &audio).await;
    let heard = collect(&mut rx, Duration::from_secs(2)).await;
    assert!(
        heard.len() >= 90,
        "the listener hears the speaker: {}",
        heard.len()
    );
    // Over 10 s, the listener's transport wakes its worker ≈ 100 times (the estimator's 25 ms
    // became 100 ms; str0m's other deadlines mostly fall due by then and run with it) and the
    // speaker's, which receives media, ≈ 110 times: 208 in all, where it was 512.
    let listening = timeouts_over(&worker, Duration::from_secs(10)).await;
    assert!(
        (180..=250).contains(&listening),
        "{listening} timeouts in 10 s"
    );
    // And the listener heard every packet meanwhile (opus at 50 packets a second).
    let during = drain(&mut rx);
    assert!(during.len() >= 495, "{} packets in 10 s", during.len());
    assert_continuous(&during);
}
