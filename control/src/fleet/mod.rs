//! Fleet rollout through etcd (feature `fleet`): a ruleset change reaches
//! every gateway of a fleet in waves, and a bad one stops at the first.
//!
//! - [`agent`]: the long-running process of one gateway (`fluxgate agent`):
//!   registers the gateway under a lease, watches its desired state, applies
//!   it through the normal pipeline ([`crate::Interface::apply`] /
//!   [`crate::Interface::apply_canary`], on blocking threads), reports what
//!   is realized under its lease. Restarted, it adopts the pinned state and
//!   applies nothing that is already live (no flip). **Fail static**: when
//!   etcd is unreachable the gateway keeps filtering with what it has; the
//!   agent retries with backoff, logs it, counts it in its status
//!   ([`model::Connectivity`]) and reconciles when etcd is back.
//! - [`store`]: rulesets in etcd (content-addressed files, one manifest per
//!   ruleset version), desired and realized state, garbage collection.
//! - [`controller`]: `fluxgate fleet rollout`: waves over the gateways a
//!   label selector picks; each wave sets desired state and waits until
//!   every gateway of it reports success within a deadline; any failure
//!   halts the rollout and rolls back every gateway already changed (a local
//!   flip to the generation it had). Every step is an etcd transaction
//!   (compare-and-swap on the rollout record's revision), the controller
//!   holds a lock under its lease, so a controller killed at any point is
//!   resumed by another (`fleet resume`) and two never drive one fleet.
//!
//! # Key layout
//!
//! Everything of fleet `F` lives under `/fluxgate/F/`:
//!
//! | key | value | written by |
//! | --- | --- | --- |
//! | `files/<sha256>` | one chunk (≤ 1 MiB) of a ruleset file, content-addressed | controller |
//! | `rulesets/<id>` | [`model::RulesetManifest`]: file name → its chunks; `id` = SHA-256 of the file list | controller |
//! | `programs/<id>` | [`model::ProgramManifest`]: a classifier patch (object chunks, program name) | controller |
//! | `gateways/<gw>` | [`model::Registration`] (labels, interfaces), under the agent's lease | agent |
//! | `status/<gw>` | [`model::Realized`], under the agent's lease | agent |
//! | `desired/<gw>` | [`model::Desired`]: ruleset per interface, tenants, canary, rollback | controller |
//! | `rollouts/<id>` | [`model::Rollout`]: waves, current wave, state, history | controller |
//! | `active` | the id of the rollout in progress | controller |
//! | `lock` | the driving controller, under its lease | controller |
//!
//! etcd refuses requests over 1.5 MiB by default: a file is stored as chunks
//! of at most [`store::CHUNK_BYTES`], so a 10k-tenant ruleset is many small
//! values, each uploaded once whatever the number of versions that share it.
//!
//! # Roles
//!
//! With etcd authentication on, a gateway `gw` gets a user whose role may
//! read `desired/gw`, `rulesets/` and `files/`, and read and write only
//! `gateways/gw` and `status/gw` (see [`roles`]): a compromised gateway
//! cannot push rules to the fleet. The controller's user may read and write
//! all of `/fluxgate/F/`.

pub mod agent;
pub mod controller;
pub mod model;
pub mod programs;
pub mod requests;
pub mod roles;
pub mod store;
pub mod waves;

use std::{path::PathBuf, time::Duration};

use etcd_client::{Client, ConnectOptions};

use crate::{ControlError, exit};

/// Why a fleet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// etcd could not be reached or refused the request.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// The local pipeline failed (apply, rollback, status).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A value in etcd is not what fluxgate wrote (or a newer format).
    #[error("{key}: {error}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with its value.
        error: String,
    },
    /// The request is malformed (a bad name, wave list or selector).
    #[error("{0}")]
    Usage(String),
    /// Something named does not exist (a ruleset, a rollout, a gateway).
    #[error("{0}")]
    NotFound(String),
    /// Another controller drives the fleet, or a rollout is already in
    /// progress.
    #[error("{0}")]
    Busy(String),
    /// The rollout halted (and rolled back what it had changed).
    #[error("rollout {id} halted: {reason}")]
    Halted {
        /// The rollout.
        id: String,
        /// Why.
        reason: String,
    },
    /// A rollout state that does not allow the request.
    #[error("{0}")]
    Refused(String),
}

/// Exit code of a halted rollout (`fluxgate fleet rollout`).
pub const HALTED: i32 = 11;

impl FleetError {
    /// The CLI's exit code for it (see [`crate::exit`]; a halted rollout is
    /// [`HALTED`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            FleetError::Etcd(_) | FleetError::Corrupt { .. } | FleetError::Refused(_) => {
                exit::FAILURE
            }
            FleetError::Control(e) => e.exit_code(),
            FleetError::Usage(_) => exit::USAGE,
            FleetError::NotFound(_) => exit::NOT_FOUND,
            FleetError::Busy(_) => exit::CONFLICT,
            FleetError::Halted { .. } => HALTED,
        }
    }
}

