//! The X-Ray exporter end to end, through the real `tracemap` binary:
//!
//! - against the moto AWS emulator (`moto_server`, installed by
//!   scripts/test.sh): spans from the real OpenTelemetry Python SDK come
//!   back from BatchGetTraces as the segments X-Ray users expect;
//! - against a fake PutTraceSegments endpoint (axum, REST-JSON as X-Ray
//!   speaks it) that throttles, fails and leaves segments unprocessed:
//!   nothing is lost, retries are counted; a slow endpoint makes receivers
//!   refuse (backpressure) or, without it, overflows the bounded queue,
//!   which drops and counts; SIGTERM flushes the queue.

use crate::support as common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::moto::{FAKE_AWS_ENV, Moto, client_config, moto_server_path};
use common::xray::{Part, fresh_spans, parts, send_http, wait_metrics, xray_trace_id};
use common::{Collector, otel_python, request, series_value, test_file};
use prost::Message;
use serde_json::{Value, json};

const SENT: &str = "tracemap_exporter_sent_total{exporter=\"xray\"}";
const FAILED_REJECTED: &str =
    "tracemap_exporter_failed_total{exporter=\"xray\",reason=\"rejected\"}";
const FAILED_EXHAUSTED: &str =
    "tracemap_exporter_failed_total{exporter=\"xray\",reason=\"retries_exhausted\"}";
const RETRIES: &str = "tracemap_exporter_retries_total{exporter=\"xray\"}";
const QUEUE_FULL: &str = "tracemap_exporter_dropped_total{exporter=\"xray\",reason=\"queue_full\"}";

/// Both failure series are exported (at zero), so a rename cannot make
/// this pass vacuously.
fn assert_no_failures(text: &str) {
    for series in [FAILED_REJECTED, FAILED_EXHAUSTED] {
        assert!(
            text.contains(&format!("{series} ")),
            "{series} missing:\n{text}"
        );
        assert_eq!(series_value(text, series), 0.0, "{series}");
    }
}

