//! Runs the shared case table against the reference classifier.

#[test]
fn case_table_passes_on_reference() {
    let text = include_str!("cases.txt");
    let cases = fluxgate_testkit::cases::load(text).expect("case table parses");
    assert!(cases.len() > 40, "table has {} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .flat_map(fluxgate_testkit::cases::run_reference)
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// `explain` walks exactly like `classify`: same decision, each rule's fields
/// all ok exactly when it matched, and the last rule considered is the
/// deciding one whenever a rule decided.
#[test]
fn explain_agrees_with_classify_on_the_case_table() {
    use fluxgate_ruleset::{Ruleset, reference, validate};
    let cases = fluxgate_testkit::cases::load(include_str!("cases.txt")).expect("table");
    let mut explained = 0;
    for case in cases.iter().filter(|c| c.errors.is_none()) {
        let rs = Ruleset::parse_files(&case.files).expect("parse");
        let Ok(rs) = validate(rs, &case.config) else {
            continue;
        };
        for p in &case.packets {
            let e = reference::explain(&rs, &p.packet);
            assert_eq!(
                e.decision,
                reference::classify(&rs, &p.packet),
                "{}",
                case.name
            );
            for c in &e.considered {
                assert_eq!(
                    c.matched,
                    c.fields.iter().all(|f| f.ok),
                    "{}: {c:?}",
                    case.name
                );
            }
            if let Some(r) = &e.decision.rule {
                let last = e.considered.last().expect("a rule decided");
                assert!(last.matched, "{}", case.name);
                assert_eq!(
                    (&last.scope, last.position),
                    (&r.scope, r.position),
                    "{}",
                    case.name
                );
            }
            explained += 1;
        }
    }
    assert!(explained > 50, "explained {explained} packets");
}
