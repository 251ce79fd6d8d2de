//! The server on the bridge: a UDP socket bound to the bridge device (so nothing from another
//! interface reaches it), one message at a time through the handler under the engine's lock,
//! leases committed before the answer, answers sent as frames out of the bridge only.

use std::{
    collections::HashMap,
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
};

use tokio::sync::{Mutex, watch};

use super::{
    DropReason, Settings, Stats,
    handler::{self, Offers, Verdict},
    now, wire,
};
use crate::{
    engine::{Engine, EngineError},
    kernel::{Kernel, ether::PacketSocket, netlink::Link},
    lifecycle::Change,
    model::Mac,
};

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("DHCP: cannot {what} on {iface}")]
    Socket {
        what: &'static str,
        iface: String,
        #[source]
        source: io::Error,
    },
}

fn setsockopt(fd: &OwnedFd, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    // SAFETY: the value buffer is valid for its length; the fd is open.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// UDP port 67 on `bridge` only (SO_BINDTODEVICE), any destination address: DISCOVERs come
/// to 255.255.255.255 from 0.0.0.0, renewals to the bridge's address.
pub fn listen(bridge: &str) -> Result<tokio::net::UdpSocket, DhcpError> {
    let err = |what| {
        let iface = bridge.to_owned();
        move |source| DhcpError::Socket { what, iface, source }
    };
    // SAFETY: a plain socket(2) call; the fd is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return Err(err("open a UDP socket")(io::Error::last_os_error()));
    }
    // SAFETY: raw is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &1i32.to_ne_bytes())
        .map_err(err("set SO_REUSEADDR"))?;
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, bridge.as_bytes())
        .map_err(err("bind the socket to the device"))?;
    bind(
        &fd,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, dhcproto::v4::SERVER_PORT),
    )
    .map_err(err("bind UDP port 67"))?;
    tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(fd)).map_err(err("register the socket"))
}

