//! Starting the dataplane over the pins: each program's link kept, swapped in place, or
//! attached and pinned; and attached again to an interface created again.

use super::*;

impl Pins {
    /// Attaches `hook` anew to `iface` (re-created under another index), replacing the pinned
    /// link, whose interface is gone.
    pub fn reattach(&self, dp: &mut Dataplane, ext: bool, iface: &str) -> Result<(), PinError> {
        let hooks: &[Hook] = if ext {
            &[TC_EXT_OUT, self.ingress_hooks().0]
        } else {
            &[TC]
        };
        for &hook in hooks {
            remove_if_present(&self.link(hook.link))?;
            self.start_hook_on(dp, hook, iface)?;
        }
        Ok(())
    }

    /// Starts `hook` on `iface`, whichever kind it is.
    pub(super) fn start_hook_on(
        &self,
        dp: &mut Dataplane,
        hook: Hook,
        iface: &str,
    ) -> Result<Link, PinError> {
        if hook.link == XDP.link {
            self.start_xdp(dp, iface)
        } else {
            self.start_tc(dp, hook, iface)
        }
    }

    /// Loads the embedded programs over the pinned maps and makes them the ones attached.
    pub fn start(&self, sizes: Sizes, ext: &str, bridge: &str) -> Result<(Dataplane, Started), PinError> {
        crate::kernel::bpffs::ensure()?;
        for dir in [self.maps(), self.root.join("progs"), self.root.join("links")] {
            std::fs::create_dir_all(&dir).map_err(io_err(&dir, "create the pin directory"))?;
        }
        let mut dp = Dataplane::load_with(sizes, Some(&self.maps()))?;
        let (ingress, other) = self.ingress_hooks();
        for (hook, iface) in [(ingress, ext), (TC, bridge), (TC_EXT_OUT, ext)] {
            self.drop_defunct_link(hook, iface)?;
        }
        // Egress first: once ingress translates a VM's traffic in, its replies are translated
        // on the way out (what is still untranslated meanwhile the leak guard keeps in), and
        // so are the host's own errors about it.
        let tc = self.start_tc(&mut dp, TC, bridge)?;
        let out = self.start_tc(&mut dp, TC_EXT_OUT, ext)?;
        let xdp = self.start_hook_on(&mut dp, ingress, ext)?;
        // The other kind of ingress goes once this one is attached (a veth as the external
        // interface moves from XDP to TC, a NIC back): both at once would translate twice.
        if self.link(other.link).exists() {
            remove_if_present(&self.link(other.link))?;
            remove_if_present(&self.prog(other.prog))?;
            tracing::info!(
                kind = other.kind,
                "the other kind of ingress was pinned: detached"
            );
        }
        let started = match (xdp, tc, out) {
            (Link::Attached(mode), Link::Attached(_), Link::Attached(_)) => Started::Fresh(mode),
            (Link::Kept, Link::Kept, Link::Kept) => Started::Adopted,
            // Programs swapped, or some link pinned and another not (a version that had
            // fewer, or a half-finished teardown).
            _ => Started::Upgraded,
        };
        self.drop_stale_programs()?;
        Ok((dp, started))
    }

