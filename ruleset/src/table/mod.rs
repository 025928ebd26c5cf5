//! The classification table compiler and the userspace walker.
//!
//! [`build_table`] turns a priority-ordered list of [`FlatRule`]s into the array of
//! [`Cell`]s described in [`fluxgate_common::table`]: a HiCuts/HyperCuts-style
//! decision tree of equal-size bit cuts, with small leaf lists of candidate rules.
//! [`walk`] is the exact lookup the XDP program runs over the same cells, written
//! so it mirrors line by line into a `no_std` eBPF program; [`scan`] is the linear
//! definition the tree must agree with for every key.
//!
//! ```
//! use fluxgate_common::table::{KEY_WORDS, action, word};
//! use fluxgate_ruleset::table::{FlatRule, TreeConfig, build_table, scan, walk};
//!
//! let mut ssh = FlatRule::any(action::PASS, 7);
//! ssh.lo[word::DPORT] = 22;
//! ssh.hi[word::DPORT] = 22;
//! let rules = [ssh, FlatRule::any(action::DROP, 8)];
//! let image = build_table(&rules, action::PASS, 0, 1, &TreeConfig::default())?;
//! let mut key = [0u32; KEY_WORDS];
//! key[word::DPORT] = 22;
//! assert_eq!(walk(&image.cells, &key).decision, Some((action::PASS, 7)));
//! assert_eq!(walk(&image.cells, &key), scan(&rules, &key));
//! # Ok::<(), fluxgate_ruleset::table::TableError>(())
//! ```

use fluxgate_common::table::{
    ADDR_WORDS, COUNT_MAX, Cell, CheckKey, Header, KEY_WORDS, LEAF_MAX, MAX_DEPTH, MAX_TREES,
    RANGE_WORDS, REFS_PER_CELL, Ref, RuleCell, action, word,
};

mod build;

pub use build::build_table;

/// One rule as the tree sees it: every range word within `[lo, hi]` (inclusive,
/// host-order numeric, see [`fluxgate_common::table::word`]) and
/// `(tcp_flags & flags_mask) == flags_value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlatRule {
    /// Lower bounds per range word.
    pub lo: [u32; RANGE_WORDS],
    /// Upper bounds (inclusive) per range word.
    pub hi: [u32; RANGE_WORDS],
    /// TCP flags mask.
    pub flags_mask: u8,
    /// TCP flags value under the mask.
    pub flags_value: u8,
    /// One of [`fluxgate_common::table::action`].
    pub action: u8,
    /// Counter slot; tenant index for [`action::TENANT`].
    pub counter: u32,
}

impl FlatRule {
    /// A rule matching every key.
    pub const fn any(action: u8, counter: u32) -> FlatRule {
        FlatRule {
            lo: [0; RANGE_WORDS],
            hi: [u32::MAX; RANGE_WORDS],
            flags_mask: 0,
            flags_value: 0,
            action,
            counter,
        }
    }

    /// Whether `key` matches this rule ([`RuleCell::matches`] of its cell agrees
    /// on every key as packets make it, see [`RuleCell::from_ranges`]).
    pub fn matches(&self, key: &[u32; KEY_WORDS]) -> bool {
        (0..RANGE_WORDS).all(|i| self.lo[i] <= key[i] && key[i] <= self.hi[i])
            && (key[word::TCP_FLAGS] as u8) & self.flags_mask == self.flags_value
    }

    /// Whether the action ends classification (PASS, DROP, TENANT).
    pub const fn is_terminal(&self) -> bool {
        matches!(self.action, action::PASS | action::DROP | action::TENANT)
    }

    /// Whether some key can match this rule at all.
    pub fn can_match(&self) -> bool {
        self.flags_value & !self.flags_mask == 0
            && (0..RANGE_WORDS).all(|i| self.lo[i] <= self.hi[i])
    }

    /// The rule as a table cell.
    pub const fn to_cell(&self) -> RuleCell {
        RuleCell::from_ranges(
            &self.lo,
            &self.hi,
            self.flags_mask,
            self.flags_value,
            self.action,
            self.counter,
        )
    }
}

