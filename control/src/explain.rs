//! `fluxgate explain`: why a packet gets its verdict — the tenant, every rule
//! considered in order with each field checked, the deciding rule — from the
//! live generation or any kept one, with the kernel's own answer beside it
//! (the packet run through the same tables with `BPF_PROG_TEST_RUN`).

use std::collections::BTreeMap;

use fluxgate_dataplane::frame::FrameSpec;
use fluxgate_ruleset::{
    Config, PacketHeader, Ruleset, Verdict, preflight::decider, reference, validate,
};
use serde::Serialize;

use crate::{
    ControlError, Interface,
    interface::manifest_slots,
    store::{Manifest, SlotInfo},
};

/// One field check.
#[derive(Clone, Debug, Serialize)]
pub struct FieldReport {
    /// Field keyword.
    pub field: String,
    /// Satisfied.
    pub ok: bool,
    /// Why.
    pub detail: String,
}

/// One rule considered.
#[derive(Clone, Debug, Serialize)]
pub struct RuleReport {
    /// `gateway` or the tenant.
    pub scope: String,
    /// 1-based position.
    pub position: u32,
    /// The rule.
    pub rule: String,
    /// Matched.
    pub matched: bool,
    /// Its fields.
    pub fields: Vec<FieldReport>,
}

/// What the kernel decided for the packet, on the same generation.
#[derive(Clone, Debug, Serialize)]
pub struct KernelReport {
    /// `pass` or `drop`.
    pub verdict: String,
    /// Counter slot of the deciding rule or default.
    pub decided_slot: Option<u32>,
    /// The deciding rule or default, named from the slot.
    pub decided_by: Option<String>,
    /// Tenant slot found.
    pub tenant_slot: Option<u32>,
    /// Same verdict, rule and tenant as the reference.
    pub agrees: bool,
}

/// The whole explanation.
#[derive(Clone, Debug, Serialize)]
pub struct ExplainReport {
    /// The generation explained.
    pub generation: u64,
    /// The packet.
    pub packet: String,
    /// Tenant owning the destination.
    pub tenant: Option<String>,
    /// Rules considered, in order.
    pub considered: Vec<RuleReport>,
    /// `count` rules that counted it.
    pub counted: Vec<String>,
    /// `pass` or `drop`.
    pub verdict: String,
    /// Rule or default that decided (`acme#2`, `acme default`).
    pub decided_by: String,
    /// The reference's reason, in words.
    pub reason: String,
    /// The kernel's answer.
    pub kernel: KernelReport,
}

impl Interface {
    /// Explains `packet` against the live generation, or kept generation
    /// `generation` (the kernel answer then comes from that generation's kept
    /// tables, overlaid for a probe run).
    pub fn explain(
        &self,
        packet: &PacketHeader,
        generation: Option<u64>,
    ) -> Result<ExplainReport, ControlError> {
        let (files, manifest, slots, number) = match generation {
            None => {
                let files = self.live_files()?;
                if files.is_empty() {
                    return Err(ControlError::NotFound(
                        "no ruleset is applied on this interface".into(),
                    ));
                }
                (
                    files,
                    self.state.live.clone(),
                    self.live_counters()?,
                    self.state.live_generation,
                )
            }
            Some(g) => {
                let r = self.kept_record(g)?;
                let files = crate::interface::manifest_files(self.store(), &r.manifest)?;
                let slots = crate::interface::manifest_counters(self.store(), &r.manifest)?;
                (files, r.manifest, slots, g)
            }
        };
        let rs = validate(Ruleset::parse_files(&files)?, &Config::default())?;
        let e = reference::explain(&rs, packet);
        let d = &e.decision;
        let decided_by = decider(d);
        let kernel = self.kernel_answer(packet, &manifest, &slots, generation.is_some(), d)?;
        Ok(ExplainReport {
            generation: number,
            packet: packet.to_string(),
            tenant: d.tenant_name.clone(),
            considered: e
                .considered
                .iter()
                .map(|c| RuleReport {
                    scope: c.scope.to_string(),
                    position: c.position,
                    rule: c.rule.clone(),
                    matched: c.matched,
                    fields: c
                        .fields
                        .iter()
                        .map(|f| FieldReport {
                            field: f.field.to_owned(),
                            ok: f.ok,
                            detail: f.detail.clone(),
                        })
                        .collect(),
                })
                .collect(),
            counted: d.counted.iter().map(ToString::to_string).collect(),
            verdict: d.verdict.to_string(),
            decided_by,
            reason: d.reason.clone(),
            kernel,
        })
    }

