//! `DropReader::wait` on the real program: it sleeps while nothing is dropped
//! and wakes as soon as the kernel captures a drop (root needed: it loads the
//! program, attaches it in a namespace of its own and pins it in bpffs).

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use aya::programs::{Xdp, links::FdLink, links::PinnedLink, loaded_programs};
use aya_obj::programs::XdpAttachType;
use fluxgate_common::{CaptureConfig, GatewayConfig, Trace, xdp};
use fluxgate_dataplane::{
    AttachMode, PinnedAttachment, Program, StagedImage, Tables,
    frame::{FrameSpec, L4},
    netns, test_run_xdp,
};
use fluxgate_ruleset::{Config, Ruleset, compile::compile, validate};

/// A namespace made with `ip netns add`, holding a veth pair `iface` /
/// `<iface>p`, both left down so that no traffic (IPv6 neighbour discovery
/// of a link coming up) reaches the program but the test's; deleted (with
/// the pair) on drop.
struct Namespace(String);

impl Namespace {
    fn with_veth(iface: &str) -> Namespace {
        let ns = Namespace(format!("fgdp-drops-{}", std::process::id()));
        let peer = format!("{iface}p");
        ip(&["netns", "add", &ns.0]);
        ip(&[
            "-n", &ns.0, "link", "add", iface, "type", "veth", "peer", "name", &peer,
        ]);
        ns
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _best_effort = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("run ip (iproute2)");
    assert!(status.success(), "ip {args:?} (needs root)");
}

/// A pin root of this test's own in bpffs, removed (detaching) on drop.
struct PinRoot(PathBuf);

impl Drop for PinRoot {
    fn drop(&mut self) {
        for iface in PinnedAttachment::list(&self.0).unwrap_or_default() {
            if let Ok(pinned) = PinnedAttachment::open(&self.0, &iface) {
                let _best_effort = pinned.detach();
            }
        }
        let _best_effort = std::fs::remove_dir_all(&self.0);
    }
}

/// The dispatcher behind the pinned link of `pinned`, to test-run frames
/// through the attached program itself.
fn dispatcher(pinned: &PinnedAttachment) -> Xdp {
    let link = PinnedLink::from_pin(pinned.dir().join("link")).expect("open the pinned link");
    let id = FdLink::from(link).info().expect("link info").program_id();
    let info = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .expect("the attached program is loaded");
    Xdp::from_program_info(info, "fluxgate".into(), XdpAttachType::Interface)
        .expect("the dispatcher as XDP")
}

#[test]
fn wait_sleeps_until_a_drop_is_captured() {
    const IFACE: &str = "fgdrop0";
    let ns = Namespace::with_veth(IFACE);
    let root = PinRoot(PathBuf::from(format!(
        "/sys/fs/bpf/fgdp-drops-{}",
        std::process::id()
    )));
    // Attached from a thread inside the namespace; this thread stays outside.
    let mut pinned = netns::run_in(&ns.0, || {
        Program::load(&GatewayConfig::default())?
            .attach(IFACE, AttachMode::Generic)?
            .pin(&root.0)
    })
    .expect("start a thread in the namespace")
    .expect("load, attach and pin");

    // Everything is dropped: one gateway default.
    let rules = validate(
        Ruleset::parse_files(&[("gateway.fg", "default drop\n")]).expect("parse"),
        &Config::default(),
    )
    .expect("validate");
    let image = compile(&rules, &Config::default()).expect("compile");
    let staged = StagedImage::new(&mut pinned, &image).expect("stage");
    pinned.publish_image(&staged).expect("publish");

    let mut reader = pinned
        .capture(&CaptureConfig {
            enabled: 1,
            tenant: Trace::NONE,
            slot: Trace::NONE,
            sample: 1,
            rate: 0,
            snaplen: 64,
        })
        .expect("start capturing");

    // Nothing dropped yet: the whole timeout passes, and nothing is there.
    let started = Instant::now();
    assert!(!reader.wait(Duration::from_millis(200)).expect("wait"));
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "waited the timeout"
    );
    assert!(reader.try_next().is_none());

    let mut spec = FrameSpec::new(
        Ipv4Addr::new(198, 51, 100, 7).into(),
        Ipv4Addr::new(203, 0, 113, 10).into(),
        L4::Tcp {
            sport: 40000,
            dport: 443,
            flags: 0x02,
        },
    );
    spec.payload = vec![0; 10];
    let frame = spec.build();
    let program = dispatcher(&pinned);

    // A drop 300 ms from now wakes a 30 s wait as soon as it is captured.
    let (woke, waited) = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            let out = test_run_xdp(&program, &frame, 1).expect("BPF_PROG_TEST_RUN");
            assert_eq!(out.verdict, xdp::DROP, "the gateway default drops it");
        });
        let started = Instant::now();
        let woke = reader.wait(Duration::from_secs(30)).expect("wait");
        (woke, started.elapsed())
    });
    assert!(woke, "a record is ready");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(10),
        "woke when the drop came, after {waited:?}"
    );
    let record = reader.try_next().expect("the captured drop");
    assert_eq!(record.len as usize, frame.len());
    assert!(reader.try_next().is_none(), "one drop, one record");

    drop(reader);
    drop(pinned);
}
