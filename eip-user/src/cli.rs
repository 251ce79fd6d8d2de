//! The `eip` command line. Its shape is fixed (scripts depend on it): see the README.
//!
//! Exit codes: 0 success, 1 refused or failed (one sentence on stderr), 2 bad usage, 3 the
//! daemon cannot be reached.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use ipnet::Ipv4Net;

use crate::{
    api::{
        AllocReq, BindReq, Done, EipReq, EipRow, EipState, Entry, HostReq, Leases, LimitReq, PoolReq,
        PoolRow, QuarantineReq, ShutdownReq, Stats, Status,
    },
    client::{Client, ClientError},
    state::{Host, Mac, Range},
};

pub const DEFAULT_SOCKET: &str = "/run/eip/eip.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/eip";

#[derive(Debug, Parser)]
#[command(
    name = "eip",
    version,
    about = "Elastic public IPv4 addresses for the VMs of this hypervisor"
)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "EIP_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (logs to stderr).
    Daemon(Box<DaemonArgs>),
    /// Bind EIP to a VM (host name, MAC or private IP); allocates a free pool address, moves a
    /// bound one.
    Bind {
        eip: Ipv4Addr,
        target: String,
        /// Refuse instead of moving an EIP bound elsewhere.
        #[arg(long)]
        no_move: bool,
        /// Limit the EIP's bandwidth both ways to RATE, as tc writes it: 500kbit, 20mbit,
        /// 1gbit (bits per second), or kbps/mbps (bytes per second).
        #[arg(long, value_name = "RATE")]
        limit: Option<String>,
        /// The limit's burst, such as 64kb (default: 250 ms at the rate, at least 128kb).
        #[arg(long, value_name = "SIZE", requires = "limit")]
        burst: Option<String>,
    },
    /// Limit EIP's bandwidth: RATE both ways, or --in and --out each (a direction left out
    /// keeps its limit); `none` removes a limit. The limit stays with the EIP when it moves
    /// and while it is unbound. RATE as tc writes it: 500kbit, 20mbit, 1gbit (bits per
    /// second), or kbps/mbps (bytes per second).
    Limit {
        eip: Ipv4Addr,
        #[arg(
            value_name = "RATE",
            conflicts_with_all = ["inbound", "outbound"],
            required_unless_present_any = ["inbound", "outbound"]
        )]
        rate: Option<String>,
        /// The limit toward the VM.
        #[arg(long = "in", value_name = "RATE")]
        inbound: Option<String>,
        /// The limit from the VM.
        #[arg(long = "out", value_name = "RATE")]
        outbound: Option<String>,
        /// The burst of the limits set, such as 64kb (default: 250 ms at the rate, at least
        /// 128kb).
        #[arg(long, value_name = "SIZE")]
        burst: Option<String>,
    },
    /// Unbind EIP (it stays allocated).
    Unbind { eip: Ipv4Addr },
    /// Allocate EIP, or the lowest free pool address; prints the address.
    Alloc { eip: Option<Ipv4Addr> },
    /// Return EIP to its pool (unbinding it first).
    Release { eip: Ipv4Addr },
    /// Every allocated or bound address, with its VM and counters.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The reservations (MAC -> private IP).
    #[command(subcommand)]
    Host(HostCommand),
    /// The EIP pools.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Dataplane counters: per EIP, and drops by reason.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// The DHCP leases with their expiry, and the addresses clients declined.
    Leases {
        #[arg(long)]
        json: bool,
    },
    /// The audit log of every change, newest page (oldest first within it).
    History {
        #[arg(long)]
        json: bool,
        /// Entries to show, newest first taken (at most 10,000).
        #[arg(long, default_value_t = crate::api::HISTORY_PAGE)]
        limit: usize,
        /// Only entries before this sequence number (the page before one already seen).
        #[arg(long, value_name = "SEQ")]
        before: Option<u64>,
    },
    /// Drop all of a VM's traffic but DHCP.
    Quarantine { target: String },
    /// Lift a quarantine.
    Unquarantine { target: String },
    /// Stop the daemon (if one runs) and remove the instance's programs, pins and aliases.
    Teardown {
        /// The instance (default: the running daemon's, or the only one pinned).
        #[arg(long)]
        instance: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Reserve IP for MAC.
    Add {
        mac: Mac,
        ip: Ipv4Addr,
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a reservation (its EIP returns to the pool).
    Del {
        #[arg(value_name = "MAC|NAME")]
        key: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    Add {
        cidr: Ipv4Net,
    },
    /// Delete a pool (refused while any of its addresses is bound).
    Del {
        cidr: Ipv4Net,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// The external interface (XDP, aliases, gratuitous ARP).
    #[arg(long)]
    pub ext: String,
    /// The 802.1Q VLAN (1-4094) the EIPs' network is on, when --ext is a trunk. Its frames
    /// take the EIP path and reach the VMs untagged; the VMs' traffic leaves tagged. Untagged
    /// frames and other VLANs are left to the kernel. The host needs its VLAN interface on
    /// --ext (ip link add link ETH name ETH.VID type vlan id VID, with the host's address on
    /// that network): the aliases and gratuitous ARP go there. Without this flag, the EIPs'
    /// network is the untagged one and tagged frames are left alone.
    #[arg(long, value_name = "VID", value_parser = clap::value_parser!(u16).range(1..=4094))]
    pub ext_vlan: Option<u16>,
    /// The VMs' bridge (TC); its IPv4 address gives the private subnet and the gateway.
    #[arg(long)]
    pub bridge: String,
    /// An EIP pool; added to the stored pools at start.
    #[arg(long = "pool", value_name = "CIDR", required = true)]
    pub pools: Vec<Ipv4Net>,
    /// Reservations, one `mac,name,ip` per line; re-read on SIGHUP and when it changes.
    #[arg(long)]
    pub hosts: Option<PathBuf>,
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Names the pin directory /sys/fs/bpf/eip/<instance> (default: the external interface).
    #[arg(long)]
    pub instance: Option<String>,
    /// Remove the dataplane, pins and aliases when the daemon stops.
    #[arg(long)]
    pub teardown_on_exit: bool,
    /// Open the socket to this group (mode 0660) instead of root only (0600).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Serve Prometheus metrics on ADDR:PORT.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Do not check VMs' source addresses against their reservations.
    #[arg(long)]
    pub no_antispoof: bool,
    /// Never redirect translated packets straight to the VM's port or the external interface:
    /// hand them to the kernel (so the host's firewall and routing see them), at a cost.
    #[arg(long)]
    pub no_fast_path: bool,
    /// Let packets from outside reach the VMs whatever their source. By default ingress
    /// drops (and counts) sources no outside host can genuinely have: the bridge subnet, the
    /// pools, loopback, 0.0.0.0/8, multicast, the limited broadcast and 240.0.0.0/4. Only
    /// for setups where the bridge subnet or a pool is also routed beyond the uplink.
    #[arg(long)]
    pub no_source_filter: bool,
    /// Where ingress translation runs: XDP (a NIC), TC (a veth, where a sender's checksum
    /// offload leaves partial checksums that XDP cannot see), or auto: TC when --ext is a
    /// veth, XDP otherwise.
    #[arg(long, value_enum, default_value_t = IngressMode::Auto)]
    pub ingress: IngressMode,
    /// Redirect to VMs on veth bridge ports too. Only when each VM's end of its veth has GRO
    /// on or an XDP program: otherwise the kernel drops what is redirected to it. Without
    /// this, the kernel delivers to veth ports (taps take the redirect as they are).
    #[arg(long)]
    pub fast_path_veth: bool,
    /// Take no VM traffic at its bridge port. By default a bound VM's outbound packets are
    /// translated and sent out by a program on its port (TCX ingress), before the bridge:
    /// bridge-level filters (ebtables, nft's bridge family, libvirt's nwfilter) on that path
    /// then do not see them (eip's anti-spoofing and quarantine still apply). With this,
    /// everything goes through the bridge to its program, at a cost per packet.
    #[arg(long)]
    pub no_port_fast_path: bool,
    /// Binding capacity of the dataplane maps (fixed when the maps are first created).
    /// Below 2^31: a slot's top bit marks a limited EIP.
    #[arg(long, default_value_t = eip_common::maps::DEFAULT_MAX_BINDINGS,
          value_parser = clap::value_parser!(u32).range(1..i64::from(eip_common::maps::SLOT_LIMITED)))]
    pub max_bindings: u32,
    /// Capacity of the dataplane's VM table: one entry per reservation or lease (fixed when
    /// the maps are first created). One entry per address of the dynamic range is kept for
    /// leases; reservations past the rest are refused (hosts-file lines skipped).
    #[arg(long, default_value_t = eip_common::maps::DEFAULT_MAX_VMS)]
    pub max_vms: u32,
    /// History entries kept; the oldest go first.
    #[arg(long, value_name = "N", default_value_t = crate::store::Store::DEFAULT_HISTORY)]
    pub history_keep: u64,
    /// Do not run the DHCP server (for hosts that keep their own on the bridge).
    #[arg(long)]
    pub no_dhcp: bool,
    /// Also lease addresses from START-END (inside the bridge subnet) to MACs without a
    /// reservation; without it only reserved MACs get an address.
    #[arg(long, value_name = "START-END")]
    pub dhcp_range: Option<Range>,
    /// DNS servers to hand out (repeat or comma-separate); none unless given.
    #[arg(long, value_name = "IP", value_delimiter = ',')]
    pub dns: Vec<Ipv4Addr>,
    /// The domain name to hand out.
    #[arg(long)]
    pub domain: Option<String>,
    /// How long a lease lasts (renewal at half, rebinding at seven eighths).
    #[arg(long, default_value = "12h", value_name = "DURATION")]
    pub lease_time: humantime::Duration,
    /// The interface MTU to hand out.
    #[arg(long, value_parser = clap::value_parser!(u16).range(68..))]
    pub mtu: Option<u16>,
    /// Run `PATH add|old|del MAC IP [HOSTNAME]` on each new, renewed and ended lease.
    #[arg(long, value_name = "PATH")]
    pub lease_script: Option<PathBuf>,
}

/// How a client command ended.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Teardown(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(
                ClientError::NotRunning(_)
                | ClientError::Permission(_)
                | ClientError::Connect { .. }
                | ClientError::Timeout { .. },
            ) => 3,
            _ => 1,
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: {e}"),
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), T::to_string)
}

