//! A small deterministic ClassBench-like IPv4 5-tuple generator of [`FlatRule`]s
//! and keys, for the table tests and benches: rules as the table compiler sees
//! them, without going through the rule model (its own distributions, drawn from
//! the same [`Rng`]).
//!
//! Addresses are drawn around a pool of seed /16 networks so prefixes nest and
//! overlap; prefix lengths mix /32, /24, /16, /8 and /0; source ports are mostly
//! wildcards, destination ports mostly exact well-known ports, then `1024-65535`,
//! small ranges and wildcards; protocol TCP, UDP or any.

use fluxgate_common::table::{ADDR_WORDS, KEY_WORDS, RANGE_WORDS, action, word};

use fluxgate_ruleset::table::FlatRule;

use super::Rng;

fn prefix(addr: u32, len: u32) -> (u32, u32) {
    let host = u32::MAX.checked_shr(len).unwrap_or(0);
    (addr & !host, addr | host)
}

const PORTS: [u32; 12] = [22, 25, 53, 80, 123, 443, 587, 993, 3306, 5432, 8080, 11211];

/// A fresh IPv4 5-tuple rule skeleton: family 4, upper address words 0, the rest wildcards.
fn ipv4_any() -> FlatRule {
    let mut r = FlatRule::any(action::PASS, 0);
    for &w in &ADDR_WORDS[2..] {
        r.lo[w] = 0;
        r.hi[w] = 0;
    }
    r.lo[word::FAMILY] = 4;
    r.hi[word::FAMILY] = 4;
    r
}

/// `n` ClassBench-like IPv4 rules (deterministic in `seed`); about 1% are COUNT
/// rules on specific destinations, the rest PASS or DROP. Counter = position.
pub fn classbench_like(n: usize, seed: u64) -> Vec<FlatRule> {
    let mut rng = Rng::new(seed);
    let seeds: Vec<u32> = (0..(n / 50).clamp(4, 2000))
        .map(|_| rng.u32() & 0xffff_0000)
        .collect();
    let addr = |rng: &mut Rng, len: u32| {
        let base = seeds[rng.below(seeds.len() as u64) as usize];
        prefix(base | (rng.u32() & 0xffff), len)
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut r = ipv4_any();
        let count = rng.below(100) == 0;
        let slen = rng.weighted(&[(35, 0), (5, 8), (15, 16), (25, 24), (20, 32)]);
        let dlen = if count {
            rng.weighted(&[(1, 24), (1, 32)])
        } else {
            rng.weighted(&[(8, 0), (5, 8), (12, 16), (35, 24), (40, 32)])
        };
        let (slo, shi) = if slen == 0 {
            (0, u32::MAX)
        } else {
            addr(&mut rng, slen)
        };
        let (dlo, dhi) = if dlen == 0 {
            (0, u32::MAX)
        } else {
            addr(&mut rng, dlen)
        };
        r.lo[word::SRC] = slo;
        r.hi[word::SRC] = shi;
        r.lo[word::DST] = dlo;
        r.hi[word::DST] = dhi;
        let proto = rng.weighted(&[(60, 6u32), (25, 17), (15, 256)]);
        if proto != 256 {
            r.lo[word::PROTO] = proto;
            r.hi[word::PROTO] = proto;
            let (spl, sph) = rng.weighted(&[(85, (0, 65535)), (10, (1024, 65535)), (5, (1, 1))]);
            let (spl, sph) = if spl == 1 {
                let p = PORTS[rng.below(PORTS.len() as u64) as usize];
                (p, p)
            } else {
                (spl, sph)
            };
            let kind = rng.weighted(&[(50, 0), (10, 1), (15, 2), (25, 3)]);
            let (dpl, dph) = match kind {
                0 => {
                    let p = PORTS[rng.below(PORTS.len() as u64) as usize];
                    (p, p)
                }
                1 => (1024, 65535),
                2 => {
                    let a = rng.below(60000) as u32;
                    (a, a + rng.below(100) as u32)
                }
                _ => (0, 65535),
            };
            r.lo[word::SPORT] = spl;
            r.hi[word::SPORT] = sph;
            r.lo[word::DPORT] = dpl;
            r.hi[word::DPORT] = dph;
            if (spl, sph, dpl, dph) != (0, 65535, 0, 65535) {
                r.lo[word::L4] = 1;
                r.hi[word::L4] = 1;
            }
            if proto == 6 && rng.below(20) == 0 {
                r.flags_mask = 0x12; // SYN/ACK
                r.flags_value = 0x02; // SYN only
            }
        }
        r.action = if count {
            action::COUNT
        } else {
            rng.weighted(&[(70, action::PASS), (30, action::DROP)])
        };
        r.counter = i as u32;
        out.push(r);
    }
    out
}

