//! Reference vs userspace classifier vs the kernel program (BPF_PROG_TEST_RUN on
//! crafted frames): verdicts and per-rule counters must agree on the shared case
//! table and on generated rulesets and packets (proptest shrinks a failure to a
//! minimal ruleset), on truncated and overwritten frames (the kernel must read
//! each as the host build of its parser does), and verdicts and deciding rules on synthetic
//! ClassBench-like rulesets of 1k and 10k rules with 100k trace packets each
//! (a disagreement is shrunk by delta debugging to the fewest filters that
//! still disagree, printed as a filter file with the packet).

use fluxgate::{
    common::{GatewayConfig, Malformed, Trace, table::KEY_WORDS, xdp},
    dataplane::{Program, StagedImage, Tables, frame::FrameSpec},
    ruleset::{
        Classified, Classifier, CompileOptions, Config, Decision, PacketHeader, Ruleset,
        ValidRuleset, Verdict, classbench, classifier, compile_with, reference, validate,
    },
};
use fluxgate_testkit::{
    cases, net,
    synth::{self, Family, strategy},
};
use proptest::prelude::*;

/// The kernel engine: a loaded program with an image published.
struct Kernel {
    program: Program,
    _staged: StagedImage,
    classifier: Classifier,
}

impl Kernel {
    fn new(rs: &ValidRuleset) -> Kernel {
        let mut program = Program::load(&GatewayConfig::default()).expect("load program");
        let (classifier, staged) = publish(&mut program, rs);
        Kernel {
            program,
            _staged: staged,
            classifier,
        }
    }

    /// Runs `p` in the kernel; checks the verdict and that exactly the rule
    /// counters the userspace classifier names moved. Returns the userspace decision.
    fn check(&mut self, p: &PacketHeader) -> Result<Decision, String> {
        let frame = FrameSpec::from_header(p)
            .ok_or("no frame for this header")?
            .build();
        let c = self.classifier.classify(p);
        self.check_frame(&frame, c.verdict, Some(&c))
            .map_err(|e| format!("{p}: {e}"))?;
        Ok(self.classifier.to_decision(&c))
    }

    /// Runs `frame` in the kernel; checks its verdict is `verdict` and that
    /// exactly the rule counters `classified` names moved (none for `None`:
    /// a frame that never reaches the classifier).
    fn check_frame(
        &mut self,
        frame: &[u8],
        verdict: Verdict,
        classified: Option<&Classified>,
    ) -> Result<(), String> {
        let slots = self.classifier.image().counters.len() as u32;
        let before = self
            .program
            .rule_counters(0, slots)
            .map_err(|e| e.to_string())?;
        let out = self.program.test_run(frame, 1).map_err(|e| e.to_string())?;
        let after = self
            .program
            .rule_counters(0, slots)
            .map_err(|e| e.to_string())?;
        let want = if verdict == Verdict::Drop {
            xdp::DROP
        } else {
            xdp::PASS
        };
        if out.verdict != want {
            return Err(format!(
                "kernel verdict {} but expected {verdict:?}",
                out.verdict
            ));
        }
        let mut expected = vec![0u64; slots as usize];
        if let Some(c) = classified {
            for s in c.decided_by.iter().chain(&c.counted) {
                expected[*s as usize] += 1;
            }
        }
        for (slot, want) in expected.iter().enumerate() {
            let got = after[slot].packets - before[slot].packets;
            if got != *want {
                return Err(format!(
                    "counter slot {slot} ({:?}) moved by {got}, expected {want}",
                    self.classifier.slot(slot as u32)
                ));
            }
        }
        Ok(())
    }
}

/// Damage to a well-formed frame: cut to a length (a fraction of it, at
/// least an Ethernet header) and up to three bytes overwritten.
fn damage() -> impl Strategy<Value = (Option<u16>, Vec<(u16, u8)>)> {
    (
        prop::option::of(any::<u16>()),
        prop::collection::vec((any::<u16>(), any::<u8>()), 0..=3),
    )
}

fn damaged(mut frame: Vec<u8>, (cut, writes): &(Option<u16>, Vec<(u16, u8)>)) -> Vec<u8> {
    if let Some(cut) = cut {
        let len = 14 + usize::from(*cut) * (frame.len() - 14) / usize::from(u16::MAX);
        frame.truncate(len);
    }
    let len = frame.len();
    for &(at, byte) in writes {
        frame[usize::from(at) % len] = byte;
    }
    frame
}

