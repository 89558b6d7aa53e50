//! The storage contract. Each test body is written once and runs against
//! SQLite and against PostgreSQL, and those of the areas the in-memory store
//! keeps (orders, sagas, stock, outbox) against it too (`on_every_store!`),
//! so the engine's own tests run on a store that behaves like the real ones.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use oms_domain::{OrderId, TenantId};
use oms_store::{
    InventoryOp, OrderFilter, OutboxClaim, OutboxMessage, Recordings, SqlStore, Store, StoreError,
};
use serde_json::json;
use std::sync::Arc;
use support::stores::*;
use support::{Db, Kind};

async fn order_round_trips_with_gapless_history(under: Under) {
    let (store, _db) = store(under).await;
    let id = new_order(&*store, "c1", 1_000, 500).await;
    let read = store.order(&tenant(), &id).await.unwrap();
    assert_eq!(
        (read.total_minor, read.version, read.event_seq),
        (500, 0, 1)
    );

    let mut t = effects(&id, 0, Some(format!("cmd-{id}")));
    t.events = vec![("a".into(), json!({})), ("b".into(), json!({}))];
    t.patch.status = Some("CONFIRMED".into());
    assert_eq!(store.commit_transition(&t).await.unwrap(), 1);
    let events = store.order_events(&tenant(), &id).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(events[2].event_type, "b");
    let read = store.order(&tenant(), &id).await.unwrap();
    assert_eq!(
        (read.status.as_str(), read.version, read.event_seq),
        ("CONFIRMED", 1, 3)
    );

    // Another tenant cannot see it.
    let other = TenantId::parse("globex").unwrap();
    assert!(matches!(
        store.order(&other, &id).await,
        Err(StoreError::NotFound)
    ));
}

