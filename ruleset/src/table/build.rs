//! The tree compiler: equal-size bit cuts (HiCuts/HyperCuts-style) over aligned
//! boxes, with covering-rule pruning.
//!
//! A *region* fixes, per key word, the top bits of the word's significant width
//! ([`WORD_BITS`]): ports are 16-bit, the protocol 8-bit, and so on, so no cut is
//! ever spent on bits that are always zero. A node cuts the next 1–16 bits of one
//! word — including the TCP flags byte, so flag rules get separated like any
//! other field. Below the root, a region first narrows to the bits its rules
//! do not all agree on ([`Builder::narrow`]), so a cut never spends a level
//! on bits that separate nothing. A region's candidate list holds, in priority order, the rules
//! overlapping it up to the first terminal rule that covers the whole region
//! (everything after it can never decide there). The leaf check re-tests each
//! rule fully, so the tree only has to keep every rule that can match in every
//! leaf it overlaps.
//!
//! Choosing a cut: every word and width (1 up to what the space bound allows
//! a node of its size, at most 16) is scored by the largest child list and
//! the total of child list sizes (replication); the widest cut whose
//! replication plus half a reference per child (past the first 256 in a
//! table of at most [`SMALL_TABLE`] rules) stays within `spfac × n`
//! ([`TreeConfig::spfac`](super::TreeConfig::spfac)) and that shrinks the
//! largest list wins. Near the depth limit the space bound is dropped (and
//! cuts stay within 8 bits): a deeper tree would not verify, more memory is
//! the lesser evil.
//!
//! (One file of ~1,500 lines on purpose: region narrowing, cut scoring, leaf
//! packing and the space bound all read and write the one `Builder`'s state
//! in a single recursive pass; split, each part would need the others'
//! private invariants. The tests live in `tests.rs` beside it.)
//!
//! # Compile time (`compile_with`, synthetic ClassBench, release, 2026-11-25)
//!
//! | | 1k | 10k | 100k |
//! |---|---|---|---|
//! | ACL, session start | 640 ms | 3.4 s | 27.6 s |
//! | ACL, same trees, one core | 10 ms | 26 ms | 270 ms |
//! | ACL, now (partition at /8, 2 cores) | 10 ms | 22 ms | 170–230 ms |
//! | FW, now | 7 ms | 22–35 ms | 0.34–0.47 s (failed before) |
//! | IPC, now | 8 ms | 26–36 ms | 0.21 s (9.8 s before) |
//! | 2026-11-26, before (ACL / FW / IPC, median of 9) | | | 138–141 / 245–266 / 160–181 ms |
//! | 2026-11-26, after (same runs, alternating) | | | 105–112 / 153–185 / 128–144 ms |
//! | later 2026-11-26, before (best of 8, alternating) | | | 102–117 / 169–189 / 117–120 ms |
//! | later 2026-11-26, after | | | 90–104 / 135–137 / 99 ms |
//!
//! What the 2026-11-26 changes took out (FW 100k, where the #4 goal of
//! compile + load ≤ 200 ms was missed): the single-tree attempt beside the
//! forest (61 ms of CPU on one of two cores, and it always failed), the
//! shadow check's hash map (36 → 19 ms), a tree whose subtrees now build on
//! both cores (the FW class wide in both addresses: 2,430 rules, 120 ms on
//! one thread), flags cuts distributed in one pass, dead words skipped, and
//! counter slot allocation from bit sets (lowering 37 → 25 ms).
//!
//! What made it fast: a node's rules are distributed into *pruned* child lists
//! in one pass ([`Builder::distribute`]: a child differs from its parent in
//! one word, so overlap and covering need one compare per rule, with the other
//! words' covering precomputed as a mask); the widest cut that fits is found by
//! bisection over per-rule child totals, and only its largest child is counted,
//! from two histograms of span ends (long lists) or a sweep over sorted span
//! ends (short ones); the lowering and the tree reuse their buffers instead of
//! allocating a vector per rule and per child (allocation was 16 % of the FW
//! 100k compile's instructions); flags cuts are scored per group of
//! rules with the same flag constraint; and the single-tree attempt, which fails
//! on wildcard-heavy sets after replicating rules until its cell budget runs
//! out (2 s of the 2.6 s at 100k ACL), stops after a work budget instead.
//!
//! Where the time and memory went before the partition moved to /8: the tree
//! of rules wide in *both* addresses (tree 3 of [`partition`]) held the /9–/16
//! rules too and was cut down to the depth limit: at 100k ACL rules 706 rules
//! in 23,560 cells (105 ms); at 100k IPC, 2,522 rules in 1.09M cells (6 s); at
//! 100k FW more than 16 of them overlapped in one point and the compile failed.
//! Tried before that fix (not kept): ending a branch in a leaf when its best
//! cut leaves ≥ 75 % of the rules in one child — ACL 100k compiles in 0.13 s at
//! 176 bytes per rule, IPC 100k in 3.9 s at 883, but a packet checks 25 % more
//! leaf rules (9.1 instead of 7.3); the per-packet cost comes first.

use ahash::AHashMap as HashMap;

use super::{FlatRule, TableError, TableImage, TableStats, TreeConfig};
use fluxgate_common::table::{
    Cell, HEADER_LIST_SLOT, Header, KEY_WORDS, LEAF_MAX, LIST_SLOTS, MAX_CUT_BITS, MAX_DEPTH,
    MAX_TREES, RANGE_WORDS, REFS_PER_CELL, Ref, WORD_BITS, action, word,
};

/// Compiles `rules` (priority order: index 0 wins) into a table image.
///
/// `default_action` (PASS or DROP) and `default_counter` apply when no terminal
/// rule matches; `generation` is stored in the header. Rules that can never match
/// (a flags value outside its mask) are left out.
///
/// # Errors
///
/// [`TableError::InvalidRule`] for `lo > hi` or an unknown action,
/// [`TableError::BadDefault`], [`TableError::TooManyOverlapping`] when more than
/// `LEAF_MAX` rules cannot be separated (e.g. 17 COUNT rules matching one key), and
/// [`TableError::TooLarge`].
pub fn build_table(
    rules: &[FlatRule],
    default_action: u8,
    default_counter: u32,
    generation: u64,
    cfg: &TreeConfig,
) -> Result<TableImage, TableError> {
    if !matches!(default_action, action::PASS | action::DROP) {
        return Err(TableError::BadDefault(default_action));
    }
    for (index, r) in rules.iter().enumerate() {
        if r.action > action::LIMIT_DROP {
            return Err(TableError::InvalidRule {
                index,
                reason: "unknown action",
            });
        }
        if (0..RANGE_WORDS).any(|w| r.lo[w] > r.hi[w]) {
            return Err(TableError::InvalidRule {
                index,
                reason: "lo > hi on some word",
            });
        }
    }
    let live = unshadowed(rules);
    let leaf_target = cfg.leaf_target.clamp(1, LEAF_MAX);
    let spfac = if cfg.spfac.is_finite() {
        cfg.spfac.max(1.0)
    } else {
        4.0
    };
    // One tree when it stays small; otherwise (wildcard-heavy sets replicate
    // rules into every child) one tree per class of rules that are specific in
    // the same address fields (EffiCuts' separable trees), merged by priority.
    // The split trees get a generous but finite budget too: a pathological
    // rule set is refused with `TooLarge` instead of compiling for minutes.
    let split_budget = 64 * live.len() + (1 << 16);
    let groups = partition(rules, &live);
    let (cells, mut stats, depth_sum) = if groups.iter().filter(|g| !g.is_empty()).count() <= 1 {
        Builder::new(rules, leaf_target, spfac, split_budget, u64::MAX)
            .build(std::slice::from_ref(&live))?
    } else {
        // The single tree is tried first but given up early: where it fails it
        // replicates wildcards until the cell budget runs out, which cost 2 s
        // of a 2.6 s compile at 100k ClassBench ACL rules (measured
        // 2026-11-25); the work budget (rule visits while choosing and
        // distributing, ≈ 10 ns each) stops it after ≈ 10 ms + 0.3 µs per rule.
        let single_work = (1 << 20) + 32 * live.len() as u64;
        let single = || {
            Builder::new(
                rules,
                leaf_target,
                spfac,
                4 * live.len() + 1024,
                single_work,
            )
            .build(std::slice::from_ref(&live))
        };
        let split =
            || Builder::new(rules, leaf_target, spfac, split_budget, u64::MAX).build(&groups);
        let largest = groups.iter().map(Vec::len).max().unwrap_or(0);
        if live.len() >= PARALLEL_FROM && largest < live.len() - live.len() / 16 {
            // Large sets with more than 1/16 of their rules outside the main
            // class: the single tree fails (synthetic ClassBench ACL, FW and
            // IPC from 5k to 100k rules: every time), and its attempt would
            // take a core from the forest (FW 100k: 61 ms of CPU of a
            // 200 ms compile on two cores).
            split()?
        } else if live.len() >= PARALLEL_FROM {
            // Large sets: the single-tree attempt runs beside the forest.
            let (single, forest) = std::thread::scope(|scope| {
                let attempt = scope.spawn(single);
                let forest = split();
                let single = attempt
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (single, forest)
            });
            match single {
                Ok(done) => done,
                Err(_) => forest?,
            }
        } else {
            match single() {
                Ok(done) => done,
                Err(_) => split()?,
            }
        }
    };
    let mut cells = cells;
    lists_into_header(&mut cells, &mut stats);
    let n = cells.len();
    let cells_u32 = u32::try_from(n).map_err(|_| TableError::TooLarge(n as u64))?;
    let header = cells[0].header();
    cells[0] = Cell::from_header(&Header {
        magic: Header::MAGIC,
        default_action: u32::from(default_action),
        default_counter,
        cells: cells_u32,
        generation,
        ..*header
    });
    stats.rules = rules.len();
    stats.cells = n;
    stats.depth_avg = if stats.leaves == 0 {
        0.0
    } else {
        depth_sum as f64 / stats.leaves as f64
    };
    Ok(TableImage { cells, stats })
}

