//! `fluxgate agent` and `fluxgate fleet …`: thin shells over
//! `fluxgate_control::fleet` (their flags, a tokio runtime, the output).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use fluxgate_control::{
    canary::parse_duration,
    exit,
    fleet::{
        EtcdOptions, FleetError, HALTED,
        agent::{self, AgentOptions},
        controller::{self, Change, Controller, RolloutOptions, short},
        model::{Request, Rollout, RolloutState},
        store::FleetStore,
        waves::{parse_labels, parse_waves},
    },
};

use crate::{
    args::{Cli, Command},
    render,
};

/// How to reach etcd (shared by `agent` and `fleet`).
#[derive(Args, Clone, Debug)]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated.
    #[arg(
        long,
        env = "FLUXGATE_ETCD",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd: Vec<String>,
    /// The fleet (its keys live under /fluxgate/FLEET/).
    #[arg(long, env = "FLUXGATE_FLEET", default_value = "default")]
    pub fleet: String,
    /// CA certificate (PEM) of the etcd server (turns TLS on).
    #[arg(long, value_name = "PEM", env = "FLUXGATE_ETCD_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM), with --key.
    #[arg(long, value_name = "PEM", requires = "key", env = "FLUXGATE_ETCD_CERT")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM), with --cert.
    #[arg(long, value_name = "PEM", requires = "cert", env = "FLUXGATE_ETCD_KEY")]
    pub key: Option<PathBuf>,
    /// etcd user (authentication on); the password comes from
    /// FLUXGATE_ETCD_PASSWORD only, never from the command line.
    #[arg(long, env = "FLUXGATE_ETCD_USER")]
    pub user: Option<String>,
}

impl EtcdArgs {
    fn options(&self) -> EtcdOptions {
        EtcdOptions {
            endpoints: self.etcd.clone(),
            ca: self.cacert.clone(),
            cert: self.cert.clone().zip(self.key.clone()),
            user: self.user.clone().map(|u| {
                (
                    u,
                    std::env::var("FLUXGATE_ETCD_PASSWORD").unwrap_or_default(),
                )
            }),
            timeout: None,
        }
    }
}

/// `fluxgate agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// This gateway's name in the fleet.
    #[arg(long)]
    pub name: String,
    /// A label `key=value` (repeat): what selectors match.
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// An interface to serve (repeat; default: every attached one).
    #[arg(long = "iface")]
    pub interfaces: Vec<String>,
    /// Lease time to live: the fleet sees the gateway gone this long after
    /// the agent dies.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
}

