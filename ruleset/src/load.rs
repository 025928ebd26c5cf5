//! Turning files into a [`Ruleset`]: from memory ([`Ruleset::parse_files`]) or from a
//! directory ([`Ruleset::load_dir`]).
//!
//! Layout: a ruleset is one directory holding `gateway.fg` and one `<tenant>.fg` per
//! tenant, side by side (no sub-directories, so a tenant's file is found by its name
//! alone and `ls` shows every tenant). Files not ending in `.fg` are ignored.

use std::path::Path;

use crate::error::{Diag, ErrorKind, Errors, SourceMap};
use crate::model::{Ruleset, Scope, assign_ids};
use crate::parser::{Parser, check_ident};

/// Name of the gateway file.
pub const GATEWAY_FILE: &str = "gateway.fg";

fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

impl Ruleset {
    /// Parses a ruleset from `(path, text)` pairs. The file whose name is `gateway.fg`
    /// is the gateway file; every other file is a tenant file whose name must be
    /// `<tenant>.fg`. Returns every syntax error found, or the ruleset (which still has
    /// to go through [`crate::validate()`]).
    pub fn parse_files<P: AsRef<str>, T: AsRef<str>>(files: &[(P, T)]) -> Result<Ruleset, Errors> {
        let mut map = SourceMap::default();
        let ids: Vec<_> = files
            .iter()
            .map(|(p, t)| map.add(p.as_ref(), t.as_ref()))
            .collect();
        let mut rs = Ruleset::default();
        let mut errors = Vec::new();
        let mut gateway_seen = false;
        for (&id, (path, _)) in ids.iter().zip(files) {
            let path = path.as_ref();
            let mut p = Parser::new(&map, id);
            if file_name(path) == GATEWAY_FILE {
                if gateway_seen {
                    errors.push(Diag::without_source(
                        ErrorKind::Syntax,
                        path,
                        "a second gateway.fg was given",
                    ));
                }
                gateway_seen = true;
                rs.gateway = p.gateway();
            } else {
                let t = p.tenant();
                let stem = file_name(path)
                    .strip_suffix(".fg")
                    .unwrap_or(file_name(path));
                if p.errors.is_empty() {
                    if let Err(m) = check_ident(&t.name) {
                        errors.push(map.error(ErrorKind::TenantName, t.spans.name, m));
                    } else if stem != t.name {
                        errors.push(
                            map.error(
                                ErrorKind::TenantName,
                                t.spans.name,
                                format!("tenant `{}` is declared in file `{path}`", t.name),
                            )
                            .with_help(format!("rename the file to `{}.fg`", t.name)),
                        );
                    }
                }
                rs.tenants.push(t);
            }
            errors.append(&mut p.errors);
        }
        if !gateway_seen {
            errors.push(Diag::without_source(
                ErrorKind::Syntax,
                GATEWAY_FILE,
                "no gateway.fg: every ruleset needs one (at least `default pass` or `default drop`)",
            ));
        }
        if !errors.is_empty() {
            return Err(Errors {
                errors,
                warnings: Vec::new(),
            });
        }
        rs.tenants.sort_by(|a, b| a.name.cmp(&b.name));
        assign_ids(&Scope::Gateway, &mut rs.gateway.rules);
        for t in &mut rs.tenants {
            assign_ids(&Scope::Tenant(t.name.clone()), &mut t.rules);
        }
        rs.sources = map;
        Ok(rs)
    }

    /// Reads `dir/gateway.fg` and every `dir/*.fg` (sorted by name) and parses them
    /// with [`Ruleset::parse_files`]. The only I/O this crate does.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Ruleset, Errors> {
        Ruleset::parse_files(&read_dir_files(dir)?)
    }
}

/// The `.fg` files of `dir` as `(path, text)`, sorted by path, ready for
/// [`Ruleset::parse_files`]; an unreadable directory or file is an error naming it.
pub fn read_dir_files(dir: impl AsRef<Path>) -> Result<Vec<(String, String)>, Errors> {
    let dir = dir.as_ref();
    let io = |p: &Path, e: std::io::Error| {
        Errors::one(Diag::without_source(
            ErrorKind::Io,
            &p.display().to_string(),
            e.to_string(),
        ))
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "fg") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
        files.push((p.display().to_string(), text));
    }
    Ok(files)
}
