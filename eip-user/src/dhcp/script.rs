//! `--lease-script PATH`: run as `PATH add|old|del MAC IP [HOSTNAME]` for each lease event,
//! like dnsmasq's `--dhcp-script`. Events queue to one task that runs the script once at a
//! time (so a script sees events in order), without a shell, with a time limit; a failing or
//! slow script is logged and never holds up DHCP.

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::sync::mpsc;

use crate::lifecycle::LeaseEvent;

/// Events that may wait for the script beyond the leases held at start (each of which is
/// told `old` then); past this, new events are logged and dropped.
pub const QUEUE: usize = 4096;
/// A run taking longer is killed.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the runner; events sent to the returned sender run the script at `path`. `leases`:
/// how many leases the daemon starts with, so their `old` events all fit.
pub fn spawn(path: PathBuf, interface: String, leases: usize) -> mpsc::Sender<LeaseEvent> {
    let (tx, mut rx) = mpsc::channel::<LeaseEvent>(QUEUE + leases);
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            run(&path, &interface, &ev).await;
        }
    });
    tx
}

/// The script's arguments for `ev`.
pub fn args(ev: &LeaseEvent) -> Vec<String> {
    let mut a = vec![
        ev.verb.as_str().to_owned(),
        ev.lease.mac.to_string(),
        ev.lease.ip.to_string(),
    ];
    a.extend(ev.lease.hostname.clone());
    a
}

async fn run(path: &PathBuf, interface: &str, ev: &LeaseEvent) {
    let args = args(ev);
    let mut cmd = tokio::process::Command::new(path);
    cmd.args(&args)
        .env("EIP_INTERFACE", interface)
        .env("EIP_LEASE_EXPIRES", ev.lease.expires.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let script = path.display().to_string();
    match tokio::time::timeout(TIMEOUT, cmd.output()).await {
        Err(_) => tracing::warn!(%script, ?args, "lease script killed after {}s", TIMEOUT.as_secs()),
        Ok(Err(e)) => tracing::warn!(%script, ?args, error = %e, "lease script could not run"),
        Ok(Ok(out)) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            tracing::warn!(
                %script,
                ?args,
                status = %out.status,
                stderr = stderr.lines().next().unwrap_or(""),
                "lease script failed"
            )
        }
        Ok(Ok(_)) => tracing::debug!(%script, ?args, "lease script ran"),
    }
}
