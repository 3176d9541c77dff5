//! Annotations (indexed attributes) and metadata (the rest).

use std::borrow::Cow;

use super::TranslateConfig;
use super::attrs::{Attrs, Field, Used};
use super::document::{Document, MetaKey, MetaValue, Metadata, RESOURCE_PREFIX};
use crate::model::{AttributeValue, ValueRef};

/// Indexed attributes become annotations when their value is a string,
/// number or bool; every other attribute not already written elsewhere goes
/// to `metadata.default`, resource attributes (segments only) as
/// `otel.resource.<key>`.
pub(super) fn annotations_and_metadata<'d>(
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

pub(super) fn resource_annotations_and_metadata<'d>(
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
pub(super) fn xray_metadata<'d>(
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

pub(super) fn is_scalar(value: &ValueRef<'_>) -> bool {
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
pub(super) fn annotation_key(key: &str) -> Cow<'_, str> {
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
pub(super) fn add_annotation<'d>(
    annotations: &mut Vec<(Cow<'d, str>, &'d ValueRef<'d>)>,
    key: Cow<'d, str>,
    value: &'d ValueRef<'d>,
) {
    if !key.is_empty() && !annotations.iter().any(|(k, _)| *k == key) {
        annotations.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::exporter::xray::segment::tests::*;
    use crate::model::SpanKind;

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
}