/// Moves the lists of trees that are a single leaf into the header's list
/// slots ([`Header::lists`]), as many as fit, and drops the list cell of a
/// one-tree table that is one leaf (its last cell, referenced by nothing
/// else). A tenant table of a few rules is then its header and its rules
/// (10k tenants of 4 rules: table bytes per rule 303 → 260; kernel, trace of
/// distinct packets, three alternating pairs of runs: 856–1019 → 835–907 ns).
fn lists_into_header(cells: &mut Vec<Cell>, stats: &mut TableStats) {
    let h = *cells[0].header();
    let trees = (h.trees as usize).clamp(1, MAX_TREES);
    let mut roots = [h.root, h.more_roots[0], h.more_roots[1], h.more_roots[2]];
    let mut next = HEADER_LIST_SLOT;
    let mut freed = None;
    for root in roots.iter_mut().take(trees) {
        let (at, slot, n) = (root.cell() as usize, root.slot(), root.count() as usize);
        if !root.is_leaf() || root.is_inline() || n == 0 || next + n > LIST_SLOTS || at == 0 {
            continue;
        }
        let list = *cells[at].list();
        cells[0].list_mut()[next..next + n].copy_from_slice(&list[slot..slot + n]);
        *root = Ref::leaf_at(0, next as u8, n as u8);
        next += n;
        if trees == 1 {
            freed = Some(at);
        }
    }
    let header = Header {
        root: roots[0],
        more_roots: [roots[1], roots[2], roots[3]],
        ..*cells[0].header()
    };
    cells[0] = Cell::from_header(&header);
    if freed.is_some_and(|at| at + 1 == cells.len()) {
        cells.pop();
        stats.list_cells -= 1;
    }
}

/// Rules that can match and are not shadowed: an exact duplicate of an earlier
/// terminal rule, or a rule inside one of the last [`SHADOW_WINDOW`] flag-free
/// terminal rules before it, can never decide anything (count rules always stay:
/// they count even behind a duplicate). Dropping them keeps leaves small where
/// rule sets repeat themselves.
fn unshadowed(rules: &[FlatRule]) -> Vec<u32> {
    let first = first_with_fingerprint(rules);
    let mut recent = Window::default();
    let mut out = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        if !r.can_match() {
            continue;
        }
        if r.is_terminal() {
            let f = first[i];
            if f != i as u32 && match_fields(&rules[f as usize]) == match_fields(r) {
                continue;
            }
            if recent.holds(rules, r) {
                continue;
            }
            if r.flags_mask == 0 {
                recent.push(i as u32, r);
            }
        }
        out.push(i as u32);
    }
    out
}

/// What a rule matches: two rules with equal fields are duplicates.
fn match_fields(r: &FlatRule) -> ([u32; RANGE_WORDS], [u32; RANGE_WORDS], u8, u8) {
    (r.lo, r.hi, r.flags_mask, r.flags_value)
}

/// Per terminal rule that can match, the first such rule with the same
/// 64-bit fingerprint of its match fields (itself when it is the first); a
/// collision merely keeps a duplicate. By sorting (hash, index) pairs: a
/// hash map of 100k fingerprints spent most of its time in cache misses.
fn first_with_fingerprint(rules: &[FlatRule]) -> Vec<u32> {
    let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
    let mut keyed: Vec<(u64, u32)> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_terminal() && r.can_match())
        .map(|(i, r)| {
            let h = hasher.hash_one(match_fields(r));
            (h, i as u32)
        })
        .collect();
    keyed.sort_unstable();
    let mut first: Vec<u32> = (0..rules.len() as u32).collect();
    for run in keyed.chunk_by(|a, b| a.0 == b.0) {
        for &(_, i) in &run[1..] {
            first[i as usize] = run[0].1;
        }
    }
    first
}

/// How many recent flag-free terminal rules [`unshadowed`] checks a rule against.
const SHADOW_WINDOW: usize = 32;

/// The last [`SHADOW_WINDOW`] flag-free terminal rules kept, with their
/// first address words side by side: a rule is rarely inside another one,
/// and those words rule almost every pair out in one branch-free, vectorised
/// pass (FW 100k: 16 → 3 ms against a short-circuit test per slot; adding
/// the ports and protocol to the pass cost more than the whole-rule checks
/// it saved).
struct Window {
    rules: [u32; SHADOW_WINDOW],
    src: [[u32; SHADOW_WINDOW]; 2],
    dst: [[u32; SHADOW_WINDOW]; 2],
    next: usize,
}

impl Default for Window {
    fn default() -> Self {
        // Empty slots hold `[MAX, 0]`: no range lies inside it.
        Window {
            rules: [0; SHADOW_WINDOW],
            src: [[u32::MAX; SHADOW_WINDOW], [0; SHADOW_WINDOW]],
            dst: [[u32::MAX; SHADOW_WINDOW], [0; SHADOW_WINDOW]],
            next: 0,
        }
    }
}

impl Window {
    /// Keeps rule `i` (`r`, flag-free), forgetting the oldest.
    fn push(&mut self, i: u32, r: &FlatRule) {
        let at = self.next;
        self.rules[at] = i;
        self.src[0][at] = r.lo[word::SRC];
        self.src[1][at] = r.hi[word::SRC];
        self.dst[0][at] = r.lo[word::DST];
        self.dst[1][at] = r.hi[word::DST];
        self.next = (at + 1) % SHADOW_WINDOW;
    }

