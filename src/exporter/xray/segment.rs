//! Span → X-Ray segment document: pure, no I/O.
//!
//! Follows the X-Ray segment document format and, where the format leaves
//! room, what the OpenTelemetry Collector's awsxray exporter does, so a
//! service looks the same in the X-Ray console whichever collector sent it.
//! Deliberate differences: every name is sanitised (not only span names),
//! CONSUMER spans become segments, segment-only fields (`user`, `origin`,
//! `service`, `aws.ec2`/`ecs`/`eks`, `x_forwarded_for`) are only written on
//! segments, exception ids are derived from the span id (the output is
//! deterministic), and annotation keys keep to the documented letters,
//! digits and underscores (the collector now keeps dots, behind its
//! `exporter.xray.allowDot` gate).
//!
//! Translation runs for every exported span. The document is a tree of
//! borrowing `Serialize` structs, written by a small JSON serializer (see
//! `write_json`) into one pre-sized buffer; span attributes are decoded
//! in one pass; each thread keeps the last few resources decoded, with
//! their metadata already rendered (see `CachedResource`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::model::{AttributeValue, Attributes, Resource, Span, SpanKind, StatusCode, ValueRef};

/// Which trace ids are translated.
///
/// X-Ray accepts W3C (random) trace ids written as `1-xxxxxxxx-y…`: the
/// PutTraceSegments API reference (as shipped in aws-sdk-xray 1.121) states
/// that the epoch time in an id is neither required nor validated, and AWS
/// announced W3C trace id support on 2023-10-27. Before that, the first 8
/// hex digits had to be a Unix time within X-Ray's 30-day retention, and
/// other ids were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceIdPolicy {
    /// Every valid (non-zero) trace id, as X-Ray accepts today.
    #[default]
    Any,
    /// Only ids whose first 4 bytes are a Unix time no older than 28 days
    /// (X-Ray's legacy 30 days, less a margin for queueing) and no more than
    /// 5 minutes ahead: for endpoints that still apply the legacy rule.
    EpochOnly,
}

/// Translation settings. Meant to be flattened into the X-Ray exporter's
/// config, which is where unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TranslateConfig {
    /// Attribute keys written as annotations (indexed, searchable); resource
    /// attributes are named `otel.resource.<key>` here.
    pub indexed_attributes: Vec<String>,
    /// Write every string, number and bool attribute as an annotation.
    pub index_all_attributes: bool,
    /// Which trace ids are sent; the rest are dropped and counted.
    pub trace_id_policy: TraceIdPolicy,
}

impl Default for TranslateConfig {
    fn default() -> Self {
        Self {
            indexed_attributes: Vec::new(),
            index_all_attributes: false,
            trace_id_policy: TraceIdPolicy::Any,
        }
    }
}

/// Why a span was not translated; the caller counts each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The trace id is all zero.
    InvalidTraceId,
    /// `epoch_only`: the trace id's time part is outside the window.
    TraceIdOutOfWindow,
    /// The span id is all zero.
    InvalidSpanId,
    /// The document stays over the size limit after trimming.
    TooLarge,
    /// JSON encoding failed (not expected: every map key is a string).
    Encoding,
}

impl DropReason {
    /// The reason as a Prometheus label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::InvalidTraceId => "invalid_trace_id",
            Self::TraceIdOutOfWindow => "trace_id_out_of_window",
            Self::InvalidSpanId => "invalid_span_id",
            Self::TooLarge => "too_large",
            Self::Encoding => "encoding",
        }
    }
}

/// X-Ray takes segment documents of up to 64 kB; 64 000 bytes is within
/// that limit whichever kilobyte is meant.
pub const MAX_DOCUMENT_BYTES: usize = 64_000;

/// X-Ray's limit on segment names, in characters.
const MAX_NAME_CHARS: usize = 200;
/// Name used when sanitising leaves nothing.
const FALLBACK_NAME: &str = "span";
/// Stack frames kept per exception; the X-Ray SDKs keep 50 by default.
const MAX_FRAMES: usize = 50;
/// Strings are cut to this many bytes when a document must shrink.
const TRIMMED_STRING_BYTES: usize = 1024;

const EPOCH_MAX_AGE: Duration = Duration::from_secs(28 * 24 * 3600);
const EPOCH_MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The segment document as JSON.
pub fn translate(
    span: &Span,
    config: &TranslateConfig,
    now: SystemTime,
) -> Result<String, DropReason> {
    let mut json = Vec::new();
    translate_as(
        span,
        config,
        now,
        Output::Plain,
        Form::Standalone,
        &mut json,
    )?;
    String::from_utf8(json).map_err(|_| DropReason::Encoding)
}

/// The segment document already escaped as the contents of a JSON string,
/// as it goes into PutTraceSegments' `TraceSegmentDocuments` array: written
/// so once, where escaping the plain document again for the request body
/// cost a tenth of the X-Ray path. UTF-8, built from `&str`s and ASCII.
pub fn translate_escaped(
    span: &Span,
    config: &TranslateConfig,
    now: SystemTime,
) -> Result<Vec<u8>, DropReason> {
    let mut escaped = Vec::new();
    translate_escaped_into(span, config, now, &mut escaped)?;
    Ok(escaped)
}

/// [`translate_escaped`], appended to `out` (a buffer the caller reuses);
/// on an error `out` is as it was.
pub fn translate_escaped_into(
    span: &Span,
    config: &TranslateConfig,
    now: SystemTime,
    out: &mut Vec<u8>,
) -> Result<(), DropReason> {
    translate_as(span, config, now, Output::Escaped, Form::Standalone, out)
}

/// Whether a document stands alone or is embedded in its parent's
/// `subsegments` (see `nest.rs`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Form {
    Standalone,
    /// A subsegment inside its parent's document: without `trace_id`,
    /// `type` and `parent_id`, which the enclosing document gives.
    Embedded,
}

/// [`translate_escaped_into`] in either form; `Form::Embedded` is for
/// subsegments only ([`is_segment`] false).
pub(crate) fn translate_escaped_form_into(
    span: &Span,
    config: &TranslateConfig,
    now: SystemTime,
    form: Form,
    out: &mut Vec<u8>,
) -> Result<(), DropReason> {
    translate_as(span, config, now, Output::Escaped, form, out)
}

/// SERVER and CONSUMER spans, and spans without a parent, are segments;
/// every other span is a subsegment.
pub(crate) fn is_segment(span: &Span) -> bool {
    matches!(span.kind, SpanKind::Server | SpanKind::Consumer) || parent_id(span).is_none()
}

/// How [`JsonWriter`] writes: plain JSON, or JSON escaped once more to be
/// the contents of a JSON string.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Output {
    Plain,
    Escaped,
}

impl Output {
    /// A quote: `"`, or `\"` escaped. Pushed byte by byte: a one- or
    /// two-byte `extend_from_slice` is a `memmove` call, and every string
    /// and field name takes two.
    #[inline]
    fn push_quote(self, out: &mut Vec<u8>) {
        if self == Self::Escaped {
            out.push(b'\\');
        }
        out.push(b'"');
    }
}

fn translate_as(
    span: &Span,
    config: &TranslateConfig,
    now: SystemTime,
    output: Output,
    form: Form,
    out: &mut Vec<u8>,
) -> Result<(), DropReason> {
    let trace_id = xray_trace_id(span.trace_id.to_bytes(), config.trace_id_policy, now)?;
    let span_id = span.span_id.to_bytes();
    if span_id == [0; 8] {
        return Err(DropReason::InvalidSpanId);
    }
    let attrs = Attrs::collect(&span.attributes, span_field);
    if !is_segment(span) {
        let mut doc = build(span, config, &attrs, None, trace_id, false);
        if form == Form::Embedded {
            doc.trace_id = None;
            doc.kind = None;
            doc.parent_id = None;
        }
        return encode(&mut doc, None, output, out);
    }
    debug_assert_eq!(form, Form::Standalone, "segments are never embedded");
    with_resource(&span.resource, |cached| {
        // Resource attributes to annotate take the general path.
        let rendered = !indexes_resource(config);
        let resource = Some((&cached.attrs, cached.sdk.as_deref()));
        let mut doc = build(span, config, &attrs, resource, trace_id, !rendered);
        let metadata = match output {
            Output::Plain => &cached.metadata[..],
            Output::Escaped => &cached.metadata_escaped[..],
        };
        encode(
            &mut doc,
            rendered.then_some((metadata, &cached.attrs)),
            output,
            out,
        )
    })
}

fn indexes_resource(config: &TranslateConfig) -> bool {
    config.index_all_attributes
        || config
            .indexed_attributes
            .iter()
            .any(|key| key.starts_with(RESOURCE_PREFIX))
}

/// A resource decoded once, with its part of `metadata.default` rendered.
///
/// Every segment carries its resource's attributes, and decoding and
/// escaping them for each span cost more than the rest of the document.
/// Spans of one resource share one `Arc`, so each thread keeps the last few
/// resources it met. Deterministic: a cached resource renders as a fresh one.
struct CachedResource {
    /// Identity: the allocation lives as long as this `Weak`, so a span whose
    /// resource has the same address has the same resource.
    resource: Weak<Resource>,
    attrs: Attrs<'static>,
    /// `"otel.resource.<key>":<value>,…`
    metadata: Vec<u8>,
    /// The same, escaped as for [`translate_escaped`].
    metadata_escaped: Vec<u8>,
    /// `aws.xray.sdk`: `<telemetry.sdk.name> for <language>`.
    sdk: Option<String>,
}

const CACHED_RESOURCES: usize = 4;

thread_local! {
    static RESOURCES: RefCell<Vec<CachedResource>> = const { RefCell::new(Vec::new()) };
}

fn with_resource<R>(resource: &Arc<Resource>, f: impl FnOnce(&CachedResource) -> R) -> R {
    RESOURCES.with(|cache| {
        let mut cache = cache.borrow_mut();
        let found = cache
            .iter()
            .position(|cached| cached.resource.as_ptr() == Arc::as_ptr(resource));
        let index = match found {
            Some(index) => index,
            None => {
                if cache.len() == CACHED_RESOURCES {
                    cache.remove(0);
                }
                cache.push(CachedResource::new(resource));
                cache.len() - 1
            }
        };
        f(&cache[index])
    })
}

impl CachedResource {
    fn new(resource: &Arc<Resource>) -> Self {
        let attrs = Attrs::collect_owned(&resource.attributes, resource_field);
        let render = |output| {
            let mut metadata = Vec::new();
            for (key, value, _) in &attrs.pairs {
                if value.is_empty_value() {
                    continue;
                }
                if !metadata.is_empty() {
                    metadata.push(b',');
                }
                // Strings and attribute values always serialise.
                let _ = write_json_as(&mut metadata, &MetaKey::Resource(key), output);
                metadata.push(b':');
                let _ = write_json_as(&mut metadata, &JsonRef(value), output);
            }
            metadata
        };
        let (metadata, metadata_escaped) = (render(Output::Plain), render(Output::Escaped));
        // The X-Ray SDKs write e.g. "X-Ray for Go"; do the same for OTel.
        let sdk = attrs
            .str(Field::SdkName)
            .map(|name| match attrs.str(Field::SdkLanguage) {
                Some(language) if !names_language(name, language) => {
                    format!("{name} for {language}")
                }
                _ => name.to_owned(),
            });
        Self {
            resource: Arc::downgrade(resource),
            attrs,
            metadata,
            metadata_escaped,
            sdk,
        }
    }
}

/// `1-` + the first 4 bytes + `-` + the other 12, in hex.
fn xray_trace_id(
    bytes: [u8; 16],
    policy: TraceIdPolicy,
    now: SystemTime,
) -> Result<Ascii<35>, DropReason> {
    if bytes == [0; 16] {
        return Err(DropReason::InvalidTraceId);
    }
    if policy == TraceIdPolicy::EpochOnly {
        let epoch = UNIX_EPOCH
            + Duration::from_secs(u64::from(u32::from_be_bytes([
                bytes[0], bytes[1], bytes[2], bytes[3],
            ])));
        let in_window = match now.duration_since(epoch) {
            Ok(age) => age <= EPOCH_MAX_AGE,
            Err(ahead) => ahead.duration() <= EPOCH_MAX_SKEW,
        };
        if !in_window {
            return Err(DropReason::TraceIdOutOfWindow);
        }
    }
    let mut out = [0u8; 35];
    out[0] = b'1';
    out[1] = b'-';
    hex_into(&bytes[..4], &mut out[2..10]);
    out[10] = b'-';
    hex_into(&bytes[4..], &mut out[11..]);
    Ok(Ascii(out))
}

fn parent_id(span: &Span) -> Option<[u8; 8]> {
    span.parent_span_id
        .map(|id| id.to_bytes())
        .filter(|id| *id != [0; 8])
}

// ---------------------------------------------------------------------------
// Attributes, read once

/// The attributes translation reads, by role. Keys of both semantic
/// convention generations map to the same role; the first present wins.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Field {
    // HTTP
    HttpMethod,
    HttpStatus,
    HttpUrl,
    HttpScheme,
    HttpHost,
    HttpTarget,
    HttpServerName,
    HttpClientIp,
    HttpUserAgent,
    HttpContentLength,
    HttpStatusText,
    UrlPath,
    UrlQuery,
    ServerAddress,
    ServerPort,
    NetHostName,
    NetHostPort,
    NetPeerName,
    NetPeerPort,
    NetPeerIp,
    NetworkPeerAddress,
    ClientAddress,
    // Databases
    DbSystem,
    DbName,
    DbStatement,
    DbUser,
    DbConnectionString,
    // AWS and RPC
    RpcSystem,
    RpcService,
    RpcMethod,
    AwsService,
    AwsOperation,
    AwsAccount,
    AwsRegion,
    CloudRegion,
    AwsRequestId,
    AwsQueueUrl,
    MessagingUrl,
    MessagingSystem,
    AwsTableName,
    DynamoDbTableNames,
    AwsRemoteService,
    AwsLocalService,
    PeerService,
    EnduserId,
    XrayAnnotations,
    // Resource
    CloudProvider,
    CloudPlatform,
    CloudAccount,
    CloudZone,
    HostId,
    HostType,
    HostImageId,
    ContainerName,
    ContainerId,
    ContainerImageTag,
    K8sPod,
    K8sCluster,
    ServiceNamespace,
    ServiceInstance,
    ServiceVersion,
    SdkName,
    SdkLanguage,
    SdkVersion,
    AutoVersion,
    EcsClusterArn,
    EcsContainerArn,
    EcsTaskArn,
    EcsTaskFamily,
    EcsLaunchType,
    LogGroupNames,
    LogGroupArns,
}

const FIELDS: usize = Field::LogGroupArns as usize + 1;

