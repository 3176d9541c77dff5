//! Helpers the translation tests share (`nest.rs` uses them too), and
//! tests of the whole document: segment or subsegment, ids, times, flags,
//! the trace-id policy and the shapes the X-Ray SDKs write.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::*;
use crate::model::{AttributeValue, Attributes, Event, Resource, SpanId, TraceId};

pub(super) const NOW_SECS: u32 = 1_700_000_000;
/// 1699999999.123456789 s.
pub(super) const START: u64 = 1_699_999_999_123_456_789;
pub(super) const SPAN_ID: [u8; 8] = 0x5399_5c3f_42cd_8ad8_u64.to_be_bytes();
pub(super) const PARENT_ID: [u8; 8] = 0xdefd_fd99_12dc_5a56_u64.to_be_bytes();

pub(crate) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS.into())
}

/// An X-Ray-style id made `age_secs` before `now()`.
pub(crate) fn epoch_trace_id(age_secs: i64) -> TraceId {
    let mut bytes = [0x11u8; 16];
    let epoch = u32::try_from(i64::from(NOW_SECS) - age_secs).unwrap();
    bytes[..4].copy_from_slice(&epoch.to_be_bytes());
    TraceId::from_bytes(bytes)
}

pub(crate) fn s(text: &str) -> AttributeValue {
    AttributeValue::String(text.into())
}

pub(super) fn i(n: i64) -> AttributeValue {
    AttributeValue::Int(n)
}

