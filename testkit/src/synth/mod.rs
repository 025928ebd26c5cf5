//! Deterministic synthetic rulesets and packets, for benches and tests; one
//! generator module, one seeded PRNG ([`Rng`]).
//!
//! - At this level: ClassBench-like filter sets ([`classbench_like`]) and
//!   packets inside them ([`trace`], [`packets`], [`packet_in`]), the rulesets of
//!   the benches, the ClassBench differential tests and `fluxgate classify`'s tests.
//! - [`flat`]: the same kind of IPv4 5-tuple sets built directly as the table
//!   compiler's [`FlatRule`](fluxgate_ruleset::table::FlatRule)s, and keys, for
//!   the table tests and benches (which test the compiler alone, below the rule model).
//! - [`strategy`]: proptest strategies for whole rulesets (text files) and
//!   packets over a small universe of boundary values; proptest draws them, so a
//!   failure shrinks to a minimal ruleset.
//!
//! Not a re-implementation of ClassBench's `db_generator`, but the same shape: addresses
//! drawn around a pool of "seed" networks so prefixes nest and overlap as in real
//! filter sets, prefix lengths from per-family distributions (ACL: specific
//! destinations, FW: many wildcards, IPC: in between), destination ports mostly exact
//! well-known ports, then the classic ranges (`1024-65535`, `0-1023`), then wildcards.
//! Same `(family, n, seed)` → same filters, on every platform and Rust version
//! (a SplitMix64 PRNG written here).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use fluxgate_ruleset::classbench::{Filter, TraceEntry, header};
use fluxgate_ruleset::model::{PortRange, Proto};
use fluxgate_ruleset::packet::PacketHeader;

pub mod flat;
pub mod strategy;

/// ClassBench seed family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Access control lists: specific prefixes and ports.
    Acl,
    /// Firewalls: many wildcards and port ranges.
    Fw,
    /// IP chains: a mix.
    Ipc,
}

/// SplitMix64: tiny, fast, fixed algorithm.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; returns 0 for `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A random `u32`.
    pub fn u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    /// Picks from `(weight, value)` pairs.
    pub(crate) fn weighted<T: Copy>(&mut self, table: &[(u32, T)]) -> T {
        let total: u64 = table.iter().map(|(w, _)| u64::from(*w)).sum();
        let mut x = self.below(total);
        for &(w, v) in table {
            if x < u64::from(w) {
                return v;
            }
            x -= u64::from(w);
        }
        table[table.len() - 1].1
    }
}

const WELL_KNOWN: &[u16] = &[
    80, 443, 22, 25, 53, 110, 143, 993, 995, 3306, 5432, 8080, 8443, 123, 161, 389, 636, 21, 23,
    3389,
];

struct Shape {
    src_len: &'static [(u32, u8)],
    dst_len: &'static [(u32, u8)],
    proto: &'static [(u32, Option<u8>)],
    /// (exact well-known, classic range, random range, any)
    dport: [u32; 4],
    sport_any: u32,
}

fn shape(f: Family) -> Shape {
    match f {
        Family::Acl => Shape {
            src_len: &[(30, 0), (10, 8), (10, 16), (25, 24), (10, 28), (15, 32)],
            dst_len: &[(5, 0), (5, 16), (30, 24), (15, 28), (45, 32)],
            proto: &[(70, Some(6)), (20, Some(17)), (5, Some(1)), (5, None)],
            dport: [65, 15, 5, 15],
            sport_any: 95,
        },
        Family::Fw => Shape {
            src_len: &[(45, 0), (10, 8), (15, 16), (20, 24), (10, 32)],
            dst_len: &[(25, 0), (10, 16), (30, 24), (35, 32)],
            proto: &[(45, Some(6)), (20, Some(17)), (5, Some(1)), (30, None)],
            dport: [35, 25, 10, 30],
            sport_any: 75,
        },
        Family::Ipc => Shape {
            src_len: &[(35, 0), (10, 8), (15, 16), (20, 24), (20, 32)],
            dst_len: &[(15, 0), (10, 16), (35, 24), (40, 32)],
            proto: &[(55, Some(6)), (25, Some(17)), (5, Some(1)), (15, None)],
            dport: [50, 20, 10, 20],
            sport_any: 85,
        },
    }
}