/// `fluxgate fleet …`.
#[derive(Args, Debug)]
pub struct FleetArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Time to live of the controller's lock: a killed controller's lock
    /// frees itself after it.
    #[arg(long, default_value = "10s", value_parser = parse_duration, global = true)]
    pub lock_ttl: Duration,
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// Roll RULESET_DIR out in waves over the gateways the selector picks;
    /// any failure halts it and rolls back every gateway it changed.
    Rollout {
        /// Directory with gateway.fg and one TENANT.fg per tenant.
        dir: PathBuf,
        /// Cumulative wave sizes, counts or percentages; the last is 100%.
        #[arg(long, default_value = "1,25%,100%")]
        waves: String,
        /// Only gateways with this label `key=value` (repeat: all must match).
        #[arg(long = "selector", value_name = "K=V")]
        selector: Vec<String>,
        /// Only this tenant changes (repeat; `gateway`: the gateway file).
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// A local canary of this length on every gateway (e.g. 30s).
        #[arg(long, value_parser = parse_duration)]
        canary: Option<Duration>,
        /// Why (recorded in the rollout and every gateway's history).
        #[arg(long, default_value = "")]
        reason: String,
        /// Longest a wave may take (default: 60 s plus twice the canary).
        #[arg(long, value_parser = parse_duration)]
        deadline: Option<Duration>,
    },
    /// Roll a classifier program out in waves (what `upgrade stage` and
    /// `upgrade assign` do on one gateway): each gateway stages it
    /// (preflighted against its live tenants; a disagreeing program halts
    /// the rollout) and moves the tenants to it; a halt moves them back.
    Upgrade {
        /// ELF object holding the program (default: this build's).
        #[arg(long, value_name = "FILE")]
        object: Option<PathBuf>,
        /// The XDP program in it.
        #[arg(long, default_value = "fluxgate_classify")]
        program: String,
        /// Cumulative wave sizes, counts or percentages; the last is 100%.
        #[arg(long, default_value = "1,25%,100%")]
        waves: String,
        /// Only gateways with this label `key=value` (repeat: all must match).
        #[arg(long = "selector", value_name = "K=V")]
        selector: Vec<String>,
        /// Only this tenant moves to it (repeat; `gateway`: packets of no
        /// tenant); none: everyone.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// Longest a wave may take (default: 60 s).
        #[arg(long, value_parser = parse_duration)]
        deadline: Option<Duration>,
    },
    /// The fleet's gateways (registration, realized state) and its rollout
    /// in progress (or ID).
    Status {
        /// A rollout id (default: the unfinished one).
        id: Option<String>,
    },
    /// The rollouts, or one's steps.
    History {
        /// A rollout id (default: every rollout, one line each).
        id: Option<String>,
    },
    /// Stop the rollout before its next wave.
    Pause {
        /// A rollout id (default: the unfinished one).
        id: Option<String>,
    },
    /// Go on with a paused rollout, or one whose controller died.
    Resume {
        /// A rollout id (default: the unfinished one).
        id: Option<String>,
        /// Wait this long for a dead controller's lock to expire.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        wait: Duration,
    },
    /// Halt the rollout and roll back every gateway it changed.
    Abort {
        /// A rollout id (default: the unfinished one).
        id: Option<String>,
        /// Why.
        #[arg(long, default_value = "aborted by an operator")]
        reason: String,
    },
    /// Undo the newest rollout (done) on every gateway it changed: each
    /// flips back to the generation it had.
    Rollback {
        /// Only this tenant's table flips back.
        #[arg(long)]
        tenant: Option<String>,
        /// Why.
        #[arg(long, default_value = "rolled back by an operator")]
        reason: String,
    },
    /// Delete ruleset versions and files nothing refers to any more.
    Gc,
}

/// Runs `fluxgate agent` / `fluxgate fleet`; `None` for other commands.
pub fn dispatch(cli: &Cli) -> Option<ExitCode> {
    let result = match &cli.command {
        Command::Agent(args) => runtime().and_then(|rt| rt.block_on(run_agent(cli, args))),
        Command::Fleet(args) => runtime().and_then(|rt| rt.block_on(run_fleet(cli, args))),
        _ => return None,
    };
    Some(match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(err) => {
            if cli.json {
                render::json(&serde_json::json!({
                    "error": err.to_string(),
                    "exit_code": err.exit_code(),
                }));
            }
            eprintln!("fluxgate: {err}");
            ExitCode::from(err.exit_code() as u8)
        }
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, FleetError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| FleetError::Refused(format!("cannot start the async runtime: {e}")))
}

async fn run_agent(cli: &Cli, args: &AgentArgs) -> Result<i32, FleetError> {
    let gateway = crate::gateway(cli)?;
    let opts = AgentOptions {
        fleet: args.etcd.fleet.clone(),
        name: args.name.clone(),
        labels: parse_labels(&args.labels)?,
        interfaces: args.interfaces.clone(),
        etcd: args.etcd.options(),
        lease_ttl: args.lease_ttl,
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = stop_tx.send(true);
        }
    });
    agent::run(gateway, opts, stop).await?;
    Ok(exit::OK)
}

