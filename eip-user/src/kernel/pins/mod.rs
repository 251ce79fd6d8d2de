//! The dataplane pinned on bpffs, so it forwards while no daemon runs:
//!
//! ```text
//! /sys/fs/bpf/eip/<instance>/maps/EIP_*        every map
//! /sys/fs/bpf/eip/<instance>/progs/eip_ext_xdp  the programs
//! /sys/fs/bpf/eip/<instance>/links/xdp          XDP on the external interface (bpf_link)
//! /sys/fs/bpf/eip/<instance>/links/tc           TCX ingress on the bridge (bpf_link)
//! /sys/fs/bpf/eip/<instance>/links/tc-ext        TCX ingress on the external interface, in
//!                                                 place of xdp when that is a veth
//! /sys/fs/bpf/eip/<instance>/links/tc-ext-out    TCX egress on the external interface (the
//!                                                 host's own ICMP errors)
//! ```
//!
//! A daemon starting over existing pins reuses the maps (entries and all) and keeps the
//! attached programs when they are the embedded ones (same kernel tag). When they differ (a
//! newer `eip`), it swaps the program under each link with `BPF_LINK_UPDATE`: one atomic
//! pointer change, so no packet goes unprocessed in between. Programs are found by their pin
//! name, which is the program's name: a version that named them otherwise (before they were
//! named by attach point: `eip_ingress`, `eip_ingress_tc`, `eip_egress`, `eip_ext_egress`) has
//! its links swapped the same way and its program pins removed.

mod start;

use std::{
    collections::BTreeMap,
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap, Map, MapData},
    programs::{
        LinkOrder, ProgramInfo, TcAttachType,
        links::{FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        xdp::XdpLink,
    },
};
use eip_common::maps::{
    ALL_MAPS, Binding, MAP_DNAT, PROG_BRIDGE_IN, PROG_EXT_TC_IN, PROG_EXT_TC_OUT, PROG_EXT_XDP,
};

use crate::kernel::dataplane::{Dataplane, DataplaneError, Sizes, XdpAttachMode};

pub use crate::kernel::bpffs::BPFFS;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{path}: {what}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Bpffs(#[from] crate::kernel::bpffs::BpffsError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("{path}: {what}")]
    Aya {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("instance name {0:?} must be a single path component (letters, digits, - _ .)")]
    BadInstance(String),
}

fn io_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> PinError {
    let path = path.to_owned();
    move |source| PinError::Io { path, what, source }
}

fn aya_err<E: std::error::Error + Send + Sync + 'static>(
    path: &Path,
    what: &'static str,
) -> impl FnOnce(E) -> PinError {
    let path = path.to_owned();
    move |e| PinError::Aya {
        path,
        what,
        source: Box::new(e),
    }
}

/// How the daemon found the dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// Nothing was pinned: loaded and attached now (XDP in this mode; `None`: ingress is TC).
    Fresh(Option<XdpAttachMode>),
    /// The pinned programs are the embedded ones: kept running.
    Adopted,
    /// Older programs were pinned: replaced in place.
    Upgraded,
}

/// A program and the pin name of its link.
#[derive(Clone, Copy)]
struct Hook {
    kind: &'static str,
    link: &'static str,
    prog: &'static str,
}

const XDP: Hook = Hook {
    kind: "XDP",
    link: "xdp",
    prog: PROG_EXT_XDP,
};
const TC: Hook = Hook {
    kind: "TC",
    link: "tc",
    prog: PROG_BRIDGE_IN,
};
/// Ingress as TCX on the external interface, when that is a veth.
const TC_EXT: Hook = Hook {
    kind: "TC ingress",
    link: "tc-ext",
    prog: PROG_EXT_TC_IN,
};

/// TCX egress on the external interface: the host's own ICMP errors about translated packets.
const TC_EXT_OUT: Hook = Hook {
    kind: "TC egress",
    link: "tc-ext-out",
    prog: PROG_EXT_TC_OUT,
};

/// Every hook, whichever ingress is in use.
const HOOKS: [Hook; 4] = [XDP, TC_EXT, TC, TC_EXT_OUT];

/// What became of one pinned link.
enum Link {
    /// Attached now (XDP: in this mode).
    Attached(Option<XdpAttachMode>),
    /// Already running the embedded program.
    Kept,
    /// Swapped to the embedded program in place.
    Replaced,
}

/// The daemon's own descriptor of every object it pinned. While it holds them, removing a
/// pin detaches nothing (a link lives while anyone holds it), and [`Pins::repair`] can put
/// the pin back.
pub struct Held(Vec<(PathBuf, std::os::fd::OwnedFd)>);

/// One instance's pin directory.
#[derive(Debug, Clone)]
pub struct Pins {
    root: PathBuf,
    instance: String,
    /// Ingress runs as TC on the external interface (a veth) instead of XDP.
    ext_tc: bool,
}

