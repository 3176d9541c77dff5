//! Proto-free types the pipeline works on: ids, the lean span, attributes.
//!
//! Receivers parse wire data into these once; nothing downstream sees
//! protobuf or JSON. Attributes from OTLP protobuf stay in their wire bytes
//! behind [`Attributes`]' lookups, so decoding does not copy them.

mod attributes;
mod ids;
mod span;

pub use attributes::{AttributeValue, Attributes, AttributesIter, KeySet, ValueRef};
pub use ids::{IdError, SpanId, TraceId, mix64};
pub use span::{ByteString, Event, Resource, Span, SpanKind, StatusCode, UNKNOWN_SERVICE};
