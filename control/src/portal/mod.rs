//! Status pages for tenants (`fluxgate serve --status ADDR --tokens FILE`):
//! each tenant reads, with its own token, what fluxgate does for it — the
//! generation live now and since when, every change with its outcome in
//! plain words (applied, refused, canary rolled back, rolled back by the
//! operator), its rules with their counters, its last dropped packets with
//! the rule that dropped them, and the state of the gateway — as HTML
//! (`/tenants/NAME`, plain, no JavaScript, readable on a phone, refreshing
//! itself while a change is in progress) and as JSON (`/tenants/NAME.json`).
//! The operator's token opens every tenant's pages and the list of all
//! (`/tenants`, `/tenants.json`). Tenants may be given webhooks.
//!
//! - [`view`]: the typed pages ([`tenant_page`], [`operator_page`]), built
//!   at each request from the library's status, counters, journal and
//!   outcomes log ([`crate::outcomes`]);
//! - [`words`]: outcomes in plain words, for a tenant or the operator;
//! - [`html`]: the pages as HTML;
//! - [`tokens`]: the operator's tokens file (hashed tokens, constant-time
//!   comparison, read again when it changes);
//! - [`http`]: the server (bounded, with deadlines, strict paths);
//! - [`drops`]: the drop sampler;
//! - [`webhook`]: the notifier.

pub mod drops;
pub mod html;
pub mod http;
pub mod tokens;
pub mod view;
pub mod webhook;
pub mod words;

use std::{net::TcpListener, path::Path, sync::Arc};

pub use view::{GatewayState, OperatorPage, TenantPage, operator_page, tenant_page};

use crate::{Cancel, ControlError, Gateway};

/// Serves the status pages of `gateway` on `listener` with the tokens of
/// `tokens`, sampling drops and sending webhooks from threads of its own,
/// until `stop` is cancelled (`Ok`: the drop capture is switched off again
/// then) or serving fails.
pub fn serve(
    listener: &TcpListener,
    gateway: &Gateway,
    tokens: &Path,
    stop: &Cancel,
) -> Result<(), ControlError> {
    let tokens = Arc::new(tokens::TokensFile::open(tokens)?);
    let notifier = webhook::Notifier::new(gateway, Arc::clone(&tokens))?;
    let samples = drops::DropSamples::default();
    std::thread::scope(|scope| {
        scope.spawn(|| samples.run(gateway, stop));
        scope.spawn(|| notifier.run(stop));
        let served = http::serve(listener, gateway, &tokens, Some(&samples), stop);
        // Whatever ended serving ends the sampler and the notifier too.
        stop.cancel();
        served
    })
}

/// Opens the tokens file at `path` (for a check before serving).
pub fn check_tokens(path: &Path) -> Result<(), ControlError> {
    tokens::TokensFile::open(path).map(|_| ())
}
