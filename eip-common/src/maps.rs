//! The BPF maps' names, sizes, keys and values: the contract between the programs and the
//! daemon. Addresses are `u32` holding the address in host order (`u32::from(Ipv4Addr)`),
//! which is what the programs read from the packet with `u32::from_be_bytes`.

/// Bindings (EIP <-> private IP) the maps hold unless told otherwise at load time.
pub const DEFAULT_MAX_BINDINGS: u32 = 65_536;
/// VMs (private IPs and MACs) the maps hold unless told otherwise.
pub const DEFAULT_MAX_VMS: u32 = 65_536;
/// Bridge ports the fast path can redirect to.
pub const MAX_PORTS: u32 = 4_096;

/// EIP -> [`Binding`] (private IP): ingress DNAT, the "forward" entry.
pub const MAP_DNAT: &str = "EIP_DNAT";
/// private IP -> [`Binding`] (EIP): egress SNAT, the "reverse" entry.
pub const MAP_SNAT: &str = "EIP_SNAT";
/// private IP -> [`Vm`]: the VM's bridge port and MAC (fast path) and its flags.
pub const MAP_VMS: &str = "EIP_VMS";
/// MAC -> [`HeldAddress`]: the address a MAC holds, leased or reserved (anti-spoofing), and
/// its flags.
pub const MAP_MACS: &str = "EIP_MACS";
/// Per-CPU [`EipStats`] indexed by [`Binding::slot`].
pub const MAP_STATS: &str = "EIP_STATS";
/// Per-CPU `u64` indexed by [`Counter`].
pub const MAP_COUNTERS: &str = "EIP_COUNTERS";
/// Bridge ports by ifindex, for `XDP_REDIRECT`.
pub const MAP_PORTS: &str = "EIP_PORTS";
/// One [`Config`] at index 0.
pub const MAP_CONFIG: &str = "EIP_CONFIG";
/// ifindex -> `u64` per CPU: frames the kernel dropped on redirecting them to that interface
/// (from the `xdp:xdp_redirect_err` tracepoint). A veth whose other end has no NAPI drops
/// every one, and no interface counter moves.
pub const MAP_PORT_DROPS: &str = "EIP_PORT_DROPS";

/// Longest-prefix-match trie of the operator's pools (key: prefix length and the network in
/// network order; value unused): ingress refuses packets from a pool's addresses, which no
/// outside host can genuinely send from.
pub const MAP_POOLS: &str = "EIP_POOLS";
/// Pools the trie holds.
pub const MAX_POOLS: u32 = 1_024;

/// The external interface's settings that came after [`Config`] (a map of its own, so that a
/// pinned [`MAP_CONFIG`] from an older version keeps its layout).
pub const MAP_UPLINK: &str = "EIP_UPLINK";

/// [`crate::limiter::Limit`] indexed by [`Binding::slot`]: each EIP's bandwidth limit both
/// ways, one value every CPU shares (slot 0, the sink, is never limited).
pub const MAP_LIMITS: &str = "EIP_LIMITS";
/// Per-CPU [`EipStats`] indexed by [`Binding::slot`]: what each EIP's limit dropped, by
/// direction (the same four counts as [`MAP_STATS`], of packets not translated).
pub const MAP_LIMIT_DROPS: &str = "EIP_LIMIT_DROPS";

/// The bridge's ifindex (a `u32` at index 0), for [`PROG_PORT_IN`]'s route lookup. Not pinned:
/// the port program runs only while a daemon runs (its links are the daemon's), so this is
/// that daemon's own, written when it starts and when the bridge is created again.
pub const MAP_BRIDGE: &str = "EIP_BRIDGE";
/// Per [`Binding::slot`], when [`PROG_PORT_IN`] last let one of the VM's packets go through the
/// bridge (ns since boot, the coarse clock), so the bridge keeps learning the VM's MAC on its
/// port. Not pinned, as [`MAP_BRIDGE`].
pub const MAP_PORT_LEARN: &str = "EIP_PORT_LEARN";
/// How often [`PROG_PORT_IN`] hands one of a VM's packets to the bridge instead of sending it
/// out itself: the bridge's forwarding database then never ages the VM's MAC out (300 s by
/// default), and the daemon keeps finding the VM's port.
pub const PORT_LEARN_NS: u64 = 1_000_000_000;

