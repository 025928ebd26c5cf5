//! `fluxgate serve`: metrics, the tenants' status pages, or both.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener},
    path::Path,
};

use fluxgate_control::{ControlError, Gateway};

/// Where metrics are served when nothing else is asked for.
const DEFAULT_METRICS: &str = "127.0.0.1:9464";

fn listen(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ControlError> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| ControlError::Io(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| ControlError::Io(e.to_string()))?;
    Ok((listener, bound))
}

/// Serves until stopped; returns what stopped it. Both endpoints listen in
/// the caller's namespace (where their clients are), whatever namespace's
/// interfaces they report.
pub fn serve(
    json: bool,
    gateway: &Gateway,
    metrics: Option<SocketAddr>,
    status: Option<(SocketAddr, &Path)>,
) -> ControlError {
    let metrics = match (metrics, status) {
        (Some(m), _) => Some(m),
        (None, None) => DEFAULT_METRICS.parse().ok(),
        (None, Some(_)) => None,
    };
    let metrics = match metrics.map(listen).transpose() {
        Ok(m) => m,
        Err(e) => return e,
    };
    let status = match status
        .map(|(addr, tokens)| {
            fluxgate_control::portal::check_tokens(tokens)?;
            listen(addr).map(|l| (l, tokens))
        })
        .transpose()
    {
        Ok(s) => s,
        Err(e) => return e,
    };
    let mut said = serde_json::Map::new();
    if let Some((_, addr)) = &metrics {
        said.insert("metrics".into(), format!("http://{addr}/metrics").into());
    }
    if let Some(((_, addr), _)) = &status {
        said.insert("status".into(), format!("http://{addr}/").into());
    }
    if json {
        crate::render::json(&said);
    } else {
        for (what, url) in &said {
            println!("serving {what} on {}", url.as_str().unwrap_or_default());
        }
    }
    let _ = std::io::stdout().flush();
    std::thread::scope(|scope| {
        let mut running = Vec::new();
        if let Some((listener, _)) = metrics {
            running.push(scope.spawn(move || fluxgate_control::metrics::serve(&listener, gateway)));
        }
        if let Some(((listener, _), tokens)) = status {
            running.push(
                scope.spawn(move || fluxgate_control::portal::serve(&listener, gateway, tokens)),
            );
        }
        // Each runs until it fails; the first failure stops the process.
        loop {
            if let Some(i) = running.iter().position(|h| h.is_finished()) {
                return running
                    .swap_remove(i)
                    .join()
                    .unwrap_or_else(|_| ControlError::State("a server panicked".into()));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    })
}
