//! Bandwidth limits as the operator writes them: RATE and SIZE as `tc` takes them
//! (tc-util.c's `get_rate64` and `get_size`), and the limit an EIP stores.

use std::{fmt, str::FromStr};

use eip_common::limiter::{self, Limit, MAX_BURST_BYTES, MAX_RATE_BPS, MIN_RATE_BPS, Policer};
use serde::{Deserialize, Serialize};

/// Why a RATE or SIZE was refused; each message is the one sentence the CLI prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RateError {
    #[error(
        "{0:?} is not a rate: write a number and a unit as tc does, such as 500kbit, 20mbit or 1gbit (bits per second), or 500kbps (bytes per second)"
    )]
    BadRate(String),
    #[error("a rate of 0 would drop everything; to remove a limit, give none")]
    ZeroRate,
    #[error("{0} is above the highest limit, 100gbit")]
    RateTooHigh(String),
    #[error("{0} is below the lowest limit, 1kbit")]
    RateTooLow(String),
    #[error("{0:?} is not a size: write a number and a unit as tc does, such as 64kb, 1mb or 1500b (bytes)")]
    BadSize(String),
    #[error("a burst of 0 would drop everything")]
    ZeroSize,
    #[error("a burst of {0} is above the largest, 4gb")]
    SizeTooLarge(String),
}

/// A rate in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rate(pub u64);

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Size(pub u64);

/// tc's rate units, as bits per second per unit: SI (1000) and IEC (1024) multiples of bits,
/// and of bytes (`bps`).
const RATE_UNITS: [(&str, f64); 18] = [
    ("bit", 1.0),
    ("kbit", 1e3),
    ("kibit", 1024.0),
    ("mbit", 1e6),
    ("mibit", 1_048_576.0),
    ("gbit", 1e9),
    ("gibit", 1_073_741_824.0),
    ("tbit", 1e12),
    ("tibit", 1_099_511_627_776.0),
    ("bps", 8.0),
    ("kbps", 8e3),
    ("kibps", 8.0 * 1024.0),
    ("mbps", 8e6),
    ("mibps", 8.0 * 1_048_576.0),
    ("gbps", 8e9),
    ("gibps", 8.0 * 1_073_741_824.0),
    ("tbps", 8e12),
    ("tibps", 8.0 * 1_099_511_627_776.0),
];

/// tc's size units, as bytes per unit (tc's k, m and g are binary, and so are its kbit and
/// mbit here: 1024 bits).
const SIZE_UNITS: [(&str, f64); 10] = [
    ("", 1.0),
    ("b", 1.0),
    ("k", 1024.0),
    ("kb", 1024.0),
    ("kbit", 128.0),
    ("m", 1_048_576.0),
    ("mb", 1_048_576.0),
    ("mbit", 131_072.0),
    ("g", 1_073_741_824.0),
    ("gb", 1_073_741_824.0),
];

/// `s` split into a non-negative decimal number and its unit (lower-cased); `None` when the
/// number is missing or not finite.
fn number_and_unit(s: &str) -> Option<(f64, String)> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    if num.is_empty() || num.starts_with('.') && num.len() == 1 {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    n.is_finite().then(|| (n, unit.to_ascii_lowercase()))
}

impl FromStr for Rate {
    type Err = RateError;
    fn from_str(s: &str) -> Result<Rate, RateError> {
        let bad = || RateError::BadRate(s.to_owned());
        let (n, unit) = number_and_unit(s).ok_or_else(bad)?;
        // Zero is zero in any unit, or none.
        if n == 0.0 && (unit.is_empty() || RATE_UNITS.iter().any(|(u, _)| *u == unit)) {
            return Err(RateError::ZeroRate);
        }
        // A bare number is bits per second to tc; here a unit is required, so that "20"
        // cannot be read as 20 Mbit/s by one operator and 20 bit/s by the next.
        let per = RATE_UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, m)| *m)
            .ok_or_else(bad)?;
        let bps = n * per;
        if bps == 0.0 {
            return Err(RateError::ZeroRate);
        }
        if bps > MAX_RATE_BPS as f64 {
            return Err(RateError::RateTooHigh(s.trim().to_owned()));
        }
        let bps = bps.round() as u64;
        if bps < MIN_RATE_BPS {
            return Err(RateError::RateTooLow(s.trim().to_owned()));
        }
        Ok(Rate(bps))
    }
}

