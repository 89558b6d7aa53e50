//! The rows of a group-commit batch and the multi-row statements that
//! write them: a few statement texts per table (chunks of [`CHUNKS`] rows),
//! so the connection's statement cache keeps them all.

use super::{NewOrder, Transition};

/// Rows per multi-row statement, largest first: a batch's rows are written
/// in chunks of these sizes (15 rows: 8 + 4 + 2 + 1), so each table has only
/// this many statement texts for the connection's statement cache.
pub(crate) const CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// One value of a multi-row statement (every column these tables batch is
/// text, nullable text or an integer).
#[derive(Clone, Copy)]
pub(crate) enum Value<'a> {
    Text(&'a str),
    TextOrNull(Option<&'a str>),
    Int(i64),
    IntOrNull(Option<i64>),
}

/// Whether `tx`'s database takes anonymous `?` placeholders, bound in
/// order (SQLite). There a numbered `$N` is looked up by name when bound,
/// a linear search per parameter (`sqlite3_bind_parameter_name`), which is
/// quadratic in a multi-row statement's hundreds of parameters (2.6 % of
/// the host's CPU in a profile). PostgreSQL takes only `$N`.
pub(crate) fn anonymous(tx: &impl Placeholders) -> bool {
    tx.anonymous()
}

/// See [`anonymous`].
pub(crate) trait Placeholders {
    fn anonymous(&self) -> bool;
}

impl<DB: sqlx::Database> Placeholders for sqlx::Transaction<'_, DB> {
    fn anonymous(&self) -> bool {
        DB::NAME == "SQLite"
    }
}

impl Placeholders for &mut super::own::Tx<'_> {
    fn anonymous(&self) -> bool {
        true
    }
}

/// Placeholder number `n` (from 1): `?` where placeholders are anonymous.
fn placeholder(anonymous: bool, n: usize) -> String {
    if anonymous {
        "?".into()
    } else {
        format!("${n}")
    }
}

/// `INSERT INTO table (columns) VALUES (…), (…)`: `rows` rows of `width`
/// placeholders each.
pub(crate) fn insert_sql(
    table: &str,
    columns: &str,
    width: usize,
    rows: usize,
    anonymous: bool,
) -> String {
    let mut sql = format!("INSERT INTO {table} ({columns}) VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&placeholder(anonymous, r * width + c + 1));
        }
        sql.push(')');
    }
    sql
}

/// The order-row update of a batch's transitions: each row of `VALUES`
/// is one transition ([`update_values`]), applied only where the row's
/// version is still the one it was decided on; the rows updated answer with
/// their new last history sequence number.
pub(super) fn update_sql(rows: usize, anonymous: bool) -> String {
    let width = 13;
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=width)
                .map(|c| placeholder(anonymous, r * width + c))
                .collect();
            format!("({})", row.join(", "))
        })
        .collect();
    format!(
        "UPDATE orders SET
            status = COALESCE(v.column4, status),
            payment_status = COALESCE(v.column5, payment_status),
            fulfillment_status = COALESCE(v.column6, fulfillment_status),
            violations = COALESCE(v.column7, violations),
            cancellation_reason = COALESCE(v.column8, cancellation_reason),
            shipment = COALESCE(v.column9, shipment),
            saga_state = COALESCE(v.column10, saga_state),
            saga_status = COALESCE(v.column11, saga_status),
            saga_status_at = CASE WHEN v.column11 <> saga_status THEN v.column13
                                  ELSE saga_status_at END,
            version = version + 1,
            event_seq = event_seq + v.column12,
            updated_at = v.column13
         FROM (VALUES {}) AS v
         WHERE tenant_id = v.column1 AND id = v.column2 AND version = v.column3
         RETURNING tenant_id, id, event_seq",
        values.join(", ")
    )
}

