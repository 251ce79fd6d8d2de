//! Runs one client command against the daemon's socket.

use std::{path::PathBuf, time::Duration};

use crate::{
    api::{
        AllocReq, BindReq, Done, EipReq, EipRow, Entry, HostReq, Leases, LimitReq, PoolReq, PoolRow,
        QuarantineReq, ShutdownReq, Stats, Status,
    },
    cli::{
        Command, HostCommand, PoolCommand,
        client::{Client, ClientError},
        print::{opt, print_json, print_leases, print_limit_drops, print_rows},
    },
    model::Reservation,
};

/// How a client command ended.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Teardown(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(
                ClientError::NotRunning(_)
                | ClientError::Permission(_)
                | ClientError::Connect { .. }
                | ClientError::Timeout { .. },
            ) => 3,
            _ => 1,
        }
    }
}

/// Runs one client command against the daemon.
pub async fn run(socket: PathBuf, command: Command) -> Result<(), CliError> {
    let c = Client::from_env(&socket);
    let say = |d: Done| println!("{}", d.message);
    match command {
        Command::Daemon(_) => unreachable!("main runs the daemon"),
        Command::Bind {
            eip,
            target,
            no_move,
            limit,
            burst,
        } => say(c
            .post(
                "/v1/bind",
                &BindReq {
                    eip,
                    target,
                    no_move,
                    limit,
                    burst,
                },
            )
            .await?),
        Command::Limit {
            eip,
            rate,
            inbound,
            outbound,
            burst,
        } => {
            let (inbound, outbound) = match rate {
                Some(r) => (Some(r.clone()), Some(r)),
                None => (inbound, outbound),
            };
            say(c
                .post(
                    "/v1/limit",
                    &LimitReq {
                        eip,
                        inbound,
                        outbound,
                        burst,
                    },
                )
                .await?)
        }
        Command::Unbind { eip } => say(c.post("/v1/unbind", &EipReq { eip }).await?),
        Command::Alloc { eip } => say(c.post("/v1/alloc", &AllocReq { eip }).await?),
        Command::Release { eip } => say(c.post("/v1/release", &EipReq { eip }).await?),
        Command::List { json } => {
            let rows: Vec<EipRow> = c.get("/v1/eips").await?;
            if json {
                print_json(&rows)
            } else {
                print_rows(&rows)
            }
        }
        Command::Host(HostCommand::Add { mac, ip, name }) => {
            say(c.post("/v1/hosts", &HostReq { mac, ip, name }).await?)
        }
        Command::Host(HostCommand::Del { key }) => {
            say(c.delete(&format!("/v1/hosts/{}", path_segment(&key))).await?)
        }
        Command::Host(HostCommand::List { json }) => {
            let hosts: Vec<Reservation> = c.get("/v1/hosts").await?;
            if json {
                print_json(&hosts)
            } else {
                println!(
                    "{:<17} {:<15} {:<16} {:<6} QUARANTINED",
                    "MAC", "IP", "NAME", "SOURCE"
                );
                for h in hosts {
                    let src = format!("{:?}", h.source).to_lowercase();
                    println!(
                        "{:<17} {:<15} {:<16} {:<6} {}",
                        h.mac,
                        h.ip,
                        opt(&h.name),
                        src,
                        if h.quarantined { "yes" } else { "no" }
                    );
                }
            }
        }
        Command::Pool(PoolCommand::Add { cidr }) => say(c.post("/v1/pools", &PoolReq { cidr }).await?),
        Command::Pool(PoolCommand::Del { cidr }) => say(c
            .delete(&format!("/v1/pools/{}/{}", cidr.network(), cidr.prefix_len()))
            .await?),
        Command::Pool(PoolCommand::List { json }) => {
            let pools: Vec<PoolRow> = c.get("/v1/pools").await?;
            if json {
                print_json(&pools)
            } else {
                println!(
                    "{:<18} {:>10} {:>10} {:>10}",
                    "POOL", "USABLE", "ALLOCATED", "BOUND"
                );
                for p in pools {
                    println!(
                        "{:<18} {:>10} {:>10} {:>10}",
                        p.cidr, p.usable, p.allocated, p.bound
                    );
                }
            }
        }
        Command::Stats { json } => {
            let s: Stats = c.get("/v1/stats").await?;
            if json {
                print_json(&s)
            } else {
                print_rows(&s.eips);
                print_limit_drops(&s.eips);
                println!();
                println!("{:<24} {:>12}", "COUNTER", "PACKETS");
                for (name, v) in &s.counters {
                    println!("{name:<24} {v:>12}");
                }
                println!("{:<24} {:>12}", "port_dropped", s.port_dropped);
                println!("{:<24} {:>12}", "port_programs", s.port_programs.len());
                match s.guard_dropped {
                    Some(v) => println!("{:<24} {v:>12}", "guard_dropped"),
                    None => println!("{:<24} {:>12}", "guard_dropped", "no guard"),
                }
                if let Some(d) = &s.dhcp {
                    println!();
                    println!("{:<30} {:>12}", "DHCP", "MESSAGES");
                    let all = [
                        ("received", &d.received),
                        ("sent", &d.sent),
                        ("dropped", &d.dropped),
                    ];
                    for (what, list) in all {
                        for (name, v) in list {
                            println!("{:<30} {v:>12}", format!("{what} {name}"));
                        }
                    }
                }
            }
        }
        Command::Leases { json } => {
            let l: Leases = c.get("/v1/leases").await?;
            if json { print_json(&l) } else { print_leases(&l) }
        }
        Command::History { json, limit, before } => {
            let mut path = format!("/v1/history?limit={limit}");
            if let Some(b) = before {
                path += &format!("&before={b}");
            }
            let h: Vec<Entry> = c.get(&path).await?;
            if json {
                print_json(&h)
            } else {
                for e in h {
                    let show = |r: &[crate::api::Record]| serde_json::to_string(r).unwrap_or_default();
                    println!("{:>6} {} {}", e.seq, e.time, e.command);
                    println!("       before {}", show(&e.before));
                    println!("       after  {}", show(&e.after));
                }
            }
        }
        Command::Quarantine { target } => say(c
            .post("/v1/quarantine", &QuarantineReq { target, on: true })
            .await?),
        Command::Unquarantine { target } => say(c
            .post("/v1/quarantine", &QuarantineReq { target, on: false })
            .await?),
        Command::Teardown { instance } => teardown(&c, &socket, instance).await?,
    }
    Ok(())
}

/// A MAC or name as one URL path segment (names and MACs have no characters to escape, but a
/// stray `/` or `?` must not change the route).
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn teardown(c: &Client, socket: &std::path::Path, instance: Option<String>) -> Result<(), CliError> {
    match c.get::<Status>("/v1/status").await {
        Ok(status) if instance.as_ref().is_none_or(|i| *i == status.instance) => {
            let d: Done = c.post("/v1/shutdown", &ShutdownReq { teardown: true }).await?;
            println!("{}", d.message);
            // The daemon removes its socket last; wait for it (bounded).
            for _ in 0..100 {
                if !socket.exists() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(CliError::Teardown(format!(
                "the daemon did not stop within 10 s (its socket {} is still there)",
                socket.display()
            )))
        }
        Ok(_) | Err(ClientError::NotRunning(_)) => {
            let instance = match instance {
                Some(i) => i,
                None => crate::daemon::teardown::only_instance().map_err(CliError::Teardown)?,
            };
            let msg = crate::daemon::teardown::teardown_offline(&instance)
                .await
                .map_err(|e| CliError::Teardown(crate::error_chain(&*e)))?;
            println!("{msg}");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
