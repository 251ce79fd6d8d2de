//! The DHCP server with real clients (busybox udhcpc, ISC dhclient) in VM namespaces
//! on the bridge: the reserved address and options, renewal, release, a daemon restart, a
//! reservation changed at runtime, dynamic leases feeding the dataplane, the lease script,
//! and hostile datagrams.

use std::{
    net::{Ipv4Addr, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use eip_user::{
    api::{Leases, Stats},
    kernel::pins::Pins,
    testing::{
        clients::{self, Dhclient},
        daemon::Instance,
        lab::daemon_args,
        netns::NetNs,
        process::{Background, Capture},
        topology::{vm_mac as mac, *},
    },
};

const BIN: &str = env!("CARGO_BIN_EXE_eip");

fn mac_str(n: u8) -> String {
    eip_user::model::fmt_mac(mac(n))
}

/// VMs without addresses (their DHCP clients configure them), reservations vm1..vmN in a
/// hosts file, a lease script that logs its arguments, and a daemon.
struct Lab {
    daemon: Option<Background>,
    args: Vec<String>,
    inst: Instance,
    topo: Topology,
    hosts: PathBuf,
}

impl Lab {
    /// `macs`: the VMs' MACs; `reserved`: how many of the first get a reservation.
    fn new(macs: &[u8], reserved: u8, extra: &[&str]) -> Lab {
        let vms: Vec<_> = macs.iter().map(|&n| (mac(n), None)).collect();
        let topo = Topology::new(&vms).expect("topology");
        let inst = Instance::new(Path::new(BIN), &topo.hv).expect("instance");
        let hosts = inst.dir.join("hosts");
        let text: String = (1..=reserved)
            .map(|i| format!("{},vm{i},{}\n", mac_str(i), vm_ip(i)))
            .collect();
        std::fs::write(&hosts, text).unwrap();
        let script = inst.dir.join("lease-script");
        write_script(
            &script,
            &format!("echo \"$@\" >> {}\n", inst.dir.join("lease-events").display()),
        );
        let mut args = daemon_args(&hosts);
        args.extend(["--lease-script".into(), script.to_string_lossy().into_owned()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut lab = Lab {
            daemon: None,
            args,
            inst,
            topo,
            hosts,
        };
        lab.start();
        lab
    }

    fn start(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.daemon = Some(self.inst.start(&args).expect("daemon"));
    }

    fn stop(&mut self) {
        self.inst.stop(self.daemon.take().expect("running"));
    }

    fn log(&self) -> String {
        self.inst.log_text()
    }

    /// Runs the CLI and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.inst.ok(args)
    }

    fn leases(&self) -> Leases {
        serde_json::from_str(&self.ok(&["leases", "--json"])).expect("leases JSON")
    }

    fn dhcp(&self, group: &str, name: &str) -> u64 {
        let s: Stats = serde_json::from_str(&self.ok(&["stats", "--json"])).expect("stats JSON");
        let d = s.dhcp.expect("DHCP counters");
        let list = match group {
            "received" => d.received,
            "sent" => d.sent,
            _ => d.dropped,
        };
        list.into_iter().find(|(n, _)| n == name).map_or(0, |(_, v)| v)
    }

    fn lease_events(&self) -> Vec<String> {
        std::fs::read_to_string(self.inst.dir.join("lease-events"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn vm(&self, i: usize) -> &NetNs {
        &self.topo.vms[i].ns
    }

    fn file(&self, name: &str) -> PathBuf {
        self.inst.dir.join(name)
    }
}

fn write_script(path: &Path, body: &str) {
    clients::write_script(path, body).expect("write a script");
}

/// Waits (at most 20 s) until `f` holds; panics with `what` and the daemon's log otherwise.
fn wait_for(lab: &Lab, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn signal(p: &Background, sig: i32) {
    // SAFETY: kill(2) on the PID of a child this test started and still owns.
    assert_eq!(unsafe { libc::kill(p.pid() as i32, sig) }, 0);
}

fn vm_addrs(ns: &NetNs) -> String {
    String::from_utf8_lossy(&ns.ip(&["-4", "-o", "addr", "show", "dev", VM_IF]).unwrap().stdout).into_owned()
}

/// busybox udhcpc (see `testing::clients::udhcpc`), logging to `DIR/TAG.log`.
fn udhcpc(lab: &Lab, vm: usize, log: &str) -> Background {
    let tag = log.strip_suffix(".log").expect("a .log name");
    clients::udhcpc(lab.vm(vm), &lab.inst.dir, tag).expect("udhcpc")
}

#[test]
fn udhcpc_gets_its_reservation_renews_survives_a_restart_and_releases() {
    let mut lab = Lab::new(
        &[1],
        1,
        &[
            "--lease-time",
            "1h",
            "--dns",
            "198.51.100.53",
            "--domain",
            "lab.example",
            "--mtu",
            "1400",
        ],
    );
    let log = lab.file("udhcpc.log");
    let client = udhcpc(&lab, 0, "udhcpc.log");
    wait_for(&lab, "a lease", || {
        lines(&log).iter().any(|l| l.starts_with("bound"))
    });
    let bound = lines(&log).into_iter().find(|l| l.starts_with("bound")).unwrap();
    assert_eq!(
        bound,
        "bound ip=192.168.6.11 router=192.168.6.22 lease=3600 subnet=255.255.255.0 dns=198.51.100.53 \
         domain=lab.example hostname=vm1 mtu=1400"
    );
    assert!(
        vm_addrs(lab.vm(0)).contains("192.168.6.11/24"),
        "{}",
        vm_addrs(lab.vm(0))
    );
    // The VM reaches its gateway with the address it got (the dataplane lets it through).
    lab.vm(0)
        .exec("ping", &["-c", "1", "-W", "2", "192.168.6.22"])
        .expect("ping the gateway");

    let l = lab.leases();
    assert_eq!(l.leases.len(), 1);
    let row = &l.leases[0];
    assert_eq!((row.lease.ip, row.reserved), (vm_ip(1), true));
    assert_eq!(row.lease.hostname.as_deref(), Some("vm1"));
    assert!(
        (3590..=3600).contains(&(row.lease.expires - l.now)),
        "{row:?} now {}",
        l.now
    );
    let text = lab.ok(&["leases"]);
    assert!(
        text.contains("52:54:00:00:00:01 192.168.6.11") && text.contains("reserved"),
        "{text}"
    );
    assert_eq!(lab.lease_events(), ["add 52:54:00:00:00:01 192.168.6.11 vm1"]);

    // Renew: ACK for the same address, and the script hears "old". (A request within 2 s of
    // its grant is answered from the stored lease without a write or an event; a real client
    // renews at T1, so the test waits that long first.)
    std::thread::sleep(Duration::from_millis(2100));
    signal(&client, libc::SIGUSR1);
    wait_for(&lab, "a renewal", || {
        lines(&log).iter().any(|l| l.starts_with("renew"))
    });
    wait_for(&lab, "the old event", || lab.lease_events().len() == 2);
    assert_eq!(lab.lease_events()[1], "old 52:54:00:00:00:01 192.168.6.11 vm1");

    // Restart the daemon: the lease is in the store, so the next renewal is an ACK too.
    lab.stop();
    lab.start();
    std::thread::sleep(Duration::from_millis(2100));
    signal(&client, libc::SIGUSR1);
    wait_for(&lab, "a renewal after the restart", || {
        lines(&log).iter().filter(|l| l.starts_with("renew")).count() == 2
    });
    // udhcpc deconfigures once as it starts; never again after its lease.
    let after_bound: Vec<String> = lines(&log)
        .into_iter()
        .skip_while(|l| !l.starts_with("bound"))
        .collect();
    assert!(
        !after_bound
            .iter()
            .any(|l| l.starts_with("nak") || l.starts_with("deconfig")),
        "{after_bound:?}"
    );
    assert!(vm_addrs(lab.vm(0)).contains("192.168.6.11/24"));

    // Release (SIGUSR2): the server ends the lease and the script hears "del".
    signal(&client, libc::SIGUSR2);
    wait_for(&lab, "the release", || lab.leases().leases.is_empty());
    wait_for(&lab, "the del event", || {
        lab.lease_events().last().map(String::as_str) == Some("del 52:54:00:00:00:01 192.168.6.11 vm1")
    });
    // At start the daemon told the script of the lease it kept ("old", like dnsmasq).
    assert_eq!(
        lab.lease_events(),
        [
            "add 52:54:00:00:00:01 192.168.6.11 vm1",
            "old 52:54:00:00:00:01 192.168.6.11 vm1",
            "old 52:54:00:00:00:01 192.168.6.11 vm1",
            "old 52:54:00:00:00:01 192.168.6.11 vm1",
            "del 52:54:00:00:00:01 192.168.6.11 vm1",
        ]
    );
    let history = lab.ok(&["history"]);
    for what in [
        "dhcp: leased 192.168.6.11",
        "dhcp: renewed 192.168.6.11",
        "released 192.168.6.11",
    ] {
        assert!(history.contains(what), "{what} not in\n{history}");
    }
    assert_eq!(lab.dhcp("received", "release"), 1);
    assert!(lab.dhcp("sent", "ack") >= 1);
    client.stop().unwrap();
}

#[test]
fn a_changed_reservation_moves_the_client_on_renewal() {
    let lab = Lab::new(&[1], 1, &["--lease-time", "1h"]);
    let log = lab.file("udhcpc.log");
    let client = udhcpc(&lab, 0, "udhcpc.log");
    wait_for(&lab, "a lease", || {
        lines(&log).iter().any(|l| l.starts_with("bound ip=192.168.6.11"))
    });
    std::fs::write(&lab.hosts, format!("{},vm1,192.168.6.15\n", mac_str(1))).unwrap();
    wait_for(&lab, "the hosts file reload", || {
        lab.ok(&["host", "list"]).contains("192.168.6.15")
    });
    signal(&client, libc::SIGUSR1);
    wait_for(&lab, "the new address", || {
        lines(&log).iter().any(|l| l.starts_with("bound ip=192.168.6.15"))
    });
    let events = lines(&log);
    let nak = events
        .iter()
        .position(|l| l.starts_with("nak"))
        .unwrap_or_else(|| panic!("no NAK before the new address: {events:?}\n{}", lab.log()));
    let rebound = events
        .iter()
        .position(|l| l.starts_with("bound ip=192.168.6.15"))
        .unwrap();
    assert!(nak < rebound, "{events:?}");
    assert!(vm_addrs(lab.vm(0)).contains("192.168.6.15/24"));
    let l = lab.leases();
    assert_eq!(
        l.leases.iter().map(|r| r.lease.ip).collect::<Vec<_>>(),
        [Ipv4Addr::new(192, 168, 6, 15)]
    );
    assert_eq!(
        lab.lease_events(),
        [
            "add 52:54:00:00:00:01 192.168.6.11 vm1",
            "del 52:54:00:00:00:01 192.168.6.11 vm1",
            "add 52:54:00:00:00:01 192.168.6.15 vm1",
        ]
    );
    assert!(lab.dhcp("sent", "nak") >= 1);
    client.stop().unwrap();
}

#[test]
fn dhclient_gets_its_reservation_renews_and_releases() {
    let lab = Lab::new(&[1], 1, &["--lease-time", "6s"]);
    let log = lab.file("dhclient.log");
    let dhclient = Dhclient::new(&lab.inst.dir, "dhclient").expect("dhclient files");
    let client = dhclient.spawn(lab.vm(0)).expect("dhclient");
    wait_for(&lab, "a lease", || {
        lines(&log).iter().any(|l| l.starts_with("BOUND"))
    });
    let bound = lines(&log).into_iter().find(|l| l.starts_with("BOUND")).unwrap();
    assert_eq!(
        bound,
        "BOUND ip=192.168.6.11 router=192.168.6.22 lease=6 mask=255.255.255.0"
    );
    assert!(vm_addrs(lab.vm(0)).contains("192.168.6.11/24"));
    // dhclient renews by itself at half the lease (3 s).
    wait_for(&lab, "a renewal", || {
        lines(&log).iter().any(|l| l.starts_with("RENEW ip=192.168.6.11"))
    });
    // `dhclient -r` releases the lease and stops the running client.
    dhclient.release(lab.vm(0)).expect("dhclient -r");
    wait_for(&lab, "the release", || lab.leases().leases.is_empty());
    assert_eq!(lab.dhcp("received", "release"), 1);
    assert!(
        lab.lease_events()
            .iter()
            .any(|e| e.starts_with("old 52:54:00:00:00:01 192.168.6.11"))
    );
    assert_eq!(
        lab.lease_events().last().map(String::as_str),
        Some("del 52:54:00:00:00:01 192.168.6.11 vm1")
    );
    drop(client);
}

#[test]
fn a_dynamic_lease_feeds_the_dataplane_and_becomes_a_reservation() {
    let lab = Lab::new(
        &[1, 9],
        1,
        &[
            "--lease-time",
            "1h",
            "--dhcp-range",
            "192.168.6.100-192.168.6.109",
        ],
    );
    let log = lab.file("udhcpc.log");
    let client = udhcpc(&lab, 1, "udhcpc.log");
    wait_for(&lab, "a dynamic lease", || {
        lines(&log).iter().any(|l| l.starts_with("bound"))
    });
    let l = lab.leases();
    assert_eq!(l.leases.len(), 1);
    let got = l.leases[0].lease.ip;
    assert!(!l.leases[0].reserved);
    assert!((100..=109).contains(&got.octets()[3]), "{got}");
    // The lease is the MAC's anti-spoofing entry in the pinned dataplane.
    let macs = Pins::new(&lab.inst.name).unwrap().macs().unwrap();
    assert_eq!(macs.get(&mac(9)), Some(&got));
    // A reservation of the leased address keeps the lease; then an EIP binds to it.
    lab.ok(&["host", "add", &mac_str(9), &got.to_string(), "--name", "dyn"]);
    assert_eq!(lab.leases().leases.len(), 1);
    lab.ok(&["bind", "203.0.113.9", "dyn"]);
    lab.topo
        .outside
        .exec("ping", &["-c", "1", "-W", "2", "203.0.113.9"])
        .expect("the EIP reaches the dynamic VM");
    client.stop().unwrap();
}

/// The value of option `code` in a DHCP message.
fn option(msg: &[u8], code: u8) -> Option<&[u8]> {
    let mut i = 240;
    while i < msg.len() {
        match msg[i] {
            0 => i += 1,
            255 => return None,
            c => {
                let len = *msg.get(i + 1)? as usize;
                let value = msg.get(i + 2..i + 2 + len)?;
                if c == code {
                    return Some(value);
                }
                i += 2 + len;
            }
        }
    }
    None
}

/// A DHCP message a client could send, from `mac`, with `t` as its type.
fn discover(mac: [u8; 6]) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    b[28..34].copy_from_slice(&mac);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(&[53, 1, 1, 255]);
    b
}

#[test]
fn a_relay_on_the_bridge_gets_the_offer_at_its_server_port_and_others_are_dropped() {
    // perfdhcp, for one, always sends as a relay agent.
    let lab = Lab::new(&[1, 2], 1, &["--lease-time", "1h"]);
    let relay = lab.vm(1);
    relay
        .ip(&["addr", "add", "192.168.6.50/24", "dev", VM_IF])
        .unwrap();
    let _in = relay.enter().unwrap();
    let s = UdpSocket::bind("192.168.6.50:67").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let server = format!("{BRIDGE_ADDR}:67");
    let relayed = |giaddr: [u8; 4]| {
        let mut b = discover(mac(1));
        b[24..28].copy_from_slice(&giaddr);
        b
    };
    s.send_to(&relayed([192, 168, 6, 50]), &server).unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = s.recv_from(&mut buf).expect("an OFFER at the relay's port 67");
    assert_eq!(from.to_string(), server);
    let offer = &buf[..n];
    assert_eq!(offer[0], 2, "a BOOTREPLY");
    assert_eq!(offer[4..8], 0xdead_beefu32.to_be_bytes(), "the request's xid");
    assert_eq!(offer[16..20], vm_ip(1).octets(), "yiaddr: vm1's reservation");
    assert_eq!(offer[24..28], [192, 168, 6, 50], "giaddr kept");
    assert_eq!(offer[28..34], mac(1), "chaddr");
    assert_eq!(option(offer, 53), Some(&[2][..]), "DHCPOFFER");
    // A relay for another subnet wants another subnet's addresses: dropped and counted.
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.send_to(&relayed([10, 9, 9, 9]), &server).unwrap();
    assert!(s.recv_from(&mut buf).is_err(), "no answer to a foreign relay");
    wait_for(&lab, "the foreign relay's DISCOVER to be counted", || {
        lab.dhcp("dropped", "relayed") == 1
    });
}

#[test]
fn hostile_datagrams_are_dropped_and_counted_and_nothing_answers_off_the_bridge() {
    let lab = Lab::new(&[1, 2], 1, &["--lease-time", "1h"]);
    // The attacker (VM 2, no reservation) has an address so it can send from port 68.
    let attacker = lab.vm(1);
    attacker
        .ip(&["addr", "add", "192.168.6.40/24", "dev", VM_IF])
        .unwrap();
    let outside_capture =
        Capture::start_filter(&lab.topo.outside, WAN_IF, "udp port 67 or udp port 68").unwrap();
    let sent_before = lab.dhcp("sent", "offer");
    {
        let _in = attacker.enter().unwrap();
        let s = UdpSocket::bind("192.168.6.40:68").unwrap();
        s.set_broadcast(true).unwrap();
        let to = "255.255.255.255:67";
        let good = discover(mac(2));
        let mut reply = good.clone();
        reply[0] = 2;
        let mut overrun = good[..240].to_vec();
        overrun.extend_from_slice(&[53, 1, 1, 12, 200, b'x']);
        let mut big = good.clone();
        big.resize(1600, 0);
        for b in [&good[..100], &reply[..], &overrun[..], &big[..]] {
            s.send_to(b, to).unwrap();
        }
        // The attacker's own MAC, again and again.
        for _ in 0..5 {
            s.send_to(&good, to).unwrap();
        }
        // A flood of DISCOVERs from random MACs, in bursts of 100, each burst counted before
        // the next is sent (a burst larger than the socket's buffer would lose datagrams in
        // the kernel, and the count here is exact).
        for batch in 0..20u32 {
            for i in 0..100u32 {
                let n = batch * 100 + i;
                let m = [0x02, 0xee, (n >> 16) as u8, (n >> 8) as u8, n as u8, 0x99];
                s.send_to(&discover(m), to).unwrap();
            }
            let want = 5 + u64::from(batch + 1) * 100;
            wait_for(&lab, "a burst to be counted", || {
                lab.dhcp("dropped", "unknown_mac") == want
            });
        }
    }
    wait_for(&lab, "the flood to be counted", || {
        lab.dhcp("dropped", "unknown_mac") == 2005
    });
    for (reason, n) in [
        ("truncated", 1),
        ("not_request", 1),
        ("bad_options", 1),
        ("oversized", 1),
    ] {
        assert_eq!(lab.dhcp("dropped", reason), n, "{reason}");
    }
    assert_eq!(
        lab.dhcp("sent", "offer"),
        sent_before,
        "no offer to anyone unknown"
    );
    assert!(lab.leases().leases.is_empty());
    assert_eq!(lab.ok(&["host", "list", "--json"]).matches("\"mac\"").count(), 1);
    // The log names an unknown MAC once a minute, not once a message.
    let named = lab
        .log()
        .lines()
        .filter(|l| l.contains("no address for this MAC") && l.contains("52:54:00:00:00:02"))
        .count();
    assert_eq!(named, 1);

    // A DISCOVER for the reserved MAC from outside the bridge gets nothing.
    let received = lab.dhcp("received", "discover");
    {
        let _in = lab.topo.outside.enter().unwrap();
        let s = UdpSocket::bind(format!("{OUTSIDE_ADDR}:68")).unwrap();
        s.set_broadcast(true).unwrap();
        for _ in 0..3 {
            s.send_to(&discover(mac(1)), "255.255.255.255:67").unwrap();
            s.send_to(&discover(mac(1)), format!("{EXT_ADDR}:67")).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        lab.dhcp("received", "discover"),
        received,
        "the server heard the outside"
    );
    let outside = outside_capture.finish().unwrap();
    assert!(
        !outside.contains(".68:") && !outside.contains("BOOTP/DHCP, Reply"),
        "{outside}"
    );

    // Still serving: the reserved VM gets its address.
    let log = lab.file("udhcpc.log");
    let client = udhcpc(&lab, 0, "udhcpc.log");
    wait_for(&lab, "a lease after the flood", || {
        lines(&log).iter().any(|l| l.starts_with("bound ip=192.168.6.11"))
    });
    client.stop().unwrap();
}
