//! Removing an instance from the host, the one way every teardown does it (`eip daemon
//! --teardown-on-exit`, `eip shutdown --teardown`, and `eip teardown` with no daemon): the
//! aliases of the EIPs the pinned forward map holds, then the pins (which detaches the
//! programs), then the leak guard, which keeps untranslated packets in until the programs are
//! gone.

use super::{KernelError, guard, netlink::Netlink, pins::Pins};

/// Tears the instance of `pins` down; returns how many aliases went. The caller has dropped
/// its own handles on the dataplane first (an open link fd keeps a program attached).
pub async fn teardown(pins: &Pins, nl: &Netlink) -> Result<usize, KernelError> {
    let bound = pins.bound_eips().unwrap_or_else(|e| {
        tracing::warn!(error = %crate::error_chain(&e), "the pinned bindings cannot be read: no alias removed");
        Vec::new()
    });
    let removed = nl.del_aliases_anywhere(&bound).await?;
    pins.remove()?;
    if let Err(e) = guard::remove(pins.instance()) {
        tracing::warn!(error = %crate::error_chain(&e), "remove the leak guard");
    }
    Ok(removed)
}
