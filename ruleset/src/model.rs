//! The rule model: plain, public data that the parser produces, the validator checks,
//! the reference classifier interprets and the table compiler lowers.
//!
//! Source positions ([`Span`]) ride along for diagnostics but are never part of a
//! value's meaning: two rules that differ only in where they were written compare equal.

use std::fmt;

use ipnet::IpNet;

/// Index of a source file inside a [`crate::SourceMap`].
pub type FileId = u32;

/// A byte range in one source file. Not part of any value's meaning: every `Span`
/// compares equal to every other, so models built in code equal parsed ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Span {
    /// Which file.
    pub file: FileId,
    /// Byte offset of the first byte.
    pub start: u32,
    /// Byte offset one past the last byte.
    pub end: u32,
}

impl Span {
    /// A span covering `start..end` of `file`.
    pub fn new(file: FileId, start: usize, end: usize) -> Self {
        let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Span {
            file,
            start: clamp(start),
            end: clamp(end),
        }
    }

    /// The smallest span covering both (same file assumed).
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

impl PartialEq for Span {
    fn eq(&self, _: &Span) -> bool {
        true // where a thing was written is provenance, not content
    }
}
impl Eq for Span {}

/// What happens to a packet when a rule (or a default) decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Let the packet through.
    Pass,
    /// Discard the packet.
    Drop,
}

/// A rule's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Decide: pass.
    Pass,
    /// Decide: drop.
    Drop,
    /// Count the packet against this rule and continue with the next rule.
    Count,
}

impl Action {
    /// The verdict this action decides, or `None` for [`Action::Count`].
    pub fn verdict(self) -> Option<Verdict> {
        match self {
            Action::Pass => Some(Verdict::Pass),
            Action::Drop => Some(Verdict::Drop),
            Action::Count => None,
        }
    }
}

impl From<Verdict> for Action {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Pass => Action::Pass,
            Verdict::Drop => Action::Drop,
        }
    }
}

/// IP protocol a rule matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP for IPv4 (1).
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
    /// Any other protocol number. Parsing normalises 1, 6, 17 and 58 to the named variants.
    Other(u8),
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Icmpv6 => 58,
            Proto::Other(n) => n,
        }
    }

    /// The protocol for a number, named when it has a name.
    pub fn from_number(n: u8) -> Proto {
        match n {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            1 => Proto::Icmp,
            58 => Proto::Icmpv6,
            n => Proto::Other(n),
        }
    }

    /// True for protocols that carry ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }

    /// True for ICMP and ICMPv6.
    pub fn is_icmp(self) -> bool {
        matches!(self, Proto::Icmp | Proto::Icmpv6)
    }
}

/// An inclusive port range `lo..=hi`. A single port has `lo == hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port (inclusive).
    pub hi: u16,
}

impl PortRange {
    /// A single port.
    pub fn single(p: u16) -> Self {
        PortRange { lo: p, hi: p }
    }

    /// True if `p` lies in the range.
    pub fn contains(self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }

    /// True if every port of `other` lies in `self`.
    pub fn covers(self, other: PortRange) -> bool {
        self.lo <= other.lo && other.hi <= self.hi
    }
}

/// TCP flags match: `(packet_flags & mask) == value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpFlags {
    /// Flags that are examined.
    pub mask: u8,
    /// Required values of the examined flags.
    pub value: u8,
}

/// One element of an address list: a literal prefix or a reference to a named prefix set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PrefixItem {
    /// A literal prefix (a bare address is a /32 or /128).
    Net(IpNet),
    /// `@name`: every prefix of the named set.
    Set(String),
}

/// One element of a port list: a literal range or a reference to a named port set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortItem {
    /// A literal range.
    Range(PortRange),
    /// `@name`: every range of the named set.
    Set(String),
}

