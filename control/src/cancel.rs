//! A handle to stop a long-running operation (a canary, a capture) from
//! another thread or a signal handler.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

/// Cancels the operation it was given to; clones share the flag. Setting it
/// is async-signal-safe (one atomic store), so a SIGINT handler may call
/// [`Cancel::cancel`].
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A handle not cancelled yet.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks the operation to stop: a canary rolls its change back and
    /// records why; a capture ends (and switches capture off).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself, for `signal_hook`-style registration.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}
