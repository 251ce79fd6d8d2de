//! `eip daemon`: sets the host up, starts (or adopts) the pinned dataplane, reconciles it to
//! the store, serves the socket, follows the hosts file and the bridge's ports, and stops on
//! SIGINT/SIGTERM leaving the dataplane forwarding (or removing it with --teardown-on-exit).

pub mod config;
pub mod hosts_follow;
pub mod hostsfile;
pub mod metrics;
mod process;
mod start;
pub mod teardown;

pub use process::{LOCK_DIR, lock_path};
use process::{bind_socket, give_back_free_memory, io_err, lock_instance};
use start::start;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use eip_common::maps::{CONFIG_ANTISPOOF, CONFIG_NO_FAST_PATH, CONFIG_NO_SOURCE_FILTER, Config};
use ipnet::Ipv4Net;
use tokio::{
    net::UnixListener,
    signal::unix::{SignalKind, signal},
    sync::{Mutex, watch},
};

use crate::{
    api::{self, Shared, Status},
    daemon::config::{DaemonArgs, IngressMode},
    daemon::hosts_follow::Follower,
    dhcp::{self, service::DhcpError},
    engine::{Engine, EngineError},
    kernel::KernelError,
    kernel::dataplane::{DataplaneError, Sizes},
    kernel::live::Live,
    kernel::netlink::{Link, Netlink, NetlinkError},
    kernel::pins::{PinError, Pins, Started},
    lifecycle::{self, Refusal},
    model::State,
    store::{Store, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("another daemon already serves {0}")]
    SocketBusy(PathBuf),
    #[error("another eip daemon{} runs instance {instance}; stop it first, or name another --instance", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    InstanceBusy { instance: String, pid: Option<u32> },
    #[error("{path}: {what}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no group named {0}")]
    NoGroup(String),
    #[error("pool {0} from the command line: {1}")]
    Pool(Ipv4Net, Refusal),
    #[error(
        "a VM table of {max_vms} entries (--max-vms) is too small: the store holds {reserved} reservations and {kept} entries are kept for the dynamic range's leases"
    )]
    VmTable {
        max_vms: u32,
        reserved: usize,
        kept: u32,
    },
    #[error(
        "--ext-vlan {vid}: {ext} has no VLAN interface with ID {vid}, which the EIPs' aliases and ARP need; create it with the host's address on that network (ip link add link {ext} name {ext}.{vid} type vlan id {vid})"
    )]
    NoVlanInterface { ext: String, vid: u16 },
    #[error("DHCP settings: {0}")]
    DhcpSettings(String),
    #[error(transparent)]
    Dhcp(#[from] DhcpError),
}

/// Runs the daemon: [`start`], [`serve`] until a signal or `eip shutdown`, then stop (the
/// dataplane left forwarding, or torn down).
pub async fn run(args: DaemonArgs, socket: PathBuf) -> Result<(), DaemonError> {
    let (mut daemon, listener) = start(&args, &socket).await?;
    let (teardown, server) = serve(&mut daemon, &args, &socket, listener).await?;
    let Daemon { nl, pins, shared, .. } = daemon;
    tracing::info!(teardown, "stopping");
    shared.shutdown.send_replace(Some(teardown));
    if let Err(e) = server.await {
        tracing::warn!(error = %e, "socket server task");
    }
    if teardown {
        // The engine (and the dataplane's fds) must be gone before unpinning frees the links.
        drop(shared);
        let aliases = crate::kernel::teardown::teardown(&pins, &nl).await?;
        tracing::info!(aliases, pins = %pins.root().display(), "dataplane removed");
    } else {
        tracing::info!("the dataplane keeps forwarding (pinned)");
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// What a started daemon holds until it stops.
pub(super) struct Daemon {
    /// The instance's lock, held for the process's life.
    _lock: std::fs::File,
    nl: Netlink,
    pins: Pins,
    shared: Arc<Shared<Live>>,
    stop_rx: watch::Receiver<Option<bool>>,
    hosts: Option<Follower>,
    /// The DHCP server's settings and counters, until it starts (`None`: `--no-dhcp`).
    dhcp: Option<(dhcp::Settings, Arc<dhcp::Stats>)>,
    bridge: Link,
}

/// Serves the socket (and metrics, and DHCP) and keeps the kernel up once a second until
/// SIGINT, SIGTERM or `eip shutdown`. Returns whether to tear the dataplane down, and the
/// socket server's task.
async fn serve(
    d: &mut Daemon,
    args: &DaemonArgs,
    socket: &Path,
    listener: UnixListener,
) -> Result<(bool, tokio::task::JoinHandle<()>), DaemonError> {
    let Daemon {
        shared,
        stop_rx,
        hosts,
        dhcp,
        bridge,
        ..
    } = d;
    if let Some(addr) = args.metrics {
        metrics::serve(addr, shared.clone()).await?;
    }
    // Before the socket answers: a SIGTERM from whoever saw it answer must stop the daemon
    // the orderly way, not kill it.
    let mut term = signal(SignalKind::terminate()).map_err(io_err(socket, "install signal handlers"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err(socket, "install signal handlers"))?;
    let mut hup = signal(SignalKind::hangup()).map_err(io_err(socket, "install signal handlers"))?;
    let app = api::router(shared.clone());
    let max = crate::api::serve::connection_limit();
    let server = tokio::spawn(crate::api::serve::serve(listener, app, max, stop_rx.clone()));
    tracing::info!(socket = %socket.display(), "serving");
    if let Some((settings, stats)) = dhcp.take() {
        let server = dhcp::service::Server::new(settings, bridge.clone(), stats)?;
        tokio::spawn(server.run(shared.engine.clone(), stop_rx.clone()));
    } else {
        tracing::info!("DHCP server off (--no-dhcp)");
    }

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    let teardown = loop {
        tokio::select! {
            _ = term.recv() => break args.teardown_on_exit,
            _ = int.recv() => break args.teardown_on_exit,
            _ = hup.recv() => {
                if let Some(h) = hosts {
                    h.confirm(&shared.engine).await;
                    give_back_free_memory();
                }
            }
            r = stop_rx.changed() => {
                match (r, *stop_rx.borrow()) {
                    (Ok(()), Some(t)) => break t || args.teardown_on_exit,
                    _ => continue,
                }
            }
            _ = tick.tick() => {
                ticks += 1;
                if let Some(h) = hosts
                    && h.tick(&shared.engine).await
                {
                    give_back_free_memory();
                }
                let mut en = shared.engine.lock().await;
                expire(&mut en).await;
                if en.tick(ticks).await {
                    give_back_free_memory();
                }
            }
        }
    };
    Ok((teardown, server))
}

/// Ends the leases and declines whose time is up.
async fn expire(engine: &mut Engine<Live>) {
    let change = lifecycle::expire(engine.state(), dhcp::now());
    if change.writes.is_empty() {
        return;
    }
    let message = change.message.clone();
    if let Err(e) = engine.run(&message, Ok(change)).await {
        tracing::error!(error = %crate::error_chain(&e), "lease expiry");
    }
}
