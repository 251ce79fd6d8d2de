//! The control plane's test world, as the lifecycle's and the DHCP handler's unit tests and
//! the engine's property test share it: the bridge subnet 192.168.6.0/24 with its gateway
//! .22, VMs' MACs 52:54:00:00:00:n, and a small binding capacity that runs out in a test.

use std::net::Ipv4Addr;

use crate::{lifecycle::Limits, lifecycle::Target, model::Mac};

/// An address written out; panics on a typo.
pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("an IPv4 address")
}

/// VM `n`'s MAC: 52:54:00:00:00:`n`.
pub fn mac(n: u8) -> Mac {
    Mac([0x52, 0x54, 0, 0, 0, n])
}

/// The bridge subnet 192.168.6.0/24 (gateway .22), 8 bindings, 1,024 VM entries, no
/// dynamic range.
pub fn limits() -> Limits {
    Limits {
        private: "192.168.6.0/24".parse().expect("a CIDR"),
        gateway: ip("192.168.6.22"),
        max_bindings: 8,
        max_vms: 1024,
        dynamic: None,
    }
}

/// A VM by its reservation's name.
pub fn name(n: &str) -> Target {
    Target::Name(n.into())
}
