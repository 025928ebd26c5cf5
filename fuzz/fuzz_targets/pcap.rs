//! The capture reader of `fluxgate explain --pcap`:
//! `fluxgate_control::explain::read_pcap_bytes` on arbitrary bytes (pcap or
//! pcapng), then each frame through the XDP parser as `explain` does. Nothing
//! may panic, and memory stays bounded by the input (run with `-rss_limit_mb`).
#![no_main]

use fluxgate_control::explain::read_pcap_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match read_pcap_bytes(data) {
        Ok(frames) => {
            let total: usize = frames.iter().map(Vec::len).sum();
            assert!(total <= data.len(), "frames hold more bytes than the file");
            for frame in &frames {
                let _ = fluxgate_dataplane::frame::header_of(frame);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
