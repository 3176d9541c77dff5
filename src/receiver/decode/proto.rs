//! OTLP protobuf → lean spans, read by hand from the wire bytes.
//!
//! Why not prost's generated types: this is the collector's hot path (the
//! target is a million spans a second per core for decode → pair → edge
//! stats), and a prost decode alone spends more than half of that budget
//! materialising every field — a `String` per attribute key and value, trace
//! state, links, dropped counts — that the pipeline never reads. This
//! decoder walks the request once, keeps only what the lean [`Span`] holds,
//! and leaves attributes in the request's [`Bytes`] behind [`Attributes`]:
//! a span costs one allocation (its name).
//!
//! It is no laxer than prost about what it reads: wire types, lengths,
//! varints, UTF-8 and prost's nesting limit are checked, so every request
//! prost accepts decodes to the same spans (the tests compare the two on
//! generated requests), and malformed input is an error, never a panic.
//! Unknown fields, groups included, are skipped. Repeated singular fields
//! merge as protobuf says: the last scalar wins, messages merge.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;

use crate::model::{Attributes, Event, Resource, Span, SpanId, SpanKind, StatusCode, TraceId};
use crate::otlp::read::{RECURSION_LIMIT, Reader, is_ascii};
use crate::otlp::tag::{self, WireType, key_byte};
use crate::receiver::{Decoded, InvalidId};

/// Why a request is not a valid `ExportTraceServiceRequest`: the wire
/// reader's error, as every check the decoder makes is a wire check.
pub use crate::otlp::read::ReadError as OtlpProtoError;

type Result<T, E = OtlpProtoError> = std::result::Result<T, E>;

/// Decodes a serialized `ExportTraceServiceRequest`.
///
/// The spans' attributes are slices of `bytes`, so the request buffer lives
/// as long as any of its spans does.
pub fn decode(bytes: Bytes) -> Result<Decoded> {
    let mut decoded = Decoded {
        spans: Vec::with_capacity(span_capacity(&bytes)),
        ..Decoded::default()
    };
    let mut request = Reader::new(&bytes);
    // Fields of the top-level message are read with prost's full budget;
    // each nested message takes one level from it.
    let ctx = RECURSION_LIMIT;
    while let Some((_, tag, wire_type)) = request.next_key()? {
        match tag {
            tag::REQUEST_RESOURCE_SPANS => {
                let resource_spans =
                    request.message("ExportTraceServiceRequest.resource_spans", wire_type, ctx)?;
                decode_resource_spans(&bytes, resource_spans, ctx - 1, &mut decoded)?;
            }
            _ => request.skip(tag, wire_type, ctx)?,
        }
    }
    Ok(decoded)
}

/// `text`, which lies in `bytes`, as a string sharing that buffer.
fn shared_text(bytes: &Bytes, text: &str) -> ByteString {
    // Cannot fail: the bytes are those of a `&str`.
    ByteString::try_from(bytes.slice_ref(text.as_bytes())).unwrap_or_default()
}

/// Fewest bytes a span that survives decoding takes on the wire: its field
/// header plus a trace id (2 + 16) and a span id (2 + 8).
const MIN_VALID_SPAN_BYTES: usize = 30;

/// Room for the request's spans, counted from field headers alone (a
/// skim, every field skipped in O(1)), so the span vector is allocated
/// once: grown scope by scope it copied every span decoded so far, a tenth
/// of the decode time for multi-service batches. Bounded by what valid
/// spans could fill; malformed input is left for the real pass to report.
fn span_capacity(bytes: &[u8]) -> usize {
    fn count(bytes: &[u8]) -> Result<usize> {
        let ctx = RECURSION_LIMIT;
        let mut spans = 0;
        let mut request = Reader::new(bytes);
        while let Some((_, tag, wire_type)) = request.next_key()? {
            if tag != tag::REQUEST_RESOURCE_SPANS {
                request.skip(tag, wire_type, ctx)?;
                continue;
            }
            let mut resource_spans = request.nested("", wire_type)?;
            while let Some((_, tag, wire_type)) = resource_spans.next_key()? {
                if tag != tag::RESOURCE_SPANS_SCOPE_SPANS {
                    resource_spans.skip(tag, wire_type, ctx)?;
                    continue;
                }
                let mut scope_spans = resource_spans.nested("", wire_type)?;
                while let Some((_, tag, wire_type)) = scope_spans.next_key()? {
                    spans += usize::from(tag == tag::SCOPE_SPANS_SPANS);
                    scope_spans.skip(tag, wire_type, ctx)?;
                }
            }
        }
        Ok(spans)
    }
    count(bytes)
        .unwrap_or(0)
        .min(bytes.len() / MIN_VALID_SPAN_BYTES)
}

