//! How the controller judges a wave from the gateways' reports, and the
//! desired state that rolls a gateway back.

use super::{
    FleetError,
    controller::Controller,
    model::{Before, Desired, IfaceDesired, Outcome, Realized, Rollout},
};

/// What a step of the driver found.
pub(super) enum Verdict {
    /// Some have not reported yet.
    Pending,
    /// Every one realized it.
    Done,
    /// One failed: why.
    Failed(String),
}

impl Controller {
    /// Whether every gateway of `gateways` realized its desired state (for
    /// a rollback: rolled back), one failed, or some are still at it.
    pub(super) async fn judge(
        &self,
        r: &Rollout,
        gateways: &[String],
        rolling_back: bool,
    ) -> Result<Verdict, FleetError> {
        let snap = self.store().snapshot().await?;
        let (registrations, statuses) = (&snap.registrations, &snap.statuses);
        let mut pending = false;
        for gw in gateways {
            let Some((desired, desired_rev)) = snap.desired.get(gw).cloned() else {
                return Ok(Verdict::Failed(format!("{gw}: its desired state is gone")));
            };
            if desired.rollout.as_deref() != Some(r.id.as_str()) {
                return Ok(Verdict::Failed(format!(
                    "{gw}: its desired state was changed by someone else ({:?})",
                    desired.rollout
                )));
            }
            let alive = registrations.contains_key(gw);
            let status = statuses
                .get(gw)
                .filter(|s| s.desired_revision >= desired_rev);
            match status {
                Some(s) => {
                    if let Some(why) = failure(s, &desired) {
                        return Ok(Verdict::Failed(format!("{gw}: {why}")));
                    }
                }
                None if !alive && !rolling_back => {
                    return Ok(Verdict::Failed(format!(
                        "{gw} lost its lease (its agent died or lost etcd) before realizing the change"
                    )));
                }
                None => pending = true,
            }
        }
        Ok(if pending {
            Verdict::Pending
        } else {
            Verdict::Done
        })
    }

    /// The gateways of `gateways` that have not reported their desired state.
    pub(super) async fn pending(
        &self,
        _r: &Rollout,
        gateways: &[String],
    ) -> Result<Vec<String>, FleetError> {
        let snap = self.store().snapshot().await?;
        let statuses = &snap.statuses;
        let mut out = Vec::new();
        for gw in gateways {
            let rev = snap.desired.get(gw).map_or(0, |(_, rev)| *rev);
            if statuses.get(gw).is_none_or(|s| s.desired_revision < rev) {
                out.push(gw.clone());
            }
        }
        Ok(out)
    }
}

/// The desired state that rolls `before`'s gateway back: a flip to the
/// generation it had, or, for a classifier patch, each moved tenant back on
/// the version `status` says it had.
pub(super) fn rollback_desired(
    r: &Rollout,
    before: &Before,
    status: Option<&Realized>,
    why: &str,
) -> Desired {
    let old = before.desired.clone().unwrap_or_default();
    Desired {
        rollout: Some(r.id.clone()),
        interfaces: before
            .generations
            .iter()
            .map(|(iface, g)| {
                let had = old.interfaces.get(iface);
                let reason = format!("fleet rollout {} rolled back: {why}", r.id);
                let want = match r.program {
                    None => IfaceDesired {
                        ruleset: had.and_then(|d| d.ruleset.clone()),
                        tenants: r.tenants.clone(),
                        rollback_to: Some(*g),
                        reason,
                        ..IfaceDesired::default()
                    },
                    Some(_) => IfaceDesired {
                        ruleset: had.and_then(|d| d.ruleset.clone()),
                        tenants: had.map(|d| d.tenants.clone()).unwrap_or_default(),
                        classifier_back: Some(
                            status
                                .and_then(|s| s.interfaces.get(iface))
                                .and_then(|i| i.classifier.as_ref())
                                .map(|c| c.before.clone())
                                .unwrap_or_default(),
                        ),
                        reason,
                        ..IfaceDesired::default()
                    },
                };
                (iface.clone(), want)
            })
            .collect(),
    }
}

/// Why `s` says the desired state failed, if it does.
fn failure(s: &Realized, desired: &Desired) -> Option<String> {
    for iface in desired.interfaces.keys() {
        let Some(i) = s.interfaces.get(iface) else {
            return Some(format!("{iface}: not served by its agent"));
        };
        if !i.outcome.ok() {
            let what = match i.outcome {
                Outcome::CanaryRolledBack => "canary rolled back",
                Outcome::Failed => "failed",
                _ => "not realized",
            };
            return Some(format!(
                "{iface}: {what}: {}",
                i.last_error.clone().unwrap_or_default()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_canary_is_a_failure_and_unchanged_is_success() {
        let mut s = Realized::default();
        let d = Desired {
            rollout: Some("r1".into()),
            interfaces: [("eth1".to_owned(), IfaceDesired::default())].into(),
        };
        assert!(failure(&s, &d).is_some(), "interface missing");
        s.interfaces.insert("eth1".into(), Default::default());
        assert!(failure(&s, &d).is_some(), "pending");
        for (o, ok) in [
            (Outcome::Applied, true),
            (Outcome::Unchanged, true),
            (Outcome::RolledBack, true),
            (Outcome::CanaryRolledBack, false),
            (Outcome::Failed, false),
        ] {
            s.interfaces.get_mut("eth1").expect("eth1").outcome = o.clone();
            assert_eq!(failure(&s, &d).is_none(), ok, "{o:?}");
        }
    }
}
