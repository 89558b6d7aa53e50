//! The Kafka transport against a real Kafka-protocol broker (tansu, started
//! per test on a free loopback port): public order events on their
//! documented topic, keyed and with headers, read by an independent client;
//! a broker outage during which orders are still taken and after which
//! every saga finishes and every event arrives, nothing applied twice; and
//! poison command messages going to the dead-letter topic, listed and
//! replayed with `oms dlq`; a warehouse's deadline carried as a delayed
//! command.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use support::broker::Broker;
use support::load::Psp;
use support::{Db, Kind, Server, order};

const ORDER_EVENTS: &str = "oms.order-events.v1";

/// One event as an independent consumer sees it.
#[derive(Debug, Clone)]
struct Seen {
    key: String,
    partition: i32,
    headers: HashMap<String, String>,
    payload: Value,
}

fn consumer(broker: &Broker) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", format!("test-{}", ulid::Ulid::new()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[ORDER_EVENTS]).unwrap();
    consumer
}

/// Reads until `done` says everything expected is in, or 60 s pass.
fn read_until(consumer: &BaseConsumer, mut done: impl FnMut(&[Seen]) -> bool) -> Vec<Seen> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&seen) {
        assert!(
            Instant::now() < deadline,
            "events missing after 60 s; saw {}",
            seen.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let Ok(m) = message else { continue };
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        seen.push(Seen {
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            partition: m.partition(),
            headers,
            payload: serde_json::from_slice(m.payload().unwrap_or_default()).unwrap(),
        });
    }
    seen
}

fn confirmed_all(ids: &[String]) -> impl FnMut(&[Seen]) -> bool + '_ {
    move |seen| {
        let confirmed: HashSet<&str> = seen
            .iter()
            .filter(|s| s.payload["type"] == "order.confirmed")
            .filter_map(|s| s.payload["orderId"].as_str())
            .collect();
        ids.iter().all(|id| confirmed.contains(id.as_str()))
    }
}

async fn kafka_host(db: &Db, broker: &Broker, psp: &Psp) -> Server {
    support::broker::kafka_host(db, broker, &psp.url, 3).await
}

/// Order lifecycle events land on `oms.order-events.v1`, keyed by order id,
/// with the envelope's identity in headers, each order's events in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_events_are_published_to_kafka_with_keys_and_headers() {
    let broker = Broker::start();
    let psp = Psp::start().await;
    let db = Db::new(Kind::Postgres).await;
    let srv = kafka_host(&db, &broker, &psp).await;
    let acme = srv.api("acme");
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = acme.place(&order("c", "WIDGET-1", 1, "tok_visa")).await;
        assert_eq!(acme.settle(&id).await["status"], "CONFIRMED");
        ids.push(id);
    }
    let consumer = consumer(&broker);
    let seen = tokio::task::spawn_blocking({
        let ids = ids.clone();
        move || read_until(&consumer, confirmed_all(&ids))
    })
    .await
    .unwrap();
    for s in &seen {
        let p = &s.payload;
        assert_eq!(s.key, p["orderId"].as_str().unwrap(), "keyed by order id");
        assert_eq!(s.headers["event-id"], p["eventId"].as_str().unwrap());
        assert_eq!(s.headers["event-type"], p["type"].as_str().unwrap());
        assert_eq!(s.headers["schema-version"], "1");
        assert_eq!(p["schemaVersion"], 1);
        assert_eq!(s.headers["tenant-id"], p["tenantId"].as_str().unwrap());
        // W3C trace context: one trace per order.
        let trace: Vec<&str> = s.headers["traceparent"].split('-').collect();
        assert_eq!((trace.len(), trace[0], trace[1].len()), (4, "00", 32));
    }
    for id in &ids {
        let mine: Vec<&Seen> = seen.iter().filter(|s| &s.key == id).collect();
        let partitions: HashSet<i32> = mine.iter().map(|s| s.partition).collect();
        assert_eq!(partitions.len(), 1, "one order, one partition");
        let types: Vec<&str> = mine
            .iter()
            .map(|s| s.payload["type"].as_str().unwrap())
            .collect();
        let created = types.iter().position(|t| *t == "order.created").unwrap();
        let confirmed = types.iter().position(|t| *t == "order.confirmed").unwrap();
        assert!(created < confirmed, "{types:?}");
    }
}

