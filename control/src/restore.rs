//! Filtering again after a reboot, from the journal alone.
//!
//! A reboot empties bpffs (the attachment, its maps, every kept table) but
//! not the journal: `state.json` still names what was live, scope by scope,
//! the generation records hold each file's hash and `sources/` the texts.
//! [`Gateway::restore`] attaches every interface that has a journal and no
//! attachment the way it was attached (`attach.json`), and applies the live
//! files again — each scope's file from the record of the generation it was
//! at, so a mix left by per-tenant rollbacks comes back exactly — as a new
//! generation with reason `restore`, preflighted like any apply.
//!
//! The records of the generations before the reboot are then forgotten: their
//! tables are gone, so a rollback to one could only fail, and `status` would
//! list them as kept. (Staging them all again would make a boot as slow as
//! eight applies and fill the pool with tables nobody may roll back to; the
//! files of what is live survive in the new record.)
//!
//! The restore is crash-safe and idempotent: before touching anything it
//! writes the manifest it restores to `restore.json`, and removes it when done,
//! so a restore cut short (power lost again) is finished by the next one; an
//! interface that is attached and filtering is left alone.

use fluxgate_dataplane::{AttachMode, PinnedAttachment};
use serde::Serialize;

use crate::{
    ApplyOptions, AttachOptions, ControlError, Gateway, Interface, RulesetSource,
    interface::{list_or_none, manifest_files},
    store::{AttachRecord, Manifest, RestorePoint},
};

/// What [`Gateway::restore`] did for one interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreOutcome {
    /// Attached again, and the last live state applied again (when there was one).
    Restored,
    /// fluxgate was attached and filtering already: left alone.
    AlreadyAttached,
    /// The restore of this interface failed (see `error`); it was left
    /// unattached, its journal untouched, so a later restore can try again.
    Failed,
}

/// One interface of a [`Gateway::restore`].
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    /// Interface name.
    pub iface: String,
    /// What happened.
    pub outcome: RestoreOutcome,
    /// The generation the restored state was applied as (`None`: nothing
    /// was live before, or nothing was done).
    pub generation: Option<u64>,
    /// Tenants made live again.
    pub tenants: Vec<String>,
    /// The generations each scope was at (`gateway@3`, `acme@5`): what was
    /// restored.
    pub restored_from: Vec<String>,
    /// Recorded generations forgotten because their tables were gone.
    pub forgotten: Vec<u64>,
    /// The attach mode actually used (`native` or `generic`).
    pub mode: Option<String>,
    /// Things the operator should know (attach options that were not recorded).
    pub warnings: Vec<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The failure's exit code (see [`crate::exit`]).
    pub exit_code: Option<i32>,
}

impl Restored {
    fn new(iface: &str, outcome: RestoreOutcome) -> Restored {
        Restored {
            iface: iface.to_owned(),
            outcome,
            generation: None,
            tenants: Vec::new(),
            restored_from: Vec::new(),
            forgotten: Vec::new(),
            mode: None,
            warnings: Vec::new(),
            error: None,
            exit_code: None,
        }
    }
}

impl AttachRecord {
    /// The options recorded.
    pub fn options(&self) -> Result<AttachOptions, ControlError> {
        let mode = match self.mode.as_str() {
            "auto" => AttachMode::Auto,
            "native" => AttachMode::Native,
            "generic" => AttachMode::Generic,
            other => {
                return Err(ControlError::State(format!(
                    "attach.json names an unknown attach mode {other:?}"
                )));
            }
        };
        Ok(AttachOptions {
            mode,
            malformed: self.malformed,
            pool_cells: self.pool_cells,
            tenant_slots: self.tenant_slots,
            counter_slots: self.counter_slots,
            source_buckets: self.source_buckets,
        })
    }
}

impl Gateway {
    /// After a reboot: attaches every interface that has a journal but no
    /// attachment (only `iface`, when given) with the options it was
    /// attached with, and applies its last live state again from the
    /// journal (see the [module docs](crate::restore)). Interfaces attached
    /// already are left alone (reported as such), so running it twice
    /// changes nothing.
    ///
    /// With `iface`, a failure is the error; without, every interface is
    /// tried and a failure is reported in its [`Restored`] entry
    /// ([`RestoreOutcome::Failed`]), so one broken interface does not leave
    /// the others unfiltered.
    pub fn restore(&self, iface: Option<&str>) -> Result<Vec<Restored>, ControlError> {
        if let Some(name) = iface {
            let journals = self.state_dir().interfaces()?;
            if !journals.iter().any(|j| j == name) {
                return Err(ControlError::NotFound(format!(
                    "no journal for {name} in {}: nothing to restore",
                    self.state_dir().root().display()
                )));
            }
            return Ok(vec![self.restore_one(name)?]);
        }
        Ok(self
            .state_dir()
            .interfaces()?
            .iter()
            .map(|name| {
                self.restore_one(name).unwrap_or_else(|e| {
                    tracing::error!(iface = name.as_str(), "restore failed: {e}");
                    Restored {
                        error: Some(e.to_string()),
                        exit_code: Some(e.exit_code()),
                        ..Restored::new(name, RestoreOutcome::Failed)
                    }
                })
            })
            .collect())
    }

