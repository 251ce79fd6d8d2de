//! The embedded eBPF object loads and the kernel's verifier accepts every program in it, at
//! the default map sizes. Needs root (CAP_BPF); `cargo xtask test` checks that first.

use eip_user::kernel::dataplane::{Dataplane, Sizes};

#[test]
fn every_program_passes_the_verifier() {
    if let Err(e) = Dataplane::load(Sizes::default()) {
        let mut chain = format!("{e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push_str(&format!("\n  caused by: {s}"));
            source = s.source();
        }
        panic!("{chain}");
    }
}
