//! Sluice's control plane: configuration, peer tokens, HTTP, and (as their issues land) rooms and
//! peers, protoo signaling, the action/state store and the instance lifecycle.

pub mod auth;
pub mod config;
pub mod http;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use auth::{Claims, Grants, TokenAuthority};
pub use config::{Config, ConfigError, Overrides};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// A server bound to its listen address, not yet serving.
pub struct Server {
    config: Arc<Config>,
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Server {
    /// Binds the HTTP/WebSocket listener (`listen`; port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server {
            config: Arc::new(config),
            listener,
            local_addr,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves until `shutdown` completes, then stops accepting and finishes in-flight requests.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let app = http::router(http::AppState {
            config: self.config.clone(),
        });
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServerError::Serve)
    }
}
