//! Hostile input never panics the worker, and the legitimate session keeps forwarding.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use sluice_client::{ClientNumbering, SourceConfig};
use sluice_media::{
    CloseReason, DataConsumerOptions, DataProducerOptions, MediaEvent, WebRtcTransportOptions,
    Worker, WorkerSettings,
};

fn noise(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

/// A STUN binding request with this USERNAME and a bogus MESSAGE-INTEGRITY.
fn stun_request(username: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    let u = username.as_bytes();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(u.len() as u16).to_be_bytes());
    attrs.extend_from_slice(u);
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    attrs.extend_from_slice(&0x0008u16.to_be_bytes());
    attrs.extend_from_slice(&20u16.to_be_bytes());
    attrs.extend_from_slice(&[0xab; 20]);
    let mut m = Vec::new();
    m.extend_from_slice(&0x0001u16.to_be_bytes());
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&0x2112_a442u32.to_be_bytes());
    m.extend_from_slice(&[7; 12]);
    m.extend_from_slice(&attrs);
    m
}

#[tokio::test(start_paused = true)]
async fn garbage_from_anywhere_and_on_a_validated_tuple_never_stops_forwarding() {
    let (worker, router) = worker_and_router().await;
    let relay = Relay::start(worker.local_addr(), 0.0, 3).await.unwrap();
    let publisher = connect(&router, ClientNumbering::chromium(), Some(relay.addr())).await;
    let receiver = connect_receiver(&router, None).await;
    let video = produce(&publisher, SourceConfig::video()).await;
    let (_consumer, mut rx) = consume(&receiver, &router, &video).await;
    assert!(
        !collect(&mut rx, Duration::from_millis(500))
            .await
            .is_empty()
    );

    // From an address no transport validated: random bytes, RTP-looking and DTLS-looking data.
    let net = net().unwrap();
    let stranger = client_addr();
    let mut seed = 0x5eed_u64;
    for i in 0..2000 {
        let mut d = noise(&mut seed, 1 + i % 300);
        d[0] = [0x00, 0x16, 0x80, 0x90, 0xff][i % 5];
        net.send(stranger, worker.local_addr(), &d);
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // STUN with an unknown ufrag, and with the right ufrag but a wrong integrity.
    let ufrag = &publisher.server.ice_parameters().username_fragment;
    for username in ["nosuchufrag:x".to_owned(), format!("{ufrag}:x")] {
        net.send(stranger, worker.local_addr(), &stun_request(&username));
        relay.inject(&stun_request(&username)).await.unwrap();
    }
    // On the publisher's validated tuple: truncated RTP and RTCP, random payloads, fake DTLS.
    for i in 0..2000 {
        let mut d = noise(&mut seed, i % 120);
        if let Some(b) = d.first_mut() {
            *b = [0x80, 0x81, 0x90, 0x16, 0x17, 0x00][i % 6];
        }
        if d.len() > 1 && i % 3 == 0 {
            d[1] = 200; // RTCP SR
        }
        relay.inject(&d).await.unwrap();
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let _ = drain(&mut rx);
    let after = collect(&mut rx, Duration::from_millis(1000)).await;
    assert!(
        after.len() > 50,
        "forwarding continues: {} packets",
        after.len()
    );
    assert!(worker.is_alive());
    let usage = worker.resource_usage().await.unwrap();
    assert!(usage.dropped_unknown_source >= 1900, "{usage:?}");
    assert_eq!(usage.session_errors, 0);
    worker.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_session_that_panics_in_the_command_path_is_closed_alone() {
    let (worker, router) = worker_and_router().await;
    let publisher = connect(&router, ClientNumbering::chromium(), None).await;
    let receiver = connect_receiver(&router, None).await;
    let mut bystander = connect_receiver(&router, None).await;
    let video = produce(&publisher, SourceConfig::video()).await;
    let (_c1, _r1) = consume(&receiver, &router, &video).await;
    let (_c2, mut r2) = consume(&bystander, &router, &video).await;

    let mut victim_events = receiver.events;
    receiver.server.panic_for_test().await.unwrap();
    let closed = wait_event(&mut victim_events, Duration::from_secs(2), |e| {
        matches!(e, MediaEvent::TransportClosed { .. })
    })
    .await;
    assert!(matches!(
        closed,
        Some(MediaEvent::TransportClosed {
            reason: CloseReason::SessionError,
            ..
        })
    ));
    let _ = drain(&mut r2);
    assert!(collect(&mut r2, Duration::from_millis(700)).await.len() > 30);
    assert!(worker.is_alive());
    assert_eq!(worker.resource_usage().await.unwrap().session_errors, 1);
    while let Ok(e) = bystander.events.try_recv() {
        assert!(
            !matches!(e, MediaEvent::TransportClosed { .. }),
            "the bystander was closed: {e:?}"
        );
    }
    worker.close().await;
}

// A real worker thread and UDP port: on the wall clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_is_reported_and_can_be_replaced_on_its_port() {
    let worker = Worker::spawn(3, &WorkerSettings::loopback()).unwrap();
    let port = worker.local_addr().port();
    let router = worker.create_router(&media_codecs()).await.unwrap();
    worker.crash_for_test();
    let reason = tokio::time::timeout(Duration::from_secs(5), worker.died())
        .await
        .expect("died is reported");
    assert!(reason.contains("crash"), "{reason}");
    assert!(!worker.is_alive());
    assert!(router.dump().await.is_err());
    let settings = WorkerSettings {
        port,
        ..WorkerSettings::loopback()
    };
    let replacement = Worker::spawn(3, &settings).expect("the port is free again");
    assert_eq!(replacement.local_addr().port(), port);
    replacement.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_answering_is_disconnected_when_the_fifteen_second_consent_window_ends()
{
    let (worker, router) = worker_and_router().await;
    let relay = Relay::start(worker.local_addr(), 0.0, 5).await.unwrap();
    let mut peer = connect(&router, ClientNumbering::chromium(), Some(relay.addr())).await;
    relay.set_blackhole(true);
    let started = tokio::time::Instant::now();
    let event = wait_event(&mut peer.events, Duration::from_secs(30), |e| {
        matches!(
            e,
            MediaEvent::IceStateChange {
                state: sluice_media::IceState::Disconnected,
                ..
            }
        )
    })
    .await;
    assert!(event.is_some(), "no disconnection reported");
    // str0m's ICE-lite consent window is 15 s from the last binding request, which the client
    // sent less than a second before its path went dark (virtual time: nothing else moves it).
    let elapsed = started.elapsed();
    assert!(
        (Duration::from_secs(14)..=Duration::from_secs(15) + Duration::from_millis(100))
            .contains(&elapsed),
        "disconnected after {elapsed:?}"
    );
    worker.close().await;
}

/// A player whose SCTP never comes up is offered a data consumer on stream 0; its producer
/// leaves, and another player's data producer is offered on the same transport. str0m still
/// holds stream 0 for the first channel (closing cannot cancel a pending allocation), so sluice
/// must not hand that stream out again: it used to, and str0m's assertion took the whole worker
/// down with every room on it.
#[tokio::test(start_paused = true)]
async fn a_data_consumer_reoffered_before_sctp_is_up_gets_a_fresh_stream_and_the_worker_lives() {
    let (worker, router) = worker_and_router().await;
    let mut transports = Vec::new();
    for _ in 0..3 {
        let options = WebRtcTransportOptions::default();
        transports.push(router.create_webrtc_transport(options).await.unwrap());
    }
    let (x, y, z) = (&transports[0], &transports[1], &transports[2]);
    let stream = |id: u16| -> sluice_media::ortc::SctpStreamParameters {
        serde_json::from_value(serde_json::json!({ "streamId": id, "ordered": true })).unwrap()
    };
    let mut streams = Vec::new();
    for (round, producer_transport) in [y, z, y].into_iter().enumerate() {
        let producer = producer_transport
            .produce_data(DataProducerOptions::sctp(stream(round as u16), "game"))
            .await
            .unwrap();
        let consumer = x
            .consume_data(DataConsumerOptions::new(producer.id()))
            .await
            .expect("the data consumer is created");
        streams.push(consumer.sctp_stream_parameters().unwrap().stream_id);
        producer.close().await.unwrap();
    }
    // Every stream id stays taken until str0m lets go of it, which it cannot before SCTP is up.
    assert_eq!(streams, vec![0, 1, 2]);
    assert!(worker.is_alive());
    let usage = worker.resource_usage().await.unwrap();
    assert_eq!(usage.session_errors, 0);
    assert_eq!(worker.dump().await.unwrap().data_consumers, 0);
    worker.close().await;
}

/// About 30 garbage DTLS records from the client's validated address before its ClientHello
/// used to fill str0m's receive queue and fail the transport (`DtlsFailed`). Invalid records are
/// discarded (RFC 6347 §4.1.2.7): the handshake completes when the ClientHello comes.
#[tokio::test(start_paused = true)]
async fn garbage_dtls_records_before_the_client_hello_are_discarded_and_dtls_still_connects() {
    let (worker, router) = worker_and_router().await;
    let net = net().unwrap();
    let relay = Relay::start(worker.local_addr(), 0.0, 9).await.unwrap();
    let mut client = sluice_client::ClientTransportOptions::new(ClientNumbering::chromium());
    client.remote_override = Some(relay.addr());
    let (server, client, mut events) =
        connect_unchecked(&router, client, WebRtcTransportOptions::default()).await;
    server
        .connect(client.dtls_parameters().clone())
        .await
        .unwrap();
    // Hold back the client's ClientHello until its address is validated and the garbage is in.
    net.set_filter(relay.addr(), SERVER, sluice_media::demux::is_client_hello);
    client.start();
    wait_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, MediaEvent::IceSelectedTupleChange { .. })
    })
    .await
    .expect("ICE validates the client's address");
    let mut seed = 0xd71_u64;
    for i in 0..40u8 {
        // Well-formed DTLS 1.2 handshake records at epoch 0 carrying a whole handshake message
        // that is not a ClientHello (a ClientKeyExchange of random bytes, its own sequence).
        let body = noise(&mut seed, 40 + usize::from(i));
        let len = body.len() as u32;
        let mut message = vec![16];
        message.extend_from_slice(&len.to_be_bytes()[1..]);
        message.extend_from_slice(&[0, i, 0, 0, 0]);
        message.extend_from_slice(&len.to_be_bytes()[1..]);
        message.extend_from_slice(&body);
        let mut record = vec![22, 254, 253, 0, 0, 0, 0, 0, 0, 0, i];
        record.extend_from_slice(&(message.len() as u16).to_be_bytes());
        record.extend_from_slice(&message);
        relay.inject(&record).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    net.clear_filter(relay.addr(), SERVER);
    // str0m's client retransmits its ClientHello; the handshake completes.
    client
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("DTLS connects after the garbage");
    let usage = worker.resource_usage().await.unwrap();
    assert!(usage.dropped_malformed >= 40, "{usage:?}");
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, MediaEvent::TransportClosed { .. }),
            "the transport closed: {e:?}"
        );
    }
    worker.close().await;
}

