//! `Worker`: the control plane's handle on one worker thread, which hosts routers and everything
//! on them behind one UDP socket shared by all of its transports (like mediasoup's
//! WebRtcServer).
//!
//! The thread runs the driver (`driver.rs`), which feeds the worker's sans-IO [`Core`]
//! (`core/`) from the socket, the command channel and the clock. Handles reach the core through
//! a [`WorkerLink`] and await replies; events come back on each transport's event sender.
//!
//! Robustness: a datagram from an address no transport has validated is dropped and counted
//! (STUN is routed by ufrag); a panic while handling one transport closes that transport only
//! (with `CloseReason::SessionError`); a worker whose thread ends unexpectedly reports "died"
//! through [`Worker::died`], and the control plane may spawn a replacement.
//!
//! [`Core`]: crate::core::Core

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sluice_ortc::RtpCodecCapability;
use tokio::sync::watch;

use crate::command::{Command, WorkerLink};
use crate::core::router::router_capabilities;
use crate::driver::{self, Runner, Spawned, Status};
use crate::error::MediaError;
use crate::events::EventSender;
use crate::router::Router;
use crate::settings::{MediaSettings, WorkerSettings};
use crate::testing::VirtualNet;
use crate::types::{ResourceUsage, WorkerDump, new_id};

struct WorkerInner {
    link: WorkerLink,
    local_addr: SocketAddr,
    tcp_local_addr: Option<SocketAddr>,
    status: watch::Receiver<Status>,
    runner: Mutex<Option<Runner>>,
}

/// The control plane's handle on a worker thread.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<WorkerInner>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index())
            .field("local_addr", &self.inner.local_addr)
            .finish()
    }
}

impl Worker {
    /// Binds the worker's UDP socket and starts its thread, with the default tuning.
    pub fn spawn(index: usize, settings: &WorkerSettings) -> Result<Worker, MediaError> {
        Self::spawn_with(index, settings, MediaSettings::default())
    }

    /// Binds the worker's UDP socket and starts its thread, with this tuning.
    pub fn spawn_with(
        index: usize,
        settings: &WorkerSettings,
        media: MediaSettings,
    ) -> Result<Worker, MediaError> {
        Ok(Self::from_spawned(driver::spawn(index, settings, media)?))
    }

    /// Starts a worker on a virtual network, bound to `addr` there, as a task of the current
    /// tokio runtime (tests and simulations: see [`crate::testing`]).
    pub fn spawn_virtual(
        index: usize,
        net: &VirtualNet,
        addr: SocketAddr,
        media: MediaSettings,
    ) -> Result<Worker, MediaError> {
        let socket = net.bind(addr).map_err(|e| MediaError::Bind {
            addr,
            reason: e.to_string(),
        })?;
        Ok(Self::from_spawned(driver::spawn_virtual(
            index, socket, media,
        )?))
    }

    fn from_spawned(spawned: Spawned) -> Worker {
        Worker {
            inner: Arc::new(WorkerInner {
                link: spawned.link,
                local_addr: spawned.local_addr,
                tcp_local_addr: spawned.tcp_local_addr,
                status: spawned.status,
                runner: Mutex::new(Some(spawned.runner)),
            }),
        }
    }

    pub fn index(&self) -> usize {
        self.inner.link.index()
    }

    /// The address the worker's UDP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The address of the worker's ICE-TCP listener, if it has one.
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.inner.tcp_local_addr
    }

    /// Whether the worker thread is running.
    pub fn is_alive(&self) -> bool {
        *self.inner.status.borrow() == Status::Running
    }

    /// Resolves with the reason when the worker thread ends without being closed; never
    /// resolves for a worker that runs on or was closed.
    pub async fn died(&self) -> String {
        let mut status = self.inner.status.clone();
        loop {
            let now = status.borrow_and_update().clone();
            match now {
                Status::Died(reason) => return reason,
                Status::Closed => std::future::pending::<()>().await,
                Status::Running => {}
            }
            if status.changed().await.is_err() {
                // The sender is gone; its last word decides.
                let last = status.borrow().clone();
                return match last {
                    Status::Died(reason) => reason,
                    Status::Closed => std::future::pending::<String>().await,
                    Status::Running => "worker thread is gone".to_owned(),
                };
            }
        }
    }

    /// Creates a router with these media codecs (`mediaCodecs` in mediasoup).
    pub async fn create_router(
        &self,
        media_codecs: &[RtpCodecCapability],
    ) -> Result<Router, MediaError> {
        self.create_router_with_events(media_codecs, None).await
    }

    /// Creates a router whose own events (the active speaker) go to `events`.
    pub async fn create_router_with_events(
        &self,
        media_codecs: &[RtpCodecCapability],
        events: Option<EventSender>,
    ) -> Result<Router, MediaError> {
        let caps = Arc::new(router_capabilities(media_codecs)?);
        let id = new_id();
        let (rid, rcaps) = (id.clone(), caps.clone());
        self.inner
            .link
            .request(|reply| Command::CreateRouter {
                id: rid,
                caps: rcaps,
                events,
                reply,
            })
            .await??;
        Ok(Router::new(id, self.inner.link.clone(), caps))
    }

    pub async fn dump(&self) -> Result<WorkerDump, MediaError> {
        self.inner
            .link
            .request(|reply| Command::Dump { reply })
            .await
    }

    pub async fn resource_usage(&self) -> Result<ResourceUsage, MediaError> {
        self.inner
            .link
            .request(|reply| Command::ResourceUsage { reply })
            .await
    }

    /// Makes the worker thread panic, to test what watches [`Worker::died`].
    #[doc(hidden)]
    pub fn crash_for_test(&self) {
        let _ = self.inner.link.send(Command::Crash);
    }

    /// Closes every router and stops the thread.
    pub async fn close(&self) {
        let _ = self
            .inner
            .link
            .request(|reply| Command::Close { reply })
            .await;
        let runner = self
            .inner
            .runner
            .lock()
            .map(|mut t| t.take())
            .unwrap_or(None);
        match runner {
            Some(Runner::Thread(thread)) => {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            Some(Runner::Task(task)) => {
                let _ = task.await;
            }
            None => {}
        }
    }
}
