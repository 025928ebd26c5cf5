//! The tenants' status pages (`fluxgate serve --status`), served for real on
//! 127.0.0.1 over a real gateway in a namespace: a tenant's token opens its
//! own pages and nothing else, whatever the URL looks like; a slow client
//! does not hold up the others; the pages tell every change's outcome in
//! plain words; webhooks see each change exactly once, in order, and a hung
//! receiver never slows an apply.

mod common;
mod status_common;

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use fluxgate_testkit::net::eventually;
use status_common::{ACME_2, ACME_TOKEN, GLOBEX_TOKEN, Gw, OPERATOR_TOKEN, Receiver, raw, request};

#[test]
fn a_tenant_token_opens_its_own_pages_only_in_every_url_form() {
    let g = Gw::new("status-access");
    let tokens = g.tokens(&[]);
    let server = g.serve(&tokens);
    let a = server.addr;

    // No token, a wrong one, a malformed header: 401 everywhere, even on
    // pages that do not exist (nothing is learnt without a token).
    for target in [
        "/",
        "/tenants",
        "/tenants/acme",
        "/tenants/globex.json",
        "/nope",
    ] {
        for token in [
            None,
            Some("wrong"),
            Some(""),
            Some(&format!("{ACME_TOKEN}x")),
            Some(&ACME_TOKEN[1..]),
        ] {
            let r = request(a, "GET", target, token.map(|t| t as &str));
            assert_eq!(r.status, 401, "{target} with {token:?}: {r:?}");
            assert!(r.head.contains("WWW-Authenticate: Basic"), "{r:?}");
            assert!(!r.body.contains("acme") && !r.body.contains(ACME_TOKEN));
        }
    }

    // Its own pages.
    let page = request(a, "GET", "/tenants/acme", Some(ACME_TOKEN));
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("Filtering for acme"), "{}", page.body);
    assert!(
        page.body.contains("udp dport 7000"),
        "its rules: {}",
        page.body
    );
    assert!(!page.body.contains(ACME_TOKEN), "never echoed");
    let json = request(a, "GET", "/tenants/acme.json", Some(ACME_TOKEN));
    assert_eq!(json.status, 200);
    let v: serde_json::Value = serde_json::from_str(&json.body).expect("json");
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["interfaces"][0]["generation"], 1, "{v}");
    let home = request(a, "GET", "/", Some(ACME_TOKEN));
    assert_eq!(home.status, 303);
    assert!(home.head.contains("Location: /tenants/acme"), "{home:?}");
    // HEAD: the head alone; other methods refused.
    let head = request(a, "HEAD", "/tenants/acme", Some(ACME_TOKEN));
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    for m in ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "get"] {
        assert_eq!(
            request(a, m, "/tenants/acme", Some(ACME_TOKEN)).status,
            405,
            "{m}"
        );
    }
    // A browser's Basic authentication (user name ignored, password = token).
    let basic = base64_encode(&format!("acme:{ACME_TOKEN}"));
    let r = raw(
        a,
        format!("GET /tenants/acme HTTP/1.1\r\nAuthorization: Basic {basic}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200);

    // Another tenant's pages, in every form: the same 404 as a tenant that
    // does not exist, and never a byte of globex's.
    let missing = request(a, "GET", "/tenants/nosuch", Some(ACME_TOKEN));
    assert_eq!(missing.status, 404);
    for target in [
        "/tenants/globex",
        "/tenants/globex.json",
        "/tenants",
        "/tenants.json",
        "/tenants/acme/../globex",
        "/tenants/acme/..%2fglobex",
        "/tenants/acme%2f..%2fglobex",
        "/tenants/%67lobex",
        "/tenants/%2e%2e/globex",
        "/tenants/./globex",
        "/tenants//globex",
        "/tenants/globex/",
        "/tenants/GLOBEX",
        "/Tenants/globex",
        "/tenants/glob\u{0435}x",
        "/tenants/globex.json.json",
        "/tenants/globex?as=acme",
        "/tenants/acme?../globex",
        "/tenants/globex#acme",
        "/tenants/globex;acme",
        "/tenants/acme\\..\\globex",
        "/tenants/acme/",
        "/tenants/acme.JSON",
        "//tenants/acme",
        "http://127.0.0.1/tenants/globex",
        "*",
    ] {
        let r = request(a, "GET", target, Some(ACME_TOKEN));
        assert_eq!(r.status, 404, "{target}: {r:?}");
        assert_eq!(r.body, missing.body, "{target}: indistinguishable");
        assert!(!r.body.contains("globex"), "{target}");
    }
    // A target with a space or raw bytes is no request at all.
    for bad in [
        &b"GET /tenants/globex x HTTP/1.1\r\n\r\n"[..],
        b"GET /tenants/\xff HTTP/1.1\r\n\r\n",
        b"GET /tenants/globex\r\n\r\n",
    ] {
        let r = raw(a, bad);
        assert!(matches!(r.status, 400 | 401), "{bad:?}: {r:?}");
        assert!(!r.body.contains("globex"));
    }
    // Globex's token opens globex, not acme.
    assert_eq!(
        request(a, "GET", "/tenants/globex", Some(GLOBEX_TOKEN)).status,
        200
    );
    assert_eq!(
        request(a, "GET", "/tenants/acme.json", Some(GLOBEX_TOKEN)).status,
        404
    );

    // The operator opens everything, and the list of all tenants.
    let all = request(a, "GET", "/tenants", Some(OPERATOR_TOKEN));
    assert_eq!(all.status, 200);
    assert!(all.body.contains("/tenants/acme") && all.body.contains("/tenants/globex"));
    let all = request(a, "GET", "/tenants.json", Some(OPERATOR_TOKEN));
    let v: serde_json::Value = serde_json::from_str(&all.body).expect("json");
    assert_eq!(
        v["interfaces"][0]["tenants"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        request(a, "GET", "/tenants/globex", Some(OPERATOR_TOKEN)).status,
        200
    );

    // Bounded: a huge head is refused, not read forever.
    let huge = format!(
        "GET /tenants/acme HTTP/1.1\r\nX-Pad: {}\r\nAuthorization: Bearer {ACME_TOKEN}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(raw(a, huge.as_bytes()).status, 431);

    // A revoked token stops working at once (the file is read again).
    let text = std::fs::read_to_string(&tokens).expect("tokens");
    let revoked: String = text
        .lines()
        .filter(|l| !l.starts_with("tenant acme"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&tokens, revoked).expect("write");
    assert_eq!(
        request(a, "GET", "/tenants/acme", Some(ACME_TOKEN)).status,
        401
    );
    assert_eq!(
        request(a, "GET", "/tenants/globex", Some(GLOBEX_TOKEN)).status,
        200
    );

    // The drop sampler holds the capture while the server runs; SIGTERM
    // stops the server, which switches it off first.
    assert!(eventually(Duration::from_secs(10), || g.capturing()));
    let status = server.stop().expect("serve ends on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!g.capturing(), "capture switched off");
}

#[test]
fn a_slow_client_does_not_hold_up_the_others() {
    let g = Gw::new("status-slow");
    let server = g.serve(&g.tokens(&[]));
    // Clients that start a request and never finish it.
    let mut slow: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut c = TcpStream::connect(server.addr).expect("connect");
            c.write_all(b"GET /tenants/acme HTTP/1.1\r\nAuthoriz")
                .expect("send");
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let r = request(server.addr, "GET", "/tenants/acme", Some(ACME_TOKEN));
    assert_eq!(r.status, 200);
    // Answered while every slow client still holds its connection (the
    // server gives them 5 s; they have not been cut off yet).
    let answered_in = started.elapsed();
    for c in &mut slow {
        c.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 16];
        match c.read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!(
                "a slow client was already answered or closed: {other:?} (after {answered_in:?})"
            ),
        }
    }
    // Then the slow ones are cut off at the deadline, without an answer
    // that says anything.
    for mut c in slow {
        c.set_nonblocking(false).expect("blocking");
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        assert!(!String::from_utf8_lossy(&out).contains("acme"), "{out:?}");
    }
}

#[test]
fn the_page_refreshes_itself_while_a_change_is_in_progress() {
    use std::os::fd::AsRawFd;
    let g = Gw::new("status-busy");
    let server = g.serve(&g.tokens(&[]));
    let page = || request(server.addr, "GET", "/tenants/acme", Some(ACME_TOKEN)).body;
    let calm = page();
    assert!(calm.contains("The gateway is healthy."), "{calm}");
    assert!(!calm.contains("http-equiv=\"refresh\""), "{calm}");
    // Hold the interface's change lock, as a running apply does.
    let lock = std::fs::File::open(
        g.s.state
            .join(&g.ns)
            .join(fluxgate_testkit::net::IF_B)
            .join("lock"),
    )
    .expect("the journal's lock file");
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let busy = page();
    assert!(busy.contains("A change is in progress"), "{busy}");
    assert!(
        busy.contains("<meta http-equiv=\"refresh\" content=\"5\">"),
        "{busy}"
    );
    // A change meanwhile is refused as busy: the page never took the lock.
    let out = g.apply(&[]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(lock);
    assert!(page().contains("The gateway is healthy."));
}

#[test]
fn the_pages_and_the_webhooks_tell_every_outcome_once_in_order() {
    let g = Gw::new("status-story");
    let receiver = Receiver::start();
    let tokens = g.tokens(&[("acme", &receiver.url), ("globex", &receiver.url)]);
    let server = g.serve(&tokens);
    g.story();

    let page = request(server.addr, "GET", "/tenants/acme.json", Some(ACME_TOKEN));
    let v: serde_json::Value = serde_json::from_str(&page.body).expect("json");
    let i = &v["interfaces"][0];
    assert_eq!(i["generation"], 1, "rolled back to 1: {v}");
    let history: Vec<(String, String)> = i["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                h["outcome"].as_str().unwrap_or("").to_owned(),
                h["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let kinds: Vec<&str> = history.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "rolled-back",
            "canary-rolled-back",
            "applied",
            "refused",
            "applied",
            "applied"
        ],
        "newest first, down to the first load: {history:#?}"
    );
    let text = |k: usize| history[k].1.as_str();
    assert!(text(4).contains("rule 2 new or edited"), "{}", text(4));
    assert!(text(3).contains("refused"), "{}", text(3));
    assert!(
        text(1).starts_with("Your rule 1 (generation 3) was rolled back at ")
            && text(1).contains("because your pass rate fell from"),
        "{}",
        text(1)
    );
    assert!(
        text(0).contains("rolled your rules back to generation 1"),
        "{}",
        text(0)
    );
    let refused = &i["history"][3];
    assert!(
        refused["details"][0]
            .as_str()
            .is_some_and(|d| d.contains("acme.fg:4:")),
        "the refusal says where: {refused}"
    );
    assert_eq!(refused["reason"], "a typo");
    // The live rules, with counters: rule 1 passed the flow's packets.
    assert_eq!(i["rules"][0]["position"], 1, "{v}");
    assert_eq!(i["rules"][0]["text"], "proto udp dport 7000 pass", "{v}");
    assert!(i["rules"][0]["packets"].as_u64() > Some(0), "{v}");
    assert_eq!(i["rules"][1]["position"], 0, "the default last: {v}");
    // Sampled drops, with the deciding rule (the flow's half to port 7100
    // meets acme's default drop).
    let drops = i["drops"].as_array().expect("drops");
    assert!(
        drops.iter().any(|d| d["rule"]
            .as_str()
            .is_some_and(|r| r == "default" || r.starts_with("rule "))),
        "{v}"
    );
    // Globex's page tells nothing of acme's changes.
    let globex = request(
        server.addr,
        "GET",
        "/tenants/globex.json",
        Some(GLOBEX_TOKEN),
    );
    assert!(!globex.body.contains("acme"), "{}", globex.body);

    // Webhooks: acme's five outcomes, once each, in order; nothing to globex.
    let want = [
        "applied",
        "refused",
        "applied",
        "canary-rolled-back",
        "rolled-back",
    ];
    assert!(
        eventually(Duration::from_secs(30), || receiver.received().len()
            >= want.len()),
        "{:#?}",
        receiver.received()
    );
    std::thread::sleep(Duration::from_secs(2));
    let got = receiver.received();
    let outcomes: Vec<&str> = got.iter().filter_map(|b| b["outcome"].as_str()).collect();
    assert_eq!(outcomes, want, "{got:#?}");
    assert!(got.iter().all(|b| b["tenant"] == "acme"), "{got:#?}");
    let seqs: Vec<u64> = got.iter().filter_map(|b| b["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    assert!(
        got[3]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Your rule 1")),
        "{:#?}",
        got[3]
    );

    // A restarted server goes on where it stopped: nothing is sent twice,
    // and the next change is sent once.
    assert!(server.stop().is_some_and(|s| s.success()));
    let server = g.serve(&tokens);
    status_common::write_acme(&g, ACME_2);
    assert!(g.apply(&["--reason", "port 7002 again"]).status.success());
    assert!(eventually(Duration::from_secs(30), || receiver
        .received()
        .len()
        > want.len()));
    std::thread::sleep(Duration::from_secs(2));
    let after = receiver.received();
    assert_eq!(after.len(), want.len() + 1, "{after:#?}");
    assert_eq!(after[want.len()]["reason"], "port 7002 again");
    assert!(after[want.len()]["seq"].as_u64() > seqs.last().copied());
    drop(server);
}

#[test]
fn a_partly_refused_apply_tells_each_tenant_its_own_outcome() {
    let g = Gw::new("status-partial");
    let server = g.serve(&g.tokens(&[]));
    status_common::write_acme(&g, status_common::ACME_INVALID);
    common::write(
        &g.s.rules,
        "globex.fg",
        "tenant globex\nprefix 10.77.2.0/24\ndefault pass\nproto tcp dport 23 drop\nproto tcp dport 25 drop\n",
    );
    let out = g.apply(&["--reason", "monday changes"]);
    assert_eq!(out.status.code(), Some(10), "partially applied");
    let page = |t: &str, token: &str| {
        let r = request(
            server.addr,
            "GET",
            &format!("/tenants/{t}.json"),
            Some(token),
        );
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        (r.body, v["interfaces"][0]["history"][0].clone())
    };
    let (acme_body, acme) = page("acme", ACME_TOKEN);
    assert_eq!(acme["outcome"], "refused", "{acme}");
    assert_eq!(acme["generation"], 2, "refused from generation 2: {acme}");
    assert!(
        acme["details"][0]
            .as_str()
            .is_some_and(|d| d.starts_with("acme.fg:4:")),
        "{acme}"
    );
    assert!(!acme_body.contains("globex"), "{acme_body}");
    let (globex_body, globex) = page("globex", GLOBEX_TOKEN);
    assert_eq!(globex["outcome"], "applied", "{globex}");
    assert!(
        globex["text"]
            .as_str()
            .is_some_and(|t| t.contains("rule 2 new or edited")),
        "{globex}"
    );
    assert!(!globex_body.contains("acme"), "{globex_body}");
}

#[test]
fn a_hung_webhook_receiver_never_slows_an_apply() {
    let g = Gw::new("status-hung");
    let receiver = Receiver::start();
    receiver.hang.store(true, Ordering::SeqCst);
    let server = g.serve(&g.tokens(&[("acme", &receiver.url)]));
    status_common::write_acme(&g, ACME_2);
    assert!(g.apply(&[]).status.success());
    // The notifier is now stuck in a POST the receiver never answers …
    assert!(eventually(Duration::from_secs(20), || *receiver
        .accepted
        .lock()
        .expect("lock")
        >= 1));
    // … and applies go on, each finishing while that POST still hangs.
    for text in [status_common::ACME, ACME_2] {
        status_common::write_acme(&g, text);
        let out = g.apply(&[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(receiver.received().is_empty(), "the first POST still hangs");
    }
    // When the receiver answers again, all three arrive, once each, in order.
    receiver.hang.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(60), || receiver.received().len() >= 3),
        "{:#?}",
        receiver.received()
    );
    std::thread::sleep(Duration::from_secs(2));
    let got = receiver.received();
    let gens: Vec<u64> = got
        .iter()
        .filter_map(|b| b["generation"].as_u64())
        .collect();
    assert_eq!(gens, [2, 3, 4], "{got:#?}");
    drop(server);
}

fn base64_encode(text: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = text.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | u32::from(*c) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
