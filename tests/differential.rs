//! Reference vs userspace classifier vs the kernel program (BPF_PROG_TEST_RUN on
//! crafted frames): verdicts and per-rule counters must agree on the shared case
//! table, on generated rulesets and packets, and on synthetic ClassBench-like
//! rulesets of 1k and 10k rules with 100k trace packets each.

mod support;

#[path = "../ruleset/tests/support/gen.rs"]
mod generator;

use fluxgate::{
    common::{GatewayConfig, xdp},
    dataplane::{Program, StagedImage, Tables, frame::FrameSpec},
    ruleset::{
        Classifier, CompileOptions, Config, Decision, PacketHeader, Ruleset, ValidRuleset, Verdict,
        cases, classbench, compile_with, reference,
        synth::{self, Family},
        validate,
    },
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
        let image = compile_with(rs, &CompileOptions::default()).expect("compile");
        let mut program = Program::load(&GatewayConfig::default()).expect("load program");
        let staged = StagedImage::new(&mut program, &image).expect("stage image");
        program.publish_image(&staged).expect("publish image");
        Kernel {
            program,
            _staged: staged,
            classifier: Classifier::new(image, []),
        }
    }

    /// Runs `p` in the kernel; checks the verdict and that exactly the rule
    /// counters the userspace classifier names moved. Returns the userspace decision.
    fn check(&mut self, p: &PacketHeader) -> Result<Decision, String> {
        let frame = FrameSpec::from_header(p)
            .ok_or("no frame for this header")?
            .build();
        let c = self.classifier.classify(p);
        let slots = self.classifier.image().counters.len() as u32;
        let before = self
            .program
            .rule_counters(0, slots)
            .map_err(|e| e.to_string())?;
        let out = self
            .program
            .test_run(&frame, 1)
            .map_err(|e| e.to_string())?;
        let after = self
            .program
            .rule_counters(0, slots)
            .map_err(|e| e.to_string())?;
        let want = if c.verdict == Verdict::Drop {
            xdp::DROP
        } else {
            xdp::PASS
        };
        if out.verdict != want {
            return Err(format!(
                "{p}: kernel verdict {} but userspace {:?}",
                out.verdict, c.verdict
            ));
        }
        let mut expected = vec![0u64; slots as usize];
        for s in c.decided_by.iter().chain(&c.counted) {
            expected[*s as usize] += 1;
        }
        for (slot, want) in expected.iter().enumerate() {
            let got = after[slot].packets - before[slot].packets;
            if got != *want {
                return Err(format!(
                    "{p}: counter slot {slot} ({:?}) moved by {got}, expected {want}",
                    self.classifier.slot(slot as u32)
                ));
            }
        }
        Ok(self.classifier.to_decision(&c))
    }
}

#[test]
fn case_table_agrees_in_kernel_userspace_and_reference() {
    support::require_root();
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
        files in generator::ruleset(),
        packets in prop::collection::vec(generator::packet(), 64),
    ) {
        support::require_root();
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
}

/// ClassBench packets as the wire carries them: ports only for TCP and UDP.
fn realizable(mut p: PacketHeader) -> PacketHeader {
    if p.proto != 6 && p.proto != 17 {
        p.sport = None;
        p.dport = None;
        p.tcp_flags = None;
    }
    p
}

fn classbench_agrees(family: Family, rules: usize, packets: usize, seed: u64) {
    support::require_root();
    let filters = synth::classbench_like(family, rules, seed);
    let rs = validate(classbench::to_ruleset(&filters), &Config::classbench()).expect("valid");
    let image = compile_with(&rs, &CompileOptions::default()).expect("compile");
    let userspace = Classifier::new(image.clone(), []);
    let mut program = Program::load(&GatewayConfig::default()).expect("load");
    let staged = StagedImage::new(&mut program, &image).expect("stage");
    program.publish_image(&staged).expect("publish");
    let trace = synth::trace(&filters, packets, seed ^ 0x5eed);
    let mut disagreements = Vec::new();
    for (i, entry) in trace.into_iter().enumerate() {
        let p = realizable(entry.header);
        let u = userspace.decide(&p);
        let frame = FrameSpec::from_header(&p).expect("frame").build();
        let k = program.test_run(&frame, 1).expect("test run").verdict;
        let k = if k == xdp::DROP {
            Verdict::Drop
        } else {
            Verdict::Pass
        };
        // The reference is linear; check every packet on 1k rules, every 10th on 10k.
        let r = (rules <= 1000 || i % 10 == 0).then(|| reference::classify(&rs, &p));
        if k != u.verdict || r.as_ref().is_some_and(|r| !u.same_outcome(r)) {
            disagreements.push(format!(
                "{p}: kernel {k:?}, userspace {u:?}, reference {r:?}"
            ));
            if disagreements.len() > 5 {
                break;
            }
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
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
