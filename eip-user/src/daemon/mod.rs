//! `eip daemon`: sets the host up, starts (or adopts) the pinned dataplane, reconciles it to
//! the store, serves the socket, follows the hosts file and the bridge's ports, and stops on
//! SIGINT/SIGTERM leaving the dataplane forwarding (or removing it with --teardown-on-exit).

pub mod config;
pub mod hosts_follow;
pub mod hostsfile;
pub mod metrics;
mod process;
pub mod teardown;

pub use process::{LOCK_DIR, lock_path};
use process::{bind_socket, give_back_free_memory, io_err, lock_instance};

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

/// Fails unless the VM table has room for every reservation of `state` beside the entries
/// kept for dynamic leases.
fn check_room(state: &State, limits: &lifecycle::Limits) -> Result<(), DaemonError> {
    let reserved = state.hosts.len();
    if !limits.fits(reserved) {
        return Err(DaemonError::VmTable {
            max_vms: limits.max_vms,
            reserved,
            kept: limits.kept_for_leases(),
        });
    }
    Ok(())
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
        tracing::info!(aliases, "aliases removed");
        tracing::info!(pins = %pins.root().display(), "dataplane removed");
    } else {
        tracing::info!("the dataplane keeps forwarding (pinned)");
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// What a started daemon holds until it stops.
struct Daemon {
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

/// Sets the host up, starts (or adopts) the pinned dataplane, opens the store and reconciles
/// the kernel to it. Nothing answers on the socket yet.
async fn start(args: &DaemonArgs, socket: &Path) -> Result<(Daemon, UnixListener), DaemonError> {
    let nl = Netlink::new()?;
    let ext = nl.link(&args.ext).await?;
    let instance = args.instance.clone().unwrap_or_else(|| ext.name.clone());
    // Before anything else (the name checked by making the pins): a second daemon on this
    // instance touches nothing.
    let mut pins = Pins::new(&instance)?;
    let _lock = lock_instance(&instance)?;
    // `--ext-vlan`: the EIPs' network is a VLAN of the external interface, whose VLAN
    // interface holds the aliases.
    let public = match args.ext_vlan {
        None => None,
        Some(vid) => Some(
            nl.vlan_on(ext.index, vid)
                .await?
                .ok_or_else(|| DaemonError::NoVlanInterface {
                    ext: ext.name.clone(),
                    vid,
                })?,
        ),
    };
    let bridge = nl.link(&args.bridge).await?;
    let bridge_net = nl.ipv4_net(&bridge).await?;
    let mut limits = lifecycle::Limits {
        private: bridge_net.trunc(),
        gateway: bridge_net.addr(),
        max_bindings: args.max_bindings,
        max_vms: args.max_vms,
        dynamic: if args.no_dhcp { None } else { args.dhcp_range },
    };
    let dhcp_settings = config::dhcp_settings(args, &limits)?;
    tracing::info!(private = %limits.private, gateway = %limits.gateway, "read from {}", bridge.name);
    // The store first: it refuses a second daemon on the same state before anything changes.
    let mut store = Store::open(&args.state_dir)?;
    store.set_history_keep(args.history_keep);
    let state = store.load()?;
    crate::kernel::settings::host_settings(&bridge.name)?;
    let listener = bind_socket(socket, args.socket_group.as_deref())?;

    let ext_tc = match args.ingress {
        IngressMode::Xdp => false,
        IngressMode::Tc => true,
        IngressMode::Auto => nl.is_veth(ext.index).await? == Some(true),
    };
    if ext_tc && args.ingress == IngressMode::Auto {
        tracing::info!(
            iface = %ext.name,
            "the external interface is a veth: ingress runs as TC there, which completes the partial checksums a sender with checksum offload hands over (XDP cannot see them)"
        );
    }
    pins.set_ext_tc(ext_tc);
    if !pins.exists() {
        // Refused before the maps are created: a VM table this size could not hold every
        // reservation. Pinned maps keep their size; they are checked once loaded.
        check_room(&state, &limits)?;
    }
    // Before any program is attached: from now on nothing untranslated leaves with a private
    // source, whatever window the programs leave.
    let outs: Vec<&str> = std::iter::once(ext.name.as_str())
        .chain(public.as_ref().map(|l| l.name.as_str()))
        .collect();
    match crate::kernel::guard::install(&instance, &outs, limits.private) {
        Ok(()) => tracing::info!(
            table = %crate::kernel::guard::table(&instance),
            "leak guard: nothing from {} leaves {} untranslated",
            limits.private,
            ext.name
        ),
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "no leak guard: a VM's untranslated packets can leave with its private address")
        }
    }
    let sizes = Sizes {
        bindings: args.max_bindings,
        vms: args.max_vms,
    };
    let (mut dp, started) = pins.start(sizes, &ext.name, &bridge.name)?;
    dp.set_uplink(&eip_common::maps::Uplink {
        vlan: args.ext_vlan.unwrap_or(0),
        ..Default::default()
    })?;
    if let Some(vlan) = &public {
        tracing::info!(iface = %ext.name, vlan = %vlan.name, "the EIPs' network is VLAN {}: its frames reach the VMs untagged; the aliases and announcements go on {}", args.ext_vlan.unwrap_or(0), vlan.name);
    }
    crate::kernel::settings::uplink_settings(&ext.name, ext_tc);
    tracing::info!(pins = %pins.root().display(), ?started, "dataplane ready");
    let capacity = dp.capacity()?;
    if capacity != sizes {
        tracing::warn!(
            asked = ?sizes,
            pinned = ?capacity,
            "the pinned maps keep the sizes they were created with (`eip teardown` drops them)"
        );
        limits.max_bindings = capacity.bindings;
        limits.max_vms = capacity.vms;
    }
    // The dataplane keeps serving what it had when this start is refused.
    check_room(&state, &limits)?;
    let config = Config {
        bridge_mac: bridge.mac,
        flags: if args.no_antispoof { 0 } else { CONFIG_ANTISPOOF }
            | if args.no_fast_path { CONFIG_NO_FAST_PATH } else { 0 }
            | if args.no_source_filter {
                CONFIG_NO_SOURCE_FILTER
            } else {
                0
            },
        private_net: limits.private.network().to_bits(),
        private_mask: limits.private.netmask().to_bits(),
    };
    let mut live = Live::new(
        dp,
        nl.clone(),
        (ext.clone(), bridge.clone()),
        pins.clone(),
        config,
    )?;
    live.fast_path_veth = args.fast_path_veth;
    live.no_port_fast_path = args.no_port_fast_path;
    if let Some(vlan) = public.clone() {
        live.set_public(vlan);
    }
    live.refresh_ports().await?;
    let mut engine = Engine::with_state(store, state, live, limits);
    if let Some(path) = &args.lease_script {
        let leases = engine.state().leases.len();
        engine.send_lease_events(dhcp::script::spawn(path.clone(), bridge.name.clone(), leases));
    }

    for pool in &args.pools {
        let pool = pool.trunc();
        if engine.state().pools.contains(&pool) {
            continue;
        }
        let host = engine.host_nets().await?;
        let change = lifecycle::pool_add(engine.state(), &limits, pool, &host);
        match engine
            .run(&format!("pool add {pool} (command line)"), change)
            .await
        {
            Ok(_) => {}
            Err(EngineError::Refused(r)) => return Err(DaemonError::Pool(pool, r)),
            Err(e) => return Err(e.into()),
        }
    }
    // Leases the settings no longer back (the range changed) end; expired ones end; the lease
    // script hears of the rest as "old", as dnsmasq's does at start.
    let stale = lifecycle::stale_leases(engine.state(), &limits);
    if !stale.is_empty() {
        let change = lifecycle::Change {
            message: format!("{} leases the DHCP settings no longer allow ended", stale.len()),
            writes: stale,
        };
        engine.run("dhcp settings (start)", Ok(change)).await?;
    }
    expire(&mut engine).await;
    let live_leases = engine.state().leases.values().cloned();
    let old = live_leases.map(|lease| lifecycle::LeaseEvent {
        verb: lifecycle::LeaseVerb::Old,
        lease,
    });
    engine.emit(old.collect());
    let dhcp_stats = dhcp_settings.as_ref().map(|_| Arc::new(dhcp::Stats::default()));
    let (stop_tx, stop_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        engine: Arc::new(Mutex::new(engine)),
        status: Status {
            instance: instance.clone(),
            ext: ext.name.clone(),
            bridge: bridge.name.clone(),
            private: limits.private,
            gateway: limits.gateway,
            pins: pins.root().display().to_string(),
            dataplane: match started {
                Started::Fresh(_) => "fresh",
                Started::Adopted => "adopted",
                Started::Upgraded => "upgraded",
            }
            .into(),
            version: env!("CARGO_PKG_VERSION").into(),
            dhcp: dhcp_settings.as_ref().map(|d| api::DhcpStatus {
                lease_time: d.lease_time,
                range: d.range.map(|r| r.to_string()),
            }),
        },
        shutdown: stop_tx,
        dhcp: dhcp_stats.clone(),
    });
    let hosts = match &args.hosts {
        Some(path) => Some(Follower::start(path, &shared.engine).await),
        None => None,
    };
    give_back_free_memory();
    let fixes = shared.engine.lock().await.reconcile().await?;
    tracing::info!(corrections = fixes, "kernel reconciled to the store");
    give_back_free_memory();
    let daemon = Daemon {
        _lock,
        nl,
        pins,
        shared,
        stop_rx,
        hosts,
        dhcp: dhcp_settings.zip(dhcp_stats),
        bridge,
    };
    Ok((daemon, listener))
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
