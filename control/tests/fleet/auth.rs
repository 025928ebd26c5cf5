//! TLS with client certificates and etcd authentication: agents with
//! their gateway's credentials realize a rollout, and those credentials
//! cannot write another gateway's keys, any desired state, a ruleset or a
//! rollout.

use fluxgate_control::fleet::{EtcdOptions, FleetError, Keys, roles};
use fluxgate_testkit::{
    etcd::{Etcd, TestPki},
    scratch::ScratchDir,
};

use crate::harness::{Fleet, json, rules, text};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_gateways_credentials_write_only_its_own_keys() {
    let dir = ScratchDir::new("pki");
    let pki = TestPki::new(dir.dir());
    let etcd = Etcd::with_tls(pki.server.clone());
    let fleet = Fleet::name_for("auth");
    let endpoint = etcd.endpoint();
    let tls = |user: Option<(&str, &str)>| EtcdOptions {
        endpoints: vec![endpoint.clone()],
        ca: Some(pki.ca.clone()),
        cert: Some((pki.client_cert.clone(), pki.client_key.clone())),
        user: user.map(|(u, p)| (u.to_owned(), p.to_owned())),
        timeout: None,
    };
    let rt = runtime();
    rt.block_on(async {
        let admin = tls(None).connect().await.expect("connect over TLS");
        roles::add_controller_user(&admin, &fleet, "ctl", "ctl-pw")
            .await
            .expect("controller user");
        for gw in ["gw0", "gw1"] {
            roles::add_gateway_user(&admin, &fleet, gw, &format!("{gw}-pw"))
                .await
                .expect("gateway user");
        }
        roles::enable_auth(&admin, "root-pw")
            .await
            .expect("auth on");
    });
    let files = |user: &str, pw: &str| {
        vec![
            (
                "FLUXGATE_ETCD_CACERT".to_owned(),
                pki.ca.display().to_string(),
            ),
            (
                "FLUXGATE_ETCD_CERT".to_owned(),
                pki.client_cert.display().to_string(),
            ),
            (
                "FLUXGATE_ETCD_KEY".to_owned(),
                pki.client_key.display().to_string(),
            ),
            ("FLUXGATE_ETCD_USER".to_owned(), user.to_owned()),
            ("FLUXGATE_ETCD_PASSWORD".to_owned(), pw.to_owned()),
        ]
    };
    let f = Fleet::with_etcd(
        &fleet,
        2,
        etcd,
        |gw| files(&roles::gateway_role(&fleet, gw), &format!("{gw}-pw")),
        files("ctl", "ctl-pw"),
    );
    f.wait_registered(2);
    // Agents with their own credentials realize a rollout.
    let v2 = f.ruleset("v2", &rules::ACME_7001);
    let out = f.fleet(&[
        "rollout",
        v2.to_str().expect("path"),
        "--waves",
        "1,100%",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["state"], "done");
    for g in &f.gws {
        assert_eq!(g.generation(), 2, "{}", g.name);
    }
    // gw0's credentials: its own keys only.
    rt.block_on(async {
        let keys = Keys::new(&fleet).expect("keys");
        let gw0 = tls(Some((&roles::gateway_role(&fleet, "gw0"), "gw0-pw")))
            .connect()
            .await
            .expect("gw0 connects");
        let mut kv = gw0.kv_client();
        kv.get(keys.desired("gw0"), None)
            .await
            .expect("reads its desired state");
        kv.put(keys.status("gw0"), "{}", None)
            .await
            .expect("writes its status");
        for key in [
            keys.status("gw1"),
            keys.gateway("gw1"),
            keys.desired("gw0"),
            keys.desired("gw1"),
            keys.ruleset(&"0".repeat(64)),
            keys.file(&"0".repeat(64)),
            keys.rollout("r1"),
            keys.active(),
            keys.lock(),
        ] {
            let err = kv.put(key.as_str(), "x", None).await.expect_err(&key);
            assert!(
                err.to_string().contains("permission denied"),
                "{key}: {err}"
            );
        }
        assert!(
            kv.get(keys.desired("gw1"), None).await.is_err(),
            "reads gw1's desired state"
        );
        // Without a client certificate, no connection at all.
        let no_cert = EtcdOptions {
            cert: None,
            ..tls(Some(("ctl", "ctl-pw")))
        };
        let refused = match no_cert.connect().await {
            Err(FleetError::Etcd(_)) => true,
            Ok(c) => c.kv_client().get("x", None).await.is_err(),
            Err(other) => panic!("{other}"),
        };
        assert!(refused, "a client without a certificate got in");
    });
}
