//! eip: elastic public IPv4 addresses for the VMs of a Linux hypervisor, translated in eBPF.
//!
//! What happens to a packet lives in `eip-ebpf` (and `eip-common`'s rewrite); this crate is
//! the control side: [`lifecycle`] (the operator verbs, pure), [`store`] (durable state),
//! [`engine`] (store, then kernel), [`kernel`] (the adapter and reconciliation), [`live`] (the
//! real kernel: pinned dataplane, [`netlink`], [`garp`]), [`dhcp`] (the DHCP server on the
//! bridge), [`api`] and [`client`] (the socket), [`cli`] and [`daemon`].

pub mod api;
pub mod bpffs;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod dataplane;
pub mod dhcp;
pub mod engine;
pub mod ether;
pub mod garp;
pub mod guard;
pub mod hosts_follow;
pub mod hostsfile;
pub mod kernel;
pub mod lifecycle;
pub mod live;
pub mod metrics;
pub mod netlink;
pub mod pins;
pub mod rate;
pub mod serve;
pub mod state;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

/// The eBPF object built from `eip-ebpf` by build.rs, embedded in the binary.
pub static DATAPLANE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/eip-dataplane"));