/// Every map, for pinning them all.
pub const ALL_MAPS: [&str; 13] = [
    MAP_DNAT,
    MAP_SNAT,
    MAP_VMS,
    MAP_MACS,
    MAP_STATS,
    MAP_COUNTERS,
    MAP_PORTS,
    MAP_CONFIG,
    MAP_PORT_DROPS,
    MAP_POOLS,
    MAP_UPLINK,
    MAP_LIMITS,
    MAP_LIMIT_DROPS,
];

pub const PROG_EXT_XDP: &str = "eip_ext_xdp";
/// Ingress as a TC program, for an external interface that is a veth (partial checksums).
pub const PROG_EXT_TC_IN: &str = "eip_ext_tc_in";
pub const PROG_BRIDGE_IN: &str = "eip_bridge_in";
/// TCX ingress on each VM's bridge port: `eip_bridge_in`'s fast path taken before the bridge
/// (its receive, its netfilter hook, a second pass through the stack for the bridge device).
/// Whatever it does not send out itself it leaves untouched to the bridge, where `eip_bridge_in`
/// judges it. Attached by the daemon while it runs, never pinned.
pub const PROG_PORT_IN: &str = "eip_port_in";
/// TC egress on the external interface: the host's own ICMP errors about translated packets.
pub const PROG_EXT_TC_OUT: &str = "eip_ext_tc_out";
/// The `xdp:xdp_redirect_err` tracepoint program that fills [`MAP_PORT_DROPS`].
pub const PROG_REDIR_ERR: &str = "eip_redir_err";

/// One side of a binding: the translated address and the binding's statistics slot.
///
/// Slot 0 is never given to a binding: the stats array's entry 0 is a sink, so a value whose
/// slot was left zero (or a binding being torn down) never adds to another binding's counts.
/// The slot's top bit, [`SLOT_LIMITED`], says that the EIP has a bandwidth limit: an EIP
/// without one costs the fast path a bit test on a value it has loaded anyway, not a lookup.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Binding {
    pub addr: u32,
    pub slot: u32,
}

/// [`Binding::slot`]'s top bit: the slot's entry in [`MAP_LIMITS`] is to be consulted.
/// Entries pinned by versions before limits never have it.
pub const SLOT_LIMITED: u32 = 1 << 31;

/// The index into the per-slot arrays of a [`Binding::slot`] value.
#[inline(always)]
pub const fn slot_index(slot: u32) -> u32 {
    slot & !SLOT_LIMITED
}

/// A VM seen by its private IP.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vm {
    /// The bridge port the VM sits behind; 0 when unknown, and then ingress falls back to the
    /// kernel's forwarding. A non-zero port is always in `EIP_PORTS` too (the loader writes
    /// both together), so ingress redirects to it without checking per packet.
    pub port_ifindex: u32,
    pub mac: [u8; 6],
    pub flags: u16,
}

/// The address a MAC holds, leased or reserved (`EIP_MACS`'s value): the only source it may
/// use, and the VM's flags. Not a DHCP lease, which the daemon's state keeps.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeldAddress {
    pub addr: u32,
    pub flags: u16,
    pub _pad: u16,
}

/// A MAC as a map key (8 bytes, so the key has no implicit padding).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct MacKey {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl MacKey {
    pub const fn new(mac: [u8; 6]) -> Self {
        MacKey { mac, _pad: [0; 2] }
    }
}