/// Tuning knobs of the tree compiler.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TreeConfig {
    /// A region with at most this many candidate rules becomes a leaf ("binth";
    /// clamped to `1..=LEAF_MAX`). Default 8. Every leaf rule costs a map
    /// lookup and a full 15-word range check per packet (≈ 100 BPF
    /// instructions), a tree step one lookup. Measured with 4 (kernel hot ns,
    /// ratio to the floor in the same run): acl 1k 12.3× → 11.7×, acl 10k
    /// 15.4× → 14.3×, trace 12.5× → 11.4× and 12.7× → 11.3×, acl 10 and tenants
    /// unchanged — for 409 → 1196 table bytes per rule at 1k (335 → 586 at 10k)
    /// and compile 0.63 → 0.97 s (1k), 3.3 → 3.7 s (10k, both with the
    /// compiler of that day, before it got 17–100× faster): not worth it by default.
    pub leaf_target: usize,
    /// HiCuts space factor: a cut into `k` children of a region with `n` rules is
    /// allowed when `sum of child rule counts + k / 2 <= spfac * n` (a child
    /// is an 8-byte ref, a list entry 4 bytes; in a table of at most 2048
    /// rules the first 256 children are free). Default 4. Until 2026-11-26
    /// the first 256 children were free in every table and no cut could take
    /// more; charging them in large tables lets big nodes cut wide and keeps
    /// small ones narrow: 13–23 % fewer dependent loads per packet at
    /// 10k–100k rules for about the same memory (measured in
    /// `fluxgate_common::table`, "Cuts as wide as the rules pay for").
    pub spfac: f64,
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            leaf_target: 8,
            spfac: 4.0,
        }
    }
}

/// Shape and size of a compiled table.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TableStats {
    /// Rules given to the compiler.
    pub rules: usize,
    /// Deepest leaf (number of node steps from the root).
    pub depth_max: usize,
    /// Mean depth of the (distinct, non-empty) leaves.
    pub depth_avg: f64,
    /// Inner nodes (distinct).
    pub nodes: usize,
    /// Cells holding node children.
    pub node_cells: usize,
    /// Non-empty leaves (distinct subtrees; shared lists counted per leaf).
    pub leaves: usize,
    /// Largest leaf list.
    pub leaf_max: usize,
    /// Leaf list cells (after sharing identical lists).
    pub list_cells: usize,
    /// Rule cells (rules reachable from some leaf; each stored once).
    pub rule_cells: usize,
    /// Sum of the lengths of all distinct leaf lists (rule references).
    pub list_entries: usize,
    /// Rule references held by inline leaves ([`Ref::inline_leaf`]: leaves of
    /// one or two rules, which need no list).
    pub inline_entries: usize,
    /// Total cells including the header.
    pub cells: usize,
}

impl TableStats {
    /// Table bytes per input rule (`cells × 128 / rules`).
    pub fn bytes_per_rule(&self) -> f64 {
        (self.cells * core::mem::size_of::<Cell>()) as f64 / self.rules.max(1) as f64
    }
    /// Adds the node and leaf counts of a subtree built apart (its rules,
    /// rule cells, cells and mean depth are the whole table's to count).
    fn absorb(&mut self, sub: &TableStats) {
        self.nodes += sub.nodes;
        self.node_cells += sub.node_cells;
        self.leaves += sub.leaves;
        self.list_cells += sub.list_cells;
        self.list_entries += sub.list_entries;
        self.inline_entries += sub.inline_entries;
        self.depth_max = self.depth_max.max(sub.depth_max);
        self.leaf_max = self.leaf_max.max(sub.leaf_max);
    }
    /// Rule references of leaves (in lists or inline) per stored rule.
    pub fn replication(&self) -> f64 {
        (self.list_entries + self.inline_entries) as f64 / self.rule_cells.max(1) as f64
    }
}

/// A compiled table, ready to be written into the `ARRAY` map.
#[derive(Clone, Debug, PartialEq)]
pub struct TableImage {
    /// The cells; cell 0 is the [`Header`].
    pub cells: Vec<Cell>,
    /// What the compiler produced.
    pub stats: TableStats,
}

impl TableImage {
    /// The header cell.
    pub fn header(&self) -> &Header {
        self.cells[0].header()
    }
}