fn decode_resource_spans(
    bytes: &Bytes,
    message: Reader<'_>,
    ctx: u32,
    decoded: &mut Decoded,
) -> Result<()> {
    // The resource may follow the spans on the wire: find it first.
    let mut runs = Vec::new();
    let mut first = message;
    while let Some((_, tag, wire_type)) = first.next_key()? {
        match tag {
            tag::RESOURCE_SPANS_RESOURCE => {
                let resource = first.message("ResourceSpans.resource", wire_type, ctx)?;
                decode_resource(resource, ctx - 1, &mut runs)?;
            }
            tag::RESOURCE_SPANS_SCOPE_SPANS => {
                first.len_delimited("ResourceSpans.scope_spans", wire_type)?;
            }
            _ => first.skip(tag, wire_type, ctx)?,
        }
    }
    let resource = Arc::new(Resource::new(resource_attributes(bytes, &runs)));
    let mut second = message;
    while let Some((_, tag, wire_type)) = second.next_key()? {
        match tag {
            tag::RESOURCE_SPANS_SCOPE_SPANS => {
                let scope_spans = second.message("ResourceSpans.scope_spans", wire_type, ctx)?;
                decode_scope_spans(bytes, scope_spans, ctx - 1, &resource, decoded)?;
            }
            _ => second.skip(tag, wire_type, ctx)?,
        }
    }
    Ok(())
}

fn decode_resource(mut message: Reader<'_>, ctx: u32, runs: &mut Vec<Run>) -> Result<()> {
    let mut run = Run::default();
    while let Some((start, tag, wire_type)) = message.next_key()? {
        match tag {
            tag::RESOURCE_ATTRIBUTES => {
                let key_value = message.message("Resource.attributes", wire_type, ctx)?;
                check_key_value(key_value, ctx - 1)?;
                run.add(start, message.pos());
            }
            _ => message.skip(tag, wire_type, ctx)?,
        }
    }
    if run.count > 0 {
        runs.push(run);
    }
    Ok(())
}

/// Resource attributes: a slice of the request, or, when the resource came
/// in several pieces (which protobuf merges), a copy of the pieces joined.
fn resource_attributes(bytes: &Bytes, runs: &[Run]) -> Attributes {
    match runs {
        [] => Attributes::default(),
        [run] => run.attributes(bytes, tag::RESOURCE_ATTRIBUTES),
        runs => {
            let mut joined = Vec::new();
            for run in runs {
                joined.extend_from_slice(&bytes[run.start..run.end]);
            }
            let count = runs.iter().map(|run| run.count).sum();
            Attributes::from_encoded(joined.into(), tag::RESOURCE_ATTRIBUTES, count)
        }
    }
}

fn decode_scope_spans(
    bytes: &Bytes,
    message: Reader<'_>,
    ctx: u32,
    resource: &Arc<Resource>,
    decoded: &mut Decoded,
) -> Result<()> {
    // The scope may follow its spans on the wire: find it first.
    let mut scope_name = "";
    let mut first = message;
    while let Some((_, tag, wire_type)) = first.next_key()? {
        match tag {
            tag::SCOPE_SPANS_SCOPE => {
                let scope = first.message("ScopeSpans.scope", wire_type, ctx)?;
                decode_scope_name(scope, ctx - 1, &mut scope_name)?;
            }
            _ => first.skip(tag, wire_type, ctx)?,
        }
    }
    let scope_name: Arc<str> = scope_name.into();
    let mut second = message;
    while let Some((_, tag, wire_type)) = second.next_key()? {
        match tag {
            tag::SCOPE_SPANS_SPANS => {
                let span = second.message("ScopeSpans.spans", wire_type, ctx)?;
                decode_span(bytes, span, ctx - 1, resource, &scope_name, decoded)?;
            }
            _ => second.skip(tag, wire_type, ctx)?,
        }
    }
    Ok(())
}

