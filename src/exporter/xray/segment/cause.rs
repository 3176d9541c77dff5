//! The `cause`: exceptions from `exception` events or the error status.

use super::attrs::{Attrs, Field, Used};
use super::document::{Cause, Exception, hex_id};
use super::stack::parse_stack;
use crate::model::{Span, StatusCode, mix64};

/// Exceptions from `exception` events; else, for an ERROR span, one from
/// the status message (or `http.status_text`).
pub(super) fn make_cause<'d>(
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
        hex_id(mix64(seed ^ counter.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes())
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::exporter::xray::segment::tests::*;
    use crate::model::SpanKind;

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
}
