//! The embedded eBPF object loads and the kernel's verifier accepts every program in it.
//! Needs root (CAP_BPF); `cargo xtask test` checks that first.

use aya::{Ebpf, programs::Xdp};

#[test]
fn every_program_passes_the_verifier() {
    let mut ebpf =
        Ebpf::load(eip_user::DATAPLANE_OBJECT).expect("the object parses and its maps are created");
    let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_owned()).collect();
    assert!(names.iter().any(|n| n == "eip_ingress"), "programs: {names:?}");
    let prog: &mut Xdp = ebpf.program_mut("eip_ingress").unwrap().try_into().unwrap();
    prog.load().expect("the verifier accepts eip_ingress");
}
