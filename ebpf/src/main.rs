//! The fluxgate XDP programs.
//!
//! Per packet, the *dispatcher* (`fluxgate`, the program attached to the
//! interface) parses (Ethernet with up to two VLAN tags, IPv4 with any IHL and
//! fragments, IPv6 with a bounded extension-header chain, TCP / UDP / ICMP /
//! ICMPv6) into a classification key, finds the tenant by destination (dispatch
//! table), leaves key and tenant in a per-CPU scratch slot and tail-calls the
//! *classifier* version assigned to that tenant (`FG_VERSIONS` →
//! `FG_CLASSIFIERS`). The classifier (`fluxgate_classify`) runs the global
//! rules, then that tenant's rules: first terminal match wins, else the
//! tenant's default action, else the gateway default → verdict, per-CPU
//! counters of the deciding rule, of every count rule on the way, of the tenant
//! and of the outcome. So a new classifier build can serve one tenant (a canary)
//! while every other tenant keeps the old one, and each step is one map update.
//!
//! Tables are decision trees, each a region of the one cell pool `FG_POOL`
//! (a plain ARRAY, so the verifier inlines every cell lookup; one
//! `BPF_F_INNER_MAP` map per table behind ARRAY_OF_MAPS slots made each one a
//! helper call). Measured in alternating runs, kernel hot ns: acl 1k 367 →
//! 226, acl 10k 451 → 278, 10k tenants 263 → 170 (1.5–1.6×; see
//! `fluxgate_common::table`). A table slot buffer holds a region base;
//! every cell index is checked against the region's header before the lookup,
//! so a walk never leaves its table. Publishing a tenant flips one selector,
//! atomically. With nothing loaded every well-formed packet
//! passes. Malformed packets get the verdict configured in `FG_CONFIG`; frames
//! that are not IP (ARP, LLDP, …) always pass.
//!
//! `fluxgate_probe` is the dispatcher's twin for `BPF_PROG_TEST_RUN` only
//! (preflight): it reads staged tables overlaid on the live ones, runs the
//! classifier version under test, counts nothing and records its decision.
//!
//! Everything here is bounded: VLAN tags, extension headers, tree depth and leaf
//! size are loops with constant trip counts.
#![no_std]
#![no_main]
// Inline asm on BPF (one tail call site per version, see `tail_call_version`).
#![feature(asm_experimental_arch)]

mod walk;

use aya_ebpf::{
    helpers::generated::{
        bpf_get_prandom_u32, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_xdp_load_bytes,
    },
    macros::{map, xdp},
    maps::{Array, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::XdpContext,
};
use fluxgate_common::{
    BPF_F_MMAPABLE, CAPTURE_NO_TENANT, CAPTURE_SNAPLEN, CaptureConfig, CaptureRate, CaptureRecord,
    Counter, DEFAULT_COUNTER_SLOTS, DEFAULT_SOURCE_BUCKETS, DEFAULT_TENANT_SLOTS, DROPS_RING_BYTES,
    GATEWAY_SLOTS, GatewayConfig, MAX_VERSIONS, Malformed, Outcome, SLOT_DISPATCH, SLOT_GLOBAL,
    SLOT_WORDS, Scratch, Trace, VERSION_SLOT_PROBE,
    limit::{LimitSlot, SourceKey},
    select_index,
    table::{Cell, CheckKey, KEY_WORDS, action, neighbor_discovery, word},
    table_index, tenant_counter, tenant_counters_per_cpu, version_slot, version_slots,
    xdp as verdict,
};
use walk::{NO_MATCH, Region, default_of, index_of, walk};

#[map(name = "FG_OUTCOMES")]
static FG_OUTCOMES: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Outcome::COUNT, 0);

#[map(name = "FG_MALFORMED")]
static FG_MALFORMED: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Malformed::COUNT, 0);

#[map(name = "FG_CONFIG")]
static FG_CONFIG: Array<GatewayConfig> = Array::with_max_entries(1, 0);

#[map(name = "FG_TRACE")]
static FG_TRACE: Array<Trace> = Array::with_max_entries(1, 0);

