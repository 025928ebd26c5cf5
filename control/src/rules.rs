//! Loading a ruleset onto an attached interface, per-rule statistics, and
//! classifying traces with any engine.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use fluxgate_common::{GatewayConfig, Trace};
use fluxgate_dataplane::{PinnedAttachment, Program, StagedImage, Tables, frame::FrameSpec};
use fluxgate_ruleset::{
    Classifier, CompileOptions, Config, Image, PacketHeader, Ruleset, Scope, ValidRuleset,
    classbench, compile_with, reference, validate,
};
use serde::{Deserialize, Serialize};

use crate::{ControlError, PinLocation};

/// What the state directory remembers about a loaded ruleset: enough to name
/// every counter slot after the loading process has exited.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadedState {
    /// The ruleset directory that was loaded.
    pub ruleset: PathBuf,
    /// Generation number.
    pub generation: u64,
    /// Tenant names by tenant index.
    pub tenants: Vec<String>,
    /// Counter slot → what it counts.
    pub counters: Vec<SlotInfo>,
}

/// One counter slot of a [`LoadedState`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SlotInfo {
    /// `gateway` or the tenant name.
    pub scope: String,
    /// Rule id (hex), absent for a default action.
    pub rule: Option<String>,
    /// 1-based position (0: the default action).
    pub position: u32,
    /// The rule as written (canonical form), or `default pass|drop`.
    pub text: String,
}

