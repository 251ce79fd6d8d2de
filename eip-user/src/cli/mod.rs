//! The `eip` command line. Its shape is fixed (scripts depend on it): see the README.
//!
//! Exit codes: 0 success, 1 refused or failed (one sentence on stderr), 2 bad usage, 3 the
//! daemon cannot be reached.

pub mod client;
mod print;
mod run;

use std::{net::Ipv4Addr, path::PathBuf};

use clap::{Parser, Subcommand};
use ipnet::Ipv4Net;

pub use run::{CliError, run};

use crate::{daemon::config::DaemonArgs, model::Mac};

pub const DEFAULT_SOCKET: &str = "/run/eip/eip.sock";

#[derive(Debug, Parser)]
#[command(
    name = "eip",
    version,
    about = "Elastic public IPv4 addresses for the VMs of this hypervisor"
)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "EIP_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (logs to stderr).
    Daemon(Box<DaemonArgs>),
    /// Bind EIP to a VM (host name, MAC or private IP); allocates a free pool address, moves a
    /// bound one.
    Bind {
        eip: Ipv4Addr,
        target: String,
        /// Refuse instead of moving an EIP bound elsewhere.
        #[arg(long)]
        no_move: bool,
        /// Limit the EIP's bandwidth both ways to RATE, as tc writes it: 500kbit, 20mbit,
        /// 1gbit (bits per second), or kbps/mbps (bytes per second).
        #[arg(long, value_name = "RATE")]
        limit: Option<String>,
        /// The limit's burst, such as 64kb (default: 250 ms at the rate, at least 128kb).
        #[arg(long, value_name = "SIZE", requires = "limit")]
        burst: Option<String>,
    },
    /// Limit EIP's bandwidth: RATE both ways, or --in and --out each (a direction left out
    /// keeps its limit); `none` removes a limit. The limit stays with the EIP when it moves
    /// and while it is unbound. RATE as tc writes it: 500kbit, 20mbit, 1gbit (bits per
    /// second), or kbps/mbps (bytes per second).
    Limit {
        eip: Ipv4Addr,
        #[arg(
            value_name = "RATE",
            conflicts_with_all = ["inbound", "outbound"],
            required_unless_present_any = ["inbound", "outbound"]
        )]
        rate: Option<String>,
        /// The limit toward the VM.
        #[arg(long = "in", value_name = "RATE")]
        inbound: Option<String>,
        /// The limit from the VM.
        #[arg(long = "out", value_name = "RATE")]
        outbound: Option<String>,
        /// The burst of the limits set, such as 64kb (default: 250 ms at the rate, at least
        /// 128kb).
        #[arg(long, value_name = "SIZE")]
        burst: Option<String>,
    },
    /// Unbind EIP (it stays allocated).
    Unbind { eip: Ipv4Addr },
    /// Allocate EIP, or the lowest free pool address; prints the address.
    Alloc { eip: Option<Ipv4Addr> },
    /// Return EIP to its pool (unbinding it first).
    Release { eip: Ipv4Addr },
    /// Every allocated or bound address, with its VM and counters.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The reservations (MAC -> private IP).
    #[command(subcommand)]
    Host(HostCommand),
    /// The EIP pools.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Dataplane counters: per EIP, and drops by reason.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// The DHCP leases with their expiry, and the addresses clients declined.
    Leases {
        #[arg(long)]
        json: bool,
    },
    /// The audit log of every change, newest page (oldest first within it).
    History {
        #[arg(long)]
        json: bool,
        /// Entries to show, newest first taken (at most 10,000).
        #[arg(long, default_value_t = crate::api::HISTORY_PAGE)]
        limit: usize,
        /// Only entries before this sequence number (the page before one already seen).
        #[arg(long, value_name = "SEQ")]
        before: Option<u64>,
    },
    /// Drop all of a VM's traffic but DHCP.
    Quarantine { target: String },
    /// Lift a quarantine.
    Unquarantine { target: String },
    /// Stop the daemon (if one runs) and remove the instance's programs, pins and aliases.
    Teardown {
        /// The instance (default: the running daemon's, or the only one pinned).
        #[arg(long)]
        instance: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Reserve IP for MAC.
    Add {
        mac: Mac,
        ip: Ipv4Addr,
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a reservation (its EIP returns to the pool).
    Del {
        #[arg(value_name = "MAC|NAME")]
        key: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    Add {
        cidr: Ipv4Net,
    },
    /// Delete a pool (refused while any of its addresses is bound).
    Del {
        cidr: Ipv4Net,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}