#[map(name = "FG_RULE_COUNTERS")]
// One block per CPU: userspace loads it with `counter slots × CPUs` entries
// (`GatewayConfig::counter_slots`); declared with the default.
static FG_RULE_COUNTERS: Array<Counter> =
    Array::with_max_entries(DEFAULT_COUNTER_SLOTS, BPF_F_MMAPABLE);

// The maps sized by the number of tenant slots (this one, FG_VERSIONS,
// FG_TENANTS, FG_PROBE_TNT) are declared with the default; the loader sets
// their size. The program never relies on it: a lookup past the end fails.
#[map(name = "FG_TENANT_COUNTERS")]
static FG_TENANT_COUNTERS: Array<Counter> = Array::with_max_entries(
    tenant_counters_per_cpu(DEFAULT_TENANT_SLOTS),
    BPF_F_MMAPABLE,
);

#[map(name = "FG_SCRATCH")]
static FG_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "FG_CLASSIFIERS")]
static FG_CLASSIFIERS: ProgramArray = ProgramArray::with_max_entries(MAX_VERSIONS, 0);

#[map(name = "FG_VERSIONS")]
static FG_VERSIONS: Array<u32> = Array::with_max_entries(version_slots(DEFAULT_TENANT_SLOTS), 0);

#[map(name = "FG_PROBE_TRACE")]
static FG_PROBE_TRACE: Array<Trace> = Array::with_max_entries(1, 0);

#[map(name = "FG_PROBE_SINK")]
static FG_PROBE_SINK: Array<Counter> = Array::with_max_entries(1, 0);

#[map(name = "FG_BENCH_TAIL")]
static FG_BENCH_TAIL: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[map(name = "FG_CAPTURE")]
static FG_CAPTURE: Array<CaptureConfig> = Array::with_max_entries(1, 0);

#[map(name = "FG_CAPTURE_RATE")]
static FG_CAPTURE_RATE: PerCpuArray<CaptureRate> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "FG_DROPS")]
static FG_DROPS: RingBuf = RingBuf::with_byte_size(DROPS_RING_BYTES, 0);

/// The token bucket of each counter slot whose rule has a limit (entries:
/// counter slots, set at load time; shared by every CPU).
#[map(name = "FG_BUCKETS")]
static FG_BUCKETS: Array<LimitSlot> = Array::with_max_entries(DEFAULT_COUNTER_SLOTS, 0);

/// The buckets of per-source limits: (counter slot, epoch, source prefix) →
/// theoretical arrival time, shared by every CPU; an LRU of as many entries
/// as the loader chose (a source not seen for a while is forgotten: its
/// bucket starts full).
#[map(name = "FG_SOURCE_BUCKETS")]
static FG_SOURCE_BUCKETS: LruHashMap<SourceKey, u64> =
    LruHashMap::with_max_entries(DEFAULT_SOURCE_BUCKETS, 0);

/// Per-source buckets this CPU inserted (userspace: evicted = the sum over
/// CPUs − entries present).
#[map(name = "FG_SOURCE_INSERTS")]
static FG_SOURCE_INSERTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Every table's cells: each table is a region of this one array (size set
/// at load time). Its lookups are inlined by the verifier (a plain ARRAY,
/// unlike `BPF_F_INNER_MAP` inner maps): see `fluxgate_common::table`.
// Mmapable: staging copies a table straight into its region (a 17 MB table
// in ≈ 5 ms instead of ≈ 30 ms through BPF_MAP_UPDATE_BATCH); lookups stay
// inlined (the verifier's `array_map_gen_lookup` only refuses inner maps).
#[map(name = "FG_POOL")]
pub(crate) static FG_POOL: Array<Cell> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Each gateway table slot's record: region base of each buffer (0: none) and
/// which buffer is live.
#[map(name = "FG_GATEWAY")]
static FG_GATEWAY: Array<u32> = Array::with_max_entries(GATEWAY_SLOTS * SLOT_WORDS, BPF_F_MMAPABLE);