/// A limit as the list shows it: the rate as tc writes it, `-` for none.
fn rate(bps: Option<u64>) -> String {
    bps.map_or_else(|| "-".into(), |b| crate::rate::Rate(b).to_string())
}

fn print_rows(rows: &[EipRow]) {
    println!(
        "{:<15} {:<9} {:<15} {:<17} {:<16} {:>10} {:>12} {:>10} {:>12} {:>9} {:>9}  PATH",
        "EIP",
        "STATE",
        "PRIVATE",
        "MAC",
        "NAME",
        "IN_PKTS",
        "IN_BYTES",
        "OUT_PKTS",
        "OUT_BYTES",
        "LIMIT_IN",
        "LIMIT_OUT"
    );
    for r in rows {
        let state = match r.state {
            EipState::Allocated => "allocated",
            EipState::Bound => "bound",
        };
        println!(
            "{:<15} {:<9} {:<15} {:<17} {:<16} {:>10} {:>12} {:>10} {:>12} {:>9} {:>9}  {}",
            r.eip,
            state,
            opt(&r.private),
            opt(&r.mac),
            opt(&r.name),
            r.in_packets,
            r.in_bytes,
            r.out_packets,
            r.out_bytes,
            rate(r.limit_in_bps),
            rate(r.limit_out_bps),
            opt(&r.path)
        );
    }
}

