//! The real program on a real veth pair between two namespaces: traffic flows,
//! and the counters match what was sent, packet for packet.

use std::time::Duration;

use fluxgate::{
    common::{GatewayConfig, Malformed, Outcome},
    dataplane::{
        AttachMode, Attachment, Counters, Program,
        frame::{FrameSpec, L4},
    },
};
use fluxgate_testkit::net::{self, IF_B, Link, Netns};

fn attach_b(link: &Link, mode: AttachMode) -> Attachment {
    link.b.run(move || {
        Program::load(&GatewayConfig::default())
            .expect("load")
            .attach(IF_B, mode)
            .expect("attach")
    })
}

fn xdp_attached(ns: &Netns, iface: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["-n", ns.name(), "-d", "link", "show", iface])
        .output()
        .expect("ip link show");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

fn passed(c: &Counters) -> u64 {
    c.outcome(Outcome::Passed).packets
}

#[test]
fn counts_real_udp_icmp_tcp_and_raw_frames_exactly() {
    net::require_root();
    let link = Link::new();
    let attachment = attach_b(&link, AttachMode::Native);
    assert_eq!(
        attachment.mode(),
        AttachMode::Native,
        "veth supports native XDP"
    );
    assert!(xdp_attached(&link.b, IF_B));
    let counters = || attachment.program().counters().expect("counters");
    assert_eq!(
        counters().total().packets,
        0,
        "no stray traffic before the test sends any"
    );

    // UDP: exactly one packet each, with exact bytes.
    let before = counters();
    let payload = 100;
    assert_eq!(
        net::udp_exchange(&link, 9000, 300, payload),
        300,
        "all datagrams arrive"
    );
    let after = counters();
    assert_eq!(passed(&after) - passed(&before), 300);
    assert_eq!(
        after.outcome(Outcome::Passed).bytes - before.outcome(Outcome::Passed).bytes,
        300 * (14 + 20 + 8 + payload as u64)
    );

    // ICMP echo: one request per ping crosses fg-b inbound.
    let before = counters();
    assert_eq!(net::ping(&link, 25), 25, "all echo replies come back");
    assert_eq!(passed(&counters()) - passed(&before), 25);

    // TCP: handshake, data and teardown all pass through the program.
    let before = counters();
    assert_eq!(net::tcp_exchange(&link, 9001, 10, b"hello fluxgate"), 10);
    let tcp = passed(&counters()) - passed(&before);
    assert!(
        tcp >= 10 * 4,
        "at least SYN, ACK, data, FIN per connection; saw {tcp}"
    );

    // Raw frames: one ARP (not IP) and one IPv4 header with IHL 4 (malformed, dropped).
    let before = counters();
    let mut bad = FrameSpec::new(
        net::ADDR_A.into(),
        net::ADDR_B.into(),
        L4::Udp {
            sport: 1,
            dport: 9002,
        },
    )
    .build();
    bad[14] = 0x44;
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0x77, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    net::send_raw(&link, vec![arp, bad]);
    assert!(
        net::eventually(Duration::from_secs(2), || {
            let c = counters();
            c.outcome(Outcome::NotIp).packets - before.outcome(Outcome::NotIp).packets == 1
                && c.malformed(Malformed::Ipv4Header).packets
                    - before.malformed(Malformed::Ipv4Header).packets
                    == 1
        }),
        "one not-IP and one malformed frame counted: {:?}",
        counters().report()
    );
    assert_eq!(counters().outcome(Outcome::Malformed).packets, 1);
    assert_eq!(counters().outcome(Outcome::Dropped).packets, 0);

    // Dropping the guard detaches the program.
    drop(attachment);
    assert!(
        !xdp_attached(&link.b, IF_B),
        "program detached when the guard is dropped"
    );
}

