//! The segment document: borrowing `Serialize` structs, and the JSON forms
//! of attribute values and ids.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::json::Micros;
use crate::model::{AttributeValue, ValueRef};

#[derive(Serialize)]
pub(super) struct Document<'d> {
    pub(super) name: Cow<'d, str>,
    pub(super) id: Ascii<16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) trace_id: Option<Ascii<35>>,
    pub(super) start_time: Micros,
    pub(super) end_time: Micros,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub(super) kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) parent_id: Option<Ascii<16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) namespace: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) origin: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<&'d str>,
    #[serde(skip_serializing_if = "is_false")]
    pub(super) error: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub(super) throttle: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub(super) fault: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cause: Option<Cause<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) http: Option<Http<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sql: Option<Sql<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) aws: Option<Aws<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) service: Option<Service<'d>>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "entries")]
    pub(super) annotations: Vec<(Cow<'d, str>, &'d ValueRef<'d>)>,
    #[serde(skip_serializing_if = "Metadata::is_empty")]
    pub(super) metadata: Metadata<'d>,
    /// Bytes to reserve for the JSON.
    #[serde(skip)]
    pub(super) size_hint: usize,
}

pub(super) fn is_false(b: &bool) -> bool {
    !*b
}

pub(super) fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize, Default)]
pub(super) struct Http<'d> {
    #[serde(skip_serializing_if = "HttpRequest::is_empty")]
    pub(super) request: HttpRequest<'d>,
    #[serde(skip_serializing_if = "HttpResponse::is_empty")]
    pub(super) response: HttpResponse,
}

#[derive(Serialize, Default)]
pub(super) struct HttpRequest<'d> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) method: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) url: Option<Cow<'d, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) user_agent: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) client_ip: Option<&'d str>,
    #[serde(skip_serializing_if = "is_false")]
    pub(super) x_forwarded_for: bool,
}

impl HttpRequest<'_> {
    pub(super) fn is_empty(&self) -> bool {
        self.method.is_none()
            && self.url.is_none()
            && self.user_agent.is_none()
            && self.client_ip.is_none()
    }
}

#[derive(Serialize, Default)]
pub(super) struct HttpResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) content_length: Option<i64>,
}

impl HttpResponse {
    pub(super) fn is_empty(&self) -> bool {
        self.status.is_none() && self.content_length.is_none()
    }
}

#[derive(Serialize)]
pub(super) struct Sql<'d> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) url: Option<Cow<'d, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) connection_string: Option<&'d str>,
    pub(super) database_type: &'d str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sanitized_query: Option<&'d str>,
}

#[derive(Serialize, Default)]
pub(super) struct Aws<'d> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) account_id: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) operation: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) region: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) request_id: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) queue_url: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) table_name: Option<&'d str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) table_names: Vec<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ec2: Option<Ec2<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ecs: Option<Ecs<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) eks: Option<Eks<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) elastic_beanstalk: Option<Beanstalk<'d>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) cloudwatch_logs: Vec<LogGroup<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) xray: Option<XrayInfo<'d>>,
}

impl Aws<'_> {
    pub(super) fn is_empty(&self) -> bool {
        self.account_id.is_none()
            && self.operation.is_none()
            && self.region.is_none()
            && self.request_id.is_none()
            && self.queue_url.is_none()
            && self.table_name.is_none()
            && self.table_names.is_empty()
            && self.ec2.is_none()
            && self.ecs.is_none()
            && self.eks.is_none()
            && self.elastic_beanstalk.is_none()
            && self.cloudwatch_logs.is_empty()
            && self.xray.is_none()
    }
}

#[derive(Serialize)]
pub(super) struct Ec2<'d> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) instance_id: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) availability_zone: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) instance_size: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ami_id: Option<&'d str>,
}

#[derive(Serialize)]
pub(super) struct Ecs<'d> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) container: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) container_id: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) task_arn: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) task_family: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cluster_arn: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) container_arn: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) availability_zone: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) launch_type: Option<&'d str>,
}

#[derive(Serialize)]
pub(super) struct Eks<'d> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cluster_name: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) pod: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) container_id: Option<&'d str>,
}

#[derive(Serialize)]
pub(super) struct Beanstalk<'d> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) environment_name: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) version_label: Option<&'d str>,
    pub(super) deployment_id: i64,
}

#[derive(Serialize)]
pub(super) struct LogGroup<'d> {
    pub(super) log_group: &'d str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) arn: Option<&'d str>,
}

#[derive(Serialize)]
pub(super) struct XrayInfo<'d> {
    pub(super) sdk: &'d str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sdk_version: Option<&'d str>,
    pub(super) auto_instrumentation: bool,
}

#[derive(Serialize)]
pub(super) struct Service<'d> {
    pub(super) version: &'d str,
}

#[derive(Serialize)]
pub(super) struct Cause<'d> {
    pub(super) exceptions: Vec<Exception<'d>>,
}

#[derive(Serialize)]
pub(super) struct Exception<'d> {
    pub(super) id: Ascii<16>,
    #[serde(rename = "type", skip_serializing_if = "str::is_empty")]
    pub(super) kind: &'d str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(super) message: &'d str,
    #[serde(skip_serializing_if = "is_false")]
    pub(super) remote: bool,
    /// Stack frames left out.
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) truncated: u32,
    /// The exception this one was caused by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cause: Option<Ascii<16>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) stack: Vec<Frame<'d>>,
}

