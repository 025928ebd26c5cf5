//! Table walks shared by every program of the object: the decision-tree
//! descent, the leaf program and the table default (layout: `fluxgate_common::table`).
//!
//! Both loops of a walk — over the trees of a table and over the cells of a
//! leaf — are `bpf_loop` callbacks: the verifier checks a callback body until
//! its states converge instead of once per iteration, per tree and per call
//! site. Unrolled, a leaf of up to `LEAF_CELLS_MAX` cells per tree and table put
//! the program past the verifier's 1M-instruction budget even at 4 cells.

use aya_ebpf::{cty::c_void, helpers::generated::bpf_loop, maps::PerCpuArray};
use fluxgate_common::{
    Counter,
    table::{
        KEY_WORDS, LEAF_CELLS_MAX, MAX_DEPTH, MAX_TREES, OPS_PER_CELL, REFS_PER_CELL, Ref, action,
    },
};

use crate::{Table, count};

/// A walk result packed in a u64 (`action << 32 | counter`), or [`NO_MATCH`].
/// Plain integers keep every register initialised on every path, which the
/// verifier insists on (an `Option<(u8, u32)>` left the action undefined on `None`).
pub(crate) const NO_MATCH: u64 = u64::MAX;

#[inline(always)]
pub(crate) const fn decided(action: u8, counter: u32) -> u64 {
    (action as u64) << 32 | counter as u64
}

/// The default action and its counter, from a table's header.
#[inline(always)]
pub(crate) fn default_of(table: &Table) -> u64 {
    match table.get(0) {
        Some(cell) => {
            let header = cell.header();
            decided(header.default_action as u8, header.default_counter)
        }
        None => NO_MATCH,
    }
}

/// Walks one table: each of its trees (at most `MAX_TREES`, last first) down to
/// a leaf, then the leaf's ops — per candidate rule its residual checks and an
/// end op — stopping at the best priority found so far. Count rules all live in
/// tree 0, scanned last, so a matched count rule is counted at once. Returns the
/// winner's action and counter, or `NO_MATCH`.
#[inline(always)]
pub(crate) fn walk(
    table: &Table,
    key: &[u32; KEY_WORDS],
    bytes: u64,
    counters: &PerCpuArray<Counter>,
) -> u64 {
    let Some(head) = table.get(0) else {
        return NO_MATCH;
    };
    let header = head.header();
    let trees = if header.trees == 0 || header.trees as usize > MAX_TREES {
        1
    } else {
        header.trees
    };
    let mut w = Walk {
        table: table as *const Table,
        key: key as *const [u32; KEY_WORDS],
        counters: counters as *const PerCpuArray<Counter>,
        bytes,
        result: NO_MATCH,
        miss: 0,
        roots: [
            header.root.0,
            header.more_roots[0].0,
            header.more_roots[1].0,
            header.more_roots[2].0,
        ],
        trees,
        best: u32::MAX,
        first: 0,
        n: 0,
    };
    // SAFETY: `walk_tree` has the callback signature bpf_loop expects and `w`
    // outlives the call.
    unsafe {
        bpf_loop(
            trees,
            walk_tree as *mut c_void,
            (&mut w as *mut Walk).cast(),
            0,
        );
    }
    w.result
}

/// The state of one table walk, shared with the `bpf_loop` callbacks.
#[repr(C)]
struct Walk {
    table: *const Table,
    key: *const [u32; KEY_WORDS],
    counters: *const PerCpuArray<Counter>,
    bytes: u64,
    result: u64,
    /// Bit 63 set: some check of the current rule failed (see `Op::miss`).
    miss: u64,
    roots: [u64; MAX_TREES],
    trees: u32,
    best: u32,
    /// The current leaf: first cell and number of ops.
    first: u32,
    n: u32,
}

/// Tree `trees - 1 - step`: descend, then scan the leaf. Returns 1 to stop.
extern "C" fn walk_tree(step: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` that `walk` passed to bpf_loop.
    let w = unsafe { &mut *ctx.cast::<Walk>() };
    if step >= w.trees {
        return 1;
    }
    let t = (w.trees - 1 - step) as usize & (MAX_TREES - 1);
    // SAFETY: the pointers in `Walk` were made from live references in `walk`.
    let (table, key) = unsafe { (&*w.table, &*w.key) };
    let leaf = descend(table, Ref(w.roots[t]), key);
    if !leaf.is_leaf() || leaf.count() == 0 {
        return 0;
    }
    w.first = leaf.cell();
    w.n = leaf.count();
    w.miss = 0;
    let cells = leaf.count().div_ceil(OPS_PER_CELL as u32);
    // SAFETY: as in `walk`.
    unsafe {
        bpf_loop(
            cells.min(LEAF_CELLS_MAX as u32),
            scan_cell as *mut c_void,
            ctx,
            0,
        );
    }
    0
}

/// Cell `c` of the current leaf: up to `OPS_PER_CELL` ops. Returns 1 to stop.
extern "C" fn scan_cell(c: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` that `walk` passed on.
    let w = unsafe { &mut *ctx.cast::<Walk>() };
    // SAFETY: the pointers in `Walk` were made from live references in `walk`.
    let (table, key) = unsafe { (&*w.table, &*w.key) };
    let Some(cell) = table.get(w.first.wrapping_add(c)) else {
        return 1;
    };
    let ops = cell.ops();
    let base = c.wrapping_mul(OPS_PER_CELL as u32);
    let mut i = 0;
    while i < OPS_PER_CELL {
        if base + i as u32 >= w.n {
            return 1;
        }
        let op = ops[i];
        i += 1;
        if !op.is_end() {
            w.miss |= op.miss(key);
            continue;
        }
        if op.b >= w.best {
            return 1;
        }
        if w.miss >> 63 == 0 {
            let act = op.action();
            if act != action::COUNT {
                w.best = op.b;
                w.result = decided(act, op.a);
                return 1;
            }
            // SAFETY: as above.
            count(unsafe { &*w.counters }, op.a, w.bytes);
        }
        w.miss = 0;
    }
    0
}

/// Follows one tree from `root` to its leaf (at most `MAX_DEPTH` steps); a
/// non-leaf result means a broken tree, which the caller skips.
#[inline(always)]
fn descend(table: &Table, root: Ref, key: &[u32; KEY_WORDS]) -> Ref {
    let mut r = root;
    let mut depth = 0;
    while depth < MAX_DEPTH {
        if r.is_leaf() {
            break;
        }
        let child = r.child(key[r.word() & (KEY_WORDS - 1)]);
        let Some(cell) = table.get(r.cell() + child / REFS_PER_CELL as u32) else {
            return Ref(u64::MAX);
        };
        r = Ref(cell.raw[child as usize % REFS_PER_CELL]);
        depth += 1;
    }
    r
}