/// What each limited EIP's limit dropped (`eip stats`).
fn print_limit_drops(rows: &[EipRow]) {
    let limited: Vec<&EipRow> = rows
        .iter()
        .filter(|r| {
            r.limit_in_bps.is_some()
                || r.limit_out_bps.is_some()
                || r.limit_dropped.in_packets + r.limit_dropped.out_packets > 0
        })
        .collect();
    if limited.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<15} {:>9} {:>9} {:>12} {:>14} {:>12} {:>14}",
        "LIMITED EIP", "IN", "OUT", "DROP_IN_PKTS", "DROP_IN_BYTES", "DROP_OUT_PKTS", "DROP_OUT_BYTES"
    );
    for r in limited {
        let d = &r.limit_dropped;
        println!(
            "{:<15} {:>9} {:>9} {:>12} {:>14} {:>12} {:>14}",
            r.eip,
            rate(r.limit_in_bps),
            rate(r.limit_out_bps),
            d.in_packets,
            d.in_bytes,
            d.out_packets,
            d.out_bytes
        );
    }
}

fn print_leases(l: &Leases) {
    let at = |secs: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
    };
    println!(
        "{:<17} {:<15} {:<16} {:<8} {:<20} LEFT",
        "MAC", "IP", "HOSTNAME", "KIND", "EXPIRES"
    );
    for r in &l.leases {
        let left = Duration::from_secs(r.lease.expires.saturating_sub(l.now));
        println!(
            "{:<17} {:<15} {:<16} {:<8} {:<20} {}",
            r.lease.mac,
            r.lease.ip,
            opt(&r.lease.hostname),
            if r.reserved { "reserved" } else { "dynamic" },
            at(r.lease.expires),
            humantime::format_duration(left)
        );
    }
    for d in &l.declined {
        println!(
            "declined: {} by {} at {} (offered again after {})",
            d.ip,
            d.mac,
            at(d.at),
            at(d.at + crate::lifecycle::DECLINE_BACKOFF)
        );
    }
}

