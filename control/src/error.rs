//! Errors of control operations, each with a stable exit code.

use fluxgate_ruleset::CompileError;

use crate::exit;

/// Why a control operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The ruleset did not parse or validate; the text holds every diagnostic,
    /// rendered with file:line:col and a caret.
    #[error("ruleset rejected:\n{0}")]
    Ruleset(String),
    /// The ruleset is valid but could not be compiled into tables.
    #[error("ruleset rejected: {0}")]
    Compile(#[from] CompileError),
    /// A kernel / dataplane failure.
    #[error(transparent)]
    Dataplane(#[from] fluxgate_dataplane::Error),
    /// Reading or writing fluxgate's state files failed.
    #[error("{0}")]
    State(String),
    /// The command line asked for something impossible.
    #[error("{0}")]
    Usage(String),
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
}

impl ControlError {
    /// The process exit code for this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            ControlError::Ruleset(_) | ControlError::Compile(_) => exit::BAD_RULESET,
            ControlError::Dataplane(e) => exit::for_error(e),
            ControlError::State(_) => exit::FAILURE,
            ControlError::Usage(_) => exit::USAGE,
            ControlError::Busy(_) => exit::CONFLICT,
            ControlError::Preflight(_) => exit::PREFLIGHT,
            ControlError::CanaryRolledBack(_) => exit::CANARY_ROLLED_BACK,
        }
    }
}

impl From<fluxgate_ruleset::Errors> for ControlError {
    fn from(errors: fluxgate_ruleset::Errors) -> Self {
        let text: Vec<String> = errors.errors.iter().map(|d| d.render()).collect();
        ControlError::Ruleset(text.join("\n"))
    }
}
