//! Runs the shared case table against the reference classifier.

#[test]
fn case_table_passes_on_reference() {
    let text = include_str!("cases.txt");
    let cases = fluxgate_ruleset::cases::load(text).expect("case table parses");
    assert!(cases.len() > 40, "table has {} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .flat_map(fluxgate_ruleset::cases::run_reference)
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
