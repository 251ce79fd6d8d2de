//! `eip daemon`: sets the host up, starts (or adopts) the pinned dataplane, reconciles it to
//! the store, serves the socket, follows the hosts file and the bridge's ports, and stops on
//! SIGINT/SIGTERM leaving the dataplane forwarding (or removing it with --teardown-on-exit).

pub mod config;
pub mod hosts_follow;
pub mod hostsfile;
pub mod metrics;
pub mod teardown;

use std::{
    os::unix::fs::PermissionsExt,
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
    kernel::netlink::{Netlink, NetlinkError},
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

/// The DHCP server's settings from the command line, checked against the bridge's subnet;
/// `None` with `--no-dhcp`.
fn dhcp_settings(
    args: &DaemonArgs,
    limits: &lifecycle::Limits,
) -> Result<Option<dhcp::Settings>, DaemonError> {
    if args.no_dhcp {
        return Ok(None);
    }
    let bad = |m: String| Err(DaemonError::DhcpSettings(m));
    let secs = args.lease_time.as_secs();
    if !(dhcp::MIN_LEASE_TIME..=u64::from(u32::MAX - 1)).contains(&secs) {
        return bad(format!(
            "--lease-time {} is out of range ({} s to 136 years)",
            args.lease_time,
            dhcp::MIN_LEASE_TIME
        ));
    }
    let net = limits.private;
    if let Some(r) = args.dhcp_range {
        for end in [r.start, r.end] {
            if !net.contains(&end) || end == net.network() || end == net.broadcast() {
                return bad(format!(
                    "--dhcp-range {r} is not inside the bridge subnet {net}'s hosts"
                ));
            }
        }
    }
    if let Some(d) = &args.domain
        && !lifecycle::valid_name(d)
    {
        return bad(format!("--domain {d:?} is not a valid domain name"));
    }
    Ok(Some(dhcp::Settings {
        server: limits.gateway,
        net,
        lease_time: secs as u32,
        dns: args.dns.clone(),
        domain: args.domain.clone(),
        mtu: args.mtu,
        range: args.dhcp_range,
    }))
}

fn io_err(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.to_owned();
    move |source| DaemonError::Io { path, what, source }
}

/// Where each running daemon holds the lock of its instance, whatever its state directory
/// and socket: two daemons on one instance's pins would undo each other's bindings.
pub const LOCK_DIR: &str = "/run/eip";

/// The lock file of `instance`.
pub fn lock_path(instance: &str) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("{instance}.lock"))
}

/// Takes the instance's lock (flock, so it goes with the process, kill -9 included) and
/// writes this daemon's pid in it. The file is left in place when the daemon ends: removing
/// it would let a third daemon lock a new file while a second holds the old one.
fn lock_instance(instance: &str) -> Result<std::fs::File, DaemonError> {
    use std::{io::Write, os::fd::AsRawFd};
    std::fs::create_dir_all(LOCK_DIR).map_err(io_err(Path::new(LOCK_DIR), "create the lock directory"))?;
    let path = lock_path(instance);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path, "open the instance lock"))?;
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse().ok());
            return Err(DaemonError::InstanceBusy {
                instance: instance.to_owned(),
                pid,
            });
        }
        return Err(io_err(&path, "lock the instance")(e));
    }
    file.set_len(0)
        .map_err(io_err(&path, "write the instance lock"))?;
    writeln!(file, "{}", std::process::id()).map_err(io_err(&path, "write the instance lock"))?;
    Ok(file)
}

/// Binds the socket, refusing if a live daemon answers on it, with mode 0600 (or 0660 for
/// `group`).
fn bind_socket(path: &Path, group: Option<&str>) -> Result<UnixListener, DaemonError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "create the socket directory"))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::SocketBusy(path.to_owned()));
        }
        // Left by a daemon that was killed.
        std::fs::remove_file(path).map_err(io_err(path, "remove the stale socket"))?;
    }
    let listener = UnixListener::bind(path).map_err(io_err(path, "bind the socket"))?;
    let mode = match group {
        Some(g) => {
            let gid = group_id(g)?;
            std::os::unix::fs::chown(path, Some(0), Some(gid)).map_err(io_err(path, "chown the socket"))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(path, "set the socket's mode"))?;
    Ok(listener)
}

fn group_id(name: &str) -> Result<u32, DaemonError> {
    let c = std::ffi::CString::new(name).map_err(|_| DaemonError::NoGroup(name.to_owned()))?;
    // SAFETY: getgrnam with a NUL-terminated name; the result is read at once, before any
    // other getgr* call could overwrite it.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        return Err(DaemonError::NoGroup(name.to_owned()));
    }
    // SAFETY: non-null result of getgrnam.
    Ok(unsafe { (*gr).gr_gid })
}

/// Returns the heap's free pages to the kernel. A hosts-file sync or a reconcile pass builds
/// and drops copies of the whole state; glibc keeps what they freed, so without this the
/// resident set stays at the peak (80 MiB instead of 37 MiB with 100,000 reservations).
fn give_back_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
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

pub async fn run(args: DaemonArgs, socket: PathBuf) -> Result<(), DaemonError> {
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
    let dhcp_settings = dhcp_settings(&args, &limits)?;
    tracing::info!(private = %limits.private, gateway = %limits.gateway, "read from {}", bridge.name);
    // The store first: it refuses a second daemon on the same state before anything changes.
    let mut store = Store::open(&args.state_dir)?;
    store.set_history_keep(args.history_keep);
    let state = store.load()?;
    crate::kernel::live::host_settings(&bridge.name)?;
    let listener = bind_socket(&socket, args.socket_group.as_deref())?;

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
    crate::kernel::live::uplink_settings(&ext.name, ext_tc);
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
        engine.events = Some(dhcp::script::spawn(path.clone(), bridge.name.clone(), leases));
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
    let (stop_tx, mut stop_rx) = watch::channel(None);
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
    let mut hosts = match &args.hosts {
        Some(path) => Some(Follower::start(path, &shared.engine).await),
        None => None,
    };
    give_back_free_memory();
    let fixes = shared.engine.lock().await.reconcile().await?;
    tracing::info!(corrections = fixes, "kernel reconciled to the store");
    give_back_free_memory();

    if let Some(addr) = args.metrics {
        metrics::serve(addr, shared.clone()).await?;
    }
    // Before the socket answers: a SIGTERM from whoever saw it answer must stop the daemon
    // the orderly way, not kill it.
    let mut term = signal(SignalKind::terminate()).map_err(io_err(&socket, "install signal handlers"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err(&socket, "install signal handlers"))?;
    let mut hup = signal(SignalKind::hangup()).map_err(io_err(&socket, "install signal handlers"))?;
    let app = api::router(shared.clone());
    let max = crate::api::serve::connection_limit();
    let server = tokio::spawn(crate::api::serve::serve(listener, app, max, stop_rx.clone()));
    tracing::info!(socket = %socket.display(), "serving");
    if let (Some(settings), Some(stats)) = (dhcp_settings, dhcp_stats) {
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
                if let Some(h) = &mut hosts {
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
                if let Some(h) = &mut hosts
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