#[derive(Serialize, Debug, PartialEq)]
pub(super) struct Frame<'d> {
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(super) path: &'d str,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) line: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(super) label: &'d str,
}

/// `metadata`: the `default` namespace, then namespaces set through
/// `aws.xray.metadata.<namespace>` attributes.
#[derive(Default)]
pub(super) struct Metadata<'d> {
    pub(super) default: Vec<(MetaKey<'d>, MetaValue<'d>)>,
    pub(super) namespaces: Vec<(&'d str, serde_json::Value)>,
}

impl Metadata<'_> {
    pub(super) fn is_empty(&self) -> bool {
        self.default.is_empty() && self.namespaces.is_empty()
    }
}

impl Serialize for Metadata<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Default<'a, 'd>(&'a [(MetaKey<'d>, MetaValue<'d>)]);
        impl Serialize for Default<'_, '_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for (key, value) in self.0 {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
        let len = usize::from(!self.default.is_empty()) + self.namespaces.len();
        let mut map = serializer.serialize_map(Some(len))?;
        for (namespace, value) in &self.namespaces {
            map.serialize_entry(namespace, value)?;
        }
        // Last, so that `encode` can append the cached resource entries.
        if !self.default.is_empty() {
            map.serialize_entry("default", &Default(&self.default))?;
        }
        map.end()
    }
}

pub(super) enum MetaKey<'d> {
    Attribute(&'d str),
    /// A resource attribute, written `otel.resource.<key>`.
    Resource(&'d str),
    Owned(String),
}

impl Serialize for MetaKey<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Attribute(key) => serializer.serialize_str(key),
            Self::Owned(key) => serializer.serialize_str(key),
            // Written in place, not formatted into a String per attribute.
            Self::Resource(key) => serializer.collect_str(&Prefixed(RESOURCE_PREFIX, key)),
        }
    }
}

impl MetaKey<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Self::Attribute(key) => key.len(),
            Self::Owned(key) => key.len(),
            Self::Resource(key) => RESOURCE_PREFIX.len() + key.len(),
        }
    }
}

pub(super) const RESOURCE_PREFIX: &str = "otel.resource.";

pub(super) struct Prefixed<'a>(pub(super) &'a str, pub(super) &'a str);

impl fmt::Display for Prefixed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        f.write_str(self.1)
    }
}

pub(super) enum MetaValue<'d> {
    Attribute(&'d ValueRef<'d>),
    Json(serde_json::Value),
}

impl Serialize for MetaValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Attribute(value) => JsonRef(value).serialize(serializer),
            Self::Json(value) => value.serialize(serializer),
        }
    }
}

/// An attribute value as JSON: bytes as base64, empty as null, non-finite
/// doubles as null (serde_json's rule).
pub(super) struct Json<'v>(pub(super) &'v AttributeValue);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            AttributeValue::String(s) => serializer.serialize_str(s),
            AttributeValue::Bool(b) => serializer.serialize_bool(*b),
            AttributeValue::Int(i) => serializer.serialize_i64(*i),
            AttributeValue::Double(d) => serializer.serialize_f64(*d),
            AttributeValue::Bytes(bytes) => {
                serializer.collect_str(&base64::display::Base64Display::new(
                    bytes,
                    &base64::engine::general_purpose::STANDARD,
                ))
            }
            AttributeValue::Array(items) => serializer.collect_seq(items.iter().map(Json)),
            AttributeValue::Map(pairs) => {
                let mut map = serializer.serialize_map(Some(pairs.len()))?;
                for (key, value) in pairs {
                    map.serialize_entry(key, &Json(&value))?;
                }
                map.end()
            }
            AttributeValue::Empty => serializer.serialize_unit(),
        }
    }
}

/// A read attribute value as JSON, as [`Json`] writes the decoded one.
pub(super) struct JsonRef<'v, 'a>(pub(super) &'v ValueRef<'a>);

impl Serialize for JsonRef<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ValueRef::Str(s) => serializer.serialize_str(s),
            ValueRef::Int(i) => serializer.serialize_i64(*i),
            ValueRef::Decoded(value) => Json(value).serialize(serializer),
        }
    }
}

pub(super) fn entries<S: Serializer>(
    pairs: &[(Cow<'_, str>, &ValueRef<'_>)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(pairs.len()))?;
    for (key, value) in pairs {
        map.serialize_entry(key, &JsonRef(value))?;
    }
    map.end()
}

/// ASCII text on the stack (ids), serialised as a string.
#[derive(Clone, Copy)]
pub(super) struct Ascii<const N: usize>(pub(super) [u8; N]);

impl<const N: usize> Serialize for Ascii<N> {
    /// As bytes, which [`JsonWriter`](super::json::JsonWriter) writes as a
    /// string without checking them as UTF-8 again (that check costs more
    /// than the id).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

pub(super) fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

pub(super) fn hex_id(bytes: [u8; 8]) -> Ascii<16> {
    let mut out = [0u8; 16];
    hex_into(&bytes, &mut out);
    Ascii(out)
}

/// Epoch seconds, to the microsecond.
pub(super) fn micros(unix_nano: u64) -> Micros {
    Micros(unix_nano / 1_000)
}