pub(super) fn attributes(pairs: &[(&str, AttributeValue)]) -> Attributes {
    Attributes::from_vec(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

pub(super) fn resource(pairs: &[(&str, AttributeValue)]) -> Arc<Resource> {
    Arc::new(Resource::new(attributes(pairs)))
}

/// A span of `kind` with a parent, in service `checkout`.
pub(crate) fn span(kind: SpanKind, pairs: &[(&str, AttributeValue)]) -> Span {
    Span {
        resource: resource(&[("service.name", s("checkout"))]),
        scope_name: "test".into(),
        trace_id: epoch_trace_id(60),
        span_id: SpanId::from_bytes(SPAN_ID),
        parent_span_id: Some(SpanId::from_bytes(PARENT_ID)),
        name: "charge card".into(),
        kind,
        status_code: StatusCode::Unset,
        status_message: String::new(),
        start_unix_nano: START,
        end_unix_nano: START + 250_000_000,
        attributes: attributes(pairs),
        events: Vec::new(),
    }
}

pub(super) fn translate_with(span: &Span, config: &TranslateConfig) -> Value {
    let text = translate(span, config, now()).expect("translated");
    assert!(text.len() <= MAX_DOCUMENT_BYTES);
    // What the exporter sends: the same document, escaped as a string.
    let escaped = translate_escaped(span, config, now()).expect("translated");
    let quoted = serde_json::to_string(&text).unwrap();
    assert_eq!(
        String::from_utf8(escaped).unwrap(),
        quoted[1..quoted.len() - 1]
    );
    serde_json::from_str(&text).expect("valid JSON")
}

pub(super) fn doc(span: &Span) -> Value {
    translate_with(span, &TranslateConfig::default())
}

pub(super) fn exception(kind: &str, message: &str, stack: &str) -> Event {
    Event {
        name: "exception".into(),
        time_unix_nano: START,
        attributes: attributes(&[
            ("exception.type", s(kind)),
            ("exception.message", s(message)),
            ("exception.stacktrace", s(stack)),
        ]),
    }
}

pub(super) fn eks_resource() -> Arc<Resource> {
    resource(&[
        ("service.name", s("checkout")),
        ("service.version", s("1.4.2")),
        ("cloud.provider", s("aws")),
        ("cloud.platform", s("aws_eks")),
        ("cloud.account.id", s("123456789012")),
        ("cloud.availability_zone", s("eu-west-1a")),
        ("k8s.cluster.name", s("prod")),
        ("k8s.pod.name", s("checkout-7d9")),
        ("container.id", s("abc123")),
        ("host.id", s("i-0abc")),
        ("telemetry.sdk.name", s("opentelemetry")),
        ("telemetry.sdk.language", s("java")),
        ("telemetry.sdk.version", s("1.40.0")),
        ("telemetry.auto.version", s("2.0.0")),
    ])
}

pub(super) fn cause_without_ids(out: &Value) -> Value {
    let mut cause = out["cause"].clone();
    let exceptions = cause["exceptions"].as_array_mut().unwrap();
    let ids: Vec<String> = exceptions
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "ids unique"
    );
    for exception in exceptions.iter_mut() {
        let object = exception.as_object_mut().unwrap();
        object.remove("id");
        if let Some(cause) = object.get_mut("cause") {
            // Links point at another exception of the document.
            assert!(ids.iter().any(|id| cause == id));
            *cause = json!("<id>");
        }
    }
    cause
}

pub(super) fn with_exception(kind: SpanKind, language: &str, event: Event) -> Value {
    let mut span = span(kind, &[]);
    span.resource = resource(&[
        ("service.name", s("checkout")),
        ("telemetry.sdk.language", s(language)),
    ]);
    span.events = vec![event];
    doc(&span)
}

#[test]
fn server_span_is_a_segment_golden() {
    assert_eq!(
        doc(&span(SpanKind::Server, &[])),
        json!({
            "name": "checkout",
            "id": "53995c3f42cd8ad8",
            "trace_id": "1-6553f0c4-111111111111111111111111",
            "start_time": 1699999999.123456,
            "end_time": 1699999999.373456,
            "parent_id": "defdfd9912dc5a56",
            "metadata": {"default": {"otel.resource.service.name": "checkout"}}
        })
    );
}

#[test]
fn client_span_is_a_subsegment_golden() {
    assert_eq!(
        doc(&span(SpanKind::Client, &[])),
        json!({
            "name": "charge card",
            "id": "53995c3f42cd8ad8",
            "trace_id": "1-6553f0c4-111111111111111111111111",
            "start_time": 1699999999.123456,
            "end_time": 1699999999.373456,
            "type": "subsegment",
            "parent_id": "defdfd9912dc5a56",
            "namespace": "remote"
        })
    );
}

#[test]
fn segment_or_subsegment_by_kind_and_parent() {
    let is_segment = |span: &Span| doc(span).get("type").is_none();
    for kind in [SpanKind::Server, SpanKind::Consumer] {
        let with_parent = span(kind, &[]);
        assert!(is_segment(&with_parent), "{kind:?}");
        // A segment that continues a trace keeps its parent.
        assert_eq!(doc(&with_parent)["parent_id"], "defdfd9912dc5a56");
    }
    for kind in [
        SpanKind::Client,
        SpanKind::Producer,
        SpanKind::Internal,
        SpanKind::Unspecified,
    ] {
        let child = span(kind, &[]);
        assert!(!is_segment(&child), "{kind:?}");
        let mut root = child.clone();
        root.parent_span_id = None;
        assert!(is_segment(&root), "root {kind:?}");
        assert!(doc(&root).get("parent_id").is_none());
        assert_eq!(doc(&root)["name"], "checkout");
        // A zero parent id is no parent.
        root.parent_span_id = Some(SpanId::from_bytes([0; 8]));
        assert!(is_segment(&root), "zero parent {kind:?}");
    }
    // Subsegments carry what an independent subsegment needs.
    let sub = doc(&span(SpanKind::Internal, &[]));
    assert_eq!(sub["type"], "subsegment");
    assert_eq!(sub["trace_id"], "1-6553f0c4-111111111111111111111111");
    assert_eq!(sub["parent_id"], "defdfd9912dc5a56");
}

#[test]
fn namespaces() {
    let namespace =
        |kind, pairs: &[(&str, AttributeValue)]| doc(&span(kind, pairs))["namespace"].clone();
    assert_eq!(namespace(SpanKind::Client, &[]), "remote");
    assert_eq!(namespace(SpanKind::Producer, &[]), "remote");
    assert_eq!(namespace(SpanKind::Internal, &[]), Value::Null);
    assert_eq!(namespace(SpanKind::Server, &[]), Value::Null);
    assert_eq!(namespace(SpanKind::Consumer, &[]), Value::Null);
    let aws_sdk = [("rpc.system", s("aws-api")), ("rpc.service", s("S3"))];
    assert_eq!(namespace(SpanKind::Client, &aws_sdk), "aws");
    assert_eq!(
        namespace(SpanKind::Client, &[("aws.service", s("S3"))]),
        "aws"
    );
    assert_eq!(
        namespace(SpanKind::Client, &[("rpc.system", s("grpc"))]),
        "remote"
    );
    // Segments have no namespace, even for AWS calls.
    assert_eq!(namespace(SpanKind::Server, &aws_sdk), Value::Null);
}

#[test]
fn error_fault_throttle() {
    let flags = |status: Option<i64>, code: StatusCode| {
        let mut pairs = vec![("http.request.method", s("GET"))];
        if let Some(status) = status {
            pairs.push(("http.response.status_code", i(status)));
        }
        let mut span = span(SpanKind::Server, &pairs);
        span.status_code = code;
        let out = doc(&span);
        let flag = |name: &str| out.get(name) == Some(&Value::Bool(true));
        (flag("error"), flag("throttle"), flag("fault"))
    };
    use StatusCode::*;
    assert_eq!(flags(Some(200), Unset), (false, false, false));
    assert_eq!(flags(Some(400), Unset), (true, false, false));
    assert_eq!(flags(Some(404), Unset), (true, false, false));
    assert_eq!(flags(Some(429), Unset), (true, true, false));
    assert_eq!(flags(Some(500), Unset), (false, false, true));
    assert_eq!(flags(Some(503), Unset), (false, false, true));
    assert_eq!(flags(None, Error), (false, false, true));
    assert_eq!(flags(Some(200), Error), (false, false, true));
    // A 4xx says the caller erred, whatever the status.
    assert_eq!(flags(Some(404), Error), (true, false, false));
    assert_eq!(flags(None, Ok), (false, false, false));
}

#[test]
fn user_from_enduser_id_on_segments() {
    let out = doc(&span(SpanKind::Server, &[("enduser.id", s("u-42"))]));
    assert_eq!(out["user"], "u-42");
    assert!(out["metadata"]["default"].get("enduser.id").is_none());
    // `user` is a segment field: a subsegment keeps it as metadata.
    let out = doc(&span(SpanKind::Client, &[("enduser.id", s("u-42"))]));
    assert!(out.get("user").is_none());
    assert_eq!(out["metadata"]["default"]["enduser.id"], "u-42");
}

#[test]
fn times_in_seconds_to_the_microsecond_never_in_progress() {
    let out = doc(&span(SpanKind::Server, &[]));
    assert_eq!(out["start_time"].as_f64(), Some(1_699_999_999.123_456));
    assert_eq!(out["end_time"].as_f64(), Some(1_699_999_999.373_456));
    assert!(out.get("in_progress").is_none());
    let mut backwards = span(SpanKind::Server, &[]);
    backwards.end_unix_nano = START - 1_000_000;
    let out = doc(&backwards);
    assert_eq!(out["end_time"], out["start_time"]);
}

#[test]
fn w3c_random_trace_ids_are_accepted_by_default() {
    let mut random = span(SpanKind::Server, &[]);
    // The PutTraceSegments reference's own W3C example.
    random.trace_id = TraceId::from_hex("4efaaf4d1e8720b39541901950019ee5").unwrap();
    assert_eq!(
        doc(&random)["trace_id"],
        "1-4efaaf4d-1e8720b39541901950019ee5"
    );
    let epoch_only = TranslateConfig {
        trace_id_policy: TraceIdPolicy::EpochOnly,
        ..TranslateConfig::default()
    };
    assert_eq!(
        translate(&random, &epoch_only, now()),
        Err(DropReason::TraceIdOutOfWindow)
    );
}

#[test]
fn epoch_policy_window() {
    let epoch_only = TranslateConfig {
        trace_id_policy: TraceIdPolicy::EpochOnly,
        ..TranslateConfig::default()
    };
    let day = 24 * 3600;
    for (age, ok) in [
        (0, true),
        (27 * day, true),
        (29 * day, false),
        (40 * day, false),
        (-4 * 60, true),
        (-10 * 60, false),
    ] {
        let mut span = span(SpanKind::Server, &[]);
        span.trace_id = epoch_trace_id(age);
        let result = translate(&span, &epoch_only, now());
        assert_eq!(result.is_ok(), ok, "age {age}s: {result:?}");
        if !ok {
            assert_eq!(result, Err(DropReason::TraceIdOutOfWindow));
        }
        // The default policy takes them all.
        assert!(translate(&span, &TranslateConfig::default(), now()).is_ok());
    }
}

#[test]
fn invalid_ids_are_dropped_with_a_reason() {
    for policy in [TraceIdPolicy::Any, TraceIdPolicy::EpochOnly] {
        let config = TranslateConfig {
            trace_id_policy: policy,
            ..TranslateConfig::default()
        };
        let mut zero = span(SpanKind::Server, &[]);
        zero.trace_id = TraceId::from_bytes([0; 16]);
        assert_eq!(
            translate(&zero, &config, now()),
            Err(DropReason::InvalidTraceId)
        );
        let mut zero = span(SpanKind::Server, &[]);
        zero.span_id = SpanId::from_bytes([0; 8]);
        assert_eq!(
            translate(&zero, &config, now()),
            Err(DropReason::InvalidSpanId)
        );
    }
    let labels: BTreeSet<_> = [
        DropReason::InvalidTraceId,
        DropReason::TraceIdOutOfWindow,
        DropReason::InvalidSpanId,
        DropReason::TooLarge,
        DropReason::Encoding,
    ]
    .map(DropReason::as_label)
    .into_iter()
    .collect();
    assert_eq!(labels.len(), 5);
    assert!(
        labels
            .iter()
            .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    );
}

#[test]
fn config_defaults_and_names() {
    let config: TranslateConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(config, TranslateConfig::default());
    assert_eq!(config.trace_id_policy, TraceIdPolicy::Any);
    let config: TranslateConfig = serde_json::from_value(json!({
        "indexed_attributes": ["a"], "index_all_attributes": true,
        "trace_id_policy": "epoch_only"
    }))
    .unwrap();
    assert_eq!(config.trace_id_policy, TraceIdPolicy::EpochOnly);
    assert!(config.index_all_attributes);
    assert!(serde_json::from_value::<TraceIdPolicy>(json!("epoch")).is_err());
}

// --- Shapes of documents the X-Ray SDKs wrote -----------------------

fn shape(value: &Value, path: String, out: &mut BTreeSet<(String, &'static str)>) {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(items) => {
            for item in items {
                shape(item, format!("{path}[]"), out);
            }
            "array"
        }
        Value::Object(map) => {
            for (key, item) in map {
                let sep = if path.is_empty() { "" } else { "." };
                shape(item, format!("{path}{sep}{key}"), out);
            }
            "object"
        }
    };
    if !path.is_empty() {
        out.insert((path, kind));
    }
}