/// Runs one client command against the daemon.
pub async fn run(socket: PathBuf, command: Command) -> Result<(), CliError> {
    let c = Client::from_env(&socket);
    let say = |d: Done| println!("{}", d.message);
    match command {
        Command::Daemon(_) => unreachable!("main runs the daemon"),
        Command::Bind {
            eip,
            target,
            no_move,
            limit,
            burst,
        } => say(c
            .post(
                "/v1/bind",
                &BindReq {
                    eip,
                    target,
                    no_move,
                    limit,
                    burst,
                },
            )
            .await?),
        Command::Limit {
            eip,
            rate,
            inbound,
            outbound,
            burst,
        } => {
            let (inbound, outbound) = match rate {
                Some(r) => (Some(r.clone()), Some(r)),
                None => (inbound, outbound),
            };
            say(c
                .post(
                    "/v1/limit",
                    &LimitReq {
                        eip,
                        inbound,
                        outbound,
                        burst,
                    },
                )
                .await?)
        }
        Command::Unbind { eip } => say(c.post("/v1/unbind", &EipReq { eip }).await?),
        Command::Alloc { eip } => say(c.post("/v1/alloc", &AllocReq { eip }).await?),
        Command::Release { eip } => say(c.post("/v1/release", &EipReq { eip }).await?),
        Command::List { json } => {
            let rows: Vec<EipRow> = c.get("/v1/eips").await?;
            if json {
                print_json(&rows)
            } else {
                print_rows(&rows)
            }
        }
        Command::Host(HostCommand::Add { mac, ip, name }) => {
            say(c.post("/v1/hosts", &HostReq { mac, ip, name }).await?)
        }
        Command::Host(HostCommand::Del { key }) => {
            say(c.delete(&format!("/v1/hosts/{}", path_segment(&key))).await?)
        }
        Command::Host(HostCommand::List { json }) => {
            let hosts: Vec<Host> = c.get("/v1/hosts").await?;
            if json {
                print_json(&hosts)
            } else {
                println!(
                    "{:<17} {:<15} {:<16} {:<6} QUARANTINED",
                    "MAC", "IP", "NAME", "SOURCE"
                );
                for h in hosts {
                    let src = format!("{:?}", h.source).to_lowercase();
                    println!(
                        "{:<17} {:<15} {:<16} {:<6} {}",
                        h.mac,
                        h.ip,
                        opt(&h.name),
                        src,
                        if h.quarantined { "yes" } else { "no" }
                    );
                }
            }
        }
        Command::Pool(PoolCommand::Add { cidr }) => say(c.post("/v1/pools", &PoolReq { cidr }).await?),
        Command::Pool(PoolCommand::Del { cidr }) => say(c
            .delete(&format!("/v1/pools/{}/{}", cidr.network(), cidr.prefix_len()))
            .await?),
        Command::Pool(PoolCommand::List { json }) => {
            let pools: Vec<PoolRow> = c.get("/v1/pools").await?;
            if json {
                print_json(&pools)
            } else {
                println!(
                    "{:<18} {:>10} {:>10} {:>10}",
                    "POOL", "USABLE", "ALLOCATED", "BOUND"
                );
                for p in pools {
                    println!(
                        "{:<18} {:>10} {:>10} {:>10}",
                        p.cidr, p.usable, p.allocated, p.bound
                    );
                }
            }
        }
        Command::Stats { json } => {
            let s: Stats = c.get("/v1/stats").await?;
            if json {
                print_json(&s)
            } else {
                print_rows(&s.eips);
                print_limit_drops(&s.eips);
                println!();
                println!("{:<24} {:>12}", "COUNTER", "PACKETS");
                for (name, v) in &s.counters {
                    println!("{name:<24} {v:>12}");
                }
                println!("{:<24} {:>12}", "port_dropped", s.port_dropped);
                println!("{:<24} {:>12}", "port_programs", s.port_programs.len());
                match s.guard_dropped {
                    Some(v) => println!("{:<24} {v:>12}", "guard_dropped"),
                    None => println!("{:<24} {:>12}", "guard_dropped", "no guard"),
                }
                if let Some(d) = &s.dhcp {
                    println!();
                    println!("{:<30} {:>12}", "DHCP", "MESSAGES");
                    let all = [
                        ("received", &d.received),
                        ("sent", &d.sent),
                        ("dropped", &d.dropped),
                    ];
                    for (what, list) in all {
                        for (name, v) in list {
                            println!("{:<30} {v:>12}", format!("{what} {name}"));
                        }
                    }
                }
            }
        }
        Command::Leases { json } => {
            let l: Leases = c.get("/v1/leases").await?;
            if json { print_json(&l) } else { print_leases(&l) }
        }
        Command::History { json, limit, before } => {
            let mut path = format!("/v1/history?limit={limit}");
            if let Some(b) = before {
                path += &format!("&before={b}");
            }
            let h: Vec<Entry> = c.get(&path).await?;
            if json {
                print_json(&h)
            } else {
                for e in h {
                    let show = |r: &[crate::store::Record]| serde_json::to_string(r).unwrap_or_default();
                    println!("{:>6} {} {}", e.seq, e.time, e.command);
                    println!("       before {}", show(&e.before));
                    println!("       after  {}", show(&e.after));
                }
            }
        }
        Command::Quarantine { target } => say(c
            .post("/v1/quarantine", &QuarantineReq { target, on: true })
            .await?),
        Command::Unquarantine { target } => say(c
            .post("/v1/quarantine", &QuarantineReq { target, on: false })
            .await?),
        Command::Teardown { instance } => teardown(&c, &socket, instance).await?,
    }
    Ok(())
}

/// A MAC or name as one URL path segment (names and MACs have no characters to escape, but a
/// stray `/` or `?` must not change the route).
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn teardown(c: &Client, socket: &std::path::Path, instance: Option<String>) -> Result<(), CliError> {
    match c.get::<Status>("/v1/status").await {
        Ok(status) if instance.as_ref().is_none_or(|i| *i == status.instance) => {
            let d: Done = c.post("/v1/shutdown", &ShutdownReq { teardown: true }).await?;
            println!("{}", d.message);
            // The daemon removes its socket last; wait for it (bounded).
            for _ in 0..100 {
                if !socket.exists() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(CliError::Teardown(format!(
                "the daemon did not stop within 10 s (its socket {} is still there)",
                socket.display()
            )))
        }
        Ok(_) | Err(ClientError::NotRunning(_)) => {
            let instance = match instance {
                Some(i) => i,
                None => crate::daemon::only_instance().map_err(CliError::Teardown)?,
            };
            let msg = crate::daemon::teardown_offline(&instance)
                .await
                .map_err(|e| CliError::Teardown(crate::api::error_chain(&*e)))?;
            println!("{msg}");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// `eip daemon --ingress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IngressMode {
    Auto,
    Xdp,
    Tc,
}
