//! Which tenants' files go into an apply.
//!
//! Tenant files may be written by customers, so one tenant's bad file must
//! not block the others' changes. Unless the apply is atomic, a tenant whose
//! file does not parse, validate, compile or fit its quota is *refused*: its
//! live file is used instead (a tenant that is not live yet stays out), and
//! the ruleset is checked again, until it passes. An error in gateway.fg (the
//! operator's file), an error no tenant's file can be blamed for, or one in
//! the live file of a refused tenant (a gateway change made it invalid)
//! refuses everything, as an atomic apply does on any error.

use std::path::Path;

use fluxgate_ruleset::{
    CompileError, Diag, ErrorKind, Errors, GATEWAY_FILE, Image, Location, Ruleset, ValidRuleset,
    check_table_quotas, validate,
};
use serde::Serialize;

use crate::ControlError;

/// A tenant whose new file an apply refused; it keeps its live rules.
#[derive(Clone, Debug, Serialize)]
pub struct RefusedTenant {
    /// The tenant.
    pub tenant: String,
    /// True when its live rules stay; false when it was not live (it stays absent).
    pub kept_live: bool,
    /// Why, each with the file, line and column.
    pub diagnostics: Vec<Diagnostic>,
}

/// One problem of a refused tenant's file.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnostic {
    /// The kind (`Allocation`, `Quota`, `Syntax`, …; see `fluxgate_ruleset::ErrorKind`).
    pub kind: String,
    /// What is wrong.
    pub message: String,
    /// Where, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Position>,
    /// The problem rendered for people, with a caret (not in JSON).
    #[serde(skip)]
    pub rendered: String,
}

/// `file:line:col`.
#[derive(Clone, Debug, Serialize)]
pub struct Position {
    /// File, as named in the ruleset.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
}

impl From<&Diag> for Diagnostic {
    fn from(d: &Diag) -> Self {
        Diagnostic {
            kind: d.kind.to_string(),
            message: d.message.clone(),
            at: d.location.position().map(|(line, col)| Position {
                file: d.location.file.clone(),
                line,
                col,
            }),
            rendered: d.render(),
        }
    }
}

/// What goes into an apply.
pub(crate) struct Admitted {
    /// The files applied (refused tenants' live files in place of their new ones).
    pub files: Vec<(String, String)>,
    pub rs: ValidRuleset,
    pub image: Image,
    pub refused: Vec<RefusedTenant>,
    /// Every problem of the refused tenants (for an apply that then changes nothing).
    pub refused_errors: Errors,
}

/// A round's failure: diagnostics from parsing, validating or the quotas,
/// or an error of the compiler.
enum Failure {
    Ruleset(Errors),
    Compile(CompileError),
}

/// Admits `files` (see the module docs): `live` gives the live files, asked
/// for the first time a tenant is refused; `compile` compiles a valid ruleset.
pub(crate) fn admit(
    files: Vec<(String, String)>,
    atomic: bool,
    source_buckets: u32,
    live: impl FnOnce() -> Result<Vec<(String, String)>, ControlError>,
    compile: impl Fn(&ValidRuleset) -> Result<Image, CompileError>,
) -> Result<Admitted, ControlError> {
    let mut live = Some(live);
    let mut live_files: Vec<(String, String)> = Vec::new();
    // Refused tenants in the order found, with their problems.
    let mut refused: Vec<(String, Vec<Diag>)> = Vec::new();
    loop {
        let is_refused = |t: &str| refused.iter().any(|(r, _)| r == t);
        let mut now: Vec<(String, String)> = files
            .iter()
            .filter(|(p, _)| tenant_of(p).is_none_or(|t| !is_refused(t)))
            .cloned()
            .collect();
        now.extend(
            live_files
                .iter()
                .filter(|(p, _)| tenant_of(p).is_some_and(is_refused))
                .cloned(),
        );
        let failure = match round(&now, source_buckets, &compile) {
            Ok((rs, image)) => {
                let refused_errors = Errors {
                    errors: refused.iter().flat_map(|(_, d)| d.clone()).collect(),
                    warnings: Vec::new(),
                };
                let refused = refused
                    .into_iter()
                    .map(|(tenant, diags)| RefusedTenant {
                        kept_live: live_files
                            .iter()
                            .any(|(p, _)| tenant_of(p) == Some(tenant.as_str())),
                        diagnostics: diags.iter().map(Diagnostic::from).collect(),
                        tenant,
                    })
                    .collect();
                return Ok(Admitted {
                    files: now,
                    rs,
                    image,
                    refused,
                    refused_errors,
                });
            }
            Err(f) => f,
        };
        let diags: Vec<Diag> = match &failure {
            Failure::Ruleset(e) => e.errors.clone(),
            Failure::Compile(e) => vec![compile_diag(e)],
        };
        if !atomic && let Some(read) = live.take() {
            live_files = read()?;
        }
        // Whose fault: tenants' files not refused yet, or nobody's to refuse alone.
        let blamed: Option<Vec<Vec<String>>> = (!atomic)
            .then(|| {
                diags
                    .iter()
                    .map(|d| {
                        let who: Vec<String> = suspects(d, &files, &live_files)
                            .into_iter()
                            .filter(|t| !is_refused(t))
                            .collect();
                        (!who.is_empty()).then_some(who)
                    })
                    .collect()
            })
            .flatten();
        let Some(blamed) = blamed else {
            // Everything is refused: with the problems of tenants refused
            // on the way, so the report is complete.
            return Err(match failure {
                Failure::Ruleset(mut e) => {
                    let mut all: Vec<Diag> = refused.into_iter().flat_map(|(_, d)| d).collect();
                    all.append(&mut e.errors);
                    e.errors = all;
                    ControlError::Ruleset(e)
                }
                Failure::Compile(e) => ControlError::Compile(e),
            });
        };
        for (d, who) in diags.into_iter().zip(&blamed) {
            for t in who {
                match refused.iter_mut().find(|(r, _)| r == t) {
                    Some((_, list)) => list.push(d.clone()),
                    None => refused.push((t.clone(), vec![d.clone()])),
                }
            }
        }
        tracing::warn!(
            tenants = ?refused.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            "refusing tenants whose files are invalid; their live rules stay"
        );
    }
}

