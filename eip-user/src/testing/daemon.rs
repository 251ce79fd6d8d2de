//! The real `eip` binary in a test topology: a daemon in the hypervisor namespace, the CLI
//! next to it, and a guard that tears the instance down (pins, aliases, state) on drop.
//!
//! The daemon enters the namespace with setns(2) for the network only. `ip netns exec` would
//! also give it a fresh /sys without the host's bpffs, so its pins would die with it and a
//! restarted daemon could not adopt them.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use super::{
    netns::{NetNs, unique},
    process::Background,
};

/// One daemon instance's names and files, removed on drop (after the daemon stops).
pub struct Instance {
    pub bin: PathBuf,
    pub ns_path: PathBuf,
    pub name: String,
    pub dir: PathBuf,
}

impl Instance {
    /// An instance with a unique name, its files in a new directory under the temp dir.
    pub fn new(bin: &Path, hv: &NetNs) -> io::Result<Self> {
        let name = unique("eipi");
        let dir = std::env::temp_dir().join(&name);
        Self::at(bin, hv, name, dir)
    }

    /// An instance named `name` with its files in `dir` (created; removed on drop).
    pub fn at(bin: &Path, hv: &NetNs, name: String, dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Instance {
            bin: bin.to_owned(),
            ns_path: PathBuf::from(format!("/var/run/netns/{}", hv.name())),
            name,
            dir,
        })
    }

    /// Where the instance's programs and maps are pinned.
    pub fn pins(&self) -> PathBuf {
        Path::new(crate::kernel::pins::BPFFS).join("eip").join(&self.name)
    }

    /// The instance's pins, to read (and, in fault tests, write) its maps.
    pub fn pinned(&self) -> crate::kernel::pins::Pins {
        crate::kernel::pins::Pins::new(&self.name).expect("a unique name is a valid instance")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("eip.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// A command for the binary, in the hypervisor's network namespace.
    pub fn command(&self) -> io::Result<Command> {
        let ns = File::open(&self.ns_path)?;
        let mut c = Command::new(&self.bin);
        c.env("EIP_SOCKET", self.socket());
        // SAFETY: setns(2) is async-signal-safe; the fd stays open until the child execs.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(c)
    }

    /// Runs the CLI to completion (bounded by `timeout` in the caller's tests).
    pub fn cli(&self, args: &[&str]) -> io::Result<Output> {
        self.command()?.args(args).stdin(Stdio::null()).output()
    }

    /// What the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Runs the CLI and returns its stdout; panics (with its stderr and the daemon's log)
    /// unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        match self.try_ok(args) {
            Ok(out) => out,
            Err(e) => panic!("{e}\n{}", self.log_text()),
        }
    }

    /// Runs the CLI and returns its stdout, or an error with its stderr unless it succeeds.
    pub fn try_ok(&self, args: &[&str]) -> io::Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "eip {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops `daemon` (SIGTERM); panics (with its log) unless it exits 0 within 20 s.
    pub fn stop(&self, daemon: Background) {
        let status = daemon
            .terminate_and_wait(Duration::from_secs(20))
            .expect("stop the daemon");
        assert!(status.success(), "daemon exit {status}: {}", self.log_text());
    }

    /// Starts `eip daemon` with this instance's socket, state and pins, plus `args`, and
    /// waits until it answers (at most 30 s). It logs at debug level (every kernel effect).
    pub fn start(&self, args: &[&str]) -> io::Result<Background> {
        self.start_logging(args, "info,eip_user=debug", Duration::from_secs(30))
    }

    /// As [`Instance::start`], with the log filter `filter` (`EIP_LOG`) and waiting at most
    /// `limit` for the daemon to answer.
    pub fn start_logging(&self, args: &[&str], filter: &str, limit: Duration) -> io::Result<Background> {
        let log = File::options().create(true).append(true).open(self.log())?;
        let mut c = self.command()?;
        c.env("EIP_LOG", filter)
            .arg("daemon")
            .args(["--instance", &self.name])
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(args)
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut daemon = Background::spawn(c, "eip daemon")?;
        let deadline = Instant::now() + limit;
        loop {
            if self.cli(&["pool", "list"])?.status.success() {
                return Ok(daemon);
            }
            if let Some(status) = daemon.try_wait()? {
                return Err(io::Error::other(format!(
                    "the daemon exited ({status}): {}",
                    std::fs::read_to_string(self.log()).unwrap_or_default()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "the daemon did not answer within {} s: {}",
                    limit.as_secs(),
                    std::fs::read_to_string(self.log()).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Without a daemon this removes the pins and aliases of the instance.
        let _ = self.cli(&["teardown", "--instance", &self.name]);
        let _ = std::fs::remove_dir_all(self.pins());
        let _ = std::fs::remove_file(crate::daemon::lock_path(&self.name));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
