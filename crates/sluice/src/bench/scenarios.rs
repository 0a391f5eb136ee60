//! The scenarios: fan-out, audio room, data relay, join storm and memory.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use sluice_client::media::{audio_stamp, now_us, vp8_stamp};
use sluice_client::{ReceivedData, ReceivedRtp, Session, SessionEvent, SourceConfig};
use sluice_media::DataMessage;
use sluice_media::ortc::MediaKind;
use tokio::sync::mpsc::UnboundedReceiver;

use super::janus::{self, Janus, JanusSession};
use super::{Target, TargetArgs, floor};

/// Above this share of its core the generator itself may be what limits a step: its figures
/// are then a bound on the server, not a measurement of it, and are flagged.
const GENERATOR_SATURATED: f64 = 0.9;

/// What one received stream saw during the measurement window.
#[derive(Debug, Default)]
struct StreamStats {
    min_seq: Option<u64>,
    max_seq: u64,
    count: u64,
    latencies_us: Vec<u32>,
}

/// Every stream of a scenario, reset at the start of each window.
#[derive(Debug, Default, Clone)]
struct Meter {
    streams: Arc<Mutex<Vec<Arc<Mutex<StreamStats>>>>>,
}

/// One window's totals.
#[derive(Debug, Clone, Copy)]
struct Window {
    received: u64,
    expected: u64,
    p50_us: u32,
    p99_us: u32,
    p999_us: u32,
}

impl Window {
    fn loss(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        1.0 - self.received.min(self.expected) as f64 / self.expected as f64
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Meter {
    fn stream(&self) -> Arc<Mutex<StreamStats>> {
        let s = Arc::new(Mutex::new(StreamStats::default()));
        if let Ok(mut streams) = self.streams.lock() {
            streams.push(s.clone());
        }
        s
    }

    fn reset(&self) {
        if let Ok(streams) = self.streams.lock() {
            for s in streams.iter() {
                if let Ok(mut s) = s.lock() {
                    *s = StreamStats::default();
                }
            }
        }
    }

    fn read(&self) -> Window {
        let (mut received, mut expected, mut lat) = (0, 0, Vec::new());
        if let Ok(streams) = self.streams.lock() {
            for s in streams.iter() {
                if let Ok(s) = s.lock() {
                    received += s.count;
                    if let Some(min) = s.min_seq {
                        expected += s.max_seq - min + 1;
                    }
                    lat.extend_from_slice(&s.latencies_us);
                }
            }
        }
        lat.sort_unstable();
        Window {
            received,
            expected,
            p50_us: percentile(&lat, 0.5),
            p99_us: percentile(&lat, 0.99),
            p999_us: percentile(&lat, 0.999),
        }
    }
}

/// Counts a consumer's packets (sequence gaps are loss) and their one-way latency.
fn meter_rtp(meter: &Meter, kind: MediaKind, mut packets: UnboundedReceiver<ReceivedRtp>) {
    let stats = meter.stream();
    tokio::spawn(async move {
        while let Some(p) = packets.recv().await {
            let stamp = match kind {
                MediaKind::Video => vp8_stamp(&p.payload),
                MediaKind::Audio => audio_stamp(&p.payload),
            };
            let Ok(mut s) = stats.lock() else { break };
            s.count += 1;
            s.min_seq = Some(s.min_seq.map_or(p.seq, |m| m.min(p.seq)));
            s.max_seq = s.max_seq.max(p.seq);
            if let Some(stamp) = stamp
                && s.latencies_us.len() < 200_000
            {
                let l = p.received_us.saturating_sub(stamp.sent_us);
                s.latencies_us.push(u32::try_from(l).unwrap_or(u32::MAX));
            }
        }
    });
}

/// Takes every consumer event of `session` from now on and meters it.
fn meter_session(meter: &Meter, mut session: Session) -> Arc<Session> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<SessionEvent>();
    let meter = meter.clone();
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if let SessionEvent::Consumer { kind, packets, .. } = e {
                meter_rtp(&meter, kind, packets);
            }
        }
    });
    // Pump the session's events into the meter (the session stays usable for requests).
    let events = session.take_events();
    tokio::spawn(async move {
        let mut events = events;
        while let Some(e) = events.recv().await {
            if tx.send(e).is_err() {
                break;
            }
        }
    });
    Arc::new(session)
}

/// CPU time of this process, in nanoseconds.
fn own_cpu_ns() -> u64 {
    super::target::process_cpu("self").map_or(0, super::target::ProcessCpu::total_ns)
}

/// A measured step.
struct Step {
    window: Window,
    seconds: f64,
    /// The server's CPU, in cores: all of it, and the part in user space.
    server_cpu: Option<f64>,
    server_user_cpu: Option<f64>,
    client_cpu: f64,
}

impl Step {
    fn out_pps(&self) -> f64 {
        self.window.received as f64 / self.seconds
    }

    fn cpu_ns_per_packet(&self) -> Option<f64> {
        self.ns_per_packet(self.server_cpu?)
    }

    /// The server's user-space CPU per out packet: its own code (and str0m's), without the
    /// kernel's sending, receiving and waking.
    fn user_ns_per_packet(&self) -> Option<f64> {
        self.ns_per_packet(self.server_user_cpu?)
    }