/// A binding request signed with the server's ICE password, as a client's check on another
/// candidate pair would come.
fn signed_binding_request(ufrag: &str, password: &str, use_candidate: bool) -> Vec<u8> {
    let username = format!("{ufrag}:other");
    let message = str0m::ice::StunMessage::binding_request(
        &username,
        str0m::ice::TransId::new(),
        true,
        7,
        1_000,
        use_candidate,
    );
    let sha1_hmac = |key: &[u8], parts: &[&[u8]]| -> [u8; 20] {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
        for part in parts {
            ctx.update(part);
        }
        let mut out = [0u8; 20];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    };
    let mut buf = vec![0u8; 512];
    let n = message
        .to_bytes(Some(password.as_bytes()), &mut buf, sha1_hmac)
        .unwrap();
    buf.truncate(n);
    buf
}

/// A check from another address validates it, but only a nominating one (USE-CANDIDATE) moves
/// the selected tuple, where the own egress sends, as mediasoup's ICE-lite server does.
#[tokio::test(start_paused = true)]
async fn only_a_nominating_check_moves_the_selected_tuple() {
    let (worker, router) = worker_and_router().await;
    let relay = Relay::start(worker.local_addr(), 0.0, 4).await.unwrap();
    let other = Relay::start(worker.local_addr(), 0.0, 5).await.unwrap();
    let mut options = sluice_client::ClientTransportOptions::new(ClientNumbering::chromium());
    options.remote_override = Some(relay.addr());
    let (server, client, mut events) =
        connect_unchecked(&router, options, WebRtcTransportOptions::default()).await;
    server
        .connect(client.dtls_parameters().clone())
        .await
        .unwrap();
    client.start();
    let selected = |e: &MediaEvent| matches!(e, MediaEvent::IceSelectedTupleChange { .. });
    let first = wait_event(&mut events, Duration::from_secs(5), selected)
        .await
        .expect("the client's tuple is selected");
    assert!(
        matches!(first, MediaEvent::IceSelectedTupleChange { remote, .. } if remote == relay.addr())
    );
    let ice = server.ice_parameters().clone();
    let check =
        |nominating| signed_binding_request(&ice.username_fragment, &ice.password, nominating);
    other.inject(&check(false)).await.unwrap();
    assert!(
        wait_event(&mut events, Duration::from_secs(2), selected)
            .await
            .is_none(),
        "a plain check moved the selected tuple"
    );
    other.inject(&check(true)).await.unwrap();
    let moved = wait_event(&mut events, Duration::from_secs(2), selected)
        .await
        .expect("the nominated tuple is selected");
    assert!(
        matches!(moved, MediaEvent::IceSelectedTupleChange { remote, .. } if remote == other.addr()),
        "{moved:?}"
    );
    worker.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_client_on_an_address_another_transport_validated_reaches_its_own_transport() {
    // A port (a TCP connection's, or a NAT mapping) once validated by one transport and then
    // reused by another client must not be routed to the old transport: binding requests go by
    // the ufrag they name.
    let (_worker, router) = worker_and_router().await;
    let addr = client_addr();
    let mut first = sluice_client::ClientTransportOptions::new(ClientNumbering::chromium());
    first.remote_override = Some(addr);
    let old = connect_with(&router, first, WebRtcTransportOptions::default()).await;
    // The old client goes away; its server transport lives on, holding the validated address.
    old.client.close();
    drop(old.client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = sluice_client::ClientTransportOptions::new(ClientNumbering::chromium());
    second.remote_override = Some(addr);
    let new = connect_with(&router, second, WebRtcTransportOptions::default()).await;
    let stats = new.server.get_stats().await.unwrap();
    let tuple = stats
        .ice_selected_tuple
        .expect("the new transport selected the address");
    assert_eq!(tuple.remote_port, addr.port());
    assert!(
        old.server.get_stats().await.is_ok(),
        "the old transport is untouched"
    );
}
