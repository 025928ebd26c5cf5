//! Requests on a rollout besides driving it: `fleet pause|resume|abort`,
//! and reading rollouts.

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::{
    FleetError,
    controller::Controller,
    model::{Request, Rollout, RolloutState},
    store::{FleetStore, encode},
};

impl Controller {
    /// Sets a request for whoever drives rollout `id` (or, with no driver,
    /// acts on it here): see [`pause`] and [`abort`].
    async fn request(&self, id: &str, req: Request) -> Result<Rollout, FleetError> {
        loop {
            let (mut r, rev) = self.read(id).await?;
            if r.state.finished() {
                return Err(FleetError::Refused(format!(
                    "rollout {id} is already {:?}",
                    r.state
                )));
            }
            match &req {
                Request::Pause if r.state == RolloutState::Running => {
                    r.state = RolloutState::Paused;
                    r.history
                        .push(self.step("paused", format!("during wave {}", r.wave + 1)));
                }
                Request::Pause => return Ok(r),
                Request::Abort(why) => {
                    if r.state == RolloutState::RollingBack {
                        return Ok(r);
                    }
                    r.state = RolloutState::RollingBack;
                    r.halt_reason = Some(format!("aborted: {why}"));
                    r.history
                        .push(self.step("halted", format!("aborted: {why}")));
                }
            }
            r.request = None;
            if self.commit(&r, rev, Vec::new()).await? {
                return Ok(r);
            }
        }
    }
}

/// Rollout `id` and its revision.
pub async fn read_rollout(store: &FleetStore, id: &str) -> Result<(Rollout, i64), FleetError> {
    super::check_name("rollout", id)?;
    store
        .get_json(&store.keys.rollout(id))
        .await?
        .ok_or_else(|| FleetError::NotFound(format!("no rollout {id}")))
}

/// The fleet's unfinished rollout, if any.
pub async fn active(store: &FleetStore) -> Result<Option<String>, FleetError> {
    Ok(store
        .get_raw(&store.keys.active())
        .await?
        .map(|(v, _)| String::from_utf8_lossy(&v).into_owned()))
}

/// `fleet pause` when no controller drives rollout `id` (this one holds
/// the lock): it is `paused` at once. While another drives it, use
/// [`send_request`] instead: the driver pauses before its next wave.
pub async fn pause(controller: &Controller, id: &str) -> Result<Rollout, FleetError> {
    controller.request(id, Request::Pause).await
}

/// `fleet abort` when no controller drives rollout `id` (this one holds
/// the lock): halts it and drives its rollback. While another drives it,
/// use [`send_request`] instead.
pub async fn abort(controller: &Controller, id: &str, why: &str) -> Result<Rollout, FleetError> {
    controller
        .request(id, Request::Abort(why.to_owned()))
        .await?;
    controller.drive(id).await
}

/// Asks the controller driving rollout `id` to pause (before its next
/// wave) or abort, without taking the lock: a compare-and-swap on the
/// record.
pub async fn send_request(store: &FleetStore, id: &str, req: Request) -> Result<(), FleetError> {
    loop {
        let (mut r, rev) = read_rollout(store, id).await?;
        if r.state != RolloutState::Running {
            return Err(FleetError::Refused(format!(
                "rollout {id} is {:?}, not running",
                r.state
            )));
        }
        r.request = Some(req.clone());
        let key = store.keys.rollout(id);
        let resp = store
            .client
            .kv_client()
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, rev)])
                    .and_then([TxnOp::put(key.as_str(), encode(&r), None)]),
            )
            .await?;
        if resp.succeeded() {
            return Ok(());
        }
    }
}

/// `fleet resume`: a paused (or orphaned running) rollout goes on.
pub async fn resume(controller: &Controller, id: &str) -> Result<Rollout, FleetError> {
    loop {
        let (mut r, rev) = controller.read(id).await?;
        if r.state != RolloutState::Paused {
            break;
        }
        r.state = RolloutState::Running;
        r.history
            .push(controller.step("resumed", format!("at wave {}", r.wave + 1)));
        if controller.commit(&r, rev, Vec::new()).await? {
            break;
        }
    }
    controller.drive(id).await
}

/// `fleet rollback [--tenant T]`: undoes the fleet's newest rollout, which
/// must be `done`, on every gateway it changed — each flips back to the
/// generation it had before (only tenant `tenant`'s table, when given) — as
/// a new rollout record that starts `rolling-back`, driven to its end here.
pub async fn rollback_last(
    controller: &Controller,
    tenant: Option<&str>,
    reason: &str,
) -> Result<Rollout, FleetError> {
    let store = controller.store();
    if let Some(id) = active(store).await? {
        return Err(FleetError::Busy(format!(
            "rollout {id} is unfinished: abort it instead"
        )));
    }
    let Some((last, _)) = store.rollouts().await?.pop() else {
        return Err(FleetError::NotFound("no rollout to roll back".into()));
    };
    if last.state != RolloutState::Done {
        return Err(FleetError::Refused(format!(
            "the newest rollout, {}, is {:?}: only a done rollout is rolled back",
            last.id, last.state
        )));
    }
    if let Some(t) = tenant {
        super::check_name("tenant", t)?;
    }
    let why = format!("rollback of {}: {reason}", last.id);
    let id = format!("r{}", super::now_ms());
    let rollout = Rollout {
        id: id.clone(),
        label: format!("rollback of {}", last.id),
        reason: reason.to_owned(),
        tenants: tenant.map_or_else(|| last.tenants.clone(), |t| vec![t.to_owned()]),
        canary_ms: None,
        state: RolloutState::RollingBack,
        request: None,
        rollback_written: false,
        halt_reason: Some(why.clone()),
        history: vec![controller.step("started", why)],
        ..last
    };
    let keys = &store.keys;
    let key = keys.rollout(&id);
    let resp = store
        .client
        .kv_client()
        .txn(
            Txn::new()
                .when([
                    Compare::version(keys.active(), CompareOp::Equal, 0),
                    Compare::version(key.as_str(), CompareOp::Equal, 0),
                    controller.holding(),
                ])
                .and_then([
                    TxnOp::put(key.as_str(), encode(&rollout), None),
                    TxnOp::put(keys.active(), id.as_bytes().to_vec(), None),
                ]),
        )
        .await?;
    if !resp.succeeded() {
        return Err(FleetError::Busy(
            "another rollout started meanwhile, or this controller lost its lock".into(),
        ));
    }
    controller.drive(&id).await
}
