//! Kafka mode's saga runner: every host takes saga command messages from one
//! consumer group, so the partitions (and with them the orders) are shared
//! among however many hosts run. A message's offset is committed only after
//! the database commit that applied its command; the command row is the
//! inbox entry, deleted in that same transaction, so a redelivery after a
//! crash or a rebalance finds it gone and does nothing. A host that lost a
//! partition but still runs cannot apply a stale transition either: the
//! order's version check refuses it.

mod commands;

use super::Platform;
use super::metrics::Metrics;
use super::relay::backoff;
use super::runner;
use crate::transport::dlq::Poison;
use crate::transport::kafka::KafkaTransport;
use commands::{Context, Offsets};
use oms_domain::OrderId;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Messages in hand at once; beyond it the consumer stops fetching. Larger
/// than the runner's concurrency: a message waiting for its tenant's share
/// of the runner (see `runner::deliver`) holds only a place here, so one
/// tenant's slow commands cannot stop other tenants' messages from being
/// fetched until it has this many queued ahead of them in the partitions.
const IN_HAND: usize = 2048;
/// How long past its due time a command waits for its message before any
/// host runs it straight from the database: longer than a rebalance after a
/// host dies (session timeout 6 s) takes.
const OVERDUE_MS: i64 = 15_000;
/// The lease a rescuing host takes on such a command: long enough for the
/// commands it has in hand to be run before another host would take them.
const RESCUE_LEASE_MS: i64 = 60_000;
/// Overdue commands looked at in one pass.
const RESCUE_BATCH: i64 = 500;
/// Rescued sagas one host runs or has queued at once (each under its
/// tenant's share of the runner like any other): after a broker lost its
/// messages, thousands may be overdue, and a host takes what it can run
/// within its lease, leaving the rest to the other hosts.
const RESCUE_IN_HAND: usize = 1_024;

pub(crate) async fn run(p: Arc<Platform>, kafka: Arc<KafkaTransport>) {
    let offsets = Arc::new(Mutex::new(Offsets::default()));
    let consumer = loop {
        let counted = p.clone();
        let context = Context {
            kafka: kafka.clone(),
            offsets: offsets.clone(),
            on_rebalance: Box::new(move || {
                Metrics::inc(&counted.metrics.consumer_rebalances_total)
            }),
        };
        match commands::consumer(&kafka, context) {
            Ok(c) => break Arc::new(c),
            Err(e) => {
                tracing::error!(error = %e, "joining the saga consumer group failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    tokio::spawn(rescue(p.clone()));
    let permits = Arc::new(Semaphore::new(IN_HAND));
    let mut failures = 0u32;
    loop {
        // Registered before the flag is read, so a stop in between still wakes us.
        let stopped = p.stopped.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        if p.stopping.load(std::sync::atomic::Ordering::Acquire) {
            break;
        }
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = &mut stopped => break,
        };
        let received = tokio::select! {
            m = consumer.recv() => m,
            () = &mut stopped => break,
        };
        let m = match received {
            Ok(m) => m.detach(),
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, "reading saga commands failed");
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
        };
        failures = 0;
        let ticket = offsets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .begin(m.partition(), m.offset());
        let (p, kafka, consumer, offsets) =
            (p.clone(), kafka.clone(), consumer.clone(), offsets.clone());
        tokio::spawn(async move {
            let dead_lettered = handle(&p, &kafka, &m).await;
            Metrics::inc(&p.metrics.commands_consumed_total);
            let next = offsets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .finish(ticket);
            if let Some(next) = next {
                commands::store(&consumer, ticket.partition, next);
            }
            if dead_lettered {
                // Committed now rather than with the next background commit,
                // so a host that dies right after does not dead-letter the
                // same message again on restart. Rare, so a blocking commit
                // costs nothing. (Still at least once: a crash between the
                // dead letter and this commit repeats it, recognisable by
                // its origin partition and offset.)
                let committing = consumer.clone();
                match tokio::task::spawn_blocking(move || commands::commit_now(&committing)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "committing offsets after a dead letter failed; the background commit follows")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "committing offsets after a dead letter panicked")
                    }
                }
                Metrics::inc(&p.metrics.dead_letters_total);
            }
            drop(permit);
        });
    }
    // Stopping: the messages in hand finish, then their offsets are
    // committed now rather than by the next background commit, so the
    // partitions' next owner does not run them again.
    if let Ok(all) = permits.acquire_many(IN_HAND as u32).await {
        drop(all);
    }
    match tokio::task::spawn_blocking(move || commands::commit_now(&consumer)).await {
        Ok(Ok(())) => tracing::info!("saga command offsets committed"),
        // Nothing finished since the last background commit.
        Ok(Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        ))) => tracing::info!("saga command offsets committed (nothing new)"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "committing offsets at shutdown failed; the next owner may run a few commands again (they are deduplicated)")
        }
        Err(e) => tracing::warn!(error = %e, "committing offsets at shutdown panicked"),
    }
}