async fn run_fleet(cli: &Cli, args: &FleetArgs) -> Result<i32, FleetError> {
    let client = args.etcd.options().connect().await?;
    let store = FleetStore::new(client, &args.etcd.fleet)?;
    let json = cli.json;
    let ttl = args.lock_ttl;
    match &args.command {
        FleetCommand::Rollout {
            dir,
            waves,
            selector,
            tenants,
            canary,
            reason,
            deadline,
        } => {
            let opts = RolloutOptions {
                change: Change::Ruleset(fluxgate_control::RulesetSource::dir(dir)),
                waves: parse_waves(waves)?,
                selector: parse_labels(selector)?,
                tenants: tenants.clone(),
                canary: *canary,
                reason: reason.clone(),
                wave_deadline: *deadline,
            };
            let c = Controller::acquire(store, ttl).await?;
            let started = c.start(&opts).await?;
            if !json {
                println!(
                    "rollout {} of ruleset {}: waves {:?}",
                    started.id,
                    short(&started.ruleset),
                    started.waves
                );
            }
            let done = c.drive(&started.id).await?;
            let _ = c.release().await;
            Ok(finish(json, &done))
        }
        FleetCommand::Upgrade {
            object,
            program,
            waves,
            selector,
            tenants,
            reason,
            deadline,
        } => {
            let (bytes, label) = match object {
                Some(path) => (read_object(path)?, path.display().to_string()),
                None => (
                    fluxgate_dataplane::EMBEDDED_OBJECT.to_vec(),
                    format!("fluxgate {}", env!("CARGO_PKG_VERSION")),
                ),
            };
            let opts = RolloutOptions {
                change: Change::Classifier {
                    object: bytes,
                    program: program.clone(),
                    label,
                },
                waves: parse_waves(waves)?,
                selector: parse_labels(selector)?,
                tenants: tenants.clone(),
                canary: None,
                reason: reason.clone(),
                wave_deadline: *deadline,
            };
            let c = Controller::acquire(store, ttl).await?;
            let started = c.start(&opts).await?;
            if !json {
                println!("rollout {}: waves {:?}", started.id, started.waves);
            }
            let done = c.drive(&started.id).await?;
            let _ = c.release().await;
            Ok(finish(json, &done))
        }
        FleetCommand::Status { id } => {
            let id = match id {
                Some(id) => Some(id.clone()),
                None => controller::active(&store).await?,
            };
            let rollout = match &id {
                Some(id) => Some(controller::read_rollout(&store, id).await?.0),
                None => None,
            };
            let registrations = store.registrations().await?;
            let statuses = store.statuses().await?;
            if json {
                render::json(&serde_json::json!({
                    "rollout": rollout,
                    "gateways": registrations,
                    "status": statuses,
                }));
            } else {
                for (gw, reg) in &registrations {
                    let labels: Vec<String> =
                        reg.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!("gateway {gw} [{}]", labels.join(","));
                    if let Some(s) = statuses.get(gw) {
                        for (iface, r) in &s.interfaces {
                            if s.desired_revision == 0 {
                                println!(
                                    "  {iface}: generation {}, no desired state yet",
                                    r.generation
                                );
                                continue;
                            }
                            println!(
                                "  {iface}: generation {}, ruleset {}, {:?}{}",
                                r.generation,
                                r.ruleset.as_deref().map_or("-", short),
                                r.outcome,
                                r.last_error
                                    .as_deref()
                                    .map(|e| format!(" ({e})"))
                                    .unwrap_or_default()
                            );
                        }
                        if s.etcd.reconnects > 0 {
                            println!(
                                "  etcd: {} reconnect(s), last outage {} ms",
                                s.etcd.reconnects,
                                s.etcd.last_outage_ms.unwrap_or(0)
                            );
                        }
                    }
                }
                match &rollout {
                    Some(r) => print_rollout(r),
                    None => println!("no rollout in progress"),
                }
            }
            Ok(exit::OK)
        }
        FleetCommand::History { id } => {
            match id {
                Some(id) => {
                    let (r, _) = controller::read_rollout(&store, id).await?;
                    if json {
                        render::json(&r);
                    } else {
                        print_rollout(&r);
                        for s in &r.history {
                            println!("  {} {} {}: {}", s.at_ms, s.by, s.what, s.detail);
                        }
                    }
                }
                None => {
                    let all: Vec<Rollout> = store
                        .rollouts()
                        .await?
                        .into_iter()
                        .map(|(r, _)| r)
                        .collect();
                    if json {
                        render::json(&serde_json::json!({ "rollouts": all }));
                    } else {
                        all.iter().for_each(print_rollout);
                    }
                }
            }
            Ok(exit::OK)
        }
        FleetCommand::Pause { id } => {
            let id = pick(&store, id).await?;
            match Controller::acquire(store.clone(), ttl).await {
                Ok(c) => {
                    let r = controller::pause(&c, &id).await?;
                    let _ = c.release().await;
                    Ok(finish(json, &r))
                }
                Err(FleetError::Busy(_)) => {
                    controller::send_request(&store, &id, Request::Pause).await?;
                    if !json {
                        println!("rollout {id}: its controller pauses it before the next wave");
                    }
                    Ok(exit::OK)
                }
                Err(e) => Err(e),
            }
        }
        FleetCommand::Resume { id, wait } => {
            let id = pick(&store, id).await?;
            let c = Controller::acquire_waiting(store, ttl, *wait).await?;
            let r = controller::resume(&c, &id).await?;
            let _ = c.release().await;
            Ok(finish(json, &r))
        }
        FleetCommand::Abort { id, reason } => {
            let id = pick(&store, id).await?;
            match Controller::acquire(store.clone(), ttl).await {
                Ok(c) => {
                    let r = controller::abort(&c, &id, reason).await?;
                    let _ = c.release().await;
                    Ok(finish(json, &r))
                }
                Err(FleetError::Busy(_)) => {
                    controller::send_request(&store, &id, Request::Abort(reason.clone())).await?;
                    if !json {
                        println!("rollout {id}: its controller halts it and rolls back");
                    }
                    Ok(exit::OK)
                }
                Err(e) => Err(e),
            }
        }
        FleetCommand::Rollback { tenant, reason } => {
            let c = Controller::acquire(store, ttl).await?;
            let r = controller::rollback_last(&c, tenant.as_deref(), reason).await;
            let _ = c.release().await;
            let r = r?;
            if json {
                render::json(&r);
            } else {
                print_rollout(&r);
            }
            Ok(exit::OK)
        }
        FleetCommand::Gc => {
            let c = Controller::acquire(store.clone(), ttl).await?;
            let deleted = store.gc().await?;
            let _ = c.release().await;
            if json {
                render::json(&serde_json::json!({ "deleted_rulesets": deleted }));
            } else {
                println!("deleted {} ruleset version(s)", deleted.len());
            }
            Ok(exit::OK)
        }
    }
}

