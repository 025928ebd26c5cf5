//! The bounded UDP flood between two namespaces, and the nftables side of it.

use std::{
    io::Write,
    net::{SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use fluxgate::{
    dataplane::netns,
    ruleset::{PortRange, classbench::Filter},
};

use fluxgate_testkit::net::{ADDR_A, ADDR_B, IF_B, Link};

/// The flood's destination port on the receiver and source port on the sender.
pub const DPORT: u16 = 5001;
pub const SPORT: u16 = 40001;
/// UDP payload that makes a 64-byte Ethernet frame (14 + 20 + 8 + 22, no FCS).
const PAYLOAD: usize = 64 - 14 - 20 - 8;
/// One flood: this long, at most this many datagrams.
pub const TIME: Duration = Duration::from_secs(2);
const MAX: u64 = 5_000_000;

/// One flood's outcome.
#[derive(Clone, Copy)]
pub struct Run {
    /// Datagrams the sender's `sendmmsg` accepted.
    pub sent: u64,
    /// Datagrams the receiving socket got.
    pub received: u64,
    /// How long the sender sent.
    pub secs: f64,
}

impl Run {
    /// Received datagrams per second of sending.
    pub fn pps(&self) -> f64 {
        self.received as f64 / self.secs
    }
}

fn set_int_opt(fd: i32, opt: libc::c_int, v: libc::c_int) {
    // SAFETY: setsockopt on a socket we own, with a valid int option.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&raw const v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// One bounded flood from `a` to a socket in `b` (`sendmmsg` / `recvmmsg`, one flow).
pub fn once(link: &Link) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let name = link.b.name().to_owned();
    let receiver_stop = stop.clone();
    let receiver = thread::spawn(move || {
        netns::enter(&name).expect("enter netns");
        let sock = UdpSocket::bind(SocketAddrV4::new(ADDR_B, DPORT)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        set_int_opt(sock.as_raw_fd(), libc::SO_RCVBUFFORCE, 32 << 20);
        tx.send(()).expect("ready");
        const BATCH: usize = 64;
        let mut bufs = vec![[0u8; 64]; BATCH];
        // SAFETY: all-zero iovec/mmsghdr are valid; pointers are set below.
        let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        for i in 0..BATCH {
            iov[i].iov_base = bufs[i].as_mut_ptr().cast();
            iov[i].iov_len = bufs[i].len();
            msgs[i].msg_hdr.msg_iov = &raw mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut got = 0u64;
        let mut idle_since = Instant::now();
        loop {
            // SAFETY: msgs/iov/bufs stay alive and valid for BATCH entries.
            let n = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n > 0 {
                got += n as u64;
                idle_since = Instant::now();
            } else if receiver_stop.load(Ordering::SeqCst)
                && idle_since.elapsed() > Duration::from_millis(300)
            {
                break got;
            }
        }
    });
    rx.recv().expect("receiver ready");
    let (sent, secs) = link.a.run(|| {
        let sock = UdpSocket::bind(SocketAddrV4::new(ADDR_A, SPORT)).expect("bind");
        sock.connect(SocketAddrV4::new(ADDR_B, DPORT))
            .expect("connect");
        const BATCH: usize = 32;
        let payload = [0x5au8; PAYLOAD];
        let mut iov: Vec<libc::iovec> = (0..BATCH)
            .map(|_| libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            })
            .collect();
        // SAFETY: an all-zero mmsghdr is valid; the iovec pointer is set below.
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < TIME && sent < MAX {
            // SAFETY: msgs/iov/payload stay alive and valid for BATCH entries.
            let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
            if n > 0 {
                sent += n as u64;
            }
        }
        (sent, start.elapsed().as_secs_f64())
    });
    stop.store(true, Ordering::SeqCst);
    let received = receiver.join().expect("receiver thread");
    Run {
        sent,
        received,
        secs,
    }
}

/// One filter as an nft rule (netdev family; the protocol dependency is implied).
pub fn nft_rule(f: &Filter) -> String {
    let mut r = String::new();
    if f.src.prefix_len() > 0 {
        r += &format!("ip saddr {} ", f.src);
    }
    if f.dst.prefix_len() > 0 {
        r += &format!("ip daddr {} ", f.dst);
    }
    let range = |p: PortRange| {
        if p.lo == p.hi {
            p.lo.to_string()
        } else {
            format!("{}-{}", p.lo, p.hi)
        }
    };
    let any = PortRange { lo: 0, hi: 65535 };
    let l4 = match f.proto {
        Some(6) => "tcp",
        Some(17) => "udp",
        // ClassBench ports on any protocol: the transport header's first 4 bytes.
        None => "th",
        Some(p) => {
            r += &format!("ip protocol {p} ");
            ""
        }
    };
    let mut named = false;
    if !l4.is_empty() {
        for (field, p) in [("sport", f.sport), ("dport", f.dport)] {
            if p != any {
                r += &format!("{l4} {field} {} ", range(p));
                named = true;
            }
        }
    }
    if let (Some(6), Some((v, m))) = (f.proto, f.flags)
        && m & 0xff != 0
    {
        r += &format!("tcp flags & 0x{:02x} == 0x{:02x} ", m & 0xff, v & m & 0xff);
        named = true;
    }
    if !named && matches!(f.proto, Some(6) | Some(17)) {
        r += &format!("ip protocol {l4} ");
    }
    r + "accept"
}

/// The filters as one netdev ingress chain on the receiving veth, policy drop.
pub fn nft_ruleset(filters: &[Filter]) -> String {
    let mut s = format!(
        "table netdev fgpeers {{\n  chain ingress {{\n    type filter hook ingress device \"{IF_B}\" priority 0; policy drop;\n"
    );
    for f in filters {
        s += "    ";
        s += &nft_rule(f);
        s += "\n";
    }
    s + "  }\n}\n"
}

/// Loads an nft ruleset in `b` with one `nft -f`; how long it took.
pub fn nft_load(link: &Link, text: &str) -> Duration {
    nft(link, &["-f", "-"], Some(text))
}

/// Removes what [`nft_load`] loaded.
pub fn nft_unload(link: &Link) {
    nft(link, &["delete", "table", "netdev", "fgpeers"], None);
}

fn nft(link: &Link, args: &[&str], stdin: Option<&str>) -> Duration {
    let started = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", link.b.name(), "nft"])
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft (nftables installed?)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write nft ruleset");
    }
    drop(child.stdin.take());
    let status = child.wait().expect("nft");
    assert!(status.success(), "nft {args:?} failed");
    started.elapsed()
}
