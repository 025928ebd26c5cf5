//! The ABI between the fluxgate XDP program and userspace.
//!
//! Every struct that crosses the kernel/user boundary (map keys, map values,
//! counters, configuration) is defined here once, `#[repr(C)]` with explicit
//! padding fields, so the two sides can never drift apart. The eBPF crate uses
//! this crate as is (`no_std`); userspace enables the `user` feature, which
//! implements `aya::Pod` for each type.
//!
//! Multi-byte fields documented as "network order" hold bytes exactly as on the
//! wire, so the packet path never swaps bytes.
#![no_std]

pub mod limit;
pub mod table;

/// Version of this ABI. Stored in [`GatewayConfig::abi_version`] and checked by
/// userspace before it reuses state pinned by another build.
pub const ABI_VERSION: u32 = 15;

/// Map names, as they appear in the object file and under the bpffs pin directory.
pub mod maps {
    /// `PerCpuArray<Counter>` indexed by [`crate::Outcome`].
    pub const OUTCOMES: &str = "FG_OUTCOMES";
    /// `PerCpuArray<Counter>` indexed by [`crate::Malformed`].
    pub const MALFORMED: &str = "FG_MALFORMED";
    /// `Array<GatewayConfig>` with one entry (index 0).
    pub const CONFIG: &str = "FG_CONFIG";
    /// `Array<Cell>` whose size is chosen at load time (default
    /// [`crate::DEFAULT_POOL_CELLS`]): every table of the attachment is a region
    /// `[base, base + cells)` of it (cell `base` is the table's header). Cell 0
    /// is never allocated, so base 0 means "no table".
    pub const POOL: &str = "FG_POOL";
    /// `Array<u32>` with [`crate::GATEWAY_SLOTS`] × [`crate::SLOT_WORDS`]
    /// entries: the slot records of the tenant dispatch table
    /// ([`crate::SLOT_DISPATCH`]) and of the global rules ([`crate::SLOT_GLOBAL`]):
    /// each the [`POOL`] region bases of its two buffers ([`crate::table_index`];
    /// 0: none) and which of them is live ([`crate::select_index`]).
    pub const GATEWAY: &str = "FG_GATEWAY";
    /// `Array<u32>` with tenant slots × [`crate::SLOT_WORDS`] entries (tenant
    /// slots chosen at load time, [`crate::GatewayConfig::tenant_slots`]):
    /// each tenant's slot record, as in [`GATEWAY`].
    pub const TENANTS: &str = "FG_TENANTS";
    /// `Array<Counter>` (mmapable) of one block of counter slots per possible
    /// CPU (counter slots chosen at load time,
    /// [`crate::GatewayConfig::counter_slots`]), each indexed by counter slot
    /// (per rule and per default action): see [`crate::per_cpu`].
    pub const RULE_COUNTERS: &str = "FG_RULE_COUNTERS";
    /// `Array<Counter>` (mmapable) of one block of
    /// [`crate::tenant_counters_per_cpu`] counters per possible CPU, each
    /// indexed by [`crate::tenant_counter`].
    pub const TENANT_COUNTERS: &str = "FG_TENANT_COUNTERS";
    /// `Array<Trace>` with one entry: the last decision, when tracing is on.
    pub const TRACE: &str = "FG_TRACE";
    /// `PerCpuArray<Scratch>` with one entry: the parsed packet, handed from the
    /// dispatcher to the classifier it tail-calls (tail calls keep only the context).
    pub const SCRATCH: &str = "FG_SCRATCH";
    /// `ProgramArray` with [`crate::MAX_VERSIONS`] entries: the loaded classifier versions.
    pub const CLASSIFIERS: &str = "FG_CLASSIFIERS";
    /// `Array<u32>` with [`crate::version_slots`] entries: the classifier version
    /// (index into [`CLASSIFIERS`]) serving each tenant; see [`crate::version_slot`].
    pub const VERSIONS: &str = "FG_VERSIONS";
    /// Like [`GATEWAY`], read only by probe runs: staged tables overlaid on the live ones.
    pub const PROBE_GATEWAY: &str = "FG_PROBE_GW";
    /// Like [`TENANTS`] (one word per tenant slot), read only by probe runs:
    /// staged tables overlaid on the live ones.
    pub const PROBE_TENANTS: &str = "FG_PROBE_TNT";
    /// `Array<Trace>` with one entry: the decision of the last probe run.
    pub const PROBE_TRACE: &str = "FG_PROBE_TRACE";
    /// `Array<Counter>` with one entry: the counter map probe runs walk with;
    /// they are given no counter slots, so nothing is ever written to it.
    pub const PROBE_SINK: &str = "FG_PROBE_SINK";
    /// `ProgramArray` with one entry: the tail-call target of the tail-call benchmark.
    pub const BENCH_TAIL: &str = "FG_BENCH_TAIL";
    /// `Array<CaptureConfig>` with one entry: what dropped packets to capture.
    pub const CAPTURE: &str = "FG_CAPTURE";
    /// `PerCpuArray<CaptureRate>` with one entry: the per-CPU capture rate limiter.
    pub const CAPTURE_RATE: &str = "FG_CAPTURE_RATE";
    /// `RingBuf` of [`crate::CaptureRecord`]s: captured dropped packets.
    pub const DROPS: &str = "FG_DROPS";
    /// `Array<`[`crate::limit::LimitSlot`]`>` indexed by counter slot (as
    /// many entries as counter slots, shared by every CPU): the token bucket
    /// of the rule with a limit in that slot. A slot keeps its rule, so an
    /// unchanged rule keeps its bucket across swaps; userspace writes a
    /// full bucket into a slot before a new rule takes it.
    pub const BUCKETS: &str = "FG_BUCKETS";
    /// LRU hash of [`crate::limit::SourceKey`] → `u64` (theoretical arrival
    /// time, shared by every CPU): the buckets of per-source limits, one per
    /// (rule, source prefix); entries set at attach time
    /// ([`DEFAULT_SOURCE_BUCKETS`](crate::DEFAULT_SOURCE_BUCKETS)).
    pub const SOURCE_BUCKETS: &str = "FG_SOURCE_BUCKETS";
    /// `PerCpuArray<u64>` with one entry: per-source buckets the program
    /// inserted (evicted = inserted − present).
    pub const SOURCE_INSERTS: &str = "FG_SOURCE_INSERTS";
}

