//! `examples/arena`: a small server-authoritative game embedded with sluice.
//!
//! ```sh
//! cargo run --release -p sluice-server --example arena [-- CONFIG.toml]
//! ```
//!
//! Serves the demo page (at <http://127.0.0.1:8800> with the embedded defaults; a config file
//! given as the argument is merged over them, as `sluice serve --config` does) with interest
//! management on: each room runs an [`Arena`](arena::Arena). Players send where they want to go
//! on `arena.input`, the server moves them and broadcasts the world at 20 Hz on `arena.state`
//! (unreliable), and the positions it computes drive who hears and sees whom
//! (docs/interest.md). The demo page steers its player toward the mouse, draws each player's
//! square where the server put it, and fades the tiles and voices of the players moving away.

mod arena;

use std::path::PathBuf;

use sluice_server::config::InterestMode;
use sluice_server::{Config, Overrides, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let file = std::env::args_os().nth(1).map(PathBuf::from);
    let mut config = Config::load(file.as_deref(), &Overrides::default())?;
    config.interest.mode = InterestMode::Proximity;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log)?)
        .with_writer(std::io::stderr)
        .init();
    let server = Server::builder(config)
        .game_logic(|_room_id: &str| {
            Some(Box::new(arena::Arena::default()) as Box<dyn sluice_server::game::GameLogic>)
        })
        .bind()
        .await?;
    // The line `sluice serve` prints, which scripts and the browser test wait for.
    println!("sluice listening on http://{}", server.local_addr());
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
