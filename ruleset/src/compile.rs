//! The compiler: a [`ValidRuleset`] becomes an [`Image`] — one decision-tree
//! table for the tenant dispatch, one for the global rules and one per tenant, in
//! the exact cell layout the XDP program walks (`fluxgate_common::table`).
//!
//! (A little over 800 lines: lowering a rule and counting what it will lower
//! to must stay side by side, so the limits check before anything is made
//! counts exactly what lowering makes.)
//!
//! Lowering: a model rule constrains lists of prefixes and port ranges; a table
//! rule ([`FlatRule`]) is one box of per-word ranges. A rule becomes the cross
//! product of its lists (per address family), all sharing the rule's counter
//! slot, so the kernel counts the model rule whichever box matched. Implicit
//! conditions are made explicit: ports imply TCP or UDP with an L4 header, TCP
//! flags imply TCP, an ICMP type/code implies the family's ICMP, a VLAN match
//! implies a tag (untagged packets carry [`VLAN_NONE`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fluxgate_common::table::{LATER_FRAGMENT, LEAF_MAX, RANGE_WORDS, VLAN_NONE, action, word};
use ipnet::IpNet;

use crate::{
    Config, Location, RuleId, Scope, SourceMap, ValidRuleset, Verdict,
    model::{Action, Match, PortRange, Rule, Span},
    table::{FlatRule, TableError, TableImage, TreeConfig, build_table},
};

/// Options beyond validation limits: interface indexes, generation, tree tuning.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// Interface name → ifindex, for `iif` matches (the dataplane fills it from
    /// the host; a rule naming an interface missing here is an error).
    pub interfaces: BTreeMap<String, u32>,
    /// Generation number written into every table header.
    pub generation: u64,
    /// Decision-tree tuning.
    pub tree: TreeConfig,
    /// Most table rules one model rule may expand into (default 4096 when 0);
    /// counted before any is made.
    pub max_expansion: usize,
    /// Tenant and counter slots carried over from earlier generations.
    pub plan: SlotPlan,
    /// Tenants whose table is already live and unchanged (the caller knows
    /// from a content key of everything the table is built from): not built
    /// again. Such a tenant keeps its planned slot and its planned counter
    /// slots and appears in [`Image::reused`] instead of [`Image::tenants`];
    /// one missing from [`SlotPlan::tenants`] is built as usual. This is
    /// what makes a one-tenant change cost one tenant's compile at 10,000
    /// tenants.
    pub reuse: BTreeSet<String>,
    /// Tenant slots of the attachment the image is for: every tenant index
    /// must be below it (default [`fluxgate_common::DEFAULT_TENANT_SLOTS`]
    /// when 0). Pass the attachment's own number, so a ruleset with more
    /// tenants than it has slots is refused before anything changes.
    pub tenant_slots: u32,
    /// Counter slots of the attachment the image is for: every counter slot
    /// (one per rule and per table default, kept generations' included)
    /// must be below it (default [`fluxgate_common::DEFAULT_COUNTER_SLOTS`]
    /// when 0). Pass the attachment's own number, so a ruleset needing more
    /// counters than it has is refused before anything changes.
    pub counter_slots: u32,
}

/// Tenant and counter slots carried over from earlier generations, so that a
/// tenant keeps its slot (only its own slot flips when it changes) and a rule
/// that did not change keeps its counter — and keeps counting across swaps.
///
/// New tenants and rules get the lowest slots that are neither planned nor
/// reserved. The empty plan numbers everything densely: gateway default 0, the
/// gateway's rules, then per tenant its default and rules; tenants 0, 1, …
#[derive(Clone, Debug, Default)]
pub struct SlotPlan {
    /// Tenant name → tenant slot.
    pub tenants: BTreeMap<String, u32>,
    /// Tenant slots no new tenant may take (held by kept generations).
    pub reserved_tenants: BTreeSet<u32>,
    /// (scope, rule) → counter slot; `None`: the scope's default action.
    pub counters: HashMap<(Scope, Option<RuleId>), u32>,
    /// Counter slots no new rule may take (held by kept generations).
    pub reserved_counters: BTreeSet<u32>,
}

