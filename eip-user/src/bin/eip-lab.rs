//! `eip-lab`, what `cargo xtask run` starts: the lab of `eip_user::testing::lab` with
//! namespaces people can type (`eiplab-out`, `eiplab-hv`, `eiplab-vm1`, `eiplab-vm2`), one
//! EIP bound to each VM, checked from outside, and a "try this" block. It runs until Ctrl-C
//! (SIGINT, SIGTERM or SIGHUP), or until the daemon dies, then removes everything it
//! created. What an earlier lab left behind after a crash (namespaces and the processes in
//! them, pins, files) is removed first.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use clap::Parser;
use eip_user::testing::{
    lab::{HTTP_PORT, LAB_VMS, Lab},
    netns::run,
    services::http_get,
    topology::{BRIDGE_ADDR, EXT_ADDR, OUTSIDE_ADDR},
};

#[derive(Parser)]
#[command(
    name = "eip-lab",
    about = "A lab of network namespaces running eip (see `cargo xtask run`)"
)]
struct Args {
    /// Namespaces are PREFIX-out, PREFIX-hv, PREFIX-vm1, PREFIX-vm2; the daemon's instance
    /// (pins under /sys/fs/bpf/eip/PREFIX) is PREFIX.
    #[arg(long, default_value = "eiplab", value_parser = prefix)]
    prefix: String,
    /// The daemon's socket, state, hosts file and log.
    #[arg(long, default_value = "/run/eip-lab")]
    dir: PathBuf,
}

fn prefix(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("1 to 10 letters or digits".into());
    }
    Ok(s.to_owned())
}

