//! The lean span: only what the graph, span metrics and exporters read.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
pub use bytestring::ByteString;

use super::{SpanId, TraceId};

/// OTLP span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SpanKind {
    /// Kind not set by the producer.
    #[default]
    Unspecified,
    /// In-process work.
    Internal,
    /// Serves a synchronous request.
    Server,
    /// Makes a synchronous request.
    Client,
    /// Sends a message.
    Producer,
    /// Receives a message.
    Consumer,
}

impl SpanKind {
    /// Maps the OTLP enum number; unknown values become `Unspecified`.
    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }

    /// Maps the OTLP JSON enum name (`SPAN_KIND_SERVER`).
    pub fn from_otlp_name(name: &str) -> Option<Self> {
        Some(match name {
            "SPAN_KIND_UNSPECIFIED" => Self::Unspecified,
            "SPAN_KIND_INTERNAL" => Self::Internal,
            "SPAN_KIND_SERVER" => Self::Server,
            "SPAN_KIND_CLIENT" => Self::Client,
            "SPAN_KIND_PRODUCER" => Self::Producer,
            "SPAN_KIND_CONSUMER" => Self::Consumer,
            _ => return None,
        })
    }

    /// The OTel name, as Prometheus labels and X-Ray metadata spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "SPAN_KIND_UNSPECIFIED",
            Self::Internal => "SPAN_KIND_INTERNAL",
            Self::Server => "SPAN_KIND_SERVER",
            Self::Client => "SPAN_KIND_CLIENT",
            Self::Producer => "SPAN_KIND_PRODUCER",
            Self::Consumer => "SPAN_KIND_CONSUMER",
        }
    }
}

/// OTLP status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StatusCode {
    /// Status not set.
    #[default]
    Unset,
    /// Explicitly successful.
    Ok,
    /// Failed.
    Error,
}

impl StatusCode {
    /// Maps the OTLP enum number; unknown values become `Unset`.
    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }

    /// Maps the OTLP JSON enum name (`STATUS_CODE_ERROR`).
    pub fn from_otlp_name(name: &str) -> Option<Self> {
        Some(match name {
            "STATUS_CODE_UNSET" => Self::Unset,
            "STATUS_CODE_OK" => Self::Ok,
            "STATUS_CODE_ERROR" => Self::Error,
            _ => return None,
        })
    }

    /// The OTel name, as Prometheus labels spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "STATUS_CODE_UNSET",
            Self::Ok => "STATUS_CODE_OK",
            Self::Error => "STATUS_CODE_ERROR",
        }
    }
}

/// An attribute value; nested values keep their structure for X-Ray metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// A UTF-8 string.
    String(String),
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A homogeneous or mixed array.
    Array(Vec<AttributeValue>),
    /// A nested key/value list.
    Map(Attributes),
    /// An AnyValue with no value set.
    Empty,
}

impl AttributeValue {
    /// The value as a string slice, when it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an integer, accepting integral strings as some SDKs send them.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

/// An attribute value as [`Attributes::iter_ref`] reads it: strings
/// borrowed, so reading every attribute of a span allocates only for the
/// rare bytes, arrays and maps. A string or integer may also arrive as
/// `Decoded`; the accessors treat both alike.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueRef<'a> {
    /// A UTF-8 string.
    Str(&'a str),
    /// A signed 64-bit integer.
    Int(i64),
    /// Any other value (bools, doubles, bytes, arrays, maps, empty).
    Decoded(AttributeValue),
}

impl ValueRef<'_> {
    /// The value as a string slice, when it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            Self::Int(_) => None,
            Self::Decoded(value) => value.as_str(),
        }
    }

    /// The value as an integer, accepting integral strings, as
    /// [`AttributeValue::as_i64`].
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::Str(s) => s.parse().ok(),
            Self::Decoded(value) => value.as_i64(),
        }
    }

    /// Whether the value is unset.
    pub fn is_empty_value(&self) -> bool {
        matches!(self, Self::Decoded(AttributeValue::Empty))
    }
}

/// Key/value attributes in wire order; lookups are linear, which beats a
/// hash map for the handful of attributes a span carries.
///
/// Two representations hide behind one API: owned pairs (OTLP/JSON, tests)
/// and the protobuf wire bytes the OTLP decoder validated, read in place so
/// that decoding a span allocates nothing for its attributes. Lookups that
/// return strings borrow them from either; only [`Attributes::get`] and
/// [`Attributes::iter`] build owned values.
#[derive(Clone, Default)]
pub struct Attributes(Repr);

#[derive(Clone)]
enum Repr {
    Owned(Vec<(String, AttributeValue)>),
    Encoded(Encoded),
}

impl Default for Repr {
    fn default() -> Self {
        Self::Owned(Vec::new())
    }
}

/// `repeated KeyValue` entries still in protobuf form.
///
/// The slice runs from the first entry's key to the end of the last entry of
/// the enclosing message (Span, Resource, Event), and `field` says which
/// entries in it are attributes. One slice plus a field number costs one
/// reference-count increment and no allocation per span, where a list of
/// per-entry slices would allocate; and unlike the whole Span message it
/// spares every lookup from skipping ids and name again. Other fields that
/// an encoder interleaves between attributes (legal, if unusual) are
/// skipped when reading.
#[derive(Clone)]
struct Encoded {
    bytes: Bytes,
    field: u32,
    len: u32,
}

