//! Heap allocations per forwarded packet on a consumer's path, counted with dhat.
//!
//! `cargo bench -p sluice-media --bench allocations`

#![allow(clippy::unwrap_used)] // Benchmark scaffolding.

mod common;

use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let (mut path, _client, _sink) = common::ForwardPath::new();
    let mut now = Instant::now();
    // Warm up: caches, queues and buffers reach their steady size.
    for _ in 0..2000 {
        now += Duration::from_micros(100);
        path.forward_one(now);
    }
    let n = 10_000u64;
    let before = dhat::HeapStats::get();
    let mut bytes = 0;
    for _ in 0..n {
        now += Duration::from_micros(100);
        bytes += path.forward_one(now);
    }
    let after = dhat::HeapStats::get();
    let blocks = after.total_blocks - before.total_blocks;
    let allocated = after.total_bytes - before.total_bytes;
    println!(
        "allocations per forwarded packet: {:.2} ({:.0} bytes allocated per packet; {n} packets, {} bytes sent)",
        blocks as f64 / n as f64,
        allocated as f64 / n as f64,
        bytes
    );
    println!(
        "{{\"benchmark\":\"allocations\",\"allocations_per_packet\":{:.2},\"bytes_allocated_per_packet\":{:.0}}}",
        blocks as f64 / n as f64,
        allocated as f64 / n as f64
    );
}