/// A transition's row of [`update_sql`].
pub(super) fn update_values(t: &Transition) -> Vec<Value<'_>> {
    use Value::{Int, Text, TextOrNull};
    let p = &t.patch;
    vec![
        Text(t.tenant.as_str()),
        Text(t.order_id.as_str()),
        Int(t.expected_version),
        TextOrNull(p.status.as_deref()),
        TextOrNull(p.payment_status.as_deref()),
        TextOrNull(p.fulfillment_status.as_deref()),
        TextOrNull(p.violations.as_deref()),
        TextOrNull(p.cancellation_reason.as_deref()),
        TextOrNull(p.shipment.as_deref()),
        TextOrNull(p.saga_state.as_deref()),
        TextOrNull(p.saga_status.as_deref()),
        Int(t.events.len() as i64),
        Int(t.now),
    ]
}

/// `prefix` followed by `($1, …, $n)` and `suffix`.
pub(crate) fn in_list_sql(prefix: &str, n: usize, suffix: &str, anonymous: bool) -> String {
    let list: Vec<String> = (1..=n).map(|i| placeholder(anonymous, i)).collect();
    format!("{prefix}({}){suffix}", list.join(", "))
}

/// The size an `IN` list of `n` ids is padded to (repeating the last id),
/// so there are as few statement texts as [`CHUNKS`] has sizes.
pub(crate) fn padded(n: usize) -> usize {
    CHUNKS.iter().rev().copied().find(|c| *c >= n).unwrap_or(n)
}

/// How many of `n` rows the next multi-row statement takes.
pub(crate) fn chunk_len(n: usize) -> usize {
    CHUNKS.iter().copied().find(|c| *c <= n).unwrap_or(1)
}

/// Binds every value of `$rows` to the query `$q`, in order.
macro_rules! bind_rows {
    ($q:ident, $rows:expr) => {
        for v in $rows.iter().flatten() {
            $q = match v {
                Value::Text(s) => $q.bind(*s),
                Value::TextOrNull(s) => $q.bind(*s),
                Value::Int(i) => $q.bind(*i),
                Value::IntOrNull(i) => $q.bind(*i),
            };
        }
    };
}

pub(crate) use bind_rows;

