//! Client-side limits (`server.client.limits`): header count and size, content codings
//! (gzip and deflate inflated within the body cap and a ratio cap),
//! JSON nesting depth, UTF-8, a total deadline for the request body however it trickles,
//! the idle time between kept-alive requests, and the connections one address may hold.
//! Slow clients run on raw sockets, each bounded in time.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_tests::*;

const LIMITS: &str = "  client:\n    limits:\n      body_timeout: 1s\n      idle_timeout: 1s\n";

/// Longest any slow-client check may take; the limits above are 1s.
const BOUND: Duration = Duration::from_secs(10);

async fn gateway(mock: &Mock) -> Gateway {
    let b = Mock::start(&[]);
    Gateway::start_with_server(&two_mock_config(mock, &b, ""), LIMITS).await
}

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Reads until the gateway closes the connection; panics past [`BOUND`].
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut got))
        .await
        .expect("the gateway kept the connection open")
        .unwrap();
    got
}

#[tokio::test]
async fn header_count_and_size_are_capped_with_431() {
    let a = Mock::start(&[]);
    let gw = gateway(&a).await;
    let mut many = client().post(gw.chat_url()).bearer_auth(TEST_KEY);
    for i in 0..120 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let (status, body) = error_of(many.json(&chat_body("model-a")).send().await.unwrap()).await;
    assert_eq!(status, 431);
    assert_eq!(body["error"]["code"], "too_many_headers");

    let big = client()
        .post(gw.chat_url())
        .bearer_auth(TEST_KEY)
        .header("x-big", "a".repeat(40 * 1024))
        .json(&chat_body("model-a"))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(big).await;
    assert_eq!(status, 431);
    assert_eq!(body["error"]["code"], "headers_too_large");
    assert!(a.chat_requests().await.is_empty());
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn post_encoded(url: &str, coding: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(url)
        .bearer_auth(TEST_KEY)
        .header("content-type", "application/json")
        .header("content-encoding", coding)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn gzip_and_deflate_bodies_are_inflated() {
    let a = Mock::start(&[]);
    let gw = gateway(&a).await;
    let mut body = chat_body("model-a");
    body["messages"][0]["content"] = json!("compressed ".repeat(500));
    let raw = serde_json::to_vec(&body).unwrap();
    for (coding, encoded) in [("gzip", gzip(&raw)), ("deflate", zlib(&raw))] {
        assert!(encoded.len() * 10 < raw.len());
        let resp = post_encoded(&gw.chat_url(), coding, encoded).await;
        assert_eq!(resp.status(), 200, "{coding}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["object"], "chat.completion", "{coding}");
    }
    let seen = a.chat_requests().await;
    assert_eq!(seen.len(), 2);
    for request in seen {
        let text = request.to_string();
        assert!(text.contains(&"compressed ".repeat(500)), "{text:.300}");
    }
}

#[tokio::test]
async fn compression_bombs_get_413_before_any_upstream_request() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let gw =
        Gateway::start_with_server(&two_mock_config(&a, &b, ""), "  max_body_bytes: 1048576\n")
            .await;
    // 64 MiB of JSON whitespace in 64 KiB: past the 1 MiB cap long before the end.
    let mut bomb = b"{\"model\":\"model-a\",\"messages\":[]".to_vec();
    bomb.resize(64 << 20, b' ');
    bomb.push(b'}');
    let bomb = gzip(&bomb);
    assert!(bomb.len() < 100 << 10, "{}", bomb.len());
    let resp = post_encoded(&gw.chat_url(), "gzip", bomb).await;
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "request_too_large");

    // Under the cap, but 900 KiB from about 1 KiB: past the default ratio of 100.
    let mut dense = b"{\"model\":\"model-a\",\"messages\":[]".to_vec();
    dense.resize(900 << 10, b' ');
    dense.push(b'}');
    let resp = post_encoded(&gw.chat_url(), "deflate", zlib(&dense)).await;
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "inflate_ratio_exceeded");
    assert!(a.requests().await.is_empty());
}

