//! Preflight in the kernel: packets run through a classifier version and a
//! set of tables *before* they serve traffic.
//!
//! The object's `fluxgate_probe` entry is the dispatcher's twin for
//! `BPF_PROG_TEST_RUN` only: it reads the probe overlay maps first (staged
//! tables placed there by [`Probe::overlay`]) and falls back to the live
//! tables, tail-calls the classifier version under test, counts nothing, and
//! records its decision in `FG_PROBE_TRACE`. Live traffic never reads the
//! overlay maps, so probing is invisible to it. One probe at a time per
//! attachment (the control plane serializes changes).

use aya::maps::{Array, MapData};
use fluxgate_common::{GATEWAY_SLOTS, MAX_TENANTS, Trace, maps, xdp};

use std::os::fd::AsFd;

use crate::{Error, PinnedAttachment, Slot, StagedTable, sys, tables, versions};

/// What a probe run decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// XDP verdict (`fluxgate_common::xdp::PASS` / `DROP`).
    pub verdict: u32,
    /// Counter slot of the deciding rule or default; `None` when no table decided
    /// (nothing loaded) or the packet never reached the classifier (malformed,
    /// not IP).
    pub decided: Option<u32>,
    /// Tenant index the destination dispatched to.
    pub tenant: Option<u32>,
}

/// A probe session on a pinned attachment; clears its overlays when dropped.
pub struct Probe<'a> {
    pinned: &'a PinnedAttachment,
    program: std::os::fd::OwnedFd,
    /// An all-zero one-cell table: written over overlay slots to clear them
    /// (the probe program ignores tables without a valid header).
    placeholder: std::os::fd::OwnedFd,
    placeholder_id: u32,
    overlaid: Vec<Slot>,
}

impl PinnedAttachment {
    /// Starts a probe session that runs classifier `version` (see
    /// [`PinnedAttachment::versions`]) against the live tables, overlaid with
    /// whatever [`Probe::overlay`] adds.
    pub fn probe(&self, version: u32) -> Result<Probe<'_>, Error> {
        let path = self.dir().join(crate::pin::PROBE);
        let program = sys::obj_get(&path).map_err(|e| Error::Incompatible {
            path,
            reason: format!("cannot open the pinned probe program: {e}"),
        })?;
        self.set_probe_version(version)?;
        let (placeholder, placeholder_id) = self.placeholder()?;
        let probe = Probe {
            pinned: self,
            program,
            placeholder,
            placeholder_id,
            overlaid: Vec::new(),
        };
        // Leftovers of a crashed probe session must not leak into this one.
        probe.clear_all()?;
        Ok(probe)
    }
}

impl PinnedAttachment {
    /// The placeholder's map id if it exists (never creates it).
    pub(crate) fn known_placeholder_id(&self) -> Option<u32> {
        let mut cached = self.placeholder_id.lock().ok()?;
        if cached.is_none() {
            let fd = sys::obj_get(&self.dir().join(PLACEHOLDER)).ok()?;
            let data = aya::maps::MapData::from_fd(fd).ok()?;
            *cached = Some(data.info().ok()?.id());
        }
        *cached
    }

    /// The attachment's all-zero placeholder table (pinned beside the maps,
    /// created on first use) and its map id. Written over slots that must hold
    /// nothing — in one batch, where deleting costs a grace period per entry.
    pub(crate) fn placeholder(&self) -> Result<(std::os::fd::OwnedFd, u32), Error> {
        let path = self.dir().join(PLACEHOLDER);
        let fd = match sys::obj_get(&path) {
            Ok(fd) => fd,
            Err(_) => {
                let fd = sys::create_array(
                    "fg_probe_clear",
                    size_of::<fluxgate_common::table::Cell>() as u32,
                    1,
                    fluxgate_common::BPF_F_INNER_MAP,
                )
                .map_err(|e| Error::kernel("create the probe placeholder table", e))?;
                sys::obj_pin(fd.as_fd(), &path)
                    .map_err(|e| Error::kernel("pin the probe placeholder table", e))?;
                fd
            }
        };
        let data = aya::maps::MapData::from_fd(
            fd.try_clone()
                .map_err(|e| Error::kernel("duplicate a map fd", e))?,
        )
        .map_err(|e| Error::kernel("open the probe placeholder table", e))?;
        let id = data
            .info()
            .map_err(|e| Error::kernel("read the placeholder's info", e))?
            .id();
        if let Ok(mut cached) = self.placeholder_id.lock() {
            *cached = Some(id);
        }
        Ok((fd, id))
    }
}