/// Hands out the lowest slots that are not taken.
struct Allocator {
    /// Slots handed out in this image.
    taken: SlotSet,
    /// Slots fresh items must not get: reserved or planned for another item.
    blocked: SlotSet,
    next: u32,
}

impl Allocator {
    fn new<'a>(
        reserved: impl IntoIterator<Item = &'a u32>,
        planned: impl IntoIterator<Item = u32>,
    ) -> Self {
        let mut blocked = SlotSet::default();
        for &s in reserved {
            blocked.insert(s);
        }
        for s in planned {
            blocked.insert(s);
        }
        Allocator {
            taken: SlotSet::default(),
            blocked,
            next: 0,
        }
    }

    /// `planned` if the plan has a slot for this item (and it is still free in
    /// this image), else a fresh one.
    fn take(&mut self, planned: Option<u32>) -> u32 {
        if let Some(p) = planned
            && self.taken.insert(p)
        {
            return p;
        }
        while self.taken.contains(self.next) || self.blocked.contains(self.next) {
            self.next += 1;
        }
        self.taken.insert(self.next);
        self.next
    }
}

/// A set of slots as a bit vector (slots are dense from 0; a `BTreeSet`
/// made counter allocation ≈ 5 % of compiling 100k rules).
#[derive(Default)]
struct SlotSet(Vec<u64>);

impl SlotSet {
    fn contains(&self, slot: u32) -> bool {
        self.0
            .get(slot as usize / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    /// Adds `slot`; whether it was not there yet (as `BTreeSet::insert`).
    fn insert(&mut self, slot: u32) -> bool {
        let i = slot as usize / 64;
        if i >= self.0.len() {
            self.0.resize(i + 1, 0);
        }
        let bit = 1 << (slot % 64);
        let new = self.0[i] & bit == 0;
        self.0[i] |= bit;
        new
    }
}

/// What a counter slot counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterSlot {
    /// The slot (index of the kernel's rule counter array).
    pub slot: u32,
    /// Gateway or tenant.
    pub scope: Scope,
    /// The rule, or `None` for the scope's default action.
    pub rule: Option<RuleId>,
    /// 1-based rule position in its scope (0 for the default action).
    pub position: u32,
    /// The rule's `limit`: it decides only for packets over it. With a
    /// `rule` at `position` 0: a tenant's ceiling ([`crate::Ceiling::rules`]).
    pub limit: Option<crate::Limit>,
}

impl CounterSlot {
    /// Whether the slot counts a tenant's ceiling (the packets over it).
    pub fn is_ceiling(&self) -> bool {
        self.position == 0 && self.rule.is_some()
    }
}

/// One tenant's compiled table.
#[derive(Clone, Debug)]
pub struct TenantImage {
    /// Tenant name.
    pub name: String,
    /// Tenant slot: dispatch result, kernel slot and counter index.
    pub index: u32,
    /// The table (its header holds the tenant's default action).
    pub table: TableImage,
    /// The ceiling that applies ([`ValidRuleset::ceiling`]).
    pub ceiling: crate::Ceiling,
}

/// A compiled ruleset: every table, and what each counter slot means.
///
/// Tenant slots and counter slots come from [`CompileOptions::plan`].
#[derive(Clone, Debug)]
pub struct Image {
    /// Generation number in every header.
    pub generation: u64,
    /// Destination → tenant index (rules with action `TENANT`).
    pub dispatch: TableImage,
    /// Global rules; its header holds the gateway default.
    pub global: TableImage,
    /// Per tenant, sorted by tenant slot.
    pub tenants: Vec<TenantImage>,
    /// What each counter slot counts, sorted by slot. Slot 0 is the gateway
    /// default. Only the tables built: not those of [`Image::reused`].
    pub counters: Vec<CounterSlot>,
    /// Tenants not built because [`CompileOptions::reuse`] named them: name
    /// and tenant slot, sorted by slot. Their live table stays.
    pub reused: Vec<(String, u32)>,
}

impl Image {
    /// Total cells of every table (× 128 bytes = kernel memory of the tables).
    pub fn cells(&self) -> usize {
        self.dispatch.cells.len()
            + self.global.cells.len()
            + self
                .tenants
                .iter()
                .map(|t| t.table.cells.len())
                .sum::<usize>()
    }