/// Why a table could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// A rule is malformed.
    #[error("rule #{index}: {reason}")]
    InvalidRule {
        /// Position in the input.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// More than [`LEAF_MAX`] rules stay candidates in a region that no cut can
    /// separate (they overlap everywhere in it, differing at most in TCP flags) or
    /// before the tree reaches [`MAX_DEPTH`].
    #[error(
        "{count} rules (first: #{first_rules:?}) overlap in one region that cannot be cut further \
         ({why}); a leaf holds at most {LEAF_MAX} rules — merge or reorder overlapping count/flag rules"
    )]
    TooManyOverlapping {
        /// Candidate rules in the region.
        count: usize,
        /// Positions of the first few of them.
        first_rules: Vec<usize>,
        /// `"max depth reached"` or `"rules inseparable"`.
        why: &'static str,
    },
    /// The table would need more cells than a `u32` index addresses.
    #[error("table too large: more than {0} cells")]
    TooLarge(u64),
    /// The default action is not PASS or DROP.
    #[error("default action {0} is not PASS or DROP")]
    BadDefault(u8),
}

/// Result of a [`walk`]: the counters of COUNT rules matched before the decision,
/// in order, and the deciding rule's `(action, counter)` (`None`: the header's
/// default applies).
#[derive(Clone, Copy, Debug, Default)]
pub struct Walk {
    counters: [u32; COUNT_MAX],
    n_counters: u8,
    /// `(action, counter)` of the deciding rule, `None` when no terminal rule matched.
    pub decision: Option<(u8, u32)>,
    /// Cell index of the deciding rule (0: none); give it to [`walk_after`]
    /// to go on past a rule that did not apply (a limit within its rate).
    pub index: u32,
}

/// Equal counters and decision; [`Walk::index`] is where the decision sits
/// in one table, not what it is ([`scan`] has no cells).
impl PartialEq for Walk {
    fn eq(&self, other: &Walk) -> bool {
        self.counters() == other.counters() && self.decision == other.decision
    }
}
impl Eq for Walk {}

impl Walk {
    /// Counters of the COUNT rules matched, in priority order.
    pub fn counters(&self) -> &[u32] {
        &self.counters[..usize::from(self.n_counters)]
    }

    /// The final `(action, counter)`: the decision, or the table's default.
    pub fn resolve(&self, cells: &[Cell]) -> Option<(u8, u32)> {
        self.decision.or_else(|| {
            let h = cells.first()?.header();
            Some((h.default_action as u8, h.default_counter))
        })
    }

    fn push_counter(&mut self, c: u32) {
        if let Some(slot) = self.counters.get_mut(usize::from(self.n_counters)) {
            *slot = c;
            self.n_counters += 1;
        }
    }
}

/// The lookup, exactly as the XDP program runs it. For each tree of the header
/// (at most [`MAX_TREES`]): from its root, at most [`MAX_DEPTH`] node steps
/// (`child = ref.child(key[ref.word()])`, next ref in cell `ref.cell() + child / 16`,
/// slot `child % 16`), then a scan of at most [`LEAF_MAX`] entries of the leaf
/// list ([`Ref::entry`]: in a list cell, or inline in the leaf's ref), which
/// hold rule cell indices in priority order, trees walked from the
/// last to tree 0, skipping a tree whose [`Header::first`] bound, and leaving
/// a subtree whose node bound ([`Ref::bound`]), is at or past
/// the best terminal match so far: the scan stops at an index at or past the
/// best terminal match so far, records matching COUNT rules, and stops at the first matching
/// PASS/DROP/TENANT rule, which becomes the best. Rule cells are laid out in
/// priority order, so the lowest index wins across trees; the compiler keeps
/// every COUNT rule in tree 0 (scanned last), so the ones recorded are exactly
/// those before the winner (at most [`COUNT_MAX`]). A malformed image never
/// panics and reads as the XDP program reads it: key word and list slot
/// indices are masked into range, a tree reaching past the table is skipped.
/// `key` must be a key as packets make it ([`crate::classifier::key_of`]):
/// family 4 or 6, zeros in an IPv4 key's address words 1–3, every word within
/// its [`WORD_BITS`](fluxgate_common::table::WORD_BITS).
pub fn walk(cells: &[Cell], key: &[u32; KEY_WORDS]) -> Walk {
    walk_checked(cells, key, &CheckKey::of(key))
}

/// [`walk`] with the key's check form computed by the caller (once per
/// packet, for the several tables a packet walks).
pub fn walk_checked(cells: &[Cell], key: &[u32; KEY_WORDS], check: &CheckKey) -> Walk {
    walk_after(cells, key, check, 0)
}