    /// Whether `r` lies inside (every word within) a rule of the window.
    fn holds(&self, rules: &[FlatRule], r: &FlatRule) -> bool {
        let (s, d) = (
            (r.lo[word::SRC], r.hi[word::SRC]),
            (r.lo[word::DST], r.hi[word::DST]),
        );
        let mut candidates = 0u64;
        for k in 0..SHADOW_WINDOW {
            // `&`, not `&&`: a branch per slot was most of the time here.
            let inside = (self.src[0][k] <= s.0)
                & (s.1 <= self.src[1][k])
                & (self.dst[0][k] <= d.0)
                & (d.1 <= self.dst[1][k]);
            candidates |= u64::from(inside) << k;
        }
        while candidates != 0 {
            let k = candidates.trailing_zeros() as usize;
            candidates &= candidates - 1;
            // Only flag-free rules enter the window ([`unshadowed`]), and an
            // empty slot's `[MAX, 0]` holds no range: `e` is a real rule.
            let e = &rules[self.rules[k] as usize];
            debug_assert_eq!(e.flags_mask, 0);
            if (0..RANGE_WORDS).all(|w| e.lo[w] <= r.lo[w] && r.hi[w] <= e.hi[w]) {
                return true;
            }
        }
        false
    }
}

/// Splits `live` into at most [`MAX_TREES`] classes by whether the source and
/// destination address words are wide (≥ 2^24 values: an IPv4 /8 or shorter):
/// each class is specific in the same fields, so cuts on those fields
/// separate it with little replication. Order within a class stays priority order.
///
/// Why 2^24 and not 2^16 (measured 2026-11-25, synthetic ClassBench, 10k / 100k
/// rules): with 2^16 the class wide in both addresses also held the /9–/16
/// rules, which the tree then cut down to the depth limit — table bytes per
/// rule FW 1274 / (compile failed: 17 rules overlapping at depth 20), IPC
/// 361 / 1582, ACL 241 / 200; with 2^24: FW 280 / 238, IPC 237 / 199, ACL
/// 207 / 170, tree steps per packet 2–3 fewer, leaf rule checks the same
/// (ACL 100k: 1.2 more), IPC 100k compiled in 0.34 s instead of 9.8 s.
///
/// The walk scans the trees from the last to tree 0 and stops each leaf scan
/// at the best match found so far, so the class likeliest to hold a packet's
/// winner goes last: specific in both addresses, then specific in the
/// destination, in the source, wide in both (tree 0, with every count rule: the walk
/// needs them in the tree it scans last). Leaf rule checks per packet
/// (synthetic ClassBench ACL trace, 1k / 10k / 100k rules): 9.9 / 7.5 / 8.5
/// with the opposite order, 2.6 / 2.2 / 3.2 with this one.
///
/// Destination before source (2026-11-26, tenth session): the class specific
/// in the destination decides 28–33 % of the synthetic trace's packets, the
/// one specific in the source 4–17 % (ACL / FW / IPC, 1k–100k rules), so
/// scanning it first ends more scans early. Dependent loads per packet
/// (tree steps + leaf lists + rule checks, 20k trace packets), source first →
/// destination first: 1k rules ACL 7.57 → 7.52, FW 10.52 → 10.47, IPC 8.33 →
/// 8.28; 10k 7.37 → 7.17, 12.16 → 11.61, 9.89 → 9.47; 100k 9.20 → 8.36,
/// 14.83 → 13.23, 12.11 → 10.88. Of the six orders of the three classes
/// between tree 0 and the class specific in both, this one needs the fewest
/// loads in every family at 10k. Kernel, 100k distinct packets (median of 5
/// passes), alternating builds, 4 pairs at 100k rules: trace FW 1102–1339 →
/// 1003–1141 ns, ACL 742–762 → 685–740, IPC 851–1007 → 889–940 (3 of 4
/// pairs faster); hot20 FW 119–148 → 110–128, ACL 94–103 → 90–95. At 10k
/// rules the pairs differ by less than this machine's noise (ACL 319–617
/// against 338–645 ns). It also fits a gateway's traffic: tenants' rules
/// name their own destination addresses.
fn partition(rules: &[FlatRule], live: &[u32]) -> Vec<Vec<u32>> {
    let wide = |r: &FlatRule, w: usize| r.hi[w] - r.lo[w] >= 1 << 24;
    let mut groups = vec![Vec::new(); MAX_TREES];
    for &i in live {
        let r = &rules[i as usize];
        // Count rules all go to tree 0, which the walk scans last (see walk).
        let tree = if r.action == action::COUNT {
            0
        } else {
            let class = usize::from(wide(r, word::DST)) * 2 + usize::from(wide(r, word::SRC));
            MAX_TREES - 1 - class
        };
        groups[tree].push(i);
    }
    // Tree 0 holds every count rule; when it is empty there are none.
    groups.retain(|g| !g.is_empty());
    if groups.is_empty() {
        groups.push(Vec::new());
    }
    groups
}

/// Forests of at least this many rules build their trees in parallel (below,
/// a thread costs more than it saves: a gateway with 10k small tenants
/// compiles 10k small tables).
const PARALLEL_FROM: usize = 4096;

/// Trees of at least this many rules build their root's subtrees in
/// parallel ([`Builder::subtrees_in_parallel`]).
const PARALLEL_SUBTREES_FROM: usize = 1024;

/// Lists at most this long are re-scored after covering pruning ([`Builder::precise`]).
const PRECISE_BELOW: usize = 64;

/// Lists at most this long get the largest child of a cut by a sweep over
/// sorted span ends (O(n log n)), longer ones by histograms (O(n + 2^bits)).
const SWEEP_BELOW: usize = 64;

/// What one child of a cut costs in the space bound, in rule references
/// (see [`TreeConfig::spfac`]).
const CHILD_COST: f64 = 0.5;

/// Tables of at most this many rules get the first
/// [`SMALL_TABLE_FREE_CHILDREN`] children of every cut free (as every table
/// did before 2026-11-26): they stay small whatever their cuts (≈ 300 B per
/// rule at 1k rules) and get shallower. Charging those children too made the
/// 10-rule dispatch and global tables of the tenants bench 5–6 steps deep
/// instead of 3–4 (hot +25–40 ns per packet) and, at 1k rules, cost 7.21 /
/// 10.00 / 8.21 dependent loads per packet (ACL / FW / IPC) against 6.63 /
/// 9.38 / 7.75 with them free.
const SMALL_TABLE: usize = 2048;

/// See [`SMALL_TABLE`].
const SMALL_TABLE_FREE_CHILDREN: usize = 256;

/// Children of a cut whose per-child scratch lives on the stack.
const SMALL_CUT: usize = 1 << NEAR_LIMIT_BITS;

/// `n` zeroed entries: in `small` when it is long enough, else in `large`.
fn scratch<'s, T: Copy + Default>(
    small: &'s mut [T; SMALL_CUT],
    large: &'s mut Vec<T>,
    n: usize,
) -> &'s mut [T] {
    if n <= SMALL_CUT {
        &mut small[..n]
    } else {
        large.resize(n, T::default());
        large
    }
}

/// The widest cut a node near the depth limit (where any cut fits) may try.
const NEAR_LIMIT_BITS: u32 = 8;

/// An aligned box: per key word, the top `fixed` bits (of the word's significant
/// width) equal those of `lo`.
#[derive(Clone, Copy, Debug)]
struct Region {
    lo: [u32; KEY_WORDS],
    fixed: [u32; KEY_WORDS],
}

impl Region {
    fn root() -> Region {
        Region {
            lo: [0; KEY_WORDS],
            fixed: [0; KEY_WORDS],
        }
    }

    /// Bits of word `w` not fixed yet.
    fn free(&self, w: usize) -> u32 {
        WORD_BITS[w] - self.fixed[w]
    }

