//! The daemon as a process on the host: its instance lock, its socket, and its memory.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use tokio::net::UnixListener;

use super::DaemonError;

pub(super) fn io_err(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.to_owned();
    move |source| DaemonError::Io { path, what, source }
}

/// Where each running daemon holds the lock of its instance, whatever its state directory
/// and socket: two daemons on one instance's pins would undo each other's bindings.
pub const LOCK_DIR: &str = "/run/eip";

/// The lock file of `instance`.
pub fn lock_path(instance: &str) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("{instance}.lock"))
}

/// Takes the instance's lock (flock, so it goes with the process, kill -9 included) and
/// writes this daemon's pid in it. The file is left in place when the daemon ends: removing
/// it would let a third daemon lock a new file while a second holds the old one.
pub(super) fn lock_instance(instance: &str) -> Result<std::fs::File, DaemonError> {
    use std::{io::Write, os::fd::AsRawFd};
    std::fs::create_dir_all(LOCK_DIR).map_err(io_err(Path::new(LOCK_DIR), "create the lock directory"))?;
    let path = lock_path(instance);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path, "open the instance lock"))?;
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse().ok());
            return Err(DaemonError::InstanceBusy {
                instance: instance.to_owned(),
                pid,
            });
        }
        return Err(io_err(&path, "lock the instance")(e));
    }
    file.set_len(0)
        .map_err(io_err(&path, "write the instance lock"))?;
    writeln!(file, "{}", std::process::id()).map_err(io_err(&path, "write the instance lock"))?;
    Ok(file)
}

/// Binds the socket, refusing if a live daemon answers on it, with mode 0600 (or 0660 for
/// `group`).
pub(super) fn bind_socket(path: &Path, group: Option<&str>) -> Result<UnixListener, DaemonError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "create the socket directory"))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::SocketBusy(path.to_owned()));
        }
        // Left by a daemon that was killed.
        std::fs::remove_file(path).map_err(io_err(path, "remove the stale socket"))?;
    }
    let listener = UnixListener::bind(path).map_err(io_err(path, "bind the socket"))?;
    let mode = match group {
        Some(g) => {
            let gid = group_id(g)?;
            std::os::unix::fs::chown(path, Some(0), Some(gid)).map_err(io_err(path, "chown the socket"))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(path, "set the socket's mode"))?;
    Ok(listener)
}

pub(super) fn group_id(name: &str) -> Result<u32, DaemonError> {
    let c = std::ffi::CString::new(name).map_err(|_| DaemonError::NoGroup(name.to_owned()))?;
    // SAFETY: getgrnam with a NUL-terminated name; the result is read at once, before any
    // other getgr* call could overwrite it.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        return Err(DaemonError::NoGroup(name.to_owned()));
    }
    // SAFETY: non-null result of getgrnam.
    Ok(unsafe { (*gr).gr_gid })
}

/// Returns the heap's free pages to the kernel. A hosts-file sync or a reconcile pass builds
/// and drops copies of the whole state; glibc keeps what they freed, so without this the
/// resident set stays at the peak (80 MiB instead of 37 MiB with 100,000 reservations).
pub(super) fn give_back_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}
