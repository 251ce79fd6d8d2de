//! Builds the eBPF programs (crate `eip-ebpf`) with the nightly toolchain and bpf-linker, and
//! leaves the object in OUT_DIR for `include_bytes_aligned!`. `cargo xtask` installs what this
//! needs; a bare `cargo build` without it fails here with cargo's own message.

fn main() -> aya_build::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../eip-ebpf");
    // The programs compile eip-common's rewrite code in; a change there must rebuild them.
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../eip-common/src")
    );
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "eip-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
