//! The number of rule counter slots is chosen at attach time (like tenant
//! slots, see tenant_scale.rs): an attachment of 64 counter slots refuses at
//! compile a ruleset needing 65, before anything is staged, and counts a
//! fitting ruleset's last rule in slot 63 — in the right block of every CPU,
//! and for real traffic through a pinned attachment.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use fluxgate::{
    common::{DEFAULT_COUNTER_SLOTS, GatewayConfig, MAX_COUNTER_SLOTS, xdp},
    dataplane::{
        AttachMode, PinnedAttachment, Program, Sizes, StagedImage, Tables,
        frame::{FrameSpec, L4},
    },
    ruleset::{
        Config, Ruleset, Scope,
        compile::{CompileError, CompileOptions, Image, compile_with},
        validate,
    },
};
use fluxgate_testkit::net::{self, ADDR_B, IF_B, Link};

/// Counter slots of the attachments under test.
const SLOTS: u32 = 64;
/// The port of the tenant's last rule (the one in the last counter slot).
const LAST_PORT: u16 = 9999;

/// A ruleset needing `slots` counter slots: the gateway's default (slot 0),
/// the tenant's default (slot 1), then `slots - 2` rules of tenant acme, which
/// owns `ADDR_B`; the last one passes UDP to [`LAST_PORT`], the others pass
/// other ports nobody sends to.
fn ruleset(slots: u32) -> Vec<(String, String)> {
    let mut acme = format!("tenant acme\nprefix {ADDR_B}/32\ndefault drop\n");
    for i in 0..slots - 3 {
        acme.push_str(&format!("proto udp dport {} pass\n", 1000 + i));
    }
    acme.push_str(&format!("proto udp dport {LAST_PORT} pass\n"));
    vec![
        ("gateway.fg".to_owned(), "default pass\n".to_owned()),
        ("acme.fg".to_owned(), acme),
    ]
}

/// `ruleset(slots)` compiled for an attachment of `counter_slots` slots.
fn compiled(slots: u32, counter_slots: u32) -> Result<Image, CompileError> {
    let files = ruleset(slots);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let rs = validate(
        Ruleset::parse_files(&files).expect("parse"),
        &Config::default(),
    )
    .expect("validate");
    compile_with(
        &rs,
        &CompileOptions {
            counter_slots,
            ..CompileOptions::default()
        },
    )
}

/// The slot the compiler gave acme's last rule.
fn last_rule_slot(image: &Image) -> u32 {
    image
        .counters
        .iter()
        .filter(|c| c.scope == Scope::Tenant("acme".into()) && c.rule.is_some())
        .max_by_key(|c| c.position)
        .expect("acme's rules")
        .slot
}

/// One more slot than the attachment has: refused at compile, saying how
/// many it needs and how many there are.
fn assert_refused(counter_slots: u32) {
    let err = compiled(counter_slots + 1, counter_slots).expect_err("one slot too many");
    assert!(
        matches!(err, CompileError::TooManyCounters { limit, needed }
            if limit == counter_slots && needed == u64::from(counter_slots) + 1),
        "{err:?}"
    );
    let said = err.to_string();
    assert!(
        said.contains(&format!("needs {} counter slots", counter_slots + 1))
            && said.contains(&format!("{counter_slots} counter slots of the attachment")),
        "{said}"
    );
}