    /// Unpins the programs no hook runs under this name: an older version's, pinned under
    /// the names it gave them (before the programs were named by their attach point,
    /// `eip_ext_xdp` was `eip_ingress`, `eip_bridge_in` was `eip_egress`, and so on). Their
    /// links run this version's programs by now (an older program's pin is not under this
    /// version's name, so its link was swapped), so nothing is detached.
    fn drop_stale_programs(&self) -> Result<(), PinError> {
        let dir = self.root.join("progs");
        let entries = std::fs::read_dir(&dir).map_err(io_err(&dir, "list the pinned programs"))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&dir, "list the pinned programs"))?;
            let name = entry.file_name();
            if !HOOKS.iter().any(|h| name == h.prog) {
                remove_if_present(&entry.path())?;
                tracing::info!(program = %name.to_string_lossy(), "unpinned an older version's program");
            }
        }
        Ok(())
    }

    /// Unpins the hook's link when it is not attached to `iface` as it is now: its interface
    /// was deleted (the link is defunct) or re-created under another index. Adopting it would
    /// leave the interface without the program.
    pub(super) fn drop_defunct_link(&self, hook: Hook, iface: &str) -> Result<(), PinError> {
        let path = self.link(hook.link);
        let Ok(fd) = crate::kernel::bpffs::obj_get(&path) else {
            return Ok(());
        };
        let attached = crate::kernel::bpffs::link_ifindex(std::os::fd::AsFd::as_fd(&fd))
            .map_err(io_err(&path, "read the pinned link"))?;
        let c = std::ffi::CString::new(iface)
            .map_err(|e| io_err(&path, "interface name")(io::Error::other(e)))?;
        // SAFETY: if_nametoindex with a NUL-terminated name.
        let want = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if attached != want {
            tracing::warn!(
                link = %path.display(),
                attached,
                iface,
                ifindex = want,
                "the pinned {} link is not attached to {iface} (the interface was deleted or re-created): attaching anew",
                hook.kind
            );
            remove_if_present(&path)?;
        }
        Ok(())
    }

    /// Whether the program under a pinned link is the pinned program and has `tag` (the
    /// kernel's hash of the instructions, map references left out, so the same code loaded
    /// twice has the same tag).
    pub(super) fn current(&self, link: &FdLink, prog: &str, tag: u64) -> bool {
        let Ok(pinned) = ProgramInfo::from_pin(self.prog(prog)) else {
            return false;
        };
        let under = link.info().ok().map(|i| i.program_id());
        pinned.tag() == tag && under == Some(pinned.id())
    }

    /// One program's link: kept when the pinned one runs this program, swapped in place when
    /// it runs another, attached (by `attach`) and pinned when there is none. Then the program
    /// is pinned (again).
    pub(super) fn start_hook(
        &self,
        dp: &mut Dataplane,
        hook: Hook,
        replace: impl FnOnce(&mut Dataplane, FdLink) -> Result<(), PinError>,
        attach: impl FnOnce(&mut Dataplane) -> Result<(FdLink, Option<XdpAttachMode>), PinError>,
    ) -> Result<Link, PinError> {
        let (kind, link_path, prog_path) = (hook.kind, self.link(hook.link), self.prog(hook.prog));
        let tag = dp
            .program(hook.prog)?
            .info()
            .map_err(aya_err(&prog_path, "read program info"))?
            .tag();
        let link = match PinnedLink::from_pin(&link_path) {
            Ok(pinned) => {
                let pinned = FdLink::from(pinned);
                if self.current(&pinned, hook.prog, tag) {
                    tracing::info!(link = %link_path.display(), "adopted the pinned {kind} program");
                    return Ok(Link::Kept);
                }
                replace(dp, pinned)?;
                tracing::info!(link = %link_path.display(), "replaced the pinned {kind} program with this version's");
                Link::Replaced
            }
            Err(e) if not_found(&e) => {
                let (link, mode) = attach(dp)?;
                link.pin(&link_path)
                    .map_err(aya_err(&link_path, "pin the link"))?;
                Link::Attached(mode)
            }
            Err(e) => return Err(aya_err(&link_path, "open the pinned link")(e)),
        };
        remove_if_present(&prog_path)?;
        dp.program(hook.prog)?
            .pin(&prog_path)
            .map_err(aya_err(&prog_path, "pin the program"))?;
        Ok(link)
    }

    pub(super) fn start_xdp(&self, dp: &mut Dataplane, ext: &str) -> Result<Link, PinError> {
        let path = self.link(XDP.link);
        self.start_hook(
            dp,
            XDP,
            |dp, pinned| {
                let link = XdpLink::try_from(pinned).map_err(aya_err(&path, "not an XDP link"))?;
                dp.ext_xdp()?
                    .attach_to_link(link)
                    .map_err(aya_err(&path, "replace the XDP program"))?;
                Ok(())
            },
            |dp| {
                let (mode, id) = dp.attach_xdp(ext)?;
                let link = dp
                    .ext_xdp()?
                    .take_link(id)
                    .map_err(aya_err(&path, "take the XDP link"))?;
                let link = FdLink::try_from(link)
                    .map_err(aya_err(&path, "XDP attached without a bpf_link (kernel < 5.9?)"))?;
                Ok((link, Some(mode)))
            },
        )
    }

    /// A TC hook: a TCX link on `iface` (the bridge's ingress; the external interface's
    /// egress, or its ingress when that is a veth).
    pub(super) fn start_tc(&self, dp: &mut Dataplane, hook: Hook, iface: &str) -> Result<Link, PinError> {
        let path = self.link(hook.link);
        self.start_hook(
            dp,
            hook,
            |dp, pinned| {
                let link = SchedClassifierLink::try_from(pinned).map_err(aya_err(&path, "not a TCX link"))?;
                dp.classifier(hook.prog)?
                    .attach_to_link(link)
                    .map_err(aya_err(&path, "replace the TC program"))?;
                Ok(())
            },
            |dp| {
                let prog = dp.classifier(hook.prog)?;
                let (side, name) = if hook.link == TC_EXT_OUT.link {
                    (TcAttachType::Egress, "egress")
                } else {
                    (TcAttachType::Ingress, "ingress")
                };
                let id = prog
                    .attach_with_options(iface, side, TcAttachOptions::TcxOrder(LinkOrder::default()))
                    .map_err(|source| DataplaneError::Attach {
                        name: hook.prog,
                        iface: iface.to_owned(),
                        source: Box::new(source),
                    })?;
                let link = prog.take_link(id).map_err(aya_err(&path, "take the TC link"))?;
                let link = FdLink::try_from(link)
                    .map_err(aya_err(&path, "TC attached without a TCX link (kernel < 6.6?)"))?;
                tracing::info!(iface, "attached {} (TCX {name})", hook.prog);
                Ok((link, None))
            },
        )
    }
}