/// What a rule matches. Every field that is empty / `None` matches anything.
///
/// In a parsed [`crate::Ruleset`] lists may contain [`PrefixItem::Set`] / [`PortItem::Set`]
/// references; in a [`crate::ValidRuleset`] they are all resolved to literals.
///
/// A rule that constrains a field the packet lacks (ports on a non-first fragment,
/// ICMP type on TCP, no VLAN tag, …) does not match that packet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Match {
    /// Ingress interface name.
    pub iif: Option<String>,
    /// 802.1Q VLAN id (0..=4095).
    pub vlan: Option<u16>,
    /// Source prefixes (any of).
    pub src: Vec<PrefixItem>,
    /// Destination prefixes (any of). Empty in a tenant rule means "the tenant's prefixes".
    pub dst: Vec<PrefixItem>,
    /// IP protocol.
    pub proto: Option<Proto>,
    /// Source port ranges (any of).
    pub sport: Vec<PortItem>,
    /// Destination port ranges (any of).
    pub dport: Vec<PortItem>,
    /// TCP flags.
    pub tcp_flags: Option<TcpFlags>,
    /// ICMP / ICMPv6 type.
    pub icmp_type: Option<u8>,
    /// ICMP / ICMPv6 code.
    pub icmp_code: Option<u8>,
    /// `fragment`: only non-first fragments (IPv4 fragment offset ≠ 0, or an
    /// IPv6 fragment header with offset ≠ 0), which carry no L4 header.
    pub fragment: bool,
}

impl Match {
    /// The literal prefixes of a list (set references skipped; resolved lists have none).
    pub fn nets(items: &[PrefixItem]) -> impl Iterator<Item = &IpNet> {
        items.iter().filter_map(|i| match i {
            PrefixItem::Net(n) => Some(n),
            PrefixItem::Set(_) => None,
        })
    }

    /// The literal port ranges of a list (set references skipped).
    pub fn ranges(items: &[PortItem]) -> impl Iterator<Item = PortRange> + '_ {
        items.iter().filter_map(|i| match i {
            PortItem::Range(r) => Some(*r),
            PortItem::Set(_) => None,
        })
    }
}

/// Where each part of a rule was written; used only for diagnostics (never part of
/// equality).
#[derive(Debug, Clone, Copy, Default)]
pub struct RuleSpans {
    /// The whole rule.
    pub rule: Span,
    /// `iif …`
    pub iif: Option<Span>,
    /// `vlan …`
    pub vlan: Option<Span>,
    /// `saddr …`
    pub src: Option<Span>,
    /// `daddr …`
    pub dst: Option<Span>,
    /// `proto …`
    pub proto: Option<Span>,
    /// `sport …`
    pub sport: Option<Span>,
    /// `dport …`
    pub dport: Option<Span>,
    /// `flags …`
    pub tcp_flags: Option<Span>,
    /// `icmp-type …`
    pub icmp_type: Option<Span>,
    /// `icmp-code …`
    pub icmp_code: Option<Span>,
    /// `fragment`
    pub fragment: Option<Span>,
    /// `limit rate over …`
    pub limit: Option<Span>,
}

impl PartialEq for RuleSpans {
    fn eq(&self, _: &RuleSpans) -> bool {
        true // provenance, not content
    }
}
impl Eq for RuleSpans {}

/// Stable identity of a rule across edits of a ruleset.
///
/// A 64-bit FNV-style hash of the scope (`gateway` or the tenant name), a canonical
/// binary encoding of the rule *as written* (fields in a fixed order, list items in
/// written order, set references by name — so editing a set does not renumber the
/// rules that use it) and an occurrence index among identical rules of the same
/// scope. Moving, inserting or deleting *other* rules never changes it, so per-rule
/// counters survive a swap. The encoding is part of the contract: changing it resets
/// every counter once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub u64);

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// FNV-1a-style multiply-xor over 8-byte words: stable across platforms and Rust
/// versions (unlike `DefaultHasher`), and fast enough for a million rules.
struct Fnv(u64);

impl Fnv {
    fn bytes(&mut self, b: &[u8]) {
        for chunk in b.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(w);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
            self.0 ^= self.0 >> 29;
        }
    }

    fn str(&mut self, s: &str) {
        self.u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
        self.bytes(s.as_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }

    fn opt(&mut self, tag: u8, v: Option<u32>) {
        if let Some(v) = v {
            self.bytes(&[tag]);
            self.u32(v);
        }
    }

    /// A non-empty list: its tag, its length, then each item by `item`.
    fn list<T>(&mut self, tag: u8, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        if items.is_empty() {
            return;
        }
        self.bytes(&[tag]);
        self.u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
        for it in items {
            item(self, it);
        }
    }

    fn prefixes(&mut self, tag: u8, items: &[PrefixItem]) {
        self.list(tag, items, |h, it| match it {
            PrefixItem::Net(IpNet::V4(n)) => {
                h.bytes(&[4]);
                h.bytes(&n.addr().octets());
                h.bytes(&[n.prefix_len()]);
            }
            PrefixItem::Net(IpNet::V6(n)) => {
                h.bytes(&[6]);
                h.bytes(&n.addr().octets());
                h.bytes(&[n.prefix_len()]);
            }
            PrefixItem::Set(name) => {
                h.bytes(b"@");
                h.str(name);
            }
        });
    }

    fn ports(&mut self, tag: u8, items: &[PortItem]) {
        self.list(tag, items, |h, it| match it {
            PortItem::Range(r) => {
                h.bytes(b"r");
                h.bytes(&r.lo.to_le_bytes());
                h.bytes(&r.hi.to_le_bytes());
            }
            PortItem::Set(name) => {
                h.bytes(b"@");
                h.str(name);
            }
        });
    }
}