    /// The counter slot of a rule, by id and scope.
    pub fn slot_of(&self, scope: &Scope, rule: RuleId) -> Option<u32> {
        self.counters
            .iter()
            .find(|c| &c.scope == scope && c.rule == Some(rule))
            .map(|c| c.slot)
    }

    /// What counter slot `slot` counts.
    pub fn counter(&self, slot: u32) -> Option<&CounterSlot> {
        self.counters
            .binary_search_by_key(&slot, |c| c.slot)
            .ok()
            .map(|i| &self.counters[i])
    }

    /// The tenant in tenant slot `index`.
    pub fn tenant(&self, index: u32) -> Option<&TenantImage> {
        self.tenants
            .binary_search_by_key(&index, |t| t.index)
            .ok()
            .map(|i| &self.tenants[i])
    }

    /// One past the highest counter slot.
    pub fn counter_span(&self) -> u32 {
        self.counters.last().map_or(0, |c| c.slot + 1)
    }
}

/// Why a valid ruleset could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A rule names an interface the host does not have.
    #[error(
        "{}{scope} rule #{position}: no interface named {name:?} on this host",
        at(.location)
    )]
    UnknownInterface {
        /// Where the rule names it (`iif …`), when the ruleset came from files.
        location: Option<Location>,
        /// Scope of the rule.
        scope: Scope,
        /// Rule position.
        position: u32,
        /// Interface name.
        name: String,
    },
    /// A rule's lists multiply into too many table rules.
    #[error(
        "{}{scope} rule #{position} expands into {count} table rules (limit {limit}); split it",
        at(.location)
    )]
    TooManyExpansions {
        /// Where the rule is, when the ruleset came from files.
        location: Option<Location>,
        /// Scope of the rule.
        scope: Scope,
        /// Rule position.
        position: u32,
        /// Expansion size.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// More tenants than the kernel has slots (kept generations hold slots too).
    #[error(
        "more tenants than the {limit} tenant slots of the attachment (counting slots held by \
         kept generations); attach again with more tenant slots"
    )]
    TooManyTenants {
        /// Number of tenant slots.
        limit: u32,
    },
    /// More rules than the kernel has counter slots (kept generations hold slots too).
    #[error(
        "the ruleset needs {needed} counter slots (one per rule and per default, counting slots \
         held by kept generations), more than the {limit} counter slots of the attachment; \
         attach again with more counter slots"
    )]
    TooManyCounters {
        /// Number of counter slots.
        limit: u32,
        /// Counter slots the image needs: its highest slot + 1.
        needed: u64,
    },
    /// More rules overlap in one region than a leaf holds, and no cut separates
    /// them (they differ at most in TCP flags, or the tree is at its depth limit).
    #[error(
        "{}{scope} rules {} overlap in one region that cannot be cut further ({why}; \
         {count} table rules, a leaf holds at most {LEAF_MAX}): merge or reorder \
         overlapping count/flag rules",
        at(.location),
        rule_list(.positions)
    )]
    Overlapping {
        /// Where the first of them is, when the ruleset came from files.
        location: Option<Location>,
        /// Their scope.
        scope: Scope,
        /// Positions of the first of them (each once).
        positions: Vec<u32>,
        /// Table rules in the region (a rule's lists expand into several).
        count: usize,
        /// `"max depth reached"` or `"rules inseparable"`.
        why: &'static str,
    },
    /// The decision tree for a scope could not be built within its bounds.
    #[error("{scope}: {source}")]
    Table {
        /// `gateway`, `dispatch` or the tenant.
        scope: String,
        /// Why.
        #[source]
        source: TableError,
    },
}

