//! `eip teardown` with no daemon running: the pinned instance removed the way the daemon
//! removes it ([`teardown`]).

use crate::kernel::{bpffs, guard, netlink::Netlink, pins::Pins, teardown::teardown};

/// The only pinned instance, for `eip teardown` without a daemon or --instance.
pub fn only_instance() -> Result<String, String> {
    let dir = bpffs::root().join("eip");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    match &names[..] {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "no daemon is running and nothing is pinned under {}",
            dir.display()
        )),
        many => Err(format!(
            "several instances are pinned ({}); name one with --instance",
            many.join(", ")
        )),
    }
}

/// Teardown without a daemon: the aliases of the EIPs the pinned forward map holds, then the
/// pins (which detaches the programs).
pub async fn teardown_offline(instance: &str) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let pins = Pins::new(instance)?;
    if !pins.exists() {
        let _ = guard::remove(instance);
        return Err(format!(
            "instance {instance} has nothing pinned under {}",
            pins.root().display()
        )
        .into());
    }
    let removed = teardown(&pins, &Netlink::new()?).await?;
    Ok(format!(
        "removed instance {instance}: {removed} aliases, pins under {}",
        pins.root().display()
    ))
}