impl Attributes {
    /// Owned attributes, in the given order.
    pub fn from_vec(pairs: Vec<(String, AttributeValue)>) -> Self {
        Self(Repr::Owned(pairs))
    }

    /// Attributes left in wire form: `bytes` holds `len` well-formed
    /// `KeyValue` entries under field number `field`, already validated by
    /// the OTLP decoder (UTF-8, wire types, nesting depth). Malformed bytes
    /// cannot cause a panic, they read as missing values.
    pub(crate) fn from_encoded(bytes: Bytes, field: u32, len: usize) -> Self {
        if len == 0 {
            return Self::default();
        }
        Self(Repr::Encoded(Encoded {
            bytes,
            field,
            len: u32::try_from(len).unwrap_or(u32::MAX),
        }))
    }

    /// The value of `key`, if present (the first one wins on duplicates).
    pub fn get(&self, key: &str) -> Option<AttributeValue> {
        match &self.0 {
            Repr::Owned(pairs) => find(pairs.iter(), key).map(Pair::value),
            Repr::Encoded(encoded) => find(encoded.pairs(), key).map(Pair::value),
        }
    }

    /// The string value of `key`, if present and a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.scalar(key).and_then(Scalar::as_str)
    }

    /// The integer value of `key`, accepting integral strings as some SDKs
    /// send them.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        match self.scalar(key)? {
            Scalar::Int(i) => Some(i),
            Scalar::Str(s) => s.parse().ok(),
            Scalar::Other => None,
        }
    }

    /// The first of `keys` that is present as a non-empty string, in one
    /// pass over the attributes.
    pub fn first_str<'a>(&'a self, keys: &[&str]) -> Option<&'a str> {
        match &self.0 {
            Repr::Owned(pairs) => first_str(pairs.iter(), keys),
            Repr::Encoded(encoded) => first_str(encoded.pairs(), keys),
        }
    }

    /// Fills `found[i]` with the string value of the `i`-th key of `keys`
    /// (the first pair of that key; `None` when absent or not a string), in
    /// one pass: the service graph asks a dozen keys of every client span.
    pub fn find_strs<'a>(&'a self, keys: &KeySet, found: &mut [Option<&'a str>]) {
        debug_assert_eq!(keys.len(), found.len());
        match &self.0 {
            Repr::Owned(pairs) => find_strs(pairs.iter(), keys, found),
            Repr::Encoded(encoded) => find_strs(encoded.pairs(), keys, found),
        }
    }

    /// Every attribute in wire order, values decoded.
    pub fn iter(&self) -> AttributesIter<'_> {
        AttributesIter(match &self.0 {
            Repr::Owned(pairs) => IterRepr::Owned(pairs.iter()),
            Repr::Encoded(encoded) => {
                IterRepr::Encoded(wire::Entries::new(&encoded.bytes, encoded.field))
            }
        })
    }

    /// Every attribute in wire order, strings and integers borrowed or
    /// copied, other values decoded: what a translator that reads every
    /// attribute wants, without an allocation per string.
    pub fn iter_ref(&self) -> impl Iterator<Item = (&str, ValueRef<'_>)> {
        let (owned, encoded) = match &self.0 {
            Repr::Owned(pairs) => (
                Some(
                    pairs
                        .iter()
                        .map(|pair| (pair.0.as_str(), pair.scalar_ref())),
                ),
                None,
            ),
            Repr::Encoded(encoded) => (
                None,
                Some(wire::Entries::new(&encoded.bytes, encoded.field).map(|kv| {
                    let (key, scalar) = wire::key_scalar(kv);
                    (key, scalar.or_decoded(|| wire::value(kv)))
                })),
            ),
        };
        owned
            .into_iter()
            .flatten()
            .chain(encoded.into_iter().flatten())
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Owned(pairs) => pairs.len(),
            Repr::Encoded(encoded) => encoded.len as usize,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `KeyValue` messages of attributes still in wire form, each
    /// without its field key and length, so that an encoder can copy them
    /// verbatim (agent forwarding); `None` for owned attributes.
    pub(crate) fn wire_entries(&self) -> Option<impl Iterator<Item = &[u8]> + Clone + '_> {
        match &self.0 {
            Repr::Encoded(encoded) => Some(wire::Entries::new(&encoded.bytes, encoded.field)),
            Repr::Owned(_) => None,
        }
    }

    /// Owned pairs, in order; `None` for attributes still in wire form.
    pub(crate) fn owned_pairs(&self) -> Option<&[(String, AttributeValue)]> {
        match &self.0 {
            Repr::Owned(pairs) => Some(pairs),
            Repr::Encoded(_) => None,
        }
    }

    fn scalar(&self, key: &str) -> Option<Scalar<'_>> {
        match &self.0 {
            Repr::Owned(pairs) => find(pairs.iter(), key).map(Pair::scalar),
            Repr::Encoded(encoded) => find(encoded.pairs(), key).map(Pair::scalar),
        }
    }
}