/// Classifier versions that can be loaded at once (entries of [`maps::CLASSIFIERS`]).
pub const MAX_VERSIONS: u32 = 16;
/// [`maps::VERSIONS`] entry that selects the classifier for packets of no tenant.
pub const VERSION_SLOT_NONE: u32 = 0;
/// [`maps::VERSIONS`] entry read by probe runs.
pub const VERSION_SLOT_PROBE: u32 = 1;

/// Entries of [`maps::VERSIONS`] for `tenant_slots` tenant slots: the two
/// fixed entries ([`VERSION_SLOT_NONE`], [`VERSION_SLOT_PROBE`]), then one per
/// tenant.
#[inline(always)]
pub const fn version_slots(tenant_slots: u32) -> u32 {
    tenant_slots.wrapping_add(2)
}

/// [`maps::VERSIONS`] entry that selects the classifier for `tenant`'s packets
/// (`None`: packets whose destination belongs to no tenant).
///
/// The fixed entries come first, so they do not move with the number of
/// tenant slots (chosen at load time): the program never needs to know it,
/// and a tenant index past the map's end is a failed lookup (version 0).
#[inline(always)]
pub const fn version_slot(tenant: Option<u32>) -> u32 {
    match tenant {
        Some(t) => t.wrapping_add(2),
        None => VERSION_SLOT_NONE,
    }
}

