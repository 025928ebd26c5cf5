//! Exit codes of the `fluxgate` CLI, stable for scripts.

use fluxgate_dataplane::Error;

/// Success.
pub const OK: i32 = 0;
/// Any failure not listed below.
pub const FAILURE: i32 = 1;
/// Bad command line (as clap reports it).
pub const USAGE: i32 = 2;
/// Not root / missing capabilities.
pub const PERMISSION: i32 = 3;
/// The named interface, namespace or attachment does not exist.
pub const NOT_FOUND: i32 = 4;
/// The kernel lacks a needed feature, or pinned state is incompatible.
pub const UNSUPPORTED: i32 = 5;
/// The interface is already attached, or another change holds its lock.
pub const CONFLICT: i32 = 6;
/// The ruleset was rejected (syntax, validation or compilation), or the
/// trace `classify` was given; nothing changed.
pub const BAD_RULESET: i32 = 7;
/// Preflight in the kernel disagreed with the reference; nothing changed.
pub const PREFLIGHT: i32 = 8;
/// A canary apply went live, health regressed, and it was rolled back.
pub const CANARY_ROLLED_BACK: i32 = 9;
/// Some tenants' files were refused (invalid, or over a quota) and keep their
/// live rules, while the other tenants' changes went live.
pub const PARTIALLY_APPLIED: i32 = 10;

/// The exit code for a dataplane error.
pub fn for_error(err: &Error) -> i32 {
    match err {
        Error::PermissionDenied { .. } => PERMISSION,
        Error::NoSuchInterface(_) | Error::NoSuchNamespace(_) | Error::NotAttached { .. } => {
            NOT_FOUND
        }
        Error::Unsupported { .. }
        | Error::NoBpffs(_)
        | Error::Incompatible { .. }
        | Error::UnsafePinDirectory { .. } => UNSUPPORTED,
        Error::AlreadyAttached { .. } => CONFLICT,
        Error::InvalidArgument(_) => USAGE,
        _ => FAILURE,
    }
}
