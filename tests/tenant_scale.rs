//! Provider scale (issue 25): the number of tenant slots is chosen at load
//! time — a tenant in the last slot of a 70,000-slot attachment gets its
//! packets, a slot past the end is a clear error —, and kept tables live in
//! one map: 20,000 of them are kept, listed and forgotten in a few calls.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Instant};

use fluxgate::{
    common::{
        DEFAULT_TENANT_SLOTS, GatewayConfig, MAX_TENANT_SLOTS,
        table::{Cell, Header, action},
        xdp,
    },
    dataplane::{
        Error, Program, Sizes, Slot, StagedImage, StagedTable, Tables,
        frame::{FrameSpec, L4},
    },
    ruleset::{
        Config, Ruleset,
        compile::{CompileError, CompileOptions, SlotPlan, compile_with},
        validate,
    },
};
use fluxgate_testkit::net::{self, PinnedLo};

/// A table of `cells` cells that decides nothing but its default `action`.
fn table(cells: u32, default: u8) -> Vec<Cell> {
    let mut out = vec![Cell::default(); cells as usize];
    out[0] = Cell::from_header(&Header {
        magic: Header::MAGIC,
        default_action: u32::from(default),
        cells,
        generation: 1,
        ..Header::default()
    });
    out
}

#[test]
fn twenty_thousand_kept_tables_are_kept_listed_and_forgotten_in_one_map() {
    net::require_root();
    let pinned = PinnedLo::new("scale", Sizes::default());
    let mut p = pinned.open();
    assert_eq!(p.tenant_slots(), DEFAULT_TENANT_SLOTS);
    // 10,000 tenants × 2 generations, each a distinct 2-cell table.
    const TENANTS: usize = 10_000;
    let cells: Vec<Vec<Cell>> = (0..2 * TENANTS)
        .map(|i| {
            table(
                2,
                if i % 2 == 0 {
                    action::PASS
                } else {
                    action::DROP
                },
            )
        })
        .collect();
    let names: Vec<String> = (0..2 * TENANTS).map(|i| format!("t{i}")).collect();
    let batch: Vec<(&str, &[Cell])> = names
        .iter()
        .zip(&cells)
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    let staged: Vec<StagedTable> = p.stage_all(&batch).expect("stage 20,000 tables");
    let scopes: Vec<String> = (0..TENANTS)
        .map(|t| format!("tenant-customer-{t:05}"))
        .collect();
    let keep: Vec<(&str, u64, &StagedTable)> = staged
        .iter()
        .enumerate()
        .map(|(i, table)| (scopes[i / 2].as_str(), 1 + (i % 2) as u64, table))
        .collect();

    let started = Instant::now();
    p.keep_tables(&keep).expect("keep 20,000 tables");
    let kept_in = started.elapsed();

    let started = Instant::now();
    let listed = p.kept_tables().expect("list");
    let listed_in = started.elapsed();
    assert_eq!(listed.len(), 2 * TENANTS);
    let mut expected: Vec<(String, u64)> =
        keep.iter().map(|(s, g, _)| ((*s).to_owned(), *g)).collect();
    expected.sort();
    assert_eq!(listed, expected, "every kept table, sorted");

    let started = Instant::now();
    let handles = p.kept_table_handles().expect("handles");
    let handles_in = started.elapsed();
    assert_eq!(handles.len(), 2 * TENANTS);
    // A few tokens: the region each table was staged in, by scope and generation.
    for i in [0, 1, 2 * TENANTS / 3, 2 * TENANTS - 2, 2 * TENANTS - 1] {
        let (scope, generation, table) = keep[i];
        let kept = p.kept_table(scope, generation).expect("kept");
        assert_eq!(
            (kept.id(), kept.cells()),
            (table.id(), table.cells()),
            "{scope}/{generation}"
        );
        let (_, _, handle) = handles
            .iter()
            .find(|(s, g, _)| s == scope && *g == generation)
            .expect("listed");
        assert_eq!(handle.id(), table.id());
    }
    drop(handles);

    let started = Instant::now();
    let regions = p.kept_regions().expect("kept regions");
    let regions_in = started.elapsed();
    assert_eq!(regions.len(), 2 * TENANTS);

    // Keeping is all or nothing: one kept already, none of the batch is kept.
    let fresh = p.stage("fresh", &table(2, action::PASS)).expect("stage");
    let err = p
        .keep_tables(&[("tenant-new", 1, &fresh), (scopes[0].as_str(), 1, &fresh)])
        .expect_err("generation 1 of the first tenant is kept");
    assert!(err.to_string().contains("kept already"), "{err}");
    assert!(p.kept_table("tenant-new", 1).is_err(), "undone");
    let err = p
        .keep_table(&"x".repeat(100), 1, &fresh)
        .expect_err("too long a scope");
    assert!(err.to_string().contains("scope name"), "{err}");

    // Forget generation 1 of every tenant: one batch.
    let forget: Vec<(&str, u64)> = scopes.iter().map(|s| (s.as_str(), 1)).collect();
    let started = Instant::now();
    p.forget_tables(&forget).expect("forget");
    let forgot_in = started.elapsed();
    let left = p.kept_tables().expect("list");
    assert_eq!(left.len(), TENANTS);
    assert!(left.iter().all(|(_, g)| *g == 2));
    // Forgetting what is not kept does nothing.
    p.forget_tables(&forget).expect("forget again");
    eprintln!(
        "20,000 kept tables: keep_tables {kept_in:?}, kept_tables {listed_in:?}, \
         kept_table_handles {handles_in:?}, kept_regions {regions_in:?}, \
         forget_tables (10,000) {forgot_in:?}"
    );
    drop(p);
    drop(pinned);
}