fn span_field(key: &str) -> Option<Field> {
    use Field::*;
    Some(match key {
        "http.method" | "http.request.method" => HttpMethod,
        "http.status_code" | "http.response.status_code" => HttpStatus,
        "http.url" | "url.full" => HttpUrl,
        "http.scheme" | "url.scheme" => HttpScheme,
        "http.host" => HttpHost,
        "http.target" => HttpTarget,
        "http.server_name" => HttpServerName,
        "http.client_ip" => HttpClientIp,
        "http.user_agent" | "user_agent.original" => HttpUserAgent,
        "http.response_content_length" | "http.response.body.size" => HttpContentLength,
        "http.status_text" => HttpStatusText,
        "url.path" => UrlPath,
        "url.query" => UrlQuery,
        "server.address" => ServerAddress,
        "server.port" => ServerPort,
        "net.host.name" => NetHostName,
        "net.host.port" => NetHostPort,
        "net.peer.name" => NetPeerName,
        "net.peer.port" => NetPeerPort,
        "net.peer.ip" => NetPeerIp,
        "network.peer.address" => NetworkPeerAddress,
        "client.address" => ClientAddress,
        "db.system" | "db.system.name" => DbSystem,
        "db.name" | "db.namespace" => DbName,
        "db.statement" | "db.query.text" => DbStatement,
        "db.user" => DbUser,
        "db.connection_string" => DbConnectionString,
        "rpc.system" => RpcSystem,
        "rpc.service" => RpcService,
        "rpc.method" => RpcMethod,
        "aws.service" => AwsService,
        "aws.operation" => AwsOperation,
        "aws.account_id" => AwsAccount,
        "aws.region" => AwsRegion,
        "cloud.region" => CloudRegion,
        "aws.request_id" | "aws.requestId" => AwsRequestId,
        "aws.queue_url" | "aws.queue.url" | "aws.sqs.queue.url" => AwsQueueUrl,
        "messaging.url" => MessagingUrl,
        "messaging.system" => MessagingSystem,
        "aws.table_name" | "aws.table.name" => AwsTableName,
        "aws.dynamodb.table_names" => DynamoDbTableNames,
        "aws.remote.service" => AwsRemoteService,
        "aws.local.service" => AwsLocalService,
        "peer.service" => PeerService,
        "enduser.id" => EnduserId,
        "aws.xray.annotations" => XrayAnnotations,
        _ => return None,
    })
}

fn resource_field(key: &str) -> Option<Field> {
    use Field::*;
    Some(match key {
        "cloud.provider" => CloudProvider,
        "cloud.platform" => CloudPlatform,
        "cloud.account.id" => CloudAccount,
        "cloud.availability_zone" => CloudZone,
        "host.id" => HostId,
        "host.type" => HostType,
        "host.image.id" => HostImageId,
        "container.name" => ContainerName,
        "container.id" => ContainerId,
        "container.image.tag" => ContainerImageTag,
        "k8s.pod.name" => K8sPod,
        "k8s.cluster.name" => K8sCluster,
        "service.namespace" => ServiceNamespace,
        "service.instance.id" => ServiceInstance,
        "service.version" => ServiceVersion,
        "telemetry.sdk.name" => SdkName,
        "telemetry.sdk.language" => SdkLanguage,
        "telemetry.sdk.version" => SdkVersion,
        "telemetry.auto.version" | "telemetry.distro.version" => AutoVersion,
        "aws.ecs.cluster.arn" => EcsClusterArn,
        "aws.ecs.container.arn" => EcsContainerArn,
        "aws.ecs.task.arn" => EcsTaskArn,
        "aws.ecs.task.family" => EcsTaskFamily,
        "aws.ecs.launchtype" => EcsLaunchType,
        "aws.log.group.names" => LogGroupNames,
        "aws.log.group.arns" => LogGroupArns,
        _ => return None,
    })
}

/// A set of [`Field`]s.
#[derive(Clone, Copy, Default)]
struct Used(u128);

impl Used {
    fn add(&mut self, field: Field) {
        self.0 |= 1 << field as u32;
    }

    fn has(self, field: Field) -> bool {
        self.0 & (1 << field as u32) != 0
    }
}

/// Attributes read in one pass, with the position of each known role.
struct Attrs<'a> {
    /// Strings borrow from the span's request buffer (or, for the resource
    /// cache, live in decoded values): an owned value per attribute cost a
    /// tenth of the X-Ray path.
    pairs: Vec<(Cow<'a, str>, ValueRef<'a>, Option<Field>)>,
    /// Length of the keys and string values, to size the document.
    bytes: usize,
    /// Index + 1 into `pairs`; 0 when absent.
    slots: [u16; FIELDS],
}

impl Attrs<'static> {
    /// Keys copied, for the resource cache.
    fn collect_owned(attributes: &Attributes, classify: fn(&str) -> Option<Field>) -> Self {
        Self::from_pairs(
            attributes
                .iter()
                .map(|(key, value)| (Cow::Owned(key.to_owned()), ValueRef::Decoded(value))),
            attributes.len(),
            classify,
        )
    }
}

impl<'a> Attrs<'a> {
    /// Keys borrowed from `attributes`.
    fn collect(attributes: &'a Attributes, classify: fn(&str) -> Option<Field>) -> Self {
        Self::from_pairs(
            attributes
                .iter_ref()
                .map(|(key, value)| (Cow::Borrowed(key), value)),
            attributes.len(),
            classify,
        )
    }

    fn from_pairs(
        attributes: impl Iterator<Item = (Cow<'a, str>, ValueRef<'a>)>,
        len: usize,
        classify: fn(&str) -> Option<Field>,
    ) -> Self {
        let mut pairs = Vec::with_capacity(len);
        let mut slots = [0u16; FIELDS];
        let mut bytes = 0;
        for (key, value) in attributes {
            bytes += key.len() + value.as_str().map_or(8, str::len);
            let field = classify(&key);
            if let Some(field) = field
                && slots[field as usize] == 0
                && let Ok(position) = u16::try_from(pairs.len() + 1)
            {
                slots[field as usize] = position;
            }
            pairs.push((key, value, field));
        }
        Self {
            pairs,
            bytes,
            slots,
        }
    }

    fn value(&self, field: Field) -> Option<&ValueRef<'a>> {
        match self.slots[field as usize] {
            0 => None,
            i => Some(&self.pairs[usize::from(i) - 1].1),
        }
    }

    /// A non-empty string value.
    fn str(&self, field: Field) -> Option<&str> {
        self.value(field)?.as_str().filter(|s| !s.is_empty())
    }

    fn int(&self, field: Field) -> Option<i64> {
        match self.value(field)? {
            ValueRef::Decoded(AttributeValue::Double(d)) if d.fract() == 0.0 && d.abs() < 1e15 => {
                Some(*d as i64)
            }
            value => value.as_i64(),
        }
    }

    /// A port, which SDKs send as an integer or a string.
    fn port(&self, field: Field) -> Option<Cow<'_, str>> {
        let value = self.value(field)?;
        match (value.as_str(), value.as_i64()) {
            (Some(s), _) if !s.is_empty() => Some(Cow::Borrowed(s)),
            (_, Some(i)) => Some(Cow::Owned(i.to_string())),
            _ => None,
        }
    }

    /// Strings of a string array, or the one string (as set through
    /// `OTEL_RESOURCE_ATTRIBUTES`).
    fn strs(&self, field: Field) -> Vec<&str> {
        let Some(value) = self.value(field) else {
            return Vec::new();
        };
        if let Some(s) = value.as_str() {
            return if s.is_empty() { Vec::new() } else { vec![s] };
        }
        match value {
            ValueRef::Decoded(AttributeValue::Array(items)) => items
                .iter()
                .filter_map(AttributeValue::as_str)
                .filter(|s| !s.is_empty())
                .collect(),
            _ => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// The document

#[derive(Serialize)]
struct Document<'d> {
    name: Cow<'d, str>,
    id: Ascii<16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<Ascii<35>>,
    start_time: Micros,
    end_time: Micros,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<Ascii<16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'d str>,
    #[serde(skip_serializing_if = "is_false")]
    error: bool,
    #[serde(skip_serializing_if = "is_false")]
    throttle: bool,
    #[serde(skip_serializing_if = "is_false")]
    fault: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<Cause<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<Http<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sql: Option<Sql<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aws: Option<Aws<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<Service<'d>>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "entries")]
    annotations: Vec<(Cow<'d, str>, &'d ValueRef<'d>)>,
    #[serde(skip_serializing_if = "Metadata::is_empty")]
    metadata: Metadata<'d>,
    /// Bytes to reserve for the JSON.
    #[serde(skip)]
    size_hint: usize,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize, Default)]
struct Http<'d> {
    #[serde(skip_serializing_if = "HttpRequest::is_empty")]
    request: HttpRequest<'d>,
    #[serde(skip_serializing_if = "HttpResponse::is_empty")]
    response: HttpResponse,
}

#[derive(Serialize, Default)]
struct HttpRequest<'d> {
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<Cow<'d, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<&'d str>,
    #[serde(skip_serializing_if = "is_false")]
    x_forwarded_for: bool,
}

impl HttpRequest<'_> {
    fn is_empty(&self) -> bool {
        self.method.is_none()
            && self.url.is_none()
            && self.user_agent.is_none()
            && self.client_ip.is_none()
    }
}

#[derive(Serialize, Default)]
struct HttpResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_length: Option<i64>,
}

impl HttpResponse {
    fn is_empty(&self) -> bool {
        self.status.is_none() && self.content_length.is_none()
    }
}

#[derive(Serialize)]
struct Sql<'d> {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<Cow<'d, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_string: Option<&'d str>,
    database_type: &'d str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sanitized_query: Option<&'d str>,
}

#[derive(Serialize, Default)]
struct Aws<'d> {
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_url: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table_name: Option<&'d str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    table_names: Vec<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ec2: Option<Ec2<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ecs: Option<Ecs<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eks: Option<Eks<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elastic_beanstalk: Option<Beanstalk<'d>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cloudwatch_logs: Vec<LogGroup<'d>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xray: Option<XrayInfo<'d>>,
}

impl Aws<'_> {
    fn is_empty(&self) -> bool {
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
struct Ec2<'d> {
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    availability_zone: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_size: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ami_id: Option<&'d str>,
}

#[derive(Serialize)]
struct Ecs<'d> {
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_id: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_arn: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_family: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_arn: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_arn: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    availability_zone: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    launch_type: Option<&'d str>,
}

#[derive(Serialize)]
struct Eks<'d> {
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_name: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_id: Option<&'d str>,
}

#[derive(Serialize)]
struct Beanstalk<'d> {
    #[serde(skip_serializing_if = "Option::is_none")]
    environment_name: Option<&'d str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_label: Option<&'d str>,
    deployment_id: i64,
}

#[derive(Serialize)]
struct LogGroup<'d> {
    log_group: &'d str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arn: Option<&'d str>,
}

#[derive(Serialize)]
struct XrayInfo<'d> {
    sdk: &'d str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sdk_version: Option<&'d str>,
    auto_instrumentation: bool,
}

#[derive(Serialize)]
struct Service<'d> {
    version: &'d str,
}

#[derive(Serialize)]
struct Cause<'d> {
    exceptions: Vec<Exception<'d>>,
}

#[derive(Serialize)]
struct Exception<'d> {
    id: Ascii<16>,
    #[serde(rename = "type", skip_serializing_if = "str::is_empty")]
    kind: &'d str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'d str,
    #[serde(skip_serializing_if = "is_false")]
    remote: bool,
    /// Stack frames left out.
    #[serde(skip_serializing_if = "is_zero")]
    truncated: u32,
    /// The exception this one was caused by.
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<Ascii<16>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stack: Vec<Frame<'d>>,
}

#[derive(Serialize, Debug, PartialEq)]
struct Frame<'d> {
    #[serde(skip_serializing_if = "str::is_empty")]
    path: &'d str,
    #[serde(skip_serializing_if = "is_zero")]
    line: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    label: &'d str,
}

/// `metadata`: the `default` namespace, then namespaces set through
/// `aws.xray.metadata.<namespace>` attributes.
#[derive(Default)]
struct Metadata<'d> {
    default: Vec<(MetaKey<'d>, MetaValue<'d>)>,
    namespaces: Vec<(&'d str, serde_json::Value)>,
}

impl Metadata<'_> {
    fn is_empty(&self) -> bool {
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

enum MetaKey<'d> {
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
    fn len(&self) -> usize {
        match self {
            Self::Attribute(key) => key.len(),
            Self::Owned(key) => key.len(),
            Self::Resource(key) => RESOURCE_PREFIX.len() + key.len(),
        }
    }
}

const RESOURCE_PREFIX: &str = "otel.resource.";

struct Prefixed<'a>(&'a str, &'a str);

impl fmt::Display for Prefixed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        f.write_str(self.1)
    }
}

enum MetaValue<'d> {
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
struct Json<'v>(&'v AttributeValue);

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
struct JsonRef<'v, 'a>(&'v ValueRef<'a>);

impl Serialize for JsonRef<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ValueRef::Str(s) => serializer.serialize_str(s),
            ValueRef::Int(i) => serializer.serialize_i64(*i),
            ValueRef::Decoded(value) => Json(value).serialize(serializer),
        }
    }
}

