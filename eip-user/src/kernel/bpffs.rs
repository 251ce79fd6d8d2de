//! Where the pins live, and the two bpf(2) calls aya does not offer: pinning an object by its
//! descriptor (to put back a pin removed under a running daemon), and reading which interface a
//! link is attached to (a link whose interface was deleted is defunct: ifindex 0).
//!
//! Pins must outlive the daemon, so they go on the host's bpffs. `ip netns exec` starts its
//! command in a mount namespace of its own with a fresh /sys that has no bpffs; a bpffs
//! mounted there would die with the daemon, and the dataplane with it. From such a namespace
//! the daemon pins through `/proc/PID/root/sys/fs/bpf` of the nearest ancestor in another
//! mount namespace (the shell that ran `ip netns exec`), whose view is the host's.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs into a zeroed struct we own, with a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

fn mount_ns(pid: &str) -> Option<(u64, u64)> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

fn parent(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so after the last ')'.
    let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
    (ppid != "0").then(|| ppid.to_owned())
}

/// Where pins go, as found at start.
enum Found {
    /// bpffs is mounted on /sys/fs/bpf here.
    Here,
    /// Not here; the nearest ancestor in another mount namespace has it: a directory
    /// descriptor of that bpffs, opened through /proc/PID/root, kept so the path stays good
    /// after that process is gone.
    Ancestor(PathBuf),
    /// Not here, and no ancestor in another mount namespace: this is the host's view, where
    /// the daemon may mount bpffs itself.
    Mountable,
    /// Not here, and the mount namespace is private (an ancestor's differs) without a bpffs
    /// beyond it to reach.
    Private,
}

fn find() -> Found {
    if is_bpffs(Path::new(BPFFS)) {
        return Found::Here;
    }
    let ours = mount_ns("self");
    let mut pid = "self".to_owned();
    for _ in 0..32 {
        let Some(up) = parent(&pid) else { break };
        if mount_ns(&up) != ours {
            let theirs = PathBuf::from(format!("/proc/{up}/root{BPFFS}"));
            if !is_bpffs(&theirs) {
                return Found::Private;
            }
            let Ok(dir) = std::fs::File::open(&theirs) else {
                return Found::Private;
            };
            let fd = std::os::fd::IntoRawFd::into_raw_fd(dir);
            return Found::Ancestor(PathBuf::from(format!("/proc/self/fd/{fd}")));
        }
        pid = up;
    }
    Found::Mountable
}

fn found() -> &'static Found {
    static FOUND: OnceLock<Found> = OnceLock::new();
    FOUND.get_or_init(find)
}

/// The bpffs the pins go on: /sys/fs/bpf, unless this process runs in a mount namespace of
/// its own (`ip netns exec`) without bpffs there; then the one its starter's namespace has.
pub fn root() -> &'static Path {
    match found() {
        Found::Ancestor(p) => p,
        _ => Path::new(BPFFS),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    #[error("cannot mount bpffs on {BPFFS}")]
    Mount(#[source] io::Error),
    #[error(
        "bpffs is not mounted on {BPFFS} in this private mount namespace (ip netns exec gives one) nor in its starter's, and pins made here would die with the daemon: mount bpffs on the host (mount -t bpf bpf {BPFFS}) or start the daemon with nsenter --net=/run/netns/NAME"
    )]
    Private,
}

/// Makes sure [`root`] is a bpffs that outlives the daemon, mounting it on /sys/fs/bpf when
/// this is the host's view and it is missing.
pub fn ensure() -> Result<&'static Path, BpffsError> {
    match found() {
        Found::Here => return Ok(root()),
        Found::Ancestor(p) => {
            tracing::info!(pins = %p.display(), "no bpffs in this private mount namespace: pinning on its starter's");
            return Ok(root());
        }
        Found::Private => return Err(BpffsError::Private),
        Found::Mountable => {}
    }
    let path = CString::new(BPFFS).map_err(|e| BpffsError::Mount(io::Error::other(e)))?;
    let fstype = c"bpf";
    // SAFETY: mount(2) with NUL-terminated strings and no data.
    let r = unsafe {
        libc::mount(
            fstype.as_ptr(),
            path.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(BpffsError::Mount(io::Error::last_os_error()));
    }
    tracing::info!("mounted bpffs on {BPFFS}");
    Ok(root())
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 4]) -> io::Result<()> {
    // SAFETY: bpf(2) with an attribute block of the size we pass, which the kernel reads (and
    // for GET_INFO writes through the pointer inside it, to a buffer the caller owns).
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr)) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Pins the object behind `fd` (a map, a program or a link) at `path` (BPF_OBJ_PIN).
pub fn pin_fd(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    const BPF_OBJ_PIN: libc::c_long = 6;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // union bpf_attr for BPF_OBJ_PIN: __aligned_u64 pathname; __u32 bpf_fd; __u32 file_flags.
    let mut attr = [0u64; 4];
    attr[0] = c.as_ptr() as u64;
    attr[1] = fd.as_raw_fd() as u32 as u64;
    bpf(BPF_OBJ_PIN, &mut attr)
}

/// The interface a TCX or XDP link is attached to; 0 once that interface is gone.
pub fn link_ifindex(fd: BorrowedFd<'_>) -> io::Result<u32> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // struct bpf_link_info: type, id, prog_id (u32 each), then a union aligned to 8 whose
    // xdp and tcx members both start with __u32 ifindex, at byte 16.
    let mut info = [0u32; 32];
    let mut attr = [0u64; 4];
    // union bpf_attr for GET_INFO_BY_FD: __u32 bpf_fd; __u32 info_len; __aligned_u64 info.
    attr[0] = u64::from(fd.as_raw_fd() as u32) | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info[4])
}

/// Opens the pinned object at `path` (BPF_OBJ_GET): a descriptor of our own that keeps it
/// alive, and attached if it is a link, whatever happens to the pin.
pub fn obj_get(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    const BPF_OBJ_GET: libc::c_long = 7;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = [0u64; 4];
    attr[0] = c.as_ptr() as u64;
    // SAFETY: as in `bpf`; on success the call returns a new descriptor that we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just gave us and nobody else holds.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}
