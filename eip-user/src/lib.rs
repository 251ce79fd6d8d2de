//! eip: elastic public IPv4 addresses for the VMs of a Linux hypervisor, translated in eBPF.
//!
//! What happens to a packet lives in `eip-ebpf` (and `eip-common`'s rewrite); this crate is
//! the control side, by layer, each importing only those below it: [`cli`] and [`daemon`]
//! (the process), [`api`] (the socket) and [`dhcp`] (the bridge's DHCP server), [`engine`]
//! (store first, then kernel), [`lifecycle`] (the operator verbs, pure) and [`store`]
//! (durable state), [`kernel`] (the adapter: the effect planner, the real kernel and an
//! in-memory one), and [`model`] (plain data, imported by all). The README's Layout section
//! maps the tree.

pub mod api;
pub mod cli;
pub mod daemon;
pub mod dhcp;
pub mod engine;
pub mod kernel;
pub mod lifecycle;
pub mod model;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

/// The eBPF object built from `eip-ebpf` by build.rs, embedded in the binary.
pub static DATAPLANE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/eip-dataplane"));

/// An error and its causes on one line. A cause that a message already quotes (many say
/// "... ({source})") is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s += &format!(": {text}");
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the change is saved but the kernel refused part of it ({source})")]
    struct Outer {
        #[source]
        source: Middle,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("map update failed: {source}")]
    struct Middle {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn an_error_chain_names_each_cause_once() {
        let e = Outer {
            source: Middle {
                source: std::io::Error::other("No space left on device"),
            },
        };
        let s = error_chain(&e);
        assert_eq!(s.matches("No space left on device").count(), 1, "{s}");
        assert_eq!(s.matches("map update failed").count(), 1, "{s}");
    }
}
