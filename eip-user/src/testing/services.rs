//! Small servers and clients that run inside namespaces, as threads of the calling process
//! (a thread enters the namespace, opens its socket there and keeps it): an HTTP "who am I"
//! that answers with the addresses it sees, a UDP echo that records what it heard, a TCP sink,
//! and a paced UDP stream with sequence numbers. Each server stops when its guard drops, so
//! no socket keeps a deleted namespace alive.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use super::netns::{NetNs, enter_by_name};

/// Runs `f` on a thread inside `ns` and returns what it returned.
pub fn within<T: Send>(ns: &NetNs, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    thread::scope(|s| {
        s.spawn(|| {
            let _in = enter_by_name(ns.name())?;
            f()
        })
        .join()
        .map_err(|_| io::Error::other("the thread inside the namespace panicked"))?
    })
}

/// A server thread inside a namespace, stopped (and its socket closed) on drop.
pub struct Service {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Service {
    /// Opens the socket with `open` inside `ns`, then calls `serve` until stopped; `serve`
    /// must return within about 100 ms (sockets with timeouts, or non-blocking).
    fn spawn<S: 'static>(
        ns: &NetNs,
        open: impl FnOnce() -> io::Result<S> + Send + 'static,
        mut serve: impl FnMut(&S) + Send + 'static,
    ) -> io::Result<Service> {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, name) = (stop.clone(), ns.name().to_owned());
        let (ready_tx, ready) = mpsc::channel();
        let thread = thread::spawn(move || {
            let opened = enter_by_name(&name).and_then(|entered| Ok((entered, open()?)));
            let socket = match opened {
                Ok((_entered, socket)) => {
                    let _ = ready_tx.send(Ok(()));
                    socket
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while !flag.load(Ordering::Relaxed) {
                serve(&socket);
            }
        });
        ready
            .recv()
            .map_err(|_| io::Error::other("the service thread died"))??;
        Ok(Service {
            stop,
            thread: Some(thread),
        })
    }

    /// HTTP on TCP `port`: every request gets `LABEL LOCAL sees you as PEER`, the addresses
    /// as this end of the connection sees them (so a NAT on the way shows).
    pub fn whoami(ns: &NetNs, label: &str, port: u16) -> io::Result<Service> {
        let label = label.to_owned();
        Self::spawn(
            ns,
            move || listen(port),
            move |l| {
                if let Some(mut conn) = accept(l) {
                    let _ = answer_http(&mut conn, &label);
                }
            },
        )
    }

    /// A UDP echo on `port`: answers `LABEL PAYLOAD` and records every payload that is a
    /// number (a [`Stream`]'s sequence numbers) in `heard`.
    pub fn udp_echo(ns: &NetNs, label: &str, port: u16, heard: Arc<Heard>) -> io::Result<Service> {
        let label = label.to_owned();
        let open = move || {
            let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
            sock.set_read_timeout(Some(Duration::from_millis(100)))?;
            Ok(sock)
        };
        Self::spawn(ns, open, move |sock| {
            let mut buf = [0u8; 256];
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let payload = String::from_utf8_lossy(&buf[..n]);
                if let Ok(seq) = payload.trim().parse() {
                    heard.record(seq);
                }
                let _ = sock.send_to(format!("{label} {payload}").as_bytes(), from);
            }
        })
    }

