//! The store layer against a real etcd (no root, no kernel): rulesets are
//! content-addressed and chunked below etcd's request limit, a tampered
//! chunk is refused, and garbage collection keeps exactly what is referred
//! to.

use fluxgate_control::{
    RulesetSource,
    fleet::{
        EtcdOptions, FleetError,
        model::{Desired, IfaceDesired},
        store::{CHUNK_BYTES, FleetStore, encode},
    },
};
use fluxgate_testkit::etcd::Etcd;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn rulesets_are_content_addressed_chunked_checked_and_collected() {
    let etcd = Etcd::new();
    runtime().block_on(async {
        let client = EtcdOptions::plain([etcd.endpoint()])
            .connect()
            .await
            .expect("connect");
        let store = FleetStore::new(client.clone(), "store").expect("store");
        // A file over etcd's 1.5 MiB request limit: three chunks.
        let big = format!(
            "{}tenant big\nprefix 10.1.0.0/16\ndefault pass\n",
            "# padding line\n".repeat(2 * CHUNK_BYTES / 15 + 10)
        );
        let files = [("gateway.fg", "default pass\n".to_owned()), ("big.fg", big)];
        let source = RulesetSource::files("test", files.clone());
        let m = store.upload(&source).await.expect("upload");
        assert_eq!(m.files["big.fg"].chunks.len(), 3, "{m:?}");
        assert_eq!(m.files.len(), 2);
        // Same files, same id, nothing written again.
        let again = store
            .upload(&RulesetSource::files("elsewhere", files.clone()))
            .await
            .expect("upload again");
        assert_eq!(again, m);
        let back = store.source(&m.id).await.expect("source");
        assert_eq!(
            back.read().expect("read"),
            source.read().expect("read"),
            "round trip"
        );
        // Another version sharing gateway.fg stores only its new file.
        let v2 = RulesetSource::files(
            "v2",
            [
                ("gateway.fg", "default pass\n"),
                ("small.fg", "tenant s\nprefix 10.2.0.0/16\ndefault pass\n"),
            ],
        );
        let m2 = store.upload(&v2).await.expect("upload v2");
        assert_ne!(m2.id, m.id);
        assert_eq!(m2.files["gateway.fg"], m.files["gateway.fg"]);
        // 3,000 tenants: the file list itself goes to chunks, the manifest
        // value stays small.
        let mut many: Vec<(String, String)> = (0..3000)
            .map(|i| {
                (
                    format!("t{i}.fg"),
                    format!(
                        "tenant t{i}\nprefix 10.{}.{}.0/24\ndefault pass\n",
                        i >> 8,
                        i & 255
                    ),
                )
            })
            .collect();
        many.push(("gateway.fg".into(), "default pass\n".into()));
        let big_source = RulesetSource::files("many", many);
        let m3 = store
            .upload(&big_source)
            .await
            .expect("upload 3000 tenants");
        assert!(m3.body.is_some(), "the list was not chunked");
        assert_eq!(m3.files.len(), 3001);
        let (raw, _) = store
            .get_raw(&store.keys.ruleset(&m3.id))
            .await
            .expect("get")
            .expect("manifest");
        assert!(raw.len() < 4096, "manifest value of {} bytes", raw.len());
        assert_eq!(
            store
                .source(&m3.id)
                .await
                .expect("source")
                .read()
                .expect("read"),
            big_source.read().expect("read")
        );
        // A tampered chunk is refused, not applied.
        let chunk = &m.files["big.fg"].chunks[1];
        let mut kv = client.kv_client();
        kv.put(store.keys.file(chunk), "tenant evil\n", None)
            .await
            .expect("tamper");
        match store.source(&m.id).await {
            Err(FleetError::Corrupt { key, .. }) => assert!(key.ends_with(chunk.as_str())),
            other => panic!("tampered chunk accepted: {other:?}"),
        }
        assert!(store.source(&"0".repeat(64)).await.is_err());
        assert!(store.source("../../etc").await.is_err());
        // GC: m2 is a gateway's desired state and stays (with its chunks);
        // m is referred to by nothing and goes, with the chunks only it used.
        let desired = Desired {
            rollout: None,
            interfaces: [(
                "eth1".to_owned(),
                IfaceDesired {
                    ruleset: Some(m2.id.clone()),
                    ..IfaceDesired::default()
                },
            )]
            .into(),
        };
        kv.put(store.keys.desired("gw1"), encode(&desired), None)
            .await
            .expect("desired");
        let deleted = store.gc().await.expect("gc");
        let mut expected = vec![m.id.clone(), m3.id.clone()];
        expected.sort();
        let mut deleted = deleted;
        deleted.sort();
        assert_eq!(deleted, expected);
        assert!(store.manifest(&m.id).await.is_err());
        store.source(&m2.id).await.expect("m2 intact after GC");
        let left = store.list_keys(&store.keys.files()).await.expect("files");
        assert_eq!(left.len(), 2, "only m2's chunks are left: {left:?}");
    });
}
