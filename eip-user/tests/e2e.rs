//! The end-to-end test: the reference setup, run as an operator would, through the CLI
//! only, in the lab (`eip_user::testing::lab`: the real daemon in namespaces, two VMs whose
//! interfaces real DHCP clients configure). One line per step with PASS or FAIL, then the
//! usual `test result:` line. A step that fails does not stop the next ones, and whatever
//! happens, the last step checks that every namespace, pin, alias, file and process the test
//! created is gone.
//!
//! `harness = false`: the steps share one lab and run in order. Arguments are treated as
//! libtest's: a filter that does not match the test's name skips it.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use eip_user::{
    api::{EipRow, EipState},
    model::Reservation,
    testing::{
        lab::{ECHO_PORT, HTTP_PORT, LAB_VMS, Lab, hosts_lines},
        netns::NetNs,
        process::{Capture, bad_checksums},
        services::{Service, Stream, http_get, upload, within},
        topology::{EXT_IF, OUTSIDE_ADDR, VM_IF, WAN_IF},
    },
};

const NAME: &str = "e2e_reference_scenario";
const BIN: &str = env!("CARGO_BIN_EXE_eip");

const E1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const E2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
const E3: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 12);
/// The far host, behind the outside router over a link with a smaller MTU.
const FAR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const FAR_GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const FAR_MTU: u32 = 1400;

type Outcome = Result<(), String>;

