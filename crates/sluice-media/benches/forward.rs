//! Criterion: the per-packet forwarding path of one consumer (decision + rewrite + str0m write +
//! SRTP + serialisation + UDP send), and its parts.
//!
//! `cargo bench -p sluice-media --bench forward`

#![allow(clippy::unwrap_used)] // Benchmark scaffolding.

mod common;

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_media::forwarder::{Forwarder, InPacket};
use sluice_media::layers::RateCalculator;
use sluice_media::payload;
use std::hint::black_box;
use str0m::format::Codec;

fn benches(c: &mut Criterion) {
    let (mut path, _client, _sink) = common::ForwardPath::new();
    let mut now = Instant::now();
    c.bench_function(
        "forward one packet (decision, rewrite, SRTP, UDP send)",
        |b| {
            b.iter(|| {
                now += Duration::from_micros(100);
                black_box(path.forward_one(now))
            })
        },
    );

    let mut f = Forwarder::new(Codec::Vp8, 90000, true, 1);
    f.set_paused(false, Instant::now());
    let payload = common::vp8_payload(1, true, 1200);
    let info = payload::inspect(Codec::Vp8, &payload);
    let mut seq = 0u64;
    let t0 = Instant::now();
    c.bench_function("forwarder decision only", |b| {
        b.iter(|| {
            seq += 1;
            black_box(f.on_packet(
                &InPacket {
                    layer: 0,
                    seq,
                    timestamp: seq as u32 * 3000,
                    info,
                },
                t0,
            ))
        })
    });

    c.bench_function("payload inspection (VP8)", |b| {
        b.iter(|| black_box(payload::inspect(Codec::Vp8, black_box(&payload))))
    });

    // Counted once per packet and consumer (its bitrate), at 50 packets/s.
    let mut rate = RateCalculator::new(Duration::from_secs(1));
    let mut at = Instant::now();
    c.bench_function("rate calculator, one packet", |b| {
        b.iter(|| {
            at += Duration::from_millis(20);
            rate.add(black_box(1200), at);
        })
    });
}

criterion_group!(forward, benches);
criterion_main!(forward);
