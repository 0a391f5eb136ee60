//! `GET /metrics` in Prometheus' text format (prometheus-client, the Prometheus project's Rust
//! client): rooms, peers, transports, producers, consumers and data objects (from the rooms'
//! stores); WebSocket connections, requests by method and result, refused upgrades; and per worker
//! bytes and datagrams each way, drops, CPU seconds and liveness.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use sluice_protocol::ClientRequest;

use crate::instance::Instance;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// One of [`ClientRequest::METHODS`] or `unknown` (see [`method_label`]).
    pub method: &'static str,
    /// `ok` or an [`ErrorCode`](sluice_protocol::ErrorCode) name.
    pub result: &'static str,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: u32,
}

/// The instance's metrics.
pub struct Metrics {
    registry: Registry,
    pub connections: Counter,
    requests: Family<RequestLabels, Counter>,
    refusals: Family<StatusLabels, Counter>,
    pub worker_deaths: Counter,
    objects: Family<ObjectLabels, Gauge>,
    worker_gauges: Family<WorkerMetricLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub object: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerMetricLabels {
    pub worker: u32,
    pub metric: &'static str,
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

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let connections = Counter::default();
        registry.register(
            "ws_connections",
            "Signaling WebSocket connections accepted",
            connections.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Signaling requests by method and result (ok or the error name)",
            requests.clone(),
        );
        let refusals = Family::<StatusLabels, Counter>::default();
        registry.register(
            "upgrade_refusals",
            "WebSocket upgrades refused, by HTTP status",
            refusals.clone(),
        );
        let worker_deaths = Counter::default();
        registry.register(
            "worker_deaths",
            "Worker threads that died and were replaced",
            worker_deaths.clone(),
        );
        let objects = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "objects",
            "Live objects: rooms, peers, transports, producers, consumers, data producers, data consumers",
            objects.clone(),
        );
        let worker_gauges = Family::<WorkerMetricLabels, Gauge>::default();
        registry.register(
            "worker",
            "Per worker since it started: bytes and datagrams in and out, dropped datagrams, CPU milliseconds, alive (1/0)",
            worker_gauges.clone(),
        );
        Metrics {
            registry,
            connections,
            requests,
            refusals,
            worker_deaths,
            objects,
            worker_gauges,
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

    pub fn refusal(&self, status: u16) {
        self.refusals.get_or_create(&StatusLabels { status }).inc();
    }

    /// Refreshes the gauges from the instance and renders the text format.
    pub async fn render(&self, instance: &Instance) -> String {
        let rooms = instance.rooms().await;
        let mut totals = [0i64; 6];
        for room in &rooms {
            if let Some(c) = room.store.read(|s| s.counts()) {
                for (t, v) in totals.iter_mut().zip(c) {
                    *t += v as i64;
                }
            }
        }
        let set = |object: &'static str, v: i64| {
            self.objects.get_or_create(&ObjectLabels { object }).set(v);
        };
        set("rooms", rooms.len() as i64);
        for (name, v) in [
            "peers",
            "transports",
            "producers",
            "consumers",
            "data_producers",
            "data_consumers",
        ]
        .into_iter()
        .zip(totals)
        {
            set(name, v);
        }
        for worker in instance.workers() {
            let w = worker.index() as u32;
            let g = |metric: &'static str, v: u64| {
                self.worker_gauges
                    .get_or_create(&WorkerMetricLabels { worker: w, metric })
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            g("alive", u64::from(worker.is_alive()));
            if let Ok(u) = worker.resource_usage().await {
                g("bytes_received", u.bytes_received);
                g("bytes_sent", u.bytes_sent);
                g("datagrams_received", u.datagrams_received);
                g("datagrams_sent", u.datagrams_sent);
                g("dropped_unknown_source", u.dropped_unknown_source);
                g("dropped_malformed", u.dropped_malformed);
                g("cpu_user_ms", u.cpu_user_ms);
                g("cpu_system_ms", u.cpu_system_ms);
                g("session_errors", u.session_errors);
                g("timeouts", u.timeouts);
                g("wakeups", u.wakeups);
            }
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
