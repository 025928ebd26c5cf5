//! Provider scale: 10,000 tenants on one gateway (real XDP on a veth pair).
//! A one-tenant change compiles, stages, records and witnesses only that
//! tenant; its record holds only what changed, the rest is shared with the
//! generation that built it; and `stats` and the metrics equal the per-rule
//! counters read one by one.

mod common;

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use common::Scratch;
use fluxgate_control::{ApplyOptions, AttachOptions, Gateway, RulesetSource, TableScope, metrics};
use fluxgate_dataplane::Tables;
use fluxgate_testkit::net::{self, IF_B};

const TENANTS: usize = 10_000;

/// Tenant `i`'s /24.
fn net_of(i: usize) -> (u8, u8, u8) {
    (10 + (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

/// The whole ruleset, with tenant t0's second rule on `port0`.
fn ruleset(port0: u16) -> RulesetSource {
    let mut files = vec![(
        "gateway.fg".to_owned(),
        "default pass\nproto tcp dport 23 drop\n".to_owned(),
    )];
    for i in 0..TENANTS {
        let (a, b, c) = net_of(i);
        let port = if i == 0 { port0 } else { 8080 };
        files.push((
            format!("t{i}.fg"),
            format!(
                "tenant t{i}\nprefixes {{ {a}.{b}.{c}.0/24 }}\ndefault pass\n\
                 proto tcp dport 22 drop\nproto tcp dport {port} drop\nproto udp dport 53 pass\n\
                 guard \"tcp 192.0.2.1:4000 -> {a}.{b}.{c}.1:22 flags S\" drop\n"
            ),
        ));
    }
    RulesetSource::files("scale test", files)
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = e.metadata().expect("metadata");
        total += if meta.is_dir() {
            dir_bytes(&e.path())
        } else {
            meta.len()
        };
    }
    total
}

#[test]
fn ten_thousand_tenants_a_change_costs_one_tenant() {
    net::require_root();
    let link = net::Link::new();
    let s = Scratch::new("scale");
    let gw = Gateway::new()
        .with_bpffs(&s.pins)
        .with_state(&s.state)
        .in_netns(Some(link.b.name()));

    let loaded = gw
        .load(
            IF_B,
            &ruleset(8080),
            AttachOptions::default(),
            &ApplyOptions::default(),
        )
        .expect("first load");
    assert_eq!(loaded.applied.tenants, TENANTS);
    assert_eq!(loaded.applied.compiled, TENANTS, "a first load builds all");
    let after_load = dir_bytes(&s.state);

    // Real traffic to a few tenants, so the counters compared below are not
    // all zero: a pass rule, a default and a drop rule of each.
    let hit: Vec<usize> = vec![1, 77, 4_321, TENANTS - 1];
    for &i in &hit {
        let (a, b, c) = net_of(i);
        let addr = Ipv4Addr::new(a, b, c, 1);
        link.add_b_address(addr);
        net::udp_exchange_to(&link, addr, 53, 3, 100);
        net::udp_exchange_to(&link, addr, 9, 2, 100);
    }

    // One tenant's file changed, the whole ruleset given.
    let mut it = gw.open(None).expect("open");
    let applied = it
        .apply(&ruleset(8081), &ApplyOptions::default())
        .expect("one-tenant apply");
    assert_eq!(applied.changed, [TableScope::Tenant("t0".into())]);
    assert_eq!(applied.compiled, 1, "only t0 is compiled again");
    assert_eq!(applied.tenants, TENANTS);
    // Every guard, and only t0's witnesses (3 rules and its default).
    assert!(
        applied.preflight_packets <= TENANTS + 1 + 8,
        "{} preflight packets",
        applied.preflight_packets
    );

    // The record holds t0 alone; every other table is the first load's.
    let record = it.store().record(2).expect("read").expect("record 2");
    let contents = it.store().contents(2).expect("contents of 2");
    assert_eq!(
        it.store()
            .files(2)
            .expect("files of 2")
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>(),
        ["t0.fg"]
    );
    assert!(contents.counters.iter().all(|c| c.scope.as_str() == "t0"));
    assert_eq!(record.manifest.tenants["t0"].table, 2);
    assert_eq!(record.manifest.tenants["t1"].table, 1, "shared, not copied");
    let growth = dir_bytes(&s.state) - after_load;
    assert!(
        growth < 1 << 20,
        "a one-tenant generation grew the state by {growth} bytes"
    );
    // And the live ruleset reads back whole from the shared records.
    assert_eq!(it.live_files().expect("files").len(), TENANTS + 1);

    // `stats` equals every live rule counter read one by one.
    let slots = it.live_counters().expect("counters");
    assert_eq!(slots.len(), 2 + TENANTS * 4, "gateway 2, each tenant 4");
    let mut one_by_one: BTreeMap<(String, u32), (u64, u64)> = BTreeMap::new();
    for info in &slots {
        let c = it.pinned_mut().rule_counters(info.slot, 1).expect("read")[0];
        one_by_one.insert(
            (info.scope.to_string(), info.position),
            (c.packets, c.bytes),
        );
    }
    let stats = it.stats(None).expect("stats");
    let mut from_stats = BTreeMap::new();
    for t in &stats.tenants {
        for r in &t.rules {
            from_stats.insert((r.scope.clone(), r.position), (r.packets, r.bytes));
        }
    }
    assert_eq!(from_stats, one_by_one);
    for &i in &hit {
        let name = format!("t{i}");
        assert!(
            one_by_one[&(name.clone(), 3)].0 >= 3,
            "{name}'s udp 53 rule"
        );
        assert!(one_by_one[&(name.clone(), 0)].0 >= 2, "{name}'s default");
    }

    // The metrics say the same, series by series.
    drop(it);
    let text = metrics::render(&gw).expect("metrics");
    let mut from_metrics: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("fluxgate_rule_packets_total{") else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ").expect("a series");
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .expect("label")
        };
        let position = match label("rule").as_str() {
            "default" => 0,
            p => p.parse().expect("position"),
        };
        from_metrics.insert((label("scope"), position), value.parse().expect("value"));
    }
    let packets: BTreeMap<(String, u32), u64> =
        one_by_one.iter().map(|(k, v)| (k.clone(), v.0)).collect();
    assert_eq!(from_metrics, packets);

    // Rolling the one tenant back is one flip to the shared table.
    let mut it = gw.open(None).expect("open");
    let rolled = it.rollback(Some("t0"), None).expect("rollback");
    assert_eq!(it.state().live.tenants["t0"].table, 1, "{rolled:?}");
}