impl RuleId {
    /// The id of a rule of `scope` matching `m` with `action`, being the
    /// `occurrence`-th (0-based) identical rule of that scope.
    pub fn of(scope: &str, m: &Match, action: Action, occurrence: u32) -> RuleId {
        RuleId::of_limited(scope, m, None, action, occurrence)
    }

    /// [`RuleId::of`] for a rule with a `limit`: the limit (rate, burst, per
    /// source) is part of the id, so a changed limit is a new rule (a new
    /// counter, a new full bucket) and an unchanged one keeps its bucket.
    /// Without a limit the id is [`RuleId::of`]'s.
    pub fn of_limited(
        scope: &str,
        m: &Match,
        limit: Option<&crate::Limit>,
        action: Action,
        occurrence: u32,
    ) -> RuleId {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.str(scope);
        if let Some(i) = &m.iif {
            h.bytes(b"i");
            h.str(i);
        }
        h.opt(b'v', m.vlan.map(u32::from));
        h.prefixes(b's', &m.src);
        h.prefixes(b'd', &m.dst);
        h.opt(b'p', m.proto.map(|p| u32::from(p.number())));
        h.ports(b'S', &m.sport);
        h.ports(b'D', &m.dport);
        h.opt(
            b'f',
            m.tcp_flags
                .map(|f| u32::from(f.mask) << 8 | u32::from(f.value)),
        );
        h.opt(b't', m.icmp_type.map(u32::from));
        h.opt(b'c', m.icmp_code.map(u32::from));
        // Only when set, so the ids of rules written before `fragment` existed stay.
        if m.fragment {
            h.bytes(b"F");
        }
        // Only when set, so the ids of rules without a limit stay.
        if let Some(l) = limit {
            h.bytes(b"L");
            h.bytes(&l.rate.amount.to_le_bytes());
            h.bytes(&[u8::from(l.rate.bytes), l.rate.per as u8]);
            h.bytes(&l.burst_units().to_le_bytes());
            if let Some(p) = l.per_source {
                h.bytes(&[b'P', p.v4, p.v6]);
            }
        }
        h.bytes(&[b'A', action as u8]);
        h.u32(occurrence);
        RuleId(h.0)
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Stable id (see [`RuleId`]).
    pub id: RuleId,
    /// 1-based position in its scope (file order), for display. Order is priority:
    /// the first matching rule decides.
    pub position: u32,
    /// What the rule matches.
    pub matches: Match,
    /// What it does.
    pub action: Action,
    /// `limit rate over …`: the rule applies only to packets over the rate;
    /// the others go on to the next rule (see [`crate::limit`]).
    pub limit: Option<crate::Limit>,
    /// Where it was written.
    pub spans: RuleSpans,
}

/// Elements of a named set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SetElems {
    /// A set of prefixes.
    Prefixes(Vec<IpNet>),
    /// A set of port ranges.
    Ports(Vec<PortRange>),
}

/// A named set (`set name { … }`), referenced from rules as `@name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSet {
    /// Name, without the `@`.
    pub name: String,
    /// Elements.
    pub elems: SetElems,
    /// Where the name was written.
    pub span: Span,
}