/// Every field we write exists in the SDK's document with the same JSON
/// type (times may be whole seconds on either side), and every field the
/// SDK wrote is ours too; `ours_only`/`sdk_only` list path prefixes that
/// legitimately differ.
fn assert_same_shape(ours: &Value, sdk: &Value, ours_only: &[&str], sdk_only: &[&str]) {
    let flatten = |v: &Value| {
        let mut set = BTreeSet::new();
        shape(v, String::new(), &mut set);
        set
    };
    let (ours, sdk) = (flatten(ours), flatten(sdk));
    let starts = |path: &str, prefixes: &[&str]| prefixes.iter().any(|p| path.starts_with(p));
    let numeric = |a: &str, b: &str| matches!((a, b), ("float" | "integer", "float" | "integer"));
    for (path, kind) in &ours {
        if starts(path, ours_only) {
            continue;
        }
        let theirs = sdk.iter().find(|(p, _)| p == path);
        assert!(
            theirs.is_some_and(|(_, k)| k == kind || (path.ends_with("_time") && numeric(k, kind))),
            "ours {path}: {kind}, SDK {theirs:?}"
        );
    }
    for (path, kind) in &sdk {
        if !starts(path, sdk_only) {
            assert!(
                ours.iter().any(|(p, _)| p == path),
                "SDK {path}: {kind} missing from ours"
            );
        }
    }
}

