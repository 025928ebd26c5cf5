//! `fluxgate capture --drops`: dropped packets from the kernel's ring buffer,
//! filtered by tenant / rule, sampled and rate-limited in the kernel, written
//! as pcapng (readable by tcpdump and Wireshark) with the deciding rule in
//! each packet's comment.

use std::{
    borrow::Cow,
    collections::HashMap,
    fs::File,
    ops::ControlFlow,
    os::unix::fs::OpenOptionsExt,
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use fluxgate_common::{CAPTURE_NO_TENANT, CAPTURE_SNAPLEN, CaptureConfig, CaptureRecord, Trace};
use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};
use serde::Serialize;

use crate::{Cancel, ControlError, Interface};

/// What to capture.
#[derive(Clone, Debug, Default)]
pub struct CaptureOptions {
    /// Only this tenant's drops (`gateway`: packets of no tenant).
    pub tenant: Option<String>,
    /// Only drops decided by this rule: `acme#2`, `gateway#1`, `acme default`.
    pub rule: Option<String>,
    /// Keep one packet in N (kernel side).
    pub sample: u32,
    /// At most N packets per second per CPU (kernel side; at least 1, so a
    /// capture can never flood the reader).
    pub rate: u32,
    /// Bytes per packet (at most 256).
    pub snaplen: u32,
    /// Stop after this many packets.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Duration,
}

/// One captured packet, summarized.
#[derive(Clone, Debug, Serialize)]
pub struct Captured {
    /// Seconds since the Unix epoch (fractional).
    pub time: f64,
    /// Length on the wire.
    pub len: u32,
    /// Bytes captured.
    pub caplen: u32,
    /// Tenant, if any.
    pub tenant: Option<String>,
    /// The rule or default that dropped it.
    pub dropped_by: String,
    /// The packet as the rulesets write guard packets (`tcp 198.51.100.7:40000
    /// -> 203.0.113.25:587 flags S`), read from the captured bytes by the
    /// program's own parser; `None` when they do not reach that far.
    pub packet: Option<String>,
}

