//! The plans the databases make for the saga path's hottest reads, on a new
//! database: one with empty tables and no statistics, which is what a
//! connection's cached plan was made from when a deployment starts.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use oms_store::{
    ALLOCATE_NUMBERS_LAZY, CUSTOMER_HISTORY, DELETE_PUBLISHED_LAZY, SqlStore, UNRECONCILED,
    UPDATE_ORDERS, pg_writer_options,
};
use support::{Db, Kind};

/// A statement's argument, for [`plan_on_a_new_database`].
enum Arg {
    Text(&'static str),
    Int(i64),
}

/// `sql` on SQLite with `args` bound in order.
fn bound<'q>(
    sql: &'q str,
    args: &[Arg],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    args.iter().fold(sqlx::query(sql), |q, a| match a {
        Arg::Text(t) => q.bind(*t),
        Arg::Int(i) => q.bind(*i),
    })
}

/// The plan each database makes for `sql` (PostgreSQL: the generic plan of
/// a statement prepared with `pg_types`, the one a connection keeps once it
/// stops planning per call), on a new database: empty tables, no statistics.
async fn plan_on_a_new_database(
    kind: Kind,
    sql: &str,
    pg_types: &str,
    args: &[Arg],
) -> Vec<String> {
    let db = Db::new(kind).await;
    // Connecting creates the schema.
    drop(SqlStore::connect(&db.url).await.unwrap());
    match kind {
        Kind::Postgres => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(&format!("PREPARE planned({pg_types}) AS {sql}"))
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query("SET plan_cache_mode = force_generic_plan")
                .execute(&mut conn)
                .await
                .unwrap();
            // (EXPLAIN takes no bound parameters: the values are written in.)
            let values: Vec<String> = args
                .iter()
                .map(|a| match a {
                    Arg::Text(t) => format!("'{t}'"),
                    Arg::Int(i) => i.to_string(),
                })
                .collect();
            sqlx::query_scalar(&format!("EXPLAIN EXECUTE planned({})", values.join(", ")))
                .fetch_all(&mut conn)
                .await
                .unwrap()
        }
        Kind::Sqlite => {
            use sqlx::{Connection, Row};
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            let query = format!("EXPLAIN QUERY PLAN {sql}");
            bound(&query, args)
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect()
        }
    }
}

/// The fraud check's read of a customer's history goes through
/// `orders_by_customer`. It once shared its leading column with every index
/// of `orders`: PostgreSQL's generic plan, made while the table was new,
/// took the order-number index, and every later call scanned all of the
/// tenant's orders (a quarter of the database's time at saturation).
async fn the_customer_history_read_uses_its_index_from_the_start(kind: Kind) {
    use Arg::*;
    let args = [Text("acme"), Text("c"), Text("USD"), Int(0), Text("ord_x")];
    let types = "text, text, text, bigint, text";
    let plan = plan_on_a_new_database(kind, CUSTOMER_HISTORY, types, &args).await;
    assert!(
        plan.iter().any(|line| line.contains("orders_by_customer")),
        "the read's plan on {kind:?}: {plan:#?}"
    );
    if let Kind::Sqlite = kind {
        sqlite_reads_only_the_index(CUSTOMER_HISTORY, &args).await;
    }
}

/// SQLite answers `sql` from its index alone: every column it reads comes
/// from the index's cursor, never the table's. (Its plan still says
/// `USING INDEX`, not `COVERING INDEX`, because the index's key is an
/// expression: the program seeks the table lazily, `DeferredSeek`, and so
/// never does when the index holds every column read.) The fraud check's
/// read once looked up each order it counted in the table, a page each,
/// and its cost grew with the customer's orders.
async fn sqlite_reads_only_the_index(sql: &str, args: &[Arg]) {
    use sqlx::{Connection, Row};
    let db = Db::new(Kind::Sqlite).await;
    drop(SqlStore::connect(&db.url).await.unwrap());
    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    let explain = format!("EXPLAIN {sql}");
    let program: Vec<(String, i64, Option<String>)> = bound(&explain, args)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            // (p4 is text, a number or nothing, by opcode.)
            let p4: Option<String> = r.try_get_unchecked("p4").unwrap();
            (r.get("opcode"), r.get("p1"), p4)
        })
        .collect();
    // An index's cursor is opened with its key's description, `k(…)`.
    let opened = |index: bool| -> Vec<i64> {
        program
            .iter()
            .filter(|(op, _, p4)| {
                op == "OpenRead" && p4.as_deref().is_some_and(|p| p.starts_with("k(")) == index
            })
            .map(|(_, cursor, _)| *cursor)
            .collect()
    };
    let (indexes, tables) = (opened(true), opened(false));
    assert!(!indexes.is_empty(), "no index read: {program:#?}");
    let from_table: Vec<_> = program
        .iter()
        .filter(|(op, cursor, _)| {
            matches!(op.as_str(), "Column" | "Rowid" | "SeekRowid" | "NotExists")
                && tables.contains(cursor)
        })
        .collect();
    assert!(
        from_table.is_empty(),
        "the read reads the table: {from_table:?} in {program:#?}"
    );
}

