//! The machine's floor: what a plain loop of `sendto` of 1200-byte datagrams costs per packet on
//! loopback, measured on the server's CPU while nothing else runs there. No server can forward a
//! packet for less; what it spends above this is its own. Printed beside every per-packet cost,
//! since machines differ by up to 3× in absolute speed.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Datagram size of the loop (the fan-out's video packets).
const DATAGRAM_BYTES: usize = 1200;
/// Datagrams sent before measuring (socket buffers, caches, the CPU's clock).
const WARM_UP: u32 = 5_000;
/// Datagrams measured: ≈ 0.3–1 s of one core.
const MEASURED: u32 = 200_000;

/// CPU nanoseconds per datagram of a `sendto` loop pinned to `cpu`, the receiver draining on
/// this process's own CPU; `None` if loopback UDP or `/proc` is unavailable.
pub fn sendto_ns_per_packet(cpu: usize) -> Option<f64> {
    let receiver = UdpSocket::bind("127.0.0.1:0").ok()?;
    receiver
        .set_read_timeout(Some(Duration::from_millis(50)))
        .ok()?;
    let to = receiver.local_addr().ok()?;
    let stop = Arc::new(AtomicBool::new(false));
    let drain = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let _ = receiver.recv(&mut buf);
            }
        })
    };
    let sender = std::thread::spawn(move || {
        pin_this_thread(cpu);
        let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
        let datagram = [0x80u8; DATAGRAM_BYTES];
        for _ in 0..WARM_UP {
            let _ = socket.send_to(&datagram, to);
        }
        let start = thread_cpu_ns()?;
        for _ in 0..MEASURED {
            // A full receive buffer drops on the receiver's side; the send is still paid.
            let _ = socket.send_to(&datagram, to);
        }
        let spent = thread_cpu_ns()?.saturating_sub(start);
        Some(spent as f64 / f64::from(MEASURED))
    });
    let result = sender.join().ok().flatten();
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    result
}

/// Prints the floor and returns it (for the scenario's JSON line).
pub async fn measure_and_print(cpu: usize) -> Option<f64> {
    let floor = tokio::task::spawn_blocking(move || sendto_ns_per_packet(cpu))
        .await
        .ok()
        .flatten();
    match floor {
        Some(ns) => println!(
            "floor: a plain loop of sendto of {DATAGRAM_BYTES}-byte datagrams on loopback costs {ns:.0} ns per packet on CPU {cpu}"
        ),
        None => println!("floor: could not be measured (no loopback UDP or /proc)"),
    }
    floor
}

/// Pins the calling thread to `cpu`; best effort (`taskset` on the thread's id).
fn pin_this_thread(cpu: usize) {
    // `/proc/thread-self` links to `PID/task/TID`.
    if let Some(tid) = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    {
        super::target::pin(cpu, &tid);
    }
}

/// CPU time of the calling thread in nanoseconds (`/proc/thread-self/schedstat`: its first
/// field is the time spent on a CPU, in ns).
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calling_threads_cpu_time_grows_with_work() {
        // Linux with schedstat, as on every machine sluice runs on.
        let before = thread_cpu_ns().expect("/proc/thread-self/schedstat is readable");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        std::hint::black_box(x);
        let after = thread_cpu_ns().expect("read once, readable again");
        assert!(after > before, "{after} > {before}");
    }
}