/// Carries out one message: a command, or poison for the dead-letter
/// topic (then `true`).
async fn handle(p: &Arc<Platform>, kafka: &KafkaTransport, m: &OwnedMessage) -> bool {
    let poison = match commands::decode(m) {
        Ok(cmd) if !known_tenant(p, &cmd.tenant_id).await => Poison::new(
            "UNKNOWN_TENANT",
            format!("no tenant {:?} in the database", cmd.tenant_id),
        ),
        Ok(cmd) if OrderId::parse(&cmd.order_id).is_none() => {
            Poison::new("UNDECODABLE", format!("order id {:?}", cmd.order_id))
        }
        Ok(cmd) => {
            // The consumer's span continues the message's trace (the
            // order's); the steps it runs are its children.
            let span = tracing::info_span!(
                "kafka.consume",
                otel.name = "consume saga command",
                otel.kind = "consumer",
                messaging.system = "kafka",
                messaging.kafka.partition = m.partition(),
                messaging.kafka.offset = m.offset(),
                order_id = %cmd.order_id,
            );
            oms_trace::continue_from(&span, commands::header(m, "traceparent"));
            runner::deliver(p, cmd, false).instrument(span).await;
            return false;
        }
        Err(poison) => poison,
    };
    tracing::warn!(
        partition = m.partition(),
        offset = m.offset(),
        code = poison.code,
        error = %poison.error,
        "saga command message sent to the dead-letter topic"
    );
    // Not lost: the offset does not move until the dead letter is stored.
    let mut failures = 0u32;
    while let Err(e) = kafka.dead_letter(m, &poison).await {
        failures = failures.saturating_add(1);
        tracing::warn!(error = %e, "storing a dead letter failed; retrying");
        tokio::time::sleep(backoff(failures)).await;
    }
    true
}

/// Whether a command's tenant exists. One created on another host a moment
/// ago may not have reached this host's registry yet (the sync runs every
/// 250 ms): it is loaded from the database now rather than its first
/// command dead-lettered. The database unreachable is waited out, not
/// taken for an answer.
async fn known_tenant(p: &Platform, id: &str) -> bool {
    use crate::tenants::sync::{SyncError, reload};
    if p.tenants.get(id).is_some() {
        return true;
    }
    let Some(tenant) = oms_domain::TenantId::parse(id) else {
        return false;
    };
    let mut failures = 0u32;
    loop {
        match reload(p, &tenant).await {
            Ok(_) => return true,
            Err(SyncError::Store(oms_store::StoreError::NotFound)) => return false,
            Err(SyncError::Store(e)) => {
                failures = failures.saturating_add(1);
                tracing::warn!(tenant = %id, error = %e, "looking up a command's tenant failed; retrying");
                tokio::time::sleep(backoff(failures)).await;
            }
            Err(e) => {
                tracing::error!(tenant = %id, error = %e, "a command's tenant cannot be built");
                return false;
            }
        }
    }
}

/// The safety net under the consumer group: the database, not the broker, is
/// the record of what is left to do. A command still there long after it
/// fell due lost its message (a broker that dropped acknowledged writes, a
/// group that never handed a dead host's partitions on, commands written
/// before the host ran with Kafka): one host, holding a lease on it in the
/// database, runs it directly. Fenced like any delivery, so a late message
/// for it changes nothing.
async fn rescue(p: Arc<Platform>) {
    let in_hand = Arc::new(Semaphore::new(RESCUE_IN_HAND));
    let mut full = false;
    loop {
        // Straight on after a full pass (a broker that lost its messages
        // leaves thousands overdue: one pass of 100 every few seconds was a
        // drain of about 30 sagas/s); otherwise a jittered pause.
        if !full {
            let pause = 2_000 + oms_clock::jitter_ms(2_000);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        full = false;
        let now = oms_clock::now_ms();
        let overdue = match p.store.due_commands(now - OVERDUE_MS, RESCUE_BATCH).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "looking for overdue saga commands failed");
                continue;
            }
        };
        let found = overdue.len();
        let mut taken = 0usize;
        for cmd in overdue {
            let Ok(permit) = in_hand.clone().try_acquire_owned() else {
                // As many in hand as this host runs in a lease: wait for room.
                break;
            };
            match p
                .store
                .lease_command(&cmd.id, cmd.available_at, now + RESCUE_LEASE_MS)
                .await
            {
                Ok(true) => {
                    tracing::warn!(command = %cmd.id, order = %cmd.order_id, overdue_ms = now - cmd.available_at, "saga command overdue: running it from the database");
                    Metrics::inc(&p.metrics.commands_rescued_total);
                    taken += 1;
                    let p = p.clone();
                    tokio::spawn(async move {
                        runner::deliver(&p, cmd, true).await;
                        drop(permit);
                    });
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leasing an overdue saga command failed"),
            }
        }
        full = found as i64 == RESCUE_BATCH && taken > 0;
    }
}
