//! Prometheus text metrics (`--metrics ADDR:PORT`, path `/metrics`).

use std::{fmt::Write as _, net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::{api::Shared, engine::Engine, kernel::Kernel};

/// The metrics page for the engine's state, the dataplane's counters and the DHCP server's.
pub fn render<K: Kernel>(en: &Engine<K>, dhcp: Option<&crate::dhcp::Stats>) -> String {
    let mut out = String::new();
    let s = en.state();
    let mut family = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        "eip_packets_total",
        "counter",
        "Packets translated for an elastic IP, by direction.",
    );
    family(
        "eip_bytes_total",
        "counter",
        "Bytes translated for an elastic IP, by direction.",
    );
    let mut samples = String::new();
    for e in s.eips.values() {
        let Ok(st) = en.kernel.eip_stats(e.slot) else {
            continue;
        };
        for (metric, dir, v) in [
            ("eip_packets_total", "in", st.in_packets),
            ("eip_packets_total", "out", st.out_packets),
            ("eip_bytes_total", "in", st.in_bytes),
            ("eip_bytes_total", "out", st.out_bytes),
        ] {
            let _ = writeln!(samples, "{metric}{{eip=\"{}\",direction=\"{dir}\"}} {v}", e.addr);
        }
    }
    out += &samples;
    let _ = writeln!(
        out,
        "# HELP eip_dataplane_packets_total Dataplane outcomes, drops by reason among them.\n# TYPE eip_dataplane_packets_total counter"
    );
    if let Ok(counters) = en.kernel.counters() {
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
    tokio::spawn(crate::serve::serve(listener, app, 64, stop));
    tracing::info!(%addr, "serving metrics");
    Ok(())
}
