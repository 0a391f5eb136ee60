//! `examples/arena`: a small server-authoritative game embedded with sluice.
//!
//! ```sh
//! cargo run --release -p sluice-server --example arena
//! ```
//!
//! Serves the demo page at <http://127.0.0.1:8800> with interest management on: each room runs
//! an [`Arena`](arena::Arena). Players send inputs on `arena.input`, the server moves them and
//! broadcasts the world at 20 Hz on `arena.state` (unreliable), and the positions it computes
//! drive who hears and sees whom (docs/interest.md).

mod arena;

use sluice_server::config::InterestMode;
use sluice_server::{Config, Overrides, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .init();
    let mut config = Config::load(None, &Overrides::default())?;
    config.interest.mode = InterestMode::Proximity;
    let server = Server::builder(config)
        .game_logic(|_room_id: &str| {
            Some(Box::new(arena::Arena::default()) as Box<dyn sluice_server::game::GameLogic>)
        })
        .bind()
        .await?;
    println!("arena listening on http://{}", server.local_addr());
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