/// An object file (bounded).
fn read_object(path: &std::path::Path) -> Result<Vec<u8>, FleetError> {
    use fluxgate_control::fleet::programs::MAX_OBJECT_BYTES;
    let bad = |e: String| FleetError::Usage(format!("{}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > MAX_OBJECT_BYTES as u64 {
        return Err(bad(format!("larger than {MAX_OBJECT_BYTES} bytes")));
    }
    std::fs::read(path).map_err(|e| bad(e.to_string()))
}

/// The rollout named, or the unfinished one.
async fn pick(store: &FleetStore, id: &Option<String>) -> Result<String, FleetError> {
    match id {
        Some(id) => Ok(id.clone()),
        None => controller::active(store)
            .await?
            .ok_or_else(|| FleetError::NotFound("no rollout in progress".into())),
    }
}

/// Prints a rollout's end; its exit code (a halted one: [`HALTED`]).
fn finish(json: bool, r: &Rollout) -> i32 {
    if json {
        render::json(r);
    } else {
        print_rollout(r);
    }
    match r.state {
        RolloutState::RolledBack => HALTED,
        _ => exit::OK,
    }
}

fn print_rollout(r: &Rollout) {
    println!(
        "rollout {} ({:?}) ruleset {} wave {}/{}{}{}",
        r.id,
        r.state,
        short(&r.ruleset),
        (r.wave + 1).min(r.waves.len()),
        r.waves.len(),
        if r.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", r.reason)
        },
        r.halt_reason
            .as_deref()
            .map(|h| format!("; halted: {h}"))
            .unwrap_or_default()
    );
}
