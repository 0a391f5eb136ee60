//! Janus 1.1.2 (Debian's `janus`) as the side-by-side peer: installed and configured by the bench
//! in a directory of its own (loopback only), pinned to the same CPU as sluice, and driven
//! through its VideoRoom plugin over the HTTP API by the same synthetic clients (in SDP mode:
//! publishers offer, subscribers answer Janus's offer).
//!
//! Janus skips loopback interfaces when it gathers ICE candidates; the bench builds a tiny
//! `LD_PRELOAD` shim (C, compiled with the machine's gcc) that makes `getifaddrs` report the
//! loopback interface without its `IFF_LOOPBACK` flag, so Janus offers 127.0.0.1 and every
//! packet stays on loopback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sluice_client::{
    ClientNumbering, ClientTransport, ClientTransportOptions, ReceivedRtp, SourceConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

const SHIM_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
/* Report the loopback interface as an ordinary one, so Janus gathers 127.0.0.1. */
int getifaddrs(struct ifaddrs **ifap) {
    static int (*real)(struct ifaddrs **) = 0;
    if (!real) real = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
    int r = real(ifap);
    if (r == 0) {
        for (struct ifaddrs *i = *ifap; i; i = i->ifa_next) {
            i->ifa_flags &= ~IFF_LOOPBACK;
        }
    }
    return r;
}
"#;

/// A running Janus.
pub struct Janus {
    dir: PathBuf,
    child: Child,
    pub port: u16,
}

fn janus_lib_dir() -> anyhow::Result<PathBuf> {
    for d in [
        "/usr/lib/x86_64-linux-gnu/janus",
        "/usr/lib/aarch64-linux-gnu/janus",
        "/usr/lib/janus",
    ] {
        if Path::new(d).join("plugins").exists() {
            return Ok(PathBuf::from(d));
        }
    }
    bail!("Janus's plugins are not installed")
}