impl Encoded {
    #[inline]
    fn pairs(&self) -> impl Iterator<Item = EncodedPair<'_>> {
        wire::Entries::new(&self.bytes, self.field).map(|kv| EncodedPair {
            key: wire::key(kv),
            kv,
        })
    }
}

/// One attribute of either representation, its value not yet looked at.
/// Lookups are generic over it so that each representation gets its own
/// tight loop.
trait Pair<'a>: Copy {
    fn key(self) -> &'a [u8];
    fn scalar(self) -> Scalar<'a>;
    fn value(self) -> AttributeValue;

    /// Strings and integers as they are, anything else decoded.
    #[inline]
    fn scalar_ref(self) -> ValueRef<'a> {
        self.scalar().or_decoded(|| self.value())
    }
}

impl<'a> Pair<'a> for &'a (String, AttributeValue) {
    #[inline]
    fn key(self) -> &'a [u8] {
        self.0.as_bytes()
    }

    #[inline]
    fn scalar(self) -> Scalar<'a> {
        match &self.1 {
            AttributeValue::String(s) => Scalar::Str(s),
            AttributeValue::Int(i) => Scalar::Int(*i),
            _ => Scalar::Other,
        }
    }

    fn value(self) -> AttributeValue {
        self.1.clone()
    }
}

/// A whole `KeyValue` message and its key.
#[derive(Clone, Copy)]
struct EncodedPair<'a> {
    key: &'a [u8],
    kv: &'a [u8],
}

impl<'a> Pair<'a> for EncodedPair<'a> {
    #[inline]
    fn key(self) -> &'a [u8] {
        self.key
    }

    #[inline]
    fn scalar(self) -> Scalar<'a> {
        wire::scalar(self.kv)
    }

    fn value(self) -> AttributeValue {
        wire::value(self.kv)
    }
}

/// The first pair named `key`.
#[inline]
fn find<'a, P: Pair<'a>>(mut pairs: impl Iterator<Item = P>, key: &str) -> Option<P> {
    pairs.find(|pair| pair.key() == key.as_bytes())
}

/// See [`Attributes::first_str`].
#[inline]
fn first_str<'a, P: Pair<'a>>(pairs: impl Iterator<Item = P>, keys: &[&str]) -> Option<&'a str> {
    // A bit per key remembers which keys were met, so that only the first
    // pair of a duplicated key counts, as in `get_str`.
    if keys.len() > u64::BITS as usize {
        let pairs: Vec<P> = pairs.collect();
        return keys
            .iter()
            .filter_map(|key| find(pairs.iter().copied(), key)?.scalar().as_str())
            .find(|value| !value.is_empty());
    }
    let mut seen = 0u64;
    let mut best: Option<(usize, &'a str)> = None;
    for pair in pairs {
        let key = pair.key();
        let Some(index) = keys.iter().position(|k| k.as_bytes() == key) else {
            continue;
        };
        let bit = 1u64 << index;
        if seen & bit != 0 {
            continue;
        }
        seen |= bit;
        if best.is_some_and(|(b, _)| b < index) {
            continue;
        }
        if let Some(value) = pair.scalar().as_str().filter(|v| !v.is_empty()) {
            best = Some((index, value));
            // Done once every better-ranked key has been met.
            let better = bit - 1;
            if seen & better == better {
                break;
            }
        }
    }
    best.map(|(_, value)| value)
}

/// Distinct attribute keys read together by [`Attributes::find_strs`],
/// bucketed by length: each attribute of a span is compared only with the
/// keys of its own length, usually none, instead of with every key.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: Vec<Box<str>>,
    /// Bit `i` of `by_len[n]` is set when `keys[i]` is `n` bytes long
    /// (the last bucket holds every longer key too).
    by_len: [u64; KeySet::LENGTH_BUCKETS],
}

impl KeySet {
    /// Most keys in one set: one bit each in a `u64`.
    pub const MAX_KEYS: usize = u64::BITS as usize;
    const LENGTH_BUCKETS: usize = 64;

    /// The set of `keys` in order, repeats dropped. `None` when more than
    /// [`KeySet::MAX_KEYS`] distinct keys are given.
    pub fn new<K: AsRef<str>>(keys: impl IntoIterator<Item = K>) -> Option<Self> {
        let mut set = Self {
            keys: Vec::new(),
            by_len: [0; Self::LENGTH_BUCKETS],
        };
        for key in keys {
            set.insert(key.as_ref())?;
        }
        Some(set)
    }

