//! Every frame shape the parser must handle, run through the real program with
//! BPF_PROG_TEST_RUN: the verdict and the exact counter each one moves.

use std::net::{Ipv4Addr, Ipv6Addr};

use fluxgate::{
    common::{GatewayConfig, Malformed, Outcome, xdp},
    dataplane::{
        Counters, Program,
        frame::{FrameSpec, L4, ethertype},
    },
};

fn v4(l4: L4) -> FrameSpec {
    FrameSpec::new(
        Ipv4Addr::new(198, 51, 100, 7).into(),
        Ipv4Addr::new(203, 0, 113, 10).into(),
        l4,
    )
}

fn v6(l4: L4) -> FrameSpec {
    FrameSpec::new(
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7).into(),
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10).into(),
        l4,
    )
}

const TCP: L4 = L4::Tcp {
    sport: 40000,
    dport: 443,
    flags: 0x02,
};
const UDP: L4 = L4::Udp {
    sport: 5353,
    dport: 53,
};
const ICMP: L4 = L4::Icmp { ty: 8, code: 0 };

const ETH: usize = 14;
const IP4: usize = ETH;
const L4_V4: usize = ETH + 20;
const L4_V6: usize = ETH + 40;

/// What a frame must get.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Passed,
    NotIp,
    Bad(Malformed),
}

fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use Expect::*;
    let tcp4 = v4(TCP).build();
    let mut cases = vec![
        ("tcp/ipv4", tcp4.clone(), Passed),
        ("udp/ipv4", v4(UDP).build(), Passed),
        ("icmp/ipv4", v4(ICMP).build(), Passed),
        ("gre/ipv4 (no l4 parsed)", v4(L4::Other(47)).build(), Passed),
        ("tcp/ipv6", v6(TCP).build(), Passed),
        ("udp/ipv6", v6(UDP).build(), Passed),
        ("icmpv6", v6(ICMP).build(), Passed),
        ("arp", arp(), NotIp),
        // Ethernet and VLAN.
        (
            "ethernet 10 bytes",
            tcp4[..10].to_vec(),
            Bad(Malformed::EthernetTruncated),
        ),
        (
            "ethernet 13 bytes",
            tcp4[..13].to_vec(),
            Bad(Malformed::EthernetTruncated),
        ),
        (
            "ethernet only, no ip",
            tcp4[..ETH].to_vec(),
            Bad(Malformed::Ipv4Header),
        ),
        ("vlan tag cut short", vlan_cut(), Bad(Malformed::VlanTag)),
        ("three vlan tags", vlans(3), Bad(Malformed::VlanTag)),
        // IPv4.
        (
            "ipv4 header cut short",
            tcp4[..IP4 + 12].to_vec(),
            Bad(Malformed::Ipv4Header),
        ),
        (
            "ipv4 ihl 4",
            with(&tcp4, IP4, 0x44),
            Bad(Malformed::Ipv4Header),
        ),
        (
            "ipv4 ihl 0",
            with(&tcp4, IP4, 0x40),
            Bad(Malformed::Ipv4Header),
        ),
        (
            "ipv4 ihl 15 beyond frame",
            with(&tcp4, IP4, 0x4f),
            Bad(Malformed::Ipv4Header),
        ),
        (
            "ipv4 version 6 in ipv4 ethertype",
            with(&tcp4, IP4, 0x65),
            Bad(Malformed::Ipv4Header),
        ),
        (
            "ipv4 total length beyond frame",
            total_len(&tcp4, 200),
            Bad(Malformed::Ipv4Header),
        ),
        (
            "ipv4 total length below ihl",
            total_len(&tcp4, 12),
            Bad(Malformed::Ipv4Header),
        ),
        ("ipv4 with options (ihl 6)", ipv4_options(), Passed),
        (
            "ipv4 non-first fragment, no l4",
            fragment(&tcp4[..L4_V4 + 4], 185),
            Passed,
        ),
        (
            "ipv4 first fragment, tcp cut short",
            fragment_mf(&tcp4[..L4_V4 + 8]),
            Bad(Malformed::TcpTinyFragment),
        ),
        // The IP length bounds the L4 header: bytes past it are Ethernet
        // padding, never a header (a sender on the segment could put any
        // flags there).
        (
            "ipv4 padded to 60 bytes after a whole tcp header",
            padded(&tcp4, 60),
            Passed,
        ),
        (
            "ipv4 tcp header ending in the padding",
            ip_len(&tcp4, 20 + 8, 0),
            Bad(Malformed::TcpHeader),
        ),
        (
            "ipv4 tiny first fragment (ports only), flags in the padding",
            ip_len(&tcp4, 20 + 8, 0x2000),
            Bad(Malformed::TcpTinyFragment),
        ),
        (
            "ipv4 udp header ending in the padding",
            ip_len(&padded(&v4(UDP).build(), 60), 20 + 4, 0),
            Bad(Malformed::UdpHeader),
        ),
        (
            "ipv4 tcp fragment at offset 1",
            fragment(&tcp4[..L4_V4 + 16], 1),
            Bad(Malformed::TcpFragmentOffset),
        ),
        (
            "ipv4 udp fragment at offset 1",
            fragment(&v4(UDP).build(), 1),
            Passed,
        ),
        (
            "ipv4 tcp fragment at offset 2",
            fragment(&tcp4[..L4_V4 + 16], 2),
            Passed,
        ),
        // IPv6.
        (
            "ipv6 header cut short",
            v6(TCP).build()[..ETH + 30].to_vec(),
            Bad(Malformed::Ipv6Header),
        ),
        (
            "ipv6 wrong version",
            with(&v6(TCP).build(), ETH, 0x40),
            Bad(Malformed::Ipv6Header),
        ),
        ("ipv6 3 extension headers + tcp", ext(&[0, 43, 60]), Passed),
        (
            "ipv6 tcp header ending in the padding",
            ip6_len(&padded(&v6(TCP).build(), 100), 8),
            Bad(Malformed::TcpHeader),
        ),
        (
            "ipv6 extension header ending in the padding",
            ip6_len(&padded(&ext(&[60]), 100), 4),
            Bad(Malformed::Ipv6ExtensionChain),
        ),
        (
            "ipv6 tiny first fragment (ports only), flags in the padding",
            ip6_len(&v6_fragment(TCP, 0, true), 8 + 8),
            Bad(Malformed::TcpTinyFragment),
        ),
        (
            "ipv6 first fragment with a whole tcp header",
            v6_fragment(TCP, 0, true),
            Passed,
        ),
        (
            "ipv6 atomic fragment (offset 0, last)",
            v6_fragment(TCP, 0, false),
            Passed,
        ),
        (
            "ipv6 tcp fragment at offset 1",
            v6_fragment(TCP, 1, true),
            Bad(Malformed::TcpFragmentOffset),
        ),
        (
            "ipv6 udp fragment at offset 1",
            v6_fragment(UDP, 1, true),
            Passed,
        ),
        (
            "ipv6 non-first fragment",
            v6_fragment(TCP, 185, false),
            Passed,
        ),
        ("ipv6 8 extension headers + tcp", ext(&[60; 8]), Passed),
        (
            "ipv6 9 extension headers (loop)",
            ext(&[60; 9]),
            Bad(Malformed::Ipv6ExtensionChain),
        ),
        (
            "ipv6 40 extension headers (loop)",
            ext(&[60; 40]),
            Bad(Malformed::Ipv6ExtensionChain),
        ),
        (
            "ipv6 extension header cut short",
            ext_cut(),
            Bad(Malformed::Ipv6ExtensionChain),
        ),
        // L4.
        (
            "tcp cut short",
            cut_l4(tcp4.clone(), L4_V4 + 10),
            Bad(Malformed::TcpHeader),
        ),
        (
            "tcp data offset 4",
            with(&tcp4, L4_V4 + 12, 0x40),
            Bad(Malformed::TcpHeader),
        ),
        (
            "tcp data offset 15 beyond frame",
            with(&tcp4, L4_V4 + 12, 0xf0),
            Bad(Malformed::TcpHeader),
        ),
        (
            "udp cut short",
            cut_l4(v4(UDP).build(), L4_V4 + 4),
            Bad(Malformed::UdpHeader),
        ),
        (
            "icmp cut short",
            cut_l4(v4(ICMP).build(), L4_V4 + 3),
            Bad(Malformed::IcmpHeader),
        ),
        (
            "tcp/ipv6 cut short",
            cut_l6(v6(TCP).build(), L4_V6 + 19),
            Bad(Malformed::TcpHeader),
        ),
        (
            "icmpv6 cut short",
            cut_l6(v6(ICMP).build(), L4_V6 + 7),
            Bad(Malformed::IcmpHeader),
        ),
    ];
    let mut qinq = v4(TCP);
    qinq.vlans = vec![(ethertype::QINQ, 100), (ethertype::VLAN, 200)];
    cases.push(("802.1ad + 802.1Q tagged tcp", qinq.build(), Expect::Passed));
    let mut one = v6(UDP);
    one.vlans = vec![(ethertype::VLAN, 7)];
    cases.push(("802.1Q tagged udp/ipv6", one.build(), Expect::Passed));
    cases
}

