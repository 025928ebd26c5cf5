//! A tenant's status page in a real browser (Debian's headless Chromium):
//! after an apply, a refused patch and a canary rollback, the page renders
//! its history and rules; the screenshot is read back with OCR (tesseract)
//! and must show the texts that matter, and the DOM Chromium built must
//! hold them too (and nothing of the other tenant).
//!
//! Set `FLUXGATE_KEEP_SCREENSHOTS=DIR` to keep the screenshot there.

mod common;
mod status_common;

use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use fluxgate_testkit::scratch::ScratchDir;
use status_common::{ACME_TOKEN, Gw};

/// Chromium, headless, as root, with a fresh profile and no network of its
/// own (no updates, no sync, no QUIC), killed after 90 s whatever happens.
fn chromium(profile: &Path, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .arg("90")
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium is installed by `cargo xtask setup` (Debian package `chromium`)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Lower-case words of `text`, single-spaced (OCR and HTML alike).
fn words(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[test]
fn the_tenant_page_renders_its_history_and_rules_in_a_browser() {
    let g = Gw::new("status-browser");
    let server = g.serve(&g.tokens(&[]));
    g.story();
    let tmp = ScratchDir::new("status-browser");
    // A browser sends the token as Basic authentication's password.
    let url = format!("http://acme:{ACME_TOKEN}@{}/tenants/acme", server.addr);

    // The DOM Chromium built from the page.
    let dom = chromium(&tmp.path("profile-dom"), &["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    for want in [
        "Filtering for acme",
        "Your rule 1 (generation 3) was rolled back at",
        "because your pass rate fell from",
        "Your new rules were refused at",
        "rule 2 new or edited",
        "The operator rolled your rules back to generation 1",
        "proto udp dport 7000 pass",
        "acme.fg:4:",
        "name=\"viewport\"",
    ] {
        assert!(dom.contains(want), "{want:?} not in the DOM:\n{dom}");
    }
    assert!(!dom.contains("globex"), "nothing of another tenant:\n{dom}");
    assert!(!dom.contains("<script"), "no JavaScript");

    // A phone-sized screenshot, read back with OCR.
    let png = tmp.path("acme.png");
    chromium(
        &tmp.path("profile-shot"),
        &[
            "--window-size=480,3000",
            "--force-device-scale-factor=2",
            &format!("--screenshot={}", png.display()),
            &url,
        ],
    );
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "a real screenshot: {size} bytes");
    if let Ok(dir) = std::env::var("FLUXGATE_KEEP_SCREENSHOTS") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(&png, Path::new(&dir).join("status-acme.png"));
    }
    let ocr = Command::new("timeout")
        .args(["120", "tesseract"])
        .arg(&png)
        .arg("stdout")
        .output()
        .expect("tesseract is installed by `cargo xtask setup` (Debian package `tesseract-ocr`)");
    assert!(
        ocr.status.success(),
        "{}",
        String::from_utf8_lossy(&ocr.stderr)
    );
    let seen = words(&String::from_utf8_lossy(&ocr.stdout));
    for want in [
        "filtering for acme",
        "canary rolled back",
        "rolled back at",
        "pass rate fell from",
        "refused",
        "manual rollback",
        "your rules now",
        "dport 7000 pass",
    ] {
        assert!(
            seen.contains(want),
            "{want:?} not on the screenshot; OCR read:\n{seen}"
        );
    }
    std::thread::sleep(Duration::from_millis(10));
}
