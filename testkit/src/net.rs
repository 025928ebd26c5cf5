//! Network namespaces, veth pairs and bounded traffic between them, for the
//! tests, benches and the demo that attach real XDP programs (root only).
//!
//! Every namespace a test creates has a unique name (`fgt-<pid>-<n>`) and is
//! deleted by a `Drop` guard, also when the test panics. Traffic only flows
//! between namespaces the test created. Failures panic: this is test code, and
//! a panic with the failing `ip` command is the most useful report.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

/// Fails the test loudly unless running as root: these tests need real BPF.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test attaches real XDP programs and must run as root (cargo xtask test)"
    );
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// A network namespace that is deleted when dropped.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh, uniquely named namespace with loopback up.
    #[expect(
        clippy::new_without_default,
        reason = "creating a namespace changes the host: not a default value"
    )]
    pub fn new() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "fgt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        must(&["netns", "add", &name]);
        let ns = Netns { name };
        must(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace name (`/run/netns/<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a thread that has entered this namespace; returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let name = self.name.clone();
        thread::spawn(move || {
            fluxgate_dataplane::netns::enter(&name).expect("enter netns");
            f()
        })
        .join()
        .expect("thread in netns panicked")
    }

    /// Runs `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        must(&full);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the veth ends inside it and
        // detaches any XDP program on them.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Two namespaces joined by a veth pair `a` ⇄ `b`, IPv4 `10.77.0.1/24` on `a`
/// and `10.77.0.2/24` on `b`, IPv6 disabled and static neighbour entries, so
/// the only frames on the wire are the ones a test sends.
pub struct Link {
    /// Sending side.
    pub a: Netns,
    /// Receiving side (where XDP is attached).
    pub b: Netns,
}

/// Interface name of the veth end in `a`.
pub const IF_A: &str = "fg-a";
/// Interface name of the veth end in `b`.
pub const IF_B: &str = "fg-b";
/// Address of `a`.
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Address of `b`.
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// MAC of `a`.
pub const MAC_A: &str = "02:77:00:00:00:01";
/// MAC of `b`.
pub const MAC_B: &str = "02:77:00:00:00:02";

impl Link {
    /// Creates both namespaces and the veth pair between them.
    #[expect(
        clippy::new_without_default,
        reason = "creating namespaces and a veth pair changes the host: not a default value"
    )]
    pub fn new() -> Link {
        let a = Netns::new();
        let b = Netns::new();
        a.ip(&[
            "link",
            "add",
            IF_A,
            "address",
            MAC_A,
            "type",
            "veth",
            "peer",
            "name",
            IF_B,
            "address",
            MAC_B,
            "netns",
            b.name(),
        ]);
        for (ns, ifname, addr, peer, peer_mac) in [
            (&a, IF_A, ADDR_A, ADDR_B, MAC_B),
            (&b, IF_B, ADDR_B, ADDR_A, MAC_A),
        ] {
            let sysctl = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
            ns.run(move || std::fs::write(sysctl, "1").expect("disable IPv6"));
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", ifname]);
            ns.ip(&["link", "set", ifname, "arp", "off", "up"]);
            ns.ip(&[
                "neigh",
                "replace",
                &peer.to_string(),
                "lladdr",
                peer_mac,
                "dev",
                ifname,
                "nud",
                "permanent",
            ]);
        }
        Link { a, b }
    }
}

/// Sends `count` UDP datagrams of `payload` bytes from `a` to `b:port` and
/// returns how many arrived (the receiver waits up to 2 s for stragglers).
pub fn udp_exchange(link: &Link, port: u16, count: usize, payload: usize) -> usize {
    udp_exchange_to(link, ADDR_B, port, count, payload)
}

impl Link {
    /// Adds `addr/32` on `b` and a route plus static neighbour for it on `a`,
    /// so `a` can send to it across the veth pair.
    pub fn add_b_address(&self, addr: Ipv4Addr) {
        self.b
            .ip(&["addr", "add", &format!("{addr}/32"), "dev", IF_B]);
        self.a
            .ip(&["route", "replace", &format!("{addr}/32"), "dev", IF_A]);
        self.a.ip(&[
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            MAC_B,
            "dev",
            IF_A,
            "nud",
            "permanent",
        ]);
    }
}