fn with(frame: &[u8], at: usize, byte: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[at] = byte;
    f
}

fn total_len(frame: &[u8], len: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[IP4 + 2..IP4 + 4].copy_from_slice(&len.to_be_bytes());
    f
}

/// Truncates an IPv4 frame at `len` and fixes the IP total length, so only the
/// L4 header is short.
fn cut_l4(frame: Vec<u8>, len: usize) -> Vec<u8> {
    total_len(&frame[..len], (len - ETH) as u16)
}

fn cut_l6(frame: Vec<u8>, len: usize) -> Vec<u8> {
    let mut f = frame[..len].to_vec();
    f[ETH + 4..ETH + 6].copy_from_slice(&((len - L4_V6) as u16).to_be_bytes());
    f
}

fn fragment(frame: &[u8], offset_units: u16) -> Vec<u8> {
    let mut f = total_len(frame, (frame.len() - ETH) as u16);
    f[IP4 + 6..IP4 + 8].copy_from_slice(&offset_units.to_be_bytes());
    f
}

/// `frame` with zero bytes appended up to `len` (Ethernet padding).
fn padded(frame: &[u8], len: usize) -> Vec<u8> {
    let mut f = frame.to_vec();
    f.resize(len.max(f.len()), 0);
    f
}

/// An IPv4 frame whose total length says `len` (the bytes after it stay in
/// the frame, as padding) with fragment field `frag`.
fn ip_len(frame: &[u8], len: u16, frag: u16) -> Vec<u8> {
    let mut f = total_len(frame, len);
    f[IP4 + 6..IP4 + 8].copy_from_slice(&frag.to_be_bytes());
    f
}

/// An IPv6 frame whose payload length says `len` (the rest stays, as padding).
fn ip6_len(frame: &[u8], len: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[ETH + 4..ETH + 6].copy_from_slice(&len.to_be_bytes());
    f
}

/// An IPv6 packet with a fragment header (offset in 8-byte units, M flag)
/// before the whole `l4` header.
fn v6_fragment(l4: L4, offset: u16, more: bool) -> Vec<u8> {
    let mut f = v6(l4).build();
    let proto = f[ETH + 6];
    f[ETH + 6] = 44;
    let field = (offset << 3) | u16::from(more);
    let [hi, lo] = field.to_be_bytes();
    let header = [proto, 0, hi, lo, 0, 0, 0, 1];
    f.splice(L4_V6..L4_V6, header);
    let payload = (f.len() - L4_V6) as u16;
    f[ETH + 4..ETH + 6].copy_from_slice(&payload.to_be_bytes());
    f
}

fn fragment_mf(frame: &[u8]) -> Vec<u8> {
    fragment(frame, 0x2000)
}

fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&ethertype::ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0; 20]);
    f
}

fn vlan_cut() -> Vec<u8> {
    let mut spec = v4(TCP);
    spec.vlans = vec![(ethertype::VLAN, 5)];
    spec.build()[..ETH + 2].to_vec()
}

fn vlans(n: usize) -> Vec<u8> {
    let mut spec = v4(TCP);
    spec.vlans = (0..n).map(|i| (ethertype::VLAN, i as u16 + 1)).collect();
    spec.build()
}

fn ipv4_options() -> Vec<u8> {
    let f = v4(TCP).build();
    let mut out = f[..L4_V4].to_vec();
    out[IP4] = 0x46;
    out.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    out.extend_from_slice(&f[L4_V4..]);
    total_len(&out, (out.len() - ETH) as u16)
}

