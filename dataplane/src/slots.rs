//! Where each table slot lives in the slot maps: a live slot (dispatch,
//! global, each tenant) is a record of two buffers of region bases and a
//! selector in `FG_GATEWAY` / `FG_TENANTS`; its probe overlay is one word in
//! `FG_PROBE_GW` / `FG_PROBE_TNT`.

use aya::maps::{Array, MapData};
use fluxgate_common::{SLOT_DISPATCH, SLOT_GLOBAL, maps, select_index, table_index};

use crate::Error;

/// Which table slot to publish into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// Destination → tenant dispatch.
    Dispatch,
    /// Global (provider) rules and the gateway default.
    Global,
    /// One tenant's rules and default, by tenant index.
    Tenant(u32),
}

/// The live buffer (0 or 1) that selector `select` of slot map `array` names.
pub(crate) fn live_bit<T: std::borrow::Borrow<MapData>>(
    array: &Array<T, u32>,
    select: u32,
) -> Result<u32, Error> {
    Ok(array
        .get(&select, 0)
        .map_err(|e| Error::kernel("read a table selector", e))?
        & 1)
}

/// Slot writes grouped per map, for one `BPF_MAP_UPDATE_BATCH` each:
/// `(map, key, value)` in, `(map, keys, values)` out, in first-seen map order.
pub(crate) fn batches(
    writes: impl IntoIterator<Item = (&'static str, u32, u32)>,
) -> Vec<(&'static str, Vec<u32>, Vec<u32>)> {
    let mut by_map: Vec<(&'static str, Vec<u32>, Vec<u32>)> = Vec::new();
    for (map, key, fd) in writes {
        match by_map.iter_mut().find(|(m, ..)| *m == map) {
            Some((_, keys, fds)) => {
                keys.push(key);
                fds.push(fd);
            }
            None => by_map.push((map, vec![key], vec![fd])),
        }
    }
    by_map
}

/// Where a table slot lives.
pub(crate) struct SlotLoc {
    /// The slot map (region bases).
    pub map: &'static str,
    /// Index of buffer 0 (live slots) or of the slot itself (probe overlay).
    pub index: u32,
    /// Index of its selector, in the same map (live slots only).
    pub select: Option<u32>,
}

/// Where `slot` lives; in the (single-buffered) probe overlay maps with
/// `probe`. Tenant slots past `tenant_slots` (the attachment's) are refused.
pub(crate) fn slot_location(slot: Slot, probe: bool, tenant_slots: u32) -> Result<SlotLoc, Error> {
    let (n, gateway) = match slot {
        Slot::Dispatch => (SLOT_DISPATCH, true),
        Slot::Global => (SLOT_GLOBAL, true),
        Slot::Tenant(t) if t < tenant_slots => (t, false),
        Slot::Tenant(t) => {
            return Err(Error::InvalidArgument(format!(
                "tenant index {t} is beyond the {tenant_slots} tenant slots of this attachment \
                 (attach with more tenant slots)"
            )));
        }
    };
    Ok(match (probe, gateway) {
        (true, true) => SlotLoc {
            map: maps::PROBE_GATEWAY,
            index: n,
            select: None,
        },
        (true, false) => SlotLoc {
            map: maps::PROBE_TENANTS,
            index: n,
            select: None,
        },
        (false, true) => SlotLoc {
            map: maps::GATEWAY,
            index: table_index(n, 0),
            select: Some(select_index(n)),
        },
        (false, false) => SlotLoc {
            map: maps::TENANTS,
            index: table_index(n, 0),
            select: Some(select_index(n)),
        },
    })
}
