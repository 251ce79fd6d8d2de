//! Typed access to the dataplane's maps: configuration, VMs and their ports, bindings,
//! limits, pools and counters.

use super::*;

impl Dataplane {
    pub fn set_config(&mut self, config: &Config) -> Result<(), DataplaneError> {
        self.set_single(MAP_CONFIG, config)
    }

    /// The external interface's settings (`--ext-vlan`).
    pub fn set_uplink(&mut self, uplink: &Uplink) -> Result<(), DataplaneError> {
        self.set_single(MAP_UPLINK, uplink)
    }

    /// The bridge's ifindex, which `eip_port_in` looks routes up as (see [`MAP_BRIDGE`]).
    pub fn set_bridge_ifindex(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        self.set_single(MAP_BRIDGE, &ifindex)
    }

    /// Attaches `eip_port_in` (TCX ingress, after whatever else is there) to the bridge port
    /// `ifindex`. It stays attached while the returned link lives (it is never pinned: it is
    /// the running daemon's accelerator, and without it the bridge's program does the same).
    pub fn attach_port(&mut self, ifindex: u32) -> Result<tc::SchedClassifierLink, DataplaneError> {
        let iface = iface_name(ifindex).ok_or_else(|| DataplaneError::Port {
            ifindex,
            reason: "no such interface".into(),
        })?;
        let attach = |source| DataplaneError::Attach {
            name: PROG_PORT_IN,
            iface: iface.clone(),
            source: Box::new(source),
        };
        let prog = self.classifier(PROG_PORT_IN)?;
        let id = prog
            .attach_with_options(
                &iface,
                TcAttachType::Ingress,
                tc::TcAttachOptions::TcxOrder(aya::programs::LinkOrder::default()),
            )
            .map_err(attach)?;
        prog.take_link(id).map_err(attach)
    }

    /// Marks every binding's slot below `slots` as having handed a packet to the bridge
    /// `ago` before now (`CLOCK_MONOTONIC_COARSE`, the programs' clock): with a short `ago`,
    /// `eip_port_in` hands the next one on only a second later; with one over a second, at once.
    /// For tests of its decisions.
    #[doc(hidden)]
    pub fn set_port_learned(&mut self, slots: u32, ago: std::time::Duration) -> Result<(), DataplaneError> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec to write to.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        let now = (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64;
        let at = now.wrapping_sub(ago.as_nanos() as u64);
        let map = self
            .ebpf
            .map_mut(MAP_PORT_LEARN)
            .ok_or(DataplaneError::MissingMap { name: MAP_PORT_LEARN })?;
        let mut array: Array<_, u64> =
            Array::try_from(map).map_err(map_err(MAP_PORT_LEARN, "not an array"))?;
        for slot in 0..slots.min(array.len()) {
            array.set(slot, at, 0).map_err(map_err(MAP_PORT_LEARN, "write"))?;
        }
        Ok(())
    }

    /// `eip_port_in`, the fast path at a VM's bridge port.
    pub fn port_in(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        self.classifier(PROG_PORT_IN)
    }