on_both_backends!(the_customer_history_read_uses_its_index_from_the_start);

/// Payment reconciliation's read, every few seconds on every host, walks
/// the partial index of unreconciled operations in order and stops at its
/// limit. It once grouped the payments by order and sorted the groups: a
/// scan and sort of every payment row ever recorded (all 200,000 after
/// 100,000 orders, reconciled or not) per round, the largest allocation in
/// a heap profile of the host.
async fn the_reconciliation_read_walks_the_unreconciled_index(kind: Kind) {
    let args = [Arg::Int(1000), Arg::Int(1000), Arg::Int(512)];
    let types = "bigint, bigint, bigint";
    let plan = plan_on_a_new_database(kind, UNRECONCILED, types, &args).await;
    assert!(
        plan.iter()
            .any(|line| line.contains("payments_unreconciled"))
            && !plan
                .iter()
                .any(|line| line.contains("TEMP B-TREE") || line.contains("Sort")),
        "the read's plan on {kind:?}: {plan:#?}"
    );
}

on_both_backends!(the_reconciliation_read_walks_the_unreconciled_index);

/// Two PostgreSQL statements of the saga path commit without waiting for
/// their flush to disk, each for its own transaction only: the order-number
/// allocation (every acknowledged order's own commit flushes it, the WAL
/// being flushed in order) and the relay's removal of published messages (a
/// lost removal only publishes them again). The setting rides in the
/// statement, which PostgreSQL evaluates only where the plan reads it: here
/// with nothing to remove, the case a plan is likeliest to skip it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbering_and_the_relays_removals_do_not_wait_for_the_disk() {
    use sqlx::Connection;
    let db = Db::new(Kind::Postgres).await;
    drop(SqlStore::connect(&db.url).await.unwrap());
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let setting = "SELECT current_setting('synchronous_commit')";
    let before: String = sqlx::query_scalar(setting)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(before, "on", "the server's default here");
    let allocate = sqlx::query(ALLOCATE_NUMBERS_LAZY).bind("acme").bind(2_i64);
    let remove = sqlx::query(DELETE_PUBLISHED_LAZY).bind(vec!["msg_gone".to_string()]);
    for (name, q) in [
        ("the number allocation", allocate),
        ("the relay's removal", remove),
    ] {
        let mut tx = conn.begin().await.unwrap();
        q.execute(&mut *tx).await.unwrap();
        let inside: String = sqlx::query_scalar(setting)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(inside, "off", "{name} commits without waiting for the disk");
        tx.commit().await.unwrap();
        let after: String = sqlx::query_scalar(setting)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            after, "on",
            "{name} changed the connection's setting beyond its transaction"
        );
    }
    let last: i64 = sqlx::query_scalar("SELECT last FROM order_numbers WHERE tenant_id = 'acme'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(last, 2, "the allocation took its two numbers");
}

