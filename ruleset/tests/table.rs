//! Tree ≡ linear scan, edge cases, layout invariants.

use fluxgate_common::table::{
    Cell, Header, KEY_WORDS, LEAF_MAX, MAX_CUT_BITS, MAX_DEPTH, RANGE_WORDS, Ref, action, word,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use fluxgate_ruleset::table::{
    FlatRule, TableError, TableImage, TreeConfig, build_table, scan, walk,
};
use fluxgate_testkit::synth::Rng;
use fluxgate_testkit::synth::flat::{classbench_like, keys};

/// Reference: COUNT counters (unbounded) and the first terminal match.
fn linear(rules: &[FlatRule], key: &[u32; KEY_WORDS]) -> (Vec<u32>, Option<(u8, u32)>) {
    let mut counters = Vec::new();
    for r in rules {
        if r.matches(key) {
            if r.action == action::COUNT {
                counters.push(r.counter);
            } else {
                return (counters, Some((r.action, r.counter)));
            }
        }
    }
    (counters, None)
}

fn check(image: &TableImage, rules: &[FlatRule], key: &[u32; KEY_WORDS]) {
    let got = walk(&image.cells, key);
    let want = linear(rules, key);
    assert_eq!((got.counters().to_vec(), got.decision), want, "key {key:?}");
}

/// Structural invariants every image must satisfy.
fn check_layout(image: &TableImage) {
    let cells = &image.cells;
    let h: &Header = cells[0].header();
    assert_eq!(h.magic, Header::MAGIC);
    assert_eq!(h.cells as usize, cells.len());
    let trees = (h.trees as usize).clamp(1, fluxgate_common::table::MAX_TREES);
    // (ref, depth, tree, highest bound of an ancestor node)
    let mut stack: Vec<(Ref, usize, usize, u64)> =
        (0..trees).map(|t| (h.root_of(t), 0usize, t, 0)).collect();
    let mut seen = std::collections::HashSet::new();
    while let Some((r, depth, tree, bound)) = stack.pop() {
        if !seen.insert((r.0, depth, tree, bound)) {
            continue;
        }
        if r.is_leaf() {
            assert!(depth <= MAX_DEPTH);
            assert!(r.count() as usize <= LEAF_MAX);
            if r.count() > 0 {
                let inline = [r.inline_entry(0), r.inline_entry(1)];
                let entries = if r.is_inline() {
                    assert!(r.count() <= 2, "inline leaf of {} rules", r.count());
                    &inline[..r.count() as usize]
                } else {
                    let list = cells[r.cell() as usize].list();
                    &list[r.slot()..r.slot() + r.count() as usize]
                };
                assert!(
                    entries.windows(2).all(|p| p[0] < p[1]),
                    "leaf list in priority order"
                );
                for &i in entries {
                    assert!(i > 0 && (i as usize) < cells.len());
                    let action = cells[i as usize].rule().action;
                    assert!(action <= action::TENANT);
                    // The walk skips tree t once its best match is at or
                    // before `first_of(t)`, and needs every count rule in
                    // tree 0 (scanned last).
                    assert!(
                        i >= h.first_of(tree),
                        "tree {tree}: rule {i} below its bound"
                    );
                    assert!(
                        u64::from(i) >= bound,
                        "rule {i} below a node's bound {bound}"
                    );
                    assert!(
                        action != action::COUNT || tree == 0,
                        "count rule in tree {tree}"
                    );
                }
            }
            continue;
        }
        assert!(depth < MAX_DEPTH);
        assert!(r.word() < KEY_WORDS);
        assert!(r.bits() >= 1 && r.bits() <= MAX_CUT_BITS);
        let n = 1usize << r.bits();
        assert!(r.cell() as usize + n.div_ceil(16) <= cells.len());
        let bound = bound.max(u64::from(r.bound()) << h.bound_shift);
        for c in 0..n {
            stack.push((
                Ref(cells[r.cell() as usize + c / 16].raw[c % 16]),
                depth + 1,
                tree,
                bound,
            ));
        }
    }
}

fn build(rules: &[FlatRule], cfg: &TreeConfig) -> TableImage {
    let img = build_table(rules, action::DROP, 99, 7, cfg).expect("table builds");
    check_layout(&img);
    img
}

fn ranged(w: usize, lo: u32, hi: u32, act: u8, counter: u32) -> FlatRule {
    let mut r = FlatRule::any(act, counter);
    r.lo[w] = lo;
    r.hi[w] = hi;
    r
}

#[test]
fn empty_rule_set_is_default() {
    let img = build(&[], &TreeConfig::default());
    assert_eq!(img.cells.len(), 1);
    let h = img.header();
    assert_eq!(
        (h.default_action, h.default_counter, h.generation),
        (u32::from(action::DROP), 99, 7)
    );
    let w = walk(&img.cells, &[5; KEY_WORDS]);
    assert_eq!(w.decision, None);
    assert_eq!(w.resolve(&img.cells), Some((action::DROP, 99)));
}

#[test]
fn all_wildcard_rule_prunes_everything_after() {
    let mut rules = vec![
        FlatRule::any(action::COUNT, 1),
        FlatRule::any(action::PASS, 2),
    ];
    rules.extend((0..100).map(|i| ranged(word::DPORT, i, i, action::DROP, 10 + i)));
    let img = build(&rules, &TreeConfig::default());
    assert_eq!(img.stats.rule_cells, 2);
    assert_eq!(img.stats.nodes, 0);
    let w = walk(&img.cells, &[0; KEY_WORDS]);
    assert_eq!(
        (w.counters(), w.decision),
        (&[1][..], Some((action::PASS, 2)))
    );
}

#[test]
fn flags_rule_does_not_prune() {
    let mut syn = FlatRule::any(action::DROP, 1);
    syn.flags_mask = 0x12;
    syn.flags_value = 0x02;
    let rules = vec![syn, FlatRule::any(action::PASS, 2)];
    let img = build(&rules, &TreeConfig::default());
    let mut k = [0; KEY_WORDS];
    k[word::TCP_FLAGS] = 0x02;
    assert_eq!(walk(&img.cells, &k).decision, Some((action::DROP, 1)));
    k[word::TCP_FLAGS] = 0x12;
    assert_eq!(walk(&img.cells, &k).decision, Some((action::PASS, 2)));
}

#[test]
fn never_matching_rule_is_dropped() {
    let mut bad = FlatRule::any(action::DROP, 1);
    bad.flags_mask = 0;
    bad.flags_value = 1;
    let img = build(
        &[bad, FlatRule::any(action::PASS, 2)],
        &TreeConfig::default(),
    );
    assert_eq!(img.stats.rule_cells, 1);
    assert_eq!(
        walk(&img.cells, &[1; KEY_WORDS]).decision,
        Some((action::PASS, 2))
    );
}

#[test]
fn duplicates_are_pruned() {
    let rules: Vec<_> = (0..1000)
        .map(|i| ranged(word::DST, 10 << 24, (11 << 24) - 1, action::PASS, i))
        .collect();
    let img = build(&rules, &TreeConfig::default());
    assert_eq!(img.stats.rule_cells, 1);
    let mut k = [0; KEY_WORDS];
    k[word::DST] = (10 << 24) + 5;
    assert_eq!(walk(&img.cells, &k).decision, Some((action::PASS, 0)));
    k[word::DST] = 11 << 24;
    assert_eq!(walk(&img.cells, &k).decision, None);
}

#[test]
fn too_many_overlapping_counts_is_an_error() {
    let rules: Vec<_> = (0..LEAF_MAX as u32 + 1)
        .map(|i| ranged(word::DPORT, 80, 80, action::COUNT, i))
        .collect();
    let err = build_table(&rules, action::PASS, 0, 0, &TreeConfig::default()).unwrap_err();
    assert!(
        matches!(err, TableError::TooManyOverlapping { count: 17, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("17 rules"), "{err}");
    // exactly LEAF_MAX fit
    let img = build(&rules[..LEAF_MAX], &TreeConfig::default());
    let mut k = [0; KEY_WORDS];
    k[word::DPORT] = 80;
    assert_eq!(walk(&img.cells, &k).counters().len(), LEAF_MAX);
    check(&img, &rules[..LEAF_MAX], &k);
}

/// A key as packets produce it: every word within its significant bits,
/// family 4 or 6, and an IPv4 key's address words 1–3 zero.
fn fit(mut k: [u32; KEY_WORDS]) -> [u32; KEY_WORDS] {
    for (w, v) in k.iter_mut().enumerate() {
        let bits = fluxgate_common::table::WORD_BITS[w];
        if bits < 32 {
            *v &= (1u32 << bits) - 1;
        }
    }
    if k[word::FAMILY] != 6 {
        k[word::FAMILY] = 4;
        for w in fluxgate_common::table::ADDR_WORDS[2..].iter() {
            k[*w] = 0;
        }
    }
    k
}

#[test]
fn flags_only_differences_are_cut_on_the_flags_byte() {
    let rules: Vec<_> = (0..20u8)
        .map(|i| {
            let mut r = FlatRule::any(action::DROP, u32::from(i));
            r.flags_mask = 0xff;
            r.flags_value = i;
            r
        })
        .collect();
    let img = build_table(&rules, action::PASS, 0, 0, &TreeConfig::default()).expect("builds");
    for f in 0..=255u32 {
        let mut k = [0; KEY_WORDS];
        k[word::TCP_FLAGS] = f;
        let want = (f < 20).then_some((action::DROP, f));
        assert_eq!(walk(&img.cells, &k).decision, want, "flags {f:#x}");
    }
}

#[test]
fn many_overlapping_terminals_resolve_by_pruning() {
    // 40 nested DST prefixes around one address, most specific first: at any point
    // the first matching rule covers a small enough box, so leaves stay small.
    let base: u32 = 0xc000_0200;
    let rules: Vec<_> = (0..=32u32)
        .rev()
        .map(|len| {
            let host = u32::MAX.checked_shr(len).unwrap_or(0);
            ranged(word::DST, base & !host, base | host, action::PASS, len)
        })
        .collect();
    let img = build(&rules, &TreeConfig::default());
    let mut rng = Rng::new(3);
    for r in &rules {
        for d in [0u32, 1, u32::MAX] {
            let mut k = [0; KEY_WORDS];
            k[word::DST] = r.lo[word::DST].wrapping_add(d);
            check(&img, &rules, &k);
            k[word::DST] = r.hi[word::DST].wrapping_add(d);
            check(&img, &rules, &k);
        }
        let mut k = [0; KEY_WORDS];
        k[word::DST] = rng.u32();
        check(&img, &rules, &k);
    }
}

#[test]
fn invalid_input_is_rejected() {
    let mut r = FlatRule::any(action::PASS, 0);
    r.lo[3] = 5;
    r.hi[3] = 4;
    assert!(matches!(
        build_table(&[r], action::PASS, 0, 0, &TreeConfig::default()),
        Err(TableError::InvalidRule { index: 0, .. })
    ));
    let r = FlatRule::any(9, 0);
    assert!(build_table(&[r], action::PASS, 0, 0, &TreeConfig::default()).is_err());
    assert!(matches!(
        build_table(&[], action::COUNT, 0, 0, &TreeConfig::default()),
        Err(TableError::BadDefault(2))
    ));
}

#[test]
fn tenant_dispatch_is_terminal() {
    let rules: Vec<_> = (0..300u32)
        .map(|t| {
            ranged(
                word::DST,
                (10 << 24) | (t << 8),
                (10 << 24) | (t << 8) | 0xff,
                action::TENANT,
                t,
            )
        })
        .collect();
    let img = build(&rules, &TreeConfig::default());
    let mut k = [0; KEY_WORDS];
    k[word::DST] = (10 << 24) | (123 << 8) | 9;
    assert_eq!(walk(&img.cells, &k).decision, Some((action::TENANT, 123)));
    assert!(img.stats.depth_max <= 4, "{:?}", img.stats);
}

#[test]
fn walk_never_panics_on_garbage() {
    let mut rng = Rng::new(11);
    for len in [0usize, 1, 2, 5, 40] {
        for _ in 0..200 {
            let cells: Vec<Cell> = (0..len)
                .map(|_| {
                    let mut c = Cell::default();
                    for x in &mut c.raw {
                        *x = if rng.below(2) == 0 {
                            rng.next_u64()
                        } else {
                            rng.below(len as u64 + 3)
                        };
                    }
                    c
                })
                .collect();
            let mut k = [0u32; KEY_WORDS];
            for x in &mut k {
                *x = rng.u32();
            }
            let _ = walk(&cells, &k);
        }
    }
    // a cycle: root node points to itself
    let mut cells = vec![Cell::default(); 2];
    let root = Ref::node(1, 0, 0, 1);
    cells[0] = Cell::from_header(&Header {
        root,
        magic: Header::MAGIC,
        ..Header::default()
    });
    cells[1].raw[0] = root.0;
    cells[1].raw[1] = root.0;
    assert_eq!(walk(&cells, &[0; KEY_WORDS]).decision, None);
}

#[test]
fn classbench_tables_match_linear_scan() {
    for (n, seed) in [(10, 1), (1000, 2), (5000, 3)] {
        let rules = classbench_like(n, seed);
        let img = build(&rules, &TreeConfig::default());
        for k in keys(&rules, 20_000, seed + 100) {
            check(&img, &rules, &k);
        }
        assert_eq!(
            scan(&rules, &keys(&rules, 1, 5)[0]),
            walk(&img.cells, &keys(&rules, 1, 5)[0])
        );
    }
}

#[test]
fn large_tables_with_flag_rules_match_linear_scan() {
    // Rules wide in the source (every third one) and not: a forest, built
    // tree by tree on several threads, and trees of more than 1024 rules,
    // whose subtrees are built on several threads too (and relocated twice).
    // Flag rules make the compiler cut on the flags byte.
    let mut rng = Rng::new(11);
    let mut rules = classbench_like(6000, 11);
    for (i, r) in rules.iter_mut().enumerate() {
        // No rule wide in both addresses (one would shadow all after it).
        if r.hi[word::DST] - r.lo[word::DST] >= 1 << 16 {
            r.lo[word::DST] = rng.u32() & 0xffff_0000;
            r.hi[word::DST] = r.lo[word::DST] | 0xffff;
        }
        if i % 3 == 0 {
            r.lo[word::SRC] = rng.u32() & 0xf000_0000;
            r.hi[word::SRC] = r.lo[word::SRC] | 0x0fff_ffff;
        }
        if r.lo[word::PROTO] == 6 && r.hi[word::PROTO] == 6 && rng.below(4) == 0 {
            (r.flags_mask, r.flags_value) =
                [(0x12, 0x02), (0x10, 0x10), (0x04, 0x04)][rng.below(3) as usize];
        }
    }
    let img = build(&rules, &TreeConfig::default());
    for mut k in keys(&rules, 20_000, 12) {
        k[word::TCP_FLAGS] =
            [0, 0x02, 0x12, 0x10, 0x04, rng.below(256) as u32][rng.below(6) as usize];
        check(&img, &rules, &k);
    }
}

#[test]
fn a_small_table_keeps_its_list_in_the_header() {
    let rules = [
        ranged(word::DPORT, 22, 22, action::PASS, 1),
        ranged(word::DPORT, 80, 80, action::PASS, 2),
        ranged(word::PROTO, 17, 17, action::DROP, 3),
    ];
    let img = build(&rules, &TreeConfig::default());
    // The header and the three rules: no list cell.
    assert_eq!(img.cells.len(), 4);
    let root = img.header().root;
    assert!(root.is_leaf() && root.cell() == 0 && root.count() == 3);
    assert_eq!(img.stats.list_cells, 0);
    let mut key = fit([0; KEY_WORDS]);
    for (port, want) in [
        (22, Some((action::PASS, 1))),
        (80, Some((action::PASS, 2))),
        (81, None),
    ] {
        key[word::DPORT] = port;
        assert_eq!(walk(&img.cells, &key).decision, want, "port {port}");
    }
}

#[test]
fn leaf_lists_are_packed_into_shared_cells() {
    let rules = classbench_like(5000, 3);
    let img = build(&rules, &TreeConfig::default());
    let s = img.stats;
    // Lists of a few rules each share cells, and every list stays inside its cell.
    assert!(s.list_entries <= s.list_cells * 2 * fluxgate_common::table::REFS_PER_CELL);
    assert!(
        s.list_cells * 2 < s.leaves,
        "{} list cells for {} leaves: lists are not packed",
        s.list_cells,
        s.leaves
    );
}

// ---- property tests ----

/// Interesting values: boundaries, a few clustered values, random.
fn value() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(u32::MAX),
        Just(0x8000_0000u32),
        Just(0x7fff_ffffu32),
        (0u32..8).prop_map(|x| x << 29),
        0u32..64,
        (0u32..64).prop_map(|x| 0x0a00_0000 | x << 8),
        any::<u32>(),
    ]
}

/// A constraint on one word: (word, lo, hi).
fn constraint() -> impl Strategy<Value = (usize, u32, u32)> {
    let w = prop_oneof![
        Just(0usize),
        Just(4),
        Just(8),
        Just(9),
        Just(10),
        0usize..RANGE_WORDS
    ];
    let range = prop_oneof![
        // prefix
        (value(), 0u32..=32).prop_map(|(a, len)| {
            let host = u32::MAX.checked_shr(len).unwrap_or(0);
            (a & !host, a | host)
        }),
        // arbitrary range
        (value(), value()).prop_map(|(a, b)| (a.min(b), a.max(b))),
        // exact
        value().prop_map(|a| (a, a)),
    ];
    (w, range).prop_map(|(w, (lo, hi))| (w, lo, hi))
}

fn rule() -> impl Strategy<Value = FlatRule> {
    (
        prop::collection::vec(constraint(), 0..4),
        prop_oneof![Just((0u8, 0u8)), Just((0x12, 0x02)), Just((0x10, 0x10)), any::<(u8, u8)>()],
        prop_oneof![3 => Just(action::PASS), 3 => Just(action::DROP), 2 => Just(action::COUNT), 1 => Just(action::TENANT)],
        any::<u32>(),
    )
        .prop_map(|(cs, (mask, value), act, counter)| {
            let mut r = FlatRule::any(act, counter);
            for (w, lo, hi) in cs {
                r.lo[w] = lo;
                r.hi[w] = hi;
            }
            r.flags_mask = mask;
            r.flags_value = value & if mask == 0x12 || mask == 0x10 { mask } else { 0xff };
            r
        })
}

fn boundary_keys(rules: &[FlatRule], rng: &mut Rng, n: usize) -> Vec<[u32; KEY_WORDS]> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut k = [0u32; KEY_WORDS];
        let base = if rules.is_empty() {
            None
        } else {
            Some(&rules[rng.below(rules.len() as u64) as usize])
        };
        #[expect(
            clippy::needless_range_loop,
            reason = "w indexes the key and rule arrays alike"
        )]
        for w in 0..RANGE_WORDS {
            let pick = if rules.is_empty() {
                None
            } else {
                Some(&rules[rng.below(rules.len() as u64) as usize])
            };
            k[w] = match (rng.below(6), pick.or(base)) {
                (0, Some(r)) => r.lo[w],
                (1, Some(r)) => r.hi[w],
                (2, Some(r)) => r.lo[w].wrapping_sub(1),
                (3, Some(r)) => r.hi[w].wrapping_add(1),
                (4, Some(r)) if i % 2 == 0 => {
                    r.lo[w] + (rng.below(u64::from(r.hi[w] - r.lo[w]) + 1) as u32)
                }
                _ => rng.u32(),
            };
        }
        k[word::TCP_FLAGS] = [0, 0x02, 0x12, 0x10, rng.below(256) as u32][rng.below(5) as usize];
        out.push(fit(k));
    }
    out
}

