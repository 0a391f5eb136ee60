//! Plain RTP transports: a tool that does not speak WebRTC (here a bare UDP socket, as ffmpeg
//! would) sends a producer's RTP to the transport's port, and WebRTC consumers get it intact.
//! Real sockets on loopback; every wait is for a condition.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use sluice_client::media::{Stamp, Vp8Fields, audio_payload, vp8_payload};
use sluice_media::ortc::{MediaKind, RtpParameters};
use sluice_media::{MediaError, MediaEvent, PlainTransportOptions, ProducerOptions};
use tokio::net::UdpSocket;

/// mediasoup-demo's broadcaster parameters: VP8 on payload type 101, SSRC 2222; opus on 100,
/// SSRC 1111.
fn params(kind: MediaKind) -> RtpParameters {
    let json = match kind {
        MediaKind::Video => {
            r#"{"codecs":[{"mimeType":"video/VP8","payloadType":101,"clockRate":90000}],
                "encodings":[{"ssrc":2222}]}"#
        }
        MediaKind::Audio => {
            r#"{"codecs":[{"mimeType":"audio/opus","payloadType":100,"clockRate":48000,"channels":2}],
                "encodings":[{"ssrc":1111}]}"#
        }
    };
    serde_json::from_str(json).unwrap()
}