/// Segments and subsegments of `trace_id` in moto, the embedded ones too,
/// keyed by id, once `count` are there.
async fn read_back(
    client: &aws_sdk_xray::Client,
    trace_id: &str,
    count: usize,
) -> HashMap<String, Part> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = client
            .batch_get_traces()
            .trace_ids(trace_id)
            .send()
            .await
            .expect("BatchGetTraces");
        let mut docs = HashMap::new();
        for segment in out.traces().iter().flat_map(|t| t.segments()) {
            let doc: Value = serde_json::from_str(segment.document().unwrap()).unwrap();
            assert_eq!(doc["id"], segment.id().unwrap());
            parts(doc, None, &mut docs);
        }
        if docs.len() >= count {
            return docs;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} spans reached moto: {:#?}",
            docs.len(),
            docs.values().map(|p| &p.json).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn python_sdk_spans_come_back_from_moto_as_xray_segments() {
    let Some(python) = otel_python() else { return };
    let Some(moto_path) = moto_server_path("the X-Ray test") else {
        return;
    };
    let moto = Moto::start(&moto_path);
    let yaml = format!(
        "exporters:\n  xray:\n    enabled: true\n    region: us-east-1\n    endpoint: {}\n    \
         indexed_attributes: [customer.tier, order.id]\n    flush_interval: 100ms\n",
        moto.endpoint
    );
    let collector = Collector::start_command_env(&["run"], &yaml, FAKE_AWS_ENV);

    let output = Command::new(&python)
        .arg(test_file("python/xray_app.py"))
        .args(["--endpoint", &collector.grpc_url()])
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "python app failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let sent: Value = serde_json::from_slice(&output.stdout).expect("json from xray_app.py");
    let trace_id = xray_trace_id(sent["trace_id"].as_str().unwrap());
    let id = |label: &str| sent["spans"][label].as_str().unwrap().to_owned();

    let docs = read_back(
        &aws_sdk_xray::Client::new(&client_config(&moto.endpoint)),
        &trace_id,
        5,
    )
    .await;
    assert_eq!(docs.len(), 5, "every span once");
    for part in docs.values() {
        let doc = &part.json;
        if part.within.is_none() {
            assert_eq!(doc["trace_id"], trace_id.as_str());
        }
        assert!(doc["start_time"].as_f64().unwrap() > 1.7e9, "{doc}");
        assert!(
            doc["end_time"].as_f64() >= doc["start_time"].as_f64(),
            "{doc}"
        );
    }
    // checkout-api's spans were exported together: its three CLIENT spans
    // are subsegments inside its segment, as an X-Ray SDK sends them.
    let embedded_in_root = |label: &str| {
        let part = &docs[&id(label)];
        assert_eq!(part.within, Some(id("root")), "{label}: {:#}", part.json);
        for key in ["type", "parent_id", "trace_id"] {
            assert!(part.json.get(key).is_none(), "{label}: {:#}", part.json);
        }
        &part.json
    };

    // checkout-api's SERVER span: a segment, with http, fault, user and annotations.
    let root = &docs[&id("root")].json;
    assert_eq!(root["name"], "checkout-api", "{root:#}");
    assert!(
        root.get("type").is_none() && root.get("parent_id").is_none(),
        "{root:#}"
    );
    assert_eq!(root["http"]["request"]["method"], "GET");
    assert_eq!(
        root["http"]["request"]["url"],
        "http://shop.example.com/orders/42?verbose=1"
    );
    assert_eq!(root["http"]["request"]["user_agent"], "xray-test/1.0");
    assert_eq!(root["http"]["request"]["client_ip"], "203.0.113.7");
    assert_eq!(root["http"]["response"]["status"], 500);
    assert_eq!(root["fault"], true, "{root:#}");
    assert_ne!(root["error"], true, "a 5xx is a fault, not an error");
    assert_eq!(root["user"], "alice");
    assert_eq!(root["annotations"]["customer_tier"], "gold", "{root:#}");
    assert_eq!(root["annotations"]["order_id"], 42, "{root:#}");

    // The database call: a remote subsegment with sql.
    let db = embedded_in_root("db");
    assert_eq!(db["namespace"], "remote");
    assert_eq!(db["name"], "orders@db.internal", "database@host: {db:#}");
    assert_eq!(db["sql"]["database_type"], "postgresql", "{db:#}");
    assert_eq!(db["sql"]["url"], "postgresql://db.internal:5432/orders");
    assert_eq!(db["sql"]["user"], "shop", "{db:#}");
    assert_eq!(
        db["sql"]["sanitized_query"], "SELECT * FROM orders WHERE id = $1",
        "{db:#}"
    );
    assert!(
        db.get("http").is_none() && db.get("fault").is_none(),
        "{db:#}"
    );

    // A 404 from inventory, in the old semantic-convention keys: an error.
    let inventory = embedded_in_root("inventory");
    assert_eq!(inventory["name"], "inventory", "{inventory:#}");
    assert_eq!(inventory["namespace"], "remote");
    assert_eq!(inventory["http"]["request"]["method"], "GET");
    assert_eq!(
        inventory["http"]["request"]["url"],
        "http://inventory:8080/stock/42"
    );
    assert_eq!(inventory["http"]["response"]["status"], 404);
    assert_eq!(inventory["error"], true, "{inventory:#}");
    assert_ne!(inventory["fault"], true);

    // The call to payments failed with a 500: a fault on the caller's side…
    let call = embedded_in_root("payments_call");
    assert_eq!(call["name"], "payments", "{call:#}");
    assert_eq!(call["http"]["request"]["method"], "POST");
    assert_eq!(call["http"]["response"]["status"], 500);
    assert_eq!(call["fault"], true);

    // …and payments' own segment, child of that call, carries the exception.
    let charge = &docs[&id("charge")].json;
    assert!(docs[&id("charge")].within.is_none(), "{charge:#}");
    assert_eq!(charge["name"], "payments", "{charge:#}");
    assert!(
        charge.get("type").is_none(),
        "a SERVER span is a segment: {charge:#}"
    );
    assert_eq!(charge["parent_id"], id("payments_call").as_str());
    assert_eq!(charge["fault"], true);
    let exceptions = charge["cause"]["exceptions"]
        .as_array()
        .unwrap_or_else(|| panic!("cause.exceptions: {charge:#}"));
    assert_eq!(exceptions[0]["type"], "RuntimeError", "{charge:#}");
    assert_eq!(exceptions[0]["message"], "card processor unavailable");
    assert!(
        exceptions[0]["stack"][0]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("xray_app.py")),
        "{charge:#}"
    );

    // Counted once X-Ray has answered, which can be after moto shows them.
    let text = wait_metrics(&collector, "5 spans sent", |t| series_value(t, SENT) >= 5.0).await;
    assert_eq!(series_value(&text, SENT), 5.0, "{text}");
    assert_no_failures(&text);
}

