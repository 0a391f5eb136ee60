//! `GET /metrics` in Prometheus' text exposition format 0.0.4 (prometheus-client, the Prometheus
//! project's Rust client). Every family holds one quantity, named with its unit and `_total` for counters; every
//! label takes its values from a fixed set (protocol method names or `unknown`, error names,
//! HTTP statuses, worker indexes, fixed reasons and modes), so no peer can add series.
//!
//! | family | type | labels |
//! | --- | --- | --- |
//! | `sluice_rooms`, `sluice_peers`, `sluice_transports`, `sluice_producers`, `sluice_consumers`, `sluice_data_producers`, `sluice_data_consumers` | gauge | — |
//! | `sluice_ws_connections_total` | counter | — |
//! | `sluice_requests_total` | counter | `method`, `result` |
//! | `sluice_ws_dropped_frames_total` | counter | `reason` ([`DroppedFrame`]: `rate_limited`, `not_json`, `invalid_message`, `binary`, `unmatched_response`, `notification`) |
//! | `sluice_request_duration_seconds` | histogram | `method` |
//! | `sluice_peer_connect_duration_seconds` | histogram | — |
//! | `sluice_upgrade_refusals_total` | counter | `status` |
//! | `sluice_http_connections_refused_total` | counter | `reason` (`total`, `per_ip`) |
//! | `sluice_worker_deaths_total` | counter | — |
//! | `sluice_worker_up` | gauge | `worker` |
//! | `sluice_worker_{received,sent}_bytes_total` | counter | `worker` |
//! | `sluice_worker_{received,sent}_datagrams_total` | counter | `worker` |
//! | `sluice_worker_dropped_datagrams_total` | counter | `worker`, `reason` (`unknown_source`, `malformed`) |
//! | `sluice_worker_send_errors_total`, `sluice_worker_session_errors_total` | counter | `worker` |
//! | `sluice_worker_dropped_data_messages_total` | counter | `worker` |
//! | `sluice_worker_cpu_seconds_total` | counter | `worker`, `mode` (`user`, `system`) |
//! | `sluice_worker_timeouts_total`, `sluice_worker_wakeups_total` | counter | `worker` |
//! | `sluice_worker_tcp_connections` | gauge | `worker` |
//! | `sluice_worker_tcp_connections_{accepted,rejected}_total` | counter | `worker` |
//! | `sluice_recordings` | gauge | — |
//! | `sluice_recordings_ended_total` | counter | `reason` (`stopped`, `producerClosed`, `sizeLimit`, `failed`, `roomClosed`, `shutdown`) |
//! | `sluice_recording_bytes_total` | counter | — |
//! | `sluice_cluster_pipes` | gauge (each heartbeat) | `direction` (`in`: producers of other nodes piped here, `out`: pipes from here) |
//! | `sluice_cluster_pipes_paused` | gauge (each heartbeat) | `direction` (of those, media pipes no consumer at their target wants) |
//! | `sluice_cluster_redis_errors_total` | counter | — |
//! | `sluice_cluster_events_ignored_total` | counter | `reason` |

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sluice_media::ResourceUsage;
use sluice_protocol::ClientRequest;

use sluice_media::Worker;

use crate::room::Room;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// One of [`ClientRequest::METHODS`] or `unknown` (see [`method_label`]).
    pub method: &'static str,
    /// `ok` or an [`ErrorCode`](sluice_protocol::ErrorCode) name.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// One of [`ClientRequest::METHODS`].
    pub method: &'static str,
}

/// The `method` label value for a client's method name: the protocol's name when it is one of
/// [`ClientRequest::METHODS`], else `unknown`. A client's own string never becomes a label value,
/// so the number of series stays bounded whatever peers send.
pub fn method_label(method: &str) -> &'static str {
    ClientRequest::METHODS
        .iter()
        .copied()
        .find(|known| *known == method)
        .unwrap_or("unknown")
}

/// Why a recording ended (`recording::StopReason::as_str`) or a cluster event was ignored: a
/// fixed set each.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// What the recorder counts (shared with the registry: clones count into the same series).
#[derive(Clone, Debug, Default)]
pub struct RecordingMetrics {
    /// Recordings running.
    pub running: Gauge,
    /// Recordings ended, by reason.
    pub ended: Family<ReasonLabels, Counter>,
    /// Bytes of finished recordings' files.
    pub bytes: Counter,
}

/// `in` or `out`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

/// What the cluster membership counts (docs/cluster.md); zero on a single node.
#[derive(Clone, Debug, Default)]
pub struct ClusterMetrics {
    /// Pipes between this node and others, by direction.
    pub pipes: Family<DirectionLabels, Gauge>,
    /// Of those, the media pipes paused because no consumer at their target wants the
    /// producer, by direction.
    pub pipes_paused: Family<DirectionLabels, Gauge>,
    /// Redis calls that failed or timed out.
    pub redis_errors: Counter,
    /// Events on the cluster's channel ignored, by reason: `signature` (none or a bad one),
    /// `replayed` (delivered before), `stale` (sent too long ago).
    pub events_ignored: Family<ReasonLabels, Counter>,
}