/// Each tenant table slot's record, as in `FG_GATEWAY`.
#[map(name = "FG_TENANTS")]
static FG_TENANTS: Array<u32> =
    Array::with_max_entries(DEFAULT_TENANT_SLOTS * SLOT_WORDS, BPF_F_MMAPABLE);

/// Region base of the staged table a probe run sees in a gateway slot (0: the live one).
#[map(name = "FG_PROBE_GW")]
static FG_PROBE_GW: Array<u32> = Array::with_max_entries(GATEWAY_SLOTS, BPF_F_MMAPABLE);

/// Region base of the staged table a probe run sees in a tenant slot (0: the live one).
#[map(name = "FG_PROBE_TNT")]
static FG_PROBE_TNT: Array<u32> = Array::with_max_entries(DEFAULT_TENANT_SLOTS, BPF_F_MMAPABLE);

/// The dispatcher, attached to interfaces.
#[xdp]
pub fn fluxgate(ctx: XdpContext) -> u32 {
    dispatch::<false>(&ctx)
}

/// The dispatcher's twin for preflight test runs (never attached).
#[xdp]
pub fn fluxgate_probe(ctx: XdpContext) -> u32 {
    dispatch::<true>(&ctx)
}

/// Parses, finds the tenant, tail-calls the tenant's classifier version.
#[inline(always)]
fn dispatch<const PROBE: bool>(ctx: &XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    let bytes = (end - start) as u64;
    // SAFETY: reading a field of the xdp_md context the kernel handed us.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let Some(scratch) = FG_SCRATCH.get_ptr_mut(0) else {
        return unclassified::<PROBE>(bytes);
    };
    // SAFETY: a valid per-CPU map value pointer; only this CPU uses it, and the
    // classifier we tail-call reads it before anything else runs on this CPU.
    // The key is parsed in place, zeroed first by eight volatile stores
    // (`Scratch` is 8-aligned): a plain `[0; KEY_WORDS]` compiles to a call of
    // a memset subprogram and copying a key into the scratch to a memcpy one
    // (parse-and-pass 47 → 63–72 ns with them, measured 2026-11-26).
    let key = unsafe {
        let words = (&raw mut (*scratch).key).cast::<u64>();
        for i in 0..KEY_WORDS / 2 {
            core::ptr::write_volatile(words.add(i), 0);
        }
        &mut (*scratch).key
    };
    // SAFETY: `[start, end)` is the packet the kernel handed us (`data`,
    // `data_end`); the verifier checks every read against those bounds.
    match unsafe { fluxgate_parse::parse(start, end, ifindex, key) } {
        Ok(true) => {}
        Ok(false) => {
            if !PROBE {
                count(&FG_OUTCOMES, Outcome::NotIp as u32, bytes);
            }
            return verdict::PASS;
        }
        Err(reason) => {
            if !PROBE {
                count(&FG_OUTCOMES, Outcome::Malformed as u32, bytes);
                count(&FG_MALFORMED, reason as u32, bytes);
            }
            return malformed_action();
        }
    }
    // IPv6 neighbour discovery passes before any tenant's rules, as ARP
    // does (a tenant's `default drop` would cut its addresses off the link).
    // The first test, a bit only ICMPv6 keys with hop limit 255 carry,
    // fails at once for every other packet.
    if neighbor_discovery(key) {
        if !PROBE {
            count(&FG_OUTCOMES, Outcome::NeighborDiscovery as u32, bytes);
        }
        return verdict::PASS;
    }
    let table = if PROBE {
        overlay(FG_PROBE_GW.get(SLOT_DISPATCH)).or_else(|| live_gateway(SLOT_DISPATCH))
    } else {
        live_gateway(SLOT_DISPATCH)
    };
    let sink = if PROBE {
        &FG_PROBE_SINK
    } else {
        &FG_RULE_COUNTERS
    };
    let key = &*key;
    // SAFETY: as above.
    let check = unsafe {
        (*scratch).check = CheckKey::of(key);
        &(*scratch).check
    };
    let mut tenant = NO_TENANT;
    if let Some(dispatch) = table {
        // The dispatch table has no count rules: no counter slots.
        let d = walk(&dispatch, key, check, bytes, sink, 0, 0);
        if d != NO_MATCH && (d >> 32) as u8 == action::TENANT {
            tenant = d as u32;
        }
    }
    // SAFETY: as above.
    unsafe {
        (*scratch).bytes = bytes;
        (*scratch).tenant = tenant;
        (*scratch).probe = PROBE as u32;
        (*scratch).phase = 0;
        (*scratch).after = 0;
    }
    tail_call_version(ctx, version_of::<PROBE>(tenant));
    unclassified::<PROBE>(bytes)
}

