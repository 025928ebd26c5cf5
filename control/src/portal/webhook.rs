//! Webhooks: every outcome that concerns a tenant (applied, refused, rolled
//! back) is POSTed as JSON to the URL the operator gave that tenant in the
//! tokens file.
//!
//! The status server follows each interface's outcomes log
//! ([`crate::outcomes`]) from a thread per tenant with a webhook: changes
//! never wait for a receiver (they only append a line), and one receiver
//! that hangs delays only its own tenant's notifications. The log is the
//! queue (bounded, [`crate::outcomes::MAX_BYTES`]); a thread holds at most
//! [`BATCH`] outcomes in memory. Delivery is in order and once per outcome:
//! each is retried ([`ATTEMPTS`] times, backing off up to 30 s) until the
//! receiver answers 2xx, then its number is recorded (`webhooks/<tenant>.seq`
//! in the interface's state directory) before the next is sent. After a
//! restart of the server, an outcome whose delivery was under way may be
//! sent again: every POST carries its id (`X-Fluxgate-Delivery`, `id`) for
//! the receiver to spot it. One that still fails after every attempt is
//! logged and skipped. Outcomes from before a webhook was configured are
//! not sent. Redirects are not followed, so a receiver cannot bounce the
//! gateway to another address.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;

use super::{tokens::TokensFile, words};
use crate::{
    Cancel, ControlError, Gateway,
    outcomes::{Outcome, OutcomeKind, OutcomeLog},
};

/// Outcomes read into memory at once per tenant.
pub const BATCH: usize = 64;
/// Attempts per notification.
pub const ATTEMPTS: u32 = 8;
/// Longest a receiver may take to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one POST may take in all.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a webhook receives.
#[derive(Clone, Debug, Serialize)]
pub struct Notification {
    /// `<iface>:<seq>`: the same for every attempt of one notification.
    pub id: String,
    /// Interface.
    pub iface: String,
    /// Number in the interface's outcomes log.
    pub seq: u64,
    /// The tenant notified.
    pub tenant: String,
    /// `applied`, `refused`, `preflight-refused`, `canary-rolled-back`,
    /// `rolled-back`.
    pub outcome: OutcomeKind,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The generation concerned.
    pub generation: u64,
    /// In plain words, as the tenant's page says it.
    pub text: String,
    /// Why (the tenant's own diagnostics, its regression).
    pub details: Vec<String>,
    /// Who made the change.
    pub who: String,
    /// The reason given.
    pub reason: String,
}

impl Notification {
    /// The notification of `o` for `tenant`.
    pub fn of(iface: &str, tenant: &str, o: &Outcome) -> Notification {
        let (text, details) = words::describe(o, Some(tenant));
        Notification {
            id: format!("{iface}:{}", o.seq),
            iface: iface.to_owned(),
            seq: o.seq,
            tenant: tenant.to_owned(),
            outcome: o.kind,
            at: o.at,
            generation: o.generation,
            text,
            details,
            who: o.who.clone(),
            reason: o.reason.clone(),
        }
    }
}

/// Whether `o` is sent to `tenant`: it concerns the tenant, and changed (or
/// refused to change) something.
pub fn notifies(o: &Outcome, tenant: &str) -> bool {
    o.kind.notifies() && o.concerns(tenant)
}

/// Follows the outcomes logs and posts webhooks.
pub struct Notifier {
    gateway: Gateway,
    tokens: Arc<TokensFile>,
    /// Interfaces seen when the notifier started: a tenant without a cursor
    /// there starts at the log's end; on an interface attached later, at
    /// its beginning.
    initial: HashSet<String>,
    agent: ureq::Agent,
}

impl Notifier {
    /// A notifier for `gateway`'s interfaces and `tokens`' webhooks. Every
    /// tenant with a webhook and no cursor yet gets one at the end of each
    /// log now: what happened before is not sent.
    pub fn new(gateway: &Gateway, tokens: Arc<TokensFile>) -> Result<Notifier, ControlError> {
        let initial: HashSet<String> = gateway.interfaces()?.into_iter().collect();
        let n = Notifier {
            gateway: gateway.clone(),
            tokens,
            initial,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(CONNECT_TIMEOUT)
                .timeout(POST_TIMEOUT)
                .redirects(0)
                .build(),
        };
        let hooks = n.tokens.current()?.webhooks().clone();
        for iface in &n.initial {
            for tenant in hooks.keys() {
                n.cursor(iface, tenant)?;
            }
        }
        Ok(n)
    }

    fn cursor_path(&self, iface: &str, tenant: &str) -> PathBuf {
        self.gateway
            .state_dir()
            .store(iface)
            .dir()
            .join("webhooks")
            .join(format!("{tenant}.seq"))
    }

