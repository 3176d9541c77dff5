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
//! `json.rs`) into one pre-sized buffer; span attributes are decoded
//! in one pass; each thread keeps the last few resources decoded, with
//! their metadata already rendered (see `resource.rs`).

mod annotations;
mod attrs;
mod aws;
mod cause;
mod document;
mod http;
mod json;
mod limits;
mod name;
mod resource;
mod sql;
mod stack;

#[cfg(test)]
pub(crate) mod tests;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use annotations::annotations_and_metadata;
use attrs::{Attrs, Field, Used, resource_field, span_field};
use aws::{add_resource_aws, aws_origin, make_span_aws};
use cause::make_cause;
use document::{Ascii, Document, Metadata, Service, hex_id, hex_into, micros};
use http::make_http;
use json::Output;
#[doc(hidden)]
pub use json::write_for_bench;
use limits::encode;
pub(crate) use limits::unescaped_len;
use name::name;
use resource::{indexes_resource, with_resource};
use sql::make_sql;

use crate::model::{Span, SpanKind, StatusCode};

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

/// The segment `origin` a resource implies (`AWS::EKS::Container`), as
/// sampling rules' `ServiceType` matches it.
pub(crate) fn origin(resource: &crate::model::Attributes) -> Option<&'static str> {
    aws_origin(&Attrs::collect(resource, resource_field))
}
