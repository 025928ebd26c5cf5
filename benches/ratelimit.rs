//! What rate limits cost in the kernel, side by side in one run (kernel ns per
//! packet by BPF_PROG_TEST_RUN, the same packet repeated: hot), each setup
//! a tenant with the same rules but for the limit:
//!
//! - `plain`: `proto udp dport 53 pass` decides (the baseline);
//! - `limit_over`: `proto udp dport 53 limit rate over 1/hour burst 1 packets drop`
//!   first — every packet but the first is over it: the walk, one bucket
//!   read, the rule decides;
//! - `limit_within`: the same limit at 1e9/second with a burst of 2^40 — every
//!   packet is within it: a bucket update (compare-and-exchange), a tail call
//!   and the walk again after the rule, then `pass` decides;
//! - `ceiling`: the plain tenant with `ceiling 1000000000/second` (within);
//! - `per_source`: `limit_within` kept `per saddr/32` (an LRU hash lookup
//!   and a compare-and-exchange on the source's bucket).
//!
//! And LRU churn: 1M packets from 1M distinct sources, one
//! BPF_PROG_TEST_RUN each (so every number here includes one run's timer
//! overhead), through `plain`, `limit_within` and `per_source` (65,536
//! source buckets, the default: nearly every packet misses, inserts and
//! evicts), in alternating rounds; ns/packet and ratios to `plain`.
//!
//! And the choice of one bucket shared by every CPU (one compare-and-exchange
//! on one word) over per-CPU buckets, as a userspace proxy on this machine:
//! the GCRA step of `fluxgate_common::limit` by two threads on one shared
//! atomic word, beside each thread on its own word (what per-CPU buckets cost).
//!
//! And the veth flood: tenant B at 1,000 packets/s while tenant A (ceiling
//! 1,000/second) is flooded from the same peer, beside B alone, through the
//! program attached to a veth: B's received fraction (goal 1.00) and A's
//! passed rate.
//!
//! Run: `cargo bench --bench ratelimit` (as root).

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use criterion::Criterion;
use fluxgate::{
    common::{
        GatewayConfig,
        limit::{Bucket, LimitSlot},
    },
    dataplane::{AttachMode, Program, StagedImage, Tables, frame::FrameSpec, netns},
    ruleset::{CompileOptions, Config, PacketHeader, Ruleset, compile_with, validate},
};

struct Setup {
    name: &'static str,
    program: Program,
    _staged: StagedImage,
}

fn setup(name: &'static str, tenant: &str) -> Setup {
    setup_files(
        name,
        &[("gateway.fg", "default drop\n"), ("acme.fg", tenant)],
    )
}

fn setup_files(name: &'static str, files: &[(&str, &str)]) -> Setup {
    let rs = validate(
        Ruleset::parse_files(files).expect("parses"),
        &Config::default(),
    )
    .expect("valid");
    let image = compile_with(&rs, &CompileOptions::default()).expect("compile");
    let mut program = Program::load(&GatewayConfig::default()).expect("load (needs root)");
    let staged = StagedImage::new(&mut program, &image).expect("stage");
    let buckets: Vec<(u32, LimitSlot)> = image
        .counters
        .iter()
        .filter_map(|c| Some((c.slot, c.limit?.slot(1)?)))
        .collect();
    program.write_buckets(&buckets).expect("buckets");
    program.publish_image(&staged).expect("publish");
    Setup {
        name,
        program,
        _staged: staged,
    }
}

const HEAD: &str = "tenant acme\nprefix 203.0.113.0/24\ndefault drop\n";
const RULES: &str = "proto tcp dport 22 pass\nproto udp dport 53 pass\n";

fn setups() -> Vec<Setup> {
    vec![
        setup("plain", &format!("{HEAD}{RULES}")),
        setup(
            "limit_over",
            &format!(
                "{HEAD}proto udp dport 53 limit rate over 1/hour burst 1 packets drop\n{RULES}"
            ),
        ),
        setup(
            "limit_within",
            &format!(
                "{HEAD}proto udp dport 53 limit rate over 1000000000/second burst \
                 1099511627776 packets drop\n{RULES}"
            ),
        ),
        setup(
            "ceiling",
            &format!("{HEAD}ceiling 1000000000/second burst 1099511627776 packets\n{RULES}"),
        ),
        setup(
            "per_source",
            &format!(
                "{HEAD}proto udp dport 53 limit rate over 1000000000/second burst \
                 1099511627776 packets per saddr/32 drop\n{RULES}"
            ),
        ),
    ]
}

fn hot_ns(program: &Program, f: &[u8]) -> f64 {
    let mut v: Vec<u128> = (0..7)
        .map(|_| {
            let out = program.test_run(f, 500_000).expect("run");
            out.duration.as_nanos()
        })
        .collect();
    v.sort();
    v[3] as f64
}

