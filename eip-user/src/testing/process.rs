//! Background processes for tests (servers, captures): ended by PID when the guard drops,
//! also when the test panics.

use std::{
    fs, io,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::netns::NetNs;

pub struct Background {
    child: Child,
    what: String,
}

impl Background {
    pub fn spawn(mut cmd: Command, what: &str) -> io::Result<Self> {
        let child = cmd.stdin(Stdio::null()).spawn()?;
        Ok(Background {
            child,
            what: what.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill9(mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }

    /// The child's stdout, when the command piped it.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// SIGTERM, then waits (at most `limit`) and returns the exit status.
    pub fn terminate_and_wait(self, limit: Duration) -> io::Result<std::process::ExitStatus> {
        self.signal_and_wait(libc::SIGTERM, limit)
    }

    /// SIGINT (Ctrl-C), then waits (at most `limit`) and returns the exit status.
    pub fn interrupt_and_wait(self, limit: Duration) -> io::Result<std::process::ExitStatus> {
        self.signal_and_wait(libc::SIGINT, limit)
    }

    fn signal_and_wait(mut self, sig: i32, limit: Duration) -> io::Result<std::process::ExitStatus> {
        // SAFETY: kill(2) on the PID of a child this guard spawned and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "{} did not stop within {limit:?}",
                    self.what
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (a capture flushes its output), then waits for the process.
    pub fn stop(mut self) -> io::Result<()> {
        self.terminate();
        self.child.wait().map(drop)
    }

    fn terminate(&mut self) {
        // SAFETY: kill(2) on the PID of a child this guard spawned and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            eprintln!(
                "{} (pid {}) ignored SIGTERM, killing it",
                self.what,
                self.child.id()
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A tcpdump writing decoded packets (`-vv`, so checksums are verified) to a file.
pub struct Capture {
    proc: Background,
    out: PathBuf,
}

impl Capture {
    /// Starts capturing inbound IPv4 on `iface` in `ns` (for at most a minute), and waits
    /// until tcpdump says it is listening.
    pub fn start(ns: &NetNs, iface: &str) -> io::Result<Self> {
        Self::start_filter(ns, iface, "ip")
    }

    /// As [`Capture::start`], with another capture filter (`arp`, say).
    pub fn start_filter(ns: &NetNs, iface: &str, filter: &str) -> io::Result<Self> {
        let dir = std::env::temp_dir();
        let tag = super::netns::unique("cap");
        let out = dir.join(format!("{}-{iface}-{tag}.txt", ns.name()));
        let err = dir.join(format!("{}-{iface}-{tag}.err", ns.name()));
        let mut cmd = ns.command("timeout");
        cmd.args([
            "60",
            "tcpdump",
            "--immediate-mode",
            "-l",
            "-n",
            "-vv",
            "-Q",
            "in",
            "-i",
            iface,
            filter,
        ])
        .stdout(fs::File::create(&out)?)
        .stderr(fs::File::create(&err)?);
        let proc = Background::spawn(cmd, "tcpdump")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("listening on")
        {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "tcpdump on {iface} did not start: {}",
                    fs::read_to_string(&err)?
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_file(err);
        Ok(Capture { proc, out })
    }

    /// Stops the capture and returns what it decoded.
    pub fn finish(self) -> io::Result<String> {
        self.proc.stop()?;
        let text = fs::read_to_string(&self.out)?;
        let _ = fs::remove_file(&self.out);
        Ok(text)
    }
}

/// The lines where tcpdump found a checksum wrong (`bad cksum` for IPv4, `incorrect` for
/// the transport).
pub fn bad_checksums(capture: &str) -> Vec<&str> {
    capture
        .lines()
        .filter(|l| l.contains("bad cksum") || l.contains("incorrect"))
        .collect()
}

/// Runs `attempt` until it returns `Some`, at most `tries` times, `pause` apart.
pub fn retry<T>(tries: u32, pause: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..tries {
        if let Some(v) = attempt() {
            return Some(v);
        }
        thread::sleep(pause);
    }
    None
}