/// A warehouse that answers, over Kafka: the deadline is a saga command
/// carried through the broker like any delayed step, so it fires and the
/// order is undone (and the warehouse told); an answer in time confirms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouses_deadline_fires_through_kafka() {
    let broker = Broker::start();
    let psp = Psp::start().await;
    let db = Db::new(Kind::Postgres).await;
    let srv = kafka_host(&db, &broker, &psp).await;
    // One warehouse with ten minutes to answer (it answers), one with a second.
    let (api, warehouse) = support::admin::answering_tenant(&srv, "initech", 600_000).await;
    let (quick, _) = support::admin::answering_tenant(&srv, "hooli", 1_000).await;
    let silent = quick
        .place(&order("c-silent", "WIDGET-1", 1, "tok_visa"))
        .await;
    let answered = api
        .place(&order("c-answered", "WIDGET-1", 1, "tok_visa"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = warehouse
            .post(
                &format!("/orders/{answered}/fulfilment"),
                &serde_json::json!({ "decision": "accepted" }),
            )
            .await;
        if r.status == 200 {
            break;
        }
        assert_eq!(
            r.body["error"]["code"], "FULFILMENT_NOT_AWAITED",
            "{}",
            r.body
        );
        assert!(Instant::now() < deadline, "never awaited: {}", r.body);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(api.settle(&answered).await["status"], "CONFIRMED");
    let done = quick.settle(&silent).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");
    assert_eq!(done["paymentStatus"], "REFUNDED", "{done}");
    let events = quick.get(&format!("/orders/{silent}/events")).await.body;
    let kinds: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"fulfilment.deadline_passed"), "{kinds:?}");
    assert!(kinds.contains(&"fulfilment.cancel_requested"), "{kinds:?}");
}

