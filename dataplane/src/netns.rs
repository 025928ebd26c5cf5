//! Entering named network namespaces (those created by `ip netns add`).

use std::{fs::File, io, os::fd::AsRawFd, path::Path};

use crate::Error;

/// Moves the calling *thread* into the network namespace `name`
/// (`/run/netns/<name>`), like `ip -n NAME`. Only the network namespace
/// changes: bpffs and the filesystem stay those of the caller.
pub fn enter(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Error::InvalidArgument(format!(
            "{name:?} is not a network namespace name"
        )));
    }
    let path = Path::new("/run/netns").join(name);
    let file = File::open(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NoSuchNamespace(name.to_owned()),
        _ => Error::kernel("open the network namespace", e),
    })?;
    // SAFETY: `file` is an open namespace fd for the duration of the call.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::kernel(
            "enter the network namespace",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}