/// The parsed packet, handed from the dispatcher to the classifier ([`maps::SCRATCH`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scratch {
    /// The classification key (`table::word` layout, host order).
    pub key: [u32; table::KEY_WORDS],
    /// Frame length.
    pub bytes: u64,
    /// Tenant index, or [`Trace::NONE`].
    pub tenant: u32,
    /// Non-zero for probe runs: read the probe overlay tables, count nothing,
    /// record the decision in [`maps::PROBE_TRACE`].
    pub probe: u32,
    /// The key in the form rule checks read (`table::CheckKey::of(&key)`).
    pub check: table::CheckKey,
    /// Rate limits: the classifier walks again, by a tail call of itself,
    /// after a rule whose limit the packet is within; `phase` 0: in the
    /// global rules, 1: in the tenant's. Set to 0 by the dispatcher.
    pub phase: u32,
    /// Rule cell index the walk of `phase` goes on after (0: from the start).
    pub after: u32,
}

/// [`CaptureConfig::tenant`] that selects the packets of no tenant: a fixed
/// value past every possible tenant slot ([`MAX_TENANT_SLOTS`]), so it does
/// not depend on the number of slots an attachment was loaded with.
pub const CAPTURE_NO_TENANT: u32 = u32::MAX - 1;

/// Bytes of a packet a [`CaptureRecord`] holds at most.
pub const CAPTURE_SNAPLEN: usize = 256;
/// Size of the [`maps::DROPS`] ring buffer, bytes (≈ 3,600 records).
pub const DROPS_RING_BYTES: u32 = 1 << 20;

/// What to capture (index 0 of [`maps::CAPTURE`]); all zero: nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Non-zero: capture dropped packets.
    pub enabled: u32,
    /// Only this tenant slot ([`Trace::NONE`]: any; [`CAPTURE_NO_TENANT`]: no tenant).
    pub tenant: u32,
    /// Only drops decided by this counter slot ([`Trace::NONE`]: any).
    pub slot: u32,
    /// Keep one packet in `sample` (0 or 1: every one).
    pub sample: u32,
    /// At most this many records per second per CPU (0: unlimited).
    pub rate: u32,
    /// Bytes of each packet to keep (at most [`CAPTURE_SNAPLEN`]).
    pub snaplen: u32,
}

/// The per-CPU state of the capture rate limiter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureRate {
    /// Start of the current one-second window (ns, monotonic).
    pub window: u64,
    /// Records in the current window.
    pub count: u64,
}

/// One captured dropped packet, as sent through [`maps::DROPS`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CaptureRecord {
    /// `bpf_ktime_get_ns()` at capture (monotonic).
    pub ts_ns: u64,
    /// Length of the packet on the wire.
    pub len: u32,
    /// Bytes of it in `data`.
    pub caplen: u32,
    /// Counter slot of the deciding rule or default.
    pub slot: u32,
    /// Tenant slot, or [`Trace::NONE`].
    pub tenant: u32,
    /// Ingress interface index.
    pub ifindex: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The first `caplen` bytes of the packet.
    pub data: [u8; CAPTURE_SNAPLEN],
}

/// Table slots of [`maps::GATEWAY`] (each double-buffered).
pub const GATEWAY_SLOTS: u32 = 2;
/// Buffers per table slot. A new table is placed in the standby buffer (its
/// region base written there: a plain array update), then made live by
/// flipping the slot's selector ([`select_index`]) — a 4-byte array update,
/// microseconds. The previous table stays in the other buffer, so rolling back
/// to it is the same flip.
pub const TABLE_BUFFERS: u32 = 2;
/// `u32` words of one table slot's record in [`maps::GATEWAY`] /
/// [`maps::TENANTS`]: its [`TABLE_BUFFERS`] region bases, its selector, and
/// one word of padding, so a record is 16 bytes and never straddles a cache
/// line. The selector used to live in a map of its own, one more line to read
/// per packet (10k tenants, distinct-packet trace, 8 alternating pairs of
/// runs: mean 604 → 587 ns; these small arrays mostly stay in L2).
pub const SLOT_WORDS: u32 = 4;

/// Index in [`maps::GATEWAY`] / [`maps::TENANTS`] of buffer `buffer` of table slot `slot`.
#[inline(always)]
pub const fn table_index(slot: u32, buffer: u32) -> u32 {
    slot * SLOT_WORDS + (buffer & 1)
}