/// Compiles `rs`, makes it `program`'s live image, and returns the userspace
/// classifier over the same image with the staged tables (keep them alive).
fn publish(program: &mut Program, rs: &ValidRuleset) -> (Classifier, StagedImage) {
    let image = compile_with(rs, &CompileOptions::default()).expect("compile");
    let staged = StagedImage::new(program, &image).expect("stage image");
    program.publish_image(&staged).expect("publish image");
    (Classifier::new(image, []), staged)
}

#[test]
fn case_table_agrees_in_kernel_userspace_and_reference() {
    net::require_root();
    let cases = cases::load(include_str!("../ruleset/tests/cases.txt")).expect("case table");
    let mut checked = 0;
    let mut failures = Vec::new();
    for (case, rs) in cases::valid(&cases) {
        if compile_with(&rs, &CompileOptions::default()).is_err() {
            continue; // names interfaces: covered by the userspace test
        }
        let mut kernel = Kernel::new(&rs);
        for p in case.packets.iter().filter(|p| p.packet.iif.is_none()) {
            match kernel.check(&p.packet) {
                Ok(d) => {
                    if let Err(e) = cases::check_engine(&rs, p, &d) {
                        failures.push(format!("{} line {}: {e}", case.name, p.line));
                    }
                    checked += 1;
                }
                Err(e) => failures.push(format!("{} line {}: {e}", case.name, p.line)),
            }
        }
    }
    cases::assert_agreed(checked, 60, &failures);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn generated_rulesets_agree_in_kernel_userspace_and_reference(
        files in strategy::ruleset(),
        packets in prop::collection::vec(strategy::packet(), 64),
    ) {
        net::require_root();
        let Ok(rs) = Ruleset::parse_files(&files).and_then(|rs| validate(rs, &Config::default())) else {
            return Ok(());
        };
        let mut kernel = Kernel::new(&rs);
        for p in &packets {
            let d = kernel.check(p).map_err(TestCaseError::fail)?;
            let r = reference::classify(&rs, p);
            prop_assert!(d.same_outcome(&r), "packet {p}\nkernel/userspace {d:?}\nreference {r:?}\nfiles {files:#?}");
        }
    }

    /// Truncated and overwritten frames: the kernel must treat each exactly
    /// as the host build of its parser reads it — not IP: pass; malformed:
    /// drop (the default); otherwise the verdict and rule counters of the
    /// userspace classifier on the key the parser made.
    #[test]
    fn damaged_frames_agree_in_kernel_and_host_parser(
        files in strategy::ruleset(),
        packets in prop::collection::vec((strategy::packet(), damage()), 64),
    ) {
        net::require_root();
        let Ok(rs) = Ruleset::parse_files(&files).and_then(|rs| validate(rs, &Config::default())) else {
            return Ok(());
        };
        let mut kernel = Kernel::new(&rs);
        for (p, d) in &packets {
            let Some(spec) = FrameSpec::from_header(p) else { continue };
            let frame = damaged(spec.build(), d);
            let (parsed, key) = host_parse(&frame);
            let (verdict, classified) = match parsed {
                Ok(true) => {
                    let c = kernel.classifier.classify_key(&key);
                    (c.verdict, Some(c))
                }
                Ok(false) => (Verdict::Pass, None),
                Err(_) => (Verdict::Drop, None),
            };
            let checked = kernel.check_frame(&frame, verdict, classified.as_ref());
            prop_assert!(
                checked.is_ok(),
                "{}\npacket {p}, damage {d:?}, frame {frame:02x?}\nhost parser: {parsed:?}, key {key:?}\nfiles {files:#?}",
                checked.unwrap_err()
            );
        }
    }
}

/// Ingress interface index of a BPF_PROG_TEST_RUN packet (`lo`).
const LOOPBACK: u32 = 1;

/// What the host build of the kernel's parser (`fluxgate_parse`) makes of
/// `frame`, arriving as BPF_PROG_TEST_RUN packets do (on `lo`): its result
/// and the key.
fn host_parse(frame: &[u8]) -> (Result<bool, Malformed>, [u32; KEY_WORDS]) {
    let mut key = [0; KEY_WORDS];
    let parsed = fluxgate_parse::parse_frame(frame, LOOPBACK, &mut key);
    (parsed, key)
}