impl Pins {
    pub fn new(instance: &str) -> Result<Pins, PinError> {
        let ok = !instance.is_empty()
            && instance != "."
            && instance != ".."
            && instance
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(PinError::BadInstance(instance.to_owned()));
        }
        Ok(Pins {
            root: crate::kernel::bpffs::root().join("eip").join(instance),
            instance: instance.to_owned(),
            ext_tc: false,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Runs ingress as TC on the external interface (for a veth) instead of XDP.
    pub fn set_ext_tc(&mut self, on: bool) {
        self.ext_tc = on;
    }

    pub fn ext_tc(&self) -> bool {
        self.ext_tc
    }

    /// The ingress hook in use, and the other one.
    fn ingress_hooks(&self) -> (Hook, Hook) {
        if self.ext_tc { (TC_EXT, XDP) } else { (XDP, TC_EXT) }
    }

    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    fn prog(&self, name: &str) -> PathBuf {
        self.root.join("progs").join(name)
    }

    fn link(&self, name: &str) -> PathBuf {
        self.root.join("links").join(name)
    }

    pub fn exists(&self) -> bool {
        self.root.exists()
    }

    /// Every path the instance pins.
    fn paths(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = ALL_MAPS.iter().map(|m| self.maps().join(m)).collect();
        for hook in [self.ingress_hooks().0, TC, TC_EXT_OUT] {
            out.push(self.prog(hook.prog));
            out.push(self.link(hook.link));
        }
        out
    }

    /// Opens a descriptor of every pinned object (after [`Pins::start`] or a re-attach).
    pub fn hold(&self) -> Result<Held, PinError> {
        self.paths()
            .into_iter()
            .map(|p| {
                let fd = crate::kernel::bpffs::obj_get(&p).map_err(io_err(&p, "open the pinned object"))?;
                Ok((p, fd))
            })
            .collect::<Result<_, _>>()
            .map(Held)
    }

    /// Pins again, from the descriptors in `held`, whatever pin is gone (removed by hand, or
    /// the whole directory with `rm -rf`). Returns the paths put back.
    pub fn repair(&self, held: &Held) -> Result<Vec<PathBuf>, PinError> {
        use std::os::fd::AsFd;
        let mut back = Vec::new();
        for (path, fd) in &held.0 {
            if path.exists() {
                continue;
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io_err(dir, "create the pin directory"))?;
            }
            crate::kernel::bpffs::pin_fd(fd.as_fd(), path).map_err(io_err(path, "pin again"))?;
            back.push(path.clone());
        }
        Ok(back)
    }

    /// A pinned binding map (`MAP_DNAT` or `MAP_SNAT`): key -> (address, slot).
    pub fn bindings(&self, name: &str) -> Result<BTreeMap<Ipv4Addr, (Ipv4Addr, u32)>, PinError> {
        let path = self.maps().join(name);
        let data = MapData::from_pin(&path).map_err(aya_err(&path, "open the pinned map"))?;
        let map: HashMap<MapData, u32, Binding> =
            HashMap::try_from(Map::HashMap(data)).map_err(aya_err(&path, "not a binding map"))?;
        map.iter()
            .map(|r| r.map(|(k, b)| (Ipv4Addr::from_bits(k), (Ipv4Addr::from_bits(b.addr), b.slot))))
            .collect::<Result<_, _>>()
            .map_err(aya_err(&path, "read the pinned map"))
    }

    /// Writes one entry of a pinned binding map behind the daemon's back, as `bpftool map
    /// update` would (fault tests).
    pub fn put_binding(&self, name: &str, key: Ipv4Addr, value: Binding) -> Result<(), PinError> {
        let path = self.maps().join(name);
        let data = MapData::from_pin(&path).map_err(aya_err(&path, "open the pinned map"))?;
        let mut map: HashMap<MapData, u32, Binding> =
            HashMap::try_from(Map::HashMap(data)).map_err(aya_err(&path, "not a binding map"))?;
        map.insert(key.to_bits(), value, 0)
            .map_err(aya_err(&path, "write the pinned map"))
    }

    /// The pinned anti-spoofing map: MAC -> the address it may use.
    pub fn macs(&self) -> Result<BTreeMap<[u8; 6], Ipv4Addr>, PinError> {
        let path = self.maps().join(eip_common::maps::MAP_MACS);
        let data = MapData::from_pin(&path).map_err(aya_err(&path, "open the pinned map"))?;
        let map: HashMap<MapData, eip_common::maps::MacKey, eip_common::maps::HeldAddress> =
            HashMap::try_from(Map::HashMap(data)).map_err(aya_err(&path, "not the MAC map"))?;
        map.iter()
            .map(|r| r.map(|(k, l)| (k.mac, Ipv4Addr::from_bits(l.addr))))
            .collect::<Result<_, _>>()
            .map_err(aya_err(&path, "read the pinned map"))
    }

    /// The EIPs the pinned forward map holds (for teardown without a daemon).
    pub fn bound_eips(&self) -> Result<Vec<Ipv4Addr>, PinError> {
        Ok(self.bindings(MAP_DNAT)?.into_keys().collect())
    }

    /// Unpins everything: the links go first (that detaches the programs once no process
    /// holds them), then the programs and maps. Missing pins are fine.
    pub fn remove(&self) -> Result<(), PinError> {
        for hook in [XDP, TC_EXT, TC_EXT_OUT, TC] {
            remove_if_present(&self.link(hook.link))?;
        }
        // Every program pin, an older version's under its old name included.
        let progs = self.root.join("progs");
        if let Ok(entries) = std::fs::read_dir(&progs) {
            for entry in entries.flatten() {
                remove_if_present(&entry.path())?;
            }
        }
        for name in ALL_MAPS {
            remove_if_present(&self.maps().join(name))?;
        }
        for dir in [
            self.root.join("links"),
            self.root.join("progs"),
            self.maps(),
            self.root.clone(),
        ] {
            match std::fs::remove_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err(&dir, "remove the pin directory")(e));
                }
                _ => {}
            }
        }
        // The shared eip/ directory goes with its last instance (another's keeps it).
        if let Some(parent) = self.root.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        Ok(())
    }
}

fn not_found(e: &LinkError) -> bool {
    matches!(e, LinkError::SyscallError(s) if s.io_error.kind() == io::ErrorKind::NotFound)
}

fn remove_if_present(path: &Path) -> Result<(), PinError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path, "unpin")(e)),
        _ => Ok(()),
    }
}
