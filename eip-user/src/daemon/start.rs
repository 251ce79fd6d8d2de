//! The daemon's start: the host and the store read, the dataplane started (or adopted) behind
//! the leak guard, the store brought up to the flags, the kernel reconciled.

use super::*;

/// Sets the host up, starts (or adopts) the pinned dataplane, opens the store and reconciles
/// the kernel to it. Nothing answers on the socket yet.
pub(super) async fn start(args: &DaemonArgs, socket: &Path) -> Result<(Daemon, UnixListener), DaemonError> {
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

    let (live, started) = start_dataplane(
        args,
        &nl,
        &mut pins,
        (&ext, &bridge, public.as_ref()),
        &mut limits,
        &state,
    )
    .await?;
    let mut engine = Engine::with_state(store, state, live, limits);
    if let Some(path) = &args.lease_script {
        let leases = engine.state().leases.len();
        engine.send_lease_events(dhcp::script::spawn(path.clone(), bridge.name.clone(), leases));
    }

    settle(&mut engine, args, &limits).await?;
    let dhcp_stats = dhcp_settings.as_ref().map(|_| Arc::new(dhcp::Stats::default()));
    let (stop_tx, stop_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        engine: Arc::new(Mutex::new(engine)),
        status: status(
            &instance,
            &ext,
            &bridge,
            &limits,
            &pins,
            started,
            dhcp_settings.as_ref(),
        ),
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

/// Starts (or adopts) the pinned dataplane behind the leak guard and wraps it as the live
/// kernel. `limits` take the pinned maps' sizes when those differ from the flags'.
async fn start_dataplane(
    args: &DaemonArgs,
    nl: &Netlink,
    pins: &mut Pins,
    (ext, bridge, public): (&Link, &Link, Option<&Link>),
    limits: &mut lifecycle::Limits,
    state: &State,
) -> Result<(Live, Started), DaemonError> {
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
        check_room(state, limits)?;
    }
    // Before any program is attached: from now on nothing untranslated leaves with a private
    // source, whatever window the programs leave.
    leak_guard(pins.instance(), ext, public, limits.private);
    let sizes = Sizes {
        bindings: args.max_bindings,
        vms: args.max_vms,
    };
    let (mut dp, started) = pins.start(sizes, &ext.name, &bridge.name)?;
    dp.set_uplink(&eip_common::maps::Uplink {
        vlan: args.ext_vlan.unwrap_or(0),
        ..Default::default()
    })?;
    if let Some(vlan) = public {
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
    check_room(state, limits)?;
    let config = dataplane_config(args, bridge, limits);
    let mut live = Live::new(
        dp,
        nl.clone(),
        (ext.clone(), bridge.clone()),
        pins.clone(),
        config,
    )?;
    live.fast_path_veth = args.fast_path_veth;
    live.no_port_fast_path = args.no_port_fast_path;
    if let Some(vlan) = public.cloned() {
        live.set_public(vlan);
    }
    live.refresh_ports().await?;
    Ok((live, started))
}

/// The nftables leak guard on the interfaces that reach the outside; a warning when it
/// cannot be installed (the daemon still runs).
fn leak_guard(instance: &str, ext: &Link, public: Option<&Link>, private: Ipv4Net) {
    let outs: Vec<&str> = std::iter::once(ext.name.as_str())
        .chain(public.map(|l| l.name.as_str()))
        .collect();
    match crate::kernel::guard::install(instance, &outs, private) {
        Ok(()) => tracing::info!(
            table = %crate::kernel::guard::table(instance),
            "leak guard: nothing from {} leaves {} untranslated",
            private,
            ext.name
        ),
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "no leak guard: a VM's untranslated packets can leave with its private address")
        }
    }
}

/// What the programs are told of the bridge and the flags.
fn dataplane_config(args: &DaemonArgs, bridge: &Link, limits: &lifecycle::Limits) -> Config {
    Config {
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
    }
}

/// What the store holds is brought up to this start's flags: the pools on the command line
/// added, the leases the DHCP settings no longer back and the expired ones ended; the lease
/// script hears of the rest as "old", as dnsmasq's does at start.
async fn settle(
    engine: &mut Engine<Live>,
    args: &DaemonArgs,
    limits: &lifecycle::Limits,
) -> Result<(), DaemonError> {
    for pool in &args.pools {
        let pool = pool.trunc();
        if engine.state().pools.contains(&pool) {
            continue;
        }
        let host = engine.host_nets().await?;
        let change = lifecycle::pool_add(engine.state(), limits, pool, &host);
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
    let stale = lifecycle::stale_leases(engine.state(), limits);
    if !stale.is_empty() {
        let change = lifecycle::Change {
            message: format!("{} leases the DHCP settings no longer allow ended", stale.len()),
            writes: stale,
        };
        engine.run("dhcp settings (start)", Ok(change)).await?;
    }
    expire(engine).await;
    let live_leases = engine.state().leases.values().cloned();
    let old = live_leases.map(|lease| lifecycle::LeaseEvent {
        verb: lifecycle::LeaseVerb::Old,
        lease,
    });
    engine.emit(old.collect());
    Ok(())
}

/// What `eip status` says of this daemon.
fn status(
    instance: &str,
    ext: &Link,
    bridge: &Link,
    limits: &lifecycle::Limits,
    pins: &Pins,
    started: Started,
    dhcp: Option<&dhcp::Settings>,
) -> Status {
    Status {
        instance: instance.to_owned(),
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
        dhcp: dhcp.map(|d| api::DhcpStatus {
            lease_time: d.lease_time,
            range: d.range.map(|r| r.to_string()),
        }),
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
