//! Hand-built tables published into the real program: the kernel walker reads
//! the layout of `fluxgate_common::table` exactly (independently of the compiler).

use std::net::Ipv4Addr;

use fluxgate::{
    common::{
        GatewayConfig, Outcome,
        table::{Cell, Header, RANGE_WORDS, Ref, RuleCell, action, word},
        xdp,
    },
    dataplane::{
        Program, Slot, Tables,
        frame::{FrameSpec, L4},
    },
};
use fluxgate_testkit::net;

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
/// [count dport 443, drop dport 22, pass all]; every other child → empty leaf.
fn global_table() -> Vec<Cell> {
    let mut cells = vec![Cell::default(); 1 + 16 + 1 + 3];
    let node_base = 1u32;
    let list = 17u32;
    let rules = 18u32;
    cells[0] = header(
        Ref::node(node_base, word::DST as u8, 24, 8),
        action::PASS,
        0,
        21,
    );
    for child in 0..256u32 {
        let r = if child == 203 {
            Ref::leaf(list, 3)
        } else {
            Ref::leaf(0, 0)
        };
        cells[(node_base + child / 16) as usize].raw[(child % 16) as usize] = r.0;
    }
    cells[list as usize] = Cell::from_list(&[rules, rules + 1, rules + 2]);
    let dport = |port: u32| {
        let (mut lo, mut hi) = ([0; RANGE_WORDS], [u32::MAX; RANGE_WORDS]);
        lo[word::DPORT] = port;
        hi[word::DPORT] = port;
        (lo, hi)
    };
    let (lo, hi) = dport(443);
    let count443 = RuleCell::from_ranges(&lo, &hi, 0, 0, action::COUNT, 10);
    let (lo, hi) = dport(22);
    // SYN without ACK
    let drop22 = RuleCell::from_ranges(&lo, &hi, 0x12, 0x02, action::DROP, 11);
    let pass = RuleCell::any(action::PASS, 12);
    cells[rules as usize] = Cell::from_rule(&count443);
    cells[rules as usize + 1] = Cell::from_rule(&drop22);
    cells[rules as usize + 2] = Cell::from_rule(&pass);
    cells
}

#[test]
fn kernel_walks_hand_built_tables() {
    net::require_root();
    let mut program = Program::load(&GatewayConfig::default()).expect("load");
    let net = Ipv4Addr::new(203, 0, 113, 10);
    assert_eq!(
        program.test_run(&to(net, 22), 1).expect("run").verdict,
        xdp::PASS,
        "nothing loaded: pass"
    );

    let table = program
        .stage("test_global", &global_table())
        .expect("stage");
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
    net::require_root();
    let mut program = Program::load(&GatewayConfig::default()).expect("load");
    let mut cells = global_table();
    cells[0] = Cell::default();
    let err = program.stage("bad", &cells).expect_err("no header");
    assert!(err.to_string().contains("header"), "{err}");
}

/// The verifier's budget is 1,000,000 processed instructions per program, and
/// the count is a cliff, not a slope: one reordered branch in the walk has
/// moved a program from ≈ 250k to past the limit (see
/// `fluxgate_common::table`). Every program keeps a third of the budget free,
/// so a change that eats into it fails here, with the numbers, rather than
/// at load time.
#[test]
fn every_program_leaves_the_verifier_headroom() {
    net::require_root();
    let program = Program::load(&GatewayConfig::default()).expect("load");
    let counts = program.verified_instructions().expect("verifier counts");
    assert!(counts.len() >= 5, "{counts:?}");
    for (name, n) in &counts {
        eprintln!("{name}: {n} instructions verified");
        assert!(
            *n <= 666_666,
            "{name}: the verifier processed {n} instructions, more than 2/3 of its 1M budget ({counts:?})"
        );
    }
}
