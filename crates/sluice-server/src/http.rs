//! HTTP endpoints: liveness and the landing page. Signaling (`/ws`), readiness, metrics, the admin
//! API and the demo page join this router as their issues land.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use serde::Serialize;

use crate::config::Config;

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
}

/// Body of `GET /health`.
#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .with_state(state)
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

async fn index(State(state): State<AppState>) -> Html<String> {
    let mode = if state.config.dev_mode() {
        "dev mode (loopback only, dev secret)"
    } else {
        "production mode"
    };
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>sluice</title></head>\
         <body><h1>sluice {}</h1><p>WebRTC SFU for multiplayer games, running in {mode}.</p>\
         <p><a href=\"/health\">/health</a></p></body></html>",
        env!("CARGO_PKG_VERSION"),
    ))
}