fn sdk_document(name: &str) -> Value {
    let text = match name {
        "indepSubsegment" => {
            include_str!("../../../../tests/fixtures/xray-golden/sdk/indepSubsegment.txt")
        }
        "indepSubsegmentWithSql" => {
            include_str!("../../../../tests/fixtures/xray-golden/sdk/indepSubsegmentWithSql.txt")
        }
        "awsValidAwsFields" => {
            include_str!("../../../../tests/fixtures/xray-golden/sdk/awsValidAwsFields.txt")
        }
        "ddbSample" => include_str!("../../../../tests/fixtures/xray-golden/sdk/ddbSample.txt"),
        _ => unreachable!(),
    };
    serde_json::from_str(text).unwrap()
}

#[test]
fn http_client_subsegment_has_the_sdk_shape() {
    let client = span(
        SpanKind::Client,
        &[
            ("http.request.method", s("POST")),
            ("url.full", s("https://api.example.com/health")),
            ("http.response.status_code", i(200)),
            ("http.response.body.size", i(861)),
            ("server.address", s("api.example.com")),
        ],
    );
    let ours = doc(&client);
    let sdk = sdk_document("indepSubsegment");
    assert_eq!(ours["name"], sdk["name"]);
    assert_eq!(ours["http"], sdk["http"]);
    assert_same_shape(&ours, &sdk, &["metadata"], &["traced"]);
}

