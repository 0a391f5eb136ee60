//! Game data over SCTP and through a DirectTransport.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use sluice_client::{ClientNumbering, ReceivedData};
use sluice_media::{
    DataConsumerOptions, DataMessage, DataProducer, DataProducerOptions, MediaError,
};
use tokio::sync::mpsc::UnboundedReceiver;

/// Opens a data channel on the client and its data producer on the server.
async fn produce_data(
    peer: &Peer,
    label: &str,
    ordered: bool,
    max_retransmits: Option<u16>,
    tune: impl FnOnce(&mut DataProducerOptions),
) -> (DataProducer, u16) {
    let p = peer
        .client
        .produce_data(label, ordered, max_retransmits, None, None)
        .await
        .unwrap();
    let mut options = DataProducerOptions::sctp(p.sctp_stream_parameters.clone(), label);
    tune(&mut options);
    let dp = peer.server.produce_data(options).await.unwrap();
    (dp, p.sctp_stream_parameters.stream_id)
}

/// A data consumer of `producer` on `peer`, and what its client receives.
async fn consume_data(
    peer: &Peer,
    producer: &DataProducer,
) -> (sluice_media::DataConsumer, UnboundedReceiver<ReceivedData>) {
    let dc = peer
        .server
        .consume_data(DataConsumerOptions::new(producer.id()))
        .await
        .unwrap();
    let rx = peer
        .client
        .consume_data(dc.sctp_stream_parameters().cloned().unwrap(), dc.label())
        .await
        .unwrap();
    (dc, rx)
}

/// Sends a probe until it comes through: both SCTP associations and channels are up.
async fn wait_open(sender: &Peer, stream: u16, rx: &mut UnboundedReceiver<ReceivedData>) {
    for _ in 0..200 {
        sender
            .client
            .send_data(stream, DataMessage::text("probe"))
            .unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            while rx.try_recv().is_ok() {}
            return;
        }
    }
    panic!("data channel never opened");
}

async fn receive(
    rx: &mut UnboundedReceiver<ReceivedData>,
    n: usize,
    within: Duration,
) -> Vec<ReceivedData> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => out.push(m),
            _ => break,
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_reliable_ordered_channel_delivers_every_message_once_in_order_through_loss() {
    let (worker, router) = worker_and_router().await;
    let up = Relay::start(worker.local_addr(), 0.0, 21).await.unwrap();
    let down = Relay::start(worker.local_addr(), 0.0, 22).await.unwrap();
    let a = connect(&router, ClientNumbering::chromium(), Some(up.addr())).await;
    let b = connect_receiver(&router, Some(down.addr())).await;
    let (dp, stream) = produce_data(&a, "chat", true, None, |_| {}).await;
    let (_dc, mut rx) = consume_data(&b, &dp).await;
    wait_open(&a, stream, &mut rx).await;
    let refused_before = a.client.stats().await.unwrap().data_refused;
    up.set_loss(0.05);
    down.set_loss(0.05);
    for i in 0..1000 {
        a.client
            .send_data(stream, DataMessage::text(format!("msg-{i:04}")))
            .unwrap();
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let got = receive(&mut rx, 1000, Duration::from_secs(30)).await;
    let texts: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.data.clone()).unwrap())
        .collect();
    let want: Vec<String> = (0..1000).map(|i| format!("msg-{i:04}")).collect();
    assert_eq!(texts.len(), 1000, "received {}", texts.len());
    assert_eq!(texts, want);
    assert!(
        up.counts().1 > 0 || down.counts().1 > 0,
        "no loss was injected"
    );
    assert_eq!(a.client.stats().await.unwrap().data_refused, refused_before);
    worker.close().await;
}