/// [`walk_checked`] considering only rules at cell indices past `after`:
/// the walk that goes on after the rule at `after` (a [`Walk::index`]) turned
/// out not to apply. COUNT rules up to `after` are not counted again. `after`
/// 0 (the header) considers every rule.
pub fn walk_after(cells: &[Cell], key: &[u32; KEY_WORDS], check: &CheckKey, after: u32) -> Walk {
    // An IPv4 key (zeros in address words 1–3) takes the IPv4 rule check,
    // which reads one cache line of each rule cell instead of two.
    let ipv4 = key[word::FAMILY] == 4 && ADDR_WORDS[2..].iter().all(|&w| key[w] == 0);
    if ipv4 {
        walk_family::<false>(cells, key, check, after)
    } else {
        walk_family::<true>(cells, key, check, after)
    }
}

fn walk_family<const V6: bool>(
    cells: &[Cell],
    key: &[u32; KEY_WORDS],
    check: &CheckKey,
    after: u32,
) -> Walk {
    let mut out = Walk::default();
    let Some(head) = cells.first() else {
        return out;
    };
    let header = head.header();
    let trees = (header.trees as usize).clamp(1, MAX_TREES);
    let mut best = u32::MAX;
    for t in (0..trees).rev() {
        if header.first_of(t) >= best {
            continue;
        }
        let Some(leaf) = descend(cells, header.root_of(t), key, best, header.bound_shift) else {
            continue;
        };
        let Some(list) = cells.get(leaf.list_cell() as usize) else {
            continue;
        };
        let list = list.list();
        for i in 0..(leaf.count() as usize).min(LEAF_MAX) {
            let idx = leaf.entry(list, i);
            if idx >= best {
                break;
            }
            if idx <= after {
                continue;
            }
            let Some(rule) = cells.get(idx as usize) else {
                continue;
            };
            let rule = rule.rule();
            if !rule.matches_family::<V6>(check) {
                continue;
            }
            match rule.action {
                action::COUNT => out.push_counter(rule.counter),
                action::PASS
                | action::DROP
                | action::TENANT
                | action::LIMIT_PASS
                | action::LIMIT_DROP => {
                    best = idx;
                    break;
                }
                _ => {}
            }
        }
    }
    if let Some(c) = cells.get(best as usize) {
        out.decision = Some((c.rule().action, c.rule().counter));
        out.index = best;
    }
    out
}

/// Follows one tree from `root` to its leaf (at most [`MAX_DEPTH`] steps);
/// `None` for an empty leaf, a broken tree, or a node whose [`Ref::bound`]
/// is at or past `best` (nothing below can win).
#[inline]
fn descend(
    cells: &[Cell],
    root: Ref,
    key: &[u32; KEY_WORDS],
    best: u32,
    bound_shift: u32,
) -> Option<Ref> {
    let mut r = root;
    for _ in 0..MAX_DEPTH {
        if r.is_leaf() {
            break;
        }
        if r.beaten(bound_shift, best) {
            return None;
        }
        r = step(cells, r, key)?;
    }
    Some(r).filter(|r| r.is_leaf() && r.count() > 0)
}

/// One step down from node `r`, as the XDP program takes it (the key word
/// index masked into the key, [`Ref::child`] masking the cut); `None` for a
/// child cell past the table.
#[inline]
fn step(cells: &[Cell], r: Ref, key: &[u32; KEY_WORDS]) -> Option<Ref> {
    let child = r.child(key[r.word() & (KEY_WORDS - 1)]) as usize;
    let cell = cells.get(r.cell() as usize + child / REFS_PER_CELL)?;
    Some(Ref(cell.raw[child % REFS_PER_CELL]))
}

/// Linear-scan reference: what [`walk`] must return for a table built from `rules`
/// (COUNT rules matched before the first terminal match, in order, and that match).
pub fn scan(rules: &[FlatRule], key: &[u32; KEY_WORDS]) -> Walk {
    let mut out = Walk::default();
    for r in rules {
        if !r.matches(key) {
            continue;
        }
        match r.action {
            action::COUNT => out.push_counter(r.counter),
            action::PASS
            | action::DROP
            | action::TENANT
            | action::LIMIT_PASS
            | action::LIMIT_DROP => {
                out.decision = Some((r.action, r.counter));
                return out;
            }
            _ => {}
        }
    }
    out
}