/// Index, in the same map, of table slot `slot`'s selector: which buffer is
/// live (its lowest bit).
#[inline(always)]
pub const fn select_index(slot: u32) -> u32 {
    slot * SLOT_WORDS + TABLE_BUFFERS
}
/// [`maps::GATEWAY`] slot of the tenant dispatch table (destination → tenant index).
pub const SLOT_DISPATCH: u32 = 0;
/// [`maps::GATEWAY`] slot of the global (provider) rules, evaluated before any tenant's.
pub const SLOT_GLOBAL: u32 = 1;
/// Tenant slots of an attachment unless the loader asks for another number
/// ([`GatewayConfig::tenant_slots`]; entries of [`maps::PROBE_TENANTS`]).
///
/// What 65,536 slots cost, allocated at load time: [`maps::TENANTS`] 1 MiB
/// (16 bytes a slot), [`maps::PROBE_TENANTS`] and [`maps::VERSIONS`] 256 KiB
/// each, and [`maps::TENANT_COUNTERS`] 2 MiB **per possible CPU** (two
/// 16-byte counters a slot, plus the no-tenant pair): 128 MiB on a 64-CPU
/// host. Every figure grows linearly with the number of slots.
pub const DEFAULT_TENANT_SLOTS: u32 = 65_536;
/// Most tenant slots a loader may ask for (1,048,576: the tenant counters
/// alone are then 32 MiB per possible CPU).
pub const MAX_TENANT_SLOTS: u32 = 1 << 20;
/// Counter slots of an attachment unless the loader asks for another number
/// ([`GatewayConfig::counter_slots`]; entries of each CPU's block of
/// [`maps::RULE_COUNTERS`]): one per rule and one per table default, so
/// room for [`DEFAULT_TENANT_SLOTS`] tenants of a default and 3 rules each
/// (262,144 slots) plus the gateway's, rounded up to a power of two; the
/// rest is for slots held by kept generations.
///
/// What a counter slot costs, allocated at load time: one 16-byte
/// [`Counter`] **per possible CPU** (each CPU counts in a block of its own,
/// see [`per_cpu`]). 524,288 slots are 8 MiB per possible CPU: 512 MiB on a
/// 64-CPU host; 65,536 slots are 1 MiB per CPU. The cost grows linearly with
/// the number of slots.
pub const DEFAULT_COUNTER_SLOTS: u32 = 524_288;
/// Most counter slots a loader may ask for (8,388,608: 128 MiB of rule
/// counters per possible CPU, 8 GiB on a 64-CPU host). The whole map
/// (slots × possible CPUs) must also stay below 2³² entries.
pub const MAX_COUNTER_SLOTS: u32 = 1 << 23;
/// Entries of [`maps::SOURCE_BUCKETS`] unless the loader is told otherwise
/// (65,536: about 6 MiB of kernel memory, ≈ 96 bytes an entry — a 28-byte
/// key, an 8-byte value and the LRU hash's element header; shared by every
/// CPU, not per CPU).
pub const DEFAULT_SOURCE_BUCKETS: u32 = 65_536;
/// Most entries a loader may ask for in [`maps::SOURCE_BUCKETS`]
/// (4,194,304: about 400 MiB).
pub const MAX_SOURCE_BUCKETS: u32 = 1 << 22;
/// Entries of each CPU's block of [`maps::TENANT_COUNTERS`] for
/// `tenant_slots` tenant slots: a passed and a dropped counter for packets
/// of no tenant, then for each tenant ([`tenant_counter`]).
#[inline(always)]
pub const fn tenant_counters_per_cpu(tenant_slots: u32) -> u32 {
    tenant_slots.wrapping_add(1).wrapping_mul(2)
}