fn entries<S: Serializer>(
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
struct Ascii<const N: usize>([u8; N]);

impl<const N: usize> Serialize for Ascii<N> {
    /// As bytes, which [`JsonWriter`] writes as a string without checking
    /// them as UTF-8 again (that check costs more than the id).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

fn hex_id(bytes: [u8; 8]) -> Ascii<16> {
    let mut out = [0u8; 16];
    hex_into(&bytes, &mut out);
    Ascii(out)
}

/// Epoch seconds, to the microsecond.
fn micros(unix_nano: u64) -> Micros {
    Micros(unix_nano / 1_000)
}

// ---------------------------------------------------------------------------
// Building

/// `resource`: a segment's resource attributes and `aws.xray.sdk`.
/// `resource_entries`: write the resource's metadata and annotations here
/// (else [`encode`] splices the cached rendering in).
fn build<'d>(
    span: &'d Span,
    config: &'d TranslateConfig,
    attrs: &'d Attrs<'d>,
    resource: Option<(&'d Attrs<'d>, Option<&'d str>)>,
    trace_id: Ascii<35>,
    resource_entries: bool,
) -> Document<'d> {
    let is_segment = resource.is_some();
    let (resource, sdk) = resource.unzip();
    let mut used = Used::default();
    let aws_sdk = attrs.str(Field::RpcSystem) == Some("aws-api");
    let remote = matches!(span.kind, SpanKind::Client | SpanKind::Producer);

    let namespace = if is_segment {
        None
    } else if aws_sdk || attrs.str(Field::AwsService).is_some() {
        Some("aws")
    } else if remote {
        Some("remote")
    } else {
        None
    };

    let http = make_http(span, attrs, is_segment, &mut used);
    let status = http.as_ref().and_then(|http| http.response.status);
    let sql = make_sql(attrs, &mut used);
    let mut aws = make_span_aws(attrs, aws_sdk, &mut used);
    let (mut origin, mut service) = (None, None);
    let mut user = None;
    if let Some(resource) = resource {
        if resource
            .str(Field::CloudProvider)
            .is_none_or(|provider| provider == "aws")
        {
            origin = aws_origin(resource);
            add_resource_aws(resource, sdk.flatten(), &mut aws);
        }
        service = resource
            .str(Field::ServiceVersion)
            .or_else(|| resource.str(Field::ContainerImageTag))
            .map(|version| Service { version });
        // `user` is a segment field in the document schema.
        user = attrs.str(Field::EnduserId);
        if user.is_some() {
            used.add(Field::EnduserId);
        }
    }

    let (error, throttle, fault) = match status {
        Some(400..=499) => (true, status == Some(429), false),
        Some(500..=599) => (false, false, true),
        _ => (false, false, span.status_code == StatusCode::Error),
    };
    let cause = make_cause(span, attrs, resource, remote, &mut used);

    let mut doc = Document {
        name: name(span, attrs, is_segment, aws_sdk, remote),
        id: hex_id(span.span_id.to_bytes()),
        trace_id: Some(trace_id),
        start_time: micros(span.start_unix_nano),
        end_time: micros(span.end_unix_nano.max(span.start_unix_nano)),
        kind: (!is_segment).then_some("subsegment"),
        parent_id: parent_id(span).map(hex_id),
        namespace,
        origin,
        user,
        error,
        throttle,
        fault,
        cause,
        http,
        sql,
        aws: (!aws.is_empty()).then_some(aws),
        service,
        annotations: Vec::new(),
        metadata: Metadata::default(),
        size_hint: 640 + attrs.bytes + span.name.len(),
    };
    if let Some(cause) = &doc.cause {
        doc.size_hint += cause
            .exceptions
            .iter()
            .map(|e| 96 + e.kind.len() + e.message.len() + 96 * e.stack.len())
            .sum::<usize>();
    }
    annotations_and_metadata(
        &mut doc,
        config,
        attrs,
        resource.filter(|_| resource_entries),
        used,
    );
    doc
}

/// X-Ray names a segment after its service and a subsegment after what it
/// called, so the service map shows services and their dependencies.
fn name<'d>(
    span: &'d Span,
    attrs: &'d Attrs<'d>,
    is_segment: bool,
    aws_sdk: bool,
    remote: bool,
) -> Cow<'d, str> {
    if is_segment {
        let service = attrs
            .str(Field::AwsLocalService)
            .filter(|_| span.kind == SpanKind::Server)
            .unwrap_or_else(|| span.service_name());
        return sanitize_name(service);
    }
    let remote_service = attrs
        .str(Field::AwsRemoteService)
        .filter(|_| remote)
        .map(|name| {
            if aws_sdk {
                let name = name.strip_prefix("AWS::").unwrap_or(name);
                name.strip_prefix("AWS.SDK.").unwrap_or(name)
            } else {
                name
            }
        });
    let named = remote_service
        .or_else(|| attrs.str(Field::PeerService))
        .or_else(|| attrs.str(Field::AwsService))
        .or_else(|| attrs.str(Field::RpcService).filter(|_| aws_sdk));
    if let Some(name) = named {
        return sanitize_name(name);
    }
    match database_name(attrs) {
        Some(Cow::Borrowed(db)) => sanitize_name(db),
        Some(Cow::Owned(db)) if name_is_clean(&db) => Cow::Owned(db),
        Some(Cow::Owned(db)) => Cow::Owned(sanitize_name(&db).into_owned()),
        None => sanitize_name(
            attrs
                .str(Field::RpcService)
                .or_else(|| attrs.str(Field::HttpHost))
                .or_else(|| attrs.str(Field::ServerAddress))
                .or_else(|| attrs.str(Field::NetPeerName))
                .unwrap_or(&span.name),
        ),
    }
}

/// `<database>@<host>`, the X-Ray SDKs' convention, else the system.
fn database_name<'d>(attrs: &'d Attrs<'d>) -> Option<Cow<'d, str>> {
    let Some(db) = attrs.str(Field::DbName) else {
        return attrs.str(Field::DbSystem).map(Cow::Borrowed);
    };
    let host = attrs
        .str(Field::DbConnectionString)
        .and_then(url_host)
        .or_else(|| attrs.str(Field::ServerAddress))
        .or_else(|| attrs.str(Field::NetPeerName));
    Some(match host {
        Some(host) => Cow::Owned(format!("{db}@{host}")),
        None => Cow::Borrowed(db),
    })
}

/// The host of `scheme://[user@]host[:port][/…]`, JDBC prefix allowed.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

fn name_char_allowed(c: char) -> bool {
    matches!(
        c,
        'a'..='z'
            | 'A'..='Z'
            | '0'..='9'
            | ' '
            | '_'
            | '.'
            | ':'
            | '/'
            | '%'
            | '&'
            | '#'
            | '='
            | '+'
            | '\\'
            | '-'
            | '@'
    ) || (!c.is_ascii() && (c.is_alphanumeric() || c.is_whitespace()))
        || c.is_ascii_whitespace()
}

fn name_is_clean(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_CHARS && name.chars().all(name_char_allowed)
}

/// Keeps the characters X-Ray allows in names (Unicode letters, numbers,
/// whitespace and `_ . : / % & # = + \ - @`), at most 200 of them.
fn sanitize_name(name: &str) -> Cow<'_, str> {
    if name_is_clean(name) {
        return Cow::Borrowed(name);
    }
    let clean: String = name
        .chars()
        .filter(|&c| name_char_allowed(c))
        .take(MAX_NAME_CHARS)
        .collect();
    if clean.is_empty() {
        Cow::Borrowed(FALLBACK_NAME)
    } else {
        Cow::Owned(clean)
    }
}

fn make_http<'d>(
    span: &Span,
    attrs: &'d Attrs<'d>,
    is_segment: bool,
    used: &mut Used,
) -> Option<Http<'d>> {
    use Field::*;
    let method = attrs.str(HttpMethod);
    let status = attrs.int(HttpStatus);
    let full_url = attrs.str(HttpUrl);
    let user_agent = attrs.str(HttpUserAgent);
    let has_http = method.is_some()
        || status.is_some()
        || full_url.is_some()
        || user_agent.is_some()
        || [HttpScheme, HttpTarget, UrlPath, UrlQuery, HttpClientIp]
            .into_iter()
            .any(|f| attrs.value(f).is_some());
    if !has_http {
        return None;
    }
    for field in [
        HttpMethod,
        HttpStatus,
        HttpUrl,
        HttpUserAgent,
        HttpScheme,
        HttpTarget,
        UrlPath,
        UrlQuery,
        HttpContentLength,
        // The parts of the URL, as the awsxray exporter takes them: kept out
        // of metadata whether or not the URL had to be built from them.
        HttpHost,
        HttpServerName,
        ServerAddress,
        ServerPort,
        NetHostName,
        NetHostPort,
        NetPeerName,
        NetPeerPort,
    ] {
        used.add(field);
    }
    let url = full_url
        .map(Cow::Borrowed)
        .or_else(|| build_url(span.kind == SpanKind::Server, attrs, used));

    let mut request = HttpRequest {
        method,
        url,
        user_agent,
        ..HttpRequest::default()
    };
    // The caller's address is a segment field; `x_forwarded_for` says it
    // came from a header rather than the connection.
    if is_segment {
        let peer_field = [NetworkPeerAddress, NetPeerIp]
            .into_iter()
            .find(|&field| attrs.str(field).is_some());
        let peer = peer_field.and_then(|field| attrs.str(field));
        if let Some(ip) = attrs.str(HttpClientIp) {
            used.add(HttpClientIp);
            request.client_ip = Some(ip);
            request.x_forwarded_for = true;
        } else if let Some(ip) = attrs.str(ClientAddress) {
            used.add(ClientAddress);
            request.client_ip = Some(ip);
            request.x_forwarded_for = peer != Some(ip);
        } else if let (Some(ip), Some(field)) = (peer, peer_field) {
            used.add(field);
            request.client_ip = Some(ip);
        }
    }
    Some(Http {
        request,
        response: HttpResponse {
            status,
            content_length: attrs.int(HttpContentLength),
        },
    })
}

/// `scheme://host[:port]target` from the parts the semantic conventions
/// give when the full URL is absent.
fn build_url<'d>(server: bool, attrs: &'d Attrs<'d>, used: &mut Used) -> Option<Cow<'d, str>> {
    use Field::*;
    let (host, port_field) = if let Some(host) = attrs.str(HttpHost) {
        // `http.host` is the Host header, port included.
        used.add(HttpHost);
        (host, None)
    } else {
        let hosts: &[(Field, Field)] = if server {
            &[
                (ServerAddress, ServerPort),
                (HttpServerName, NetHostPort),
                (NetHostName, NetHostPort),
            ]
        } else {
            &[
                (ServerAddress, ServerPort),
                (NetPeerName, NetPeerPort),
                (NetPeerIp, NetPeerPort),
            ]
        };
        let (host, port) = hosts
            .iter()
            .find_map(|&(host, port)| Some((host, attrs.str(host)?, port)))
            .map(|(field, host, port)| {
                used.add(field);
                (host, port)
            })?;
        (host, Some(port))
    };
    let scheme = attrs.str(HttpScheme).unwrap_or("http");
    let port = port_field.and_then(|field| {
        let port = attrs.port(field)?;
        used.add(field);
        let default = matches!((scheme, &*port), ("http", "80") | ("https", "443"));
        (!default).then_some(port)
    });
    let mut url = String::with_capacity(64);
    url.push_str(scheme);
    url.push_str("://");
    url.push_str(host);
    if let Some(port) = port {
        url.push(':');
        url.push_str(&port);
    }
    if let Some(target) = attrs.str(HttpTarget) {
        url.push_str(target);
    } else {
        url.push_str(attrs.str(UrlPath).unwrap_or("/"));
        if let Some(query) = attrs.str(UrlQuery) {
            if !query.starts_with('?') {
                url.push('?');
            }
            url.push_str(query);
        }
    }
    Some(Cow::Owned(url))
}

/// `db.system` values of SQL databases, both spellings.
fn is_sql(system: &str) -> bool {
    matches!(
        system,
        "mysql"
            | "postgresql"
            | "mariadb"
            | "mssql"
            | "microsoft.sql_server"
            | "mssqlcompact"
            | "oracle"
            | "oracle.db"
            | "db2"
            | "ibm.db2"
            | "sqlite"
            | "h2"
            | "hsqldb"
            | "derby"
            | "hive"
            | "teradata"
            | "cockroachdb"
            | "redshift"
            | "aws.redshift"
            | "clickhouse"
            | "trino"
            | "spanner"
            | "gcp.spanner"
            | "sap.hana"
            | "hanadb"
            | "sybase"
            | "vertica"
            | "netezza"
            | "firebird"
            | "informix"
            | "ingres"
            | "interbase"
            | "tidb"
            | "other_sql"
    )
}

fn make_sql<'d>(attrs: &'d Attrs<'d>, used: &mut Used) -> Option<Sql<'d>> {
    use Field::*;
    let system = attrs.str(DbSystem).filter(|system| is_sql(system))?;
    for field in [DbSystem, DbName, DbStatement, DbUser, DbConnectionString] {
        used.add(field);
    }
    let (mut url, mut connection_string) = (None, None);
    match attrs.str(DbConnectionString) {
        Some(conn) if conn.contains("://") => url = Some(Cow::Borrowed(conn)),
        Some(conn) => connection_string = Some(conn),
        None => {
            if let Some(host) = attrs.str(ServerAddress).or_else(|| attrs.str(NetPeerName)) {
                let mut built = format!("{system}://{host}");
                if let Some(port) = attrs.port(ServerPort).or_else(|| attrs.port(NetPeerPort)) {
                    built.push(':');
                    built.push_str(&port);
                }
                built.push('/');
                built.push_str(attrs.str(DbName).unwrap_or_default());
                url = Some(Cow::Owned(built));
            }
        }
    }
    Some(Sql {
        url,
        connection_string,
        database_type: system,
        user: attrs.str(DbUser),
        sanitized_query: attrs.str(DbStatement),
    })
}

/// The per-call `aws` fields.
fn make_span_aws<'d>(attrs: &'d Attrs<'d>, aws_sdk: bool, used: &mut Used) -> Aws<'d> {
    use Field::*;
    let mut take = |field: Field| {
        let value = attrs.str(field);
        if value.is_some() {
            used.add(field);
        }
        value
    };
    let mut aws = Aws {
        account_id: take(AwsAccount),
        operation: take(AwsOperation),
        region: take(AwsRegion),
        request_id: take(AwsRequestId),
        queue_url: take(AwsQueueUrl),
        table_name: take(AwsTableName),
        ..Aws::default()
    };
    let sqs = aws_sdk
        || matches!(
            attrs.str(MessagingSystem),
            Some("aws_sqs" | "aws.sqs" | "AmazonSQS")
        );
    if aws.queue_url.is_none() && sqs {
        aws.queue_url = take(MessagingUrl);
    }
    if aws_sdk {
        if aws.operation.is_none() {
            aws.operation = take(RpcMethod);
        }
        if aws.region.is_none() {
            aws.region = take(CloudRegion);
        }
    }
    let tables = attrs.strs(DynamoDbTableNames);
    if !tables.is_empty() {
        used.add(DynamoDbTableNames);
        match tables[..] {
            [one] => aws.table_name = Some(one),
            _ => {
                aws.table_name = None;
                aws.table_names = tables;
            }
        }
    }
    aws
}

/// `origin` from the resource's platform, as the X-Ray SDK plugins set it.
fn aws_origin(resource: &Attrs<'_>) -> Option<&'static str> {
    Some(match resource.str(Field::CloudPlatform)? {
        "aws_eks" => "AWS::EKS::Container",
        "aws_ec2" => "AWS::EC2::Instance",
        "aws_elastic_beanstalk" => "AWS::ElasticBeanstalk::Environment",
        "aws_app_runner" => "AWS::AppRunner::Service",
        "aws_ecs" => match resource.str(Field::EcsLaunchType) {
            Some("ec2") => "AWS::ECS::EC2",
            Some("fargate") => "AWS::ECS::Fargate",
            _ => "AWS::ECS::Container",
        },
        _ => return None,
    })
}

/// The segment-only `aws` fields, from the resource.
fn add_resource_aws<'d>(resource: &'d Attrs<'d>, sdk: Option<&'d str>, aws: &mut Aws<'d>) {
    use Field::*;
    let platform = resource.str(CloudPlatform);
    let zone = resource.str(CloudZone);
    if aws.account_id.is_none() {
        aws.account_id = resource.str(CloudAccount);
    }
    if platform == Some("aws_ec2") || resource.str(HostId).is_some() {
        aws.ec2 = Some(Ec2 {
            instance_id: resource.str(HostId),
            availability_zone: zone,
            instance_size: resource.str(HostType),
            ami_id: resource.str(HostImageId),
        });
    }
    if platform == Some("aws_ecs") {
        aws.ecs = Some(Ecs {
            container: resource.str(ContainerName),
            container_id: resource.str(ContainerId),
            task_arn: resource.str(EcsTaskArn),
            task_family: resource.str(EcsTaskFamily),
            cluster_arn: resource.str(EcsClusterArn),
            container_arn: resource.str(EcsContainerArn),
            availability_zone: zone,
            launch_type: resource.str(EcsLaunchType),
        });
    }
    if platform == Some("aws_eks") || resource.str(K8sCluster).is_some() {
        aws.eks = Some(Eks {
            cluster_name: resource.str(K8sCluster),
            pod: resource.str(K8sPod),
            container_id: resource.str(ContainerId),
        });
    }
    if platform == Some("aws_elastic_beanstalk")
        && let Some(deployment) = resource.str(ServiceInstance)
    {
        aws.elastic_beanstalk = Some(Beanstalk {
            environment_name: resource.str(ServiceNamespace),
            version_label: resource.str(ServiceVersion),
            deployment_id: deployment.parse().unwrap_or(0),
        });
    }
    let arns = resource.strs(LogGroupArns);
    aws.cloudwatch_logs = if arns.is_empty() {
        resource
            .strs(LogGroupNames)
            .into_iter()
            .map(|log_group| LogGroup {
                log_group,
                arn: None,
            })
            .collect()
    } else {
        // arn:aws:logs:region:account:log-group:NAME[:*]
        arns.into_iter()
            .map(|arn| LogGroup {
                log_group: arn.split(':').nth(6).unwrap_or(arn),
                arn: Some(arn),
            })
            .collect()
    };
    if let Some(sdk) = sdk {
        aws.xray = Some(XrayInfo {
            sdk,
            sdk_version: resource.str(SdkVersion),
            auto_instrumentation: resource.str(AutoVersion).is_some(),
        });
    }
}

