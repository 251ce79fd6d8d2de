//! Pool arithmetic: which addresses of a pool can be EIPs.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The addresses of a pool that can be handed out: all of them, but the network and broadcast
/// addresses of a pool wider than /31 (a routed block's first and last address are often
/// unusable upstream, and an on-link one's always are).
pub fn usable(net: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    // ipnet's `hosts` is exactly this rule.
    net.hosts()
}

/// Whether `addr` is one of [`usable`]'s addresses, without walking the pool.
pub fn is_usable(net: Ipv4Net, addr: Ipv4Addr) -> bool {
    net.contains(&addr) && (net.prefix_len() >= 31 || (addr != net.network() && addr != net.broadcast()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_addresses_skip_network_and_broadcast() {
        let net: Ipv4Net = "203.0.113.0/30".parse().unwrap();
        let v: Vec<_> = usable(net).collect();
        assert_eq!(
            v,
            [
                "203.0.113.1".parse::<Ipv4Addr>().unwrap(),
                "203.0.113.2".parse().unwrap()
            ]
        );
        let one: Ipv4Net = "203.0.113.7/32".parse().unwrap();
        assert_eq!(
            usable(one).collect::<Vec<_>>(),
            ["203.0.113.7".parse::<Ipv4Addr>().unwrap()]
        );
        for net in [
            net,
            one,
            "203.0.113.6/31".parse().unwrap(),
            "203.0.113.0/24".parse().unwrap(),
        ] {
            for last in 0..=255u8 {
                let a = Ipv4Addr::new(203, 0, 113, last);
                assert_eq!(is_usable(net, a), usable(net).any(|u| u == a), "{net} {a}");
            }
        }
    }
}