/// The tenants a diagnostic can be blamed on: the one whose file it is in;
/// for two tenants' overlapping prefixes, whichever of the two changed its
/// claims (`prefixes`): unchanged claims cannot have caused a new overlap, and
/// the error is reported at whichever prefix sorts second, which may be the
/// innocent tenant's.
fn suspects(d: &Diag, new: &[(String, String)], live: &[(String, String)]) -> Vec<String> {
    let mut who: Vec<&str> = tenant_of(&d.location.file).into_iter().collect();
    if d.kind == ErrorKind::TenantOverlap
        && let Some(other) = d.related.as_ref().and_then(|r| tenant_of(&r.location.file))
    {
        who.push(other);
        let changed: Vec<&str> = who
            .iter()
            .copied()
            .filter(|t| claims(new, t) != claims(live, t))
            .collect();
        if !changed.is_empty() {
            who = changed;
        }
    }
    who.into_iter().map(str::to_owned).collect()
}

/// The prefixes tenant `t` claims in `files` (`None`: no file, or it does not
/// parse on its own). Parsed alone, beside a stand-in gateway.fg: only its
/// `prefixes` matter here.
fn claims(files: &[(String, String)], t: &str) -> Option<Vec<String>> {
    let (path, text) = files.iter().find(|(p, _)| tenant_of(p) == Some(t))?;
    let one = [
        (GATEWAY_FILE, "default drop\n"),
        (path.as_str(), text.as_str()),
    ];
    let rs = Ruleset::parse_files(&one).ok()?;
    let mut nets: Vec<String> = rs
        .tenants
        .first()?
        .prefixes
        .iter()
        .map(|p| p.trunc().to_string())
        .collect();
    nets.sort();
    Some(nets)
}

/// Parse, validate, compile, quotas.
fn round(
    files: &[(String, String)],
    source_buckets: u32,
    compile: &impl Fn(&ValidRuleset) -> Result<Image, CompileError>,
) -> Result<(ValidRuleset, Image), Failure> {
    let parsed = tracing::info_span!("parse", files = files.len())
        .in_scope(|| Ruleset::parse_files(files))
        .map_err(Failure::Ruleset)?;
    let rs = tracing::info_span!("validate", tenants = parsed.tenants.len())
        .in_scope(|| validate(parsed, &fluxgate_ruleset::Config::default()))
        .map_err(Failure::Ruleset)?;
    crate::ratelimit::kernel_supports(&rs, source_buckets).map_err(Failure::Ruleset)?;
    let image = tracing::info_span!("compile")
        .in_scope(|| compile(&rs))
        .map_err(Failure::Compile)?;
    check_table_quotas(&rs, &image).map_err(Failure::Ruleset)?;
    Ok((rs, image))
}

/// The tenant whose file `path` is (`None` for gateway.fg or no file).
fn tenant_of(path: &str) -> Option<&str> {
    let name = Path::new(path).file_name()?.to_str()?;
    if name == GATEWAY_FILE {
        return None;
    }
    name.strip_suffix(".fg")
}

/// A compile error as a diagnostic at its rule (whole ruleset when it has none).
fn compile_diag(e: &CompileError) -> Diag {
    let text = e.to_string();
    match e.location() {
        Some(l) => {
            let head = format!("{l}: ");
            let mut d = Diag::without_source(
                ErrorKind::Compile,
                &l.file,
                text.strip_prefix(&head).unwrap_or(&text),
            );
            d.location = Location::clone(l);
            d
        }
        None => Diag::without_source(ErrorKind::Compile, "", text),
    }
}