/// The classifier version serving `tenant` (or probe runs).
#[inline(always)]
fn version_of<const PROBE: bool>(tenant: u32) -> u32 {
    let slot = if PROBE {
        VERSION_SLOT_PROBE
    } else if tenant == NO_TENANT {
        version_slot(None)
    } else {
        version_slot(Some(tenant))
    };
    FG_VERSIONS.get(slot).copied().unwrap_or(0)
}

/// Whether a packet of `bytes` is over the limit of the rule in counter
/// slot `slot` (taking its tokens when it is not). The bucket is shared by
/// every CPU: its one word of state moves by compare-and-exchange, retried
/// at most 4 times (a packet that loses the race 4 times is over: under
/// contention the limit errs on the side of limiting). A slot without a
/// bucket is never over.
#[inline(always)]
fn over_limit(slot: u32, bytes: u64, key: &[u32; KEY_WORDS]) -> bool {
    let Some(s) = FG_BUCKETS.get_ptr_mut(slot) else {
        return false;
    };
    // SAFETY: a valid map value pointer from a successful lookup; the bucket
    // parameters are written by userspace only before the slot's rule is
    // published, the state only through atomics.
    unsafe {
        let bucket = (*s).bucket;
        if bucket.amount == 0 {
            return false;
        }
        let now = bpf_ktime_get_ns();
        let source = (*s).source;
        let tat = if source == 0 {
            &raw mut (*s).tat
        } else {
            let src = [
                key[word::SRC],
                key[word::SRC + 1],
                key[word::SRC + 2],
                key[word::SRC + 3],
            ];
            let k = SourceKey::of(slot, (*s).epoch, source, key[word::FAMILY], src);
            match FG_SOURCE_BUCKETS.get_ptr_mut(&k) {
                Some(t) => t,
                None => return over_new_source(&bucket, &k, now, bytes),
            }
        };
        let mut tries = 0;
        while tries < 4 {
            let old = core::ptr::read_volatile(tat);
            let Some(next) = bucket.take(old, now, bytes) else {
                return true;
            };
            // BPF_ATOMIC | BPF_CMPXCHG (Linux ≥ 5.12): core's AtomicU64 has
            // no compare-and-exchange on the BPF target, the instruction does.
            let mut seen = old;
            core::arch::asm!(
                "r0 = cmpxchg_64(r1 + 0, r0, r2)",
                inout("r0") seen,
                in("r1") tat,
                in("r2") next,
            );
            if seen == old {
                return false;
            }
            tries += 1;
        }
        true
    }
}

/// The first packet of a source without a bucket (new, or forgotten by the
/// LRU): takes it from a full bucket and inserts the state. An insert that
/// fails (another CPU inserted the same source at the same moment) leaves
/// the packet conforming: at most one extra packet per race.
#[inline(always)]
fn over_new_source(
    bucket: &fluxgate_common::limit::Bucket,
    k: &SourceKey,
    now: u64,
    bytes: u64,
) -> bool {
    let Some(next) = bucket.take(0, now, bytes) else {
        return true;
    };
    if FG_SOURCE_BUCKETS.insert(k, &next, BPF_NOEXIST).is_ok()
        && let Some(n) = FG_SOURCE_INSERTS.get_ptr_mut(0)
    {
        // SAFETY: this CPU's value of a per-CPU array.
        unsafe { *n += 1 };
    }
    false
}

