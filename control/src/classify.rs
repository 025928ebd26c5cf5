//! Classifying packet traces with any engine — the reference, the compiled
//! tables in userspace, or the kernel — on a ruleset or a ClassBench filter
//! set, so any engine can be checked against any other on standard data.

use std::{collections::BTreeMap, path::Path};

use fluxgate_common::{GatewayConfig, Trace, xdp};
use fluxgate_dataplane::{Program, StagedImage, Tables, frame::FrameSpec};
use fluxgate_ruleset::{
    Classifier, CompileOptions, Config, PacketHeader, Ruleset, Scope, Verdict, classbench,
    compile_with, reference, validate,
};
use serde::Serialize;

use crate::{ControlError, host};

/// Which classifier `classify` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The linear reference (definition of semantics).
    Reference,
    /// The compiled tables walked in userspace.
    Userspace,
    /// The compiled tables in the XDP program (BPF_PROG_TEST_RUN; needs root).
    Kernel,
}

/// Where `classify` takes its rules from.
pub enum RuleSource<'a> {
    /// A fluxgate ruleset directory.
    Dir(&'a Path),
    /// A ClassBench filter file (rule *i* = gateway rule *i*, pass; default drop).
    ClassBench(&'a Path),
}

/// One packet of a trace as an engine classified it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceDecision {
    /// 1-based position in the trace.
    pub packet: usize,
    /// The deciding rule: the 1-based ClassBench filter number (`0`: none)
    /// for ClassBench filters, `scope#N` or `scope default` for a ruleset.
    pub decided_by: String,
    /// `pass` or `drop`.
    pub verdict: String,
}

/// The verdict of an XDP action.
fn verdict_of(action: u32) -> Verdict {
    if action == xdp::DROP {
        Verdict::Drop
    } else {
        Verdict::Pass
    }
}

/// What [`classify`] found: the engine and every packet's decision.
#[derive(Clone, Debug, Serialize)]
pub struct Classified {
    /// The engine that ran.
    pub engine: Engine,
    /// One decision per trace packet, in order.
    pub packets: Vec<TraceDecision>,
}

/// For each packet of a ClassBench trace file, the deciding rule (its 1-based
/// position for ClassBench filters, 0: none matched; `scope#N` or
/// `scope default` for a ruleset) and the verdict.
pub fn classify(
    source: RuleSource<'_>,
    trace: &Path,
    engine: Engine,
) -> Result<Classified, ControlError> {
    Ok(Classified {
        engine,
        packets: decisions(source, trace, engine)?,
    })
}

fn decisions(
    source: RuleSource<'_>,
    trace: &Path,
    engine: Engine,
) -> Result<Vec<TraceDecision>, ControlError> {
    // An unreadable input file is refused like one that does not parse
    // (exit 7), naming the file, as an unreadable ruleset directory is.
    // Bounded (a filter or trace line is < 80 bytes: 16 × 16 MiB holds
    // millions), and text that is not UTF-8 is refused at its first bad byte.
    let read =
        |p: &Path| fluxgate_ruleset::read_text_file(p, 16 * fluxgate_ruleset::MAX_FILE_BYTES);
    let (rs, classbench_mode) = match source {
        RuleSource::Dir(dir) => (
            validate(Ruleset::load_dir(dir)?, &Config::default())?,
            false,
        ),
        RuleSource::ClassBench(file) => {
            // Every error, to the last validation limit, at file:line:col.
            let rs = classbench::parse_ruleset(&file.display().to_string(), &read(file)?)?;
            (validate(rs, &Config::classbench())?, true)
        }
    };
    // Trace packets as the wire carries them (ports only on TCP and UDP),
    // for every engine: ClassBench writes ports for every protocol, and the
    // kernel, which sees frames, could never match a GRE packet's "ports".
    let entries = read(trace)
        .and_then(|text| classbench::parse_trace(&trace.display().to_string(), &text))
        .map_err(ControlError::Trace)?;
    let packets: Vec<PacketHeader> = entries
        .into_iter()
        .map(|e| e.header.on_the_wire())
        .collect();
    let name = |scope: &Scope, position: Option<u32>| -> String {
        match (classbench_mode, position) {
            (true, Some(p)) => p.to_string(),
            (true, None) => "0".into(),
            (false, Some(p)) => format!("{scope}#{p}"),
            (false, None) => format!("{scope} default"),
        }
    };
    let decided = |i: usize, d: &fluxgate_ruleset::Decision| TraceDecision {
        packet: i + 1,
        decided_by: match &d.rule {
            Some(r) => name(&r.scope, Some(r.position)),
            None => name(
                &d.tenant_name.clone().map_or(Scope::Gateway, Scope::Tenant),
                None,
            ),
        },
        verdict: d.verdict.to_string(),
    };
    // Trace packets come from no interface: every `iif` name gets a stand-in
    // no packet matches, as in the reference (not even a host's `lo`, which
    // is where the kernel's test runs say packets arrive).
    let options = CompileOptions {
        interfaces: host::with_stand_ins(&rs, BTreeMap::new()).0,
        ..CompileOptions::default()
    };
    match engine {
        Engine::Reference => Ok(packets
            .iter()
            .enumerate()
            .map(|(i, p)| decided(i, &reference::classify(&rs, p)))
            .collect()),
        Engine::Userspace => {
            let image = compile_with(&rs, &options)?;
            let c = Classifier::new(image, []);
            Ok(packets
                .iter()
                .enumerate()
                .map(|(i, p)| decided(i, &c.decide(p)))
                .collect())
        }
        Engine::Kernel => {
            let image = compile_with(&rs, &options)?;
            let config = GatewayConfig {
                trace: 1,
                ..GatewayConfig::default()
            };
            // A one-shot program: its pool holds this image, however large.
            let cells = u32::try_from(image.cells() + 2).unwrap_or(u32::MAX);
            let mut program =
                Program::load_sized(&config, cells.max(fluxgate_common::DEFAULT_POOL_CELLS))?;
            let staged = StagedImage::new(&mut program, &image)?;
            program.publish_image(&staged)?;
            packets
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let spec = FrameSpec::from_header(p).ok_or_else(|| {
                        ControlError::Refused(format!("packet `{p}` cannot be built as a frame"))
                    })?;
                    program.test_run(&spec.build(), 1)?;
                    let trace: Trace = program.last_trace()?;
                    let slot = image.counter(trace.decided);
                    Ok(TraceDecision {
                        packet: i + 1,
                        decided_by: match slot {
                            Some(s) => name(&s.scope, s.rule.map(|_| s.position)),
                            None => name(&Scope::Gateway, None),
                        },
                        verdict: verdict_of(trace.verdict).to_string(),
                    })
                })
                .collect()
        }
    }
}