fn prefix(rng: &mut Rng, seeds: &[u32], len: u8) -> Ipv4Net {
    let base = seeds[rng.below(seeds.len() as u64) as usize];
    // keep the seed's top 16 bits, randomise the rest: nesting and overlap as in real sets
    let addr = (base & 0xffff_0000) | (rng.next_u64() as u32 & 0xffff);
    Ipv4Net::new(Ipv4Addr::from(addr), len)
        .map(|n| n.trunc())
        .unwrap_or_default()
}

fn port_range(rng: &mut Rng, weights: [u32; 4]) -> PortRange {
    match rng.weighted(&[
        (weights[0], 0u8),
        (weights[1], 1),
        (weights[2], 2),
        (weights[3], 3),
    ]) {
        0 => PortRange::single(WELL_KNOWN[rng.below(WELL_KNOWN.len() as u64) as usize]),
        1 => {
            if rng.below(2) == 0 {
                PortRange {
                    lo: 1024,
                    hi: 65535,
                }
            } else {
                PortRange { lo: 0, hi: 1023 }
            }
        }
        2 => {
            let lo = rng.below(60000) as u16;
            PortRange {
                lo,
                hi: lo.saturating_add(rng.below(2000) as u16),
            }
        }
        _ => PortRange { lo: 0, hi: 65535 },
    }
}

/// `n` ClassBench-like filters of `family`, deterministic in `seed`.
pub fn classbench_like(family: Family, n: usize, seed: u64) -> Vec<Filter> {
    let mut rng = Rng::new(seed ^ (family as u64).wrapping_mul(0x5851_f42d_4c95_7f2d));
    let sh = shape(family);
    let n_seeds = (n / 50).clamp(4, 4096);
    let seeds: Vec<u32> = (0..n_seeds).map(|_| rng.next_u64() as u32).collect();
    let mut filters: Vec<Filter> = (0..n)
        .map(|_| {
            let proto = rng.weighted(sh.proto);
            let has_ports = proto.is_none_or(|p| Proto::from_number(p).has_ports());
            let any = PortRange { lo: 0, hi: 65535 };
            let dport = if has_ports {
                port_range(&mut rng, sh.dport)
            } else {
                any
            };
            let sport = if has_ports && rng.below(100) >= u64::from(sh.sport_any) {
                port_range(&mut rng, [20, 60, 20, 0])
            } else {
                any
            };
            let flags = (proto == Some(6) && rng.below(20) == 0).then_some((0x0010, 0x0010));
            let (src_len, dst_len) = (rng.weighted(sh.src_len), rng.weighted(sh.dst_len));
            Filter {
                src: prefix(&mut rng, &seeds, src_len),
                dst: prefix(&mut rng, &seeds, dst_len),
                sport,
                dport,
                proto,
                flags,
            }
        })
        .collect();
    // real filter sets list specific rules before general ones; without this, early
    // broad rules would shadow most of the set (stable sort: still deterministic)
    filters.sort_by_key(|f| std::cmp::Reverse(specificity(f)));
    filters
}

fn specificity(f: &Filter) -> u32 {
    let width = |r: PortRange| 16 - (u32::from(r.hi - r.lo) + 1).ilog2().min(16);
    u32::from(f.src.prefix_len())
        + u32::from(f.dst.prefix_len())
        + width(f.sport)
        + width(f.dport)
        + if f.proto.is_some() { 8 } else { 0 }
}

fn pick_in(rng: &mut Rng, n: Ipv4Net) -> u32 {
    let host_bits = 32 - u32::from(n.prefix_len());
    let mask = if host_bits == 32 {
        u32::MAX
    } else {
        (1u32 << host_bits) - 1
    };
    u32::from(n.network()) | (rng.next_u64() as u32 & mask)
}

/// `n` packets, each built inside a randomly chosen filter, with `expected` = the
/// 1-based index of the first filter that matches it (ClassBench semantics).
/// The headers are those of [`packets`] with the same seed.
pub fn trace(filters: &[Filter], n: usize, seed: u64) -> Vec<TraceEntry> {
    generate(filters, n, seed)
        .map(|(gi, header)| {
            // the generating filter matches, so the first match is at or before it
            let expected = filters[..=gi]
                .iter()
                .position(|x| x.matches(&header))
                .map(|i| i as u32 + 1);
            TraceEntry { header, expected }
        })
        .collect()
}

/// The headers of [`trace`] without the expected matches (which cost a scan
/// of the filters per packet): `n` packets, each inside a randomly chosen filter.
pub fn packets(filters: &[Filter], n: usize, seed: u64) -> Vec<PacketHeader> {
    generate(filters, n, seed).map(|(_, h)| h).collect()
}

