//! The pages as plain HTML: no JavaScript, one small inline style sheet,
//! readable on a phone, refreshing itself while a change is in progress.
//! Everything that comes from a file, a journal or a client is escaped.

use std::fmt::Write as _;

use super::{
    view::{HistoryLine, OperatorPage, TenantPage},
    words::utc_minute,
};

/// Seconds between refreshes while a change is in progress.
pub const REFRESH_SECS: u32 = 5;

const STYLE: &str = "body{font-family:sans-serif;margin:0 auto;max-width:60em;padding:0.5em 1em;\
line-height:1.4;color:#111;background:#fff}h1{font-size:1.4em}h2{font-size:1.15em;\
margin-top:1.5em;border-bottom:1px solid #ccc}table{border-collapse:collapse;width:100%}\
td,th{text-align:left;padding:0.25em 0.5em;border-bottom:1px solid #eee;vertical-align:top}\
td.n{text-align:right;white-space:nowrap}pre{background:#f6f6f6;padding:0.5em;overflow-x:auto;\
white-space:pre-wrap}.state{padding:0.5em;border-radius:0.3em;background:#e8f5e9}\
.state.busy{background:#fff8e1}.state.back{background:#ffebee}ul.hist{padding-left:1.2em}\
ul.hist li{margin-bottom:0.6em}.muted{color:#555;font-size:0.9em}";

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn head(out: &mut String, title: &str, refresh: bool) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    );
    if refresh {
        let _ = write!(
            out,
            "<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">"
        );
    }
    let _ = write!(
        out,
        "<title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    );
}

fn state_class(state: super::view::GatewayState) -> &'static str {
    use super::view::GatewayState::*;
    match state {
        Healthy => "state",
        ChangeInProgress | Interrupted => "state busy",
        RolledBackRecently => "state back",
    }
}

fn history(out: &mut String, lines: &[HistoryLine]) {
    if lines.is_empty() {
        out.push_str("<p class=\"muted\">No changes recorded yet.</p>");
        return;
    }
    out.push_str("<ul class=\"hist\">");
    for h in lines {
        let _ = write!(
            out,
            "<li><strong>{}</strong> — {}",
            escape(h.outcome.label()),
            escape(&h.text)
        );
        let mut by = Vec::new();
        if !h.who.is_empty() {
            by.push(format!("by {}", escape(&h.who)));
        }
        if !h.reason.is_empty() {
            by.push(format!("reason: “{}”", escape(&h.reason)));
        }
        if !by.is_empty() {
            let _ = write!(out, "<br><span class=\"muted\">{}</span>", by.join("; "));
        }
        if !h.details.is_empty() {
            out.push_str("<pre>");
            for d in &h.details {
                let _ = writeln!(out, "{}", escape(d));
            }
            out.push_str("</pre>");
        }
        out.push_str("</li>");
    }
    out.push_str("</ul>");
}