async fn a_consumed_command_cannot_be_applied_twice(under: Under) {
    let (store, _db) = store(under).await;
    let id = new_order(&*store, "c1", 1_000, 500).await;
    let cmd = format!("cmd-{id}");
    assert_eq!(store.due_commands(1_000, 10).await.unwrap().len(), 1);
    assert!(store.due_commands(999, 10).await.unwrap().is_empty());

    let waiting = store.order_for_command(&tenant(), &id, &cmd).await.unwrap();
    assert_eq!(waiting.map(|o| o.version), Some(0));

    let mut first = effects(&id, 0, Some(cmd.clone()));
    first.commands = vec![command("next", 5_000)];
    store.commit_transition(&first).await.unwrap();
    // Applied: its order is no longer handed out for it.
    assert!(
        store
            .order_for_command(&tenant(), &id, &cmd)
            .await
            .unwrap()
            .is_none()
    );
    // A redelivery of the same command, even against the new version, changes nothing.
    let again = effects(&id, 1, Some(cmd));
    assert!(matches!(
        store.commit_transition(&again).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(store.order(&tenant(), &id).await.unwrap().version, 1);
    assert_eq!(store.next_command_at().await.unwrap(), Some(5_000));
}

/// The dispatcher's read: per tenant, its due commands oldest first, as
/// many as asked, the skipped ones left out, each with its order as it is.
async fn due_work_is_read_per_tenant_with_each_order(under: Under) {
    let (store, _db) = store(under).await;
    let globex = TenantId::parse("globex").unwrap();
    let mut acme = Vec::new();
    for at in [1_000, 1_001, 1_002, 9_000] {
        acme.push(new_order(&*store, "c1", at, 500).await);
    }
    // Globex's commands are newer than every due one of acme's.
    let mut theirs = Vec::new();
    for at in [2_000, 2_001] {
        let id = oms_clock::new_order_id();
        let mut record = order_record(&id, "g1", at, 700);
        record.tenant_id = globex.to_string();
        let mut t = effects(&id, 0, None);
        t.tenant = globex.clone();
        t.events = vec![("order.created".into(), json!({}))];
        t.commands = vec![command(&format!("cmd-{id}"), at)];
        store
            .create_order(&oms_store::NewOrder {
                record,
                effects: t,
                idempotency: None,
            })
            .await
            .unwrap();
        theirs.push(id);
    }
    // One of acme's is applied: its order moves on, its command is gone.
    let mut t = effects(&acme[1], 0, Some(format!("cmd-{}", acme[1])));
    t.patch.status = Some("CONFIRMED".into());
    store.commit_transition(&t).await.unwrap();

    let skip = vec![format!("cmd-{}", acme[0])];
    let work = store
        .due_work(&[(tenant(), 5), (globex.clone(), 1)], &skip, 5_000)
        .await
        .unwrap();
    let got: Vec<(String, String, i64, i64)> = work
        .iter()
        .map(|(c, o)| {
            assert_eq!((&c.tenant_id, &c.order_id), (&o.tenant_id, &o.id));
            (c.id.clone(), o.tenant_id.clone(), o.total_minor, o.version)
        })
        .collect();
    // Each order as a read of it by id has it, every column (SQLite reads
    // the row through its own connection, by column position).
    for (c, o) in &work {
        let id = OrderId::parse(&o.id).unwrap();
        let tenant = TenantId::parse(&o.tenant_id).unwrap();
        let read = store.order(&tenant, &id).await.unwrap();
        assert_eq!(format!("{o:?}"), format!("{read:?}"), "command {}", c.id);
        assert!((1_000..=5_000).contains(&c.available_at), "command {c:?}");
    }
    let mut got = got;
    got.sort();
    let mut want = vec![
        (format!("cmd-{}", acme[2]), "acme".to_string(), 500, 0),
        (format!("cmd-{}", theirs[0]), "globex".to_string(), 700, 0),
    ];
    want.sort();
    assert_eq!(got, want);
    // The room counts only what is returned: a skipped command takes none
    // of it; without skips the oldest comes first.
    let ids = |work: Vec<(oms_store::CommandRecord, oms_store::OrderRecord)>| {
        work.into_iter().map(|(c, _)| c.id).collect::<Vec<_>>()
    };
    let one = [(tenant(), 1)];
    let read = store.due_work(&one, &skip, 5_000).await.unwrap();
    assert_eq!(ids(read), vec![format!("cmd-{}", acme[2])]);
    let read = store.due_work(&one, &[], 5_000).await.unwrap();
    assert_eq!(ids(read), vec![format!("cmd-{}", acme[0])]);
    let both = [format!("cmd-{}", acme[0]), format!("cmd-{}", acme[2])];
    assert!(store.due_work(&one, &both, 5_000).await.unwrap().is_empty());
    // Nothing asked, nothing read; a tenant with none due reads nothing.
    assert!(store.due_work(&[], &[], 5_000).await.unwrap().is_empty());
    let none = TenantId::parse("initech").unwrap();
    assert!(
        store
            .due_work(&[(none, 10)], &[], 5_000)
            .await
            .unwrap()
            .is_empty()
    );
    // Many tenants at once (more than one statement's worth).
    let many: Vec<(TenantId, i64)> = (0..40)
        .map(|i| (TenantId::parse(&format!("t{i}")).unwrap(), 3))
        .chain([(globex, 3)])
        .collect();
    assert_eq!(store.due_work(&many, &[], 5_000).await.unwrap().len(), 2);
}

async fn a_stale_version_is_refused_and_leaves_nothing(under: Under) {
    let (store, _db) = store(under).await;
    let id = new_order(&*store, "c1", 1_000, 500).await;
    store
        .commit_transition(&effects(&id, 0, None))
        .await
        .unwrap();
    let mut stale = effects(&id, 0, Some(format!("cmd-{id}")));
    stale.events = vec![("x".into(), json!({}))];
    stale.outbox = vec![OutboxMessage {
        id: "m1".into(),
        topic: "t".into(),
        event_type: "x".into(),
        payload: json!({}),
        available_at: None,
    }];
    assert!(matches!(
        store.commit_transition(&stale).await,
        Err(StoreError::Conflict)
    ));
    // The command was not consumed and nothing was written.
    assert_eq!(store.pending_commands().await.unwrap(), 1);
    assert_eq!(store.order_events(&tenant(), &id).await.unwrap().len(), 1);
    assert_eq!(store.unpublished_count().await.unwrap(), 0);
}

async fn outbox_is_claimed_in_order_and_removed_once_published(under: Under) {
    let (store, _db) = store(under).await;
    let id = new_order(&*store, "c1", 1_000, 500).await;
    let mut t = effects(&id, 0, None);
    t.outbox = (0..3)
        .map(|i| OutboxMessage {
            id: format!("m{i}"),
            topic: "oms.order-events.v1".into(),
            event_type: "x".into(),
            payload: json!({ "i": i }),
            available_at: None,
        })
        .collect();
    // A retry's command waits for its time.
    t.outbox.push(OutboxMessage {
        id: "later".into(),
        topic: "oms.saga-commands.v1".into(),
        event_type: "saga.command".into(),
        payload: json!({}),
        available_at: Some(t.now + 60_000),
    });
    let now = t.now;
    store.commit_transition(&t).await.unwrap();
    let ids = |c: &OutboxClaim| c.records.iter().map(|m| m.id.clone()).collect::<Vec<_>>();

    // The relay's lag: the longest-due message, not the one still waiting.
    assert_eq!(store.oldest_due_unpublished(now).await.unwrap(), Some(now));
    assert_eq!(store.oldest_due_unpublished(now - 1).await.unwrap(), None);
    let first = store.claim_outbox(now, 2).await.unwrap();
    assert_eq!(ids(&first), vec!["m0", "m1"]);
    if under == Under::Sql(Kind::Postgres) {
        // Another host's relay meanwhile: m0 is held, so this order's later
        // messages must wait for it rather than overtake it.
        let other = store.claim_outbox(now, 10).await.unwrap();
        assert_eq!(ids(&other), Vec::<String>::new());
        store.release(other).await.unwrap();
    }
    store.complete(first, now).await.unwrap();
    assert_eq!(store.unpublished_count().await.unwrap(), 2);
    let rest = store.claim_outbox(now, 10).await.unwrap();
    assert_eq!(ids(&rest), vec!["m2"]);
    store.release(rest).await.unwrap();
    // Released unpublished: offered again.
    let again = store.claim_outbox(now, 10).await.unwrap();
    assert_eq!(ids(&again), vec!["m2"]);
    store.complete(again, now).await.unwrap();
    assert_eq!(
        store.next_outbox_due(now).await.unwrap(),
        Some(now + 60_000)
    );
    assert_eq!(
        store.oldest_due_unpublished(now + 59_999).await.unwrap(),
        None
    );
    assert_eq!(
        store.oldest_due_unpublished(now + 60_000).await.unwrap(),
        Some(now + 60_000)
    );
    let due = store.claim_outbox(now + 60_000, 10).await.unwrap();
    assert_eq!(ids(&due), vec!["later"]);
    store.complete(due, now).await.unwrap();
    assert_eq!(store.unpublished_count().await.unwrap(), 0);
}

async fn orders_list_newest_first_by_status_and_cursor(under: Under) {
    let (store, _db) = store(under).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(new_order(&*store, "c", 1_000 + i, 100).await);
    }
    let mut t = effects(&ids[1], 0, None);
    t.patch.status = Some("CONFIRMED".into());
    store.commit_transition(&t).await.unwrap();

    let page = store
        .list_orders(&tenant(), &OrderFilter::default(), None, 2)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        vec![ids[4].to_string(), ids[3].to_string()]
    );
    let next = store
        .list_orders(&tenant(), &OrderFilter::default(), Some(&page[1].id), 10)
        .await
        .unwrap();
    assert_eq!(next.len(), 3);
    let confirmed = store
        .list_orders(
            &tenant(),
            &OrderFilter {
                status: Some("CONFIRMED"),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(confirmed.len(), 1);
    assert_eq!(confirmed[0].id, ids[1].to_string());

    // Operators search by customer and by saga state too.
    let other = new_order(&*store, "d", 2_000, 100).await;
    let mut t = effects(&ids[2], 0, None);
    t.patch.saga_status = Some("STUCK".into());
    store.commit_transition(&t).await.unwrap();
    let only = |f: OrderFilter<'static>| {
        let store = store.clone();
        async move {
            let found = store.list_orders(&tenant(), &f, None, 10).await.unwrap();
            found.into_iter().map(|o| o.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        only(OrderFilter {
            customer: Some("d"),
            ..Default::default()
        })
        .await,
        vec![other.to_string()]
    );
    assert_eq!(
        only(OrderFilter {
            saga_status: Some("STUCK"),
            customer: Some("c"),
            ..Default::default()
        })
        .await,
        vec![ids[2].to_string()]
    );
}

/// Operators' view: sagas in one state, of one tenant or all, the longest
/// in that state first.
async fn sagas_are_found_by_state_longest_in_it_first(under: Under) {
    let (store, _db) = store(under).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(new_order(&*store, "c", 1_000 + i, 100).await);
    }
    // Stuck at different times: ids[2] first, then ids[0].
    for (id, at) in [(&ids[2], 5_000), (&ids[0], 6_000)] {
        let mut t = effects(id, 0, None);
        t.patch.saga_status = Some("STUCK".into());
        t.now = at;
        store.commit_transition(&t).await.unwrap();
    }
    // A later change that leaves the state as it was (named again or not)
    // does not move ids[2] behind ids[0]: it is stuck since 5,000.
    for (version, status) in [(1, Some("STUCK")), (2, None)] {
        let mut t = effects(&ids[2], version, None);
        t.patch.saga_status = status.map(Into::into);
        t.patch.status = Some("ON_HOLD".into());
        t.now = 7_000 + version;
        store.commit_transition(&t).await.unwrap();
    }
    let stuck = store
        .orders_in_saga_status("STUCK", Some(&tenant()), None, 10)
        .await
        .unwrap();
    assert_eq!(
        stuck.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        vec![ids[2].to_string(), ids[0].to_string()]
    );
    let everywhere = store
        .orders_in_saga_status("STUCK", None, None, 1)
        .await
        .unwrap();
    assert_eq!(everywhere.len(), 1);
    let other = TenantId::parse("globex").unwrap();
    let none = store
        .orders_in_saga_status("STUCK", Some(&other), None, 10)
        .await
        .unwrap();
    assert!(none.is_empty());
    // Placed before a time: ids[0] (at 1,000) but not ids[2] (at 1,002).
    let long = store
        .orders_in_saga_status("STUCK", None, Some(1_001), 10)
        .await
        .unwrap();
    assert_eq!(
        long.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        vec![ids[0].to_string()]
    );
    let counts = store.count_sagas_by_tenant("STUCK").await.unwrap();
    assert_eq!(counts, vec![("acme".to_string(), 2)]);
    let running = store.count_sagas_by_tenant("RUNNING").await.unwrap();
    assert_eq!(running, vec![("acme".to_string(), 2)]);
}

async fn customer_history_counts_recent_orders_only(under: Under) {
    let (store, _db) = store(under).await;
    let _old = new_order(&*store, "cust", 100, 1_000).await;
    let _a = new_order(&*store, "cust", 5_000, 2_000).await;
    let b = new_order(&*store, "cust", 6_000, 3_000).await;
    let _other = new_order(&*store, "someone-else", 6_000, 9_000).await;
    let h = store
        .customer_history(&tenant(), "cust", "USD", 1_000, &b)
        .await
        .unwrap();
    assert_eq!((h.orders, h.spend), (1, 2_000));
}

/// Hosts starting together on one database (or concurrent uploads)
/// register the same plugin at once: one version results, nobody fails.
async fn concurrent_registrations_of_one_plugin_agree_on_its_version(kind: Kind) {
    let db = Db::new(kind).await;
    let first: Arc<dyn Store> = Arc::new(SqlStore::connect(&db.url).await.unwrap());
    // Two hosts on PostgreSQL; SQLite serves one host, whose single writer
    // the concurrent calls share.
    let second = match kind {
        Kind::Postgres => Arc::new(SqlStore::connect(&db.url).await.unwrap()) as Arc<dyn Store>,
        Kind::Sqlite => first.clone(),
    };
    let stores = [first, second];
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            store
                .put_plugin_version(
                    &tenant(),
                    "guardrail",
                    "sha256:aa",
                    b"bytes",
                    "manifest",
                    1_000,
                )
                .await
                .unwrap()
                .0
                .version
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1);
    }
    let (other, _) = stores[0]
        .put_plugin_version(
            &tenant(),
            "guardrail",
            "sha256:bb",
            b"other",
            "manifest",
            2_000,
        )
        .await
        .unwrap();
    assert_eq!(other.version, 2);
}

