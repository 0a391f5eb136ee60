//! `sluice bench …`: the load generator. Synthetic clients (sluice-client: real ICE, DTLS, SRTP
//! and SCTP, no encoding) drive a server through its protoo signaling, so the target can be this
//! sluice (spawned pinned to one core by default) or any server speaking mediasoup-demo's
//! protocol (`--url`, with `--token-cmd` to mint its tokens).
//!
//! Every scenario prints human-readable rows and one final JSON line.

mod floor;
mod janus;
mod scenarios;
mod target;

use clap::{Args, Subcommand};

pub use target::Target;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The server's HTTP base URL; without it, a sluice is spawned pinned to --server-cpu.
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// With --url: the server's process id, so that its CPU time can be read from /proc.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// The name of the server under test in the printed rows and JSON lines (default: `sluice`
    /// when spawned, the URL's host and port with --url).
    #[arg(long, global = true)]
    pub label: Option<String>,
    /// A shell command printing a token for a peer, with {room} and {peer} replaced (used with
    /// --url; without it, GET /dev/token is tried).
    #[arg(long, global = true)]
    pub token_cmd: Option<String>,
    /// The CPU the spawned server runs on.
    #[arg(long, global = true, default_value_t = 0)]
    pub server_cpu: usize,
    /// The CPU this generator runs on.
    #[arg(long, global = true, default_value_t = 1)]
    pub client_cpu: usize,
    /// The spawned sluice's `rtc.bandwidth_estimation` (the synthetic clients send TWCC feedback
    /// but no REMB, so with `remb` the estimate stays at its initial value).
    #[arg(long, global = true, default_value = "twcc", value_parser = ["twcc", "remb", "off"])]
    pub bwe: String,
    /// Same as `--bwe off`.
    #[arg(long, global = true)]
    pub no_bwe: bool,
    /// The spawned sluice's routers offer opus only (`router.media_codecs`), as a voice room
    /// would; its transports then run without bandwidth estimation whatever `--bwe` says. For
    /// `audio-room`, `data` and `compare` (which then skips the video fan-out).
    #[arg(long, global = true)]
    pub voice_only: bool,
    /// Worker threads of the spawned sluice (all on --server-cpu).
    #[arg(long, global = true, default_value_t = 1)]
    pub workers: usize,
    /// The spawned sluice puts each new peer on its least-loaded worker
    /// (`placement.spread_above_datagrams_per_second = 0`): with --workers 2 a room spreads at
    /// once and its producers are piped between the workers.
    #[arg(long, global = true)]
    pub spread: bool,
    /// The spawned sluice sends video consumers through str0m (`rtc.own_video_egress =
    /// false`), as before its own egress: for before/after figures from one binary.
    #[arg(long, global = true)]
    pub str0m_video_egress: bool,
    /// The spawned server's log filter (its log goes to stderr).
    #[arg(long, global = true, default_value = "error")]
    pub server_log: String,
    /// Seconds measured per step.
    #[arg(long, global = true, default_value_t = 5)]
    pub seconds: u64,
    /// Set by the interest scenario: the spawned server runs `[interest] mode = "proximity"`
    /// with this `max_audible`.
    #[arg(skip)]
    pub interest_k: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// One video+audio publisher fanned out to N subscribers, N stepped up until loss > 1 %.
    Fanout {
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "10,25,50,100,150,200,300"
        )]
        subscribers: Vec<usize>,
    },
    /// N rooms of two peers: a publisher (VP8 + opus) and its one subscriber. With `--workers 2
    /// --spread` each subscriber goes to the least-loaded worker, mostly not its publisher's,
    /// and the pair's producers are piped; without `--spread` each room stays on one worker
    /// (no pipe). The step says how many pipes the server had: the CPU of a pipe hop is the
    /// difference between the two runs.
    Pairs {
        #[arg(long, value_delimiter = ',', default_value = "10,25,50")]
        pairs: Vec<usize>,
    },
    /// N peers each sending opus to all others, N stepped up until loss > 1 %.
    AudioRoom {
        #[arg(long, value_delimiter = ',', default_value = "5,10,15,20,30")]
        peers: Vec<usize>,
    },
    /// M players each sending 100-byte unordered messages at 60 Hz to every other player.
    Data {
        #[arg(long, value_delimiter = ',', default_value = "2,10,25,50")]
        players: Vec<usize>,
        #[arg(long, default_value_t = 60)]
        hz: u32,
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// How many of the players send (default: all).
        #[arg(long)]
        senders: Option<usize>,
    },
    /// N clients joining within one second: time to ICE, DTLS and first media.
    Join {
        #[arg(long, default_value_t = 50)]
        clients: usize,
    },
    /// Fan-out and audio room on sluice, then on Janus (VideoRoom) on the same CPU, with ratios.
    Compare {
        #[arg(long, value_delimiter = ',', default_value = "25,50,100,200,300,400")]
        subscribers: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_value = "5,10,15,20,25")]
        peers: Vec<usize>,
    },
    /// Proximity voice: N players with audio doing random walks in a 2D world, each hearing the k
    /// nearest within a radius (interest management), then the same players heard by everyone:
    /// out packets/s and server CPU with interest on and off, in one run.
    Interest {
        #[arg(long, default_value_t = 100)]
        players: usize,
        /// Players each one hears at most (`interest.max_audible`).
        #[arg(long, default_value_t = 8)]
        k: usize,
    },
    /// Resident memory per idle transport and per active video consumer.
    Memory {
        #[arg(long, default_value_t = 100)]
        peers: usize,
    },
}

pub fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    target::pin_self(args.target.client_cpu);
    if let Scenario::Interest { k, .. } = &args.scenario {
        // The spawned server runs interest management with the scenario's k.
        args.target.interest_k = Some(*k);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let target = Target::start(&args.target).await?;
        let result = match args.scenario {
            Scenario::Fanout { subscribers } => {
                scenarios::fanout(&target, &args.target, &subscribers).await
            }
            Scenario::Pairs { pairs } => scenarios::pairs(&target, &args.target, &pairs).await,
            Scenario::AudioRoom { peers } => {
                scenarios::audio_room(&target, &args.target, &peers).await
            }
            Scenario::Data {
                players,
                hz,
                size,
                senders,
            } => scenarios::data(&target, &args.target, &players, hz, size, senders).await,
            Scenario::Join { clients } => scenarios::join(&target, clients).await,
            Scenario::Memory { peers } => scenarios::memory(&target, peers).await,
            Scenario::Interest { players, k } => {
                scenarios::interest(&target, &args.target, players, k).await
            }
            Scenario::Compare { subscribers, peers } => {
                scenarios::compare(&target, &args.target, &subscribers, &peers).await
            }
        };
        target.stop();
        result
    })
}
