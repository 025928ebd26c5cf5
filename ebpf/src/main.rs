//! The fluxgate XDP program.
//!
//! Today it parses every frame (Ethernet with up to two VLAN tags, IPv4 with any
//! IHL and fragments, IPv6 with a bounded extension-header chain, TCP / UDP /
//! ICMP / ICMPv6) with a bounds-checked header cursor, counts the outcome in a
//! per-CPU counter and passes every well-formed packet. Malformed packets get
//! the verdict configured in `FG_CONFIG` (drop unless configured otherwise) and
//! their own counters by reason. Frames that are not IP (ARP, LLDP, …) always pass.
//!
//! Everything here is bounded: the VLAN and extension-header walks are unrolled
//! loops with constant trip counts, so the verifier sees a finite program.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use fluxgate_common::{Counter, GatewayConfig, Malformed, Outcome, xdp as action};

#[map(name = "FG_OUTCOMES")]
static FG_OUTCOMES: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Outcome::COUNT, 0);

#[map(name = "FG_MALFORMED")]
static FG_MALFORMED: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Malformed::COUNT, 0);

#[map(name = "FG_CONFIG")]
static FG_CONFIG: Array<GatewayConfig> = Array::with_max_entries(1, 0);

#[xdp]
pub fn fluxgate(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    let bytes = (end - start) as u64;
    match parse::parse(start, end) {
        Ok(parse::Parsed::Ip(_packet)) => {
            count(&FG_OUTCOMES, Outcome::Passed as u32, bytes);
            action::PASS
        }
        Ok(parse::Parsed::NotIp) => {
            count(&FG_OUTCOMES, Outcome::NotIp as u32, bytes);
            action::PASS
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
    action::PASS
}

/// The configured verdict for malformed packets; drop when unset or invalid.
#[inline(always)]
fn malformed_action() -> u32 {
    match FG_CONFIG.get(0) {
        Some(config) if config.malformed_action == action::PASS => action::PASS,
        _ => action::DROP,
    }
}

#[inline(always)]
fn count(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
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