fn decode_scope_name<'a>(mut message: Reader<'a>, ctx: u32, name: &mut &'a str) -> Result<()> {
    while let Some((_, tag, wire_type)) = message.next_key()? {
        match tag {
            tag::SCOPE_NAME => *name = message.string("InstrumentationScope.name", wire_type)?,
            _ => message.skip(tag, wire_type, ctx)?,
        }
    }
    Ok(())
}

fn decode_span(
    bytes: &Bytes,
    mut message: Reader<'_>,
    ctx: u32,
    resource: &Arc<Resource>,
    scope_name: &Arc<str>,
    decoded: &mut Decoded,
) -> Result<()> {
    let mut trace_id: &[u8] = &[];
    let mut span_id: &[u8] = &[];
    let mut parent_span_id: &[u8] = &[];
    let mut name = "";
    let mut kind = 0;
    let mut start_unix_nano = 0;
    let mut end_unix_nano = 0;
    let mut attributes = Run::default();
    let mut events = Vec::new();
    let mut status = (0, "");
    while let Some((start, tag, wire_type)) = message.next_key()? {
        match tag {
            tag::SPAN_TRACE_ID => trace_id = message.len_delimited("Span.trace_id", wire_type)?,
            tag::SPAN_SPAN_ID => span_id = message.len_delimited("Span.span_id", wire_type)?,
            tag::SPAN_PARENT_SPAN_ID => {
                parent_span_id = message.len_delimited("Span.parent_span_id", wire_type)?;
            }
            tag::SPAN_NAME => name = message.string("Span.name", wire_type)?,
            tag::SPAN_KIND => kind = message.varint("Span.kind", wire_type)?,
            tag::SPAN_START => start_unix_nano = message.fixed64("Span.start_time", wire_type)?,
            tag::SPAN_END => end_unix_nano = message.fixed64("Span.end_time", wire_type)?,
            tag::SPAN_ATTRIBUTES => {
                let key_value = message.message("Span.attributes", wire_type, ctx)?;
                check_key_value(key_value, ctx - 1)?;
                attributes.add(start, message.pos());
            }
            tag::SPAN_EVENTS => {
                let event = message.message("Span.events", wire_type, ctx)?;
                events.push(decode_event(bytes, event, ctx - 1)?);
            }
            tag::SPAN_STATUS => {
                let fields = message.message("Span.status", wire_type, ctx)?;
                decode_status(fields, ctx - 1, &mut status)?;
            }
            _ => message.skip(tag, wire_type, ctx)?,
        }
    }
    // The whole span is read before its ids are judged: a malformed span
    // fails the request even when its ids would have rejected it alone.
    let (trace_id, span_id, parent_span_id) = match validate_ids(trace_id, span_id, parent_span_id)
    {
        Ok(ids) => ids,
        Err((which, error)) => {
            decoded.rejections.add(which, error, name);
            return Ok(());
        }
    };
    let (status_code, status_message) = status;
    decoded.spans.push(Span {
        resource: resource.clone(),
        scope_name: scope_name.clone(),
        trace_id,
        span_id,
        parent_span_id,
        name: shared_text(bytes, name),
        // Enums are int32 on the wire; truncating is what prost does.
        kind: SpanKind::from_otlp(kind as i32),
        status_code: StatusCode::from_otlp(status_code as i32),
        status_message: status_message.to_owned(),
        start_unix_nano,
        end_unix_nano,
        attributes: attributes.attributes(bytes, tag::SPAN_ATTRIBUTES),
        events,
    });
    Ok(())
}