impl fmt::Display for Rate {
    /// The largest SI bit unit the rate is a whole number of (as tc prints them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, per) in [("gbit", 1_000_000_000), ("mbit", 1_000_000), ("kbit", 1_000)] {
            if self.0 >= per && self.0.is_multiple_of(per) {
                return write!(f, "{}{unit}", self.0 / per);
            }
        }
        write!(f, "{}bit", self.0)
    }
}

impl FromStr for Size {
    type Err = RateError;
    fn from_str(s: &str) -> Result<Size, RateError> {
        let bad = || RateError::BadSize(s.to_owned());
        let (n, unit) = number_and_unit(s).ok_or_else(bad)?;
        let per = SIZE_UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, m)| *m)
            .ok_or_else(bad)?;
        let bytes = (n * per).round();
        if bytes == 0.0 {
            return Err(RateError::ZeroSize);
        }
        if bytes > MAX_BURST_BYTES as f64 {
            return Err(RateError::SizeTooLarge(s.trim().to_owned()));
        }
        Ok(Size(bytes as u64))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, per) in [("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10)] {
            if self.0 >= per && self.0.is_multiple_of(per) {
                return write!(f, "{}{unit}", self.0 / per);
            }
        }
        write!(f, "{}b", self.0)
    }
}

/// One direction of an EIP's limit, as stored: the rate, and the burst the operator gave
/// (none: [`limiter::default_burst`] of the rate, as this version reckons it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RateLimit {
    pub rate_bps: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_bytes: Option<u64>,
}

impl RateLimit {
    pub fn new(rate: Rate, burst: Option<Size>) -> RateLimit {
        RateLimit {
            rate_bps: rate.0,
            burst_bytes: burst.map(|b| b.0),
        }
    }

    /// The burst in force.
    pub fn burst(&self) -> u64 {
        self.burst_bytes
            .unwrap_or_else(|| limiter::default_burst(self.rate_bps))
    }

    /// The dataplane's form.
    pub fn policer(&self) -> Policer {
        Policer::new(self.rate_bps, self.burst())
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (burst {})", Rate(self.rate_bps), Size(self.burst()))
    }
}

/// The dataplane's policer for an optional limit.
pub fn policer(limit: Option<RateLimit>) -> Policer {
    limit.map_or(Policer::UNLIMITED, |l| l.policer())
}

/// The dataplane's value for a slot limited `inbound` and `outbound` (timelines idle).
pub fn dataplane_limit(inbound: Option<RateLimit>, outbound: Option<RateLimit>) -> Limit {
    Limit {
        inbound: policer(inbound),
        outbound: policer(outbound),
    }
}

/// What a command asks of one direction's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitChange {
    /// Left as it is.
    Keep,
    /// Removed (`none`).
    Remove,
    Set(RateLimit),
}

impl LimitChange {
    /// A RATE argument (`none` removes), with the command's burst; `None` keeps.
    pub fn parse(rate: Option<&str>, burst: Option<Size>) -> Result<LimitChange, RateError> {
        match rate.map(str::trim) {
            None => Ok(LimitChange::Keep),
            Some(r) if r.eq_ignore_ascii_case("none") => Ok(LimitChange::Remove),
            Some(r) => Ok(LimitChange::Set(RateLimit::new(r.parse()?, burst))),
        }
    }