/// The key the host build of the kernel's parser makes of `p`'s frame.
fn parsed_key(p: &PacketHeader) -> Option<[u32; KEY_WORDS]> {
    let (parsed, key) = host_parse(&FrameSpec::from_header(p)?.build());
    assert_eq!(parsed, Ok(true), "{p}: its frame must parse");
    Some(key)
}

/// The userspace classifier's key of a header is the key the kernel's parser
/// makes of that header's frame, also for ClassBench headers, which carry
/// ports whatever their protocol (the frame of a GRE packet has none).
#[test]
fn userspace_keys_are_the_keys_the_parser_makes() {
    let filters = synth::classbench_like(Family::Fw, 500, 5);
    let mut checked = 0;
    for p in synth::packets(&filters, 5_000, 6) {
        if let Some(key) = parsed_key(&p) {
            assert_eq!(classifier::key_of(&p, LOOPBACK), key, "{p}");
            checked += 1;
        }
    }
    assert!(checked > 4_000, "{checked} headers had a frame");
}

proptest! {
    #[test]
    fn generated_packets_have_the_parsers_keys(p in strategy::packet()) {
        if let Some(key) = parsed_key(&p) {
            prop_assert_eq!(classifier::key_of(&p, LOOPBACK), key, "{}", p);
        }
    }
}

/// The three engines on one ClassBench ruleset. The kernel program records
/// every decision ([`GatewayConfig::trace`]), so the kernel's deciding rule
/// is compared, not only its verdict: every ClassBench filter passes, so a
/// kernel that picked the wrong matching filter would still pass the packet.
struct Engines {
    rs: ValidRuleset,
    userspace: Classifier,
    program: Program,
    _staged: StagedImage,
}

impl Engines {
    fn new(filters: &[classbench::Filter]) -> Engines {
        let config = GatewayConfig {
            trace: 1,
            ..GatewayConfig::default()
        };
        let mut program = Program::load(&config).expect("load");
        let (rs, userspace, staged) = Engines::publish(&mut program, filters);
        Engines {
            rs,
            userspace,
            program,
            _staged: staged,
        }
    }

    /// Compiles `filters` and publishes them in place of the previous ruleset
    /// (whose cells go back to the pool once nothing points at them).
    fn load(&mut self, filters: &[classbench::Filter]) {
        let (rs, userspace, staged) = Engines::publish(&mut self.program, filters);
        (self.rs, self.userspace, self._staged) = (rs, userspace, staged);
    }

    fn publish(
        program: &mut Program,
        filters: &[classbench::Filter],
    ) -> (ValidRuleset, Classifier, StagedImage) {
        let rs = validate(classbench::to_ruleset(filters), &Config::classbench()).expect("valid");
        let (classifier, staged) = publish(program, &rs);
        (rs, classifier, staged)
    }

    /// How the engines disagree on `p`, if they do. The kernel is compared
    /// with the userspace classifier (verdict and deciding counter slot), the
    /// userspace classifier with the linear reference when `reference`.
    fn disagreement(&self, p: &PacketHeader, reference: bool) -> Option<String> {
        let u = self.userspace.classify(p);
        let frame = FrameSpec::from_header(p).expect("frame").build();
        let before = self.program.last_trace().expect("trace").seq;
        let verdict = self.program.test_run(&frame, 1).expect("test run").verdict;
        let trace = self.program.last_trace().expect("trace");
        let kernel_rule =
            (trace.seq != before && trace.decided != Trace::NONE).then_some(trace.decided);
        let kernel_verdict = if verdict == xdp::DROP {
            Verdict::Drop
        } else {
            Verdict::Pass
        };
        let r = reference.then(|| reference::classify(&self.rs, p));
        let u_decision = self.userspace.to_decision(&u);
        let agree = kernel_verdict == u.verdict
            && kernel_rule == u.decided_by
            && r.as_ref().is_none_or(|r| u_decision.same_outcome(r));
        (!agree).then(|| {
            format!(
                "{p}: kernel {kernel_verdict:?} by slot {kernel_rule:?}, userspace {u_decision:?} (slot {:?}), reference {r:?}",
                u.decided_by
            )
        })
    }
}

