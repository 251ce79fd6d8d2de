//! The daemon's API: HTTP/1.1 and JSON over the Unix socket (so `curl --unix-socket` works).
//!
//! | method and path              | body                              | answer                |
//! |------------------------------|-----------------------------------|-----------------------|
//! | `GET /v1/status`             |                                   | [`Status`]            |
//! | `GET /v1/eips`               |                                   | `[`[`EipRow`]`]`      |
//! | `POST /v1/alloc`             | `{"eip": "A"?}`                   | [`Done`]              |
//! | `POST /v1/bind`              | `{"eip", "target", "no_move"?, "limit"?, "burst"?}` | [`Done`] |
//! | `POST /v1/unbind`            | `{"eip"}`                         | [`Done`]              |
//! | `POST /v1/release`           | `{"eip"}`                         | [`Done`]              |
//! | `POST /v1/limit`             | `{"eip", "in"?, "out"?, "burst"?}` | [`Done`]             |
//! | `GET /v1/hosts`              |                                   | `[`[`Reservation`]`]`        |
//! | `POST /v1/hosts`             | `{"mac", "ip", "name"?}`          | [`Done`]              |
//! | `DELETE /v1/hosts/{mac|name}`|                                   | [`Done`]              |
//! | `GET /v1/pools`              |                                   | `[`[`PoolRow`]`]`     |
//! | `POST /v1/pools`             | `{"cidr"}`                        | [`Done`]              |
//! | `DELETE /v1/pools/{addr}/{len}` |                                | [`Done`]              |
//! | `POST /v1/quarantine`        | `{"target", "on"}`                | [`Done`]              |
//! | `GET /v1/leases`             |                                   | [`Leases`]            |
//! | `GET /v1/stats`              |                                   | [`Stats`]             |
//! | `GET /v1/history?limit=N&before=SEQ` |                                   | `[`[`Entry`]`]`       |
//! | `POST /v1/shutdown`          | `{"teardown": bool}`              | [`Done`]              |
//!
//! Every error is `{"error": "one sentence"}` with status 400 (malformed request), 404
//! (unknown target), 409 (refused by the lifecycle) or 500 (the store or kernel failed).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State as AxState},
    http::StatusCode,
    routing::{delete, get, post},
};
use ipnet::Ipv4Net;
use tokio::sync::{Mutex, watch};

/// A declined address is offered again this long after it was declined.
pub use crate::lifecycle::DECLINE_BACKOFF;
pub use crate::store::{Entry, Record};
use crate::{
    engine::Engine,
    error_chain,
    kernel::Kernel,
    lifecycle::{self, Refusal, Target},
    model::rate::{LimitChange, Size},
    model::{Reservation, State, usable},
};

mod error;
pub mod serve;
mod wire;

pub use error::{Body, Failure, Q};
pub use wire::*;

/// What the handlers share.
pub struct Shared<K> {
    /// Shared with the DHCP server and the hosts file's follower.
    pub engine: Arc<Mutex<Engine<K>>>,
    pub status: Status,
    /// Set to `Some(teardown)` to stop the daemon.
    pub shutdown: watch::Sender<Option<bool>>,
    pub dhcp: Option<Arc<crate::dhcp::Stats>>,
}

type Sh<K> = AxState<Arc<Shared<K>>>;
type Answer = Result<Json<Done>, Failure>;

pub fn router<K: Kernel + Sync>(shared: Arc<Shared<K>>) -> Router {
    Router::new()
        .route("/v1/status", get(status::<K>))
        .route("/v1/eips", get(eips::<K>))
        .route("/v1/alloc", post(alloc::<K>))
        .route("/v1/bind", post(bind::<K>))
        .route("/v1/unbind", post(unbind::<K>))
        .route("/v1/release", post(release::<K>))
        .route("/v1/limit", post(limit::<K>))
        .route("/v1/hosts", get(hosts::<K>).post(host_add::<K>))
        .route("/v1/hosts/{key}", delete(host_del::<K>))
        .route("/v1/pools", get(pools::<K>).post(pool_add::<K>))
        .route("/v1/pools/{addr}/{len}", delete(pool_del::<K>))
        .route("/v1/quarantine", post(quarantine::<K>))
        .route("/v1/leases", get(leases::<K>))
        .route("/v1/stats", get(stats::<K>))
        .route("/v1/history", get(history::<K>))
        .route("/v1/shutdown", post(shutdown::<K>))
        .fallback(|| async { Failure(StatusCode::NOT_FOUND, "no such API endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            Failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "this API endpoint does not take that method".into(),
            )
        })
        .with_state(shared)
}

fn done(message: String) -> Answer {
    Ok(Json(Done { message }))
}

async fn status<K: Kernel + Sync>(AxState(sh): Sh<K>) -> Json<Status> {
    Json(sh.status.clone())
}

