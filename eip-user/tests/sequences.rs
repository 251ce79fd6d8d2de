//! The engine (store, lifecycle, the DHCP handler, the planner, an in-memory kernel) as one
//! system: random command sequences, after each of which the kernel holds exactly what the
//! state asks for and the store reloads to the same state; and reconciliation repairing what
//! was lost behind the engine's back.

use std::net::Ipv4Addr;

use eip_user::{
    engine::Engine,
    kernel::{Kernel, KernelView, MemKernel},
    lifecycle::{
        Change, HostsLine, Limits, Refusal, Target, alloc, bind, bind_limited, expire, host_add, host_del,
        pool_add, quarantine, release, stale_leases, sync_file_hosts, unbind,
    },
    model::{Mac, RateLimit},
    store::Store,
    testing::control::{ip, limits, mac, name},
};

fn rate_limit(bps: u64) -> RateLimit {
    RateLimit {
        rate_bps: bps,
        burst_bytes: None,
    }
}

use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Alloc(Option<u8>),
    Bind(u8, u8, bool),
    Unbind(u8),
    Release(u8),
    HostAdd(u8, u8),
    HostDel(u8),
    Quarantine(u8, bool),
    File(Vec<(u8, u8)>),
    /// A DHCP client (MAC) asks for an address (INIT-REBOOT) through the real handler.
    Dhcp(u8, u8),
    /// The DHCP client lets its lease go.
    DhcpRelease(u8),
    /// The clock moves on this many seconds and leases expire.
    Expire(u16),
}

fn op() -> impl Strategy<Value = Op> {
    let e = 0u8..8;
    let m = 1u8..8;
    prop_oneof![
        proptest::option::of(e.clone()).prop_map(Op::Alloc),
        (e.clone(), m.clone(), any::<bool>()).prop_map(|(a, b, c)| Op::Bind(a, b, c)),
        e.clone().prop_map(Op::Unbind),
        e.prop_map(Op::Release),
        (m.clone(), 10u8..16).prop_map(|(a, b)| Op::HostAdd(a, b)),
        m.clone().prop_map(Op::HostDel),
        (m.clone(), any::<bool>()).prop_map(|(a, b)| Op::Quarantine(a, b)),
        proptest::collection::vec((m.clone(), 10u8..16), 0..6).prop_map(Op::File),
        (m.clone(), 10u8..16).prop_map(|(a, b)| Op::Dhcp(a, b)),
        m.prop_map(Op::DhcpRelease),
        (0u16..3000).prop_map(Op::Expire),
    ]
}

/// A client message of type `t` from `mac(m)` with `requested` (or ciaddr for a release).
fn dhcp(m: u8, t: dhcproto::v4::MessageType, addr: Ipv4Addr) -> Vec<u8> {
    use dhcproto::v4::{DhcpOption, Message, MessageType};
    let release = t == MessageType::Release;
    let ciaddr = if release { addr } else { Ipv4Addr::UNSPECIFIED };
    let u = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(7, ciaddr, u, u, u, &mac(m).0);
    msg.opts_mut().insert(DhcpOption::MessageType(t));
    if !release {
        msg.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
    }
    let mut buf = Vec::new();
    dhcproto::Encodable::encode(&msg, &mut dhcproto::Encoder::new(&mut buf)).unwrap();
    buf
}

fn eip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, n)
}

fn priv_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 6, n)
}