/// [`Vm::flags`] and [`HeldAddress::flags`]: drop everything from and to the VM except DHCP.
pub const VM_QUARANTINED: u16 = 1 << 0;
/// [`Vm::flags`] and [`HeldAddress::flags`]: do not check this VM's source addresses.
pub const VM_NO_ANTISPOOF: u16 = 1 << 1;
/// [`Vm::flags`], set by the daemon from the port (not by the state): the VM's bridge port
/// cannot be trusted to take redirected frames. A veth drops them unless its other end, the
/// VM's, has NAPI (GRO on, or an XDP program), which the host cannot see or set. Ingress
/// hands this VM's translated packets to the kernel's forwarding instead.
pub const VM_PORT_KERNEL: u16 = 1 << 8;
/// The [`Vm::flags`] the daemon derives from the port.
pub const VM_PORT_FLAGS: u16 = VM_PORT_KERNEL;

/// Per-binding counters, per CPU. Bytes are IPv4 datagram bytes (the total length field),
/// without the link-layer header.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EipStats {
    /// Translated towards the VM (ingress DNAT, or hairpin delivery).
    pub in_packets: u64,
    pub in_bytes: u64,
    /// Translated from the VM (egress SNAT).
    pub out_packets: u64,
    pub out_bytes: u64,
}

/// Global counters, per CPU: drops by reason and how packets were forwarded.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// To or from a bound address, but with a header the rewrite refuses.
    DropMalformed = 0,
    /// From a bridge port with a source address not leased to its MAC.
    DropSpoofed = 1,
    /// From or to a quarantined VM.
    DropQuarantined = 2,
    /// To or from a bound address, in a protocol other than TCP, UDP or ICMP.
    DropUntranslatable = 3,
    /// Ingress redirected straight to the VM's bridge port.
    IngressFastPath = 4,
    /// Ingress translated and passed to the kernel's forwarding.
    IngressFallback = 5,
    /// Egress translated and redirected out of the external interface.
    EgressFastPath = 6,
    /// Egress translated and passed to the kernel's forwarding.
    EgressFallback = 7,
    /// VM to another VM's EIP, translated both ways and sent back to the bridge.
    Hairpin = 8,
    /// Ingress translated and passed to the kernel, because the VM's port cannot take
    /// redirected frames ([`VM_PORT_KERNEL`]).
    IngressKernelPort = 9,
    /// To a bound EIP, with an IPv4 header whose checksum is wrong (RFC 1812 5.2.2).
    DropBadIpChecksum = 10,
    /// To a bound EIP from outside, with a source no outside host can genuinely have: the
    /// bridge subnet (the VMs' own addresses)...
    DropSrcBridgeSubnet = 11,
    /// ...an address of the EIP pools...
    DropSrcPool = 12,
    /// ...127.0.0.0/8...
    DropSrcLoopback = 13,
    /// ...0.0.0.0/8...
    DropSrcZeroNet = 14,
    /// ...224.0.0.0/4...
    DropSrcMulticast = 15,
    /// ...255.255.255.255...
    DropSrcBroadcast = 16,
    /// ...or the rest of 240.0.0.0/4.
    DropSrcReserved = 17,
    /// To a bound EIP, but VLAN-tagged on the untagged uplink: not for the EIP path, left to
    /// the kernel untouched (a tagged frame must never reach an untagged VM port).
    IngressOtherVlan = 18,
    /// To a bound EIP with a TTL that expires here. The kernel would answer it with a
    /// time-exceeded that quotes the translated header, the VM's private address; so it is
    /// dropped before any rewrite (RFC 5508 section 4 forbids the leak).
    DropTtlExpired = 19,
    /// ...answered instead (XDP) with a time-exceeded from the EIP that quotes the packet as
    /// it arrived, addressed to the EIP (at most one a millisecond per CPU; past that,
    /// [`Counter::DropTtlExpired`]).
    IngressTtlAnswered = 20,
    /// The host's own ICMP error about a packet it forwarded toward a VM (a fragmentation
    /// needed, a host unreachable, a time-exceeded), leaving the external interface: its quote
    /// named the VM's private address as destination and now names the EIP (RFC 5508
    /// section 4); an outer source in the bridge subnet becomes the EIP too.
    HostErrorTranslated = 21,
    /// An ICMP error leaving the external interface that quotes a bridge-subnet address no
    /// binding translates: dropped, a private address never leaves.
    DropPrivateQuote = 22,
    /// TC ingress: to an EIP with a TTL that expires here; translated and handed to the
    /// kernel, whose time-exceeded leaves quoting the EIP ([`Counter::HostErrorTranslated`]).
    IngressTtlToKernel = 23,
    /// From a bound VM with a TTL that expires here: left untranslated for the kernel, which
    /// answers the VM with a time-exceeded (translated, the answer would go to the EIP, an
    /// address of this host, and the VM's traceroute would never see its first hop).
    EgressTtlToKernel = 24,
    /// Toward a VM, over its EIP's inbound limit (counted per EIP too).
    DropLimitIn = 25,
    /// From a VM, over its EIP's outbound limit (counted per EIP too).
    DropLimitOut = 26,
    /// Of [`Counter::EgressFastPath`]: taken at the VM's bridge port ([`PROG_PORT_IN`]), before
    /// the bridge.
    EgressAtPort = 27,
}

