//! Capture of dropped packets: the classifier sends each dropped packet that
//! passes the filters of `FG_CAPTURE` (tenant, deciding rule, 1-in-N sampling,
//! per-CPU rate limit) through the `FG_DROPS` ring buffer, with the rule that
//! dropped it. While capture is off, a dropped packet costs one array lookup.

use std::{
    io,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

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
    /// Blocks until a captured record is ready to be read or `timeout` has
    /// passed, without spinning: it polls the ring buffer's fd, which the
    /// kernel makes readable when the program submits a record. `true` when
    /// records are ready ([`DropReader::try_next`] then returns one), `false`
    /// on timeout. An interrupting signal ends the wait early (`Ok(false)`
    /// unless records arrived), so a caller's signal handler can run and its
    /// loop check for cancellation.
    ///
    /// ```no_run
    /// # fn demo(pinned: &fluxgate_dataplane::PinnedAttachment) -> Result<(), fluxgate_dataplane::Error> {
    /// use std::time::Duration;
    ///
    /// let mut reader = pinned.capture(&Default::default())?;
    /// while reader.wait(Duration::from_millis(200))? {
    ///     while let Some(record) = reader.try_next() {
    ///         println!("dropped by counter slot {}", record.slot);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, Error> {
        let mut pollfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // poll(2) takes whole milliseconds: round up, so a short timeout
        // still waits instead of returning at once.
        let millis = timeout
            .as_nanos()
            .div_ceil(1_000_000)
            .min(libc::c_int::MAX as u128) as libc::c_int;
        // SAFETY: `pollfd` is one valid, initialised entry that outlives the call.
        let ready = unsafe { libc::poll(&mut pollfd, 1, millis) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(Error::kernel("wait for captured packets (poll)", err));
        }
        Ok(ready > 0 && pollfd.revents & libc::POLLIN != 0)
    }

    /// The next captured packet if one is waiting; never blocks.
    pub fn try_next(&mut self) -> Option<CaptureRecord> {
        while let Some(item) = self.ring.next() {
            let bytes: &[u8] = &item;
            if bytes.len() >= size_of::<CaptureRecord>() {
                // SAFETY: the kernel wrote a whole CaptureRecord (plain
                // integers and bytes); read_unaligned copes with alignment.
                return Some(unsafe {
                    std::ptr::read_unaligned(bytes.as_ptr().cast::<CaptureRecord>())
                });
            }
        }
        None
    }

    /// The next captured packet, waiting up to `timeout` for one (with
    /// [`DropReader::wait`]; `None` on timeout).
    pub fn next(&mut self, timeout: Duration) -> Option<CaptureRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(record) = self.try_next() {
                return Some(record);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if self.wait(left).is_err() {
                // poll failing on a ring buffer fd is not expected; fall back
                // to checking again shortly rather than busy-looping.
                std::thread::sleep(left.min(Duration::from_millis(5)));
            }
        }
    }
}

impl Drop for DropReader<'_> {
    fn drop(&mut self) {
        let _best_effort = self.pinned.set_capture(&CaptureConfig::default());
    }
}