/// Like [`udp_exchange`], to `dst` (an address of `b`).
pub fn udp_exchange_to(
    link: &Link,
    dst: Ipv4Addr,
    port: u16,
    count: usize,
    payload: usize,
) -> usize {
    udp_exchange_from(link, ADDR_A, dst, port, count, payload)
}

impl Link {
    /// Adds `addr/32` on `a` (a second source address for its packets; in
    /// [`ADDR_A`]'s /24, so `b` has a route back).
    pub fn add_a_address(&self, addr: Ipv4Addr) {
        self.a
            .ip(&["addr", "add", &format!("{addr}/32"), "dev", IF_A]);
    }
}

/// Like [`udp_exchange_to`], sent from `src` (an address of `a`: [`ADDR_A`]
/// or one added with [`Link::add_a_address`]).
pub fn udp_exchange_from(
    link: &Link,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    port: u16,
    count: usize,
    payload: usize,
) -> usize {
    let receiver = {
        let (tx, rx) = std::sync::mpsc::channel();
        let name = link.b.name().to_owned();
        let handle = thread::spawn(move || {
            fluxgate_dataplane::netns::enter(&name).expect("enter netns");
            let sock = UdpSocket::bind(SocketAddrV4::new(dst, port)).expect("bind");
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            tx.send(()).expect("ready");
            let mut got = 0;
            let mut buf = [0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut idle_since = Instant::now();
            while got < count && Instant::now() < deadline {
                match sock.recv(&mut buf) {
                    Ok(_) => {
                        got += 1;
                        idle_since = Instant::now();
                    }
                    Err(_) if idle_since.elapsed() > Duration::from_secs(2) => break,
                    Err(_) => {}
                }
            }
            got
        });
        rx.recv().expect("receiver ready");
        handle
    };
    link.a.run(move || {
        let sock = UdpSocket::bind(SocketAddrV4::new(src, 0)).expect("bind");
        let data = vec![0xabu8; payload];
        for i in 0..count {
            sock.send_to(&data, SocketAddrV4::new(dst, port))
                .expect("send");
            if i % 64 == 63 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    });
    receiver.join().expect("receiver")
}

/// Opens `count` TCP connections from `a` to `b:port`, each sending `msg` and
/// reading it back; returns how many round trips succeeded.
pub fn tcp_exchange(link: &Link, port: u16, count: usize, msg: &'static [u8]) -> usize {
    tcp_exchange_to(link, ADDR_B, port, count, msg)
}

/// Like [`tcp_exchange`], to `dst` (an address of `b`). Connections that are
/// dropped time out after 1 s each.
pub fn tcp_exchange_to(
    link: &Link,
    dst: Ipv4Addr,
    port: u16,
    count: usize,
    msg: &'static [u8],
) -> usize {
    use std::io::{Read, Write};
    use std::sync::{Arc, atomic::AtomicBool};
    let (tx, rx) = std::sync::mpsc::channel();
    let name = link.b.name().to_owned();
    let done = Arc::new(AtomicBool::new(false));
    let server_done = Arc::clone(&done);
    let server = thread::spawn(move || {
        fluxgate_dataplane::netns::enter(&name).expect("enter netns");
        let listener = TcpListener::bind(SocketAddrV4::new(dst, port)).expect("listen");
        listener.set_nonblocking(true).expect("nonblocking");
        tx.send(()).expect("ready");
        // Serve until the client side is finished (dropped connections never arrive).
        while !server_done.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).expect("blocking");
                    s.set_read_timeout(Some(Duration::from_secs(2)))
                        .expect("timeout");
                    let mut buf = vec![0u8; msg.len()];
                    if s.read_exact(&mut buf).is_ok() {
                        let _ = s.write_all(&buf);
                    }
                }
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    rx.recv().expect("server ready");
    let ok = link.a.run(move || {
        let mut ok = 0;
        for _ in 0..count {
            let addr = SocketAddr::V4(SocketAddrV4::new(dst, port));
            let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
                continue;
            };
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut buf = vec![0u8; msg.len()];
            if s.write_all(msg).is_ok() && s.read_exact(&mut buf).is_ok() && buf == msg {
                ok += 1;
            }
        }
        ok
    });
    done.store(true, Ordering::Release);
    server.join().expect("server");
    ok
}

/// Sends `count` ICMP echo requests from `a` to `b` over a raw socket and
/// returns how many replies came back.
pub fn ping(link: &Link, count: u16) -> usize {
    link.a.run(move || {
        // SAFETY: plain socket(2) call; the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        assert!(fd >= 0, "raw socket: {}", io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: valid fd, option value points to a timeval of the given size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as u32,
            );
        }
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ADDR_B.octets()),
            },
            sin_zero: [0; 8],
        };
        let mut replies = 0;
        for seq in 0..count {
            let mut msg = [8u8, 0, 0, 0, 0x12, 0x34, 0, 0, b'f', b'g'];
            msg[6..8].copy_from_slice(&seq.to_be_bytes());
            let sum = fluxgate_dataplane::frame::checksum(&[&msg]);
            msg[2..4].copy_from_slice(&sum.to_be_bytes());
            // SAFETY: buffer and address are valid for the given lengths.
            let sent = unsafe {
                libc::sendto(
                    fd,
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&raw const dst).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                )
            };
            assert_eq!(
                sent,
                msg.len() as isize,
                "sendto: {}",
                io::Error::last_os_error()
            );
            let mut buf = [0u8; 256];
            // SAFETY: buffer valid for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            // Raw ICMP sockets receive the IP header too: type at offset IHL*4.
            if n > 20 {
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                if buf[ihl] == 0 && buf[ihl + 6..ihl + 8] == seq.to_be_bytes() {
                    replies += 1;
                }
            }
        }
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
        replies
    })
}

