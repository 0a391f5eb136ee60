//! Media reaches consumers intact: real clients over loopback UDP.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use sluice_client::{ClientNumbering, SourceConfig};
use sluice_media::ortc::MediaKind;

async fn fan_out_from(numbering: ClientNumbering) {
    let (worker, router) = worker_and_router().await;
    let publisher = connect(&router, numbering, None).await;
    let video = produce(&publisher, SourceConfig::video()).await;
    let audio = produce(&publisher, SourceConfig::audio()).await;

    let mut receivers = Vec::new();
    for _ in 0..2 {
        let peer = connect_receiver(&router, None).await;
        let (vc, vrx) = consume(&peer, &router, &video).await;
        let (ac, arx) = consume(&peer, &router, &audio).await;
        receivers.push((peer, vc, vrx, ac, arx));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    for (_peer, vc, vrx, ac, arx) in &mut receivers {
        let v = drain(vrx);
        let a = drain(arx);
        assert!(v.len() > 100, "video packets: {}", v.len());
        assert!(a.len() > 50, "audio packets: {}", a.len());
        for (consumer, packets, kind) in [(&*vc, &v, MediaKind::Video), (&*ac, &a, MediaKind::Audio)] {
            let params = consumer.rtp_parameters();
            let ssrc = params.encodings[0].ssrc.unwrap();
            let pt = params.codecs[0].payload_type;
            let mut frames: BTreeSet<(u32, u16)> = BTreeSet::new();
            for p in packets.iter() {
                assert_eq!(p.ssrc, ssrc, "rewritten SSRC");
                assert_eq!(p.payload_type, pt, "rewritten payload type");
                let stamp = stamp_of(kind, p).expect("payload arrives intact");
                assert!(frames.insert((stamp.frame, stamp.index)), "duplicate packet");
            }
            assert_continuous(packets);
            if kind == MediaKind::Video {
                // The first packet is a keyframe start and every frame is complete.
                assert!(sluice_client::media::vp8_is_keyframe(&packets[0].payload));
                let last_frame = frames.iter().map(|(f, _)| *f).max().unwrap();
                for p in packets.iter() {
                    let s = stamp_of(kind, p).unwrap();
                    if s.frame < last_frame {
                        for i in 0..s.count {
                            assert!(frames.contains(&(s.frame, i)), "frame {} misses packet {i}", s.frame);
                        }
                    }
                }
            }
        }
    }
    let stats = publisher.client.stats().await.unwrap();
    assert!(stats.rtp_sent > 150);
    worker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_and_opus_from_a_chromium_numbered_client_reach_two_consumers_intact() {
    fan_out_from(ClientNumbering::chromium()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_numbering_like_aiortc_is_forwarded_just_the_same() {
    fan_out_from(ClientNumbering::aiortc()).await;
}
