//! The hosts file: the patent's (and dnsmasq's `--dhcp-hostsfile`) line format
//! `mac,name,ip`, with `#` comments and blank lines. The name may be empty (`mac,,ip`).

use std::{net::Ipv4Addr, path::Path};

use crate::{
    lifecycle::{FileHost, valid_name},
    state::Mac,
};

/// A line that does not parse, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

/// Parses the whole text: the good lines, and the bad ones with their numbers (1-based).
pub fn parse(text: &str) -> (Vec<FileHost>, Vec<BadLine>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        match parse_line(content) {
            Ok((mac, name, ip)) => good.push(FileHost { line, mac, name, ip }),
            Err(reason) => bad.push(BadLine { line, reason }),
        }
    }
    (good, bad)
}

fn parse_line(content: &str) -> Result<(Mac, Option<String>, Ipv4Addr), String> {
    let fields: Vec<&str> = content.split(',').map(str::trim).collect();
    let [mac, name, ip] = fields[..] else {
        return Err(format!("expected mac,name,ip but found {} fields", fields.len()));
    };
    let mac: Mac = mac.parse().map_err(|e: crate::state::BadMac| e.to_string())?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
    let name = match name {
        "" => None,
        n if valid_name(n) => Some(n.to_owned()),
        n => return Err(format!("{n:?} is not a valid host name")),
    };
    Ok((mac, name, ip))
}

/// Reads and parses the file.
pub fn read(path: &Path) -> std::io::Result<(Vec<FileHost>, Vec<BadLine>)> {
    Ok(parse(&std::fs::read_to_string(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines_apply_and_bad_ones_are_reported_by_number() {
        let text = "\
# the patent's example
52:54:00:00:00:01,vm1,192.168.6.11
  52:54:00:00:00:02 , vm2 , 192.168.6.12   # trailing comment

52:54:00:00:00:03,,192.168.6.13
nonsense
52:54:00:00:00:04,vm4,192.168.6.300
52:54:00:00:00:05,bad name,192.168.6.15
zz:54:00:00:00:06,vm6,192.168.6.16
52:54:00:00:00:07,vm7
";
        let (good, bad) = parse(text);
        assert_eq!(
            good.iter()
                .map(|g| (g.line, g.name.as_deref(), g.ip.octets()[3]))
                .collect::<Vec<_>>(),
            [(2, Some("vm1"), 11), (3, Some("vm2"), 12), (5, None, 13)]
        );
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), [6, 7, 8, 9, 10]);
        assert!(
            bad[0].reason.contains("3 fields") || bad[0].reason.contains("1 fields"),
            "{:?}",
            bad[0]
        );
        assert!(bad[1].reason.contains("192.168.6.300"));
        assert!(bad[3].reason.contains("MAC"));
    }
}