#[tokio::test(start_paused = true)]
async fn text_and_binary_messages_reach_two_clients_and_empty_ones_never_stall_a_stream() {
    let (worker, router) = worker_and_router().await;
    let a = connect(&router, ClientNumbering::chromium(), None).await;
    let b = connect_receiver(&router, None).await;
    let c = connect_receiver(&router, None).await;
    let (dp, stream) = produce_data(&a, "state", true, None, |_| {}).await;
    let (_db, mut rb) = consume_data(&b, &dp).await;
    let (_dc, mut rc) = consume_data(&c, &dp).await;
    wait_open(&a, stream, &mut rb).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    while rc.try_recv().is_ok() {}
    let sent = vec![
        DataMessage::text("hello"),
        DataMessage::binary(vec![0, 1, 2, 255]),
        DataMessage::text("ünïcødé"),
        DataMessage::binary(vec![42; 60_000]),
    ];
    for m in &sent {
        a.client.send_data(stream, m.clone()).unwrap();
    }
    for rx in [&mut rb, &mut rc] {
        let got = receive(rx, sent.len(), Duration::from_secs(5)).await;
        let got: Vec<DataMessage> = got
            .into_iter()
            .map(|m| DataMessage {
                binary: m.binary,
                data: m.data,
            })
            .collect();
        assert_eq!(got, sent);
    }
    let stats = dp.get_stats().await.unwrap();
    assert!(stats[0].messages_received >= sent.len() as u64);

    // Empty messages (from the server's own data producer here): a direct consumer gets them;
    // toward SCTP they are dropped and counted, and the ordered stream goes on.
    let direct = router.create_direct_transport(None).await.unwrap();
    let server_state = direct
        .produce_data(DataProducerOptions::new("tick"))
        .await
        .unwrap();
    let (_server_copy, copy) = direct
        .consume_data(DataConsumerOptions::new(server_state.id()))
        .await
        .unwrap();
    let (db, mut rx) = consume_data(&b, &server_state).await;
    let mut opened = false;
    for _ in 0..100 {
        server_state.send(DataMessage::text("ping")).unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            opened = true;
            break;
        }
    }
    assert!(opened);
    while copy.try_recv().is_some() {}
    while rx.try_recv().is_ok() {}
    for m in [
        DataMessage::text(""),
        DataMessage::binary(vec![]),
        DataMessage::text("after"),
    ] {
        server_state.send(m).unwrap();
    }
    assert_eq!(copy.recv().await, Some(DataMessage::text("")));
    assert_eq!(copy.recv().await, Some(DataMessage::binary(vec![])));
    assert_eq!(copy.recv().await, Some(DataMessage::text("after")));
    let next = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.data, b"after");
    assert_eq!(db.get_stats().await.unwrap()[0].dropped, 2);
    worker.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_direct_transport_receives_players_inputs_and_broadcasts_state() {
    let (worker, router) = worker_and_router().await;
    let player = connect(&router, ClientNumbering::chromium(), None).await;
    let watcher = connect_receiver(&router, None).await;
    let direct = router.create_direct_transport(None).await.unwrap();

    // Player → server.
    let (input, stream) = produce_data(&player, "input", false, Some(0), |_| {}).await;
    let (_server_in, server_rx) = direct
        .consume_data(DataConsumerOptions::new(input.id()))
        .await
        .unwrap();
    let mut got = None;
    for i in 0..200 {
        player
            .client
            .send_data(stream, DataMessage::binary(vec![7, i as u8]))
            .unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), server_rx.recv()).await
        {
            got = Some(m);
            break;
        }
    }
    let got = got.expect("the server receives the player's input");
    assert!(got.binary && got.data[0] == 7);

    // Server → watcher.
    let state = direct
        .produce_data(DataProducerOptions::new("state"))
        .await
        .unwrap();
    let (_wc, mut wrx) = consume_data(&watcher, &state).await;
    let mut received = None;
    for i in 0..200 {
        state.send(DataMessage::text(format!("world-{i}"))).unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), wrx.recv()).await {
            received = Some(m);
            break;
        }
    }
    let received = received.expect("the watcher receives the server's state");
    assert!(!received.binary);
    assert!(
        String::from_utf8(received.data)
            .unwrap()
            .starts_with("world-")
    );
    let dump = router.dump().await.unwrap();
    assert_eq!(dump.data_producer_ids.len(), 2);
    direct.close().await.unwrap();
    let dump = router.dump().await.unwrap();
    assert_eq!(
        dump.data_producer_ids.len(),
        1,
        "the direct transport's data producer closed"
    );
    worker.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_stalled_consumer_holds_bounded_memory_dropping_its_oldest_messages() {
    let (worker, router) = worker_and_router().await;
    let down = Relay::start(worker.local_addr(), 0.0, 31).await.unwrap();
    let a = connect(&router, ClientNumbering::chromium(), None).await;
    let b = connect_receiver(&router, Some(down.addr())).await;
    let (dp, stream) = produce_data(&a, "cursor", false, Some(0), |_| {}).await;
    let (dc, mut rx) = consume_data(&b, &dp).await;
    wait_open(&a, stream, &mut rx).await;

    // The consumer's path stalls while the sender keeps going much faster than 60 Hz.
    down.set_blackhole(true);
    for i in 0..3000u32 {
        let mut m = vec![0u8; 200];
        m[..4].copy_from_slice(&i.to_be_bytes());
        a.client.send_data(stream, DataMessage::binary(m)).unwrap();
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = dc.get_stats().await.unwrap();
    assert!(
        stats[0].queued_bytes <= sluice_media::settings::DEFAULTS.unreliable_data_queue_limit,
        "{stats:?}"
    );
    assert!(
        stats[0].buffered_amount <= sluice_media::settings::DEFAULTS.unreliable_sctp_buffer + 200,
        "{stats:?}"
    );
    // Every message the server got is accounted for: sent into SCTP, queued, or dropped.
    let received = dp.get_stats().await.unwrap()[0].messages_received;
    assert!(received > 500, "the server received {received}");
    assert_eq!(
        stats[0].messages_sent + stats[0].queued_bytes as u64 / 200 + stats[0].dropped,
        received,
        "{stats:?}"
    );
    assert!(
        stats[0].dropped > received / 2,
        "the oldest were dropped: {stats:?}"
    );
    worker.close().await;
}

#[tokio::test(start_paused = true)]
async fn an_unreliable_channel_to_a_slow_consumer_keeps_latency_flat() {
    let (worker, router) = worker_and_router().await;
    let down = Relay::start(worker.local_addr(), 0.0, 33).await.unwrap();
    let a = connect(&router, ClientNumbering::chromium(), None).await;
    let b = connect_receiver(&router, Some(down.addr())).await;
    let (dp, stream) = produce_data(&a, "cursor", false, Some(0), |_| {}).await;
    let (dc, mut rx) = consume_data(&b, &dp).await;
    wait_open(&a, stream, &mut rx).await;
    // The receiver's link carries 40 kB/s; the sender offers ~120 kB/s for three seconds.
    down.set_rate_to_client(Some(40_000));
    let mut latencies: Vec<(u64, u64)> = Vec::new();
    let start = now_us();
    for i in 0..1500u32 {
        let mut m = vec![1u8; 200];
        m[..8].copy_from_slice(&now_us().to_be_bytes());
        m[8..12].copy_from_slice(&i.to_be_bytes());
        a.client.send_data(stream, DataMessage::binary(m)).unwrap();
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(8)).await;
        }
        while let Ok(r) = rx.try_recv() {
            if r.data.len() == 200 {
                let sent = u64::from_be_bytes(r.data[..8].try_into().unwrap());
                latencies.push((sent - start, r.received_us.saturating_sub(sent)));
            }
        }
    }
    let stats = dc.get_stats().await.unwrap();
    assert!(
        stats[0].dropped > 0,
        "the consumer could not take everything: {stats:?}"
    );
    // Over the last second, what arrives is fresh: no backlog built up in front of it.
    let late: Vec<u64> = latencies
        .iter()
        .filter(|(sent_at, _)| *sent_at > 2_000_000)
        .map(|(_, l)| *l)
        .collect();
    assert!(
        late.len() > 20,
        "messages in the last second: {}",
        late.len()
    );
    let mut sorted = late.clone();
    sorted.sort_unstable();
    let p90 = sorted[sorted.len() * 9 / 10];
    assert!(p90 < 250_000, "p90 latency under a slow consumer {p90} µs");
    worker.close().await;
}