/// Whether `name` ends with ` for <language>`, ignoring ASCII case.
fn names_language(name: &str, language: &str) -> bool {
    const FOR: &[u8] = b" for ";
    let (name, language) = (name.as_bytes(), language.as_bytes());
    name.len() >= FOR.len() + language.len() && {
        let (head, tail) = name.split_at(name.len() - language.len());
        tail.eq_ignore_ascii_case(language)
            && head[head.len() - FOR.len()..].eq_ignore_ascii_case(FOR)
    }
}

/// Exceptions from `exception` events; else, for an ERROR span, one from
/// the status message (or `http.status_text`).
fn make_cause<'d>(
    span: &'d Span,
    attrs: &'d Attrs<'d>,
    resource: Option<&'d Attrs<'d>>,
    remote: bool,
    used: &mut Used,
) -> Option<Cause<'d>> {
    // Exception ids derive from the span id: unique within the trace, and
    // the same when a span is translated again.
    let seed = u64::from_be_bytes(span.span_id.to_bytes());
    let mut counter = 0u64;
    let mut new_id = move || {
        counter += 1;
        hex_id(mix(seed ^ counter.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes())
    };
    let mut exceptions = Vec::new();
    for event in span.events.iter().filter(|event| event.name == "exception") {
        let attributes = &event.attributes;
        let mut exception = Exception {
            id: new_id(),
            kind: attributes.get_str("exception.type").unwrap_or_default(),
            message: attributes.get_str("exception.message").unwrap_or_default(),
            remote,
            truncated: 0,
            cause: None,
            stack: Vec::new(),
        };
        let mut chained = Vec::new();
        if let Some(stacktrace) = attributes
            .get_str("exception.stacktrace")
            .filter(|s| !s.is_empty())
        {
            let language = match resource {
                Some(resource) => resource.str(Field::SdkLanguage),
                None => span.resource.attributes.get_str("telemetry.sdk.language"),
            };
            parse_stack(
                language,
                stacktrace,
                &mut exception,
                &mut chained,
                &mut new_id,
            );
        }
        exceptions.push(exception);
        exceptions.append(&mut chained);
    }
    if exceptions.is_empty() && span.status_code == StatusCode::Error {
        let message = if span.status_message.is_empty() {
            let text = attrs.str(Field::HttpStatusText)?;
            used.add(Field::HttpStatusText);
            text
        } else {
            &span.status_message
        };
        exceptions.push(Exception {
            id: new_id(),
            kind: "",
            message,
            remote,
            truncated: 0,
            cause: None,
            stack: Vec::new(),
        });
    }
    (!exceptions.is_empty()).then_some(Cause { exceptions })
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------
// Stack traces: the formats of the languages' own printers, most recent
// frame first as X-Ray shows them.

fn parse_stack<'d>(
    language: Option<&str>,
    trace: &'d str,
    top: &mut Exception<'d>,
    chained: &mut Vec<Exception<'d>>,
    new_id: &mut dyn FnMut() -> Ascii<16>,
) {
    match language {
        // PHP SDKs print Java-style traces.
        Some("java" | "php") => java_stack(trace, top, chained, new_id),
        Some("python") => python_stack(trace, top),
        Some("nodejs" | "webjs" | "javascript") => {
            for frame in lines(trace).skip(1).filter_map(js_frame) {
                push_frame(top, frame);
            }
        }
        Some("dotnet") => {
            for frame in lines(trace).skip(1).filter_map(dotnet_frame) {
                push_frame(top, frame);
            }
        }
        Some("go") => go_stack(trace, top),
        _ => {}
    }
}

fn push_frame<'d>(exception: &mut Exception<'d>, frame: Frame<'d>) {
    if exception.stack.len() < MAX_FRAMES {
        exception.stack.push(frame);
    } else {
        exception.truncated += 1;
    }
}

// Stack lines are short: plain byte scans beat the `str` pattern searchers,
// whose set-up per call cost more than the scan. Every cut is at an ASCII
// byte, so on a character boundary.

/// Lines without their `\n` or `\r\n`.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = find_byte(rest, b'\n').unwrap_or(rest.len());
        let line = &rest[..end];
        rest = &rest[(end + 1).min(rest.len())..];
        Some(line.strip_suffix('\r').unwrap_or(line))
    })
}

/// Eight bytes at a time: stack traces are long, their lines short.
fn find_byte(text: &str, byte: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let pattern = ONES * u64::from(byte);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word: [u8; 8] = chunk.try_into().unwrap_or_default();
        if has_zero(u64::from_le_bytes(word) ^ pattern) {
            break;
        }
        at += 8;
    }
    bytes[at..].iter().position(|&b| b == byte).map(|i| at + i)
}

fn rfind_byte(text: &str, byte: u8) -> Option<usize> {
    text.bytes().rposition(|b| b == byte)
}

/// `text` from after `byte`'s last occurrence (all of it without one).
fn after_last(text: &str, byte: u8) -> &str {
    rfind_byte(text, byte).map_or(text, |i| &text[i + 1..])
}

/// The text before and after the first `: `.
fn split_colon_space(text: &str) -> (&str, &str) {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b':' && bytes[i + 1] == b' ')
        .map_or((text, ""), |i| (&text[..i], &text[i + 2..]))
}

/// A line number of up to nine digits.
fn line_number(digits: &str) -> Option<u32> {
    let digits = digits.as_bytes();
    (!digits.is_empty() && digits.len() <= 9 && digits.iter().all(u8::is_ascii_digit))
        .then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// `path:line`, the line optional.
fn path_line(location: &str) -> (&str, u32) {
    rfind_byte(location, b':')
        .and_then(|colon| Some((&location[..colon], line_number(&location[colon + 1..])?)))
        .unwrap_or((location, 0))
}

fn trim_indent(line: &str) -> &str {
    line.trim_start_matches([' ', '\t'])
}

/// `Type: message`, then `\tat label(File.java:42)` frames and `Caused by:`
/// sections, each a chained exception.
fn java_stack<'d>(
    trace: &'d str,
    top: &mut Exception<'d>,
    chained: &mut Vec<Exception<'d>>,
    new_id: &mut dyn FnMut() -> Ascii<16>,
) {
    for line in lines(trace).skip(1) {
        // One tab only: frames of suppressed exceptions are indented more.
        if let Some(frame) = line.strip_prefix("\tat ").and_then(java_frame) {
            push_frame(chained.last_mut().unwrap_or(top), frame);
        } else if let Some(caused) = line.strip_prefix("Caused by: ") {
            let (kind, message) = split_colon_space(caused);
            let id = new_id();
            chained.last_mut().unwrap_or(top).cause = Some(id);
            chained.push(Exception {
                id,
                kind,
                message,
                remote: top.remote,
                truncated: 0,
                cause: None,
                stack: Vec::new(),
            });
        }
    }
}

fn java_frame(frame: &str) -> Option<Frame<'_>> {
    let frame = frame.strip_suffix(')')?;
    let paren = find_byte(frame, b'(')?;
    // Drop a module or class-loader prefix (`java.base/`).
    let label = after_last(&frame[..paren], b'/');
    let (path, line) = path_line(&frame[paren + 1..]);
    Some(Frame { path, line, label })
}

/// The last `Traceback (most recent call last):` block (the exception
/// raised last), whose `  File "p", line N, in f` frames run oldest first.
fn python_stack<'d>(trace: &'d str, top: &mut Exception<'d>) {
    let last = trace
        .rfind("Traceback (most recent call last):")
        .map_or(trace, |i| &trace[i..]);
    let frames: Vec<Frame<'d>> = lines(last)
        .filter_map(|line| line.strip_prefix("  File \""))
        .filter_map(|rest| {
            let quote = find_byte(rest, b'"')?;
            let (path, rest) = (&rest[..quote], rest[quote..].strip_prefix("\", line ")?);
            let comma = find_byte(rest, b',').unwrap_or(rest.len());
            let label = rest[comma..].strip_prefix(", in ").unwrap_or_default();
            Some(Frame {
                path,
                line: line_number(rest[..comma].trim_end()).unwrap_or(0),
                label: label.trim_end(),
            })
        })
        .collect();
    for frame in frames.into_iter().rev() {
        push_frame(top, frame);
    }
}

/// `    at label (path:line:column)` or `    at path:line:column`.
fn js_frame(line: &str) -> Option<Frame<'_>> {
    let frame = trim_indent(line).strip_prefix("at ")?;
    let (label, location) = match frame.strip_suffix(')').zip(rfind_byte(frame, b'(')) {
        Some((inner, paren)) if paren > 0 && frame.as_bytes()[paren - 1] == b' ' => {
            (&frame[..paren - 1], &inner[paren + 1..])
        }
        _ => ("", frame),
    };
    let (path, line) = match rfind_byte(location, b':') {
        Some(colon) if line_number(&location[colon + 1..]).is_some() => {
            path_line(&location[..colon])
        }
        _ => (location, 0),
    };
    Some(Frame { path, line, label })
}

/// `   at Label(args) in /path/File.cs:line 42`, the location optional.
fn dotnet_frame(line: &str) -> Option<Frame<'_>> {
    let frame = trim_indent(line).strip_prefix("at ")?;
    let location = rfind_byte(frame, b')').and_then(|paren| {
        let location = frame[paren + 1..].strip_prefix(" in ")?;
        Some((paren, location))
    });
    Some(match location {
        Some((paren, location)) => {
            let (path, line) = rfind_byte(location, b':')
                .and_then(|colon| {
                    let line = location[colon + 1..].strip_prefix("line ")?;
                    Some((&location[..colon], line_number(line.trim_end())?))
                })
                .unwrap_or((location, 0));
            Frame {
                path,
                line,
                label: &frame[..=paren],
            }
        }
        None => Frame {
            path: "",
            line: 0,
            label: frame,
        },
    })
}

/// `path/to/pkg.(*T).Method(args)` lines, each followed by
/// `\t/path/file.go:12 +0x1d`; the X-Ray Go SDK's label is `(*T).Method`.
fn go_stack<'d>(trace: &'d str, top: &mut Exception<'d>) {
    let mut label = None;
    for line in lines(trace) {
        if let Some(location) = line.strip_prefix('\t') {
            if let Some(label) = label.take() {
                let location = match rfind_byte(location, b'+') {
                    Some(plus) if location[..plus].ends_with(' ') => &location[..plus - 1],
                    _ => location,
                };
                let (path, line) = path_line(location);
                push_frame(top, Frame { path, line, label });
            }
        } else if line.is_empty() || line.starts_with("goroutine ") {
            label = None;
        } else {
            let function = rfind_byte(line, b'(').map_or(line, |paren| &line[..paren]);
            let function = after_last(function, b'/');
            label = Some(find_byte(function, b'.').map_or(function, |dot| &function[dot + 1..]));
        }
    }
}

// ---------------------------------------------------------------------------
// Annotations and metadata

/// Indexed attributes become annotations when their value is a string,
/// number or bool; every other attribute not already written elsewhere goes
/// to `metadata.default`, resource attributes (segments only) as
/// `otel.resource.<key>`.
fn annotations_and_metadata<'d>(
    doc: &mut Document<'d>,
    config: &'d TranslateConfig,
    attrs: &'d Attrs<'d>,
    resource: Option<&'d Attrs<'d>>,
    used: Used,
) {
    // Keys a span asks to index itself (the awsxray exporter's convention).
    let requested = attrs.strs(Field::XrayAnnotations);
    let listed =
        |key: &str| config.indexed_attributes.iter().any(|k| k == key) || requested.contains(&key);
    for (key, value, field) in &attrs.pairs {
        if *field == Some(Field::XrayAnnotations) {
            continue;
        }
        if let Some(namespace) = key.strip_prefix("aws.xray.metadata.") {
            xray_metadata(&mut doc.metadata, key, namespace, value);
            continue;
        }
        // Attributes written as fields are annotated only when listed.
        let consumed = field.is_some_and(|field| used.has(field));
        let indexed = listed(key) || (config.index_all_attributes && !consumed);
        if indexed && is_scalar(value) {
            add_annotation(&mut doc.annotations, annotation_key(key), value);
        } else if !consumed && !value.is_empty_value() {
            doc.metadata
                .default
                .push((MetaKey::Attribute(key), MetaValue::Attribute(value)));
        }
    }
    if let Some(resource) = resource {
        resource_annotations_and_metadata(doc, config, resource);
    }
}

fn resource_annotations_and_metadata<'d>(
    doc: &mut Document<'d>,
    config: &TranslateConfig,
    resource: &'d Attrs<'d>,
) {
    for (key, value, _) in &resource.pairs {
        let indexed = config.index_all_attributes
            || config
                .indexed_attributes
                .iter()
                .any(|k| k.strip_prefix(RESOURCE_PREFIX) == Some(key));
        if indexed && is_scalar(value) {
            let key = Cow::Owned(format!("otel_resource_{}", annotation_key(key)));
            add_annotation(&mut doc.annotations, key, value);
        } else if !value.is_empty_value() {
            doc.metadata
                .default
                .push((MetaKey::Resource(key), MetaValue::Attribute(value)));
        }
    }
}

/// `aws.xray.metadata.<namespace>`: a JSON object for that namespace
/// (merged into `default` when the namespace is `default`).
fn xray_metadata<'d>(
    metadata: &mut Metadata<'d>,
    key: &'d str,
    namespace: &'d str,
    value: &'d ValueRef<'d>,
) {
    let object = value.as_str().and_then(|text| {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).ok()
    });
    match object {
        Some(object) if namespace.eq_ignore_ascii_case("default") => {
            for (key, value) in object {
                metadata
                    .default
                    .push((MetaKey::Owned(key), MetaValue::Json(value)));
            }
        }
        Some(object) if !namespace.is_empty() => {
            metadata
                .namespaces
                .push((namespace, serde_json::Value::Object(object)));
        }
        _ => metadata
            .default
            .push((MetaKey::Attribute(key), MetaValue::Attribute(value))),
    }
}