fn ext(headers: &[u8]) -> Vec<u8> {
    let mut spec = v6(TCP);
    spec.ipv6_ext = headers.to_vec();
    spec.build()
}

fn ext_cut() -> Vec<u8> {
    let f = ext(&[0, 60]);
    // Keep the first extension header and half of the second.
    let len = L4_V6 + 8 + 4;
    let mut out = f[..len].to_vec();
    out[ETH + 4..ETH + 6].copy_from_slice(&((len - L4_V6) as u16).to_be_bytes());
    out
}

fn delta(before: &Counters, after: &Counters, frame_len: usize, expect: Expect) {
    let outcome = match expect {
        Expect::Passed => Outcome::Passed,
        Expect::NotIp => Outcome::NotIp,
        Expect::Bad(_) => Outcome::Malformed,
    };
    for o in Outcome::ALL {
        let want = u64::from(o == outcome);
        let got = after.outcome(o).packets - before.outcome(o).packets;
        assert_eq!(
            got,
            want,
            "outcome {} moved by {got}, expected {want}",
            o.name()
        );
    }
    assert_eq!(
        after.outcome(outcome).bytes - before.outcome(outcome).bytes,
        frame_len as u64,
        "bytes of {}",
        outcome.name()
    );
    for m in Malformed::ALL {
        let want = u64::from(expect == Expect::Bad(m));
        let got = after.malformed(m).packets - before.malformed(m).packets;
        assert_eq!(
            got,
            want,
            "malformed reason {} moved by {got}, expected {want}",
            m.name()
        );
    }
}

/// The host build of the kernel's parser (`fluxgate_parse`): frames the
/// kernel cannot be handed (shorter than 14 bytes) are checked here, and
/// every other case must get the same answer from both.
fn host_parse(frame: &[u8]) -> Expect {
    let mut key = [0; fluxgate::common::table::KEY_WORDS];
    match fluxgate_parse::parse_frame(frame, 0, &mut key) {
        Ok(true) => Expect::Passed,
        Ok(false) => Expect::NotIp,
        Err(reason) => Expect::Bad(reason),
    }
}

#[test]
fn host_parser_agrees_with_every_case() {
    for (name, frame, expect) in cases() {
        assert_eq!(host_parse(&frame), expect, "{name}");
    }
}

#[test]
fn test_run_refuses_frames_shorter_than_ethernet() {
    fluxgate_testkit::net::require_root();
    let program = Program::load(&GatewayConfig::default()).expect("load program");
    let err = program
        .test_run(&[0u8; 13], 1)
        .expect_err("13 bytes cannot be test-run");
    assert!(err.to_string().contains("at least 14 bytes"), "{err}");
}

fn run_all(config: GatewayConfig, malformed_verdict: u32) {
    fluxgate_testkit::net::require_root();
    let program = Program::load(&config).expect("load program");
    for (name, frame, expect) in cases().into_iter().filter(|(_, f, _)| f.len() >= 14) {
        let before = program.counters().expect("counters");
        let out = program
            .test_run(&frame, 1)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = match expect {
            Expect::Bad(_) => malformed_verdict,
            _ => xdp::PASS,
        };
        assert_eq!(out.verdict, want, "{name}: verdict");
        let after = program.counters().expect("counters");
        std::panic::catch_unwind(|| delta(&before, &after, frame.len(), expect))
            .unwrap_or_else(|_| panic!("{name}: wrong counters (see above)"));
    }
}

#[test]
fn malformed_frames_are_dropped_by_default_and_counted_by_reason() {
    run_all(GatewayConfig::default(), xdp::DROP);
}

#[test]
fn malformed_verdict_is_configurable() {
    run_all(
        GatewayConfig {
            malformed_action: xdp::PASS,
            ..GatewayConfig::default()
        },
        xdp::PASS,
    );
}

#[test]
fn counters_sum_repeated_runs() {
    fluxgate_testkit::net::require_root();
    let program = Program::load(&GatewayConfig::default()).expect("load");
    let frame = v4(UDP).build();
    program.test_run(&frame, 1000).expect("run");
    let c = program.counters().expect("counters");
    assert_eq!(c.outcome(Outcome::Passed).packets, 1000);
    assert_eq!(c.outcome(Outcome::Passed).bytes, 1000 * frame.len() as u64);
    assert_eq!(c.total().packets, 1000);
}