/// `BPF_NOEXIST`: insert only a key not present.
const BPF_NOEXIST: u64 = 1;

/// A walk result of a rule with a limit, settled: over the limit (probe
/// runs: never), the rule's verdict; within it, `None` — the classifier goes
/// on after the rule.
#[inline(always)]
fn settle<const PROBE: bool>(decision: u64, bytes: u64, key: &[u32; KEY_WORDS]) -> Option<u64> {
    if decision == NO_MATCH {
        return Some(decision);
    }
    let a = (decision >> 32) as u8;
    if a != action::LIMIT_PASS && a != action::LIMIT_DROP {
        return Some(decision);
    }
    if !PROBE && over_limit(decision as u32, bytes, key) {
        let v = action::unlimited(a);
        Some((u64::from(v) << 32) | u64::from(decision as u32))
    } else {
        None
    }
}

/// Tail-calls classifier version `version` (returns only if there is none).
///
/// One call site per version, each with a constant index: the verifier then
/// lets the JIT emit a direct jump, patched when the slot changes. A tail
/// call through a variable index is an indirect jump (a retpoline here) and
/// cost ≈ 12–15 ns more per packet (measured 2026-11-25, parse-and-pass:
/// 59 ns through a variable index, 47 with the index hard-coded, 50–52 with
/// this switch; the control crate's `generations` tests check every slot is reached).
#[inline(always)]
fn tail_call_version(ctx: &XdpContext, version: u32) {
    let map = (&raw const FG_CLASSIFIERS).cast::<core::ffi::c_void>();
    macro_rules! arms {
        ($($v:literal)*) => {
            match version {
                $(
                    // `bpf_tail_call(ctx, map, $v)` as inline asm: LLVM merges
                    // sixteen calls of the helper that differ only in the index
                    // into one with a variable index, but never inline asm.
                    // SAFETY: helper 12 with its three arguments; on success
                    // control never comes back, on failure r0–r5 are clobbered
                    // (declared) and we carry on.
                    $v => unsafe {
                        core::arch::asm!(
                            "call 12",
                            inlateout("r1") ctx.ctx => _,
                            inlateout("r2") map => _,
                            inlateout("r3") $v as u64 => _,
                            lateout("r0") _,
                            lateout("r4") _,
                            lateout("r5") _,
                        );
                    },
                )*
                _ => {}
            }
        };
    }
    arms!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    const _: () = assert!(MAX_VERSIONS == 16, "one arm per version");
}

/// The tail call failed (no classifier in the tenant's version slot): pass and
/// count it, or tell the probe caller with `XDP_ABORTED`.
#[inline(always)]
fn unclassified<const PROBE: bool>(bytes: u64) -> u32 {
    if PROBE {
        return verdict::ABORTED;
    }
    count(&FG_OUTCOMES, Outcome::Unclassified as u32, bytes);
    verdict::PASS
}

/// The classifier: global rules, then the tenant's, for the packet the
/// dispatcher left in `FG_SCRATCH`.
#[xdp]
pub fn fluxgate_classify(ctx: XdpContext) -> u32 {
    let Some(scratch) = FG_SCRATCH.get_ptr_mut(0) else {
        return verdict::PASS;
    };
    // SAFETY: this CPU's scratch value, written by the dispatcher (or by
    // this program before tail-calling itself); nothing else runs on this
    // CPU meanwhile.
    if unsafe { (*scratch).probe } != 0 {
        classify::<true>(&ctx, scratch)
    } else {
        classify::<false>(&ctx, scratch)
    }
}

/// Returns `XDP_PASS` without reading the packet: the floor benchmarks measure
/// the real program against (same object, same harness, same run).
#[xdp]
pub fn fluxgate_floor(_ctx: XdpContext) -> u32 {
    verdict::PASS
}

/// Tail-calls `FG_BENCH_TAIL[0]` (the floor, when the bench installs it), else
/// passes: the floor plus exactly one tail call.
#[xdp]
pub fn fluxgate_floor_tail(ctx: XdpContext) -> u32 {
    // SAFETY: on success control never comes back.
    unsafe { FG_BENCH_TAIL.tail_call(&ctx, 0) };
    verdict::PASS
}

