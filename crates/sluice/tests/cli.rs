//! The `sluice` binary driven as a user drives it: real processes, real loopback sockets.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice_server::TokenAuthority;

const SECRET: &str = "cli-test-secret-cli-test-secret-0123456789";

/// `sluice` with a clean environment: no inherited `SLUICE_*` variable can leak into a test.
fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env_clear();
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the sluice binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temp_file(contents: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "sluice-cli-test-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents).unwrap();
    path
}

/// Kills the server if a test fails before stopping it.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(extra: &[&str]) -> (ServerProcess, String) {
    let mut child = sluice()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--rtc-port",
            "0",
            "--log",
            "warn",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("sluice listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (ServerProcess(child), addr)
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_answers_health_and_exits_0_on_sigterm() {
    let (mut server, addr) = start_server(&[]);
    let (status, body) = http_get(&addr, "/health");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    let (status, body) = http_get(&addr, "/");
    assert_eq!(status, 200);
    assert!(body.contains("/app.js"), "the demo page: {body}");
    // Dev mode mints demo tokens.
    let (status, body) = http_get(&addr, "/dev/token?roomId=r&peerId=p");
    assert_eq!(status, 200, "{body}");
    let (status, _) = http_get(&addr, "/no-such-page");
    assert_eq!(status, 404);

    let killed = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_exit(&mut server.0, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn serve_exits_0_on_sigint() {
    let (mut server, addr) = start_server(&["--auth-secret", SECRET]);
    // Production mode has no dev tokens.
    let (status, _) = http_get(&addr, "/dev/token?roomId=r&peerId=p");
    assert_eq!(status, 404);
    Command::new("kill")
        .args(["-INT", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        wait_exit(&mut server.0, Duration::from_secs(10)).code(),
        Some(0)
    );
}

#[test]
fn serve_refuses_a_non_loopback_address_without_a_secret() {
    let out = run(sluice().args(["serve", "--listen", "0.0.0.0:0"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("`listen`"), "{err}");
    assert!(err.contains("auth.secret"), "{err}");
}

#[test]
fn serve_reports_a_port_already_in_use() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let out = run(sluice().args(["serve", "--listen", &addr]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&addr), "{}", stderr(&out));
}

#[test]
fn token_prints_a_jwt_signed_with_the_configured_secret() {
    let out = run(sluice().args([
        "token",
        "--room",
        "arena",
        "--peer",
        "p1",
        "--grant",
        "subscribe",
        "--grant",
        "admin",
        "--ttl",
        "120",
        "--auth-secret",
        SECRET,
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let jwt = stdout(&out);
    let claims = TokenAuthority::new(SECRET)
        .authorize(jwt.trim(), "arena", "p1")
        .unwrap();
    assert!(claims.grants.subscribe && claims.grants.admin);
    assert!(!claims.grants.publish && !claims.grants.data);
    assert_eq!(claims.exp - claims.iat.unwrap(), 120);
    // Another secret does not accept it.
    assert!(
        TokenAuthority::new("x".repeat(40).as_str())
            .verify(jwt.trim())
            .is_err()
    );
}

#[test]
fn token_without_grants_is_a_player_token_signed_with_the_dev_secret() {
    let out = run(sluice().args(["token", "--room", "r", "--peer", "p"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let claims = TokenAuthority::new(sluice_server::auth::DEV_SECRET)
        .verify(stdout(&out).trim())
        .unwrap();
    assert!(claims.grants.publish && claims.grants.subscribe && claims.grants.data);
    assert!(!claims.grants.admin);
}

#[test]
fn token_reads_its_secret_from_the_environment() {
    let out = run(sluice()
        .env("SLUICE_AUTH_SECRET", SECRET)
        .args(["token", "--room", "r", "--peer", "p"]));
    assert!(out.status.success(), "{}", stderr(&out));
    TokenAuthority::new(SECRET)
        .verify(stdout(&out).trim())
        .unwrap();
}

#[test]
fn token_rejects_an_unknown_grant() {
    let out = run(sluice().args(["token", "--room", "r", "--peer", "p", "--grant", "root"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("root"), "{}", stderr(&out));
}

#[test]
fn precedence_is_default_then_file_then_env_then_flag() {
    let file = temp_file("workers = 3\n[rtc]\nport = 41000\n");
    let file = file.to_str().unwrap();
    let config = |cmd: &mut Command| -> toml::Table {
        let out = run(cmd);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).parse().unwrap()
    };
    let only_default = config(sluice().arg("config"));
    assert_eq!(only_default["workers"].as_integer(), Some(0));
    assert_eq!(only_default["rtc"]["port"].as_integer(), Some(40000));

    let with_file = config(sluice().args(["config", "--config", file]));
    assert_eq!(with_file["workers"].as_integer(), Some(3));
    assert_eq!(with_file["rtc"]["port"].as_integer(), Some(41000));

    let with_env = config(
        sluice()
            .env("SLUICE_WORKERS", "5")
            .args(["config", "--config", file]),
    );
    assert_eq!(with_env["workers"].as_integer(), Some(5));
    assert_eq!(with_env["rtc"]["port"].as_integer(), Some(41000));

    let with_flag = config(sluice().env("SLUICE_WORKERS", "5").args([
        "config",
        "--config",
        file,
        "--workers",
        "7",
    ]));
    assert_eq!(with_flag["workers"].as_integer(), Some(7));

    // The config file path itself can come from the environment.
    let via_env = config(sluice().env("SLUICE_CONFIG", file).arg("config"));
    assert_eq!(via_env["workers"].as_integer(), Some(3));
}

#[test]
fn config_redacts_the_secret() {
    let out = run(sluice().args(["config", "--auth-secret", SECRET]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains(SECRET));
    assert!(stdout(&out).contains("<redacted>"));
}

#[test]
fn config_redacts_the_cluster_secret_and_shows_the_cluster() {
    let cluster_secret = "cli-test-cluster-secret-0123456789abcdef";
    let out = run(sluice().args([
        "config",
        "--cluster-redis",
        "redis://127.0.0.1:6390",
        "--cluster-secret",
        cluster_secret,
        "--node-id",
        "eu-1",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let config = stdout(&out);
    assert!(!config.contains(cluster_secret), "{config}");
    let table: toml::Table = config.parse().unwrap();
    let cluster = &table["cluster"];
    assert_eq!(cluster["redis"].as_str(), Some("redis://127.0.0.1:6390"));
    assert_eq!(cluster["secret"].as_str(), Some("<redacted>"));
    assert_eq!(cluster["node_id"].as_str(), Some("eu-1"));
    assert_eq!(cluster["node_ttl_secs"].as_integer(), Some(8));
}

#[test]
fn unknown_key_in_a_file_is_reported_by_name() {
    let file = temp_file("[rtc]\nannounce_ip = \"1.2.3.4\"\n");
    let out = run(sluice().args(["serve", "--config", file.to_str().unwrap()]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("rtc.announce_ip"), "{}", stderr(&out));
}

#[test]
fn bad_env_value_is_reported_with_its_flag() {
    let out = run(sluice().env("SLUICE_RTC_PORT", "forty").arg("config"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--rtc-port"), "{err}");
    assert!(err.contains("forty"), "{err}");
}

#[test]
fn unknown_sluice_env_var_is_reported() {
    let out = run(sluice().env("SLUICE_WORKER", "2").arg("config"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("SLUICE_WORKER "), "{}", stderr(&out));
}

#[test]
fn bad_log_filter_is_reported_with_its_key() {
    let out = run(sluice().args(["serve", "--listen", "127.0.0.1:0", "--log", "sluice=loud"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("`log`"), "{}", stderr(&out));
}

#[test]
fn serve_help_lists_the_flag_contract() {
    let out = run(sluice().args(["serve", "--help"]));
    assert!(out.status.success());
    let help = stdout(&out);
    for flag in [
        "--listen",
        "--rtc-ip",
        "--rtc-announced-ip",
        "--rtc-port",
        "--workers",
        "--auth-secret",
        "--config",
        "SLUICE_LISTEN",
        "SLUICE_RTC_IP",
        "SLUICE_RTC_ANNOUNCED_IP",
        "SLUICE_RTC_PORT",
        "SLUICE_WORKERS",
        "SLUICE_AUTH_SECRET",
        "--turn-secret",
        "SLUICE_TURN_SECRET",
    ] {
        assert!(help.contains(flag), "missing {flag} in\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_connected_peers_drains_and_exits_0() {
    let (mut server, addr) = start_server(&["--workers", "1"]);
    let (status, body) = http_get(&addr, "/dev/token?roomId=r&peerId=p");
    assert_eq!(status, 200, "{body}");
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    let url = sluice_client::ws_url(
        &format!("http://{addr}"),
        "r",
        "p",
        token["token"].as_str().unwrap(),
    );
    let session = sluice_client::Session::join(
        sluice_client::SignalingClient::connect(&url).await.unwrap(),
        sluice_client::SessionOptions::new("p"),
    )
    .await
    .unwrap();
    let mut session = session;
    assert_eq!(http_get(&addr, "/ready").0, 200);
    Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    let closed = session
        .wait_event(Duration::from_secs(10), |e| {
            matches!(e, sluice_client::SessionEvent::Closed { .. })
        })
        .await;
    assert!(
        matches!(
            closed,
            Some(sluice_client::SessionEvent::Closed {
                code: Some(1001),
                ..
            })
        ),
        "{closed:?}"
    );
    let status = wait_exit(&mut server.0, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}
