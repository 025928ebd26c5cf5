//! Working in named network namespaces (those created by `ip netns add`).
//!
//! A network namespace belongs to a *thread*, not to a process: `setns(2)`
//! moves only the thread that calls it. A library user should call
//! [`run_in`], which does the work on a thread of its own and leaves the
//! caller's thread where it was; [`enter`] is for a thread that is the
//! caller's to move (a CLI's main thread before it starts anything else).

use std::{fs::File, io, os::fd::AsRawFd, path::Path};

use crate::Error;

/// Moves the calling *thread* into the network namespace `name`
/// (`/run/netns/<name>`), like `ip -n NAME`, for the rest of its life (or
/// until it enters another). Only the network namespace changes: bpffs and
/// the filesystem stay those of the caller.
///
/// Only this thread moves: threads started before keep their namespace,
/// threads it starts afterwards inherit the new one. So never call it on a
/// thread you do not own — a worker of an async runtime or a thread pool
/// would carry the namespace into every task it runs later. Use [`run_in`]
/// there.
pub fn enter(name: &str) -> Result<(), Error> {
    let file = open(name)?;
    // SAFETY: `file` is an open namespace fd for the duration of the call.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::kernel(
            "enter the network namespace",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Runs `f` inside the network namespace `name` and returns what it
/// returns, without moving the calling thread: `f` runs on a fresh (scoped)
/// thread that enters the namespace first and ends with `f`, so it may
/// borrow from the caller. Interfaces `f` looks up, sockets and netlink
/// sockets it opens, and programs it attaches are those of `name`; a socket
/// keeps its namespace after `f` returns.
///
/// A panic in `f` is resumed on the calling thread.
///
/// ```no_run
/// // The index of `eth1` as seen inside namespace `gw`.
/// let index = fluxgate_dataplane::netns::run_in("gw", || {
///     std::fs::read_to_string("/sys/class/net/eth1/ifindex")
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
    // Opened here, so a missing namespace fails before any thread starts.
    let file = open(name)?;
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn_scoped(scope, move || {
                // SAFETY: `file` is an open namespace fd for the duration of the call.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(Error::kernel(
                        "enter the network namespace",
                        io::Error::last_os_error(),
                    ));
                }
                Ok(f())
            })
            .map_err(|e| Error::kernel("start a thread for the network namespace", e))?;
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Opens `/run/netns/<name>`, refusing names that are not plain file names.
fn open(name: &str) -> Result<File, Error> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Error::InvalidArgument(format!(
            "{name:?} is not a network namespace name"
        )));
    }
    let path = Path::new("/run/netns").join(name);
    File::open(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NoSuchNamespace(name.to_owned()),
        _ => Error::kernel("open the network namespace", e),
    })
}

#[cfg(test)]
mod tests {
    use std::{fs, process::Command};

    use super::*;

    /// A namespace made with `ip netns add`, deleted on drop.
    struct Namespace(String);

    impl Namespace {
        fn new(tag: &str) -> Namespace {
            let name = format!("fgdp-{tag}-{}", std::process::id());
            let status = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .expect("run ip (iproute2)");
            assert!(status.success(), "ip netns add {name} (needs root)");
            Namespace(name)
        }

        /// Adds a veth pair `a`/`b` inside the namespace.
        fn add_veth(&self, a: &str, b: &str) {
            let status = Command::new("ip")
                .args([
                    "-n", &self.0, "link", "add", a, "type", "veth", "peer", "name", b,
                ])
                .status()
                .expect("run ip");
            assert!(status.success(), "ip link add {a} in {}", self.0);
        }
    }

    impl Drop for Namespace {
        fn drop(&mut self) {
            let _best_effort = Command::new("ip")
                .args(["netns", "delete", &self.0])
                .status();
        }
    }

    /// The interfaces the calling thread's network namespace has, sorted.
    /// `/proc/thread-self/net` follows the thread's namespace (sysfs would
    /// follow the mount's).
    fn interfaces() -> Vec<String> {
        let text = fs::read_to_string("/proc/thread-self/net/dev")
            .expect("read /proc/thread-self/net/dev");
        let mut names: Vec<String> = text
            .lines()
            .skip(2)
            .filter_map(|line| line.split(':').next())
            .map(|name| name.trim().to_owned())
            .collect();
        names.sort();
        names
    }

    /// The calling thread's network namespace (`net:[inode]`).
    fn current_netns() -> String {
        fs::read_link("/proc/thread-self/ns/net")
            .expect("read /proc/thread-self/ns/net")
            .display()
            .to_string()
    }

    fn ifindex(name: &str) -> u32 {
        let name = std::ffi::CString::new(name).expect("no NUL");
        // SAFETY: `name` is NUL-terminated and lives across the call.
        unsafe { libc::if_nametoindex(name.as_ptr()) }
    }

    #[test]
    fn run_in_sees_the_namespace_and_leaves_the_caller_where_it_was() {
        let ns = Namespace::new("run");
        ns.add_veth("fgdp0", "fgdp1");
        let before = current_netns();
        let outside = interfaces();
        assert!(
            !outside.contains(&"fgdp0".to_owned()),
            "the test interface exists only inside the namespace"
        );

        let (inside, index, netns) =
            run_in(&ns.0, || (interfaces(), ifindex("fgdp0"), current_netns()))
                .expect("run in the namespace");

        assert_eq!(
            inside,
            ["fgdp0", "fgdp1", "lo"],
            "only the namespace's interfaces"
        );
        assert_ne!(index, 0, "fgdp0 has an index inside");
        assert_ne!(netns, before, "the closure ran in another namespace");
        assert_eq!(current_netns(), before, "the caller's thread did not move");
        assert_eq!(interfaces(), outside);
        assert_eq!(ifindex("fgdp0"), 0, "no fgdp0 outside");
    }

    #[test]
    fn run_in_borrows_from_the_caller_and_reports_a_missing_namespace() {
        let ns = Namespace::new("borrow");
        let mut seen = Vec::new();
        run_in(&ns.0, || seen = interfaces()).expect("run in the namespace");
        assert_eq!(seen, ["lo"]);

        let missing = format!("fgdp-missing-{}", std::process::id());
        match run_in(&missing, || ()) {
            Err(Error::NoSuchNamespace(name)) => assert_eq!(name, missing),
            other => panic!("expected NoSuchNamespace, got {other:?}"),
        }
        assert!(matches!(
            run_in("../etc", || ()),
            Err(Error::InvalidArgument(_))
        ));
    }
}