/// How to reach etcd: endpoints, TLS with a client certificate, a user.
#[derive(Clone, Debug, Default)]
pub struct EtcdOptions {
    /// Client URLs (`http://127.0.0.1:2379`, `https://…` with TLS).
    pub endpoints: Vec<String>,
    /// CA certificate (PEM) the server's certificate must chain to; setting
    /// it turns TLS on.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for `--client-cert-auth` servers.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// etcd user and password (authentication on). The password is never
    /// printed.
    pub user: Option<(String, String)>,
    /// Timeout of one request (default 5 s).
    pub timeout: Option<Duration>,
}

impl EtcdOptions {
    /// Plain connections to `endpoints`.
    pub fn plain(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..EtcdOptions::default()
        }
    }

    /// Connects (one attempt).
    pub async fn connect(&self) -> Result<Client, FleetError> {
        if self.endpoints.is_empty() {
            return Err(FleetError::Usage("no etcd endpoint given".into()));
        }
        let timeout = self.timeout.unwrap_or(Duration::from_secs(5));
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2).min(timeout))
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let Some((user, password)) = &self.user {
            opts = opts.with_user(user.clone(), password.clone());
        }
        if self.ca.is_some() || self.cert.is_some() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read_pem(ca)?));
            }
            if let Some((cert, key)) = &self.cert {
                tls = tls.identity(etcd_client::Identity::from_pem(
                    read_pem(cert)?,
                    read_pem(key)?,
                ));
            }
            opts = opts.with_tls(tls);
        }
        Ok(Client::connect(&self.endpoints, Some(opts)).await?)
    }
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, FleetError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| FleetError::Usage(format!("{}: {e}", path.display())))?;
    if meta.len() > 1 << 20 {
        return Err(FleetError::Usage(format!(
            "{}: larger than 1 MiB, not a PEM file",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| FleetError::Usage(format!("{}: {e}", path.display())))
}

/// A name fluxgate puts in a key (fleet, gateway, interface, label, rollout):
/// 1–64 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn check_name(what: &str, name: &str) -> Result<(), FleetError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        let shown: String = name
            .chars()
            .flat_map(char::escape_default)
            .take(64)
            .collect();
        Err(FleetError::Usage(format!(
            "{what} {shown:?}: 1-64 of letters, digits, `.`, `_`, `-`"
        )))
    }
}

/// The keys of one fleet.
#[derive(Clone, Debug)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// Keys of fleet `fleet` (a checked name).
    pub fn new(fleet: &str) -> Result<Keys, FleetError> {
        check_name("fleet", fleet)?;
        Ok(Keys {
            root: format!("/fluxgate/{fleet}/"),
        })
    }
    /// `/fluxgate/F/`.
    pub fn root(&self) -> &str {
        &self.root
    }
    /// `files/<sha>`.
    pub fn file(&self, sha: &str) -> String {
        format!("{}files/{sha}", self.root)
    }
    /// `files/`.
    pub fn files(&self) -> String {
        format!("{}files/", self.root)
    }
    /// `rulesets/<id>`.
    pub fn ruleset(&self, id: &str) -> String {
        format!("{}rulesets/{id}", self.root)
    }
    /// `rulesets/`.
    pub fn rulesets(&self) -> String {
        format!("{}rulesets/", self.root)
    }
    /// `programs/<id>`.
    pub fn program(&self, id: &str) -> String {
        format!("{}programs/{id}", self.root)
    }
    /// `programs/`.
    pub fn programs(&self) -> String {
        format!("{}programs/", self.root)
    }
    /// `gateways/<gw>`.
    pub fn gateway(&self, gw: &str) -> String {
        format!("{}gateways/{gw}", self.root)
    }
    /// `gateways/`.
    pub fn gateways(&self) -> String {
        format!("{}gateways/", self.root)
    }
    /// `status/<gw>`.
    pub fn status(&self, gw: &str) -> String {
        format!("{}status/{gw}", self.root)
    }
    /// `status/`.
    pub fn statuses(&self) -> String {
        format!("{}status/", self.root)
    }
    /// `desired/<gw>`.
    pub fn desired(&self, gw: &str) -> String {
        format!("{}desired/{gw}", self.root)
    }
    /// `desired/`.
    pub fn desireds(&self) -> String {
        format!("{}desired/", self.root)
    }
    /// `rollouts/<id>`.
    pub fn rollout(&self, id: &str) -> String {
        format!("{}rollouts/{id}", self.root)
    }
    /// `rollouts/`.
    pub fn rollouts(&self) -> String {
        format!("{}rollouts/", self.root)
    }
    /// `active`.
    pub fn active(&self) -> String {
        format!("{}active", self.root)
    }
    /// `lock`.
    pub fn lock(&self) -> String {
        format!("{}lock", self.root)
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_keys_are_plain() {
        for ok in ["gw1", "par1.a-b_c", "x"] {
            assert!(check_name("gateway", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(65), "a\u{1b}"] {
            let err = check_name("gateway", bad).expect_err(bad);
            assert!(!err.to_string().contains('\u{1b}'));
        }
        let keys = Keys::new("prod").expect("name");
        assert_eq!(keys.desired("gw1"), "/fluxgate/prod/desired/gw1");
        assert!(Keys::new("a/b").is_err());
    }
}
