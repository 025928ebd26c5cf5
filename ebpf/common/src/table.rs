//! The classification table: the layout shared by the compiler (userspace),
//! the userspace classifier and the XDP program.
//!
//! # Why a decision tree in array cells
//!
//! Measured on this kernel (../shared/PERF-FACTS.md): a hash lookup costs ≈ 25 ns
//! hot and 150–420 ns cold, so tuple-space search pays that *per tuple* (16 tuples
//! ≈ 450 ns); an LPM trie grows from 32 to 99 ns between 10 and 100k prefixes; bit
//! vectors cost 26 ns at 1k rules but 129 ns at 10k (linear in rules / 64). A
//! dependent ARRAY lookup costs ≈ 1.5 ns hot, and its cost does not depend on
//! the table size. So a packet walks a decision tree (HiCuts/HyperCuts-style
//! equal-size bit cuts on one key word per node) laid out in one ARRAY map, then
//! checks at most [`LEAF_MAX`] candidate rules in the leaf it reaches. The walk is
//! at most [`MAX_DEPTH`] array steps whatever the number of rules, the compiler
//! does all the hard work (choosing cuts, pruning covered rules), and tenant
//! dispatch uses the same tree over the destination address, so it stays flat as
//! tenants grow too.
//!
//! # Layout
//!
//! A table is an `ARRAY` of [`Cell`]s (128 bytes). Cell 0 is the [`Header`].
//! Every other cell is a *node* — 16 [`Ref`]s, the children of a cut —, a *leaf
//! list* — up to [`LEAF_MAX`] `u32` rule cell indices in priority order — or a
//! *rule* ([`RuleCell`]). A [`Ref`] says where the next step is and how to index
//! it: `child = (key[word] >> shift) & (2^bits - 1)`, found in cell
//! `cell + child / 16`, slot `child % 16`. A leaf ref points at a list cell and
//! says how many entries it has. Rules are stored once; a rule that falls into
//! several leaves costs 4 bytes per extra leaf, not a whole cell.
//!
//! # Key
//!
//! The packet key is [`KEY_WORDS`] `u32` words in *host* order (numeric order is
//! what range cuts and range checks need; one byte swap per field is cheaper than
//! anything else here). See the [`word`] constants.

/// Number of u32 words in a packet key (the last one holds TCP flags).
pub const KEY_WORDS: usize = 16;
/// Number of key words a rule constrains with a `[lo, hi]` range.
pub const RANGE_WORDS: usize = 15;
/// Most steps from the root to a leaf.
pub const MAX_DEPTH: usize = 20;
/// Most rules in one leaf (checked one by one, in priority order).
pub const LEAF_MAX: usize = 16;
/// Most count rules counted for one packet in one table (further ones are not).
pub const COUNT_MAX: usize = 16;
/// Refs per node cell.
pub const REFS_PER_CELL: usize = 16;
/// Most cut bits in one node (up to 2^8 children).
pub const MAX_CUT_BITS: u32 = 8;

/// Indices of the key words.
pub mod word {
    /// Source address: IPv4 in `SRC`, zeros in `SRC + 1..SRC + 4`; IPv6 as four
    /// big-endian 32-bit words, most significant first.
    pub const SRC: usize = 0;
    /// Destination address, same encoding as [`SRC`].
    pub const DST: usize = 4;
    /// Source port; ICMP type for ICMP/ICMPv6; 0 without an L4 header.
    pub const SPORT: usize = 8;
    /// Destination port; ICMP code for ICMP/ICMPv6; 0 without an L4 header.
    pub const DPORT: usize = 9;
    /// IP protocol (after the IPv6 extension-header chain).
    pub const PROTO: usize = 10;
    /// 1 when the L4 header was parsed (not a non-first fragment), else 0.
    pub const L4: usize = 11;
    /// 4 or 6.
    pub const FAMILY: usize = 12;
    /// Outer VLAN id, or [`super::VLAN_NONE`] when untagged.
    pub const VLAN: usize = 13;
    /// Ingress interface index.
    pub const IFINDEX: usize = 14;
    /// TCP flags byte (0 when not TCP); matched with mask/value, never cut on.
    pub const TCP_FLAGS: usize = 15;
}