/// The group-commit writer's update of a batch's order rows finds them by
/// key however large `orders` grew after the writer connected. On a new
/// database the plan PostgreSQL keeps for a prepared statement (after five
/// calls) was made while the table was empty: a scan of the whole table
/// joined to the batch, so every later batch read every order. The
/// writer's connection plans each call for its values instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_order_update_finds_its_rows_by_key_as_the_table_grows() {
    let (_db, mut conn) = writer_connection().await;
    sqlx::query(&format!("PREPARE update_orders AS {UPDATE_ORDERS}"))
        .execute(&mut conn)
        .await
        .unwrap();
    // (EXECUTE takes no bound parameters: the values are written in.)
    let nulls = ["ARRAY[NULL::text]"; 8].join(", ");
    let execute = format!(
        "EXECUTE update_orders(ARRAY['acme'], ARRAY['ord_7'], ARRAY[0::bigint], {nulls}, \
         ARRAY[0::bigint], ARRAY[0::bigint])"
    );
    // Batches while the table is empty: more than the five calls after
    // which PostgreSQL may keep a generic plan.
    for _ in 0..8 {
        sqlx::query(&execute).execute(&mut conn).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO orders (tenant_id, id, customer_id, currency, total_minor, status,
             payment_status, fulfillment_status, draft, saga_state, saga_status, version,
             event_seq, created_at, updated_at)
         SELECT 'acme', 'ord_' || n, 'c', 'USD', 100, 'PENDING', 'NONE', 'NONE', '{}', '{}',
             'RUNNING', 0, 0, 0, 0
         FROM generate_series(1, 20000) AS n",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {execute}"))
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("orders_pkey") && !plan.contains("Seq Scan on orders"),
        "the order update scans the table:\n{plan}"
    );
}

/// The batch's stock reservations (`oms_reserve_lines`) look their rows up
/// by key on the writer's connection however large the stock tables grew
/// after its plans were made. The function's statements keep one plan per
/// connection (migration 0021: planning every line again was a fifth of
/// the writer's server time), so a plan made while `inventory` and
/// `reservations` were empty must not turn into a scan of either table
/// later, as the order update's once did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_reservations_find_stock_by_key_as_the_tables_grow() {
    use sqlx::Connection;
    let (_db, mut conn) = writer_connection().await;
    let reserve = "SELECT line, warehouse FROM oms_reserve_lines($1, $2, $3, $4, $5) ORDER BY line";
    let call = |n: usize| {
        sqlx::query_as::<_, (i32, Option<String>)>(reserve)
            .bind(["acme", "acme"])
            .bind([format!("ord_{n}_a"), format!("ord_{n}_b")])
            .bind(["WIDGET-1", "WIDGET-1"])
            .bind([1_i64, 1])
            .bind([0_i64, 0])
    };
    // Calls while the tables are empty (no stock: nothing held), more than
    // the five after which PostgreSQL may keep a generic plan.
    for n in 0..8 {
        let held = call(n).fetch_all(&mut conn).await.unwrap();
        assert!(held.iter().all(|(_, w)| w.is_none()), "{held:?}");
    }
    sqlx::query(
        "INSERT INTO inventory (tenant_id, sku, warehouse_id, on_hand, reserved, updated_at)
         SELECT 'acme', 'SKU-' || n, 'east', 10, 0, 0 FROM generate_series(1, 20000) AS n
         UNION ALL VALUES ('acme', 'WIDGET-1', 'east', 1000, 0, 0), ('acme', 'WIDGET-1', 'west', 1000, 0, 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO reservations (tenant_id, order_id, sku, warehouse_id, quantity, state, created_at, updated_at)
         SELECT 'acme', 'ord_old_' || n, 'SKU-' || n, 'east', 1, 'held', 0, 0
         FROM generate_series(1, 20000) AS n",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    // This transaction's own scans of each table, counted as it runs.
    let mut tx = conn.begin().await.unwrap();
    let held = call(8).fetch_all(&mut *tx).await.unwrap();
    assert_eq!(
        held,
        vec![(1, Some("east".to_string())), (2, Some("west".to_string()))],
        "each line from the warehouse with the most available"
    );
    let scans: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, seq_scan, idx_scan FROM pg_stat_xact_user_tables
         WHERE relname IN ('inventory', 'reservations') ORDER BY relname",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    for (table, seq, idx) in &scans {
        assert_eq!(*seq, 0, "{table} scanned whole: {scans:?}");
        assert!(*idx > 0, "{table} not read by key: {scans:?}");
    }
    assert_eq!(scans.len(), 2, "{scans:?}");
}

/// A new PostgreSQL database with the schema, and a connection to it made
/// as the group-commit writer makes its own.
async fn writer_connection() -> (Db, sqlx::PgConnection) {
    use sqlx::Connection;
    use std::str::FromStr;
    let db = Db::new(Kind::Postgres).await;
    drop(SqlStore::connect(&db.url).await.unwrap());
    let options = sqlx::postgres::PgConnectOptions::from_str(&db.url).unwrap();
    let conn = sqlx::PgConnection::connect_with(&pg_writer_options(&options))
        .await
        .unwrap();
    (db, conn)
}