// ------------------------------------------------ fake PutTraceSegments

/// How the fake answers the next calls; after the script, success.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// HTTP 429 `ThrottledException`, as X-Ray throttles.
    Throttle,
    /// HTTP 500 `InternalFailure`.
    ServerError,
    /// 200, with every other document in `UnprocessedTraceSegments`.
    HalfUnprocessed,
}

#[derive(Default)]
struct FakeXray {
    script: Mutex<VecDeque<Reply>>,
    /// Throttle every call (an outage), after the script.
    always_throttle: bool,
    /// Time each call takes.
    delay: Duration,
    /// Segment ids the fake accepted, in order, duplicates kept.
    accepted: Mutex<Vec<String>>,
    calls: Mutex<u64>,
    bad_requests: Mutex<Vec<String>>,
}

async fn put_trace_segments(
    State(fake): State<Arc<FakeXray>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    tokio::time::sleep(fake.delay).await;
    *fake.calls.lock().unwrap() += 1;
    if let Err(why) = check_signature(&headers, &body) {
        fake.bad_requests.lock().unwrap().push(why);
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => {
            fake.bad_requests.lock().unwrap().push(err.to_string());
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    let ids: Vec<String> = body["TraceSegmentDocuments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|doc| {
            let doc: Value = serde_json::from_str(doc.as_str().unwrap()).unwrap();
            doc["id"].as_str().unwrap().to_owned()
        })
        .collect();
    if ids.is_empty() || ids.len() > 50 {
        fake.bad_requests
            .lock()
            .unwrap()
            .push(format!("{} documents", ids.len()));
    }
    let reply = fake.script.lock().unwrap().pop_front();
    let error = |status: StatusCode, kind: &str, message: &str| {
        (
            status,
            [
                ("x-amzn-errortype", kind),
                ("content-type", "application/json"),
            ],
            json!({"message": message}).to_string(),
        )
            .into_response()
    };
    match reply {
        Some(Reply::Throttle) => error(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottledException",
            "Rate exceeded",
        ),
        None if fake.always_throttle => error(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottledException",
            "Rate exceeded",
        ),
        Some(Reply::ServerError) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", "oops")
        }
        Some(Reply::HalfUnprocessed) => {
            let (kept, left): (Vec<_>, Vec<_>) =
                ids.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
            fake.accepted
                .lock()
                .unwrap()
                .extend(kept.into_iter().map(|(_, id)| id));
            let unprocessed: Vec<Value> = left
                .into_iter()
                .map(|(_, id)| json!({"Id": id, "ErrorCode": "ThrottledException", "Message": "slow down"}))
                .collect();
            axum::Json(json!({"UnprocessedTraceSegments": unprocessed})).into_response()
        }
        None => {
            fake.accepted.lock().unwrap().extend(ids);
            axum::Json(json!({"UnprocessedTraceSegments": []})).into_response()
        }
    }
}

/// Signs the request again, as X-Ray would to check it: the signature must
/// cover exactly the body received (the exporter writes the body itself).
fn check_signature(headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("no {name} header"))
    };
    let auth = header("authorization")?;
    let field = |name: &str| {
        auth.split([' ', ','])
            .find_map(|part| part.strip_prefix(name))
            .ok_or(format!("no {name} in {auth:?}"))
    };
    let credential = field("Credential=")?;
    if !(credential.starts_with("testing/") && credential.ends_with("/us-east-1/xray/aws4_request"))
    {
        return Err(format!("credential scope {credential:?}"));
    }
    let signed: Vec<(&str, &str)> = field("SignedHeaders=")?
        .split(';')
        .map(|name| Ok((name, header(name)?)))
        .collect::<Result<_, String>>()?;
    let identity = aws_credential_types::Credentials::new(
        "testing",
        "testing",
        Some("testing".into()),
        None,
        "test",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("xray")
        .time(parse_amz_date(header("x-amz-date")?)?)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let uri = format!("http://{}/TraceSegments", header("host")?);
    let request = SignableRequest::new("POST", uri, signed.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| e.to_string())?;
    let (_, expected) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let got = field("Signature=")?;
    if got != expected {
        return Err(format!(
            "signature {got} does not cover the body; expected {expected}"
        ));
    }
    Ok(())
}