#[test]
fn sql_subsegment_has_the_sdk_shape() {
    let sdk = sdk_document("indepSubsegmentWithSql");
    let query = sdk["sql"]["sanitized_query"].as_str().unwrap();
    let url = sdk["sql"]["url"].as_str().unwrap();
    let client = span(
        SpanKind::Client,
        &[
            ("db.system", s("postgresql")),
            ("db.name", s("ebdb")),
            ("db.connection_string", s(url)),
            ("db.user", s("dbuser")),
            ("db.statement", s(query)),
        ],
    );
    let ours = doc(&client);
    assert_eq!(ours["name"], sdk["name"]);
    assert_eq!(ours["namespace"], "remote");
    assert_eq!(ours["sql"]["url"], sdk["sql"]["url"]);
    // The SDK reads the driver; OTel spans carry no such facts.
    assert_same_shape(
        &ours,
        &sdk,
        &[],
        &[
            "sql.preparation",
            "sql.database_version",
            "sql.driver_version",
        ],
    );
}

#[test]
fn http_server_segment_with_aws_resource_has_the_sdk_shape() {
    let sdk = sdk_document("awsValidAwsFields");
    let mut server = span(
        SpanKind::Server,
        &[
            ("http.method", s("GET")),
            ("http.url", s("http://localhost:8000/")),
            ("http.client_ip", s("127.0.0.1")),
            ("http.user_agent", s("Go-http-client/1.1")),
            ("http.status_code", i(200)),
        ],
    );
    server.parent_span_id = None;
    server.resource = resource(&[
        ("service.name", s("SampleServer")),
        ("cloud.provider", s("aws")),
        ("cloud.platform", s("aws_ecs")),
        ("cloud.account.id", s("000000000000")),
        ("cloud.availability_zone", s("us-west-2c")),
        ("container.name", s("containerId1234")),
        ("container.id", s("d8453812a556")),
        ("host.id", s("i-075ad396f12bc325a")),
        ("host.type", s("m5.xlarge")),
        ("host.image.id", s("ami-003634241a8fcdec0")),
        ("telemetry.sdk.name", s("X-Ray for Go")),
        ("telemetry.sdk.language", s("go")),
        ("telemetry.sdk.version", s("1.1.0")),
    ]);
    let ours = doc(&server);
    assert_eq!(ours["http"], sdk["http"]);
    assert_eq!(ours["aws"]["ec2"], sdk["aws"]["ec2"]);
    assert_eq!(ours["aws"]["ecs"], sdk["aws"]["ecs"]);
    assert_eq!(ours["aws"]["xray"]["sdk"], sdk["aws"]["xray"]["sdk"]);
    assert_same_shape(
        &ours,
        &sdk,
        &["metadata", "origin", "aws.xray.auto_instrumentation"],
        // One platform per resource; the Go compiler is not an OTel fact.
        &["aws.elastic_beanstalk", "service", "Dummy"],
    );
}

#[test]
fn aws_sdk_subsegment_and_cause_have_the_sdk_shape() {
    let sdk = sdk_document("ddbSample");
    let failed_call = &sdk["subsegments"][0]["subsegments"][1];
    let mut call = span(
        SpanKind::Client,
        &[
            ("rpc.system", s("aws-api")),
            ("rpc.service", s("dynamodb")),
            ("rpc.method", s("PutItem")),
            ("aws.region", s("us-west-2")),
            (
                "aws.request_id",
                s("TJUJNR0JV84CFHJL93D3GIA0LBVV4KQNSO5AEMVJF66Q9ASUAAJG"),
            ),
            ("aws.table_name", s("does_not_exist")),
            ("http.response.status_code", i(400)),
            ("http.response.body.size", i(112)),
        ],
    );
    call.resource = resource(&[
        ("service.name", s("DDB")),
        ("telemetry.sdk.language", s("go")),
    ]);
    let stack = "goroutine 1 [running]:\n\
        github.com/aws/aws-sdk-go/aws/request.(*HandlerList).Run(0x1)\n\
        \tgithub.com/aws/aws-sdk-go@v1.33.9/aws/request/handlers.go:267 +0x1d\n";
    call.events = vec![exception(
        "dynamodb.ResourceNotFoundException",
        "ResourceNotFoundException: Requested resource not found",
        stack,
    )];
    let ours = doc(&call);
    assert_eq!(ours["name"], failed_call["name"]);
    assert_eq!(ours["namespace"], failed_call["namespace"]);
    assert_eq!(ours["http"], failed_call["http"]);
    assert_eq!(
        ours["cause"]["exceptions"][0]["stack"][0],
        failed_call["cause"]["exceptions"][0]["stack"][0]
    );
    assert_same_shape(
        &ours,
        failed_call,
        // An independent subsegment names its trace and parent; 400 is
        // the caller's error (the Go SDK said fault).
        &["trace_id", "type", "parent_id", "error", "metadata"],
        &[
            "subsegments",
            "Dummy",
            "fault",
            "aws.retries",
            "aws.consumed_capacity",
            "aws.item_collection_metrics",
            "cause.working_directory",
        ],
    );
}