    /// TCP on `port`: reads each connection to its end, then answers with the number of bytes.
    pub fn sink(ns: &NetNs, port: u16) -> io::Result<Service> {
        Self::spawn(
            ns,
            move || listen(port),
            move |l| {
                if let Some(mut conn) = accept(l) {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
                    let mut n = 0u64;
                    let mut buf = [0u8; 65536];
                    while let Ok(k @ 1..) = conn.read(&mut buf) {
                        n += k as u64;
                    }
                    let _ = conn.write_all(n.to_string().as_bytes());
                }
            },
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn listen(port: u16) -> io::Result<TcpListener> {
    let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// One connection, or `None` after a short wait.
fn accept(l: &TcpListener) -> Option<TcpStream> {
    match l.accept() {
        // The listener is non-blocking; an accepted socket does not inherit that on Linux.
        Ok((conn, _)) => {
            conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            Some(conn)
        }
        Err(_) => {
            thread::sleep(Duration::from_millis(10));
            None
        }
    }
}

fn answer_http(conn: &mut TcpStream, label: &str) -> io::Result<()> {
    // The request itself does not matter: read its head (bounded), answer, close.
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 4096 {
        match conn.read(&mut buf)? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = format!(
        "{label} {} sees you as {}\n",
        conn.local_addr()?,
        conn.peer_addr()?
    );
    write!(
        conn,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `GET /` from inside `ns` to `to`: the body, and the local address this end used.
pub fn http_get(ns: &NetNs, to: SocketAddrV4) -> io::Result<(String, SocketAddr)> {
    within(ns, || {
        let mut conn = TcpStream::connect_timeout(&to.into(), Duration::from_secs(3))?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        conn.write_all(b"GET / HTTP/1.0\r\nHost: eip\r\n\r\n")?;
        let mut text = String::new();
        conn.read_to_string(&mut text)?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {text:?}")))?;
        Ok((body, conn.local_addr()?))
    })
}

/// Sends `bytes` bytes over TCP from inside `ns` to a [`Service::sink`] at `to` and returns
/// how many the sink says it got; an error if that takes more than 20 s.
pub fn upload(ns: &NetNs, to: SocketAddrV4, bytes: usize) -> io::Result<u64> {
    const LIMIT: Duration = Duration::from_secs(20);
    within(ns, || {
        let started = Instant::now();
        let mut c = TcpStream::connect_timeout(&to.into(), Duration::from_secs(3))?;
        c.set_write_timeout(Some(Duration::from_secs(1)))?;
        c.set_read_timeout(Some(LIMIT))?;
        let chunk = [0x5a; 16384];
        let mut left = bytes;
        while left > 0 {
            if started.elapsed() > LIMIT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} of {bytes} bytes sent in {LIMIT:?}", bytes - left),
                ));
            }
            match c.write(&chunk[..left.min(chunk.len())]) {
                Ok(n) => left -= n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
        c.shutdown(std::net::Shutdown::Write)?;
        let mut answer = String::new();
        c.read_to_string(&mut answer)?;
        answer
            .trim()
            .parse()
            .map_err(|_| io::Error::other(format!("the sink answered {answer:?}")))
    })
}

/// The sequence numbers a UDP echo heard.
#[derive(Default)]
pub struct Heard(Mutex<Vec<u64>>);

impl Heard {
    fn record(&self, seq: u64) {
        if let Ok(mut v) = self.0.lock() {
            v.push(seq);
        }
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// One answer to a [`Stream`] datagram: who answered (the echo's label) and when.
#[derive(Clone, Debug)]
pub struct Reply {
    pub seq: u64,
    pub from: String,
    pub at: Instant,
}

/// A paced UDP stream from a namespace to an echo: datagram `n` carries the number `n`. It
/// sends for at most two minutes, whatever happens to its owner.
pub struct Stream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    replies: Arc<Mutex<Vec<Reply>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Stream {
    pub fn start(ns: &NetNs, to: SocketAddrV4, every: Duration) -> io::Result<Stream> {
        let sock = within(ns, || {
            let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            sock.connect(to)?;
            Ok(sock)
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let replies = Arc::new(Mutex::new(Vec::new()));
        let (flag, count, got) = (stop.clone(), sent.clone(), replies.clone());
        let thread = thread::spawn(move || {
            let started = Instant::now();
            let mut next = started;
            let mut stopped_at = None;
            let mut buf = [0u8; 256];
            loop {
                let now = Instant::now();
                if stopped_at.is_none()
                    && (flag.load(Ordering::Relaxed) || now - started > Duration::from_secs(120))
                {
                    stopped_at = Some(now);
                }
                match stopped_at {
                    // After the last datagram, wait half a second for the last answers.
                    Some(t) if now - t > Duration::from_millis(500) => return,
                    None if now >= next => {
                        let seq = count.load(Ordering::Relaxed);
                        if sock.send(seq.to_string().as_bytes()).is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        next += every;
                        continue;
                    }
                    _ => {}
                }
                let wait = next.saturating_duration_since(now).max(Duration::from_millis(1));
                let _ = sock.set_read_timeout(Some(wait));
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if let Some((from, seq)) = text.rsplit_once(' ')
                        && let Ok(seq) = seq.parse()
                        && let Ok(mut v) = got.lock()
                    {
                        v.push(Reply {
                            seq,
                            from: from.to_owned(),
                            at: Instant::now(),
                        });
                    }
                }
            }
        });
        Ok(Stream {
            stop,
            sent,
            replies,
            thread: Some(thread),
        })
    }

    /// How many datagrams went out so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// How many answers came back so far.
    pub fn answered(&self) -> usize {
        self.replies.lock().map(|v| v.len()).unwrap_or(0)
    }

    pub fn replies(&self) -> Vec<Reply> {
        self.replies.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Stops sending, waits half a second for the last answers, and returns how many
    /// datagrams were sent and every answer.
    pub fn finish(mut self) -> (u64, Vec<Reply>) {
        self.halt();
        (self.sent(), self.replies())
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.halt();
    }
}
