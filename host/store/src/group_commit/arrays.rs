//! PostgreSQL's fast path sends a batch's rows as one array per column,
//! unnested by the server: one statement per table whatever the batch's
//! size, with a dozen parameters instead of a dozen per row.
//!
//! Rows in `VALUES` lists (what SQLite still gets) cost PostgreSQL a
//! statement per chunk size and a plan per execution: the planner sees
//! every row's parameters (up to 64 × 13 of them for the order update),
//! so a generic plan never wins and each run was planned again (about a
//! quarter of the server's time in a profile). The statements here have a
//! fixed text and a fixed number of parameters.
//!
//! The fast-path macros are expanded with this module as their query
//! module (`pg`): it re-exports sqlx's queries, and the row-writing macros
//! ([`super::rows::insert_rows`], the order update, the consumed
//! commands) match its name and take the array path.

pub(crate) use sqlx::{query, query_as, query_scalar};

use super::rows::Value;

/// `$n::text[]` or `$n::bigint[]` for each column of `first` (a row of
/// the batch: every row has the same kinds of values, column by column).
/// (Numbered from `$after + 1`.)
fn casts(first: &[Value<'_>], after: usize) -> Vec<String> {
    first
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Text(_) | Value::TextOrNull(_) => format!("${}::text[]", after + i + 1),
            Value::Int(_) | Value::IntOrNull(_) => format!("${}::bigint[]", after + i + 1),
        })
        .collect()
}

/// `INSERT INTO table (columns) SELECT … FROM unnest(…)`, the rows in the
/// order given (an outbox row's sequence number follows it), then `suffix`.
pub(crate) fn insert_sql(table: &str, columns: &str, first: &[Value<'_>], suffix: &str) -> String {
    insert_sql_after(table, columns, first, suffix, 0)
}

/// [`insert_sql`] with its parameters numbered from `$after + 1`.
fn insert_sql_after(
    table: &str,
    columns: &str,
    first: &[Value<'_>],
    suffix: &str,
    after: usize,
) -> String {
    let names: Vec<String> = (1..=first.len()).map(|i| format!("c{i}")).collect();
    format!(
        "INSERT INTO {table} ({columns}) SELECT {} FROM unnest({}) WITH ORDINALITY AS u({}, nth) ORDER BY nth{suffix}",
        names.join(", "),
        casts(first, after).join(", "),
        names.join(", "),
    )
}

/// A table's rows for [`inserts_sql`]: the table, its columns, the rows.
pub(crate) type Part<'r, 'v> = (&'r str, &'r str, &'r [Vec<Value<'v>>]);

/// Several tables' inserts as one statement, each table's one array per
/// column, numbered on in `parts`' order (bind them so): every insert but
/// the last in a data-modifying `WITH`, which PostgreSQL runs exactly once
/// whether or not anything reads it. A batch's history, commands, outbox,
/// payments, reservations and new orders were a round trip each, a batch
/// a dozen round trips while every saga in it waited. (The inserts see one
/// snapshot and not each other's rows: none reads another's table.)
/// `None` when no part has rows; parts without rows are left out.
pub(crate) fn inserts_sql(parts: &[Part<'_, '_>]) -> Option<String> {
    let mut after = 0;
    let mut statements = Vec::new();
    for (table, columns, rows) in parts {
        let Some(first) = rows.first() else {
            continue;
        };
        statements.push(insert_sql_after(table, columns, first, "", after));
        after += first.len();
    }
    let last = statements.pop()?;
    if statements.is_empty() {
        return Some(last);
    }
    let with: Vec<String> = statements
        .iter()
        .enumerate()
        .map(|(i, s)| format!("w{i} AS ({s})"))
        .collect();
    Some(format!("WITH {} {last}", with.join(", ")))
}

/// The order-row update of a batch's transitions (each row one
/// transition, as [`super::rows::update_values`] makes it), applied only
/// where the row's version is still the one it was decided on; the rows
/// updated answer with their new last history sequence number.
pub const UPDATE_ORDERS: &str = "UPDATE orders SET
        status = COALESCE(v.status, orders.status),
        payment_status = COALESCE(v.payment_status, orders.payment_status),
        fulfillment_status = COALESCE(v.fulfillment_status, orders.fulfillment_status),
        violations = COALESCE(v.violations, orders.violations),
        cancellation_reason = COALESCE(v.cancellation_reason, orders.cancellation_reason),
        shipment = COALESCE(v.shipment, orders.shipment),
        saga_state = COALESCE(v.saga_state, orders.saga_state),
        saga_status = COALESCE(v.saga_status, orders.saga_status),
        saga_status_at = CASE WHEN v.saga_status <> orders.saga_status THEN v.at
                              ELSE orders.saga_status_at END,
        version = orders.version + 1,
        event_seq = orders.event_seq + v.events,
        updated_at = v.at
     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                 $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[],
                 $13::bigint[])
          AS v(tenant_id, id, expected, status, payment_status, fulfillment_status, violations,
               cancellation_reason, shipment, saga_state, saga_status, events, at)
     WHERE orders.tenant_id = v.tenant_id AND orders.id = v.id AND orders.version = v.expected
     RETURNING orders.tenant_id, orders.id, orders.event_seq";

