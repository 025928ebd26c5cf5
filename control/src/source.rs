//! Where a ruleset comes from: a directory on disk, or files an embedder
//! holds in memory (a fleet agent that fetched them, a provider's panel).

use std::path::{Path, PathBuf};

use crate::ControlError;

/// A ruleset to check, diff or apply: `gateway.fg` and one `<tenant>.fg` per
/// tenant.
///
/// ```
/// use fluxgate_control::RulesetSource;
///
/// let source = RulesetSource::files(
///     "panel export 2026-12-03",
///     [
///         ("gateway.fg", "default pass\n"),
///         ("acme.fg", "tenant acme\nprefix 203.0.113.0/24\ndefault pass\n"),
///     ],
/// );
/// let checked = fluxgate_control::check(&source)?;
/// assert_eq!(checked.tenants, 1);
/// # Ok::<(), fluxgate_control::ControlError>(())
/// ```
#[derive(Clone, Debug)]
pub enum RulesetSource {
    /// A directory: its `*.fg` files are read when the ruleset is used.
    Dir(PathBuf),
    /// Files held in memory, as (file name, text), with a label saying where
    /// they came from (recorded in the journal instead of a directory).
    Files {
        /// Where the files came from, for the journal and messages.
        label: String,
        /// (file name such as `acme.fg`, its text).
        files: Vec<(String, String)>,
    },
}

impl RulesetSource {
    /// The ruleset in directory `dir`.
    pub fn dir(dir: impl Into<PathBuf>) -> RulesetSource {
        RulesetSource::Dir(dir.into())
    }

    /// A ruleset held in memory: (file name, text) pairs.
    pub fn files<N: Into<String>, T: Into<String>>(
        label: impl Into<String>,
        files: impl IntoIterator<Item = (N, T)>,
    ) -> RulesetSource {
        RulesetSource::Files {
            label: label.into(),
            files: files
                .into_iter()
                .map(|(n, t)| (n.into(), t.into()))
                .collect(),
        }
    }

    /// Where it comes from: the directory, or the label.
    pub fn label(&self) -> PathBuf {
        match self {
            RulesetSource::Dir(d) => d.clone(),
            RulesetSource::Files { label, .. } => PathBuf::from(label),
        }
    }

    /// Only the files `names` (such as `acme.fg`), sorted, as (path, text);
    /// a name the source does not have is left out. A directory is read for
    /// these files alone.
    pub fn read_named(&self, names: &[&str]) -> Result<Vec<(String, String)>, ControlError> {
        match self {
            RulesetSource::Dir(dir) => Ok(fluxgate_ruleset::read_dir_files_named(dir, names)?),
            RulesetSource::Files { .. } => Ok(self
                .read()?
                .into_iter()
                .filter(|(n, _)| names.contains(&n.as_str()))
                .collect()),
        }
    }

    /// Its `.fg` files, sorted by name, as (path, text).
    pub fn read(&self) -> Result<Vec<(String, String)>, ControlError> {
        match self {
            RulesetSource::Dir(dir) => Ok(fluxgate_ruleset::read_dir_files(dir)?),
            RulesetSource::Files { files, .. } => {
                check_files(files)?;
                let mut files = files.clone();
                files.sort();
                Ok(files)
            }
        }
    }
}

/// Files held in memory get the limits files on disk get: a plain
/// printable `*.fg` name, at most `MAX_FILE_BYTES` each and
/// `MAX_RULESET_BYTES` in all.
fn check_files(files: &[(String, String)]) -> Result<(), ControlError> {
    use fluxgate_ruleset::{Diag, ErrorKind, Errors, MAX_FILE_BYTES, MAX_RULESET_BYTES};
    let mut errors = Vec::new();
    let mut total = 0u64;
    for (name, text) in files {
        let plain = name.ends_with(".fg")
            && name.len() > 3
            && !name.contains('/')
            && name.chars().all(|c| !c.is_control());
        let shown: String = name
            .chars()
            .flat_map(char::escape_default)
            .take(64)
            .collect();
        if !plain {
            errors.push(Diag::without_source(
                ErrorKind::Io,
                &shown,
                "a ruleset file name is a plain `<name>.fg`, without `/` or control characters",
            ));
        }
        total += text.len() as u64;
        if text.len() as u64 > MAX_FILE_BYTES {
            errors.push(Diag::without_source(
                ErrorKind::Io,
                &shown,
                format!("larger than {MAX_FILE_BYTES} bytes, the most a ruleset file may hold"),
            ));
        }
    }
    if total > MAX_RULESET_BYTES {
        errors.push(Diag::without_source(
            ErrorKind::Io,
            "",
            format!(
                "the files hold more than {MAX_RULESET_BYTES} bytes, the most a ruleset may have"
            ),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ControlError::Ruleset(Errors {
            errors,
            warnings: Vec::new(),
        }))
    }
}

impl From<&Path> for RulesetSource {
    fn from(dir: &Path) -> RulesetSource {
        RulesetSource::Dir(dir.to_path_buf())
    }
}

impl From<PathBuf> for RulesetSource {
    fn from(dir: PathBuf) -> RulesetSource {
        RulesetSource::Dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_in_memory_get_the_limits_of_files_on_disk() {
        let ok = RulesetSource::files("t", [("gateway.fg", "default pass\n")]);
        assert_eq!(ok.read().map(|f| f.len()).ok(), Some(1));
        for name in ["../etc/x.fg", "x.txt", ".fg", "a\u{1b}[2J.fg"] {
            let bad = RulesetSource::files("t", [("gateway.fg", "default pass\n"), (name, "")]);
            let err = bad.read().expect_err(name);
            assert_eq!(err.exit_code(), crate::exit::BAD_RULESET, "{name}");
            assert!(!err.to_string().contains('\u{1b}'), "escaped: {err}");
        }
        let huge = "#".repeat(usize::try_from(fluxgate_ruleset::MAX_FILE_BYTES).unwrap_or(0) + 1);
        let bad = RulesetSource::files("t", [("gateway.fg", huge)]);
        assert!(bad.read().is_err());
    }
}