/// Sends raw Ethernet frames from `a`'s veth end (AF_PACKET), e.g. malformed ones.
pub fn send_raw(link: &Link, frames: Vec<Vec<u8>>) {
    link.a.run(move || {
        // SAFETY: plain socket(2) call; closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0, "packet socket: {}", io::Error::last_os_error());
        let ifname = std::ffi::CString::new(IF_A).expect("name");
        // SAFETY: NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
        assert_ne!(ifindex, 0);
        for frame in frames {
            // SAFETY: zeroed sockaddr_ll is a valid starting value.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(
                &frame[..6.min(frame.len())]
                    .iter()
                    .copied()
                    .chain([0; 6])
                    .take(6)
                    .collect::<Vec<_>>(),
            );
            // SAFETY: frame and address valid for their lengths.
            let sent = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(
                sent,
                frame.len() as isize,
                "sendto raw: {}",
                io::Error::last_os_error()
            );
        }
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
    });
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Continuous UDP traffic from `a` to several `(address, port)` of `b`, paced
/// at a total rate, until [`Flow::stop`] (or drop). Bounded: the sender stops
/// by itself after [`Flow::MAX_DURATION`].
pub struct Flow {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sender: Option<thread::JoinHandle<Vec<u64>>>,
    receivers: Vec<thread::JoinHandle<u64>>,
}

impl Flow {
    /// Longest a flow runs, whatever the test does.
    pub const MAX_DURATION: Duration = Duration::from_secs(600);

