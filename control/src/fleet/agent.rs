//! The gateway agent (`fluxgate agent`): one long-running process per
//! gateway.
//!
//! A session: connect, grant a lease of [`AgentOptions::lease_ttl`], keep
//! it alive from a task of its own, put the [`Registration`] under it, read
//! `desired/<gw>` and watch it; each new desired revision is reconciled
//! (see [`reconcile`]) on a blocking thread, and the [`Realized`] state is
//! put under the lease. Any etcd failure ends the session: the agent logs
//! it, waits (100 ms doubling to 5 s) and starts a new one; meanwhile the
//! gateway filters on with what is live (**fail static**), and the outage is
//! counted in [`Connectivity`] once etcd is back.

use std::{collections::BTreeMap, time::Duration};

use etcd_client::{PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::{sync::watch, time::Instant};

use super::{
    EtcdOptions, FleetError, check_name,
    model::{
        Connectivity, Desired, IfaceDesired, IfaceRealized, MAX_TENANTS_SHOWN, Outcome, Realized,
        Registration,
    },
    now_ms,
    programs::{apply_patch, undo_patch},
    store::{FleetStore, encode},
};
use crate::{ApplyOptions, Cancel, ControlError, Gateway, Health, Interface, RulesetSource};

/// What an agent serves and how it reaches etcd.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The fleet.
    pub fleet: String,
    /// This gateway's name in the fleet.
    pub name: String,
    /// Its labels (`cluster=par1`, …).
    pub labels: BTreeMap<String, String>,
    /// The interfaces it serves (each attached already); empty: every
    /// attached interface.
    pub interfaces: Vec<String>,
    /// etcd.
    pub etcd: EtcdOptions,
    /// Time to live of the lease its registration and status live under:
    /// the controller sees the gateway gone this long after the agent dies.
    pub lease_ttl: Duration,
}