/// The lifecycle of one property case: an engine on a fresh store with a pool, the DHCP
/// settings and the clock that the ops run against.
struct World {
    en: Engine<MemKernel>,
    l: Limits,
    cfg: eip_user::dhcp::Settings,
    offers: eip_user::dhcp::handler::Offers,
    now: u64,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        // Dynamic leases from .13-.15, inside the addresses reservations take too.
        let range = eip_user::model::Range {
            start: priv_ip(13),
            end: priv_ip(15),
        };
        // Room for two reservations beside the range's three leases: the seven
        // MACs do not all fit, and the kernel's VM table is as small as that.
        let l = Limits {
            dynamic: Some(range),
            max_vms: 5,
            ..limits()
        };
        let cfg = eip_user::dhcp::Settings {
            server: l.gateway,
            net: l.private,
            lease_time: 1000,
            dns: vec![],
            domain: None,
            mtu: None,
            range: Some(range),
        };
        let kernel = MemKernel {
            vm_capacity: Some(5),
            ..MemKernel::default()
        };
        let mut en = Engine::new(Store::open(dir.path()).unwrap(), kernel, l).unwrap();
        let c = pool_add(en.state(), &l, "203.0.113.0/29".parse().unwrap(), &[]);
        en.run("pool", c).await.unwrap();
        World {
            en,
            l,
            cfg,
            offers: Default::default(),
            now: 1_800_000_000,
            _dir: dir,
        }
    }

    /// The change `op` asks of the current state.
    fn change(&mut self, op: &Op) -> Result<Change, Refusal> {
        let (s, l) = (self.en.state().clone(), self.l);
        match op {
            Op::Alloc(a) => alloc(&s, &l, a.map(eip)).map(|(_, c)| c),
            Op::Bind(a, m, no_move) => bind(&s, &l, eip(*a), &Target::Mac(mac(*m)), *no_move),
            Op::Unbind(a) => unbind(&s, eip(*a)),
            Op::Release(a) => release(&s, eip(*a)),
            Op::HostAdd(m, a) => host_add(&s, &l, mac(*m), priv_ip(*a), None),
            Op::HostDel(m) => host_del(&s, &l, &mac(*m).to_string()),
            Op::Quarantine(m, on) => quarantine(&s, &Target::Mac(mac(*m)), *on),
            Op::File(lines) => {
                let lines: Vec<HostsLine> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, (m, a))| HostsLine {
                        line: i + 1,
                        mac: mac(*m),
                        name: None,
                        ip: priv_ip(*a),
                    })
                    .collect();
                Ok(sync_file_hosts(&s, &l, &lines).0)
            }
            Op::Dhcp(m, a) | Op::DhcpRelease(m @ a) => {
                let (t, addr) = match op {
                    Op::Dhcp(..) => (dhcproto::v4::MessageType::Request, priv_ip(*a)),
                    _ => (
                        dhcproto::v4::MessageType::Release,
                        s.leases.get(&mac(*m)).map_or(priv_ip(10), |l| l.ip),
                    ),
                };
                let o = eip_user::dhcp::handler::handle(
                    &self.cfg,
                    &s,
                    &mut self.offers,
                    self.now,
                    &dhcp(*m, t, addr),
                );
                Ok(Change {
                    writes: o.writes,
                    message: o.command,
                })
            }
            Op::Expire(secs) => {
                self.now += u64::from(*secs);
                Ok(expire(&s, self.now))
            }
        }
    }

    /// Runs `op`; a refusal is fine (and changes nothing), any other failure is not.
    async fn run(&mut self, op: &Op) -> bool {
        let c = self.change(op);
        let refused = c.is_err();
        self.en
            .run("op", c)
            .await
            .map(|_| ())
            .or_else(|e| match e {
                eip_user::engine::EngineError::Refused(_) => Ok(()),
                other => Err(other),
            })
            .unwrap();
        refused
    }
}

/// Kernel entries in the daemon's maps that no store asked for, or that a store asked
/// for once: what a kill -9, a bpftool write or another daemon leaves behind.
#[derive(Debug, Clone)]
struct Debris {
    dnat: Vec<(u8, u8, u32)>,
    snat: Vec<(u8, u8, u32)>,
    vms: Vec<(u8, u8, u16)>,
    macs: Vec<(u8, u8, u16)>,
    aliases: Vec<u8>,
    /// Pools in the trie: 203.0.113.0/29 (the state's) or 198.18.N.0/24 (foreign).
    pools: Vec<u8>,
    /// Start from the kernel the state asks for (then overwrite), or from an empty one.
    from_desired: bool,
}

fn debris() -> impl Strategy<Value = Debris> {
    let e = 0u8..8;
    let p = 10u8..16;
    let m = 1u8..8;
    fn few<S: Strategy>(s: S) -> proptest::collection::VecStrategy<S> {
        proptest::collection::vec(s, 0..4)
    }
    (
        few((e.clone(), p.clone(), 0u32..8)),
        few((p.clone(), e.clone(), 0u32..8)),
        few((p.clone(), m.clone(), 0u16..2)),
        few((m, p, 0u16..2)),
        few(e),
        few(0u8..3),
        any::<bool>(),
    )
        .prop_map(|(dnat, snat, vms, macs, aliases, pools, from_desired)| Debris {
            dnat,
            snat,
            vms,
            macs,
            aliases,
            pools,
            from_desired,
        })
}