/// Pins the calling thread to `cpu`; false when the CPU is not online.
fn run_on(cpu: u32) -> bool {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it
    // (cpu is below CPU_SETSIZE, checked), and sched_setaffinity reads it.
    unsafe {
        if cpu as usize >= libc::CPU_SETSIZE as usize {
            return false;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[test]
fn sixty_four_counter_slots_refuse_sixty_five_and_count_in_the_last_on_every_cpu() {
    net::require_root();
    let sizes = Sizes {
        counter_slots: SLOTS,
        ..Sizes::default()
    };
    let mut program = Program::load_with(&GatewayConfig::default(), sizes).expect("load");
    assert_eq!(program.counter_slots(), SLOTS);
    // Set by the loader, kept whatever a caller writes.
    program
        .set_config(&GatewayConfig {
            counter_slots: 3,
            ..GatewayConfig::default()
        })
        .expect("config");

    assert_refused(program.counter_slots());
    let image = compiled(SLOTS, program.counter_slots()).expect("64 slots fit");
    assert_eq!(
        last_rule_slot(&image),
        SLOTS - 1,
        "the last rule, last slot"
    );
    let staged = StagedImage::new(&mut program, &image).expect("stage");
    program.publish_image(&staged).expect("publish");

    let frame = |dport| {
        FrameSpec::new(
            Ipv4Addr::new(10, 77, 0, 1).into(),
            ADDR_B.into(),
            L4::Udp {
                sport: 40000,
                dport,
            },
        )
        .build()
    };
    // Each CPU counts in its own block of 64: run the packet on every CPU
    // (BPF_PROG_TEST_RUN runs on the calling CPU) and find every run in
    // slot 63's per-CPU sum. A block offset from another size would put the
    // counts of CPU 1 and up elsewhere (or nowhere).
    let cpus = aya::util::nr_cpus().expect("possible CPUs") as u32;
    let mut ran = 0;
    for cpu in 0..cpus {
        if !run_on(cpu) {
            continue;
        }
        let out = program.test_run(&frame(LAST_PORT), cpu + 1).expect("run");
        assert_eq!(out.verdict, xdp::PASS, "the last rule passes");
        ran += u64::from(cpu + 1);
    }
    assert!(ran > 0, "ran on no CPU");
    eprintln!("{ran} runs on up to {cpus} possible CPUs");
    let last = program.rule_counters(SLOTS - 1, 1).expect("slot 63")[0];
    assert_eq!(last.packets, ran, "every run counted in slot 63");
    assert_eq!(
        program.test_run(&frame(7), 1).expect("run").verdict,
        xdp::DROP,
        "the tenant's default"
    );
    let counted: u64 = program
        .rule_counters(0, SLOTS)
        .expect("all 64")
        .iter()
        .map(|c| c.packets)
        .sum();
    assert_eq!(
        counted,
        ran + 1,
        "nothing counted anywhere else but the default"
    );

    // Slots past the end are a clear error, to read and to reset.
    let err = program.rule_counters(SLOTS - 1, 2).expect_err("slot 64");
    assert!(
        err.to_string()
            .contains("64 counter slots of this attachment"),
        "{err}"
    );
    assert!(program.reset_counters(&[SLOTS]).is_err());
    program.reset_counters(&[SLOTS - 1]).expect("reset slot 63");
    assert_eq!(
        program.rule_counters(SLOTS - 1, 1).expect("read")[0].packets,
        0
    );

    // The number asked for is bounded.
    for bad in [0, MAX_COUNTER_SLOTS + 1] {
        let Err(err) = Program::load_with(
            &GatewayConfig::default(),
            Sizes {
                counter_slots: bad,
                ..Sizes::default()
            },
        ) else {
            panic!("{bad} counter slots");
        };
        assert!(err.to_string().contains("counter slots"), "{err}");
    }
    // The default is the default.
    assert_eq!(Sizes::default().counter_slots, DEFAULT_COUNTER_SLOTS);
    drop(staged);
}

#[test]
fn a_pinned_attachment_of_sixty_four_counter_slots_counts_traffic_in_slot_63() {
    net::require_root();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let root = PathBuf::from(format!(
        "/sys/fs/bpf/fgt-counters-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let link = Link::new();
    let pins = root.clone();
    link.b.run(move || {
        let program = Program::load_with(
            &GatewayConfig::default(),
            Sizes {
                counter_slots: SLOTS,
                ..Sizes::default()
            },
        )
        .expect("load");
        let attached = program.attach(IF_B, AttachMode::Generic).expect("attach");
        drop(attached.pin(&pins).expect("pin"));
    });
    let result = std::panic::catch_unwind(|| {
        // A new adoption, as a restarted process makes: the slots come from
        // the counter map's size, checked against the configuration.
        let mut p = PinnedAttachment::open(&root, IF_B).expect("open");
        assert_eq!(p.counter_slots(), SLOTS);
        assert_eq!(p.config().expect("config").counter_slots, SLOTS);
        // A configuration written later keeps them.
        p.set_config(&GatewayConfig::default()).expect("config");
        assert_eq!(p.config().expect("config").counter_slots, SLOTS);

        // What control does: compile against the attachment's slots.
        assert_refused(p.counter_slots());
        let image = compiled(SLOTS, p.counter_slots()).expect("64 slots fit");
        assert_eq!(last_rule_slot(&image), SLOTS - 1);
        let staged = StagedImage::new(&mut p, &image).expect("stage");
        p.publish_image(&staged).expect("publish");

        assert_eq!(net::udp_exchange(&link, LAST_PORT, 20, 16), 20, "passed");
        assert_eq!(net::udp_exchange(&link, 7, 5, 16), 0, "default drop");
        let counters = p.rule_counters(0, SLOTS).expect("all 64");
        assert_eq!(counters[(SLOTS - 1) as usize].packets, 20, "slot 63");
        assert_eq!(counters[1].packets, 5, "acme's default, slot 1");
        assert_eq!(
            counters.iter().map(|c| c.packets).sum::<u64>(),
            25,
            "nothing elsewhere"
        );
        let err = p.rule_counters(SLOTS, 1).expect_err("slot 64");
        assert!(err.to_string().contains("64 counter slots"), "{err}");
        drop(staged);
    });
    if let Ok(p) = PinnedAttachment::open(&root, IF_B) {
        let _ = p.detach();
    }
    let _ = std::fs::remove_dir_all(&root);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