fn rows<K: Kernel>(engine: &Engine<K>) -> Vec<EipRow> {
    let s: &State = engine.state();
    s.eips
        .values()
        .map(|e| {
            let host = e.bound.and_then(|m| s.hosts.get(&m));
            let st = engine.kernel().eip_stats(e.slot).unwrap_or_default();
            let dropped = engine.kernel().limit_drops(e.slot).unwrap_or_default();
            EipRow {
                eip: e.addr,
                state: if e.bound.is_some() {
                    EipState::Bound
                } else {
                    EipState::Allocated
                },
                private: host.map(|h| h.ip),
                mac: e.bound,
                name: host.and_then(|h| h.name.clone()),
                in_packets: st.in_packets,
                in_bytes: st.in_bytes,
                out_packets: st.out_packets,
                out_bytes: st.out_bytes,
                path: host
                    .and_then(|h| engine.kernel().path_of(h.ip))
                    .map(str::to_owned),
                limit_in_bps: e.limit_in.map(|l| l.rate_bps),
                burst_in_bytes: e.limit_in.map(|l| l.burst()),
                limit_out_bps: e.limit_out.map(|l| l.rate_bps),
                burst_out_bytes: e.limit_out.map(|l| l.burst()),
                limit_dropped: LimitDropped {
                    in_packets: dropped.in_packets,
                    in_bytes: dropped.in_bytes,
                    out_packets: dropped.out_packets,
                    out_bytes: dropped.out_bytes,
                },
            }
        })
        .collect()
}

async fn eips<K: Kernel + Sync>(AxState(sh): Sh<K>) -> Json<Vec<EipRow>> {
    Json(rows(&*sh.engine.lock().await))
}

async fn alloc<K: Kernel + Sync>(AxState(sh): Sh<K>, Body(r): Body<AllocReq>) -> Answer {
    let mut en = sh.engine.lock().await;
    let command = match r.eip {
        Some(a) => format!("alloc {a}"),
        None => "alloc".into(),
    };
    let change = lifecycle::alloc(en.state(), en.limits(), r.eip).map(|(_, c)| c);
    done(en.run(&command, change).await?)
}

fn target(s: &str) -> Result<Target, Failure> {
    s.parse::<Target>().map_err(Failure::from)
}

async fn bind<K: Kernel + Sync>(AxState(sh): Sh<K>, Body(r): Body<BindReq>) -> Answer {
    let t = target(&r.target)?;
    let burst = burst(r.burst.as_deref())?;
    let limit = match LimitChange::parse(r.limit.as_deref(), burst).map_err(Refusal::from)? {
        LimitChange::Set(l) => Some(l),
        // `none` asks for nothing: the EIP keeps what it has.
        LimitChange::Keep | LimitChange::Remove => None,
    };
    let mut en = sh.engine.lock().await;
    let mut command = format!(
        "bind {} {}{}",
        r.eip,
        r.target,
        if r.no_move { " --no-move" } else { "" }
    );
    for (flag, v) in [("--limit", &r.limit), ("--burst", &r.burst)] {
        if let Some(v) = v {
            command += &format!(" {flag} {v}");
        }
    }
    let change = match limit {
        Some(l) => lifecycle::bind_limited(en.state(), en.limits(), r.eip, &t, r.no_move, l),
        None => lifecycle::bind(en.state(), en.limits(), r.eip, &t, r.no_move),
    };
    done(en.run(&command, change).await?)
}

fn burst(s: Option<&str>) -> Result<Option<Size>, Failure> {
    s.map(str::parse::<Size>)
        .transpose()
        .map_err(|e| Refusal::from(e).into())
}

async fn limit<K: Kernel + Sync>(AxState(sh): Sh<K>, Body(r): Body<LimitReq>) -> Answer {
    if r.inbound.is_none() && r.outbound.is_none() {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "give a rate (or none) for in, out or both".into(),
        ));
    }
    let burst = burst(r.burst.as_deref())?;
    let inbound = LimitChange::parse(r.inbound.as_deref(), burst).map_err(Refusal::from)?;
    let outbound = LimitChange::parse(r.outbound.as_deref(), burst).map_err(Refusal::from)?;
    let mut command = format!("limit {}", r.eip);
    for (flag, v) in [
        ("--in", &r.inbound),
        ("--out", &r.outbound),
        ("--burst", &r.burst),
    ] {
        if let Some(v) = v {
            command += &format!(" {flag} {v}");
        }
    }
    let mut en = sh.engine.lock().await;
    let change = lifecycle::limit(en.state(), en.limits(), r.eip, inbound, outbound);
    done(en.run(&command, change).await?)
}

async fn unbind<K: Kernel + Sync>(AxState(sh): Sh<K>, Body(r): Body<EipReq>) -> Answer {
    let mut en = sh.engine.lock().await;
    let change = lifecycle::unbind(en.state(), r.eip);
    done(en.run(&format!("unbind {}", r.eip), change).await?)
}

async fn release<K: Kernel + Sync>(AxState(sh): Sh<K>, Body(r): Body<EipReq>) -> Answer {
    let mut en = sh.engine.lock().await;
    let change = lifecycle::release(en.state(), r.eip);
    done(en.run(&format!("release {}", r.eip), change).await?)
}

async fn hosts<K: Kernel + Sync>(AxState(sh): Sh<K>) -> Json<Vec<Reservation>> {
    Json(sh.engine.lock().await.state().hosts.values().cloned().collect())
}

