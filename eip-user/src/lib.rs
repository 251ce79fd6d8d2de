//! The eip daemon and command line.

pub mod dataplane;
#[cfg(feature = "testing")]
pub mod testing;

/// The eBPF object built by build.rs from the `eip-ebpf` crate.
pub static DATAPLANE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/eip-dataplane"));