    /// The last outcome delivered to `tenant` on `iface` (created at the
    /// log's end, or its start on an interface attached later, when absent).
    fn cursor(&self, iface: &str, tenant: &str) -> Result<u64, ControlError> {
        let path = self.cursor_path(iface, tenant);
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|_| ControlError::State(format!("{} is corrupt", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let start = if self.initial.contains(iface) {
                    OutcomeLog::of(&self.gateway.state_dir().store(iface)).last_seq()?
                } else {
                    0
                };
                self.set_cursor(iface, tenant, start)?;
                Ok(start)
            }
            Err(e) => Err(ControlError::State(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    fn set_cursor(&self, iface: &str, tenant: &str, seq: u64) -> Result<(), ControlError> {
        crate::store::write_bytes(
            &self.cursor_path(iface, tenant),
            format!("{seq}\n").as_bytes(),
        )
    }

    /// Runs until `stop` is cancelled: one thread per tenant with a webhook.
    pub fn run(&self, stop: &Cancel) {
        let running: Mutex<HashSet<String>> = Mutex::default();
        std::thread::scope(|scope| {
            while !stop.is_cancelled() {
                let hooks = self
                    .tokens
                    .current()
                    .map(|s| s.webhooks().clone())
                    .unwrap_or_default();
                for tenant in hooks.keys() {
                    let new = running.lock().is_ok_and(|mut r| r.insert(tenant.clone()));
                    if new {
                        let tenant = tenant.clone();
                        scope.spawn(move || self.follow(&tenant, stop));
                    }
                }
                sleep_unless(Duration::from_secs(1), stop);
            }
        });
    }

    /// Delivers `tenant`'s notifications, in order, until `stop`.
    fn follow(&self, tenant: &str, stop: &Cancel) {
        while !stop.is_cancelled() {
            let url = self
                .tokens
                .current()
                .ok()
                .and_then(|s| s.webhooks().get(tenant).cloned());
            let mut sent = 0;
            if let Some(url) = url {
                match self.deliver_pending(tenant, &url, stop) {
                    Ok(n) => sent = n,
                    Err(e) => tracing::warn!(tenant, "webhook: {e}"),
                }
            }
            if sent == 0 {
                sleep_unless(Duration::from_millis(300), stop);
            }
        }
    }

    /// Sends what `tenant` has not been sent yet on every interface (at
    /// most [`BATCH`] per interface); how many were handled.
    fn deliver_pending(
        &self,
        tenant: &str,
        url: &str,
        stop: &Cancel,
    ) -> Result<usize, ControlError> {
        let mut handled = 0;
        for iface in self.gateway.interfaces()? {
            let after = self.cursor(&iface, tenant)?;
            let log = OutcomeLog::of(&self.gateway.state_dir().store(&iface));
            let pending: Vec<Outcome> = log.read_after(after)?.into_iter().take(BATCH).collect();
            for o in pending {
                if stop.is_cancelled() {
                    return Ok(handled);
                }
                if notifies(&o, tenant) {
                    let n = Notification::of(&iface, tenant, &o);
                    if let Err(e) = self.post(url, &n, stop) {
                        if stop.is_cancelled() {
                            return Ok(handled);
                        }
                        tracing::error!(
                            tenant,
                            id = n.id,
                            "webhook: giving up after {ATTEMPTS} attempts: {e}"
                        );
                    }
                }
                self.set_cursor(&iface, tenant, o.seq)?;
                handled += 1;
            }
        }
        Ok(handled)
    }

    /// POSTs `n`, retrying with backoff; `Err` after [`ATTEMPTS`] failures.
    fn post(&self, url: &str, n: &Notification, stop: &Cancel) -> Result<(), String> {
        let body = serde_json::to_string(n).map_err(|e| e.to_string())?;
        let mut wait = Duration::from_millis(500);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self
                .agent
                .post(url)
                .set("Content-Type", "application/json")
                .set("X-Fluxgate-Delivery", &n.id)
                .send_string(&body)
            {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            tracing::debug!(id = n.id, attempt, "webhook failed: {last}");
            if attempt < ATTEMPTS {
                sleep_unless(wait, stop);
                if stop.is_cancelled() {
                    return Err("stopped".into());
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
        Err(last)
    }
}

fn sleep_unless(d: Duration, stop: &Cancel) {
    let until = std::time::Instant::now() + d;
    while !stop.is_cancelled() {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_passes_are_not_sent_and_other_tenants_changes_are_not_either() {
        let mut o = Outcome {
            seq: 3,
            at: 0,
            generation: 2,
            kind: OutcomeKind::Applied,
            tenants: vec!["acme".into()],
            gateway_wide: false,
            who: "root".into(),
            reason: "r".into(),
            why: Vec::new(),
            cause_tenant: None,
            rules: Default::default(),
        };
        assert!(notifies(&o, "acme"));
        assert!(!notifies(&o, "globex"));
        o.gateway_wide = true;
        assert!(notifies(&o, "globex"));
        o.kind = OutcomeKind::CanaryPassed;
        assert!(!notifies(&o, "acme"));
        let n = Notification::of(
            "eth1",
            "acme",
            &Outcome {
                kind: OutcomeKind::Applied,
                ..o
            },
        );
        assert_eq!(n.id, "eth1:3");
    }
}