#[tokio::test]
async fn bad_gzip_gets_400_and_unknown_codings_415() {
    let a = Mock::start(&[]);
    let gw = gateway(&a).await;
    let raw = serde_json::to_vec(&chat_body("model-a")).unwrap();
    let mut broken = gzip(&raw);
    broken.truncate(broken.len() / 2);
    let (status, body) = error_of(post_encoded(&gw.chat_url(), "gzip", broken.clone()).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "invalid_content_encoding");

    // The Anthropic endpoint answers in its own schema.
    let messages = format!("{}/v1/messages", gw.url);
    let (status, body) = error_of(post_encoded(&messages, "gzip", raw.clone()).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    for coding in ["br", "zstd", "compress", "gzip, gzip"] {
        let (status, body) = error_of(post_encoded(&gw.chat_url(), coding, gzip(&raw)).await).await;
        assert_eq!(status, 415, "{coding}");
        assert_eq!(body["error"]["code"], "unsupported_content_encoding");
    }
    assert!(a.requests().await.is_empty());
}

#[tokio::test]
async fn json_nesting_is_capped_and_utf8_checked() {
    let a = Mock::start(&[]);
    let gw = gateway(&a).await;
    let nested = |depth: usize| {
        // The chat body itself nests 3 levels ({ messages: [ { ... } ] }).
        let mut value = json!("x");
        for _ in 0..depth - 3 {
            value = json!([value]);
        }
        let mut body = chat_body("model-a");
        body["metadata"] = json!({ "deep": value });
        body
    };
    let ok = gw.chat(nested(60)).await;
    assert_eq!(ok.status(), 200);

    let (status, body) = error_of(gw.chat(nested(70)).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "json_too_deep");

    let mut raw = serde_json::to_vec(&chat_body("model-a")).unwrap();
    let at = raw.windows(5).position(|w| w == b"hello").unwrap();
    raw[at] = 0xff;
    let resp = client()
        .post(gw.chat_url())
        .bearer_auth(TEST_KEY)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_utf8");
    assert_eq!(a.chat_requests().await.len(), 1);
}

#[tokio::test]
async fn a_trickled_body_is_cut_at_the_body_deadline() {
    let a = Mock::start(&[]);
    let gw = gateway(&a).await;
    let body = serde_json::to_vec(&chat_body("model-a")).unwrap();
    let mut stream = TcpStream::connect(gw.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TEST_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // One byte every 100 ms: each read is quick, the whole body would take seconds.
    let answer = loop {
        let mut buf = [0u8; 4096];
        tokio::select! {
            n = stream.read(&mut buf) => break buf[..n.unwrap()].to_vec(),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let at = (started.elapsed().as_millis() / 100) as usize;
                if at < body.len() {
                    let _ = stream.write_all(&body[at..at + 1]).await;
                }
            }
        }
        assert!(started.elapsed() < BOUND, "no answer to the trickled body");
    };
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("request_body_timeout"), "{text}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}"
    );
    read_to_close(&mut stream).await;
    assert!(a.chat_requests().await.is_empty());
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let a = Mock::start(&[]);
    let gw = gateway(&a).await;
    let mut stream = TcpStream::connect(gw.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let request =
        format!("GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TEST_KEY}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    let got = read_to_close(&mut stream).await;
    let elapsed = started.elapsed();
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(
        elapsed < Duration::from_secs(5),
        "closed after {elapsed:?} with idle_timeout 1s"
    );
}

#[tokio::test]
async fn a_malformed_request_closes_its_connection() {
    let a = Mock::start(&[]);
    let gw = gateway(&a).await;
    let mut stream = TcpStream::connect(gw.url.trim_start_matches("http://"))
        .await
        .unwrap();
    // Invalid JSON, then a valid request pipelined behind it: the gateway answers the
    // first with 400 and reads nothing more.
    let second = serde_json::to_string(&chat_body("model-a")).unwrap();
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TEST_KEY}\r\n\
         Content-Length: 3\r\n\r\n{{{{x\
         POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TEST_KEY}\r\n\
         Content-Length: {}\r\n\r\n{second}",
        second.len()
    );
    stream.write_all(raw.as_bytes()).await.unwrap();
    let got = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got}");
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    assert!(a.chat_requests().await.is_empty());
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_the_write_timeout() {
    // About 8 MiB of stream: far more than the socket buffers hold.
    let a = Mock::start(&["--tokens", "50000", "--token-delay", "0ms"]);
    let b = Mock::start(&[]);
    let gw = Gateway::start_with_server(
        &two_mock_config(&a, &b, ""),
        "  client:\n    limits:\n      write_timeout: 1s\n",
    )
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = gw.url.trim_start_matches("http://").parse().unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let mut body = chat_body("model-a");
    body["stream"] = json!(true);
    let body = serde_json::to_string(&body).unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TEST_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut first = [0u8; 1024];
    let n = stream.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    // The client reads nothing more; the request ends (its usage record is written) only
    // when the gateway gives up on the write.
    let started = Instant::now();
    let db = gw.dir.0.join("usage.db");
    let ended = eventually(BOUND, || {
        let db = db.clone();
        async move { db.exists() && !ledger_rows(&db).is_empty() }
    })
    .await;
    assert!(ended, "the stalled stream was not cut");
    let cut_after = started.elapsed();
    let rest = read_to_close(&mut stream).await;
    let received = n + rest.len();
    println!("a stalled reader was cut after {cut_after:?}, having received {received} bytes");
    assert!(
        received < 50000 * 100,
        "the whole stream arrived ({received} bytes)"
    );
}

#[tokio::test]
async fn a_trickled_request_head_is_cut_at_the_header_deadline() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let gw = Gateway::start_logging_with_server(
        &two_mock_config(&a, &b, ""),
        "  client:\n    limits:\n      header_timeout: 1s\n",
    )
    .await;
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let head = format!(
        "GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TEST_KEY}\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(100)
    );
    // The first request on a connection and a second one after a served request.
    for warm in [false, true] {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        if warm {
            let quick = format!(
                "GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TEST_KEY}\r\n\r\n"
            );
            stream.write_all(quick.as_bytes()).await.unwrap();
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        }
        let started = Instant::now();
        // One byte every 100 ms: each read is quick, the whole head would take 20 s.
        let mut sent = 0;
        let mut buf = [0u8; 4096];
        let mut answer = Vec::new();
        let closed_after = loop {
            tokio::select! {
                n = stream.read(&mut buf) => match n.unwrap_or(0) {
                    0 => break started.elapsed(),
                    n => answer.extend_from_slice(&buf[..n]),
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if sent < head.len() {
                        let _ = stream.write_all(&head.as_bytes()[sent..sent + 1]).await;
                        sent += 1;
                    }
                }
            }
            assert!(started.elapsed() < BOUND, "the trickled head was not cut");
        };
        assert!(
            closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(5),
            "closed after {closed_after:?} (warm connection: {warm})"
        );
        // At most a 400 before the close, never a request served.
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{answer}"
        );
    }
    // A slow client is routine at the edge: no error line per attacker.
    let log = std::fs::read_to_string(gw.log_path()).unwrap();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Opens a connection to `addr` from loopback address `from`.
async fn connect_from(from: &str, addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// The status line of a `GET /v1/models` on `stream`, or what ended the connection.
async fn models_status(stream: &mut TcpStream) -> String {
    let request =
        format!("GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TEST_KEY}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return "closed".to_owned();
    }
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(BOUND, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => "closed".to_owned(),
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        Err(_) => panic!("no answer and no close within {BOUND:?}"),
    }
}

#[tokio::test]
async fn connections_beyond_the_per_address_limit_are_closed_on_arrival() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let gw = Gateway::start_with_server(
        &two_mock_config(&a, &b, ""),
        "  client:\n    limits:\n      max_connections_per_address: 3\n",
    )
    .await;
    let addr: std::net::SocketAddr = gw.url.trim_start_matches("http://").parse().unwrap();

    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from("127.0.0.1", addr).await;
        assert_eq!(models_status(&mut stream).await, "HTTP/1.1 200 OK");
        held.push(stream);
    }
    let mut fourth = connect_from("127.0.0.1", addr).await;
    assert_eq!(
        models_status(&mut fourth).await,
        "closed",
        "a fourth connection was served"
    );
    // Another address is not held back by the first one's connections.
    let mut other = connect_from("127.0.0.2", addr).await;
    assert_eq!(models_status(&mut other).await, "HTTP/1.1 200 OK");

    // A closed connection gives its slot back.
    drop(held.pop());
    let freed = eventually(BOUND, || async {
        let mut stream = connect_from("127.0.0.1", addr).await;
        models_status(&mut stream).await == "HTTP/1.1 200 OK"
    })
    .await;
    assert!(freed, "a closed connection's slot was not given back");
    let metrics = gw.metrics().await;
    let refused = metric_value(&metrics, "tollgate_client_connections_refused_total", &[]);
    assert!(refused >= Some(1.0), "refusals not counted: {refused:?}");
}