/// bind(2) on a socket whose options are set (std binds only while creating a socket).
fn bind(fd: &OwnedFd, addr: SocketAddrV4) -> io::Result<()> {
    // SAFETY: sockaddr_in is plain old data; zeroed is valid.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as u16;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    // SAFETY: the address is valid for its length; the fd is open.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Unknown MACs are logged once a minute each; the memory of whom was logged is bounded, so
/// a flood of random MACs costs a counter, not memory.
#[derive(Default)]
struct Quiet {
    last: HashMap<Mac, u64>,
    suppressed: u64,
}

impl Quiet {
    const CAP: usize = 4096;
    const EVERY: u64 = 60;

    fn should_log(&mut self, mac: Mac, now: u64) -> bool {
        if self.last.get(&mac).is_some_and(|t| now < t + Self::EVERY) {
            return false;
        }
        if self.last.len() >= Self::CAP {
            self.last.retain(|_, t| now < *t + Self::EVERY);
            if self.suppressed > 0 {
                tracing::warn!(
                    count = self.suppressed,
                    "DHCP: more messages from unknown MACs were not logged (too many MACs)"
                );
                self.suppressed = 0;
            }
        }
        if self.last.len() >= Self::CAP {
            self.suppressed += 1;
            return false;
        }
        self.last.insert(mac, now);
        true
    }
}

pub struct Server {
    pub settings: Settings,
    pub bridge: Link,
    pub stats: Arc<Stats>,
    socket: tokio::net::UdpSocket,
    out: PacketSocket,
    offers: Offers,
    quiet: Quiet,
}

impl Server {
    pub fn new(settings: Settings, bridge: Link, stats: Arc<Stats>) -> Result<Server, DhcpError> {
        let socket = listen(&bridge.name)?;
        let out = PacketSocket::open().map_err(|source| DhcpError::Socket {
            what: "open a packet socket",
            iface: bridge.name.clone(),
            source,
        })?;
        Ok(Server {
            settings,
            bridge,
            stats,
            socket,
            out,
            offers: Offers::default(),
            quiet: Quiet::default(),
        })
    }

    /// Serves until `stop` turns `Some`.
    pub async fn run<K: Kernel>(
        mut self,
        engine: Arc<Mutex<Engine<K>>>,
        mut stop: watch::Receiver<Option<bool>>,
    ) {
        // The largest UDP payload, so an oversized datagram is seen whole and counted.
        let mut buf = vec![0u8; 65_536];
        tracing::info!(bridge = %self.bridge.name, server = %self.settings.server, "DHCP server listening");
        let mut follow = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            // The branches only say what happened: the stop watch's guard must not live across
            // the awaits that follow.
            let got = tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, _)) => Some(n),
                    Err(e) => {
                        tracing::warn!(error = %e, "DHCP receive");
                        continue;
                    }
                },
                _ = follow.tick() => None,
                _ = stop.wait_for(Option::is_some) => break,
            };
            match got {
                Some(n) => self.one(&engine, &buf[..n]).await,
                None => self.follow_bridge(&engine).await,
            }
        }
    }

    /// A bridge created again (the daemon's upkeep has seen it) gets a socket bound to it: the
    /// old one is bound to the interface that is gone.
    async fn follow_bridge<K: Kernel>(&mut self, engine: &Mutex<Engine<K>>) {
        let Some(now) = engine.lock().await.bridge().cloned() else {
            return;
        };
        if now.index == self.bridge.index && now.mac == self.bridge.mac {
            return;
        }
        match listen(&now.name) {
            Ok(socket) => {
                tracing::info!(bridge = %now.name, ifindex = now.index, "DHCP server listening on the bridge created again");
                self.socket = socket;
                self.bridge = now;
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "DHCP: cannot listen on the new bridge yet")
            }
        }
    }

    async fn one<K: Kernel>(&mut self, engine: &Mutex<Engine<K>>, bytes: &[u8]) {
        let mut en = engine.lock().await;
        // The time of the decision, not of the datagram's arrival: a request that waited for
        // the lock (the daemon's upkeep holds it) must not store a grant time that makes the
        // client's retransmission, answered right after, look like a new renewal.
        let now = now();
        let out = handler::handle(&self.settings, en.state(), &mut self.offers, now, bytes);
        if let Some(kind) = out.kind {
            self.stats.received(kind);
        }
        if !out.writes.is_empty() {
            let change = Ok(Change {
                writes: out.writes.clone(),
                message: out.command.clone(),
            });
            match en.run(&out.command, change).await {
                // Saved; the kernel catches up by reconciliation.
                Ok(_) | Err(EngineError::Kernel { .. }) => {}
                Err(e) => {
                    tracing::error!(error = %crate::error_chain(&e), "DHCP: lease not stored; not answering");
                    self.stats.dropped(DropReason::StoreFailed);
                    return;
                }
            }
        }
        match out.verdict {
            Verdict::Answer(reply) => {
                let t = reply.msg.opts().msg_type();
                if let (Some(mac), Some(dhcproto::v4::MessageType::Ack)) = (out.mac, t)
                    && let Err(e) = en.learn_port(mac).await
                {
                    tracing::warn!(error = %crate::error_chain(&e), "bridge port lookup");
                }
                drop(en);
                let kind = match t {
                    Some(dhcproto::v4::MessageType::Offer) => "offer",
                    Some(dhcproto::v4::MessageType::Nak) => "nak",
                    _ => "ack",
                };
                let payload = wire::encode(&reply.msg);
                let sent = match reply.to {
                    wire::Dest::Relay(relay) => self
                        .socket
                        .send_to(&payload, (relay, dhcproto::v4::SERVER_PORT))
                        .await
                        .map(drop),
                    wire::Dest::Link(to) => {
                        let frame = wire::frame(self.bridge.mac, self.settings.server, to, &payload);
                        self.out.send(self.bridge.index, &frame)
                    }
                };
                match sent {
                    Ok(()) => {
                        self.stats.sent(kind);
                        tracing::debug!(kind, mac = ?out.mac, yiaddr = %reply.msg.yiaddr(), to = ?reply.to, "DHCP reply");
                    }
                    Err(e) => tracing::warn!(error = %e, kind, "DHCP: cannot send the reply"),
                }
            }
            Verdict::Quiet => {}
            Verdict::Drop(why) => {
                self.stats.dropped(why);
                match (why, out.mac) {
                    (
                        DropReason::UnknownMac | DropReason::AddressDeclined | DropReason::RangeFull,
                        Some(mac),
                    ) => {
                        if self.quiet.should_log(mac, now) {
                            tracing::warn!(%mac, reason = why.name(), "DHCP: no address for this MAC; not answering");
                        }
                    }
                    _ => tracing::debug!(mac = ?out.mac, reason = why.name(), "DHCP: dropped"),
                }
            }
        }
    }
}
