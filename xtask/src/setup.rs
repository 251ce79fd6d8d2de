//! Installs what building and testing eip needs, idempotently: each step checks first, says
//! what it found, and installs only what is missing. A step that cannot succeed stops the
//! command with one sentence naming what is missing.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// The Debian packages the tests and the lab use (the binaries they provide are named so the
/// check does not depend on dpkg's database).
pub const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("iputils-ping", "ping"),
    ("ethtool", "ethtool"),
    ("iptables", "iptables"),
    ("nftables", "nft"),
    ("tcpdump", "tcpdump"),
    ("udhcpc", "udhcpc"),
    ("isc-dhcp-client", "dhclient"),
    ("iperf3", "iperf3"),
    ("socat", "socat"),
    ("curl", "curl"),
    ("bpftool", "bpftool"),
    ("traceroute", "traceroute"),
];

/// What only the benchmarks use: the DHCP load generator and the DHCP server eip is compared
/// with (dnsmasq-base: the binary, without a system service that would start on install).
pub const BENCH_PACKAGES: &[(&str, &str)] = &[("kea-admin", "perfdhcp"), ("dnsmasq-base", "dnsmasq")];

const NIGHTLY: &str = "nightly";

/// What a command needs: the toolchain alone (build); also root and the kernel features (the
/// daemon on real interfaces); also the Debian packages and namespaces (test, the lab); or
/// also the benchmarks' own packages (bench).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Needs {
    Toolchain,
    Kernel,
    Everything,
    Bench,
}

pub fn ensure(needs: Needs) -> Result<()> {
    step("nightly toolchain with rust-src", ensure_rust_src)?;
    step("bpf-linker (against the nightly's LLVM)", ensure_bpf_linker)?;
    if needs >= Needs::Kernel {
        step("root", ensure_root)?;
        step("kernel with BTF and BPF", ensure_kernel)?;
        step("bpffs and tracefs", ensure_mounts)?;
    }
    if needs >= Needs::Everything {
        step("Debian packages", || ensure_packages(PACKAGES))?;
        step("network namespaces", ensure_netns)?;
    }
    if needs == Needs::Bench {
        step("Debian packages for the benchmarks", || {
            ensure_packages(BENCH_PACKAGES)
        })?;
    }
    Ok(())
}

fn step(what: &str, f: impl FnOnce() -> Result<String>) -> Result<()> {
    match f() {
        Ok(status) => {
            eprintln!("[setup] {what}: {status}");
            Ok(())
        }
        Err(e) => bail!("[setup] {what}: {e:#}"),
    }
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn ensure_rust_src() -> Result<String> {
    let installed =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", NIGHTLY]))
            .context(
                "the nightly Rust toolchain is missing; install it with `rustup toolchain install nightly`",
            )?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok("present".into());
    }
    eprintln!("[setup] adding rust-src to the nightly toolchain (eBPF builds core from source)");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    Ok("installed".into())
}

fn nightly_libllvm() -> Result<PathBuf> {
    let sysroot = output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))
        .context("`rustc +nightly` does not run")?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let mut found: Vec<PathBuf> = fs::read_dir(&lib)
        .with_context(|| format!("cannot read {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .collect();
    found.sort();
    found
        .pop()
        .with_context(|| format!("the nightly toolchain has no libLLVM.so.* in {}", lib.display()))
}

/// bpf-linker must link the same LLVM as the nightly rustc that emits the bitcode. Its
/// llvm-22 feature links a shared libLLVM found through LLVM_PREFIX/lib/libLLVM.so, which we
/// point at the nightly's own copy.
fn ensure_bpf_linker() -> Result<String> {
    // It loads the nightly's libLLVM at run time, which is on the library path only under
    // `rustup run nightly` (as aya-build runs it).
    if let Some(v) = output(Command::new("rustup").args(["run", NIGHTLY, "bpf-linker", "--version"])) {
        return Ok(format!("present ({})", v.trim()));
    }
    let libllvm = nightly_libllvm()?;
    let prefix = std::env::temp_dir().join(format!("eip-llvm-prefix-{}", std::process::id()));
    fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)?;
    eprintln!(
        "[setup] building bpf-linker 0.13 against {} (about a minute)",
        libllvm.file_name().and_then(|n| n.to_str()).unwrap_or("libLLVM")
    );
    let result = run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            "^0.13",
            "--no-default-features",
            "--features",
            "llvm-22",
            "--locked",
        ])
        .env("LLVM_PREFIX", &prefix));
    let _ = fs::remove_dir_all(&prefix);
    result.context("could not build bpf-linker")?;
    Ok("installed".into())
}

fn ensure_root() -> Result<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "this command needs root (it loads eBPF programs and creates network namespaces); run it as root"
        );
    }
    Ok("yes".into())
}

fn ensure_kernel() -> Result<String> {
    let release =
        fs::read_to_string("/proc/sys/kernel/osrelease").context("cannot read the kernel version")?;
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (5, 15) {
        bail!("Linux {} is too old: eip needs 5.15 or newer", release.trim());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("this kernel has no BTF (/sys/kernel/btf/vmlinux is missing); eip needs CONFIG_DEBUG_INFO_BTF");
    }
    Ok(format!("Linux {}", release.trim()))
}

/// The pins of the daemons the tests and the lab start live on the host's bpffs, and the
/// daemon finds the tracepoint it counts port drops with on tracefs, as on a production
/// host (systemd mounts both at boot). A machine that booted without them (a minimal VM or
/// container image) gets them mounted, as `mount -t bpf bpf /sys/fs/bpf` and `mount -t
/// tracefs tracefs /sys/kernel/tracing`.
fn ensure_mounts() -> Result<String> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    let mut done = Vec::new();
    for (kind, at) in [("bpf", "/sys/fs/bpf"), ("tracefs", "/sys/kernel/tracing")] {
        let mounted = mounts.lines().any(|l| {
            let mut f = l.split_whitespace();
            let (_, on, fs) = (f.next(), f.next(), f.next());
            on == Some(at) && fs == Some(kind)
        });
        if !mounted {
            run(Command::new("mount").args(["-t", kind, kind, at]))
                .with_context(|| format!("cannot mount {kind} on {at}"))?;
            done.push(format!("mounted {kind} on {at}"));
        }
    }
    Ok(if done.is_empty() {
        "mounted".into()
    } else {
        done.join(", ")
    })
}

fn have(binary: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(binary).exists())
}

fn ensure_packages(packages: &[(&str, &str)]) -> Result<String> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, bin)| !have(bin))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok("all present".into());
    }
    if !have("apt-get") {
        bail!(
            "missing {} and there is no apt-get to install them",
            missing.join(", ")
        );
    }
    eprintln!("[setup] installing {} with apt-get", missing.join(", "));
    run(Command::new("apt-get").args(["update", "-qq"])).context("apt-get update failed")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get install failed")?;
    Ok(format!("installed {}", missing.join(", ")))
}

fn ensure_netns() -> Result<String> {
    let name = format!("eip-probe-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .stderr(Stdio::null())
        .status()?
        .success();
    if !ok {
        bail!("cannot create a network namespace (`ip netns add` failed); the tests need them");
    }
    run(Command::new("ip").args(["netns", "del", &name]))?;
    Ok("available".into())
}
