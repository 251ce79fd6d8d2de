//! The dataplane's kernel memory: the BPF maps of a dataplane sized for, and filled with, N
//! bindings, as the kernel accounts them (`memlock` in each map's fdinfo, which is what
//! `bpftool map show` prints).

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use eip_user::kernel::dataplane::{
    Dataplane, Sizes,
    update::{bind_ops, execute},
};

use crate::figures::Figure;

/// The sum of `memlock` over every BPF map this process holds open.
fn maps_memlock() -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:bpf-map" {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))?;
        total += info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .context("memlock in a map's fdinfo")?;
    }
    Ok(total)
}

/// Loads a dataplane sized for each of `sizes` bindings, fills it, and reads its maps' memory.
pub fn run(sizes: &[u32], say: &dyn Fn(&str)) -> Result<Vec<Figure>> {
    let before = maps_memlock()?;
    let mut out = Vec::new();
    let mut previous: Option<(u32, u64)> = None;
    for &n in sizes {
        say(&format!("memory: dataplane with {n} bindings"));
        let mut dp = Dataplane::load(Sizes {
            bindings: n,
            ..Default::default()
        })
        .context("load the dataplane")?;
        for i in 0..n {
            let eip = Ipv4Addr::from(0xf000_0000u32 + i);
            let private = Ipv4Addr::from(0xf800_0000u32 + i);
            execute(&mut dp, &bind_ops(eip, 1 + i, private, None)).with_context(|| format!("binding {i}"))?;
        }
        let bytes = maps_memlock()? - before;
        out.push(Figure::new(
            "memory",
            "BPF maps (memlock), sized and filled",
            Some(n as u64),
            "memory",
            bytes as f64 / (1024.0 * 1024.0),
            "MiB",
        ));
        // What a binding adds: the growth from the previous size, without the fixed part
        // (the VM table and the small maps).
        if let Some((m, b)) = previous.filter(|&(m, _)| m < n) {
            out.push(Figure::new(
                "memory",
                "BPF maps (memlock), sized and filled",
                Some(n as u64),
                "per binding",
                bytes.saturating_sub(b) as f64 / f64::from(n - m),
                "B",
            ));
        }
        previous = Some((n, bytes));
    }
    Ok(out)
}