/// Many writes at once (a group-commit batch on the SQL stores): each is
/// answered alone. A stale version, a redelivered command and a short
/// reservation fail and leave nothing of theirs, while every other write
/// in the same moment is applied whole, with a gapless history.
async fn concurrent_writes_are_each_all_or_nothing(under: Under) {
    let (store, _db) = store(under).await;
    set(&*store, "RARE", "main", 1).await.unwrap();
    let mut orders = Vec::new();
    for i in 0..24 {
        orders.push(new_order(&*store, &format!("c{i}"), 1_000, 100).await);
    }
    // Order 0's command is consumed first, so its second consumption is a redelivery.
    let redelivered = orders[0].clone();
    store
        .commit_transition(&effects(
            &redelivered,
            0,
            Some(format!("cmd-{redelivered}")),
        ))
        .await
        .unwrap();
    let tasks: Vec<_> = orders
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                let mut t = effects(&id, 0, Some(format!("cmd-{id}")));
                match i {
                    0 => t.expected_version = 1,
                    1 => t.expected_version = 7,
                    2 | 3 => t.inventory = Some(InventoryOp::Reserve(vec![("RARE".into(), 1)])),
                    _ => {}
                }
                t.events = vec![("a".into(), json!({ "i": i })), ("b".into(), json!({}))];
                t.commands = vec![command(&format!("next-{id}"), 9_000)];
                t.outbox = vec![OutboxMessage {
                    id: format!("m-{id}"),
                    topic: "t".into(),
                    event_type: "a".into(),
                    payload: json!({ "i": i }),
                    available_at: None,
                }];
                (i, store.commit_transition(&t).await)
            })
        })
        .collect();
    let mut applied = 0;
    let mut short = 0;
    for task in tasks {
        let (i, answer) = task.await.unwrap();
        match (i, answer) {
            (0, Err(StoreError::Duplicate)) | (1, Err(StoreError::Conflict)) => {}
            (2 | 3, Err(StoreError::InsufficientStock { .. })) => short += 1,
            (_, Ok(v)) => {
                assert_eq!(v, 1, "write {i}");
                applied += 1;
            }
            (i, other) => panic!("write {i}: unexpected {other:?}"),
        }
    }
    // One of the two reservations got the one unit.
    assert_eq!((applied, short), (21, 1));
    assert_eq!(stock(&*store, "RARE").await, vec![("main".into(), 1, 1)]);
    for (i, id) in orders.iter().enumerate() {
        let order = store.order(&tenant(), id).await.unwrap();
        let events = store.order_events(&tenant(), id).await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        if order.version == 1 && i != 0 {
            assert_eq!(seqs, vec![1, 2, 3], "order {i}");
        } else if i == 0 {
            // Its first consumption wrote no events; the redelivery nothing.
            assert_eq!((order.version, seqs), (1, vec![1]), "order 0");
        } else {
            assert_eq!(
                (order.version, seqs),
                (0, vec![1]),
                "order {i}: left nothing"
            );
        }
    }
    // The refused writes' commands are still there to run; the applied ones' successors wait.
    assert_eq!(store.pending_commands().await.unwrap(), 2 + 21);
    assert_eq!(store.unpublished_count().await.unwrap(), 21);
}

