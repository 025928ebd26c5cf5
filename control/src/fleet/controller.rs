//! The rollout controller (`fluxgate fleet rollout|resume|pause|abort|rollback`).
//!
//! A [`Controller`] holds the fleet's `lock` key under its own lease: a
//! second controller gets [`FleetError::Busy`], and the lock frees itself
//! when a killed controller's lease expires. Every step is one etcd
//! transaction that compares the rollout record's `mod_revision` (and that
//! the lock is still this controller's) before writing the record and the
//! desired states it changes together, so a controller killed at any point
//! leaves a record from which [`Controller::drive`] (another process, `fleet
//! resume`) goes on to the same outcome.
//!
//! Driving a rollout, step by step:
//! 1. `running`, wave `i` not written: every gateway of the wave must be
//!    registered and report a status; its desired state and live
//!    generations are kept in the record (`before`), its new desired state
//!    written — all in one transaction;
//! 2. `running`, wave `i` written: wait until every gateway of it reports
//!    having handled its desired revision with success; then the next wave
//!    (or `done`). Any failure — refused, preflight, canary rolled back, a
//!    lost lease, the wave deadline — halts: `rolling-back` with the reason;
//! 3. `rolling-back`: every gateway the rollout wrote gets a desired state
//!    that rolls it back to the generation it had (a local flip); once they
//!    report it (or the deadline passes, for agents that are gone: they roll
//!    back when they return), `rolled-back`.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::{
    FleetError,
    model::{
        Before, ClassifierDesired, Desired, IfaceDesired, Outcome, Realized, Request, Rollout,
        RolloutState, Step,
    },
    now_ms,
    store::{FleetStore, encode, select},
    waves::{WaveSize, plan},
};
use crate::RulesetSource;

pub use super::requests::{
    abort, active, pause, read_rollout, resume, rollback_last, send_request,
};

/// What a rollout changes.
#[derive(Clone, Debug)]
pub enum Change {
    /// A ruleset (uploaded to etcd first).
    Ruleset(RulesetSource),
    /// A classifier program patch: program `program` of ELF `object`
    /// staged (preflighted) on each gateway and made to serve the tenants.
    Classifier {
        /// The object file's bytes.
        object: Vec<u8>,
        /// The XDP program in it.
        program: String,
        /// Where it came from.
        label: String,
    },
}

/// What to roll out.
#[derive(Clone, Debug)]
pub struct RolloutOptions {
    /// The change.
    pub change: Change,
    /// Wave sizes (cumulative; the last 100%).
    pub waves: Vec<WaveSize>,
    /// Only gateways whose labels match all of these.
    pub selector: BTreeMap<String, String>,
    /// Only these tenants change (empty: the whole ruleset).
    pub tenants: Vec<String>,
    /// A local canary of this length on every gateway.
    pub canary: Option<Duration>,
    /// Why (in every gateway's history and the rollout's).
    pub reason: String,
    /// How long one wave may take (default: 60 s plus the canary).
    pub wave_deadline: Option<Duration>,
}

/// Most gateways in one wave: a wave's desired states are written in one
/// transaction, and etcd allows 128 operations in one by default.
pub const MAX_WAVE: usize = 100;

/// How often the controller looks at the gateways' status while waiting.
pub const POLL: Duration = Duration::from_millis(100);

