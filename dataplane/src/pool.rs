//! The cell pool: every table of an attachment is a region `[base, base +
//! cells)` of one fixed-size ARRAY map (`FG_POOL`), so the verifier inlines
//! every cell lookup of the walk (one map per table, behind ARRAY_OF_MAPS
//! slots, made each lookup a helper call; see `fluxgate_common::table`).
//!
//! Allocation is derived from pinned state, never from process memory alone:
//! a region is in use while a slot buffer (`FG_GATEWAY`, `FG_TENANTS`), a
//! probe overlay (`FG_PROBE_GW`, `FG_PROBE_TNT`) or a kept generation (a
//! token pinned under `tables/`, see `generations.rs`) points at it, or while
//! this process holds a [`crate::StagedTable`] for it. A region that lost a
//! reference in this process is *quarantined* until an RCU grace period has
//! passed (a packet that read the old base may still be walking it); a
//! process that adopts pinned state waits for one grace period before its
//! first allocation, for the same reason. So in-flight packets never see
//! reused cells, and a crash at any point leaks nothing for good: space no
//! one points at is free again for the next process.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    sync::{Arc, Mutex, MutexGuard, Weak},
};

use aya::maps::{Array, Map, MapData};
use fluxgate_common::table::{Cell, Header};

use crate::{Error, sys};

/// Pool state shared by every handle on the same pool map in this process.
pub(crate) struct PoolShared {
    /// The pool map, for aya's lookups and its fd (mappings).
    map: Map,
    /// Kernel map id of the pool.
    pub(crate) id: u32,
    /// Cells in the pool.
    pub(crate) size: u32,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    /// Regions held by live `StagedTable`s of this process: base → (cells, handles).
    held: BTreeMap<u32, (u32, usize)>,
    /// Regions that lost a reference since the last grace period (bases).
    quarantine: Vec<u32>,
    /// Whether a grace period passed since this process first saw the pool.
    graced: bool,
}

/// A handle on an attachment's cell pool (cheap to clone; internal).
#[derive(Clone)]
pub struct Pool(Arc<PoolShared>);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("id", &self.0.id)
            .field("size", &self.0.size)
            .finish()
    }
}

static REGISTRY: Mutex<Vec<(u32, Weak<PoolShared>)>> = Mutex::new(Vec::new());

