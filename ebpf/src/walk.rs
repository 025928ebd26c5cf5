//! Table walks shared by every program of the object: the decision-tree
//! descent, the leaf scan and the table default (layout: `fluxgate_common::table`).

use aya_ebpf::maps::Array;
use fluxgate_common::{
    Counter,
    table::{
        Cell, CheckKey, Header, KEY_WORDS, LEAF_MAX, MAX_DEPTH, MAX_TREES, REFS_PER_CELL, Ref,
        action,
    },
};

use crate::{FG_POOL, count_on_cpu};

/// A table: region `[base, base + cells)` of the cell pool, `cells` read from
/// its header (cell `base`). Userspace writes a region completely before any
/// slot points at it and reuses it only after nothing points at it and an
/// RCU grace period has passed, so a packet always sees one whole table.
#[derive(Clone, Copy)]
pub(crate) struct Region {
    base: u32,
    cells: u32,
    /// Cell `base`, read once: walks and defaults use it without another lookup.
    header: &'static Header,
}

impl Region {
    /// The region starting at `base`, if it holds a valid header.
    #[inline(always)]
    pub(crate) fn at(base: u32) -> Option<Region> {
        let head = FG_POOL.get(base)?;
        let h = head.header();
        if h.magic != Header::MAGIC {
            return None;
        }
        Some(Region {
            base,
            cells: h.cells,
            header: h,
        })
    }
}

impl Region {
    /// Cell `i` of the table; `None` outside the region (a corrupt index can
    /// pick a wrong cell of its own table, never one of another table).
    #[inline(always)]
    pub(crate) fn cell(&self, i: u32) -> Option<&'static Cell> {
        if i >= self.cells {
            return None;
        }
        FG_POOL.get(self.base.wrapping_add(i))
    }
}

/// A walk result packed in a u64 (`index << 40 | action << 32 | counter`,
/// `index` the winning rule's cell index, kept only below 2^24, for a walk
/// that goes on after a rate-limited rule), or [`NO_MATCH`].
/// Plain integers keep every register initialised on every path, which the
/// verifier insists on (an `Option<(u8, u32)>` left the action undefined on `None`).
pub(crate) const NO_MATCH: u64 = u64::MAX;

/// Rule cell indices a walk result carries (24 bits).
pub(crate) const INDEX_MASK: u32 = (1 << 24) - 1;

/// The rule cell index of a walk result (not [`NO_MATCH`]).
#[inline(always)]
pub(crate) const fn index_of(decision: u64) -> u32 {
    (decision >> 40) as u32 & INDEX_MASK
}

#[inline(always)]
pub(crate) const fn decided(action: u8, counter: u32) -> u64 {
    (action as u64) << 32 | counter as u64
}

/// The default action and its counter, from a table's header.
#[inline(always)]
pub(crate) fn default_of(table: &Region) -> u64 {
    decided(
        table.header.default_action as u8,
        table.header.default_counter,
    )
}

/// Walks one table: each of its trees (at most `MAX_TREES`, last first) down to
/// a leaf, then the leaf's rule indices in priority order, stopping at the best
/// index found so far. Rule cells are laid out in priority order, so the lowest
/// matching terminal index wins across trees; count rules all live in tree 0,
/// scanned last, so a matched count rule is counted at once (in `counters`,
/// whose per-CPU blocks hold `counter_slots` slots). Returns the winner's
/// action and counter, or `NO_MATCH`.
///
/// Only rules at cell indices past `after` are considered (0: all): the walk
/// that goes on after a rule whose limit the packet was within.
#[inline(always)]
pub(crate) fn walk(
    table: &Region,
    key: &[u32; KEY_WORDS],
    check: &CheckKey,
    bytes: u64,
    counters: &Array<Counter>,
    counter_slots: u32,
    after: u32,
) -> u64 {
    let header = table.header;
    let trees = if header.trees == 0 {
        1
    } else {
        header.trees as usize
    };
    let mut best = u32::MAX;
    let mut step = 0;
    while step < MAX_TREES {
        if step >= trees {
            break;
        }
        let t = trees - 1 - step;
        step += 1;
        if header.first_of(t) >= best {
            continue;
        }
        let leaf = descend(table, header.root_of(t), key, best, header.bound_shift);
        if !leaf.is_leaf() || leaf.count() == 0 {
            continue;
        }
        let Some(list) = table.cell(leaf.list_cell()) else {
            continue;
        };
        let list = list.list();
        let n = leaf.count() as usize;
        let mut i = 0;
        while i < LEAF_MAX {
            if i >= n {
                break;
            }
            let idx = leaf.entry(list, i);
            if idx >= best {
                break;
            }
            i += 1;
            if idx <= after {
                continue;
            }
            let Some(rule) = table.cell(idx) else {
                continue;
            };
            let rule = rule.rule();
            if !rule.matches(check) {
                continue;
            }
            if rule.action == action::COUNT {
                count_on_cpu(counters, counter_slots, rule.counter, bytes);
                continue;
            }
            best = idx;
            break;
        }
    }
    // One more lookup, on purpose: keeping the winner's action and counter in a
    // register at the match instead (one variable more per exit path, across
    // four trees and three walks) puts the program past the verifier's
    // 1M-instruction budget (measured 2026-11-25).
    match table.cell(best) {
        Some(cell) if best != u32::MAX => {
            decided(cell.rule().action, cell.rule().counter) | (u64::from(best & INDEX_MASK) << 40)
        }
        _ => NO_MATCH,
    }
}

/// Follows one tree from `root` to its leaf (at most `MAX_DEPTH` steps); a
/// non-leaf result means a broken tree, which the caller skips, and an empty
/// leaf a node whose bound ([`Ref::bound`]) is at or past `best`.
#[inline(always)]
fn descend(table: &Region, root: Ref, key: &[u32; KEY_WORDS], best: u32, bound_shift: u32) -> Ref {
    let mut r = root;
    let mut depth = 0;
    while depth < MAX_DEPTH {
        if r.is_leaf() {
            break;
        }
        if r.beaten(bound_shift, best) {
            return Ref(0);
        }
        let child = r.child(key[r.word() & (KEY_WORDS - 1)]);
        let Some(cell) = table.cell(r.cell() + child / REFS_PER_CELL as u32) else {
            return Ref(u64::MAX);
        };
        r = Ref(cell.raw[child as usize % REFS_PER_CELL]);
        depth += 1;
    }
    r
}
