//! The few bpf(2) calls the benchmarks make without aya: loading programs of a handful of raw
//! instructions (the floors, the packet generator) and running them with BPF_PROG_TEST_RUN.

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd},
};

use anyhow::{Context, Result};

pub const BPF_PROG_LOAD: libc::c_long = 5;
pub const BPF_PROG_TEST_RUN: libc::c_long = 10;
pub const PROG_TYPE_SCHED_CLS: u32 = 3;
pub const PROG_TYPE_XDP: u32 = 6;

/// `r0 = action`.
pub const fn mov_r0(action: i32) -> [u8; 8] {
    insn(0xb7, 0, 0, 0, action) // BPF_ALU64 | BPF_MOV | BPF_K
}

pub const EXIT: [u8; 8] = insn(0x95, 0, 0, 0, 0);

/// One instruction: opcode, destination and source registers, offset, immediate.
pub const fn insn(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    [op, (src << 4) | (dst & 0x0f), o[0], o[1], i[0], i[1], i[2], i[3]]
}

pub fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> io::Result<libc::c_long> {
    // SAFETY: bpf(2) with a zero-padded attribute union of the size passed.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

pub fn put32(attr: &mut [u8; 128], off: usize, v: u32) {
    attr[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

pub fn put64(attr: &mut [u8; 128], off: usize, v: u64) {
    attr[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

pub fn get32(attr: &[u8; 128], off: usize) -> u32 {
    u32::from_ne_bytes([attr[off], attr[off + 1], attr[off + 2], attr[off + 3]])
}

/// Loads `insns` as a GPL program of `prog_type`.
pub fn load(prog_type: u32, insns: &[[u8; 8]]) -> Result<OwnedFd> {
    let code: Vec<u8> = insns.concat();
    let license = c"GPL";
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, prog_type);
    put32(&mut attr, 4, insns.len() as u32);
    put64(&mut attr, 8, code.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    let fd = bpf(BPF_PROG_LOAD, &mut attr).context("load a raw BPF program")?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
