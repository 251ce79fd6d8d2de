//! Network namespaces for tests, benchmarks and the lab: unique names, removed on drop (also
//! when a test panics), and entered per thread.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A name no other run or test uses: prefix, process id and a counter, short enough for an
/// interface name (15 bytes).
pub fn unique(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{:x}{n:x}", std::process::id() & 0xfffff);
    assert!(name.len() <= 15, "name {name} too long for an interface");
    name
}

/// Runs `cmd` to completion and fails with its stderr unless it succeeds.
pub fn check(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// Runs a command and fails with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> io::Result<Output> {
    check(Command::new(program).args(args))
}

/// A network namespace, deleted (with every interface in it) on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// A namespace with a name no other run uses (see [`unique`]).
    pub fn new(prefix: &str) -> io::Result<Self> {
        Self::named(unique(prefix))
    }

    /// A namespace with exactly this name (the lab's, which people type); fails if it exists.
    pub fn named(name: String) -> io::Result<Self> {
        run("ip", &["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        check(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs a program inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        check(
            Command::new("ip")
                .args(["netns", "exec", &self.name, program])
                .args(args),
        )
    }

    /// A command to run inside the namespace, to be spawned by the caller.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// A veth pair: `name` here, `peer` in the namespace `other`.
    pub fn veth(&self, name: &str, peer: &str, other: &NetNs) -> io::Result<Output> {
        self.ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            &other.name,
        ])
    }

    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")]).map(drop)
    }

    /// The MAC address of `dev`.
    pub fn mac(&self, dev: &str) -> io::Result<[u8; 6]> {
        let out = self.exec("cat", &[&format!("/sys/class/net/{dev}/address")])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let parts: Vec<&str> = text.trim().split(':').collect();
        let mut mac = [0u8; 6];
        if parts.len() != mac.len() {
            return Err(io::Error::other(format!("{dev}: no MAC in {text:?}")));
        }
        for (m, p) in mac.iter_mut().zip(parts) {
            *m = u8::from_str_radix(p, 16).map_err(io::Error::other)?;
        }
        Ok(mac)
    }

    pub fn ifindex(&self, dev: &str) -> io::Result<u32> {
        let out = self.exec("cat", &[&format!("/sys/class/net/{dev}/ifindex")])?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(io::Error::other)
    }

    /// Moves the calling thread into the namespace until the guard drops.
    pub fn enter(&self) -> io::Result<Entered> {
        enter_by_name(&self.name)
    }
}

/// Moves the calling thread into the namespace `name` (which someone else owns).
pub fn enter_by_name(name: &str) -> io::Result<Entered> {
    let back = File::open("/proc/thread-self/ns/net")?;
    let target = File::open(format!("/var/run/netns/{name}"))?;
    setns(&target)?;
    Ok(Entered { back })
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

fn setns(ns: &File) -> io::Result<()> {
    // SAFETY: setns on an open namespace file; affects only the calling thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread is in another namespace until this drops.
pub struct Entered {
    back: File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let _ = setns(&self.back);
    }
}