/// With the broker down, orders are still accepted and answered and the
/// outbox holds what is to be published; when the broker is back every saga
/// finishes, every event is published, and no payment ran twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_taken_while_kafka_is_down_and_carried_out_after() {
    let mut broker = Broker::start();
    let psp = Psp::start().await;
    let db = Db::new(Kind::Postgres).await;
    let srv = kafka_host(&db, &broker, &psp).await;
    let acme = srv.api("acme");
    let first = acme.place(&order("c", "WIDGET-1", 1, "tok_visa")).await;
    acme.settle(&first).await;

    broker.stop();
    let mut ids = vec![first];
    for _ in 0..8 {
        ids.push(acme.place(&order("c", "WIDGET-1", 1, "tok_visa")).await);
    }
    assert!(
        srv.metric("outbox_unpublished").await > 0,
        "the outbox holds the events while the broker is down"
    );

    broker.spawn();
    for id in &ids {
        assert_eq!(acme.settle(id).await["status"], "CONFIRMED", "{id}");
    }
    let consumer = consumer(&broker);
    let seen = tokio::task::spawn_blocking({
        let ids = ids.clone();
        move || read_until(&consumer, confirmed_all(&ids))
    })
    .await
    .unwrap();
    for id in &ids {
        assert!(
            seen.iter()
                .any(|s| &s.key == id && s.payload["type"] == "order.created"),
            "order.created for {id} lost"
        );
    }
    // Applied once: one authorization and one capture per order.
    let ledger: Value = support::ledger_request(&psp.url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for id in &ids {
        for op in ["authorize", "capture"] {
            let n = ledger["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| {
                    e["order_id"] == id.as_str() && e["op"] == op && e["status"] == "succeeded"
                })
                .count();
            assert_eq!(n, 1, "{id}: {op} ran {n} times");
        }
    }
    // Drained: nothing left behind in the outbox.
    let deadline = Instant::now() + Duration::from_secs(30);
    while srv.metric("outbox_unpublished").await > 0 {
        assert!(Instant::now() < deadline, "outbox not drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn oms_dlq(broker: &Broker, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oms"))
        .args(["dlq", "--kafka-brokers", &broker.addr()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oms dlq {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The saga consumer group's committed offset on a partition of the
/// command topic, as the broker has it (-1 for none).
fn committed_offset(broker: &Broker, partition: i32) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    // Not subscribed, so it never joins the group; it only asks.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "oms-saga")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("oms.saga-commands.v1", partition);
    let Ok(committed) = reader.committed_offsets(tpl, Duration::from_secs(10)) else {
        return -1;
    };
    match committed.elements().first().map(|e| e.offset()) {
        Some(rdkafka::Offset::Offset(o)) => o,
        _ => -1,
    }
}

fn dead_letters(broker: &Broker) -> Vec<Value> {
    oms_dlq(broker, &["list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Undecodable messages, unknown types and unknown schema versions on the
/// command topic go to the dead-letter topic with their origin and error;
/// the consumer moves on (a restarted host does not see them again); an
/// operator lists them and replays them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_commands_go_to_the_dead_letter_topic_and_can_be_replayed() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let broker = Broker::start();
    let psp = Psp::start().await;
    let db = Db::new(Kind::Postgres).await;
    let mut srv = kafka_host(&db, &broker, &psp).await;
    let acme = srv.api("acme");
    let id = acme.place(&order("c", "WIDGET-1", 1, "tok_visa")).await;
    assert_eq!(acme.settle(&id).await["status"], "CONFIRMED");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .create()
        .unwrap();
    let poison = [
        ("saga.command", "1", "not json"),
        ("saga.teleport", "1", "{}"),
        ("saga.command", "7", "{}"),
    ];
    for (event_type, version, payload) in poison {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "event-type",
                value: Some(event_type),
            })
            .insert(Header {
                key: "schema-version",
                value: Some(version),
            });
        producer
            .send(
                FutureRecord::to("oms.saga-commands.v1")
                    .key("ord_poison")
                    .payload(payload)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    srv.wait_metric("dead_letters_total", 3).await;
    let letters = dead_letters(&broker);
    let mut codes: Vec<&str> = letters
        .iter()
        .map(|l| l["errorCode"].as_str().unwrap())
        .collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        ["UNDECODABLE", "UNKNOWN_SCHEMA_VERSION", "UNKNOWN_TYPE"]
    );
    for l in &letters {
        assert_eq!(l["originTopic"], "oms.saga-commands.v1");
        assert!(l["originOffset"].as_i64().unwrap() >= 0);
        assert!(!l["error"].as_str().unwrap().is_empty());
        assert_eq!(l["key"], "ord_poison");
    }
    assert!(oms_dlq(&broker, &["list"]).contains("3 dead letter(s)"));
    // Operators (and the console) see the same through the admin API.
    let (status, seen) = support::admin(&srv, "/dlq", None, support::ADMIN_TOKEN).await;
    assert_eq!((status, seen["transport"].as_str()), (200, Some("kafka")));
    let mut ids: Vec<&str> = seen["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = letters.iter().map(|l| l["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    expected.sort_unstable();
    assert_eq!(ids, expected);

    // The consumer moved on: its committed offsets passed the poison (the
    // host commits at once after a dead letter; wait for the broker to say
    // so), so a restarted host neither sees it again nor stalls on it.
    for l in &letters {
        let partition = l["originPartition"].as_i64().unwrap() as i32;
        let offset = l["originOffset"].as_i64().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while committed_offset(&broker, partition) <= offset {
            if Instant::now() >= deadline {
                // What the host said about its offsets and partitions: this
                // failed once in many runs, unexplained.
                let log = std::fs::read_to_string(&srv.log).unwrap_or_default();
                let said: Vec<&str> = log
                    .lines()
                    .filter(|l| {
                        ["offset", "partition", "rebalance", "dead letter", "WARN"]
                            .iter()
                            .any(|w| l.contains(w))
                    })
                    .collect();
                panic!(
                    "offset {offset} of partition {partition} never committed (now {}); the host said:\n{}",
                    committed_offset(&broker, partition),
                    said.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    srv.kill();
    srv.spawn().await;
    let next = acme.place(&order("c", "WIDGET-1", 1, "tok_visa")).await;
    assert_eq!(acme.settle(&next).await["status"], "CONFIRMED");
    srv.wait_metric("commands_consumed_total", 1).await;
    assert_eq!(srv.metric("dead_letters_total").await, 0);

    // Replayed, the messages are still unreadable: back they come, marked.
    let one = letters[0]["id"].as_str().unwrap();
    assert!(oms_dlq(&broker, &["replay", one]).contains("replayed 1"));
    srv.wait_metric("dead_letters_total", 1).await;
    assert!(oms_dlq(&broker, &["replay", "--all"]).contains("replayed 4"));
    srv.wait_metric("dead_letters_total", 5).await;
    let letters = dead_letters(&broker);
    assert_eq!(letters.len(), 8);
    let replayed = letters
        .iter()
        .filter(|l| {
            l["headers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h[0] == "dlq-replayed-from")
        })
        .count();
    assert_eq!(replayed, 5);
}

/// SIGTERM on a Kafka host with payments in flight: the steps in flight
/// finish, the consumer commits its offsets, the relay flushes, the process
/// exits 0; started again, it carries every saga to its end with no payment
/// made twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_kafka_host_commits_flushes_and_loses_nothing() {
    let broker = Broker::start();
    let psp = Psp::start().await;
    let db = Db::new(Kind::Postgres).await;
    let mut host = kafka_host(&db, &broker, &psp).await;
    let api = host.api("acme");
    let mut ids = Vec::new();
    // Slow authorizations (4 s each) first, then quick orders: once the quick
    // ones are confirmed the consumer is at work, and the slow ones are
    // (most likely) in flight when the signal comes.
    let tokens = [
        "tok_slow", "tok_slow", "tok_slow", "tok_visa", "tok_visa", "tok_visa",
    ];
    for (i, token) in tokens.into_iter().enumerate() {
        let body = order(&format!("c-{i}"), "WIDGET-1", 1, token);
        ids.push(api.place(&body).await);
    }
    for id in &ids[3..] {
        assert_eq!(api.settle(id).await["status"], "CONFIRMED");
    }
    host.terminate();
    assert!(host.exited().await.success(), "exit status not 0");
    let log = std::fs::read_to_string(&host.log).unwrap();
    for said in [
        "saga command offsets committed",
        "outbox flushed",
        "\"stopped\"",
    ] {
        assert!(log.contains(said), "the log does not say {said}:\n{log}");
    }
    host.spawn().await;
    let api = host.api("acme");
    for id in &ids {
        assert_eq!(api.settle(id).await["status"], "CONFIRMED", "{id}");
    }
    let ledger = support::ledger_at(&psp.url).await;
    for id in &ids {
        let mine: Vec<(&str, &str)> = ledger
            .iter()
            .filter(|e| e["order_id"] == id.as_str())
            .map(|e| (e["op"].as_str().unwrap(), e["status"].as_str().unwrap()))
            .collect();
        assert_eq!(
            mine,
            [("authorize", "succeeded"), ("capture", "succeeded")],
            "{id}"
        );
    }
}

/// SIGTERM with the broker gone: the host still stops. The Kafka
/// consumer's close waits for a group coordinator that is not there (it
/// did for 30 minutes, once), so the host gives its last blocking work a
/// deadline and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_host_stops_with_the_broker_gone() {
    let mut broker = Broker::start();
    let psp = Psp::start().await;
    let db = Db::new(Kind::Postgres).await;
    let mut host = kafka_host(&db, &broker, &psp).await;
    let api = host.api("acme");
    let id = api.place(&order("c", "WIDGET-1", 1, "tok_visa")).await;
    assert_eq!(api.settle(&id).await["status"], "CONFIRMED");
    broker.stop();
    host.terminate();
    assert!(host.exited().await.success(), "exit status not 0");
    let log = std::fs::read_to_string(&host.log).unwrap();
    assert!(
        log.contains("\"stopped\""),
        "the log does not say stopped:\n{log}"
    );
}