fn is_scalar(value: &ValueRef<'_>) -> bool {
    match value {
        ValueRef::Str(_) | ValueRef::Int(_) => true,
        ValueRef::Decoded(
            AttributeValue::String(_) | AttributeValue::Int(_) | AttributeValue::Bool(_),
        ) => true,
        ValueRef::Decoded(AttributeValue::Double(d)) => d.is_finite(),
        ValueRef::Decoded(_) => false,
    }
}

/// X-Ray annotation keys are letters, digits and underscores: anything else
/// (dots included) becomes `_`.
fn annotation_key(key: &str) -> Cow<'_, str> {
    if key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(
            key.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect(),
        )
    }
}

/// The first value of a sanitised key wins: `a.b` and `a_b` would collide.
fn add_annotation<'d>(
    annotations: &mut Vec<(Cow<'d, str>, &'d ValueRef<'d>)>,
    key: Cow<'d, str>,
    value: &'d ValueRef<'d>,
) {
    if !key.is_empty() && !annotations.iter().any(|(k, _)| *k == key) {
        annotations.push((key, value));
    }
}

// ---------------------------------------------------------------------------
// Encoding within the size limit

/// `resource_metadata`: a segment's resource entries, rendered, and the
/// resource (to trim them one by one should the document be too big).
fn encode<'d>(
    doc: &mut Document<'d>,
    mut resource_metadata: Option<(&[u8], &'d Attrs<'d>)>,
    output: Output,
    out: &mut Vec<u8>,
) -> Result<(), DropReason> {
    let start = out.len();
    loop {
        out.truncate(start);
        let rendered = resource_metadata.map_or(&[][..], |(rendered, _)| rendered);
        out.reserve(doc.size_hint + rendered.len());
        if write_json_as(out, &*doc, output).is_err() {
            out.truncate(start);
            return Err(DropReason::Encoding);
        }
        if !rendered.is_empty() {
            splice_metadata(out, &doc.metadata, rendered, output);
        }
        let len = match output {
            Output::Plain => out.len() - start,
            Output::Escaped => unescaped_len(&out[start..]),
        };
        if len <= MAX_DOCUMENT_BYTES {
            return Ok(());
        }
        if let Some((_, resource)) = resource_metadata.take() {
            for (key, value, _) in &resource.pairs {
                if !value.is_empty_value() {
                    doc.metadata
                        .default
                        .push((MetaKey::Resource(key), MetaValue::Attribute(value)));
                }
            }
            continue;
        }
        let excess = len - MAX_DOCUMENT_BYTES;
        // Least useful first: metadata, stack frames, the tails of long
        // strings; annotations (searchable) and chained exceptions last.
        let trimmed = trim_metadata(&mut doc.metadata, excess)
            || trim_stacks(doc)
            || trim_strings(doc)
            || trim_annotations(&mut doc.annotations, excess)
            || trim_exceptions(doc);
        if !trimmed {
            out.truncate(start);
            return Err(DropReason::TooLarge);
        }
    }
}

/// Appends rendered entries to `metadata.default` of a serialised
/// document: `metadata` is the document's last field and `default` its last
/// namespace, so the document ends with their closing braces.
fn splice_metadata(out: &mut Vec<u8>, metadata: &Metadata<'_>, entries: &[u8], output: Output) {
    // The objects to open before the entries: none, `default`, or both.
    let (closing, open): (usize, &[&str]) = if !metadata.default.is_empty() {
        (3, &[])
    } else if !metadata.is_empty() {
        (2, &["default"])
    } else {
        (1, &["metadata", "default"])
    };
    debug_assert!(out.ends_with(&b"}}}"[..closing]));
    out.truncate(out.len() - closing);
    out.push(b',');
    for name in open {
        output.push_quote(out);
        out.extend_from_slice(name.as_bytes());
        output.push_quote(out);
        out.extend_from_slice(b":{");
    }
    out.extend_from_slice(entries);
    out.extend_from_slice(b"}}}");
}

/// The length of the document that `escaped` holds escaped once more: each
/// backslash there starts a pair that stands for one byte. Up to
/// [`MAX_DOCUMENT_BYTES`] escaped bytes it returns their count without a
/// scan: an upper bound, so a check against the limit errs only on the
/// safe side.
pub(crate) fn unescaped_len(escaped: &[u8]) -> usize {
    if escaped.len() <= MAX_DOCUMENT_BYTES {
        return escaped.len(); // unescaping only shortens it
    }
    let mut len = 0;
    let mut bytes = escaped.iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'\\' {
            bytes.next();
        }
        len += 1;
    }
    len
}

fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    json_string(value).map_or(0, |json| json.len())
}

/// Indices of the largest entries whose sizes add up to `excess`.
fn largest_covering(sizes: &[usize], excess: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    let mut freed = 0;
    order
        .into_iter()
        .take_while(|&i| {
            let more = freed < excess;
            freed += sizes[i];
            more
        })
        .collect()
}

fn trim_metadata(metadata: &mut Metadata<'_>, excess: usize) -> bool {
    if metadata.is_empty() {
        return false;
    }
    // Entry size: key, value, quotes, colon and comma.
    let sizes: Vec<usize> = metadata
        .default
        .iter()
        .map(|(key, value)| key.len() + json_len(value) + 4)
        .chain(
            metadata
                .namespaces
                .iter()
                .map(|(namespace, value)| namespace.len() + json_len(value) + 4),
        )
        .collect();
    let mut drop = vec![false; sizes.len()];
    for i in largest_covering(&sizes, excess) {
        drop[i] = true;
    }
    let split = metadata.default.len();
    let mut i = 0;
    metadata.default.retain(|_| {
        i += 1;
        !drop[i - 1]
    });
    let mut i = split;
    metadata.namespaces.retain(|_| {
        i += 1;
        !drop[i - 1]
    });
    true
}

fn trim_annotations(annotations: &mut Vec<(Cow<'_, str>, &ValueRef<'_>)>, excess: usize) -> bool {
    if annotations.is_empty() {
        return false;
    }
    let sizes: Vec<usize> = annotations
        .iter()
        .map(|(key, value)| key.len() + json_len(&JsonRef(value)) + 4)
        .collect();
    let mut drop = vec![false; sizes.len()];
    for i in largest_covering(&sizes, excess) {
        drop[i] = true;
    }
    let mut i = 0;
    annotations.retain(|_| {
        i += 1;
        !drop[i - 1]
    });
    true
}

fn exceptions_mut<'a, 'd>(doc: &'a mut Document<'d>) -> &'a mut [Exception<'d>] {
    doc.cause
        .as_mut()
        .map_or(&mut [], |cause| &mut cause.exceptions[..])
}

fn trim_stacks(doc: &mut Document<'_>) -> bool {
    let mut trimmed = false;
    for exception in exceptions_mut(doc) {
        if !exception.stack.is_empty() {
            exception.truncated += u32::try_from(exception.stack.len()).unwrap_or(u32::MAX);
            exception.stack = Vec::new();
            trimmed = true;
        }
    }
    trimmed
}

/// The longest prefix of at most `max` bytes that ends on a character.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn trim_strings(doc: &mut Document<'_>) -> bool {
    fn cut_ref(text: &mut &str) -> bool {
        let short = cut(text, TRIMMED_STRING_BYTES);
        let trimmed = short.len() < text.len();
        *text = short;
        trimmed
    }
    fn cut_cow(text: &mut Cow<'_, str>) -> bool {
        if text.len() <= TRIMMED_STRING_BYTES {
            return false;
        }
        *text = Cow::Owned(cut(text, TRIMMED_STRING_BYTES).to_owned());
        true
    }
    let mut trimmed = false;
    if let Some(sql) = &mut doc.sql {
        if let Some(query) = &mut sql.sanitized_query {
            trimmed |= cut_ref(query);
        }
        if let Some(url) = &mut sql.url {
            trimmed |= cut_cow(url);
        }
        if let Some(conn) = &mut sql.connection_string {
            trimmed |= cut_ref(conn);
        }
    }
    if let Some(http) = &mut doc.http {
        if let Some(url) = &mut http.request.url {
            trimmed |= cut_cow(url);
        }
        if let Some(agent) = &mut http.request.user_agent {
            trimmed |= cut_ref(agent);
        }
    }
    for exception in exceptions_mut(doc) {
        trimmed |= cut_ref(&mut exception.message);
        trimmed |= cut_ref(&mut exception.kind);
    }
    trimmed
}

/// Keeps the first exception only.
fn trim_exceptions(doc: &mut Document<'_>) -> bool {
    match &mut doc.cause {
        Some(cause) if cause.exceptions.len() > 1 => {
            cause.exceptions.truncate(1);
            cause.exceptions[0].cause = None;
            true
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// JSON writing

/// Serialises `value` as JSON into `out`.
///
/// A small serde `Serializer` rather than serde_json's, which escapes
/// strings a byte at a time, field names included: that was a third of a
/// translation. This one escapes eight bytes at a time, writes our own
/// field names as they are, and times from integers. It writes what the
/// document tree needs: no enums with data, byte strings only as plain
/// ASCII (ids).
fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), JsonError> {
    write_json_as(out, value, Output::Plain)
}

fn write_json_as<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
    output: Output,
) -> Result<(), JsonError> {
    value.serialize(&mut JsonWriter {
        out,
        micros: false,
        output,
    })
}

fn json_string<T: Serialize + ?Sized>(value: &T) -> Result<String, JsonError> {
    let mut out = Vec::new();
    write_json(&mut out, value)?;
    String::from_utf8(out).map_err(|_| unsupported("invalid UTF-8"))
}

/// Newtype name under which [`Micros`] reaches [`JsonWriter`].
const MICROS: &str = "$tracemap::xray::micros";

/// Epoch microseconds, written as seconds with a fraction: exact, and
/// cheaper than formatting a float.
#[derive(Clone, Copy)]
struct Micros(u64);

impl Serialize for Micros {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct(MICROS, &self.0)
    }
}

#[derive(Debug)]
struct JsonError(String);

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JsonError {}

impl serde::ser::Error for JsonError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self(message.to_string())
    }
}

fn unsupported(what: &str) -> JsonError {
    JsonError(format!("{what} is not written by the segment writer"))
}

struct JsonWriter<'o> {
    out: &'o mut Vec<u8>,
    /// The next u64 is a [`Micros`].
    micros: bool,
    output: Output,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether a byte of the word is zero. Exact, as is the "below n" test
/// (for n <= 128) built the same way in `escape_into`.
fn has_zero(word: u64) -> bool {
    word.wrapping_sub(ONES) & !word & HIGH != 0
}

/// Appends `text` as a JSON string body, escaping as serde_json does (and
/// each escape sequence escaped again for [`Output::Escaped`]; the bytes
/// between escapes need nothing more).
fn escape_into(out: &mut Vec<u8>, text: &str, output: Output) {
    fn needs_escape(word: [u8; 8]) -> bool {
        let word = u64::from_le_bytes(word);
        word.wrapping_sub(ONES * 0x20) & !word & HIGH != 0
            || has_zero(word ^ (ONES * u64::from(b'"')))
            || has_zero(word ^ (ONES * u64::from(b'\\')))
    }
    /// Copies the clean run before each byte to escape in `range`, then the
    /// escape.
    fn escape_range(
        out: &mut Vec<u8>,
        bytes: &[u8],
        clean: &mut usize,
        range: Range<usize>,
        output: Output,
    ) {
        for at in range {
            let byte = bytes[at];
            if byte >= 0x20 && byte != b'"' && byte != b'\\' {
                continue;
            }
            out.extend_from_slice(&bytes[*clean..at]);
            *clean = at + 1;
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let unicode;
            let sequence: &[u8] = match byte {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                _ => {
                    unicode = [
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(byte >> 4)],
                        HEX[usize::from(byte & 0xf)],
                    ];
                    &unicode
                }
            };
            match output {
                Output::Plain => out.extend_from_slice(sequence),
                Output::Escaped => {
                    for &b in sequence {
                        if b == b'\\' || b == b'"' {
                            out.push(b'\\');
                        }
                        out.push(b);
                    }
                }
            }
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() < 8 {
        // One word, padded with a byte that needs no escape: short strings
        // (methods, versions, names) are most of the calls.
        let mut word = [b'a'; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        if !needs_escape(word) {
            out.extend_from_slice(bytes);
            return;
        }
    }
    let mut clean = 0;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        if needs_escape(chunk.try_into().unwrap_or_default()) {
            escape_range(out, bytes, &mut clean, at..at + 8, output);
        }
        at += 8;
    }
    if at < bytes.len() {
        // The last eight bytes, overlapping the last chunk; short strings
        // byte by byte.
        let tail = match bytes.len().checked_sub(8) {
            Some(from) => needs_escape(bytes[from..].try_into().unwrap_or_default()),
            None => true,
        };
        if tail {
            escape_range(out, bytes, &mut clean, at..bytes.len(), output);
        }
    }
    out.extend_from_slice(&bytes[clean..]);
}

fn push_ascii(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
}

/// Decimal digits, without going through `fmt`.
fn push_digits(out: &mut Vec<u8>, value: u64) {
    push_ascii(out, itoa::Buffer::new().format(value).as_bytes());
}

/// Microseconds as seconds: `1700000000.25`, at least one decimal.
fn push_seconds(out: &mut Vec<u8>, micros: u64) {
    push_digits(out, micros / 1_000_000);
    out.push(b'.');
    let mut buffer = itoa::Buffer::new();
    // "1dddddd": the six decimals after the leading 1, less trailing zeros.
    let fraction = &buffer.format(1_000_000 + micros % 1_000_000).as_bytes()[1..];
    let end = fraction
        .iter()
        .rposition(|&d| d != b'0')
        .map_or(1, |i| i + 1);
    push_ascii(out, &fraction[..end]);
}

/// A `fmt::Write` that escapes, for `collect_str`.
struct Escaping<'o>(&'o mut Vec<u8>, Output);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape_into(self.0, text, self.1);
        Ok(())
    }
}

impl<'a, 'o> Serializer for &'a mut JsonWriter<'o> {
    type Ok = ();
    type Error = JsonError;
    type SerializeSeq = Compound<'a, 'o>;
    type SerializeTuple = Compound<'a, 'o>;
    type SerializeTupleStruct = Compound<'a, 'o>;
    type SerializeTupleVariant = serde::ser::Impossible<(), JsonError>;
    type SerializeMap = Compound<'a, 'o>;
    type SerializeStruct = Compound<'a, 'o>;
    type SerializeStructVariant = serde::ser::Impossible<(), JsonError>;

