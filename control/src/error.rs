//! Errors of control operations, each with a stable exit code.

use fluxgate_ruleset::{CompileError, Errors, Location};

use crate::exit;

/// Why a control operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The ruleset did not parse or validate: every diagnostic, each with
    /// file:line:col (shown with a caret).
    #[error("ruleset rejected:\n{}", render(.0))]
    Ruleset(Errors),
    /// A packet trace (`classify --trace`) did not read or parse: each
    /// problem with file:line:col, as for a ruleset (and the same exit code).
    #[error("trace rejected:\n{}", render(.0))]
    Trace(Errors),
    /// The ruleset is valid but could not be compiled into tables.
    #[error("ruleset rejected: {0}")]
    Compile(#[from] CompileError),
    /// A kernel / dataplane failure.
    #[error(transparent)]
    Dataplane(#[from] fluxgate_dataplane::Error),
    /// Reading or writing fluxgate's state files failed.
    #[error("{0}")]
    State(String),
    /// The request itself is malformed (a bad packet text, a missing
    /// argument): what a command line gets wrong.
    #[error("{0}")]
    Usage(String),
    /// Something the request names does not exist: a tenant that is not
    /// live, a generation that is not kept, no interface attached.
    #[error("{0}")]
    NotFound(String),
    /// The request is well-formed but cannot be done in the present state
    /// (a rollback across a slot change, a read-only view asked to change).
    #[error("{0}")]
    Refused(String),
    /// A file or socket outside the state directory could not be used
    /// (a pcap to read or write, a listening address).
    #[error("{0}")]
    Io(String),
    /// Another change holds the interface's lock.
    #[error("{0}")]
    Busy(String),
    /// Packets run through the staged change in the kernel did not get the
    /// verdict the reference gives them; nothing live changed.
    #[error("preflight failed, nothing changed:\n{0}")]
    Preflight(String),
    /// A canary apply was rolled back because health regressed.
    #[error("canary rolled back: {0}")]
    CanaryRolledBack(String),
    /// An apply went live without some tenants, whose files were refused
    /// ([`crate::Applied::refused`]); the library returns `Ok` then, and the
    /// CLI turns it into this error for its exit code.
    #[error("partially applied: {0}")]
    PartiallyApplied(String),
}

impl ControlError {
    /// The process exit code for this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            ControlError::Ruleset(_) | ControlError::Trace(_) | ControlError::Compile(_) => {
                exit::BAD_RULESET
            }
            ControlError::Dataplane(e) => exit::for_error(e),
            ControlError::State(_) => exit::FAILURE,
            ControlError::Usage(_) => exit::USAGE,
            ControlError::NotFound(_) => exit::NOT_FOUND,
            ControlError::Refused(_) | ControlError::Io(_) => exit::FAILURE,
            ControlError::Busy(_) => exit::CONFLICT,
            ControlError::Preflight(_) => exit::PREFLIGHT,
            ControlError::CanaryRolledBack(_) => exit::CANARY_ROLLED_BACK,
            ControlError::PartiallyApplied(_) => exit::PARTIALLY_APPLIED,
        }
    }
}

impl From<Errors> for ControlError {
    fn from(errors: Errors) -> Self {
        ControlError::Ruleset(errors)
    }
}

/// `"<what> rejected: N error(s)"`, the JSON message of rejected input.
fn rejected(what: &str, errors: &Errors) -> String {
    match errors.errors.len() {
        1 => format!("{what} rejected: 1 error"),
        n => format!("{what} rejected: {n} errors"),
    }
}

/// The errors of `errors` rendered for people, with carets.
fn render(errors: &Errors) -> String {
    let text: Vec<String> = errors.errors.iter().map(|d| d.render()).collect();
    text.join("\n")
}

impl ControlError {
    /// The error for scripts (`--json`): exit code, message, and for a
    /// rejected ruleset each problem with its file, line and column.
    pub fn to_json(&self) -> serde_json::Value {
        // `at: {file, line, col}` for a position in a file, `file` alone for
        // the whole file, nothing for no file.
        let locate = |v: &mut serde_json::Value, l: &Location| match l.position() {
            Some((line, col)) => {
                v["at"] = serde_json::json!({ "file": l.file, "line": line, "col": col });
            }
            None if !l.file.is_empty() => v["file"] = l.file.clone().into(),
            None => {}
        };
        let diagnostics: Vec<serde_json::Value> = match self {
            ControlError::Ruleset(errors) | ControlError::Trace(errors) => errors
                .errors
                .iter()
                .map(|d| {
                    let mut v = serde_json::json!({
                        "kind": d.kind.to_string(),
                        "message": d.message,
                    });
                    locate(&mut v, &d.location);
                    v
                })
                .collect(),
            ControlError::Compile(e) => {
                let text = e.to_string();
                let mut v = serde_json::json!({ "kind": "Compile", "message": text });
                if let Some(l) = e.location() {
                    // The position goes in `at`, not at the head of the message.
                    let head = format!("{l}: ");
                    v["message"] = text.strip_prefix(&head).unwrap_or(&text).into();
                    locate(&mut v, l);
                }
                vec![v]
            }
            _ => Vec::new(),
        };
        let message = match self {
            ControlError::Ruleset(errors) => rejected("ruleset", errors),
            ControlError::Trace(errors) => rejected("trace", errors),
            other => other.to_string(),
        };
        serde_json::json!({
            "error": {
                "exit_code": self.exit_code(),
                "message": message,
                "diagnostics": diagnostics,
            }
        })
    }
}