    /// The limit after the change.
    pub fn apply(self, current: Option<RateLimit>) -> Option<RateLimit> {
        match self {
            LimitChange::Keep => current,
            LimitChange::Remove => None,
            LimitChange::Set(l) => Some(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_tc_writes_them() {
        for (s, bps) in [
            ("500kbit", 500_000),
            ("20mbit", 20_000_000),
            ("20Mbit", 20_000_000),
            ("1gbit", 1_000_000_000),
            ("1.5mbit", 1_500_000),
            ("100gbit", 100_000_000_000),
            ("1kbit", 1_000),
            ("1000bit", 1_000),
            ("2mibit", 2_097_152),
            ("125kbps", 1_000_000),
            ("10mbps", 80_000_000),
            (" 20mbit ", 20_000_000),
        ] {
            assert_eq!(s.parse::<Rate>(), Ok(Rate(bps)), "{s}");
        }
    }

    #[test]
    fn bad_rates_are_refused_with_their_reason() {
        for s in [
            "",
            "mbit",
            "20",
            "20 mbit",
            "20mbits",
            "-1mbit",
            "1e3kbit",
            "fast",
            ".mbit",
            "1.2.3mbit",
        ] {
            assert_eq!(s.parse::<Rate>(), Err(RateError::BadRate(s.into())), "{s:?}");
        }
        assert_eq!("0mbit".parse::<Rate>(), Err(RateError::ZeroRate));
        assert_eq!("0".parse::<Rate>(), Err(RateError::ZeroRate));
        assert_eq!("0.0kbit".parse::<Rate>(), Err(RateError::ZeroRate));
        assert_eq!(
            "101gbit".parse::<Rate>(),
            Err(RateError::RateTooHigh("101gbit".into()))
        );
        assert_eq!(
            "1tbit".parse::<Rate>(),
            Err(RateError::RateTooHigh("1tbit".into()))
        );
        assert_eq!(
            "999bit".parse::<Rate>(),
            Err(RateError::RateTooLow("999bit".into()))
        );
        // Every message is one sentence naming what was wrong.
        let msg = "20mbits".parse::<Rate>().unwrap_err().to_string();
        assert!(msg.starts_with("\"20mbits\" is not a rate"), "{msg}");
    }

    #[test]
    fn sizes_parse_as_tc_writes_them() {
        for (s, bytes) in [
            ("64kb", 65_536),
            ("64k", 65_536),
            ("1mb", 1_048_576),
            ("1500b", 1_500),
            ("1500", 1_500),
            ("1gb", 1_073_741_824),
            ("4gb", 4_294_967_296),
            ("8kbit", 1_024),
        ] {
            assert_eq!(s.parse::<Size>(), Ok(Size(bytes)), "{s}");
        }
        assert_eq!("0kb".parse::<Size>(), Err(RateError::ZeroSize));
        assert_eq!("5gb".parse::<Size>(), Err(RateError::SizeTooLarge("5gb".into())));
        assert_eq!(
            "64kbytes".parse::<Size>(),
            Err(RateError::BadSize("64kbytes".into()))
        );
    }

    #[test]
    fn rates_and_sizes_print_as_they_parse() {
        for s in ["20mbit", "1gbit", "500kbit", "1500bit", "100gbit"] {
            assert_eq!(s.parse::<Rate>().unwrap().to_string(), s);
        }
        assert_eq!(Rate(1_500_000).to_string(), "1500kbit");
        for s in ["64kb", "1mb", "1500b", "4gb"] {
            assert_eq!(s.parse::<Size>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn a_limit_change_keeps_removes_or_sets() {
        let l = RateLimit::new(Rate(20_000_000), None);
        assert_eq!(LimitChange::parse(None, None), Ok(LimitChange::Keep));
        assert_eq!(LimitChange::parse(Some("none"), None), Ok(LimitChange::Remove));
        assert_eq!(LimitChange::parse(Some("NONE"), None), Ok(LimitChange::Remove));
        assert_eq!(LimitChange::parse(Some("20mbit"), None), Ok(LimitChange::Set(l)));
        assert_eq!(LimitChange::Keep.apply(Some(l)), Some(l));
        assert_eq!(LimitChange::Remove.apply(Some(l)), None);
        assert_eq!(l.burst(), limiter::default_burst(20_000_000));
        let b = RateLimit::new(Rate(20_000_000), Some(Size(65_536)));
        assert_eq!(b.burst(), 65_536);
        assert_eq!(b.to_string(), "20mbit (burst 64kb)");
    }
}