/// Compiles `rs` with default [`CompileOptions`] (no `iif` rules allowed).
///
/// `_config` is the [`Config`] `rs` was validated with. Every limit in it was
/// enforced by [`crate::validate()`], so compiling reads nothing from it; what
/// changes the tables (interfaces, generation, tree shape, expansion limit,
/// counter and tenant slots) is in [`CompileOptions`], taken by [`compile_with`].
pub fn compile(rs: &ValidRuleset, _config: &Config) -> Result<Image, CompileError> {
    compile_with(rs, &CompileOptions::default())
}

/// Compiles `rs`.
pub fn compile_with(rs: &ValidRuleset, opts: &CompileOptions) -> Result<Image, CompileError> {
    let limit = if opts.max_expansion == 0 {
        4096
    } else {
        opts.max_expansion
    };
    let plan = &opts.plan;
    let sources = &rs.ruleset().sources;
    let mut slots = Allocator::new(&plan.reserved_counters, plan.counters.values().copied());
    let mut counters = vec![CounterSlot {
        slot: slots.take(Some(0)),
        scope: Scope::Gateway,
        rule: None,
        position: 0,
        limit: None,
    }];
    // One scope's rules lowered (their counter slots taken) and built into its table.
    let scope_table = |scope: &Scope,
                       rules: &[Rule],
                       default: Verdict,
                       counter: u32,
                       slots: &mut Allocator,
                       counters: &mut Vec<CounterSlot>| {
        let flat = lower_scope(scope, rules, sources, opts, limit, slots, counters)?;
        build_table(
            &flat,
            verdict_action(default),
            counter,
            opts.generation,
            &opts.tree,
        )
        .map_err(|source| match source {
            TableError::TooManyOverlapping {
                count,
                first_rules,
                why,
            } => {
                // Table rules back to the rules they came from, by counter slot.
                let mut positions: Vec<u32> = Vec::new();
                for &i in &first_rules {
                    let position = flat.get(i).and_then(|r| {
                        counters
                            .iter()
                            .find(|c| c.slot == r.counter && c.rule.is_some())
                            .map(|c| c.position)
                    });
                    if let Some(p) = position
                        && !positions.contains(&p)
                    {
                        positions.push(p);
                    }
                }
                let first = positions
                    .first()
                    .and_then(|&p| rules.iter().find(|r| r.position == p));
                CompileError::Overlapping {
                    location: first.and_then(|r| locate(sources, r.spans.rule)),
                    scope: scope.clone(),
                    positions,
                    count,
                    why,
                }
            }
            source => CompileError::Table {
                scope: scope.to_string(),
                source,
            },
        })
    };

    let gw = rs.gateway();
    let global = scope_table(
        &Scope::Gateway,
        &gw.rules,
        gw.default_action,
        0,
        &mut slots,
        &mut counters,
    )?;

    let slot_limit = if opts.tenant_slots == 0 {
        fluxgate_common::DEFAULT_TENANT_SLOTS
    } else {
        opts.tenant_slots
    };
    let mut tenant_slots = Allocator::new(&plan.reserved_tenants, plan.tenants.values().copied());
    let mut tenants = Vec::with_capacity(rs.tenants().len());
    let mut reused = Vec::new();
    let mut dispatch_rules = Vec::new();
    for t in rs.tenants() {
        let index = tenant_slots.take(plan.tenants.get(&t.name).copied());
        if index >= slot_limit {
            return Err(CompileError::TooManyTenants { limit: slot_limit });
        }
        for net in &t.prefixes {
            let mut r = FlatRule::any(action::TENANT, index);
            set_prefix(&mut r, word::DST, net);
            dispatch_rules.push(r);
        }
        if opts.reuse.contains(&t.name) && plan.tenants.get(&t.name) == Some(&index) {
            reused.push((t.name.clone(), index));
            continue;
        }
        let scope = Scope::Tenant(t.name.clone());
        let default_slot = slots.take(plan.counters.get(&(scope.clone(), None)).copied());
        counters.push(CounterSlot {
            slot: default_slot,
            scope: scope.clone(),
            rule: None,
            position: 0,
            limit: None,
        });
        // A ceiling is rules before the tenant's own (see `Ceiling::rules`).
        let ceiling = rs.ceiling(t);
        let with_ceiling: Vec<Rule>;
        let rules: &[Rule] = if ceiling.is_empty() {
            &t.rules
        } else {
            with_ceiling = ceiling
                .rules(&t.name)
                .into_iter()
                .chain(t.rules.iter().cloned())
                .collect();
            &with_ceiling
        };
        let table = scope_table(
            &scope,
            rules,
            t.default_action,
            default_slot,
            &mut slots,
            &mut counters,
        )?;
        tenants.push(TenantImage {
            name: t.name.clone(),
            index,
            table,
            ceiling,
        });
    }
    tenants.sort_by_key(|t| t.index);
    reused.sort_by_key(|t| t.1);
    counters.sort_by_key(|c| c.slot);
    let counter_limit = if opts.counter_slots == 0 {
        fluxgate_common::DEFAULT_COUNTER_SLOTS
    } else {
        opts.counter_slots
    };
    if let Some(c) = counters.last()
        && c.slot >= counter_limit
    {
        return Err(CompileError::TooManyCounters {
            limit: counter_limit,
            needed: u64::from(c.slot) + 1,
        });
    }
    // Tenant prefixes never overlap (validated), so dispatch order is irrelevant.
    let dispatch = build_table(
        &dispatch_rules,
        action::PASS,
        0,
        opts.generation,
        &opts.tree,
    )
    .map_err(|source| CompileError::Table {
        scope: "dispatch".into(),
        source,
    })?;
    Ok(Image {
        generation: opts.generation,
        dispatch,
        global,
        tenants,
        counters,
        reused,
    })
}