impl Counter {
    pub const ALL: [Counter; 28] = [
        Counter::DropMalformed,
        Counter::DropSpoofed,
        Counter::DropQuarantined,
        Counter::DropUntranslatable,
        Counter::IngressFastPath,
        Counter::IngressFallback,
        Counter::EgressFastPath,
        Counter::EgressFallback,
        Counter::Hairpin,
        Counter::IngressKernelPort,
        Counter::DropBadIpChecksum,
        Counter::DropSrcBridgeSubnet,
        Counter::DropSrcPool,
        Counter::DropSrcLoopback,
        Counter::DropSrcZeroNet,
        Counter::DropSrcMulticast,
        Counter::DropSrcBroadcast,
        Counter::DropSrcReserved,
        Counter::IngressOtherVlan,
        Counter::DropTtlExpired,
        Counter::IngressTtlAnswered,
        Counter::HostErrorTranslated,
        Counter::DropPrivateQuote,
        Counter::IngressTtlToKernel,
        Counter::EgressTtlToKernel,
        Counter::DropLimitIn,
        Counter::DropLimitOut,
        Counter::EgressAtPort,
    ];

    /// The name operators see in `eip stats` and the metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::DropMalformed => "drop_malformed",
            Counter::DropSpoofed => "drop_spoofed",
            Counter::DropQuarantined => "drop_quarantined",
            Counter::DropUntranslatable => "drop_untranslatable",
            Counter::IngressFastPath => "ingress_fast_path",
            Counter::IngressFallback => "ingress_fallback",
            Counter::EgressFastPath => "egress_fast_path",
            Counter::EgressFallback => "egress_fallback",
            Counter::Hairpin => "hairpin",
            Counter::IngressKernelPort => "ingress_kernel_port",
            Counter::DropBadIpChecksum => "drop_bad_ip_checksum",
            Counter::DropSrcBridgeSubnet => "drop_src_bridge_subnet",
            Counter::DropSrcPool => "drop_src_pool",
            Counter::DropSrcLoopback => "drop_src_loopback",
            Counter::DropSrcZeroNet => "drop_src_zero_net",
            Counter::DropSrcMulticast => "drop_src_multicast",
            Counter::DropSrcBroadcast => "drop_src_broadcast",
            Counter::DropSrcReserved => "drop_src_reserved",
            Counter::IngressOtherVlan => "ingress_other_vlan",
            Counter::DropTtlExpired => "drop_ttl_expired",
            Counter::IngressTtlAnswered => "ingress_ttl_answered",
            Counter::HostErrorTranslated => "host_error_translated",
            Counter::DropPrivateQuote => "drop_private_quote",
            Counter::IngressTtlToKernel => "ingress_ttl_to_kernel",
            Counter::EgressTtlToKernel => "egress_ttl_to_kernel",
            Counter::DropLimitIn => "drop_limit_in",
            Counter::DropLimitOut => "drop_limit_out",
            Counter::EgressAtPort => "egress_at_port",
        }
    }
}

