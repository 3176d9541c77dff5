//! Span, resource and event attributes: owned pairs, or `KeyValue`
//! entries left in the request's protobuf bytes and read in place.

use std::fmt;

use bytes::Bytes;

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

    /// The same attributes with wire bytes copied by `copy`, so they no
    /// longer keep the request buffer they were decoded from alive.
    pub(crate) fn detached(&self, copy: &mut impl FnMut(&[u8]) -> Bytes) -> Self {
        match &self.0 {
            Repr::Owned(pairs) => Self(Repr::Owned(pairs.clone())),
            Repr::Encoded(encoded) => Self(Repr::Encoded(Encoded {
                bytes: copy(&encoded.bytes),
                field: encoded.field,
                len: encoded.len,
            })),
        }
    }

    /// About the heap bytes these attributes hold (wire bytes, or keys and
    /// values), for memory budgets.
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Owned(pairs) => pairs
                .iter()
                .map(|(k, v)| k.len() + std::mem::size_of_val(v) + v.as_str().map_or(0, str::len))
                .sum(),
            Repr::Encoded(encoded) => encoded.bytes.len(),
        }
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
    use super::{AttributeValue, Attributes, Scalar};
    pub(super) use crate::otlp::read::Repeated as Entries;
    use crate::otlp::read::{self, Field, RECURSION_LIMIT};
    use crate::otlp::tag::{
        ANY_ARRAY as ARRAY, ANY_BOOL as BOOL, ANY_BYTES as BYTES, ANY_DOUBLE as DOUBLE,
        ANY_INT as INT, ANY_KVLIST as KVLIST, ANY_STRINDEX as STRINDEX, ANY_STRING as STRING,
        KEY_VALUE_KEY as KEY, KEY_VALUE_VALUE as VALUE, LIST_VALUES as VALUES, WireType, key_byte,
    };

    /// prost's recursion limit; the decoder enforces it, this only guards.
    const MAX_DEPTH: u32 = RECURSION_LIMIT;

    /// The key and value of a `KeyValue` laid out as SDKs write it: the
    /// key, then one value, each once, lengths under 128.
    #[inline(always)]
    fn plain(kv: &[u8]) -> Option<(&[u8], &[u8])> {
        const KEY_BYTE: u8 = key_byte(KEY, WireType::LengthDelimited);
        const VALUE_BYTE: u8 = key_byte(VALUE, WireType::LengthDelimited);
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
        while let Some((tag, field)) = read::field(&mut kv) {
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
        const STRING_BYTE: u8 = key_byte(STRING, WireType::LengthDelimited);
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
        const STRING_BYTE: u8 = key_byte(STRING, WireType::LengthDelimited);
        if let Some((_, [STRING_BYTE, len @ 0..0x80, text @ ..])) = plain(kv)
            && text.len() == usize::from(*len)
        {
            return Scalar::Str(utf8(text));
        }
        let mut last = Scalar::Other;
        while let Some((tag, field)) = read::field(&mut kv) {
            let (VALUE, Field::Len(mut any)) = (tag, field) else {
                continue;
            };
            while let Some((tag, field)) = read::field(&mut any) {
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
        while let Some((tag, field)) = read::field(&mut kv) {
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
        while let Some((tag, field)) = read::field(&mut any) {
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
                    while let Some((tag, field)) = read::field(&mut list) {
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
                    while let Some((tag, field)) = read::field(&mut list) {
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

#[cfg(test)]
mod tests;