    /// Inclusive bounds of word `w` in the region.
    fn bounds(&self, w: usize) -> (u32, u32) {
        let free = self.free(w);
        let span = if free >= 32 {
            u32::MAX
        } else {
            (1u32 << free) - 1
        };
        (self.lo[w], self.lo[w] | span)
    }

    /// The child `c` of a cut of `bits` bits on word `w`.
    fn child(&self, w: usize, bits: u32, c: u32) -> Region {
        let mut r = *self;
        let shift = self.free(w) - bits;
        r.lo[w] |= c << shift;
        r.fixed[w] += bits;
        r
    }
}

/// The part of word `w` of `reg` inside the bounding box `bb` (may be empty: lo > hi).
fn effective(reg: &Region, w: usize, bb: (u32, u32)) -> (u32, u32) {
    let (lo, hi) = reg.bounds(w);
    (lo.max(bb.0), hi.min(bb.1))
}

/// Whether rule `r` can match some key of `reg` (inside the bounding box).
fn overlaps(r: &FlatRule, reg: &Region, bbox: &[(u32, u32); RANGE_WORDS]) -> bool {
    for (w, bb) in bbox.iter().enumerate() {
        let (lo, hi) = effective(reg, w, *bb);
        if lo > hi || r.hi[w] < lo || r.lo[w] > hi {
            return false;
        }
    }
    let (fixed_mask, fixed_val) = flags_fixed(reg);
    (r.flags_value ^ fixed_val) & r.flags_mask & fixed_mask == 0
}

/// Whether rule `r` matches every key of `reg` that lies in the bounding box of
/// all rules. That is enough to prune the rules after it: a key outside the
/// box matches no rule at all.
fn covers(r: &FlatRule, reg: &Region, bbox: &[(u32, u32); RANGE_WORDS]) -> bool {
    for (w, bb) in bbox.iter().enumerate() {
        let (lo, hi) = effective(reg, w, *bb);
        if r.lo[w] > lo || r.hi[w] < hi {
            return false;
        }
    }
    let (fixed_mask, fixed_val) = flags_fixed(reg);
    r.flags_mask & !fixed_mask == 0 && (r.flags_value ^ fixed_val) & r.flags_mask == 0
}

/// The TCP flag bits a region fixes, and their values.
fn flags_fixed(reg: &Region) -> (u8, u8) {
    let f = reg.fixed[word::TCP_FLAGS];
    let mask = if f == 0 {
        0
    } else {
        (0xffu32 << (8 - f)) as u8
    };
    (mask, reg.lo[word::TCP_FLAGS] as u8 & mask)
}

/// Child index range `[first, last]` of rule `r` for a cut of `bits` bits on
/// range word `w` of `reg` (the rule overlaps `reg`).
fn child_span(r: &FlatRule, reg: &Region, w: usize, bits: u32, bb: (u32, u32)) -> (u32, u32) {
    let (lo, _) = reg.bounds(w);
    let (elo, ehi) = effective(reg, w, bb);
    let shift = reg.free(w) - bits;
    let a = (r.lo[w].max(elo) - lo) >> shift;
    let b = (r.hi[w].min(ehi) - lo) >> shift;
    (a, b)
}

struct Builder<'a> {
    rules: &'a [FlatRule],
    bbox: [(u32, u32); RANGE_WORDS],
    budget: usize,
    /// Most rule visits (see `work`) before the build gives up with `TooLarge`.
    work_budget: u64,
    leaf_target: usize,
    spfac: f64,
    cells: Vec<Cell>,
    /// Cell of each rule (`u32::MAX`: not placed). Shared read-only by the
    /// builders of subtrees: every rule is placed before any tree is built.
    rule_cell: std::sync::Arc<Vec<u32>>,
    /// Where each distinct leaf list was placed: list cell and first slot.
    lists: HashMap<Vec<u32>, (u32, usize)>,
    /// The list cell being filled and how many of its slots are used.
    packing: Option<(u32, usize)>,
    /// Node cells allocated (first cell, cells): the cells holding refs.
    node_ranges: Vec<(u32, usize)>,
    /// The root of the tree a subtree builder built.
    root: Ref,
    stats: TableStats,
    depth_sum: usize,
    /// Rule visits so far while choosing cuts and distributing rules.
    work: std::cell::Cell<u64>,
    /// [`Header::bound_shift`]: rule cells lie at `1..=rules.len()`, so
    /// their indices shifted by it fit a byte.
    bound_shift: u32,
    /// Buffers of [`Builder::node`], reused from node to node (a growing
    /// `Vec` per child cost FW 100k 150k reallocations and 3 % of its
    /// compile's instructions).
    scratch: std::cell::RefCell<Scratch>,
}

/// Reusable buffers of one builder (see [`Builder::scratch`]).
#[derive(Default)]
struct Scratch {
    /// `node`: (child, rule) pairs, in the order `distribute` hands them.
    pairs: Vec<(u32, u32)>,
    /// `node`: where each child's list starts in `flat` (one more entry: the end).
    starts: Vec<u32>,
    /// `node`: every child's list, back to back.
    flat: Vec<u32>,
}

/// A scored cut.
#[derive(Clone, Copy, Debug)]
struct Cut {
    word: usize,
    bits: u32,
    max: usize,
    sum: usize,
}

impl<'a> Builder<'a> {
    fn new(
        rules: &'a [FlatRule],
        leaf_target: usize,
        spfac: f64,
        budget: usize,
        work_budget: u64,
    ) -> Self {
        let rule_cell = std::sync::Arc::new(vec![u32::MAX; rules.len()]);
        Builder::sharing(rules, leaf_target, spfac, budget, work_budget, rule_cell)
    }

    /// A builder whose rule cells are `rule_cell` (placed by [`Builder::build`]
    /// before any tree, then shared read-only).
    fn sharing(
        rules: &'a [FlatRule],
        leaf_target: usize,
        spfac: f64,
        budget: usize,
        work_budget: u64,
        rule_cell: std::sync::Arc<Vec<u32>>,
    ) -> Self {
        Builder {
            rules,
            bbox: [(0, u32::MAX); RANGE_WORDS],
            budget,
            work_budget,
            leaf_target,
            spfac,
            cells: vec![Cell::default()],
            rule_cell,
            lists: HashMap::default(),
            packing: None,
            node_ranges: Vec::new(),
            root: Ref::default(),
            stats: TableStats::default(),
            depth_sum: 0,
            work: std::cell::Cell::new(0),
            bound_shift: (u32::BITS - (rules.len() as u32).leading_zeros()).saturating_sub(8),
            scratch: std::cell::RefCell::default(),
        }
    }