/// Recorded plugin calls: a batch larger than one multi-row statement is
/// kept whole, read back oldest first per tenant and slot (a tenant's step
/// under `step:<name>`), and pruned to the newest, however many must go.
async fn recorded_calls_are_kept_in_order_and_pruned(kind: Kind) {
    let db = Db::new(kind).await;
    let store = SqlStore::connect(&db.url).await.unwrap();
    let call = |slot: &str, i: i64| oms_store::RecordedCall {
        tenant_id: "acme".into(),
        slot: slot.into(),
        version: "v1".into(),
        order_id: format!("ord_{i:03}"),
        input: json!({ "i": i }).to_string(),
        output: "{}".into(),
        verdict: format!("ok {i}"),
        fuel_used: i,
        duration_us: 1,
        at: i,
    };
    let calls: Vec<_> = (0..100)
        .map(|i| {
            call(
                if i % 2 == 0 {
                    "guardrail"
                } else {
                    "step:loyalty-points"
                },
                i,
            )
        })
        .collect();
    store.record_calls(&calls).await.unwrap();
    let acme = tenant();
    let steps = store
        .recorded_calls(&acme, "step:loyalty-points", 1_000)
        .await
        .unwrap();
    let expected: Vec<_> = calls
        .iter()
        .filter(|c| c.slot != "guardrail")
        .cloned()
        .collect();
    assert_eq!(steps, expected);
    let newest = store.recorded_calls(&acme, "guardrail", 3).await.unwrap();
    let orders: Vec<&str> = newest.iter().map(|c| c.order_id.as_str()).collect();
    assert_eq!(orders, ["ord_094", "ord_096", "ord_098"]);
    let other = TenantId::parse("globex").unwrap();
    assert!(
        store
            .recorded_calls(&other, "guardrail", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.prune_recorded_calls(10).await.unwrap(), 80);
    let kept = store
        .recorded_calls(&acme, "guardrail", 1_000)
        .await
        .unwrap();
    assert_eq!(kept.len(), 10);
    assert_eq!(kept.last().unwrap().order_id, "ord_098");
    // More than one pruning statement deletes (each a member of one of the
    // writer's batches): every excess call goes, the newest stay, the other
    // slot untouched.
    let many: Vec<_> = (100..1_300).map(|i| call("guardrail", i)).collect();
    store.record_calls(&many).await.unwrap();
    assert_eq!(store.prune_recorded_calls(10).await.unwrap(), 1_200);
    let kept: Vec<String> = store
        .recorded_calls(&acme, "guardrail", 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.order_id)
        .collect();
    let newest: Vec<String> = (1_290..1_300).map(|i| format!("ord_{i:03}")).collect();
    assert_eq!(kept, newest);
    let steps = store
        .recorded_calls(&acme, "step:loyalty-points", 1_000)
        .await
        .unwrap();
    assert_eq!(steps.len(), 10);
    assert_eq!(steps.last().unwrap().order_id, "ord_099");
}

// Plugin versions and recorded calls are kept by the SQL stores only.
on_both_backends!(
    concurrent_registrations_of_one_plugin_agree_on_its_version,
    recorded_calls_are_kept_in_order_and_pruned
);

/// Order numbers: consecutive per tenant from 1, tenants apart, and
/// allocations made at once (several tasks; on PostgreSQL the same as from
/// several hosts) never overlap nor leave a gap.
async fn order_numbers_are_consecutive_per_tenant_and_never_repeat(under: Under) {
    let (store, _db) = store(under).await;
    let acme = tenant();
    let globex = TenantId::parse("globex").unwrap();
    assert_eq!(store.allocate_order_numbers(&acme, 1).await.unwrap(), 1);
    assert_eq!(store.allocate_order_numbers(&acme, 3).await.unwrap(), 2);
    assert_eq!(store.allocate_order_numbers(&globex, 1).await.unwrap(), 1);
    assert_eq!(store.allocate_order_numbers(&acme, 1).await.unwrap(), 5);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (store, acme) = (store.clone(), acme.clone());
        tasks.push(tokio::spawn(async move {
            let count = 1 + (i % 3) as i64;
            let first = store.allocate_order_numbers(&acme, count).await.unwrap();
            (first..first + count).collect::<Vec<i64>>()
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    got.sort_unstable();
    let expected: Vec<i64> = (6..6 + got.len() as i64).collect();
    assert_eq!(got, expected);
}

/// A number an order was written with is never handed out again, after
/// the store is opened anew too (SQLite hands numbers out from memory and
/// moves the stored counter with each order's write; one whose order was
/// never written may come again there, held by no order).
async fn an_orders_number_is_not_handed_out_again_after_a_restart(kind: Kind) {
    let db = Db::new(kind).await;
    let acme = tenant();
    let held = {
        let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&db.url).await.unwrap());
        assert_eq!(store.allocate_order_numbers(&acme, 1).await.unwrap(), 1);
        let held = store.allocate_order_numbers(&acme, 2).await.unwrap() + 1;
        assert_eq!(held, 3);
        new_order_numbered(store.as_ref(), "cus_1", 1_000, 500, Some(held)).await;
        // Taken, its order never written.
        assert_eq!(store.allocate_order_numbers(&acme, 1).await.unwrap(), 4);
        held
    };
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&db.url).await.unwrap());
    let next = store.allocate_order_numbers(&acme, 1).await.unwrap();
    assert!(
        next > held,
        "number {next} handed out again after a restart"
    );
    assert_eq!(
        store.allocate_order_numbers(&acme, 1).await.unwrap(),
        next + 1
    );
}