/// `20261126T010203Z` as a time.
fn parse_amz_date(text: &str) -> Result<SystemTime, String> {
    let bad = || format!("x-amz-date {text:?}");
    let num = |range: std::ops::Range<usize>| -> Result<i64, String> {
        text.get(range).and_then(|s| s.parse().ok()).ok_or_else(bad)
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + num(9..11)? * 3600 + num(11..13)? * 60 + num(13..15)?;
    Ok(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).map_err(|_| bad())?))
}

/// Serves `fake` on a loopback port; returns its endpoint URL.
async fn serve(fake: Arc<FakeXray>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/TraceSegments", axum::routing::post(put_trace_segments))
        .with_state(fake);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn xray_yaml(endpoint: &str, extra: &str) -> String {
    format!(
        "exporters:\n  xray:\n    enabled: true\n    region: us-east-1\n    endpoint: {endpoint}\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_5xx_and_unprocessed_segments_are_retried_until_accepted() {
    let fake = Arc::new(FakeXray {
        script: Mutex::new(VecDeque::from([
            Reply::Throttle,
            Reply::Throttle,
            Reply::Throttle,
            Reply::ServerError,
            Reply::HalfUnprocessed,
            Reply::HalfUnprocessed,
        ])),
        ..FakeXray::default()
    });
    let endpoint = serve(fake.clone()).await;
    let yaml = xray_yaml(
        &endpoint,
        "    flush_interval: 50ms\n    max_retries: 10\n    retry_initial_backoff: 20ms\n    retry_max_backoff: 200ms\n",
    );
    let collector = Collector::start_command_env(&["run"], &yaml, FAKE_AWS_ENV);
    let (spans, ids) = fresh_spans(300, 1);
    send_http(&collector, spans).await;

    let text = wait_metrics(&collector, "300 segments sent", |t| {
        series_value(t, SENT) >= 300.0
    })
    .await;
    // At least once on the wire; here (no timeouts) exactly once accepted.
    let mut accepted = fake.accepted.lock().unwrap().clone();
    accepted.sort();
    let mut expected = ids;
    expected.sort();
    assert_eq!(accepted, expected, "every segment accepted exactly once");
    assert_eq!(series_value(&text, SENT), 300.0);
    assert_no_failures(&text);
    assert_eq!(series_value(&text, QUEUE_FULL), 0.0);
    // 4 whole batches of ≤ 50 re-sent, plus the unprocessed halves.
    assert!(series_value(&text, RETRIES) >= 4.0, "{text}");
    assert!(*fake.calls.lock().unwrap() >= 6 + 6);
    assert!(fake.script.lock().unwrap().is_empty());
    assert_eq!(*fake.bad_requests.lock().unwrap(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_backpressure_a_slow_endpoint_overflows_the_queue_which_drops_and_counts() {
    let fake = Arc::new(FakeXray {
        delay: Duration::from_millis(300),
        ..FakeXray::default()
    });
    let endpoint = serve(fake.clone()).await;
    let yaml = xray_yaml(
        &endpoint,
        "    durability: memory\n    max_queue: 100\n    max_concurrency: 1\n    flush_interval: 50ms\n    backpressure: false\n",
    );
    let collector = Collector::start_command_env(&["run"], &yaml, FAKE_AWS_ENV);
    let (spans, _) = fresh_spans(2000, 2);
    for chunk in spans.chunks(500) {
        send_http(&collector, chunk.to_vec()).await;
    }
    let text = wait_metrics(&collector, "every span sent or dropped", |t| {
        series_value(t, SENT) + series_value(t, QUEUE_FULL) >= 2000.0
    })
    .await;
    let sent = series_value(&text, SENT);
    let dropped = series_value(&text, QUEUE_FULL);
    assert_eq!(sent + dropped, 2000.0, "{text}");
    assert!(
        dropped >= 1000.0,
        "a 100-document queue before a slow endpoint: {text}"
    );
    let accepted = fake.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len() as f64, sent);
    let unique: std::collections::HashSet<_> = accepted.iter().collect();
    assert_eq!(unique.len(), accepted.len(), "no duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_healthy_endpoint_makes_receivers_refuse_instead_of_dropping() {
    let fake = Arc::new(FakeXray {
        delay: Duration::from_millis(20),
        ..FakeXray::default()
    });
    let endpoint = serve(fake.clone()).await;
    let yaml = format!(
        "pipeline:\n  enqueue_timeout: 10ms\n{}",
        xray_yaml(
            &endpoint,
            "    durability: memory\n    max_queue: 1000\n    max_concurrency: 1\n    flush_interval: 50ms\n",
        )
    );
    let collector = Collector::start_command_env(&["run"], &yaml, FAKE_AWS_ENV);
    let (spans, ids) = fresh_spans(4000, 5);
    let http = reqwest::Client::new();
    let mut refused = 0;
    // One request at a time, small beside the half of the queue above the
    // high-water mark: what got past the gate always fits, nothing drops.
    for chunk in spans.chunks(100) {
        let body = request("orders", chunk.to_vec()).encode_to_vec();
        loop {
            let response = http
                .post(collector.http_url("/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            match response.status().as_u16() {
                200 => break,
                503 => {
                    assert!(response.headers().contains_key("retry-after"));
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("unexpected status {other}"),
            }
        }
    }
    let text = wait_metrics(&collector, "4000 segments sent", |t| {
        series_value(t, SENT) >= 4000.0
    })
    .await;
    assert!(refused > 0, "the backlog made receivers refuse");
    assert_eq!(
        series_value(
            &text,
            "tracemap_receiver_refused_spans_total{protocol=\"http\",reason=\"queue_full\"}"
        ),
        f64::from(refused * 100)
    );
    assert_eq!(series_value(&text, SENT), 4000.0);
    assert_eq!(series_value(&text, QUEUE_FULL), 0.0, "{text}");
    let mut accepted = fake.accepted.lock().unwrap().clone();
    accepted.sort();
    let mut expected = ids;
    expected.sort();
    assert_eq!(accepted, expected, "every accepted span delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_the_queue_and_reports_what_the_deadline_cut() {
    // A healthy endpoint: partial batches still queued at SIGTERM go out.
    let fake = Arc::new(FakeXray::default());
    let endpoint = serve(fake.clone()).await;
    let yaml = xray_yaml(&endpoint, "    flush_interval: 1h\n");
    let mut collector = Collector::start_command_env(&["run"], &yaml, FAKE_AWS_ENV);
    let (spans, ids) = fresh_spans(30, 3);
    send_http(&collector, spans).await;
    wait_metrics(&collector, "30 spans processed", |t| {
        series_value(t, "tracemap_pipeline_processed_spans_total") >= 30.0
    })
    .await;
    assert!(
        fake.accepted.lock().unwrap().is_empty(),
        "held for the interval"
    );
    collector.sigterm();
    assert!(collector.wait_exit(Duration::from_secs(10)).success());
    let mut accepted = fake.accepted.lock().unwrap().clone();
    accepted.sort();
    let mut expected = ids;
    expected.sort();
    assert_eq!(accepted, expected);
    let logs = collector.logs();
    let flushed = logs
        .iter()
        .find(|l| l["message"] == "exporter flushed" && l["exporter"] == "xray")
        .unwrap_or_else(|| panic!("no flush log in {logs:#?}"));
    assert_eq!(
        (flushed["sent"].as_u64(), flushed["lost"].as_u64()),
        (Some(30), Some(0))
    );

    // An endpoint that only throttles: the deadline ends the retries, and
    // the loss is logged and counted.
    let fake = Arc::new(FakeXray {
        always_throttle: true,
        ..FakeXray::default()
    });
    let endpoint = serve(fake.clone()).await;
    let yaml = format!(
        "shutdown_timeout: 2s\n{}",
        xray_yaml(
            &endpoint,
            "    durability: memory\n    max_retries: 100\n    retry_max_backoff: 200ms\n"
        )
    );
    let mut collector = Collector::start_command_env(&["run"], &yaml, FAKE_AWS_ENV);
    let (spans, _) = fresh_spans(10, 4);
    send_http(&collector, spans).await;
    wait_metrics(&collector, "retries", |t| series_value(t, RETRIES) > 0.0).await;
    let stopping = Instant::now();
    collector.sigterm();
    assert!(collector.wait_exit(Duration::from_secs(10)).success());
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "bounded by shutdown_timeout"
    );
    let logs = collector.logs();
    let lost = logs
        .iter()
        .find(|l| {
            l["message"] == "exporter could not send everything before the deadline"
                && l["exporter"] == "xray"
        })
        .unwrap_or_else(|| panic!("no loss report in {logs:#?}"));
    assert_eq!(lost["lost"].as_u64(), Some(10), "{lost}");
    assert_eq!(lost["sent"].as_u64(), Some(0));
}