    /// Builds one tree per group; returns the cells (header: roots and tree
    /// count only), the stats and the sum of leaf depths.
    fn build(mut self, groups: &[Vec<u32>]) -> Result<(Vec<Cell>, TableStats, usize), TableError> {
        // Rule cells first, in priority order: the cell index is the priority.
        let mut placed: Vec<u32> = groups.concat();
        placed.sort_unstable();
        placed.dedup();
        if placed.len() >= PARALLEL_FROM {
            // Room for the trees too (the synthetic 100k-rule sets take 1.4–1.9
            // cells per rule): appending them then never moves the rule cells
            // (FW 100k, five compiles: 124k → 81k page faults, CPU time
            // −12 %). Capacity never written costs no memory, and what the
            // trees leave is returned at the end.
            self.cells.reserve(2 * placed.len());
        }
        // Every rule cell written once, their places recorded in one pass.
        let base = self.cells.len() as u32;
        let rules = self.rules;
        let at = std::sync::Arc::make_mut(&mut self.rule_cell);
        debug_assert!(placed.iter().all(|&i| at[i as usize] == u32::MAX));
        for (k, &i) in placed.iter().enumerate() {
            at[i as usize] = base + k as u32;
        }
        self.cells.extend(
            placed
                .iter()
                .map(|&i| Cell::from_rule(&rules[i as usize].to_cell())),
        );
        self.stats.rule_cells += placed.len();
        let mut roots = [Ref::default(); MAX_TREES];
        let groups = &groups[..groups.len().min(MAX_TREES)];
        if groups.len() > 1 && groups.iter().map(Vec::len).sum::<usize>() >= PARALLEL_FROM {
            // Large forests: each tree built on its own thread into its own
            // cells, then appended and relocated, in tree order.
            let built: Vec<Result<Builder<'a>, TableError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = groups
                    .iter()
                    .map(|group| {
                        let mut sub = self.subtree_builder();
                        scope.spawn(move || {
                            let root = sub.tree(group)?;
                            sub.root = root;
                            Ok(sub)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    })
                    .collect()
            });
            self.reserve_for(&built);
            for (t, sub) in built.into_iter().enumerate() {
                roots[t] = self.append(sub?)?;
            }
        } else {
            for (t, group) in groups.iter().enumerate() {
                roots[t] = self.tree(group)?;
            }
        }
        let trees = groups.len().clamp(1, MAX_TREES);
        let mut first = [0; MAX_TREES];
        for (t, group) in groups.iter().enumerate() {
            first[t] = group
                .iter()
                .map(|&i| self.rule_cell[i as usize])
                .min()
                .unwrap_or(u32::MAX);
        }
        self.cells[0] = Cell::from_header(&Header {
            root: roots[0],
            more_roots: [roots[1], roots[2], roots[3]],
            trees: trees as u32,
            first,
            bound_shift: self.bound_shift,
            ..Header::default()
        });
        // Return the room reserved for trees that did not need it (large
        // tables only: see the reservation above).
        if self.cells.capacity() - self.cells.len() > PARALLEL_FROM {
            self.cells.shrink_to_fit();
        }
        Ok((self.cells, self.stats, self.depth_sum))
    }

    /// Builds the tree of `group`; returns its root.
    fn tree(&mut self, group: &[u32]) -> Result<Ref, TableError> {
        // Every key matching a rule of this tree lies in their bounding box.
        let mut bbox = [(u32::MAX, 0u32); RANGE_WORDS];
        for &i in group {
            let r = &self.rules[i as usize];
            for (w, bb) in bbox.iter_mut().enumerate() {
                *bb = (bb.0.min(r.lo[w]), bb.1.max(r.hi[w]));
            }
        }
        self.bbox = bbox;
        let region = Region::root();
        let list = self.prune(group, &region);
        self.node(list, region, 0, 0)
    }