/// The EIPs bound at start, one per VM in `LAB_VMS` order.
const EIPS: [Ipv4Addr; 2] = [Ipv4Addr::new(203, 0, 113, 10), Ipv4Addr::new(203, 0, 113, 11)];

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn say(line: &str) {
    eprintln!("[lab] {line}");
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("error: the lab needs root (network namespaces, eBPF)");
        return ExitCode::FAILURE;
    }
    let bin = match std::env::current_exe() {
        Ok(p) => p.with_file_name("eip"),
        Err(e) => {
            eprintln!("error: cannot find the eip binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    if let Err(e) = clean_stale(&args) {
        eprintln!("error: cleaning up after an earlier lab: {e}");
        return ExitCode::FAILURE;
    }
    let lab = match Lab::start(&bin, Some((&args.prefix, args.dir.clone())), &say) {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("error: the lab did not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut lab = lab;
    let outcome = serve(&mut lab, &bin, started);
    say("stopping: removing the namespaces, pins, files and processes it created");
    let left = lab.close();
    for l in &left {
        eprintln!("error: left behind: {l}");
    }
    match outcome {
        Ok(()) if left.is_empty() => {
            say("removed everything it created");
            ExitCode::SUCCESS
        }
        Ok(()) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds, checks from outside, prints the "try this" block, then waits for a signal or the
/// daemon's death.
fn serve(lab: &mut Lab, bin: &Path, started: Instant) -> io::Result<()> {
    for (eip, g) in EIPS.iter().zip(&LAB_VMS) {
        lab.cli(&["bind", &eip.to_string(), g.name])?;
        let (body, _) = http_get(&lab.topo.outside, SocketAddrV4::new(*eip, HTTP_PORT))?;
        if !body.starts_with(g.name) {
            return Err(io::Error::other(format!(
                "{eip} is bound to {} but {body:?} answered",
                g.name
            )));
        }
        say(&format!(
            "bound {eip} to {}; checked from outside: {}",
            g.name,
            body.trim()
        ));
    }
    print_try_this(lab, bin, started.elapsed());
    loop {
        if STOP.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(status) = lab.daemon_exited() {
            let log = lab.inst.log_text();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            return Err(io::Error::other(format!(
                "the daemon exited ({status}); the end of its log:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn print_try_this(lab: &Lab, bin: &Path, took: Duration) {
    let [out, hv, vm1, _] = lab.topo.names().try_into().unwrap_or_default();
    let eip = format!("{} --socket {}", bin.display(), lab.inst.socket().display());
    let mut s = format!(
        "\neip lab ready in {:.1} s (daemon log: {})\n\n\
         \x20 {:<8} {:<18} {:<16} {:<14} {}\n",
        took.as_secs_f64(),
        lab.inst.log().display(),
        "VM",
        "MAC",
        "address (DHCP)",
        "EIP",
        "DHCP client"
    );
    for (i, (g, e)) in LAB_VMS.iter().zip(EIPS).enumerate() {
        s += &format!(
            "  {:<8} {:<18} {:<16} {:<14} {} (namespace {})\n",
            g.name,
            eip_user::model::fmt_mac(g.mac),
            g.ip,
            e,
            g.client,
            lab.topo.names()[2 + i]
        );
    }
    s += &format!(
        "  outside {OUTSIDE_ADDR} (namespace {out}); hypervisor ext0 {EXT_ADDR}, br0 {BRIDGE_ADDR} (namespace {hv})\n\n\
         Try this, as root, in another terminal:\n\
         \x20 ip netns exec {out} ping -c 3 {e1}\n\
         \x20 ip netns exec {out} curl -s http://{e1}/\n\
         \x20 ip netns exec {vm1} curl -s http://{OUTSIDE_ADDR}/\n\
         \x20 {eip} list\n\
         \x20 {eip} unbind {e2}\n\
         \x20 {eip} bind {e1} vm-002\n\
         \x20 ip netns exec {out} curl -s http://{e1}/\n\
         \x20 watch -n 1 {eip} stats\n\
         The first curl is answered by vm-001, which sees the outside's own address; the second\n\
         shows that the outside sees vm-001 as {e1}. A VM holds one EIP: vm-002 gives up {e2},\n\
         then {e1} moves to it, and vm-002 answers the last curl.\n\
         Ctrl-C stops the lab and removes its namespaces, pins, files and processes.\n",
        e1 = EIPS[0],
        e2 = EIPS[1],
    );
    print!("{s}");
}

/// Removes what an earlier lab with the same prefix left behind: the processes in its
/// namespaces (by PID, SIGTERM then SIGKILL), the namespaces, its pins and its files.
fn clean_stale(args: &Args) -> io::Result<()> {
    let listed = String::from_utf8_lossy(&run("ip", &["netns", "list"])?.stdout).into_owned();
    let mine = format!("{}-", args.prefix);
    let stale: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            n.strip_prefix(&mine)
                .is_some_and(|role| ["out", "hv"].contains(&role) || role.starts_with("vm"))
        })
        .collect();
    let mut pids = Vec::new();
    for ns in &stale {
        let out = run("ip", &["netns", "pids", ns])?;
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let Ok(pid) = pid.parse::<i32>() else { continue };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            say(&format!(
                "ending {} (pid {pid}), left in {ns} by an earlier lab",
                comm.trim()
            ));
            // SAFETY: kill(2) on a process inside a namespace an earlier lab created.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            pids.push(pid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in &pids {
        if Path::new(&format!("/proc/{p}")).exists() {
            // SAFETY: as above; it ignored SIGTERM for five seconds.
            unsafe { libc::kill(*p, libc::SIGKILL) };
        }
    }
    for ns in &stale {
        say(&format!("removing namespace {ns}, left by an earlier lab"));
        run("ip", &["netns", "del", ns])?;
    }
    let pins = Path::new(eip_user::kernel::pins::BPFFS)
        .join("eip")
        .join(&args.prefix);
    for path in [pins, args.dir.clone()] {
        if path.exists() {
            say(&format!("removing {}, left by an earlier lab", path.display()));
            std::fs::remove_dir_all(&path)?;
        }
    }
    Ok(())
}