    /// Index of `key`, added at the end if new; `None` when the set is full.
    pub fn insert(&mut self, key: &str) -> Option<usize> {
        if let Some(index) = self.index_of(key.as_bytes()) {
            return Some(index);
        }
        if self.keys.len() == Self::MAX_KEYS {
            return None;
        }
        self.by_len[Self::bucket(key.len())] |= 1 << self.keys.len();
        self.keys.push(key.into());
        Some(self.keys.len() - 1)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    #[inline(always)]
    fn bucket(len: usize) -> usize {
        len.min(Self::LENGTH_BUCKETS - 1)
    }

    #[inline(always)]
    fn index_of(&self, key: &[u8]) -> Option<usize> {
        self.index_among(key, u64::MAX)
    }

    /// Index of `key` among the keys whose bit is set in `allowed`.
    #[inline(always)]
    fn index_among(&self, key: &[u8], allowed: u64) -> Option<usize> {
        let mut candidates = self.by_len[Self::bucket(key.len())] & allowed;
        while candidates != 0 {
            let index = candidates.trailing_zeros() as usize;
            if self.keys[index].as_bytes() == key {
                return Some(index);
            }
            candidates &= candidates - 1;
        }
        None
    }
}

/// See [`Attributes::find_strs`].
#[inline]
fn find_strs<'a, P: Pair<'a>>(
    pairs: impl Iterator<Item = P>,
    keys: &KeySet,
    found: &mut [Option<&'a str>],
) {
    found.fill(None);
    // One bit per key met: only the first pair of a duplicated key counts,
    // as in `get_str`.
    let mut seen = 0u64;
    for pair in pairs {
        if let Some(index) = keys.index_among(pair.key(), !seen) {
            seen |= 1 << index;
            found[index] = pair.scalar().as_str();
        }
    }
}

impl PartialEq for Attributes {
    /// Equal when the same pairs come in the same order, whatever the
    /// representation.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a str, AttributeValue);
    type IntoIter = AttributesIter<'a>;

    fn into_iter(self) -> AttributesIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Attributes`]: keys borrowed, values decoded.
#[derive(Debug)]
pub struct AttributesIter<'a>(IterRepr<'a>);

#[derive(Debug)]
enum IterRepr<'a> {
    Owned(std::slice::Iter<'a, (String, AttributeValue)>),
    Encoded(wire::Entries<'a>),
}

impl<'a> Iterator for AttributesIter<'a> {
    type Item = (&'a str, AttributeValue);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            IterRepr::Owned(pairs) => pairs.next().map(|(k, v)| (k.as_str(), v.clone())),
            IterRepr::Encoded(entries) => entries
                .next()
                .map(|kv| (wire::utf8(wire::key(kv)), wire::value(kv))),
        }
    }
}

/// The part of a value that lookups return without allocating.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Str(&'a str),
    Int(i64),
    Other,
}

impl<'a> Scalar<'a> {
    /// Strings and integers as they are, anything else as `decode` reads it.
    #[inline]
    fn or_decoded(self, decode: impl FnOnce() -> AttributeValue) -> ValueRef<'a> {
        match self {
            Self::Str(s) => ValueRef::Str(s),
            Self::Int(i) => ValueRef::Int(i),
            Self::Other => ValueRef::Decoded(decode()),
        }
    }

    fn as_str(self) -> Option<&'a str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Reading `KeyValue`/`AnyValue` protobuf that the OTLP decoder validated.
///
/// Merging follows protobuf (and prost): a repeated `key` keeps the last,
/// repeated `value`s merge, so the last `oneof` field wins except that
/// consecutive arrays or key/value lists concatenate. Anything malformed
/// ends the walk quietly; the decoder has already refused such input.
mod wire {
    use prost::encoding::decode_varint;

    use super::{AttributeValue, Attributes, Scalar};

    /// Protobuf field numbers of `KeyValue`, `AnyValue` and the lists.
    const KEY: u32 = 1;
    const VALUE: u32 = 2;
    const STRING: u32 = 1;
    const BOOL: u32 = 2;
    const INT: u32 = 3;
    const DOUBLE: u32 = 4;
    const ARRAY: u32 = 5;
    const KVLIST: u32 = 6;
    const BYTES: u32 = 7;
    const STRINDEX: u32 = 8;
    const VALUES: u32 = 1;
    /// prost's recursion limit; the decoder enforces it, this only guards.
    const MAX_DEPTH: u32 = 100;

    /// One field's payload.
    pub(super) enum Field<'a> {
        Varint(u64),
        Fixed64(u64),
        Len(&'a [u8]),
        /// Fixed32 or a group: nothing an attribute reads.
        Skipped,
    }

    /// A varint; one byte is the common case worth inlining.
    #[inline(always)]
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        match buf.split_first()? {
            (&byte @ 0..0x80, rest) => {
                *buf = rest;
                Some(u64::from(byte))
            }
            // Never with empty input: prost's error allocates.
            _ => decode_varint(buf).ok(),
        }
    }

    #[inline(always)]
    fn len_delimited<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = usize::try_from(varint(buf)?).ok()?;
        let (payload, rest) = buf.split_at_checked(len)?;
        *buf = rest;
        Some(payload)
    }

    /// The next field of `buf`, or `None` at the end or on malformed input.
    #[inline(always)]
    pub(super) fn field<'a>(buf: &mut &'a [u8]) -> Option<(u32, Field<'a>)> {
        let key = varint(buf)?;
        let tag = u32::try_from(key >> 3).ok()?;
        let field = match key & 7 {
            0 => Field::Varint(varint(buf)?),
            1 => {
                let (bytes, rest) = buf.split_first_chunk::<8>()?;
                *buf = rest;
                Field::Fixed64(u64::from_le_bytes(*bytes))
            }
            2 => Field::Len(len_delimited(buf)?),
            3 => {
                skip_group(buf, tag, 0)?;
                Field::Skipped
            }
            5 => {
                *buf = buf.get(4..)?;
                Field::Skipped
            }
            _ => return None,
        };
        Some((tag, field))
    }

    fn skip_group(buf: &mut &[u8], tag: u32, depth: u32) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        loop {
            let key = varint(buf)?;
            let inner = u32::try_from(key >> 3).ok()?;
            match key & 7 {
                0 => {
                    varint(buf)?;
                }
                1 => *buf = buf.get(8..)?,
                2 => {
                    len_delimited(buf)?;
                }
                3 => skip_group(buf, inner, depth + 1)?,
                4 => return (inner == tag).then_some(()),
                5 => *buf = buf.get(4..)?,
                _ => return None,
            }
        }
    }

    /// The `KeyValue` messages stored under one field number.
    #[derive(Debug, Clone)]
    pub(super) struct Entries<'a> {
        buf: &'a [u8],
        field: u32,
        /// The one-byte key of `field`, which nearly every entry starts with.
        key_byte: Option<u8>,
    }

    impl<'a> Entries<'a> {
        pub(super) fn new(buf: &'a [u8], field: u32) -> Self {
            let key_byte = u8::try_from(field << 3 | 2).ok().filter(|&b| b < 0x80);
            Self {
                buf,
                field,
                key_byte,
            }
        }
    }

    impl<'a> Iterator for Entries<'a> {
        type Item = &'a [u8];

        #[inline]
        fn next(&mut self) -> Option<&'a [u8]> {
            if let [key, len @ 0..0x80, rest @ ..] = self.buf
                && Some(*key) == self.key_byte
                && let Some((kv, rest)) = rest.split_at_checked(usize::from(*len))
            {
                self.buf = rest;
                return Some(kv);
            }
            while let Some((tag, field)) = self::field(&mut self.buf) {
                if let (true, Field::Len(kv)) = (tag == self.field, field) {
                    return Some(kv);
                }
            }
            self.buf = &[];
            None
        }
    }

    /// The key and value of a `KeyValue` laid out as SDKs write it: the
    /// key, then one value, each once, lengths under 128.
    #[inline(always)]
    fn plain(kv: &[u8]) -> Option<(&[u8], &[u8])> {
        const KEY_BYTE: u8 = (KEY << 3 | 2) as u8;
        const VALUE_BYTE: u8 = (VALUE << 3 | 2) as u8;
        let [KEY_BYTE, key_len @ 0..0x80, rest @ ..] = kv else {
            return None;
        };
        let (key, rest) = rest.split_at_checked(usize::from(*key_len))?;
        let [VALUE_BYTE, value_len @ 0..0x80, value @ ..] = rest else {
            return None;
        };
        (value.len() == usize::from(*value_len)).then_some((key, value))
    }

    /// Text the decoder validated; invalid bytes read as empty.
    #[inline]
    pub(super) fn utf8(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    /// The key of a `KeyValue` (the last one, should it repeat).
    #[inline]
    pub(super) fn key(mut kv: &[u8]) -> &[u8] {
        if let Some((key, _)) = plain(kv) {
            return key;
        }
        // The whole message is walked: a repeated key keeps the last.
        let mut key: &[u8] = &[];
        while let Some((tag, field)) = self::field(&mut kv) {
            if let (KEY, Field::Len(bytes)) = (tag, field) {
                key = bytes;
            }
        }
        key
    }

    /// [`key`] as text and [`scalar`] at once. A string attribute in the
    /// SDK layout is checked as UTF-8 in one pass over the whole message
    /// (its tag and length bytes are ASCII): two passes over short strings
    /// were a tenth of reading attributes.
    #[inline]
    pub(super) fn key_scalar(kv: &[u8]) -> (&str, Scalar<'_>) {
        const STRING_BYTE: u8 = (STRING << 3 | 2) as u8;
        if let Some((key, [STRING_BYTE, len @ 0..0x80, text @ ..])) = plain(kv)
            && text.len() == usize::from(*len)
            && let Ok(whole) = std::str::from_utf8(kv)
        {
            // Both sit after ASCII bytes and end the message or precede one.
            let key_start = 2;
            let text_start = kv.len() - text.len();
            if let (Some(key), Some(text)) = (
                whole.get(key_start..key_start + key.len()),
                whole.get(text_start..),
            ) {
                return (key, Scalar::Str(text));
            }
        }
        (utf8(key(kv)), scalar(kv))
    }

    /// The last `oneof` field set across a `KeyValue`'s values, which is
    /// its value whenever that is a string or an integer.
    pub(super) fn scalar(mut kv: &[u8]) -> Scalar<'_> {
        const STRING_BYTE: u8 = (STRING << 3 | 2) as u8;
        if let Some((_, [STRING_BYTE, len @ 0..0x80, text @ ..])) = plain(kv)
            && text.len() == usize::from(*len)
        {
            return Scalar::Str(utf8(text));
        }
        let mut last = Scalar::Other;
        while let Some((tag, field)) = self::field(&mut kv) {
            let (VALUE, Field::Len(mut any)) = (tag, field) else {
                continue;
            };
            while let Some((tag, field)) = self::field(&mut any) {
                match (tag, field) {
                    (STRING, Field::Len(s)) => last = Scalar::Str(utf8(s)),
                    (INT, Field::Varint(i)) => last = Scalar::Int(i as i64),
                    (BOOL | DOUBLE | ARRAY | KVLIST | BYTES | STRINDEX, _) => last = Scalar::Other,
                    _ => {}
                }
            }
        }
        last
    }

    /// The value of a `KeyValue`, decoded.
    pub(super) fn value(kv: &[u8]) -> AttributeValue {
        kv_value(kv, 0)
    }

    fn kv_value(mut kv: &[u8], depth: u32) -> AttributeValue {
        let mut value = AttributeValue::Empty;
        while let Some((tag, field)) = self::field(&mut kv) {
            if let (VALUE, Field::Len(any)) = (tag, field) {
                merge_any(&mut value, any, depth);
            }
        }
        value
    }

    fn any_value(any: &[u8], depth: u32) -> AttributeValue {
        let mut value = AttributeValue::Empty;
        merge_any(&mut value, any, depth);
        value
    }

    fn merge_any(value: &mut AttributeValue, mut any: &[u8], depth: u32) {
        if depth >= MAX_DEPTH {
            return;
        }
        while let Some((tag, field)) = self::field(&mut any) {
            match (tag, field) {
                (STRING, Field::Len(s)) => *value = AttributeValue::String(utf8(s).to_owned()),
                (BOOL, Field::Varint(b)) => *value = AttributeValue::Bool(b != 0),
                (INT, Field::Varint(i)) => *value = AttributeValue::Int(i as i64),
                (DOUBLE, Field::Fixed64(bits)) => {
                    *value = AttributeValue::Double(f64::from_bits(bits))
                }
                (BYTES, Field::Len(b)) => *value = AttributeValue::Bytes(b.to_vec()),
                (STRINDEX, Field::Varint(_)) => *value = AttributeValue::Empty,
                (ARRAY, Field::Len(mut list)) => {
                    if !matches!(value, AttributeValue::Array(_)) {
                        *value = AttributeValue::Array(Vec::new());
                    }
                    let AttributeValue::Array(items) = value else {
                        continue;
                    };
                    while let Some((tag, field)) = self::field(&mut list) {
                        if let (VALUES, Field::Len(item)) = (tag, field) {
                            items.push(any_value(item, depth + 1));
                        }
                    }
                }
                (KVLIST, Field::Len(mut list)) => {
                    let mut pairs = match std::mem::replace(value, AttributeValue::Empty) {
                        AttributeValue::Map(Attributes(super::Repr::Owned(pairs))) => pairs,
                        _ => Vec::new(),
                    };
                    while let Some((tag, field)) = self::field(&mut list) {
                        if let (VALUES, Field::Len(kv)) = (tag, field) {
                            pairs.push((utf8(key(kv)).to_owned(), kv_value(kv, depth + 1)));
                        }
                    }
                    *value = AttributeValue::Map(Attributes::from_vec(pairs));
                }
                _ => {}
            }
        }
    }
}

/// The service name OpenTelemetry SDKs use when `service.name` is missing.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// A resource (process) shared by every span it emitted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resource {
    /// `service.name`, or [`UNKNOWN_SERVICE`].
    pub service_name: Arc<str>,
    /// All resource attributes, `service.name` included.
    pub attributes: Attributes,
}

impl Resource {
    /// Builds a resource, taking the service name from its attributes.
    pub fn new(attributes: Attributes) -> Self {
        let service_name = attributes
            .first_str(&["service.name"])
            .unwrap_or(UNKNOWN_SERVICE)
            .into();
        Self {
            service_name,
            attributes,
        }
    }
}

/// A timed event on a span (exceptions feed the X-Ray `cause`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    /// Event name, such as `exception`.
    pub name: String,
    /// Event time, Unix nanoseconds.
    pub time_unix_nano: u64,
    /// Event attributes, such as `exception.type`.
    pub attributes: Attributes,
}

/// One span after boundary validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The emitting process, shared across its spans.
    pub resource: Arc<Resource>,
    /// Instrumentation scope name (library that made the span).
    pub scope_name: Arc<str>,
    /// Trace the span belongs to.
    pub trace_id: TraceId,
    /// The span's own id.
    pub span_id: SpanId,
    /// Parent span id; `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    /// Operation name; shares the request buffer when decoded from
    /// protobuf, so it costs no allocation per span.
    pub name: ByteString,
    /// Span kind.
    pub kind: SpanKind,
    /// Status code.
    pub status_code: StatusCode,
    /// Status message (set with `Error`).
    pub status_message: String,
    /// Start, Unix nanoseconds.
    pub start_unix_nano: u64,
    /// End, Unix nanoseconds.
    pub end_unix_nano: u64,
    /// Span attributes.
    pub attributes: Attributes,
    /// Span events.
    pub events: Vec<Event>,
}

impl Span {
    /// Duration in nanoseconds; zero when the end precedes the start.
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }

    /// The emitting service's name.
    pub fn service_name(&self) -> &str {
        &self.resource.service_name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_without_service_name_is_unknown_service() {
        assert_eq!(
            &*Resource::new(Attributes::default()).service_name,
            "unknown_service"
        );
        let named = Resource::new(Attributes::from_vec(vec![(
            "service.name".into(),
            AttributeValue::String("checkout".into()),
        )]));
        assert_eq!(&*named.service_name, "checkout");
    }

    #[test]
    fn kind_and_status_map_numbers_and_names() {
        assert_eq!(SpanKind::from_otlp(2), SpanKind::Server);
        assert_eq!(SpanKind::from_otlp(99), SpanKind::Unspecified);
        assert_eq!(
            SpanKind::from_otlp_name("SPAN_KIND_CONSUMER"),
            Some(SpanKind::Consumer)
        );
        assert_eq!(SpanKind::from_otlp_name("server"), None);
        assert_eq!(StatusCode::from_otlp(2), StatusCode::Error);
        assert_eq!(
            StatusCode::from_otlp_name("STATUS_CODE_OK"),
            Some(StatusCode::Ok)
        );
    }

    #[test]
    fn first_str_skips_missing_and_empty() {
        let attrs = Attributes::from_vec(vec![
            ("peer.service".into(), AttributeValue::String(String::new())),
            (
                "server.address".into(),
                AttributeValue::String("db:5432".into()),
            ),
        ]);
        assert_eq!(
            attrs.first_str(&["peer.service", "server.address"]),
            Some("db:5432")
        );
        assert_eq!(attrs.first_str(&["net.peer.name"]), None);
    }

    #[test]
    fn find_strs_reads_many_keys_in_one_pass_on_both_forms() {
        let owned = Attributes::from_vec(vec![
            ("db.system".into(), AttributeValue::String("redis".into())),
            ("n".into(), AttributeValue::Int(3)),
            ("db.system".into(), AttributeValue::String("ignored".into())),
            (
                "peer.service".into(),
                AttributeValue::String("cache".into()),
            ),
        ]);
        let keys = KeySet::new(["peer.service", "missing", "db.system", "n"]).unwrap();
        let pairs: Vec<_> = owned.iter().map(|(k, v)| (k.to_string(), v)).collect();
        for attrs in [owned, encoded(&pairs)] {
            let mut found = [Some("stale"); 4];
            attrs.find_strs(&keys, &mut found);
            assert_eq!(found, [Some("cache"), None, Some("redis"), None]);
        }
    }

    #[test]
    fn key_set_tells_same_length_and_long_keys_apart() {
        let long_a = "a".repeat(70);
        let long_b = "b".repeat(70);
        let mut keys = KeySet::new(["db.name", "db.user", &long_a]).unwrap();
        assert_eq!(keys.insert("db.name"), Some(0), "repeats keep their index");
        assert_eq!(keys.insert(&long_b), Some(3));
        assert_eq!(keys.len(), 4);
        let attrs = Attributes::from_vec(vec![
            (long_b.clone(), AttributeValue::String("b".into())),
            ("db.user".into(), AttributeValue::String("u".into())),
            ("db.nam".into(), AttributeValue::String("short".into())),
        ]);
        let mut found = [None; 4];
        attrs.find_strs(&keys, &mut found);
        assert_eq!(found, [None, Some("u"), None, Some("b")]);

        let many: Vec<String> = (0..=KeySet::MAX_KEYS).map(|i| format!("k{i}")).collect();
        assert!(KeySet::new(&many[..KeySet::MAX_KEYS]).is_some());
        assert!(KeySet::new(&many).is_none(), "one key too many");
    }

    fn pairs() -> Vec<(String, AttributeValue)> {
        let text = |s: &str| AttributeValue::String(s.into());
        vec![
            ("peer.service".into(), text("")),
            ("http.response.status_code".into(), AttributeValue::Int(503)),
            ("server.port".into(), text("8080")),
            ("server.address".into(), AttributeValue::Bool(true)),
            ("server.address".into(), text("shadowed")),
            ("net.peer.name".into(), text("db")),
            ("db.system".into(), text("postgresql")),
            ("ratio".into(), AttributeValue::Double(0.25)),
            (
                "nested".into(),
                AttributeValue::Map(Attributes::from_vec(vec![(
                    "k".into(),
                    AttributeValue::Array(vec![text("a"), AttributeValue::Empty]),
                )])),
            ),
        ]
    }

    /// The same pairs as OTLP `KeyValue`s under Span field 9, with a span
    /// name field in between as an encoder may interleave one.
    fn encoded(pairs: &[(String, AttributeValue)]) -> Attributes {
        use opentelemetry_proto::tonic::common::v1::{
            AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value,
        };
        fn any(value: &AttributeValue) -> AnyValue {
            let value = match value {
                AttributeValue::String(s) => Some(Value::StringValue(s.clone())),
                AttributeValue::Bool(b) => Some(Value::BoolValue(*b)),
                AttributeValue::Int(i) => Some(Value::IntValue(*i)),
                AttributeValue::Double(d) => Some(Value::DoubleValue(*d)),
                AttributeValue::Bytes(b) => Some(Value::BytesValue(b.clone())),
                AttributeValue::Array(items) => Some(Value::ArrayValue(ArrayValue {
                    values: items.iter().map(any).collect(),
                })),
                AttributeValue::Map(map) => Some(Value::KvlistValue(KeyValueList {
                    values: map.iter().map(|(k, v)| key_value(k, &v)).collect(),
                })),
                AttributeValue::Empty => None,
            };
            AnyValue { value }
        }
        fn key_value(key: &str, value: &AttributeValue) -> KeyValue {
            KeyValue {
                key: key.into(),
                value: Some(any(value)),
                ..Default::default()
            }
        }
        let mut buf = Vec::new();
        for (i, (key, value)) in pairs.iter().enumerate() {
            prost::encoding::message::encode(9, &key_value(key, value), &mut buf);
            if i == 1 {
                prost::encoding::string::encode(5, &"name".to_owned(), &mut buf);
            }
        }
        Attributes::from_encoded(buf.into(), 9, pairs.len())
    }

    #[test]
    fn iter_ref_reads_every_layout_as_owned_attributes_do() {
        let long = "x".repeat(200);
        let mut pairs = pairs();
        pairs.extend([
            (
                "café.name".to_owned(),
                AttributeValue::String("naïve 名前".into()),
            ),
            ("long".to_owned(), AttributeValue::String(long.clone())),
            ("empty".to_owned(), AttributeValue::String(String::new())),
        ]);
        let owned = Attributes::from_vec(pairs.clone());
        let encoded = encoded(&pairs);
        let read = |attrs: &Attributes| -> Vec<(String, ValueRef<'static>)> {
            attrs
                .iter_ref()
                .map(|(key, value)| {
                    let value = match value {
                        ValueRef::Str(s) => ValueRef::Decoded(AttributeValue::String(s.into())),
                        ValueRef::Int(i) => ValueRef::Decoded(AttributeValue::Int(i)),
                        ValueRef::Decoded(v) => ValueRef::Decoded(v),
                    };
                    (key.to_owned(), value)
                })
                .collect()
        };
        assert_eq!(read(&encoded), read(&owned));
        assert_eq!(read(&encoded).len(), 12);

        // Value before key, and a repeated key (the last wins), as a
        // hand-written encoder may lay them out.
        let kv = [
            &[0x12, 0x05, 0x0a, 0x03][..],
            b"val",
            &[0x0a, 0x01, b'a', 0x0a, 0x01, b'k'],
        ]
        .concat();
        let mut message = vec![0x4a, u8::try_from(kv.len()).unwrap()];
        message.extend_from_slice(&kv);
        let odd = Attributes::from_encoded(message.into(), 9, 1);
        let got: Vec<_> = odd.iter_ref().collect();
        assert_eq!(got, [("k", ValueRef::Str("val"))]);
    }

    #[test]
    fn encoded_and_owned_answer_alike() {
        let owned = Attributes::from_vec(pairs());
        let encoded = encoded(&pairs());
        assert_eq!(owned, encoded);
        assert_eq!(format!("{owned:?}"), format!("{encoded:?}"));
        assert_ne!(owned, Attributes::from_vec(pairs()[1..].to_vec()));
        for attrs in [&owned, &encoded] {
            assert_eq!(attrs.len(), 9);
            assert_eq!(attrs.get_str("db.system"), Some("postgresql"));
            assert_eq!(attrs.get_str("http.response.status_code"), None);
            assert_eq!(attrs.get_i64("http.response.status_code"), Some(503));
            assert_eq!(attrs.get_i64("server.port"), Some(8080));
            assert_eq!(attrs.get_i64("db.system"), None);
            assert_eq!(attrs.get("ratio"), Some(AttributeValue::Double(0.25)));
            // The first of duplicated keys wins, even when it is no string.
            assert_eq!(attrs.get_str("server.address"), None);
            assert_eq!(
                attrs.first_str(&["peer.service", "server.address", "net.peer.name"]),
                Some("db")
            );
            assert_eq!(
                attrs.first_str(&["db.system", "net.peer.name"]),
                Some("postgresql")
            );
            assert_eq!(attrs.first_str(&["peer.service", "absent"]), None);
            let Some(AttributeValue::Map(nested)) = attrs.get("nested") else {
                panic!("map expected");
            };
            assert_eq!(
                nested.get("k"),
                Some(AttributeValue::Array(vec![
                    AttributeValue::String("a".into()),
                    AttributeValue::Empty
                ]))
            );
            let keys: Vec<&str> = attrs.iter().map(|(key, _)| key).collect();
            assert_eq!(
                keys[..3],
                ["peer.service", "http.response.status_code", "server.port"]
            );
        }
        // More keys than the one-pass bookkeeping holds: same answer.
        let mut many: Vec<String> = (0..70).map(|i| format!("k{i}")).collect();
        many.push("net.peer.name".into());
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(owned.first_str(&many), Some("db"));
        assert_eq!(encoded.first_str(&many), Some("db"));
        assert!(Attributes::default().is_empty());
        assert_eq!(
            Attributes::default(),
            Attributes::from_encoded(Bytes::new(), 9, 0)
        );
    }
}