    /// Writes the one entry of the array map `name`.
    pub(super) fn set_single<T: aya::Pod>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), DataplaneError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap { name })?;
        let mut array: Array<_, T> = Array::try_from(map).map_err(map_err(name, "not an array"))?;
        array.set(0, value, 0).map_err(map_err(name, "write"))
    }

    /// A VM as both programs see it: its private address, MAC, bridge port (0 when not known
    /// yet) and flags (`VM_QUARANTINED`, `VM_NO_ANTISPOOF`). One call writes the port into the
    /// devmap, the private address's entry (ingress: fast path, quarantine) and the MAC's
    /// (egress: anti-spoofing, quarantine), so the two programs never disagree on a VM's flags
    /// and ingress can redirect to any port a VM names without checking it per packet.
    ///
    /// The kernel resolves `port_ifindex` in the calling thread's network namespace, which
    /// must be the dataplane's.
    pub fn set_vm(
        &mut self,
        private: Ipv4Addr,
        mac: [u8; 6],
        port_ifindex: u32,
        flags: u16,
    ) -> Result<(), DataplaneError> {
        if port_ifindex != 0 {
            self.add_port(port_ifindex)?;
        }
        self.put_vm_entry(
            private,
            &Vm {
                port_ifindex,
                mac,
                flags,
            },
        )?;
        self.set_held(
            mac,
            &HeldAddress {
                addr: private.to_bits(),
                flags,
                _pad: 0,
            },
        )
    }

    /// Forgets a VM: the MAC's entry if it names `private`, the address's entry if it names
    /// `mac` (an entry another VM has taken over stays). Its port stays in the devmap (other
    /// VMs may be behind it; the kernel removes a deleted interface's entry itself).
    pub fn del_vm(&mut self, private: Ipv4Addr, mac: [u8; 6]) -> Result<(), DataplaneError> {
        let held = found(
            self.hash_ref::<MacKey, HeldAddress>(MAP_MACS)?
                .get(&MacKey::new(mac), 0),
        )
        .map_err(map_err(MAP_MACS, format!("read {}", fmt_mac(mac))))?;
        if held.is_some_and(|h| h.addr == private.to_bits()) {
            self.del_held(mac)?;
        }
        let vm = found(self.hash_ref::<u32, Vm>(MAP_VMS)?.get(&private.to_bits(), 0))
            .map_err(map_err(MAP_VMS, format!("read {private}")))?;
        if vm.is_some_and(|v| v.mac == mac) {
            self.remove_vm_entry(private)?;
        }
        Ok(())
    }

    /// Every VM entry: private address -> (MAC, port, flags).
    pub fn vms(&self) -> Result<Vec<(Ipv4Addr, Vm)>, DataplaneError> {
        self.hash_ref::<u32, Vm>(MAP_VMS)?
            .iter()
            .map(|r| r.map(|(k, v)| (Ipv4Addr::from_bits(k), v)))
            .collect::<Result<_, _>>()
            .map_err(map_err(MAP_VMS, "iterate"))
    }

    /// Every anti-spoofing entry: MAC -> the address it holds.
    pub fn held_addresses(&self) -> Result<Vec<([u8; 6], HeldAddress)>, DataplaneError> {
        self.hash_ref::<MacKey, HeldAddress>(MAP_MACS)?
            .iter()
            .map(|r| r.map(|(k, v)| (k.mac, v)))
            .collect::<Result<_, _>>()
            .map_err(map_err(MAP_MACS, "iterate"))
    }

    /// Every forward (`MAP_DNAT`) or reverse (`MAP_SNAT`) binding entry.
    pub fn binding_entries(&self, name: &'static str) -> Result<Vec<(Ipv4Addr, Binding)>, DataplaneError> {
        self.hash_ref::<u32, Binding>(name)?
            .iter()
            .map(|r| r.map(|(k, v)| (Ipv4Addr::from_bits(k), v)))
            .collect::<Result<_, _>>()
            .map_err(map_err(name, "iterate"))
    }

    /// Zeroes a binding slot's counters on every CPU: what it translated, and what its limit
    /// dropped.
    pub fn reset_stats(&mut self, slot: u32) -> Result<(), DataplaneError> {
        for name in [MAP_STATS, MAP_LIMIT_DROPS] {
            let map = self
                .ebpf
                .map_mut(name)
                .ok_or(DataplaneError::MissingMap { name })?;
            let mut array: PerCpuArray<_, EipStats> =
                PerCpuArray::try_from(map).map_err(map_err(name, "not a per-CPU array"))?;
            let cpus = aya::util::nr_cpus().map_err(|(_, e)| os_err(name, "count the CPUs", e))?;
            let zeros = aya::maps::PerCpuValues::try_from(vec![EipStats::default(); cpus])
                .map_err(|e| os_err(name, "per-CPU zeros", e))?;
            array
                .set(slot, zeros, 0)
                .map_err(map_err(name, format!("reset slot {slot}")))?;
        }
        Ok(())
    }

    pub(super) fn limits(&self) -> Result<Array<&MapData, Limit>, DataplaneError> {
        let map = self
            .ebpf
            .map(MAP_LIMITS)
            .ok_or(DataplaneError::MissingMap { name: MAP_LIMITS })?;
        Array::try_from(map).map_err(map_err(MAP_LIMITS, "not an array of limits"))
    }

    /// A binding slot's bandwidth limit, both ways. Writing it restarts its timelines.
    pub fn set_limit(&mut self, slot: u32, limit: &Limit) -> Result<(), DataplaneError> {
        let map = self
            .ebpf
            .map_mut(MAP_LIMITS)
            .ok_or(DataplaneError::MissingMap { name: MAP_LIMITS })?;
        let mut array: Array<_, Limit> =
            Array::try_from(map).map_err(map_err(MAP_LIMITS, "not an array of limits"))?;
        array
            .set(slot, limit, 0)
            .map_err(map_err(MAP_LIMITS, format!("write slot {slot}")))
    }

    pub fn limit(&self, slot: u32) -> Result<Limit, DataplaneError> {
        self.limits()?
            .get(&slot, 0)
            .map_err(map_err(MAP_LIMITS, format!("read slot {slot}")))
    }

    pub(super) fn put_vm_entry(&mut self, private: Ipv4Addr, vm: &Vm) -> Result<(), DataplaneError> {
        self.hash::<u32, Vm>(MAP_VMS)?
            .insert(private.to_bits(), vm, 0)
            .map_err(map_err(MAP_VMS, format!("insert {private}")))
    }

    pub(super) fn remove_vm_entry(&mut self, private: Ipv4Addr) -> Result<(), DataplaneError> {
        ignore_missing(self.hash::<u32, Vm>(MAP_VMS)?.remove(&private.to_bits()))
            .map_err(map_err(MAP_VMS, format!("remove {private}")))
    }

    pub(super) fn set_held(&mut self, mac: [u8; 6], held: &HeldAddress) -> Result<(), DataplaneError> {
        self.hash::<MacKey, HeldAddress>(MAP_MACS)?
            .insert(MacKey::new(mac), held, 0)
            .map_err(map_err(MAP_MACS, format!("insert {}", fmt_mac(mac))))
    }

    pub(super) fn del_held(&mut self, mac: [u8; 6]) -> Result<(), DataplaneError> {
        ignore_missing(
            self.hash::<MacKey, HeldAddress>(MAP_MACS)?
                .remove(&MacKey::new(mac)),
        )
        .map_err(map_err(MAP_MACS, format!("remove {}", fmt_mac(mac))))
    }

    pub(super) fn add_port(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        let map = self
            .ebpf
            .map_mut(MAP_PORTS)
            .ok_or(DataplaneError::MissingMap { name: MAP_PORTS })?;
        let mut ports = DevMapHash::try_from(map).map_err(map_err(MAP_PORTS, "not a devmap-hash"))?;
        ports.insert(ifindex, ifindex, None, 0).map_err(|e| match e {
            aya::maps::xdp::XdpMapError::MapError(source) => DataplaneError::Map {
                name: MAP_PORTS,
                what: format!("insert ifindex {ifindex}"),
                source: Box::new(source),
            },
            other => DataplaneError::Port {
                ifindex,
                reason: other.to_string(),
            },
        })
    }

    /// The global counters, summed over CPUs, indexed by [`Counter`].
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, DataplaneError> {
        let map = self
            .ebpf
            .map(MAP_COUNTERS)
            .ok_or(DataplaneError::MissingMap { name: MAP_COUNTERS })?;
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(map_err(MAP_COUNTERS, "not a per-CPU array"))?;
        Counter::ALL
            .iter()
            .map(|&c| {
                let values = array
                    .get(&(c as u32), 0)
                    .map_err(map_err(MAP_COUNTERS, format!("read {}", c.name())))?;
                Ok((c, values.iter().sum()))
            })
            .collect()
    }

    pub(super) fn redir_err_prog(&mut self) -> Result<&mut TracePoint, DataplaneError> {
        self.ebpf
            .program_mut(PROG_REDIR_ERR)
            .and_then(|p| p.try_into().ok())
            .ok_or(DataplaneError::MissingProgram { name: PROG_REDIR_ERR })
    }

    /// Starts counting what the kernel drops on redirecting to each interface (for as long as
    /// this `Dataplane` lives: the counts matter only to a running daemon).
    pub fn count_port_drops(&mut self) -> Result<(), DataplaneError> {
        self.redir_err_prog()?
            .attach("xdp", "xdp_redirect_err")
            .map(drop)
            .map_err(|source| DataplaneError::Attach {
                name: PROG_REDIR_ERR,
                iface: "tracepoint xdp:xdp_redirect_err".into(),
                source: Box::new(source),
            })
    }

    pub(super) fn pool_trie(&mut self) -> Result<LpmTrie<&mut MapData, u32, u8>, DataplaneError> {
        let map = self
            .ebpf
            .map_mut(MAP_POOLS)
            .ok_or(DataplaneError::MissingMap { name: MAP_POOLS })?;
        LpmTrie::try_from(map).map_err(map_err(MAP_POOLS, "not an LPM trie"))
    }

    pub(super) fn pool_key(net: Ipv4Net) -> Key<u32> {
        // The trie matches bits from the most significant: the address in network order.
        Key::new(u32::from(net.prefix_len()), net.network().to_bits().to_be())
    }

    /// Makes `net`'s addresses sources ingress refuses from outside.
    pub fn set_pool(&mut self, net: Ipv4Net) -> Result<(), DataplaneError> {
        self.pool_trie()?
            .insert(&Self::pool_key(net), 1, 0)
            .map_err(map_err(MAP_POOLS, format!("insert {net}")))
    }

    pub fn del_pool(&mut self, net: Ipv4Net) -> Result<(), DataplaneError> {
        ignore_missing(self.pool_trie()?.remove(&Self::pool_key(net)))
            .map_err(map_err(MAP_POOLS, format!("remove {net}")))
    }

    /// The pools the trie holds.
    pub fn pools(&mut self) -> Result<std::collections::BTreeSet<Ipv4Net>, DataplaneError> {
        let trie = self.pool_trie()?;
        trie.keys()
            .map(|k| {
                k.map(|k| {
                    let addr = Ipv4Addr::from_bits(u32::from_be(k.data()));
                    Ipv4Net::new(addr, k.prefix_len() as u8).unwrap_or_default()
                })
            })
            .collect::<Result<_, _>>()
            .map_err(map_err(MAP_POOLS, "read"))
    }

    /// Frames the kernel dropped on redirecting them, by interface, summed over CPUs.
    pub fn port_drops(&self) -> Result<std::collections::HashMap<u32, u64>, DataplaneError> {
        let map = self
            .ebpf
            .map(MAP_PORT_DROPS)
            .ok_or(DataplaneError::MissingMap { name: MAP_PORT_DROPS })?;
        let drops: PerCpuHashMap<_, u32, u64> =
            PerCpuHashMap::try_from(map).map_err(map_err(MAP_PORT_DROPS, "not a per-CPU hash map"))?;
        drops
            .iter()
            .map(|r| r.map(|(k, v)| (k, v.iter().sum())))
            .collect::<Result<_, _>>()
            .map_err(map_err(MAP_PORT_DROPS, "read"))
    }

    /// The counters of one binding's slot, summed over CPUs.
    pub fn stats(&self, slot: u32) -> Result<EipStats, DataplaneError> {
        self.slot_sum(MAP_STATS, slot)
    }

    /// What one binding slot's limit dropped, summed over CPUs.
    pub fn limit_drops(&self, slot: u32) -> Result<EipStats, DataplaneError> {
        self.slot_sum(MAP_LIMIT_DROPS, slot)
    }

    pub(super) fn slot_sum(&self, name: &'static str, slot: u32) -> Result<EipStats, DataplaneError> {
        let map = self.ebpf.map(name).ok_or(DataplaneError::MissingMap { name })?;
        let array: PerCpuArray<_, EipStats> =
            PerCpuArray::try_from(map).map_err(map_err(name, "not a per-CPU array"))?;
        let values = array
            .get(&slot, 0)
            .map_err(map_err(name, format!("read slot {slot}")))?;
        Ok(values.iter().fold(EipStats::default(), |a, s| EipStats {
            in_packets: a.in_packets + s.in_packets,
            in_bytes: a.in_bytes + s.in_bytes,
            out_packets: a.out_packets + s.out_packets,
            out_bytes: a.out_bytes + s.out_bytes,
        }))
    }
}