/// A controller holding the fleet's lock.
pub struct Controller {
    store: FleetStore,
    id: String,
    lease: i64,
    keepalive: tokio::task::JoinHandle<()>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

/// What a step of the driver found.
enum Verdict {
    Pending,
    Done,
    Failed(String),
}

impl Controller {
    /// Takes the fleet's lock under a lease of `ttl` (kept alive while this
    /// value lives), or fails with [`FleetError::Busy`] naming the holder.
    pub async fn acquire(store: FleetStore, ttl: Duration) -> Result<Controller, FleetError> {
        let id = format!(
            "{}@{}:{}",
            crate::host::who(),
            hostname(),
            std::process::id()
        );
        let mut lease_client = store.client.lease_client();
        let lease = lease_client
            .grant(ttl.as_secs().max(1) as i64, None)
            .await?
            .id();
        let key = store.keys.lock();
        let resp = store
            .client
            .kv_client()
            .txn(
                Txn::new()
                    .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.as_str(),
                        id.as_bytes().to_vec(),
                        Some(PutOptions::new().with_lease(lease)),
                    )]),
            )
            .await?;
        if !resp.succeeded() {
            let _ = lease_client.revoke(lease).await;
            let holder = store
                .get_raw(&key)
                .await?
                .map(|(v, _)| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            return Err(FleetError::Busy(format!(
                "controller {holder} drives this fleet (its lock frees itself when its lease expires)"
            )));
        }
        let period = Duration::from_millis((ttl.as_millis() as u64 / 3).max(300));
        // Keeps the lease alive, opening the keep-alive stream again after
        // etcd comes back; ends when the lease is gone (the lock with it:
        // every later step's compare then fails).
        let keepalive = tokio::spawn(async move {
            loop {
                match lease_client.keep_alive(lease).await {
                    Ok((mut keeper, mut stream)) => loop {
                        tokio::time::sleep(period).await;
                        if keeper.keep_alive().await.is_err() {
                            break;
                        }
                        match tokio::time::timeout(period, stream.message()).await {
                            Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                            Ok(Ok(Some(_))) => return,
                            _ => break,
                        }
                    },
                    Err(etcd_client::Error::LeaseKeepAliveError(_)) => return,
                    Err(_) => tokio::time::sleep(period).await,
                }
            }
        });
        Ok(Controller {
            store,
            id,
            lease,
            keepalive,
        })
    }

    /// Like [`Controller::acquire`], retrying until `wait` has passed (a
    /// killed controller's lock frees itself when its lease expires).
    pub async fn acquire_waiting(
        store: FleetStore,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Controller, FleetError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match Controller::acquire(store.clone(), ttl).await {
                Err(FleetError::Busy(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => return other,
            }
        }
    }

    /// Frees the lock now.
    pub async fn release(self) -> Result<(), FleetError> {
        self.store.client.lease_client().revoke(self.lease).await?;
        Ok(())
    }

    /// The store it drives.
    pub fn store(&self) -> &FleetStore {
        &self.store
    }

    /// This controller's name (`user@host:pid`), as in the history.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Uploads the ruleset, picks the gateways and their waves, and records
    /// a new `running` rollout as the fleet's active one (refused while
    /// another is unfinished). Drive it with [`Controller::drive`].
    pub async fn start(&self, opts: &RolloutOptions) -> Result<Rollout, FleetError> {
        let keys = &self.store.keys;
        if let Some((active, _)) = self.store.get_raw(&keys.active()).await? {
            return Err(FleetError::Busy(format!(
                "rollout {} is unfinished: resume or abort it first",
                String::from_utf8_lossy(&active)
            )));
        }
        for t in &opts.tenants {
            super::check_name("tenant", t)?;
        }
        let (ruleset, program, label) = match &opts.change {
            Change::Ruleset(source) => {
                let m = self.store.upload(source).await?;
                (m.id, None, m.label)
            }
            Change::Classifier {
                object,
                program,
                label,
            } => {
                let m = self.store.upload_program(object, program, label).await?;
                (String::new(), Some(m.id), format!("{label} ({program})"))
            }
        };
        let registrations = self.store.registrations().await?;
        let gateways = select(&registrations, &opts.selector);
        if gateways.is_empty() {
            return Err(FleetError::NotFound(format!(
                "no registered gateway matches the selector {:?}",
                opts.selector
            )));
        }
        let waves = plan(&gateways, &opts.waves);
        if let Some(w) = waves.iter().find(|w| w.len() > MAX_WAVE) {
            return Err(FleetError::Usage(format!(
                "a wave of {} gateways: at most {MAX_WAVE} (one etcd transaction writes a wave); add waves",
                w.len()
            )));
        }
        let canary_ms = opts.canary.map(|c| c.as_millis() as u64);
        let deadline = opts.wave_deadline.unwrap_or_else(|| {
            Duration::from_secs(60) + opts.canary.map_or(Duration::ZERO, |c| c * 2)
        });
        let id = format!("r{}", now_ms());
        let rollout = Rollout {
            id: id.clone(),
            ruleset: ruleset.clone(),
            program: program.clone(),
            label: label.clone(),
            reason: opts.reason.clone(),
            tenants: opts.tenants.clone(),
            canary_ms,
            wave_deadline_ms: deadline.as_millis() as u64,
            selector: opts.selector.clone(),
            waves: waves.clone(),
            wave: 0,
            state: RolloutState::Running,
            request: None,
            before: BTreeMap::new(),
            written: BTreeSet::new(),
            wave_started_ms: 0,
            rollback_written: false,
            rollback_started_ms: 0,
            halt_reason: None,
            history: vec![self.step(
                "started",
                format!(
                    "{} {} from {} to {} gateway(s) in waves {:?}: {}",
                    if program.is_some() {
                        "classifier"
                    } else {
                        "ruleset"
                    },
                    short(program.as_deref().unwrap_or(&ruleset)),
                    label,
                    gateways.len(),
                    waves.iter().map(Vec::len).collect::<Vec<_>>(),
                    opts.reason
                ),
            )],
        };
        let key = keys.rollout(&id);
        let resp = self
            .store
            .client
            .kv_client()
            .txn(
                Txn::new()
                    .when([
                        Compare::version(keys.active(), CompareOp::Equal, 0),
                        Compare::version(key.as_str(), CompareOp::Equal, 0),
                        self.holding(),
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
        tracing::info!(rollout = id, "started");
        Ok(rollout)
    }

    /// The compare that the lock is still this controller's.
    pub(super) fn holding(&self) -> Compare {
        Compare::value(
            self.store.keys.lock(),
            CompareOp::Equal,
            self.id.as_bytes().to_vec(),
        )
    }

    pub(super) fn step(&self, what: &str, detail: String) -> Step {
        Step {
            at_ms: now_ms(),
            by: self.id.clone(),
            what: what.to_owned(),
            detail,
        }
    }

    /// Rollout `id` and its revision.
    pub async fn read(&self, id: &str) -> Result<(Rollout, i64), FleetError> {
        read_rollout(&self.store, id).await
    }

    /// Writes `rollout` if its record is still at revision `rev` and this
    /// controller still holds the lock, with `ops` in the same transaction.
    /// `Ok(false)`: the record changed meanwhile (read it again).
    pub(super) async fn commit(
        &self,
        rollout: &Rollout,
        rev: i64,
        ops: Vec<TxnOp>,
    ) -> Result<bool, FleetError> {
        let keys = &self.store.keys;
        let key = keys.rollout(&rollout.id);
        let mut then = vec![TxnOp::put(key.as_str(), encode(rollout), None)];
        then.extend(ops);
        if rollout.state.finished() {
            then.push(TxnOp::delete(keys.active(), None));
        }
        let resp = self
            .store
            .client
            .kv_client()
            .txn(
                Txn::new()
                    .when([
                        Compare::mod_revision(key.as_str(), CompareOp::Equal, rev),
                        self.holding(),
                    ])
                    .and_then(then),
            )
            .await?;
        if !resp.succeeded() && !self.holds().await? {
            return Err(FleetError::Busy(
                "this controller lost the fleet's lock (its lease expired)".into(),
            ));
        }
        Ok(resp.succeeded())
    }

    async fn holds(&self) -> Result<bool, FleetError> {
        Ok(self
            .store
            .get_raw(&self.store.keys.lock())
            .await?
            .is_some_and(|(v, _)| v == self.id.as_bytes()))
    }

    /// Drives rollout `id` until it is `done`, `rolled-back` or `paused`
    /// (see the module docs) and returns its record; a finished rollout is
    /// followed by [`FleetStore::gc`]. A halted rollout is
    /// returned as such (`rolled-back`, with `halt_reason`), not as an error.
    pub async fn drive(&self, id: &str) -> Result<Rollout, FleetError> {
        let mut backoff = Duration::from_millis(250);
        loop {
            match self.advance(id).await {
                Ok(Some(r)) => {
                    if r.state.finished() {
                        // Old versions nothing refers to any more go now
                        // (under this controller's lock, as GC must run).
                        match self.store.gc().await {
                            Ok(gone) if !gone.is_empty() => {
                                tracing::info!("collected {} unused version(s)", gone.len());
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!("garbage collection failed: {e}"),
                        }
                    }
                    return Ok(r);
                }
                Ok(None) => backoff = Duration::from_millis(250),
                // etcd unreachable: the rollout waits (the gateways filter
                // on); the deadline of the wave still counts.
                Err(FleetError::Etcd(e)) => {
                    tracing::warn!(rollout = id, "etcd unreachable ({e}): waiting {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One step of [`Controller::drive`]: `Some` when the rollout stops.
    async fn advance(&self, id: &str) -> Result<Option<Rollout>, FleetError> {
        let (mut r, rev) = self.read(id).await?;
        match r.state {
            RolloutState::Done | RolloutState::RolledBack | RolloutState::Paused => {
                return Ok(Some(r));
            }
            RolloutState::Running => {
                if let Some(Request::Abort(why)) = r.request.clone() {
                    self.halt(&mut r, rev, format!("aborted: {why}")).await?;
                    return Ok(None);
                }
                let wave = r.waves.get(r.wave).cloned().unwrap_or_default();
                if wave.iter().any(|gw| !r.written.contains(gw)) {
                    if r.request == Some(Request::Pause) {
                        r.state = RolloutState::Paused;
                        r.request = None;
                        r.history
                            .push(self.step("paused", format!("before wave {}", r.wave + 1)));
                        self.commit(&r, rev, Vec::new()).await?;
                        return Ok(None);
                    }
                    self.write_wave(r, rev, &wave).await?;
                    return Ok(None);
                }
                match self.judge(&r, &wave, false).await? {
                    Verdict::Pending => {
                        if now_ms() > r.wave_started_ms + r.wave_deadline_ms {
                            let late = self.pending(&r, &wave).await?;
                            let why = format!(
                                "wave {}: {} not realized within {} ms",
                                r.wave + 1,
                                late.join(", "),
                                r.wave_deadline_ms
                            );
                            self.halt(&mut r, rev, why).await?;
                        } else {
                            tokio::time::sleep(POLL).await;
                        }
                    }
                    Verdict::Failed(why) => {
                        let why = format!("wave {}: {why}", r.wave + 1);
                        self.halt(&mut r, rev, why).await?;
                    }
                    Verdict::Done => {
                        r.history.push(self.step(
                            "realized",
                            format!("wave {}: {}", r.wave + 1, wave.join(", ")),
                        ));
                        if r.wave + 1 >= r.waves.len() {
                            r.state = RolloutState::Done;
                            r.history
                                .push(self.step("done", "every wave realized".into()));
                        } else {
                            r.wave += 1;
                        }
                        self.commit(&r, rev, Vec::new()).await?;
                    }
                }
            }
            RolloutState::RollingBack => {
                if !r.rollback_written {
                    self.write_rollback(r, rev).await?;
                    return Ok(None);
                }
                let changed: Vec<String> = r.written.iter().cloned().collect();
                let verdict = self.judge(&r, &changed, true).await?;
                let late = now_ms() > r.rollback_started_ms + r.wave_deadline_ms;
                match verdict {
                    Verdict::Pending if !late => tokio::time::sleep(POLL).await,
                    Verdict::Pending | Verdict::Failed(_) | Verdict::Done => {
                        let detail = match verdict {
                            Verdict::Done => format!("{} rolled back", changed.join(", ")),
                            Verdict::Failed(why) => {
                                format!("rollback reported a failure: {why}")
                            }
                            Verdict::Pending => format!(
                                "{} did not confirm within {} ms; each rolls back when its agent returns (its desired state says so)",
                                self.pending(&r, &changed).await?.join(", "),
                                r.wave_deadline_ms
                            ),
                        };
                        r.state = RolloutState::RolledBack;
                        r.history.push(self.step("rolled-back", detail));
                        self.commit(&r, rev, Vec::new()).await?;
                    }
                }
            }
        }
        Ok(None)
    }

    /// Step 1: the wave's desired state, and what its gateways had.
    async fn write_wave(
        &self,
        mut r: Rollout,
        rev: i64,
        wave: &[String],
    ) -> Result<(), FleetError> {
        let snap = self.store.snapshot().await?;
        let (registrations, statuses) = (&snap.registrations, &snap.statuses);
        let mut ops = Vec::new();
        let mut compares = Vec::new();
        let todo: Vec<String> = wave
            .iter()
            .filter(|gw| !r.written.contains(*gw))
            .cloned()
            .collect();
        for gw in &todo {
            let (Some(reg), Some(status)) = (registrations.get(gw), statuses.get(gw)) else {
                let why = format!(
                    "wave {}: {gw} is not registered (its agent is gone or its lease expired)",
                    r.wave + 1
                );
                return self.halt(&mut r, rev, why).await;
            };
            let current = snap.desired.get(gw).cloned();
            let generations = reg
                .interfaces
                .iter()
                .map(|i| {
                    (
                        i.clone(),
                        status.interfaces.get(i).map_or(0, |s| s.generation),
                    )
                })
                .collect();
            let had = current
                .as_ref()
                .map(|(d, _)| d.interfaces.clone())
                .unwrap_or_default();
            let desired = Desired {
                rollout: Some(r.id.clone()),
                interfaces: reg
                    .interfaces
                    .iter()
                    .map(|i| {
                        let reason = format!("fleet rollout {}: {}", r.id, r.reason);
                        let want = match &r.program {
                            None => IfaceDesired {
                                ruleset: Some(r.ruleset.clone()),
                                tenants: r.tenants.clone(),
                                canary_ms: r.canary_ms,
                                reason,
                                ..IfaceDesired::default()
                            },
                            // A classifier patch keeps the ruleset as it is.
                            Some(program) => IfaceDesired {
                                ruleset: had.get(i).and_then(|d| d.ruleset.clone()),
                                tenants: had.get(i).map(|d| d.tenants.clone()).unwrap_or_default(),
                                classifier: Some(ClassifierDesired {
                                    program: program.clone(),
                                    tenants: r.tenants.clone(),
                                }),
                                reason,
                                ..IfaceDesired::default()
                            },
                        };
                        (i.clone(), want)
                    })
                    .collect(),
            };
            let key = self.store.keys.desired(gw);
            compares.push(Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                current.as_ref().map_or(0, |(_, rev)| *rev),
            ));
            ops.push(TxnOp::put(key.as_str(), encode(&desired), None));
            r.before.insert(
                gw.clone(),
                Before {
                    desired: current.map(|(d, _)| d),
                    generations,
                },
            );
            r.written.insert(gw.clone());
        }
        r.wave_started_ms = now_ms();
        r.history.push(self.step(
            "wave",
            format!(
                "wave {}: desired state written to {}",
                r.wave + 1,
                wave.join(", ")
            ),
        ));
        if ops.len() > MAX_WAVE {
            return Err(FleetError::Refused(format!(
                "a wave of {} gateways: at most 100 per wave (etcd's transaction limit)",
                ops.len()
            )));
        }
        self.commit_with(&r, rev, compares, ops).await?;
        Ok(())
    }

    /// Step 3's writes: each changed gateway back to what it had.
    async fn write_rollback(&self, mut r: Rollout, rev: i64) -> Result<(), FleetError> {
        let mut ops = Vec::new();
        let why = r.halt_reason.clone().unwrap_or_default();
        let snap = self.store.snapshot().await?;
        for gw in &r.written {
            let Some(before) = r.before.get(gw) else {
                continue;
            };
            let desired = rollback_desired(&r, before, snap.statuses.get(gw), &why);
            ops.push(TxnOp::put(
                self.store.keys.desired(gw),
                encode(&desired),
                None,
            ));
        }
        r.rollback_written = true;
        r.rollback_started_ms = now_ms();
        r.history.push(self.step(
            "rolling-back",
            format!(
                "{} back to the generation each had",
                r.written.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
        self.commit(&r, rev, ops).await?;
        Ok(())
    }

    async fn commit_with(
        &self,
        r: &Rollout,
        rev: i64,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<bool, FleetError> {
        if compares.is_empty() {
            return self.commit(r, rev, ops).await;
        }
        // The desired states must be those read (no one else wrote them):
        // checked in the same transaction as the record.
        let keys = &self.store.keys;
        let key = keys.rollout(&r.id);
        let mut when = vec![
            Compare::mod_revision(key.as_str(), CompareOp::Equal, rev),
            self.holding(),
        ];
        when.extend(compares);
        let mut then = vec![TxnOp::put(key.as_str(), encode(r), None)];
        then.extend(ops);
        let resp = self
            .store
            .client
            .kv_client()
            .txn(Txn::new().when(when).and_then(then))
            .await?;
        if !resp.succeeded() && !self.holds().await? {
            return Err(FleetError::Busy(
                "this controller lost the fleet's lock (its lease expired)".into(),
            ));
        }
        Ok(resp.succeeded())
    }

    /// Halts: `rolling-back` with `why` (the rollback is written next).
    async fn halt(&self, r: &mut Rollout, rev: i64, why: String) -> Result<(), FleetError> {
        tracing::warn!(rollout = r.id, "halted: {why}");
        r.state = RolloutState::RollingBack;
        r.request = None;
        r.halt_reason = Some(why.clone());
        r.history.push(self.step("halted", why));
        self.commit(r, rev, Vec::new()).await?;
        Ok(())
    }

    /// Whether every gateway of `gateways` realized its desired state (for
    /// a rollback: rolled back), one failed, or some are still at it.
    async fn judge(
        &self,
        r: &Rollout,
        gateways: &[String],
        rolling_back: bool,
    ) -> Result<Verdict, FleetError> {
        let snap = self.store.snapshot().await?;
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
    async fn pending(&self, _r: &Rollout, gateways: &[String]) -> Result<Vec<String>, FleetError> {
        let snap = self.store.snapshot().await?;
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
fn rollback_desired(r: &Rollout, before: &Before, status: Option<&Realized>, why: &str) -> Desired {
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// The first 12 hex digits of a ruleset id, for people.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
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