/// Why a signaling frame was dropped rather than handled (`sluice_ws_dropped_frames_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DroppedFrame {
    /// Refused by the peer's request limiter (`limits.requests_per_second`); a request among
    /// them is answered 429 and also counted in `sluice_requests_total`.
    RateLimited,
    /// Not JSON the server reads (a request whose id is still readable is answered 400).
    NotJson,
    /// JSON, but not a valid protoo message (answered 400 when it is a request with a valid id).
    InvalidMessage,
    /// A binary frame (protoo is text).
    Binary,
    /// A response to no request the server is waiting on (unknown id, or answered too late).
    UnmatchedResponse,
    /// A notification from the client (the server handles none).
    Notification,
}

impl DroppedFrame {
    pub fn as_str(self) -> &'static str {
        match self {
            DroppedFrame::RateLimited => "rate_limited",
            DroppedFrame::NotJson => "not_json",
            DroppedFrame::InvalidMessage => "invalid_message",
            DroppedFrame::Binary => "binary",
            DroppedFrame::UnmatchedResponse => "unmatched_response",
            DroppedFrame::Notification => "notification",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    worker: u32,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CpuLabels {
    worker: u32,
    mode: &'static str,
}

/// Upper bounds of the request-duration buckets, in seconds: 0.5 ms to 10 s (a request that
/// waits on a client answer, `newConsumer`, can take seconds; most take well under 10 ms).
pub const REQUEST_DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the peer-connect buckets, in seconds: 50 ms to 30 s.
pub const PEER_CONNECT_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0];

fn request_duration_histogram() -> Histogram {
    Histogram::new(REQUEST_DURATION_BUCKETS)
}

/// Live objects, one gauge each (summing them would mean nothing).
#[derive(Default)]
struct ObjectGauges {
    rooms: Gauge,
    peers: Gauge,
    transports: Gauge,
    producers: Gauge,
    consumers: Gauge,
    data_producers: Gauge,
    data_consumers: Gauge,
}

/// One worker as the last scrape saw it.
#[derive(Clone, Debug)]
struct WorkerSample {
    worker: u32,
    up: bool,
    /// `None` when the worker did not answer (it is dead).
    usage: Option<ResourceUsage>,
}

/// Encodes the workers' families from the samples [`Metrics::render`] took just before: the
/// workers count since they started, so their totals are exposed as they are (a replaced worker
/// starts from 0, which Prometheus reads as a counter reset).
#[derive(Debug, Default)]
struct WorkerCollector {
    samples: Arc<Mutex<Vec<WorkerSample>>>,
}

fn encode_counters<L: EncodeLabelSet, V: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: Vec<(L, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        unit,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for WorkerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        let mut up = encoder.encode_descriptor(
            "worker_up",
            "1 while the worker thread runs, 0 once it died",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for s in &samples {
            ConstGauge::new(i64::from(s.up))
                .encode(up.encode_family(&WorkerLabels { worker: s.worker })?)?;
        }
        let usages: Vec<(u32, &ResourceUsage)> = samples
            .iter()
            .filter_map(|s| s.usage.as_ref().map(|u| (s.worker, u)))
            .collect();
        let per_worker = |f: fn(&ResourceUsage) -> u64| -> Vec<(WorkerLabels, u64)> {
            usages
                .iter()
                .map(|(worker, u)| (WorkerLabels { worker: *worker }, f(u)))
                .collect()
        };
        let bytes = Unit::Bytes;
        let seconds = Unit::Seconds;
        let e = &mut encoder;
        encode_counters(
            e,
            "worker_received",
            "UDP payload bytes the worker received",
            Some(&bytes),
            per_worker(|u| u.bytes_received),
        )?;
        encode_counters(
            e,
            "worker_sent",
            "UDP payload bytes the worker sent",
            Some(&bytes),
            per_worker(|u| u.bytes_sent),
        )?;
        encode_counters(
            e,
            "worker_received_datagrams",
            "UDP datagrams the worker received",
            None,
            per_worker(|u| u.datagrams_received),
        )?;
        encode_counters(
            e,
            "worker_sent_datagrams",
            "UDP datagrams the worker sent",
            None,
            per_worker(|u| u.datagrams_sent),
        )?;
        let mut drops = Vec::new();
        for (worker, u) in &usages {
            drops.push((
                DropLabels {
                    worker: *worker,
                    reason: "unknown_source",
                },
                u.dropped_unknown_source,
            ));
            drops.push((
                DropLabels {
                    worker: *worker,
                    reason: "malformed",
                },
                u.dropped_malformed,
            ));
        }
        encode_counters(
            e,
            "worker_dropped_datagrams",
            "Datagrams dropped: from an address no transport knows (unknown_source), or unreadable (malformed)",
            None,
            drops,
        )?;
        encode_counters(
            e,
            "worker_send_errors",
            "UDP sends that failed",
            None,
            per_worker(|u| u.send_errors),
        )?;
        encode_counters(
            e,
            "worker_session_errors",
            "Transports closed because handling them panicked",
            None,
            per_worker(|u| u.session_errors),
        )?;
        encode_counters(
            e,
            "worker_dropped_data_messages",
            "Data-channel messages on a stream no data producer declared",
            None,
            per_worker(|u| u.dropped_data),
        )?;
        let mut cpu = Vec::new();
        for (worker, u) in &usages {
            cpu.push((
                CpuLabels {
                    worker: *worker,
                    mode: "user",
                },
                u.cpu_user_ms as f64 / 1000.0,
            ));
            cpu.push((
                CpuLabels {
                    worker: *worker,
                    mode: "system",
                },
                u.cpu_system_ms as f64 / 1000.0,
            ));
        }
        encode_counters(
            e,
            "worker_cpu",
            "CPU time of the worker thread, by mode (user, system)",
            Some(&seconds),
            cpu,
        )?;
        encode_counters(
            e,
            "worker_timeouts",
            "str0m timeouts the worker handled (all transports)",
            None,
            per_worker(|u| u.timeouts),
        )?;
        encode_counters(
            e,
            "worker_wakeups",
            "Wake-ups of the worker loop",
            None,
            per_worker(|u| u.wakeups),
        )?;
        encode_counters(
            e,
            "worker_tcp_connections_accepted",
            "ICE-TCP connections the worker accepted",
            None,
            per_worker(|u| u.tcp_accepted),
        )?;
        encode_counters(
            e,
            "worker_tcp_connections_rejected",
            "ICE-TCP connections refused or closed for a limit (per-address, validation deadline, not ICE, slow reader)",
            None,
            per_worker(|u| u.tcp_rejected),
        )?;
        let mut tcp = e.encode_descriptor(
            "worker_tcp_connections",
            "ICE-TCP connections the worker holds",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (worker, u) in &usages {
            ConstGauge::new(i64::try_from(u.tcp_connections).unwrap_or(i64::MAX))
                .encode(tcp.encode_family(&WorkerLabels { worker: *worker })?)?;
        }
        Ok(())
    }
}

/// The instance's metrics.
pub struct Metrics {
    registry: Registry,
    pub connections: Counter,
    requests: Family<RequestLabels, Counter>,
    dropped_frames: Family<ReasonLabels, Counter>,
    request_duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    peer_connect: Histogram,
    refusals: Family<StatusLabels, Counter>,
    http_refused: Family<ReasonLabels, Counter>,
    pub worker_deaths: Counter,
    pub recordings: RecordingMetrics,
    pub cluster: ClusterMetrics,
    objects: ObjectGauges,
    worker_samples: Arc<Mutex<Vec<WorkerSample>>>,
    /// One scrape at a time (each refreshes the shared worker samples, then encodes them).
    scrape: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let objects = ObjectGauges::default();
        for (name, help, gauge) in [
            ("rooms", "Open rooms", &objects.rooms),
            ("peers", "Connected peers", &objects.peers),
            ("transports", "WebRTC transports", &objects.transports),
            ("producers", "Producers", &objects.producers),
            ("consumers", "Consumers", &objects.consumers),
            ("data_producers", "Data producers", &objects.data_producers),
            ("data_consumers", "Data consumers", &objects.data_consumers),
        ] {
            registry.register(name, help, gauge.clone());
        }
        let connections = Counter::default();
        registry.register(
            "ws_connections",
            "Signaling WebSocket connections accepted",
            connections.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Signaling requests by method (unknown for a name the protocol does not have) and result (ok or the error name)",
            requests.clone(),
        );
        let dropped_frames = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "ws_dropped_frames",
            "Signaling frames dropped rather than handled, by reason: rate_limited, not_json, invalid_message, binary, unmatched_response, notification",
            dropped_frames.clone(),
        );
        let request_duration: Family<MethodLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(request_duration_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time to handle a signaling request, from decoding it to its answer, by method",
            Unit::Seconds,
            request_duration.clone(),
        );
        let peer_connect = Histogram::new(PEER_CONNECT_BUCKETS);
        registry.register_with_unit(
            "peer_connect_duration",
            "Time from a peer's WebSocket connection to its first transport's DTLS connected (media can flow)",
            Unit::Seconds,
            peer_connect.clone(),
        );
        let refusals = Family::<StatusLabels, Counter>::default();
        registry.register(
            "upgrade_refusals",
            "WebSocket upgrades refused, by HTTP status",
            refusals.clone(),
        );
        let http_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "http_connections_refused",
            "HTTP connections closed on accept by a cap, by reason: total (http.max_connections) or per_ip (http.max_connections_per_ip)",
            http_refused.clone(),
        );
        let worker_deaths = Counter::default();
        registry.register(
            "worker_deaths",
            "Worker threads that died and were replaced",
            worker_deaths.clone(),
        );
        let recordings = RecordingMetrics::default();
        registry.register(
            "recordings",
            "Recordings running",
            recordings.running.clone(),
        );
        registry.register(
            "recordings_ended",
            "Recordings ended, by reason",
            recordings.ended.clone(),
        );
        registry.register_with_unit(
            "recording",
            "Bytes written by finished recordings",
            Unit::Bytes,
            recordings.bytes.clone(),
        );
        let cluster = ClusterMetrics::default();
        registry.register(
            "cluster_pipes",
            "Pipes between this node and the cluster's others, by direction (as of the last heartbeat)",
            cluster.pipes.clone(),
        );
        registry.register(
            "cluster_pipes_paused",
            "Media pipes paused because no consumer at their target wants the producer, by direction (as of the last heartbeat)",
            cluster.pipes_paused.clone(),
        );
        registry.register(
            "cluster_redis_errors",
            "Calls to the cluster's Redis that failed or timed out",
            cluster.redis_errors.clone(),
        );
        registry.register(
            "cluster_events_ignored",
            "Events on the cluster's channel ignored: without a valid signature, replayed or too old",
            cluster.events_ignored.clone(),
        );
        let worker_samples = Arc::new(Mutex::new(Vec::new()));
        registry.register_collector(Box::new(WorkerCollector {
            samples: worker_samples.clone(),
        }));
        Metrics {
            registry,
            connections,
            requests,
            dropped_frames,
            request_duration,
            peer_connect,
            refusals,
            http_refused,
            worker_deaths,
            recordings,
            cluster,
            objects,
            worker_samples,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// Counts one request; `method` is the client's string (mapped by [`method_label`]).
    pub fn request(&self, method: &str, result: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                result,
            })
            .inc();
    }

    /// Counts one signaling frame dropped rather than handled.
    pub fn dropped_frame(&self, reason: DroppedFrame) {
        self.dropped_frames
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Records how long a decoded request (so one of the protocol's methods) took to handle.
    pub fn request_duration(&self, method: &'static str, took: Duration) {
        self.request_duration
            .get_or_create(&MethodLabels { method })
            .observe(took.as_secs_f64());
    }

    /// Records how long a peer took from its WebSocket connection to its first connected
    /// transport.
    pub fn peer_connected(&self, took: Duration) {
        self.peer_connect.observe(took.as_secs_f64());
    }

    pub fn refusal(&self, status: u16) {
        self.refusals.get_or_create(&StatusLabels { status }).inc();
    }

    /// Counts one HTTP connection closed on accept by the cap named `reason` (`total` or
    /// `per_ip`, a fixed set).
    pub fn http_connection_refused(&self, reason: &'static str) {
        self.http_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Refreshes the gauges and worker samples from the rooms and workers and renders the text
    /// format.
    pub async fn render(&self, rooms: &[Arc<Room>], workers: &[Worker]) -> String {
        let _one_scrape = self.scrape.lock().await;
        let mut totals = [0i64; 6];
        for room in rooms {
            if let Some(c) = room.store.read(|s| s.counts()) {
                for (t, v) in totals.iter_mut().zip(c) {
                    *t += i64::try_from(v).unwrap_or(i64::MAX);
                }
            }
        }
        let o = &self.objects;
        o.rooms.set(i64::try_from(rooms.len()).unwrap_or(i64::MAX));
        for (gauge, v) in [
            &o.peers,
            &o.transports,
            &o.producers,
            &o.consumers,
            &o.data_producers,
            &o.data_consumers,
        ]
        .into_iter()
        .zip(totals)
        {
            gauge.set(v);
        }
        let mut samples = Vec::new();
        for worker in workers {
            samples.push(WorkerSample {
                worker: u32::try_from(worker.index()).unwrap_or(u32::MAX),
                up: worker.is_alive(),
                usage: worker.resource_usage().await.ok(),
            });
        }
        if let Ok(mut shared) = self.worker_samples.lock() {
            *shared = samples;
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_label_keeps_protocol_methods_and_maps_anything_else_to_unknown() {
        for method in ClientRequest::METHODS {
            assert_eq!(method_label(method), *method);
        }
        assert_eq!(method_label("mc34e0aa"), "unknown");
        assert_eq!(method_label(""), "unknown");
        assert_eq!(method_label("JOIN"), "unknown");
    }
}
