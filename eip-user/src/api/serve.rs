//! The HTTP server behind the CLI's socket and `/metrics`: axum's router on hyper's HTTP/1
//! connections, with the limits `axum::serve` does not set. A client that opens connections and
//! never finishes a request (a stuck script, a slowloris) must not take the daemon's file
//! descriptors or lock the CLI out: each connection has a few seconds to send its request
//! head and a bound on its whole life, and the connections open at once stay below the
//! descriptor limit ([`connection_limit`], which raises the soft limit first); further clients
//! wait in the listen backlog until one closes.

use std::{sync::Arc, time::Duration};

use axum::{Router, serve::Listener};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::sync::{Semaphore, watch};

/// Connections served at once, at most: the daemon's other descriptors (maps, programs,
/// netlink, the store, DHCP) need far fewer than the rest of the limit.
pub const MAX_CONNECTIONS: u32 = 4096;
/// Descriptors kept for everything but the API's connections.
const RESERVED_FDS: u64 = 256;

/// Raises the soft limit on open files to the hard one (as far as 65,536) and returns how
/// many API connections fit below it.
pub fn connection_limit() -> u32 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let want = lim.rlim_max.min(65_536);
            if want > lim.rlim_cur {
                let raised = libc::rlimit {
                    rlim_cur: want,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = want;
                }
            }
        }
    }
    let room = lim.rlim_cur.saturating_sub(RESERVED_FDS).max(16);
    room.min(u64::from(MAX_CONNECTIONS)) as u32
}
/// A request head must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer (every CLI command is one short request).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping daemon waits for the answers in flight (the shutdown request's own).
const DRAIN: Duration = Duration::from_secs(2);

/// Serves `app` on `listener` until `stop` holds a value, then lets the connections in flight
/// finish (for at most two seconds).
pub async fn serve<L: Listener>(
    mut listener: L,
    app: Router,
    max: u32,
    mut stop: watch::Receiver<Option<bool>>,
) {
    let slots = Arc::new(Semaphore::new(max as usize));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.wait_for(Option::is_some) => break,
        };
        let io = tokio::select! {
            (io, _) = listener.accept() => io,
            _ = stop.wait_for(Option::is_some) => break,
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(io), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "API connection"),
                Err(_) => tracing::debug!("API connection closed after {} s", CONNECTION_TIMEOUT.as_secs()),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }
    // Every slot free again means every connection has ended.
    let _ = tokio::time::timeout(DRAIN, slots.acquire_many(max)).await;
}
