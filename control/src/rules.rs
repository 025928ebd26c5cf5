//! Loading a ruleset onto an attached interface, per-rule statistics, and
//! classifying traces with any engine.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use fluxgate_common::{GatewayConfig, Trace, xdp};
use fluxgate_dataplane::{Program, StagedImage, Tables, frame::FrameSpec};
use fluxgate_ruleset::{
    Classifier, CompileOptions, Config, PacketHeader, Ruleset, Scope, ValidRuleset, Verdict,
    classbench, compile_with, reference, validate,
};
use serde::Serialize;

use crate::{ControlError, PinLocation, generations::Gateway};

/// Where fluxgate keeps state files: `<dir>/<netns|init>/<iface>/` (see
/// [`crate::store`]).
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// State for network namespace `netns` under `dir`.
    pub fn new(dir: &Path, netns: Option<&str>) -> StateDir {
        StateDir {
            root: dir.join(netns.unwrap_or("init")),
        }
    }

    /// `<dir>/<netns|init>`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Forgets everything recorded about `iface` (after a detach).
    pub fn remove(&self, iface: &str) {
        crate::store::Store::new(&self.root, iface).remove();
    }
}

/// Interface name → index in the current network namespace (for `iif` rules).
pub fn host_interfaces() -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*p).if_name)
                .to_string_lossy()
                .into_owned();
            out.insert(name, (*p).if_index);
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// `known` interfaces plus a stand-in index for each interface a rule of `rs`
/// names that `known` lacks (those names are returned too), for compiling
/// away from the gateway. Stand-ins come from the top of the index space,
/// far above any real ifindex, so no packet's interface ever matches one.
pub fn with_stand_ins(
    rs: &ValidRuleset,
    mut known: BTreeMap<String, u32>,
) -> (BTreeMap<String, u32>, Vec<String>) {
    let mut absent: Vec<String> = Vec::new();
    let rules = rs
        .gateway()
        .rules
        .iter()
        .chain(rs.tenants().iter().flat_map(|t| &t.rules));
    for name in rules.filter_map(|r| r.matches.iif.as_ref()) {
        if !known.contains_key(name) && !absent.contains(name) {
            absent.push(name.clone());
        }
    }
    for (name, index) in absent.iter().zip((0..=u32::MAX).rev()) {
        known.insert(name.clone(), index);
    }
    (known, absent)
}

/// Hits of one rule or default.
#[derive(Clone, Debug, Serialize)]
pub struct RuleHits {
    /// `gateway` or tenant.
    pub scope: String,
    /// 1-based position, 0 for the default action.
    pub position: u32,
    /// Rule id (hex) for rules.
    pub rule: Option<String>,
    /// The rule text.
    pub text: String,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// Per-tenant totals and per-rule hits of a loaded interface.
#[derive(Clone, Debug, Serialize)]
pub struct TenantStats {
    /// Tenant name, or `gateway` for packets of no tenant.
    pub tenant: String,
    /// Packets passed.
    pub passed: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// Bytes passed.
    pub passed_bytes: u64,
    /// Bytes dropped.
    pub dropped_bytes: u64,
    /// Rules of this scope (and its default), in order.
    pub rules: Vec<RuleHits>,
}

/// Per-tenant and per-rule counters of `iface` (only `tenant` when given).
pub fn rule_stats(
    loc: &PinLocation,
    state: &StateDir,
    iface: &str,
    tenant: Option<&str>,
) -> Result<Vec<TenantStats>, ControlError> {
    let mut gw = Gateway::open_read(loc, state.root(), iface)?;
    let live = gw.state().live.clone();
    if live.global.is_none() {
        return Ok(Vec::new());
    }
    if let Some(t) = tenant
        && t != "gateway"
        && !live.tenants.contains_key(t)
    {
        return Err(ControlError::Usage(format!(
            "no tenant named {t:?} is loaded on {iface}"
        )));
    }
    let slots = gw.live_counters()?;
    let scopes = std::iter::once(("gateway".to_owned(), None)).chain(
        live.tenants
            .iter()
            .map(|(name, t)| (name.clone(), Some(t.slot))),
    );
    let mut out = Vec::new();
    for (name, index) in scopes {
        if tenant.is_some_and(|t| t != name) {
            continue;
        }
        let pinned = gw.pinned_mut();
        let (passed, dropped) = pinned.tenant_counters(index)?;
        let mut rules = Vec::new();
        for s in slots.iter().filter(|s| s.scope == name) {
            let c = pinned.rule_counters(s.slot, 1)?[0];
            rules.push(RuleHits {
                scope: s.scope.clone(),
                position: s.position,
                rule: s.rule.clone(),
                text: s.text.clone(),
                packets: c.packets,
                bytes: c.bytes,
            });
        }
        rules.sort_by_key(|r| r.position);
        out.push(TenantStats {
            tenant: name,
            passed: passed.packets,
            dropped: dropped.packets,
            passed_bytes: passed.bytes,
            dropped_bytes: dropped.bytes,
            rules,
        });
    }
    Ok(out)
}

/// Which classifier `classify` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
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
    pub verdict: &'static str,
}

/// The name of `verdict` in `classify`'s output.
fn verdict_name(drop: bool) -> &'static str {
    if drop { "drop" } else { "pass" }
}

/// For each packet of a ClassBench trace file, the deciding rule (its 1-based
/// position for ClassBench filters, 0: none matched; `scope#N` or
/// `scope default` for a ruleset) and the verdict.
pub fn classify(
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
        verdict: verdict_name(d.verdict == Verdict::Drop),
    };
    // Trace packets come from no interface: every `iif` name gets a stand-in
    // no packet matches, as in the reference (not even a host's `lo`, which
    // is where the kernel's test runs say packets arrive).
    let options = CompileOptions {
        interfaces: with_stand_ins(&rs, BTreeMap::new()).0,
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
                        ControlError::Usage(format!("packet `{p}` cannot be built as a frame"))
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
                        verdict: verdict_name(trace.verdict == xdp::DROP),
                    })
                })
                .collect()
        }
    }
}