/// Where fluxgate keeps state files: `<dir>/<netns|init>/<iface>/loaded.json`.
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

    fn file(&self, iface: &str) -> PathBuf {
        self.root.join(iface).join("loaded.json")
    }

    /// The state of `iface`, if a ruleset was loaded there.
    pub fn read(&self, iface: &str) -> Result<Option<LoadedState>, ControlError> {
        let path = self.file(iface);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ControlError::State(format!("{} is corrupt: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ControlError::State(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Writes the state of `iface` atomically (write, fsync, rename), root-only.
    fn write(&self, iface: &str, state: &LoadedState) -> Result<(), ControlError> {
        use std::{io::Write, os::unix::fs::PermissionsExt};
        let path = self.file(iface);
        let dir = path.parent().unwrap_or(Path::new("."));
        let fail = |e: std::io::Error| {
            ControlError::State(format!("cannot write {}: {e}", path.display()))
        };
        fs::create_dir_all(dir).map_err(fail)?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700)).map_err(fail)?;
        let tmp = dir.join("loaded.json.tmp");
        let mut f = fs::File::create(&tmp).map_err(fail)?;
        let text =
            serde_json::to_vec_pretty(state).map_err(|e| ControlError::State(e.to_string()))?;
        f.write_all(&text).map_err(fail)?;
        f.sync_all().map_err(fail)?;
        fs::rename(&tmp, &path).map_err(fail)
    }

    fn remove(&self, iface: &str) {
        let _ = fs::remove_file(self.file(iface));
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

/// Parses, validates and compiles the ruleset in `dir` (no kernel involved).
pub fn compile_dir(
    dir: &Path,
    interfaces: BTreeMap<String, u32>,
) -> Result<(ValidRuleset, Image), ControlError> {
    let rs = validate(Ruleset::load_dir(dir)?, &Config::default())?;
    let image = compile_with(
        &rs,
        &CompileOptions {
            interfaces,
            generation: 1,
            ..Default::default()
        },
    )?;
    Ok((rs, image))
}

/// What [`load`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Loaded {
    /// Interface.
    pub iface: String,
    /// Tenants loaded.
    pub tenants: usize,
    /// Rules loaded (gateway and tenants).
    pub rules: usize,
    /// Kernel memory of the tables, bytes.
    pub table_bytes: u64,
    /// Warnings from validation, rendered.
    pub warnings: Vec<String>,
}

/// First load of the ruleset in `dir` onto `iface`, which must be attached
/// (`fluxgate attach`) and have no ruleset yet. Everything is parsed,
/// validated, compiled and staged in the kernel before the first slot flips;
/// any failure before that leaves the interface exactly as it was.
pub fn load(
    loc: &PinLocation,
    state: &StateDir,
    dir: &Path,
    iface: &str,
) -> Result<Loaded, ControlError> {
    let mut pinned = PinnedAttachment::open(loc.root(), iface)?;
    if state.read(iface)?.is_some() {
        return Err(ControlError::Dataplane(
            fluxgate_dataplane::Error::InvalidArgument(format!(
                "{iface} already has a ruleset loaded; replacing it atomically is `apply` (not yet available)"
            )),
        ));
    }
    let (rs, image) = compile_dir(dir, host_interfaces())?;
    let staged = StagedImage::new(&image)?;
    let loaded_state = describe(dir, &rs, &image);
    // Record what the slots mean before they go live, so `stats` can name them.
    state.write(iface, &loaded_state)?;
    if let Err(e) = pinned.publish_image(&staged) {
        state.remove(iface);
        return Err(e.into());
    }
    Ok(Loaded {
        iface: iface.to_owned(),
        tenants: image.tenants.len(),
        rules: rs.gateway().rules.len() + rs.tenants().iter().map(|t| t.rules.len()).sum::<usize>(),
        table_bytes: staged.bytes(),
        warnings: rs.warnings().iter().map(|d| d.render()).collect(),
    })
}

fn describe(dir: &Path, rs: &ValidRuleset, image: &Image) -> LoadedState {
    let rule_text = |scope: &Scope, position: u32| -> String {
        let rules = match scope {
            Scope::Gateway => &rs.gateway().rules,
            Scope::Tenant(t) => match rs.tenants().iter().find(|x| &x.name == t) {
                Some(t) => &t.rules,
                None => return String::new(),
            },
        };
        rules
            .get(position.saturating_sub(1) as usize)
            .map(|r| r.to_string())
            .unwrap_or_default()
    };
    let default_text = |scope: &Scope| match scope {
        Scope::Gateway => format!("default {:?}", rs.gateway().default_action).to_lowercase(),
        Scope::Tenant(t) => rs
            .tenants()
            .iter()
            .find(|x| &x.name == t)
            .map(|t| format!("default {:?}", t.default_action).to_lowercase())
            .unwrap_or_default(),
    };
    LoadedState {
        ruleset: dir.to_path_buf(),
        generation: image.generation,
        tenants: image.tenants.iter().map(|t| t.name.clone()).collect(),
        counters: image
            .counters
            .iter()
            .map(|c| SlotInfo {
                scope: c.scope.to_string(),
                rule: c.rule.map(|id| id.to_string()),
                position: c.position,
                text: if c.rule.is_some() {
                    rule_text(&c.scope, c.position)
                } else {
                    default_text(&c.scope)
                },
            })
            .collect(),
    }
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
    let Some(loaded) = state.read(iface)? else {
        return Ok(Vec::new());
    };
    if let Some(t) = tenant
        && t != "gateway"
        && !loaded.tenants.iter().any(|x| x == t)
    {
        return Err(ControlError::Usage(format!(
            "no tenant named {t:?} is loaded on {iface}"
        )));
    }
    let mut pinned = PinnedAttachment::open(loc.root(), iface)?;
    let hits = pinned.rule_counters(0, loaded.counters.len() as u32)?;
    let scopes = std::iter::once(("gateway".to_owned(), None)).chain(
        loaded
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), Some(i as u32))),
    );
    let mut out = Vec::new();
    for (name, index) in scopes {
        if tenant.is_some_and(|t| t != name) {
            continue;
        }
        let (passed, dropped) = pinned.tenant_counters(index)?;
        let rules = loaded
            .counters
            .iter()
            .zip(&hits)
            .filter(|(s, _)| s.scope == name)
            .map(|(s, c)| RuleHits {
                scope: s.scope.clone(),
                position: s.position,
                rule: s.rule.clone(),
                text: s.text.clone(),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect();
        out.push(TenantStats {
            tenant: name,
            passed: passed.packets,
            dropped: dropped.packets,
            rules,
        });
    }
    Ok(out)
}

/// Which classifier `classify` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
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

/// For each packet of a ClassBench trace file, the deciding rule: its 1-based
/// position for ClassBench filters (0: none matched), `scope#N` or
/// `scope default` for a ruleset.
pub fn classify(
    source: RuleSource<'_>,
    trace: &Path,
    engine: Engine,
) -> Result<Vec<String>, ControlError> {
    let read = |p: &Path| {
        fs::read_to_string(p)
            .map_err(|e| ControlError::Usage(format!("cannot read {}: {e}", p.display())))
    };
    let (rs, classbench_mode) = match source {
        RuleSource::Dir(dir) => (
            validate(Ruleset::load_dir(dir)?, &Config::default())?,
            false,
        ),
        RuleSource::ClassBench(file) => {
            let filters = classbench::parse_filters(&file.display().to_string(), &read(file)?)?;
            (
                validate(classbench::to_ruleset(&filters), &Config::classbench())?,
                true,
            )
        }
    };
    let packets: Vec<PacketHeader> =
        classbench::parse_trace(&trace.display().to_string(), &read(trace)?)?
            .into_iter()
            .map(|e| e.header)
            .collect();
    let name = |scope: &Scope, position: Option<u32>| -> String {
        match (classbench_mode, position) {
            (true, Some(p)) => p.to_string(),
            (true, None) => "0".into(),
            (false, Some(p)) => format!("{scope}#{p}"),
            (false, None) => format!("{scope} default"),
        }
    };
    let decision_name = |d: &fluxgate_ruleset::Decision| match &d.rule {
        Some(r) => name(&r.scope, Some(r.position)),
        None => name(
            &d.tenant_name.clone().map_or(Scope::Gateway, Scope::Tenant),
            None,
        ),
    };
    match engine {
        Engine::Reference => Ok(packets
            .iter()
            .map(|p| decision_name(&reference::classify(&rs, p)))
            .collect()),
        Engine::Userspace => {
            let image = compile_with(&rs, &CompileOptions::default())?;
            let c = Classifier::new(image, []);
            Ok(packets
                .iter()
                .map(|p| decision_name(&c.decide(p)))
                .collect())
        }
        Engine::Kernel => {
            let image = compile_with(&rs, &CompileOptions::default())?;
            let config = GatewayConfig {
                trace: 1,
                ..GatewayConfig::default()
            };
            let mut program = Program::load(&config)?;
            let staged = StagedImage::new(&image)?;
            program.publish_image(&staged)?;
            packets
                .iter()
                .map(|p| {
                    let spec = FrameSpec::from_header(p).ok_or_else(|| {
                        ControlError::Usage(format!("packet `{p}` cannot be built as a frame"))
                    })?;
                    program.test_run(&spec.build(), 1)?;
                    let trace: Trace = program.last_trace()?;
                    let slot = image.counters.get(trace.decided as usize);
                    Ok(match slot {
                        Some(s) => name(&s.scope, s.rule.map(|_| s.position)),
                        None => name(&Scope::Gateway, None),
                    })
                })
                .collect()
        }
    }
}
