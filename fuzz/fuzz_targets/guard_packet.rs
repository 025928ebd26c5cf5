//! The guard-packet text (`guard "tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags S" pass`,
//! `explain --packet …`): bytes → `str` → `PacketHeader::from_str`. Nothing may
//! panic, and a header that parses prints (`Display`) as text that parses back
//! to an equal header.
#![no_main]

use fluxgate_ruleset::PacketHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.parse::<PacketHeader>() {
        Ok(p) => {
            let printed = p.to_string();
            let back: PacketHeader = match printed.parse() {
                Ok(back) => back,
                Err(e) => panic!("{text:?} parsed, but its text form {printed:?} does not: {e}"),
            };
            assert_eq!(back, p, "{text:?} → {printed:?} parses back differently");
            // The header as the wire carries it prints and parses back too.
            let wire = p.on_the_wire();
            let printed = wire.to_string();
            assert_eq!(
                printed.parse::<PacketHeader>().ok(),
                Some(wire),
                "{printed:?}"
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