/// Longest wait between two reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs the agent of `gateway` until `stop` turns true (then revokes its
/// lease: the gateway leaves the fleet's view at once). Returns an error
/// only for a bad option; etcd failures are retried forever.
pub async fn run(
    gateway: Gateway,
    opts: AgentOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<(), FleetError> {
    check_name("gateway", &opts.name)?;
    let interfaces = if opts.interfaces.is_empty() {
        gateway.interfaces()?
    } else {
        opts.interfaces.clone()
    };
    if interfaces.is_empty() {
        return Err(FleetError::Usage(
            "no interface is attached: attach (and load) one before starting the agent".into(),
        ));
    }
    for iface in &interfaces {
        // Fails now, clearly, for an interface that is not attached.
        gateway.open_read(Some(iface))?;
    }
    let mut agent = Agent {
        gateway,
        opts,
        interfaces,
        realized: Realized::default(),
        handled: None,
        conn: Connectivity::default(),
    };
    agent.realized.gateway = agent.opts.name.clone();
    let mut backoff = Duration::from_millis(100);
    let mut down_since: Option<Instant> = None;
    loop {
        match agent.session(&mut stop, &mut down_since).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(
                    gateway = agent.opts.name,
                    error = %e,
                    "etcd unreachable or refused: filtering on with what is live (fail static); retrying in {backoff:?}"
                );
                agent.conn.last_error = Some(e.to_string());
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                    agent.health(false);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        if *stop.borrow() {
            return Ok(());
        }
    }
}

struct Agent {
    gateway: Gateway,
    opts: AgentOptions,
    interfaces: Vec<String>,
    realized: Realized,
    /// The desired revision handled last (this process), and its value.
    handled: Option<(i64, Desired)>,
    conn: Connectivity,
}

impl Agent {
    /// Records the link to etcd for the gateway's own eyes ([`AgentHealth`]).
    fn health(&self, connected: bool) {
        write_health(
            &self.gateway,
            &AgentHealth {
                fleet: self.opts.fleet.clone(),
                gateway: self.opts.name.clone(),
                connected,
                since_ms: now_ms(),
                reconnects: self.conn.reconnects,
                last_error: self.conn.last_error.clone(),
            },
        );
    }

    async fn session(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        down_since: &mut Option<Instant>,
    ) -> Result<(), FleetError> {
        let client = self.opts.etcd.connect().await?;
        let store = FleetStore::new(client.clone(), &self.opts.fleet)?;
        let ttl = self.opts.lease_ttl.as_secs().max(1) as i64;
        let lease = client.lease_client().grant(ttl, None).await?.id();
        let (mut keeper, mut alive) = client.lease_client().keep_alive(lease).await?;
        self.health(true);
        if let Some(since) = down_since.take() {
            self.conn.reconnects += 1;
            self.health(true);
            self.conn.last_outage_ms = Some(since.elapsed().as_millis() as u64);
            tracing::info!(
                gateway = self.opts.name,
                "etcd reachable again after {:?}: reconciling",
                since.elapsed()
            );
        }
        let registration = Registration {
            gateway: self.opts.name.clone(),
            labels: self.opts.labels.clone(),
            interfaces: self.interfaces.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            since_ms: now_ms(),
        };
        let mut kv = client.kv_client();
        let under_lease = || Some(PutOptions::new().with_lease(lease));
        kv.put(
            store.keys.gateway(&self.opts.name),
            encode(&registration),
            under_lease(),
        )
        .await?;
        // Keep the lease alive from its own task, so a long canary does not
        // let it expire; its end (etcd gone, lease lost) ends the session.
        let (lost_tx, mut lost) = tokio::sync::oneshot::channel::<String>();
        let period = Duration::from_millis((ttl as u64 * 1000 / 3).max(300));
        let keepalive = tokio::spawn(async move {
            let why = loop {
                tokio::time::sleep(period).await;
                if let Err(e) = keeper.keep_alive().await {
                    break format!("lease keep-alive: {e}");
                }
                match tokio::time::timeout(period * 2, alive.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                    Ok(Ok(Some(_))) => break "the lease expired".to_owned(),
                    Ok(Ok(None)) => break "lease keep-alive stream closed".to_owned(),
                    Ok(Err(e)) => break format!("lease keep-alive: {e}"),
                    Err(_) => break "lease keep-alive unanswered".to_owned(),
                }
            };
            let _ = lost_tx.send(why);
        });
        let _abort = AbortOnDrop(keepalive);
        let desired_key = store.keys.desired(&self.opts.name);
        let mut watch_client = client.watch_client();
        let mut start_revision;
        loop {
            let mut resp = kv.get(desired_key.as_str(), None).await?;
            start_revision = resp.header().map_or(0, |h| h.revision()) + 1;
            let desired = match resp.take_kvs().into_iter().next() {
                Some(kv) => Some((
                    super::store::decode::<Desired>(&desired_key, kv.value())?,
                    kv.mod_revision(),
                )),
                None => None,
            };
            self.handle(&store, desired).await?;
            kv.put(
                store.keys.status(&self.opts.name),
                encode(&self.realized),
                under_lease(),
            )
            .await?;
            let mut stream = watch_client
                .watch(
                    desired_key.as_str(),
                    Some(WatchOptions::new().with_start_revision(start_revision)),
                )
                .await?;
            // Wait for a change of the desired state (then read it again);
            // the watch's own messages (created, progress) carry no event.
            loop {
                tokio::select! {
                    msg = stream.message() => {
                        let msg = msg?.ok_or_else(|| FleetError::Refused("the desired-state watch closed".into()))?;
                        if msg.canceled() {
                            return Err(FleetError::Refused(format!("the desired-state watch was cancelled: {}", msg.cancel_reason())));
                        }
                        if !msg.events().is_empty() {
                            break;
                        }
                    }
                    why = &mut lost => {
                        return Err(FleetError::Refused(why.unwrap_or_else(|_| "lease keeper ended".into())));
                    }
                    _ = stop.changed() => {
                        let _ = client.lease_client().revoke(lease).await;
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Reconciles `desired` (with its revision) unless this process handled
    /// that revision already; refreshes the realized state either way.
    async fn handle(
        &mut self,
        store: &FleetStore,
        desired: Option<(Desired, i64)>,
    ) -> Result<(), FleetError> {
        let (desired, revision) = desired.unwrap_or_default();
        if self.handled.as_ref().map(|(r, _)| *r) == Some(revision) {
            self.realized.etcd = self.conn.clone();
            self.realized.updated_ms = now_ms();
            return Ok(());
        }
        // Fetch what it names first (async), then apply on a blocking thread.
        let mut sources: Sources = BTreeMap::new();
        for want in desired.interfaces.values() {
            if want.rollback_to.is_some() {
                continue;
            }
            if let Some(id) = &want.ruleset
                && !sources.contains_key(id)
            {
                let source = match store.source(id).await {
                    Ok(s) => Ok(s),
                    Err(FleetError::Etcd(e)) => return Err(FleetError::Etcd(e)),
                    Err(e) => Err(e.to_string()),
                };
                sources.insert(id.clone(), source);
            }
        }
        let mut programs: Programs = BTreeMap::new();
        for want in desired.interfaces.values() {
            if let Some(c) = &want.classifier
                && !programs.contains_key(&c.program)
            {
                let program = match store.program(&c.program).await {
                    Ok(p) => Ok(p),
                    Err(FleetError::Etcd(e)) => return Err(FleetError::Etcd(e)),
                    Err(e) => Err(e.to_string()),
                };
                programs.insert(c.program.clone(), program);
            }
        }
        let gateway = self.gateway.clone();
        let interfaces = self.interfaces.clone();
        let previous = self.realized.interfaces.clone();
        let want = desired.clone();
        let realized = tokio::task::spawn_blocking(move || {
            interfaces
                .iter()
                .map(|iface| {
                    let r = reconcile(
                        &gateway,
                        iface,
                        want.interfaces.get(iface),
                        (&sources, &programs),
                        previous.get(iface),
                    );
                    (iface.clone(), r)
                })
                .collect::<BTreeMap<_, _>>()
        })
        .await
        .map_err(|e| FleetError::Refused(format!("reconcile thread: {e}")))?;
        self.realized = Realized {
            gateway: self.opts.name.clone(),
            desired_revision: revision,
            rollout: desired.rollout.clone(),
            interfaces: realized,
            etcd: self.conn.clone(),
            updated_ms: now_ms(),
        };
        self.handled = Some((revision, desired));
        Ok(())
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Ruleset versions fetched, by id (or why not).
pub type Sources = BTreeMap<String, Result<RulesetSource, String>>;
/// Classifier patches fetched (program name, object), by id (or why not).
pub type Programs = BTreeMap<String, Result<(String, Vec<u8>), String>>;

/// Makes interface `iface` of `gateway` what `want` says (synchronous: call
/// it on a blocking thread) and reports what is live then. Idempotent:
/// content already live is not applied again (no new generation, no flip),
/// a rollback already done is not done again.
pub fn reconcile(
    gateway: &Gateway,
    iface: &str,
    want: Option<&IfaceDesired>,
    (sources, programs): (&Sources, &Programs),
    previous: Option<&IfaceRealized>,
) -> IfaceRealized {
    let mut out = IfaceRealized {
        ruleset: previous.and_then(|p| p.ruleset.clone()),
        classifier: previous.and_then(|p| p.classifier.clone()),
        ..IfaceRealized::default()
    };
    let result = (|| -> Result<(), ControlError> {
        let mut i = gateway.open(Some(iface))?;
        if !i.interrupted()?.is_empty() {
            // The agent (or a CLI) died mid-apply: back to the last whole
            // generation, then the desired state is handled as usual.
            let d = i.discard_interrupted()?;
            tracing::warn!(
                iface,
                "discarded interrupted generation(s) {:?}",
                d.discarded
            );
        }
        let before = i.state().live_generation;
        let Some(want) = want else {
            out.outcome = previous.map(|p| p.outcome.clone()).unwrap_or_default();
            return Ok(());
        };
        if let Some(to) = want.rollback_to {
            roll_back(&mut i, to, &want.tenants, &want.reason)?;
            out.outcome = Outcome::RolledBack;
            out.ruleset = want.ruleset.clone();
        } else if let Some(id) = want
            .ruleset
            .as_ref()
            // A classifier patch leaves the ruleset alone.
            .filter(|_| want.classifier.is_none() && want.classifier_back.is_none())
        {
            let source = sources
                .get(id)
                .cloned()
                .unwrap_or_else(|| Err(format!("ruleset {id} not fetched")))
                .map_err(ControlError::NotFound)?;
            if is_live(&i, &source, &want.tenants)? {
                out.outcome = Outcome::Unchanged;
            } else {
                let opts = ApplyOptions {
                    reason: want.reason.clone(),
                    tenants: want.tenants.clone(),
                    dry_run: false,
                    atomic: true,
                };
                match want.canary_ms {
                    Some(ms) => {
                        let window = Duration::from_millis(ms);
                        let health = Health {
                            window,
                            baseline: window.clamp(Duration::from_secs(1), Duration::from_secs(5)),
                            ..Health::default()
                        };
                        let outcome = i.apply_canary(&source, &opts, &health, &Cancel::new())?;
                        out.preflight_packets = outcome.applied.preflight_packets;
                        if outcome.rolled_back {
                            out.outcome = Outcome::CanaryRolledBack;
                            out.last_error = Some(format!(
                                "canary rolled back: {}",
                                outcome.reason.unwrap_or_default()
                            ));
                            return Ok(());
                        }
                    }
                    None => {
                        let applied = i.apply(&source, &opts)?;
                        out.preflight_packets = applied.preflight_packets;
                    }
                }
                out.outcome = Outcome::Applied;
            }
            out.ruleset = Some(id.clone());
        }
        if i.state().live_generation != before {
            out.previous_generation = Some(before);
        }
        if let Some(c) = &want.classifier {
            let (name, object) = programs
                .get(&c.program)
                .cloned()
                .unwrap_or_else(|| Err(format!("classifier patch {} not fetched", c.program)))
                .map_err(ControlError::NotFound)?;
            let (mut done, moved) = apply_patch(&mut i, c, &name, &object)?;
            // A patch handled again (a restart) moves nothing: keep what the
            // first time moved, for the rollback.
            if let Some(prev) = out
                .classifier
                .as_ref()
                .filter(|p| p.version == done.version)
            {
                for (t, v) in &prev.before {
                    done.before.entry(t.clone()).or_insert(*v);
                }
            }
            out.classifier = Some(done);
            out.outcome = if moved {
                Outcome::Applied
            } else {
                Outcome::Unchanged
            };
        }
        if let Some(back) = &want.classifier_back {
            undo_patch(&mut i, back)?;
            out.outcome = Outcome::RolledBack;
        }
        Ok(())
    })();
    if let Err(e) = result {
        out.outcome = Outcome::Failed;
        out.last_error = Some(format!("exit {}: {e}", e.exit_code()));
    }
    fill_live(gateway, iface, &mut out);
    out
}

/// Whether the files of `source` for `tenants` (all when empty) are exactly
/// the live ones (by name and text).
fn is_live(
    i: &Interface,
    source: &RulesetSource,
    tenants: &[String],
) -> Result<bool, ControlError> {
    let name_of = |p: &str| {
        std::path::Path::new(p)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(p)
            .to_owned()
    };
    let live: BTreeMap<String, String> = i
        .live_files()?
        .into_iter()
        .map(|(p, t)| (name_of(&p), t))
        .collect();
    let wanted: BTreeMap<String, String> = source
        .read()?
        .into_iter()
        .map(|(p, t)| (name_of(&p), t))
        .collect();
    if tenants.is_empty() {
        return Ok(live == wanted);
    }
    Ok(tenants.iter().all(|t| {
        let name = format!("{t}.fg");
        live.get(&name) == wanted.get(&name)
    }))
}

/// Rolls back to kept generation `to` (the tenants named, or everything),
/// unless that is already live.
fn roll_back(
    i: &mut Interface,
    to: u64,
    tenants: &[String],
    reason: &str,
) -> Result<(), ControlError> {
    let target = i.kept_record(to)?.manifest;
    let live = &i.state().live;
    if tenants.is_empty() || tenants.iter().any(|t| !target.tenants.contains_key(t)) {
        // A whole rollback (also when a tenant in scope is new: only a
        // whole flip empties its slot).
        if i.state().live_generation != to || *live != target {
            i.rollback(None, Some(to))?;
            i.note("fleet", format!("rolled back to {to}: {reason}"))?;
        }
        return Ok(());
    }
    let mut done = false;
    for t in tenants {
        let at = i.state().live.tenants.get(t).copied();
        if at != target.tenants.get(t).copied() {
            i.rollback(Some(t), Some(to))?;
            done = true;
        }
    }
    if done {
        i.note(
            "fleet",
            format!("rolled back {tenants:?} to {to}: {reason}"),
        )?;
    }
    Ok(())
}

/// Fills the live generation, tenants and counters (best effort: a failure
/// to read them is the last error, unless there is one already).
fn fill_live(gateway: &Gateway, iface: &str, out: &mut IfaceRealized) {
    let read = (|| -> Result<(), ControlError> {
        let i = gateway.open_read(Some(iface))?;
        let state = i.state();
        out.generation = state.live_generation;
        out.tenant_count = state.live.tenants.len();
        out.tenants = state
            .live
            .tenants
            .iter()
            .take(MAX_TENANTS_SHOWN)
            .map(|(t, r)| (t.clone(), r.table))
            .collect();
        let counters = i.pinned().counters()?.report();
        out.passed = counters.outcomes.get("passed").map_or(0, |c| c.packets);
        out.dropped = counters.outcomes.get("dropped").map_or(0, |c| c.packets);
        Ok(())
    })();
    if let Err(e) = read
        && out.last_error.is_none()
    {
        out.last_error = Some(e.to_string());
    }
}

/// The agent's link to etcd as the gateway itself sees it: written to
/// `fleet-agent.json` in the gateway's state directory at every change, so
/// the gateway shows it while etcd is unreachable (where its status in etcd
/// cannot be updated); `fluxgate serve` exports it as
/// `fluxgate_fleet_etcd_connected` and `fluxgate_fleet_etcd_reconnects_total`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    /// The fleet.
    pub fleet: String,
    /// This gateway's name in it.
    pub gateway: String,
    /// Whether the agent holds a session (lease, watch) with etcd.
    pub connected: bool,
    /// Since when (ms since the epoch).
    pub since_ms: u64,
    /// Times it lost etcd and reconnected.
    pub reconnects: u64,
    /// The last etcd error.
    pub last_error: Option<String>,
}

/// Where [`AgentHealth`] is kept.
pub fn health_path(gateway: &Gateway) -> std::path::PathBuf {
    gateway.state_dir().root().join("fleet-agent.json")
}

/// The agent's last [`AgentHealth`], if an agent ever ran for `gateway`.
pub fn read_health(gateway: &Gateway) -> Option<AgentHealth> {
    let path = health_path(gateway);
    let meta = std::fs::metadata(&path).ok()?;
    if meta.len() > 64 << 10 {
        return None;
    }
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn write_health(gateway: &Gateway, health: &AgentHealth) {
    let path = health_path(gateway);
    let tmp = path.with_extension("json.tmp");
    let written = std::fs::create_dir_all(gateway.state_dir().root())
        .and_then(|()| std::fs::write(&tmp, encode(health)))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}
