//! Real sockets inside a namespace: a thread enters the namespace (setns applies to the calling
//! thread only) and opens its sockets there. Servers stop when dropped and after a bounded
//! lifetime; probes have timeouts.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

/// The reply servers send, so probes know the connection really reached them.
pub const BANNER: &[u8] = b"edge-lab\n";
/// A server never outlives this, even if its owner forgets to stop it (generous: a test under
/// emulation runs for minutes, and an idle server costs nothing).
const MAX_SERVER_LIFETIME: Duration = Duration::from_secs(600);
/// How often an idle server looks at its stop flag. Servers block in poll(2) between looks:
/// busy polling (a sleep of a few milliseconds between non-blocking calls) by the dozens of
/// servers of the Lync lab kept an emulated guest's CPU saturated.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Blocks until one of `fds` is readable or [`STOP_CHECK`] passes; true when one is readable.
fn readable(fds: &[std::os::fd::BorrowedFd<'_>]) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)).collect();
    matches!(poll(&mut pfds, PollTimeout::from(STOP_CHECK.as_millis() as u16)), Ok(n) if n > 0)
}

/// Binds with `bind`, retrying while the address is in use, for up to 10 s. A socket the test
/// closed can stay bound for a moment: a child the test process is starting (every edge-ctl
/// command) holds a copy of its descriptors until it executes, which under emulation takes long
/// enough for the next test to bind the same port (seen on 6.1 and 6.12 guests).
fn bind_retry<T>(what: &str, mut bind: impl FnMut() -> std::io::Result<T>) -> T {
    let start = Instant::now();
    loop {
        match bind() {
            Ok(t) => return t,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("bind {what}: {e}"),
        }
    }
}

/// Runs `f` on a new thread inside network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_netns(ns, f).join().expect("thread in namespace panicked")
}

pub fn spawn_in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(file, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// TCP and UDP servers on every address of a namespace (IPv4 and IPv6). TCP servers send
/// [`BANNER`] and close; UDP servers echo each datagram.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn start(ns: &str, tcp: &[u16], udp: &[u16]) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for &port in tcp {
            let (stop, ready) = (stop.clone(), ready_tx.clone());
            threads.push(spawn_in_netns(ns, move || tcp_server(port, &stop, ready)));
        }
        for &port in udp {
            let (stop, ready) = (stop.clone(), ready_tx.clone());
            threads.push(spawn_in_netns(ns, move || udp_server(port, &stop, ready)));
        }
        for _ in 0..tcp.len() + udp.len() {
            ready_rx.recv_timeout(Duration::from_secs(5)).expect("server did not start");
        }
        Servers { stop, threads }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn any_v6(port: u16) -> SocketAddr {
    // [::] with the default bindv6only=0 also accepts IPv4.
    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
}

fn tcp_server(port: u16, stop: &AtomicBool, ready: std::sync::mpsc::Sender<()>) {
    let listener = bind_retry(&format!("tcp {port}"), || TcpListener::bind(any_v6(port)));
    listener.set_nonblocking(true).expect("nonblocking");
    let _ = ready.send(());
    let start = Instant::now();
    while !stop.load(Ordering::SeqCst) && start.elapsed() < MAX_SERVER_LIFETIME {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let _ = conn.set_nonblocking(false);
                let _ = conn.write_all(BANNER);
            }
            Err(_) => {
                readable(&[listener.as_fd()]);
            }
        }
    }
}

/// One socket per local address, so each reply leaves from the address the datagram was sent
/// to (a wildcard socket would answer from the interface's primary address, which a connected
/// client, or the HLB's NAT, does not recognise).
fn udp_server(port: u16, stop: &AtomicBool, ready: std::sync::mpsc::Sender<()>) {
    let addrs: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .expect("getifaddrs")
        .filter_map(|a| {
            let addr = a.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            let v6 = addr.as_sockaddr_in6()?.ip();
            (v6.segments()[0] & 0xffc0 != 0xfe80).then_some(IpAddr::V6(v6))
        })
        .collect();
    let socks: Vec<UdpSocket> = addrs
        .iter()
        .map(|a| {
            let s = bind_retry(&format!("udp {a}:{port}"), || UdpSocket::bind(SocketAddr::new(*a, port)));
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let _ = ready.send(());
    let start = Instant::now();
    // Whole datagrams, fragmented ones included.
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) && start.elapsed() < MAX_SERVER_LIFETIME {
        let mut idle = true;
        for sock in &socks {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
                idle = false;
            }
        }
        if idle {
            let fds: Vec<_> = socks.iter().map(|s| s.as_fd()).collect();
            readable(&fds);
        }
    }
}

