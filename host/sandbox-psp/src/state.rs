//! The provider's state: payment intents, stored answers, the ledger, and
//! what the operation being served changed (for the journal).

use crate::LedgerEntry;
use crate::journal::Change;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Intent {
    pub(crate) id: String,
    /// The account that created it; no other may see or touch it.
    pub(crate) account: String,
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) token: String,
    pub(crate) order_id: Option<String>,
    /// `requires_capture`, `succeeded` (captured) or `canceled`.
    pub(crate) status: String,
    pub(crate) refunded: i64,
}

#[derive(Default)]
pub(crate) struct Psp {
    pub(crate) intents: HashMap<String, Intent>,
    /// By account and idempotency key: the answer, and the journal line
    /// that holds it (a replay waits until that line is on disk).
    pub(crate) replies: HashMap<(String, String), ((u16, Value), u64)>,
    pub(crate) attempts: HashMap<(String, String), u32>,
    pub(crate) ledger: Vec<LedgerEntry>,
    /// Operations answering 503 for everyone (a staged provider outage).
    pub(crate) outage: std::collections::HashSet<String>,
    /// The W3C trace context of the request being served, for its ledger entry.
    pub(crate) traceparent: Option<String>,
    /// What the operation being served changed, for the journal.
    pub(crate) pending: Vec<Change>,
}

impl Psp {
    /// The account's own payment intent; another account's does not exist.
    pub(crate) fn intent(&self, account: &str, id: &str) -> Option<Intent> {
        self.intents
            .get(id)
            .filter(|i| i.account == account)
            .cloned()
    }

    /// Stores an intent as created or changed.
    pub(crate) fn save(&mut self, intent: Intent) {
        self.pending.push(Change::Intent(intent.clone()));
        self.intents.insert(intent.id.clone(), intent);
    }

    /// One journal line read back.
    pub(crate) fn apply(&mut self, change: Change) {
        match change {
            Change::Intent(i) => {
                self.intents.insert(i.id.clone(), i);
            }
            Change::Reply {
                account,
                key,
                status,
                body,
            } => {
                self.replies.insert((account, key), ((status, body), 0));
            }
            Change::Ledger(e) => self.ledger.push(e),
            Change::Attempts {
                account,
                key,
                count,
            } => {
                self.attempts.insert((account, key), count);
            }
        }
    }

    /// Everything to remember, as journal lines.
    pub(crate) fn snapshot(&self) -> Vec<Change> {
        let mut intents: Vec<&Intent> = self.intents.values().collect();
        intents.sort_by(|a, b| a.id.cmp(&b.id));
        let mut out: Vec<Change> = intents.into_iter().cloned().map(Change::Intent).collect();
        let mut replies: Vec<_> = self.replies.iter().collect();
        replies.sort_by(|a, b| a.0.cmp(b.0));
        out.extend(
            replies
                .into_iter()
                .map(|((account, key), ((status, body), _))| Change::Reply {
                    account: account.clone(),
                    key: key.clone(),
                    status: *status,
                    body: body.clone(),
                }),
        );
        out.extend(self.ledger.iter().cloned().map(Change::Ledger));
        let mut attempts: Vec<_> = self.attempts.iter().collect();
        attempts.sort();
        out.extend(
            attempts
                .into_iter()
                .map(|((account, key), count)| Change::Attempts {
                    account: account.clone(),
                    key: key.clone(),
                    count: *count,
                }),
        );
        out
    }
}

/// Who is calling and under which idempotency key.
pub(crate) struct Caller {
    pub(crate) account: String,
    pub(crate) key: String,
}

pub(crate) fn record(
    psp: &mut Psp,
    op: &str,
    intent: &Intent,
    amount: i64,
    key: &str,
    status: &str,
) {
    let seq = psp.ledger.len() as u64 + 1;
    let entry = LedgerEntry {
        seq,
        account: intent.account.clone(),
        op: op.into(),
        payment_intent: intent.id.clone(),
        amount,
        currency: intent.currency.clone(),
        idempotency_key: key.into(),
        status: status.into(),
        order_id: intent.order_id.clone(),
        traceparent: psp.traceparent.clone(),
        at: oms_clock::now_ms(),
    };
    psp.pending.push(Change::Ledger(entry.clone()));
    psp.ledger.push(entry);
}

/// `tok_flaky` fails the first two attempts of each operation.
pub(crate) fn flaky(psp: &mut Psp, token: &str, caller: &Caller) -> bool {
    if token != "tok_flaky" {
        return false;
    }
    let scoped = (caller.account.clone(), caller.key.clone());
    let n = psp.attempts.entry(scoped).or_insert(0);
    *n += 1;
    let count = *n;
    psp.pending.push(Change::Attempts {
        account: caller.account.clone(),
        key: caller.key.clone(),
        count,
    });
    count <= 2
}

pub(crate) fn intent_json(i: &Intent) -> Value {
    json!({ "id": i.id, "object": "payment_intent", "amount": i.amount, "currency": i.currency,
            "status": i.status, "amount_refunded": i.refunded })
}
