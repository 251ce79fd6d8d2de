//! The real daemon and CLI in namespaces: binds by name, MAC and IP; traffic follows a move
//! and never reaches the old VM; aliases and gratuitous ARP on the external side; every
//! refusal of the CLI; restart with traffic flowing; kill -9 in a burst of binds.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

#[path = "../common/mod.rs"]
mod common;

use common::{Lab, counter, echo_requests_from, eip, pings};
use eip_common::maps::{MAP_DNAT, MAP_SNAT, MAP_VMS};
use eip_user::{
    api::{BindReq, Done, EipRow, EipState},
    cli::client::Client,
    kernel::pins::Pins,
    testing::{
        lab::daemon_args,
        process::Capture,
        services::{Service, Stream},
        topology::{vm_mac as mac, *},
    },
};

mod lifecycle;
mod refusals;
mod restarts;
mod vm_table;
