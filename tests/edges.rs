//! The edges every request passes through, against the real binary: request
//! ids, the JSON envelope for the framework's own refusals (a bad path, a
//! method not allowed, a body too large while it streams), bodies refused
//! before they are read (a declared length over the limit, a JSON route sent
//! something else), and log lines a machine can read.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Db, Kind, Server, order};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn envelope_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

async fn raw(
    srv: &Server,
    method: reqwest::Method,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("{}{path}", srv.url))
        .header("x-tenant-id", "acme")
        .bearer_auth("acme-dev-key")
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

/// Posts an order body by hand: `framing` headers, then `chunks` chunks of
/// 64 KiB of spaces (chunked encoding); the start of the answer.
async fn raw_post(srv: &Server, framing: &str, chunks: usize) -> String {
    let addr = srv.url.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/orders HTTP/1.1\r\nHost: {addr}\r\nX-Tenant-Id: acme\r\nAuthorization: Bearer acme-dev-key\r\nContent-Type: application/json\r\n{framing}\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 64 << 10, " ".repeat(64 << 10));
    for _ in 0..chunks {
        // The host may answer and close before the last chunk: that is fine.
        if socket.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), socket.read(&mut buf))
            .await
            .expect("the host waited for a body it will refuse")
            .unwrap_or(0);
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if n == 0 || text.contains("requestId") {
            return text.into_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_has_a_request_id_and_every_refusal_the_envelope() {
    let db = Db::new(Kind::Sqlite).await;
    let srv = Server::start(&db).await;
    let api = srv.api("acme");

    // The client's id is kept, on success and in the envelope of a refusal.
    let ok = api
        .send(
            reqwest::Method::GET,
            "/orders",
            None,
            &[("x-request-id", "trace-me-1")],
        )
        .await;
    assert_eq!(ok.headers["x-request-id"], "trace-me-1");
    let missing = api
        .send(
            reqwest::Method::GET,
            "/orders/ord_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            None,
            &[("x-request-id", "trace-me-2")],
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error"]["requestId"], "trace-me-2");
    // Without one (or with one unfit for a log line), the host makes one.
    for sent in [None, Some("has space;and=more")] {
        let headers: Vec<(&str, &str)> = sent.map(|s| ("x-request-id", s)).into_iter().collect();
        let r = api
            .send(reqwest::Method::GET, "/orders/nope", None, &headers)
            .await;
        let id = r.headers["x-request-id"].to_str().unwrap().to_string();
        assert!(id.starts_with("req_"), "{id}");
        assert_eq!(r.body["error"]["requestId"], id.as_str());
    }

    // The framework's own refusals, in the envelope.
    let (status, _, body) = raw(&srv, reqwest::Method::GET, "/api/v1/orders/%FF").await;
    assert_eq!(
        (status, envelope_code(&body)),
        (400, "BAD_REQUEST"),
        "{body}"
    );
    let (status, headers, body) = raw(&srv, reqwest::Method::DELETE, "/api/v1/orders").await;
    assert_eq!(
        (status, envelope_code(&body)),
        (405, "METHOD_NOT_ALLOWED"),
        "{body}"
    );
    assert!(headers.contains_key("allow"));
    assert!(
        body["error"]["requestId"]
            .as_str()
            .unwrap()
            .starts_with("req_")
    );

    // A JSON route sent something else: 415, nothing stored.
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/orders", srv.url))
        .header("x-tenant-id", "acme")
        .bearer_auth("acme-dev-key")
        .header("content-type", "text/plain")
        .body(order("c-1", "WIDGET-1", 1, "tok_visa").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let body: Value = r.json().await.unwrap();
    assert_eq!(envelope_code(&body), "UNSUPPORTED_MEDIA_TYPE");
    assert_eq!(api.get("/orders").await.body["data"], json!([]));

    // Too large while it streams (chunked, no length declared), and too
    // large by its declared length, refused before a byte of it is sent
    // (were the host waiting for that body, this would wait forever).
    let chunked = "Transfer-Encoding: chunked\r\n";
    let declared = format!("Content-Length: {}\r\n", 200u64 << 20);
    for (framing, body_chunks) in [(chunked.to_string(), 48), (declared, 0)] {
        let answer = raw_post(&srv, &framing, body_chunks).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{framing}: {answer}");
        assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{framing}: {answer}");
        assert!(answer.contains("\"requestId\""), "{answer}");
    }

    // Log lines are JSON (stderr is not a terminal) and carry the request's
    // id and tenant (the fields of the span they are logged in, under "span").
    let log = std::fs::read_to_string(&srv.log).unwrap();
    let line: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["span"]["request_id"] == "trace-me-2")
        .unwrap_or_else(|| panic!("no JSON line for trace-me-2 in:\n{log}"));
    assert_eq!(line["span"]["tenant"], "acme", "{line}");

    // A request about an order names it on its lines: a refused
    // cancellation of one that does not exist is logged with its id.
    let ghost = "ord_01JD5V7Q1M7G3Y8K5T0N6B2C4D";
    let refused = reqwest::Client::new()
        .post(format!("{}/api/v1/orders/{ghost}/cancel", srv.url))
        .header("x-tenant-id", "acme")
        .bearer_auth("acme-dev-key")
        .header("x-request-id", "about-an-order")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let log = std::fs::read_to_string(&srv.log).unwrap();
    let line: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["span"]["request_id"] == "about-an-order")
        .unwrap_or_else(|| panic!("no JSON line for about-an-order in:\n{log}"));
    assert_eq!(line["span"]["order_id"], ghost, "{line}");
    assert_eq!(line["status"], 404, "{line}");
}

/// Reads until the host closes the connection (with a generous deadline:
/// only a host that never closes it takes that long); what it sent.
async fn until_closed(socket: &mut tokio::net::TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.read(&mut buf)).await {
            Err(_) => panic!("the host kept the connection open"),
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Slow and silent clients do not keep connections: an idle socket, one
/// stalled in its headers and one stalled in its body are all closed. A
/// client guessing keys is stopped after its budget of failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_silent_and_guessing_clients_are_cut_off() {
    let db = Db::new(Kind::Sqlite).await;
    let srv = Server::start_with(
        &db,
        [
            "--sandbox-psp-listen",
            "127.0.0.1:0",
            "--http-header-timeout-ms",
            "300",
            "--http-body-timeout-ms",
            "300",
            "--auth-failures-per-minute",
            "5",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let addr = srv.url.trim_start_matches("http://").to_string();
    let connect = || tokio::net::TcpStream::connect(addr.clone());

    let mut idle = connect().await.unwrap();
    until_closed(&mut idle).await;

    let mut half_headers = connect().await.unwrap();
    half_headers
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
        .await
        .unwrap();
    until_closed(&mut half_headers).await;

    let mut half_body = connect().await.unwrap();
    let head = format!(
        "POST /api/v1/orders HTTP/1.1\r\nHost: {addr}\r\nX-Tenant-Id: acme\r\nAuthorization: Bearer acme-dev-key\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"customerId\":"
    );
    half_body.write_all(head.as_bytes()).await.unwrap();
    let answer = until_closed(&mut half_body).await;
    // Refused (in the envelope) or cut off, but never an order.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    assert_eq!(srv.api("acme").get("/orders").await.body["data"], json!([]));

    // A client that keeps talking keeps its connection.
    let mut busy = connect().await.unwrap();
    for _ in 0..2 {
        busy.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = busy.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }

    // Five wrong keys are five 401s; then the address is refused before
    // any credential is looked at, the right key and the operator's too.
    let guess = support::Api::new(&srv.url, "acme", "guess");
    for _ in 0..5 {
        assert_eq!(guess.get("/orders").await.status, 401);
    }
    let stopped = guess.get("/orders").await;
    assert_eq!(stopped.status, 429, "{}", stopped.body);
    assert_eq!(
        envelope_code(&stopped.body),
        "TOO_MANY_FAILED_AUTHENTICATIONS"
    );
    let wait: u64 = stopped.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(srv.api("acme").get("/orders").await.status, 429);
    let admin = support::admin::Admin::new(&srv.url);
    assert_eq!(admin.get("/sagas").await.status, 429);
}

/// SIGTERM: `/readyz` says draining while requests are still served (the
/// grace a balancer needs); a second SIGTERM ends the grace; the host stops
/// and exits 0, and its orders are there when it starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_host_drains_and_exits_cleanly() {
    let db = Db::new(Kind::Sqlite).await;
    let mut srv = Server::start_with(
        &db,
        [
            "--sandbox-psp-listen",
            "127.0.0.1:0",
            "--shutdown-grace-ms",
            "600000",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let api = srv.api("acme");
    let placed = api.place(&order("c-1", "WIDGET-1", 1, "tok_visa")).await;
    // Settled first: the demo's sandbox provider lives in this process and
    // forgets its payments when it stops (a capture after the restart would
    // find no authorization; the lifecycle issue fixes that).
    assert_eq!(api.settle(&placed).await["status"], "CONFIRMED");
    srv.terminate();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = reqwest::get(format!("{}/readyz", srv.url)).await.unwrap();
        if r.status() == 503 {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["status"], "draining");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(api.get(&format!("/orders/{placed}")).await.status, 200);
    srv.terminate();
    assert!(srv.exited().await.success(), "exit status not 0");
    // After HTTP, the saga work stopped and the outbox was flushed.
    let log = std::fs::read_to_string(&srv.log).unwrap();
    for said in ["saga work stopped", "outbox flushed", "\"stopped\""] {
        assert!(log.contains(said), "the log does not say {said}:\n{log}");
    }
    srv.spawn().await;
    let after = srv.api("acme").get(&format!("/orders/{placed}")).await;
    assert_eq!(after.body["status"], "CONFIRMED", "{}", after.body);
}

/// Sends `GET /healthz` on a kept-alive connection and reads its answer.
async fn health_on(socket: &mut tokio::net::TcpStream, addr: &str) -> String {
    socket
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let n = socket.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// `--max-connections`: at the cap a new connection waits (in the
/// listener's backlog) until one of those served ends, then it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_for_one_to_end() {
    let db = Db::new(Kind::Sqlite).await;
    let srv = Server::start_with(
        &db,
        [
            "--sandbox-psp-listen",
            "127.0.0.1:0",
            "--max-connections",
            "2",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let addr = srv.url.trim_start_matches("http://").to_string();
    let connect = || tokio::net::TcpStream::connect(addr.clone());
    // The test's own readiness probe may still hold a slot for a moment:
    // two kept-alive connections that have each been served hold both.
    let mut first = connect().await.unwrap();
    assert!(
        health_on(&mut first, &addr)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut second = connect().await.unwrap();
    assert!(
        health_on(&mut second, &addr)
            .await
            .starts_with("HTTP/1.1 200")
    );

    let mut third = connect().await.unwrap();
    third
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Many round trips on a served connection: time enough for the third to
    // be answered if the cap did not hold it back.
    for _ in 0..50 {
        assert!(
            health_on(&mut first, &addr)
                .await
                .starts_with("HTTP/1.1 200")
        );
    }
    let mut buf = vec![0u8; 2048];
    match third.try_read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a connection past the cap was served: {other:?}"),
    }
    drop(first);
    let n = tokio::time::timeout(support::admin::DEADLINE, third.read(&mut buf))
        .await
        .expect("the waiting connection is served once another ends")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(second);
}