/// Pin name of the probe placeholder table.
pub(crate) const PLACEHOLDER: &str = "probe_clear";

impl Probe<'_> {
    /// Makes probe runs see `table` in `slot` instead of the live table.
    pub fn overlay(&mut self, slot: Slot, table: &StagedTable) -> Result<(), Error> {
        self.overlay_all(&[(slot, table)])
    }

    /// [`Probe::overlay`] for many tables at once (one RCU grace period per
    /// outer map instead of one per table).
    pub fn overlay_all(&mut self, tables: &[(Slot, &StagedTable)]) -> Result<(), Error> {
        let mut writes = Vec::with_capacity(tables.len());
        for (slot, table) in tables {
            let loc = tables::slot_location(*slot, true)?;
            writes.push((loc.map, loc.index, table.raw_fd()));
        }
        for (name, keys, fds) in tables::batches(writes) {
            self.write_slots(name, &keys, &fds)?;
        }
        self.overlaid.extend(tables.iter().map(|(s, _)| *s));
        Ok(())
    }

    /// One batch update of overlay map `name` (one RCU grace period).
    fn write_slots(&self, name: &'static str, keys: &[u32], fds: &[u32]) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let map = self.pinned.open_map(name)?;
        sys::update_batch(versions::map_fd(&map)?, keys, fds)
            .map_err(|e| Error::kernel("write probe overlay slots", e))
    }

    /// Clears overlay slots `keys` of `name` with the placeholder, in one batch.
    fn clear_slots(&self, name: &'static str, keys: &[u32]) -> Result<(), Error> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.placeholder) as u32;
        self.write_slots(name, keys, &vec![fd; keys.len()])
    }

    /// Runs one frame; see [`ProbeResult`].
    pub fn run(&self, frame: &[u8]) -> Result<ProbeResult, Error> {
        let before = self.trace()?;
        if frame.len() < 14 {
            return Err(Error::InvalidArgument(format!(
                "BPF_PROG_TEST_RUN needs a frame of at least 14 bytes, got {}",
                frame.len()
            )));
        }
        let verdict = sys::test_run(self.program.as_fd(), frame)
            .map_err(|e| Error::kernel("run a probe (BPF_PROG_TEST_RUN)", e))?;
        if verdict == xdp::ABORTED {
            return Err(Error::InvalidArgument(
                "the probed classifier version is not loaded (tail call failed)".into(),
            ));
        }
        let after = self.trace()?;
        let (decided, tenant) = if after.seq == before.seq {
            (None, None)
        } else {
            let some = |v: u32| (v != Trace::NONE).then_some(v);
            (some(after.decided), some(after.tenant))
        };
        Ok(ProbeResult {
            verdict,
            decided,
            tenant,
        })
    }

    fn trace(&self) -> Result<Trace, Error> {
        let map = self.pinned.open_map(maps::PROBE_TRACE)?;
        let array: Array<&MapData, Trace> =
            Array::try_from(&map).map_err(|e| Error::kernel("open the probe trace", e))?;
        array
            .get(&0, 0)
            .map_err(|e| Error::kernel("read the probe trace", e))
    }

    fn clear_all(&self) -> Result<(), Error> {
        for name in [maps::PROBE_GATEWAY, maps::PROBE_TENANTS] {
            let map = self.pinned.open_map(name)?;
            let fd = versions::map_fd(&map)?;
            let entries = if name == maps::PROBE_GATEWAY {
                GATEWAY_SLOTS
            } else {
                MAX_TENANTS
            };
            let mut occupied = Vec::new();
            for i in 0..entries {
                let id =
                    sys::lookup_u32(fd, i).map_err(|e| Error::kernel("read a probe slot", e))?;
                if id.is_some_and(|id| id != self.placeholder_id) {
                    occupied.push(i);
                }
            }
            self.clear_slots(name, &occupied)?;
        }
        Ok(())
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        let overlaid = std::mem::take(&mut self.overlaid);
        for name in [maps::PROBE_GATEWAY, maps::PROBE_TENANTS] {
            let keys: Vec<u32> = overlaid
                .iter()
                .filter_map(|s| tables::slot_location(*s, true).ok())
                .filter(|loc| loc.map == name)
                .map(|loc| loc.index)
                .collect();
            // Best effort: the next probe session clears leftovers anyway.
            let _ = self.clear_slots(name, &keys);
        }
    }
}