/// [`word::VLAN`] value of an untagged packet (just above the largest VLAN id,
/// so the word stays 13 bits wide for the tree's cuts).
pub const VLAN_NONE: u32 = 0x1000;

/// Significant bits of each key word: every key value fits in them, so the
/// tree compiler never spends cuts on bits that are always zero.
pub const WORD_BITS: [u32; KEY_WORDS] =
    [32, 32, 32, 32, 32, 32, 32, 32, 16, 16, 8, 1, 3, 13, 32, 8];

/// Rule actions.
pub mod action {
    /// Pass the packet; classification ends.
    pub const PASS: u8 = 0;
    /// Drop the packet; classification ends.
    pub const DROP: u8 = 1;
    /// Count the packet and continue with the next rule.
    pub const COUNT: u8 = 2;
    /// Dispatch table only: the packet belongs to the tenant in the end op's counter field.
    pub const TENANT: u8 = 3;
}

/// A reference to the next step of the walk, packed in a `u64`.
///
/// Nodes: bits 0–31 cell index · 32–39 key word · 40–47 shift · 48–55 cut bits.
/// Leaves: bits 0–31 first leaf cell · 32–47 number of ops · 48–55 zero.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ref(pub u64);

impl Ref {
    /// An inner node: cut `bits` bits of key word `word` starting at bit `shift`;
    /// the children start at cell `cell`.
    pub const fn node(cell: u32, word: u8, shift: u8, bits: u8) -> Ref {
        Ref(cell as u64 | (word as u64) << 32 | (shift as u64) << 40 | (bits as u64) << 48)
    }
    /// A leaf: `count` [`Op`]s in the cells from `cell` on, [`OPS_PER_CELL`]
    /// per cell (`count` = 0: no rule matches; `cell` is then ignored).
    pub const fn leaf(cell: u32, count: u16) -> Ref {
        Ref(cell as u64 | (count as u64) << 32)
    }
    /// First cell.
    #[inline(always)]
    pub const fn cell(self) -> u32 {
        self.0 as u32
    }
    /// Key word cut by this node.
    #[inline(always)]
    pub const fn word(self) -> usize {
        ((self.0 >> 32) & 0xff) as usize
    }
    /// Shift applied to the key word.
    #[inline(always)]
    pub const fn shift(self) -> u32 {
        ((self.0 >> 40) & 0xff) as u32
    }
    /// Cut bits; 0 for a leaf.
    #[inline(always)]
    pub const fn bits(self) -> u32 {
        ((self.0 >> 48) & 0xff) as u32
    }
    /// Ops in the leaf (only meaningful for leaves).
    #[inline(always)]
    pub const fn count(self) -> u32 {
        ((self.0 >> 32) & 0xffff) as u32
    }
    /// Whether this is a leaf.
    #[inline(always)]
    pub const fn is_leaf(self) -> bool {
        self.bits() == 0
    }
    /// Index of the child a key selects (only meaningful for nodes).
    #[inline(always)]
    pub const fn child(self, key_word: u32) -> u32 {
        // Masked shifts: a corrupt ref can pick a wrong child, never undefined behaviour.
        key_word.wrapping_shr(self.shift()) & ((1u32 << (self.bits() & 31)) - 1)
    }
}

/// One 128-byte cell of a table: a header, a node, or a rule, by position.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The raw contents.
    pub raw: [u64; REFS_PER_CELL],
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            raw: [0; REFS_PER_CELL],
        }
    }
}

