//! OTLP/JSON → lean spans.
//!
//! Written against the OTLP JSON encoding rather than reusing the proto
//! crate's serde support because receivers must be lenient where the spec
//! says so: ids are hex (an invalid one rejects that span only, through
//! `partial_success`), enums may be numbers or names, 64-bit integers may be
//! strings or numbers, field names may be lowerCamelCase or snake_case, and
//! unknown fields are ignored.

use std::sync::Arc;

use base64::Engine as _;
use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::model::{
    AttributeValue, Attributes, Event, IdError, Resource, Span, SpanId, SpanKind, StatusCode,
    TraceId,
};
use crate::receiver::{Decoded, InvalidId};

/// Parses an OTLP/JSON `ExportTraceServiceRequest`.
pub fn decode(body: &[u8]) -> Result<Decoded, serde_json::Error> {
    // serde lets a struct come from a JSON array too; OTLP requires an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(de::Error::custom("expected a JSON object"));
    }
    let request: Request = serde_json::from_slice(body)?;
    let mut decoded = Decoded::default();
    for resource_spans in request.resource_spans {
        let attributes = resource_spans
            .resource
            .map(|r| attributes(r.attributes))
            .unwrap_or_default();
        let resource = Arc::new(Resource::new(attributes));
        for scope_spans in resource_spans.scope_spans {
            let scope_name: Arc<str> = scope_spans.scope.map(|s| s.name).unwrap_or_default().into();
            for span in scope_spans.spans {
                match convert_span(span, &resource, &scope_name) {
                    Ok(span) => decoded.spans.push(span),
                    Err((which, error, name)) => decoded.rejections.add(which, error, &name),
                }
            }
        }
    }
    Ok(decoded)
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Request {
    #[serde(alias = "resource_spans")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ResourceSpans {
    resource: Option<JsonResource>,
    #[serde(alias = "scope_spans")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonResource {
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ScopeSpans {
    scope: Option<Scope>,
    spans: Vec<JsonSpan>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Scope {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JsonSpan {
    #[serde(alias = "trace_id")]
    trace_id: String,
    #[serde(alias = "span_id")]
    span_id: String,
    #[serde(alias = "parent_span_id")]
    parent_span_id: String,
    name: String,
    #[serde(deserialize_with = "span_kind")]
    kind: SpanKind,
    #[serde(alias = "start_time_unix_nano", deserialize_with = "u64_lenient")]
    start_time_unix_nano: u64,
    #[serde(alias = "end_time_unix_nano", deserialize_with = "u64_lenient")]
    end_time_unix_nano: u64,
    attributes: Vec<KeyValue>,
    events: Vec<JsonEvent>,
    status: Option<JsonStatus>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JsonEvent {
    #[serde(alias = "time_unix_nano", deserialize_with = "u64_lenient")]
    time_unix_nano: u64,
    name: String,
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonStatus {
    message: String,
    #[serde(deserialize_with = "status_code")]
    code: StatusCode,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyValue {
    key: String,
    value: Option<JsonAnyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JsonAnyValue {
    #[serde(alias = "string_value")]
    string_value: Option<String>,
    #[serde(alias = "bool_value")]
    bool_value: Option<bool>,
    #[serde(alias = "int_value", deserialize_with = "opt_i64_lenient")]
    int_value: Option<i64>,
    #[serde(alias = "double_value", deserialize_with = "opt_f64_lenient")]
    double_value: Option<f64>,
    #[serde(alias = "array_value")]
    array_value: Option<ValueList>,
    #[serde(alias = "kvlist_value")]
    kvlist_value: Option<KeyValueList>,
    #[serde(alias = "bytes_value")]
    bytes_value: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ValueList {
    values: Vec<JsonAnyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyValueList {
    values: Vec<KeyValue>,
}

type Rejected = (InvalidId, IdError, String);

fn convert_span(
    span: JsonSpan,
    resource: &Arc<Resource>,
    scope_name: &Arc<str>,
) -> Result<Span, Rejected> {
    let trace_id =
        TraceId::from_hex(&span.trace_id).map_err(|e| (InvalidId::Trace, e, span.name.clone()))?;
    let span_id =
        SpanId::from_hex(&span.span_id).map_err(|e| (InvalidId::Span, e, span.name.clone()))?;
    let parent_span_id = match span.parent_span_id.as_str() {
        "" => None,
        hex if hex.bytes().all(|b| b == b'0') && hex.len() == SpanId::LEN * 2 => None,
        hex => Some(SpanId::from_hex(hex).map_err(|e| (InvalidId::Parent, e, span.name.clone()))?),
    };
    let status = span.status.unwrap_or_default();
    Ok(Span {
        resource: resource.clone(),
        scope_name: scope_name.clone(),
        trace_id,
        span_id,
        parent_span_id,
        name: span.name.into(),
        kind: span.kind,
        status_code: status.code,
        status_message: status.message,
        start_unix_nano: span.start_time_unix_nano,
        end_unix_nano: span.end_time_unix_nano,
        attributes: attributes(span.attributes),
        events: span
            .events
            .into_iter()
            .map(|event| Event {
                name: event.name,
                time_unix_nano: event.time_unix_nano,
                attributes: attributes(event.attributes),
            })
            .collect(),
    })
}

fn attributes(key_values: Vec<KeyValue>) -> Attributes {
    Attributes::from_vec(
        key_values
            .into_iter()
            .map(|kv| (kv.key, kv.value.map_or(AttributeValue::Empty, any_value)))
            .collect(),
    )
}

fn any_value(value: JsonAnyValue) -> AttributeValue {
    if let Some(s) = value.string_value {
        AttributeValue::String(s)
    } else if let Some(b) = value.bool_value {
        AttributeValue::Bool(b)
    } else if let Some(i) = value.int_value {
        AttributeValue::Int(i)
    } else if let Some(d) = value.double_value {
        AttributeValue::Double(d)
    } else if let Some(list) = value.array_value {
        AttributeValue::Array(list.values.into_iter().map(any_value).collect())
    } else if let Some(map) = value.kvlist_value {
        AttributeValue::Map(attributes(map.values))
    } else if let Some(b64) = value.bytes_value {
        // Undecodable bytes keep their text rather than failing the span.
        match base64::engine::general_purpose::STANDARD.decode(&b64) {
            Ok(bytes) => AttributeValue::Bytes(bytes),
            Err(_) => AttributeValue::String(b64),
        }
    } else {
        AttributeValue::Empty
    }
}

/// A JSON number or a string holding one, as proto3 JSON writes 64-bit values.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString<T> {
    Number(T),
    Text(String),
}

fn u64_lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match Option::<NumberOrString<u64>>::deserialize(deserializer)? {
        None => Ok(0),
        Some(NumberOrString::Number(n)) => Ok(n),
        Some(NumberOrString::Text(s)) => s
            .parse()
            .map_err(|_| de::Error::custom(format!("expected an unsigned integer, got {s:?}"))),
    }
}

fn opt_i64_lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    match Option::<NumberOrString<i64>>::deserialize(deserializer)? {
        None => Ok(None),
        Some(NumberOrString::Number(n)) => Ok(Some(n)),
        Some(NumberOrString::Text(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("expected an integer, got {s:?}"))),
    }
}

fn opt_f64_lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    match Option::<NumberOrString<f64>>::deserialize(deserializer)? {
        None => Ok(None),
        Some(NumberOrString::Number(n)) => Ok(Some(n)),
        Some(NumberOrString::Text(s)) => match s.as_str() {
            "NaN" => Ok(Some(f64::NAN)),
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            _ => s
                .parse()
                .map(Some)
                .map_err(|_| de::Error::custom(format!("expected a number, got {s:?}"))),
        },
    }
}

fn span_kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SpanKind, D::Error> {
    match Option::<NumberOrString<i32>>::deserialize(deserializer)? {
        None => Ok(SpanKind::Unspecified),
        Some(NumberOrString::Number(n)) => Ok(SpanKind::from_otlp(n)),
        Some(NumberOrString::Text(s)) => SpanKind::from_otlp_name(&s)
            .ok_or_else(|| de::Error::custom(format!("unknown span kind {s:?}"))),
    }
}

fn status_code<'de, D: Deserializer<'de>>(deserializer: D) -> Result<StatusCode, D::Error> {
    match Option::<NumberOrString<i32>>::deserialize(deserializer)? {
        None => Ok(StatusCode::Unset),
        Some(NumberOrString::Number(n)) => Ok(StatusCode::from_otlp(n)),
        Some(NumberOrString::Text(s)) => StatusCode::from_otlp_name(&s)
            .ok_or_else(|| de::Error::custom(format!("unknown status code {s:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
      "resourceSpans": [{
        "resource": {"attributes": [
          {"key": "service.name", "value": {"stringValue": "frontend"}}
        ]},
        "scopeSpans": [{
          "scope": {"name": "manual", "version": "1.0"},
          "spans": [{
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "eee19b7ec3c1b174",
            "parentSpanId": "eee19b7ec3c1b173",
            "name": "GET /",
            "kind": "SPAN_KIND_SERVER",
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": 1544712661000000000,
            "attributes": [
              {"key": "http.response.status_code", "value": {"intValue": "500"}},
              {"key": "n", "value": {"intValue": 7}},
              {"key": "ok", "value": {"boolValue": false}},
              {"key": "ratio", "value": {"doubleValue": "NaN"}},
              {"key": "raw", "value": {"bytesValue": "AQI="}},
              {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "2"}]}}},
              {"key": "obj", "value": {"kvlistValue": {"values": [{"key": "x", "value": {"doubleValue": 1.5}}]}}},
              {"key": "nothing", "value": {}}
            ],
            "events": [{"timeUnixNano": "1544712660500000000", "name": "exception",
                        "attributes": [{"key": "exception.message", "value": {"stringValue": "boom"}}]}],
            "status": {"code": "STATUS_CODE_ERROR", "message": "failed"},
            "someFutureField": {"ignored": true}
          }]
        }]
      }]
    }"#;

    #[test]
    fn every_field_survives_json_decoding() {
        let decoded = decode(FULL.as_bytes()).unwrap();
        assert_eq!(decoded.rejections.total(), 0);
        let span = &decoded.spans[0];
        assert_eq!(
            span.trace_id.to_string(),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(span.span_id.to_string(), "eee19b7ec3c1b174");
        assert_eq!(span.parent_span_id.unwrap().to_string(), "eee19b7ec3c1b173");
        assert_eq!(span.kind, SpanKind::Server);
        assert_eq!(span.status_code, StatusCode::Error);
        assert_eq!(span.status_message, "failed");
        assert_eq!(span.start_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.service_name(), "frontend");
        assert_eq!(&*span.scope_name, "manual");
        let a = &span.attributes;
        assert_eq!(
            a.get("http.response.status_code"),
            Some(AttributeValue::Int(500))
        );
        assert_eq!(a.get("n"), Some(AttributeValue::Int(7)));
        assert_eq!(a.get("ok"), Some(AttributeValue::Bool(false)));
        assert!(matches!(a.get("ratio"), Some(AttributeValue::Double(d)) if d.is_nan()));
        assert_eq!(a.get("raw"), Some(AttributeValue::Bytes(vec![1, 2])));
        assert_eq!(
            a.get("tags"),
            Some(AttributeValue::Array(vec![
                AttributeValue::String("a".into()),
                AttributeValue::Int(2)
            ]))
        );
        let Some(AttributeValue::Map(obj)) = a.get("obj") else {
            panic!("map expected")
        };
        assert_eq!(obj.get("x"), Some(AttributeValue::Double(1.5)));
        assert_eq!(a.get("nothing"), Some(AttributeValue::Empty));
        assert_eq!(span.events[0].time_unix_nano, 1_544_712_660_500_000_000);
        assert_eq!(
            span.events[0].attributes.get_str("exception.message"),
            Some("boom")
        );
    }

    #[test]
    fn numeric_enums_and_snake_case_keys() {
        let body = r#"{"resource_spans":[{"scope_spans":[{"spans":[
            {"trace_id":"0102030405060708090a0b0c0d0e0f10","span_id":"0102030405060708",
             "kind":5,"status":{"code":1},"start_time_unix_nano":10,"end_time_unix_nano":"25"}]}]}]}"#;
        let decoded = decode(body.as_bytes()).unwrap();
        let span = &decoded.spans[0];
        assert_eq!(span.kind, SpanKind::Consumer);
        assert_eq!(span.status_code, StatusCode::Ok);
        assert_eq!(span.duration_nanos(), 15);
        assert_eq!(span.parent_span_id, None);
        assert_eq!(span.service_name(), "unknown_service");
    }

    #[test]
    fn bad_ids_reject_only_their_span() {
        let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
            {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"ok"},
            {"traceId":"00000000000000000000000000000000","spanId":"0102030405060708","name":"zero"},
            {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"01020304","name":"short"},
            {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","parentSpanId":"xyz","name":"p"},
            {"spanId":"0102030405060708","name":"missing"}
        ]}]}]}"#;
        let decoded = decode(body.as_bytes()).unwrap();
        assert_eq!(decoded.spans.len(), 1);
        assert_eq!(decoded.rejections.total(), 4);
        assert!(
            decoded
                .rejections
                .message()
                .contains("\"zero\" has an invalid trace_id: all-zero id")
        );
    }

    #[test]
    fn malformed_json_and_bad_enums_fail_the_request() {
        assert!(decode(b"{\"resourceSpans\": [").is_err());
        assert!(decode(b"[]").is_err());
        let err = decode(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SERVER"}]}]}]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown span kind \"SERVER\""), "{err}");
    }

    #[test]
    fn empty_object_is_an_empty_request() {
        let decoded = decode(b"{}").unwrap();
        assert!(decoded.spans.is_empty());
        assert_eq!(decoded.rejections.total(), 0);
    }
}
