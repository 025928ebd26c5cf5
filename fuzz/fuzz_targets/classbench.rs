//! The ClassBench importer: bytes → `classbench::parse_filters` and
//! `parse_ruleset` (filter files) → `validate` with `Config::classbench()` →
//! `compile_with`; the same bytes → `parse_trace`, whose packets go through
//! the reference classifier when the filters were valid. Nothing may panic,
//! and the two filter parsers must agree on whether the text is valid.
#![no_main]

use fluxgate_ruleset::{CompileOptions, Config, classbench, compile_with, reference, validate};
use libfuzzer_sys::fuzz_target;

/// Most trace packets classified per input (keeps one run short).
const MAX_PACKETS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let filters = classbench::parse_filters("fuzz.filters", &text);
    let ruleset = classbench::parse_ruleset("fuzz.filters", &text);
    assert_eq!(
        filters.is_ok(),
        ruleset.is_ok(),
        "parse_filters and parse_ruleset disagree"
    );
    if let Err(e) = &filters {
        let _ = e.render();
    }
    let valid = match ruleset {
        Ok(rs) => match validate(rs, &Config::classbench()) {
            Ok(valid) => Some(valid),
            Err(e) => {
                let _ = e.render();
                None
            }
        },
        Err(e) => {
            let _ = e.render();
            None
        }
    };
    if let (Ok(filters), Some(valid)) = (&filters, &valid) {
        assert_eq!(
            filters.len(),
            valid.gateway().rules.len(),
            "one rule per filter"
        );
        if let Err(e) = compile_with(valid, &CompileOptions::default()) {
            let _ = e.to_string();
        }
    }
    match classbench::parse_trace("fuzz.trace", &text) {
        Ok(trace) => {
            if let Some(valid) = &valid {
                for entry in trace.iter().take(MAX_PACKETS) {
                    let _ = reference::classify(valid, &entry.header.clone().on_the_wire());
                }
            }
        }
        Err(e) => {
            let _ = e.render();
        }
    }
});