impl Pool {
    /// The process-wide handle on pool map `fd`. `fresh`: the map was just
    /// created (nothing can be in flight in it), else adopted from pins.
    pub(crate) fn open(fd: OwnedFd, fresh: bool) -> Result<Pool, Error> {
        let data = MapData::from_fd(fd).map_err(|e| Error::kernel("open the cell pool", e))?;
        let info = data
            .info()
            .map_err(|e| Error::kernel("read the cell pool's info", e))?;
        let (id, size) = (info.id(), info.max_entries());
        let mut registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        registry.retain(|(_, w)| w.strong_count() > 0);
        if let Some(shared) = registry
            .iter()
            .find(|(i, _)| *i == id)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(Pool(shared));
        }
        let shared = Arc::new(PoolShared {
            map: Map::Array(data),
            id,
            size,
            state: Mutex::new(PoolState {
                graced: fresh,
                ..PoolState::default()
            }),
        });
        registry.push((id, Arc::downgrade(&shared)));
        Ok(Pool(shared))
    }

    pub(crate) fn id(&self) -> u32 {
        self.0.id
    }

    pub(crate) fn size(&self) -> u32 {
        self.0.size
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match &self.0.map {
            Map::Array(data) => data.fd().as_fd(),
            _ => unreachable!("`open` makes the pool an Array"),
        }
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Pool::header`] of every region in `bases`, read through one
    /// mapping of the (mmapable) pool instead of a lookup each: listing
    /// 100,000 kept tables of 50,000 tenants.
    pub(crate) fn headers(&self, bases: &[u32]) -> Result<Vec<Option<Header>>, Error> {
        let valid: Vec<u32> = bases
            .iter()
            .copied()
            .filter(|&b| b != 0 && b < self.size())
            .collect();
        let cells: Vec<Cell> = crate::sys::read_mmapable(self.fd(), &valid)
            .map_err(|e| Error::kernel("read table headers from the cell pool", e))?;
        let mut read = cells.into_iter();
        Ok(bases
            .iter()
            .map(|&b| {
                if b == 0 || b >= self.size() {
                    return None;
                }
                let cell = read.next()?;
                Some(*cell.header()).filter(|h| h.magic == Header::MAGIC && h.cells > 0)
            })
            .collect())
    }

    /// The header of the region at `base`, if it holds a valid one.
    pub(crate) fn header(&self, base: u32) -> Result<Option<Header>, Error> {
        if base == 0 || base >= self.size() {
            return Ok(None);
        }
        let cells: Array<&MapData, Cell> =
            Array::try_from(&self.0.map).map_err(|e| Error::kernel("open the cell pool", e))?;
        let cell = cells
            .get(&base, 0)
            .map_err(|e| Error::kernel("read a table header from the cell pool", e))?;
        Ok(Some(*cell.header()).filter(|h| h.magic == Header::MAGIC && h.cells > 0))
    }

    /// Registers one more handle on region `base` (`cells` long).
    pub(crate) fn hold(&self, base: u32, cells: u32) {
        self.state().held.entry(base).or_insert((cells, 0)).1 += 1;
    }

    /// Drops a handle on region `base`; the last one quarantines it.
    pub(crate) fn release(&self, base: u32) {
        let mut state = self.state();
        if let Some(entry) = state.held.get_mut(&base) {
            entry.1 -= 1;
            if entry.1 == 0 {
                state.held.remove(&base);
                state.quarantine.push(base);
            }
        }
    }

    /// Region `bases` lost a reference (a slot, overlay or kept pin moved on).
    pub(crate) fn quarantine(&self, bases: impl IntoIterator<Item = u32>) {
        let mut state = self.state();
        state
            .quarantine
            .extend(bases.into_iter().filter(|b| *b != 0));
    }

    /// Allocates a region for each of `sizes` (cells), first fit, given the
    /// regions pinned state points at (`referenced`: bases, cells read from
    /// their headers; `kept`: (base, cells)). Waits for a grace period first
    /// if this process never did, and again (releasing the quarantine) when
    /// the space is not there otherwise. Returns the bases, already held.
    pub(crate) fn allocate(
        &self,
        sizes: &[u32],
        referenced: &[u32],
        kept: &[(u32, u32)],
    ) -> Result<Vec<u32>, Error> {
        if sizes.is_empty() {
            return Ok(Vec::new());
        }
        let mut state = self.state();
        if !state.graced {
            grace()?;
            state.graced = true;
            state.quarantine.clear();
        }
        let mut used: BTreeMap<u32, u32> = BTreeMap::new();
        let add = |used: &mut BTreeMap<u32, u32>, base: u32, cells: u32| {
            let e = used.entry(base).or_insert(0);
            *e = (*e).max(cells);
        };
        for &(base, cells) in kept {
            add(&mut used, base, cells);
        }
        for (&base, &(cells, _)) in &state.held {
            add(&mut used, base, cells);
        }
        for &base in referenced {
            if base != 0 && !used.contains_key(&base) {
                let cells = self.header(base)?.map_or(1, |h| h.cells);
                add(&mut used, base, cells);
            }
        }
        let fit = |used: &BTreeMap<u32, u32>, extra: &[u32]| -> Result<Vec<u32>, Error> {
            let mut used = used.clone();
            for &base in extra {
                if base != 0 && !used.contains_key(&base) {
                    let cells = self.header(base)?.map_or(1, |h| h.cells);
                    used.insert(base, cells);
                }
            }
            Ok(first_fit(&used, self.size(), sizes).unwrap_or_default())
        };
        let mut bases = fit(&used, &state.quarantine)?;
        if bases.is_empty() && !sizes.is_empty() && !state.quarantine.is_empty() {
            grace()?;
            state.quarantine.clear();
            bases = fit(&used, &[])?;
        }
        if bases.is_empty() && !sizes.is_empty() {
            let free: u64 = free_cells(&used, self.size());
            return Err(Error::PoolFull {
                needed: sizes.iter().map(|&s| u64::from(s)).sum(),
                free,
                size: self.size(),
            });
        }
        for (&base, &cells) in bases.iter().zip(sizes) {
            state.held.entry(base).or_insert((cells, 0)).1 += 1;
        }
        Ok(bases)
    }
}

fn grace() -> Result<(), Error> {
    sys::synchronize_rcu().map_err(|e| Error::kernel("wait for an RCU grace period", e))
}

/// Places every size in the gaps of `used` (base → cells) within `[1, size)`,
/// first fit, in order; `None` if one does not fit. O((n + gaps) log gaps):
/// a max-tree over the gap lengths finds the leftmost gap that fits (10k
/// tenant tables among 80k kept regions must not cost n × m steps).
fn first_fit(used: &BTreeMap<u32, u32>, size: u32, sizes: &[u32]) -> Option<Vec<u32>> {
    // The gaps, in address order: (start, length).
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    let mut at = 1u64;
    for (&b, &c) in used {
        let (b, c) = (u64::from(b), u64::from(c));
        if b > at {
            gaps.push((at, b - at));
        }
        at = at.max(b + c);
    }
    if u64::from(size) > at {
        gaps.push((at, u64::from(size) - at));
    }
    if gaps.is_empty() {
        return sizes.is_empty().then(Vec::new);
    }
    let leaves = gaps.len().next_power_of_two();
    let mut tree = vec![0u64; 2 * leaves];
    for (i, g) in gaps.iter().enumerate() {
        tree[leaves + i] = g.1;
    }
    for i in (1..leaves).rev() {
        tree[i] = tree[2 * i].max(tree[2 * i + 1]);
    }
    let mut out = Vec::with_capacity(sizes.len());
    for &want in sizes {
        let want = u64::from(want);
        if tree[1] < want {
            return None;
        }
        let mut i = 1;
        while i < leaves {
            i = if tree[2 * i] >= want {
                2 * i
            } else {
                2 * i + 1
            };
        }
        let gap = &mut gaps[i - leaves];
        out.push(gap.0 as u32);
        gap.0 += want;
        gap.1 -= want;
        tree[i] = gap.1;
        while i > 1 {
            i /= 2;
            tree[i] = tree[2 * i].max(tree[2 * i + 1]);
        }
    }
    Some(out)
}

fn free_cells(used: &BTreeMap<u32, u32>, size: u32) -> u64 {
    let mut at = 1u64;
    let mut free = 0u64;
    for (&b, &c) in used {
        let (b, c) = (u64::from(b), u64::from(c));
        if b > at {
            free += b - at;
        }
        at = at.max(b + c);
    }
    free + u64::from(size).saturating_sub(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious quadratic first fit, to check the tree against.
    fn naive(used: &BTreeMap<u32, u32>, size: u32, sizes: &[u32]) -> Option<Vec<u32>> {
        let mut used: BTreeMap<u64, u64> = used
            .iter()
            .map(|(&b, &c)| (u64::from(b), u64::from(c)))
            .collect();
        let mut out = Vec::new();
        for &want in sizes {
            let want = u64::from(want);
            let mut at = 1u64;
            let mut found = None;
            for (&b, &c) in &used {
                if b >= at + want {
                    found = Some(at);
                    break;
                }
                at = at.max(b + c);
            }
            let base = match found {
                Some(b) => b,
                None if at + want <= u64::from(size) => at,
                None => return None,
            };
            used.insert(base, want);
            out.push(base as u32);
        }
        Some(out)
    }

    #[test]
    fn first_fit_agrees_with_the_naive_one() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = |n: u32| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % u64::from(n)) as u32
        };
        for _ in 0..500 {
            let size = 1 + rand(400);
            let mut used = BTreeMap::new();
            let mut at = 1;
            while at < size {
                at += rand(20);
                let c = 1 + rand(30);
                if at + c <= size && rand(2) == 0 {
                    used.insert(at, c);
                }
                at += c;
            }
            let sizes: Vec<u32> = (0..rand(8)).map(|_| 1 + rand(40)).collect();
            assert_eq!(
                first_fit(&used, size, &sizes),
                naive(&used, size, &sizes),
                "{used:?} {size} {sizes:?}"
            );
        }
    }

    #[test]
    fn first_fit_fills_gaps_in_order_and_refuses_what_does_not_fit() {
        let used: BTreeMap<u32, u32> = [(1, 3), (10, 5)].into_iter().collect();
        assert_eq!(first_fit(&used, 20, &[6, 2, 5]), None);
        assert_eq!(first_fit(&used, 20, &[6]), Some(vec![4]));
        assert_eq!(first_fit(&used, 20, &[6, 2]), Some(vec![4, 15]));
        assert_eq!(
            first_fit(&used, 20, &[2, 6]),
            None,
            "4..6 taken, 6..10 too small"
        );
        assert_eq!(first_fit(&used, 20, &[7]), None);
        assert_eq!(first_fit(&BTreeMap::new(), 4, &[3]), Some(vec![1]));
        assert_eq!(first_fit(&BTreeMap::new(), 4, &[]), Some(vec![]));
        let full: BTreeMap<u32, u32> = [(1, 19)].into_iter().collect();
        assert_eq!(first_fit(&full, 20, &[1]), None);
        assert_eq!(first_fit(&full, 20, &[]), Some(vec![]));
        assert_eq!(first_fit(&BTreeMap::new(), 4, &[4]), None);
        assert_eq!(free_cells(&used, 20), 20 - 1 - 3 - 5);
    }
}
