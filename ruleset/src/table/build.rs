//! The tree compiler: equal-size bit cuts (HiCuts/HyperCuts-style) over aligned
//! boxes, with covering-rule pruning.
//!
//! A *region* fixes, per key word, the top bits of the word's significant width
//! ([`WORD_BITS`]): ports are 16-bit, the protocol 8-bit, and so on, so no cut is
//! ever spent on bits that are always zero. A node cuts the next 1–8 bits of one
//! word — including the TCP flags byte, so flag rules get separated like any
//! other field. A region's candidate list holds, in priority order, the rules
//! overlapping it up to the first terminal rule that covers the whole region
//! (everything after it can never decide there). The leaf check re-tests each
//! rule fully, so the tree only has to keep every rule that can match in every
//! leaf it overlaps.
//!
//! Choosing a cut: every word and width 1–8 is scored by the largest child list
//! and the total of child list sizes (replication); the widest cut whose
//! replication stays within `spfac × n + 2^bits` and that shrinks the largest
//! list wins. Near the depth limit the space bound is dropped: a deeper tree
//! would not verify, more memory is the lesser evil.

use std::collections::HashMap;

use super::{FlatRule, TableError, TableImage, TableStats, TreeConfig};
use fluxgate_common::table::{
    Cell, Header, KEY_WORDS, LEAF_MAX, LEAF_OPS_MAX, MAX_CUT_BITS, MAX_DEPTH, MAX_TREES,
    OPS_PER_CELL, Op, RANGE_WORDS, REFS_PER_CELL, Ref, WORD_BITS, action, word,
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
        if r.action > action::TENANT {
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
    let budget = 4 * live.len() + 1024;
    let single = Builder::new(rules, leaf_target, spfac, budget).build(std::slice::from_ref(&live));
    // The split trees get a generous but finite budget too: a pathological
    // rule set is refused with `TooLarge` instead of compiling for minutes.
    let split_budget = 64 * live.len() + (1 << 16);
    let (cells, mut stats, depth_sum) = match single {
        Ok(done) => done,
        Err(_) => {
            Builder::new(rules, leaf_target, spfac, split_budget).build(&partition(rules, &live))?
        }
    };
    let n = cells.len();
    let mut cells = cells;
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

/// Rules that can match and are not shadowed: an exact duplicate of an earlier
/// terminal rule, or a rule inside one of the last [`SHADOW_WINDOW`] flag-free
/// terminal rules before it, can never decide anything (count rules always stay:
/// they count even behind a duplicate). Dropping them keeps leaves small where
/// rule sets repeat themselves.
fn unshadowed(rules: &[FlatRule]) -> Vec<u32> {
    const SHADOW_WINDOW: usize = 32;
    let mut seen: HashMap<([u32; RANGE_WORDS], [u32; RANGE_WORDS], u8, u8), ()> = HashMap::new();
    let mut recent: std::collections::VecDeque<u32> = std::collections::VecDeque::new();
    let mut out = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        if !r.can_match() {
            continue;
        }
        if r.is_terminal() {
            let key = (r.lo, r.hi, r.flags_mask, r.flags_value);
            if seen.insert(key, ()).is_some() {
                continue;
            }
            let inside = |e: &FlatRule| {
                e.flags_mask == 0
                    && (0..RANGE_WORDS).all(|w| e.lo[w] <= r.lo[w] && r.hi[w] <= e.hi[w])
            };
            if recent.iter().any(|&e| inside(&rules[e as usize])) {
                continue;
            }
            if r.flags_mask == 0 {
                if recent.len() == SHADOW_WINDOW {
                    recent.pop_front();
                }
                recent.push_back(i as u32);
            }
        }
        out.push(i as u32);
    }
    out
}

/// Splits `live` into at most [`MAX_TREES`] classes by whether the source and
/// destination address words are wide (≥ 2^16 values): each class is specific
/// in the same fields, so cuts on those fields separate it with little
/// replication. Order within a class stays priority order.
fn partition(rules: &[FlatRule], live: &[u32]) -> Vec<Vec<u32>> {
    let wide = |r: &FlatRule, w: usize| r.hi[w] - r.lo[w] >= 1 << 16;
    let mut groups = vec![Vec::new(); MAX_TREES];
    for &i in live {
        let r = &rules[i as usize];
        // Count rules all go to tree 0, which the walk scans last (see walk).
        let g = if r.action == action::COUNT {
            0
        } else {
            usize::from(wide(r, word::SRC)) * 2 + usize::from(wide(r, word::DST))
        };
        groups[g].push(i);
    }
    // Keep tree 0 first even when empty of rules, so counts stay in tree 0.
    let first = groups.remove(0);
    groups.retain(|g| !g.is_empty());
    groups.insert(0, first);
    if groups.is_empty() {
        groups.push(Vec::new());
    }
    groups
}

/// Lists at most this long are cut by [`Builder::choose_precisely`].
const PRECISE_BELOW: usize = 64;

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
    leaf_target: usize,
    spfac: f64,
    cells: Vec<Cell>,
    referenced: Vec<bool>,
    leaves: HashMap<Vec<Op>, u32>,
    ops: Vec<Op>,
    stats: TableStats,
    depth_sum: usize,
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
    fn new(rules: &'a [FlatRule], leaf_target: usize, spfac: f64, budget: usize) -> Self {
        Builder {
            rules,
            bbox: [(0, u32::MAX); RANGE_WORDS],
            budget,
            leaf_target,
            spfac,
            cells: vec![Cell::default()],
            referenced: vec![false; rules.len()],
            leaves: HashMap::new(),
            ops: Vec::new(),
            stats: TableStats::default(),
            depth_sum: 0,
        }
    }

    /// Builds one tree per group; returns the cells (header: roots and tree
    /// count only), the stats and the sum of leaf depths.
    fn build(mut self, groups: &[Vec<u32>]) -> Result<(Vec<Cell>, TableStats, usize), TableError> {
        let mut roots = [Ref::default(); MAX_TREES];
        for (t, group) in groups.iter().take(MAX_TREES).enumerate() {
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
            roots[t] = self.node(list, region, Known::root(), 0)?;
        }
        let trees = groups.len().clamp(1, MAX_TREES);
        self.cells[0] = Cell::from_header(&Header {
            root: roots[0],
            more_roots: [roots[1], roots[2], roots[3]],
            trees: trees as u32,
            ..Header::default()
        });
        self.stats.rule_cells = self.referenced.iter().filter(|&&r| r).count();
        Ok((self.cells, self.stats, self.depth_sum))
    }

    /// Rules of `list` overlapping `reg`, up to the first covering terminal rule.
    fn prune(&self, list: &[u32], reg: &Region) -> Vec<u32> {
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

    fn node(
        &mut self,
        list: Vec<u32>,
        reg: Region,
        known: Known,
        depth: usize,
    ) -> Result<Ref, TableError> {
        if self.cells.len() > self.budget {
            return Err(TableError::TooLarge(self.cells.len() as u64));
        }
        if list.len() <= self.leaf_target {
            return self.leaf(&list, &known, depth);
        }
        let near_limit = depth + 2 >= MAX_DEPTH;
        let Some(cut) = self.choose(&list, &reg, near_limit) else {
            return self.leaf_or_error(list, &known, depth, "rules inseparable");
        };
        if depth == MAX_DEPTH || (cut.max == list.len() && near_limit) {
            return self.leaf_or_error(list, &known, depth, "max depth reached");
        }
        let children = 1usize << cut.bits;
        let first = self.alloc(children.div_ceil(REFS_PER_CELL));
        self.stats.nodes += 1;
        self.stats.node_cells += children.div_ceil(REFS_PER_CELL);
        let shift = reg.free(cut.word) - cut.bits;
        // Distribute the rules into the children they overlap (priority order is
        // kept), then prune each child list against its region.
        let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); children];
        for &i in &list {
            let r = &self.rules[i as usize];
            if cut.word == word::TCP_FLAGS {
                for (c, b) in buckets.iter_mut().enumerate() {
                    if overlaps(r, &reg.child(cut.word, cut.bits, c as u32), &self.bbox) {
                        b.push(i);
                    }
                }
            } else {
                let (a, b) = child_span(r, &reg, cut.word, cut.bits, self.bbox[cut.word]);
                for bucket in &mut buckets[a as usize..=b as usize] {
                    bucket.push(i);
                }
            }
        }
        let subs: Vec<Vec<u32>> = buckets
            .into_iter()
            .enumerate()
            .map(|(c, bucket)| self.prune(&bucket, &reg.child(cut.word, cut.bits, c as u32)))
            .collect();
        // Siblings with the same list whose rules all span the cut word's
        // whole child range behave identically: a run of them shares one subtree.
        let shareable: Vec<bool> = subs
            .iter()
            .map(|sub| {
                sub.iter().all(|&i| {
                    let r = &self.rules[i as usize];
                    cut.word == word::TCP_FLAGS
                        && r.flags_mask & (((1u32 << cut.bits) - 1) << shift) as u8 == 0
                        || cut.word != word::TCP_FLAGS && {
                            let (lo, hi) = effective(&reg, cut.word, self.bbox[cut.word]);
                            r.lo[cut.word] <= lo && r.hi[cut.word] >= hi
                        }
                })
            })
            .collect();
        let mut c = 0;
        while c < children {
            let mut last = c;
            while shareable[c]
                && last + 1 < children
                && shareable[last + 1]
                && subs[last + 1] == subs[c]
            {
                last += 1;
            }
            let child = reg.child(cut.word, cut.bits, c as u32);
            let k = known.cut(&reg, cut.word, cut.bits, c as u32, last as u32);
            let r = self.node(subs[c].clone(), child, k, depth + 1)?;
            for x in c..=last {
                let at = first as usize + x / REFS_PER_CELL;
                self.cells[at].raw[x % REFS_PER_CELL] = r.0;
            }
            c = last + 1;
        }
        Ok(Ref::node(
            first,
            cut.word as u8,
            shift as u8,
            cut.bits as u8,
        ))
    }

    /// The best cut of `reg` for `list`, or `None` when no word has free bits.
    ///
    /// Per word, the widest cut whose replication fits the space bound (the
    /// narrowest when none fits) is scored by its largest child and total child
    /// size. Small lists are then re-scored after covering pruning
    /// ([`Builder::precise`]): the naive count misses that a cut can make one
    /// rule cover a child and end its list there, which is what finishes deep
    /// regions.
    fn choose(&self, list: &[u32], reg: &Region, near_limit: bool) -> Option<Cut> {
        let n = list.len();
        let mut per_word: Vec<Cut> = Vec::new();
        let mut counts = vec![0i64; (1 << MAX_CUT_BITS) + 1];
        for w in 0..KEY_WORDS {
            let top = reg.free(w).min(MAX_CUT_BITS);
            let mut pick: Option<(Cut, bool)> = None;
            for bits in 1..=top {
                let k = 1usize << bits;
                counts[..=k].iter_mut().for_each(|c| *c = 0);
                if w == word::TCP_FLAGS {
                    for &i in list {
                        let r = &self.rules[i as usize];
                        for c in 0..k as u32 {
                            if overlaps(r, &reg.child(word::TCP_FLAGS, bits, c), &self.bbox) {
                                counts[c as usize] += 1;
                                counts[c as usize + 1] -= 1;
                            }
                        }
                    }
                } else {
                    for &i in list {
                        let (a, b) =
                            child_span(&self.rules[i as usize], reg, w, bits, self.bbox[w]);
                        counts[a as usize] += 1;
                        counts[b as usize + 1] -= 1;
                    }
                }
                let (mut run, mut max, mut sum) = (0i64, 0usize, 0usize);
                for c in &counts[..k] {
                    run += c;
                    max = max.max(run as usize);
                    sum += run as usize;
                }
                let fits = near_limit || (sum + k) as f64 <= self.spfac * n as f64 + k as f64;
                let cut = Cut {
                    word: w,
                    bits,
                    max,
                    sum,
                };
                // Widest fitting cut that still shrinks the largest child.
                match pick {
                    None => pick = Some((cut, fits)),
                    Some((p, _)) if fits && cut.max <= p.max => pick = Some((cut, fits)),
                    _ => {}
                }
            }
            if let Some((cut, _)) = pick {
                per_word.push(cut);
            }
        }
        if n <= PRECISE_BELOW {
            per_word.iter_mut().for_each(|c| self.precise(list, reg, c));
        }
        per_word
            .into_iter()
            .min_by_key(|c| (c.max, c.sum, u32::MAX - c.bits))
    }

    /// Re-scores `cut` by the child lists after covering pruning.
    fn precise(&self, list: &[u32], reg: &Region, cut: &mut Cut) {
        let (mut max, mut sum) = (0, 0);
        for c in 0..1u32 << cut.bits {
            let n = self.prune(list, &reg.child(cut.word, cut.bits, c)).len();
            max = max.max(n);
            sum += n;
        }
        cut.max = max;
        cut.sum = sum;
    }

    fn leaf_or_error(
        &mut self,
        list: Vec<u32>,
        known: &Known,
        depth: usize,
        why: &'static str,
    ) -> Result<Ref, TableError> {
        if list.len() <= LEAF_MAX {
            return self.leaf(&list, known, depth);
        }
        Err(TableError::TooManyOverlapping {
            count: list.len(),
            first_rules: list.iter().take(17).map(|&i| i as usize).collect(),
            why,
        })
    }

    /// A leaf: the residual ops of `list` (at most [`LEAF_MAX`] rules), shared
    /// with any identical leaf built before.
    fn leaf(&mut self, list: &[u32], known: &Known, depth: usize) -> Result<Ref, TableError> {
        if list.is_empty() {
            return Ok(Ref::leaf(0, 0));
        }
        self.stats.leaves += 1;
        self.depth_sum += depth;
        self.stats.depth_max = self.stats.depth_max.max(depth);
        self.stats.leaf_max = self.stats.leaf_max.max(list.len());
        let mut ops = std::mem::take(&mut self.ops);
        ops.clear();
        for &i in list {
            self.referenced[i as usize] = true;
            residual(&self.rules[i as usize], i, known, &mut ops);
        }
        debug_assert!(ops.len() <= LEAF_OPS_MAX);
        self.stats.leaf_ops_max = self.stats.leaf_ops_max.max(ops.len());
        let at = match self.leaves.get(&ops) {
            Some(&at) => at,
            None => {
                let n = ops.len().div_ceil(OPS_PER_CELL);
                let at = self.alloc(n);
                for (j, chunk) in ops.chunks(OPS_PER_CELL).enumerate() {
                    self.cells[at as usize + j] = Cell::from_ops(chunk);
                }
                self.stats.list_cells += n;
                self.stats.list_entries += list.len();
                self.stats.ops += ops.len();
                self.leaves.insert(ops.clone(), at);
                at
            }
        };
        let n = ops.len() as u16;
        self.ops = ops;
        Ok(Ref::leaf(at, n))
    }

    fn alloc(&mut self, n: usize) -> u32 {
        let at = self.cells.len() as u32;
        self.cells.resize(self.cells.len() + n, Cell::default());
        at
    }
}

