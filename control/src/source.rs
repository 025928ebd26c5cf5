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

    /// Its `.fg` files, sorted by name, as (path, text).
    pub fn read(&self) -> Result<Vec<(String, String)>, ControlError> {
        match self {
            RulesetSource::Dir(dir) => Ok(fluxgate_ruleset::read_dir_files(dir)?),
            RulesetSource::Files { files, .. } => {
                let mut files = files.clone();
                files.sort();
                Ok(files)
            }
        }
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
