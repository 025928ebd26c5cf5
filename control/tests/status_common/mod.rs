//! Helpers of the status-page tests: a gateway with two tenants in a
//! namespace, the `fluxgate serve --status` process (killed on drop), raw
//! HTTP on 127.0.0.1, a webhook receiver, and the story of changes the pages
//! must tell (applied, refused, canary rolled back, manual rollback).
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::{Child, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::common::{Scratch, fluxgate, fluxgate_cmd, ok, write};
use fluxgate_control::portal::tokens::hash_token;
use fluxgate_testkit::net::{self, Flow, IF_B, Link};

pub const ACME_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
pub const GATEWAY: &str = "default pass\n";
pub const ACME: &str =
    "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000 pass\n";
/// Rule 2 added.
pub const ACME_2: &str = "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000 pass\nproto udp dport 7002 pass\n";
/// Rule 1 edited: acme's traffic to 7000 is dropped (a canary's regression).
pub const ACME_BAD: &str = "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7001 pass\nproto udp dport 7002 pass\n";
/// Does not validate (a port out of range), line 4.
pub const ACME_INVALID: &str =
    "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 70000 pass\n";
pub const GLOBEX: &str = "tenant globex\nprefix 10.77.2.0/24\ndefault pass\nproto tcp dport 23 drop\n# globex-secret-rule\n";

pub const OPERATOR_TOKEN: &str = "op-7f3c9a1d5e2b8c4f6a0d9e1b3c5a7f2e";
pub const ACME_TOKEN: &str = "acme-2b8c4f6a0d9e1b3c5a7f2e7f3c9a1d5e";
pub const GLOBEX_TOKEN: &str = "globex-9e1b3c5a7f2e7f3c9a1d5e2b8c4f6a0d";

/// A gateway with acme and globex loaded on the `b` end of a veth pair.
pub struct Gw {
    pub link: Link,
    pub s: Scratch,
    pub ns: String,
    pub rules: String,
}

impl Gw {
    pub fn new(name: &str) -> Gw {
        net::require_root();
        let link = Link::new();
        link.add_b_address(ACME_ADDR);
        let s = Scratch::new(name);
        write(&s.rules, "gateway.fg", GATEWAY);
        write(&s.rules, "acme.fg", ACME);
        write(&s.rules, "globex.fg", GLOBEX);
        let rules = s.rules.display().to_string();
        let ns = link.b.name().to_owned();
        ok(fluxgate(&s, &["-n", &ns, "load", &rules, IF_B]));
        Gw { link, s, ns, rules }
    }

    /// Writes the tokens file (owner-only), with webhooks per tenant.
    pub fn tokens(&self, webhooks: &[(&str, &str)]) -> PathBuf {
        let hook = |t: &str| {
            webhooks
                .iter()
                .find(|(n, _)| *n == t)
                .map(|(_, u)| format!(" webhook={u}"))
                .unwrap_or_default()
        };
        let text = format!(
            "# who  sha256(token)\noperator {}\ntenant acme {}{}\ntenant globex {}{}\n",
            hash_token(OPERATOR_TOKEN),
            hash_token(ACME_TOKEN),
            hook("acme"),
            hash_token(GLOBEX_TOKEN),
            hook("globex"),
        );
        let path = self.s.rules_dir("etc").join("tokens");
        std::fs::write(&path, text).expect("tokens");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    /// `fluxgate -n NS serve --status 127.0.0.1:0 --tokens FILE`.
    pub fn serve(&self, tokens: &PathBuf) -> Server {
        let mut child = fluxgate_cmd(&self.s)
            .args([
                "-n",
                &self.ns,
                "serve",
                "--status",
                "127.0.0.1:0",
                "--tokens",
            ])
            .arg(tokens)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fluxgate serve");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("serve says where");
        let url = line
            .trim()
            .strip_prefix("serving status on http://")
            .unwrap_or_else(|| panic!("unexpected: {line:?}"));
        let addr: SocketAddr = url.trim_end_matches('/').parse().expect("address");
        Server { child, addr }
    }

    /// `fluxgate -n NS apply RULES` with `extra` arguments.
    pub fn apply(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["-n", self.ns.as_str(), "apply", self.rules.as_str(), IF_B];
        args.extend_from_slice(extra);
        fluxgate(&self.s, &args)
    }

    /// The story every page must tell, for acme: its rule 2 applied; an
    /// invalid patch refused; a canary of an edited rule 1 rolled back as
    /// acme's pass rate fell; a manual rollback to generation 1.
    pub fn story(&self) {
        write(&self.s.rules, "acme.fg", ACME_2);
        ok(self.apply(&["--reason", "open port 7002"]));
        write(&self.s.rules, "acme.fg", ACME_INVALID);
        let refused = self.apply(&["--reason", "a typo"]);
        assert!(!refused.status.success(), "the invalid patch is refused");
        write(&self.s.rules, "acme.fg", ACME_BAD);
        // Half of acme's traffic passes (7000), half meets its default drop.
        let flow = Flow::start(&self.link, &[(ACME_ADDR, 7000), (ACME_ADDR, 7100)], 400);
        std::thread::sleep(Duration::from_millis(500));
        let canary = self.apply(&[
            "--reason",
            "move to 7001",
            "--canary",
            "5s",
            "--baseline",
            "1s",
        ]);
        drop(flow);
        assert_eq!(
            canary.status.code(),
            Some(9),
            "the canary rolls back: {}",
            String::from_utf8_lossy(&canary.stderr)
        );
        write(&self.s.rules, "acme.fg", ACME_2);
        ok(fluxgate(
            &self.s,
            &[
                "-n", &self.ns, "rollback", IF_B, "--tenant", "acme", "--to", "1",
            ],
        ));
    }
}

/// Writes acme's file.
pub fn write_acme(g: &Gw, text: &str) {
    write(&g.s.rules, "acme.fg", text);
}

/// The status server; killed (by its own handle) when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// SIGTERM, then waits (at most 20 s) for the process to end by itself.
    pub fn stop(mut self) -> Option<std::process::ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: signalling our own child, by its id.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gw {
    /// Whether the drop capture of the interface is switched on.
    pub fn capturing(&self) -> bool {
        let gw = fluxgate_control::Gateway::new()
            .with_bpffs(&self.s.pins)
            .with_state(&self.s.state)
            .in_netns(Some(self.ns.clone()));
        let it = gw.open_read(Some(IF_B)).expect("open");
        it.pinned()
            .capture_config()
            .expect("capture config")
            .enabled
            != 0
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Sends `raw` as is and reads the whole answer.
pub fn raw(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    c.write_all(raw).expect("send");
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `METHOD target` with `token` as a bearer token.
pub fn request(addr: SocketAddr, method: &str, target: &str, token: Option<&str>) -> Reply {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    raw(
        addr,
        format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes(),
    )
}

/// A webhook receiver on 127.0.0.1: records every POST body it answers;
/// while `hang` is set it accepts connections and never answers them.
pub struct Receiver {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    pub accepted: Arc<Mutex<usize>>,
    pub hang: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let accepted: Arc<Mutex<usize>> = Arc::default();
        let hang = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (bodies, accepted, hang, stop) =
                (bodies.clone(), accepted.clone(), hang.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut held = Vec::new();
                // Bounded: a test never runs this long.
                let until = std::time::Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                    let Ok((c, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    *accepted.lock().expect("lock") += 1;
                    if hang.load(Ordering::SeqCst) {
                        held.push(c);
                        continue;
                    }
                    if let Some(body) = read_post(c) {
                        bodies.lock().expect("lock").push(body);
                    }
                }
            });
        }
        Receiver {
            url,
            bodies,
            accepted,
            hang,
            stop,
        }
    }

    pub fn received(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().expect("lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads one POST (head and Content-Length body), answers 200.
fn read_post(mut c: TcpStream) -> Option<serde_json::Value> {
    c.set_nonblocking(false).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, len) = loop {
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, len);
        }
    };
    while buf.len() < head_end + len {
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    serde_json::from_slice(&buf[head_end..head_end + len]).ok()
}