#[test]
fn auto_mode_falls_back_to_generic_where_native_is_unsupported() {
    net::require_root();
    let ns = Netns::new();
    // Loopback has no native XDP support in any kernel.
    let attachment = ns.run(|| {
        Program::load(&GatewayConfig::default())
            .expect("load")
            .attach("lo", AttachMode::Auto)
            .expect("attach")
    });
    assert_eq!(attachment.mode(), AttachMode::Generic);
    assert!(
        attachment
            .fallback_reason()
            .is_some_and(|r| r.contains("lo"))
    );
    assert!(xdp_attached(&ns, "lo"));

    let native = ns.run(|| {
        Program::load(&GatewayConfig::default())
            .expect("load")
            .attach("lo", AttachMode::Native)
    });
    assert!(
        native.is_err(),
        "native-only must fail where the driver lacks native XDP"
    );
}

#[test]
fn missing_interface_is_a_clear_error() {
    net::require_root();
    let ns = Netns::new();
    let err = ns.run(|| {
        Program::load(&GatewayConfig::default())
            .expect("load")
            .attach("nope0", AttachMode::Auto)
    });
    let err = err.expect_err("no such interface");
    assert!(
        matches!(err, fluxgate::dataplane::Error::NoSuchInterface(ref n) if n == "nope0"),
        "{err}"
    );
}

