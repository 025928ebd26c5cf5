//! `fluxgate serve`: metrics, the tenants' status pages, or both.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener},
    path::Path,
    sync::mpsc,
    time::Duration,
};

use fluxgate_control::{Cancel, ControlError, Gateway};

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

/// Serves until SIGINT or SIGTERM (`Ok`) or until a server fails. Both
/// endpoints listen in the caller's namespace (where their clients are),
/// whatever namespace's interfaces they report. On a signal the status
/// server switches the drop capture off before the process ends.
pub fn serve(
    json: bool,
    gateway: &Gateway,
    metrics: Option<SocketAddr>,
    status: Option<(SocketAddr, &Path)>,
) -> Result<(), ControlError> {
    let metrics = match (metrics, status) {
        (Some(m), _) => Some(m),
        (None, None) => DEFAULT_METRICS.parse().ok(),
        (None, Some(_)) => None,
    };
    let metrics = metrics.map(listen).transpose()?;
    let status = status
        .map(|(addr, tokens)| {
            fluxgate_control::portal::check_tokens(tokens)?;
            listen(addr).map(|l| (l, tokens.to_owned()))
        })
        .transpose()?;
    let stop = Cancel::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.flag())
            .map_err(|e| ControlError::Io(format!("cannot watch signal {sig}: {e}")))?;
    }
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
    // Each server on a thread of its own; the first to end ends the process.
    let (ended, end) = mpsc::channel::<Result<(), ControlError>>();
    if let Some((listener, _)) = metrics {
        let (ended, gateway) = (ended.clone(), gateway.clone());
        std::thread::spawn(move || {
            let _ = ended.send(Err(fluxgate_control::metrics::serve(&listener, &gateway)));
        });
    }
    let status_runs = status.is_some();
    if let Some(((listener, _), tokens)) = status {
        let (ended, gateway, stop) = (ended.clone(), gateway.clone(), stop.clone());
        std::thread::spawn(move || {
            let _ = ended.send(fluxgate_control::portal::serve(
                &listener, &gateway, &tokens, &stop,
            ));
        });
    }
    loop {
        match end.recv_timeout(Duration::from_millis(200)) {
            Ok(result) => return result,
            Err(mpsc::RecvTimeoutError::Timeout) if stop.is_cancelled() => {
                if status_runs {
                    // The status server stops its sampler (capture off) and
                    // finishes the requests under way.
                    return end.recv_timeout(Duration::from_secs(15)).unwrap_or(Ok(()));
                }
                return Ok(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}
