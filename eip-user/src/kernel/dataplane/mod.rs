//! The dataplane as userspace sees it: the embedded programs loaded with the map sizes asked
//! for, and typed access to their maps.

mod maps;
pub mod update;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{
        Array, DevMapHash, HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{ProgramError, SchedClassifier, TcAttachType, TracePoint, Xdp, XdpMode, tc, xdp::XdpLinkId},
};
use eip_common::{limiter::Limit, maps::*};

use crate::model::fmt_mac;
pub use update::{BindingMaps, MapOp, UpdateError, bind_ops, execute, unbind_ops};

/// How XDP runs on the external interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// In the driver, before an skb exists: the fast one.
    Native,
    /// In the stack (the driver has no XDP support).
    Generic,
}

/// Map sizes, chosen at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub bindings: u32,
    pub vms: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            bindings: DEFAULT_MAX_BINDINGS,
            vms: DEFAULT_MAX_VMS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("cannot load the eBPF object (sizes {sizes:?})")]
    Load {
        sizes: Sizes,
        #[source]
        source: Box<EbpfError>,
    },
    #[error("program {name} is missing from the eBPF object")]
    MissingProgram { name: &'static str },
    #[error("the kernel refused program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("map {name} is missing from the eBPF object")]
    MissingMap { name: &'static str },
    #[error("map {name} of the eBPF object is not a hash map")]
    NotAHashMap { name: &'static str },
    #[error("cannot attach {name} to {iface}")]
    Attach {
        name: &'static str,
        iface: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("bridge port {ifindex}: {reason}")]
    Port { ifindex: u32, reason: String },
    #[error("map {name}: {what}")]
    Map {
        name: &'static str,
        what: String,
        #[source]
        source: Box<MapError>,
    },
}

fn map_err(name: &'static str, what: impl Into<String>) -> impl FnOnce(MapError) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Map {
        name,
        what,
        source: Box::new(source),
    }
}

/// The loaded (not necessarily attached) programs and their maps.
pub struct Dataplane {
    ebpf: Ebpf,
}

impl Dataplane {
    /// Loads the embedded object and both programs into the kernel (the verifier runs here).
    pub fn load(sizes: Sizes) -> Result<Self, DataplaneError> {
        Self::load_with(sizes, None)
    }

    /// As [`Dataplane::load`], with every map pinned in `maps_dir` under its own name: a map
    /// already pinned there is reused (with its entries and its size), the others are created
    /// and pinned.
    pub fn load_with(sizes: Sizes, maps_dir: Option<&std::path::Path>) -> Result<Self, DataplaneError> {
        let mut loader = EbpfLoader::new();
        if let Some(dir) = maps_dir {
            for name in ALL_MAPS {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        loader
            .map_max_entries(MAP_DNAT, sizes.bindings)
            .map_max_entries(MAP_SNAT, sizes.bindings)
            // Slot 0 is the sink (see Binding::slot), so one more than the bindings.
            .map_max_entries(MAP_STATS, sizes.bindings + 1)
            .map_max_entries(MAP_LIMITS, sizes.bindings + 1)
            .map_max_entries(MAP_LIMIT_DROPS, sizes.bindings + 1)
            .map_max_entries(MAP_PORT_LEARN, sizes.bindings + 1)
            .map_max_entries(MAP_VMS, sizes.vms)
            .map_max_entries(MAP_MACS, sizes.vms);
        let ebpf = loader
            .load(crate::DATAPLANE_OBJECT)
            .map_err(|source| DataplaneError::Load {
                sizes,
                source: Box::new(source),
            })?;
        let mut dp = Dataplane { ebpf };
        dp.ext_xdp()?.load().map_err(|source| DataplaneError::Program {
            name: PROG_EXT_XDP,
            source: Box::new(source),
        })?;
        dp.bridge_in()?.load().map_err(|source| DataplaneError::Program {
            name: PROG_BRIDGE_IN,
            source: Box::new(source),
        })?;
        dp.ext_tc_in()?.load().map_err(|source| DataplaneError::Program {
            name: PROG_EXT_TC_IN,
            source: Box::new(source),
        })?;
        dp.ext_tc_out()?
            .load()
            .map_err(|source| DataplaneError::Program {
                name: PROG_EXT_TC_OUT,
                source: Box::new(source),
            })?;
        dp.classifier(PROG_PORT_IN)?
            .load()
            .map_err(|source| DataplaneError::Program {
                name: PROG_PORT_IN,
                source: Box::new(source),
            })?;
        dp.redir_err_prog()?
            .load()
            .map_err(|source| DataplaneError::Program {
                name: PROG_REDIR_ERR,
                source: Box::new(source),
            })?;
        Ok(dp)
    }

    /// Attaches XDP to `ext`: native where the driver supports it, generic otherwise.
    pub fn attach_xdp(&mut self, ext: &str) -> Result<(XdpAttachMode, XdpLinkId), DataplaneError> {
        let xdp = self.ext_xdp()?;
        let attached = match xdp.attach(ext, XdpMode::Driver) {
            Ok(id) => (XdpAttachMode::Native, id),
            Err(native) => {
                tracing::warn!(iface = ext, error = %native, "native XDP refused, using generic XDP (slower)");
                let id = xdp
                    .attach(ext, XdpMode::Skb)
                    .map_err(|source| DataplaneError::Attach {
                        name: PROG_EXT_XDP,
                        iface: ext.to_owned(),
                        source: Box::new(source),
                    })?;
                (XdpAttachMode::Generic, id)
            }
        };
        tracing::info!(iface = ext, mode = ?attached.0, "attached {PROG_EXT_XDP}");
        Ok(attached)
    }

    /// The sizes of the maps as the kernel holds them: a map reused from its pin keeps the
    /// size it was created with, whatever this load asked for.
    pub fn capacity(&self) -> Result<Sizes, DataplaneError> {
        let max_entries =
            |name: &'static str| match self.ebpf.map(name).ok_or(DataplaneError::MissingMap { name })? {
                aya::maps::Map::HashMap(data) => data
                    .info()
                    .map(|i| i.max_entries())
                    .map_err(map_err(name, "read its size")),
                _ => Err(DataplaneError::NotAHashMap { name }),
            };
        Ok(Sizes {
            bindings: max_entries(MAP_DNAT)?,
            vms: max_entries(MAP_VMS)?,
        })
    }

    /// A program by name, whatever its type (to pin it, or read its kernel info).
    pub fn program(&mut self, name: &'static str) -> Result<&mut aya::programs::Program, DataplaneError> {
        self.ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingProgram { name })
    }

    pub fn ext_xdp(&mut self) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut(PROG_EXT_XDP)
            .and_then(|p| p.try_into().ok())
            .ok_or(DataplaneError::MissingProgram { name: PROG_EXT_XDP })
    }

    pub fn bridge_in(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        self.classifier(PROG_BRIDGE_IN)
    }

    /// Ingress as TC (for a veth as the external interface).
    pub fn ext_tc_in(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        self.classifier(PROG_EXT_TC_IN)
    }

    /// TC egress on the external interface: the host's own ICMP errors about translated
    /// packets.
    pub fn ext_tc_out(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        self.classifier(PROG_EXT_TC_OUT)
    }

    /// A TC program by name.
    pub fn classifier(&mut self, name: &'static str) -> Result<&mut SchedClassifier, DataplaneError> {
        self.ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(DataplaneError::MissingProgram { name })
    }

    fn hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>, DataplaneError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap { name })?;
        HashMap::try_from(map).map_err(map_err(name, "not a hash map of the expected types"))
    }

    fn hash_ref<K: aya::Pod, V: aya::Pod>(
        &self,
        name: &'static str,
    ) -> Result<HashMap<&MapData, K, V>, DataplaneError> {
        let map = self.ebpf.map(name).ok_or(DataplaneError::MissingMap { name })?;
        HashMap::try_from(map).map_err(map_err(name, "not a hash map of the expected types"))
    }
}

/// The name of the interface `ifindex` (in this network namespace), if there is one.
fn iface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}
