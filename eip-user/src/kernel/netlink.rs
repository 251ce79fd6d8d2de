//! The daemon's netlink work: interface facts, the EIP aliases, and where a MAC sits on the
//! bridge.
//!
//! Aliases are /32 addresses tagged with their own address protocol ([`ALIAS_PROTO`], the
//! kernel's IFA_PROTO since 6.3), so the daemon recognises its own and never touches the
//! other addresses of the interface.

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
};

use futures::TryStreamExt;
use rtnetlink::{
    Handle,
    packet_route::{
        AddressFamily,
        address::{AddressAttribute, AddressMessage, AddressProtocol},
        link::LinkAttribute,
        neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourState},
    },
};

/// The address protocol that marks an alias as this daemon's ("eip" has no registry; 0xe1 is
/// outside the kernel's and iproute2's reserved values).
pub const ALIAS_PROTO: u8 = 0xe1;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("interface {0} does not exist")]
    NoInterface(String),
    #[error("interface {0} has no IPv4 address (the bridge's address gives the private subnet and gateway)")]
    NoAddress(String),
    #[error("netlink: {what}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
}

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

/// One interface as the daemon needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a route-netlink socket in the calling thread's network namespace; its reader
    /// runs as a task on the current Tokio runtime.
    pub fn new() -> Result<Netlink, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Whether interface `index` is a veth (`None`: no such interface).
    pub async fn is_veth(&self, index: u32) -> Result<Option<bool>, NetlinkError> {
        use rtnetlink::packet_route::link::{InfoKind, LinkInfo};
        let mut links = self.handle.link().get().match_index(index).execute();
        let msg = match links.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => return Ok(None),
            Err(e) => return Err(req(format!("look up ifindex {index}"))(e)),
        };
        Ok(Some(msg.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::LinkInfo(infos)
                if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
        })))
    }

    /// Whether the bridge `index` filters by VLAN (`vlan_filtering 1`): its ports then carry
    /// VLANs of their own, which the bridge judges before the bridge device sees a frame.
    pub async fn bridge_vlan_filtering(&self, index: u32) -> Result<bool, NetlinkError> {
        use rtnetlink::packet_route::link::{InfoBridge, InfoData, LinkInfo};
        let mut links = self.handle.link().get().match_index(index).execute();
        let msg = links
            .try_next()
            .await
            .map_err(req(format!("look up ifindex {index}")))?
            .ok_or_else(|| NetlinkError::NoInterface(format!("ifindex {index}")))?;
        Ok(msg.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::LinkInfo(infos) if infos.iter().any(|i| {
                matches!(i, LinkInfo::Data(InfoData::Bridge(b)) if b.contains(&InfoBridge::VlanFiltering(true)))
            }))
        }))
    }

    /// The 802.1Q VLAN interface with ID `vid` on top of the interface `parent`, if any.
    pub async fn vlan_on(&self, parent: u32, vid: u16) -> Result<Option<Link>, NetlinkError> {
        use rtnetlink::packet_route::link::{InfoData, InfoVlan, LinkInfo};
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links.try_next().await.map_err(req("list interfaces"))? {
            let on_parent = msg
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Link(i) if *i == parent));
            let has_vid = msg.attributes.iter().any(|a| {
                matches!(a, LinkAttribute::LinkInfo(infos) if infos.iter().any(|i| {
                    matches!(i, LinkInfo::Data(InfoData::Vlan(v)) if v.contains(&InfoVlan::Id(vid)))
                }))
            });
            if !(on_parent && has_vid) {
                continue;
            }
            let name = msg.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            if let Some(name) = name {
                return self.link_opt(&name).await;
            }
        }
        Ok(None)
    }

    /// The interface `name`, or `None` when there is none.
    pub async fn link_opt(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        match self.link(name).await {
            Ok(l) => Ok(Some(l)),
            Err(NetlinkError::NoInterface(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn link(&self, name: &str) -> Result<Link, NetlinkError> {
        let mut links = self.handle.link().get().match_name(name.to_owned()).execute();
        let msg = match links.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(NetlinkError::NoInterface(name.to_owned())),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                return Err(NetlinkError::NoInterface(name.to_owned()));
            }
            Err(e) => return Err(req(format!("look up {name}"))(e)),
        };
        let mut mac = [0u8; 6];
        for a in &msg.attributes {
            if let LinkAttribute::Address(bytes) = a
                && bytes.len() == 6
            {
                mac.copy_from_slice(bytes);
            }
        }
        Ok(Link {
            name: name.to_owned(),
            index: msg.header.index,
            mac,
        })
    }

    async fn ipv4_addresses(&self, index: u32) -> Result<Vec<(AddressMessage, Ipv4Addr)>, NetlinkError> {
        let mut out = Vec::new();
        let mut msgs = self.handle.address().get().set_link_index_filter(index).execute();
        while let Some(m) = msgs
            .try_next()
            .await
            .map_err(req(format!("list addresses of ifindex {index}")))?
        {
            if m.header.index != index || m.header.family != AddressFamily::Inet {
                continue;
            }
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(std::net::IpAddr::V4(a)) => Some(*a),
                _ => None,
            });
            let addr = addr.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(std::net::IpAddr::V4(a)) => Some(*a),
                    _ => None,
                })
            });
            if let Some(a) = addr {
                out.push((m, a));
            }
        }
        Ok(out)
    }

    /// The interface's first IPv4 address that is not one of our aliases, with its prefix.
    pub async fn ipv4_net(&self, link: &Link) -> Result<ipnet::Ipv4Net, NetlinkError> {
        self.ipv4_addresses(link.index)
            .await?
            .into_iter()
            .find(|(m, _)| !is_alias(m))
            .and_then(|(m, a)| ipnet::Ipv4Net::new(a, m.header.prefix_len).ok())
            .ok_or_else(|| NetlinkError::NoAddress(link.name.clone()))
    }

    /// The aliases this daemon put on the interface.
    pub async fn aliases(&self, index: u32) -> Result<BTreeSet<Ipv4Addr>, NetlinkError> {
        Ok(self
            .ipv4_addresses(index)
            .await?
            .into_iter()
            .filter(|(m, _)| is_alias(m))
            .map(|(_, a)| a)
            .collect())
    }

    /// Every IPv4 address of every interface, with its prefix, this daemon's aliases left out.
    pub async fn host_nets(&self) -> Result<Vec<ipnet::Ipv4Net>, NetlinkError> {
        let mut out = Vec::new();
        let mut msgs = self.handle.address().get().execute();
        while let Some(m) = msgs.try_next().await.map_err(req("list addresses"))? {
            if is_alias(&m) {
                continue;
            }
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(std::net::IpAddr::V4(a))
                | AddressAttribute::Address(std::net::IpAddr::V4(a)) => Some(*a),
                _ => None,
            });
            if let Some(a) = local
                && let Ok(net) = ipnet::Ipv4Net::new(a, m.header.prefix_len)
            {
                out.push(net);
            }
        }
        Ok(out)
    }

    pub async fn add_alias(&self, index: u32, addr: Ipv4Addr) -> Result<(), NetlinkError> {
        let mut r = self.handle.address().add(index, addr.into(), 32);
        r.message_mut()
            .attributes
            .push(AddressAttribute::Protocol(AddressProtocol::Other(ALIAS_PROTO)));
        match r.execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {
                // The operator has this address configured already: ARP is answered either
                // way, and it stays theirs.
                tracing::warn!(%addr, "the EIP is already an address of the external interface");
                Ok(())
            }
            r => r.map_err(req(format!("add alias {addr}/32"))),
        }
    }

    pub async fn del_alias(&self, index: u32, addr: Ipv4Addr) -> Result<(), NetlinkError> {
        for (m, a) in self.ipv4_addresses(index).await? {
            if a == addr && is_alias(&m) {
                match self.handle.address().del(m).execute().await {
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {}
                    r => r.map_err(req(format!("delete alias {addr}/32")))?,
                }
            }
        }
        Ok(())
    }

    /// Removes this daemon's aliases of `addrs` from every interface (teardown without a
    /// daemon, which does not know the external interface). Returns how many went.
    pub async fn del_aliases_anywhere(&self, addrs: &[Ipv4Addr]) -> Result<usize, NetlinkError> {
        let addrs: std::collections::HashSet<Ipv4Addr> = addrs.iter().copied().collect();
        let mut mine = Vec::new();
        let mut msgs = self.handle.address().get().execute();
        while let Some(m) = msgs.try_next().await.map_err(req("list addresses"))? {
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(std::net::IpAddr::V4(a)) => Some(*a),
                _ => None,
            });
            if is_alias(&m) && local.is_some_and(|a| addrs.contains(&a)) {
                mine.push(m);
            }
        }
        let n = mine.len();
        for m in mine {
            self.handle
                .address()
                .del(m)
                .execute()
                .await
                .map_err(req("delete an alias"))?;
        }
        Ok(n)
    }

    /// Where each MAC was last seen on the bridge: its forwarding database, MAC -> port.
    pub async fn fdb(&self, bridge: u32) -> Result<HashMap<[u8; 6], u32>, NetlinkError> {
        let mut out = HashMap::new();
        let mut msgs = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        while let Some(m) = msgs.try_next().await.map_err(req("dump the bridge FDB"))? {
            // Entries of the bridge device itself and the ports' own (permanent) addresses are
            // not VMs.
            if m.header.flags.contains(NeighbourFlags::Own)
                || m.header.ifindex == bridge
                || m.header.state == NeighbourState::Permanent
            {
                continue;
            }
            let mut on_bridge = false;
            let mut mac = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Controller(c) => on_bridge = *c == bridge,
                    NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                        mac = <[u8; 6]>::try_from(&l[..]).ok();
                    }
                    _ => {}
                }
            }
            if let (true, Some(mac)) = (on_bridge, mac) {
                out.insert(mac, m.header.ifindex);
            }
        }
        Ok(out)
    }
}

fn is_alias(m: &AddressMessage) -> bool {
    m.header.prefix_len == 32
        && m.attributes
            .contains(&AddressAttribute::Protocol(AddressProtocol::Other(ALIAS_PROTO)))
}
