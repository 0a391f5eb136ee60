//! Sluice's control plane: configuration, peer tokens, HTTP, rooms and peers, protoo signaling,
//! the action/state store and the instance lifecycle.
//!
//! - [`instance`]: workers, rooms (a router each on the least-loaded worker), drain and shutdown.
//! - [`ws`], [`peer`], [`signaling`]: the protoo WebSocket, one peer's connection, the methods.
//! - [`room`], [`store`]: a room's objects and its action/state store.
//! - [`http`], [`admin`], [`metrics`]: the HTTP endpoints; `connections`: the accept loop, its
//!   connection caps and header-read timeout.
//! - [`recording`]: recordings of rooms to files through ffmpeg (docs/recording.md).

pub mod actions;
pub mod admin;
pub mod auth;
mod broadcaster;
pub mod cluster;
pub mod config;
mod connections;
pub mod error;
pub mod game;
pub mod http;
pub mod instance;
pub mod interest;
pub mod metrics;
pub mod peer;
mod rate;
pub mod recording;
pub mod room;
pub mod room_routers;
pub mod session;
pub mod signaling;
pub mod store;
pub mod turn;
pub mod ws;

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use auth::{Claims, Grants, TokenAuthority};
pub use config::{Config, ConfigError, Overrides};

/// Hands a map's memory back once it is mostly empty. A map keeps its largest capacity for good,
/// so a burst of rooms or peers would otherwise stay paid for (for the life of the process, or of
/// a room). Shrinks below a quarter full, to twice what is left, so a map that fills and empties
/// does not reallocate on every removal.
pub(crate) fn shrink_when_sparse<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    const SMALL: usize = 64;
    if map.capacity() > SMALL && map.len() < map.capacity() / 4 {
        map.shrink_to((map.len() * 2).max(SMALL / 2));
    }
}

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
    #[error("cannot start the media workers: {0}")]
    Workers(sluice_media::MediaError),
    #[error("cannot join the cluster: {0}")]
    Cluster(cluster::ClusterError),
}

/// A server bound to its listen address with its workers started, not yet serving.
pub struct Server {
    config: Arc<Config>,
    instance: Arc<instance::Instance>,
    listener: TcpListener,
    local_addr: SocketAddr,
}

/// A server to be started from Rust with what only code can give it (game logic).
pub struct ServerBuilder {
    config: Config,
    game: Option<game::GameFactory>,
}

impl ServerBuilder {
    /// Each room runs the game logic `factory` makes for it (given the room id; `None`: that
    /// room has none). See [`game`].
    pub fn game_logic(
        mut self,
        factory: impl Fn(&str) -> Option<Box<dyn game::GameLogic>> + Send + Sync + 'static,
    ) -> Self {
        self.game = Some(Arc::new(factory));
        self
    }

    /// Starts the workers and binds the listener, as [`Server::bind`].
    pub async fn bind(self) -> Result<Server, ServerError> {
        Server::bind_with(self.config, self.game).await
    }
}

impl Server {
    /// A server with what only code can give it; `bind` starts it.
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder { config, game: None }
    }

    /// Starts the workers and binds the HTTP/WebSocket listener (`listen`; port 0 picks a free
    /// port).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        Self::bind_with(config, None).await
    }

    async fn bind_with(
        config: Config,
        game: Option<game::GameFactory>,
    ) -> Result<Server, ServerError> {
        let config = Arc::new(config);
        let instance = instance::Instance::start_with_game(config.clone(), game)
            .map_err(ServerError::Workers)?;
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        if config.cluster.redis.is_some() {
            let node_id = config
                .cluster
                .node_id
                .clone()
                .unwrap_or_else(|| cluster::default_node_id(local_addr.port()));
            let node_url = config.cluster.node_url.clone().unwrap_or_else(|| {
                // Listening on every address: the RTC announced address is the one others
                // reach this host at.
                let ip = local_addr.ip();
                let ip = if ip.is_unspecified() {
                    config.announced_ip()
                } else {
                    ip
                };
                format!(
                    "http://{}",
                    std::net::SocketAddr::new(ip, local_addr.port())
                )
            });
            let media_ip = config.announced_ip();
            let metrics = instance.metrics.cluster.clone();
            let joined =
                cluster::Cluster::connect(&config.cluster, node_id, node_url, media_ip, metrics)
                    .await
                    .map_err(ServerError::Cluster)?;
            // A previous run under this node id that died before its TTL ran out left its
            // peers in the directory: they are not here, so they go before this run registers.
            joined.forget_self().await;
            instance.set_cluster(joined);
        }
        Ok(Server {
            config,
            instance,
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

    /// The instance (rooms, workers), e.g. for a game server in the same process.
    pub fn instance(&self) -> &Arc<instance::Instance> {
        &self.instance
    }

    /// Serves until `shutdown` completes, then drains: stops accepting, tells every peer, closes
    /// everything within `signaling.shutdown_grace_secs`, and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let app = http::router(self.instance.clone());
        let instance = self.instance.clone();
        let grace = std::time::Duration::from_secs(self.config.signaling.shutdown_grace_secs);
        let metrics = &self.instance.metrics;
        connections::serve(self.listener, app, &self.config.http, metrics, async move {
            shutdown.await;
            // Out of the cluster's directory first: no new peer is placed here.
            if let Some(cluster) = instance.cluster() {
                cluster.unregister().await;
            }
            instance.drain(grace).await;
            if let Some(cluster) = instance.cluster() {
                cluster.forget_self().await;
            }
        })
        .await
        .map_err(ServerError::Serve)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emptied_map_gives_its_capacity_back_and_a_busy_one_keeps_it() {
        let mut map: HashMap<u32, [u8; 64]> = HashMap::new();
        for i in 0..10_000 {
            map.insert(i, [0; 64]);
        }
        let full = map.capacity();
        // Busy: kept as it is.
        shrink_when_sparse(&mut map);
        assert_eq!(map.capacity(), full);
        for i in 0..10_000 {
            map.remove(&i);
            shrink_when_sparse(&mut map);
        }
        assert!(map.capacity() <= 64, "{}", map.capacity());
    }
}
