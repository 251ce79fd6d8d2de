//! Per-EIP bandwidth limits: a policer by virtual scheduling (GCRA, ITU-T I.371; the
//! "theoretical arrival time" form that Cilium's bandwidth manager uses for EDT, here
//! deciding pass or drop instead of setting a departure time).
//!
//! Each direction of a limited EIP holds one [`Policer`] in an array map indexed by the
//! binding's slot, shared by every CPU. Its state is a single `u64`, the time (ns since boot)
//! at which the bytes admitted so far would have finished at the limit's rate. A packet
//! conforms when that time is at most `burst_ns` ahead of the clock; a conforming packet of
//! `len` bytes moves it on by `len` bytes' worth of time, with one atomic add. So:
//! - no lock and no per-CPU shares: every CPU's packets are charged to the one timeline, and
//!   traffic on two CPUs gets the limit, not twice it;
//! - the check reads the timeline without a lock, so two CPUs may both admit a packet on one
//!   reading; both are charged all the same, and the overshoot is at most one packet per CPU
//!   at a time, paid back by the next packets;
//! - a timeline behind the clock (the EIP was idle) restarts at the clock with a plain
//!   store, so idle time never banks more than the burst. Racing CPUs may each restart it
//!   once, forgiving at most one packet each, only on leaving idle;
//! - a conforming packet passes whatever its length, so a GSO super-frame larger than the
//!   burst still goes (and the packets after it wait for its time).
//!
//! All arithmetic is in `u64` with wrapping differences (the clock's wrap is harmless) and
//! one fixed-point factor: a byte's cost in 2^-16 ns, exact enough at 100 Gbit/s (0.08 ns
//! a byte) and small enough at 1 kbit/s (8 ms a byte) that a 64 KiB packet's cost cannot
//! overflow.

/// Bits of the fixed-point fraction of [`Policer::ns_per_byte`].
pub const FRAC_BITS: u32 = 16;
/// The lowest and highest rates a limit takes, in bits per second.
pub const MIN_RATE_BPS: u64 = 1_000;
pub const MAX_RATE_BPS: u64 = 100_000_000_000;
/// The largest burst a limit takes, in bytes (4 GiB).
pub const MAX_BURST_BYTES: u64 = 1 << 32;
/// The burst when none is given: [`DEFAULT_BURST_NS`] of traffic at the rate, at least
/// [`MIN_DEFAULT_BURST`] bytes. Measured with one TCP stream through 20mbit on the
/// namespaces' veths (BENCHMARKS.md): a burst of 105 ms halves its goodput, 210 ms and more
/// keep it at the limit. What a burst lets through beyond the rate is the burst itself, once
/// per idle spell: 250 ms of the rate adds 2.5 % to a 10 s average.
pub const DEFAULT_BURST_NS: u64 = 250_000_000;
/// Two 64 KiB GSO super-frames: a VM's TCP sends in these, and a burst smaller than its
/// segments in flight turns every burst of the sender into a burst of losses.
pub const MIN_DEFAULT_BURST: u64 = 128 * 1024;

/// The longest packet the policer is ever asked about (an IPv4 total length).
const MAX_LEN: u64 = 65_535;
/// How far ahead of the clock a timeline may go: below `i64::MAX`, so that "ahead" and
/// "behind" stay apart in a signed difference.
const MAX_AHEAD_NS: u64 = 1 << 62;

/// One direction of one EIP's limit, as the dataplane holds it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policer {
    /// The theoretical arrival time: when the bytes admitted so far would have been sent at
    /// the rate (ns since boot). Written by the programs only.
    pub tat_ns: u64,
    /// What one byte costs, in 2^-[`FRAC_BITS`] ns; 0: no limit.
    pub ns_per_byte: u64,
    /// How far ahead of the clock `tat_ns` may be for a packet to pass.
    pub burst_ns: u64,
}

