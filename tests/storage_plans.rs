//! The plans the databases make for the saga path's hottest reads, on a new
//! database: one with empty tables and no statistics, which is what a
//! connection's cached plan was made from when a deployment starts.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use oms_store::{CUSTOMER_HISTORY, SqlStore};
use support::{Db, Kind};

/// The fraud check's read of a customer's history goes through
/// `orders_by_customer`. It once shared its leading column with every index
/// of `orders`: PostgreSQL's generic plan, made while the table was new,
/// took the order-number index, and every later call scanned all of the
/// tenant's orders (a quarter of the database's time at saturation).
async fn the_customer_history_read_uses_its_index_from_the_start(kind: Kind) {
    let db = Db::new(kind).await;
    // Connecting creates the schema.
    drop(SqlStore::connect(&db.url).await.unwrap());
    let args = ("acme", "c", "USD", 0_i64, "ord_x");
    let plan: Vec<String> = match kind {
        Kind::Postgres => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(&format!(
                "PREPARE history(text, text, text, bigint, text) AS {CUSTOMER_HISTORY}"
            ))
            .execute(&mut conn)
            .await
            .unwrap();
            // The plan a connection keeps once it stops planning per call.
            sqlx::query("SET plan_cache_mode = force_generic_plan")
                .execute(&mut conn)
                .await
                .unwrap();
            // (EXPLAIN takes no bound parameters: the values are written in.)
            let (t, c, cur, since, id) = args;
            sqlx::query_scalar(&format!(
                "EXPLAIN EXECUTE history('{t}', '{c}', '{cur}', {since}, '{id}')"
            ))
            .fetch_all(&mut conn)
            .await
            .unwrap()
        }
        Kind::Sqlite => {
            use sqlx::{Connection, Row};
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(&format!("EXPLAIN QUERY PLAN {CUSTOMER_HISTORY}"))
                .bind(args.0)
                .bind(args.1)
                .bind(args.2)
                .bind(args.3)
                .bind(args.4)
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect()
        }
    };
    assert!(
        plan.iter().any(|line| line.contains("orders_by_customer")),
        "the read's plan on {kind:?}: {plan:#?}"
    );
}

on_both_backends!(the_customer_history_read_uses_its_index_from_the_start);