#[inline(always)]
fn classify<const PROBE: bool>(ctx: &XdpContext, sp: *mut Scratch) -> u32 {
    // SAFETY: see `fluxgate_classify`; written only by `go_on`, after the
    // last read through this reference.
    let scratch: &Scratch = unsafe { &*sp };
    let bytes = scratch.bytes;
    let tenant = scratch.tenant;
    let phase = scratch.phase;
    let after = scratch.after;
    let counters = if PROBE {
        &FG_PROBE_SINK
    } else {
        &FG_RULE_COUNTERS
    };
    // Each CPU's block of rule counters is as large as the number of counter
    // slots the loader chose (recorded in the configuration); a slot past it
    // is never counted. Probe runs count nothing (0 slots: the sink is no
    // longer written either).
    let config = if PROBE { None } else { FG_CONFIG.get(0) };
    let counter_slots = match config {
        Some(config) => config.counter_slots,
        None => 0,
    };
    let global = if PROBE {
        overlay(FG_PROBE_GW.get(SLOT_GLOBAL)).or_else(|| live_gateway(SLOT_GLOBAL))
    } else {
        live_gateway(SLOT_GLOBAL)
    };
    let key = &scratch.key;
    let check = &scratch.check;
    let mut decision = NO_MATCH;
    if phase == 0
        && let Some(g) = global
    {
        let d = walk(&g, key, check, bytes, counters, counter_slots, after);
        match settle::<PROBE>(d, bytes, key) {
            Some(d) => decision = d,
            None => return go_on::<PROBE>(ctx, sp, 0, index_of(d)),
        }
    }
    if decision == NO_MATCH {
        let after = if phase == 1 { after } else { 0 };
        let table = if tenant == NO_TENANT {
            None
        } else if PROBE {
            overlay(FG_PROBE_TNT.get(tenant)).or_else(|| live_tenant(tenant))
        } else {
            live_tenant(tenant)
        };
        decision = match table {
            Some(table) => {
                let d = walk(&table, key, check, bytes, counters, counter_slots, after);
                match settle::<PROBE>(d, bytes, key) {
                    Some(NO_MATCH) => default_of(&table),
                    Some(d) => d,
                    None => return go_on::<PROBE>(ctx, sp, 1, index_of(d)),
                }
            }
            None => match global {
                Some(g) => default_of(&g),
                None => NO_MATCH,
            },
        };
    }
    // Nothing loaded yet: pass.
    let dropped = decision != NO_MATCH && (decision >> 32) as u8 == action::DROP;
    if PROBE {
        record(&FG_PROBE_TRACE, decision, tenant, dropped);
    } else {
        if decision != NO_MATCH {
            count_on_cpu(&FG_RULE_COUNTERS, counter_slots, decision as u32, bytes);
        }
        if let Some(config) = config
            && config.trace != 0
        {
            record(&FG_TRACE, decision, tenant, dropped);
        }
        let tenant = if tenant == NO_TENANT {
            None
        } else {
            Some(tenant)
        };
        // Each CPU's block of tenant counters is as large as the number of
        // tenant slots the loader chose (recorded in the configuration).
        let per_cpu = match config {
            Some(config) => tenant_counters_per_cpu(config.tenant_slots),
            None => 0,
        };
        count_on_cpu(
            &FG_TENANT_COUNTERS,
            per_cpu,
            tenant_counter(tenant, dropped),
            bytes,
        );
        // Capture costs one array lookup per dropped packet while it is off.
        if dropped
            && let Some(config) = FG_CAPTURE.get(0)
            && config.enabled != 0
        {
            let slot = if decision == NO_MATCH {
                Trace::NONE
            } else {
                decision as u32
            };
            capture(ctx, config, slot, scratch);
        }
        let outcome = if dropped {
            Outcome::Dropped
        } else {
            Outcome::Passed
        };
        count(&FG_OUTCOMES, outcome as u32, bytes);
    }
    if dropped {
        verdict::DROP
    } else {
        verdict::PASS
    }
}

