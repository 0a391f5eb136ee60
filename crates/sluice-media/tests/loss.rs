//! NACK and RTX recover loss on both hops.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use sluice_client::{ClientNumbering, SourceConfig};
use sluice_media::MediaSettings;
use sluice_media::ortc::MediaKind;

#[tokio::test(start_paused = true)]
async fn five_percent_loss_on_both_hops_leaves_no_gap_in_what_the_consumer_sees() {
    // The consumer's packets written by sluice, which answers the client's NACKs with RTX.
    lossy_hops_leave_no_gap(MediaSettings::default()).await;
}

#[tokio::test(start_paused = true)]
async fn with_the_own_video_egress_off_str0m_recovers_the_same_loss() {
    lossy_hops_leave_no_gap(MediaSettings {
        own_video_egress: false,
        ..Default::default()
    })
    .await;
}

async fn lossy_hops_leave_no_gap(settings: MediaSettings) {
    let (worker, router) = worker_and_router_with(settings).await;
    let server_addr = worker.local_addr();
    let up = Relay::start(server_addr, 0.0, 7).await.unwrap();
    let down = Relay::start(server_addr, 0.0, 11).await.unwrap();
    let publisher = connect(&router, ClientNumbering::chromium(), Some(up.addr())).await;
    let receiver = connect_receiver(&router, Some(down.addr())).await;
    let video = produce(&publisher, SourceConfig::video()).await;
    let (consumer, mut rx) = consume(&receiver, &router, &video).await;
    // Connected and flowing; now lose 5 % each way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    up.set_loss(0.05);
    down.set_loss(0.05);
    tokio::time::sleep(Duration::from_secs(4)).await;
    up.set_loss(0.0);
    down.set_loss(0.0);
    // Let the last retransmissions arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let packets = drain(&mut rx);
    let (_, dropped_up) = up.counts();
    let (_, dropped_down) = down.counts();
    assert!(
        dropped_up > 10 && dropped_down > 10,
        "the relays dropped {dropped_up} / {dropped_down}"
    );

    // Every frame the consumer started receiving is complete, every payload intact.
    let mut frames: BTreeMap<u32, (u16, Vec<u16>)> = BTreeMap::new();
    for p in &packets {
        let s = stamp_of(MediaKind::Video, p).expect("payload intact");
        let e = frames.entry(s.frame).or_insert((s.count, Vec::new()));
        e.1.push(s.index);
    }
    let first = *frames.keys().next().unwrap();
    let last = *frames.keys().last().unwrap();
    assert!(last - first > 100, "frames {first}..{last}");
    for frame in first..last {
        let (count, indexes) = frames
            .get(&frame)
            .unwrap_or_else(|| panic!("frame {frame} lost"));
        let mut got = indexes.clone();
        got.sort_unstable();
        got.dedup();
        assert_eq!(
            got.len(),
            usize::from(*count),
            "frame {frame} incomplete: {got:?}"
        );
    }
    assert_continuous(&packets);
    // The consumer read the client's NACKs (its own egress) or str0m did.
    let stats = consumer.get_stats().await.unwrap();
    assert!(stats[0].nack_count > 0, "{stats:?}");
    worker.close().await;
}

#[tokio::test(start_paused = true)]
async fn loss_beyond_what_resends_repair_lowers_the_consumers_score() {
    for settings in [
        MediaSettings::default(),
        MediaSettings {
            own_video_egress: false,
            ..Default::default()
        },
    ] {
        let (worker, router) = worker_and_router_with(settings).await;
        let down = Relay::start(worker.local_addr(), 0.0, 5).await.unwrap();
        let publisher = connect(&router, ClientNumbering::chromium(), None).await;
        let receiver = connect_receiver(&router, Some(down.addr())).await;
        let video = produce(&publisher, SourceConfig::video()).await;
        let (consumer, _rx) = consume(&receiver, &router, &video).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(consumer.get_stats().await.unwrap()[0].score, 10);
        // Resends make up at most 15 % of what a consumer sends: 40 % loss shows in the
        // client's receiver reports.
        down.set_loss(0.4);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let stats = consumer.get_stats().await.unwrap();
        assert!(
            stats[0].score < 10 && stats[0].fraction_lost > 0,
            "{stats:?}"
        );
        worker.close().await;
    }
}