/// What a probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered.
    Answered,
    /// Nothing came back (dropped).
    Silent,
    /// The peer's stack refused (RST / ICMP unreachable): the packet got through but nothing listens.
    Refused,
}

/// Connects from namespace `ns` to `to` and reads the banner.
pub fn tcp_probe(ns: &str, to: SocketAddr, timeout: Duration) -> Outcome {
    tcp_probe_from(ns, 0, to, timeout)
}

/// Sends a datagram from namespace `ns` to `to` and waits for the echo.
pub fn udp_probe(ns: &str, to: SocketAddr, timeout: Duration) -> Outcome {
    udp_probe_from(ns, 0, to, timeout)
}

/// The unspecified address of `to`'s family with `port` (0: the kernel picks one).
fn unspecified(to: SocketAddr, port: u16) -> SocketAddr {
    if to.is_ipv4() { ([0, 0, 0, 0], port).into() } else { (Ipv6Addr::UNSPECIFIED, port).into() }
}

/// A TCP socket bound to a pinned source port, connected from inside namespace `ns`. The
/// source port matters: Linux's ephemeral range overlaps the Lync A/V range 50000-59999, so a
/// test that lets the kernel choose can pass by accident.
pub fn tcp_connect_from(ns: &str, sport: u16, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    tcp_connect_bound(ns, unspecified(to, sport), to, timeout)
}

/// A TCP socket bound to `local` (an address of the namespace, and a port or 0), connected.
pub fn tcp_connect_bound(ns: &str, local: SocketAddr, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    in_netns(ns, move || {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let domain = if to.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
        let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        let local = SockAddr::from(local);
        bind_retry("tcp client", || s.bind(&local));
        s.connect_timeout(&SockAddr::from(to), timeout)?;
        let stream: TcpStream = s.into();
        stream.set_read_timeout(Some(timeout))?;
        Ok(stream)
    })
}

/// Connects from a pinned source port and reads the server's banner.
pub fn tcp_probe_from(ns: &str, sport: u16, to: SocketAddr, timeout: Duration) -> Outcome {
    banner(tcp_connect_from(ns, sport, to, timeout))
}

/// Connects from `src`, an address of the namespace (a host with several, such as an edge
/// node's three service addresses) and a pinned port (see [`tcp_connect_from`]), and reads the
/// server's banner.
pub fn tcp_probe_bound(ns: &str, src: SocketAddr, to: SocketAddr, timeout: Duration) -> Outcome {
    banner(tcp_connect_bound(ns, src, to, timeout))
}