const NO_TENANT: u32 = u32::MAX;

/// Walks again after rule cell `after` of `phase` (0: global, 1: tenant):
/// a tail call of the tenant's classifier version with the place in the
/// scratch. Returns only if the tail call fails (more limited rules in a
/// row than tail calls allowed — validation bounds them — or no classifier).
#[inline(always)]
fn go_on<const PROBE: bool>(ctx: &XdpContext, sp: *mut Scratch, phase: u32, after: u32) -> u32 {
    // SAFETY: this CPU's scratch value (see `fluxgate_classify`).
    let (tenant, bytes) = unsafe {
        (*sp).phase = phase;
        (*sp).after = after;
        ((*sp).tenant, (*sp).bytes)
    };
    tail_call_version(ctx, version_of::<PROBE>(tenant));
    unclassified::<PROBE>(bytes)
}

/// A probe overlay slot's table, unless it holds none (base 0).
#[inline(always)]
fn overlay(base: Option<&u32>) -> Option<Region> {
    Region::at(*base?)
}

/// The live buffer of a gateway table slot.
#[inline(always)]
fn live_gateway(slot: u32) -> Option<Region> {
    live(&FG_GATEWAY, slot)
}

/// The live buffer of a tenant's table slot.
#[inline(always)]
fn live_tenant(tenant: u32) -> Option<Region> {
    live(&FG_TENANTS, tenant)
}

/// The live buffer of `slot` of `slots`: selector and base share the slot's
/// record, one cache line.
#[inline(always)]
fn live(slots: &Array<u32>, slot: u32) -> Option<Region> {
    let buffer = slots.get(select_index(slot)).copied().unwrap_or(0);
    Region::at(*slots.get(table_index(slot, buffer))?)
}

/// Sends a dropped packet to userspace through `FG_DROPS`, if the capture
/// filters (tenant, deciding slot), sampling and rate limit let it through.
#[inline(never)]
fn capture(ctx: &XdpContext, config: &CaptureConfig, slot: u32, scratch: &Scratch) {
    let (tenant, len, ifindex) = (scratch.tenant, scratch.bytes, scratch.key[word::IFINDEX]);
    if config.tenant != Trace::NONE
        && config.tenant
            != if tenant == NO_TENANT {
                CAPTURE_NO_TENANT
            } else {
                tenant
            }
    {
        return;
    }
    if config.slot != Trace::NONE && config.slot != slot {
        return;
    }
    // SAFETY: helpers without preconditions.
    if config.sample > 1 && unsafe { bpf_get_prandom_u32() } % config.sample != 0 {
        return;
    }
    if config.rate != 0 {
        let Some(state) = FG_CAPTURE_RATE.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: per-CPU value pointer from a successful lookup; helper call.
        unsafe {
            let now = bpf_ktime_get_ns();
            if now.wrapping_sub((*state).window) >= 1_000_000_000 {
                (*state).window = now;
                (*state).count = 0;
            }
            if (*state).count >= u64::from(config.rate) {
                return;
            }
            (*state).count += 1;
        }
    }
    let Some(mut entry) = FG_DROPS.reserve::<CaptureRecord>(0) else {
        return;
    };
    let rec = entry.as_mut_ptr();
    let snaplen = if config.snaplen == 0 || config.snaplen as usize > CAPTURE_SNAPLEN {
        CAPTURE_SNAPLEN as u32
    } else {
        config.snaplen
    };
    let want = if len < u64::from(snaplen) {
        len as u32
    } else {
        snaplen
    };
    // SAFETY: `rec` points at a reserved record we own until submit; the copy
    // length is bounded by the record's buffer.
    unsafe {
        (*rec).ts_ns = bpf_ktime_get_ns();
        (*rec).len = len as u32;
        (*rec).slot = slot;
        (*rec).tenant = tenant;
        (*rec).ifindex = ifindex;
        (*rec)._pad = 0;
        // Copied in constant-size pieces (256, 128, …, 1): the verifier wants
        // a provably bounded length for each bpf_xdp_load_bytes.
        let mut off = 0u32;
        let mut left = want;
        let mut ok = true;
        ok &= piece::<256>(ctx, rec, &mut off, &mut left);
        ok &= piece::<128>(ctx, rec, &mut off, &mut left);
        ok &= piece::<64>(ctx, rec, &mut off, &mut left);
        ok &= piece::<32>(ctx, rec, &mut off, &mut left);
        ok &= piece::<16>(ctx, rec, &mut off, &mut left);
        ok &= piece::<8>(ctx, rec, &mut off, &mut left);
        ok &= piece::<4>(ctx, rec, &mut off, &mut left);
        ok &= piece::<2>(ctx, rec, &mut off, &mut left);
        ok &= piece::<1>(ctx, rec, &mut off, &mut left);
        (*rec).caplen = if ok { off } else { 0 };
    }
    entry.submit(0);
}

