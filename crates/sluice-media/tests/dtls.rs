//! DTLS: a client's fingerprint may use any hash function mediasoup accepts, and a peer whose
//! certificate does not match what it announced is refused before any media reaches it.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use sluice_client::media::vp8_stamp;
use sluice_client::{ClientNumbering, ClientTransportOptions, SourceConfig};
use sluice_media::fingerprint::HashFunction;
use sluice_media::{CloseReason, DtlsState, MediaEvent, WebRtcTransportOptions};
use tokio::sync::mpsc::UnboundedReceiver;

fn client_options(numbering: ClientNumbering, hash: HashFunction) -> ClientTransportOptions {
    let mut o = ClientTransportOptions::new(numbering);
    o.fingerprint_hash = hash;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_announcing_sha1_sha224_sha384_or_sha512_fingerprints_connect_and_media_flows() {
    let (worker, router) = real_worker_and_router().await;
    // pymediasoup (aiortc) sends only a sha-512 fingerprint.
    let publisher = connect_with(
        &router,
        client_options(ClientNumbering::aiortc(), HashFunction::Sha512),
        WebRtcTransportOptions::default(),
    )
    .await;
    for hash in [
        HashFunction::Sha384,
        HashFunction::Sha1,
        HashFunction::Sha224,
    ] {
        let receiver = connect_with(
            &router,
            client_options(
                ClientNumbering::from_router(router.rtp_capabilities()),
                hash,
            ),
            WebRtcTransportOptions::default(),
        )
        .await;
        let video = produce(&publisher, SourceConfig::video()).await;
        let (_consumer, mut rx) = consume(&receiver, &router, &video).await;
        // Twenty packets through a DTLS verified by this hash (receive_n fails otherwise).
        let got = receive_n(&mut rx, 20).await;
        assert!(
            got.iter().all(|p| vp8_stamp(&p.payload).is_some()),
            "{}",
            hash.name()
        );
        video.close().await.unwrap();
    }
    worker.close().await;
}

/// Waits for the transport's DTLS failure and its closing.
async fn refused(events: &mut UnboundedReceiver<MediaEvent>) -> (bool, Option<CloseReason>) {
    let mut failed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
        match e {
            MediaEvent::DtlsStateChange {
                state: DtlsState::Failed,
                ..
            } => failed = true,
            MediaEvent::DtlsStateChange {
                state: DtlsState::Connected,
                ..
            } => panic!("a peer that does not match its fingerprint was let in"),
            MediaEvent::TransportClosed { reason, .. } => return (failed, Some(reason)),
            _ => {}
        }
    }
    (failed, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_certificate_does_not_match_its_fingerprint_is_refused() {
    let (worker, router) = real_worker_and_router().await;
    for hash in [
        HashFunction::Sha256,
        HashFunction::Sha1,
        HashFunction::Sha512,
    ] {
        let (server, client, mut events) = connect_unchecked(
            &router,
            client_options(ClientNumbering::chromium(), hash),
            WebRtcTransportOptions::default(),
        )
        .await;
        // A man in the middle: the signaled fingerprint is not of the certificate used.
        let mut params = client.dtls_parameters().clone();
        let value = &mut params.fingerprints[0].value;
        let last = if value.ends_with('0') { "1" } else { "0" };
        value.replace_range(value.len() - 1.., last);
        server.connect(params).await.unwrap();
        client.start();
        let (failed, closed) = refused(&mut events).await;
        assert!(failed, "{}: no DTLS failure reported", hash.name());
        assert_eq!(closed, Some(CloseReason::DtlsFailed), "{}", hash.name());
        client.close();
    }
    worker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_or_malformed_fingerprints_are_refused_at_connect() {
    let (worker, router) = real_worker_and_router().await;
    let (server, client, _events) = connect_unchecked(
        &router,
        ClientTransportOptions::new(ClientNumbering::chromium()),
        WebRtcTransportOptions::default(),
    )
    .await;
    let good = client.dtls_parameters().clone();
    let mut cases = Vec::new();
    let mut md5 = good.clone();
    md5.fingerprints[0].algorithm = "md5".into();
    cases.push((md5, "unsupported"));
    let mut short = good.clone();
    short.fingerprints[0].value = "AB:CD".into();
    cases.push((short, "32 bytes"));
    let mut none = good.clone();
    none.fingerprints.clear();
    cases.push((none, "no fingerprint"));
    for (params, why) in cases {
        let err = server.connect(params).await.unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }
    // The transport is still usable with good parameters.
    server.connect(good).await.unwrap();
    worker.close().await;
}
