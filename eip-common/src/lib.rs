//! Shared by the eip eBPF programs and userspace: map types and names, constants, and the
//! pure packet-rewrite logic (checksums and 1:1 IPv4 address translation).
//!
//! Everything here is `no_std` and free of allocation so that the same code runs inside the
//! eBPF programs and under `cargo test` on the host.
#![no_std]

#[cfg(feature = "builder")]
extern crate alloc;

#[cfg(feature = "builder")]
pub mod builder;
pub mod checksum;
pub mod limiter;
pub mod maps;
pub mod packet;
pub mod parse;
pub mod rewrite;

pub use packet::Packet;
pub use rewrite::RewriteError;