/// GCRA steps per second per thread: `threads` threads, on one shared word
/// (compare-and-exchange) or each on its own.
fn gcra_rate(threads: usize, shared: bool) -> f64 {
    const STEPS: u64 = 2_000_000;
    let bucket = Bucket::new(1_000_000_000, 1_000_000_000, 1 << 40, false).expect("bucket");
    let words: Arc<Vec<AtomicU64>> = Arc::new((0..threads).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let words = words.clone();
            thread::spawn(move || {
                let w = &words[if shared { 0 } else { t }];
                let t0 = Instant::now();
                for _ in 0..STEPS {
                    let now = t0.elapsed().as_nanos() as u64 + 1_000_000_000;
                    loop {
                        let old = w.load(Ordering::Relaxed);
                        let Some(next) = bucket.take(old, now, 64) else {
                            break;
                        };
                        if w.compare_exchange(old, next, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok()
                        {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    STEPS as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let mut setups = setups();
    let p: PacketHeader = "udp 192.0.2.1:4000 -> 203.0.113.9:53"
        .parse()
        .expect("packet");
    let frame = FrameSpec::from_header(&p).expect("frame").build();
    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("ratelimit_kernel_hot");
    for s in &setups {
        group.bench_function(s.name, |b| {
            b.iter_custom(|iters| {
                let repeat = iters.clamp(1, u64::from(u32::MAX)) as u32;
                s.program.test_run(&frame, repeat).expect("run").duration * repeat
            })
        });
    }
    group.finish();
    criterion.final_summary();

    // Alternating rounds, medians: the ratios are what to read.
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    for _ in 0..5 {
        for (s, v) in setups.iter().zip(&mut ns) {
            v.push(hot_ns(&s.program, &frame));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(&mut ns[0].clone());
    println!("\nrate limits, kernel hot ns/packet (median of 5 alternating rounds):");
    for (s, v) in setups.iter().zip(&mut ns) {
        let m = median(v);
        println!(
            "  {:<14} {:>6.1} ns  {:>+6.1} ns  ×{:.2}",
            s.name,
            m,
            m - base,
            m / base
        );
    }
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cpus.clamp(2, 8);
    let shared = gcra_rate(threads, true);
    let own = gcra_rate(threads, false);
    println!(
        "GCRA step, {threads} threads ({cpus} CPUs): shared word {:.1} M/s per thread, \
         a word each (per-CPU) {:.1} M/s per thread, ×{:.2}",
        shared / 1e6,
        own / 1e6,
        own / shared
    );
    churn(&mut setups);
    veth_flood();
}

/// Distinct sources of the churn measurement.
const CHURN_SOURCES: u32 = 1 << 20;

/// Kernel ns per packet over [`CHURN_SOURCES`] packets from as many sources
/// (one test run each, repeat 1), for `plain`, `limit_within` and
/// `per_source`, in alternating rounds of 64K packets.
fn churn(setups: &mut [Setup]) {
    let frames: Vec<Vec<u8>> = (0..CHURN_SOURCES)
        .map(|i| {
            let src = Ipv4Addr::from(0x0a00_0000 | i);
            let p: PacketHeader = format!("udp {src}:4000 -> 203.0.113.9:53")
                .parse()
                .expect("packet");
            FrameSpec::from_header(&p).expect("frame").build()
        })
        .collect();
    let chosen: Vec<usize> = ["plain", "limit_within", "per_source"]
        .iter()
        .map(|n| setups.iter().position(|s| s.name == *n).expect("setup"))
        .collect();
    let mut total = vec![0u128; chosen.len()];
    for chunk in frames.chunks(1 << 16) {
        for (&i, t) in chosen.iter().zip(&mut total) {
            for f in chunk {
                *t += setups[i]
                    .program
                    .test_run(f, 1)
                    .expect("run")
                    .duration
                    .as_nanos();
            }
        }
    }
    let per = |t: u128| t as f64 / f64::from(CHURN_SOURCES);
    let base = per(total[0]);
    println!("\n{CHURN_SOURCES} distinct sources, one run each (LRU churn), kernel ns/packet:");
    for (&i, t) in chosen.iter().zip(&total) {
        let m = per(*t);
        println!(
            "  {:<14} {:>6.1} ns  {:>+6.1} ns  ×{:.2}",
            setups[i].name,
            m,
            m - base,
            m / base
        );
    }
    let b = fluxgate::dataplane::source_buckets(&mut setups[chosen[2]].program)
        .expect("source buckets");
    println!(
        "  per_source map: {} of {} present, {} inserted, {} evicted",
        b.present, b.capacity, b.inserted, b.evicted
    );
}

const FLOOD_A: Ipv4Addr = Ipv4Addr::new(10, 80, 1, 2);
const FLOOD_B: Ipv4Addr = Ipv4Addr::new(10, 80, 2, 2);
const FLOOD_TIME: Duration = Duration::from_secs(2);

/// Counts datagrams to `dst:port` in namespace `ns` until `stop` and 300 ms of quiet.
fn count_on(ns: &str, dst: Ipv4Addr, port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_owned();
    let h = thread::spawn(move || {
        netns::enter(&ns).expect("enter netns");
        let sock = UdpSocket::bind(SocketAddrV4::new(dst, port)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        tx.send(()).expect("ready");
        let (mut got, mut idle, mut buf) = (0, Instant::now(), [0u8; 128]);
        loop {
            match sock.recv(&mut buf) {
                Ok(_) => {
                    got += 1;
                    idle = Instant::now();
                }
                Err(_)
                    if stop.load(Ordering::SeqCst)
                        && idle.elapsed() > Duration::from_millis(300) =>
                {
                    return got;
                }
                Err(_) => {}
            }
        }
    });
    rx.recv().expect("receiver ready");
    h
}

/// B at 1,000 packets/s for [`FLOOD_TIME`], with A flooded meanwhile or not:
/// (B sent, B received, A sent, A received).
fn flood_round(ns_a: &str, ns_b: &str, flood: bool) -> (u64, u64, u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let rx_a = count_on(ns_b, FLOOD_A, 7000, stop.clone());
    let rx_b = count_on(ns_b, FLOOD_B, 7001, stop.clone());
    let ns = ns_a.to_owned();
    let flooder = thread::spawn(move || {
        if !flood {
            return 0u64;
        }
        netns::enter(&ns).expect("enter netns");
        let sock =
            UdpSocket::bind(SocketAddrV4::new(fluxgate_testkit::net::ADDR_A, 0)).expect("bind");
        sock.connect(SocketAddrV4::new(FLOOD_A, 7000))
            .expect("connect");
        const BATCH: usize = 32;
        let payload = [0x5au8; 22];
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
        let (t0, mut sent) = (Instant::now(), 0u64);
        while t0.elapsed() < FLOOD_TIME {
            // SAFETY: msgs/iov/payload stay alive and valid for BATCH entries.
            let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
            if n > 0 {
                sent += n as u64;
            }
        }
        sent
    });
    let ns = ns_a.to_owned();
    let b_sender = thread::spawn(move || {
        netns::enter(&ns).expect("enter netns");
        let sock =
            UdpSocket::bind(SocketAddrV4::new(fluxgate_testkit::net::ADDR_A, 0)).expect("bind");
        let (t0, mut n) = (Instant::now(), 0u64);
        while t0.elapsed() < FLOOD_TIME {
            if let Some(wait) = Duration::from_millis(n).checked_sub(t0.elapsed()) {
                thread::sleep(wait);
            }
            sock.send_to(&[1u8; 16], SocketAddrV4::new(FLOOD_B, 7001))
                .expect("send");
            n += 1;
        }
        n
    });
    let a_sent = flooder.join().expect("flooder");
    let b_sent = b_sender.join().expect("b sender");
    stop.store(true, Ordering::SeqCst);
    let a_got = rx_a.join().expect("receiver a");
    let b_got = rx_b.join().expect("receiver b");
    (b_sent, b_got, a_sent, a_got)
}

fn veth_flood() {
    use fluxgate_testkit::net::{IF_B, Link};
    let link = Link::new();
    link.add_b_address(FLOOD_A);
    link.add_b_address(FLOOD_B);
    let s = setup_files(
        "flood",
        &[
            ("gateway.fg", "default pass\n"),
            (
                "a.fg",
                "tenant a\nprefix 10.80.1.0/24\ndefault pass\nceiling 1000/second\n",
            ),
            ("b.fg", "tenant b\nprefix 10.80.2.0/24\ndefault pass\n"),
        ],
    );
    let program = s.program;
    let attached = link
        .b
        .run(move || program.attach(IF_B, AttachMode::Auto).expect("attach"));
    let (ns_a, ns_b) = (link.a.name().to_owned(), link.b.name().to_owned());
    // neighbour entries before anything is measured
    flood_round(&ns_a, &ns_b, false);
    let mut ratios = Vec::new();
    for _ in 0..3 {
        let (b_sent0, b_alone, ..) = flood_round(&ns_a, &ns_b, false);
        let (b_sent1, b_flooded, a_sent, a_got) = flood_round(&ns_a, &ns_b, true);
        let ratio = (b_flooded as f64 / b_sent1 as f64) / (b_alone as f64 / b_sent0 as f64);
        println!(
            "veth flood: B alone {b_alone}/{b_sent0}, B with A flooded {b_flooded}/{b_sent1} \
             (×{ratio:.3}); A sent {a_sent} ({:.0} pps), received {a_got} ({:.0}/s under a \
             1000/second ceiling)",
            a_sent as f64 / FLOOD_TIME.as_secs_f64(),
            a_got as f64 / FLOOD_TIME.as_secs_f64()
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "veth flood: B's received rate with A flooded / without, median of 3: ×{:.3}",
        ratios[1]
    );
    drop(attached);
    drop(s._staged);
}