/// [`crate::maps::MAP_LIMITS`]'s value: both directions of one EIP's limit.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limit {
    /// Toward the VM (enforced on the external interface).
    pub inbound: Policer,
    /// From the VM (enforced where its packets are translated).
    pub outbound: Policer,
}

impl Policer {
    /// No limit.
    pub const UNLIMITED: Policer = Policer {
        tat_ns: 0,
        ns_per_byte: 0,
        burst_ns: 0,
    };

    /// A limit of `rate_bps` bits per second with a burst of `burst_bytes`, both clamped to
    /// what a limit takes ([`MIN_RATE_BPS`]..=[`MAX_RATE_BPS`], at most
    /// [`MAX_BURST_BYTES`]). The timeline starts idle.
    pub const fn new(rate_bps: u64, burst_bytes: u64) -> Policer {
        let rate = clamp(rate_bps, MIN_RATE_BPS, MAX_RATE_BPS);
        // 8e9 ns of bits per byte, over the rate: at most 8e9 * 2^16 / 1e3 = 5.2e11.
        let ns_per_byte = ((8_000_000_000u64 << FRAC_BITS) + rate / 2) / rate;
        let burst = clamp(burst_bytes, 1, MAX_BURST_BYTES);
        let burst_ns = burst.saturating_mul(ns_per_byte) >> FRAC_BITS;
        Policer {
            tat_ns: 0,
            ns_per_byte,
            burst_ns: if burst_ns > MAX_AHEAD_NS {
                MAX_AHEAD_NS
            } else {
                burst_ns
            },
        }
    }

    pub const fn is_limited(&self) -> bool {
        self.ns_per_byte != 0
    }

    /// What `len` bytes cost on the timeline, in ns. `len` is an IPv4 total length, so the
    /// product stays below 2^16 * 5.3e11 < 2^64.
    #[inline(always)]
    pub const fn cost(&self, len: u64) -> u64 {
        let len = if len > MAX_LEN { MAX_LEN } else { len };
        (len * self.ns_per_byte) >> FRAC_BITS
    }
}

const fn clamp(v: u64, lo: u64, hi: u64) -> u64 {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

/// The default burst for a rate: [`DEFAULT_BURST_NS`] of traffic, at least
/// [`MIN_DEFAULT_BURST`] bytes.
pub const fn default_burst(rate_bps: u64) -> u64 {
    let bytes = rate_bps / 8 / 1_000 * (DEFAULT_BURST_NS / 1_000_000);
    if bytes < MIN_DEFAULT_BURST {
        MIN_DEFAULT_BURST
    } else {
        bytes
    }
}

/// Where a timeline stands against the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// At or behind the clock: the EIP was idle; the timeline restarts at the clock.
    Idle,
    /// Ahead, within the burst: the packet passes and is charged.
    Conform,
    /// Further ahead than the burst: the packet is dropped.
    Exceed,
}

/// Judges a timeline `tat` at time `now` against a burst tolerance (all ns). The difference
/// is taken wrapping and read signed, so a clock that wraps past `u64::MAX` judges as one
/// that does not.
#[inline(always)]
pub const fn judge(tat: u64, now: u64, burst_ns: u64) -> Judgement {
    let ahead = tat.wrapping_sub(now) as i64;
    if ahead <= 0 {
        Judgement::Idle
    } else if ahead as u64 <= burst_ns {
        Judgement::Conform
    } else {
        Judgement::Exceed
    }
}

/// The timeline's storage: shared memory in the programs (an atomic add), a plain cell in
/// tests.
pub trait Timeline {
    fn load(&self) -> u64;
    fn store(&self, v: u64);
    /// Adds `v` as one indivisible step (wrapping).
    fn add(&self, v: u64);
}