on_both_backends!(an_orders_number_is_not_handed_out_again_after_a_restart);

on_every_store!(
    order_numbers_are_consecutive_per_tenant_and_never_repeat,
    order_round_trips_with_gapless_history,
    a_consumed_command_cannot_be_applied_twice,
    due_work_is_read_per_tenant_with_each_order,
    a_stale_version_is_refused_and_leaves_nothing,
    concurrent_writes_are_each_all_or_nothing,
    outbox_is_claimed_in_order_and_removed_once_published,
    orders_list_newest_first_by_status_and_cursor,
    customer_history_counts_recent_orders_only,
    sagas_are_found_by_state_longest_in_it_first,
);

/// The PostgreSQL writer keeps a connection of its own (not the pool's, so
/// nothing else notices when it breaks). Cut from the server's side between
/// two batches, the next batch must still be committed: the fast path fails
/// on the dead connection, and the batch is written on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_writer_reconnects_after_its_connection_is_cut() {
    use sqlx::Connection;
    let db = Db::new(Kind::Postgres).await;
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&db.url).await.unwrap());
    // The first write opens the writer's connection.
    let id = new_order(&*store, "c1", 1_000, 500).await;
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // (The second argument waits, up to 10 s, until the backend is gone.)
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
         WHERE application_name = 'oms-writer' AND datname = current_database()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(cut, vec![true], "the writer's one connection, cut");
    let t = effects(&id, 0, Some(format!("cmd-{id}")));
    assert_eq!(store.commit_transition(&t).await.unwrap(), 1);
    assert_eq!(store.order(&tenant(), &id).await.unwrap().version, 1);
}
