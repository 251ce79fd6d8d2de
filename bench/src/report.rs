//! BENCHMARKS.md's tables, written from the figures of one run (`eip-bench --markdown FILE`,
//! or `--from-json RUN --markdown FILE` for an earlier run), so that no figure is copied by
//! hand. Each family gets the tables its section shows; what the figures mean is the
//! section's prose, which stays in BENCHMARKS.md.

use std::{collections::BTreeSet, fmt::Write as _};

use crate::figures::Figure;

/// Every table the figures allow, family by family, as Markdown.
pub fn markdown(figs: &[Figure]) -> String {
    let mut s = String::new();
    if figs.iter().any(|f| f.bench == "kernel") {
        s += "## kernel\n\n";
        s += &kernel(figs);
        s += "\n";
        s += &egress_against_ingress(figs);
    }
    if figs.iter().any(|f| f.bench == "throughput") {
        s += "\n## throughput\n\n";
        s += &throughput(figs);
        let rounds = alternated(figs);
        if !rounds.is_empty() {
            s += "\n**Alternated rounds, one binding** (medians; in brackets the median of the \
                  paired ratios)\n\n";
            s += &rounds;
        }
    }
    for family in ["limits", "control", "dhcp", "memory"] {
        if figs.iter().any(|f| f.bench == family) {
            let _ = write!(s, "\n## {family}\n\n");
            s += &plain(figs, family);
        }
    }
    s
}

/// Values in first-seen order, without repeats.
fn ordered<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = BTreeSet::new();
    items.filter(|v| seen.insert(*v)).collect()
}

fn sizes(figs: &[&Figure]) -> Vec<u64> {
    let set: BTreeSet<u64> = figs.iter().filter_map(|f| f.bindings).collect();
    set.into_iter().collect()
}

/// 1000000 as 1,000,000.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn find<'a>(figs: &[&'a Figure], variant: &str, n: Option<u64>, metric: &str) -> Option<&'a Figure> {
    figs.iter()
        .copied()
        .find(|f| f.variant == variant && f.bindings == n && f.metric == metric)
}

/// The figure at `n`, or one measured once for every size (an older run's plain routing).
fn at<'a>(figs: &[&'a Figure], variant: &str, n: u64, metric: &str) -> Option<&'a Figure> {
    find(figs, variant, Some(n), metric).or_else(|| find(figs, variant, None, metric))
}

fn header(first: &[&str], ns: &[u64], last: &[&str]) -> String {
    let mut cols: Vec<String> = first.iter().map(|s| s.to_string()).collect();
    cols.extend(ns.iter().map(|&n| grouped(n)));
    cols.extend(last.iter().map(|s| s.to_string()));
    let mut s = format!("| {} |\n", cols.join(" | "));
    s += &format!("|{}\n", "---|".repeat(cols.len()));
    s
}

