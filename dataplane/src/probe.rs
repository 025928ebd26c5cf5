//! Preflight in the kernel: packets run through a classifier version and a
//! set of tables *before* they serve traffic.
//!
//! The object's `fluxgate_probe` entry is the dispatcher's twin for
//! `BPF_PROG_TEST_RUN` only: it reads the probe overlay maps first (region
//! bases of staged tables, written there by [`Probe::overlay`]) and falls back to the live
//! tables, tail-calls the classifier version under test, counts nothing, and
//! records its decision in `FG_PROBE_TRACE`. Live traffic never reads the
//! overlay maps, so probing is invisible to it. One probe at a time per
//! attachment (the control plane serializes changes).

use std::os::fd::AsFd;

use aya::{
    maps::{Array, MapData},
    programs::Xdp,
};
use aya_obj::programs::XdpAttachType;
use fluxgate_common::{GATEWAY_SLOTS, Trace, maps, xdp};

use crate::{Error, PinnedAttachment, Slot, StagedTable, layout, program, slots, sys};

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
    /// The pinned probe entry (`fluxgate_probe`).
    program: Xdp,
    /// `FG_PROBE_TRACE`, opened once: a preflight runs thousands of packets,
    /// and opening the pin twice per packet cost more than the runs.
    trace: aya::maps::Map,
    /// The trace's sequence number after the last run (one probe session at
    /// a time per attachment: nothing else moves it).
    seq: std::cell::Cell<Option<u32>>,
    overlaid: Vec<Slot>,
}

impl PinnedAttachment {
    /// Starts a probe session that runs classifier `version` (see
    /// [`PinnedAttachment::versions`]) against the live tables, overlaid with
    /// whatever [`Probe::overlay`] adds.
    pub fn probe(&self, version: u32) -> Result<Probe<'_>, Error> {
        let path = self.dir().join(layout::PROBE);
        let program =
            Xdp::from_pin(&path, XdpAttachType::Interface).map_err(|e| Error::Incompatible {
                path,
                reason: format!("cannot open the pinned probe program: {e}"),
            })?;
        self.set_probe_version(version)?;
        let probe = Probe {
            pinned: self,
            program,
            trace: self.open_map(maps::PROBE_TRACE)?,
            seq: std::cell::Cell::new(None),
            overlaid: Vec::new(),
        };
        // Leftovers of a crashed probe session must not leak into this one.
        probe.clear_all()?;
        Ok(probe)
    }
}

impl Probe<'_> {
    /// Makes probe runs see `table` in `slot` instead of the live table.
    pub fn overlay(&mut self, slot: Slot, table: &StagedTable) -> Result<(), Error> {
        self.overlay_all(&[(slot, table)])
    }

    /// [`Probe::overlay`] for many tables at once (one batch write per overlay map).
    pub fn overlay_all(&mut self, tables: &[(Slot, &StagedTable)]) -> Result<(), Error> {
        let pool = self.pinned.cell_pool()?;
        let mut writes = Vec::with_capacity(tables.len());
        for (slot, table) in tables {
            if table.pool_id() != pool.id() {
                return Err(Error::InvalidArgument(format!(
                    "a table staged in another attachment's cell pool cannot overlay {slot:?}"
                )));
            }
            let loc = slots::slot_location(*slot, true, self.pinned.tenant_slots())?;
            writes.push((loc.map, loc.index, table.base()));
        }
        for (name, keys, bases) in slots::batches(writes) {
            self.write_slots(name, &keys, &bases)?;
        }
        self.overlaid.extend(tables.iter().map(|(s, _)| *s));
        Ok(())
    }

    /// One batch write of region bases into overlay map `name`; the regions
    /// they replace are quarantined (see `pool.rs`).
    fn write_slots(&self, name: &'static str, keys: &[u32], bases: &[u32]) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let map = self.pinned.open_map(name)?;
        let array: Array<&MapData, u32> =
            Array::try_from(&map).map_err(|e| Error::kernel("open a probe overlay map", e))?;
        let mut old = Vec::with_capacity(keys.len());
        for k in keys {
            old.push(
                array
                    .get(k, 0)
                    .map_err(|e| Error::kernel("read a probe overlay slot", e))?,
            );
        }
        let fd = layout::map_data(&map, name)?.fd().as_fd();
        self.pinned.cell_pool()?.quarantine(old);
        sys::update_batch(fd, keys, bases)
            .map_err(|e| Error::kernel("write probe overlay slots", e))
    }

    /// Clears overlay slots `keys` of `name` (base 0: the live table), in one batch.
    fn clear_slots(&self, name: &'static str, keys: &[u32]) -> Result<(), Error> {
        self.write_slots(name, keys, &vec![0; keys.len()])
    }

    /// Runs one frame; see [`ProbeResult`].
    pub fn run(&self, frame: &[u8]) -> Result<ProbeResult, Error> {
        let before = match self.seq.get() {
            Some(seq) => seq,
            None => self.trace()?.seq,
        };
        let verdict = program::test_run_xdp(&self.program, frame, 1)?.verdict;
        if verdict == xdp::ABORTED {
            return Err(Error::InvalidArgument(
                "the probed classifier version is not loaded (tail call failed)".into(),
            ));
        }
        let after = self.trace()?;
        self.seq.set(Some(after.seq));
        let (decided, tenant) = if after.seq == before {
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
        let array: Array<&MapData, Trace> =
            Array::try_from(&self.trace).map_err(|e| Error::kernel("open the probe trace", e))?;
        array
            .get(&0, 0)
            .map_err(|e| Error::kernel("read the probe trace", e))
    }

    fn clear_all(&self) -> Result<(), Error> {
        for name in [maps::PROBE_GATEWAY, maps::PROBE_TENANTS] {
            let map = self.pinned.open_map(name)?;
            let fd = layout::map_data(&map, name)?.fd().as_fd();
            let entries = if name == maps::PROBE_GATEWAY {
                GATEWAY_SLOTS
            } else {
                self.pinned.tenant_slots()
            };
            let bases = sys::read_mmapable_u32(fd, entries)
                .map_err(|e| Error::kernel("read the probe slots", e))?;
            let occupied: Vec<u32> = (0..entries)
                .filter(|&i| bases.get(i as usize).is_some_and(|b| *b != 0))
                .collect();
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
                .filter_map(|s| slots::slot_location(*s, true, self.pinned.tenant_slots()).ok())
                .filter(|loc| loc.map == name)
                .map(|loc| loc.index)
                .collect();
            // Best effort: the next probe session clears leftovers anyway.
            let _ = self.clear_slots(name, &keys);
        }
    }
}