    fn kernel_answer(
        &self,
        packet: &PacketHeader,
        manifest: &Manifest,
        slots: &[SlotInfo],
        overlay: bool,
        want: &reference::Decision,
    ) -> Result<KernelReport, ControlError> {
        let frame = FrameSpec::from_header(packet)
            .ok_or_else(|| ControlError::Refused(format!("packet `{packet}` cannot be built")))?
            .build();
        let tenant_slot = want
            .tenant_name
            .as_ref()
            .and_then(|t| manifest.tenants.get(t))
            .map(|t| t.slot);
        let version = self.pinned.version_of(tenant_slot)?;
        let mut probe = self.pinned.probe(version)?;
        let mut kept = Vec::new();
        if overlay {
            for (scope, slot, g) in manifest_slots(manifest) {
                kept.push((slot, self.pinned.kept_table(&scope.to_string(), g)?));
            }
            let refs: Vec<_> = kept.iter().map(|(s, t)| (*s, t)).collect();
            probe.overlay_all(&refs)?;
        }
        let got = probe.run(&frame)?;
        let by_slot: BTreeMap<u32, &SlotInfo> = slots.iter().map(|s| (s.slot, s)).collect();
        let want_name = decider(want);
        let decided_by = match got.decided {
            // Passed in the dispatcher, before any table: nothing recorded
            // (a frame built from a header is never malformed or not IP).
            None if want.neighbor_discovery => Some(want_name.clone()),
            d => d.and_then(|slot| by_slot.get(&slot).map(|s| s.name())),
        };
        let verdict = if got.verdict == fluxgate_common::xdp::DROP {
            Verdict::Drop
        } else {
            Verdict::Pass
        };
        Ok(KernelReport {
            verdict: verdict.to_string(),
            decided_slot: got.decided,
            agrees: verdict == want.verdict
                && decided_by.as_deref() == Some(want_name.as_str())
                && got.tenant == tenant_slot,
            decided_by,
            tenant_slot: got.tenant,
        })
    }
}

impl std::fmt::Display for ExplainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "packet   {}", self.packet)?;
        writeln!(
            f,
            "tenant   {} (generation {})",
            self.tenant
                .as_deref()
                .unwrap_or("none: no tenant owns the destination"),
            self.generation
        )?;
        for r in &self.considered {
            let mark = if r.matched { "MATCH" } else { "no" };
            writeln!(f, "  {:<5} {}#{}  {}", mark, r.scope, r.position, r.rule)?;
            for c in &r.fields {
                writeln!(
                    f,
                    "          {} {:<9} {}",
                    if c.ok { "✓" } else { "✗" },
                    c.field,
                    c.detail
                )?;
            }
        }
        if !self.counted.is_empty() {
            writeln!(f, "counted  {}", self.counted.join(", "))?;
        }
        writeln!(
            f,
            "verdict  {} by {} — {}",
            self.verdict, self.decided_by, self.reason
        )?;
        writeln!(
            f,
            "kernel   {} by {} ({})",
            self.kernel.verdict,
            self.kernel
                .decided_by
                .as_deref()
                .unwrap_or("nothing loaded"),
            if self.kernel.agrees {
                "agrees"
            } else {
                "DISAGREES with the reference"
            }
        )
    }
}

