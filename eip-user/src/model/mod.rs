//! What the daemon owns, as plain data: MACs, reservations, elastic IPs, leases and pools
//! ([`state`]), and rates and sizes as tc writes them ([`rate`]). Imports nothing of this crate.

pub mod rate;
pub mod state;

pub use state::*;
