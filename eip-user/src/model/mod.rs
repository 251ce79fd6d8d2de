//! What the daemon owns, as plain data: MACs ([`mac`]), the records the store keeps and the
//! writes a change is made of ([`records`]), the state they make up with its indexes
//! ([`state`], [`eips`]), pool arithmetic ([`pool`]), and rates and sizes as tc writes them
//! ([`rate`]). Imports nothing else of this crate.

pub mod eips;
pub mod mac;
pub mod pool;
pub mod rate;
pub mod records;
pub mod state;

pub use eips::Eips;
pub use mac::*;
pub use pool::*;
pub use rate::RateLimit;
pub use records::*;
pub use state::*;