impl CompileError {
    /// Where in the ruleset's files the rule at fault is, when known.
    pub fn location(&self) -> Option<&Location> {
        match self {
            CompileError::UnknownInterface { location, .. }
            | CompileError::TooManyExpansions { location, .. }
            | CompileError::Overlapping { location, .. } => location.as_ref(),
            _ => None,
        }
    }
}

/// `file:line:col: ` of a compile error's rule, or nothing.
fn at(location: &Option<Location>) -> String {
    location
        .as_ref()
        .map_or_else(String::new, |l| format!("{l}: "))
}

/// `#1, #2, #3, …` (the first eight).
fn rule_list(positions: &[u32]) -> String {
    let mut text: Vec<String> = positions.iter().take(8).map(|p| format!("#{p}")).collect();
    if positions.len() > 8 {
        text.push("…".into());
    }
    text.join(", ")
}

/// Where `span` starts, if `sources` holds its file.
fn locate(sources: &SourceMap, span: Span) -> Option<Location> {
    sources
        .file(span.file)
        .map(|f| f.location(span.start as usize))
}

fn verdict_action(v: Verdict) -> u8 {
    match v {
        Verdict::Pass => action::PASS,
        Verdict::Drop => action::DROP,
    }
}

fn lower_scope(
    scope: &Scope,
    rules: &[Rule],
    sources: &SourceMap,
    opts: &CompileOptions,
    limit: usize,
    slots: &mut Allocator,
    counters: &mut Vec<CounterSlot>,
) -> Result<Vec<FlatRule>, CompileError> {
    let mut out = Vec::with_capacity(rules.len());
    let mut buffers = Buffers::default();
    for rule in rules {
        // A first compile has no plan: skip building the lookup key.
        let planned = if opts.plan.counters.is_empty() {
            None
        } else {
            let key = (scope.clone(), Some(rule.id));
            opts.plan.counters.get(&key).copied()
        };
        let counter = slots.take(planned);
        counters.push(CounterSlot {
            slot: counter,
            scope: scope.clone(),
            rule: Some(rule.id),
            position: rule.position,
            limit: rule.limit,
        });
        lower_with(rule, counter, opts, limit, &mut buffers, &mut out).map_err(|e| match e {
            Lowering::UnknownInterface(name) => CompileError::UnknownInterface {
                location: locate(sources, rule.spans.iif.unwrap_or(rule.spans.rule)),
                scope: scope.clone(),
                position: rule.position,
                name,
            },
            Lowering::TooMany(count) => CompileError::TooManyExpansions {
                location: locate(sources, rule.spans.rule),
                scope: scope.clone(),
                position: rule.position,
                count,
                limit,
            },
        })?;
    }
    Ok(out)
}