    /// Starts receivers on `b` for every destination, then the sender on `a`,
    /// one datagram to each destination per tick, `pps` datagrams/s in total.
    pub fn start(link: &Link, dsts: &[(Ipv4Addr, u16)], pps: u32) -> Flow {
        use std::sync::{Arc, atomic::AtomicBool};
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::new();
        for &(dst, port) in dsts {
            let (tx, rx) = std::sync::mpsc::channel();
            let name = link.b.name().to_owned();
            let stop = stop.clone();
            receivers.push(thread::spawn(move || {
                fluxgate_dataplane::netns::enter(&name).expect("enter netns");
                let sock = UdpSocket::bind(SocketAddrV4::new(dst, port)).expect("bind");
                sock.set_read_timeout(Some(Duration::from_millis(100)))
                    .expect("timeout");
                // A deep receive queue: a receiver descheduled for a while on a
                // busy 2-core machine must not lose datagrams the filter passed.
                let size: libc::c_int = 8 << 20;
                // SAFETY: setsockopt on a socket we own, with a valid int option.
                unsafe {
                    libc::setsockopt(
                        std::os::fd::AsRawFd::as_raw_fd(&sock),
                        libc::SOL_SOCKET,
                        libc::SO_RCVBUFFORCE,
                        (&raw const size).cast(),
                        size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                tx.send(()).expect("ready");
                let mut got = 0u64;
                let mut buf = [0u8; 2048];
                let mut idle_since = Instant::now();
                loop {
                    match sock.recv(&mut buf) {
                        Ok(_) => {
                            got += 1;
                            idle_since = Instant::now();
                        }
                        // After stop, keep draining stragglers until idle.
                        Err(_) => {
                            if stop.load(Ordering::SeqCst)
                                && idle_since.elapsed() > Duration::from_millis(500)
                            {
                                break got;
                            }
                        }
                    }
                }
            }));
            rx.recv().expect("receiver ready");
        }
        let name = link.a.name().to_owned();
        let dsts = dsts.to_vec();
        let sender_stop = stop.clone();
        let sender = thread::spawn(move || {
            fluxgate_dataplane::netns::enter(&name).expect("enter netns");
            let sock = UdpSocket::bind(SocketAddrV4::new(ADDR_A, 0)).expect("bind");
            let tick = Duration::from_secs_f64(dsts.len() as f64 / f64::from(pps.max(1)));
            let start = Instant::now();
            let mut sent = vec![0u64; dsts.len()];
            let mut next = start;
            while !sender_stop.load(Ordering::SeqCst) && start.elapsed() < Flow::MAX_DURATION {
                for (i, &(dst, port)) in dsts.iter().enumerate() {
                    if sock
                        .send_to(&[0x5a; 32], SocketAddrV4::new(dst, port))
                        .is_ok()
                    {
                        sent[i] += 1;
                    }
                }
                next += tick;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
            }
            sent
        });
        Flow {
            stop,
            sender: Some(sender),
            receivers,
        }
    }

    /// Stops sending, waits for stragglers; `(sent, received)` per destination.
    pub fn stop(mut self) -> Vec<(u64, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        let sent = self
            .sender
            .take()
            .expect("sender")
            .join()
            .expect("sender thread");
        let received: Vec<u64> = std::mem::take(&mut self.receivers)
            .into_iter()
            .map(|r| r.join().expect("receiver thread"))
            .collect();
        sent.into_iter().zip(received).collect()
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `lo` of a fresh namespace with fluxgate attached (generic mode) and pinned
/// under a fresh bpffs directory (`/sys/fs/bpf/fgt-<tag>-<pid>-<n>`), sized
/// by `sizes`; detached and removed when dropped, also when a test fails.
pub struct PinnedLo {
    _ns: Netns,
    root: std::path::PathBuf,
}

impl PinnedLo {
    /// Loads, attaches and pins fluxgate on the new namespace's `lo`.
    pub fn new(tag: &str, sizes: fluxgate_dataplane::Sizes) -> PinnedLo {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = std::path::PathBuf::from(format!(
            "/sys/fs/bpf/fgt-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let ns = Netns::new();
        let pins = root.clone();
        ns.run(move || {
            let program = fluxgate_dataplane::Program::load_with(
                &fluxgate_common::GatewayConfig::default(),
                sizes,
            )
            .expect("load");
            let attached = program
                .attach("lo", fluxgate_dataplane::AttachMode::Generic)
                .expect("attach");
            drop(attached.pin(&pins).expect("pin"));
        });
        PinnedLo { _ns: ns, root }
    }

    /// A new adoption of the pinned state, as a restarted process would make.
    pub fn open(&self) -> fluxgate_dataplane::PinnedAttachment {
        fluxgate_dataplane::PinnedAttachment::open(&self.root, "lo").expect("open pinned")
    }
}

impl Drop for PinnedLo {
    fn drop(&mut self) {
        if let Ok(p) = fluxgate_dataplane::PinnedAttachment::open(&self.root, "lo") {
            let _ = p.detach();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