/// Fails the step with a message unless `cond` holds.
fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Outcome {
    if cond { Ok(()) } else { Err(msg()) }
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

struct World {
    lab: Lab,
}

impl World {
    fn eip(&self, args: &[&str]) -> Result<String, String> {
        self.lab.cli(args).map_err(|e| e.to_string())
    }

    fn list(&self) -> Result<Vec<EipRow>, String> {
        serde_json::from_str(&self.eip(&["list", "--json"])?).map_err(err("eip list --json"))
    }

    fn row(&self, eip: Ipv4Addr) -> Result<Option<EipRow>, String> {
        Ok(self.list()?.into_iter().find(|r| r.eip == eip))
    }

    fn hosts(&self) -> Result<Vec<Reservation>, String> {
        serde_json::from_str(&self.eip(&["host", "list", "--json"])?).map_err(err("eip host list --json"))
    }

    fn history(&self) -> Result<Vec<eip_user::store::Entry>, String> {
        serde_json::from_str(&self.eip(&["history", "--json", "--limit", "10000"])?)
            .map_err(err("eip history --json"))
    }

    fn outside(&self) -> &NetNs {
        &self.lab.topo.outside
    }

    fn vm(&self, i: usize) -> &NetNs {
        self.lab.vm(i)
    }

    /// Waits (at most 10 s) until `f` holds.
    fn wait(&self, what: &str, mut f: impl FnMut(&World) -> Result<bool, String>) -> Outcome {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f(self)? {
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

fn pings(from: &NetNs, to: Ipv4Addr) -> bool {
    from.exec("ping", &["-c", "2", "-i", "0.2", "-W", "1", &to.to_string()])
        .is_ok()
}

/// `GET /` from `ns`; the body must be `LABEL SERVER sees you as SEEN:PORT` where PORT is the
/// port this end used (a 1:1 NAT keeps ports).
fn whoami(ns: &NetNs, to: SocketAddrV4, label: &str, server: SocketAddrV4, seen: Ipv4Addr) -> Outcome {
    let (body, local) = http_get(ns, to).map_err(err(&format!("GET http://{to}/ from {}", ns.name())))?;
    let want = format!("{label} {server} sees you as {seen}:{}\n", local.port());
    ensure(body == want, || {
        format!("GET http://{to}/ from {}: got {body:?}, want {want:?}", ns.name())
    })
}

/// Step 1.
fn dhcp(w: &mut World) -> Outcome {
    for (i, g) in LAB_VMS.iter().enumerate() {
        let addrs = w.lab.vm_addrs(i).map_err(err("addresses"))?;
        ensure(addrs == [format!("{}/24", g.ip)], || {
            format!("{} has {addrs:?}, not its reservation {}", g.name, g.ip)
        })?;
    }
    let leases: eip_user::api::Leases =
        serde_json::from_str(&w.eip(&["leases", "--json"])?).map_err(err("eip leases --json"))?;
    let got: BTreeSet<_> = leases
        .leases
        .iter()
        .map(|l| (l.lease.mac.to_string(), l.lease.ip, l.reserved))
        .collect();
    let want: BTreeSet<_> = LAB_VMS
        .iter()
        .map(|g| (eip_user::model::fmt_mac(g.mac), g.ip, true))
        .collect();
    ensure(got == want, || format!("leases {got:?}, want {want:?}"))
}

/// Step 2.
fn traffic(w: &mut World) -> Outcome {
    w.eip(&["bind", &E1.to_string(), "vm-001"])?;
    let cap_out = Capture::start(w.outside(), WAN_IF).map_err(err("tcpdump outside"))?;
    let cap_vm = Capture::start(w.vm(0), VM_IF).map_err(err("tcpdump in vm-001"))?;
    let vm1 = sa(LAB_VMS[0].ip, HTTP_PORT);
    ensure(pings(w.outside(), E1), || format!("no ping from outside to {E1}"))?;
    // The VM sees the client's real address.
    whoami(w.outside(), sa(E1, HTTP_PORT), "vm-001", vm1, OUTSIDE_ADDR)?;
    let echoed = within(w.outside(), || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(sa(E1, ECHO_PORT))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send(b"hello")?;
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .map_err(err("UDP to the EIP"))?;
    ensure(echoed == "vm-001 hello", || format!("UDP echo: {echoed:?}"))?;
    // The outside sees the EIP as the source of the VM's own connection.
    whoami(
        w.vm(0),
        sa(OUTSIDE_ADDR, HTTP_PORT),
        "outside",
        sa(OUTSIDE_ADDR, HTTP_PORT),
        E1,
    )?;

    let outside_saw = cap_out.finish().map_err(err("tcpdump outside"))?;
    let vm_saw = cap_vm.finish().map_err(err("tcpdump in vm-001"))?;
    ensure(outside_saw.contains("203.0.113.10."), || {
        format!("the outside captured nothing from the EIP:\n{outside_saw}")
    })?;
    ensure(!outside_saw.contains("192.168.6."), || {
        format!("a private address leaked outside:\n{outside_saw}")
    })?;
    ensure(vm_saw.contains("198.51.100.9."), || {
        format!("vm-001 captured nothing from the client:\n{vm_saw}")
    })?;
    ensure(!vm_saw.contains("203.0.113.10"), || {
        format!("vm-001 saw its EIP untranslated:\n{vm_saw}")
    })?;
    let bad: Vec<_> = bad_checksums(&outside_saw)
        .into_iter()
        .chain(bad_checksums(&vm_saw))
        .collect();
    ensure(bad.is_empty(), || format!("bad checksums: {bad:#?}"))
}

/// Step 3: ICMP errors, both ways through the NAT.
fn icmp_errors(w: &mut World) -> Outcome {
    // A closed port: vm-001's "port unreachable" reaches the client translated.
    let refused = within(w.outside(), || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(sa(E1, 9))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.send(b"anyone?")?;
        let mut buf = [0u8; 16];
        Ok(s.recv(&mut buf).map(drop))
    })
    .map_err(err("UDP to a closed port"))?;
    ensure(
        refused
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        || format!("UDP to {E1}:9 (closed): {refused:?}, want connection refused"),
    )?;

    // PMTU discovery: a far host behind the outside router, over a link whose router end
    // has a smaller MTU. The router's "fragmentation needed" goes to the EIP and must reach
    // vm-001 translated (the quoted header included), or the transfer stalls.
    let far = NetNs::new("eipf").map_err(err("far namespace"))?;
    let setup = || -> std::io::Result<()> {
        let out = w.outside();
        out.veth("far0", "eth0", &far)?;
        out.ip(&["addr", "add", &format!("{FAR_GW}/24"), "dev", "far0"])?;
        out.ip(&["link", "set", "far0", "mtu", &FAR_MTU.to_string(), "up"])?;
        out.sysctl("net.ipv4.ip_forward", "1")?;
        far.ip(&["addr", "add", &format!("{FAR}/24"), "dev", "eth0"])?;
        far.ip(&["link", "set", "eth0", "up"])?;
        far.ip(&["route", "add", "default", "via", &FAR_GW.to_string()])?;
        w.lab
            .topo
            .hv
            .ip(&["route", "add", "192.0.2.0/24", "via", &OUTSIDE_ADDR.to_string()])?;
        Ok(())
    };
    setup().map_err(err("the far host"))?;
    let _sink = Service::sink(&far, 9000).map_err(err("sink"))?;
    const SIZE: usize = 1 << 20;
    let got = upload(w.vm(0), sa(FAR, 9000), SIZE).map_err(err("1 MiB from vm-001 to the far host"))?;
    ensure(got == SIZE as u64, || {
        format!("the far host got {got} bytes, want {SIZE}")
    })?;
    learned_pmtu(w, FAR, FAR_MTU)?;

    // The hypervisor's own external link narrower than the VM's: now the hypervisor's kernel
    // says "fragmentation needed". The egress program must hand it those packets untranslated
    // (judging a GSO super-frame per segment, as the kernel does), and nothing private leaks.
    const EXT_MTU: u32 = 1300;
    let hv = &w.lab.topo.hv;
    let _sink = Service::sink(w.outside(), 9001).map_err(err("sink"))?;
    let cap = Capture::start(w.outside(), WAN_IF).map_err(err("tcpdump outside"))?;
    hv.ip(&["link", "set", EXT_IF, "mtu", &EXT_MTU.to_string()])
        .map_err(err("ext0 mtu"))?;
    let got = upload(w.vm(0), sa(OUTSIDE_ADDR, 9001), SIZE);
    hv.ip(&["link", "set", EXT_IF, "mtu", "1500"])
        .map_err(err("ext0 mtu"))?;
    let saw = cap.finish().map_err(err("tcpdump outside"))?;
    let got = got.map_err(err("1 MiB from vm-001 to the outside over a 1300-byte ext0"))?;
    ensure(got == SIZE as u64, || {
        format!("the outside got {got} bytes, want {SIZE}")
    })?;
    ensure(!saw.contains("192.168.6."), || {
        "a private address leaked outside".into()
    })?;
    learned_pmtu(w, OUTSIDE_ADDR, EXT_MTU)
}

/// vm-001's route cache holds a path MTU of `mtu` to `to`: a "fragmentation needed" reached it.
fn learned_pmtu(w: &World, to: Ipv4Addr, mtu: u32) -> Outcome {
    let route = w
        .vm(0)
        .ip(&["route", "get", &to.to_string()])
        .map_err(err("ip route get"))?;
    let route = String::from_utf8_lossy(&route.stdout);
    ensure(route.contains(&format!("mtu {mtu}")), || {
        format!("vm-001 learned no path MTU of {mtu} to {to}: {route}")
    })
}

/// Step 4.
fn move_and_hairpin(w: &mut World) -> Outcome {
    let stream =
        Stream::start(w.outside(), sa(E1, ECHO_PORT), Duration::from_millis(10)).map_err(err("stream"))?;
    w.wait("answers from vm-001", |_| {
        Ok(stream.replies().iter().filter(|r| r.from == "vm-001").count() >= 10)
    })?;
    let asked = Instant::now();
    w.eip(&["bind", &E1.to_string(), "vm-002"])?;
    // Every datagram from this one on was sent after the move returned.
    let after = stream.sent();
    w.wait("answers from vm-002", |_| {
        Ok(stream.replies().iter().filter(|r| r.seq >= after).count() >= 20)
    })?;
    let (_, replies) = stream.finish();
    let first = replies
        .iter()
        .find(|r| r.from == "vm-002")
        .ok_or("no answer from vm-002")?;
    ensure(first.at - asked <= Duration::from_secs(1), || {
        format!("vm-002 answered {:?} after the move", first.at - asked)
    })?;
    let wrong: Vec<_> = replies
        .iter()
        .filter(|r| r.seq >= after && r.from != "vm-002")
        .collect();
    ensure(wrong.is_empty(), || {
        format!("answered by the old VM after the move: {wrong:?}")
    })?;
    let late: Vec<u64> = w.lab.heard[0]
        .seqs()
        .into_iter()
        .filter(|&s| s >= after)
        .collect();
    ensure(late.is_empty(), || {
        format!("vm-001 heard {late:?} after the move")
    })?;

    // Hairpin: each VM reaches the other through its EIP and is seen as its own EIP.
    w.eip(&["bind", &E2.to_string(), "vm-001"])?;
    whoami(
        w.vm(0),
        sa(E1, HTTP_PORT),
        "vm-002",
        sa(LAB_VMS[1].ip, HTTP_PORT),
        E2,
    )?;
    whoami(
        w.vm(1),
        sa(E2, HTTP_PORT),
        "vm-001",
        sa(LAB_VMS[0].ip, HTTP_PORT),
        E1,
    )
}

/// Step 5.
fn unbind_release_delete(w: &mut World) -> Outcome {
    w.eip(&["unbind", &E1.to_string()])?;
    ensure(!pings(w.outside(), E1), || {
        format!("{E1} still answers pings after unbind")
    })?;
    ensure(http_get(w.outside(), sa(E1, HTTP_PORT)).is_err(), || {
        format!("{E1} still answers HTTP after unbind")
    })?;
    let row = w.row(E1)?;
    ensure(
        row.as_ref().is_some_and(|r| r.state == EipState::Allocated),
        || format!("after unbind: {row:?}"),
    )?;
    w.eip(&["release", &E1.to_string()])?;
    ensure(w.row(E1)?.is_none(), || {
        format!("{E1} still listed after release")
    })?;
    // Back in the pool: it can be allocated again.
    let got = w.eip(&["alloc", &E1.to_string()])?;
    ensure(got.trim() == E1.to_string(), || {
        format!("eip alloc {E1}: {got:?}")
    })?;
    w.eip(&["release", &E1.to_string()])?;

    // Deleting a reservation (its line in the hosts file) releases its EIP by itself.
    w.eip(&["bind", &E3.to_string(), "vm-002"])?;
    whoami(
        w.outside(),
        sa(E3, HTTP_PORT),
        "vm-002",
        sa(LAB_VMS[1].ip, HTTP_PORT),
        OUTSIDE_ADDR,
    )?;
    let seen = w.history()?.last().map_or(0, |e| e.seq);
    std::fs::write(&w.lab.hosts, hosts_lines(&LAB_VMS[..1])).map_err(err("hosts file"))?;
    w.wait("vm-002's EIP to return to the pool", |w| Ok(w.row(E3)?.is_none()))?;
    let hosts = w.hosts()?;
    ensure(hosts.iter().all(|h| h.name.as_deref() != Some("vm-002")), || {
        format!("vm-002 still reserved: {hosts:?}")
    })?;
    ensure(!pings(w.outside(), E3), || {
        format!("{E3} answers after its VM's reservation went")
    })?;
    // The history records the release, as a change made after the file was edited.
    let history = w.history()?;
    let mentions =
        |r: &[eip_user::store::Record]| serde_json::to_string(r).is_ok_and(|t| t.contains("203.0.113.12"));
    ensure(
        history
            .iter()
            .any(|e| e.seq > seen && mentions(&e.before) && !mentions(&e.after)),
        || format!("no history entry released {E3}: {history:#?}"),
    )?;
    // The line comes back: vm-002 is reserved again (for the next steps).
    std::fs::write(&w.lab.hosts, hosts_lines(&LAB_VMS)).map_err(err("hosts file"))?;
    w.wait("vm-002's reservation", |w| {
        Ok(w.hosts()?.iter().any(|h| h.name.as_deref() == Some("vm-002")))
    })
}

/// Step 6.
fn quarantine(w: &mut World) -> Outcome {
    w.eip(&["bind", &E1.to_string(), "vm-002"])?;
    let both_ways =
        |w: &World, vm: usize, eip: Ipv4Addr| (pings(w.outside(), eip), pings(w.vm(vm), OUTSIDE_ADDR));
    ensure(both_ways(w, 0, E2) == (true, true), || {
        "vm-001 unreachable before quarantine".into()
    })?;
    w.eip(&["quarantine", "vm-001"])?;
    let q = both_ways(w, 0, E2);
    ensure(q == (false, false), || {
        format!("quarantined vm-001: (inbound, outbound) reachable = {q:?}, want neither")
    })?;
    ensure(both_ways(w, 1, E1) == (true, true), || {
        "vm-002 suffered from vm-001's quarantine".into()
    })?;
    whoami(
        w.vm(1),
        sa(OUTSIDE_ADDR, HTTP_PORT),
        "outside",
        sa(OUTSIDE_ADDR, HTTP_PORT),
        E1,
    )?;
    w.eip(&["unquarantine", "vm-001"])?;
    let u = both_ways(w, 0, E2);
    ensure(u == (true, true), || {
        format!("after unquarantine: (inbound, outbound) = {u:?}")
    })?;
    whoami(
        w.vm(0),
        sa(OUTSIDE_ADDR, HTTP_PORT),
        "outside",
        sa(OUTSIDE_ADDR, HTTP_PORT),
        E2,
    )
}

/// Step 7.
fn restart(w: &mut World) -> Outcome {
    let stream =
        Stream::start(w.outside(), sa(E2, ECHO_PORT), Duration::from_millis(10)).map_err(err("stream"))?;
    w.wait("answers", |_| Ok(stream.replies().len() >= 20))?;
    w.lab.stop_daemon().map_err(err("stopping the daemon"))?;
    let stopped_at = stream.sent();
    std::thread::sleep(Duration::from_secs(1));
    w.lab.start_daemon().map_err(err("starting the daemon"))?;
    let started_at = stream.sent();
    w.wait("answers after the restart", |_| {
        Ok(stream.replies().iter().filter(|r| r.seq >= started_at).count() >= 50)
    })?;
    let (sent, replies) = stream.finish();
    let answered: BTreeSet<u64> = replies.iter().map(|r| r.seq).collect();
    let lost: Vec<u64> = (0..sent).filter(|s| !answered.contains(s)).collect();
    ensure(started_at - stopped_at >= 50, || {
        format!(
            "only {} datagrams went out while the daemon was down",
            started_at - stopped_at
        )
    })?;
    ensure(lost.is_empty() && replies.len() as u64 == sent, || {
        format!(
            "{} of {sent} datagrams lost ({} answers), the daemon down for {stopped_at}..{started_at}: {lost:?}",
            lost.len(),
            replies.len()
        )
    })
}

/// A step after the first: what it checks, and the check.
type Step = (&'static str, fn(&mut World) -> Outcome);

const STEPS: [Step; 6] = [
    (
        "an EIP bound to vm-001 by name: ping, TCP and UDP from outside (the VM sees the client), \
         TCP out (the outside sees the EIP), no bad checksum on either side",
        traffic,
    ),
    (
        "ICMP errors through the NAT: a closed UDP port refuses a connected socket; 1 MiB with DF \
         across a 1400-byte hop beyond, and across a 1300-byte ext0, completes by PMTU discovery",
        icmp_errors,
    ),
    (
        "move to vm-002: traffic follows within 1 s, vm-001 hears nothing more; a second EIP on \
         vm-001; hairpin both ways",
        move_and_hairpin,
    ),
    (
        "unbind: unreachable; release: back in the pool; vm-002's reservation deleted: its EIP \
         returns to the pool",
        unbind_release_delete,
    ),
    (
        "quarantine vm-001: its traffic stops both ways, vm-002's does not; unquarantine restores it",
        quarantine,
    ),
    (
        "daemon restart under a 100 packet/s UDP stream through an EIP: none lost",
        restart,
    ),
];

/// Step 1 (the lab and DHCP), the steps of [`STEPS`], and the cleanup.
const TOTAL: usize = STEPS.len() + 2;

struct Report {
    passed: u32,
    failed: u32,
}

impl Report {
    /// Runs one step (a panic is a failure) and prints its line.
    fn step<T>(&mut self, n: usize, what: &str, f: impl FnOnce() -> Result<T, String>) -> Option<T> {
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
            Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()))
        });
        let took = started.elapsed().as_secs_f64();
        match outcome {
            Ok(v) => {
                self.passed += 1;
                println!("e2e step {n}/{TOTAL} PASS ({took:.1} s): {what}");
                Some(v)
            }
            Err(e) => {
                self.failed += 1;
                println!("e2e step {n}/{TOTAL} FAIL ({took:.1} s): {what}");
                for line in e.lines() {
                    println!("    {line}");
                }
                None
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{NAME}: test");
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| NAME.contains(f.as_str())) {
        println!("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out");
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    let mut report = Report { passed: 0, failed: 0 };
    let world = report.step(
        1,
        "vm-001 (udhcpc) and vm-002 (dhclient) get their reservations from the daemon's DHCP",
        || {
            let lab = Lab::start(Path::new(BIN), None, &|_| {}).map_err(err("the lab"))?;
            let mut w = World { lab };
            dhcp(&mut w).map(|()| w)
        },
    );
    match world {
        Some(mut w) => {
            for (i, (what, f)) in STEPS.iter().enumerate() {
                report.step(i + 2, what, || f(&mut w));
            }
            report.step(
                TOTAL,
                "every namespace, pin, alias, file and process of the test is gone",
                || {
                    let left = w.lab.close();
                    ensure(left.is_empty(), || format!("left behind: {left:#?}"))
                },
            );
        }
        None => {
            for (i, (what, _)) in STEPS.iter().enumerate() {
                report.step(i + 2, what, || {
                    Err::<(), _>("not run: the lab did not start".into())
                });
            }
            report.step(
                TOTAL,
                "every namespace, pin, alias, file and process of the test is gone",
                || Err::<(), _>("not run: the lab did not start (what it had made was dropped)".into()),
            );
        }
    }
    println!(
        "test result: {}. {} passed; {} failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s",
        if report.failed == 0 { "ok" } else { "FAILED" },
        report.passed,
        report.failed,
        started.elapsed().as_secs_f64()
    );
    if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