/// Entries in the counters array (room to add reasons without resizing pinned maps).
pub const COUNTERS_LEN: u32 = 32;

/// The dataplane's settings, written by the loader.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// The bridge's MAC: the source of frames the fast path sends to VMs.
    pub bridge_mac: [u8; 6],
    pub flags: u16,
    /// The VMs' subnet (the bridge's own address and prefix). A VM's traffic to it, the
    /// gateway included, is never translated: the host or VM answering must see the VM's own
    /// address, or its reply would go to the EIP and stay on the host.
    pub private_net: u32,
    pub private_mask: u32,
}

impl Config {
    #[inline(always)]
    pub const fn is_private(&self, addr: u32) -> bool {
        self.private_mask != 0 && addr & self.private_mask == self.private_net
    }
}

/// [`MAP_UPLINK`]'s one entry.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Uplink {
    /// `--ext-vlan`: the 802.1Q VLAN the EIPs' network is on the external interface (the tag
    /// is taken off toward the VMs); 0 when that network is the untagged one.
    pub vlan: u16,
    pub _reserved: [u8; 6],
}

impl Uplink {
    /// Whether a frame is on the EIPs' network: `tagged`, with the tag's TCI `tci` (its low
    /// 12 bits the VLAN ID), or untagged.
    #[inline(always)]
    pub const fn on_vlan(&self, tagged: bool, tci: u16) -> bool {
        if tagged {
            self.vlan != 0 && tci & 0x0fff == self.vlan
        } else {
            self.vlan == 0
        }
    }
}

/// The fixed classes of source addresses no host outside can genuinely send from (RFC 1122
/// 3.2.1.3, RFC 1812 5.3.7): loopback, "this network", multicast, the limited broadcast and
/// the reserved 240.0.0.0/4. The bridge subnet and the pools are the daemon's, checked apart.
#[inline(always)]
pub const fn bogus_source(src: u32) -> Option<Counter> {
    match (src >> 24) as u8 {
        _ if src == u32::MAX => Some(Counter::DropSrcBroadcast),
        0 => Some(Counter::DropSrcZeroNet),
        127 => Some(Counter::DropSrcLoopback),
        224..=239 => Some(Counter::DropSrcMulticast),
        240..=255 => Some(Counter::DropSrcReserved),
        _ => None,
    }
}

/// [`Config::flags`]: check VMs' source addresses against their leases.
pub const CONFIG_ANTISPOOF: u16 = 1 << 0;
/// [`Config::flags`]: never redirect; always hand translated packets to the kernel.
pub const CONFIG_NO_FAST_PATH: u16 = 1 << 1;
/// [`Config::flags`]: let packets from outside with any source reach the VMs
/// (`--no-source-filter`, for setups where the bridge subnet or a pool is also routed
/// outside).
pub const CONFIG_NO_SOURCE_FILTER: u16 = 1 << 2;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, and have no padding bytes that could leak
    // uninitialised memory: every field is spelled out, padding included.
    unsafe impl aya::Pod for super::Binding {}
    unsafe impl aya::Pod for super::Vm {}
    unsafe impl aya::Pod for super::HeldAddress {}
    unsafe impl aya::Pod for super::MacKey {}
    unsafe impl aya::Pod for super::EipStats {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Uplink {}
    unsafe impl aya::Pod for crate::limiter::Limit {}
}