/// A tenant's page.
pub fn tenant(page: &TenantPage) -> String {
    let mut out = String::new();
    let name = escape(&page.tenant);
    head(
        &mut out,
        &format!("{} — fluxgate", page.tenant),
        page.in_progress(),
    );
    let _ = write!(out, "<h1>Filtering for {name}</h1>");
    for i in &page.interfaces {
        let iface = escape(&i.iface);
        let _ = write!(
            out,
            "<h2>Gateway {iface}</h2><p class=\"{}\">{}{}</p>",
            state_class(i.state),
            escape(i.state.words()),
            if page.in_progress() {
                format!(" This page refreshes every {REFRESH_SECS} seconds.")
            } else {
                String::new()
            }
        );
        let _ = write!(
            out,
            "<p>Your live rules are generation {}{}. Packets passed: {}; dropped: {}.</p>",
            i.generation,
            i.since
                .map(|s| format!(", live since {}", utc_minute(s)))
                .unwrap_or_default(),
            i.passed,
            i.dropped
        );
        out.push_str("<h2>Changes</h2>");
        history(&mut out, &i.history);
        out.push_str(
            "<h2>Your rules now</h2><table><tr><th>#</th><th>Rule</th>\
             <th class=\"n\">Packets</th><th class=\"n\">Bytes</th></tr>",
        );
        for r in &i.rules {
            let pos = if r.position == 0 {
                "default".to_owned()
            } else {
                r.position.to_string()
            };
            let _ = write!(
                out,
                "<tr><td>{pos}</td><td><code>{}</code></td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td></tr>",
                escape(&r.text),
                r.packets,
                r.bytes
            );
        }
        out.push_str("</table>");
        if let Some(file) = &i.file {
            let _ = write!(
                out,
                "<details><summary>Your file as written</summary><pre>{}</pre></details>",
                escape(file)
            );
        }
        out.push_str("<h2>Last dropped packets (sampled)</h2>");
        if i.drops.is_empty() {
            out.push_str("<p class=\"muted\">None sampled since the status server started.</p>");
        } else {
            out.push_str(
                "<table><tr><th>When</th><th class=\"n\">Bytes</th><th>Dropped by</th></tr>",
            );
            for d in &i.drops {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                    escape(&utc_second(d.time)),
                    d.len,
                    escape(&d.rule)
                );
            }
            out.push_str("</table>");
        }
    }
    let _ = writeln!(
        out,
        "<p class=\"muted\">The same data as JSON: <a href=\"/tenants/{name}.json\">{name}.json</a>.</p></body></html>"
    );
    out
}

/// The operator's page.
pub fn operator(page: &OperatorPage) -> String {
    let mut out = String::new();
    head(&mut out, "fluxgate — all tenants", page.in_progress());
    out.push_str("<h1>All tenants</h1>");
    if page.interfaces.is_empty() {
        out.push_str("<p>No interface is attached.</p>");
    }
    for i in &page.interfaces {
        let _ = write!(
            out,
            "<h2>Gateway {} (generation {})</h2><p class=\"{}\">{}</p>",
            escape(&i.iface),
            i.live_generation,
            state_class(i.state),
            escape(i.state.words())
        );
        out.push_str(
            "<table><tr><th>Tenant</th><th class=\"n\">Generation</th>\
             <th class=\"n\">Passed</th><th class=\"n\">Dropped</th></tr>",
        );
        for t in &i.tenants {
            let name = escape(&t.tenant);
            let _ = write!(
                out,
                "<tr><td><a href=\"/tenants/{name}\">{name}</a></td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                t.generation, t.passed, t.dropped
            );
        }
        out.push_str("</table><h2>Changes</h2>");
        history(&mut out, &i.history);
    }
    out.push_str("</body></html>\n");
    out
}

/// `2026-12-03 10:42:07 UTC` for fractional seconds since the epoch.
fn utc_second(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    let minute = utc_minute(s);
    let (date_hm, _) = minute.split_at(minute.len() - 4);
    format!("{date_hm}:{:02} UTC", s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        outcomes::OutcomeKind,
        portal::view::{GatewayState, RuleLine, TenantOnInterface},
    };

    #[test]
    fn everything_from_files_is_escaped() {
        let evil = "<script>alert(1)</script>\"'&";
        let page = TenantPage {
            tenant: "acme".into(),
            interfaces: vec![TenantOnInterface {
                iface: "eth1".into(),
                generation: 3,
                since: Some(0),
                state: GatewayState::ChangeInProgress,
                passed: 1,
                dropped: 2,
                rules: vec![RuleLine {
                    position: 1,
                    text: evil.into(),
                    packets: 0,
                    bytes: 0,
                }],
                file: Some(format!("# {evil}\n")),
                history: vec![HistoryLine {
                    seq: 1,
                    at: 0,
                    generation: 3,
                    outcome: OutcomeKind::Refused,
                    who: evil.into(),
                    reason: evil.into(),
                    text: evil.into(),
                    details: vec![evil.into()],
                }],
                drops: Vec::new(),
            }],
        };
        let html = tenant(&page);
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        assert!(
            html.contains("http-equiv=\"refresh\""),
            "in progress: refreshes"
        );
        assert!(html.contains("name=\"viewport\""));
    }

    #[test]
    fn seconds_are_utc() {
        assert_eq!(utc_second(62.5), "1970-01-01 00:01:02 UTC");
    }
}