const GATEWAY: &str = "default pass\n";
const ACME: &str = "tenant acme\nprefix 10.77.1.0/24\ndefault pass\nproto tcp dport 22 drop\n";

fn acme_frame(dport: u16) -> Vec<u8> {
    FrameSpec::new(
        Ipv4Addr::new(198, 51, 100, 1).into(),
        Ipv4Addr::new(10, 77, 1, 5).into(),
        L4::Tcp {
            sport: 40000,
            dport,
            flags: 0x02,
        },
    )
    .build()
}

/// The acme ruleset compiled with acme in tenant slot `slot`, for an
/// attachment of `tenant_slots` slots.
fn acme_in(
    slot: u32,
    tenant_slots: u32,
) -> Result<fluxgate::ruleset::compile::Image, CompileError> {
    let rs = validate(
        Ruleset::parse_files(&[("gateway.fg", GATEWAY), ("acme.fg", ACME)]).expect("parse"),
        &Config::default(),
    )
    .expect("validate");
    compile_with(
        &rs,
        &CompileOptions {
            tenant_slots,
            plan: SlotPlan {
                tenants: BTreeMap::from([("acme".to_owned(), slot)]),
                ..SlotPlan::default()
            },
            ..CompileOptions::default()
        },
    )
}

#[test]
fn tenant_slots_are_chosen_at_load_and_the_last_one_classifies() {
    net::require_root();
    const SLOTS: u32 = 70_000;
    let sizes = Sizes {
        tenant_slots: SLOTS,
        ..Sizes::default()
    };
    let mut program = Program::load_with(&GatewayConfig::default(), sizes).expect("load");
    assert_eq!(program.tenant_slots(), SLOTS);
    // Set by the loader, kept whatever a caller writes.
    program
        .set_config(&GatewayConfig {
            tenant_slots: 3,
            ..GatewayConfig::default()
        })
        .expect("config");
    let image = acme_in(SLOTS - 1, SLOTS).expect("compile into the last slot");
    assert_eq!(image.tenants[0].index, SLOTS - 1);
    let staged = StagedImage::new(&mut program, &image).expect("stage");
    program.publish_image(&staged).expect("publish");
    assert_eq!(
        program.test_run(&acme_frame(22), 1).expect("run").verdict,
        xdp::DROP,
        "acme's rule in slot 69,999 decides"
    );
    assert_eq!(
        program.test_run(&acme_frame(80), 1).expect("run").verdict,
        xdp::PASS
    );
    // Counted in the tenant's own counters (each CPU's block is sized by the
    // slots the loader chose, whatever the configuration was given).
    let (passed, dropped) = program.tenant_counters(Some(SLOTS - 1)).expect("counters");
    assert_eq!((passed.packets, dropped.packets), (1, 1));

    // A slot past the end is a clear error, at compile and at publish.
    let err = acme_in(SLOTS, SLOTS).expect_err("slot 70,000 of 70,000");
    assert!(
        matches!(err, CompileError::TooManyTenants { limit: SLOTS }),
        "{err:?}"
    );
    assert!(err.to_string().contains("70000 tenant slots"), "{err}");
    let (_, table) = &staged.tenants[0];
    let err = program
        .place(Slot::Tenant(SLOTS), table)
        .expect_err("no slot 70,000");
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("beyond the 70000 tenant slots")),
        "{err}"
    );

    // The number asked for is bounded.
    for bad in [0, MAX_TENANT_SLOTS + 1] {
        let Err(err) = Program::load_with(
            &GatewayConfig::default(),
            Sizes {
                tenant_slots: bad,
                ..Sizes::default()
            },
        ) else {
            panic!("{bad} tenant slots");
        };
        assert!(err.to_string().contains("tenant slots"), "{err}");
    }
}

#[test]
fn a_pinned_attachment_reports_its_tenant_slots() {
    net::require_root();
    let pinned = PinnedLo::new(
        "scale",
        Sizes {
            tenant_slots: 70_000,
            ..Sizes::default()
        },
    );
    let mut p = pinned.open();
    assert_eq!(p.tenant_slots(), 70_000);
    assert_eq!(p.config().expect("config").tenant_slots, 70_000);
    // Publishing into the last slot works, one past it does not.
    let t = p.stage("t", &table(2, action::DROP)).expect("stage");
    p.publish(Slot::Tenant(69_999), &t).expect("publish");
    assert_eq!(
        p.live_table_id(Slot::Tenant(69_999)).expect("live"),
        Some(t.id())
    );
    let err = p
        .publish(Slot::Tenant(70_000), &t)
        .expect_err("past the end");
    assert!(err.to_string().contains("70000 tenant slots"), "{err}");
    // The version map covers every slot too.
    assert_eq!(p.version_of(Some(69_999)).expect("version"), 0);
    assert!(p.version_of(Some(70_000)).is_err());
    drop(t);
    drop(p);
    drop(pinned);
}
