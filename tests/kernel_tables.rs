//! Hand-built tables published into the real program: the kernel walker reads
//! the layout of `fluxgate_common::table` exactly (independently of the compiler).

mod support;

use std::net::Ipv4Addr;

use fluxgate::{
    common::{
        GatewayConfig, Outcome,
        table::{Cell, Header, OPS_PER_CELL, Op, Ref, action, word},
        xdp,
    },
    dataplane::{
        Program, Slot, StagedTable, Tables,
        frame::{FrameSpec, L4},
    },
};

fn header(root: Ref, default_action: u8, default_counter: u32, cells: u32) -> Cell {
    Cell::from_header(&Header {
        root,
        magic: Header::MAGIC,
        default_action: u32::from(default_action),
        default_counter,
        cells,
        generation: 1,
        ..Header::default()
    })
}

fn to(dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    FrameSpec::new(
        Ipv4Addr::new(198, 51, 100, 7).into(),
        dst.into(),
        L4::Tcp {
            sport: 40000,
            dport,
            flags: 0x02,
        },
    )
    .build()
}

/// Global table: root node cuts the top 8 bits of DST; child 203 → leaf with
/// [count dport 443, drop dport 22 with SYN and not ACK, pass all] as ops over
/// two cells; every other child → empty leaf.
fn global_table() -> Vec<Cell> {
    let mut cells = vec![Cell::default(); 1 + 16 + 2];
    let node_base = 1u32;
    let leaf = 17u32;
    cells[0] = header(
        Ref::node(node_base, word::DST as u8, 24, 8),
        action::PASS,
        0,
        19,
    );
    let ops = [
        Op::range(word::DPORT, 443, 443, 1),
        Op::end(action::COUNT, 10, 0),
        Op::range(word::DPORT, 22, 22, 2),
        Op::flags(0x12, 0x02, 1), // SYN without ACK
        Op::end(action::DROP, 11, 1),
        // padding checks that always hold, so the leaf spans two cells
        Op::range(word::SPORT, 0, u32::MAX, 7),
        Op::range(word::SPORT, 0, u32::MAX, 6),
        Op::range(word::SPORT, 0, u32::MAX, 5),
        Op::range(word::SPORT, 0, u32::MAX, 4),
        Op::range(word::SPORT, 0, u32::MAX, 3),
        Op::range(word::SPORT, 0, u32::MAX, 2),
        Op::range(word::SPORT, 0, u32::MAX, 1),
        Op::end(action::PASS, 12, 2),
    ];
    for child in 0..256u32 {
        let r = if child == 203 {
            Ref::leaf(leaf, ops.len() as u16)
        } else {
            Ref::leaf(0, 0)
        };
        cells[(node_base + child / 16) as usize].raw[(child % 16) as usize] = r.0;
    }
    cells[leaf as usize] = Cell::from_ops(&ops[..OPS_PER_CELL]);
    cells[leaf as usize + 1] = Cell::from_ops(&ops[OPS_PER_CELL..]);
    cells
}

#[test]
fn kernel_walks_hand_built_tables() {
    support::require_root();
    let mut program = Program::load(&GatewayConfig::default()).expect("load");
    let net = Ipv4Addr::new(203, 0, 113, 10);
    assert_eq!(
        program.test_run(&to(net, 22), 1).expect("run").verdict,
        xdp::PASS,
        "nothing loaded: pass"
    );

    let table = StagedTable::new("test_global", &global_table()).expect("stage");
    program.publish(Slot::Global, &table).expect("publish");
    assert_eq!(
        program.test_run(&to(net, 22), 1).expect("run").verdict,
        xdp::DROP
    );
    assert_eq!(
        program.test_run(&to(net, 443), 3).expect("run").verdict,
        xdp::PASS
    );
    assert_eq!(
        program.test_run(&to(net, 80), 1).expect("run").verdict,
        xdp::PASS
    );
    // Outside 203/8: empty leaf, gateway default (pass, counter 0).
    assert_eq!(
        program
            .test_run(&to(Ipv4Addr::new(10, 0, 0, 1), 22), 1)
            .expect("run")
            .verdict,
        xdp::PASS
    );

    let c = program.rule_counters(0, 13).expect("counters");
    assert_eq!(c[10].packets, 3, "count rule counted and continued");
    assert_eq!(c[11].packets, 1, "drop rule");
    assert_eq!(c[12].packets, 4, "pass-all rule: 3 × 443 + 1 × 80");
    assert_eq!(c[0].packets, 1, "gateway default");
    assert_eq!(
        program
            .counters()
            .expect("c")
            .outcome(Outcome::Dropped)
            .packets,
        1
    );
    let (passed, dropped) = program.tenant_counters(None).expect("tenant counters");
    assert_eq!((passed.packets, dropped.packets), (5 + 1, 1));

    // Unpublishing returns to "nothing loaded".
    program.unpublish(Slot::Global).expect("unpublish");
    assert_eq!(
        program.test_run(&to(net, 22), 1).expect("run").verdict,
        xdp::PASS
    );
}

#[test]
fn tables_without_a_valid_header_are_refused() {
    support::require_root();
    let mut cells = global_table();
    cells[0] = Cell::default();
    let err = StagedTable::new("bad", &cells).expect_err("no header");
    assert!(err.to_string().contains("header"), "{err}");
}
