//! A real etcd (Debian's `etcd-server`, `/usr/bin/etcd`) for tests, benches
//! and the demo: one member on 127.0.0.1 with free ports and a scratch data
//! directory, killed (and its directory removed) on drop, also when a test
//! fails. It can be killed and started again on the same ports and data
//! (the fail-static tests), and started with TLS and client certificates.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::scratch::ScratchDir;

/// The etcd binary the tests run.
pub const ETCD: &str = "/usr/bin/etcd";

/// Server TLS files (PEM): the server's certificate and key, and the CA that
/// signed the clients' certificates (client certificates are then required).
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The server's certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA clients' certificates must chain to.
    pub client_ca: PathBuf,
}

/// One etcd member on 127.0.0.1, stopped on drop.
pub struct Etcd {
    child: Option<Child>,
    dir: ScratchDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<ServerTls>,
}

/// A port nothing listens on now (the kernel's pick for an ephemeral bind).
pub fn free_port() -> u16 {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

impl Etcd {
    /// Starts etcd (plain HTTP) and waits until it is healthy.
    ///
    /// Panics, saying so, when `/usr/bin/etcd` is missing (`cargo xtask setup`
    /// installs it) or it does not become healthy within 20 s.
    #[expect(
        clippy::new_without_default,
        reason = "starting a server process is not a default value"
    )]
    pub fn new() -> Etcd {
        Etcd::start(None)
    }

    /// Starts etcd serving TLS only, requiring client certificates signed by
    /// `tls.client_ca` (`--client-cert-auth`).
    pub fn with_tls(tls: ServerTls) -> Etcd {
        Etcd::start(Some(tls))
    }

    fn start(tls: Option<ServerTls>) -> Etcd {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: `cargo xtask setup` installs Debian's etcd-server"
        );
        let mut etcd = Etcd {
            child: None,
            dir: ScratchDir::new("etcd"),
            client_port: free_port(),
            peer_port: free_port(),
            tls,
        };
        etcd.restart();
        etcd
    }

    /// The client URL (`http://127.0.0.1:PORT`, or `https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path("data")
    }

    /// Whether the process runs.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills etcd with SIGKILL (its data stays): clients see it unreachable.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again (after [`Etcd::kill`]) on the same ports and data, and
    /// waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = self.endpoint();
        let mut cmd = Command::new(ETCD);
        cmd.arg("--name")
            .arg("fgtest")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("fgtest={peer}"))
            // No metrics listener, no proxy: one member, these two ports.
            .arg("--log-level")
            .arg("warn")
            .arg("--logger")
            .arg("zap");
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.client_ca)
                .arg("--client-cert-auth");
        }
        let log = std::fs::File::create(self.dir.path("etcd.log")).expect("etcd log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log)
            .spawn()
            .expect("start /usr/bin/etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.healthy() {
                return;
            }
            if !self.running() {
                panic!("etcd exited at start: {}", self.log());
            }
            if Instant::now() > deadline {
                panic!("etcd not healthy within 20 s: {}", self.log());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The end of its log (for a failing test's message).
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path("etcd.log")).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text.get(start..).unwrap_or(&text).to_owned()
    }

    /// Whether it answers: with TLS, whether the port accepts; otherwise
    /// `GET /health` says `"health":"true"`.
    fn healthy(&self) -> bool {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.client_port);
        let Ok(mut s) = TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)) else {
            return false;
        };
        if self.tls.is_some() {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut reply = String::new();
        let _ = s.take(4096).read_to_string(&mut reply);
        reply.contains("\"health\":\"true\"")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A throw-away PKI made with `openssl`: a CA, a server certificate for
/// 127.0.0.1 and one client certificate, all PEM files in `dir`.
#[derive(Clone, Debug)]
pub struct TestPki {
    /// The CA certificate (trusted by both sides).
    pub ca: PathBuf,
    /// What the server needs.
    pub server: ServerTls,
    /// Client certificate (CN `fluxgate-client`).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

impl TestPki {
    /// Generates the PKI in `dir` (EC P-256, valid two days).
    pub fn new(dir: &Path) -> TestPki {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=fluxgate-test-ca",
                ],
            ]
            .concat(),
        );
        for (name, cn, ext) in [
            (
                "server",
                "127.0.0.1",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
            ),
            ("client", "fluxgate-client", "extendedKeyUsage=clientAuth"),
        ] {
            std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write ext");
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let pem = format!("{name}.pem");
            let ext = format!("{name}.ext");
            openssl(
                &[
                    &["req"][..],
                    &ec,
                    &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={cn}")],
                ]
                .concat(),
            );
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        TestPki {
            ca: dir.join("ca.pem"),
            server: ServerTls {
                cert: dir.join("server.pem"),
                key: dir.join("server.key"),
                client_ca: dir.join("ca.pem"),
            },
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_comes_back_after_a_kill() {
        if !Path::new(ETCD).exists() {
            panic!("{ETCD} is missing: run `cargo xtask setup`");
        }
        let mut etcd = Etcd::new();
        assert!(etcd.healthy());
        etcd.kill();
        assert!(!etcd.healthy());
        etcd.restart();
        assert!(etcd.healthy(), "{}", etcd.log());
    }
}