/// The provider-wide part: rules evaluated before every tenant's, shared sets, and
/// the verdict for packets that belong to no tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Verdict for packets whose destination is in no tenant's prefixes.
    pub default_action: Verdict,
    /// Global rules, in priority (file) order.
    pub rules: Vec<Rule>,
    /// Named sets visible to the gateway and every tenant.
    pub sets: Vec<NamedSet>,
    /// Guard packets of the gateway file.
    pub guards: Vec<Guard>,
    /// Where `default` was written.
    pub default_span: Span,
    /// `allocate NAME { … }`: the address space each tenant may claim. None
    /// at all: tenants' prefixes are taken as written (only their overlap
    /// is checked); one or more: every tenant needs one.
    pub allocations: Vec<Allocation>,
    /// `quota [NAME] …`: what tenants may consume (a quota without a name is
    /// every tenant's default).
    pub quotas: Vec<Quota>,
    /// `meter-size N`: entries of the per-source bucket map (LRU) shared by
    /// every `per saddr` limit that this ruleset needs, with where it was
    /// written; `None`: [`crate::limit::DEFAULT_METER_SIZE`]. The kernel's
    /// map is sized when the program is attached (`--source-buckets`):
    /// `apply` refuses a `meter-size` larger than the attachment's map.
    pub meter_size: Option<(u64, Span)>,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            default_action: Verdict::Drop,
            rules: Vec::new(),
            sets: Vec::new(),
            guards: Vec::new(),
            default_span: Span::default(),
            allocations: Vec::new(),
            quotas: Vec::new(),
            meter_size: None,
        }
    }
}

impl Gateway {
    /// The allocation of `tenant`, if gateway.fg declares one.
    pub fn allocation(&self, tenant: &str) -> Option<&Allocation> {
        self.allocations.iter().find(|a| a.tenant == tenant)
    }

    /// The quota that applies to `tenant`: each limit from the tenant's own
    /// `quota NAME …` when it sets it, else from the default `quota …`.
    pub fn quota_for(&self, tenant: &str) -> TenantQuota {
        let own = self
            .quotas
            .iter()
            .find(|q| q.tenant.as_deref() == Some(tenant));
        let default = self.quotas.iter().find(|q| q.tenant.is_none());
        let pick = |field: fn(&Quota) -> Option<u64>| {
            own.and_then(|q| field(q).map(|v| (v, q.span)))
                .or_else(|| default.and_then(|q| field(q).map(|v| (v, q.span))))
        };
        let ceiling = own
            .filter(|q| !q.ceiling.is_empty())
            .or_else(|| default.filter(|q| !q.ceiling.is_empty()))
            .map(|q| (q.ceiling, q.span));
        TenantQuota {
            rules: pick(|q| q.rules),
            table_bytes: pick(|q| q.table_bytes),
            counters: pick(|q| q.counters),
            limits: pick(|q| q.limits),
            ceiling,
        }
    }
}

/// `allocate NAME { PREFIXES }` in gateway.fg: the address space the operator
/// lets tenant NAME claim in its `prefixes` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The tenant.
    pub tenant: String,
    /// What it may claim (IPv4 and IPv6).
    pub prefixes: Vec<IpNet>,
    /// Where the tenant's name was written.
    pub span: Span,
    /// One per entry of [`Allocation::prefixes`].
    pub prefix_spans: Vec<Span>,
}

/// `quota [NAME] (rules N | table-bytes SIZE | counters N)+` in gateway.fg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// The tenant; `None`: the default for every tenant.
    pub tenant: Option<String>,
    /// Most table rules the tenant's rules may expand into.
    pub rules: Option<u64>,
    /// Most bytes of the tenant's compiled table.
    pub table_bytes: Option<u64>,
    /// Most counters: one per rule as written, plus one for the default.
    pub counters: Option<u64>,
    /// Most rules with a `limit` (each has a bucket in the kernel).
    pub limits: Option<u64>,
    /// `ceiling RATE [RATE]`: the most the tenant's traffic may use; the
    /// tenant's own `ceiling` may only be lower (empty: none).
    pub ceiling: crate::Ceiling,
    /// Where the statement was written.
    pub span: Span,
}

/// The limits that apply to one tenant ([`Gateway::quota_for`]), each with
/// the `quota` statement that set it; `None`: no limit but [`crate::Config`]'s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantQuota {
    /// Table rules.
    pub rules: Option<(u64, Span)>,
    /// Bytes of the compiled table.
    pub table_bytes: Option<(u64, Span)>,
    /// Counters (rules as written + 1).
    pub counters: Option<(u64, Span)>,
    /// Rules with a `limit`.
    pub limits: Option<(u64, Span)>,
    /// The operator's ceiling for the tenant.
    pub ceiling: Option<(crate::Ceiling, Span)>,
}