/// One step of a leaf program (12 bytes, [`OPS_PER_CELL`] per cell).
///
/// A leaf is a straight-line program over the key: per candidate rule, in
/// priority order, the *residual* checks — only the words the rule constrains
/// more than the tree already did on the way to this leaf — then an end op
/// that applies the rule if every check since the previous end op held.
///
/// - check ([`Op::END`] clear): `((key[meta & 15] & mask) - a) <= b` (mod 2^32),
///   where `mask` is all ones when [`Op::FULL`] is set, else `(meta >> 8) & 0xff`
///   (a TCP flags test: `a` = value, `b` = 0); `a` = low bound, `b` = span.
///   Bits 20–27: ops up to and including the rule's end op (a failed check may
///   skip there).
/// - end ([`Op::END`] set): action in bits 0–7, `a` = counter slot, `b` = the
///   rule's priority (lower wins; also across the trees of a table).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Op {
    /// Kind, word, mask, skip (checks) or action (end ops).
    pub meta: u32,
    /// Low bound (checks) or counter slot (end ops).
    pub a: u32,
    /// Span `hi - lo` (checks) or priority (end ops).
    pub b: u32,
}

/// Ops in one leaf cell (the last 8 bytes of the cell are unused).
pub const OPS_PER_CELL: usize = 10;
/// Most ops in one leaf: [`LEAF_MAX`] rules, each checking every word.
pub const LEAF_OPS_MAX: usize = LEAF_MAX * (RANGE_WORDS + 2);
/// Most consecutive cells one leaf spans.
pub const LEAF_CELLS_MAX: usize = LEAF_OPS_MAX.div_ceil(OPS_PER_CELL);

impl Op {
    /// Marks an end op.
    pub const END: u32 = 1 << 31;
    /// A check on the whole word (mask of all ones).
    pub const FULL: u32 = 1 << 16;

    /// A range check `key[word] in [lo, hi]`; `skip` = ops up to the rule's end op.
    pub const fn range(word: usize, lo: u32, hi: u32, skip: u8) -> Op {
        Op {
            meta: (word as u32 & 15) | 0xff << 8 | Op::FULL | (skip as u32) << 20,
            a: lo,
            b: hi.wrapping_sub(lo),
        }
    }
    /// A TCP flags test `flags & mask == value`.
    pub const fn flags(mask: u8, value: u8, skip: u8) -> Op {
        Op {
            meta: word::TCP_FLAGS as u32 | (mask as u32) << 8 | (skip as u32) << 20,
            a: (value & mask) as u32,
            b: 0,
        }
    }
    /// The end of a rule: its action, counter slot and priority.
    pub const fn end(action: u8, counter: u32, priority: u32) -> Op {
        Op {
            meta: Op::END | action as u32,
            a: counter,
            b: priority,
        }
    }
    /// Whether this is an end op.
    #[inline(always)]
    pub const fn is_end(self) -> bool {
        self.meta & Op::END != 0
    }
    /// Action of an end op.
    #[inline(always)]
    pub const fn action(self) -> u8 {
        self.meta as u8
    }
    /// Ops to skip to the rule's end op when this check fails (0 if unknown).
    #[inline(always)]
    pub const fn skip(self) -> usize {
        ((self.meta >> 20) & 0xff) as usize
    }
    /// Whether a check holds for `key`.
    #[inline(always)]
    pub fn holds(self, key: &[u32; KEY_WORDS]) -> bool {
        self.miss(key) >> 63 == 0
    }
    /// A check without branches: bit 63 is set exactly when it fails for
    /// `key`. The kernel ORs these over a rule and tests bit 63 once at the
    /// end op: BPF has no set-on-compare, so a `bool` per check becomes a
    /// branch per check, each branch a path the verifier explores.
    #[inline(always)]
    pub fn miss(self, key: &[u32; KEY_WORDS]) -> u64 {
        let full = 0u32.wrapping_sub((self.meta >> 16) & 1);
        let mask = ((self.meta >> 8) & 0xff) | full;
        let off = (key[(self.meta & 15) as usize] & mask).wrapping_sub(self.a);
        u64::from(self.b).wrapping_sub(u64::from(off))
    }
}

