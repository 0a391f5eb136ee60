//! Pipes between the routers of two workers in one process: a producer on worker 0 consumed
//! on worker 1 through its piped twin, with keyframe requests crossing back, pause, resume and
//! close crossing forward, and nothing left behind; a data producer likewise. Real sockets on
//! loopback; every wait is for a condition.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use sluice_client::media::{vp8_is_keyframe, vp8_stamp};
use sluice_client::{ClientNumbering, SourceConfig};
use sluice_media::{
    Consumer, DataConsumerOptions, DataMessage, DataProducerOptions, MediaEvent, PipedDataProducer,
    PipedProducer, Producer, Router, Worker, WorkerSettings,
};
use tokio::sync::mpsc::UnboundedReceiver;

/// Routers on two workers (two threads, two sockets).
async fn two_routers() -> (Worker, Router, Worker, Router) {
    let (w0, a) = real_worker_and_router().await;
    let w1 = Worker::spawn(1, &WorkerSettings::loopback()).unwrap();
    let b = w1.create_router(&media_codecs()).await.unwrap();
    (w0, a, w1, b)
}

/// Waits (ten seconds at most) for an event `f` matches.
async fn wait_event(
    events: &mut UnboundedReceiver<MediaEvent>,
    f: impl Fn(&MediaEvent) -> bool,
) -> MediaEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) if f(&e) => return e,
            Ok(Some(_)) => {}
            other => panic!("no such event: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_piped_to_another_workers_router_feeds_its_consumers_and_follows_its_source() {
    let (w0, a, w1, b) = two_routers().await;
    let publisher = connect(&a, ClientNumbering::chromium(), None).await;
    let video = produce(&publisher, SourceConfig::video()).await;
    let piped = PipedProducer::create(&a, &b, video.id()).await.unwrap();
    assert_eq!(
        piped.pipe_producer.id(),
        video.id(),
        "the same id on both routers"
    );
    assert_eq!(piped.pipe_producer.kind(), video.kind());

    let mut viewer = connect_receiver(&b, None).await;
    let (consumer, mut rx) = consume(&viewer, &b, &piped.pipe_producer).await;
    let packets = receive_n(&mut rx, 60).await;
    assert!(vp8_is_keyframe(&packets[0].payload), "starts on a keyframe");
    assert!(
        packets.iter().all(|p| vp8_stamp(&p.payload).is_some()),
        "intact"
    );

    // A keyframe request of the viewer crosses the pipe back to the publisher.
    let mid = video.rtp_parameters().mid.clone().unwrap();
    let asked =
        |stats: sluice_client::ClientStats| stats.keyframe_requests.get(&mid).copied().unwrap_or(0);
    let before = asked(publisher.client.stats().await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while asked(publisher.client.stats().await.unwrap()) == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no keyframe request crossed"
        );
        viewer
            .client
            .request_keyframe(consumer.rtp_parameters().mid.as_deref().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Pause and resume on worker 0 reach the consumer on worker 1.
    video.pause().await.unwrap();
    wait_event(&mut viewer.events, |e| {
        matches!(e, MediaEvent::ConsumerProducerPaused { consumer_id, .. } if consumer_id == consumer.id())
    })
    .await;
    video.resume().await.unwrap();
    wait_event(&mut viewer.events, |e| {
        matches!(e, MediaEvent::ConsumerProducerResumed { consumer_id, .. } if consumer_id == consumer.id())
    })
    .await;
    let _ = receive_n(&mut rx, 10).await;

    // Closing the source closes the pipe, the piped producer and its consumer.
    video.close().await.unwrap();
    wait_event(&mut viewer.events, |e| {
        matches!(e, MediaEvent::ConsumerClosed { consumer_id, .. } if consumer_id == consumer.id())
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (da, db) = (a.dump().await.unwrap(), b.dump().await.unwrap());
        let left = da.transport_ids.len() + db.transport_ids.len();
        let objects = da.consumer_ids.len() + db.producer_ids.len() + db.consumer_ids.len();
        // Only the two clients' transports remain.
        if left == 2 && objects == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{da:?} {db:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w0.close().await;
    w1.close().await;
}

/// Polls `check` until it holds (ten seconds at most).
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The packets a pipe consumer sent, and the NACKs it was sent.
async fn pipe_sent(consumer: &Consumer) -> (u64, u64) {
    let stats = consumer.get_stats().await.unwrap();
    (
        stats.iter().map(|s| s.packet_count).sum(),
        stats.iter().map(|s| s.nack_count).sum(),
    )
}

/// The packets a producer received.
async fn received(producer: &Producer) -> u64 {
    let stats = producer.get_stats().await.unwrap();
    stats.iter().map(|s| s.packet_count).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_carries_media_only_while_a_consumer_on_its_target_wants_it() {
    let (w0, a, w1, b) = two_routers().await;
    let publisher = connect(&a, ClientNumbering::chromium(), None).await;
    let video = produce(&publisher, SourceConfig::video()).await;
    let piped = PipedProducer::create(&a, &b, video.id()).await.unwrap();
    let pipe = &piped.pipe_consumer;
    let paused = || async { pipe.dump().await.unwrap().paused };

    // Nobody consumes on b: the publisher's packets do not cross.
    until("the publisher sends", || async {
        received(&video).await >= 30
    })
    .await;
    assert!(paused().await);
    assert_eq!(pipe_sent(pipe).await, (0, 0));

    // A viewer on b: the pipe resumes, and the viewer starts on a keyframe.
    let viewer = connect_receiver(&b, None).await;
    let (consumer, mut rx) = consume(&viewer, &b, &piped.pipe_producer).await;
    let packets = receive_n(&mut rx, 30).await;
    assert!(vp8_is_keyframe(&packets[0].payload), "starts on a keyframe");
    assert!(!paused().await);

    // The viewer pauses: so does the pipe, and what the publisher sends stays on a.
    consumer.pause().await.unwrap();
    until("the pipe pauses with its last consumer", || async {
        paused().await
    })
    .await;
    let (stopped, _) = pipe_sent(pipe).await;
    let at = received(&video).await;
    until("the publisher sends on", || async {
        received(&video).await >= at + 30
    })
    .await;
    assert_eq!(pipe_sent(pipe).await.0, stopped);

    // Resumed: media cross again from a keyframe, and the gap the pause left is not taken
    // for loss (no NACK crosses back).
    drain(&mut rx);
    consumer.resume().await.unwrap();
    let packets = receive_n(&mut rx, 30).await;
    assert!(
        vp8_is_keyframe(&packets[0].payload),
        "resumes on a keyframe"
    );
    let (sent, nacked) = pipe_sent(pipe).await;
    assert!(sent > stopped);
    assert_eq!(nacked, 0, "a paused pipe's gap is not loss");

    // The viewer's consumer closes: the pipe pauses again.
    consumer.close().await.unwrap();
    until("the pipe pauses when its last consumer closes", || async {
        paused().await
    })
    .await;
    w0.close().await;
    w1.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_producer_piped_to_another_workers_router_delivers_in_order_until_it_closes() {
    let (w0, a, w1, b) = two_routers().await;
    let server_a = a.create_direct_transport(None).await.unwrap();
    let source = server_a
        .produce_data(DataProducerOptions::new("world"))
        .await
        .unwrap();
    let piped = PipedDataProducer::create(&a, &b, source.id())
        .await
        .unwrap();
    assert_eq!(piped.pipe_data_producer.id(), source.id());
    assert_eq!(piped.pipe_data_producer.label(), "world");
    let server_b = b.create_direct_transport(None).await.unwrap();
    let (_, received) = server_b
        .consume_data(DataConsumerOptions::new(source.id()))
        .await
        .unwrap();
    for i in 0..20 {
        source.send(DataMessage::text(format!("tick {i}"))).unwrap();
    }
    for i in 0..20 {
        let m = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("a message in time")
            .expect("the consumer is open");
        assert_eq!(m.data, format!("tick {i}").into_bytes());
    }
    source.close().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("the piped data producer closes");
    assert!(end.is_none(), "its consumer ends");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let db = b.dump().await.unwrap();
        if db.data_producer_ids.is_empty() && db.transport_ids.len() == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{db:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w0.close().await;
    w1.close().await;
}

/// What a lossy relay between a pipe's two ends saw.
#[derive(Default)]
struct RelayLog {
    /// Drop every tenth RTP packet the first time it passes, while set.
    dropping: bool,
    /// The sequence numbers dropped, and those of them that passed later (resent).
    dropped: Vec<u16>,
    resent: std::collections::HashSet<u16>,
    rtp: usize,
    nacks: usize,
}

/// A relay on loopback between `a` and `b` (the addresses of a pipe's two plain transports):
/// RTP from `a` goes on to `b` (some of it dropped, see [`RelayLog`]), everything from `b`
/// goes back to `a`. It reads only RTP headers, so it works on SRTP too.
async fn lossy_relay(
    a: std::net::SocketAddr,
    b: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<RelayLog>>,
) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(RelayLog::default()));
    let shared = log.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let mut seen = std::collections::HashSet::new();
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let p = &buf[..n];
            if from == b {
                if p.get(1) == Some(&205) {
                    shared.lock().unwrap().nacks += 1;
                }
                let _ = socket.send_to(p, a).await;
                continue;
            }
            let is_rtp = n > 12 && !(192..=223).contains(&p[1]);
            if is_rtp {
                let seq = u16::from_be_bytes([p[2], p[3]]);
                let mut log = shared.lock().unwrap();
                log.rtp += 1;
                if !seen.insert(seq) {
                    if log.dropped.contains(&seq) {
                        log.resent.insert(seq);
                    }
                } else if log.dropping && log.rtp % 10 == 0 {
                    log.dropped.push(seq);
                    continue;
                }
            }
            let _ = socket.send_to(p, b).await;
        }
    });
    (addr, log)
}

/// The video frames a viewer got: frame → (its packet count, the indices received).
#[derive(Default)]
struct Frames(std::collections::BTreeMap<u32, (u16, std::collections::HashSet<u16>)>);

impl Frames {
    /// Takes `packet` in, raising `latest` to its frame.
    fn take(&mut self, packet: &sluice_client::ReceivedRtp, latest: &mut u32) {
        if let Some(s) = vp8_stamp(&packet.payload) {
            let (count, got) = self.0.entry(s.frame).or_default();
            *count = s.count;
            got.insert(s.index);
            *latest = (*latest).max(s.frame);
        }
    }

    fn is_whole(&self, frame: u32) -> bool {
        self.0
            .get(&frame)
            .is_some_and(|(count, got)| got.len() == usize::from(*count))
    }
}

/// A pipe as `PipedProducer` makes it (with SRTP if `srtp`, as between nodes) with a relay
/// dropping every tenth RTP packet between its ends: every frame the viewer on the target
/// router gets while packets are dropped arrives whole, each dropped packet having been NACKed
/// by the piped producer and resent by the pipe consumer.
async fn lost_video_is_recovered_on_a_pipe(srtp: bool) {
    use sluice_media::{
        ConsumerOptions, PlainTransportConnect, PlainTransportOptions, ProducerOptions,
    };
    let (w0, a, w1, b) = two_routers().await;
    let publisher = connect(&a, ClientNumbering::chromium(), None).await;
    let video = produce(&publisher, SourceConfig::video()).await;
    let options = || PlainTransportOptions {
        enable_srtp: srtp,
        ..PlainTransportOptions::default()
    };
    let source = a.create_plain_transport(options()).await.unwrap();
    let target = b.create_plain_transport(options()).await.unwrap();
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (relay, log) = lossy_relay(loopback(source.port()), loopback(target.port())).await;
    for (t, other) in [(&source, &target), (&target, &source)] {
        t.connect_with(PlainTransportConnect {
            remote: Some(relay),
            srtp_parameters: other.srtp_parameters().cloned(),
        })
        .await
        .unwrap();
    }
    let mut options = ConsumerOptions::new(video.id(), a.rtp_capabilities().clone());
    options.pipe = true;
    let pipe_consumer = source.consume(options).await.unwrap();
    assert!(
        pipe_consumer.rtp_parameters().codecs[0]
            .rtcp_feedback
            .iter()
            .any(|f| f.r#type == "nack" && f.parameter.as_deref().unwrap_or("").is_empty()),
        "the pipe negotiates NACK: {:?}",
        pipe_consumer.rtp_parameters()
    );
    let mut produce_options =
        ProducerOptions::new(pipe_consumer.kind(), pipe_consumer.rtp_parameters().clone());
    produce_options.id = Some(video.id().to_owned());
    let piped = target.produce(produce_options).await.unwrap();
    pipe_consumer.resume().await.unwrap();

    let viewer = connect_receiver(&b, None).await;
    let (_consumer, mut rx) = consume(&viewer, &b, &piped).await;
    let mut frames = Frames::default();
    let mut latest = 0;
    frames.take(&receive_n(&mut rx, 1).await[0], &mut latest);
    let first = latest + 1;
    log.lock().unwrap().dropping = true;
    let mut last = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let packet = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("every frame reaches the viewer whole")
            .unwrap();
        frames.take(&packet, &mut latest);
        let mut log = log.lock().unwrap();
        if log.dropping && log.dropped.len() >= 20 {
            log.dropping = false;
            // Every packet of the frames before the latest passed the relay while it dropped.
            last = Some(latest.saturating_sub(1));
        }
        let Some(last) = last else { continue };
        let whole = (first..=last).all(|f| frames.is_whole(f));
        if whole && log.dropped.iter().all(|s| log.resent.contains(s)) {
            assert!(log.nacks > 0, "the target NACKed");
            assert!(last > first, "frames {first}..={last}");
            break;
        }
    }
    source.close().await.unwrap();
    target.close().await.unwrap();
    w0.close().await;
    w1.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_lost_on_a_pipe_is_nacked_by_its_producer_and_resent_by_its_consumer() {
    lost_video_is_recovered_on_a_pipe(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_lost_on_an_encrypted_pipe_is_nacked_and_resent_as_srtp() {
    lost_video_is_recovered_on_a_pipe(true).await;
}
