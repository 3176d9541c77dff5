//! Encoding within X-Ray's 64 kB: the document is trimmed, least useful
//! parts first, until it fits.

use std::borrow::Cow;

use serde::Serialize;

use super::attrs::Attrs;
use super::document::{Document, Exception, JsonRef, MetaKey, MetaValue, Metadata};
use super::json::{Output, json_string, write_json_as};
use super::{DropReason, MAX_DOCUMENT_BYTES};
use crate::model::ValueRef;

/// Strings are cut to this many bytes when a document must shrink.
pub(super) const TRIMMED_STRING_BYTES: usize = 1024;

/// `resource_metadata`: a segment's resource entries, rendered, and the
/// resource (to trim them one by one should the document be too big).
pub(super) fn encode<'d>(
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
pub(super) fn splice_metadata(
    out: &mut Vec<u8>,
    metadata: &Metadata<'_>,
    entries: &[u8],
    output: Output,
) {
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

pub(super) fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    json_string(value).map_or(0, |json| json.len())
}

/// Indices of the largest entries whose sizes add up to `excess`.
pub(super) fn largest_covering(sizes: &[usize], excess: usize) -> Vec<usize> {
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

pub(super) fn trim_metadata(metadata: &mut Metadata<'_>, excess: usize) -> bool {
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

pub(super) fn trim_annotations(
    annotations: &mut Vec<(Cow<'_, str>, &ValueRef<'_>)>,
    excess: usize,
) -> bool {
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

pub(super) fn exceptions_mut<'a, 'd>(doc: &'a mut Document<'d>) -> &'a mut [Exception<'d>] {
    doc.cause
        .as_mut()
        .map_or(&mut [], |cause| &mut cause.exceptions[..])
}

pub(super) fn trim_stacks(doc: &mut Document<'_>) -> bool {
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
pub(super) fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub(super) fn trim_strings(doc: &mut Document<'_>) -> bool {
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
pub(super) fn trim_exceptions(doc: &mut Document<'_>) -> bool {
    match &mut doc.cause {
        Some(cause) if cause.exceptions.len() > 1 => {
            cause.exceptions.truncate(1);
            cause.exceptions[0].cause = None;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::exporter::xray::segment::tests::*;
    use crate::exporter::xray::segment::{TranslateConfig, translate, translate_escaped};
    use crate::model::{AttributeValue, Resource, SpanKind};

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
}