    /// A builder for one tree of this table on another thread: same rules,
    /// rule cells already placed, its own (empty) cells, relocated by [`Builder::append`].
    fn subtree_builder(&self) -> Builder<'a> {
        let mut sub = Builder::sharing(
            self.rules,
            self.leaf_target,
            self.spfac,
            self.budget,
            self.work_budget,
            self.rule_cell.clone(),
        );
        sub.cells.clear();
        sub.bbox = self.bbox;
        sub
    }

    /// Builds `tasks` (a child's pruned list and region each) on
    /// [`std::thread::available_parallelism`] threads, each task into its own
    /// subtree builder, then appends them in task order (so the image does not
    /// depend on thread timing); returns their roots.
    fn subtrees_in_parallel(
        &mut self,
        tasks: Vec<(Vec<u32>, Region)>,
        depth: usize,
        dead: u16,
    ) -> Result<Vec<Ref>, TableError> {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(tasks.len());
        let jobs: Vec<_> = tasks
            .into_iter()
            .map(|(list, reg)| (self.subtree_builder(), list, reg))
            .enumerate()
            .collect();
        // Workers take the next job from one queue: subtrees differ in size.
        let queue = std::sync::Mutex::new(jobs.into_iter());
        let mut built: Vec<(usize, Result<Builder<'a>, TableError>)> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut out = Vec::new();
                            loop {
                                let job = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                                let Some((t, (mut sub, list, reg))) = job else {
                                    break out;
                                };
                                let built = sub.node(list, reg, depth, dead).map(|root| {
                                    sub.root = root;
                                    sub
                                });
                                out.push((t, built));
                            }
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| {
                        h.join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    })
                    .collect()
            });
        built.sort_unstable_by_key(|&(t, _)| t);
        let subs: Vec<_> = built.into_iter().map(|(_, sub)| sub).collect();
        self.reserve_for(&subs);
        subs.into_iter().map(|sub| self.append(sub?)).collect()
    }

    /// Room for the cells of every built subtree builder in `subs`, before
    /// they are appended, so the vector grows once instead of append by
    /// append (FW 100k: ≈ 750 fewer page faults per compile, of ≈ 21k).
    fn reserve_for(&mut self, subs: &[Result<Builder<'a>, TableError>]) {
        let cells: usize = subs.iter().flatten().map(|s| s.cells.len()).sum();
        self.cells.reserve(cells);
    }

    /// Appends the cells of a tree built by a [`Builder::subtree_builder`],
    /// relocating its refs; returns its root.
    fn append(&mut self, sub: Builder<'a>) -> Result<Ref, TableError> {
        let off = self.cells.len() as u64;
        // Refs to the tree's own cells move; empty leaves (count 0) point
        // nowhere, inline leaves at rule cells (placed before any subtree).
        let relocate = |r: Ref| {
            if !r.is_leaf() || (r.count() > 0 && !r.is_inline()) {
                Ref(r.0 + off)
            } else {
                r
            }
        };
        let mut cells = sub.cells;
        for &(first, n) in &sub.node_ranges {
            for cell in &mut cells[first as usize..first as usize + n] {
                for raw in &mut cell.raw {
                    *raw = relocate(Ref(*raw)).0;
                }
            }
        }
        // This builder may itself be appended to another one (a tree built
        // on its own thread, whose subtrees were too): its node cells move again.
        self.node_ranges.extend(
            sub.node_ranges
                .iter()
                .map(|&(first, n)| (first + off as u32, n)),
        );
        self.cells.extend_from_slice(&cells);
        if self.cells.len() > self.budget {
            return Err(TableError::TooLarge(self.cells.len() as u64));
        }
        self.stats.absorb(&sub.stats);
        self.depth_sum += sub.depth_sum;
        Ok(relocate(sub.root))
    }

    /// Rules of `list` overlapping `reg`, up to the first covering terminal rule.
    fn prune(&self, list: &[u32], reg: &Region) -> Vec<u32> {
        self.work.set(self.work.get() + list.len() as u64);
        let mut out = Vec::with_capacity(list.len());
        for &i in list {
            let r = &self.rules[i as usize];
            if !overlaps(r, reg, &self.bbox) {
                continue;
            }
            out.push(i);
            if r.is_terminal() && covers(r, reg, &self.bbox) {
                break;
            }
        }
        out
    }

    /// The subtree of `reg` for its pruned rule `list`. `dead`: words (bit
    /// `w`) on which no cut can separate these rules, found by an ancestor.
    fn node(
        &mut self,
        list: Vec<u32>,
        reg: Region,
        depth: usize,
        mut dead: u16,
    ) -> Result<Ref, TableError> {
        if self.cells.len() > self.budget || self.work.get() > self.work_budget {
            return Err(TableError::TooLarge(self.cells.len() as u64));
        }
        if list.len() <= self.leaf_target {
            return self.leaf(&list, depth);
        }
        let near_limit = depth + 2 >= MAX_DEPTH;
        // Below the root, cuts skip the bits all the node's rules agree on
        // ([`Builder::narrow`]). Not at the root: there those bits are what
        // sends a packet that matches no rule (a gateway blocklist's usual
        // packet) to an empty child at once; skipped, it would reach a leaf
        // and fail its rule checks (the tenants bench's global table: 1.00
        // → 1.64 dependent loads per packet).
        let reg = if depth == 0 {
            reg
        } else {
            self.narrow(&list, &reg, dead)
        };
        // Which words each rule leaves uncovered: `choose` re-scores small
        // lists with them, and the children's lists are pruned with them.
        let uncovered = self.uncovered(&list, &reg);
        let Some(cut) = self.choose(&list, &uncovered, &reg, near_limit, &mut dead) else {
            return self.leaf_or_error(list, depth, "rules inseparable");
        };
        if depth == MAX_DEPTH || (cut.max == list.len() && near_limit) {
            return self.leaf_or_error(list, depth, "max depth reached");
        }
        // The first rule of the list lands in some leaf below (nothing before
        // it can end a list): the lowest rule cell of the subtree.
        let bound = (self.rule_cell[list[0] as usize] >> self.bound_shift).min(255) as u8;
        let children = 1usize << cut.bits;
        let first = self.alloc(children.div_ceil(REFS_PER_CELL));
        self.node_ranges
            .push((first, children.div_ceil(REFS_PER_CELL)));
        self.stats.nodes += 1;
        self.stats.node_cells += children.div_ceil(REFS_PER_CELL);
        let shift = reg.free(cut.word) - cut.bits;
        // The pruned rule list of every child, in one pass, grouped by child
        // by a counting sort (which keeps each child's rules in priority
        // order): only the lists of distinct subtrees get an allocation.
        let mut scratch = self.scratch.take();
        let Scratch {
            pairs,
            starts,
            flat,
        } = &mut scratch;
        pairs.clear();
        starts.clear();
        starts.resize(children + 1, 0);
        self.distribute(&list, &uncovered, &reg, cut.word, cut.bits, |c, i| {
            pairs.push((c as u32, i));
            starts[c] += 1;
        });
        // Running ends, then filled backwards: each entry becomes its start.
        let mut end = 0;
        for s in starts.iter_mut() {
            end += *s;
            *s = end;
        }
        flat.clear();
        flat.resize(pairs.len(), 0);
        for &(c, i) in pairs.iter().rev() {
            starts[c as usize] -= 1;
            flat[starts[c as usize] as usize] = i;
        }
        // Siblings whose rules all span the cut word's whole range (or, for a
        // flags cut, leave the cut bits free) behave identically: they share
        // one subtree. Such a rule lands in every child the region's box
        // reaches, and the first covering terminal one ends every such child's
        // list at once, so all non-empty lists of this kind are the same list:
        // equal lengths mean equal lists.
        let (whole_lo, whole_hi) = match self.bbox.get(cut.word) {
            Some(bb) => effective(&reg, cut.word, *bb),
            None => (0, 0),
        };
        let flag_bits = (((1u32 << cut.bits) - 1) << shift) as u8;
        // Which subtree each child gets: its own, or its shareable
        // predecessor's (`task[c]` indexes `tasks`).
        let mut tasks: Vec<(Vec<u32>, Region)> = Vec::new();
        let mut task = Vec::with_capacity(children);
        let mut prev: Option<(usize, usize)> = None;
        for c in 0..children {
            let sub = &flat[starts[c] as usize..starts[c + 1] as usize];
            let shareable = sub.iter().all(|&i| {
                let r = &self.rules[i as usize];
                if cut.word == word::TCP_FLAGS {
                    r.flags_mask & flag_bits == 0
                } else {
                    r.lo[cut.word] <= whole_lo && r.hi[cut.word] >= whole_hi
                }
            });
            match prev {
                Some((len, t)) if shareable && len == sub.len() => {
                    debug_assert_eq!(tasks[t].0, sub);
                    task.push(t);
                }
                _ => {
                    if shareable {
                        prev = Some((sub.len(), tasks.len()));
                    }
                    task.push(tasks.len());
                    tasks.push((sub.to_vec(), reg.child(cut.word, cut.bits, c as u32)));
                }
            }
        }
        // The subtrees below reuse the buffers.
        self.scratch.replace(scratch);
        // A large tree's top-level subtrees are built in parallel (FW 100k:
        // the tree of rules wide in both addresses took 120 ms on one thread).
        // Not under a work budget, which counts per builder.
        let parallel = depth == 0
            && list.len() >= PARALLEL_SUBTREES_FROM
            && tasks.len() > 1
            && self.work_budget == u64::MAX;
        let roots = if parallel {
            self.subtrees_in_parallel(tasks, depth + 1, dead)?
        } else {
            let mut roots = Vec::with_capacity(tasks.len());
            for (sub, child) in tasks {
                roots.push(self.node(sub, child, depth + 1, dead)?);
            }
            roots
        };
        for (c, &t) in task.iter().enumerate() {
            let at = first as usize + c / REFS_PER_CELL;
            self.cells[at].raw[c % REFS_PER_CELL] = roots[t].0;
        }
        Ok(Ref::node(first, cut.word as u8, shift as u8, cut.bits as u8).with_bound(bound))
    }

    /// `reg` narrowed, on every word not in `dead` (and not the TCP flags),
    /// to the smallest aligned block that holds every rule's part of it: the
    /// bits on which all the rules agree separate nothing, so a cut starts
    /// below them instead of spending a level on them (path compression).
    /// The walk does not check skipped bits: a key that differs there
    /// matches no rule of `list` on that word, nor of any list below, so
    /// whichever leaf it reaches, every rule check there fails, as it must.
    /// Dependent loads per trace packet, before → after (ACL / FW / IPC):
    /// 1k rules 6.63 / 9.38 / 7.75 → 6.25 / 9.09 / 7.43, 10k 6.27 / 9.55 /
    /// 7.92 → 6.07 / 9.38 / 7.75, 100k unchanged; table bytes per rule at 1k
    /// 315 / 330 / 311 → 292 / 278 / 265; 10 tenants' dispatch 4 → 3 steps
    /// and 589 → 349 bytes per rule.
    fn narrow(&self, list: &[u32], reg: &Region, dead: u16) -> Region {
        let mut out = *reg;
        for (w, &width) in WORD_BITS.iter().enumerate().take(RANGE_WORDS) {
            let free = reg.free(w);
            if dead & (1 << w) != 0 || w == word::TCP_FLAGS || free == 0 {
                continue;
            }
            let (elo, ehi) = effective(reg, w, self.bbox[w]);
            let (mut lo, mut hi) = (u32::MAX, 0);
            for &i in list {
                let r = &self.rules[i as usize];
                lo = lo.min(r.lo[w].max(elo));
                hi = hi.max(r.hi[w].min(ehi));
            }
            if lo > hi {
                continue;
            }
            // Bits below the highest one where `lo` and `hi` differ stay free.
            let open = u32::BITS - (lo ^ hi).leading_zeros();
            debug_assert!(open <= free);
            out.fixed[w] = width - open;
            out.lo[w] = (u64::from(lo) & !((1u64 << open) - 1)) as u32;
        }
        out
    }

    /// The best cut of `reg` for `list`, or `None` when no word has free bits.
    /// `uncovered`: [`Builder::uncovered`] of `list` in `reg`.
    ///
    /// Per word, the widest cut whose replication fits the space bound (the
    /// narrowest when none fits) is scored by its largest child and total child
    /// size. Small lists are then re-scored after covering pruning
    /// ([`Builder::precise`]): the naive count misses that a cut can make one
    /// rule cover a child and end its list there, which is what finishes deep
    /// regions.
    ///
    /// Words in `dead` are skipped; words found unable to separate the rules
    /// are added to it. That holds for the whole subtree: a descendant's rules
    /// are a subset of these, and its region differs only by narrower words,
    /// so rules with one span on a word keep one span there. Most words of a
    /// ClassBench-like tree are dead from the root (IPv6 words, family, VLAN,
    /// interface, and often one address), which skips most of the span
    /// gathering (FW 100k: ≈ 5 % less compile CPU time).
    fn choose(
        &self,
        list: &[u32],
        uncovered: &[u16],
        reg: &Region,
        near_limit: bool,
        dead: &mut u16,
    ) -> Option<Cut> {
        let n = list.len();
        let max_bits = self.max_bits(n, near_limit);
        let mut per_word: Vec<Cut> = Vec::new();
        // Per rule, its clipped span on the word, relative to the region;
        // span starts and ends at the chosen width, sorted (short lists) or
        // as histograms (long ones).
        let mut spans: Vec<(u32, u32)> = Vec::with_capacity(n);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        let (mut hx, mut hy) = (Vec::<usize>::new(), Vec::<usize>::new());
        for w in 0..KEY_WORDS {
            let top = reg.free(w).min(max_bits);
            if *dead & (1 << w) != 0 {
                continue;
            }
            if top == 0 {
                *dead |= 1 << w;
                continue;
            }
            if w == word::TCP_FLAGS {
                match self.choose_flags(list, reg, near_limit, top) {
                    Some(cut) => per_word.push(cut),
                    None => *dead |= 1 << w,
                }
                continue;
            }
            let (base, _) = reg.bounds(w);
            let (elo, ehi) = effective(reg, w, self.bbox[w]);
            self.work.set(self.work.get() + n as u64);
            spans.clear();
            spans.extend(list.iter().map(|&i| {
                let r = &self.rules[i as usize];
                (r.lo[w].max(elo) - base, r.hi[w].min(ehi) - base)
            }));
            // Every rule with the same span: no cut on this word separates anything.
            if spans.iter().all(|s| *s == spans[0]) {
                *dead |= 1 << w;
                continue;
            }
            let drop = reg.free(w) - top;
            // A cut's child-list total grows with its width (a rule spans at
            // least as many children of a wider cut), and so do its paid
            // children: the widths that fit the space bound are 1..=b for
            // some b. Bisection finds b from totals counted per rule, O(n)
            // per width tried; only that cut's largest child is counted.
            // (Scoring every width cost O(2^top) per word: FW 100k, 477M → 319M
            // instructions in `choose`, same trees.) The work budget counts
            // this scoring as one pass over the rules, as before.
            self.work.set(self.work.get() + n as u64);
            let total = |bits: u32| -> usize {
                let s = drop + top - bits;
                spans
                    .iter()
                    .map(|&(x, y)| ((y >> s) - (x >> s)) as usize + 1)
                    .sum()
            };
            let fits = |bits: u32, sum: usize| {
                let cut = Cut {
                    word: w,
                    bits,
                    max: 0,
                    sum,
                };
                self.fits(cut, n, near_limit).1
            };
            // Widths up to `lo` fit (0: none known; `lo_sum` its total), from
            // `hi` on none does.
            let (mut lo, mut lo_sum, mut hi) = (0, 0, top + 1);
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                let sum = total(mid);
                if fits(mid, sum) {
                    (lo, lo_sum) = (mid, sum);
                } else {
                    hi = mid;
                }
            }
            // None fits: the narrowest cut, scored all the same.
            let (bits, sum) = if lo == 0 { (1, total(1)) } else { (lo, lo_sum) };
            let shift = drop + top - bits;
            let max = if n <= SWEEP_BELOW {
                // Few rules: the largest child by a sweep over sorted span ends.
                xs.clear();
                ys.clear();
                xs.extend(spans.iter().map(|&(x, _)| x >> shift));
                ys.extend(spans.iter().map(|&(_, y)| y >> shift));
                xs.sort_unstable();
                ys.sort_unstable();
                let (mut i, mut j, mut open, mut max) = (0, 0, 0usize, 0usize);
                while i < n {
                    if xs[i] <= ys[j] {
                        open += 1;
                        max = max.max(open);
                        i += 1;
                    } else {
                        open -= 1;
                        j += 1;
                    }
                }
                max
            } else {
                // Child sizes from two histograms: a rule spans child `c`
                // unless it starts after it or ends before it, so
                // size(c) = #(x < c + 1) - #(y < c).
                let width = 1usize << bits;
                hx.clear();
                hx.resize(width + 1, 0);
                hy.clear();
                hy.resize(width + 1, 0);
                for &(x, y) in &spans {
                    hx[(x >> shift) as usize + 1] += 1;
                    hy[(y >> shift) as usize + 1] += 1;
                }
                for v in 1..=width {
                    hx[v] += hx[v - 1];
                    hy[v] += hy[v - 1];
                }
                (0..width).map(|c| hx[c + 1] - hy[c]).max().unwrap_or(0)
            };
            per_word.push(Cut {
                word: w,
                bits,
                max,
                sum,
            });
        }
        if n <= PRECISE_BELOW {
            per_word
                .iter_mut()
                .for_each(|c| self.precise(list, uncovered, reg, c));
        }
        per_word
            .into_iter()
            .min_by_key(|c| (c.max, c.sum, u32::MAX - c.bits))
    }

    /// The naive score of a cut into `2^bits` children of the given list
    /// sizes. `fits`: its replication stays within the space bound.
    fn score(
        &self,
        word: usize,
        bits: u32,
        n: usize,
        sizes: impl Iterator<Item = usize>,
        near_limit: bool,
    ) -> (Cut, bool) {
        let (mut max, mut sum) = (0usize, 0usize);
        for size in sizes {
            max = max.max(size);
            sum += size;
        }
        self.fits(
            Cut {
                word,
                bits,
                max,
                sum,
            },
            n,
            near_limit,
        )
    }

    /// `cut` and whether it stays within the space bound: its child lists
    /// and its children, half a rule reference each, within `spfac` rule
    /// references per rule of the node ([`TreeConfig::spfac`]).
    fn fits(&self, cut: Cut, n: usize, near_limit: bool) -> (Cut, bool) {
        let k = 1usize << cut.bits;
        let paid = k.saturating_sub(self.free_children());
        let fits = near_limit || cut.sum as f64 + CHILD_COST * paid as f64 <= self.spfac * n as f64;
        (cut, fits)
    }

    /// Children every cut of this table gets without charge: the first
    /// [`SMALL_TABLE_FREE_CHILDREN`] in a table of at most [`SMALL_TABLE`]
    /// rules, none in a larger one.
    fn free_children(&self) -> usize {
        if self.rules.len() <= SMALL_TABLE {
            SMALL_TABLE_FREE_CHILDREN
        } else {
            0
        }
    }

    /// The widest cut worth scoring for a node of `n` rules: the widest whose
    /// children alone stay within the space bound.
    fn max_bits(&self, n: usize, near_limit: bool) -> u32 {
        if near_limit {
            return NEAR_LIMIT_BITS;
        }
        let children = (self.spfac * n as f64 / CHILD_COST) as usize + self.free_children();
        children.max(2).ilog2().min(MAX_CUT_BITS)
    }

    /// Of cuts on one word tried narrowest first: the widest fitting cut that
    /// still shrinks the largest child (the narrowest when none fits).
    fn wider(pick: Option<Cut>, (cut, fits): (Cut, bool)) -> Option<Cut> {
        match pick {
            Some(p) if !(fits && cut.max <= p.max) => Some(p),
            _ => Some(cut),
        }
    }

    /// [`Builder::choose`] for the TCP flags byte (bit positions, not ranges).
    /// A rule of `list` (pruned for `reg`) overlaps a child of a flags cut
    /// exactly when its flags agree with the bits the child fixes.
    fn choose_flags(&self, list: &[u32], reg: &Region, near_limit: bool, top: u32) -> Option<Cut> {
        let free_mask = (0xffu32 >> reg.fixed[word::TCP_FLAGS]) as u8;
        if list
            .iter()
            .all(|&i| self.rules[i as usize].flags_mask & free_mask == 0)
        {
            return None;
        }
        // Rules grouped by the flag bits they constrain (typically 2–3 groups).
        let mut groups: Vec<(u8, u8, usize)> = Vec::new();
        for &i in list {
            let r = &self.rules[i as usize];
            let key = (r.flags_mask, r.flags_value & r.flags_mask);
            match groups.iter_mut().find(|g| (g.0, g.1) == key) {
                Some(g) => g.2 += 1,
                None => groups.push((key.0, key.1, 1)),
            }
        }
        self.work.set(self.work.get() + list.len() as u64);
        let mut pick = None;
        for bits in 1..=top {
            let sizes = (0..1u32 << bits).map(|c| {
                let (mask, val) = flags_fixed(&reg.child(word::TCP_FLAGS, bits, c));
                groups
                    .iter()
                    .filter(|&&(m, v, _)| (v ^ val) & m & mask == 0)
                    .map(|g| g.2)
                    .sum()
            });
            pick = Self::wider(
                pick,
                self.score(word::TCP_FLAGS, bits, list.len(), sizes, near_limit),
            );
        }
        pick
    }

    /// Per rule of `list`, the words on which it does not cover `reg` (bit
    /// `w`), plus bit 15 when it cannot end a list there (not terminal, or its
    /// flags do not cover the region's).
    fn uncovered(&self, list: &[u32], reg: &Region) -> Vec<u16> {
        let (flags_mask, flags_val) = flags_fixed(reg);
        let whole: [(u32, u32); RANGE_WORDS] =
            std::array::from_fn(|v| effective(reg, v, self.bbox[v]));
        list.iter()
            .map(|&i| {
                let r = &self.rules[i as usize];
                let mut mask = 0u16;
                for (v, &(lo, hi)) in whole.iter().enumerate() {
                    if r.lo[v] > lo || r.hi[v] < hi {
                        mask |= 1 << v;
                    }
                }
                let ends = r.is_terminal()
                    && r.flags_mask & !flags_mask == 0
                    && (r.flags_value ^ flags_val) & r.flags_mask == 0;
                if !ends {
                    mask |= 1 << word::TCP_FLAGS;
                }
                mask
            })
            .collect()
    }

    /// Re-scores `cut` by the child lists after covering pruning.
    fn precise(&self, list: &[u32], uncovered: &[u16], reg: &Region, cut: &mut Cut) {
        let (mut small, mut large) = ([0usize; SMALL_CUT], Vec::new());
        let sizes = scratch(&mut small, &mut large, 1 << cut.bits);
        self.distribute(list, uncovered, reg, cut.word, cut.bits, |c, _| {
            sizes[c] += 1
        });
        cut.max = sizes.iter().copied().max().unwrap_or(0);
        cut.sum = sizes.iter().sum();
    }

    /// Hands `(child, rule)` for every rule of each child's pruned list, in
    /// priority order: exactly `self.prune(list, &reg.child(w, bits, c))` for
    /// every child `c`, in one pass over `list` (which must be pruned for `reg`).
    ///
    /// A child differs from `reg` in word `w` only, so a rule of `list`
    /// overlaps exactly the children of its span on `w`, and covers a child
    /// exactly when it covers `reg` on every other word and the child on `w`;
    /// a child's list ends at its first covering terminal rule.
    /// `uncovered` is [`Builder::uncovered`] of `list` and `reg`.
    fn distribute(
        &self,
        list: &[u32],
        uncovered: &[u16],
        reg: &Region,
        w: usize,
        bits: u32,
        mut push: impl FnMut(usize, u32),
    ) {
        self.work.set(self.work.get() + list.len() as u64);
        let k = 1usize << bits;
        let flags = w == word::TCP_FLAGS;
        // A flags cut: every rule overlaps `reg` on the other words; a child
        // fixes more flag bits, which a rule overlaps when its flags agree
        // with them and covers when it constrains no other bit.
        let fixed: Vec<(u8, u8)> = (0..if flags { k } else { 0 })
            .map(|c| flags_fixed(&reg.child(w, bits, c as u32)))
            .collect();
        let bb = self.bbox.get(w).copied().unwrap_or((0, u32::MAX));
        let (base, _) = reg.bounds(w);
        let shift = reg.free(w) - bits;
        let (mut small, mut large) = ([false; SMALL_CUT], Vec::new());
        let closed = scratch(&mut small, &mut large, k);
        let mut open = k;
        for (at, &i) in list.iter().enumerate() {
            if open == 0 {
                break;
            }
            let r = &self.rules[i as usize];
            let (a, b) = if flags {
                (0, k as u32 - 1)
            } else {
                child_span(r, reg, w, bits, bb)
            };
            // Whether `r` covers `reg` on every word but `w` (flags included
            // unless the cut is on them).
            let covers_rest = if flags {
                r.is_terminal() && uncovered[at] & ((1 << word::TCP_FLAGS) - 1) == 0
            } else {
                uncovered[at] & !(1 << w) == 0
            };
            self.work.set(self.work.get() + u64::from(b - a + 1));
            for c in a as usize..=b as usize {
                if closed[c] {
                    continue;
                }
                let covers = if flags {
                    let (mask, val) = fixed[c];
                    let disagree = (r.flags_value ^ val) & r.flags_mask;
                    if disagree & mask != 0 {
                        continue;
                    }
                    covers_rest && r.flags_mask & !mask == 0 && disagree == 0
                } else {
                    let clo = base | ((c as u32) << shift);
                    let chi = clo | (((1u64 << shift) - 1) as u32);
                    covers_rest && r.lo[w] <= clo.max(bb.0) && r.hi[w] >= chi.min(bb.1)
                };
                push(c, i);
                if covers {
                    closed[c] = true;
                    open -= 1;
                }
            }
        }
    }

    fn leaf_or_error(
        &mut self,
        list: Vec<u32>,
        depth: usize,
        why: &'static str,
    ) -> Result<Ref, TableError> {
        if list.len() <= LEAF_MAX {
            return self.leaf(&list, depth);
        }
        Err(TableError::TooManyOverlapping {
            count: list.len(),
            first_rules: list.iter().take(17).map(|&i| i as usize).collect(),
            why,
        })
    }

    fn leaf(&mut self, list: &[u32], depth: usize) -> Result<Ref, TableError> {
        if list.is_empty() {
            return Ok(Ref::leaf(0, 0));
        }
        self.stats.leaves += 1;
        self.depth_sum += depth;
        self.stats.depth_max = self.stats.depth_max.max(depth);
        self.stats.leaf_max = self.stats.leaf_max.max(list.len());
        let cells: Vec<u32> = list.iter().map(|&i| self.rule_cell[i as usize]).collect();
        debug_assert!(cells.iter().all(|&c| c != u32::MAX), "leaf rule not placed");
        if let Some(inline) = Ref::inline_leaf(&cells) {
            self.stats.inline_entries += cells.len();
            return Ok(inline);
        }
        let (at, slot) = match self.lists.get(&cells) {
            Some(&placed) => placed,
            None => {
                // Packed: the list goes after the previous one when it fits in
                // the same cell, else into a new cell.
                let n = cells.len();
                let (at, slot) = match self.packing {
                    Some((at, used)) if used + n <= LIST_SLOTS => (at, used),
                    _ => {
                        self.stats.list_cells += 1;
                        (self.alloc(1), 0)
                    }
                };
                self.cells[at as usize].list_mut()[slot..slot + n].copy_from_slice(&cells);
                self.packing = Some((at, slot + n));
                self.stats.list_entries += n;
                self.lists.insert(cells, (at, slot));
                (at, slot)
            }
        };
        Ok(Ref::leaf_at(at, slot as u8, list.len() as u8))
    }

    fn alloc(&mut self, n: usize) -> u32 {
        let at = self.cells.len() as u32;
        self.cells.resize(self.cells.len() + n, Cell::default());
        at
    }
}