fn banner(connected: std::io::Result<TcpStream>) -> Outcome {
    match connected {
        Ok(mut s) => {
            let mut buf = [0u8; 16];
            match s.read(&mut buf) {
                Ok(n) if &buf[..n] == BANNER => Outcome::Answered,
                _ => Outcome::Silent,
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        Err(_) => Outcome::Silent,
    }
}

/// Sends a datagram from a pinned source port and waits for the echo.
pub fn udp_probe_from(ns: &str, sport: u16, to: SocketAddr, timeout: Duration) -> Outcome {
    udp_exchange_from(ns, sport, to, b"edge-lab probe".to_vec(), timeout)
}

/// [`udp_probe_from`] with `payload`: answered when the same bytes come back (a payload over
/// the link's MTU goes out, and comes back, in fragments).
pub fn udp_exchange_from(ns: &str, sport: u16, to: SocketAddr, payload: Vec<u8>, timeout: Duration) -> Outcome {
    udp_exchange_bound(ns, unspecified(to, sport), to, payload, timeout)
}

/// Sends a datagram from `src` (as in [`tcp_probe_bound`]) and waits for the echo.
pub fn udp_probe_bound(ns: &str, src: SocketAddr, to: SocketAddr, timeout: Duration) -> Outcome {
    udp_exchange_bound(ns, src, to, b"edge-lab probe".to_vec(), timeout)
}

fn udp_exchange_bound(ns: &str, local: SocketAddr, to: SocketAddr, payload: Vec<u8>, timeout: Duration) -> Outcome {
    in_netns(ns, move || {
        let sock = bind_retry("udp client", || UdpSocket::bind(local));
        sock.connect(to).expect("connect udp");
        sock.set_read_timeout(Some(timeout)).expect("timeout");
        if sock.send(&payload).is_err() {
            return Outcome::Refused;
        }
        let mut buf = vec![0u8; payload.len() + 64];
        match sock.recv(&mut buf) {
            Ok(n) if buf[..n] == payload[..] => Outcome::Answered,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
            _ => Outcome::Silent,
        }
    })
}

/// A UDP server that answers each datagram after `delay` (to outlive a flow's timeout).
pub fn udp_delayed_echo(ns: &str, port: u16, delay: Duration) -> Servers {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let s = stop.clone();
    let t = spawn_in_netns(ns, move || {
        let sock = bind_retry("udp", || UdpSocket::bind(any_v6(port)));
        sock.set_read_timeout(Some(STOP_CHECK)).expect("timeout");
        let _ = ready_tx.send(());
        let start = Instant::now();
        let mut buf = [0u8; 2048];
        while !s.load(Ordering::SeqCst) && start.elapsed() < MAX_SERVER_LIFETIME {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                std::thread::sleep(delay);
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("server did not start");
    Servers { stop, threads: vec![t] }
}

/// A TCP server that accepts one connection and keeps it open; `send` makes it write. The
/// listening socket is closed once the connection is accepted, so the port can be listened on
/// again (see [`HeldConnection::accepted`]).
pub struct HeldConnection {
    tx: std::sync::mpsc::Sender<Vec<u8>>,
    accepted: std::sync::mpsc::Receiver<()>,
    /// Set on drop: a test that fails before the connection arrives must not wait for it.
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HeldConnection {
    /// Listens on every address of `ns` (IPv4 and IPv6).
    pub fn listen(ns: &str, port: u16) -> HeldConnection {
        Self::listen_at(ns, any_v6(port))
    }

    /// Listens on one address: for two held connections to one port, one listener per address,
    /// so the second never competes with the first for the wildcard (which once failed with
    /// EADDRINUSE in a 6.12 guest; see `bind_retry`).
    pub fn listen_at(ns: &str, addr: SocketAddr) -> HeldConnection {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (accepted_tx, accepted) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = spawn_in_netns(ns, move || {
            let listener = bind_retry(&addr.to_string(), || TcpListener::bind(addr));
            listener.set_nonblocking(true).expect("non-blocking listener");
            let _ = ready_tx.send(());
            let start = Instant::now();
            let mut conn = loop {
                match listener.accept() {
                    Ok((conn, _)) => break conn,
                    Err(_) if stopped.load(Ordering::SeqCst) || start.elapsed() > MAX_SERVER_LIFETIME => return,
                    Err(_) => {
                        readable(&[listener.as_fd()]);
                    }
                }
            };
            conn.set_nonblocking(false).expect("blocking connection");
            drop(listener);
            let _ = accepted_tx.send(());
            // Each message is written; the channel closing ends the connection.
            while let Ok(data) = rx.recv_timeout(MAX_SERVER_LIFETIME) {
                let _ = conn.write_all(&data);
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("server did not start");
        HeldConnection { tx, accepted, stop, thread: Some(thread) }
    }

    /// Waits until the connection is accepted and the listening socket closed.
    pub fn accepted(&self) {
        self.accepted.recv_timeout(Duration::from_secs(5)).expect("connection accepted");
    }

    pub fn send(&self, data: &[u8]) {
        self.tx.send(data.to_vec()).expect("server thread alive");
    }
}

impl Drop for HeldConnection {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let (tx, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A socket address from an address literal and a port.
pub fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap_or_else(|e| panic!("{ip}: {e}")), port)
}

/// Sends a raw Ethernet frame out of `ifname` in namespace `ns` (AF_PACKET), e.g. a TCP ACK
/// that pretends to answer a connection.
pub fn send_frame(ns: &str, ifname: &str, frame: Vec<u8>) {
    let ifname = ifname.to_string();
    in_netns(ns, move || {
        let index = nix::net::if_::if_nametoindex(ifname.as_str()).expect("interface");
        // SAFETY: plain socket calls with a correctly sized sockaddr_ll.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            let sent = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            libc::close(fd);
            assert_eq!(sent, frame.len() as isize, "sendto: {}", std::io::Error::last_os_error());
        }
    });
}

/// A UDP receiver that records the sequence numbers (first 8 bytes, big-endian) it gets.
pub struct UdpSink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<u64>>>,
}

impl UdpSink {
    pub fn start(ns: &str, port: u16) -> UdpSink {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let s = stop.clone();
        let thread = spawn_in_netns(ns, move || {
            let sock = bind_retry("udp", || UdpSocket::bind(any_v6(port)));
            sock.set_read_timeout(Some(STOP_CHECK)).expect("timeout");
            // 4 MiB (about 4,000 small datagrams) instead of rmem_default's 208 KiB: while an
            // emulated guest verifies a program, this thread can be off the CPU for hundreds
            // of milliseconds, and a full receive buffer drops what the filter passed.
            let size: libc::c_int = 4 << 20;
            // SAFETY: setsockopt on an open socket with a correctly sized int (root may exceed
            // rmem_max with SO_RCVBUFFORCE).
            let r = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
            let _ = ready_tx.send(());
            let start = Instant::now();
            let mut seen = Vec::new();
            let mut buf = [0u8; 64];
            while !s.load(Ordering::SeqCst) && start.elapsed() < MAX_SERVER_LIFETIME {
                if let Ok(n) = sock.recv(&mut buf)
                    && n >= 8
                {
                    seen.push(u64::from_be_bytes(buf[..8].try_into().unwrap()));
                }
            }
            seen
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("sink did not start");
        UdpSink { stop, thread: Some(thread) }
    }

    /// Stops after a short drain and returns the sequence numbers received, sorted.
    pub fn finish(mut self) -> Vec<u64> {
        std::thread::sleep(Duration::from_millis(200));
        self.stop.store(true, Ordering::SeqCst);
        let mut seen = self.thread.take().unwrap().join().expect("sink thread");
        seen.sort();
        seen
    }
}

/// Sends `count` datagrams numbered `first..` at a fixed interval from a pinned source port.
pub fn udp_stream(ns: &str, sport: u16, to: SocketAddr, first: u64, count: u64, interval: Duration) -> JoinHandle<()> {
    spawn_in_netns(ns, move || {
        let sock = bind_retry("udp sender", || UdpSocket::bind(unspecified(to, sport)));
        let start = Instant::now();
        for seq in 0..count {
            let due = start + interval * seq as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let _ = sock.send_to(&(first + seq).to_be_bytes(), to);
        }
    })
}

/// A TCP echo server for `conns` connections; returns the bytes it echoed.
pub fn tcp_echo(ns: &str, port: u16, conns: usize) -> JoinHandle<u64> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let t = spawn_in_netns(ns, move || {
        let listener = bind_retry("tcp echo", || TcpListener::bind(any_v6(port)));
        let _ = ready_tx.send(());
        let mut handlers = Vec::new();
        for _ in 0..conns {
            let Ok((mut conn, _)) = listener.accept() else {
                break;
            };
            handlers.push(std::thread::spawn(move || {
                let mut total = 0u64;
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    total += n as u64;
                }
                total
            }));
        }
        handlers.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("echo server did not start");
    t
}

/// Exchanges `rounds` chunks of `chunk` bytes with an echo server, one every `interval`, from a
/// pinned source port; returns the bytes echoed back intact.
pub fn tcp_exchange(
    ns: &str,
    sport: u16,
    to: SocketAddr,
    rounds: usize,
    chunk: usize,
    interval: Duration,
) -> JoinHandle<u64> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let mut s = tcp_connect_from(&ns, sport, to, Duration::from_secs(2)).expect("connect to echo server");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut echoed = 0u64;
        for round in 0..rounds {
            let data: Vec<u8> = (0..chunk).map(|i| (i + round) as u8).collect();
            s.write_all(&data).expect("write");
            let mut back = vec![0u8; chunk];
            s.read_exact(&mut back).expect("echo");
            if back == data {
                echoed += chunk as u64;
            }
            std::thread::sleep(interval);
        }
        echoed
    })
}

/// Sends datagrams to `to` as fast as one thread can for `duration`; returns how many.
pub fn udp_flood(ns: &str, to: SocketAddr, duration: Duration) -> u64 {
    in_netns(ns, move || {
        let sock = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).expect("bind");
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < duration {
            for _ in 0..64 {
                if sock.send_to(b"flood", to).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    })
}

/// `GET path` over HTTP/1.1 from inside namespace `ns`, read to the end (the servers here close
/// the connection): the response head and body.
pub fn http_get(ns: &str, addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let path = path.to_string();
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) =
            text.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other(format!("no end of head in {text:?}")))?;
        Ok((head.to_string(), body.to_string()))
    })
}
