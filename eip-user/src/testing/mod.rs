//! What the tests, the benchmarks and the lab share (feature `testing`): namespace guards and
//! the dataplane's packet fixtures.

pub mod daemon;
pub mod fixtures;
pub mod netns;
pub mod process;
pub mod topology;