/// Monotonic clock now (what `bpf_ktime_get_ns` counts), ns.
fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime writes into `ts`, a properly sized out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Interface {
    /// Captures dropped packets until `opts.count` or `opts.duration`, until
    /// `each` breaks, or until `cancel` is cancelled; each packet goes to
    /// `each` and, with `out`, into a pcapng file (created owner-only).
    /// Capture is switched off again when this returns, however it ends.
    pub fn capture(
        &self,
        opts: &CaptureOptions,
        out: Option<&Path>,
        cancel: &Cancel,
        mut each: impl FnMut(&Captured) -> ControlFlow<()>,
    ) -> Result<u64, ControlError> {
        let live = &self.state.live;
        let slots = self.live_counters()?;
        let names: HashMap<u32, String> = slots.iter().map(|s| (s.slot, s.name())).collect();
        let tenant_names: HashMap<u32, String> = live
            .tenants
            .iter()
            .map(|(n, t)| (t.slot, n.clone()))
            .collect();
        let tenant = match opts.tenant.as_deref() {
            None => Trace::NONE,
            Some("gateway") => CAPTURE_NO_TENANT,
            Some(t) => self.live_tenant_slot(t)?,
        };
        let slot = match opts.rule.as_deref() {
            None => Trace::NONE,
            Some(r) => *names
                .iter()
                .find(|(_, n)| n.as_str() == r)
                .map(|(s, _)| s)
                .ok_or_else(|| {
                    ControlError::NotFound(format!(
                        "no live rule {r:?} (write `tenant#N`, `gateway#N` or `tenant default`)"
                    ))
                })?,
        };
        if opts.rate == 0 {
            return Err(ControlError::Usage(
                "a capture needs a rate limit of at least 1 packet per second".into(),
            ));
        }
        let snaplen = if opts.snaplen == 0 {
            CAPTURE_SNAPLEN as u32
        } else {
            opts.snaplen.min(CAPTURE_SNAPLEN as u32)
        };
        let mut writer = match out {
            Some(path) => {
                // Dropped packets are other people's traffic: owner-only.
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| {
                        ControlError::Io(format!("cannot create {}: {e}", path.display()))
                    })?;
                let mut w = PcapNgWriter::new(file)
                    .map_err(|e| ControlError::State(format!("pcapng: {e}")))?;
                w.write_pcapng_block(InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen,
                    // pcap-file writes timestamps in nanoseconds: say so (default: µs).
                    options: vec![
                        InterfaceDescriptionOption::IfTsResol(9),
                        InterfaceDescriptionOption::IfName(Cow::Owned(
                            self.pinned().iface().to_owned(),
                        )),
                    ],
                })
                .map_err(|e| ControlError::State(format!("pcapng: {e}")))?;
                Some(w)
            }
            None => None,
        };
        let mut reader = self.pinned().capture(&CaptureConfig {
            enabled: 1,
            tenant,
            slot,
            sample: opts.sample,
            rate: opts.rate,
            snaplen,
        })?;
        // Monotonic → wall clock, for timestamps.
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let offset = wall.saturating_sub(monotonic_ns());
        let started = Instant::now();
        let mut n = 0u64;
        while opts.count.is_none_or(|c| n < c) && !cancel.is_cancelled() {
            let left = opts.duration.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            // Short waits, so a cancel is seen within 200 ms.
            let Some(rec) = reader.next(left.min(Duration::from_millis(200))) else {
                continue;
            };
            n += 1;
            let when = Duration::from_nanos(rec.ts_ns + offset);
            let dropped_by = names
                .get(&rec.slot)
                .cloned()
                .unwrap_or_else(|| format!("counter slot {}", rec.slot));
            let tenant = tenant_names.get(&rec.tenant).cloned();
            let summary = Captured {
                time: when.as_secs_f64(),
                len: rec.len,
                caplen: rec.caplen,
                tenant: tenant.clone(),
                dropped_by: dropped_by.clone(),
                packet: packet_text(&rec),
            };
            if let Some(w) = writer.as_mut() {
                write_packet(w, &rec, when, &dropped_by, tenant.as_deref())?;
            }
            if each(&summary).is_break() {
                break;
            }
        }
        Ok(n)
    }
}

/// The captured head of `rec` in guard-packet notation (see
/// [`Captured::packet`]). The parser checks every length a header declares,
/// so a head cut at the snap length is filled up to the wire length; it is
/// filled twice, with zeros and with ones, and only a header that reads the
/// same both ways (it lies wholly within the captured bytes) is told.
fn packet_text(rec: &CaptureRecord) -> Option<String> {
    let data = &rec.data[..(rec.caplen as usize).min(CAPTURE_SNAPLEN)];
    let wire = (rec.len as usize).clamp(data.len(), 65_535 + 64);
    let read = |fill: u8| {
        let mut frame = data.to_vec();
        frame.resize(wire, fill);
        fluxgate_dataplane::frame::header_of(&frame).ok().flatten()
    };
    let header = read(0)?;
    (read(0xff).as_ref() == Some(&header)).then(|| header.to_string())
}

fn write_packet(
    w: &mut PcapNgWriter<File>,
    rec: &CaptureRecord,
    when: Duration,
    dropped_by: &str,
    tenant: Option<&str>,
) -> Result<(), ControlError> {
    let data = &rec.data[..(rec.caplen as usize).min(CAPTURE_SNAPLEN)];
    let comment = format!(
        "fluxgate: dropped by {dropped_by}{}",
        tenant.map(|t| format!(" (tenant {t})")).unwrap_or_default()
    );
    w.write_pcapng_block(EnhancedPacketBlock {
        interface_id: 0,
        timestamp: when,
        original_len: rec.len,
        data: Cow::Borrowed(data),
        options: vec![EnhancedPacketOption::Comment(Cow::Owned(comment))],
    })
    .map_err(|e| ControlError::State(format!("pcapng: {e}")))?;
    Ok(())
}
