//! HTTP endpoints: the demo page, liveness, readiness, metrics, signaling, dev tokens and the
//! admin API.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Serialize;

use crate::instance::Instance;
use crate::{admin, broadcaster, ws};

/// The demo page (web/index.html) and its bundle, built by build.rs.
const INDEX_HTML: &str = include_str!("../../../web/index.html");
const APP_JS: &str = include_str!(concat!(env!("OUT_DIR"), "/app.js"));

/// Body of `GET /health` and `GET /ready`.
#[derive(Debug, Serialize)]
struct Status {
    status: &'static str,
    version: &'static str,
}

pub fn router(instance: Arc<Instance>) -> Router {
    let mut router = Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws::upgrade))
        .route("/api/rooms", get(admin::rooms))
        .route("/api/place", get(admin::place))
        .route("/api/rooms/{id}", get(admin::room))
        .route("/api/rooms/{id}/peers/{peer_id}", delete(admin::kick))
        .route(
            "/api/rooms/{id}/recording",
            get(admin::recordings)
                .post(admin::start_recording)
                .delete(admin::stop_recording),
        )
        // mediasoup-demo's broadcaster API, at its paths.
        .route("/rooms/{room_id}/broadcasters", post(broadcaster::create))
        .route(
            "/rooms/{room_id}/broadcasters/{id}",
            delete(broadcaster::delete),
        )
        .route(
            "/rooms/{room_id}/broadcasters/{id}/transports",
            post(broadcaster::create_transport),
        )
        .route(
            "/rooms/{room_id}/broadcasters/{id}/transports/{transport_id}/connect",
            post(broadcaster::connect),
        )
        .route(
            "/rooms/{room_id}/broadcasters/{id}/transports/{transport_id}/produce/data",
            post(broadcaster::produce_data),
        )
        .route(
            "/rooms/{room_id}/broadcasters/{id}/transports/{transport_id}/producers",
            post(broadcaster::produce),
        )
        .route(
            "/rooms/{room_id}/broadcasters/{id}/transports/{transport_id}/consume",
            post(broadcaster::consume),
        );
    if instance.config.dev_mode() {
        router = router.route("/dev/token", get(ws::dev_token));
    }
    router.with_state(instance)
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

async fn health() -> Json<Status> {
    Json(Status {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

async fn ready(State(instance): State<Arc<Instance>>) -> Response {
    if instance.is_ready() {
        Json(Status {
            status: "ready",
            version: env!("CARGO_PKG_VERSION"),
        })
        .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status {
                status: if instance.is_draining() {
                    "draining"
                } else {
                    "starting"
                },
                version: env!("CARGO_PKG_VERSION"),
            }),
        )
            .into_response()
    }
}

async fn metrics(State(instance): State<Arc<Instance>>) -> Response {
    let body = instance
        .metrics
        .render(&instance.rooms().await, &instance.workers())
        .await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}
