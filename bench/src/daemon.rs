//! The real `eip daemon` as the benchmarks drive it: started in a namespace with a hosts file,
//! spoken to through its API (what an orchestrator uses), stopped cleanly.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result, bail};
use eip_user::{
    api::{BindReq, Done, EipReq, EipRow, LimitReq, Stats},
    cli::client::Client,
    testing::{daemon::Instance, process::Background},
};

pub struct Daemon {
    pub inst: Instance,
    process: Option<Background>,
    client: Client,
    rt: tokio::runtime::Runtime,
}

impl Daemon {
    /// Writes `hosts` (the hosts file's text) into the instance's directory and starts the
    /// daemon with it and `args`, logging at `filter`; waits at most `limit` for it to answer.
    pub fn start(
        inst: Instance,
        hosts: &str,
        args: &[&str],
        filter: &str,
        limit: Duration,
    ) -> Result<Daemon> {
        let file = inst.dir.join("hosts");
        std::fs::write(&file, hosts)?;
        let file = file.to_string_lossy().into_owned();
        let mut all = args.to_vec();
        all.extend(["--hosts", &file]);
        let process = inst
            .start_logging(&all, filter, limit)
            .context("start the daemon")?;
        let client = Client::new(&inst.socket());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Daemon {
            inst,
            process: Some(process),
            client,
            rt,
        })
    }

    pub fn bind(&self, eip: Ipv4Addr, target: &str, no_move: bool) -> Result<()> {
        let req = BindReq {
            eip,
            target: target.to_owned(),
            no_move,
            limit: None,
            burst: None,
        };
        self.rt
            .block_on(self.client.post::<_, Done>("/v1/bind", &req))
            .with_context(|| format!("bind {eip} to {target}"))?;
        Ok(())
    }

    /// Sets `eip`'s limit each way (a RATE, `none`, or `None`: unchanged), with `burst`.
    pub fn limit(
        &self,
        eip: Ipv4Addr,
        inbound: Option<&str>,
        outbound: Option<&str>,
        burst: Option<&str>,
    ) -> Result<()> {
        let req = LimitReq {
            eip,
            inbound: inbound.map(str::to_owned),
            outbound: outbound.map(str::to_owned),
            burst: burst.map(str::to_owned),
        };
        self.rt
            .block_on(self.client.post::<_, Done>("/v1/limit", &req))
            .with_context(|| format!("limit {eip}"))?;
        Ok(())
    }

    /// The EIPs' rows (`eip list`).
    pub fn eips(&self) -> Result<Vec<EipRow>> {
        Ok(self.rt.block_on(self.client.get("/v1/eips"))?)
    }

    pub fn release(&self, eip: Ipv4Addr) -> Result<()> {
        self.rt
            .block_on(self.client.post::<_, Done>("/v1/release", &EipReq { eip }))
            .with_context(|| format!("release {eip}"))?;
        Ok(())
    }

    /// The dataplane counter `name` (`eip stats`).
    pub fn counter(&self, name: &str) -> Result<u64> {
        let stats: Stats = self.rt.block_on(self.client.get("/v1/stats"))?;
        Ok(stats
            .counters
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v))
    }

    /// The bridge ports (ifindexes) where the daemon takes the VMs' outbound traffic.
    pub fn port_programs(&self) -> Result<Vec<u32>> {
        let stats: Stats = self.rt.block_on(self.client.get("/v1/stats"))?;
        Ok(stats.port_programs)
    }

    /// The daemon's resident set (kB), from /proc.
    pub fn rss_kb(&self) -> Result<u64> {
        let pid = self.process.as_ref().context("no daemon")?.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS in /proc/PID/status")
    }

    /// Stops the daemon (SIGTERM) and fails unless it exits 0; returns the instance, whose
    /// state a restarted daemon takes over.
    pub fn stop(mut self) -> Result<Instance> {
        if let Some(p) = self.process.take() {
            let status = p.terminate_and_wait(Duration::from_secs(60))?;
            if !status.success() {
                bail!("the daemon exited {status}: {}", self.inst.log_text());
            }
        }
        Ok(self.inst)
    }
}