/// Key words in the order a leaf checks them: the most selective first, so the
/// userspace walk's early exit fails fast.
const CHECK_ORDER: [usize; RANGE_WORDS] = [
    word::DST,
    word::SRC,
    word::DPORT,
    word::SPORT,
    word::PROTO,
    word::DST + 1,
    word::DST + 2,
    word::DST + 3,
    word::SRC + 1,
    word::SRC + 2,
    word::SRC + 3,
    word::L4,
    word::FAMILY,
    word::VLAN,
    word::IFINDEX,
];

/// Appends rule `r` (priority `prio`) as leaf ops: a check per word where `r`
/// is narrower than what every key reaching the leaf already satisfies, a
/// flags test on the flag bits the tree has not fixed, then its end op.
fn residual(r: &FlatRule, prio: u32, known: &Known, ops: &mut Vec<Op>) {
    let start = ops.len();
    for w in CHECK_ORDER {
        if r.lo[w] > known.lo[w] || r.hi[w] < known.hi[w] {
            ops.push(Op::range(w, r.lo[w], r.hi[w], 0));
        }
    }
    let mask = r.flags_mask & !known.flags_mask;
    if mask != 0 {
        ops.push(Op::flags(mask, r.flags_value & mask, 0));
    }
    let end = ops.len();
    for (j, op) in ops[start..].iter_mut().enumerate() {
        op.meta |= ((end - start - j) as u32) << 20;
    }
    ops.push(Op::end(r.action, r.counter, prio));
}

