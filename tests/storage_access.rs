//! The storage contract for who may call: tenants' manifests and their
//! revisions, API keys, operators and the audit log. Each test is written
//! once and runs on SQLite and PostgreSQL (the in-memory store does not
//! keep these areas).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use oms_domain::TenantId;
use oms_store::{
    NewApiKey, OperatorAuditRecord, OperatorRecord, SqlStore, Store, StoreError, TenantWrite,
};
use support::{Db, Kind};

async fn store(kind: Kind) -> (SqlStore, Db) {
    let db = Db::new(kind).await;
    (SqlStore::connect(&db.url).await.unwrap(), db)
}

fn id(raw: &str) -> TenantId {
    TenantId::parse(raw).unwrap()
}

fn key<'a>(key_id: &'a str, tenant: &'a TenantId, hash: &'a str, now: i64) -> NewApiKey<'a> {
    NewApiKey {
        id: key_id,
        tenant,
        name: "shop",
        secret_hash: hash,
        scopes: "orders:read",
        actor: "test",
        now,
    }
}

async fn tenant_writes_raise_the_revision_and_refuse_what_does_not_fit(kind: Kind) {
    let (s, _db) = store(kind).await;
    let s: &dyn Store = &s;
    let t = id("initech");
    let w = s
        .put_tenant(&t, "{\"v\":1}", TenantWrite::Create, "ada", 10)
        .await
        .unwrap();
    assert!(w.changed);
    assert_eq!(
        (w.record.revision, w.record.created_by.as_str()),
        (1, "ada")
    );
    assert!(matches!(
        s.put_tenant(&t, "{}", TenantWrite::Create, "ada", 11).await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        s.put_tenant(
            &id("nobody"),
            "{}",
            TenantWrite::Update {
                expected_revision: None
            },
            "ada",
            11
        )
        .await,
        Err(StoreError::NotFound)
    ));
    // A stale revision is refused; the current one is taken.
    assert!(matches!(
        s.put_tenant(
            &t,
            "{\"v\":2}",
            TenantWrite::Update {
                expected_revision: Some(7)
            },
            "bo",
            12
        )
        .await,
        Err(StoreError::Conflict)
    ));
    let w = s
        .put_tenant(
            &t,
            "{\"v\":2}",
            TenantWrite::Update {
                expected_revision: Some(1),
            },
            "bo",
            12,
        )
        .await
        .unwrap();
    assert_eq!(
        (w.record.revision, w.record.spec.as_str()),
        (2, "{\"v\":2}")
    );
    assert_eq!(w.record.updated_by, "bo");

    // Suspending twice is a conflict the second time; each change is a revision.
    let r = s.set_tenant_suspended(&t, true, "ada", 13).await.unwrap();
    assert!(r.is_suspended());
    assert_eq!(r.revision, 3);
    assert!(matches!(
        s.set_tenant_suspended(&t, true, "ada", 14).await,
        Err(StoreError::Conflict)
    ));
    assert!(
        !s.set_tenant_suspended(&t, false, "ada", 15)
            .await
            .unwrap()
            .is_suspended()
    );
    assert!(matches!(
        s.set_tenant_suspended(&id("nobody"), true, "ada", 15).await,
        Err(StoreError::NotFound)
    ));
    let revisions = s.tenant_revisions().await.unwrap();
    assert_eq!(revisions, vec![("initech".to_string(), 4)]);
}

async fn an_import_applies_a_file_once_and_keeps_api_changes(kind: Kind) {
    let (s, _db) = store(kind).await;
    let s: &dyn Store = &s;
    let t = id("acme");
    let import = |digest: &'static str| TenantWrite::Import {
        file_digest: digest,
    };
    assert!(
        s.put_tenant(&t, "file-1", import("d1"), "manifest", 1)
            .await
            .unwrap()
            .changed
    );
    // The same file again changes nothing, even after an API change.
    s.put_tenant(
        &t,
        "api",
        TenantWrite::Update {
            expected_revision: None,
        },
        "ada",
        2,
    )
    .await
    .unwrap();
    let again = s
        .put_tenant(&t, "file-1", import("d1"), "manifest", 3)
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(
        (again.record.spec.as_str(), again.record.revision),
        ("api", 2)
    );
    // A changed file is applied.
    let changed = s
        .put_tenant(&t, "file-2", import("d2"), "manifest", 4)
        .await
        .unwrap();
    assert!(changed.changed);
    assert_eq!(
        (changed.record.spec.as_str(), changed.record.revision),
        ("file-2", 3)
    );
}

