//! The host's settings the dataplane needs (sysctls, the uplink's VLAN offload), set at
//! the daemon's start.

use super::KernelError;

/// The host settings routing and the egress fallback need (see the README's Dataplane
/// section): forwarding on, and `accept_local` on the bridge, since the fallback hands the
/// kernel packets whose source is already the EIP, an address of the host.
pub fn host_settings(bridge: &str) -> Result<(), KernelError> {
    for (key, value) in [
        ("/proc/sys/net/ipv4/ip_forward".to_owned(), "1"),
        (format!("/proc/sys/net/ipv4/conf/{bridge}/accept_local"), "1"),
    ] {
        let sysctl = |source| KernelError::Sysctl {
            key: key.clone(),
            source,
        };
        let now = std::fs::read_to_string(&key).map_err(sysctl)?;
        if now.trim() != value {
            std::fs::write(&key, value).map_err(sysctl)?;
            tracing::info!(sysctl = %key, value, "set");
        }
    }
    Ok(())
}

/// The uplink's settings the XDP ingress needs: the NIC's VLAN receive offload off, so that
/// an 802.1Q tag stays in the frame where XDP sees it. A NIC that strips tags into its
/// descriptors hands XDP tagged frames that look untagged: without `--ext-vlan` they would
/// take the EIP path, with it they never would. TC sees the tag either way (in the skb).
/// Best effort: a driver without the setting has nothing to strip.
pub fn uplink_settings(ext: &str, tc: bool) {
    if tc {
        return;
    }
    match rx_vlan_offload_off(ext) {
        Ok(true) => tracing::info!(
            iface = ext,
            "VLAN receive offload turned off: XDP sees 802.1Q tags"
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(iface = ext, error = %e, "could not turn VLAN receive offload off: if the NIC strips 802.1Q tags, XDP takes tagged frames for untagged ones")
        }
    }
}

/// ETHTOOL_SFLAGS without ETH_FLAG_RXVLAN (the kernel maps it to NETIF_F_HW_VLAN_CTAG_RX).
/// Returns whether it was on.
fn rx_vlan_offload_off(ext: &str) -> std::io::Result<bool> {
    const ETHTOOL_GFLAGS: u32 = 0x25;
    const ETHTOOL_SFLAGS: u32 = 0x26;
    const ETH_FLAG_RXVLAN: u32 = 1 << 8;
    // SAFETY: a datagram socket for the ioctl, closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned here alone.
    let _fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let flags = ethtool_value(fd, ext, ETHTOOL_GFLAGS, 0)?;
    if flags & ETH_FLAG_RXVLAN == 0 {
        return Ok(false);
    }
    ethtool_value(fd, ext, ETHTOOL_SFLAGS, flags & !ETH_FLAG_RXVLAN)?;
    Ok(true)
}

/// One SIOCETHTOOL call with a `struct ethtool_value`; returns its `data` after the call.
fn ethtool_value(fd: libc::c_int, iface: &str, cmd: u32, data: u32) -> std::io::Result<u32> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue { cmd, data };
    // SAFETY: ifreq is plain data; all-zero is a valid start.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = iface.as_bytes();
    if name.len() >= ifr.ifr_name.len() || name.contains(&0) {
        return Err(std::io::Error::other("not an interface name"));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: SIOCETHTOOL with an ifreq naming the interface and pointing at `value`, which
    // outlives the call.
    if unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut ifr as *mut libc::ifreq) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value.data)
}