/// Where CPU `cpu` counts entry `index` of a counter map made of one block
/// of `per_cpu` entries per CPU ([`maps::RULE_COUNTERS`],
/// [`maps::TENANT_COUNTERS`]).
///
/// Why blocks in one ARRAY instead of a `PERCPU_ARRAY`: a per-CPU lookup
/// reads the element's per-CPU pointer, then the value — two cache lines,
/// both cold for a packet whose rule or tenant was not seen lately. Here it
/// is one. Measured 2026-11-26, kernel, traces of 100k distinct packets,
/// alternating builds: 10k tenants 600–780 → 456–580 ns, ACL 100k rules
/// 608–826 → 463–625 ns (no counters at all would save about as much again);
/// hot, criterion, 10 / 10k tenants: 100–104 / 98–122 → 86–92 / 88–90 ns.
///
/// The block sizes are chosen at load time ([`GatewayConfig::tenant_slots`],
/// [`GatewayConfig::counter_slots`]); the program reads them from the
/// configuration, one line every packet reads anyway, so a counter is still
/// one cold line. An `index` not below `per_cpu` is never counted (it would
/// land in another CPU's block), and the kernel bounds the resulting index
/// by the map's size.
#[inline(always)]
pub const fn per_cpu(cpu: u32, per_cpu: u32, index: u32) -> u32 {
    cpu.wrapping_mul(per_cpu).wrapping_add(index)
}
/// `BPF_F_MMAPABLE`: the slot maps ([`maps::GATEWAY`], [`maps::TENANTS`],
/// [`maps::PROBE_GATEWAY`], [`maps::PROBE_TENANTS`]) are mapped read-only by
/// userspace, so the pool allocator reads every region base in a memcpy
/// (a `BPF_MAP_LOOKUP_BATCH` of their 49,156 entries took 11 ms).
pub const BPF_F_MMAPABLE: u32 = 1 << 10;
/// Cells of [`maps::POOL`] unless the loader asks for another size (32 MiB:
/// double-buffered 10k-rule ACLs or 10k small tenants, plus kept generations).
pub const DEFAULT_POOL_CELLS: u32 = 1 << 18;

/// Index in [`maps::TENANT_COUNTERS`] for `tenant` (`None`: no tenant) and a
/// verdict (`dropped` = false: passed).
#[inline(always)]
pub const fn tenant_counter(tenant: Option<u32>, dropped: bool) -> u32 {
    let base = match tenant {
        Some(t) => t.wrapping_add(1).wrapping_mul(2),
        None => 0,
    };
    base.wrapping_add(dropped as u32)
}

/// Name of the dispatcher: the XDP program attached to interfaces. It parses
/// the packet, finds the tenant and tail-calls that tenant's classifier version.
pub const PROGRAM_NAME: &str = "fluxgate";
/// Name of the classifier program (tail-called, never attached).
pub const CLASSIFIER_PROGRAM_NAME: &str = "fluxgate_classify";
/// Name of the probe entry: the dispatcher's twin for `BPF_PROG_TEST_RUN` only —
/// reads staged tables overlaid on the live ones, runs the classifier version in
/// [`VERSION_SLOT_PROBE`], counts nothing, records its decision.
pub const PROBE_PROGRAM_NAME: &str = "fluxgate_probe";
/// Name of a bare `XDP_PASS` program that first tail-calls [`maps::BENCH_TAIL`]:
/// measures what one tail call costs.
pub const TAIL_FLOOR_PROGRAM_NAME: &str = "fluxgate_floor_tail";
/// Name of the bare `XDP_PASS` program in the same object: the measurement floor
/// that benchmarks report every program against.
pub const FLOOR_PROGRAM_NAME: &str = "fluxgate_floor";

/// XDP verdicts (`enum xdp_action` in `linux/bpf.h`).
pub mod xdp {
    /// `XDP_ABORTED`.
    pub const ABORTED: u32 = 0;
    /// `XDP_DROP`.
    pub const DROP: u32 = 1;
    /// `XDP_PASS`.
    pub const PASS: u32 = 2;
}

/// Packets and bytes seen by one counter on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted (whole frame as seen by XDP).
    pub bytes: u64,
}

