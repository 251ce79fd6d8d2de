//! What the tests, the benchmarks and the lab share (feature `testing`): namespace guards, the
//! reference topology, the real daemon and DHCP clients in it, small servers inside
//! namespaces, the lab, and the dataplane's packet fixtures.

pub mod clients;
pub mod control;
pub mod daemon;
pub mod fixtures;
pub mod iperf;
pub mod lab;
pub mod netns;
pub mod process;
pub mod services;
pub mod tap;
pub mod topology;