/// Copies `N` packet bytes at `*off` into the record when at least `N` are
/// left to copy; false if the kernel refused.
#[inline(always)]
unsafe fn piece<const N: u32>(
    ctx: &XdpContext,
    rec: *mut CaptureRecord,
    off: &mut u32,
    left: &mut u32,
) -> bool {
    if *left < N || *off as usize + N as usize > CAPTURE_SNAPLEN {
        return true;
    }
    // SAFETY: `rec` is a reserved ring-buffer record; `off + N` is within its
    // data (checked above).
    let ok = unsafe {
        let dst = (*rec).data.as_mut_ptr().add(*off as usize);
        bpf_xdp_load_bytes(ctx.ctx, *off, dst.cast(), N) == 0
    };
    *off += N;
    *left -= N;
    ok
}

/// Records a decision for `classify --engine kernel` / `explain` (tracing only).
#[inline(never)]
fn record(map: &Array<Trace>, decision: u64, tenant: u32, dropped: bool) {
    if let Some(t) = map.get_ptr_mut(0) {
        // SAFETY: a valid map value pointer; a torn read by userspace only
        // happens while packets race, which tracing users do not do.
        unsafe {
            (*t).seq = (*t).seq.wrapping_add(1);
            (*t).decided = if decision == NO_MATCH {
                Trace::NONE
            } else {
                decision as u32
            };
            (*t).tenant = tenant;
            (*t).verdict = if dropped {
                verdict::DROP
            } else {
                verdict::PASS
            };
        }
    }
}

/// The configured verdict for malformed packets; drop when unset or invalid.
#[inline(always)]
fn malformed_action() -> u32 {
    match FG_CONFIG.get(0) {
        Some(config) if config.malformed_action == verdict::PASS => verdict::PASS,
        _ => verdict::DROP,
    }
}

#[inline(always)]
pub(crate) fn count(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful per-CPU map lookup; it is
        // valid, aligned, and only this CPU writes this slot.
        unsafe { bump(counter, bytes) };
    }
}

/// Adds one packet of `bytes` to `*counter`.
///
/// # Safety
///
/// `counter` must be a valid, aligned map value pointer that only this CPU
/// writes.
#[inline(always)]
unsafe fn bump(counter: *mut Counter, bytes: u64) {
    // SAFETY: as the caller promised.
    unsafe {
        (*counter).packets += 1;
        (*counter).bytes += bytes;
    }
}

/// Counts in this CPU's block of `per_cpu` entries of `map` (see
/// `fluxgate_common::per_cpu`); an index outside the block counts nowhere.
#[inline(always)]
pub(crate) fn count_on_cpu(map: &Array<Counter>, per_cpu: u32, index: u32, bytes: u64) {
    if index >= per_cpu {
        return;
    }
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    if let Some(counter) = map.get_ptr_mut(fluxgate_common::per_cpu(cpu, per_cpu, index)) {
        // SAFETY: the pointer comes from a successful map lookup; it is valid
        // and aligned, and only this CPU writes its block.
        unsafe { bump(counter, bytes) };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
