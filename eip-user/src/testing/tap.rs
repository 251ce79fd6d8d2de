//! A VM's NIC as QEMU makes it: a tap device on the hypervisor's bridge, held open by a
//! process that reads the frames the host sends it and writes the frames the guest sends.
//! Here the "guest" is a namespace whose `eth0` is a second tap, and a thread of the test
//! process copies frames between the two descriptors, as QEMU's virtio backend does between
//! the tap and the guest's ring.
//!
//! Both taps exist while the thread holds them (they are not persistent): the guard stops it
//! on drop, and closing the descriptors removes the devices.

use std::{
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use super::netns::NetNs;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;

/// Opens a tap named `name` in the calling thread's network namespace.
fn open_tap(name: &str) -> io::Result<OwnedFd> {
    let f = File::options().read(true).write(true).open("/dev/net/tun")?;
    // struct ifreq: the name, then the flags (a short) at byte 16; 40 bytes in all.
    let mut ifr = [0u8; 40];
    if name.len() >= 16 {
        return Err(io::Error::other(format!("tap name {name} is too long")));
    }
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    ifr[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes an ifreq of this size on a tun descriptor we own.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f.into())
}

fn enter(ns: &str) -> io::Result<()> {
    let f = File::open(format!("/var/run/netns/{ns}"))?;
    // SAFETY: setns(2) on this thread only, with a namespace descriptor we own.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Copies frames between the hypervisor's tap and the guest's until dropped.
pub struct TapLink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TapLink {
    /// Creates tap `port` in `hv` and tap `vm_if` in `vm`, and starts copying.
    pub fn new(hv: &NetNs, port: &str, vm: &NetNs, vm_if: &str) -> io::Result<TapLink> {
        // The descriptors are opened in a thread of their own, which setns(2) moves between
        // the namespaces without touching the test's threads.
        let (hv_name, vm_name) = (hv.name().to_owned(), vm.name().to_owned());
        let (port, vm_if) = (port.to_owned(), vm_if.to_owned());
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let opened = (|| {
                enter(&hv_name)?;
                let host = open_tap(&port)?;
                enter(&vm_name)?;
                let guest = open_tap(&vm_if)?;
                Ok::<_, io::Error>((host, guest))
            })();
            match opened {
                Ok((host, guest)) => {
                    let _ = tx.send(Ok(()));
                    shuttle(&host, &guest, &flag);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        rx.recv().map_err(io::Error::other)??;
        Ok(TapLink {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for TapLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Frames from each descriptor to the other, until `stop` (checked every 50 ms).
fn shuttle(a: &OwnedFd, b: &OwnedFd, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    let (a, b) = (a.as_fd().as_raw_fd(), b.as_fd().as_raw_fd());
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [
            libc::pollfd {
                fd: a,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: b,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll(2) on two descriptors this thread holds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, Duration::from_millis(50).as_millis() as i32) };
        if n <= 0 {
            continue;
        }
        for (from, to) in [(0, b), (1, a)] {
            if fds[from].revents & libc::POLLIN == 0 {
                continue;
            }
            // SAFETY: read(2)/write(2) of one frame through a buffer we own.
            unsafe {
                let got = libc::read(fds[from].fd, buf.as_mut_ptr().cast(), buf.len());
                if got > 0 {
                    libc::write(to, buf.as_ptr().cast(), got as usize);
                }
            }
        }
    }
}
