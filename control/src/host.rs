//! What the control plane asks of the operating system: the interfaces of a
//! network namespace, who is making a change, the clock, the open-file limit,
//! and (in test builds only) fault injection.
//!
//! # Network namespaces and threads
//!
//! `setns(2)` moves only the calling thread into a namespace. A library that
//! did that on its caller's thread would leave, say, a tokio worker in the
//! gateway's namespace for whatever task runs there next. So nothing here
//! moves the caller: [`in_netns`] runs a closure on a short-lived thread of
//! its own that enters the namespace, and returns its result.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::ControlError;

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs `f` inside network namespace `netns` (a name under `/run/netns`, as
/// `ip netns` makes them), on a thread of its own, so the caller's thread
/// never changes namespace. `None`: runs `f` here, in the caller's namespace.
/// When the calling thread is already in that namespace, `f` runs here too.
pub fn in_netns<T: Send>(
    netns: Option<&str>,
    f: impl FnOnce() -> Result<T, ControlError> + Send,
) -> Result<T, ControlError> {
    let Some(name) = netns else {
        return f();
    };
    if already_in(name) {
        return f();
    }
    fluxgate_dataplane::netns::run_in(name, f)?
}

/// Whether the calling thread is in network namespace `name` already (same
/// namespace inode as `/run/netns/<name>`).
fn already_in(name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let named = ino(&Path::new("/run/netns").join(name));
    named.is_some() && named == ino(Path::new("/proc/thread-self/ns/net"))
}

/// Interface name → index in the calling thread's network namespace (for
/// `iif` rules).
pub fn interfaces() -> BTreeMap<String, u32> {
    // Not /sys/class/net: it shows the namespace sysfs was mounted in, not
    // the thread's after setns; if_nameindex asks the kernel (netlink).
    let mut out = BTreeMap::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, or
    // NULL; it is read here and freed once below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*p).if_name)
                .to_string_lossy()
                .into_owned();
            out.insert(name, (*p).if_index);
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// `known` interfaces plus a stand-in index for each interface a rule of `rs`
/// names that `known` lacks (those names are returned too), for compiling
/// away from the gateway. Stand-ins come from the top of the index space,
/// far above any real ifindex, so no packet's interface ever matches one.
pub fn with_stand_ins(
    rs: &fluxgate_ruleset::ValidRuleset,
    mut known: BTreeMap<String, u32>,
) -> (BTreeMap<String, u32>, Vec<String>) {
    let mut absent: Vec<String> = Vec::new();
    let rules = rs
        .gateway()
        .rules
        .iter()
        .chain(rs.tenants().iter().flat_map(|t| &t.rules));
    for name in rules.filter_map(|r| r.matches.iif.as_ref()) {
        if !known.contains_key(name) && !absent.contains(name) {
            absent.push(name.clone());
        }
    }
    for (name, index) in absent.iter().zip((0..=u32::MAX).rev()) {
        known.insert(name.clone(), index);
    }
    (known, absent)
}

/// Who is making a change: the invoking user behind sudo, else the user
/// (looked up with the re-entrant `getpwuid_r`, safe from any thread).
pub fn who() -> String {
    if let Ok(user) = std::env::var("SUDO_USER") {
        return user;
    }
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut buf = vec![0 as libc::c_char; 1024];
    // SAFETY: an all-zero passwd is a valid out-parameter (pointers null).
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf.len()` is its size;
    // on success `found` points at `pw`, whose strings live in `buf`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pw.pw_name.is_null() {
        return format!("uid {uid}");
    }
    // SAFETY: pw_name points at a NUL-terminated string inside `buf`, alive here.
    unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned()
}

/// Raises the soft open-file limit to the hard one: every staged table is a
/// file descriptor until it is pinned, so a change to thousands of tenants
/// needs more than the usual soft limit of 1024. Called by every operation
/// that stages tables, so an embedder need not know; best effort (a lower
/// limit only makes large applies fail with a clear error).
pub fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _best_effort = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Fault injection for the crash tests: when `FLUXGATE_CRASH_AT` names this
/// step of a change, the process kills itself right here with SIGKILL
/// (`kill -9`). The steps: `staged`, `preflighted`, `kept`, `recorded`,
/// `placed`, `flipping`, `flipped`. Only in builds with the
/// `fault-injection` feature (the test build of the CLI); a release build
/// has no such code, so no environment variable can kill an embedder.
#[cfg(feature = "fault-injection")]
pub(crate) fn crash_point(step: &str) {
    if std::env::var_os("FLUXGATE_CRASH_AT").is_some_and(|s| s == step) {
        eprintln!("fluxgate: FLUXGATE_CRASH_AT={step}: killing myself (SIGKILL)");
        // SAFETY: signalling our own process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        std::process::abort();
    }
}

/// Without the `fault-injection` feature: nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn crash_point(_step: &str) {}

/// Closes our side of an HTTP connection after the answer, then reads and
/// drops what the client still sends (at most `budget` bytes, 200 ms per
/// read): a client whose request was not read to the end would otherwise
/// get a reset that can discard the answer.
pub(crate) fn lingering_close(
    stream: &mut std::net::TcpStream,
    budget: usize,
) -> std::io::Result<()> {
    use std::io::Read;
    stream.shutdown(std::net::Shutdown::Write)?;
    stream.set_read_timeout(Some(std::time::Duration::from_millis(200)))?;
    let mut sink = [0u8; 4096];
    let mut left = budget;
    while left > 0 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
    Ok(())
}

/// A moment in UTC, from seconds since the Unix epoch (civil-from-days,
/// Howard Hinnant's algorithm: no libc, no time zone database).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utc {
    /// Year.
    pub year: i64,
    /// Month, 1–12.
    pub month: u8,
    /// Day of the month, 1–31.
    pub day: u8,
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
    /// Second, 0–59.
    pub second: u8,
}

impl Utc {
    /// The moment `secs` seconds after the epoch.
    pub fn of(secs: u64) -> Utc {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Utc {
            year: yoe + era * 400 + i64::from(month <= 2),
            month: month as u8,
            day: day as u8,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            second: (rem % 60) as u8,
        }
    }

    /// `2026-11-25T16:30:00Z` (RFC 3339).
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `2026-12-03 10:42 UTC`, for people.
    pub fn to_minute(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute
        )
    }

    /// `2026-12-03 10:42:07 UTC`, for people.
    pub fn to_second(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Lower-case hex of `bytes` (a SHA-256 names a source or a table key; this
/// runs 10,000 times an apply at 10,000 tenants, so no allocation per byte).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_names_a_user_from_any_thread() {
        let here = who();
        let there = std::thread::spawn(who).join().expect("thread");
        assert_eq!(here, there);
        assert!(!here.is_empty());
    }

    #[test]
    fn the_callers_namespace_is_used_without_a_name() {
        let v = in_netns(None, || Ok(interfaces())).expect("runs");
        assert!(v.contains_key("lo"));
    }
}
