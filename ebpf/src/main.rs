//! The fluxgate XDP program.
//!
//! Per packet: parse (Ethernet with up to two VLAN tags, IPv4 with any IHL and
//! fragments, IPv6 with a bounded extension-header chain, TCP / UDP / ICMP /
//! ICMPv6) into a classification key → tenant by destination (dispatch table) →
//! global rules → that tenant's rules → first terminal match wins, else the
//! tenant's default action, else the gateway default → verdict, per-CPU counters
//! of the deciding rule, of every count rule on the way, of the tenant and of
//! the outcome.
//!
//! Tables are decision trees in ARRAY maps reached through ARRAY_OF_MAPS slots
//! (see `fluxgate_common::table` for the layout and why): publishing a tenant
//! replaces one slot, atomically. With nothing loaded every well-formed packet
//! passes. Malformed packets get the verdict configured in `FG_CONFIG`; frames
//! that are not IP (ARP, LLDP, …) always pass.
//!
//! Everything here is bounded: VLAN tags, extension headers, tree depth and leaf
//! size are loops with constant trip counts.
#![no_std]
#![no_main]

mod parse;
mod walk;

use aya_ebpf::{
    btf_maps::{Array as BtfArray, ArrayOfMaps},
    macros::{btf_map, map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use fluxgate_common::{
    BPF_F_INNER_MAP, Counter, GATEWAY_SLOTS, GatewayConfig, MAX_COUNTERS, MAX_TENANTS, Malformed,
    Outcome, SLOT_DISPATCH, SLOT_GLOBAL, Trace,
    table::{Cell, KEY_WORDS, action},
    tenant_counter, xdp as verdict,
};
use walk::{NO_MATCH, default_of, walk};

/// One table: an ARRAY of cells whose size differs per table (BPF_F_INNER_MAP).
pub(crate) type Table = BtfArray<Cell, 1, { BPF_F_INNER_MAP as usize }>;

#[map(name = "FG_OUTCOMES")]
static FG_OUTCOMES: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Outcome::COUNT, 0);

#[map(name = "FG_MALFORMED")]
static FG_MALFORMED: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Malformed::COUNT, 0);

#[map(name = "FG_CONFIG")]
static FG_CONFIG: Array<GatewayConfig> = Array::with_max_entries(1, 0);

#[map(name = "FG_TRACE")]
static FG_TRACE: Array<Trace> = Array::with_max_entries(1, 0);

#[map(name = "FG_RULE_COUNTERS")]
static FG_RULE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_COUNTERS, 0);

#[map(name = "FG_TENANT_COUNTERS")]
static FG_TENANT_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries((MAX_TENANTS + 1) * 2, 0);

#[btf_map]
static FG_GATEWAY: ArrayOfMaps<Table, { GATEWAY_SLOTS as usize }> = ArrayOfMaps::new();

#[btf_map]
static FG_TENANTS: ArrayOfMaps<Table, { MAX_TENANTS as usize }> = ArrayOfMaps::new();

#[xdp]
pub fn fluxgate(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    let bytes = (end - start) as u64;
    // SAFETY: reading a field of the xdp_md context the kernel handed us.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    match parse::parse(start, end, ifindex) {
        Ok(parse::Parsed::Ip(key)) => classify(&key, bytes),
        Ok(parse::Parsed::NotIp) => {
            count(&FG_OUTCOMES, Outcome::NotIp as u32, bytes);
            verdict::PASS
        }
        Err(reason) => {
            count(&FG_OUTCOMES, Outcome::Malformed as u32, bytes);
            count(&FG_MALFORMED, reason as u32, bytes);
            malformed_action()
        }
    }
}

/// Returns `XDP_PASS` without reading the packet: the floor benchmarks measure
/// the real program against (same object, same harness, same run).
#[xdp]
pub fn fluxgate_floor(_ctx: XdpContext) -> u32 {
    verdict::PASS
}

#[inline(always)]
fn classify(key: &[u32; KEY_WORDS], bytes: u64) -> u32 {
    let mut tenant = NO_TENANT;
    if let Some(dispatch) = FG_GATEWAY.get(SLOT_DISPATCH) {
        let d = walk(dispatch, key, bytes, &FG_RULE_COUNTERS);
        if d != NO_MATCH && (d >> 32) as u8 == action::TENANT {
            tenant = d as u32;
        }
    }
    let global = FG_GATEWAY.get(SLOT_GLOBAL);
    let mut decision = match global {
        Some(g) => walk(g, key, bytes, &FG_RULE_COUNTERS),
        None => NO_MATCH,
    };
    if decision == NO_MATCH {
        let table = if tenant == NO_TENANT {
            None
        } else {
            FG_TENANTS.get(tenant)
        };
        decision = match table {
            Some(table) => match walk(table, key, bytes, &FG_RULE_COUNTERS) {
                NO_MATCH => default_of(table),
                d => d,
            },
            None => match global {
                Some(g) => default_of(g),
                None => NO_MATCH,
            },
        };
    }
    // Nothing loaded yet: pass.
    let dropped = decision != NO_MATCH && (decision >> 32) as u8 == action::DROP;
    if decision != NO_MATCH {
        count(&FG_RULE_COUNTERS, decision as u32, bytes);
    }
    if let Some(config) = FG_CONFIG.get(0)
        && config.trace != 0
    {
        record(decision, tenant, dropped);
    }
    let tenant = if tenant == NO_TENANT {
        None
    } else {
        Some(tenant)
    };
    count(&FG_TENANT_COUNTERS, tenant_counter(tenant, dropped), bytes);
    if dropped {
        count(&FG_OUTCOMES, Outcome::Dropped as u32, bytes);
        verdict::DROP
    } else {
        count(&FG_OUTCOMES, Outcome::Passed as u32, bytes);
        verdict::PASS
    }
}

const NO_TENANT: u32 = u32::MAX;

/// Records a decision for `classify --engine kernel` / `explain` (tracing only).
#[inline(never)]
fn record(decision: u64, tenant: u32, dropped: bool) {
    if let Some(t) = FG_TRACE.get_ptr_mut(0) {
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
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
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