    fn ns_per_packet(&self, cores: f64) -> Option<f64> {
        (self.window.received > 0).then(|| cores * self.seconds * 1e9 / self.window.received as f64)
    }

    fn pps_per_core(&self) -> Option<f64> {
        self.cpu_ns_per_packet().map(|ns| 1e9 / ns)
    }

    fn generator_saturated(&self) -> bool {
        self.client_cpu >= GENERATOR_SATURATED
    }
}

async fn measure(target: &Target, meter: &Meter, seconds: u64) -> Step {
    measure_with(&|| target.cpu_ns(), meter, seconds).await
}

async fn measure_with(
    cpu: &dyn Fn() -> Option<super::target::ProcessCpu>,
    meter: &Meter,
    seconds: u64,
) -> Step {
    meter.reset();
    let (s0, c0, t0) = (cpu(), own_cpu_ns(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let window = meter.read();
    let (s1, c1, elapsed) = (cpu(), own_cpu_ns(), t0.elapsed().as_secs_f64());
    let cores = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / 1e9 / elapsed;
    Step {
        window,
        seconds: elapsed,
        server_cpu: s0.zip(s1).map(|(a, b)| cores(a.total_ns(), b.total_ns())),
        server_user_cpu: s0.zip(s1).map(|(a, b)| cores(a.user_ns, b.user_ns)),
        client_cpu: (c1.saturating_sub(c0)) as f64 / 1e9 / elapsed,
    }
}

fn fmt_opt(v: Option<f64>, scale: f64, unit: &str) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{:.1}{unit}", v * scale))
}

fn print_step(label: &str, n: usize, step: &Step) {
    println!(
        "{label:>12} {n:>5}  out {:>9.0} pps  loss {:>6.2} %  p50 {:>6} µs  p99 {:>7} µs  server cpu {:>7}  {:>9} ns/pkt ({} in user space)  {:>10} pps/core  generator cpu {:.0} %{}",
        step.out_pps(),
        step.window.loss() * 100.0,
        step.window.p50_us,
        step.window.p99_us,
        fmt_opt(step.server_cpu, 100.0, " %"),
        fmt_opt(step.cpu_ns_per_packet(), 1.0, ""),
        fmt_opt(step.user_ns_per_packet(), 1.0, ""),
        fmt_opt(step.pps_per_core(), 1.0, ""),
        step.client_cpu * 100.0,
        if step.generator_saturated() {
            "  (generator saturated: a bound, not a measurement)"
        } else {
            ""
        },
    );
}

/// How the cost per out packet changes with the load: the first and the last step before the
/// knee, and their ratio (a flat cost stays near 1.0); all the server's CPU, then its
/// user-space part (at light load the kernel's share per packet is larger: each send wakes a
/// sleeping receiver, each arrival the sleeping worker).
fn print_cost_spread(what: &str, steps: &[(usize, Step)]) {
    for (label, cost) in [
        (
            "cost per out packet",
            Step::cpu_ns_per_packet as fn(&Step) -> Option<f64>,
        ),
        ("user-space cost per out packet", Step::user_ns_per_packet),
    ] {
        let served: Vec<(usize, f64)> = steps
            .iter()
            .filter(|(_, s)| !saturated(s))
            .filter_map(|(n, s)| Some((*n, cost(s)?)))
            .collect();
        if let (Some((n0, c0)), Some((n1, c1))) = (served.first(), served.last())
            && n0 != n1
        {
            println!(
                "{label}: {c0:.0} ns at {n0} {what}, {c1:.0} ns at {n1} {what}: ×{:.2}",
                c1 / c0
            );
        }
    }
}

/// Set-up that fails at a step (a session that cannot join or connect) is the knee: the steps
/// measured so far stand.
fn setup_failed(what: &str, n: usize, error: &anyhow::Error) {
    println!("past the knee at {n} {what}: set-up failed: {error:#}");
}

/// Waits until `session` was offered `n` consumers (or the timeout).
async fn wait_consumers(meter: &Meter, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if meter.streams.lock().map_or(0, |s| s.len()) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a step is past the knee: over 1 % loss, or p99 latency over 100 ms (queues growing).
fn saturated(step: &Step) -> bool {
    step.window.loss() >= 0.01 || step.window.p99_us > 100_000
}

/// The last step before the knee, as the scenario's JSON line, with the cost of every step
/// before the knee (`cost_ns_by_step`: [n, ns per out packet]) and the machine's `sendto` floor.
fn summary(
    scenario: &str,
    sfu: &str,
    what: &str,
    steps: &[(usize, Step)],
    floor_ns: Option<f64>,
) -> Option<serde_json::Value> {
    let (n, step) = steps.iter().rev().find(|(_, s)| !saturated(s))?;
    let by_step: Vec<serde_json::Value> = steps
        .iter()
        .filter(|(_, s)| !saturated(s))
        .filter_map(|(n, s)| Some(json!([n, s.cpu_ns_per_packet()?.round()])))
        .collect();
    Some(json!({
        "scenario": scenario, "sfu": sfu,
        "out_pps": step.out_pps().round(),
        "out_pps_per_core": step.pps_per_core().map(f64::round),
        "cpu_ns_per_out_packet": step.cpu_ns_per_packet().map(f64::round),
        "user_ns_per_out_packet": step.user_ns_per_packet().map(f64::round),
        "p50_us": step.window.p50_us, "p99_us": step.window.p99_us,
        what: n,
        "loss": step.window.loss(),
        "generator_cpu": (step.client_cpu * 100.0).round() / 100.0,
        "generator_saturated": step.generator_saturated(),
        "cost_ns_by_step": by_step,
        "sendto_floor_ns": floor_ns.map(f64::round),
    }))
}

/// After a stepped scenario: how its cost per packet changed with the load (`label`: what
/// was stepped), then its JSON line (`max_` + label: the last step before the knee).
fn report(
    target: &Target,
    scenario: &str,
    label: &str,
    steps: &[(usize, Step)],
    floor_ns: Option<f64>,
) -> anyhow::Result<()> {
    print_cost_spread(label, steps);
    let line = summary(
        scenario,
        &target.label,
        &format!("max_{label}"),
        steps,
        floor_ns,
    )
    .context("no step before the knee")?;
    println!("{line}");
    Ok(())
}

async fn fanout_steps(
    target: &Target,
    args: &TargetArgs,
    steps: &[usize],
) -> anyhow::Result<Vec<(usize, Step)>> {
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    let room = format!("bench-fanout-{}", std::process::id());
    let publisher = target.session(&room, "publisher", false).await?;
    publisher.produce(SourceConfig::video()).await?;
    publisher.produce(SourceConfig::audio()).await?;
    let meter = Meter::default();
    let mut subscribers = Vec::new();
    let mut out = Vec::new();
    println!(
        "fanout on {}: 1 publisher (VP8 ≈100 pkt/s of 1200 B + opus 50 pkt/s) → N subscribers; {} s per step",
        target.label, args.seconds
    );
    'steps: for &n in steps {
        while subscribers.len() < n {
            match target
                .session(&room, &format!("sub-{}", subscribers.len()), true)
                .await
                .with_context(|| format!("subscriber {}", subscribers.len()))
            {
                Ok(s) => subscribers.push(meter_session(&meter, s)),
                Err(e) => {
                    setup_failed("subscribers", n, &e);
                    break 'steps;
                }
            }
        }
        wait_consumers(&meter, 2 * n, Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let step = measure(target, &meter, args.seconds).await;
        print_step("subscribers", n, &step);
        let knee = saturated(&step);
        out.push((n, step));
        if knee {
            println!("past the knee (loss ≥ 1 % or p99 > 100 ms) at {n} subscribers");
            break;
        }
    }
    for s in &subscribers {
        s.close();
    }
    publisher.close();
    Ok(out)
}

pub async fn fanout(target: &Target, args: &TargetArgs, steps: &[usize]) -> anyhow::Result<()> {
    let floor = floor::measure_and_print(args.server_cpu).await;
    let steps = fanout_steps(target, args, steps).await?;
    report(target, "fanout", "subscribers", &steps, floor)
}

/// Pipes between the workers of the server's rooms now, and the rooms whose first router is
/// on each worker (the admin API's room list).
async fn pipes_now(target: &Target) -> Option<(u64, std::collections::BTreeMap<u64, usize>)> {
    let rooms = target.admin_get("/api/rooms").await.ok()?;
    let rooms = rooms.as_array()?;
    let mut homes = std::collections::BTreeMap::new();
    for r in rooms {
        *homes.entry(r["worker"].as_u64()?).or_insert(0) += 1;
    }
    Some((
        rooms.iter().filter_map(|r| r["pipes"].as_u64()).sum(),
        homes,
    ))
}

async fn pairs_steps(
    target: &Target,
    args: &TargetArgs,
    steps: &[usize],
) -> anyhow::Result<Vec<(usize, Step)>> {
    let meter = Meter::default();
    let mut sessions = Vec::new();
    let mut out = Vec::new();
    println!(
        "pairs on {}: N rooms of a publisher (VP8 ≈100 pkt/s of 1200 B + opus 50 pkt/s) and one subscriber; {} s per step",
        target.label, args.seconds
    );
    let mut made = 0;
    'steps: for &n in steps {
        while made < n {
            let room = format!("bench-pair-{}-{made}", std::process::id());
            let pair = async {
                let publisher = target.session(&room, "publisher", false).await?;
                publisher.produce(SourceConfig::video()).await?;
                publisher.produce(SourceConfig::audio()).await?;
                let subscriber = target.session(&room, "subscriber", true).await?;
                Ok::<_, anyhow::Error>((publisher, subscriber))
            };
            match pair.await.with_context(|| format!("pair {made}")) {
                Ok((publisher, subscriber)) => {
                    sessions.push(Arc::new(publisher));
                    sessions.push(meter_session(&meter, subscriber));
                    made += 1;
                }
                Err(e) => {
                    setup_failed("pairs", n, &e);
                    break 'steps;
                }
            }
        }
        wait_consumers(&meter, 2 * n, Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let step = measure(target, &meter, args.seconds).await;
        print_step("pairs", n, &step);
        match pipes_now(target).await {
            Some((p, homes)) => println!(
                "{:>12} {n:>5}  pipes {p} (of {} producers); rooms by worker {homes:?}",
                "",
                2 * n
            ),
            None => println!("{:>12} {n:>5}  pipes unknown (no admin API)", ""),
        }
        let knee = saturated(&step);
        out.push((n, step));
        if knee {
            println!("past the knee (loss ≥ 1 % or p99 > 100 ms) at {n} pairs");
            break;
        }
    }
    for s in &sessions {
        s.close();
    }
    Ok(out)
}

pub async fn pairs(target: &Target, args: &TargetArgs, steps: &[usize]) -> anyhow::Result<()> {
    let floor = floor::measure_and_print(args.server_cpu).await;
    let steps = pairs_steps(target, args, steps).await?;
    report(target, "pairs", "pairs", &steps, floor)
}

async fn audio_room_steps(
    target: &Target,
    args: &TargetArgs,
    steps: &[usize],
) -> anyhow::Result<Vec<(usize, Step)>> {
    let room = format!("bench-audio-{}", std::process::id());
    let meter = Meter::default();
    let mut peers = Vec::new();
    let mut out = Vec::new();
    println!(
        "audio-room on {}: N peers, each sending opus (50 pkt/s) to all others; {} s per step",
        target.label, args.seconds
    );
    'steps: for &n in steps {
        while peers.len() < n {
            let peer = format!("peer-{}", peers.len());
            let joined = async {
                let s = target.session(&room, &peer, true).await?;
                s.produce(SourceConfig::audio()).await?;
                Ok::<_, anyhow::Error>(s)
            }
            .await
            .with_context(|| peer.clone());
            match joined {
                Ok(s) => peers.push(meter_session(&meter, s)),
                Err(e) => {
                    setup_failed("peers", n, &e);
                    break 'steps;
                }
            }
        }
        wait_consumers(&meter, n * (n - 1), Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let step = measure(target, &meter, args.seconds).await;
        print_step("peers", n, &step);
        let knee = saturated(&step);
        out.push((n, step));
        if knee {
            println!("past the knee (loss ≥ 1 % or p99 > 100 ms) at {n} peers");
            break;
        }
    }
    for p in &peers {
        p.close();
    }
    Ok(out)
}

pub async fn audio_room(target: &Target, args: &TargetArgs, steps: &[usize]) -> anyhow::Result<()> {
    let floor = floor::measure_and_print(args.server_cpu).await;
    let steps = audio_room_steps(target, args, steps).await?;
    report(target, "audio-room", "peers", &steps, floor)
}

/// Meters a stream carrying several SSRCs (a Janus subscription): per-SSRC sequence gaps.
fn meter_mixed(meter: &Meter, mut packets: UnboundedReceiver<ReceivedRtp>) {
    let meter = meter.clone();
    tokio::spawn(async move {
        let mut streams: std::collections::HashMap<u32, Arc<Mutex<StreamStats>>> =
            Default::default();
        while let Some(p) = packets.recv().await {
            let stats = streams
                .entry(p.ssrc)
                .or_insert_with(|| meter.stream())
                .clone();
            let stamp = vp8_stamp(&p.payload).or_else(|| audio_stamp(&p.payload));
            let Ok(mut s) = stats.lock() else { break };
            s.count += 1;
            s.min_seq = Some(s.min_seq.map_or(p.seq, |m| m.min(p.seq)));
            s.max_seq = s.max_seq.max(p.seq);
            if let Some(stamp) = stamp
                && s.latencies_us.len() < 200_000
            {
                let l = p.received_us.saturating_sub(stamp.sent_us);
                s.latencies_us.push(u32::try_from(l).unwrap_or(u32::MAX));
            }
        }
    });
}

async fn janus_fanout_steps(
    janus: &Janus,
    args: &TargetArgs,
    steps: &[usize],
) -> anyhow::Result<Vec<(usize, Step)>> {
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    let session = JanusSession::connect(&janus.base()).await?;
    let room = 1000 + u64::from(std::process::id() % 1000);
    janus::create_room(&session, room).await?;
    let publisher = janus::publish(
        &session,
        room,
        vec![SourceConfig::video(), SourceConfig::audio()],
    )
    .await?;
    let meter = Meter::default();
    let mut subscribers = Vec::new();
    let mut out = Vec::new();
    println!(
        "fanout on Janus: the same publisher and subscribers (VideoRoom); {} s per step",
        args.seconds
    );
    'steps: for &n in steps {
        while subscribers.len() < n {
            match janus::subscribe(&session, room, publisher.feed).await {
                Ok((handle, transport, packets)) => {
                    meter_mixed(&meter, packets);
                    subscribers.push((handle, transport));
                }
                Err(e) => {
                    setup_failed("subscribers", n, &e);
                    break 'steps;
                }
            }
        }
        wait_consumers(&meter, 2 * n, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let step = measure_with(&|| janus.cpu_ns(), &meter, args.seconds).await;
        print_step("subscribers", n, &step);
        let knee = saturated(&step);
        out.push((n, step));
        if knee {
            println!("past the knee (loss ≥ 1 % or p99 > 100 ms) at {n} subscribers");
            break;
        }
    }
    for (_, t) in &subscribers {
        t.close();
    }
    session.close();
    drop(publisher);
    Ok(out)
}

async fn janus_audio_room_steps(
    janus: &Janus,
    args: &TargetArgs,
    steps: &[usize],
) -> anyhow::Result<Vec<(usize, Step)>> {
    let session = JanusSession::connect(&janus.base()).await?;
    let room = 2000 + u64::from(std::process::id() % 1000);
    janus::create_room(&session, room).await?;
    let meter = Meter::default();
    let mut publishers: Vec<janus::JanusPublisher> = Vec::new();
    // Per peer: one subscriber PeerConnection carrying every other peer's audio.
    let mut listeners: Vec<(janus::JanusHandle, sluice_client::ClientTransport)> = Vec::new();
    let mut out = Vec::new();
    println!(
        "audio-room on Janus: each peer publishes opus and receives every other peer on one subscriber PeerConnection (multistream); {} s per step",
        args.seconds
    );
    for &n in steps {
        let grown = async {
            let before = publishers.len();
            while publishers.len() < n {
                publishers.push(janus::publish(&session, room, vec![SourceConfig::audio()]).await?);
            }
            let new_feeds: Vec<u64> = publishers[before..].iter().map(|p| p.feed).collect();
            // Existing listeners add the newcomers.
            for (handle, transport) in listeners.iter_mut() {
                janus::subscribe_more(handle, transport, room, &new_feeds).await?;
            }
            // Newcomers subscribe to everyone else.
            for i in before..n {
                let feeds: Vec<u64> = publishers
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| p.feed)
                    .collect();
                let (handle, transport, packets) =
                    janus::subscribe_many(&session, room, &feeds).await?;
                meter_mixed(&meter, packets);
                listeners.push((handle, transport));
            }
            Ok::<(), anyhow::Error>(())
        }
        .await;
        if let Err(e) = grown {
            setup_failed("peers", n, &e);
            break;
        }
        wait_consumers(&meter, n * (n - 1), Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let step = measure_with(&|| janus.cpu_ns(), &meter, args.seconds).await;
        print_step("peers", n, &step);
        let knee = saturated(&step);
        out.push((n, step));
        if knee {
            println!("past the knee (loss ≥ 1 % or p99 > 100 ms) at {n} peers");
            break;
        }
    }
    for (_, t) in &listeners {
        t.close();
    }
    session.close();
    Ok(out)
}

fn print_ratio(metric: &str, sluice: Option<f64>, janus: Option<f64>) {
    match (sluice, janus) {
        (Some(s), Some(j)) if j != 0.0 => println!(
            "{metric:>28}: sluice {s:>10.1}  janus {j:>10.1}  sluice/janus {:.2}",
            s / j
        ),
        _ => println!("{metric:>28}: sluice {sluice:?}  janus {janus:?}"),
    }
}

fn compare_steps(
    scenario: &str,
    what: &str,
    sluice: &[(usize, Step)],
    janus: &[(usize, Step)],
    floor_ns: Option<f64>,
) -> serde_json::Value {
    let s = summary(scenario, "sluice", what, sluice, floor_ns);
    let j = summary(scenario, "janus", what, janus, floor_ns);
    if let Some(s) = &s {
        println!("{s}");
    }
    if let Some(j) = &j {
        println!("{j}");
    }
    let get = |v: &Option<serde_json::Value>, k: &str| v.as_ref().and_then(|v| v[k].as_f64());
    println!("{scenario}: sluice vs Janus");
    let mut ratios = serde_json::Map::new();
    for k in [
        "out_pps_per_core",
        "cpu_ns_per_out_packet",
        "p50_us",
        "p99_us",
        what,
    ] {
        let (a, b) = (get(&s, k), get(&j, k));
        print_ratio(k, a, b);
        if let (Some(a), Some(b)) = (a, b)
            && b != 0.0
        {
            ratios.insert(k.to_owned(), json!((a / b * 100.0).round() / 100.0));
        }
    }
    // The same load on both: CPU per packet at the largest step both served.
    if let Some((n, ss)) = sluice
        .iter()
        .rev()
        .find(|(n, st)| !saturated(st) && janus.iter().any(|(m, jt)| m == n && !saturated(jt)))
    {
        if let Some((_, js)) = janus.iter().find(|(m, _)| m == n) {
            print_ratio(
                &format!("cpu ns/pkt at {what} = {n}"),
                ss.cpu_ns_per_packet(),
                js.cpu_ns_per_packet(),
            );
            print_ratio(
                &format!("p99 µs at {what} = {n}"),
                Some(f64::from(ss.window.p99_us)),
                Some(f64::from(js.window.p99_us)),
            );
        }
    }
    json!({"scenario": scenario, "sfu": "sluice/janus", "ratios": ratios})
}

pub async fn compare(
    target: &Target,
    args: &TargetArgs,
    subscribers: &[usize],
    peers: &[usize],
) -> anyhow::Result<()> {
    // A voice-only sluice cannot take the fan-out's video publisher.
    let subscribers = if args.voice_only {
        println!("--voice-only: the video fan-out is skipped");
        &[]
    } else {
        subscribers
    };
    let floor = floor::measure_and_print(args.server_cpu).await;
    let sluice_fanout = fanout_steps(target, args, subscribers).await?;
    let sluice_audio = audio_room_steps(target, args, peers).await?;
    let janus = Janus::start(args.server_cpu)?;
    let result = async {
        let janus_fanout = janus_fanout_steps(&janus, args, subscribers).await?;
        let janus_audio = janus_audio_room_steps(&janus, args, peers).await?;
        Ok::<_, anyhow::Error>((janus_fanout, janus_audio))
    }
    .await;
    janus.stop();
    let (janus_fanout, janus_audio) = result?;
    print_cost_spread("subscribers (sluice)", &sluice_fanout);
    print_cost_spread("subscribers (Janus)", &janus_fanout);
    print_cost_spread("peers (sluice)", &sluice_audio);
    print_cost_spread("peers (Janus)", &janus_audio);
    let f = (!subscribers.is_empty()).then(|| {
        compare_steps(
            "fanout",
            "max_subscribers",
            &sluice_fanout,
            &janus_fanout,
            floor,
        )
    });
    let a = compare_steps(
        "audio-room",
        "max_peers",
        &sluice_audio,
        &janus_audio,
        floor,
    );
    if let Some(f) = f {
        println!("{f}");
    }
    println!("{a}");
    Ok(())
}

/// Counts a data consumer's messages and their latency (the first 8 bytes: send time, µs).
fn meter_data(stats: Arc<Mutex<StreamStats>>, mut messages: UnboundedReceiver<ReceivedData>) {
    tokio::spawn(async move {
        while let Some(m) = messages.recv().await {
            let Ok(mut s) = stats.lock() else { break };
            s.count += 1;
            if m.data.len() >= 8 && s.latencies_us.len() < 500_000 {
                let mut sent = [0u8; 8];
                sent.copy_from_slice(&m.data[..8]);
                let l = m.received_us.saturating_sub(u64::from_be_bytes(sent));
                s.latencies_us.push(u32::try_from(l).unwrap_or(u32::MAX));
            }
        }
    });
}

pub async fn data(
    target: &Target,
    args: &TargetArgs,
    steps: &[usize],
    hz: u32,
    size: usize,
    sender_count: Option<usize>,
) -> anyhow::Result<()> {
    println!(
        "data on {}: M players, each sending {size}-byte unordered messages (maxRetransmits 0) at {hz} Hz to every other player; {} s per step",
        target.label, args.seconds
    );
    let mut last = None;
    for &m in steps {
        let room = format!("bench-data-{}-{m}", std::process::id());
        let received = Meter::default();
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counting = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut players = Vec::new();
        for i in 0..m {
            let mut s = target.session(&room, &format!("player-{i}"), true).await?;
            let (_, stream) = s.produce_data("state", false, Some(0)).await?;
            let events = s.take_events();
            let meter = received.clone();
            tokio::spawn(async move {
                let mut events = events;
                while let Some(e) = events.recv().await {
                    if let SessionEvent::DataConsumer { messages, .. } = e {
                        meter_data(meter.stream(), messages);
                    }
                }
            });
            players.push((Arc::new(s), stream));
        }
        wait_consumers(&received, m * (m - 1), Duration::from_secs(30)).await;
        // Every player sends at `hz`, stamped with the send time.
        let mut senders = Vec::new();
        let sending = sender_count.unwrap_or(m).min(m);
        for (i, (s, stream)) in players.iter().enumerate().take(sending) {
            let (s, stream) = (s.clone(), *stream);
            let (sent, counting) = (sent.clone(), counting.clone());
            let period = Duration::from_micros(1_000_000 / u64::from(hz.max(1)));
            // Players are not in phase: spread their first send over one period.
            let phase = period * i as u32 / m.max(1) as u32;
            senders.push(tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
                let mut seq = 0u32;
                loop {
                    tick.tick().await;
                    let mut m = vec![0u8; size.max(14)];
                    m[..8].copy_from_slice(&now_us().to_be_bytes());
                    m[8..10].copy_from_slice(&(i as u16).to_be_bytes());
                    m[10..14].copy_from_slice(&seq.to_be_bytes());
                    seq = seq.wrapping_add(1);
                    if s.send_data(stream, DataMessage::binary(m)).is_err() {
                        break;
                    }
                    if counting.load(std::sync::atomic::Ordering::Relaxed) {
                        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        sent.store(0, std::sync::atomic::Ordering::Relaxed);
        counting.store(true, std::sync::atomic::Ordering::Relaxed);
        let step = measure(target, &received, args.seconds).await;
        counting.store(false, std::sync::atomic::Ordering::Relaxed);
        let sent_n = sent.load(std::sync::atomic::Ordering::Relaxed);
        let expected = sent_n * (m as u64 - 1);
        let _ = sending;
        let delivered = if expected == 0 {
            1.0
        } else {
            step.window.received as f64 / expected as f64
        };
        println!(
            "{:>12} {m:>5}  relayed {:>8.0} msg/s  delivered {:>6.2} %  p50 {:>6} µs  p99 {:>7} µs  p99.9 {:>7} µs  server cpu {:>7}  generator cpu {:.0} %{}",
            "players",
            step.out_pps(),
            delivered.min(1.0) * 100.0,
            step.window.p50_us,
            step.window.p99_us,
            step.window.p999_us,
            fmt_opt(step.server_cpu, 100.0, " %"),
            step.client_cpu * 100.0,
            if step.generator_saturated() {
                "  (generator saturated: a bound, not a measurement)"
            } else {
                ""
            },
        );
        for t in senders {
            t.abort();
        }
        for (s, _) in &players {
            s.close();
        }
        last = Some((m, step, delivered));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (m, step, delivered) = last.context("no step")?;
    println!(
        "{}",
        json!({
            "scenario": "data", "sfu": target.label, "players": m, "hz": hz, "size": size,
            "relayed_msgs_per_s": step.out_pps().round(),
            "delivered": delivered.min(1.0),
            "p50_us": step.window.p50_us, "p99_us": step.window.p99_us, "p999_us": step.window.p999_us,
            "server_cpu": step.server_cpu,
            "generator_cpu": step.client_cpu,
            "generator_saturated": step.generator_saturated(),
        })
    );
    Ok(())
}

pub async fn join(target: &Target, clients: usize) -> anyhow::Result<()> {
    let room = format!("bench-join-{}", std::process::id());
    let publisher = target.session(&room, "publisher", false).await?;
    publisher.produce(SourceConfig::video()).await?;
    println!("join: {clients} clients joining within one second a room with one video publisher");
    let spread = Duration::from_secs(1);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let delay = spread * i as u32 / clients.max(1) as u32;
        let token = target.token(&room, &format!("joiner-{i}")).await?;
        let url = sluice_client::ws_url(&target.base, &room, &format!("joiner-{i}"), &token);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let t0 = Instant::now();
            let signaling = sluice_client::SignalingClient::connect(&url).await?;
            let mut session =
                Session::join(signaling, sluice_client::SessionOptions::new("joiner")).await?;
            let joined = t0.elapsed();
            let recv = session.recv.clone().context("no receive transport")?;
            recv.wait_ice_connected(Duration::from_secs(10)).await?;
            let ice = t0.elapsed();
            recv.wait_connected(Duration::from_secs(10)).await?;
            let dtls = t0.elapsed();
            let Some(SessionEvent::Consumer { mut packets, .. }) = session
                .wait_event(Duration::from_secs(10), |e| {
                    matches!(e, SessionEvent::Consumer { .. })
                })
                .await
            else {
                anyhow::bail!("no consumer");
            };
            tokio::time::timeout(Duration::from_secs(10), packets.recv())
                .await?
                .context("no media")?;
            let media = t0.elapsed();
            Ok::<_, anyhow::Error>((session, [joined, ice, dtls, media]))
        }));
    }
    let mut times: [Vec<u32>; 4] = Default::default();
    let mut sessions = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Ok((s, ts))) => {
                for (v, d) in times.iter_mut().zip(ts) {
                    v.push(d.as_millis() as u32);
                }
                sessions.push(s);
            }
            _ => failed += 1,
        }
    }
    let names = [
        "signaling joined + send transport up",
        "receive ICE connected",
        "receive DTLS connected",
        "first media packet",
    ];
    let mut summary = serde_json::Map::new();
    for (name, v) in names.iter().zip(times.iter_mut()) {
        v.sort_unstable();
        println!(
            "{name:>40}: p50 {:>5} ms  p99 {:>5} ms  max {:>5} ms",
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.last().copied().unwrap_or(0)
        );
        summary.insert(
            name.split_whitespace().last().unwrap_or(name).to_owned(),
            json!({"p50_ms": percentile(v, 0.5), "p99_ms": percentile(v, 0.99)}),
        );
    }
    println!(
        "{}",
        json!({
            "scenario": "join", "sfu": target.label, "clients": clients, "failed": failed,
            "first_media_p50_ms": percentile(&times[3], 0.5),
            "first_media_p99_ms": percentile(&times[3], 0.99),
            "ice_p50_ms": percentile(&times[1], 0.5),
            "dtls_p50_ms": percentile(&times[2], 0.5),
        })
    );
    for s in &sessions {
        s.close();
    }
    Ok(())
}