fn decode_event(bytes: &Bytes, mut message: Reader<'_>, ctx: u32) -> Result<Event> {
    let mut event = Event::default();
    let mut name = "";
    let mut attributes = Run::default();
    while let Some((start, tag, wire_type)) = message.next_key()? {
        match tag {
            tag::EVENT_TIME => event.time_unix_nano = message.fixed64("Event.time", wire_type)?,
            tag::EVENT_NAME => name = message.string("Event.name", wire_type)?,
            tag::EVENT_ATTRIBUTES => {
                let key_value = message.message("Event.attributes", wire_type, ctx)?;
                check_key_value(key_value, ctx - 1)?;
                attributes.add(start, message.pos());
            }
            _ => message.skip(tag, wire_type, ctx)?,
        }
    }
    event.name = name.to_owned();
    event.attributes = attributes.attributes(bytes, tag::EVENT_ATTRIBUTES);
    Ok(event)
}

fn decode_status<'a>(
    mut message: Reader<'a>,
    ctx: u32,
    (code, text): &mut (u64, &'a str),
) -> Result<()> {
    while let Some((_, tag, wire_type)) = message.next_key()? {
        match tag {
            tag::STATUS_MESSAGE => *text = message.string("Status.message", wire_type)?,
            tag::STATUS_CODE => *code = message.varint("Status.code", wire_type)?,
            _ => message.skip(tag, wire_type, ctx)?,
        }
    }
    Ok(())
}

/// Checks a `KeyValue` as prost would decode it, so that [`Attributes`]
/// can later read it without failing.
fn check_key_value(mut message: Reader<'_>, ctx: u32) -> Result<()> {
    if ctx > 0 && is_plain_key_value(message.rest()) {
        return Ok(());
    }
    while let Some((_, tag, wire_type)) = message.next_key()? {
        match tag {
            tag::KEY_VALUE_KEY => message.check_string("KeyValue.key", wire_type)?,
            tag::KEY_VALUE_VALUE => {
                let value = message.message("KeyValue.value", wire_type, ctx)?;
                check_any_value(value, ctx - 1)?;
            }
            _ => message.skip(tag, wire_type, ctx)?,
        }
    }
    Ok(())
}

/// Recognises the layout SDKs write for nearly every attribute — an ASCII
/// key, then one value holding an ASCII string, an integer, a bool or a
/// double, all lengths under 128 — without the general field loop. `false`
/// means "not this layout", not "malformed": the general loop then decides.
#[inline(always)]
fn is_plain_key_value(kv: &[u8]) -> bool {
    const KEY: u8 = key_byte(tag::KEY_VALUE_KEY, WireType::LengthDelimited);
    const VALUE: u8 = key_byte(tag::KEY_VALUE_VALUE, WireType::LengthDelimited);
    const STRING: u8 = key_byte(tag::ANY_STRING, WireType::LengthDelimited);
    const BOOL: u8 = key_byte(tag::ANY_BOOL, WireType::Varint);
    const INT: u8 = key_byte(tag::ANY_INT, WireType::Varint);
    const DOUBLE: u8 = key_byte(tag::ANY_DOUBLE, WireType::SixtyFourBit);
    let [KEY, key_len @ 0..0x80, rest @ ..] = kv else {
        return false;
    };
    let Some((key, rest)) = rest.split_at_checked(usize::from(*key_len)) else {
        return false;
    };
    let [VALUE, value_len @ 0..0x80, value @ ..] = rest else {
        return false;
    };
    if value.len() != usize::from(*value_len) {
        return false;
    }
    match value {
        // Every tag and length byte of this layout is below 0x80 too, so
        // one pass over the whole entry checks key and text together.
        [STRING, len @ 0..0x80, text @ ..] => text.len() == usize::from(*len) && is_ascii(kv),
        // A varint of at most nine bytes cannot overflow.
        [BOOL | INT, varint @ ..] => match varint.split_last() {
            Some((0..0x80, init)) => {
                init.len() < 9 && init.iter().all(|b| b & 0x80 != 0) && is_ascii(key)
            }
            _ => false,
        },
        [DOUBLE, bits @ ..] => bits.len() == 8 && is_ascii(key),
        _ => false,
    }
}

