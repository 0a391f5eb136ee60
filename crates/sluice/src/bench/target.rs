//! The server under test: spawned here pinned to one CPU (so its CPU time and memory can be read
//! from /proc), or any server at a URL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use sluice_client::{Session, SessionOptions, SignalingClient, ws_url};
use sluice_server::auth::{self, Grants, TokenAuthority};

use super::TargetArgs;

/// Pins this process (and the threads it will start) to `cpu`; best effort.
pub fn pin_self(cpu: usize) {
    pin(cpu, &std::process::id().to_string());
}

/// Pins a process or, given a thread id, one thread to `cpu` (`taskset`); best effort.
pub fn pin(cpu: usize, id: &str) {
    let _ = Command::new("taskset")
        .args(["-cp", &cpu.to_string(), id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub struct Target {
    pub base: String,
    /// The server's name in rows and JSON lines.
    pub label: String,
    child: Option<Child>,
    /// The pid of a server at a URL (`--server-pid`).
    server_pid: Option<u32>,
    token_cmd: Option<String>,
    authority: Option<TokenAuthority>,
}

impl Target {
    pub async fn start(args: &TargetArgs) -> anyhow::Result<Target> {
        if let Some(url) = &args.url {
            let base = url.trim_end_matches('/').to_owned();
            let label = args.label.clone().unwrap_or_else(|| {
                base.trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .to_owned()
            });
            return Ok(Target {
                base,
                label,
                child: None,
                server_pid: args.server_pid,
                token_cmd: args.token_cmd.clone(),
                authority: None,
            });
        }
        let exe = std::env::current_exe().context("cannot find the sluice executable")?;
        // Room and peer limits far above any step of a benchmark.
        let config = std::env::temp_dir().join(format!("sluice-bench-{}.toml", std::process::id()));
        std::fs::write(
            &config,
            format!(
                "[limits]\npeers_per_room = 100000\nconsumers_per_peer = 100000\nrequests_per_second = 100000\n[rtc]\nbandwidth_estimation = \"{}\"\nown_video_egress = {}\n",
                if args.no_bwe {
                    "off"
                } else {
                    args.bwe.as_str()
                },
                !args.str0m_video_egress
            ) + if args.voice_only {
                "[[router.media_codecs]]\nkind = \"audio\"\nmimeType = \"audio/opus\"\nclockRate = 48000\nchannels = 2\n"
            } else {
                ""
            } + if args.spread {
                "[placement]\nrooms = \"spread\"\nspread_above_datagrams_per_second = 0\n"
            } else {
                ""
            } + &args.interest_k.map_or(String::new(), |k| {
                format!(
                    "[interest]\nmode = \"proximity\"\naudio_radius = {}\nvideo_radius = {}\nmax_audible = {k}\nmax_visible = {k}\nhysteresis = 2.0\nrate_hz = 10\n",
                    super::scenarios::INTEREST_RADIUS,
                    super::scenarios::INTEREST_RADIUS,
                )
            }),
        )?;
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg(args.server_cpu.to_string())
            .arg(exe)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--rtc-ip",
                "127.0.0.1",
                "--rtc-port",
                "0",
            ])
            .arg("--workers")
            .arg(args.workers.max(1).to_string())
            .arg("--log")
            .arg(&args.server_log)
            .env_remove("SLUICE_AUTH_SECRET")
            .env_remove("SLUICE_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot spawn the server (is taskset installed?)")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("sluice listening on ") else {
            let _ = child.kill();
            bail!("unexpected first line from the server: {line:?}");
        };
        Ok(Target {
            base: addr.to_owned(),
            label: args
                .label
                .clone()
                .unwrap_or_else(|| match (args.workers, args.spread) {
                    (0 | 1, _) => "sluice".to_owned(),
                    (n, false) => format!("sluice, {n} workers"),
                    (n, true) => format!("sluice, {n} workers, spread"),
                }),
            child: Some(child),
            server_pid: None,
            token_cmd: None,
            authority: Some(TokenAuthority::new(auth::DEV_SECRET)),
        })
    }

    /// A token for `peer` in `room`.
    pub async fn token(&self, room: &str, peer: &str) -> anyhow::Result<String> {
        if let Some(a) = &self.authority {
            return Ok(a.mint(room, peer, Grants::player(), 3600, auth::unix_now())?);
        }
        if let Some(cmd) = &self.token_cmd {
            let cmd = cmd.replace("{room}", room).replace("{peer}", peer);
            let out = Command::new("sh").arg("-c").arg(&cmd).output()?;
            if !out.status.success() {
                bail!(
                    "token command failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            return Ok(String::from_utf8(out.stdout)?.trim().to_owned());
        }
        let body = http_get(
            &self.base,
            &format!("/dev/token?roomId={room}&peerId={peer}"),
        )
        .await?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        v["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token in /dev/token's answer; give --token-cmd")
    }

    /// `path` of the admin API (`GET`, with an admin token): only for a server this bench
    /// spawned, whose signing secret it knows.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let authority = self
            .authority
            .as_ref()
            .context("the admin API needs a server this bench spawned")?;
        let grants = Grants {
            admin: true,
            ..Grants::default()
        };
        let token = authority.mint("*", "bench-admin", grants, 3600, auth::unix_now())?;
        let body = http_get_with(&self.base, path, Some(&token)).await?;
        Ok(serde_json::from_str(&body)?)
    }

    /// A joined session.
    pub async fn session(&self, room: &str, peer: &str, consume: bool) -> anyhow::Result<Session> {
        let token = self.token(room, peer).await?;
        let signaling = SignalingClient::connect(&ws_url(&self.base, room, peer, &token)).await?;
        let mut options = SessionOptions::new(peer);
        options.consume = consume;
        Ok(Session::join(signaling, options).await?)
    }

    /// A peer that joins `room` over signaling only (no transports), as a lobby player would.
    pub async fn signaling_peer(&self, room: &str, peer: &str) -> anyhow::Result<SignalingClient> {
        let token = self.token(room, peer).await?;
        let signaling = SignalingClient::connect(&ws_url(&self.base, room, peer, &token)).await?;
        let caps = signaling
            .request_raw("getRouterRtpCapabilities", serde_json::json!({}))
            .await?;
        signaling
            .request_raw(
                "join",
                serde_json::json!({
                    "displayName": peer,
                    "device": { "name": "sluice-bench" },
                    "rtpCapabilities": caps,
                }),
            )
            .await?;
        Ok(signaling)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id).or(self.server_pid)
    }

    /// CPU time of the spawned server (or `--server-pid`'s), in nanoseconds (all threads).
    pub fn cpu_ns(&self) -> Option<ProcessCpu> {
        process_cpu(&self.pid()?.to_string())
    }

    /// Resident memory of the spawned server (or `--server-pid`'s), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    pub fn stop(mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// GET over a plain TCP connection (bench only talks to loopback).
async fn http_get(base: &str, path: &str) -> anyhow::Result<String> {
    http_get_with(base, path, None).await
}

async fn http_get_with(base: &str, path: &str, bearer: Option<&str>) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let authorization =
        bearer.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// CPU time of a process, all its threads, in nanoseconds: in user space (the program's own
/// code) and in the kernel on its behalf (system calls, and the loopback delivery its sends
/// run, which wakes the receiving process).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCpu {
    pub user_ns: u64,
    pub system_ns: u64,
}

impl ProcessCpu {
    pub fn total_ns(self) -> u64 {
        self.user_ns + self.system_ns
    }
}

/// [`ProcessCpu`] of process `pid` (a number, or `self`) from `/proc/PID/stat` (in ticks of
/// 10 ms).
pub fn process_cpu(pid: &str) -> Option<ProcessCpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |n: usize| f.get(n)?.parse::<u64>().ok();
    Some(ProcessCpu {
        user_ns: ticks(11)? * 10_000_000,
        system_ns: ticks(12)? * 10_000_000,
    })
}