    fn serialize_bool(self, v: bool) -> Result<(), JsonError> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), JsonError> {
        self.serialize_i64(v.into())
    }

    fn serialize_i16(self, v: i16) -> Result<(), JsonError> {
        self.serialize_i64(v.into())
    }

    fn serialize_i32(self, v: i32) -> Result<(), JsonError> {
        self.serialize_i64(v.into())
    }

    fn serialize_i64(self, v: i64) -> Result<(), JsonError> {
        if v < 0 {
            self.out.push(b'-');
        }
        push_digits(self.out, v.unsigned_abs());
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), JsonError> {
        self.serialize_u64(v.into())
    }

    fn serialize_u16(self, v: u16) -> Result<(), JsonError> {
        self.serialize_u64(v.into())
    }

    fn serialize_u32(self, v: u32) -> Result<(), JsonError> {
        self.serialize_u64(v.into())
    }

    fn serialize_u64(self, v: u64) -> Result<(), JsonError> {
        if std::mem::take(&mut self.micros) {
            push_seconds(self.out, v);
        } else {
            push_digits(self.out, v);
        }
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), JsonError> {
        self.serialize_f64(v.into())
    }

    /// Shortest round-trip digits; `Debug` keeps `.0` on whole numbers and
    /// switches to exponents, both valid JSON. JSON has no NaN or infinity:
    /// null, as serde_json writes them.
    fn serialize_f64(self, v: f64) -> Result<(), JsonError> {
        use std::io::Write as _;
        if v.is_finite() {
            write!(self.out, "{v:?}").map_err(|_| unsupported("a float"))
        } else {
            self.serialize_unit()
        }
    }

    fn serialize_char(self, v: char) -> Result<(), JsonError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<(), JsonError> {
        self.output.push_quote(self.out);
        escape_into(self.out, v, self.output);
        self.output.push_quote(self.out);
        Ok(())
    }

    /// Plain ASCII bytes (ids) as a string.
    fn serialize_bytes(self, v: &[u8]) -> Result<(), JsonError> {
        let plain = v.iter().fold(true, |plain, &b| {
            plain & b.is_ascii_graphic() & (b != b'"') & (b != b'\\')
        });
        if !plain {
            return Err(unsupported("a byte string other than plain ASCII"));
        }
        self.output.push_quote(self.out);
        push_ascii(self.out, v);
        self.output.push_quote(self.out);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), JsonError> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), JsonError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), JsonError> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), JsonError> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), JsonError> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        self.micros = name == MICROS;
        let written = value.serialize(&mut *self);
        self.micros = false;
        written
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), JsonError> {
        Err(unsupported("an enum with data"))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a, 'o>, JsonError> {
        self.out.push(b'[');
        Ok(Compound {
            writer: self,
            first: true,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'a, 'o>, JsonError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Compound<'a, 'o>, JsonError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, JsonError> {
        Err(unsupported("an enum with data"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a, 'o>, JsonError> {
        self.out.push(b'{');
        Ok(Compound {
            writer: self,
            first: true,
        })
    }

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Compound<'a, 'o>, JsonError> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, JsonError> {
        Err(unsupported("an enum with data"))
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<(), JsonError> {
        use fmt::Write as _;
        self.output.push_quote(self.out);
        write!(Escaping(self.out, self.output), "{value}").map_err(|_| unsupported("this text"))?;
        self.output.push_quote(self.out);
        Ok(())
    }
}

struct Compound<'a, 'o> {
    writer: &'a mut JsonWriter<'o>,
    first: bool,
}

impl Compound<'_, '_> {
    fn separate(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.writer.out.push(b',');
        }
    }
}

impl serde::ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = JsonError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        self.separate();
        value.serialize(&mut *self.writer)
    }

    fn end(self) -> Result<(), JsonError> {
        self.writer.out.push(b']');
        Ok(())
    }
}

impl serde::ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = JsonError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        serde::ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<(), JsonError> {
        serde::ser::SerializeSeq::end(self)
    }
}

impl serde::ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = JsonError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        serde::ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<(), JsonError> {
        serde::ser::SerializeSeq::end(self)
    }
}

impl SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = JsonError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), JsonError> {
        self.separate();
        key.serialize(KeyWriter(&mut *self.writer))?;
        self.writer.out.push(b':');
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        value.serialize(&mut *self.writer)
    }

    fn end(self) -> Result<(), JsonError> {
        self.writer.out.push(b'}');
        Ok(())
    }
}

impl serde::ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = JsonError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        // Our own field names: nothing to escape.
        debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        self.separate();
        let output = self.writer.output;
        output.push_quote(self.writer.out);
        self.writer.out.extend_from_slice(key.as_bytes());
        output.push_quote(self.writer.out);
        self.writer.out.push(b':');
        value.serialize(&mut *self.writer)
    }

    fn end(self) -> Result<(), JsonError> {
        self.writer.out.push(b'}');
        Ok(())
    }
}

/// Map keys: strings only, as JSON wants.
struct KeyWriter<'a, 'o>(&'a mut JsonWriter<'o>);

impl<'a, 'o> Serializer for KeyWriter<'a, 'o> {
    type Ok = ();
    type Error = JsonError;
    type SerializeSeq = serde::ser::Impossible<(), JsonError>;
    type SerializeTuple = serde::ser::Impossible<(), JsonError>;
    type SerializeTupleStruct = serde::ser::Impossible<(), JsonError>;
    type SerializeTupleVariant = serde::ser::Impossible<(), JsonError>;
    type SerializeMap = serde::ser::Impossible<(), JsonError>;
    type SerializeStruct = serde::ser::Impossible<(), JsonError>;
    type SerializeStructVariant = serde::ser::Impossible<(), JsonError>;

