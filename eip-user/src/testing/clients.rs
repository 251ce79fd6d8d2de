//! Real DHCP clients in VM namespaces, as a guest OS runs them: busybox udhcpc and ISC
//! dhclient in the foreground, each with a hook script that configures the interface (address,
//! default route) and then logs the event with the options it got, one line each, to
//! `DIR/TAG.log`: once a line is there, the interface is configured.

use std::{
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
};

use super::{netns::NetNs, process::Background, topology::VM_IF};

/// Writes an executable `/bin/sh` script.
pub fn write_script(path: &Path, body: &str) -> io::Result<()> {
    std::fs::write(path, format!("#!/bin/sh\n{body}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

/// Lines logged like `bound ip=192.168.6.11 router=192.168.6.22 lease=3600 subnet=...`.
pub fn udhcpc(ns: &NetNs, dir: &Path, tag: &str) -> io::Result<Background> {
    let hook = dir.join(format!("{tag}.sh"));
    write_script(
        &hook,
        &format!(
            "case \"$1\" in\n\
               bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/$subnet\" dev \"$interface\";\n\
                 ip route replace default via \"${{router%% *}}\" dev \"$interface\" ;;\n\
               deconfig) ip addr flush dev \"$interface\" ;;\n\
             esac\n\
             echo \"$1 ip=$ip router=$router lease=$lease subnet=$subnet dns=$dns domain=$domain hostname=$hostname mtu=$mtu\" >> {}\n",
            dir.join(format!("{tag}.log")).display()
        ),
    )?;
    // -O mtu: udhcpc does not ask for it by default.
    let mut c = ns.command("udhcpc");
    c.args([
        "-f", "-i", VM_IF, "-t", "10", "-T", "1", "-A", "1", "-O", "mtu", "-s",
    ])
    .arg(&hook)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    Background::spawn(c, "udhcpc")
}

/// ISC dhclient: its hook, lease and PID files live in a directory, so that a second
/// invocation (`-r`, to release) finds the running one.
pub struct Dhclient {
    hook: PathBuf,
    leases: PathBuf,
    pid: PathBuf,
}

impl Dhclient {
    /// Lines logged like `BOUND ip=192.168.6.11 router=192.168.6.22 lease=6 mask=...`.
    pub fn new(dir: &Path, tag: &str) -> io::Result<Self> {
        let hook = dir.join(format!("{tag}.sh"));
        write_script(
            &hook,
            &format!(
                "case \"$reason\" in\n\
                   BOUND|RENEW|REBIND|REBOOT) ip addr flush dev \"$interface\";\n\
                     ip addr add \"$new_ip_address/$new_subnet_mask\" dev \"$interface\";\n\
                     ip route replace default via \"${{new_routers%% *}}\" dev \"$interface\" ;;\n\
                 esac\n\
                 echo \"$reason ip=$new_ip_address router=$new_routers lease=$new_dhcp_lease_time mask=$new_subnet_mask\" >> {}\n",
                dir.join(format!("{tag}.log")).display()
            ),
        )?;
        Ok(Dhclient {
            hook,
            leases: dir.join(format!("{tag}.leases")),
            pid: dir.join(format!("{tag}.pid")),
        })
    }

    /// dhclient's arguments: `extra`, then the files and the interface.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for (flag, p) in [("-sf", &self.hook), ("-lf", &self.leases), ("-pf", &self.pid)] {
            v.push(flag.into());
            v.push(p.to_string_lossy().into_owned());
        }
        v.push(VM_IF.into());
        v
    }

    /// Runs `dhclient -4 -d` (in the foreground) in `ns`.
    pub fn spawn(&self, ns: &NetNs) -> io::Result<Background> {
        let mut c = ns.command("dhclient");
        c.args(self.args(&["-4", "-d"]))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Background::spawn(c, "dhclient")
    }

    /// `dhclient -r`: releases the lease and stops the running client.
    pub fn release(&self, ns: &NetNs) -> io::Result<()> {
        let args = self.args(&["-4", "-r"]);
        ns.exec("dhclient", &args.iter().map(String::as_str).collect::<Vec<_>>())
            .map(drop)
    }
}