/// The frames of a pcap or pcapng file.
pub fn read_pcap(path: &std::path::Path) -> Result<Vec<Vec<u8>>, ControlError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ControlError::Io(format!("cannot read {}: {e}", path.display())))?;
    read_pcap_bytes(&bytes)
        .map_err(|e| ControlError::Io(format!("cannot read {}: {e}", path.display())))
}

/// The frames of a pcap or pcapng file held in memory (what [`read_pcap`]
/// reads): a pcapng file's Enhanced, Simple and obsolete Packet blocks, or a
/// pcap file's packets, in file order. An error says what is malformed.
pub fn read_pcap_bytes(bytes: &[u8]) -> Result<Vec<Vec<u8>>, ControlError> {
    use pcap_file::{
        pcap::PcapReader,
        pcapng::{Block, PcapNgReader},
    };
    let fail = |e: &dyn std::fmt::Display| ControlError::Io(e.to_string());
    let mut frames = Vec::new();
    if let Ok(mut r) = PcapNgReader::new(bytes) {
        while let Some(block) = r.next_block() {
            match block.map_err(|e| fail(&e))? {
                Block::EnhancedPacket(p) => frames.push(p.data.into_owned()),
                // A Simple Packet Block has no captured length: its data
                // is padded to 32 bits, the packet is `original_len` long.
                Block::SimplePacket(p) => {
                    let len = usize::try_from(p.original_len)
                        .map_or(p.data.len(), |n| n.min(p.data.len()));
                    frames.push(p.data[..len].to_vec());
                }
                Block::Packet(p) => frames.push(p.data.into_owned()),
                _ => {}
            }
        }
        return Ok(frames);
    }
    let mut r = PcapReader::new(bytes).map_err(|e| fail(&e))?;
    while let Some(p) = r.next_packet() {
        frames.push(p.map_err(|e| fail(&e))?.data.into_owned());
    }
    Ok(frames)
}

/// One frame of a capture file, explained — or why it was not.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Explained {
    /// An IP packet, explained.
    Report(Box<ExplainReport>),
    /// Not explained: not IP (always passed), or malformed.
    Skipped {
        /// Why, in words.
        skipped: String,
    },
}

impl Interface {
    /// Explains every frame of a pcap / pcapng file (see
    /// [`Interface::explain`]); frames that are not IP, or that the XDP
    /// parser finds malformed, say so instead.
    pub fn explain_pcap(
        &self,
        path: &std::path::Path,
        generation: Option<u64>,
    ) -> Result<Vec<Explained>, ControlError> {
        read_pcap(path)?
            .iter()
            .map(|frame| match fluxgate_dataplane::frame::header_of(frame) {
                Ok(Some(p)) => Ok(Explained::Report(Box::new(self.explain(&p, generation)?))),
                Ok(None) => Ok(Explained::Skipped {
                    skipped: "not IP: always passed".to_owned(),
                }),
                Err(reason) => Ok(Explained::Skipped {
                    skipped: format!("malformed ({}): gets the malformed verdict", reason.name()),
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::read_pcap_bytes;

    /// The seed captures of the `pcap` fuzz target read as their frames (a
    /// Simple Packet Block's without its padding), and a cut-off capture is
    /// an error, never a panic.
    #[test]
    fn pcap_and_pcapng_bytes_read_as_frames() {
        let pcap = include_bytes!("../../fuzz/seeds/pcap/two.pcap");
        let frames = read_pcap_bytes(pcap).expect("pcap");
        assert_eq!(frames.iter().map(Vec::len).collect::<Vec<_>>(), [54, 62]);
        let pcapng = include_bytes!("../../fuzz/seeds/pcap/two.pcapng");
        let frames = read_pcap_bytes(pcapng).expect("pcapng");
        assert_eq!(
            frames.iter().map(Vec::len).collect::<Vec<_>>(),
            [54, 62, 42]
        );
        assert!(read_pcap_bytes(&pcap[..pcap.len() - 1]).is_err());
        assert!(read_pcap_bytes(&pcapng[..pcapng.len() - 3]).is_err());
        assert!(read_pcap_bytes(b"").is_err());
    }
}
