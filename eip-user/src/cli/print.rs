//! How the client commands print what the daemon answers: tables for people, JSON with
//! `--json`.

use std::time::Duration;

use crate::api::{EipRow, EipState, Leases};

pub(super) fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: {e}"),
    }
}

pub(super) fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), T::to_string)
}

/// A limit as the list shows it: the rate as tc writes it, `-` for none.
pub(super) fn rate(bps: Option<u64>) -> String {
    bps.map_or_else(|| "-".into(), |b| crate::model::rate::Rate(b).to_string())
}

pub(super) fn print_rows(rows: &[EipRow]) {
    println!(
        "{:<15} {:<9} {:<15} {:<17} {:<16} {:>10} {:>12} {:>10} {:>12} {:>9} {:>9}  PATH",
        "EIP",
        "STATE",
        "PRIVATE",
        "MAC",
        "NAME",
        "IN_PKTS",
        "IN_BYTES",
        "OUT_PKTS",
        "OUT_BYTES",
        "LIMIT_IN",
        "LIMIT_OUT"
    );
    for r in rows {
        let state = match r.state {
            EipState::Allocated => "allocated",
            EipState::Bound => "bound",
        };
        println!(
            "{:<15} {:<9} {:<15} {:<17} {:<16} {:>10} {:>12} {:>10} {:>12} {:>9} {:>9}  {}",
            r.eip,
            state,
            opt(&r.private),
            opt(&r.mac),
            opt(&r.name),
            r.in_packets,
            r.in_bytes,
            r.out_packets,
            r.out_bytes,
            rate(r.limit_in_bps),
            rate(r.limit_out_bps),
            opt(&r.path)
        );
    }
}

/// What each limited EIP's limit dropped (`eip stats`).
pub(super) fn print_limit_drops(rows: &[EipRow]) {
    let limited: Vec<&EipRow> = rows
        .iter()
        .filter(|r| {
            r.limit_in_bps.is_some()
                || r.limit_out_bps.is_some()
                || r.limit_dropped.in_packets + r.limit_dropped.out_packets > 0
        })
        .collect();
    if limited.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<15} {:>9} {:>9} {:>12} {:>14} {:>12} {:>14}",
        "LIMITED EIP", "IN", "OUT", "DROP_IN_PKTS", "DROP_IN_BYTES", "DROP_OUT_PKTS", "DROP_OUT_BYTES"
    );
    for r in limited {
        let d = &r.limit_dropped;
        println!(
            "{:<15} {:>9} {:>9} {:>12} {:>14} {:>12} {:>14}",
            r.eip,
            rate(r.limit_in_bps),
            rate(r.limit_out_bps),
            d.in_packets,
            d.in_bytes,
            d.out_packets,
            d.out_bytes
        );
    }
}

pub(super) fn print_leases(l: &Leases) {
    let at = |secs: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
    };
    println!(
        "{:<17} {:<15} {:<16} {:<8} {:<20} LEFT",
        "MAC", "IP", "HOSTNAME", "KIND", "EXPIRES"
    );
    for r in &l.leases {
        let left = Duration::from_secs(r.lease.expires.saturating_sub(l.now));
        println!(
            "{:<17} {:<15} {:<16} {:<8} {:<20} {}",
            r.lease.mac,
            r.lease.ip,
            opt(&r.lease.hostname),
            if r.reserved { "reserved" } else { "dynamic" },
            at(r.lease.expires),
            humantime::format_duration(left)
        );
    }
    for d in &l.declined {
        println!(
            "declined: {} by {} at {} (offered again after {})",
            d.ip,
            d.mac,
            at(d.at),
            at(d.at + crate::api::DECLINE_BACKOFF)
        );
    }
}
