//! Media reaches consumers intact: real clients over loopback UDP.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use sluice_client::{ClientNumbering, SourceConfig};
use sluice_media::ortc::MediaKind;

async fn fan_out_from(numbering: ClientNumbering) {
    let (worker, router) = real_worker_and_router().await;
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
    for (_peer, vc, vrx, ac, arx) in &mut receivers {
        let v = receive_n(vrx, 100).await;
        let a = receive_n(arx, 50).await;
        for (consumer, packets, kind) in
            [(&*vc, &v, MediaKind::Video), (&*ac, &a, MediaKind::Audio)]
        {
            let params = consumer.rtp_parameters();
            let ssrc = params.encodings[0].ssrc.unwrap();
            let pt = params.codecs[0].payload_type;
            let mut frames: BTreeSet<(u32, u16)> = BTreeSet::new();
            for p in packets.iter() {
                assert_eq!(p.ssrc, ssrc, "rewritten SSRC");
                assert_eq!(p.payload_type, pt, "rewritten payload type");
                let stamp = stamp_of(kind, p).expect("payload arrives intact");
                assert!(
                    frames.insert((stamp.frame, stamp.index)),
                    "duplicate packet"
                );
            }
            assert_continuous(packets);
            if kind == MediaKind::Audio {
                // The sender's level (-30 dBov) in the extension id the receiver negotiated.
                assert!(
                    packets.iter().all(|p| p.audio_level == Some(-30)),
                    "audio levels: {:?}",
                    packets.iter().map(|p| p.audio_level).collect::<Vec<_>>()
                );
            }
            if kind == MediaKind::Video {
                // The first packet is a keyframe start and every frame is complete.
                assert!(sluice_client::media::vp8_is_keyframe(&packets[0].payload));
                let last_frame = frames.iter().map(|(f, _)| *f).max().unwrap();
                for p in packets.iter() {
                    let s = stamp_of(kind, p).unwrap();
                    if s.frame < last_frame {
                        for i in 0..s.count {
                            assert!(
                                frames.contains(&(s.frame, i)),
                                "frame {} misses packet {i}",
                                s.frame
                            );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transport_can_produce_and_consume_in_its_clients_numbering() {
    let (worker, router) = real_worker_and_router().await;
    // Each peer sends and receives on a single transport, numbered its own way.
    let a = connect(&router, ClientNumbering::chromium(), None).await;
    let b = connect(&router, ClientNumbering::aiortc(), None).await;
    let va = produce(&a, SourceConfig::video()).await;
    let vb = produce(&b, SourceConfig::video()).await;
    let (ca, mut ra) = consume(&a, &router, &vb).await;
    let (cb, mut rb) = consume(&b, &router, &va).await;
    // The consumers are numbered like their transport's client: VP8 96 for Chromium, 97 for aiortc.
    assert_eq!(ca.rtp_parameters().codecs[0].payload_type, 96);
    assert_eq!(cb.rtp_parameters().codecs[0].payload_type, 97);
    let mid_id = |c: &sluice_media::Consumer| {
        c.rtp_parameters()
            .header_extensions
            .iter()
            .find(|h| h.uri == sluice_client::numbering::URI_MID)
            .map(|h| h.id)
    };
    assert_eq!(mid_id(&ca), Some(4));
    assert_eq!(mid_id(&cb), Some(1));
    for rx in [&mut ra, &mut rb] {
        let packets = receive_n(rx, 40).await;
        assert!(
            packets
                .iter()
                .all(|p| stamp_of(MediaKind::Video, p).is_some())
        );
        assert_continuous(&packets);
    }
    worker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_contradicting_its_transports_numbering_is_refused() {
    let (worker, router) = real_worker_and_router().await;
    let peer = connect(&router, ClientNumbering::chromium(), None).await;
    let _video = produce(&peer, SourceConfig::video()).await;
    // Same transport, VP8 now claimed at 97, which is already VP8's RTX here.
    let other = ClientNumbering::aiortc()
        .producer_parameters(
            MediaKind::Video,
            "x1",
            vec![sluice_client::numbering::ssrc_encoding(5555, Some(5556))],
            "cname",
        )
        .unwrap();
    let err = peer
        .server
        .produce(sluice_media::ProducerOptions::new(MediaKind::Video, other))
        .await
        .unwrap_err();
    assert!(
        matches!(err, sluice_media::MediaError::Numbering(_)),
        "{err}"
    );
    // The transport still works and still has only its first producer.
    assert_eq!(router.dump().await.unwrap().producer_ids.len(), 1);
    worker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_only_router_forwards_audio_without_estimating_bandwidth() {
    let (worker, video_router) = real_worker_and_router().await;
    let opus = media_codecs()
        .into_iter()
        .filter(|c| c.kind == MediaKind::Audio)
        .collect::<Vec<_>>();
    let voice_router = worker.create_router(&opus).await.unwrap();

    for (router, estimates) in [(&video_router, true), (&voice_router, false)] {
        let publisher = connect(router, ClientNumbering::chromium(), None).await;
        let audio = produce(&publisher, SourceConfig::audio()).await;
        let receiver = connect_receiver(router, None).await;
        let (_consumer, mut rx) = consume(&receiver, router, &audio).await;
        let packets = receive_n(&mut rx, 50).await;
        assert_continuous(&packets);
        // Configured "twcc" (the default): a router with video estimates, a voice router does not
        // (the video router's estimate is waited for; the voice router had as many packets).
        let mut stats = receiver.server.get_stats().await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while estimates
            && stats.available_outgoing_bitrate.is_none()
            && tokio::time::Instant::now() < deadline
        {
            rx.recv().await;
            stats = receiver.server.get_stats().await.unwrap();
        }
        assert_eq!(
            stats.available_outgoing_bitrate.is_some(),
            estimates,
            "{stats:?}"
        );
    }
    worker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_own_audio_egress_off_audio_leaves_through_str0m_just_the_same() {
    let worker = sluice_media::Worker::spawn_with(
        0,
        &sluice_media::WorkerSettings::loopback(),
        sluice_media::MediaSettings {
            own_audio_egress: false,
            ..Default::default()
        },
    )
    .unwrap();
    let router = worker.create_router(&media_codecs()).await.unwrap();
    let publisher = connect(&router, ClientNumbering::chromium(), None).await;
    let audio = produce(&publisher, SourceConfig::audio()).await;
    let receiver = connect_receiver(&router, None).await;
    let (consumer, mut rx) = consume(&receiver, &router, &audio).await;
    let packets = receive_n(&mut rx, 50).await;
    let ssrc = consumer.rtp_parameters().encodings[0].ssrc.unwrap();
    assert!(packets.iter().all(|p| p.ssrc == ssrc));
    assert!(
        packets
            .iter()
            .all(|p| stamp_of(MediaKind::Audio, p).is_some())
    );
    assert_continuous(&packets);
    worker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audio_consumer_sends_sender_reports_that_describe_what_it_sent() {
    let (worker, router) = real_worker_and_router().await;
    let publisher = connect(&router, ClientNumbering::chromium(), None).await;
    let audio = produce(&publisher, SourceConfig::audio()).await;
    let receiver = connect_receiver(&router, None).await;
    let (consumer, mut rx) = consume(&receiver, &router, &audio).await;
    let ssrc = consumer.rtp_parameters().encodings[0].ssrc.unwrap();
    // Packets until two sender reports (one a second) have come: those received between them
    // are exactly what the second counts beyond the first (in order, on loopback).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut first = None;
    let mut between: Vec<sluice_client::ReceivedRtp> = Vec::new();
    let (report, next) = loop {
        let p = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("two sender reports within a minute")
            .expect("the stream goes on");
        match (first, p.sender_report) {
            (None, Some(r)) => first = Some(r),
            (Some(f), Some(r)) if r != f => break (r, p),
            _ => {}
        }
        if first.is_some() {
            between.push(p);
        }
    };
    let first = first.unwrap();
    // `between` starts with the first packet after the first report.
    assert_eq!(report.ssrc, ssrc);
    assert_eq!(first.ssrc, ssrc);
    assert_eq!(
        (report.packet_count - first.packet_count) as usize,
        between.len(),
        "packets counted between two reports"
    );
    let payload = next.payload.len() as u32;
    assert!(between.iter().all(|p| p.payload.len() as u32 == payload));
    assert_eq!(
        report.octet_count - first.octet_count,
        (report.packet_count - first.packet_count) * payload
    );
    let received = between;
    // Its RTP time is that of the packets around it (within a second at 48 kHz)…
    let gap = (report.rtp_time as u32).wrapping_sub(received.last().unwrap().timestamp);
    assert!(gap < 48_000, "{gap} ticks after the last packet before it");
    // …and its NTP time the wall clock's.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now_ms.abs_diff(report.ntp_unix_ms) < 60_000);
    worker.close().await;
}