/// Whether a packet of `len` bytes passes `p`'s limit at time `now`, charging the timeline
/// `tat` when it does. The one decision the programs make, for either direction.
#[inline(always)]
pub fn admit<T: Timeline>(tat: &T, p: &Policer, now: u64, len: u64) -> bool {
    let cost = p.cost(len);
    match judge(tat.load(), now, p.burst_ns) {
        Judgement::Idle => {
            tat.store(now.wrapping_add(cost));
            true
        }
        Judgement::Conform => {
            tat.add(cost);
            true
        }
        Judgement::Exceed => false,
    }
}

impl Timeline for core::cell::Cell<u64> {
    fn load(&self) -> u64 {
        self.get()
    }
    fn store(&self, v: u64) {
        self.set(v)
    }
    fn add(&self, v: u64) {
        self.set(self.get().wrapping_add(v))
    }
}

#[cfg(test)]
mod tests {
    use core::cell::Cell;

    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    /// Offers `len`-byte packets every `gap` ns from `start` for `span` ns; the bytes passed.
    fn offer(tat: &Cell<u64>, p: &Policer, start: u64, gap: u64, span: u64, len: u64) -> u64 {
        let mut passed = 0;
        let mut t = start;
        while t.wrapping_sub(start) < span {
            if admit(tat, p, t, len) {
                passed += len;
            }
            t = t.wrapping_add(gap);
        }
        passed
    }

    #[test]
    fn a_saturated_limit_passes_its_rate_plus_the_burst() {
        // 20 Mbit/s = 2.5 MB/s, offered 1500-byte packets at 100 Mbit/s for 10 s.
        let p = Policer::new(20_000_000, 128 * 1024);
        let tat = Cell::new(0);
        let passed = offer(&tat, &p, 10 * S, 120_000, 10 * S, 1500);
        let want = 25_000_000 + 128 * 1024;
        assert!(passed <= want + 1500, "{passed} > {want}");
        assert!(passed >= want - 3000, "{passed} < {want}");
    }

    #[test]
    fn traffic_under_the_limit_all_passes() {
        let p = Policer::new(20_000_000, 3000);
        let tat = Cell::new(0);
        // 1500 bytes a millisecond: 12 Mbit/s.
        assert_eq!(offer(&tat, &p, S, MS, S, 1500), 1500 * 1000);
    }

    #[test]
    fn an_idle_limit_refills_to_the_burst_and_no_further() {
        let burst = 100_000;
        let p = Policer::new(8_000_000, burst); // 1 byte/us
        let tat = Cell::new(0);
        // Saturate, then idle for a minute: the next back-to-back packets pass up to the
        // burst (plus the one that finds the timeline at the edge), not a minute's worth.
        offer(&tat, &p, S, 1_000, S, 1000);
        let later = 61 * S;
        let passed = offer(&tat, &p, later, 1, 1_000, 1000);
        assert!((burst..=burst + 1000).contains(&passed), "{passed} after idling");
        // Refill: 50 ms later, 50 kB more (1 byte/us), give or take one packet.
        let passed = offer(&tat, &p, later + 50 * MS, 1, 1_000, 1000);
        assert!((49_000..=51_000).contains(&passed), "{passed} after 50 ms");
    }

    #[test]
    fn a_packet_larger_than_the_burst_passes_when_the_timeline_is_clear() {
        let p = Policer::new(1_000_000, 1000);
        let tat = Cell::new(0);
        assert!(admit(&tat, &p, S, 65_535));
        // ...and the next one waits for its time: 65535 bytes at 125 kB/s = 524 ms.
        assert!(!admit(&tat, &p, S + 500 * MS, 100));
        assert!(admit(&tat, &p, S + 525 * MS, 100));
    }