/// Why [`lower_with`] made no table rules of a rule.
enum Lowering {
    /// The rule names an interface [`CompileOptions::interfaces`] lacks.
    UnknownInterface(String),
    /// The rule would expand into this many table rules, more than the limit.
    TooMany(usize),
}

/// Appends the table rules of `rule` to `out`; `Err(name)` for an unknown interface.
pub fn lower(
    rule: &Rule,
    counter: u32,
    opts: &CompileOptions,
    out: &mut Vec<FlatRule>,
) -> Result<(), String> {
    lower_with(
        rule,
        counter,
        opts,
        usize::MAX,
        &mut Buffers::default(),
        out,
    )
    .map_err(|e| match e {
        Lowering::UnknownInterface(name) => name,
        // A count above usize::MAX cannot be (it saturates at the limit).
        Lowering::TooMany(count) => format!("{count} table rules"),
    })
}

/// The lists [`lower`] works on, reused from rule to rule of a scope: with a
/// dozen small vectors allocated per rule, lowering 100k FW rules took 36 ms
/// of a 180 ms compile.
#[derive(Default)]
struct Buffers {
    src: Vec<IpNet>,
    dst: Vec<IpNet>,
    sports: Vec<PortRange>,
    dports: Vec<PortRange>,
    srcs: Vec<Option<IpNet>>,
    dsts: Vec<Option<IpNet>>,
}