/// Installs Debian's `janus` when it is missing.
pub fn ensure_installed() -> anyhow::Result<()> {
    if Command::new("janus").arg("--version").output().is_ok() {
        return Ok(());
    }
    println!("installing Debian's janus…");
    let root = Command::new("id").arg("-u").output()?.stdout == b"0\n";
    let apt = |args: &[&str]| {
        let mut c = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        c.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    apt(&["update", "-qq"])?;
    let status = apt(&["install", "-y", "-qq", "janus"])?;
    if !status.success() {
        bail!("apt-get install janus failed");
    }
    Ok(())
}

impl Janus {
    /// Configures and starts Janus on loopback, pinned to `cpu`.
    pub fn start(cpu: usize) -> anyhow::Result<Janus> {
        ensure_installed()?;
        let lib = janus_lib_dir()?;
        let dir = std::env::temp_dir().join(format!("sluice-bench-janus-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let shim_c = dir.join("loopback_shim.c");
        let shim = dir.join("loopback_shim.so");
        std::fs::write(&shim_c, SHIM_C)?;
        let gcc = Command::new("gcc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&shim)
            .arg(&shim_c)
            .arg("-ldl")
            .status()
            .context("gcc is needed for Janus's loopback shim")?;
        if !gcc.success() {
            bail!("cannot build the loopback shim");
        }
        let port = free_tcp_port()?;
        let plugins = [
            "audiobridge",
            "duktape",
            "echotest",
            "lua",
            "nosip",
            "recordplay",
            "sip",
            "streaming",
            "textroom",
            "videocall",
            "voicemail",
        ]
        .map(|p| format!("libjanus_{p}.so"))
        .join(",");
        std::fs::write(
            dir.join("janus.jcfg"),
            format!(
                r#"general: {{
    configs_folder = "{dir}"
    plugins_folder = "{lib}/plugins"
    transports_folder = "{lib}/transports"
    events_folder = "{lib}/events"
    loggers_folder = "{lib}/loggers"
    debug_level = 2
    session_timeout = 0
    protected_folders = []
}}
media: {{
    rtp_port_range = "30000-60000"
    dtls_mtu = 1200
}}
nat: {{
    ice_enforce_list = "127.0.0.1"
    ignore_mdns = true
    full_trickle = false
}}
plugins: {{
    disable = "{plugins}"
}}
transports: {{
    disable = "libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so,libjanus_websockets.so"
}}
loggers: {{
    disable = "libjanus_jsonlog.so"
}}
events: {{
    broadcast = false
}}
"#,
                dir = dir.display(),
                lib = lib.display(),
            ),
        )?;
        std::fs::write(
            dir.join("janus.transport.http.jcfg"),
            format!(
                "general: {{\n    json = \"compact\"\n    base_path = \"/janus\"\n    http = true\n    port = {port}\n    ip = \"127.0.0.1\"\n    https = false\n}}\nadmin: {{\n    admin_http = false\n}}\n"
            ),
        )?;
        std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n")?;
        let child = Command::new("taskset")
            .arg("-c")
            .arg(cpu.to_string())
            .arg("janus")
            .arg("-F")
            .arg(&dir)
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .env("LD_PRELOAD", &shim)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start janus")?;
        Ok(Janus { dir, child, port })
    }

    pub fn base(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// CPU time of Janus.
    pub fn cpu_ns(&self) -> Option<super::target::ProcessCpu> {
        super::target::process_cpu(&self.pid()?.to_string())
    }

    /// The janus process itself (taskset execs it, so it is the child).
    fn pid(&self) -> Option<u32> {
        Some(self.child.id())
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..60 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_tcp_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A plain HTTP/1.1 request (Janus answers with Content-Length).
async fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("bad HTTP response")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    serde_json::from_str(body.trim()).with_context(|| format!("bad JSON from Janus: {body}"))
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One Janus session with a long-poll loop handing each handle's events to it.
#[derive(Clone)]
pub struct JanusSession {
    addr: String,
    id: u64,
    waiters: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>>,
    stop: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

fn tx() -> String {
    format!("t{}", rand::random::<u32>())
}

impl JanusSession {
    pub async fn connect(addr: &str) -> anyhow::Result<JanusSession> {
        let mut tries = 0;
        let created = loop {
            match http(
                addr,
                "POST",
                "/janus",
                Some(&json!({"janus":"create","transaction":tx()})),
            )
            .await
            {
                Ok(v) => break v,
                Err(e) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = e;
                }
                Err(e) => return Err(e.context("Janus does not answer")),
            }
        };
        let id = created["data"]["id"].as_u64().context("no session id")?;
        let waiters: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>> = Default::default();
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let (w, a) = (waiters.clone(), addr.to_owned());
        tokio::spawn(async move {
            loop {
                let path = format!("/janus/{id}?maxev=50");
                let poll = http(&a, "GET", &path, None);
                let events = tokio::select! {
                    r = poll => r,
                    _ = &mut stop_rx => break,
                };
                let Ok(events) = events else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let list = match events {
                    Value::Array(a) => a,
                    one => vec![one],
                };
                for e in list {
                    if let Some(sender) = e["sender"].as_u64()
                        && let Ok(w) = w.lock()
                        && let Some(tx) = w.get(&sender)
                    {
                        let _ = tx.send(e);
                    }
                }
            }
        });
        Ok(JanusSession {
            addr: addr.to_owned(),
            id,
            waiters,
            stop: Arc::new(Mutex::new(Some(stop_tx))),
        })
    }

    pub async fn attach(&self) -> anyhow::Result<JanusHandle> {
        let r = http(
            &self.addr,
            "POST",
            &format!("/janus/{}", self.id),
            Some(&json!({"janus":"attach","plugin":"janus.plugin.videoroom","transaction":tx()})),
        )
        .await?;
        let id = r["data"]["id"]
            .as_u64()
            .with_context(|| format!("attach failed: {r}"))?;
        let (events_tx, events) = mpsc::unbounded_channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(id, events_tx);
        }
        Ok(JanusHandle {
            session: self.clone(),
            id,
            events,
        })
    }

    pub fn close(&self) {
        if let Ok(mut s) = self.stop.lock()
            && let Some(s) = s.take()
        {
            let _ = s.send(());
        }
    }
}

pub struct JanusHandle {
    session: JanusSession,
    pub id: u64,
    events: mpsc::UnboundedReceiver<Value>,
}

impl JanusHandle {
    /// Sends a message to the plugin; returns Janus's immediate answer.
    pub async fn message(&self, body: Value, jsep: Option<Value>) -> anyhow::Result<Value> {
        let mut m = json!({"janus":"message","transaction":tx(),"body":body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        http(
            &self.session.addr,
            "POST",
            &format!("/janus/{}/{}", self.session.id, self.id),
            Some(&m),
        )
        .await
    }

    /// Waits for an event of this handle matching `f`.
    pub async fn wait(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if f(&e) => return Ok(e),
                Ok(Some(e))
                    if e["janus"] == "event" && e["plugindata"]["data"]["error"].is_string() =>
                {
                    bail!("Janus error: {}", e["plugindata"]["data"]["error"]);
                }
                Ok(Some(_)) => {}
                _ => bail!("timed out waiting for a Janus event"),
            }
        }
    }
}

/// A VideoRoom publisher sending synthetic media.
pub struct JanusPublisher {
    pub feed: u64,
    _handle: JanusHandle,
    _transport: ClientTransport,
}

pub async fn create_room(session: &JanusSession, room: u64) -> anyhow::Result<()> {
    let h = session.attach().await?;
    let r = h
        .message(
            json!({"request":"create","room":room,"publishers":100000,"bitrate":0,
                   "audiocodec":"opus","videocodec":"vp8","notify_joining":false,"fir_freq":0}),
            None,
        )
        .await?;
    if r["plugindata"]["data"]["videoroom"] != "created" {
        bail!("cannot create the room: {r}");
    }
    Ok(())
}

/// Joins as a publisher sending `sources`; returns once Janus reports the PeerConnection up.
pub async fn publish(
    session: &JanusSession,
    room: u64,
    sources: Vec<SourceConfig>,
) -> anyhow::Result<JanusPublisher> {
    let mut handle = session.attach().await?;
    let transport =
        ClientTransport::new_sdp(ClientTransportOptions::new(ClientNumbering::chromium())).await?;
    let offer = transport.create_offer(sources).await?;
    handle
        .message(
            json!({"request":"joinandconfigure","room":room,"ptype":"publisher","display":"bench"}),
            Some(json!({"type":"offer","sdp":offer})),
        )
        .await?;
    let joined = handle
        .wait(Duration::from_secs(10), |e| e["jsep"]["type"] == "answer")
        .await?;
    let feed = joined["plugindata"]["data"]["id"]
        .as_u64()
        .context("no publisher id")?;
    let answer = joined["jsep"]["sdp"].as_str().context("no answer")?;
    transport.accept_answer(answer.to_owned()).await?;
    handle
        .wait(Duration::from_secs(15), |e| e["janus"] == "webrtcup")
        .await
        .context("the publisher's PeerConnection never came up")?;
    Ok(JanusPublisher {
        feed,
        _handle: handle,
        _transport: transport,
    })
}

/// A VideoRoom subscriber to `feed`; its packets arrive on the returned channel.
pub async fn subscribe(
    session: &JanusSession,
    room: u64,
    feed: u64,
) -> anyhow::Result<(
    JanusHandle,
    ClientTransport,
    mpsc::UnboundedReceiver<ReceivedRtp>,
)> {
    subscribe_many(session, room, &[feed]).await
}

/// One subscriber PeerConnection receiving several feeds (Janus 1.x multistream), as a peer of
/// an audio room would; more can be added with [`subscribe_more`].
pub async fn subscribe_many(
    session: &JanusSession,
    room: u64,
    feeds: &[u64],
) -> anyhow::Result<(
    JanusHandle,
    ClientTransport,
    mpsc::UnboundedReceiver<ReceivedRtp>,
)> {
    let mut handle = session.attach().await?;
    let transport =
        ClientTransport::new_sdp(ClientTransportOptions::new(ClientNumbering::chromium())).await?;
    let packets = transport.receive_all().await?;
    let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
    handle
        .message(
            json!({"request":"join","room":room,"ptype":"subscriber","streams":streams}),
            None,
        )
        .await?;
    let attached = handle
        .wait(Duration::from_secs(10), |e| e["jsep"]["type"] == "offer")
        .await?;
    let offer = attached["jsep"]["sdp"].as_str().context("no offer")?;
    let answer = transport.accept_offer(offer.to_owned()).await?;
    handle
        .message(
            json!({"request":"start","room":room}),
            Some(json!({"type":"answer","sdp":answer})),
        )
        .await?;
    Ok((handle, transport, packets))
}

/// Adds feeds to a subscription: Janus renegotiates with a new offer, which is answered.
pub async fn subscribe_more(
    handle: &mut JanusHandle,
    transport: &ClientTransport,
    room: u64,
    feeds: &[u64],
) -> anyhow::Result<()> {
    let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
    handle
        .message(json!({"request":"update","subscribe":streams}), None)
        .await?;
    let updated = handle
        .wait(Duration::from_secs(10), |e| e["jsep"]["type"] == "offer")
        .await?;
    let offer = updated["jsep"]["sdp"].as_str().context("no offer")?;
    let answer = transport.accept_offer(offer.to_owned()).await?;
    handle
        .message(
            json!({"request":"start","room":room}),
            Some(json!({"type":"answer","sdp":answer})),
        )
        .await?;
    Ok(())
}