fn rtp(pt: u8, marker: bool, seq: u16, timestamp: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, (u8::from(marker) << 7) | pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Sends one-packet VP8 frames (a keyframe every tenth) and opus packets to `to`, sequence
/// numbers starting near the wrap.
async fn send_media(socket: &UdpSocket, to: SocketAddr, frames: std::ops::Range<u32>) {
    for frame in frames {
        let stamp = Stamp {
            layer: 0,
            frame,
            index: 0,
            count: 1,
            sent_us: 0,
        };
        let fields = Vp8Fields {
            picture_id: frame as u16,
            tl0_pic_idx: 0,
            temporal_id: 0,
            layer_sync: false,
        };
        let seq = 65530u16.wrapping_add(frame as u16);
        let video = vp8_payload(frame % 10 == 0, fields, stamp, 400);
        socket
            .send_to(&rtp(101, true, seq, frame * 3000, 2222, &video), to)
            .await
            .unwrap();
        let audio = audio_payload(stamp, 80);
        socket
            .send_to(&rtp(100, false, seq, frame * 960, 1111, &audio), to)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_sent_to_a_comedia_plain_transport_reaches_webrtc_consumers_intact() {
    let (worker, router) = real_worker_and_router().await;
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let plain = router
        .create_plain_transport(PlainTransportOptions {
            comedia: true,
            rtcp_mux: false,
            events: Some(events_tx),
            ..PlainTransportOptions::default()
        })
        .await
        .unwrap();
    assert_eq!(plain.ip(), worker.local_addr().ip());
    assert!(plain.rtcp_port().is_some_and(|p| p != plain.port()));
    // It learns its remote: an ip and port given to connect are refused, saying so.
    let err = plain
        .connect("127.0.0.1:9".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MediaError::InvalidRemote(why) if why.contains("is comedia")),
        "{err}"
    );
    let video = plain
        .produce(ProducerOptions::new(
            MediaKind::Video,
            params(MediaKind::Video),
        ))
        .await
        .unwrap();
    let audio = plain
        .produce(ProducerOptions::new(
            MediaKind::Audio,
            params(MediaKind::Audio),
        ))
        .await
        .unwrap();
    let viewer = connect_receiver(&router, None).await;
    let (vc, mut vrx) = consume(&viewer, &router, &video).await;
    let (ac, mut arx) = consume(&viewer, &router, &audio).await;
    // The sender named no CNAME; the consumers carry the transport's, one for both (a browser
    // ties SSRCs to tracks by it, and syncs audio with video).
    let cname = vc.rtp_parameters().rtcp.cname.clone();
    assert!(cname.as_deref().is_some_and(|c| !c.is_empty()), "{cname:?}");
    assert_eq!(ac.rtp_parameters().rtcp.cname, cname);

    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = SocketAddr::new(plain.ip(), plain.port());
    // A stranger's packet before the sender's is taken as the sender: comedia learns from the
    // first packet. Here the sender is first, and a stranger afterwards is ignored.
    send_media(&sender, to, 0..1).await;
    // (The producers' demand was reported as the viewer consumed them.)
    let learnt = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap()
            .unwrap();
        if !matches!(event, MediaEvent::ProducerDemandChange { .. }) {
            break event;
        }
    };
    assert!(
        matches!(learnt, MediaEvent::IceSelectedTupleChange { remote, .. } if remote == sender.local_addr().unwrap()),
        "{learnt:?}"
    );
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let video_bytes = vp8_payload(
        true,
        Vp8Fields {
            picture_id: 0,
            tl0_pic_idx: 0,
            temporal_id: 0,
            layer_sync: false,
        },
        Stamp {
            layer: 9,
            frame: 9999,
            index: 0,
            count: 1,
            sent_us: 0,
        },
        400,
    );
    stranger
        .send_to(&rtp(101, true, 1, 0, 2222, &video_bytes), to)
        .await
        .unwrap();

    // Keyframes come every tenth frame: the consumer starts at one, then gets every frame.
    let sending = tokio::spawn(async move {
        send_media(&sender, to, 1..60).await;
        sender
    });
    let v = receive_n(&mut vrx, 30).await;
    let a = receive_n(&mut arx, 30).await;
    sending.await.unwrap();
    assert!(sluice_client::media::vp8_is_keyframe(&v[0].payload));
    assert_continuous(&v);
    assert_continuous(&a);
    for p in &v {
        let stamp = stamp_of(MediaKind::Video, p).expect("payload arrives intact");
        assert_ne!(stamp.frame, 9999, "the stranger's packet is dropped");
    }
    let frames: Vec<u32> = v
        .iter()
        .map(|p| stamp_of(MediaKind::Video, p).unwrap().frame)
        .collect();
    assert!(
        frames.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive frames across the sequence-number wrap: {frames:?}"
    );
    for p in &a {
        assert!(stamp_of(MediaKind::Audio, p).is_some(), "audio intact");
    }
    let stats = plain.get_stats().await.unwrap();
    assert!(stats.packets_received >= 2 * 31, "{stats:?}");
    assert_eq!(stats.tuple_remote, Some(learnt_remote(&learnt)));

    // Closing the transport closes its producers, and their consumers are told.
    plain.close().await.unwrap();
    let dump = router.dump().await.unwrap();
    assert!(
        dump.producer_ids.is_empty() && dump.consumer_ids.is_empty(),
        "{dump:?}"
    );
    worker.close().await;
}

fn learnt_remote(event: &MediaEvent) -> String {
    match event {
        MediaEvent::IceSelectedTupleChange { remote, .. } => remote.to_string(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_plain_transport_takes_rtp_only_from_its_remote_and_needs_ssrcs() {
    let (worker, router) = real_worker_and_router().await;
    let plain = router
        .create_plain_transport(PlainTransportOptions::default())
        .await
        .unwrap();
    assert_eq!(plain.rtcp_port(), None, "rtcp-mux by default");
    // Without SSRCs the streams could not be told apart.
    let mut no_ssrc = params(MediaKind::Audio);
    no_ssrc.encodings[0].ssrc = None;
    let err = plain
        .produce(ProducerOptions::new(MediaKind::Audio, no_ssrc))
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::InvalidRtpParameters(_)), "{err}");
    let audio = plain
        .produce(ProducerOptions::new(
            MediaKind::Audio,
            params(MediaKind::Audio),
        ))
        .await
        .unwrap();
    let viewer = connect_receiver(&router, None).await;
    let (_ac, mut arx) = consume(&viewer, &router, &audio).await;

    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Nowhere to send to: refused, and the transport stays unconnected.
    for nowhere in [
        "0.0.0.0:9",
        "255.255.255.255:9",
        "224.0.0.1:9",
        "127.0.0.1:0",
        "[::]:9",
        "[ff02::1]:9",
    ] {
        let err = plain.connect(nowhere.parse().unwrap()).await.unwrap_err();
        assert!(
            matches!(err, MediaError::InvalidRemote(_)),
            "{nowhere}: {err}"
        );
    }
    plain.connect(sender.local_addr().unwrap()).await.unwrap();
    assert!(matches!(
        plain.connect(sender.local_addr().unwrap()).await,
        Err(MediaError::AlreadyConnected(_))
    ));
    let to = SocketAddr::new(plain.ip(), plain.port());
    // Garbage and another address's RTP first: dropped, never a crash.
    for junk in [&[0xffu8; 3][..], &[0x80, 100, 0, 1][..], &[0x80; 40][..]] {
        sender.send_to(junk, to).await.unwrap();
    }
    let stamp = |frame| Stamp {
        layer: 0,
        frame,
        index: 0,
        count: 1,
        sent_us: 0,
    };
    other
        .send_to(
            &rtp(100, false, 7, 0, 1111, &audio_payload(stamp(777), 80)),
            to,
        )
        .await
        .unwrap();
    for frame in 0..20u32 {
        let p = rtp(
            100,
            false,
            frame as u16,
            frame * 960,
            1111,
            &audio_payload(stamp(frame), 80),
        );
        sender.send_to(&p, to).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let a = receive_n(&mut arx, 20).await;
    let frames: Vec<u32> = a
        .iter()
        .map(|p| stamp_of(MediaKind::Audio, p).unwrap().frame)
        .collect();
    assert_eq!(frames, (0..20).collect::<Vec<_>>());
    let usage = worker.resource_usage().await.unwrap();
    assert!(usage.dropped_unknown_source >= 1, "{usage:?}");
    assert!(usage.dropped_malformed >= 2, "{usage:?}");
    worker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_consumer_sends_a_webrtc_producers_rtp_and_sender_reports_to_its_remote_starting_at_a_keyframe()
 {
    let (worker, router) = real_worker_and_router().await;
    let publisher = connect(&router, sluice_client::ClientNumbering::chromium(), None).await;
    let video = produce(&publisher, sluice_client::SourceConfig::video()).await;
    let audio = produce(&publisher, sluice_client::SourceConfig::audio()).await;
    let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let plain = router
        .create_plain_transport(PlainTransportOptions::default())
        .await
        .unwrap();
    plain.connect(receiver.local_addr().unwrap()).await.unwrap();
    let caps = router.rtp_capabilities().clone();
    let vc = plain
        .consume(sluice_media::ConsumerOptions::new(video.id(), caps.clone()))
        .await
        .unwrap();
    let ac = plain
        .consume(sluice_media::ConsumerOptions::new(audio.id(), caps))
        .await
        .unwrap();
    vc.resume().await.unwrap();
    ac.resume().await.unwrap();
    let params = [vc.rtp_parameters().clone(), ac.rtp_parameters().clone()];
    for p in &params {
        assert!(p.header_extensions.is_empty() && p.mid.is_none(), "{p:?}");
        assert!(p.encodings[0].rtx.is_none());
    }
    let (vssrc, vpt) = (
        params[0].encodings[0].ssrc.unwrap(),
        params[0].codecs[0].payload_type,
    );
    let (assrc, apt) = (
        params[1].encodings[0].ssrc.unwrap(),
        params[1].codecs[0].payload_type,
    );

    let mut video_packets: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut audio_packets = 0;
    let mut reported: std::collections::HashSet<u32> = Default::default();
    let mut buf = [0u8; 2048];
    while video_packets.len() < 100 || audio_packets < 30 || reported.len() < 2 {
        let (n, from) = tokio::time::timeout(Duration::from_secs(30), receiver.recv_from(&mut buf))
            .await
            .expect("the plain consumers send")
            .unwrap();
        assert_eq!(
            from.port(),
            plain.port(),
            "sent from the transport's own port"
        );
        let p = &buf[..n];
        if p[1] == 200 {
            // Each consumer's sender report (RFC 3550 §6.4.1), on the RTP port (rtcp_mux).
            let ssrc = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            assert!(ssrc == vssrc || ssrc == assrc, "a report of {ssrc}");
            reported.insert(ssrc);
            continue;
        }
        assert_eq!(p[0] & 0xd0, 0x80, "RTP version 2, no extension");
        let pt = p[1] & 0x7f;
        let seq = u16::from_be_bytes([p[2], p[3]]);
        let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
        let payload = p[12..].to_vec();
        if ssrc == vssrc {
            assert_eq!(pt, vpt);
            assert!(
                sluice_client::media::vp8_stamp(&payload).is_some(),
                "video intact"
            );
            video_packets.push((seq, payload));
        } else {
            assert_eq!((ssrc, pt), (assrc, apt), "an SSRC it was not given");
            assert!(
                sluice_client::media::audio_stamp(&payload).is_some(),
                "audio intact"
            );
            audio_packets += 1;
        }
    }
    assert!(
        sluice_client::media::vp8_is_keyframe(&video_packets[0].1),
        "the first packet starts a keyframe"
    );
    for w in video_packets.windows(2) {
        assert_eq!(
            w[1].0,
            w[0].0.wrapping_add(1),
            "continuous sequence numbers"
        );
    }
    let stats = plain.get_stats().await.unwrap();
    assert!(stats.packets_sent >= 132, "{stats:?}");

    plain.close().await.unwrap();
    let dump = router.dump().await.unwrap();
    assert_eq!(dump.consumer_ids.len(), 0, "{dump:?}");
    assert_eq!(dump.producer_ids.len(), 2);
    worker.close().await;
}