/// What holds for every key that reaches a node: per word an inclusive
/// interval, and the TCP flag bits fixed by cuts. Normally the region's
/// bounds; below a subtree shared by a run of sibling children only the union
/// of their intervals holds on the cut word, and no later cut of that word
/// (which indexes by its lower bits) narrows it. Leaf ops check only what
/// this does not already imply.
#[derive(Clone, Copy, Debug)]
struct Known {
    lo: [u32; KEY_WORDS],
    hi: [u32; KEY_WORDS],
    /// Words cut by a shared run (bit per word).
    aliased: u32,
    flags_mask: u8,
    flags_value: u8,
}

impl Known {
    fn root() -> Known {
        let mut hi = [u32::MAX; KEY_WORDS];
        for (h, bits) in hi.iter_mut().zip(WORD_BITS) {
            *h = u32::MAX.checked_shr(32 - bits).unwrap_or(0);
        }
        Known {
            lo: [0; KEY_WORDS],
            hi,
            aliased: 0,
            flags_mask: 0,
            flags_value: 0,
        }
    }

    /// After a cut of `bits` bits of word `w` of `reg`, for children `first..=last`.
    fn cut(&self, reg: &Region, w: usize, bits: u32, first: u32, last: u32) -> Known {
        let mut k = *self;
        if w == word::TCP_FLAGS {
            if first == last {
                let shift = reg.free(w) - bits;
                k.flags_mask |= (((1u32 << bits) - 1) << shift) as u8;
                k.flags_value |= (first << shift) as u8;
            }
        } else if self.aliased & (1 << w) == 0 {
            k.lo[w] = reg.child(w, bits, first).bounds(w).0;
            k.hi[w] = reg.child(w, bits, last).bounds(w).1;
            if first != last {
                k.aliased |= 1 << w;
            }
        }
        k
    }
}