async fn host_add<K: Kernel + Sync>(AxState(sh): Sh<K>, Body(r): Body<HostReq>) -> Answer {
    let mut en = sh.engine.lock().await;
    let command = match &r.name {
        Some(n) => format!("host add {} {} --name {n}", r.mac, r.ip),
        None => format!("host add {} {}", r.mac, r.ip),
    };
    let change = lifecycle::host_add(en.state(), en.limits(), r.mac, r.ip, r.name);
    done(en.run(&command, change).await?)
}

async fn host_del<K: Kernel + Sync>(AxState(sh): Sh<K>, Path(key): Path<String>) -> Answer {
    let mut en = sh.engine.lock().await;
    let change = lifecycle::host_del(en.state(), en.limits(), &key);
    done(en.run(&format!("host del {key}"), change).await?)
}

async fn pools<K: Kernel + Sync>(AxState(sh): Sh<K>) -> Json<Vec<PoolRow>> {
    let en = sh.engine.lock().await;
    let s = en.state();
    Json(
        s.pools
            .iter()
            .map(|p| {
                let inside = s.eips.values().filter(|e| p.contains(&e.addr));
                PoolRow {
                    cidr: *p,
                    usable: usable_count(*p),
                    allocated: inside.clone().count(),
                    bound: inside.filter(|e| e.bound.is_some()).count(),
                }
            })
            .collect(),
    )
}

fn usable_count(p: Ipv4Net) -> u64 {
    match p.prefix_len() {
        31 | 32 => usable(p).count() as u64,
        len => (1u64 << (32 - len)) - 2,
    }
}

async fn pool_add<K: Kernel + Sync>(AxState(sh): Sh<K>, Body(r): Body<PoolReq>) -> Answer {
    let mut en = sh.engine.lock().await;
    let host = en
        .host_nets()
        .await
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&e)))?;
    let change = lifecycle::pool_add(en.state(), en.limits(), r.cidr, &host);
    done(en.run(&format!("pool add {}", r.cidr), change).await?)
}

async fn pool_del<K: Kernel + Sync>(AxState(sh): Sh<K>, Path((addr, len)): Path<(String, String)>) -> Answer {
    let cidr: Ipv4Net = format!("{addr}/{len}").parse().map_err(|_| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("{addr}/{len} is not an IPv4 CIDR"),
        )
    })?;
    let mut en = sh.engine.lock().await;
    let change = lifecycle::pool_del(en.state(), cidr);
    done(en.run(&format!("pool del {cidr}"), change).await?)
}

async fn quarantine<K: Kernel + Sync>(AxState(sh): Sh<K>, Body(r): Body<QuarantineReq>) -> Answer {
    let t = target(&r.target)?;
    let mut en = sh.engine.lock().await;
    let change = lifecycle::quarantine(en.state(), &t, r.on);
    let verb = if r.on { "quarantine" } else { "unquarantine" };
    done(en.run(&format!("{verb} {}", r.target), change).await?)
}

async fn stats<K: Kernel + Sync>(AxState(sh): Sh<K>) -> Result<Json<Stats>, Failure> {
    let en = sh.engine.lock().await;
    let counters = en
        .kernel()
        .counters()
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&e)))?;
    Ok(Json(Stats {
        eips: rows(&en),
        counters: counters
            .into_iter()
            .map(|(c, v)| (c.name().to_owned(), v))
            .collect(),
        dhcp: sh.dhcp.as_ref().map(|d| d.counts()),
        guard_dropped: en.kernel().guard_dropped(),
        port_dropped: en.kernel().port_dropped(),
        port_programs: en.kernel().port_programs(),
    }))
}

async fn leases<K: Kernel + Sync>(AxState(sh): Sh<K>) -> Json<Leases> {
    let en = sh.engine.lock().await;
    let s = en.state();
    Json(Leases {
        now: crate::dhcp::now(),
        leases: s
            .leases
            .values()
            .map(|l| LeaseRow {
                lease: l.clone(),
                reserved: s.hosts.get(&l.mac).is_some_and(|h| h.ip == l.ip),
            })
            .collect(),
        declined: s.declined.values().cloned().collect(),
    })
}

async fn history<K: Kernel + Sync>(
    AxState(sh): Sh<K>,
    Q(q): Q<HistoryQuery>,
) -> Result<Json<Vec<Entry>>, Failure> {
    let limit = q.limit.unwrap_or(HISTORY_PAGE);
    if limit == 0 || limit > HISTORY_PAGE_MAX {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1 to {HISTORY_PAGE_MAX}"),
        ));
    }
    let en = sh.engine.lock().await;
    en.store()
        .history_page(Some(limit), q.before)
        .map(Json)
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&e)))
}

async fn shutdown<K: Kernel + Sync>(AxState(sh): Sh<K>, Body(r): Body<ShutdownReq>) -> Answer {
    sh.shutdown.send_replace(Some(r.teardown));
    done(if r.teardown {
        "the daemon stops and removes its dataplane".into()
    } else {
        "the daemon stops; the dataplane keeps forwarding".into()
    })
}