async fn keys_rotate_once_revoke_once_and_raise_their_tenants_revision(kind: Kind) {
    let (s, _db) = store(kind).await;
    let s: &dyn Store = &s;
    let t = id("acme");
    assert!(matches!(
        s.create_api_key(&key("key_a", &t, "h-a", 1)).await,
        Err(StoreError::NotFound)
    ));
    s.put_tenant(&t, "{}", TenantWrite::Create, "ada", 1)
        .await
        .unwrap();
    let a = s.create_api_key(&key("key_a", &t, "h-a", 2)).await.unwrap();
    assert_eq!(
        (a.scopes.as_str(), a.expires_at, a.revoked_at),
        ("orders:read", None, None)
    );
    assert_eq!(s.tenant_record(&t).await.unwrap().revision, 2);

    // The successor takes the old key's name and scopes; the old one has a grace.
    let mut new = key("key_b", &t, "h-b", 3);
    new.scopes = "";
    new.name = "";
    let b = s.rotate_api_key("key_a", &new, 1_000).await.unwrap();
    assert_eq!(
        (b.name.as_str(), b.scopes.as_str()),
        ("shop", "orders:read")
    );
    let keys = s.api_keys(&t).await.unwrap();
    let old = keys.iter().find(|k| k.id == "key_a").unwrap();
    assert_eq!(
        (old.expires_at, old.replaced_by.as_deref()),
        (Some(1_000), Some("key_b"))
    );
    assert!(old.valid_at(999) && !old.valid_at(1_000));
    // A second rotation of the same key would give it two live successors.
    assert!(matches!(
        s.rotate_api_key("key_a", &key("key_c", &t, "h-c", 4), 2_000)
            .await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        s.rotate_api_key("key_zz", &key("key_d", &t, "h-d", 4), 2_000)
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.tenant_record(&t).await.unwrap().revision, 3);

    let revoked = s.revoke_api_key(&t, "key_b", 5).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(5));
    assert!(matches!(
        s.revoke_api_key(&t, "key_b", 6).await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        s.revoke_api_key(&id("globex"), "key_a", 6).await,
        Err(StoreError::NotFound)
    ));
    // A revoked key cannot be rotated back to life.
    assert!(matches!(
        s.rotate_api_key("key_b", &key("key_e", &t, "h-e", 7), 2_000)
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(s.tenant_record(&t).await.unwrap().revision, 4);

    // Last use only moves forward.
    s.touch_api_keys(&[("key_a".into(), 50)]).await.unwrap();
    s.touch_api_keys(&[("key_a".into(), 40)]).await.unwrap();
    let keys = s.api_keys(&t).await.unwrap();
    assert_eq!(
        keys.iter().find(|k| k.id == "key_a").unwrap().last_used_at,
        Some(50)
    );
}

async fn operators_are_found_by_token_until_revoked_and_audited(kind: Kind) {
    let (s, _db) = store(kind).await;
    let s: &dyn Store = &s;
    let op = OperatorRecord {
        name: "vera".into(),
        role: "viewer".into(),
        token_hash: "t-1".into(),
        created_by: "ada".into(),
        created_at: 1,
        revoked_at: None,
        last_used_at: None,
    };
    s.create_operator(&op).await.unwrap();
    assert!(matches!(
        s.create_operator(&op).await,
        Err(StoreError::Conflict)
    ));
    let found = s.operator_by_token("t-1", 5).await.unwrap().unwrap();
    assert_eq!(found.role, "viewer");
    assert!(s.operator_by_token("t-2", 5).await.unwrap().is_none());
    assert_eq!(s.operators().await.unwrap()[0].last_used_at, Some(5));
    s.revoke_operator("vera", 6).await.unwrap();
    assert!(matches!(
        s.revoke_operator("vera", 7).await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        s.revoke_operator("nobody", 7).await,
        Err(StoreError::NotFound)
    ));
    assert!(s.operator_by_token("t-1", 8).await.unwrap().is_none());
    // The name can be given again, to a new token.
    let again = OperatorRecord {
        token_hash: "t-3".into(),
        ..op
    };
    s.create_operator(&again).await.unwrap();
    assert!(s.operator_by_token("t-3", 9).await.unwrap().is_some());

    for (at, tenant) in [(10, Some("acme")), (11, None), (12, Some("globex"))] {
        s.audit(&OperatorAuditRecord {
            at,
            operator: "ada".into(),
            source: "10.0.0.1".into(),
            action: "tenant.suspend".into(),
            tenant_id: tenant.map(str::to_string),
            target: "x".into(),
            detail: None,
        })
        .await
        .unwrap();
    }
    let all = s.audit_log(None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|a| a.at).collect::<Vec<_>>(),
        vec![12, 11, 10]
    );
    let acme = s.audit_log(Some(&id("acme")), 10).await.unwrap();
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0].source, "10.0.0.1");
    assert_eq!(s.audit_log(None, 2).await.unwrap().len(), 2);
}

