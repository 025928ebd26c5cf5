//! Rate limits, reference vs userspace classifier vs the kernel program
//! (BPF_PROG_TEST_RUN), on timed traces. The kernel's clock is
//! `bpf_ktime_get_ns`, which a test cannot set; a bucket refilling one
//! packet (or 1,500 bytes) an hour gains nothing over a trace that runs for
//! seconds, so with every packet given the same timestamp the reference's
//! decisions are exact for the kernel too: each limit lets its burst
//! through, then limits everything, packet for packet. Verdicts and every
//! rule counter must agree after each packet.

use fluxgate::{
    common::{GatewayConfig, limit::LimitSlot, xdp},
    dataplane::{Program, StagedImage, Tables, frame::FrameSpec},
    ruleset::{
        Arrival, Classifier, CompileOptions, Config, Meter, PacketHeader, Ruleset, ValidRuleset,
        Verdict, compile_with, reference, validate,
    },
};
use fluxgate_testkit::net;

const GATEWAY: &str = "default drop\n\
    proto udp dport 53 limit rate over 1/hour burst 7 packets drop\n\
    proto icmp count\n\
    proto tcp dport 25 limit rate over 1500 bytes/hour burst 3000 bytes pass\n\
    proto tcp dport 25 drop\n\
    proto tcp dport 8080 limit rate over 1/hour burst 2 packets per saddr/32/48 drop\n";

const ACME: &str = "tenant acme\nprefix 203.0.113.0/24\ndefault pass\n\
    proto udp limit rate over 1/hour burst 4 packets drop\n\
    proto udp dport 53 count\n\
    proto udp dport 53 limit rate over 1/hour burst 2 packets pass\n\
    proto udp dport 53 drop\n\
    proto tcp dport 22 limit rate over 60/hour burst 3 packets drop\n\
    proto icmp limit rate over 1/hour burst 1 packets drop\n\
    proto tcp dport 80 limit rate over 1/hour burst 3 packets per saddr/24 drop\n";

const BETA: &str = "tenant beta\nprefix 198.51.100.0/24\ndefault drop\n\
    ceiling 1/hour burst 40 packets 1500 kbytes/hour\n\
    proto udp limit rate over 1/day burst 9 packets pass\n";

/// Small deterministic generator.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn publish(program: &mut Program, rs: &ValidRuleset) -> (Classifier, StagedImage) {
    let image = compile_with(rs, &CompileOptions::default()).expect("compile");
    let staged = StagedImage::new(program, &image).expect("stage image");
    let buckets: Vec<(u32, LimitSlot)> = image
        .counters
        .iter()
        .filter_map(|c| Some((c.slot, c.limit?.slot(1)?)))
        .collect();
    assert_eq!(buckets.len(), 11, "every limit and ceiling has its bucket");
    program.write_buckets(&buckets).expect("write buckets");
    program.publish_image(&staged).expect("publish image");
    (Classifier::new(image, []), staged)
}

#[test]
fn kernel_userspace_and_reference_agree_on_a_timed_trace_with_limits() {
    net::require_root();
    let rs = validate(
        Ruleset::parse_files(&[
            ("gateway.fg", GATEWAY),
            ("acme.fg", ACME),
            ("beta.fg", BETA),
        ])
        .expect("parses"),
        &Config::default(),
    )
    .expect("valid");
    let mut program = Program::load(&GatewayConfig::default()).expect("load program");
    let (classifier, _staged) = publish(&mut program, &rs);
    let packets: Vec<PacketHeader> = [
        "udp 192.0.2.1:4000 -> 203.0.113.9:53",
        "udp 192.0.2.1:4000 -> 203.0.113.9:5353",
        "udp 192.0.2.1:4000 -> 198.51.100.9:53",
        "udp 192.0.2.1:4000 -> 198.51.100.9:123",
        "tcp 192.0.2.1:4000 -> 203.0.113.9:22 flags S",
        "tcp 192.0.2.1:4000 -> 203.0.113.9:25 flags S",
        "tcp 192.0.2.1:4000 -> 198.51.100.9:25 flags S",
        "icmp 192.0.2.1 -> 203.0.113.9 type 8 code 0",
        // per saddr/24: the first two share a bucket, the third has its own.
        "tcp 192.0.2.1:4000 -> 203.0.113.9:80 flags S",
        "tcp 192.0.2.77:4001 -> 203.0.113.9:80 flags S",
        "tcp 192.0.3.1:4000 -> 203.0.113.9:80 flags S",
        // per saddr/32/48 (IPv6 by /48): the first two share a bucket.
        "tcp [2001:db8:1:1::1]:4000 -> [2001:db8:ff::9]:8080 flags S",
        "tcp [2001:db8:1:2::1]:4000 -> [2001:db8:ff::9]:8080 flags S",
        "tcp [2001:db8:2::1]:4000 -> [2001:db8:ff::9]:8080 flags S",
        "tcp 192.0.2.1:4000 -> 192.0.2.200:8080 flags S",
        "tcp 192.0.2.2:4000 -> 192.0.2.200:8080 flags S",
    ]
    .iter()
    .map(|s| s.parse().expect("packet"))
    .collect();
    let slots = classifier.image().counters.len() as u32;
    let (mut reference_meter, mut user_meter) = (Meter::new(), Meter::new());
    let mut rng = Lcg(7);
    let (mut limited, mut within) = (0, 0);
    for i in 0..900 {
        let p = &packets[rng.next(packets.len())];
        let frame = FrameSpec::from_header(p).expect("frame").build();
        let at = Arrival {
            at_ns: 1_000_000_000,
            len: frame.len() as u32,
        };
        let want = reference::classify_at(&rs, &mut reference_meter, p, at);
        let c = classifier.classify_at(&mut user_meter, p, at);
        let got = classifier.to_decision(&c);
        assert!(
            want.same_outcome(&got),
            "packet {i} {p}: reference {want:?}, userspace {got:?}"
        );
        let before = program.rule_counters(0, slots).expect("counters");
        let out = program.test_run(&frame, 1).expect("test run");
        let after = program.rule_counters(0, slots).expect("counters");
        let verdict = if want.verdict == Verdict::Drop {
            xdp::DROP
        } else {
            xdp::PASS
        };
        assert_eq!(out.verdict, verdict, "packet {i} {p}: {want:?}");
        let mut expected = vec![0u64; slots as usize];
        for s in c.decided_by.iter().chain(&c.counted) {
            expected[*s as usize] += 1;
        }
        for (slot, n) in expected.iter().enumerate() {
            let moved = after[slot].packets - before[slot].packets;
            assert_eq!(
                moved,
                *n,
                "packet {i} {p}: slot {slot} ({:?}), decision {want:?}",
                classifier.slot(slot as u32)
            );
        }
        if want.limited {
            limited += 1;
        } else {
            within += 1;
        }
    }
    // 900 packets, 76 units of burst in all plus 3 or 2 per source bucket:
    // most end limited.
    assert!(
        limited > 400 && within > 50,
        "{limited} limited, {within} not"
    );
}
