//! The per-thread cache of decoded resources, their metadata rendered.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use super::TranslateConfig;
use super::attrs::{Attrs, Field, resource_field};
use super::aws::names_language;
use super::document::{JsonRef, MetaKey, RESOURCE_PREFIX};
use super::json::{Output, write_json_as};
use crate::model::Resource;

/// Whether resource attributes may become annotations: then the cached
/// rendering, all metadata, does not fit.
pub(super) fn indexes_resource(config: &TranslateConfig) -> bool {
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
pub(super) struct CachedResource {
    /// Identity: the allocation lives as long as this `Weak`, so a span whose
    /// resource has the same address has the same resource.
    pub(super) resource: Weak<Resource>,
    pub(super) attrs: Attrs<'static>,
    /// `"otel.resource.<key>":<value>,…`
    pub(super) metadata: Vec<u8>,
    /// The same, escaped as for [`translate_escaped`](super::translate_escaped).
    pub(super) metadata_escaped: Vec<u8>,
    /// `aws.xray.sdk`: `<telemetry.sdk.name> for <language>`.
    pub(super) sdk: Option<String>,
}

pub(super) const CACHED_RESOURCES: usize = 4;

thread_local! {
    static RESOURCES: RefCell<Vec<CachedResource>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn with_resource<R>(
    resource: &Arc<Resource>,
    f: impl FnOnce(&CachedResource) -> R,
) -> R {
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
    pub(super) fn new(resource: &Arc<Resource>) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::xray::segment::tests::*;
    use crate::model::{Span, SpanKind};

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
}