/// Inlined into its callers: most values are one scalar field.
#[inline(always)]
fn check_any_value(mut message: Reader<'_>, ctx: u32) -> Result<()> {
    while let Some((_, tag, wire_type)) = message.next_key()? {
        match tag {
            tag::ANY_STRING => message.check_string("AnyValue.string_value", wire_type)?,
            tag::ANY_BOOL | tag::ANY_INT | tag::ANY_STRINDEX => {
                message.varint("AnyValue.value", wire_type)?;
            }
            tag::ANY_DOUBLE => {
                message.fixed64("AnyValue.double_value", wire_type)?;
            }
            tag::ANY_BYTES => {
                message.len_delimited("AnyValue.bytes_value", wire_type)?;
            }
            tag::ANY_ARRAY | tag::ANY_KVLIST => {
                let list = message.message("AnyValue.list", wire_type, ctx)?;
                check_list(list, tag == tag::ANY_ARRAY, ctx - 1)?;
            }
            _ => message.skip(tag, wire_type, ctx)?,
        }
    }
    Ok(())
}

/// An `ArrayValue` or a `KeyValueList`, kept out of line as it recurses.
#[inline(never)]
fn check_list(mut list: Reader<'_>, array: bool, ctx: u32) -> Result<()> {
    let field = if array {
        "ArrayValue.values"
    } else {
        "KeyValueList.values"
    };
    while let Some((_, tag, wire_type)) = list.next_key()? {
        match tag {
            tag::LIST_VALUES => {
                let item = list.message(field, wire_type, ctx)?;
                if array {
                    check_any_value(item, ctx - 1)?;
                } else {
                    check_key_value(item, ctx - 1)?;
                }
            }
            _ => list.skip(tag, wire_type, ctx)?,
        }
    }
    Ok(())
}

/// The attribute entries of one message: from the first entry's key to the
/// end of the last entry, in request offsets.
#[derive(Debug, Default, Clone, Copy)]
struct Run {
    start: usize,
    end: usize,
    count: usize,
}

impl Run {
    fn add(&mut self, start: usize, end: usize) {
        if self.count == 0 {
            self.start = start;
        }
        self.end = end;
        self.count += 1;
    }

    fn attributes(&self, bytes: &Bytes, field: u32) -> Attributes {
        if self.count == 0 {
            return Attributes::default();
        }
        Attributes::from_encoded(bytes.slice(self.start..self.end), field, self.count)
    }
}

/// The id triple of a valid span.
pub(crate) type SpanIds = (TraceId, SpanId, Option<SpanId>);

/// Validates raw ids. An empty or all-zero parent means "root", as SDKs
/// differ in how they encode a missing parent.
pub(crate) fn validate_ids(
    trace_id: &[u8],
    span_id: &[u8],
    parent_span_id: &[u8],
) -> Result<SpanIds, (InvalidId, crate::model::IdError)> {
    let trace_id = TraceId::try_from(trace_id).map_err(|e| (InvalidId::Trace, e))?;
    let span_id = SpanId::try_from(span_id).map_err(|e| (InvalidId::Span, e))?;
    let parent = if parent_span_id.is_empty() || parent_span_id.iter().all(|&b| b == 0) {
        if !parent_span_id.is_empty() && parent_span_id.len() != SpanId::LEN {
            return Err((
                InvalidId::Parent,
                crate::model::IdError::WrongLength {
                    expected: SpanId::LEN,
                    actual: parent_span_id.len(),
                },
            ));
        }
        None
    } else {
        Some(SpanId::try_from(parent_span_id).map_err(|e| (InvalidId::Parent, e))?)
    };
    Ok((trace_id, span_id, parent))
}

#[cfg(test)]
pub(crate) mod tests;