/// A pin directory others could write in (here the namespace's, chmod 0777)
/// is refused before anything is pinned: whoever writes there could swap a
/// pinned map for their own. The link is dropped unpinned, so nothing stays
/// attached. Directories fluxgate creates itself are 0700.
#[test]
fn a_world_writable_pin_directory_is_refused_and_nothing_stays_attached() {
    use std::os::unix::fs::PermissionsExt;
    net::require_root();
    let base = std::path::PathBuf::from(format!("/sys/fs/bpf/fgt-pindir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let root = base.join("init");
    std::fs::create_dir_all(&root).expect("scratch pin root");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let link = Link::new();
    let pins = root.clone();
    let err = link.b.run(move || {
        let attached = Program::load(&GatewayConfig::default())
            .expect("load")
            .attach(IF_B, AttachMode::Native)
            .expect("attach");
        attached.pin(&pins).map(|_| ())
    });
    let err = err.expect_err("a world-writable pin root is refused");
    assert!(
        matches!(
            err,
            fluxgate::dataplane::Error::UnsafePinDirectory { ref path, .. } if *path == root
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("refusing the pin directory") && text.contains("0777"),
        "{text}"
    );
    assert!(!xdp_attached(&link.b, IF_B), "nothing stays attached");
    assert!(!root.join(IF_B).exists(), "nothing was pinned");

    // Fresh directories are made 0700, whatever the umask.
    let fresh = base.join("fresh").join("init");
    let pins = fresh.clone();
    let pinned = link.b.run(move || {
        Program::load(&GatewayConfig::default())
            .expect("load")
            .attach(IF_B, AttachMode::Native)
            .expect("attach")
            .pin(&pins)
            .expect("pin under fresh directories")
    });
    for dir in [base.join("fresh"), fresh.clone(), fresh.join(IF_B)] {
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
    }
    link.b.run(move || pinned.detach()).expect("detach");
    let _ = std::fs::remove_dir_all(&base);
}

/// IPv6 neighbour discovery on a real link, for a tenant whose default is
/// drop and whose only rule passes UDP to one port: ND passes before tenant
/// dispatch (its own outcome counter), so `a` resolves `b` (a neighbour
/// solicitation to a multicast address no tenant owns, under a gateway
/// `default drop`), UDP to the allowed port gets through, and `b` resolves `a`
/// (the neighbour advertisement comes back to the tenant's own address).
/// Without the ND rule both resolutions fail and nothing arrives.
#[test]
fn ipv6_neighbour_discovery_passes_a_default_drop_tenant_on_a_real_link() {
    use fluxgate::dataplane::{StagedImage, Tables};
    use fluxgate::ruleset::{CompileOptions, Config, Ruleset, compile_with, validate};
    use std::net::{SocketAddrV6, UdpSocket};
    net::require_root();
    let link = Link::new();
    let (addr_a, addr_b) = ("2001:db8:77::1", "2001:db8:77::2");
    for (ns, ifname, addr) in [(&link.a, net::IF_A, addr_a), (&link.b, IF_B, addr_b)] {
        let conf = format!("/proc/sys/net/ipv6/conf/{ifname}");
        let neigh = format!("/proc/sys/net/ipv6/neigh/{ifname}");
        ns.run(move || {
            std::fs::write(format!("{conf}/disable_ipv6"), "0").expect("enable IPv6");
            std::fs::write(format!("{conf}/accept_dad"), "0").expect("no DAD");
            std::fs::write(format!("{neigh}/retrans_time_ms"), "200").expect("retrans");
        });
        // Link::new turns ARP off (static neighbours); ND needs it on.
        ns.ip(&["link", "set", ifname, "arp", "on"]);
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{addr}/64"),
            "dev",
            ifname,
            "nodad",
        ]);
        ns.ip(&["-6", "neigh", "flush", "dev", ifname]);
    }
    let mut attachment = attach_b(&link, AttachMode::Native);
    let rs = validate(
        Ruleset::parse_files(&[
            ("gateway.fg", "default drop\n"),
            (
                "acme.fg",
                "tenant acme\nprefix 2001:db8:77::/64\ndefault drop\nproto udp dport 7000 pass\n",
            ),
        ])
        .expect("parse"),
        &Config::default(),
    )
    .expect("valid");
    let image = compile_with(&rs, &CompileOptions::default()).expect("compile");
    let program = attachment.program_mut();
    let staged = StagedImage::new(program, &image).expect("stage");
    program.publish_image(&staged).expect("publish");
    let nd = |a: &Attachment| {
        a.program()
            .counters()
            .expect("counters")
            .outcome(Outcome::NeighborDiscovery)
            .packets
    };

    // a → b:7000 over IPv6: a must resolve b first.
    let name = link.b.name().to_owned();
    let receiver = std::thread::spawn(move || {
        fluxgate::dataplane::netns::enter(&name).expect("enter netns");
        let sock = UdpSocket::bind(SocketAddrV6::new(addr_b.parse().expect("addr"), 7000, 0, 0))
            .expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        sock.recv(&mut buf).is_ok()
    });
    std::thread::sleep(Duration::from_millis(200));
    link.a.run(move || {
        let sock = UdpSocket::bind("[2001:db8:77::1]:0").expect("bind");
        for _ in 0..20 {
            let _ = sock.send_to(
                b"hello",
                SocketAddrV6::new(addr_b.parse().expect("addr"), 7000, 0, 0),
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert!(
        receiver.join().expect("receiver"),
        "UDP over IPv6 to the allowed port arrives (a resolved b)"
    );
    let after_a = nd(&attachment);
    assert!(
        after_a > 0,
        "neighbour discovery counted on its own outcome"
    );

    // b → a: b resolves a; the advertisement comes to b's (the tenant's) address.
    link.b.ip(&["-6", "neigh", "flush", "dev", IF_B]);
    link.b.run(move || {
        let sock = UdpSocket::bind("[2001:db8:77::2]:0").expect("bind");
        let _ = sock.send_to(
            b"hi",
            SocketAddrV6::new(addr_a.parse().expect("addr"), 9, 0, 0),
        );
    });
    let reachable = net::eventually(Duration::from_secs(5), || {
        let out = std::process::Command::new("ip")
            .args([
                "-n",
                link.b.name(),
                "-6",
                "neigh",
                "show",
                addr_a,
                "dev",
                IF_B,
            ])
            .output()
            .expect("ip neigh");
        let text = String::from_utf8_lossy(&out.stdout);
        ["REACHABLE", "STALE", "DELAY"]
            .iter()
            .any(|s| text.contains(s))
    });
    assert!(reachable, "b's neighbour entry for a resolves (not FAILED)");
    assert!(
        nd(&attachment) > after_a,
        "the advertisement to b passed as ND"
    );
    drop(staged);
}
