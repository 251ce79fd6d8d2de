//! Prometheus text metrics (`--metrics ADDR:PORT`, path `/metrics`).

use std::{fmt::Write as _, net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::{api::Shared, engine::Engine, kernel::Kernel};

/// The metrics page for the engine's state, the dataplane's counters and the DHCP server's.
pub fn render<K: Kernel>(en: &Engine<K>, dhcp: Option<&crate::dhcp::Stats>) -> String {
    let mut out = String::new();
    let s = en.state();
    // Per EIP and direction; each family's samples together under its header, as the text
    // format asks.
    let families = [
        (
            "eip_packets_total",
            "counter",
            "Packets translated for an elastic IP, by direction.",
        ),
        (
            "eip_bytes_total",
            "counter",
            "Bytes translated for an elastic IP, by direction.",
        ),
        (
            "eip_limit_dropped_packets_total",
            "counter",
            "Packets an elastic IP's bandwidth limit dropped, by direction.",
        ),
        (
            "eip_limit_dropped_bytes_total",
            "counter",
            "Bytes an elastic IP's bandwidth limit dropped, by direction.",
        ),
        (
            "eip_limit_bits_per_second",
            "gauge",
            "An elastic IP's bandwidth limit, by direction (absent: no limit).",
        ),
    ];
    let mut samples: Vec<String> = vec![String::new(); families.len()];
    for e in s.eips.values() {
        let Ok(st) = en.kernel().eip_stats(e.slot) else {
            continue;
        };
        let dropped = en.kernel().limit_drops(e.slot).unwrap_or_default();
        let values = [
            [Some(st.in_packets), Some(st.out_packets)],
            [Some(st.in_bytes), Some(st.out_bytes)],
            [Some(dropped.in_packets), Some(dropped.out_packets)],
            [Some(dropped.in_bytes), Some(dropped.out_bytes)],
            [e.limit_in.map(|l| l.rate_bps), e.limit_out.map(|l| l.rate_bps)],
        ];
        for (i, both) in values.iter().enumerate() {
            for (dir, v) in ["in", "out"].into_iter().zip(both) {
                if let Some(v) = v {
                    let name = families[i].0;
                    let _ = writeln!(samples[i], "{name}{{eip=\"{}\",direction=\"{dir}\"}} {v}", e.addr);
                }
            }
        }
    }
    for ((name, kind, help), lines) in families.iter().zip(&samples) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        out += lines;
    }
    let _ = writeln!(
        out,
        "# HELP eip_dataplane_packets_total Dataplane outcomes, drops by reason among them.\n# TYPE eip_dataplane_packets_total counter"
    );
    if let Ok(counters) = en.kernel().counters() {
        for (c, v) in counters {
            let _ = writeln!(out, "eip_dataplane_packets_total{{counter=\"{}\"}} {v}", c.name());
        }
    }
    let bound = s.eips.values().filter(|e| e.bound.is_some()).count();
    for (name, help, v) in [
        ("eip_bindings", "Elastic IPs bound to a VM.", bound),
        (
            "eip_allocated",
            "Elastic IPs allocated (bound or not).",
            s.eips.len(),
        ),
        (
            "eip_reservations",
            "DHCP reservations (MAC -> private IP).",
            s.hosts.len(),
        ),
        ("eip_dhcp_leases", "DHCP leases held.", s.leases.len()),
        (
            "eip_dhcp_declined",
            "Addresses clients declined, out of offers until the back-off passes.",
            s.declined.len(),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    if let Some(d) = dhcp {
        let c = d.counts();
        for (name, help, label, list) in [
            (
                "eip_dhcp_received_total",
                "DHCP messages received, by type.",
                "type",
                &c.received,
            ),
            (
                "eip_dhcp_sent_total",
                "DHCP replies sent, by type.",
                "type",
                &c.sent,
            ),
            (
                "eip_dhcp_dropped_total",
                "DHCP messages dropped, by reason.",
                "reason",
                &c.dropped,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (k, v) in list {
                let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
            }
        }
    }
    out
}

async fn page<K: Kernel + Sync>(State(sh): State<Arc<Shared<K>>>) -> impl IntoResponse {
    let body = render(&*sh.engine.lock().await, sh.dhcp.as_deref());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Starts serving metrics on `addr` until the daemon stops.
pub async fn serve<K: Kernel + Sync>(
    addr: SocketAddr,
    shared: Arc<Shared<K>>,
) -> Result<(), crate::daemon::DaemonError> {
    let listener =
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| crate::daemon::DaemonError::Io {
                path: addr.to_string().into(),
                what: "bind the metrics listener",
                source,
            })?;
    let stop = shared.shutdown.subscribe();
    let app = Router::new().route("/metrics", get(page::<K>)).with_state(shared);
    tokio::spawn(crate::api::serve::serve(listener, app, 64, stop));
    tracing::info!(%addr, "serving metrics");
    Ok(())
}