    #[test]
    fn the_clock_wrapping_changes_nothing() {
        let p = Policer::new(20_000_000, 128 * 1024);
        // A timeline that was running when the clock came near its end (a new one starts at
        // 0, which a clock since boot is far past and nowhere near 2^63 ns of).
        let near_end = u64::MAX - 5 * S;
        let (a, b) = (Cell::new(near_end), Cell::new(10 * S));
        let wrapped = offer(&a, &p, near_end, 120_000, 10 * S, 1500);
        let plain = offer(&b, &p, 10 * S, 120_000, 10 * S, 1500);
        assert_eq!(wrapped, plain);
        // A timeline just past the wrap is ahead of a clock just before it.
        assert_eq!(judge(10, u64::MAX - 10, 100), Judgement::Conform);
        assert_eq!(judge(u64::MAX - 10, 10, 100), Judgement::Idle);
    }

    #[test]
    fn unlimited_costs_nothing() {
        assert!(!Policer::UNLIMITED.is_limited());
        assert_eq!(Policer::UNLIMITED.cost(65_535), 0);
    }

    #[test]
    fn rates_are_clamped_to_what_a_limit_takes() {
        assert_eq!(Policer::new(1, 1000), Policer::new(MIN_RATE_BPS, 1000));
        assert_eq!(Policer::new(u64::MAX, 1000), Policer::new(MAX_RATE_BPS, 1000));
        assert_eq!(Policer::new(1_000_000, 0), Policer::new(1_000_000, 1));
    }

    #[test]
    fn default_bursts() {
        assert_eq!(default_burst(1_000), MIN_DEFAULT_BURST);
        assert_eq!(default_burst(4_000_000), MIN_DEFAULT_BURST);
        // 1 Gbit/s: 250 ms is 31.25 MB.
        assert_eq!(default_burst(1_000_000_000), 31_250_000);
        assert_eq!(default_burst(20_000_000), 625_000);
        assert_eq!(default_burst(MAX_RATE_BPS), 3_125_000_000);
    }

    proptest::proptest! {
        /// From 1 kbit/s to 100 Gbit/s: a byte's cost is within 0.05% of 8/rate s (the
        /// fixed point's rounding), a maximal packet's cost does not overflow, and the
        /// burst's time is the burst's bytes at the rate.
        #[test]
        fn costs_hold_across_every_rate(rate in MIN_RATE_BPS..=MAX_RATE_BPS, burst in 1u64..=MAX_BURST_BYTES) {
            let p = Policer::new(rate, burst);
            let exact = 8e9 * 65_535.0 / rate as f64;
            let cost = p.cost(65_535) as f64;
            proptest::prop_assert!((cost - exact).abs() <= exact * 5e-4 + 1.0, "{cost} vs {exact}");
            let burst_exact = (8e9 * burst as f64 / rate as f64).min(MAX_AHEAD_NS as f64);
            let burst_ns = p.burst_ns as f64;
            proptest::prop_assert!((burst_ns - burst_exact).abs() <= burst_exact * 5e-4 + 1.0);
            proptest::prop_assert!(p.burst_ns <= MAX_AHEAD_NS);
        }

        /// Whatever the rate, the packets' sizes and their spacing, what passes in a window
        /// is at most the window's worth at the rate plus the burst plus one packet.
        #[test]
        fn nothing_passes_beyond_rate_and_burst(
            rate in 1_000_000u64..=10_000_000_000,
            burst in 1_500u64..=1_000_000,
            sizes in proptest::collection::vec(64u64..=65_535, 1..200),
            gaps in proptest::collection::vec(0u64..=2 * MS, 1..200),
        ) {
            let p = Policer::new(rate, burst);
            let tat = Cell::new(0);
            let mut now = S;
            let start = now;
            let mut passed = 0u64;
            for (i, len) in sizes.iter().enumerate() {
                now += gaps[i % gaps.len()];
                if admit(&tat, &p, now, *len) {
                    passed += len;
                }
            }
            let window = (now - start) as f64;
            let allowed = window * rate as f64 / 8e9 + burst as f64 + 65_535.0 + 1.0;
            proptest::prop_assert!(passed as f64 <= allowed * 1.001, "{passed} > {allowed}");
        }
    }
}
