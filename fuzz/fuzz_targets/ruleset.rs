//! The ruleset loader, end to end: bytes → files → `Ruleset::parse_files` →
//! `validate` (default `Config` limits) → `compile_with` → guards against the
//! reference classifier. Nothing may panic, and the limits must keep memory
//! and time bounded (run with `-rss_limit_mb=2048 -timeout=10`). The compiled
//! tables (the userspace `Classifier`, the kernel's layout) must decide every
//! guard and witness packet as the reference does.
//!
//! Input: the text of `gateway.fg`, then optionally more files, each after a
//! line `--- NAME` (as in `ruleset/tests/cases.txt`); a section whose name is
//! empty is called `t<N>.fg`. At most 8 files.
#![no_main]

use std::collections::BTreeMap;

use fluxgate_ruleset::{
    Classifier, CompileOptions, Config, Ruleset, compile_with, preflight, reference, validate,
};
use libfuzzer_sys::fuzz_target;

/// Most files one input is split into.
const MAX_FILES: usize = 8;

/// Most guard and witness packets compared per input (keeps one run short).
const MAX_PROBES: usize = 256;

/// Splits the input into `(name, text)` files.
fn files(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![("gateway.fg".to_owned(), String::new())];
    for line in text.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("--- ")
            && out.len() < MAX_FILES
        {
            let name = name.trim();
            let name = if name.is_empty() {
                format!("t{}.fg", out.len())
            } else {
                name.to_owned()
            };
            out.push((name, String::new()));
            continue;
        }
        if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
        }
    }
    // A first section that is empty and followed by a named one stands for
    // "no gateway text before the first `---`": keep the named files only.
    if out.len() > 1 && out[0].1.is_empty() {
        out.remove(0);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let files = files(&text);
    let rs = match Ruleset::parse_files(&files) {
        Ok(rs) => rs,
        Err(errors) => {
            // Rendering quotes excerpts of hostile text: it must not panic either.
            let _ = errors.render();
            return;
        }
    };
    let valid = match validate(rs, &Config::default()) {
        Ok(valid) => valid,
        Err(errors) => {
            let _ = errors.render();
            return;
        }
    };
    for w in valid.warnings() {
        let _ = w.render();
    }
    // Every interface a rule names exists (as `check` does with stand-ins).
    let interfaces: BTreeMap<String, u32> = valid
        .gateway()
        .rules
        .iter()
        .chain(valid.tenants().iter().flat_map(|t| &t.rules))
        .filter_map(|r| r.matches.iif.clone())
        .zip(1..)
        .collect();
    let image = match compile_with(
        &valid,
        &CompileOptions {
            interfaces: interfaces.clone(),
            ..Default::default()
        },
    ) {
        Ok(image) => image,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = image.cells();
    let _ = preflight::failing_guards(&valid);
    let classifier = Classifier::new(image, interfaces);
    for probe in preflight::probes(&valid).iter().take(MAX_PROBES) {
        let want = reference::classify(&valid, &probe.packet);
        let got = classifier.decide(&probe.packet);
        assert!(
            got.same_outcome(&want),
            "{}: the compiled tables decide {got:?}, the reference {want:?}",
            probe.packet
        );
    }
});
