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