/// A key inside rule `r` (random point of its box), or a random IPv4 key.
pub fn key_in(rng: &mut Rng, r: Option<&FlatRule>) -> [u32; KEY_WORDS] {
    let mut k = key_in_raw(rng, r);
    for (w, v) in k.iter_mut().enumerate() {
        let bits = fluxgate_common::table::WORD_BITS[w];
        if bits < 32 {
            *v &= (1u32 << bits) - 1;
        }
    }
    k
}

fn key_in_raw(rng: &mut Rng, r: Option<&FlatRule>) -> [u32; KEY_WORDS] {
    let mut k = [0u32; KEY_WORDS];
    match r {
        Some(r) => {
            for (w, kw) in k.iter_mut().enumerate().take(RANGE_WORDS) {
                let span = u64::from(r.hi[w] - r.lo[w]) + 1;
                *kw = r.lo[w] + rng.below(span) as u32;
            }
            k[word::TCP_FLAGS] =
                (rng.below(256) as u32 & !u32::from(r.flags_mask)) | u32::from(r.flags_value);
        }
        None => {
            k[word::SRC] = rng.u32();
            k[word::DST] = rng.u32();
            k[word::SPORT] = rng.below(65536) as u32;
            k[word::DPORT] = rng.below(65536) as u32;
            k[word::PROTO] = [6, 17, 1][rng.below(3) as usize];
            k[word::L4] = 1;
            k[word::FAMILY] = 4;
            k[word::VLAN] = u32::MAX;
            k[word::IFINDEX] = 2;
            k[word::TCP_FLAGS] = rng.below(256) as u32;
        }
    }
    k
}

/// `n` keys: about half inside random rules of `rules`, half random.
pub fn keys(rules: &[FlatRule], n: usize, seed: u64) -> Vec<[u32; KEY_WORDS]> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            if !rules.is_empty() && rng.below(2) == 0 {
                let r = &rules[rng.below(rules.len() as u64) as usize];
                key_in(&mut rng, Some(r))
            } else {
                key_in(&mut rng, None)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_ipv4_numbered_by_position_and_deterministic() {
        let rules = classbench_like(2_000, 42);
        assert_eq!(rules, classbench_like(2_000, 42));
        assert_ne!(rules, classbench_like(2_000, 43));
        for (i, r) in rules.iter().enumerate() {
            assert_eq!(r.counter as usize, i);
            assert_eq!((r.lo[word::FAMILY], r.hi[word::FAMILY]), (4, 4));
            assert!(r.lo.iter().zip(&r.hi).all(|(lo, hi)| lo <= hi), "{r:?}");
        }
        let counting = rules.iter().filter(|r| r.action == action::COUNT).count();
        assert!(
            (5..=60).contains(&counting),
            "about 1% COUNT rules: {counting}"
        );
    }

    /// The table benches compare runs over these sets: a change of generator
    /// must be deliberate (and the numbers re-measured).
    #[test]
    fn the_same_size_and_seed_give_the_same_rules() {
        let words = classbench_like(1_000, 42).into_iter().flat_map(|r| {
            r.lo.into_iter().chain(r.hi).chain([
                u32::from(r.flags_mask),
                u32::from(r.flags_value),
                u32::from(r.action),
                r.counter,
            ])
        });
        // FNV-1a over the words' little-endian bytes.
        let fingerprint = words
            .flat_map(u32::to_le_bytes)
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        assert_eq!(fingerprint, 0x2c33_e42a_85f2_4ba0);
    }

    #[test]
    fn a_key_drawn_in_a_rule_matches_it() {
        let rules = classbench_like(500, 7);
        let mut rng = Rng::new(8);
        for r in &rules {
            for _ in 0..20 {
                assert!(r.matches(&key_in(&mut rng, Some(r))), "{r:?}");
            }
        }
    }

    #[test]
    fn keys_mix_keys_inside_rules_with_random_ones() {
        let rules = classbench_like(1_000, 3);
        assert_eq!(keys(&rules, 100, 4), keys(&rules, 100, 4));
        // One narrow rule: the keys drawn inside it (about half) match it, random
        // ones (almost) never do.
        let mut narrow = ipv4_any();
        narrow.lo[word::DST] = 0xcb00_7107;
        narrow.hi[word::DST] = 0xcb00_7107;
        let hit = keys(&[narrow], 4_000, 4)
            .iter()
            .filter(|k| narrow.matches(k))
            .count();
        assert!((1_800..2_200).contains(&hit), "{hit} of 4000 in the rule");
        assert_eq!(keys(&[], 10, 4).len(), 10, "random keys only");
    }
}