/// [`lower`] with the lists in `buf`; a rule that would make more than `limit`
/// table rules is refused after counting them, before making any.
fn lower_with(
    rule: &Rule,
    counter: u32,
    opts: &CompileOptions,
    limit: usize,
    buf: &mut Buffers,
    out: &mut Vec<FlatRule>,
) -> Result<(), Lowering> {
    let m: &Match = &rule.matches;
    let act = match (rule.action, rule.limit.is_some()) {
        (Action::Pass, false) => action::PASS,
        (Action::Drop, false) => action::DROP,
        (Action::Pass, true) => action::LIMIT_PASS,
        (Action::Drop, true) => action::LIMIT_DROP,
        (Action::Count, _) => action::COUNT,
    };
    let mut base = FlatRule::any(act, counter);
    if let Some(name) = &m.iif {
        let index = *opts
            .interfaces
            .get(name)
            .ok_or_else(|| Lowering::UnknownInterface(name.clone()))?;
        exact(&mut base, word::IFINDEX, index);
    }
    if let Some(vlan) = m.vlan {
        exact(&mut base, word::VLAN, u32::from(vlan));
    }
    debug_assert_ne!(
        VLAN_NONE,
        u32::from(u16::MAX),
        "untagged never equals a VLAN id"
    );
    // Lists are normalised to disjoint elements, so the expansions of one rule
    // never overlap and a count rule counts a packet once.
    let Buffers {
        src,
        dst,
        sports,
        dports,
        srcs,
        dsts,
    } = buf;
    disjoint_nets(&m.src, src);
    disjoint_nets(&m.dst, dst);
    disjoint_ports(&m.sport, sports);
    disjoint_ports(&m.dport, dports);
    let wants_ports = !sports.is_empty() || !dports.is_empty();
    let wants_icmp = m.icmp_type.is_some() || m.icmp_code.is_some();

    // Two passes over the same expansion: the first only counts, so a rule
    // whose lists multiply past the limit is refused before it takes memory.
    // The count is at most the product of the lists' lengths × 2 protocols
    // × 2 families; when that is within the limit (as for nearly every rule),
    // counting is skipped.
    let at_most = [src.len(), dst.len(), sports.len(), dports.len(), 4]
        .into_iter()
        .fold(1usize, |n, k| n.saturating_mul(k.max(1)));
    const COUNT_THEN_MAKE: [(bool, u32); 4] = [(true, 4), (true, 6), (false, 4), (false, 6)];
    let passes = if at_most <= limit {
        &COUNT_THEN_MAKE[2..]
    } else {
        &COUNT_THEN_MAKE[..]
    };
    let counted = passes.len() == COUNT_THEN_MAKE.len();
    let mut count = 0usize;
    let before = out.len();
    for &(counting, family) in passes {
        if !counting && count > limit {
            return Err(Lowering::TooMany(count));
        }
        // The list's prefixes of this family (`[None]`: any address);
        // false when the list has prefixes, none of this family.
        let of_family = |list: &[IpNet], into: &mut Vec<Option<IpNet>>| -> bool {
            into.clear();
            if list.is_empty() {
                into.push(None);
            }
            into.extend(
                list.iter()
                    .filter(|n| family_of(n) == family)
                    .map(|n| Some(*n)),
            );
            !into.is_empty()
        };
        if !of_family(src, srcs) || !of_family(dst, dsts) {
            continue;
        }
        // Families only need separating when addresses or ICMP pin one down.
        let family_free = src.is_empty() && dst.is_empty() && !wants_icmp;
        if family_free && family == 6 {
            continue; // one family-free expansion was emitted for family 4
        }
        let proto = m.proto.map(|p| u32::from(p.number()));
        let one;
        let protos: &[Option<u32>] = match (proto, wants_ports, wants_icmp) {
            (_, _, true) => {
                let icmp = if family == 4 { 1 } else { 58 };
                match proto {
                    Some(p) if p != icmp => continue,
                    _ => {
                        one = [Some(icmp)];
                        &one
                    }
                }
            }
            (Some(_), true, _) if m.proto.is_some_and(|p| !p.has_ports()) => continue,
            (Some(p), _, _) => {
                one = [Some(p)];
                &one
            }
            (None, true, _) => &[Some(6), Some(17)],
            (None, false, _) => &[None],
        };
        // TCP flags pin the protocol to TCP (with another one: no expansion).
        let tcp_only = [Some(6)];
        let protos = match m.tcp_flags {
            Some(_) if protos.iter().any(|p| p.is_none_or(|p| p == 6)) => &tcp_only[..],
            Some(_) => &[],
            None => protos,
        };
        if counting {
            let per_proto = [srcs.len(), dsts.len(), sports.len(), dports.len()]
                .into_iter()
                .fold(1usize, |n, k| n.saturating_mul(k.max(1)));
            count = count.saturating_add(per_proto.saturating_mul(protos.len()));
            continue;
        }
        for proto in protos {
            let mut r = base;
            if !family_free {
                exact(&mut r, word::FAMILY, family);
            }
            if let Some(p) = proto {
                exact(&mut r, word::PROTO, *p);
            }
            if wants_ports || wants_icmp || m.tcp_flags.is_some() {
                exact(&mut r, word::L4, 1);
            }
            if m.fragment {
                // No L4 header, marked in the port word (validation keeps
                // ports, flags and ICMP fields off such a rule).
                exact(&mut r, word::L4, 0);
                exact(&mut r, word::SPORT, LATER_FRAGMENT);
            }
            if let Some(f) = m.tcp_flags {
                r.flags_mask = f.mask;
                r.flags_value = f.value & f.mask;
            }
            if let Some(t) = m.icmp_type {
                exact(&mut r, word::SPORT, u32::from(t));
            }
            if let Some(c) = m.icmp_code {
                exact(&mut r, word::DPORT, u32::from(c));
            }
            for s in srcs.iter() {
                for d in dsts.iter() {
                    let mut r = r;
                    if let Some(s) = s {
                        set_prefix(&mut r, word::SRC, s);
                    }
                    if let Some(d) = d {
                        set_prefix(&mut r, word::DST, d);
                    }
                    for_ports(&r, sports, dports, out);
                }
            }
        }
    }
    debug_assert!(
        !counted || out.len() - before == count,
        "the counting pass counts what is made"
    );
    debug_assert!(
        out.len() - before <= at_most,
        "the product bounds the count"
    );
    Ok(())
}

