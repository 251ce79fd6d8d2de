//! Which bridge port each VM is behind (from the bridge's forwarding database), what that
//! port lets the fast path do, and the port program (`eip_port_in`) on every port with a VM.

use super::*;

impl Live {
    /// The port flags ([`VM_PORT_FLAGS`]) for a VM behind `port`.
    pub(super) async fn port_flags(&mut self, port: u32) -> Result<u16, KernelError> {
        if port == 0 {
            return Ok(0);
        }
        let veth = match self.port_kinds.get(&port) {
            Some(v) => *v,
            None => {
                let v = self.nl.is_veth(port).await?.unwrap_or(false);
                self.port_kinds.insert(port, v);
                v
            }
        };
        let trusted = self.fast_path_veth && !self.demoted.contains(&port);
        Ok(if veth && !trusted { VM_PORT_KERNEL } else { 0 })
    }

    /// Reads the redirect drops of the ports XDP redirects to: what a port dropped is counted
    /// (`port_dropped` in `eip stats`), and a veth that drops (its VM end has no NAPI after
    /// all, --fast-path-veth notwithstanding) gets kernel delivery from then on, logged.
    pub(super) fn watch_port_drops(&mut self, entries: &HashMap<Ipv4Addr, Vm>) -> Result<(), KernelError> {
        let xdp = !self.pins.ext_tc() && self.config.flags & CONFIG_NO_FAST_PATH == 0;
        let ports: std::collections::BTreeSet<u32> = entries
            .values()
            .filter(|vm| xdp && vm.port_ifindex != 0 && vm.flags & VM_PORT_KERNEL == 0)
            .map(|vm| vm.port_ifindex)
            .collect();
        self.drops_seen.retain(|p, _| ports.contains(p));
        let drops = self.dp.port_drops()?;
        for port in ports {
            let now = drops.get(&port).copied().unwrap_or(0);
            let Some(was) = self.drops_seen.insert(port, now) else {
                continue;
            };
            let grew = now.saturating_sub(was);
            if grew == 0 {
                continue;
            }
            self.port_dropped += grew;
            if self.port_kinds.get(&port) == Some(&true) && self.demoted.insert(port) {
                tracing::warn!(
                    port,
                    dropped = grew,
                    "a veth bridge port dropped redirected frames (its VM end has no GRO or XDP): the kernel delivers to it from now on"
                );
            } else {
                tracing::warn!(
                    port,
                    dropped = grew,
                    "a bridge port dropped frames the fast path sent it"
                );
            }
        }
        Ok(())
    }

    /// Re-reads the bridge's forwarding database and points every VM entry at the port its
    /// MAC is on now (0, the kernel path, while unknown), with the port's flags. Returns the
    /// entries changed.
    pub async fn refresh_ports(&mut self) -> Result<usize, KernelError> {
        self.fdb = self.nl.fdb(self.bridge.index).await?;
        let mut entries = match self.vm_entries.take() {
            Some(g) => g,
            None => self.dp.vms()?.into_iter().collect(),
        };
        if let Err(e) = self.watch_port_drops(&entries) {
            self.vm_entries = Some(entries);
            return Err(e);
        }
        let mut changed = 0;
        let mut result = Ok(());
        for (&ip, vm) in entries.iter_mut() {
            let port = self.fdb.get(&vm.mac).copied().unwrap_or(0);
            let port_flags = match self.port_flags(port).await {
                Ok(f) => f,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let flags = vm.flags & !VM_PORT_FLAGS | port_flags;
            if port != vm.port_ifindex || flags != vm.flags {
                tracing::info!(
                    vm = %ip,
                    mac = %Mac(vm.mac),
                    from = vm.port_ifindex,
                    to = port,
                    "VM's bridge port changed"
                );
                say_kernel_port(ip, port, vm.flags, flags);
                if let Err(e) = self.dp.set_vm(ip, vm.mac, port, flags) {
                    result = Err(e.into());
                    break;
                }
                vm.port_ifindex = port;
                vm.flags = flags;
                changed += 1;
            }
        }
        match self.nl.bridge_vlan_filtering(self.bridge.index).await {
            Ok(filtering) => {
                if filtering != self.vlan_filtering {
                    if filtering {
                        tracing::warn!(bridge = %self.bridge.name, "the bridge filters by VLAN: the VMs' traffic goes through it (no program on their ports)");
                    } else {
                        tracing::info!(bridge = %self.bridge.name, "the bridge no longer filters by VLAN");
                    }
                }
                self.vlan_filtering = filtering;
            }
            Err(e) => {
                if result.is_ok() {
                    result = Err(e.into());
                }
            }
        }
        self.follow_port_programs(&entries);
        self.vm_entries = Some(entries);
        result?;
        Ok(changed)
    }

    /// Keeps `eip_port_in` attached to every bridge port a VM is behind, and to no other: a
    /// port that lost its VMs (or was deleted) lets it go. A port it cannot be attached to
    /// is logged once; its VMs' traffic goes through the bridge, as without it.
    pub(super) fn follow_port_programs(&mut self, entries: &HashMap<Ipv4Addr, Vm>) {
        let on =
            !self.no_port_fast_path && !self.vlan_filtering && self.config.flags & CONFIG_NO_FAST_PATH == 0;
        let wanted: std::collections::BTreeSet<u32> = entries
            .values()
            .map(|vm| vm.port_ifindex)
            .filter(|&p| on && p != 0)
            .collect();
        self.port_links.retain(|p, _| wanted.contains(p));
        self.port_failed.retain(|p| wanted.contains(p));
        for port in wanted {
            if self.port_links.contains_key(&port) || self.port_failed.contains(&port) {
                continue;
            }
            match self.dp.attach_port(port) {
                Ok(link) => {
                    tracing::info!(
                        port,
                        "attached eip_port_in (TCX ingress): the VMs' translated traffic leaves before the bridge"
                    );
                    self.port_links.insert(port, link);
                }
                Err(e) => {
                    tracing::warn!(port, error = %crate::error_chain(&e), "eip_port_in not attached: this port's VMs go through the bridge");
                    self.port_failed.insert(port);
                }
            }
        }
    }
}

/// Logs, once per change, that the kernel delivers to a VM because its port is a veth.
pub(super) fn say_kernel_port(vm: Ipv4Addr, port: u32, before: u16, after: u16) {
    if after & VM_PORT_KERNEL != 0 && before & VM_PORT_KERNEL == 0 {
        tracing::info!(
            %vm,
            port,
            "the VM's bridge port is a veth: the kernel delivers its inbound traffic (a veth drops redirected frames unless its VM end has GRO on or an XDP program; --fast-path-veth says it does)"
        );
    }
}
