//! The table cell pool: a full pool is a clear error that changes nothing
//! live; a region is reused only once nothing points at it; a new process
//! adopting pinned state never allocates over live, standby or kept tables.

use std::net::Ipv4Addr;

use fluxgate::{
    common::{
        GatewayConfig,
        table::{Cell, Header, action},
        xdp,
    },
    dataplane::{
        Error, PinnedAttachment, Program, Sizes, Slot, Tables,
        frame::{FrameSpec, L4},
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

fn frame() -> Vec<u8> {
    FrameSpec::new(
        Ipv4Addr::new(198, 51, 100, 1).into(),
        Ipv4Addr::new(203, 0, 113, 10).into(),
        L4::Tcp {
            sport: 40000,
            dport: 80,
            flags: 0x02,
        },
    )
    .build()
}

fn verdict(program: &Program) -> u32 {
    program.test_run(&frame(), 1).expect("run").verdict
}

#[test]
fn a_full_pool_is_a_clear_error_and_changes_nothing_live() {
    net::require_root();
    let mut program = Program::load_sized(&GatewayConfig::default(), 64).expect("load");
    let live = program
        .stage("live", &table(40, action::DROP))
        .expect("stage");
    program.publish(Slot::Global, &live).expect("publish");
    assert_eq!(verdict(&program), xdp::DROP);

    let err = program
        .stage("too big", &table(30, action::PASS))
        .expect_err("63 - 40 = 23 cells left");
    assert!(
        matches!(
            err,
            Error::PoolFull {
                needed: 30,
                free: 23,
                size: 64
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("pool is full"), "{err}");
    // A batch that does not fit as a whole writes nothing and holds nothing.
    let small = table(10, action::PASS);
    let big = table(20, action::PASS);
    let err = program
        .stage_all(&[("a", &small), ("b", &big)])
        .expect_err("10 + 20 > 23");
    assert!(matches!(err, Error::PoolFull { needed: 30, .. }), "{err:?}");
    assert_eq!(verdict(&program), xdp::DROP, "the live table is untouched");
    let fits = program
        .stage("fits", &table(23, action::PASS))
        .expect("23 fit");
    assert_eq!(fits.id(), 41, "right after the live table");
    program.publish(Slot::Global, &fits).expect("publish");
    assert_eq!(verdict(&program), xdp::PASS);
    program.flip(Slot::Global).expect("roll back");
    assert_eq!(verdict(&program), xdp::DROP);
}

#[test]
fn program_too_small_for_a_table_is_refused() {
    net::require_root();
    let Err(err) = Program::load_sized(&GatewayConfig::default(), 1) else {
        panic!("a one-cell pool has no room for a table");
    };
    assert!(err.to_string().contains("cell pool"), "{err}");
}

#[test]
fn a_region_is_reused_only_after_nothing_points_at_it() {
    net::require_root();
    let pinned = PinnedLo::new(
        "pool",
        Sizes {
            pool_cells: 100,
            ..Sizes::default()
        },
    );
    let mut p = pinned.open();
    assert_eq!(p.pool_cells().expect("size"), 100);
    let a = p.stage("a", &table(60, action::DROP)).expect("stage");
    let a_id = a.id();
    p.keep_table("global", 1, &a).expect("keep");
    p.publish(Slot::Global, &a).expect("publish");
    drop(a);
    let full = |p: &mut PinnedAttachment| {
        matches!(
            p.stage("b", &table(60, action::PASS)),
            Err(Error::PoolFull { .. })
        )
    };
    assert!(full(&mut p), "kept and live");
    p.forget_table("global", 1).expect("forget");
    assert!(full(&mut p), "forgotten but still live");
    assert_eq!(p.live_table_id(Slot::Global).expect("live"), Some(a_id));
    p.unpublish(Slot::Global).expect("unpublish");
    assert_eq!(p.live_table_id(Slot::Global).expect("live"), None);
    // Nothing points at it any more: reused (after a grace period).
    let b = p.stage("b", &table(60, action::PASS)).expect("room again");
    assert_eq!(b.id(), a_id, "the same region");
    // A staged table that is dropped unused frees its region too.
    drop(b);
    let c = p.stage("c", &table(60, action::PASS)).expect("room again");
    assert_eq!(c.id(), a_id);
    drop(p);
    drop(pinned);
}

#[test]
fn a_restarted_process_allocates_around_live_standby_and_kept_tables() {
    net::require_root();
    let pinned = PinnedLo::new(
        "pool",
        Sizes {
            pool_cells: 100,
            ..Sizes::default()
        },
    );
    let (a_id, b_id) = {
        let mut p = pinned.open();
        let a = p.stage("a", &table(30, action::DROP)).expect("stage a");
        let b = p.stage("b", &table(30, action::PASS)).expect("stage b");
        p.keep_table("global", 1, &a).expect("keep a");
        p.publish(Slot::Global, &a).expect("publish a");
        // b: placed in the standby buffer only, and not kept.
        p.place(Slot::Global, &b).expect("place b");
        let c = p.stage("c", &table(30, action::PASS)).expect("stage c");
        p.keep_table("tenant-x", 1, &c).expect("keep c");
        (a.id(), b.id())
        // Every handle and the process's pool state go away here.
    };
    let mut p = pinned.open();
    assert_eq!(p.live_table_id(Slot::Global).expect("live"), Some(a_id));
    assert_eq!(
        p.standby_table_id(Slot::Global).expect("standby"),
        Some(b_id)
    );
    let kept = p.kept_table("tenant-x", 1).expect("kept c");
    assert_eq!(kept.cells(), 30);
    assert!(
        matches!(
            p.stage("d", &table(10, action::PASS)),
            Err(Error::PoolFull { free: 9, .. })
        ),
        "1 + 3 × 30 cells taken: a live, b standby, c kept"
    );
    let d = p.stage("d", &table(9, action::PASS)).expect("9 fit");
    assert_eq!(d.id(), 91);
    // Flip to b, then forget c: its region is free again.
    p.flip(Slot::Global).expect("flip");
    assert_eq!(p.live_table_id(Slot::Global).expect("live"), Some(b_id));
    drop(kept);
    p.forget_table("tenant-x", 1).expect("forget c");
    let e = p.stage("e", &table(30, action::PASS)).expect("c's room");
    assert!(e.id() != a_id && e.id() != b_id, "never over a or b");
    drop(p);
    drop(pinned);
}