/// Cell 0 of every table.
///
/// A table holds 1 to [`MAX_TREES`] trees over disjoint parts of its rules
/// (wildcard-heavy rule sets are split so each tree cuts the fields its rules
/// are specific in). End ops carry the rule's priority, so across trees the
/// matching rule with the *lowest priority number* wins. Trees are walked from
/// the last to tree 0 and a leaf scan stops at the best priority found so far;
/// every count rule lives in tree 0, so when tree 0 is scanned the winner among
/// the other trees is known and a matched count rule can be counted at once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Where the walk of tree 0 starts.
    pub root: Ref,
    /// Magic + ABI version: [`Header::MAGIC`].
    pub magic: u32,
    /// Action when no rule decides: [`action::PASS`] or [`action::DROP`]
    /// (tenant default, or the gateway default in the global table).
    pub default_action: u32,
    /// Counter slot of the default action.
    pub default_counter: u32,
    /// Number of cells in the table.
    pub cells: u32,
    /// Generation number this table belongs to.
    pub generation: u64,
    /// Roots of trees 1.. (only the first `trees - 1` are used).
    pub more_roots: [Ref; MAX_TREES - 1],
    /// Number of trees (1..=[`MAX_TREES`]; 0 is read as 1).
    pub trees: u32,
    /// Explicit padding.
    pub _pad0: u32,
    /// Explicit padding up to the cell size.
    pub _pad: [u64; 8],
}

/// Most trees in one table.
pub const MAX_TREES: usize = 4;

impl Header {
    /// The root of tree `t` (tree 0 for `t` out of range).
    #[inline(always)]
    pub fn root_of(&self, t: usize) -> Ref {
        match t {
            1 => self.more_roots[0],
            2 => self.more_roots[1],
            3 => self.more_roots[2],
            _ => self.root,
        }
    }
}

impl Header {
    /// `"FG"` + table ABI version 3.
    pub const MAGIC: u32 = 0x4647_0003;
}

/// Reinterpretations of a [`Cell`].
impl Cell {
    /// The cell as a header.
    #[inline(always)]
    pub fn header(&self) -> &Header {
        // SAFETY: Header is repr(C), 128 bytes, alignment 8 ≤ Cell's 8, and
        // every bit pattern is a valid Header (only integers).
        unsafe { &*(self as *const Cell).cast::<Header>() }
    }
    /// The cell as leaf ops.
    #[inline(always)]
    pub fn ops(&self) -> &[Op; OPS_PER_CELL] {
        // SAFETY: [Op; 10] is 120 bytes ≤ 128 with alignment 4; integers only.
        unsafe { &*(self as *const Cell).cast::<[Op; OPS_PER_CELL]>() }
    }
    /// A leaf cell holding `ops` (at most [`OPS_PER_CELL`]; the rest are zero).
    pub fn from_ops(ops: &[Op]) -> Cell {
        let mut all = [Op::default(); OPS_PER_CELL];
        let n = if ops.len() < OPS_PER_CELL {
            ops.len()
        } else {
            OPS_PER_CELL
        };
        all[..n].copy_from_slice(&ops[..n]);
        let mut cell = Cell::default();
        // SAFETY: 120 bytes into a 128-byte cell; Cell has no invalid bit patterns.
        unsafe { core::ptr::write((&mut cell as *mut Cell).cast::<[Op; OPS_PER_CELL]>(), all) };
        cell
    }
    /// A cell holding `header`.
    pub fn from_header(header: &Header) -> Cell {
        let mut cell = Cell::default();
        // SAFETY: same size; Cell has no invalid bit patterns.
        unsafe { core::ptr::write((&mut cell as *mut Cell).cast::<Header>(), *header) };
        cell
    }
}

const _: () = assert!(core::mem::size_of::<Cell>() == 128);
const _: () = assert!(core::mem::size_of::<Op>() * OPS_PER_CELL <= 128);
const _: () = assert!(core::mem::size_of::<Header>() == 128);
const _: () = assert!(LEAF_OPS_MAX <= 0xffff);
