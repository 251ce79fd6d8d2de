//! `eip daemon`'s flags: the interfaces, the sizes, DHCP, and the switches.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use clap::Args;
use ipnet::Ipv4Net;

use super::DaemonError;
use crate::{dhcp, lifecycle, model::Range};

/// Where the store lives unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/eip";

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

/// `eip daemon --ingress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IngressMode {
    Auto,
    Xdp,
    Tc,
}

/// The DHCP server's settings from the command line, checked against the bridge's subnet;
/// `None` with `--no-dhcp`.
pub(super) fn dhcp_settings(
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