fn os_err(name: &'static str, what: &str, io_error: std::io::Error) -> DataplaneError {
    DataplaneError::Map {
        name,
        what: what.into(),
        source: Box::new(MapError::SyscallError(aya::sys::SyscallError {
            call: "reset_stats",
            io_error,
        })),
    }
}

/// Removing what is not there is not an error for these idempotent operations. aya reports a
/// delete of a missing key as the syscall's ENOENT, not as `KeyNotFound` (which only its
/// lookups return), so both mean "already gone".
fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

fn found<V>(r: Result<V, MapError>) -> Result<Option<V>, MapError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

impl BindingMaps for Dataplane {
    type Error = DataplaneError;

    fn snat(&self, private: Ipv4Addr) -> Result<Option<Binding>, DataplaneError> {
        found(
            self.hash_ref::<u32, Binding>(MAP_SNAT)?
                .get(&private.to_bits(), 0),
        )
        .map_err(map_err(MAP_SNAT, format!("read {private}")))
    }

    fn dnat(&self, eip: Ipv4Addr) -> Result<Option<Binding>, DataplaneError> {
        found(self.hash_ref::<u32, Binding>(MAP_DNAT)?.get(&eip.to_bits(), 0))
            .map_err(map_err(MAP_DNAT, format!("read {eip}")))
    }

    fn put_snat(&mut self, private: Ipv4Addr, value: Binding) -> Result<(), DataplaneError> {
        self.hash::<u32, Binding>(MAP_SNAT)?
            .insert(private.to_bits(), value, 0)
            .map_err(map_err(MAP_SNAT, format!("insert {private}")))
    }

    fn put_dnat(&mut self, eip: Ipv4Addr, value: Binding) -> Result<(), DataplaneError> {
        self.hash::<u32, Binding>(MAP_DNAT)?
            .insert(eip.to_bits(), value, 0)
            .map_err(map_err(MAP_DNAT, format!("insert {eip}")))
    }

    fn del_snat(&mut self, private: Ipv4Addr) -> Result<(), DataplaneError> {
        ignore_missing(self.hash::<u32, Binding>(MAP_SNAT)?.remove(&private.to_bits()))
            .map_err(map_err(MAP_SNAT, format!("remove {private}")))
    }

    fn del_dnat(&mut self, eip: Ipv4Addr) -> Result<(), DataplaneError> {
        ignore_missing(self.hash::<u32, Binding>(MAP_DNAT)?.remove(&eip.to_bits()))
            .map_err(map_err(MAP_DNAT, format!("remove {eip}")))
    }
}
