//! The embedded eBPF object loads and the kernel's verifier accepts every program in it.
//! Needs root (CAP_BPF); `cargo xtask test` checks that first.

use aya::{
    Ebpf,
    programs::{SchedClassifier, Xdp},
};
use eip_common::maps::{PROG_EGRESS, PROG_INGRESS};

#[test]
fn every_program_passes_the_verifier() {
    let mut ebpf =
        Ebpf::load(eip_user::DATAPLANE_OBJECT).expect("the object parses and its maps are created");
    let xdp: &mut Xdp = ebpf
        .program_mut(PROG_INGRESS)
        .expect("eip_ingress is in the object")
        .try_into()
        .unwrap();
    if let Err(e) = xdp.load() {
        panic!("the verifier rejects {PROG_INGRESS}: {e:#}\n{e:?}");
    }
    let tc: &mut SchedClassifier = ebpf
        .program_mut(PROG_EGRESS)
        .expect("eip_egress is in the object")
        .try_into()
        .unwrap();
    if let Err(e) = tc.load() {
        panic!("the verifier rejects {PROG_EGRESS}: {e:#}\n{e:?}");
    }
}
