//! The ClassBench importer. Input: a filter file, then optionally a line
//! `---` and a trace file (without it, the whole text is tried as both).
//! Filters → `classbench::parse_filters` and `parse_ruleset` → `validate` with `Config::classbench()` →
//! `compile_with`; the same bytes → `parse_trace`, whose packets go through
//! the reference classifier and the compiled tables (which must agree) when
//! the filters were valid. Nothing may panic, and the two filter parsers must
//! agree on whether the text is valid.
#![no_main]

use fluxgate_ruleset::{
    Classifier, CompileOptions, Config, classbench, compile_with, reference, validate,
};
use libfuzzer_sys::fuzz_target;

/// Most trace packets classified per input (keeps one run short).
const MAX_PACKETS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (filter_text, trace_text) = match text.find("\n---\n") {
        Some(at) => (&text[..at + 1], &text[at + 5..]),
        None => (&text[..], &text[..]),
    };
    let filters = classbench::parse_filters("fuzz.filters", filter_text);
    let ruleset = classbench::parse_ruleset("fuzz.filters", filter_text);
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
    let mut classifier = None;
    if let (Ok(filters), Some(valid)) = (&filters, &valid) {
        assert_eq!(
            filters.len(),
            valid.gateway().rules.len(),
            "one rule per filter"
        );
        match compile_with(valid, &CompileOptions::default()) {
            Ok(image) => classifier = Some(Classifier::new(image, [])),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    match classbench::parse_trace("fuzz.trace", trace_text) {
        Ok(trace) => {
            if let Some(valid) = &valid {
                for entry in trace.iter().take(MAX_PACKETS) {
                    let p = entry.header.clone().on_the_wire();
                    let want = reference::classify(valid, &p);
                    if let Some(c) = &classifier {
                        let got = c.decide(&p);
                        assert!(
                            got.same_outcome(&want),
                            "{p}: the compiled tables decide {got:?}, the reference {want:?}"
                        );
                    }
                }
            }
        }
        Err(e) => {
            let _ = e.render();
        }
    }
});
