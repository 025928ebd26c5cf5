//! The last dropped packets of each tenant, sampled from the kernel's drop
//! capture by a thread of the status server.
//!
//! The sampler captures every interface's drops in turns of
//! [`TURN`], rate-limited in the kernel to [`RATE`] packets per second per
//! CPU, and keeps the newest [`KEEP`] per tenant in memory (the length and
//! the deciding rule only: never the bytes of the packets). The drop capture
//! is one channel per interface: while the status server runs, an operator's
//! `fluxgate capture` on the same interface takes it over (and switches it
//! off when it ends); the sampler's next turn switches it on again.

use std::{
    collections::{HashMap, VecDeque},
    ops::ControlFlow,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{Cancel, Gateway, Interface, capture::CaptureOptions, capture::Captured};

/// Drops kept per tenant.
pub const KEEP: usize = 20;
/// Packets per second per CPU the kernel hands the sampler, at most.
pub const RATE: u32 = 20;
/// How long one capture turn lasts (then the interface is opened again, so
/// rules of a new generation are named right).
pub const TURN: Duration = Duration::from_secs(2);

/// The newest drops per (interface, tenant).
type Recent = HashMap<(String, String), VecDeque<Captured>>;

/// Recent drops per (interface, tenant), shared between the sampler and the
/// pages.
#[derive(Clone, Debug, Default)]
pub struct DropSamples {
    inner: Arc<Mutex<Recent>>,
}

impl DropSamples {
    /// The newest drops of `tenant` on `iface`, oldest first.
    pub fn recent(&self, iface: &str, tenant: &str) -> Vec<Captured> {
        self.inner
            .lock()
            .ok()
            .and_then(|m| {
                m.get(&(iface.to_owned(), tenant.to_owned()))
                    .map(|q| q.iter().cloned().collect())
            })
            .unwrap_or_default()
    }

    fn push(&self, iface: &str, c: &Captured) {
        let Some(tenant) = &c.tenant else { return };
        if let Ok(mut m) = self.inner.lock() {
            let q = m.entry((iface.to_owned(), tenant.clone())).or_default();
            if q.len() == KEEP {
                q.pop_front();
            }
            q.push_back(c.clone());
        }
    }

    /// Samples drops of every interface of `gateway` until `stop` is
    /// cancelled (a failing interface is logged and retried next turn).
    pub fn run(&self, gateway: &Gateway, stop: &Cancel) {
        // Each new kind of failure is told once (not every turn).
        let mut last_error = String::new();
        // Interfaces stay open while their journal does not change: opening
        // one reads what each counter slot counts (megabytes at 10,000
        // tenants), an open one has it cached.
        let mut open: HashMap<String, (Option<Stamp>, Interface)> = HashMap::new();
        while !stop.is_cancelled() {
            let ifaces = match gateway.interfaces() {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!("status: cannot list interfaces: {e}");
                    Vec::new()
                }
            };
            if ifaces.is_empty() {
                std::thread::sleep(TURN);
            }
            for iface in ifaces {
                if stop.is_cancelled() {
                    break;
                }
                match self.turn(gateway, &iface, stop, &mut open) {
                    Ok(()) => last_error.clear(),
                    Err(e) => {
                        let text = format!("{iface}: {e}");
                        if text != last_error {
                            tracing::warn!("status: cannot sample drops on {text}");
                            last_error = text;
                        }
                        open.remove(&iface);
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            }
        }
    }

    fn turn(
        &self,
        gateway: &Gateway,
        iface: &str,
        stop: &Cancel,
        open: &mut HashMap<String, (Option<Stamp>, Interface)>,
    ) -> Result<(), crate::ControlError> {
        let stamp = Stamp::of(&gateway.state_dir().store(iface).dir().join("state.json"));
        let fresh = match open.get(iface) {
            Some((s, _)) => stamp.is_none() || *s != stamp,
            None => true,
        };
        if fresh {
            open.remove(iface);
            let it = gateway.open_read(Some(iface))?;
            open.insert(iface.to_owned(), (stamp, it));
        }
        let Some((_, it)) = open.get(iface) else {
            return Ok(());
        };
        if it.state().live.global.is_none() {
            std::thread::sleep(TURN);
            return Ok(());
        }
        let opts = CaptureOptions {
            rate: RATE,
            sample: 1,
            snaplen: 64,
            duration: TURN,
            ..CaptureOptions::default()
        };
        it.capture(&opts, None, stop, |c| {
            self.push(iface, c);
            ControlFlow::Continue(())
        })?;
        Ok(())
    }
}

/// What tells that an interface's journal changed (a new generation, a
/// rollback): `state.json`'s inode, size and modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(path: &std::path::Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })
    }
}