fn stats_row(host: &str, version: &str, calls: i64, at: i64) -> oms_store::PluginStatsRecord {
    oms_store::PluginStatsRecord {
        host: host.into(),
        tenant_id: "acme".into(),
        slot: "guardrail".into(),
        version: version.into(),
        calls,
        succeeded: calls - 1,
        traps: 1,
        timeouts: 0,
        out_of_fuel: 0,
        output_too_large: 0,
        invalid_answers: 0,
        other_failures: 0,
        fuel_used_total: calls * 100,
        latency: Some("ab01".into()),
        updated_at: at,
    }
}

fn log_row(id: &str, host: &str, at: i64) -> oms_store::PluginLogRecord {
    oms_store::PluginLogRecord {
        id: id.into(),
        tenant_id: "acme".into(),
        slot: "guardrail".into(),
        host: host.into(),
        version: "v1".into(),
        at,
        line: format!("line {id}"),
    }
}

async fn plugin_telemetry_is_kept_per_host_and_read_across_hosts(kind: Kind) {
    let (s, _db) = store(kind).await;
    let s: &dyn Store = &s;
    // Each host's counts are cumulative: a later write replaces its row.
    s.save_plugin_stats(&[stats_row("h1", "v1", 5, 1), stats_row("h2", "v1", 3, 1)])
        .await
        .unwrap();
    s.save_plugin_stats(&[stats_row("h1", "v1", 9, 2)])
        .await
        .unwrap();
    let rows = s.plugin_stats("acme", "guardrail").await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.host.as_str(), r.calls, r.updated_at))
            .collect::<Vec<_>>(),
        vec![("h1", 9, 2), ("h2", 3, 1)]
    );
    assert_eq!(rows[0].latency.as_deref(), Some("ab01"));
    assert!(
        s.plugin_stats("acme", "fraud-check")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.plugin_stats("globex", "guardrail")
            .await
            .unwrap()
            .is_empty()
    );

    // Lines from every host; the newest `limit`, oldest first.
    s.append_plugin_logs(&[
        log_row("a", "h1", 10),
        log_row("b", "h2", 12),
        log_row("c", "h1", 11),
    ])
    .await
    .unwrap();
    let newest = s.plugin_logs("acme", "guardrail", 2).await.unwrap();
    assert_eq!(
        newest.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        vec!["c", "b"]
    );
    assert_eq!(s.prune_plugin_logs(11).await.unwrap(), 1);
    assert_eq!(
        s.plugin_logs("acme", "guardrail", 10).await.unwrap().len(),
        2
    );
}

on_both_backends!(
    plugin_telemetry_is_kept_per_host_and_read_across_hosts,
    tenant_writes_raise_the_revision_and_refuse_what_does_not_fit,
    an_import_applies_a_file_once_and_keeps_api_changes,
    keys_rotate_once_revoke_once_and_raise_their_tenants_revision,
    operators_are_found_by_token_until_revoked_and_audited,
);
