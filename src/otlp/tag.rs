//! Field numbers and wire types of the OTLP trace messages this crate
//! reads and writes, as one table: each entry makes a `const` for `match`
//! patterns and a row of [`FIELDS`], which a test checks against `proto/`.

pub use prost::encoding::WireType;

/// One row of the table: a field of an OTLP message.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The constant's name, for test messages.
    pub name: &'static str,
    /// The field number.
    pub number: u32,
    /// The wire type of the field's type.
    pub wire_type: WireType,
    /// `package.Message.field` of every field with this number (list
    /// values share one constant).
    pub paths: &'static [&'static str],
}

macro_rules! fields {
    ($($(#[$doc:meta])* $name:ident = $number:literal, $wire:ident, [$($path:literal),+];)*) => {
        $($(#[$doc])* pub const $name: u32 = $number;)*
        /// Every field above, with its wire type and proto paths.
        pub const FIELDS: &[Field] = &[$(Field {
            name: stringify!($name),
            number: $name,
            wire_type: WireType::$wire,
            paths: &[$($path),+],
        }),*];
    };
}

fields! {
    /// `ExportTraceServiceRequest.resource_spans`.
    REQUEST_RESOURCE_SPANS = 1, LengthDelimited,
        ["opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest.resource_spans"];
    /// `ResourceSpans.resource`.
    RESOURCE_SPANS_RESOURCE = 1, LengthDelimited,
        ["opentelemetry.proto.trace.v1.ResourceSpans.resource"];
    /// `ResourceSpans.scope_spans`.
    RESOURCE_SPANS_SCOPE_SPANS = 2, LengthDelimited,
        ["opentelemetry.proto.trace.v1.ResourceSpans.scope_spans"];
    /// `Resource.attributes`.
    RESOURCE_ATTRIBUTES = 1, LengthDelimited,
        ["opentelemetry.proto.resource.v1.Resource.attributes"];
    /// `ScopeSpans.scope`.
    SCOPE_SPANS_SCOPE = 1, LengthDelimited,
        ["opentelemetry.proto.trace.v1.ScopeSpans.scope"];
    /// `ScopeSpans.spans`.
    SCOPE_SPANS_SPANS = 2, LengthDelimited,
        ["opentelemetry.proto.trace.v1.ScopeSpans.spans"];
    /// `InstrumentationScope.name`.
    SCOPE_NAME = 1, LengthDelimited,
        ["opentelemetry.proto.common.v1.InstrumentationScope.name"];
    /// `Span.trace_id`.
    SPAN_TRACE_ID = 1, LengthDelimited, ["opentelemetry.proto.trace.v1.Span.trace_id"];
    /// `Span.span_id`.
    SPAN_SPAN_ID = 2, LengthDelimited, ["opentelemetry.proto.trace.v1.Span.span_id"];
    /// `Span.parent_span_id`.
    SPAN_PARENT_SPAN_ID = 4, LengthDelimited,
        ["opentelemetry.proto.trace.v1.Span.parent_span_id"];
    /// `Span.name`.
    SPAN_NAME = 5, LengthDelimited, ["opentelemetry.proto.trace.v1.Span.name"];
    /// `Span.kind`, an enum.
    SPAN_KIND = 6, Varint, ["opentelemetry.proto.trace.v1.Span.kind"];
    /// `Span.start_time_unix_nano`.
    SPAN_START = 7, SixtyFourBit, ["opentelemetry.proto.trace.v1.Span.start_time_unix_nano"];
    /// `Span.end_time_unix_nano`.
    SPAN_END = 8, SixtyFourBit, ["opentelemetry.proto.trace.v1.Span.end_time_unix_nano"];
    /// `Span.attributes`.
    SPAN_ATTRIBUTES = 9, LengthDelimited, ["opentelemetry.proto.trace.v1.Span.attributes"];
    /// `Span.events`.
    SPAN_EVENTS = 11, LengthDelimited, ["opentelemetry.proto.trace.v1.Span.events"];
    /// `Span.status`.
    SPAN_STATUS = 15, LengthDelimited, ["opentelemetry.proto.trace.v1.Span.status"];
    /// `Span.Event.time_unix_nano`.
    EVENT_TIME = 1, SixtyFourBit, ["opentelemetry.proto.trace.v1.Span.Event.time_unix_nano"];
    /// `Span.Event.name`.
    EVENT_NAME = 2, LengthDelimited, ["opentelemetry.proto.trace.v1.Span.Event.name"];
    /// `Span.Event.attributes`.
    EVENT_ATTRIBUTES = 3, LengthDelimited,
        ["opentelemetry.proto.trace.v1.Span.Event.attributes"];
    /// `Status.message`.
    STATUS_MESSAGE = 2, LengthDelimited, ["opentelemetry.proto.trace.v1.Status.message"];
    /// `Status.code`, an enum.
    STATUS_CODE = 3, Varint, ["opentelemetry.proto.trace.v1.Status.code"];
    /// `KeyValue.key`.
    KEY_VALUE_KEY = 1, LengthDelimited, ["opentelemetry.proto.common.v1.KeyValue.key"];
    /// `KeyValue.value`.
    KEY_VALUE_VALUE = 2, LengthDelimited, ["opentelemetry.proto.common.v1.KeyValue.value"];
    /// `AnyValue.string_value`.
    ANY_STRING = 1, LengthDelimited, ["opentelemetry.proto.common.v1.AnyValue.string_value"];
    /// `AnyValue.bool_value`.
    ANY_BOOL = 2, Varint, ["opentelemetry.proto.common.v1.AnyValue.bool_value"];
    /// `AnyValue.int_value`.
    ANY_INT = 3, Varint, ["opentelemetry.proto.common.v1.AnyValue.int_value"];
    /// `AnyValue.double_value`.
    ANY_DOUBLE = 4, SixtyFourBit, ["opentelemetry.proto.common.v1.AnyValue.double_value"];
    /// `AnyValue.array_value`.
    ANY_ARRAY = 5, LengthDelimited, ["opentelemetry.proto.common.v1.AnyValue.array_value"];
    /// `AnyValue.kvlist_value`.
    ANY_KVLIST = 6, LengthDelimited, ["opentelemetry.proto.common.v1.AnyValue.kvlist_value"];
    /// `AnyValue.bytes_value`.
    ANY_BYTES = 7, LengthDelimited, ["opentelemetry.proto.common.v1.AnyValue.bytes_value"];
    /// `AnyValue.string_value_strindex`, not used by traces.
    ANY_STRINDEX = 8, Varint,
        ["opentelemetry.proto.common.v1.AnyValue.string_value_strindex"];
    /// `ArrayValue.values` and `KeyValueList.values`.
    LIST_VALUES = 1, LengthDelimited, [
        "opentelemetry.proto.common.v1.ArrayValue.values",
        "opentelemetry.proto.common.v1.KeyValueList.values"
    ];
}

/// The one-byte key of a field numbered below 16, as SDKs write them.
pub const fn key_byte(field: u32, wire_type: WireType) -> u8 {
    (field << 3) as u8 | wire_type as u8
}

#[cfg(test)]
mod tests {
    use protox::prost_reflect::Kind;

    use super::*;

    /// The wire type protobuf gives a field of this kind.
    fn wire_type_of(kind: &Kind, packed: bool) -> WireType {
        if packed {
            return WireType::LengthDelimited;
        }
        match kind {
            Kind::Int32
            | Kind::Int64
            | Kind::Uint32
            | Kind::Uint64
            | Kind::Sint32
            | Kind::Sint64
            | Kind::Bool
            | Kind::Enum(_) => WireType::Varint,
            Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => WireType::SixtyFourBit,
            Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => WireType::ThirtyTwoBit,
            Kind::String | Kind::Bytes | Kind::Message(_) => WireType::LengthDelimited,
        }
    }

    #[test]
    fn every_field_matches_the_proto_files() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
        let files = [
            "opentelemetry/proto/common/v1/common.proto",
            "opentelemetry/proto/resource/v1/resource.proto",
            "opentelemetry/proto/trace/v1/trace.proto",
            "opentelemetry/proto/collector/trace/v1/trace_service.proto",
        ];
        let pool = protox::Compiler::new([root])
            .and_then(|mut compiler| {
                compiler.open_files(files)?;
                Ok(compiler.descriptor_pool())
            })
            .expect("proto/ parses");
        let mut checked = 0;
        for field in FIELDS {
            for path in field.paths {
                let (message, name) = path.rsplit_once('.').expect("Message.field");
                let message = pool
                    .get_message_by_name(message)
                    .unwrap_or_else(|| panic!("{}: no message {message}", field.name));
                let proto = message
                    .get_field_by_name(name)
                    .unwrap_or_else(|| panic!("{}: no field {path}", field.name));
                assert_eq!(
                    proto.number(),
                    field.number,
                    "{}: number of {path}",
                    field.name
                );
                assert_eq!(
                    wire_type_of(&proto.kind(), proto.is_packed()),
                    field.wire_type,
                    "{}: wire type of {path}",
                    field.name
                );
                checked += 1;
            }
        }
        assert_eq!(checked, FIELDS.len() + 1, "list values name two fields");
    }
}