/// The in-kernel cost per packet: every program and frame at every size, with its ratio to
/// its hook's floor and the largest size against the smallest.
fn kernel(all: &[Figure]) -> String {
    let figs: Vec<&Figure> = all.iter().filter(|f| f.bench == "kernel").collect();
    let ns = sizes(&figs);
    let mut s = header(
        &["program, frame"],
        &ns,
        &[&format!(
            "{} / {}",
            grouped(*ns.last().unwrap_or(&0)),
            grouped(*ns.first().unwrap_or(&0))
        )],
    );
    for variant in ordered(figs.iter().map(|f| f.variant.as_str())) {
        let mut row = vec![variant.to_owned()];
        let floor = ["XDP_PASS", "XDP_DROP", "TC_ACT_OK"].contains(&variant);
        if floor {
            row[0] += " (floor)";
        }
        for &n in &ns {
            row.push(
                find(&figs, variant, Some(n), "cost").map_or(String::new(), |f| match f.ratio {
                    Some(r) => format!("{:.0} ns ({r:.1}x)", f.value),
                    None => format!("{:.0} ns", f.value),
                }),
            );
        }
        let first = ns.first().and_then(|&n| find(&figs, variant, Some(n), "cost"));
        let last = ns.last().and_then(|&n| find(&figs, variant, Some(n), "cost"));
        row.push(match (first, last, floor) {
            (Some(a), Some(b), false) if a.value > 0.0 => format!("{:.2}", b.value / a.value),
            _ => String::new(),
        });
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    s
}

/// The way out against the way in, frame by frame, for both egress programs (the target:
/// at most 1.5x).
fn egress_against_ingress(all: &[Figure]) -> String {
    let figs: Vec<&Figure> = all.iter().filter(|f| f.bench == "kernel").collect();
    let ns = sizes(&figs);
    let mut s = header(&["egress program / ingress, frame"], &ns, &[]);
    for (program, prefix) in [
        ("`eip_bridge_in`", "egress "),
        ("`eip_port_in`", "egress at the port "),
    ] {
        for frame in ["TCP", "UDP", "ICMP echo"] {
            let mut row = vec![format!("{program}, {frame}")];
            for &n in &ns {
                let out = find(&figs, &format!("{prefix}{frame}"), Some(n), "cost");
                let inn = find(&figs, &format!("ingress {frame}"), Some(n), "cost");
                row.push(match (out, inn) {
                    (Some(o), Some(i)) if i.value > 0.0 => format!("{:.2}x", o.value / i.value),
                    _ => String::new(),
                });
            }
            let _ = writeln!(s, "| {} |", row.join(" | "));
        }
    }
    s
}

const ROUTING: &str = "plain routing (no NAT)";

/// A short name for the baseline a ratio is to.
fn short(variant: &str) -> &str {
    match variant.split_once(": ").map_or(variant, |(k, _)| k) {
        "iptables-legacy DNAT/SNAT" => "legacy",
        "iptables-nft DNAT/SNAT" => "ipt-nft",
        "nftables map" => "nft",
        ROUTING => "routing",
        other => other,
    }
}

/// The throughput family: one table per UDP shape (with the generator's rate under it) and
/// one for TCP. eip's cells carry its ratio to the best kernel NAT at that size and to plain
/// routing measured beside it; the kernel NATs' their ratio to routing.
fn throughput(all: &[Figure]) -> String {
    // The rounds have a table of their own.
    let figs: Vec<&Figure> = all
        .iter()
        .filter(|f| f.bench == "throughput" && !f.variant.ends_with(ALTERNATED))
        .collect();
    let ns = sizes(&figs);
    let mut s = String::new();
    let split = |v: &str| v.split_once(": ").map(|(k, r)| (k.to_owned(), r.to_owned()));
    let shapes = ordered(
        figs.iter()
            .filter(|f| f.metric != "sent (generator)" && f.unit == "kpps")
            .filter_map(|f| f.variant.split_once(": ").map(|(_, r)| r)),
    );
    let kinds = ordered(
        figs.iter()
            .filter_map(|f| f.variant.split_once(": ").map(|(k, _)| k)),
    );
    let cell = |f: &Figure, routing: Option<&Figure>| {
        let mut c = format!("{:.1}", f.value);
        if f.unit == "kpps" {
            c = format!("{:.0}", f.value);
        }
        let mut notes = Vec::new();
        if let (Some(r), Some(to)) = (f.ratio, &f.ratio_to)
            && short(to) != "routing"
        {
            notes.push(format!("{r:.2}x {}", short(to)));
        }
        if let Some(base) = routing
            && base.value > 0.0
            && !f.variant.starts_with(ROUTING)
        {
            notes.push(format!("{:.2}x routing", f.value / base.value));
        }
        if !notes.is_empty() {
            let _ = write!(c, " ({})", notes.join("; "));
        }
        c
    };
    for shape in &shapes {
        let metric = if shape.ends_with("XDP sink") {
            "forwarded"
        } else {
            "delivered"
        };
        let _ = writeln!(s, "**{shape}** (kpps {metric})\n");
        s += &header(&["variant"], &ns, &[]);
        for kind in &kinds {
            let variant = format!("{kind}: {shape}");
            if !ns.iter().any(|&n| at(&figs, &variant, n, metric).is_some()) {
                continue;
            }
            let mut row = vec![kind.to_string()];
            for &n in &ns {
                let routing = at(&figs, &format!("{ROUTING}: {shape}"), n, metric);
                row.push(at(&figs, &variant, n, metric).map_or(String::new(), |f| cell(f, routing)));
            }
            let _ = writeln!(s, "| {} |", row.join(" | "));
        }
        let sent: Vec<f64> = figs
            .iter()
            .filter(|f| f.metric == "sent (generator)" && split(&f.variant).is_some_and(|(_, r)| r == *shape))
            .map(|f| f.value)
            .collect();
        if let (Some(lo), Some(hi)) = (
            sent.iter().copied().reduce(f64::min),
            sent.iter().copied().reduce(f64::max),
        ) {
            let _ = writeln!(s, "\nGenerator (sent, open loop): {lo:.0} to {hi:.0} kpps.");
        }
        s += "\n";
    }
    let tcp = ordered(
        figs.iter()
            .filter(|f| f.metric == "goodput")
            .filter_map(|f| f.variant.split_once(": ").map(|(_, r)| r)),
    );
    if !tcp.is_empty() {
        s += "**TCP (iperf3, one stream), Gbit/s**\n\n";
        s += &header(&["variant", "direction, segments"], &ns, &[]);
        for shape in tcp {
            for kind in &kinds {
                let variant = format!("{kind}: {shape}");
                if !ns.iter().any(|&n| at(&figs, &variant, n, "goodput").is_some()) {
                    continue;
                }
                let what = shape.trim_start_matches("TCP (iperf3), ");
                let mut row = vec![kind.to_string(), what.to_owned()];
                for &n in &ns {
                    let routing = at(&figs, &format!("{ROUTING}: {shape}"), n, "goodput");
                    row.push(at(&figs, &variant, n, "goodput").map_or(String::new(), |f| cell(f, routing)));
                }
                let _ = writeln!(s, "| {} |", row.join(" | "));
            }
        }
    }
    s
}

const ALTERNATED: &str = ", alternated";

/// The rounds at one binding: each variant's median for every measure, and for eip the
/// median of its ratios to the best kernel NAT and to routing of the same round.
fn alternated(all: &[Figure]) -> String {
    let figs: Vec<&Figure> = all
        .iter()
        .filter(|f| f.bench == "throughput" && f.variant.ends_with(ALTERNATED))
        .collect();
    if figs.is_empty() {
        return String::new();
    }
    let shapes = ordered(
        figs.iter()
            .filter_map(|f| f.variant.split_once(": ").map(|(_, r)| r)),
    );
    let kinds = ordered(
        figs.iter()
            .filter_map(|f| f.variant.split_once(": ").map(|(k, _)| k)),
    );
    let mut s = format!(
        "| variant | {} |\n|---|{}\n",
        shapes
            .iter()
            .map(|r| r.trim_end_matches(ALTERNATED))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(shapes.len())
    );
    for kind in kinds {
        let mut row = vec![kind.to_owned()];
        for shape in &shapes {
            let variant = format!("{kind}: {shape}");
            let mine: Vec<&&Figure> = figs.iter().filter(|f| f.variant == variant).collect();
            let ratio = |metric: &str| mine.iter().find(|f| f.metric == metric).map(|f| f.value);
            let mut c =
                mine.iter()
                    .find(|f| f.unit != "x")
                    .map_or(String::new(), |f| match f.unit.as_str() {
                        "kpps" => format!("{:.0} kpps", f.value),
                        unit => format!("{:.1} {unit}", f.value),
                    });
            let paired: Vec<String> = [
                ("paired ratio to the best kernel NAT", "best kernel NAT"),
                ("paired ratio to plain routing", "routing"),
            ]
            .iter()
            .filter_map(|(m, label)| ratio(m).map(|r| format!("{r:.2}x {label}")))
            .collect();
            if !paired.is_empty() {
                let _ = write!(c, " ({})", paired.join("; "));
            }
            row.push(c);
        }
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    s
}

/// Any other family: one row per figure, as the table on stdout has it.
fn plain(all: &[Figure], family: &str) -> String {
    let mut s = String::from(
        "| variant | bindings | metric | value | against | ratio |\n|---|---|---|---|---|---|\n",
    );
    for f in all.iter().filter(|f| f.bench == family) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} {} | {} | {} |",
            f.variant,
            f.bindings.map_or(String::new(), grouped),
            f.metric,
            f.value,
            f.unit,
            f.ratio_to.as_deref().unwrap_or(""),
            f.ratio.map_or(String::new(), |r| format!("{r:.2}x")),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(bench: &str, variant: &str, n: u64, metric: &str, value: f64, unit: &str) -> Figure {
        Figure::new(bench, variant, Some(n), metric, value, unit)
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(grouped(1), "1");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(65_536), "65,536");
        assert_eq!(grouped(1_000_000), "1,000,000");
    }

    #[test]
    fn an_eip_cell_names_the_best_kernel_nat_and_routing_beside_it() {
        let shape = "UDP 64 B, VM to outside, one flow";
        let figs = vec![
            fig(
                "throughput",
                &format!("{ROUTING}: {shape}"),
                1,
                "delivered",
                400.0,
                "kpps",
            ),
            fig(
                "throughput",
                &format!("nftables map: {shape}"),
                1,
                "delivered",
                300.0,
                "kpps",
            )
            .against(&format!("{ROUTING}: {shape}"), 400.0),
            fig(
                "throughput",
                &format!("eip fast path: {shape}"),
                1,
                "delivered",
                600.0,
                "kpps",
            )
            .against(&format!("nftables map: {shape}"), 300.0),
            fig(
                "throughput",
                &format!("eip fast path: {shape}"),
                1,
                "sent (generator)",
                5000.0,
                "kpps",
            ),
        ];
        let md = throughput(&figs);
        assert!(
            md.contains("| eip fast path | 600 (2.00x nft; 1.50x routing) |"),
            "{md}"
        );
        assert!(md.contains("| nftables map | 300 (0.75x routing) |"), "{md}");
        assert!(md.contains("| plain routing (no NAT) | 400 |"), "{md}");
        assert!(
            md.contains("Generator (sent, open loop): 5000 to 5000 kpps."),
            "{md}"
        );
    }

    #[test]
    fn alternated_rounds_get_their_own_table() {
        let v = |kind: &str, what: &str| format!("{kind}: {what}, alternated");
        let (tcp, udp) = (
            "TCP (iperf3), outside to VM, wire-size segments",
            "UDP 64 B, VM to outside, one flow",
        );
        let eip = "eip fast path, TC ingress";
        let figs = vec![
            fig("throughput", &v(eip, tcp), 1, "goodput", 8.04, "Gbit/s"),
            fig(
                "throughput",
                &v(eip, tcp),
                1,
                "paired ratio to the best kernel NAT",
                1.031,
                "x",
            ),
            fig(
                "throughput",
                &v(eip, tcp),
                1,
                "paired ratio to plain routing",
                0.99,
                "x",
            ),
            fig("throughput", &v(eip, udp), 1, "delivered", 512.3, "kpps"),
            fig(
                "throughput",
                &v("plain routing (no NAT)", udp),
                1,
                "delivered",
                400.0,
                "kpps",
            ),
        ];
        let md = markdown(&figs);
        assert!(md.contains(&format!("| variant | {tcp} | {udp} |")), "{md}");
        assert!(
            md.contains(
                "| eip fast path, TC ingress | 8.0 Gbit/s (1.03x best kernel NAT; 0.99x routing) | 512 kpps |"
            ),
            "{md}"
        );
        assert!(md.contains("| plain routing (no NAT) |  | 400 kpps |"), "{md}");
        assert!(!md.contains("**TCP (iperf3, one stream)"), "{md}");
        assert!(!md.contains("**UDP 64 B"), "{md}");
    }

    #[test]
    fn the_kernel_table_gives_floors_ratios_and_egress_against_ingress() {
        let figs = vec![
            fig("kernel", "XDP_PASS", 1, "cost", 40.0, "ns/pkt"),
            fig("kernel", "ingress TCP", 1, "cost", 200.0, "ns/pkt").against("XDP_PASS", 40.0),
            fig("kernel", "ingress TCP", 1_000, "cost", 220.0, "ns/pkt").against("XDP_PASS", 40.0),
            fig("kernel", "egress TCP", 1, "cost", 300.0, "ns/pkt"),
            fig("kernel", "egress TCP", 1_000, "cost", 330.0, "ns/pkt"),
        ];
        let md = markdown(&figs);
        assert!(md.contains("| XDP_PASS (floor) | 40 ns |  |  |"), "{md}");
        assert!(
            md.contains("| ingress TCP | 200 ns (5.0x) | 220 ns (5.5x) | 1.10 |"),
            "{md}"
        );
        assert!(md.contains("| `eip_bridge_in`, TCP | 1.50x | 1.50x |"), "{md}");
    }
}