#[tokio::test(start_paused = true)]
async fn oversize_flooding_and_undeclared_streams_are_dropped_and_counted() {
    let (worker, router) = worker_and_router().await;
    let a = connect(&router, ClientNumbering::chromium(), None).await;
    let b = connect_receiver(&router, None).await;
    let (dp, stream) = produce_data(&a, "game", true, None, |o| {
        o.max_message_size = 1000;
        o.max_messages_per_second = Some(20);
    })
    .await;
    let (_dc, mut rx) = consume_data(&b, &dp).await;
    wait_open(&a, stream, &mut rx).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // refill the rate bucket
    let before = dp.get_stats().await.unwrap()[0].clone();
    while rx.try_recv().is_ok() {} // late probes
    a.client
        .send_data(stream, DataMessage::binary(vec![9; 2000]))
        .unwrap();
    for i in 0..100u8 {
        a.client
            .send_data(stream, DataMessage::binary(vec![i; 10]))
            .unwrap();
    }
    // A stream the server never declared: ignored, and the association carries on.
    let rogue = a
        .client
        .produce_data("rogue", true, None, None, Some(77))
        .await
        .unwrap();
    for _ in 0..5 {
        a.client
            .send_data(
                rogue.sctp_stream_parameters.stream_id,
                DataMessage::text("x"),
            )
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut got = Vec::new();
    while let Ok(m) = rx.try_recv() {
        got.push(m.data);
    }
    // The 100 messages arrive at one instant: the full bucket (20 per second) lets the first 20
    // through, the oversize one and the other 80 are dropped.
    let expected: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 10]).collect();
    assert_eq!(got, expected, "rate limited to its bucket");
    let stats = dp.get_stats().await.unwrap();
    assert_eq!(stats[0].dropped_oversize, 1);
    assert_eq!(stats[0].dropped_rate - before.dropped_rate, 80, "{stats:?}");
    assert_eq!(stats[0].messages_received - before.messages_received, 20);
    a.client
        .send_data(stream, DataMessage::text("still here"))
        .unwrap();
    let after = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.data, b"still here");

    // A stream id beyond the association's streams is refused.
    let err = a
        .server
        .produce_data(DataProducerOptions::sctp(
            sluice_media::ortc::SctpStreamParameters {
                stream_id: 5000,
                ..Default::default()
            },
            "x",
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::InvalidSctpParameters(_)), "{err}");
    worker.close().await;
}