    fn restore_one(&self, iface: &str) -> Result<Restored, ControlError> {
        let root = self.pin_root();
        let store = self.state_dir().store(iface);
        let lock = store.lock()?;
        let point = store.restore_point()?;
        let state = store.state()?;
        let target = point
            .as_ref()
            .map_or_else(|| state.live.clone(), |p| p.live.clone());
        if self.interfaces()?.iter().any(|i| i == iface) {
            // Attached with nothing kept while the journal has something to
            // restore: a restore that was cut short after attaching. Anything
            // else attached is filtering as the journal (or an operator) says.
            let unfinished = target != Manifest::default()
                && PinnedAttachment::open(&root, iface)?
                    .kept_tables()?
                    .is_empty();
            if !unfinished {
                if point.is_some() {
                    // Obsolete: something was applied since.
                    store.clear_restore_point()?;
                }
                return Ok(Restored::new(iface, RestoreOutcome::AlreadyAttached));
            }
        }
        let files: Vec<(String, String)> = manifest_files(&store, &target)?
            .into_iter()
            .map(|(path, text)| {
                let name = std::path::Path::new(&path)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(&path)
                    .to_owned();
                (name, text)
            })
            .collect();
        if point.is_none() && target != Manifest::default() {
            store.write_restore_point(&RestorePoint {
                live: target.clone(),
            })?;
        }
        let mut done = Restored::new(iface, RestoreOutcome::Restored);
        let attached_here = if self.interfaces()?.iter().any(|i| i == iface) {
            false
        } else {
            let opts = match store.attach_options()? {
                Some(r) => r.options()?,
                None => {
                    done.warnings.push(format!(
                        "{iface}: how it was attached was not recorded (attached by an older \
                         fluxgate); attached with the defaults (mode auto, malformed drop, \
                         default pool); `fluxgate detach` and `load` to change them"
                    ));
                    AttachOptions::default()
                }
            };
            let attached = self.attach(iface, opts)?;
            done.mode = Some(attached.mode);
            true
        };
        let mut it = Interface::open_restoring(&root, store.clone(), self.netns(), iface, lock)?;
        match restore_live(&mut it, &target, files, &mut done) {
            Ok(()) => {
                store.clear_restore_point()?;
                Ok(done)
            }
            Err(e) => {
                if attached_here {
                    // Leave it as the reboot did (unattached), journal intact,
                    // for a later restore; never half-restored.
                    if let Err(undo) = PinnedAttachment::open(&root, iface).and_then(|p| p.detach())
                    {
                        tracing::warn!(iface, "cannot detach again: {undo}");
                    }
                }
                Err(e)
            }
        }
    }
}

/// Applies the files of `target` to a freshly attached `it` as a new
/// generation, then forgets the records whose tables are gone.
fn restore_live(
    it: &mut Interface,
    target: &Manifest,
    files: Vec<(String, String)>,
    done: &mut Restored,
) -> Result<(), ControlError> {
    let mut from: Vec<String> = Vec::new();
    from.extend(target.global.map(|g| format!("gateway@{g}")));
    from.extend(
        target
            .tenants
            .iter()
            .map(|(n, t)| format!("{n}@{}", t.table)),
    );
    if !files.is_empty() {
        let label = it
            .store
            .record(it.state.live_generation)?
            .map_or_else(|| "the journal".into(), |r| r.source);
        let source = RulesetSource::files(label.display().to_string(), files);
        // Not an outcome for the tenants (their rules are what they were
        // before the reboot): nothing goes to their pages or webhooks.
        let applied = it.apply_unrecorded(
            &source,
            // The journal's files as they were, all or nothing: a restore
            // never brings back only some tenants.
            &ApplyOptions {
                reason: "restore".into(),
                atomic: true,
                ..ApplyOptions::default()
            },
        )?;
        done.generation = Some(applied.generation);
    }
    let kept = it.pinned.kept_tables()?;
    let live = it.state.live.clone();
    done.forgotten = it.forget_unloaded_records(&kept, &live)?;
    done.tenants = live.tenants.keys().cloned().collect();
    done.restored_from = from;
    it.log(
        "restored",
        None,
        format!(
            "attached again and made live what was live before ({}); generation(s) {} forgotten: \
             their tables did not survive",
            list_or_none(&done.restored_from),
            list_or_none(
                &done
                    .forgotten
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
            )
        ),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_attach_record_restores_with_the_default_slots() {
        // attach.json as written before tenant and counter slots were chosen.
        let old = r#"{"mode":"generic","malformed":"pass","pool_cells":8192}"#;
        let record: AttachRecord = serde_json::from_str(old).expect("older attach.json");
        let opts = record.options().expect("options");
        assert_eq!(
            (opts.pool_cells, opts.tenant_slots, opts.counter_slots),
            (Some(8192), None, None)
        );
        // And what is recorded now comes back as it was.
        let now = AttachRecord {
            counter_slots: Some(64),
            tenant_slots: Some(70_000),
            source_buckets: Some(1000),
            ..record
        };
        let text = serde_json::to_string(&now).expect("json");
        let back: AttachRecord = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.options().expect("options").counter_slots, Some(64));
        assert_eq!(back.options().expect("options").source_buckets, Some(1000));
        assert_eq!(back, now);
    }
}
