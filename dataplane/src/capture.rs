//! Capture of dropped packets: the classifier sends each dropped packet that
//! passes the filters of `FG_CAPTURE` (tenant, deciding rule, 1-in-N sampling,
//! per-CPU rate limit) through the `FG_DROPS` ring buffer, with the rule that
//! dropped it. While capture is off, a dropped packet costs one array lookup.

use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use fluxgate_common::{CaptureConfig, CaptureRecord, maps};

use crate::{Error, PinnedAttachment, config};

/// Reads captured packets; capture is switched off again when dropped.
pub struct DropReader<'a> {
    pinned: &'a PinnedAttachment,
    ring: RingBuf<MapData>,
}

impl PinnedAttachment {
    /// The capture configuration in force.
    pub fn capture_config(&self) -> Result<CaptureConfig, Error> {
        config::read_capture(&self.open_map(maps::CAPTURE)?)
    }

    /// Replaces the capture configuration (`enabled = 0`: off).
    pub fn set_capture(&self, config: &CaptureConfig) -> Result<(), Error> {
        config::write_capture(&mut self.open_map(maps::CAPTURE)?, config)
    }

    /// Starts capturing with `config` (enabled) and returns the reader.
    /// Records left in the ring by an earlier capture are discarded first.
    pub fn capture(&self, config: &CaptureConfig) -> Result<DropReader<'_>, Error> {
        let map = self.open_map(maps::DROPS)?;
        let mut ring =
            RingBuf::try_from(map).map_err(|e| Error::kernel("open the drop ring", e))?;
        while ring.next().is_some() {}
        self.set_capture(&CaptureConfig {
            enabled: 1,
            ..*config
        })?;
        Ok(DropReader { pinned: self, ring })
    }
}

impl DropReader<'_> {
    /// The next captured packet, waiting up to `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<CaptureRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(item) = self.ring.next() {
                let bytes: &[u8] = &item;
                if bytes.len() >= size_of::<CaptureRecord>() {
                    // SAFETY: the kernel wrote a whole CaptureRecord (plain
                    // integers and bytes); read_unaligned copes with alignment.
                    return Some(unsafe {
                        std::ptr::read_unaligned(bytes.as_ptr().cast::<CaptureRecord>())
                    });
                }
                continue;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for DropReader<'_> {
    fn drop(&mut self) {
        let _best_effort = self.pinned.set_capture(&CaptureConfig::default());
    }
}
