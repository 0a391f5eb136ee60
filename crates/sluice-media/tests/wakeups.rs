//! What wakes a worker besides datagrams: str0m's timeouts, counted on the virtual clock.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use sluice_client::{ClientNumbering, ReceivedRtp, SourceConfig};
use sluice_media::{BandwidthEstimation, MediaSettings, Worker};

/// str0m timeouts the worker ran over `span` of virtual time.
async fn timeouts_over(worker: &Worker, span: Duration) -> u64 {
    let before = worker.resource_usage().await.unwrap().timeouts;
    tokio::time::sleep(span).await;
    worker.resource_usage().await.unwrap().timeouts - before
}

#[tokio::test(start_paused = true)]
async fn a_listening_transport_wakes_its_worker_for_the_estimator_ten_times_a_second_not_forty() {
    // Every timer on time, so that only the estimator's interval changes the count (with
    // `timer_slack`, str0m's deadlines also run together on the speaker's datagrams).
    let (worker, router) = worker_and_router_with(MediaSettings {
        timer_slack: Duration::ZERO,
        ..MediaSettings::default()
    })
    .await;
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

/// What a voice room costs its worker over 10 s of virtual time: `peers` peers with a receive
/// transport each, the first `speaking` of them also with a send transport and an opus producer,
/// every peer hearing every other speaker.
struct VoiceRoom {
    wakeups: u64,
    datagrams: u64,
    /// Datagrams the first speaker's send transport received: its RTCP feedback.
    feedback: u64,
    heard: Vec<Vec<ReceivedRtp>>,
}

async fn voice_room(settings: MediaSettings, speaking: usize, peers: usize) -> VoiceRoom {
    let (worker, router) = worker_and_router_with(settings).await;
    let mut speakers = Vec::new();
    let mut listeners = Vec::new();
    let mut producers = Vec::new();
    for i in 0..peers {
        if i < speaking {
            let speaker = connect(&router, ClientNumbering::chromium(), None).await;
            producers.push(produce(&speaker, SourceConfig::audio()).await);
            speakers.push(speaker);
        }
        listeners.push(connect_receiver(&router, None).await);
    }
    let mut streams = Vec::new();
    for (i, listener) in listeners.iter().enumerate() {
        for (j, producer) in producers.iter().enumerate() {
            if i != j {
                streams.push(consume(listener, &router, producer).await);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (_, rx) in streams.iter_mut() {
        drain(rx);
    }
    let usage = worker.resource_usage().await.unwrap();
    let feedback = speakers[0].client.stats().await.unwrap().datagrams_in;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = worker.resource_usage().await.unwrap();
    VoiceRoom {
        wakeups: after.wakeups - usage.wakeups,
        datagrams: after.datagrams_received - usage.datagrams_received,
        feedback: speakers[0].client.stats().await.unwrap().datagrams_in - feedback,
        heard: streams.iter_mut().map(|(_, rx)| drain(rx)).collect(),
    }
}

#[tokio::test(start_paused = true)]
async fn listeners_timers_run_on_the_wake_ups_of_the_speakers_datagrams() {
    // One speaker (opus every 20 ms: ≈ 540 datagrams in 10 s with its RTCP), seven listeners
    // and the speaker's own receive transport. The listeners' transports' str0m deadlines (reports, estimator, ICE) wait up
    // to `timer_slack` and run on the speaker's wake-ups: ≈ 650-680 wake-ups in all, where each
    // had its own (≈ 1,170 with no slack).
    let room = voice_room(MediaSettings::default(), 1, 8).await;
    assert!(
        room.wakeups * 10 <= room.datagrams * 14,
        "{} wake-ups for {} datagrams",
        room.wakeups,
        room.datagrams
    );
    // The speaker's transport keeps its timers: its feedback goes out at str0m's pace (TWCC
    // every 50 ms, and reports).
    assert!(room.feedback >= 180, "{} feedback datagrams", room.feedback);
    // And every listener heard every packet.
    for heard in &room.heard {
        assert!(heard.len() >= 495, "{} packets in 10 s", heard.len());
        assert_continuous(heard);
    }

    let exact = voice_room(
        MediaSettings {
            timer_slack: Duration::ZERO,
            ..MediaSettings::default()
        },
        1,
        8,
    )
    .await;
    assert!(
        exact.wakeups * 10 >= exact.datagrams * 18,
        "with every timer on time: {} wake-ups for {} datagrams",
        exact.wakeups,
        exact.datagrams
    );
}