/// Inserts `rows` into `$table` inside `$tx`, as few statements as [`CHUNKS`] allow,
/// through module `$q`'s `query` (`sqlx`, or the writer's `own`);
/// with `pg` (PostgreSQL's fast path), in one statement of arrays
/// ([`super::arrays`]). A last argument is appended to each statement (an
/// `ON CONFLICT` clause).
macro_rules! insert_rows {
    ($q:ident, $tx:ident, $table:expr, $columns:expr, $rows:expr) => {
        insert_rows!($q, $tx, $table, $columns, $rows, "")
    };
    (pg, $tx:ident, $table:expr, $columns:expr, $rows:expr, $suffix:expr) => {{
        let rows: &[Vec<Value<'_>>] = $rows;
        if let Some(first) = rows.first() {
            let sql = $crate::group_commit::arrays::insert_sql($table, $columns, first, $suffix);
            let mut q = sqlx::query(&sql);
            $crate::group_commit::arrays::bind_columns!(q, rows);
            q.execute(counted::stmt(&mut *$tx)).await?;
        }
    }};
    ($q:ident, $tx:ident, $table:expr, $columns:expr, $rows:expr, $suffix:expr) => {{
        let rows: &[Vec<Value<'_>>] = $rows;
        let mut rest = rows;
        while let Some(first) = rest.first() {
            let n = $crate::group_commit::rows::chunk_len(rest.len());
            let (chunk, tail) = rest.split_at(n);
            let anonymous = $crate::group_commit::rows::anonymous(&$tx);
            let mut sql =
                $crate::group_commit::rows::insert_sql($table, $columns, first.len(), n, anonymous);
            sql.push_str($suffix);
            let mut q = $q::query(&sql);
            $crate::group_commit::rows::bind_rows!(q, chunk);
            q.execute(counted::stmt(&mut *$tx)).await?;
            rest = tail;
        }
    }};
}

/// A member's JSON columns as text.
pub(super) struct Texts {
    events: Vec<String>,
    outbox: Vec<String>,
}

impl Texts {
    pub(super) fn of(t: Option<&Transition>) -> Self {
        let Some(t) = t else {
            return Self {
                events: Vec::new(),
                outbox: Vec::new(),
            };
        };
        Self {
            events: t.events.iter().map(|(_, d)| d.to_string()).collect(),
            outbox: t.outbox.iter().map(|m| m.payload.to_string()).collect(),
        }
    }
}

/// Every history, command, outbox and payment row of the batch's members,
/// each member's events numbered from its first sequence number.
#[derive(Default)]
pub(super) struct Rows<'a> {
    pub(super) orders: Vec<Vec<Value<'a>>>,
    pub(super) events: Vec<Vec<Value<'a>>>,
    pub(super) commands: Vec<Vec<Value<'a>>>,
    pub(super) outbox: Vec<Vec<Value<'a>>>,
    pub(super) payments: Vec<Vec<Value<'a>>>,
}

impl<'a> Rows<'a> {
    pub(super) fn add(&mut self, t: &'a Transition, first_seq: i64, texts: &'a Texts) {
        use Value::{Int, Text, TextOrNull};
        let (tenant, order) = (t.tenant.as_str(), t.order_id.as_str());
        for (i, ((event_type, _), data)) in t.events.iter().zip(&texts.events).enumerate() {
            self.events.push(vec![
                Text(tenant),
                Text(order),
                Int(first_seq + i as i64),
                Text(event_type),
                Text(data),
                Int(t.now),
            ]);
        }
        for c in &t.commands {
            self.commands.push(vec![
                Text(&c.id),
                Text(tenant),
                Text(order),
                Text(&c.action),
                Int(c.available_at),
                Int(t.now),
            ]);
        }
        for (m, payload) in t.outbox.iter().zip(&texts.outbox) {
            self.outbox.push(vec![
                Text(&m.id),
                Text(tenant),
                Text(order),
                Text(&m.topic),
                Text(&m.event_type),
                Text(payload),
                Int(t.now),
                Int(m.available_at.unwrap_or(t.now)),
                TextOrNull(t.trace_parent.as_deref()),
            ]);
        }
        if let Some(p) = &t.payment {
            self.payments.push(vec![
                Text(&p.id),
                Text(tenant),
                Text(order),
                Text(&p.op),
                Int(p.amount),
                Text(&p.currency),
                Text(&p.status),
                TextOrNull(p.provider_reference.as_deref()),
                TextOrNull(p.error_code.as_deref()),
                Text(&p.idempotency_key),
                TextOrNull(p.plugin_version.as_deref()),
                Int(t.now),
            ]);
        }
    }
}
pub(crate) use insert_rows;

/// A new reservation's row (held by the order of `t`).
pub(super) fn reservation_values<'a>(
    t: &'a Transition,
    sku: &'a str,
    warehouse: &'a str,
    quantity: i64,
) -> Vec<Value<'a>> {
    use Value::{Int, Text};
    vec![
        Text(t.tenant.as_str()),
        Text(t.order_id.as_str()),
        Text(sku),
        Text(warehouse),
        Int(quantity),
        Text("held"),
        Int(t.now),
        Int(t.now),
    ]
}

/// A new order's row, column by column as [`ORDER_COLUMNS`] names them.
pub(super) fn order_values(new: &NewOrder) -> Vec<Value<'_>> {
    use Value::{Int, IntOrNull, Text, TextOrNull};
    let r = &new.record;
    vec![
        Text(&r.tenant_id),
        Text(&r.id),
        Text(&r.customer_id),
        Text(&r.currency),
        Int(r.total_minor),
        Text(&r.status),
        Text(&r.payment_status),
        Text(&r.fulfillment_status),
        Text(&r.draft),
        TextOrNull(r.violations.as_deref()),
        TextOrNull(r.cancellation_reason.as_deref()),
        TextOrNull(r.shipment.as_deref()),
        Text(&r.saga_state),
        Text(&r.saga_status),
        Int(r.version),
        Int(new.effects.events.len() as i64),
        Int(r.created_at),
        Int(r.updated_at),
        TextOrNull(r.trace_parent.as_deref()),
        IntOrNull(r.order_number),
    ]
}