impl Counter {
    /// Adds `other` to `self` (used to sum per-CPU values).
    pub fn add(&mut self, other: &Counter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

/// What happened to a packet. Every packet increments exactly one outcome.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// A well-formed IPv4/IPv6 packet that was passed.
    Passed = 0,
    /// A well-formed IPv4/IPv6 packet that was dropped.
    Dropped = 1,
    /// A packet that could not be parsed; it got [`GatewayConfig::malformed_action`].
    Malformed = 2,
    /// A well-formed frame that carries neither IPv4 nor IPv6 (ARP, LLDP, …); always passed.
    NotIp = 3,
    /// A packet whose tenant's classifier version was missing (the tail call
    /// failed); passed. Never happens unless the version map is damaged: the
    /// dataplane refuses to unload a version that still serves a tenant.
    Unclassified = 4,
    /// An IPv6 neighbour discovery message (ICMPv6 router / neighbour
    /// solicitation or advertisement, redirect: types 133–137, code 0) with
    /// hop limit 255, so sent on this link (RFC 4861 discards any other):
    /// passed before tenant dispatch, as ARP is for IPv4, so a tenant's
    /// `default drop` cannot cut its addresses off the link. See
    /// [`table::neighbor_discovery`].
    NeighborDiscovery = 5,
}

impl Outcome {
    /// Number of outcomes (size of the outcome counter map).
    pub const COUNT: u32 = 6;
    /// All outcomes, in index order.
    pub const ALL: [Outcome; 6] = [
        Outcome::Passed,
        Outcome::Dropped,
        Outcome::Malformed,
        Outcome::NotIp,
        Outcome::Unclassified,
        Outcome::NeighborDiscovery,
    ];

    /// Stable lower-case name, used in CLI and JSON output.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Dropped => "dropped",
            Outcome::Malformed => "malformed",
            Outcome::NotIp => "not_ip",
            Outcome::Unclassified => "unclassified",
            Outcome::NeighborDiscovery => "neighbor_discovery",
        }
    }
}

/// Why a packet was malformed. Each malformed packet increments exactly one reason.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Malformed {
    /// Shorter than an Ethernet header.
    EthernetTruncated = 0,
    /// A VLAN tag (802.1Q / 802.1ad) cut short, or more than [`MAX_VLAN_TAGS`] tags.
    VlanTag = 1,
    /// IPv4 header cut short, wrong version, IHL < 5, or total length inconsistent.
    Ipv4Header = 2,
    /// IPv6 header cut short or wrong version.
    Ipv6Header = 3,
    /// IPv6 extension-header chain cut short, or longer than the parser follows.
    Ipv6ExtensionChain = 4,
    /// TCP header cut short or data offset < 5.
    TcpHeader = 5,
    /// UDP header cut short.
    UdpHeader = 6,
    /// ICMP / ICMPv6 header cut short.
    IcmpHeader = 7,
    /// A TCP first fragment (more fragments follow) too short for the whole
    /// TCP header: its flags would come from a later fragment, past every
    /// rule (the tiny-fragment attack, RFC 1858).
    TcpTinyFragment = 8,
    /// A TCP fragment at offset 1 (8 bytes): it can only serve to overwrite
    /// the first fragment's flags (RFC 1858, section 3.2).
    TcpFragmentOffset = 9,
}

impl Malformed {
    /// Number of reasons (size of the malformed counter map).
    pub const COUNT: u32 = 10;
    /// All reasons, in index order.
    pub const ALL: [Malformed; 10] = [
        Malformed::EthernetTruncated,
        Malformed::VlanTag,
        Malformed::Ipv4Header,
        Malformed::Ipv6Header,
        Malformed::Ipv6ExtensionChain,
        Malformed::TcpHeader,
        Malformed::UdpHeader,
        Malformed::IcmpHeader,
        Malformed::TcpTinyFragment,
        Malformed::TcpFragmentOffset,
    ];

    /// Stable lower-case name, used in CLI and JSON output.
    pub const fn name(self) -> &'static str {
        match self {
            Malformed::EthernetTruncated => "ethernet_truncated",
            Malformed::VlanTag => "vlan_tag",
            Malformed::Ipv4Header => "ipv4_header",
            Malformed::Ipv6Header => "ipv6_header",
            Malformed::Ipv6ExtensionChain => "ipv6_extension_chain",
            Malformed::TcpHeader => "tcp_header",
            Malformed::UdpHeader => "udp_header",
            Malformed::IcmpHeader => "icmp_header",
            Malformed::TcpTinyFragment => "tcp_tiny_fragment",
            Malformed::TcpFragmentOffset => "tcp_fragment_offset",
        }
    }
}