/// The smallest part of `items` (order kept) for which `fails` still holds,
/// by delta debugging (Zeller's ddmin): removing any single item of the
/// result makes `fails` false. `fails(items)` must hold.
fn ddmin<T: Clone>(mut items: Vec<T>, mut fails: impl FnMut(&[T]) -> bool) -> Vec<T> {
    let mut n = 2;
    while items.len() >= 2 {
        let parts: Vec<Vec<T>> = items
            .chunks(items.len().div_ceil(n))
            .map(<[T]>::to_vec)
            .collect();
        let mut reduced = false;
        for (i, part) in parts.iter().enumerate() {
            if fails(part) {
                (items, n, reduced) = (part.clone(), 2, true);
                break;
            }
            let rest: Vec<T> = parts
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .flat_map(|(_, p)| p.iter().cloned())
                .collect();
            if parts.len() > 2 && fails(&rest) {
                (items, n, reduced) = (rest, (n - 1).max(2), true);
                break;
            }
        }
        if !reduced {
            if n >= items.len() {
                break;
            }
            n = (2 * n).min(items.len());
        }
    }
    items
}

/// The failure message for a disagreement on `p`: the fewest filters (in
/// their order) on which the engines still disagree, as a ClassBench filter
/// file, and how they disagree there.
fn minimal_case(engines: &mut Engines, filters: &[classbench::Filter], p: &PacketHeader) -> String {
    let minimal = ddmin(filters.to_vec(), |sub| {
        engines.load(sub);
        engines.disagreement(p, true).is_some()
    });
    engines.load(&minimal);
    let why = engines.disagreement(p, true).unwrap_or_default();
    let file: String = minimal.iter().map(|f| format!("{f}\n")).collect();
    format!(
        "minimal case ({} of {} filters):\n{file}packet {p}\n{why}",
        minimal.len(),
        filters.len()
    )
}

fn classbench_agrees(family: Family, rules: usize, packets: usize, seed: u64) {
    net::require_root();
    let filters = synth::classbench_like(family, rules, seed);
    let mut engines = Engines::new(&filters);
    let trace = synth::trace(&filters, packets, seed ^ 0x5eed);
    let mut disagreements = Vec::new();
    for (i, entry) in trace.into_iter().enumerate() {
        let p = entry.header.on_the_wire();
        // The reference is linear; check every packet on 1k rules, every 10th on 10k.
        if let Some(d) = engines.disagreement(&p, rules <= 1000 || i % 10 == 0) {
            disagreements.push((p, d));
            if disagreements.len() > 5 {
                break;
            }
        }
    }
    if let Some((first, _)) = disagreements.first() {
        let listed: Vec<&str> = disagreements.iter().map(|(_, d)| d.as_str()).collect();
        let minimal = minimal_case(&mut engines, &filters, first);
        panic!("{}\n\n{minimal}", listed.join("\n"));
    }
}

#[test]
fn ddmin_keeps_exactly_the_items_a_failure_needs() {
    let items: Vec<u32> = (0..100).collect();
    let mut calls = 0;
    let min = ddmin(items, |s| {
        calls += 1;
        s.contains(&17) && s.contains(&3) && s.contains(&90)
    });
    assert_eq!(min, [3, 17, 90]);
    assert!(calls < 200, "{calls} calls");
    // One item that fails alone, and a failure no removal keeps.
    assert_eq!(ddmin((0..7).collect(), |s| s.contains(&6)), [6]);
    assert_eq!(ddmin(vec![1, 2], |s| s.len() == 2), [1, 2]);
}

#[test]
fn classbench_acl_1k_rules_100k_packets() {
    classbench_agrees(Family::Acl, 1_000, 100_000, 1);
}

#[test]
fn classbench_fw_1k_rules_100k_packets() {
    classbench_agrees(Family::Fw, 1_000, 100_000, 2);
}

#[test]
fn classbench_ipc_10k_rules_100k_packets() {
    classbench_agrees(Family::Ipc, 10_000, 100_000, 3);
}

#[test]
fn classbench_acl_10k_rules_100k_packets() {
    classbench_agrees(Family::Acl, 10_000, 100_000, 4);
}
