use std::{io, path::PathBuf};

/// Errors from the dataplane. Each says what failed and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller lacks the privileges to load or attach BPF programs.
    #[error(
        "permission denied while trying to {op}: fluxgate needs root (or CAP_BPF + CAP_NET_ADMIN)"
    )]
    PermissionDenied {
        /// What was being done.
        op: &'static str,
    },
    /// No interface with this name in the current network namespace.
    #[error("no interface named {0:?} in this network namespace")]
    NoSuchInterface(String),
    /// The running kernel lacks something fluxgate needs.
    #[error("this kernel does not support {feature}: {source}")]
    Unsupported {
        /// The missing feature.
        feature: &'static str,
        /// What the kernel answered.
        source: io::Error,
    },
    /// No network namespace with this name (`/run/netns/<name>`).
    #[error("no network namespace named {0:?} (see `ip netns list`)")]
    NoSuchNamespace(String),
    /// A pin directory (fluxgate's bpffs directory, the namespace's, the
    /// interface's) that someone other than root could change: whoever can
    /// write there can swap a pinned map or link for their own.
    #[error(
        "refusing the pin directory {}: {reason}; it must be a directory owned by root \
         and not writable by group or others (chmod go-w, chown root)",
        path.display()
    )]
    UnsafePinDirectory {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// bpffs is not mounted where pinned state lives.
    #[error("no BPF filesystem at {0}: mount one with `mount -t bpf bpf /sys/fs/bpf`")]
    NoBpffs(PathBuf),
    /// The interface already has fluxgate state pinned.
    #[error("{iface} already has fluxgate attached (pinned at {}); detach it first", path.display())]
    AlreadyAttached {
        /// Interface name.
        iface: String,
        /// Its pin directory.
        path: PathBuf,
    },
    /// Nothing pinned for this interface.
    #[error("fluxgate is not attached to {iface} (nothing pinned at {})", path.display())]
    NotAttached {
        /// Interface name.
        iface: String,
        /// The pin directory that was looked for.
        path: PathBuf,
    },
    /// Pinned state exists but does not match this build (ABI, map shape).
    #[error("pinned state at {} is incompatible with this fluxgate: {reason}", path.display())]
    Incompatible {
        /// The pinned object.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The kernel verifier rejected a program; the tail of its log says why.
    #[error("the kernel verifier rejected the XDP program ({source}); end of its log:\n{log}")]
    Rejected {
        /// What the load syscall returned.
        source: io::Error,
        /// The last lines of the verifier log.
        log: String,
    },
    /// The attachment's cell pool has no room for the tables being staged
    /// (nothing was written and nothing live changed).
    #[error(
        "the table cell pool is full: {needed} cells needed, {free} free of {size} \
         (forget kept generations, or attach again with a larger pool)"
    )]
    PoolFull {
        /// Cells the staged tables need.
        needed: u64,
        /// Free cells (possibly fragmented).
        free: u64,
        /// Cells in the pool.
        size: u32,
    },
    /// The map of kept table generations is full.
    #[error(
        "the map of kept table generations is full ({entries} entries; forget kept \
         generations, or attach again with more tenant slots, which sizes it)"
    )]
    KeptFull {
        /// Entries the map holds at most.
        entries: u32,
    },
    /// Invalid argument from the caller.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Any other kernel or aya failure, with the operation that failed.
    #[error("failed to {op}: {}", chain(source.as_ref()))]
    Kernel {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// Wraps a kernel/aya error, recognising permission problems and missing
    /// kernel features anywhere in its source chain.
    pub(crate) fn kernel<E>(op: &'static str, err: E) -> Error
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        // EACCES from the verifier means "program rejected", not "not root".
        let rejected_by_verifier = op.starts_with("verify");
        match os_error(&err) {
            Some(libc::EPERM) => Error::PermissionDenied { op },
            Some(libc::EACCES) if !rejected_by_verifier => Error::PermissionDenied { op },
            _ => Error::Kernel {
                op,
                source: Box::new(err),
            },
        }
    }
}

/// The first OS error code in `err`'s source chain.
pub(crate) fn os_error(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        cur = e.source();
    }
    None
}

/// `err` and all its sources, joined by ": " (aya's errors keep the errno in a source).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = e.source();
    }
    out
}