/// Appends `r` once per source × destination port range (an empty list: any port).
fn for_ports(r: &FlatRule, sports: &[PortRange], dports: &[PortRange], out: &mut Vec<FlatRule>) {
    for s in 0..sports.len().max(1) {
        for d in 0..dports.len().max(1) {
            let mut x = *r;
            if let Some(s) = sports.get(s) {
                x.lo[word::SPORT] = u32::from(s.lo);
                x.hi[word::SPORT] = u32::from(s.hi);
            }
            if let Some(d) = dports.get(d) {
                x.lo[word::DPORT] = u32::from(d.lo);
                x.hi[word::DPORT] = u32::from(d.hi);
            }
            out.push(x);
        }
    }
}

/// The prefixes of a list without those inside another one (prefixes are nested
/// or disjoint, so what remains is disjoint), into `out`.
fn disjoint_nets(items: &[crate::model::PrefixItem], out: &mut Vec<IpNet>) {
    out.clear();
    out.extend(Match::nets(items).map(IpNet::trunc));
    out.sort_by_key(IpNet::prefix_len);
    // Shortest first: a prefix can only lie inside one kept before it.
    let mut kept = 0;
    for i in 0..out.len() {
        let n = out[i];
        if !out[..kept].iter().any(|o| o.contains(&n)) {
            out[kept] = n;
            kept += 1;
        }
    }
    out.truncate(kept);
}

/// The port ranges of a list merged into disjoint, non-adjacent ranges, into `out`.
fn disjoint_ports(items: &[crate::model::PortItem], out: &mut Vec<PortRange>) {
    out.clear();
    out.extend(Match::ranges(items));
    out.sort();
    let mut kept = 0usize;
    for i in 0..out.len() {
        let r = out[i];
        match kept.checked_sub(1).map(|k| &mut out[k]) {
            Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => last.hi = last.hi.max(r.hi),
            _ => {
                out[kept] = r;
                kept += 1;
            }
        }
    }
    out.truncate(kept);
}

fn exact(r: &mut FlatRule, w: usize, v: u32) {
    debug_assert!(w < RANGE_WORDS);
    r.lo[w] = v;
    r.hi[w] = v;
}

fn family_of(n: &IpNet) -> u32 {
    match n {
        IpNet::V4(_) => 4,
        IpNet::V6(_) => 6,
    }
}

/// Sets the 4 words at `at` (SRC or DST) and the family to the ranges of `net`.
pub fn set_prefix(r: &mut FlatRule, at: usize, net: &IpNet) {
    let (family, words, len): (u32, [u32; 4], u8) = match net {
        IpNet::V4(n) => (4, [u32::from(n.network()), 0, 0, 0], n.prefix_len()),
        IpNet::V6(n) => {
            let o = n.network().octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            (6, [w(0), w(4), w(8), w(12)], n.prefix_len())
        }
    };
    exact(r, word::FAMILY, family);
    for (i, &value) in words.iter().enumerate() {
        // How many of this word's 32 bits the prefix fixes.
        let fixed = u32::from(len).saturating_sub(32 * i as u32).min(32);
        if family == 4 && i > 0 {
            exact(r, at + i, 0);
            continue;
        }
        let mask = if fixed == 0 {
            0
        } else {
            u32::MAX << (32 - fixed)
        };
        r.lo[at + i] = value & mask;
        r.hi[at + i] = (value & mask) | !mask;
    }
}
