//! The last line of defence: an nftables rule that drops whatever would leave the external
//! interface with a source in the VMs' subnet.
//!
//! The programs translate every bound VM's packets, and the fast path sends them out past
//! netfilter. What reaches netfilter's postrouting hook on the external interface with a
//! private source is a packet nothing translated: a VM without an EIP, or a bound one in a
//! window when a program is not there (before the first attach, after a teardown elsewhere, a
//! kernel that dropped a link). Routed on, it would put a customer's private address on the
//! public network and let the outside learn it. The rule sits after source NAT (priority 300,
//! past srcnat's 100), so an operator's own masquerade for VMs without an EIP still applies
//! first. It is one nftables transaction, so re-installing it leaves no gap.

use std::{io::Write, process::Command};

use ipnet::Ipv4Net;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot run nft (is the nftables package installed?)")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused the guard table {table}: {stderr}")]
    Refused { table: String, stderr: String },
}

/// The table of `instance`: nftables names take letters, digits and underscores.
pub fn table(instance: &str) -> String {
    let name: String = instance
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("eip_guard_{name}")
}

fn nft(script: &str, table: &str) -> Result<String, GuardError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(GuardError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(GuardError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(GuardError::Spawn)?;
    if !out.status.success() {
        return Err(GuardError::Refused {
            table: table.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs (or replaces, atomically) the guard of `instance`: nothing from `private` leaves
/// `ext` untranslated.
pub fn install(instance: &str, outs: &[&str], private: Ipv4Net) -> Result<(), GuardError> {
    let t = table(instance);
    let ext = outs.join("\", \"");
    let script = format!(
        "add table ip {t}\n\
         flush table ip {t}\n\
         add chain ip {t} leak {{ type filter hook postrouting priority 300; policy accept; }}\n\
         add rule ip {t} leak oifname {{ \"{ext}\" }} ip saddr {private} counter drop comment \"eip: a VM's private address never leaves untranslated\"\n",
        private = private.trunc()
    );
    nft(&script, &t).map(drop)
}

/// Removes the guard of `instance`, if there is one.
pub fn remove(instance: &str) -> Result<(), GuardError> {
    let t = table(instance);
    // `destroy` (nft 1.0.8) is not in every release: add-then-delete works in all.
    nft(&format!("add table ip {t}\ndelete table ip {t}\n"), &t).map(drop)
}

/// Packets the guard has dropped, if it is installed.
pub fn dropped(instance: &str) -> Option<u64> {
    let t = table(instance);
    let out = Command::new("nft")
        .args(["-j", "list", "table", "ip", &t])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["nftables"].as_array()?.iter().find_map(|item| {
        item["rule"]["expr"]
            .as_array()?
            .iter()
            .find_map(|e| e["counter"]["packets"].as_u64())
    })
}