/// Writes `d` into the in-memory kernel.
fn scatter(k: &mut MemKernel, d: &Debris) {
    use eip_common::maps::Binding;
    let bind = |a: Ipv4Addr, slot| Binding {
        addr: a.to_bits(),
        slot,
    };
    if !d.from_desired {
        k.maps.dnat.clear();
        k.maps.snat.clear();
        k.vms.clear();
        k.macs.clear();
        k.aliases.clear();
        k.pools.clear();
    }
    for &(e, p, slot) in &d.dnat {
        k.maps.dnat.insert(eip(e), bind(priv_ip(p), slot));
    }
    for &(p, e, slot) in &d.snat {
        k.maps.snat.insert(priv_ip(p), bind(eip(e), slot));
    }
    for &(p, m, f) in &d.vms {
        k.vms.insert(priv_ip(p), (mac(m), f));
    }
    for &(m, p, f) in &d.macs {
        k.macs.insert(mac(m), (priv_ip(p), f));
    }
    k.aliases.extend(d.aliases.iter().map(|e| eip(*e)));
    k.pools.extend(d.pools.iter().map(|&n| match n {
        0 => "203.0.113.0/29".parse::<ipnet::Ipv4Net>().unwrap(),
        n => format!("198.18.{n}.0/24").parse().unwrap(),
    }));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn kernel_and_store_follow_the_state(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut w = World::new().await;
            for op in ops {
                let s = w.en.state().clone();
                let refused = w.run(&op).await;
                let en = &mut w.en;
                if refused {
                    prop_assert_eq!(en.state(), &s, "a refusal changed the state: {:?}", op);
                }
                let view = en.kernel_mut().view().await.unwrap();
                prop_assert_eq!(&view, &KernelView::desired(en.state()), "after {:?}", op);
                prop_assert_eq!(&en.store().load().unwrap(), en.state());
                // One EIP per VM, one VM per EIP.
                let bound: Vec<Mac> = en.state().eips.values().filter_map(|e| e.bound).collect();
                let mut dedup = bound.clone();
                dedup.sort();
                dedup.dedup();
                prop_assert_eq!(bound.len(), dedup.len());
                // Every lease is backed: its MAC's reservation, or a dynamic address in the
                // range that nobody has reserved.
                prop_assert!(stale_leases(en.state(), &w.l).is_empty(), "after {:?}: {:?}", op, en.state().leases);
                let mut ips: Vec<Ipv4Addr> = en.state().vms().values().map(|g| g.0).collect();
                let n = ips.len();
                ips.sort();
                ips.dedup();
                prop_assert_eq!(n, ips.len(), "two VM entries claim one address");
            }
            Ok(())
        })?;
    }

    /// From any kernel (stale, missing and foreign entries in every map, aliases missing
    /// or extra) one reconcile pass makes it what the store asks for, without failing on
    /// an entry that is already gone (the in-memory maps refuse a delete of a missing key,
    /// as the kernel does); a second pass finds nothing to do.
    #[test]
    fn reconcile_converges_in_one_pass_from_any_kernel(
        ops in proptest::collection::vec(op(), 0..25),
        d in debris(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut w = World::new().await;
            for op in &ops {
                w.run(op).await;
            }
            let desired = KernelView::desired(w.en.state());
            w.en.kernel_mut().vm_capacity = None;
            scatter(w.en.kernel_mut(), &d);
            w.en.reconcile().await.map_err(|e| TestCaseError::fail(format!("reconcile failed: {e}")))?;
            prop_assert_eq!(&w.en.kernel_mut().view().await.unwrap(), &desired);
            prop_assert_eq!(w.en.reconcile().await.unwrap(), 0, "the second pass changed something");
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn reconcile_puts_back_a_limit_the_kernel_lost() {
    let dir = tempfile::tempdir().unwrap();
    let l = limits();
    let mut en = Engine::new(Store::open(dir.path()).unwrap(), MemKernel::default(), l).unwrap();
    let c = pool_add(en.state(), &l, "203.0.113.0/29".parse().unwrap(), &[]);
    en.run("pool add", c).await.unwrap();
    let c = host_add(en.state(), &l, mac(1), ip("192.168.6.11"), Some("vm1".into()));
    en.run("host add", c).await.unwrap();
    let twenty = rate_limit(20_000_000);
    let c = bind_limited(en.state(), &l, ip("203.0.113.3"), &name("vm1"), false, twenty);
    en.run("bind", c).await.unwrap();
    assert_eq!(
        en.kernel_mut().view().await.unwrap(),
        KernelView::desired(en.state())
    );
    // The slot's limit gone from the kernel (a map re-created, say): put back in one pass.
    en.kernel_mut().limits.clear();
    assert_eq!(en.reconcile().await.unwrap(), 1);
    assert_eq!(
        en.kernel_mut().view().await.unwrap(),
        KernelView::desired(en.state())
    );
    assert!(en.kernel_mut().limits.values().all(|l| l.inbound.is_limited()));
}
