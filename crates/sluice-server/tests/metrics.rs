//! `GET /metrics`: bounded label values, names and types that follow Prometheus conventions.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_are_counted_under_one_label_value_whatever_their_names() {
    let server = TestServer::start(|_| {}).await;
    let client = server.signaling("r", "p").await;
    for i in 0..20 {
        let method = format!("clientChosen{i:04x}");
        let err = client.request_raw(&method, json!({})).await.unwrap_err();
        assert_eq!(err.code(), Some(501), "{err}");
    }
    let (status, body) = server.get("/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        !body.contains("clientChosen"),
        "a client's method name became a label value:\n{body}"
    );
    assert!(
        body.contains(r#"sluice_requests_total{method="unknown",result="unknown_method"} 20"#),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_the_server_drops_are_counted_by_reason() {
    let server = TestServer::start(|_| {}).await;
    let client = server.signaling("r", "p").await;
    client.send_raw("{not json".into()).unwrap();
    client
        .send_raw(r#"{"request":true,"id":1,"data":{"x":NaN}}"#.into())
        .unwrap();
    client
        .send_raw(r#"{"request":true,"id":2}"#.into())
        .unwrap();
    client.send_raw("[1,2,3]".into()).unwrap();
    client
        .send_raw(r#"{"response":true,"id":424242,"ok":true,"data":{}}"#.into())
        .unwrap();
    client
        .send_raw(r#"{"notification":true,"method":"hello","data":{}}"#.into())
        .unwrap();
    let expected = [
        r#"sluice_ws_dropped_frames_total{reason="not_json"} 2"#,
        r#"sluice_ws_dropped_frames_total{reason="invalid_message"} 2"#,
        r#"sluice_ws_dropped_frames_total{reason="unmatched_response"} 1"#,
        r#"sluice_ws_dropped_frames_total{reason="notification"} 1"#,
    ];
    let body = metrics_when(&server, |b| {
        expected.iter().all(|line| b.lines().any(|l| l == *line))
    })
    .await;
    assert!(
        body.contains("# TYPE sluice_ws_dropped_frames_total counter"),
        "{body}"
    );
    assert!(!body.contains(r#"reason="rate_limited""#), "{body}");
    server.stop().await;
}

/// `/metrics` once `ready` holds for it (a deadline only turns a hang into a failure).
async fn metrics_when(server: &TestServer, ready: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = server.get("/metrics", None).await;
        assert_eq!(status, 200);
        if ready(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready:\n{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_transport_connects_is_counted_once_in_the_connect_histogram() {
    let server = TestServer::start(|_| {}).await;
    // The session connects its send and receive transports: two DTLS connections, one peer.
    let _session = server.session("r", "p").await;
    let body = metrics_when(&server, |b| {
        b.lines()
            .any(|l| l == "sluice_peer_connect_duration_seconds_count 1")
    })
    .await;
    let scrape = parse(&body);
    let connect = scrape
        .samples
        .iter()
        .find(|s| s.metric == "sluice_peer_connect_duration_seconds")
        .unwrap();
    let prometheus_parse::Value::Histogram(buckets) = &connect.value else {
        panic!("{connect:?}");
    };
    let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    let mut expected = sluice_server::metrics::PEER_CONNECT_BUCKETS.to_vec();
    expected.push(f64::INFINITY);
    assert_eq!(bounds, expected);
    // Once both of the peer's transports are DTLS-connected (the store has seen both events),
    // the peer still counts once.
    let room = server.instance.room("r").await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let connected = room.store.state().peers["p"]
            .transports
            .values()
            .filter(|t| t.dtls_state.as_deref() == Some("connected"))
            .count();
        if connected == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{connected} transports connected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, body) = server.get("/metrics", None).await;
    assert!(
        body.lines()
            .any(|l| l == "sluice_peer_connect_duration_seconds_count 1"),
        "{body}"
    );
    server.stop().await;
}

fn parse(body: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn kind(value: &prometheus_parse::Value) -> &'static str {
    match value {
        prometheus_parse::Value::Counter(_) => "counter",
        prometheus_parse::Value::Gauge(_) => "gauge",
        prometheus_parse::Value::Histogram(_) => "histogram",
        prometheus_parse::Value::Summary(_) => "summary",
        prometheus_parse::Value::Untyped(_) => "untyped",
    }
}

/// The one value of `name` with `labels` (all of them given).
fn value_of(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    match found[0].value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_with_one_quantity_per_family_and_conventional_names() {
    let server = TestServer::start(|_| {}).await;
    let _session = server.session("r", "p").await;
    // An upgrade without a token: refused with 401.
    assert_eq!(server.get("/ws?roomId=r&peerId=x", None).await.0, 401);
    let body = metrics_when(&server, |b| {
        b.contains("sluice_peer_connect_duration_seconds_count 1")
    })
    .await;
    let scrape = parse(&body);

    // Every family has the type its name says.
    let expected: &[(&str, &str)] = &[
        ("sluice_rooms", "gauge"),
        ("sluice_peers", "gauge"),
        ("sluice_transports", "gauge"),
        ("sluice_producers", "gauge"),
        ("sluice_consumers", "gauge"),
        ("sluice_data_producers", "gauge"),
        ("sluice_data_consumers", "gauge"),
        ("sluice_ws_connections_total", "counter"),
        ("sluice_requests_total", "counter"),
        ("sluice_request_duration_seconds", "histogram"),
        ("sluice_peer_connect_duration_seconds", "histogram"),
        ("sluice_upgrade_refusals_total", "counter"),
        ("sluice_worker_deaths_total", "counter"),
        ("sluice_worker_up", "gauge"),
        ("sluice_worker_received_bytes_total", "counter"),
        ("sluice_worker_sent_bytes_total", "counter"),
        ("sluice_worker_received_datagrams_total", "counter"),
        ("sluice_worker_sent_datagrams_total", "counter"),
        ("sluice_worker_dropped_datagrams_total", "counter"),
        ("sluice_worker_send_errors_total", "counter"),
        ("sluice_worker_session_errors_total", "counter"),
        ("sluice_worker_dropped_data_messages_total", "counter"),
        ("sluice_worker_cpu_seconds_total", "counter"),
        ("sluice_worker_timeouts_total", "counter"),
        ("sluice_worker_wakeups_total", "counter"),
        ("sluice_worker_tcp_connections_accepted_total", "counter"),
        ("sluice_worker_tcp_connections_rejected_total", "counter"),
        ("sluice_worker_tcp_connections", "gauge"),
        // `sluice_recordings_ended_total` has a series per reason once one has ended.
        ("sluice_recordings", "gauge"),
        ("sluice_recording_bytes_total", "counter"),
        // `sluice_cluster_pipes` and `sluice_cluster_pipes_paused` have series once a cluster
        // node counted its pipes, and
        // `sluice_cluster_events_ignored_total` a series per reason once one was ignored.
        ("sluice_cluster_redis_errors_total", "counter"),
    ];
    for (name, ty) in expected {
        let types: std::collections::BTreeSet<&str> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == *name)
            .map(|s| kind(&s.value))
            .collect();
        assert_eq!(
            types.into_iter().collect::<Vec<_>>(),
            vec![*ty],
            "{name}:\n{body}"
        );
    }
    // Nothing else: no family outside the list (histogram parts aside), no old names.
    for sample in &scrape.samples {
        let name = sample.metric.as_str();
        let base = name
            .strip_suffix("_sum")
            .or_else(|| name.strip_suffix("_count"))
            .unwrap_or(name);
        assert!(
            expected.iter().any(|(n, _)| *n == base),
            "unexpected family {name}"
        );
        if matches!(sample.value, prometheus_parse::Value::Counter(_)) {
            assert!(name.ends_with("_total"), "{name}");
        }
    }

    // Values.
    assert_eq!(value_of(&scrape, "sluice_rooms", &[]), 1.0);
    assert_eq!(value_of(&scrape, "sluice_peers", &[]), 1.0);
    assert_eq!(value_of(&scrape, "sluice_transports", &[]), 2.0);
    assert_eq!(value_of(&scrape, "sluice_ws_connections_total", &[]), 1.0);
    assert_eq!(
        value_of(
            &scrape,
            "sluice_requests_total",
            &[("method", "join"), ("result", "ok")]
        ),
        1.0
    );
    assert_eq!(
        value_of(&scrape, "sluice_worker_up", &[("worker", "0")]),
        1.0
    );
    for reason in ["unknown_source", "malformed"] {
        value_of(
            &scrape,
            "sluice_worker_dropped_datagrams_total",
            &[("worker", "0"), ("reason", reason)],
        );
    }
    for mode in ["user", "system"] {
        let cpu = value_of(
            &scrape,
            "sluice_worker_cpu_seconds_total",
            &[("worker", "0"), ("mode", mode)],
        );
        assert!(cpu >= 0.0);
    }
    // The request-duration histogram: one series per method handled, the fixed buckets.
    let join = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "sluice_request_duration_seconds" && s.labels.get("method") == Some("join")
        })
        .unwrap();
    let prometheus_parse::Value::Histogram(buckets) = &join.value else {
        panic!("{join:?}");
    };
    let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    let mut expected_bounds = sluice_server::metrics::REQUEST_DURATION_BUCKETS.to_vec();
    expected_bounds.push(f64::INFINITY);
    assert_eq!(bounds, expected_bounds);
    assert_eq!(buckets.last().unwrap().count, 1.0);
    assert_eq!(
        value_of(
            &scrape,
            "sluice_request_duration_seconds_count",
            &[("method", "join")]
        ),
        1.0
    );
    // Label values come from fixed sets.
    for sample in &scrape.samples {
        if let Some(method) = sample.labels.get("method") {
            assert!(
                method == "unknown" || sluice_protocol::ClientRequest::METHODS.contains(&method),
                "{method}"
            );
        }
    }
    server.stop().await;
}

/// Every `sluice_…` name in an expression of the dashboard JSON.
fn dashboard_metric_names(value: &serde_json::Value, names: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                if key == "expr"
                    && let Some(expr) = v.as_str()
                {
                    let mut rest = expr;
                    while let Some(at) = rest.find("sluice_") {
                        let tail = &rest[at..];
                        let end = tail
                            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .unwrap_or(tail.len());
                        names.push(tail[..end].to_owned());
                        rest = &tail[end..];
                    }
                }
                dashboard_metric_names(v, names);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                dashboard_metric_names(v, names);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_only_metrics_the_server_exposes() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/grafana-dashboard.json")).unwrap();
    let mut names = Vec::new();
    dashboard_metric_names(&dashboard, &mut names);
    assert!(names.len() > 10, "{names:?}");
    let server = TestServer::start(|_| {}).await;
    let _session = server.session("r", "p").await;
    assert_eq!(server.get("/ws?roomId=r&peerId=x", None).await.0, 401);
    let body = metrics_when(&server, |b| {
        b.contains("sluice_peer_connect_duration_seconds_count 1")
    })
    .await;
    let exposed: std::collections::BTreeSet<String> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    for name in names {
        assert!(
            exposed.contains(&name),
            "the dashboard queries {name}, which /metrics lacks"
        );
    }
    server.stop().await;
}