/// Column `c` of every row, as text (a column of integers has none).
pub(crate) fn texts<'a>(rows: &[Vec<Value<'a>>], c: usize) -> Vec<Option<&'a str>> {
    rows.iter()
        .map(|r| match r[c] {
            Value::Text(s) => Some(s),
            Value::TextOrNull(s) => s,
            Value::Int(_) | Value::IntOrNull(_) => None,
        })
        .collect()
}

/// Column `c` of every row, as integers (a column of text has none).
pub(crate) fn ints(rows: &[Vec<Value<'_>>], c: usize) -> Vec<Option<i64>> {
    rows.iter()
        .map(|r| match r[c] {
            Value::Int(i) => Some(i),
            Value::IntOrNull(i) => i,
            Value::Text(_) | Value::TextOrNull(_) => None,
        })
        .collect()
}

/// Binds each column of `$rows` (non-empty, every row alike) to `$q` as
/// one array, in column order.
macro_rules! bind_columns {
    ($q:ident, $rows:expr) => {{
        let rows: &[Vec<Value<'_>>] = $rows;
        for (c, v) in rows[0].iter().enumerate() {
            $q = match v {
                Value::Text(_) | Value::TextOrNull(_) => {
                    $q.bind($crate::group_commit::arrays::texts(rows, c))
                }
                Value::Int(_) | Value::IntOrNull(_) => {
                    $q.bind($crate::group_commit::arrays::ints(rows, c))
                }
            };
        }
    }};
}

pub(crate) use bind_columns;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_tables_inserts_are_one_statement_numbered_on() {
        let a = vec![vec![Value::Text("t"), Value::Int(1)]];
        let b: Vec<Vec<Value<'_>>> = Vec::new();
        let c = vec![vec![Value::Int(2)], vec![Value::Int(3)]];
        let sql = inserts_sql(&[("a", "x, y", &a), ("b", "z", &b), ("c", "z", &c)])
            .expect("rows to insert");
        assert_eq!(
            sql,
            "WITH w0 AS (INSERT INTO a (x, y) SELECT c1, c2 FROM unnest($1::text[], $2::bigint[]) \
             WITH ORDINALITY AS u(c1, c2, nth) ORDER BY nth) \
             INSERT INTO c (z) SELECT c1 FROM unnest($3::bigint[]) WITH ORDINALITY AS u(c1, nth) ORDER BY nth"
        );
        assert_eq!(
            inserts_sql(&[("c", "z", &c)]).as_deref(),
            Some(
                "INSERT INTO c (z) SELECT c1 FROM unnest($1::bigint[]) WITH ORDINALITY AS u(c1, nth) ORDER BY nth"
            )
        );
        assert_eq!(inserts_sql(&[("b", "z", &b)]), None);
    }

    #[test]
    fn an_insert_unnests_one_array_per_column_in_the_rows_order() {
        let row = [Value::Text("t"), Value::IntOrNull(None), Value::Int(1)];
        assert_eq!(
            insert_sql("t", "a, b, c", &row, " ON CONFLICT DO NOTHING"),
            "INSERT INTO t (a, b, c) SELECT c1, c2, c3 FROM unnest($1::text[], $2::bigint[], \
             $3::bigint[]) WITH ORDINALITY AS u(c1, c2, c3, nth) ORDER BY nth ON CONFLICT DO NOTHING"
        );
        let rows = vec![
            row.to_vec(),
            vec![
                Value::TextOrNull(None),
                Value::IntOrNull(Some(2)),
                Value::Int(3),
            ],
        ];
        assert_eq!(texts(&rows, 0), vec![Some("t"), None]);
        assert_eq!(ints(&rows, 1), vec![None, Some(2)]);
        assert_eq!(ints(&rows, 2), vec![Some(1), Some(3)]);
    }
}