pub async fn memory(target: &Target, peers: usize) -> anyhow::Result<()> {
    let room = format!("bench-memory-{}", std::process::id());
    let rss = || {
        target
            .rss_bytes()
            .context("memory needs a spawned server, or --server-pid with --url")
    };
    // Warm the room, the worker and the allocator with one peer first.
    let warm = target.session(&room, "warm", true).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = rss()?;
    // Peers joined over signaling only: what a peer costs before any transport.
    let mut lobby = Vec::new();
    for i in 0..peers {
        lobby.push(target.signaling_peer(&room, &format!("lobby-{i}")).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let joined = rss()?;
    let per_peer = (joined.saturating_sub(base)) as f64 / peers as f64;
    println!(
        "memory: {peers} peers joined, no transports: RSS {} → {} KiB: {:.1} KiB per peer (signaling)",
        base / 1024,
        joined / 1024,
        per_peer / 1024.0
    );
    let mut sessions = Vec::new();
    let mut events = Vec::new();
    for i in 0..peers {
        let mut s = target.session(&room, &format!("idle-{i}"), true).await?;
        events.push(s.take_events());
        sessions.push(s);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss()?;
    // Each of these peers also costs a signaling peer; the rest is its two transports.
    let per_transport = (idle.saturating_sub(joined) as f64 - per_peer * peers as f64).max(0.0)
        / (2 * peers) as f64;
    println!(
        "memory: {peers} more peers with 2 idle transports each: RSS {} → {} KiB: {:.1} KiB per idle transport (beyond its peer)",
        joined / 1024,
        idle / 1024,
        per_transport / 1024.0
    );
    let publisher = target.session(&room, "publisher", false).await?;
    publisher.produce(SourceConfig::video()).await?;
    // Keep the consumers' packets flowing (and drained) while measuring.
    let meter = Meter::default();
    for e in events {
        let meter = meter.clone();
        tokio::spawn(async move {
            let mut e = e;
            while let Some(ev) = e.recv().await {
                if let SessionEvent::Consumer { kind, packets, .. } = ev {
                    meter_rtp(&meter, kind, packets);
                }
            }
        });
    }
    wait_consumers(&meter, peers, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let active = rss()?;
    let per_consumer = (active.saturating_sub(idle)) as f64 / peers as f64;
    println!(
        "memory: {peers} active video consumers: RSS {} → {} KiB: {:.1} KiB per video consumer",
        idle / 1024,
        active / 1024,
        per_consumer / 1024.0
    );
    println!(
        "{}",
        json!({
            "scenario": "memory", "sfu": target.label, "peers": peers,
            "bytes_per_signaling_peer": per_peer.round(),
            "bytes_per_idle_transport": per_transport.round(),
            "bytes_per_video_consumer": per_consumer.round(),
        })
    );
    drop(warm);
    drop(lobby);
    Ok(())
}

/// The interest scenario's hearing radius (the world's units).
pub const INTEREST_RADIUS: f32 = 30.0;

/// A position message for `sluice.position`: little-endian f32 x, y, z (three NaNs: nowhere).
fn position_message(x: f32, y: f32, z: f32) -> DataMessage {
    let mut data = Vec::with_capacity(12);
    for v in [x, y, z] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    DataMessage::binary(data)
}

pub async fn interest(
    target: &Target,
    args: &TargetArgs,
    players: usize,
    k: usize,
) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    use std::sync::atomic::{AtomicBool, Ordering};

    let room = format!("bench-interest-{}", std::process::id());
    // About 2k players within the radius of each: the square's side from that density.
    let side = (players as f32 * std::f32::consts::PI * INTEREST_RADIUS * INTEREST_RADIUS
        / (2 * k.max(1)) as f32)
        .sqrt();
    println!(
        "interest on {}: {players} players with opus (50 pkt/s) walking at random in a {side:.0} × {side:.0} square, \
         each hearing the {k} nearest within {INTEREST_RADIUS}, then everyone; {} s per step",
        target.label, args.seconds
    );
    let meter = Meter::default();
    let mut sessions = Vec::new();
    for i in 0..players {
        let joined = async {
            let s = target.session(&room, &format!("player-{i}"), true).await?;
            s.produce(SourceConfig::audio()).await?;
            let (_, stream) = s.produce_data("sluice.position", false, Some(0)).await?;
            Ok::<_, anyhow::Error>((s, stream))
        }
        .await;
        match joined {
            Ok((s, stream)) => sessions.push((meter_session(&meter, s), stream)),
            Err(e) => {
                println!("player {i} could not join ({e:#}): measuring the {i} who did");
                break;
            }
        }
    }
    let players = sessions.len();
    anyhow::ensure!(players >= 2, "fewer than two players joined");
    // Every player walks 1 unit per tick at random and reports where it is 10 times a second, or
    // that it is nowhere (everyone hears everyone).
    let positioned = Arc::new(AtomicBool::new(true));
    let walker = {
        let sessions = sessions.clone();
        let positioned = positioned.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(42);
            let mut at: Vec<(f32, f32)> = (0..sessions.len())
                .map(|_| (rng.random_range(0.0..side), rng.random_range(0.0..side)))
                .collect();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let on = positioned.load(Ordering::Relaxed);
                for ((s, stream), p) in sessions.iter().zip(at.iter_mut()) {
                    p.0 = (p.0 + rng.random_range(-1.0..1.0)).clamp(0.0, side);
                    p.1 = (p.1 + rng.random_range(-1.0..1.0)).clamp(0.0, side);
                    let message = if on {
                        position_message(p.0, p.1, 0.0)
                    } else {
                        position_message(f32::NAN, f32::NAN, f32::NAN)
                    };
                    let _ = s.send_data(*stream, message);
                }
            }
        })
    };
    wait_consumers(&meter, players * (players - 1), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let on = measure(target, &meter, args.seconds).await;
    print_step("interest on", players, &on);
    positioned.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let off = measure(target, &meter, args.seconds).await;
    print_step("interest off", players, &off);
    walker.abort();
    for (s, _) in &sessions {
        s.close();
    }
    let nominal_on = (players * k.min(players - 1) * 50) as f64;
    let nominal_off = (players * (players - 1) * 50) as f64;
    println!(
        "nominal out packets/s: {nominal_on:.0} with interest (k = {k}), {nominal_off:.0} without; \
         server CPU {} with, {} without",
        fmt_opt(on.server_cpu, 100.0, " %"),
        fmt_opt(off.server_cpu, 100.0, " %"),
    );
    println!(
        "{}",
        json!({
            "scenario": "interest", "sfu": target.label, "players": players, "k": k,
            "on": {"out_pps": on.out_pps().round(), "server_cpu": on.server_cpu,
                   "cpu_ns_per_out_packet": on.cpu_ns_per_packet().map(f64::round),
                   "loss": on.window.loss(), "p99_us": on.window.p99_us,
                   "generator_saturated": on.generator_saturated()},
            "off": {"out_pps": off.out_pps().round(), "server_cpu": off.server_cpu,
                    "cpu_ns_per_out_packet": off.cpu_ns_per_packet().map(f64::round),
                    "loss": off.window.loss(), "p99_us": off.window.p99_us,
                    "generator_saturated": off.generator_saturated()},
        })
    );
    Ok(())
}