/// Gateway-wide settings the program reads on every packet (index 0 of [`maps::CONFIG`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Must equal [`ABI_VERSION`]; written by the userspace that loaded the program.
    pub abi_version: u32,
    /// XDP verdict for malformed packets: [`xdp::DROP`] (default) or [`xdp::PASS`].
    /// Any other value is treated as drop by the program.
    pub malformed_action: u32,
    /// Non-zero: record every classification decision in [`maps::TRACE`]
    /// (for `classify --engine kernel` and `explain`; off in production).
    pub trace: u32,
    /// Tenant slots of the attachment (entries of [`maps::PROBE_TENANTS`]),
    /// chosen at load time; the program reads it for the size of each CPU's
    /// block of [`maps::TENANT_COUNTERS`]. Written by the loader: userspace
    /// that changes the other settings keeps it.
    pub tenant_slots: u32,
    /// Counter slots of the attachment (entries of each CPU's block of
    /// [`maps::RULE_COUNTERS`]), chosen at load time; the program reads it
    /// for the size of those blocks and counts nothing past it. Written by
    /// the loader, like [`GatewayConfig::tenant_slots`].
    pub counter_slots: u32,
    /// Explicit padding (the struct stays a multiple of 8 bytes).
    pub _pad: u32,
}

/// The last classification decision, recorded when [`GatewayConfig::trace`] is on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// Incremented on every recorded decision.
    pub seq: u32,
    /// Counter slot of the deciding rule or default; [`Trace::NONE`] if nothing was loaded.
    pub decided: u32,
    /// Tenant index; [`Trace::NONE`] if no tenant owns the destination.
    pub tenant: u32,
    /// The XDP verdict.
    pub verdict: u32,
}

impl Trace {
    /// "No slot / no tenant".
    pub const NONE: u32 = u32::MAX;
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            abi_version: ABI_VERSION,
            malformed_action: xdp::DROP,
            trace: 0,
            tenant_slots: DEFAULT_TENANT_SLOTS,
            counter_slots: DEFAULT_COUNTER_SLOTS,
            _pad: 0,
        }
    }
}

/// Most VLAN tags followed (802.1ad outer + 802.1Q inner); a third tag is malformed.
pub const MAX_VLAN_TAGS: usize = 2;
/// Most IPv6 extension headers followed before the chain counts as malformed.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all types below are #[repr(C)], contain only integers, and have no
    // implicit padding (field sizes add up to the struct size; asserted in tests).
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::GatewayConfig {}
    unsafe impl aya::Pod for super::Trace {}
    unsafe impl aya::Pod for super::Scratch {}
    unsafe impl aya::Pod for super::CaptureConfig {}
    unsafe impl aya::Pod for super::CaptureRate {}
    unsafe impl aya::Pod for super::CaptureRecord {}
    unsafe impl aya::Pod for super::table::Cell {}
    unsafe impl aya::Pod for super::limit::LimitSlot {}
    unsafe impl aya::Pod for super::limit::SourceKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn abi_structs_have_no_implicit_padding() {
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<limit::SourceKey>(), 28);
        assert_eq!(size_of::<GatewayConfig>(), 24);
        assert_eq!(size_of::<Trace>(), 16);
        assert_eq!(size_of::<Scratch>(), 4 * table::KEY_WORDS + 16 + 56 + 8);
        assert_eq!(size_of::<limit::LimitSlot>(), 56);
        assert_eq!(size_of::<CaptureConfig>(), 24);
        assert_eq!(size_of::<CaptureRate>(), 16);
        assert_eq!(size_of::<CaptureRecord>(), 32 + CAPTURE_SNAPLEN);
    }

    #[test]
    fn indices_are_dense() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
        for (i, m) in Malformed::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i);
        }
        assert_eq!(Outcome::ALL.len() as u32, Outcome::COUNT);
        assert_eq!(Malformed::ALL.len() as u32, Malformed::COUNT);
    }
}