/// One tenant: the destination prefixes it owns and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Safe identifier `[a-z0-9][a-z0-9_-]{0,62}`; equals the file stem.
    pub name: String,
    /// Destination prefixes owned (IPv4 and IPv6).
    pub prefixes: Vec<IpNet>,
    /// Verdict when none of the tenant's rules decides.
    pub default_action: Verdict,
    /// Sets private to this tenant.
    pub sets: Vec<NamedSet>,
    /// Rules, in priority (file) order.
    pub rules: Vec<Rule>,
    /// Guard packets (each addressed to this tenant).
    pub guards: Vec<Guard>,
    /// `ceiling …` as the tenant wrote it (empty: none). What applies is
    /// [`crate::ValidRuleset::ceiling`]: this, capped by the operator's quota.
    pub ceiling: crate::Ceiling,
    /// Where things were written.
    pub spans: TenantSpans,
}

/// Source positions of a tenant's header lines (never part of equality).
#[derive(Debug, Clone, Default)]
pub struct TenantSpans {
    /// The name in `tenant NAME`.
    pub name: Span,
    /// One per entry of [`Tenant::prefixes`].
    pub prefixes: Vec<Span>,
    /// The `default` statement.
    pub default: Span,
    /// The `ceiling` statement.
    pub ceiling: Option<Span>,
}

impl PartialEq for TenantSpans {
    fn eq(&self, _: &TenantSpans) -> bool {
        true // provenance, not content
    }
}
impl Eq for TenantSpans {}

/// A guard packet: a packet with the verdict it must get. Before a change goes
/// live, every guard runs through the staged tables in the kernel and through
/// the reference classifier; any mismatch aborts the change.
///
/// Written `guard "tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags S" pass`
/// (the packet in [`crate::PacketHeader`]'s text form).
#[derive(Debug, Clone)]
pub struct Guard {
    /// The packet.
    pub packet: crate::PacketHeader,
    /// The verdict it must get.
    pub verdict: Verdict,
    /// Where it was written (not part of equality).
    pub span: Span,
}

impl PartialEq for Guard {
    fn eq(&self, other: &Guard) -> bool {
        self.packet == other.packet && self.verdict == other.verdict
    }
}
impl Eq for Guard {}

/// A whole gateway ruleset as written: the gateway file plus one file per tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Global part.
    pub gateway: Gateway,
    /// Tenants, sorted by name.
    pub tenants: Vec<Tenant>,
    /// The texts the ruleset was parsed from (empty for a ruleset built in code), so
    /// validation can point into them. Never part of equality.
    pub sources: crate::error::SourceMap,
}

/// Which list of rules a rule belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The gateway's global rules.
    Gateway,
    /// A tenant's rules, by tenant name.
    Tenant(String),
}

impl Scope {
    /// `gateway` or the tenant name; the string hashed into [`RuleId`].
    pub fn as_str(&self) -> &str {
        match self {
            Scope::Gateway => "gateway",
            Scope::Tenant(t) => t,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Recomputes [`Rule::id`] and [`Rule::position`] of every rule in `rules`, which belong
/// to `scope`. Call after building or editing rules in code.
pub fn assign_ids(scope: &Scope, rules: &mut [Rule]) {
    let scope = scope.as_str();
    // ids of first occurrences, then sort (cache-friendly, unlike a 100k-entry hash
    // map) to find the rare identical rules and number their occurrences in file order
    let mut firsts: Vec<(RuleId, u32)> = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter_mut().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        rule.id = RuleId::of_limited(scope, &rule.matches, rule.limit.as_ref(), rule.action, 0);
        rule.position = i.saturating_add(1);
        firsts.push((rule.id, i));
    }
    firsts.sort_unstable();
    for run in firsts
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|run| run.len() > 1)
    {
        for (occurrence, &(_, i)) in (0u32..).zip(run).skip(1) {
            if let Some(rule) = rules.get_mut(i as usize) {
                rule.id = RuleId::of_limited(
                    scope,
                    &rule.matches,
                    rule.limit.as_ref(),
                    rule.action,
                    occurrence,
                );
            }
        }
    }
}

impl Ruleset {
    /// Recomputes rule ids and positions in every scope (see [`assign_ids`]).
    pub fn assign_ids(&mut self) {
        assign_ids(&Scope::Gateway, &mut self.gateway.rules);
        for t in &mut self.tenants {
            assign_ids(&Scope::Tenant(t.name.clone()), &mut t.rules);
        }
    }

    /// The tenant called `name`.
    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.name == name)
    }
}