    fn serialize_str(self, v: &str) -> Result<(), JsonError> {
        self.0.serialize_str(v)
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<(), JsonError> {
        self.0.collect_str(value)
    }

    fn serialize_bool(self, _: bool) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_i8(self, _: i8) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_i16(self, _: i16) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_i32(self, _: i32) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_i64(self, _: i64) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_u8(self, _: u8) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_u16(self, _: u16) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_u32(self, _: u32) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_u64(self, _: u64) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_f32(self, _: f32) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_f64(self, _: f64) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_char(self, v: char) -> Result<(), JsonError> {
        self.0.serialize_char(v)
    }

    fn serialize_bytes(self, _: &[u8]) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_none(self) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), JsonError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), JsonError> {
        self.0.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, JsonError> {
        Err(unsupported("a non-string key"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::model::{Event, Resource, SpanId, TraceId};

    const NOW_SECS: u32 = 1_700_000_000;
    /// 1699999999.123456789 s.
    const START: u64 = 1_699_999_999_123_456_789;
    const SPAN_ID: [u8; 8] = 0x5399_5c3f_42cd_8ad8_u64.to_be_bytes();
    const PARENT_ID: [u8; 8] = 0xdefd_fd99_12dc_5a56_u64.to_be_bytes();

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

    fn i(n: i64) -> AttributeValue {
        AttributeValue::Int(n)
    }

    fn attributes(pairs: &[(&str, AttributeValue)]) -> Attributes {
        Attributes::from_vec(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn resource(pairs: &[(&str, AttributeValue)]) -> Arc<Resource> {
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

    fn translate_with(span: &Span, config: &TranslateConfig) -> Value {
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

    fn doc(span: &Span) -> Value {
        translate_with(span, &TranslateConfig::default())
    }

    fn exception(kind: &str, message: &str, stack: &str) -> Event {
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
    fn names_follow_the_expected_precedence() {
        let name = |kind, pairs: &[(&str, AttributeValue)]| doc(&span(kind, pairs))["name"].clone();
        let client = SpanKind::Client;
        let all = [
            ("aws.remote.service", s("AWS::DynamoDB")),
            ("peer.service", s("payments")),
            ("aws.service", s("S3")),
            ("db.name", s("orders")),
            ("rpc.service", s("shop.Cart")),
            ("http.host", s("cart.example.com")),
            ("server.address", s("cart.internal")),
            ("net.peer.name", s("cart-peer")),
        ];
        assert_eq!(name(client, &all), "AWS::DynamoDB");
        // AWS SDK calls drop the `AWS::` prefix.
        let mut aws = all.to_vec();
        aws.push(("rpc.system", s("aws-api")));
        assert_eq!(name(client, &aws), "DynamoDB");
        assert_eq!(name(client, &all[1..]), "payments");
        assert_eq!(name(client, &all[2..]), "S3");
        assert_eq!(
            name(
                client,
                &[("rpc.system", s("aws-api")), ("rpc.service", s("SQS"))]
            ),
            "SQS"
        );
        assert_eq!(name(client, &all[3..]), "orders@cart.internal");
        assert_eq!(name(client, &[("db.system", s("redis"))]), "redis");
        assert_eq!(name(client, &all[4..]), "shop.Cart");
        assert_eq!(name(client, &all[5..]), "cart.example.com");
        assert_eq!(name(client, &all[6..]), "cart.internal");
        assert_eq!(name(client, &all[7..]), "cart-peer");
        assert_eq!(name(client, &[]), "charge card");
        // aws.remote.service names only outgoing calls.
        assert_eq!(name(SpanKind::Internal, &all[..1]), "charge card");
        // Segments are the service, whatever the peer attributes say.
        assert_eq!(name(SpanKind::Server, &all), "checkout");
        assert_eq!(
            name(
                SpanKind::Server,
                &[("aws.local.service", s("checkout-api"))]
            ),
            "checkout-api"
        );
    }

    #[test]
    fn names_are_sanitised_and_bounded() {
        let named = |name: &str| {
            let mut span = span(SpanKind::Internal, &[]);
            span.name = name.into();
            doc(&span)["name"].as_str().unwrap().to_owned()
        };
        assert_eq!(named("GET /orders/{id}?q=<x>"), "GET /orders/idq=x");
        assert_eq!(
            named("a\\b@c:d_e.f%g&h#i=j+k-l"),
            "a\\b@c:d_e.f%g&h#i=j+k-l"
        );
        assert_eq!(named("Zahlung für №5 東京"), "Zahlung für 5 東京");
        assert_eq!(named("{}()*"), "span");
        let long = named(&"é".repeat(250));
        assert_eq!(long.chars().count(), 200);
        assert_eq!(named(&"x".repeat(200)).len(), 200);
        // Segment names too.
        let mut server = span(SpanKind::Server, &[]);
        server.resource = resource(&[("service.name", s("shop<prod>"))]);
        assert_eq!(doc(&server)["name"], "shopprod");
    }

    #[test]
    fn http_old_semantic_conventions_server() {
        let server = span(
            SpanKind::Server,
            &[
                ("http.method", s("GET")),
                ("http.scheme", s("https")),
                ("http.host", s("shop.example.com")),
                ("http.target", s("/cart?id=1")),
                ("http.status_code", i(200)),
                ("http.user_agent", s("curl/8.0")),
                ("http.client_ip", s("203.0.113.9")),
                ("net.peer.ip", s("10.0.0.7")),
                ("http.response_content_length", i(512)),
                ("app.tier", s("gold")),
            ],
        );
        let doc = doc(&server);
        assert_eq!(
            doc["http"],
            json!({
                "request": {"method": "GET", "url": "https://shop.example.com/cart?id=1",
                            "user_agent": "curl/8.0", "client_ip": "203.0.113.9",
                            "x_forwarded_for": true},
                "response": {"status": 200, "content_length": 512}
            })
        );
        assert_eq!(
            doc["metadata"]["default"],
            json!({"net.peer.ip": "10.0.0.7", "app.tier": "gold",
                   "otel.resource.service.name": "checkout"})
        );

        let by_parts = span(
            SpanKind::Server,
            &[
                ("http.method", s("PUT")),
                ("http.target", s("/x")),
                ("net.host.name", s("api")),
                ("net.host.port", i(8080)),
                ("net.peer.ip", s("10.0.0.7")),
            ],
        );
        assert_eq!(
            self::doc(&by_parts)["http"],
            json!({"request": {"method": "PUT", "url": "http://api:8080/x", "client_ip": "10.0.0.7"}})
        );
    }

    #[test]
    fn http_old_semantic_conventions_client() {
        let client = span(
            SpanKind::Client,
            &[
                ("http.method", s("POST")),
                ("http.url", s("https://api.example.com/health")),
                ("http.status_code", s("503")),
                ("net.peer.name", s("api.example.com")),
                ("http.client_ip", s("1.2.3.4")),
            ],
        );
        let doc = doc(&client);
        assert_eq!(doc["name"], "api.example.com");
        // client_ip and x_forwarded_for are segment fields.
        assert_eq!(
            doc["http"],
            json!({"request": {"method": "POST", "url": "https://api.example.com/health"},
                   "response": {"status": 503}})
        );
        let by_parts = span(
            SpanKind::Client,
            &[
                ("http.method", s("GET")),
                ("http.scheme", s("https")),
                ("net.peer.name", s("api")),
                ("net.peer.port", s("443")),
                ("http.target", s("/v1")),
            ],
        );
        assert_eq!(
            self::doc(&by_parts)["http"]["request"]["url"],
            "https://api/v1"
        );
    }

    #[test]
    fn http_current_semantic_conventions() {
        let server = span(
            SpanKind::Server,
            &[
                ("http.request.method", s("POST")),
                ("url.scheme", s("https")),
                ("server.address", s("shop.example.com")),
                ("server.port", i(443)),
                ("url.path", s("/orders")),
                ("url.query", s("page=2")),
                ("user_agent.original", s("okhttp/4")),
                ("client.address", s("198.51.100.4")),
                ("network.peer.address", s("10.0.0.8")),
                ("http.response.status_code", i(201)),
                ("http.response.body.size", i(42)),
                ("http.route", s("/orders")),
            ],
        );
        let out = doc(&server);
        assert_eq!(
            out["http"],
            json!({
                "request": {"method": "POST", "url": "https://shop.example.com/orders?page=2",
                            "user_agent": "okhttp/4", "client_ip": "198.51.100.4",
                            "x_forwarded_for": true},
                "response": {"status": 201, "content_length": 42}
            })
        );
        assert_eq!(
            out["metadata"]["default"],
            json!({"network.peer.address": "10.0.0.8", "http.route": "/orders",
                   "otel.resource.service.name": "checkout"})
        );
        // The client address is the connection's: not forwarded.
        let direct = span(
            SpanKind::Server,
            &[
                ("http.request.method", s("GET")),
                ("client.address", s("10.0.0.8")),
                ("network.peer.address", s("10.0.0.8")),
            ],
        );
        assert_eq!(
            doc(&direct)["http"]["request"],
            json!({"method": "GET", "client_ip": "10.0.0.8"})
        );

        let client = span(
            SpanKind::Client,
            &[
                ("http.request.method", s("GET")),
                ("url.full", s("http://inventory:8080/items/7")),
                ("server.address", s("inventory")),
                ("server.port", i(8080)),
                ("http.response.status_code", i(200)),
            ],
        );
        let out = doc(&client);
        assert_eq!(out["name"], "inventory");
        assert_eq!(
            out["http"],
            json!({"request": {"method": "GET", "url": "http://inventory:8080/items/7"},
                   "response": {"status": 200}})
        );
        // The URL's parts are in the URL, not repeated in metadata.
        assert!(out.get("metadata").is_none(), "{out}");
    }

    #[test]
    fn sql_for_sql_databases_only() {
        let postgres = span(
            SpanKind::Client,
            &[
                ("db.system", s("postgresql")),
                ("db.name", s("orders")),
                ("db.statement", s("SELECT * FROM orders WHERE id = ?")),
                ("db.user", s("app")),
                ("server.address", s("db.internal")),
                ("server.port", i(5432)),
            ],
        );
        let out = doc(&postgres);
        assert_eq!(out["name"], "orders@db.internal");
        assert_eq!(out["namespace"], "remote");
        assert_eq!(
            out["sql"],
            json!({"url": "postgresql://db.internal:5432/orders", "database_type": "postgresql",
                   "user": "app", "sanitized_query": "SELECT * FROM orders WHERE id = ?"})
        );
        assert_eq!(
            out["metadata"]["default"],
            json!({"server.address": "db.internal", "server.port": 5432})
        );

        let current = span(
            SpanKind::Client,
            &[
                ("db.system.name", s("mysql")),
                ("db.namespace", s("shop")),
                ("db.query.text", s("UPDATE cart SET n = ?")),
                ("net.peer.name", s("mysql-0")),
            ],
        );
        let out = doc(&current);
        assert_eq!(out["name"], "shop@mysql-0");
        assert_eq!(
            out["sql"],
            json!({"url": "mysql://mysql-0/shop", "database_type": "mysql",
                   "sanitized_query": "UPDATE cart SET n = ?"})
        );

        let jdbc = span(
            SpanKind::Client,
            &[
                ("db.system", s("postgresql")),
                ("db.name", s("ebdb")),
                (
                    "db.connection_string",
                    s("jdbc:postgresql://rds.example:5432/ebdb"),
                ),
            ],
        );
        let out = doc(&jdbc);
        assert_eq!(out["name"], "ebdb@rds.example");
        assert_eq!(out["sql"]["url"], "jdbc:postgresql://rds.example:5432/ebdb");
        let mssql = span(
            SpanKind::Client,
            &[
                ("db.system", s("mssql")),
                ("db.connection_string", s("Server=tcp:sql1;Database=shop")),
            ],
        );
        assert_eq!(
            doc(&mssql)["sql"],
            json!({"connection_string": "Server=tcp:sql1;Database=shop", "database_type": "mssql"})
        );

        let redis = span(
            SpanKind::Client,
            &[("db.system", s("redis")), ("db.statement", s("GET k"))],
        );
        let out = doc(&redis);
        assert!(out.get("sql").is_none());
        assert_eq!(out["name"], "redis");
        assert_eq!(
            out["metadata"]["default"],
            json!({"db.system": "redis", "db.statement": "GET k"})
        );
    }

    #[test]
    fn aws_call_fields() {
        let dynamo = span(
            SpanKind::Client,
            &[
                ("rpc.system", s("aws-api")),
                ("rpc.service", s("DynamoDB")),
                ("rpc.method", s("GetItem")),
                ("cloud.region", s("eu-west-1")),
                ("aws.request_id", s("R1")),
                (
                    "aws.dynamodb.table_names",
                    AttributeValue::Array(vec![s("orders")]),
                ),
                ("http.response.status_code", i(200)),
            ],
        );
        let out = doc(&dynamo);
        assert_eq!(out["name"], "DynamoDB");
        assert_eq!(out["namespace"], "aws");
        assert_eq!(
            out["aws"],
            json!({"operation": "GetItem", "region": "eu-west-1", "request_id": "R1",
                   "table_name": "orders"})
        );
        assert_eq!(out["http"], json!({"response": {"status": 200}}));

        let batch = span(
            SpanKind::Client,
            &[
                ("rpc.system", s("aws-api")),
                (
                    "aws.dynamodb.table_names",
                    AttributeValue::Array(vec![s("a"), s("b")]),
                ),
            ],
        );
        assert_eq!(doc(&batch)["aws"], json!({"table_names": ["a", "b"]}));

        let sqs = span(
            SpanKind::Producer,
            &[
                ("rpc.system", s("aws-api")),
                ("rpc.service", s("Sqs")),
                ("rpc.method", s("SendMessage")),
                (
                    "aws.sqs.queue.url",
                    s("https://sqs.eu-west-1.amazonaws.com/1/q"),
                ),
                ("aws.requestId", s("R2")),
            ],
        );
        assert_eq!(
            doc(&sqs)["aws"],
            json!({"operation": "SendMessage", "request_id": "R2",
                   "queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q"})
        );
        let legacy = span(
            SpanKind::Client,
            &[
                ("aws.service", s("S3")),
                ("aws.operation", s("PutObject")),
                ("aws.region", s("us-east-1")),
                ("aws.account_id", s("123456789012")),
            ],
        );
        let out = doc(&legacy);
        assert_eq!(
            (out["name"].as_str(), out["namespace"].as_str()),
            (Some("S3"), Some("aws"))
        );
        assert_eq!(
            out["aws"],
            json!({"account_id": "123456789012", "operation": "PutObject", "region": "us-east-1"})
        );
        // rpc.method names an AWS operation only for AWS SDK calls.
        let grpc = span(
            SpanKind::Client,
            &[("rpc.system", s("grpc")), ("rpc.method", s("Get"))],
        );
        assert!(doc(&grpc).get("aws").is_none());
    }

    fn eks_resource() -> Arc<Resource> {
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

    #[test]
    fn eks_resource_gives_origin_and_aws_eks_on_segments() {
        let mut server = span(SpanKind::Server, &[]);
        server.resource = eks_resource();
        let out = doc(&server);
        assert_eq!(out["origin"], "AWS::EKS::Container");
        assert_eq!(
            out["aws"],
            json!({
                "account_id": "123456789012",
                "ec2": {"instance_id": "i-0abc", "availability_zone": "eu-west-1a"},
                "eks": {"cluster_name": "prod", "pod": "checkout-7d9", "container_id": "abc123"},
                "xray": {"sdk": "opentelemetry for java", "sdk_version": "1.40.0",
                         "auto_instrumentation": true}
            })
        );
        assert_eq!(out["service"], json!({"version": "1.4.2"}));
        let metadata = out["metadata"]["default"].as_object().unwrap();
        assert_eq!(metadata.len(), 14);
        assert_eq!(metadata["otel.resource.k8s.cluster.name"], "prod");

        // Subsegments leave the resource to their segment.
        let mut client = span(SpanKind::Client, &[]);
        client.resource = eks_resource();
        let out = doc(&client);
        for field in ["origin", "aws", "service", "metadata"] {
            assert!(out.get(field).is_none(), "{field}");
        }
    }

    #[test]
    fn origin_by_platform() {
        let origin = |pairs: &[(&str, AttributeValue)]| {
            let mut server = span(SpanKind::Server, &[]);
            server.resource = resource(pairs);
            doc(&server)["origin"].clone()
        };
        let platform = |p: &str| ("cloud.platform", s(p));
        assert_eq!(origin(&[platform("aws_ec2")]), "AWS::EC2::Instance");
        assert_eq!(
            origin(&[platform("aws_ecs"), ("aws.ecs.launchtype", s("fargate"))]),
            "AWS::ECS::Fargate"
        );
        assert_eq!(
            origin(&[platform("aws_ecs"), ("aws.ecs.launchtype", s("ec2"))]),
            "AWS::ECS::EC2"
        );
        assert_eq!(origin(&[platform("aws_ecs")]), "AWS::ECS::Container");
        assert_eq!(
            origin(&[platform("aws_elastic_beanstalk")]),
            "AWS::ElasticBeanstalk::Environment"
        );
        assert_eq!(origin(&[platform("aws_lambda")]), Value::Null);
        // Another cloud: no AWS origin nor aws.eks, even with a cluster name.
        let mut server = span(SpanKind::Server, &[]);
        server.resource = resource(&[
            ("cloud.provider", s("gcp")),
            ("cloud.platform", s("gcp_kubernetes_engine")),
            ("k8s.cluster.name", s("prod")),
        ]);
        let out = doc(&server);
        assert!(out.get("origin").is_none() && out.get("aws").is_none());
    }

    fn cause_without_ids(out: &Value) -> Value {
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

    fn with_exception(kind: SpanKind, language: &str, event: Event) -> Value {
        let mut span = span(kind, &[]);
        span.resource = resource(&[
            ("service.name", s("checkout")),
            ("telemetry.sdk.language", s(language)),
        ]);
        span.events = vec![event];
        doc(&span)
    }

    #[test]
    fn cause_from_java_exception_with_chain() {
        let stack = "java.lang.IllegalStateException: order failed\n\
            \tat com.example.Orders.place(Orders.java:42)\n\
            \tat java.base/java.lang.Thread.run(Thread.java:833)\n\
            Caused by: java.io.IOException: disk full\n\
            \tat com.example.Disk.write(Disk.java:7)\n\
            \t... 1 more\n";
        let out = with_exception(
            SpanKind::Internal,
            "java",
            exception("java.lang.IllegalStateException", "order failed", stack),
        );
        assert_eq!(
            cause_without_ids(&out),
            json!({"exceptions": [
                {"type": "java.lang.IllegalStateException", "message": "order failed",
                 "cause": "<id>",
                 "stack": [
                    {"path": "Orders.java", "line": 42, "label": "com.example.Orders.place"},
                    {"path": "Thread.java", "line": 833, "label": "java.lang.Thread.run"}]},
                {"type": "java.io.IOException", "message": "disk full",
                 "stack": [{"path": "Disk.java", "line": 7, "label": "com.example.Disk.write"}]}
            ]})
        );
        // An exception alone sets no flag; the span status does.
        assert!(out.get("fault").is_none() && out.get("error").is_none());
    }

    #[test]
    fn cause_stacks_of_other_languages() {
        let python = "Traceback (most recent call last):\n  \
            File \"/app/main.py\", line 10, in handler\n    place()\n  \
            File \"/app/orders.py\", line 3, in place\n    raise ValueError(\"bad qty\")\n\
            ValueError: bad qty\n";
        let node =
            "Error: boom\n    at placeOrder (/app/orders.js:12:5)\n    at /app/index.js:3:1\n";
        let dotnet = "System.Exception: boom\n   at Shop.Orders.Place() in /src/Orders.cs:line 21\n   at Shop.Program.Main()\n";
        let go = "goroutine 1 [running]:\nmain.place(0x1)\n\t/app/main.go:12 +0x1d\nmain.main()\n\t/app/main.go:5 +0x25\n";
        let stack = |language, trace| {
            with_exception(SpanKind::Client, language, exception("E", "m", trace))["cause"]
                ["exceptions"][0]
                .clone()
        };
        let python = stack("python", python);
        assert_eq!(
            python["stack"],
            json!([{"path": "/app/orders.py", "line": 3, "label": "place"},
                   {"path": "/app/main.py", "line": 10, "label": "handler"}])
        );
        // Exceptions of outgoing calls are remote.
        assert_eq!(python["remote"], true);
        assert_eq!(
            stack("nodejs", node)["stack"],
            json!([{"path": "/app/orders.js", "line": 12, "label": "placeOrder"},
                   {"path": "/app/index.js", "line": 3}])
        );
        assert_eq!(
            stack("dotnet", dotnet)["stack"],
            json!([{"path": "/src/Orders.cs", "line": 21, "label": "Shop.Orders.Place()"},
                   {"label": "Shop.Program.Main()"}])
        );
        assert_eq!(
            stack("go", go)["stack"],
            json!([{"path": "/app/main.go", "line": 12, "label": "place"},
                   {"path": "/app/main.go", "line": 5, "label": "main"}])
        );
        let unknown = stack("rust", "panicked at src/main.rs:3:5");
        assert_eq!(unknown["type"], "E");
        assert!(unknown.get("stack").is_none());
        // Long stacks keep the X-Ray SDKs' 50 frames and count the rest.
        let long: String = std::iter::once("E: m\n".to_owned())
            .chain((0..70).map(|n| format!("\tat a.B.c{n}(B.java:{n})\n")))
            .collect();
        let long = stack("java", &long);
        assert_eq!(long["stack"].as_array().unwrap().len(), 50);
        assert_eq!(long["truncated"], 20);
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
    fn error_status_message_becomes_the_cause() {
        let mut failed = span(SpanKind::Server, &[]);
        failed.status_code = StatusCode::Error;
        failed.status_message = "payment declined".into();
        assert_eq!(
            cause_without_ids(&doc(&failed)),
            json!({"exceptions": [{"message": "payment declined"}]})
        );
        let mut failed = span(SpanKind::Client, &[("http.status_text", s("Bad Gateway"))]);
        failed.status_code = StatusCode::Error;
        let out = doc(&failed);
        assert_eq!(
            cause_without_ids(&out),
            json!({"exceptions": [{"message": "Bad Gateway", "remote": true}]})
        );
        assert!(out.get("metadata").is_none());
        // No message, no cause.
        let mut failed = span(SpanKind::Server, &[]);
        failed.status_code = StatusCode::Error;
        assert!(doc(&failed).get("cause").is_none());
    }

    #[test]
    fn annotations_for_indexed_attributes() {
        let pairs = [
            ("user.tier", s("gold")),
            ("cart.items", i(3)),
            ("cart.total", AttributeValue::Double(12.5)),
            ("cart.gift", AttributeValue::Bool(true)),
            ("cart.skus", AttributeValue::Array(vec![s("a"), s("b")])),
            ("naïve-key", s("x")),
            ("http.request.method", s("GET")),
            ("other", s("kept")),
        ];
        let config = TranslateConfig {
            indexed_attributes: [
                "user.tier",
                "cart.items",
                "cart.skus",
                "naïve-key",
                "http.request.method",
            ]
            .map(String::from)
            .to_vec(),
            ..TranslateConfig::default()
        };
        let out = translate_with(&span(SpanKind::Internal, &pairs), &config);
        assert_eq!(
            out["annotations"],
            json!({"user_tier": "gold", "cart_items": 3, "na_ve_key": "x",
                   "http_request_method": "GET"})
        );
        // Not indexed, or not a scalar: metadata. Written fields stay out.
        assert_eq!(
            out["metadata"]["default"],
            json!({"cart.total": 12.5, "cart.gift": true, "cart.skus": ["a", "b"],
                   "other": "kept"})
        );

        let all = TranslateConfig {
            index_all_attributes: true,
            ..TranslateConfig::default()
        };
        let out = translate_with(&span(SpanKind::Internal, &pairs), &all);
        assert_eq!(
            out["annotations"],
            json!({"user_tier": "gold", "cart_items": 3, "cart_total": 12.5, "cart_gift": true,
                   "na_ve_key": "x", "other": "kept"})
        );
        assert_eq!(out["metadata"]["default"], json!({"cart.skus": ["a", "b"]}));
        assert_eq!(out["http"]["request"]["method"], "GET");
    }

    #[test]
    fn annotation_keys_collide_first_wins_and_spans_may_list_their_own() {
        let pairs = [
            ("a.b", s("first")),
            ("a_b", s("second")),
            ("order.id", s("o-1")),
            (
                "aws.xray.annotations",
                AttributeValue::Array(vec![s("order.id")]),
            ),
        ];
        let config = TranslateConfig {
            index_all_attributes: false,
            indexed_attributes: vec!["a.b".into(), "a_b".into()],
            ..TranslateConfig::default()
        };
        let out = translate_with(&span(SpanKind::Internal, &pairs), &config);
        assert_eq!(
            out["annotations"],
            json!({"a_b": "first", "order_id": "o-1"})
        );
        assert!(out.get("metadata").is_none());
    }

    #[test]
    fn resource_attributes_annotated_when_listed() {
        let mut server = span(SpanKind::Server, &[]);
        server.resource = resource(&[
            ("service.name", s("checkout")),
            ("deployment.environment", s("prod")),
        ]);
        let config = TranslateConfig {
            indexed_attributes: vec!["otel.resource.deployment.environment".into()],
            ..TranslateConfig::default()
        };
        let out = translate_with(&server, &config);
        assert_eq!(
            out["annotations"],
            json!({"otel_resource_deployment_environment": "prod"})
        );
        assert_eq!(
            out["metadata"],
            json!({"default": {"otel.resource.service.name": "checkout"}})
        );
    }

    #[test]
    fn metadata_keeps_structure_and_namespaces() {
        let pairs = [
            ("blob", AttributeValue::Bytes(vec![0, 1, 2, 255])),
            (
                "nested",
                AttributeValue::Map(attributes(&[(
                    "k",
                    AttributeValue::Array(vec![i(1), i(2)]),
                )])),
            ),
            ("nan", AttributeValue::Double(f64::NAN)),
            ("empty", AttributeValue::Empty),
            (
                "aws.xray.metadata.billing",
                s(r#"{"plan": "pro", "seats": 5}"#),
            ),
            ("aws.xray.metadata.default", s(r#"{"extra": [1, 2]}"#)),
            ("aws.xray.metadata.broken", s("not json")),
        ];
        let out = doc(&span(SpanKind::Internal, &pairs));
        assert_eq!(
            out["metadata"],
            json!({
                "default": {"blob": "AAEC/w==", "nested": {"k": [1, 2]}, "nan": null,
                            "extra": [1, 2], "aws.xray.metadata.broken": "not json"},
                "billing": {"plan": "pro", "seats": 5}
            })
        );
    }

    #[test]
    fn resource_entries_join_every_metadata_shape() {
        let resource_only = json!({"otel.resource.service.name": "checkout"});
        // No span metadata, a namespace only, default entries only, both.
        let cases = [
            (vec![], json!({"default": resource_only})),
            (
                vec![("aws.xray.metadata.billing", s(r#"{"plan": "pro"}"#))],
                json!({"billing": {"plan": "pro"}, "default": resource_only}),
            ),
            (
                vec![("app.tier", s("gold"))],
                json!({"default": {"app.tier": "gold", "otel.resource.service.name": "checkout"}}),
            ),
            (
                vec![
                    ("app.tier", s("gold")),
                    ("aws.xray.metadata.billing", s(r#"{"plan": "pro"}"#)),
                ],
                json!({"billing": {"plan": "pro"},
                       "default": {"app.tier": "gold", "otel.resource.service.name": "checkout"}}),
            ),
        ];
        for (pairs, metadata) in cases {
            let out = doc(&span(SpanKind::Server, &pairs));
            assert_eq!(out["metadata"], metadata, "{pairs:?}");
        }
        // A resource without attributes adds nothing.
        let mut bare = span(SpanKind::Server, &[]);
        bare.resource = Arc::new(Resource::default());
        assert!(doc(&bare).get("metadata").is_none());
    }

    #[test]
    fn cached_resources_render_as_fresh_ones() {
        let first = eks_resource();
        let second = resource(&[
            ("service.name", s("billing")),
            ("cloud.platform", s("aws_ec2")),
        ]);
        let mut spans = Vec::new();
        // More resources than the cache holds, revisited out of order.
        let others: Vec<_> = (0..CACHED_RESOURCES)
            .map(|n| resource(&[("service.name", s(&format!("svc{n}")))]))
            .collect();
        for resource in [&first, &second, &others[0], &first]
            .into_iter()
            .chain(&others)
            .chain([&second, &first])
        {
            let mut server = span(SpanKind::Server, &[]);
            server.resource = resource.clone();
            spans.push(server);
        }
        let fresh = |span: &Span| {
            // What another thread, with an empty cache, writes.
            let span = span.clone();
            std::thread::spawn(move || doc(&span)).join().unwrap()
        };
        for span in &spans {
            assert_eq!(doc(span), fresh(span), "{}", span.service_name());
        }
        assert_eq!(doc(&spans[1])["origin"], "AWS::EC2::Instance");
        assert_eq!(doc(&spans[3])["origin"], "AWS::EKS::Container");
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

    #[test]
    fn oversized_metadata_is_trimmed_largest_first() {
        let big = "x".repeat(1000);
        let keys: Vec<String> = (0..200).map(|n| format!("attr.{n:03}")).collect();
        let mut pairs: Vec<(&str, AttributeValue)> =
            keys.iter().map(|k| (k.as_str(), s(&big))).collect();
        pairs.push(("small", s("kept")));
        pairs.push(("http.request.method", s("GET")));
        let out = doc(&span(SpanKind::Server, &pairs));
        let metadata = out["metadata"]["default"].as_object().unwrap();
        assert!(
            metadata.len() > 10 && metadata.len() < 200,
            "{}",
            metadata.len()
        );
        assert_eq!(metadata["small"], "kept");
        assert_eq!(out["http"]["request"]["method"], "GET");
        assert_eq!(out["name"], "checkout");
        assert_eq!(out["id"], "53995c3f42cd8ad8");
    }

    #[test]
    fn oversized_annotations_stacks_and_strings_are_trimmed() {
        let big = "y".repeat(2000);
        let keys: Vec<String> = (0..40).map(|n| format!("k{n}")).collect();
        let mut pairs: Vec<(&str, AttributeValue)> =
            keys.iter().map(|k| (k.as_str(), s(&big))).collect();
        pairs.push(("db.system", s("postgresql")));
        let query = format!("SELECT '{}'", "z".repeat(100_000));
        pairs.push(("db.statement", s(&query)));
        let config = TranslateConfig {
            index_all_attributes: true,
            ..TranslateConfig::default()
        };
        let label = "l".repeat(2000);
        let trace: String = std::iter::once("E: m\n".to_owned())
            .chain((0..40).map(|n| format!("\tat {label}(B.java:{n})\n")))
            .collect();
        let mut span = span(SpanKind::Client, &pairs);
        span.resource = resource(&[
            ("service.name", s("checkout")),
            ("telemetry.sdk.language", s("java")),
        ]);
        span.events = vec![exception("E", "m", &trace)];
        let out = translate_with(&span, &config);
        // Annotations go last, and only as many as needed.
        let annotations = out["annotations"].as_object().unwrap().len();
        assert!(annotations > 20 && annotations < 40, "{annotations}");
        let exception = &out["cause"]["exceptions"][0];
        assert!(exception.get("stack").is_none());
        assert_eq!(exception["truncated"], 40);
        assert_eq!(exception["type"], "E");
        let kept = out["sql"]["sanitized_query"].as_str().unwrap();
        assert_eq!(kept.len(), TRIMMED_STRING_BYTES);
        assert!(query.starts_with(kept));
    }

    #[test]
    fn documents_that_cannot_shrink_enough_are_dropped() {
        let names: Vec<AttributeValue> = (0..10_000).map(|n| s(&format!("table-{n:05}"))).collect();
        let huge = span(
            SpanKind::Client,
            &[
                ("rpc.system", s("aws-api")),
                ("aws.dynamodb.table_names", AttributeValue::Array(names)),
            ],
        );
        assert_eq!(
            translate(&huge, &TranslateConfig::default(), now()),
            Err(DropReason::TooLarge)
        );
        assert_eq!(
            translate_escaped(&huge, &TranslateConfig::default(), now()),
            Err(DropReason::TooLarge)
        );
    }

    #[test]
    fn the_limit_applies_to_the_document_not_its_escaped_form() {
        // 29,000 quotes: 58,000 bytes of JSON, twice that escaped once more.
        let quotes = "\"".repeat(29_000);
        let span = span(SpanKind::Server, &[("quoted", s(&quotes))]);
        let out = doc(&span);
        assert_eq!(
            out["metadata"]["default"]["quoted"],
            quotes.as_str(),
            "not trimmed"
        );
        let escaped = translate_escaped(&span, &TranslateConfig::default(), now()).unwrap();
        assert!(escaped.len() > 2 * MAX_DOCUMENT_BYTES - 20_000);
        assert!(unescaped_len(&escaped) <= MAX_DOCUMENT_BYTES);
    }

    /// Attributes as the OTLP protobuf decoder leaves them (wire bytes).
    fn encoded(pairs: &[(&str, AttributeValue)]) -> Attributes {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
        fn any(value: &AttributeValue) -> AnyValue {
            let value = match value {
                AttributeValue::String(s) => any_value::Value::StringValue(s.clone()),
                AttributeValue::Int(i) => any_value::Value::IntValue(*i),
                AttributeValue::Bool(b) => any_value::Value::BoolValue(*b),
                AttributeValue::Double(d) => any_value::Value::DoubleValue(*d),
                AttributeValue::Array(items) => any_value::Value::ArrayValue(ArrayValue {
                    values: items.iter().map(any).collect(),
                }),
                other => panic!("not needed here: {other:?}"),
            };
            AnyValue { value: Some(value) }
        }
        let mut buf = Vec::new();
        for (key, value) in pairs {
            let kv = KeyValue {
                key: (*key).into(),
                value: Some(any(value)),
                ..Default::default()
            };
            prost::encoding::message::encode(9, &kv, &mut buf);
        }
        Attributes::from_encoded(buf.into(), 9, pairs.len())
    }

    #[test]
    fn wire_encoded_attributes_translate_alike() {
        let pairs = [
            ("http.request.method", s("GET")),
            ("url.path", s("/a")),
            ("server.address", s("shop")),
            ("server.port", i(8080)),
            ("http.response.status_code", i(503)),
            (
                "aws.dynamodb.table_names",
                AttributeValue::Array(vec![s("t")]),
            ),
            ("ratio", AttributeValue::Double(0.5)),
        ];
        let owned = span(SpanKind::Server, &pairs);
        let mut wire = owned.clone();
        wire.attributes = encoded(&pairs);
        wire.resource = Arc::new(Resource::new(encoded(&[("service.name", s("checkout"))])));
        assert_eq!(doc(&owned), doc(&wire));
        assert_eq!(doc(&wire)["http"]["request"]["url"], "http://shop:8080/a");
    }

    // --- The JSON writer ---------------------------------------------------

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let specials: Vec<char> = (0u8..0x20)
            .map(char::from)
            .chain(['"', '\\', '\u{7f}', 'é', '東', '😀'])
            .collect();
        // Every special at every offset around the 8-byte steps.
        for special in specials {
            for before in 0..18 {
                for after in [0, 1, 7, 8, 9] {
                    let text = format!("{}{special}{}", "a".repeat(before), "b".repeat(after));
                    assert_eq!(
                        json_string(&text).unwrap(),
                        serde_json::to_string(&text).unwrap(),
                        "{text:?}"
                    );
                }
            }
        }
        let dense = "\"\\\n\u{1}".repeat(9);
        assert_eq!(
            json_string(&dense).unwrap(),
            serde_json::to_string(&dense).unwrap()
        );
    }

    proptest::proptest! {
        #[test]
        fn any_string_escapes_as_serde_json(text in proptest::prelude::any::<String>()) {
            let json = serde_json::to_string(&text).unwrap();
            proptest::prop_assert_eq!(json_string(&text).unwrap(), json.as_str());
            // Escaped once more: the JSON above as the body of a string.
            let mut escaped = Vec::new();
            write_json_as(&mut escaped, &text, Output::Escaped).unwrap();
            let twice = serde_json::to_string(&json).unwrap();
            proptest::prop_assert_eq!(String::from_utf8(escaped).unwrap(), &twice[1..twice.len() - 1]);
        }

        #[test]
        fn byte_search_finds_what_str_find_finds(text in "[a-c\n:]{0,40}") {
            for byte in [b'\n', b':', b'a'] {
                proptest::prop_assert_eq!(find_byte(&text, byte), text.find(char::from(byte)));
                proptest::prop_assert_eq!(rfind_byte(&text, byte), text.rfind(char::from(byte)));
            }
            let lines: Vec<&str> = lines(&text).collect();
            proptest::prop_assert_eq!(lines, text.lines().collect::<Vec<_>>());
        }

        #[test]
        fn any_double_reads_back(value in proptest::prelude::any::<f64>()) {
            let json = json_string(&value).unwrap();
            let back: Value = serde_json::from_str(&json).unwrap();
            if value.is_finite() {
                // Valid JSON whose digits give the value back (serde_json's
                // own reader may be an ulp off without `float_roundtrip`).
                proptest::prop_assert!(back.is_number());
                proptest::prop_assert_eq!(json.parse::<f64>().ok(), Some(value));
            } else {
                proptest::prop_assert_eq!(back, Value::Null);
            }
        }

        #[test]
        fn micros_read_back_as_the_seconds(micros in 0u64..4_000_000_000_000_000) {
            let json = json_string(&Micros(micros)).unwrap();
            proptest::prop_assert!(serde_json::from_str::<f64>(&json).is_ok());
            proptest::prop_assert_eq!(json.parse::<f64>().ok(), Some(micros as f64 / 1e6));
        }
    }

    #[test]
    fn numbers_and_times() {
        for (value, json) in [
            (json_string(&0i64), "0"),
            (json_string(&i64::MIN), "-9223372036854775808"),
            (json_string(&u64::MAX), "18446744073709551615"),
            (json_string(&2.0f64), "2.0"),
            (json_string(&-0.5f64), "-0.5"),
            (json_string(&f64::NAN), "null"),
            (json_string(&f64::NEG_INFINITY), "null"),
            (json_string(&Micros(0)), "0.0"),
            (json_string(&Micros(5)), "0.000005"),
            (json_string(&Micros(123_456)), "0.123456"),
            (json_string(&Micros(1_000_000)), "1.0"),
            (json_string(&Micros(1_699_999_999_120_000)), "1699999999.12"),
            (
                json_string(&Micros(1_699_999_999_123_456)),
                "1699999999.123456",
            ),
        ] {
            assert_eq!(value.unwrap(), json);
        }
        for value in [1e300, 1e-7, 123456.789, f64::MIN_POSITIVE] {
            let json = json_string(&value).unwrap();
            assert!(serde_json::from_str::<f64>(&json).is_ok(), "{json}");
            assert_eq!(json.parse::<f64>().ok(), Some(value));
        }
        // Only string map keys exist in JSON.
        let mut numbers = std::collections::BTreeMap::new();
        numbers.insert(1, 2);
        assert!(json_string(&numbers).is_err());
        assert!(json_string(&b"raw"[..].to_vec()).is_ok());
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
        let numeric =
            |a: &str, b: &str| matches!((a, b), ("float" | "integer", "float" | "integer"));
        for (path, kind) in &ours {
            if starts(path, ours_only) {
                continue;
            }
            let theirs = sdk.iter().find(|(p, _)| p == path);
            assert!(
                theirs.is_some_and(
                    |(_, k)| k == kind || (path.ends_with("_time") && numeric(k, kind))
                ),
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
                include_str!("../../../tests/fixtures/xray-golden/sdk/indepSubsegment.txt")
            }
            "indepSubsegmentWithSql" => {
                include_str!("../../../tests/fixtures/xray-golden/sdk/indepSubsegmentWithSql.txt")
            }
            "awsValidAwsFields" => {
                include_str!("../../../tests/fixtures/xray-golden/sdk/awsValidAwsFields.txt")
            }
            "ddbSample" => include_str!("../../../tests/fixtures/xray-golden/sdk/ddbSample.txt"),
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
}