/// `(generating filter, packet)` pairs; none when `filters` is empty.
fn generate(
    filters: &[Filter],
    n: usize,
    seed: u64,
) -> impl Iterator<Item = (usize, PacketHeader)> {
    let mut rng = Rng::new(seed);
    let n = if filters.is_empty() { 0 } else { n };
    (0..n).map(move |_| {
        let gi = rng.below(filters.len() as u64) as usize;
        (gi, packet_in(&filters[gi], &mut rng))
    })
}

/// A random packet that `f` matches (protocol drawn among TCP, UDP, GRE for a
/// wildcard protocol).
pub fn packet_in(f: &Filter, rng: &mut Rng) -> PacketHeader {
    let port = |rng: &mut Rng, r: PortRange| {
        r.lo.saturating_add(rng.below(u64::from(r.hi - r.lo) + 1) as u16)
    };
    let proto = f
        .proto
        .unwrap_or_else(|| rng.weighted(&[(6, 6u8), (3, 17), (1, 47)]));
    let mut h = header(
        pick_in(rng, f.src),
        pick_in(rng, f.dst),
        port(rng, f.sport),
        port(rng, f.dport),
        proto,
    );
    if proto == 6 {
        // random flags, forced to what the filter requires
        let (v, m) = f
            .flags
            .map_or((0, 0), |(v, m)| ((v & m & 0xff) as u8, (m & 0xff) as u8));
        h.tcp_flags = Some((rng.next_u64() as u8 & !m) | v);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a of the filters' ClassBench text: a fingerprint stable across
    /// platforms and Rust versions (unlike `DefaultHasher`).
    fn fingerprint(filters: &[Filter]) -> u64 {
        filters
            .iter()
            .flat_map(|f| format!("{f}\n").into_bytes())
            .fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
    }

    #[test]
    fn rng_is_splitmix64() {
        // The reference outputs of SplitMix64 from seed 0.
        let mut rng = Rng::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
        assert_eq!(rng.below(0), 0);
        assert!((0..1000).all(|_| rng.below(7) < 7));
        assert!((0..1000).all(|_| rng.weighted(&[(0, 'a'), (3, 'b'), (0, 'c')]) == 'b'));
    }

    /// The benches and differential tests compare runs over these sets: a
    /// change of generator must be deliberate (and the numbers re-measured).
    #[test]
    fn the_same_family_size_and_seed_give_the_same_filters() {
        for (family, want) in [
            (Family::Acl, 0xc57c_179b_ad9f_096a),
            (Family::Fw, 0xfb91_cc44_6b35_1172),
            (Family::Ipc, 0xf4a3_6dbb_50f1_e095),
        ] {
            let filters = classbench_like(family, 1_000, 42);
            assert_eq!(filters.len(), 1_000);
            assert_eq!(fingerprint(&filters), want, "{family:?}");
        }
        assert_ne!(
            classbench_like(Family::Acl, 100, 1),
            classbench_like(Family::Acl, 100, 2)
        );
    }

    #[test]
    fn filters_come_most_specific_first() {
        let filters = classbench_like(Family::Fw, 2_000, 7);
        assert!(
            filters
                .windows(2)
                .all(|w| specificity(&w[0]) >= specificity(&w[1]))
        );
        assert!(
            filters.iter().any(|f| f.proto.is_none()),
            "wildcard protocols"
        );
        assert!(filters.iter().any(|f| f.flags.is_some()), "TCP flags");
    }

    #[test]
    fn trace_packets_lie_in_their_filters_and_name_the_first_match() {
        let filters = classbench_like(Family::Ipc, 500, 3);
        let entries = trace(&filters, 2_000, 4);
        let headers = packets(&filters, 2_000, 4);
        assert_eq!(entries.len(), 2_000);
        for (entry, header) in entries.iter().zip(&headers) {
            assert_eq!(&entry.header, header, "packets() = trace()'s headers");
            let first = filters.iter().position(|f| f.matches(header));
            assert_eq!(entry.expected, first.map(|i| i as u32 + 1));
            assert!(entry.expected.is_some(), "each packet is inside a filter");
        }
        assert!(trace(&[], 10, 4).is_empty());
    }

    #[test]
    fn packet_in_matches_its_filter() {
        let mut rng = Rng::new(5);
        for f in classbench_like(Family::Acl, 300, 9) {
            for _ in 0..10 {
                let p = packet_in(&f, &mut rng);
                assert!(f.matches(&p), "{f} / {p}");
            }
        }
    }
}
