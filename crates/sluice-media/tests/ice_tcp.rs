//! ICE over TCP: clients that reach the worker through its TCP listener (RFC 6544 passive
//! candidates, RFC 4571 framing) get the same media and data as over UDP. Real sockets on
//! loopback; every wait is for a condition.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use sluice_client::{ClientNumbering, ClientTransportOptions, SourceConfig};
use sluice_media::ortc::{IceCandidateTcpType, MediaKind, Protocol};
use sluice_media::{
    DataConsumerOptions, DataMessage, DataProducerOptions, MediaError, TcpPort,
    WebRtcTransportOptions, Worker, WorkerSettings,
};

fn tcp_client(numbering: ClientNumbering) -> ClientTransportOptions {
    let mut options = ClientTransportOptions::new(numbering);
    options.tcp = true;
    options
}

fn tcp_only() -> WebRtcTransportOptions {
    WebRtcTransportOptions {
        enable_udp: false,
        ..WebRtcTransportOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_offers_udp_first_and_a_passive_tcp_candidate_on_the_same_port() {
    let (worker, router) = real_worker_and_router().await;
    let both = router
        .create_webrtc_transport(WebRtcTransportOptions::default())
        .await
        .unwrap();
    let [udp, tcp] = both.ice_candidates() else {
        panic!("two candidates: {:?}", both.ice_candidates());
    };
    assert_eq!((udp.protocol, tcp.protocol), (Protocol::Udp, Protocol::Tcp));
    assert_eq!(tcp.tcp_type, Some(IceCandidateTcpType::Passive));
    assert!(udp.priority > tcp.priority, "UDP is preferred");
    assert_eq!(udp.port, worker.local_addr().port());
    assert_eq!(Some(tcp.port), worker.tcp_local_addr().map(|a| a.port()));
    assert_eq!(tcp.port, udp.port, "TCP listens on the UDP port's number");

    let only = router.create_webrtc_transport(tcp_only()).await.unwrap();
    let protocols: Vec<Protocol> = only.ice_candidates().iter().map(|c| c.protocol).collect();
    assert_eq!(protocols, vec![Protocol::Tcp]);
    worker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_tcp_offers_udp_only_and_refuses_a_tcp_only_transport() {
    let settings = WorkerSettings {
        tcp: TcpPort::Off,
        ..WorkerSettings::loopback()
    };
    let worker = Worker::spawn(0, &settings).unwrap();
    assert_eq!(worker.tcp_local_addr(), None);
    let router = worker.create_router(&media_codecs()).await.unwrap();
    let t = router
        .create_webrtc_transport(WebRtcTransportOptions::default())
        .await
        .unwrap();
    assert!(
        t.ice_candidates()
            .iter()
            .all(|c| c.protocol == Protocol::Udp)
    );
    let err = router
        .create_webrtc_transport(tcp_only())
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::NoCandidate(_)), "{err}");
    worker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_audio_and_data_flow_between_a_tcp_client_and_a_udp_client() {
    let (worker, router) = real_worker_and_router().await;
    let publisher =
        connect_with(&router, tcp_client(ClientNumbering::chromium()), tcp_only()).await;
    let video = produce(&publisher, SourceConfig::video()).await;
    let audio = produce(&publisher, SourceConfig::audio()).await;
    let receiver = connect_receiver(&router, None).await;
    let (_vc, mut vrx) = consume(&receiver, &router, &video).await;
    let (_ac, mut arx) = consume(&receiver, &router, &audio).await;
    let v = receive_n(&mut vrx, 100).await;
    let a = receive_n(&mut arx, 50).await;
    assert_continuous(&v);
    assert_continuous(&a);
    assert!(sluice_client::media::vp8_is_keyframe(&v[0].payload));
    assert!(a.iter().all(|p| stamp_of(MediaKind::Audio, p).is_some()));

    // And back: the TCP client consumes what the UDP one sends.
    let back = produce(&receiver, SourceConfig::audio()).await;
    let (_bc, mut brx) = consume(&publisher, &router, &back).await;
    let b = receive_n(&mut brx, 50).await;
    assert_continuous(&b);

    // Data over SCTP over DTLS over TCP.
    let channel = publisher
        .client
        .produce_data("game", true, None, None, None)
        .await
        .unwrap();
    let dp = publisher
        .server
        .produce_data(DataProducerOptions::sctp(
            channel.sctp_stream_parameters.clone(),
            "game",
        ))
        .await
        .unwrap();
    let dc = receiver
        .server
        .consume_data(DataConsumerOptions::new(dp.id()))
        .await
        .unwrap();
    let mut drx = receiver
        .client
        .consume_data(dc.sctp_stream_parameters().cloned().unwrap(), dc.label())
        .await
        .unwrap();
    let stream = channel.sctp_stream_parameters.stream_id;
    let got = loop {
        publisher
            .client
            .send_data(stream, DataMessage::text("move 1 2"))
            .unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), drx.recv()).await {
            break m;
        }
    };
    assert_eq!((got.binary, &got.data[..]), (false, &b"move 1 2"[..]));

    let stats = publisher.server.get_stats().await.unwrap();
    let tuple = stats.ice_selected_tuple.expect("a selected tuple");
    assert_eq!(tuple.protocol, Protocol::Tcp);
    assert_eq!(
        tuple.remote_port,
        publisher.client.local_addr().port(),
        "the tuple is the client's connection"
    );
    let usage = worker.resource_usage().await.unwrap();
    assert_eq!((usage.tcp_connections, usage.tcp_rejected), (1, 0));

    // Closing the transport closes its connection.
    publisher.server.close().await.unwrap();
    for _ in 0..100 {
        if worker.resource_usage().await.unwrap().tcp_connections == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(worker.resource_usage().await.unwrap().tcp_connections, 0);
    worker.close().await;
}
