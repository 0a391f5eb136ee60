//! Heap held per connected, idle WebRTC transport on the worker, by allocation site (dhat).
//!
//! `cargo bench -p sluice-media --bench transport_memory [-- N]`
//!
//! Connects N (default 50) sluice-client transports (with SCTP, as mediasoup-demo's) to one
//! worker over loopback, lets them settle, and reads the heap live at that moment from dhat's
//! profile: the allocations made on the worker thread, grouped by the first frame outside the
//! allocator and the standard library.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Benchmark scaffolding.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::Duration;

use sluice_client::{ClientNumbering, ClientTransportOptions};
use sluice_media::WebRtcTransportOptions;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let file = std::env::temp_dir().join(format!("sluice-dhat-{}.json", std::process::id()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (worker, router) = common::worker_and_router().await;
        let profiler = dhat::Profiler::builder().file_name(&file).build();
        let mut peers = Vec::new();
        for _ in 0..n {
            let mut client = ClientTransportOptions::new(ClientNumbering::from_router(
                router.rtp_capabilities(),
            ));
            client.enable_sctp = true;
            peers.push(
                common::connect_with(&router, client, WebRtcTransportOptions::default()).await,
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Dropping the profiler writes what is live now ("t-end") by allocation site.
        drop(profiler);
        drop(peers);
        worker.close().await;
    });
    report(&file, n);
    if std::env::var_os("SLUICE_KEEP_DHAT").is_none() {
        let _ = std::fs::remove_file(&file);
    }
}

fn report(file: &std::path::Path, n: usize) {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).expect("dhat wrote its profile"))
            .expect("dhat's profile is JSON");
    let frames: Vec<&str> = json["ftbl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap_or(""))
        .collect();
    let mut by_site: HashMap<String, u64> = HashMap::new();
    let (mut worker_total, mut total) = (0u64, 0u64);
    for pp in json["pps"].as_array().unwrap() {
        let bytes = pp["eb"].as_u64().unwrap_or(0);
        if bytes == 0 {
            continue;
        }
        total += bytes;
        let stack: Vec<&str> = pp["fs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| frames.get(i.as_u64()? as usize).copied())
            .collect();
        // The worker's own thread: its run loop is on the stack, and no client code.
        let on_worker = stack.iter().any(|f| f.contains("sluice_media::core::"))
            && !stack.iter().any(|f| f.contains("sluice_client::"));
        if !on_worker {
            continue;
        }
        worker_total += bytes;
        let site = stack
            .iter()
            .find(|f| {
                !(f.contains("dhat::")
                    || f.contains("alloc::")
                    || f.contains("core::")
                    || f.contains("std::")
                    || f.contains("hashbrown::")
                    || f.contains("[root]")
                    || f.contains("__rust"))
            })
            .map_or("?".to_owned(), |f| short(f));
        *by_site.entry(site).or_default() += bytes;
    }
    let mut sites: Vec<_> = by_site.into_iter().collect();
    sites.sort_by_key(|s| std::cmp::Reverse(s.1));
    println!(
        "heap live with {n} idle connected transports: {} KiB in all, {} KiB allocated on the worker: {:.1} KiB per transport",
        total / 1024,
        worker_total / 1024,
        worker_total as f64 / n as f64 / 1024.0
    );
    for (site, bytes) in sites.iter().take(25) {
        println!(
            "{:>9.1} KiB/transport  {site}",
            *bytes as f64 / n as f64 / 1024.0
        );
    }
}

/// A frame's function, without its address and source position.
fn short(frame: &str) -> String {
    let f = frame.split_once(": ").map_or(frame, |(_, f)| f);
    let f = f.split(" (").next().unwrap_or(f);
    f.to_owned()
}