proptest! {
    // Saved failures live beside this file (`table.proptest-regressions`): an
    // integration test has no `lib.rs` above it for the default location.
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        .. ProptestConfig::default()
    })]

    #[test]
    fn tree_equals_linear_scan(
        rules in prop::collection::vec(rule(), 0..60),
        leaf_target in 1usize..=16,
        spfac in prop_oneof![Just(1.0f64), Just(2.0), Just(4.0), Just(8.0)],
        seed in any::<u64>(),
    ) {
        let cfg = TreeConfig { leaf_target, spfac };
        match build_table(&rules, action::DROP, 5, 1, &cfg) {
            Ok(img) => {
                check_layout(&img);
                let mut rng = Rng::new(seed);
                for k in boundary_keys(&rules, &mut rng, 300) {
                    let got = walk(&img.cells, &k);
                    let want = linear(&rules, &k);
                    prop_assert_eq!((got.counters().to_vec(), got.decision), want, "key {:?}", k);
                }
            }
            Err(TableError::TooManyOverlapping { count, .. }) => prop_assert!(count > LEAF_MAX),
            Err(TableError::TooLarge(_)) => {} // refused within its memory budget
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    #[test]
    fn terminal_only_rules_always_build(
        rules in prop::collection::vec(rule().prop_map(|mut r| {
            if r.action == action::COUNT {
                r.action = action::PASS;
            }
            r.flags_mask = 0;
            r.flags_value = 0;
            r
        }), 0..80),
        seed in any::<u64>(),
    ) {
        // without COUNT or flag rules, pruning bounds every leaf, unless ranges
        // straddle so many cut boundaries that MAX_DEPTH is reached (not expected)
        let img = build_table(&rules, action::PASS, 0, 0, &TreeConfig::default());
        let img = match img { Ok(i) => i, Err(e) => { prop_assert!(false, "{}", e); unreachable!() } };
        check_layout(&img);
        let mut rng = Rng::new(seed);
        for k in boundary_keys(&rules, &mut rng, 300) {
            let got = walk(&img.cells, &k);
            prop_assert_eq!((got.counters().to_vec(), got.decision), linear(&rules, &k));
        }
    }
}

#[test]
fn leaves_of_one_or_two_rules_hold_them_inline() {
    let a = ranged(word::DPORT, 22, 22, action::PASS, 1);
    let b = ranged(word::SPORT, 53, 53, action::DROP, 2);
    let rules = [a, b];
    let img = build(&rules, &TreeConfig::default());
    let root = img.header().root;
    assert!(root.is_inline() && root.count() == 2, "{root:?}");
    assert_eq!(img.stats.list_cells, 0);
    assert_eq!(img.stats.inline_entries, 2);
    for k in keys(&rules, 2_000, 4) {
        check(&img, &rules, &k);
    }
    // A large table has inline leaves in trees built on other threads too
    // (relocated with them: their rule indices must not move).
    let rules = classbench_like(5_000, 11);
    let img = build(&rules, &TreeConfig::default());
    assert!(img.stats.inline_entries > 0);
    for k in keys(&rules, 20_000, 12) {
        check(&img, &rules, &k);
    }
}

/// A rule for one address on word `w` with counter `i`, passing for even
/// `i` and dropping for odd.
fn host_rule(w: usize, addr: u32, i: u32) -> FlatRule {
    ranged(
        w,
        addr,
        addr,
        [action::PASS, action::DROP][i as usize % 2],
        i,
    )
}

#[test]
fn big_nodes_cut_wide() {
    // 4096 hosts of one /16, one rule each: a cut of 12+ bits separates them
    // in one step, within the space bound (one reference each, half one per child).
    let rules: Vec<FlatRule> = (0..4096u32)
        .map(|i| host_rule(word::DST, 0x0a00_0000 | (i * 13 % 65536), i))
        .collect();
    let img = build(&rules, &TreeConfig::default());
    let h = img.header();
    let widest = (0..h.trees as usize)
        .map(|t| h.root_of(t).bits())
        .max()
        .unwrap_or(0);
    assert!(widest > 8, "root cut of {widest} bits");
    for r in &rules {
        let mut k = [0u32; KEY_WORDS];
        for host in [
            r.lo[word::DST],
            r.lo[word::DST] + 1,
            r.lo[word::DST] ^ 0x100,
        ] {
            k[word::DST] = host;
            check(&img, &rules, &k);
        }
    }
    // A small table's nodes get 256 children free and no more than the
    // space bound pays for beyond them (9 rules: 4 × 9 references, half one
    // per child).
    let img = build(&rules[..9], &TreeConfig::default());
    let h = img.header();
    for t in 0..h.trees as usize {
        let bits = h.root_of(t).bits();
        assert!((1..=8).contains(&bits), "9 rules cut {bits} bits");
    }
}

#[test]
fn nodes_below_the_root_cut_below_the_bits_their_rules_share() {
    // Two clusters of 40 hosts, each in a /26 of its own /8. The root cut
    // separates the clusters; below it every rule of a cluster agrees on 17
    // more bits, which the next cut skips (path compression): two steps to
    // any leaf instead of four.
    let rules: Vec<FlatRule> = (0..80u32)
        .map(|i| {
            host_rule(
                word::SRC,
                if i < 40 { 0x0a01_0200 } else { 0xc0a8_0000 } | (i % 40),
                i,
            )
        })
        .collect();
    let img = build(&rules, &TreeConfig::default());
    assert!(
        img.stats.depth_max <= 2,
        "depth {} (stats {:?})",
        img.stats.depth_max,
        img.stats
    );
    // The walk does not check skipped bits: keys that differ there reach a
    // leaf whose rules all fail their check, and decide nothing.
    let mut k = [0u32; KEY_WORDS];
    for r in &rules {
        let host = r.lo[word::SRC];
        for key in [
            host,
            host ^ 1,
            host ^ 0x80,
            host ^ 0x100,
            host ^ 0x1_0000,
            host + 64,
        ] {
            k[word::SRC] = key;
            check(&img, &rules, &k);
        }
    }
}
