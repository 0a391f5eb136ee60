//! The `sluice` command: `serve` runs the SFU, `token` mints a peer token, `config` prints the
//! effective configuration. `anyhow` lives here, at the binary's edge, and nowhere else.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice_server::Server;
use sluice_server::auth::{self, Grants, TokenAuthority};
use sluice_server::config::{self, Config, Overrides};

mod bench;

/// The global allocator: jemalloc, whose background thread hands freed pages back to the system
/// after peer churn, where glibc's malloc kept them (numbers in docs/decisions.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a WebRTC SFU for multiplayer games",
    long_about = "Sluice: a WebRTC SFU for multiplayer games.\n\nConfiguration precedence, lowest to highest: the embedded default < the --config file < SLUICE_* environment variables < flags. See docs/config.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (zero-config dev mode on loopback unless configured otherwise).
    Serve(ConfigArgs),
    /// Print a peer token (JWT) signed with the configured secret.
    Token(TokenArgs),
    /// Print the effective configuration as TOML (secret redacted) and exit.
    Config(ConfigArgs),
    /// Load generator and benchmarks (docs/benchmarks.md).
    Bench(bench::BenchArgs),
}

/// Flags that override configuration keys; each also reads its environment variable.
#[derive(Debug, Args)]
struct ConfigArgs {
    /// TOML configuration file merged over the embedded default.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// HTTP and WebSocket listen address [key: listen].
    #[arg(long, env = "SLUICE_LISTEN", value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Address the workers' UDP sockets bind to [key: rtc.ip].
    #[arg(long, env = "SLUICE_RTC_IP", value_name = "IP")]
    rtc_ip: Option<std::net::IpAddr>,
    /// Address announced in ICE candidates [key: rtc.announced_ip].
    #[arg(long, env = "SLUICE_RTC_ANNOUNCED_IP", value_name = "IP")]
    rtc_announced_ip: Option<std::net::IpAddr>,
    /// First UDP port; worker i uses PORT+i; 0 = OS-assigned [key: rtc.port].
    #[arg(long, env = "SLUICE_RTC_PORT", value_name = "PORT")]
    rtc_port: Option<u16>,
    /// First TCP port for ICE over TCP; worker i uses PORT+i; 0 = OS-assigned; absent = each
    /// worker's UDP port number [key: rtc.tcp_port].
    #[arg(long, env = "SLUICE_RTC_TCP_PORT", value_name = "PORT")]
    rtc_tcp_port: Option<u16>,
    /// No ICE over TCP: UDP candidates only; forceTcp is refused [key: rtc.tcp = false].
    #[arg(long)]
    no_rtc_tcp: bool,
    /// Worker threads; 0 = one per core [key: workers].
    #[arg(long, env = "SLUICE_WORKERS", value_name = "N")]
    workers: Option<usize>,
    /// How a room's peers use the workers: "spread" (by load, producers piped between the
    /// room's routers) or "single" (one worker per room) [key: placement.rooms].
    #[arg(long, env = "SLUICE_ROOM_PLACEMENT", value_name = "MODE", value_parser = parse_room_placement)]
    room_placement: Option<config::RoomPlacement>,
    /// Join the cluster whose directory is this Redis (redis://host:port) [key: cluster.redis].
    #[arg(long, env = "SLUICE_CLUSTER_REDIS", value_name = "URL")]
    cluster_redis: Option<String>,
    /// The secret the cluster's nodes share, at least 32 bytes [key: cluster.secret].
    #[arg(
        long,
        env = "SLUICE_CLUSTER_SECRET",
        value_name = "S",
        hide_env_values = true
    )]
    cluster_secret: Option<String>,
    /// This node's name in the cluster (default: host name and listen port) [key: cluster.node_id].
    #[arg(long, env = "SLUICE_NODE_ID", value_name = "ID")]
    node_id: Option<String>,
    /// The URL clients use for this node (default: http:// and the listen address) [key: cluster.node_url].
    #[arg(long, env = "SLUICE_NODE_URL", value_name = "URL")]
    node_url: Option<String>,
    /// HS256 secret for peer tokens, at least 32 bytes [key: auth.secret].
    #[arg(
        long,
        env = "SLUICE_AUTH_SECRET",
        value_name = "S",
        hide_env_values = true
    )]
    auth_secret: Option<String>,
    /// The secret shared with the TURN server (coturn's static-auth-secret) [key: turn.secret].
    #[arg(
        long,
        env = "SLUICE_TURN_SECRET",
        value_name = "S",
        hide_env_values = true
    )]
    turn_secret: Option<String>,
    /// Log filter, e.g. "info" or "sluice_server=debug,info" [key: log].
    #[arg(long, env = "SLUICE_LOG", value_name = "FILTER")]
    log: Option<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        config::check_env_vars(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))?;
        let overrides = Overrides {
            listen: self.listen,
            workers: self.workers,
            room_placement: self.room_placement,
            cluster_redis: self.cluster_redis.clone(),
            cluster_secret: self.cluster_secret.clone(),
            node_id: self.node_id.clone(),
            node_url: self.node_url.clone(),
            log: self.log.clone(),
            rtc_ip: self.rtc_ip,
            rtc_announced_ip: self.rtc_announced_ip,
            rtc_port: self.rtc_port,
            rtc_tcp_port: self.rtc_tcp_port,
            no_rtc_tcp: self.no_rtc_tcp,
            auth_secret: self.auth_secret.clone(),
            turn_secret: self.turn_secret.clone(),
        };
        Ok(Config::load(self.config.as_deref(), &overrides)?)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Grant {
    Publish,
    Subscribe,
    Data,
    Admin,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Room the token admits to (claim `room`).
    #[arg(long)]
    room: String,
    /// Peer id (claim `sub`).
    #[arg(long)]
    peer: String,
    /// Lifetime in seconds [default: auth.token_ttl_secs].
    #[arg(long, value_name = "SECS")]
    ttl: Option<u64>,
    /// A grant; repeat for several. Without any: publish, subscribe and data.
    #[arg(long = "grant", value_enum)]
    grants: Vec<Grant>,
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    install_panic_hook();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args.load()?),
        Command::Token(args) => token(&args),
        Command::Bench(args) => bench::run(args),
        Command::Config(args) => {
            let mut config = args.load()?;
            if config.auth.secret.is_some() {
                config.auth.secret = Some("<redacted>".into());
            }
            if config.cluster.secret.is_some() {
                config.cluster.secret = Some("<redacted>".into());
            }
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
    }
}

fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    if args.room.is_empty() || args.peer.is_empty() {
        bail!("--room and --peer must not be empty");
    }
    let grants = if args.grants.is_empty() {
        Grants::player()
    } else {
        Grants {
            publish: args.grants.contains(&Grant::Publish),
            subscribe: args.grants.contains(&Grant::Subscribe),
            data: args.grants.contains(&Grant::Data),
            admin: args.grants.contains(&Grant::Admin),
        }
    };
    let ttl = args.ttl.unwrap_or(config.auth.token_ttl_secs);
    if ttl == 0 {
        bail!("--ttl must be at least 1 second");
    }
    let jwt = TokenAuthority::new(config.auth_secret()).mint(
        &args.room,
        &args.peer,
        grants,
        ttl,
        auth::unix_now(),
    )?;
    println!("{jwt}");
    Ok(())
}

fn serve(config: Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .with_context(|| format!("bad value for `log`: {:?}", config.log))?;
    // Logs go to stderr; stdout carries only the "listening" line that scripts wait for.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice-control")
        .build()
        .context("cannot start the control-plane runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        let addr = server.local_addr();
        if server.config().dev_mode() {
            tracing::warn!(
                secret = auth::DEV_SECRET,
                "dev mode: loopback only, tokens are signed with the well-known dev secret; set auth.secret for production"
            );
        }
        // The one line scripts and tests wait for; the actual port when --listen asked for port 0.
        println!("sluice listening on http://{addr}");
        tracing::info!(%addr, workers = server.config().worker_count(), "sluice started");
        server.run(shutdown_signal()).await?;
        tracing::info!("sluice stopped");
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Set by the first panic: only that one gets a backtrace. Symbolizing one loads the binary's
/// debug info and keeps it (RSS 10 → 156 MiB for one backtrace with `RUST_BACKTRACE=1`), so a
/// peer that could trigger panics repeatedly must not make every one of them pay it.
static BACKTRACE_TAKEN: AtomicBool = AtomicBool::new(false);

/// A backtrace (captured as `RUST_BACKTRACE` asks) the first time, `None` ever after.
fn first_backtrace(taken: &AtomicBool) -> Option<std::backtrace::Backtrace> {
    (!taken.swap(true, Ordering::SeqCst)).then(std::backtrace::Backtrace::capture)
}

/// What the panic hook logs: the message, where, on which thread, and the backtrace when given.
fn panic_report(
    message: &str,
    location: &str,
    thread: &str,
    backtrace: Option<&std::backtrace::Backtrace>,
) -> String {
    match backtrace {
        Some(bt) if bt.status() == std::backtrace::BacktraceStatus::Captured => {
            format!(
                "thread '{thread}' panicked at {location}: {message}\nbacktrace (first panic only):\n{bt}"
            )
        }
        _ => format!("thread '{thread}' panicked at {location}: {message}"),
    }
}

/// Logs panics (message and location) through tracing, or stderr before tracing is set up, with
/// a backtrace (as `RUST_BACKTRACE` asks) for the first panic only.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(a panic payload that is not a string)");
        let location = info.location().map_or_else(
            || "an unknown location".to_owned(),
            |l| format!("{}:{}:{}", l.file(), l.line(), l.column()),
        );
        let current = std::thread::current();
        let thread = current.name().unwrap_or("unnamed");
        let backtrace = first_backtrace(&BACKTRACE_TAKEN);
        let report = panic_report(message, &location, thread, backtrace.as_ref());
        if tracing::dispatcher::has_been_set() {
            tracing::error!("{report}");
        } else {
            eprintln!("{report}");
        }
    }));
}

fn parse_room_placement(s: &str) -> Result<config::RoomPlacement, String> {
    match s {
        "spread" => Ok(config::RoomPlacement::Spread),
        "single" => Ok(config::RoomPlacement::Single),
        _ => Err(format!(
            "{s:?} is not a placement: \"spread\" or \"single\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_panic_gets_a_backtrace() {
        let taken = AtomicBool::new(false);
        assert!(first_backtrace(&taken).is_some());
        assert!(first_backtrace(&taken).is_none());
        assert!(first_backtrace(&taken).is_none());
    }

    #[test]
    fn a_panic_report_names_message_location_and_thread_and_shows_a_captured_backtrace_only() {
        let plain = panic_report("boom", "src/x.rs:1:2", "sluice-control", None);
        assert_eq!(
            plain,
            "thread 'sluice-control' panicked at src/x.rs:1:2: boom"
        );
        let bt = std::backtrace::Backtrace::force_capture();
        let first = panic_report("boom", "src/x.rs:1:2", "w", Some(&bt));
        assert!(
            first.starts_with(
                "thread 'w' panicked at src/x.rs:1:2: boom\nbacktrace (first panic only):\n"
            ),
            "{first}"
        );
        let disabled = std::backtrace::Backtrace::disabled();
        assert_eq!(
            panic_report("boom", "l", "w", Some(&disabled)),
            "thread 'w' panicked at l: boom"
        );
    }
}
