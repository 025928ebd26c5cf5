//! Prometheus metrics (`fluxgate serve --metrics ADDR`): the kernel counters
//! (outcomes, malformed reasons, per tenant and per rule packets / bytes by
//! verdict), live generation numbers, and change counts and durations from the
//! history — rendered at each scrape in the OpenMetrics text format with the
//! `prometheus-client` crate, served over a minimal HTTP/1.0 endpoint.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::Duration,
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{ControlError, Gateway};

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Every metric of every attached interface, in the OpenMetrics text format.
pub fn render(gateway: &Gateway) -> Result<String, ControlError> {
    let mut reg = Registry::with_prefix("fluxgate");
    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    let malformed = Family::<Labels, Counter>::default();
    let tenant_packets = Family::<Labels, Counter>::default();
    let tenant_bytes = Family::<Labels, Counter>::default();
    let rule_packets = Family::<Labels, Counter>::default();
    let rule_bytes = Family::<Labels, Counter>::default();
    let generation = Family::<Labels, Gauge>::default();
    let tenant_generation = Family::<Labels, Gauge>::default();
    let changes = Family::<Labels, Counter>::default();
    let change_seconds = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    reg.register("packets", "Packets by outcome", packets.clone());
    reg.register("bytes", "Bytes by outcome", bytes.clone());
    reg.register(
        "malformed",
        "Malformed packets by reason",
        malformed.clone(),
    );
    reg.register(
        "tenant_packets",
        "Packets of each tenant by verdict",
        tenant_packets.clone(),
    );
    reg.register(
        "tenant_bytes",
        "Bytes of each tenant by verdict",
        tenant_bytes.clone(),
    );
    reg.register(
        "rule_packets",
        "Packets counted by each live rule (or default), with its verdict",
        rule_packets.clone(),
    );
    reg.register(
        "rule_bytes",
        "Bytes counted by each live rule (or default), with its verdict",
        rule_bytes.clone(),
    );
    reg.register(
        "generation",
        "Generation numbers: live (last published whole) and newest",
        generation.clone(),
    );
    reg.register(
        "tenant_generation",
        "Generation of each tenant's live rules",
        tenant_generation.clone(),
    );
    reg.register(
        "changes",
        "Changes in the retained history: applies, aborted applies, rollbacks, canary outcomes",
        changes.clone(),
    );
    reg.register(
        "change_duration_seconds",
        "Total time spent in applies and rollbacks of the retained history",
        change_seconds.clone(),
    );

    for iface in gateway.interfaces()? {
        let mut gw = gateway.open_read(Some(&iface))?;
        let counters = gw.pinned().counters()?.report();
        for (outcome, c) in &counters.outcomes {
            let l = labels(&[("iface", &iface), ("outcome", outcome)]);
            packets.get_or_create(&l).inc_by(c.packets);
            bytes.get_or_create(&l).inc_by(c.bytes);
        }
        for (reason, c) in &counters.malformed {
            malformed
                .get_or_create(&labels(&[("iface", &iface), ("reason", reason)]))
                .inc_by(c.packets);
        }
        let st = gw.state().clone();
        for (kind, value) in [("live", st.live_generation), ("newest", st.generation)] {
            generation
                .get_or_create(&labels(&[("iface", &iface), ("kind", kind)]))
                .set(value as i64);
        }
        for (tenant, t) in &st.live.tenants {
            tenant_generation
                .get_or_create(&labels(&[("iface", &iface), ("tenant", tenant)]))
                .set(t.table as i64);
        }
        for e in &st.events {
            changes
                .get_or_create(&labels(&[("iface", &iface), ("kind", &e.what)]))
                .inc();
            if let Some(ms) = e.duration_ms {
                change_seconds
                    .get_or_create(&labels(&[("iface", &iface), ("kind", &e.what)]))
                    .inc_by(ms as f64 / 1000.0);
            }
        }
        for t in gw.tenant_stats(None)? {
            for (family, passed, dropped) in [
                (&tenant_packets, t.passed, t.dropped),
                (&tenant_bytes, t.passed_bytes, t.dropped_bytes),
            ] {
                for (verdict, n) in [("pass", passed), ("drop", dropped)] {
                    family
                        .get_or_create(&labels(&[
                            ("iface", &iface),
                            ("tenant", &t.tenant),
                            ("verdict", verdict),
                        ]))
                        .inc_by(n);
                }
            }
            for r in &t.rules {
                let action = r.text.rsplit(' ').next().unwrap_or("");
                let position = if r.position == 0 {
                    "default".to_owned()
                } else {
                    r.position.to_string()
                };
                let l = labels(&[
                    ("iface", &iface),
                    ("scope", &r.scope),
                    ("rule", &position),
                    ("id", r.rule.as_deref().unwrap_or("")),
                    ("verdict", action),
                ]);
                rule_packets.get_or_create(&l).inc_by(r.packets);
                rule_bytes.get_or_create(&l).inc_by(r.bytes);
            }
        }
    }
    let mut out = String::new();
    encode(&mut out, &reg).map_err(|e| ControlError::State(format!("encode metrics: {e}")))?;
    Ok(out)
}

/// Serves `GET /metrics` on `listener` until the process is stopped; one
/// request at a time, each answered from a fresh read of the kernel.
pub fn serve(listener: &TcpListener, gateway: &Gateway) -> ControlError {
    loop {
        let (stream, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) => return ControlError::State(format!("metrics listener failed: {e}")),
        };
        // A client that misbehaves only loses its own request.
        let _ = answer(stream, gateway);
    }
}

fn answer(mut stream: TcpStream, gateway: &Gateway) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 8192];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, ctype, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        )
    } else if path != "/metrics" {
        ("404 Not Found", "text/plain", "see /metrics\n".to_owned())
    } else {
        match render(gateway) {
            Ok(body) => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
        }
    };
    write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
