//! The JSON writer: a small serde `Serializer` for the document tree,
//! writing plain JSON or JSON escaped once more for the request body.
//!
//! Why not serde_json: the exporter sends the escaped form, which serde_json
//! can only make in two passes (the document, then that text as a string).
//! `cargo bench --bench xray` (`xray_writer`, the bench's 512 documents as
//! `serde_json::Value`s, 2 shared cores): escaped, this writer 458 µs
//! against serde_json's 867 µs; plain, 449 µs against 377 µs (on `Value`s
//! its float formatting and key escaping count, not its raw field names and
//! integer times). Translating all 512 takes 738 µs, so the one-pass escaped
//! form is what keeps it.

use std::fmt;
use std::ops::Range;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// How [`JsonWriter`] writes: plain JSON, or JSON escaped once more to be
/// the contents of a JSON string.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Output {
    Plain,
    Escaped,
}

impl Output {
    /// A quote: `"`, or `\"` escaped. Pushed byte by byte: a one- or
    /// two-byte `extend_from_slice` is a `memmove` call, and every string
    /// and field name takes two.
    #[inline]
    pub(super) fn push_quote(self, out: &mut Vec<u8>) {
        if self == Self::Escaped {
            out.push(b'\\');
        }
        out.push(b'"');
    }
}

/// Serialises `value` as JSON into `out`.
///
/// A small serde `Serializer` rather than serde_json's, which escapes
/// strings a byte at a time, field names included: that was a third of a
/// translation. This one escapes eight bytes at a time, writes our own
/// field names as they are, and times from integers. It writes what the
/// document tree needs: no enums with data, byte strings only as plain
/// ASCII (ids).
pub(super) fn write_json<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), JsonError> {
    write_json_as(out, value, Output::Plain)
}

pub(super) fn write_json_as<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
    output: Output,
) -> Result<(), JsonError> {
    value.serialize(&mut JsonWriter {
        out,
        micros: false,
        output,
    })
}

/// `value` as the segment writer writes it, plain or `escaped` for the
/// request body; false if it cannot. For the comparison with serde_json in
/// `benches/xray.rs` only.
#[doc(hidden)]
pub fn write_for_bench<T: Serialize + ?Sized>(value: &T, escaped: bool, out: &mut Vec<u8>) -> bool {
    let output = if escaped {
        Output::Escaped
    } else {
        Output::Plain
    };
    write_json_as(out, value, output).is_ok()
}

pub(super) fn json_string<T: Serialize + ?Sized>(value: &T) -> Result<String, JsonError> {
    let mut out = Vec::new();
    write_json(&mut out, value)?;
    String::from_utf8(out).map_err(|_| unsupported("invalid UTF-8"))
}

/// Newtype name under which [`Micros`] reaches [`JsonWriter`].
pub(super) const MICROS: &str = "$tracemap::xray::micros";

/// Epoch microseconds, written as seconds with a fraction: exact, and
/// cheaper than formatting a float.
#[derive(Clone, Copy)]
pub(super) struct Micros(pub(super) u64);

impl Serialize for Micros {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct(MICROS, &self.0)
    }
}

#[derive(Debug)]
pub(super) struct JsonError(pub(super) String);

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JsonError {}

impl serde::ser::Error for JsonError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self(message.to_string())
    }
}

pub(super) fn unsupported(what: &str) -> JsonError {
    JsonError(format!("{what} is not written by the segment writer"))
}

pub(super) struct JsonWriter<'o> {
    pub(super) out: &'o mut Vec<u8>,
    /// The next u64 is a [`Micros`].
    pub(super) micros: bool,
    pub(super) output: Output,
}

pub(super) const ONES: u64 = 0x0101_0101_0101_0101;
pub(super) const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether a byte of the word is zero. Exact, as is the "below n" test
/// (for n <= 128) built the same way in `escape_into`.
pub(super) fn has_zero(word: u64) -> bool {
    word.wrapping_sub(ONES) & !word & HIGH != 0
}

/// Appends `text` as a JSON string body, escaping as serde_json does (and
/// each escape sequence escaped again for [`Output::Escaped`]; the bytes
/// between escapes need nothing more).
pub(super) fn escape_into(out: &mut Vec<u8>, text: &str, output: Output) {
    fn needs_escape(word: [u8; 8]) -> bool {
        let word = u64::from_le_bytes(word);
        word.wrapping_sub(ONES * 0x20) & !word & HIGH != 0
            || has_zero(word ^ (ONES * u64::from(b'"')))
            || has_zero(word ^ (ONES * u64::from(b'\\')))
    }
    /// Copies the clean run before each byte to escape in `range`, then the
    /// escape.
    fn escape_range(
        out: &mut Vec<u8>,
        bytes: &[u8],
        clean: &mut usize,
        range: Range<usize>,
        output: Output,
    ) {
        for at in range {
            let byte = bytes[at];
            if byte >= 0x20 && byte != b'"' && byte != b'\\' {
                continue;
            }
            out.extend_from_slice(&bytes[*clean..at]);
            *clean = at + 1;
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let unicode;
            let sequence: &[u8] = match byte {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                _ => {
                    unicode = [
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(byte >> 4)],
                        HEX[usize::from(byte & 0xf)],
                    ];
                    &unicode
                }
            };
            match output {
                Output::Plain => out.extend_from_slice(sequence),
                Output::Escaped => {
                    for &b in sequence {
                        if b == b'\\' || b == b'"' {
                            out.push(b'\\');
                        }
                        out.push(b);
                    }
                }
            }
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() < 8 {
        // One word, padded with a byte that needs no escape: short strings
        // (methods, versions, names) are most of the calls.
        let mut word = [b'a'; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        if !needs_escape(word) {
            out.extend_from_slice(bytes);
            return;
        }
    }
    let mut clean = 0;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        if needs_escape(chunk.try_into().unwrap_or_default()) {
            escape_range(out, bytes, &mut clean, at..at + 8, output);
        }
        at += 8;
    }
    if at < bytes.len() {
        // The last eight bytes, overlapping the last chunk; short strings
        // byte by byte.
        let tail = match bytes.len().checked_sub(8) {
            Some(from) => needs_escape(bytes[from..].try_into().unwrap_or_default()),
            None => true,
        };
        if tail {
            escape_range(out, bytes, &mut clean, at..bytes.len(), output);
        }
    }
    out.extend_from_slice(&bytes[clean..]);
}

pub(super) fn push_ascii(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
}

/// Decimal digits, without going through `fmt`.
pub(super) fn push_digits(out: &mut Vec<u8>, value: u64) {
    push_ascii(out, itoa::Buffer::new().format(value).as_bytes());
}

/// Microseconds as seconds: `1700000000.25`, at least one decimal.
pub(super) fn push_seconds(out: &mut Vec<u8>, micros: u64) {
    push_digits(out, micros / 1_000_000);
    out.push(b'.');
    let mut buffer = itoa::Buffer::new();
    // "1dddddd": the six decimals after the leading 1, less trailing zeros.
    let fraction = &buffer.format(1_000_000 + micros % 1_000_000).as_bytes()[1..];
    let end = fraction
        .iter()
        .rposition(|&d| d != b'0')
        .map_or(1, |i| i + 1);
    push_ascii(out, &fraction[..end]);
}

/// A `fmt::Write` that escapes, for `collect_str`.
pub(super) struct Escaping<'o>(pub(super) &'o mut Vec<u8>, pub(super) Output);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape_into(self.0, text, self.1);
        Ok(())
    }
}

impl<'a, 'o> Serializer for &'a mut JsonWriter<'o> {
    type Ok = ();
    type Error = JsonError;
    type SerializeSeq = Compound<'a, 'o>;
    type SerializeTuple = Compound<'a, 'o>;
    type SerializeTupleStruct = Compound<'a, 'o>;
    type SerializeTupleVariant = serde::ser::Impossible<(), JsonError>;
    type SerializeMap = Compound<'a, 'o>;
    type SerializeStruct = Compound<'a, 'o>;
    type SerializeStructVariant = serde::ser::Impossible<(), JsonError>;

    fn serialize_bool(self, v: bool) -> Result<(), JsonError> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), JsonError> {
        self.serialize_i64(v.into())
    }

    fn serialize_i16(self, v: i16) -> Result<(), JsonError> {
        self.serialize_i64(v.into())
    }

    fn serialize_i32(self, v: i32) -> Result<(), JsonError> {
        self.serialize_i64(v.into())
    }

    fn serialize_i64(self, v: i64) -> Result<(), JsonError> {
        if v < 0 {
            self.out.push(b'-');
        }
        push_digits(self.out, v.unsigned_abs());
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), JsonError> {
        self.serialize_u64(v.into())
    }

    fn serialize_u16(self, v: u16) -> Result<(), JsonError> {
        self.serialize_u64(v.into())
    }

    fn serialize_u32(self, v: u32) -> Result<(), JsonError> {
        self.serialize_u64(v.into())
    }

    fn serialize_u64(self, v: u64) -> Result<(), JsonError> {
        if std::mem::take(&mut self.micros) {
            push_seconds(self.out, v);
        } else {
            push_digits(self.out, v);
        }
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), JsonError> {
        self.serialize_f64(v.into())
    }

    /// Shortest round-trip digits; `Debug` keeps `.0` on whole numbers and
    /// switches to exponents, both valid JSON. JSON has no NaN or infinity:
    /// null, as serde_json writes them.
    fn serialize_f64(self, v: f64) -> Result<(), JsonError> {
        use std::io::Write as _;
        if v.is_finite() {
            write!(self.out, "{v:?}").map_err(|_| unsupported("a float"))
        } else {
            self.serialize_unit()
        }
    }

    fn serialize_char(self, v: char) -> Result<(), JsonError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<(), JsonError> {
        self.output.push_quote(self.out);
        escape_into(self.out, v, self.output);
        self.output.push_quote(self.out);
        Ok(())
    }

    /// Plain ASCII bytes (ids) as a string.
    fn serialize_bytes(self, v: &[u8]) -> Result<(), JsonError> {
        let plain = v.iter().fold(true, |plain, &b| {
            plain & b.is_ascii_graphic() & (b != b'"') & (b != b'\\')
        });
        if !plain {
            return Err(unsupported("a byte string other than plain ASCII"));
        }
        self.output.push_quote(self.out);
        push_ascii(self.out, v);
        self.output.push_quote(self.out);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), JsonError> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), JsonError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), JsonError> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), JsonError> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), JsonError> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        self.micros = name == MICROS;
        let written = value.serialize(&mut *self);
        self.micros = false;
        written
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), JsonError> {
        Err(unsupported("an enum with data"))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a, 'o>, JsonError> {
        self.out.push(b'[');
        Ok(Compound {
            writer: self,
            first: true,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'a, 'o>, JsonError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Compound<'a, 'o>, JsonError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, JsonError> {
        Err(unsupported("an enum with data"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a, 'o>, JsonError> {
        self.out.push(b'{');
        Ok(Compound {
            writer: self,
            first: true,
        })
    }

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Compound<'a, 'o>, JsonError> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, JsonError> {
        Err(unsupported("an enum with data"))
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<(), JsonError> {
        use fmt::Write as _;
        self.output.push_quote(self.out);
        write!(Escaping(self.out, self.output), "{value}").map_err(|_| unsupported("this text"))?;
        self.output.push_quote(self.out);
        Ok(())
    }
}

pub(super) struct Compound<'a, 'o> {
    pub(super) writer: &'a mut JsonWriter<'o>,
    pub(super) first: bool,
}

impl Compound<'_, '_> {
    pub(super) fn separate(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.writer.out.push(b',');
        }
    }
}

impl serde::ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = JsonError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        self.separate();
        value.serialize(&mut *self.writer)
    }

    fn end(self) -> Result<(), JsonError> {
        self.writer.out.push(b']');
        Ok(())
    }
}

impl serde::ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = JsonError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        serde::ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<(), JsonError> {
        serde::ser::SerializeSeq::end(self)
    }
}

impl serde::ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = JsonError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        serde::ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<(), JsonError> {
        serde::ser::SerializeSeq::end(self)
    }
}

impl SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = JsonError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), JsonError> {
        self.separate();
        key.serialize(KeyWriter(&mut *self.writer))?;
        self.writer.out.push(b':');
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        value.serialize(&mut *self.writer)
    }

    fn end(self) -> Result<(), JsonError> {
        self.writer.out.push(b'}');
        Ok(())
    }
}

impl serde::ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = JsonError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        // Our own field names: nothing to escape.
        debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        self.separate();
        let output = self.writer.output;
        output.push_quote(self.writer.out);
        self.writer.out.extend_from_slice(key.as_bytes());
        output.push_quote(self.writer.out);
        self.writer.out.push(b':');
        value.serialize(&mut *self.writer)
    }

    fn end(self) -> Result<(), JsonError> {
        self.writer.out.push(b'}');
        Ok(())
    }
}

/// Map keys: strings only, as JSON wants.
pub(super) struct KeyWriter<'a, 'o>(pub(super) &'a mut JsonWriter<'o>);

impl<'a, 'o> Serializer for KeyWriter<'a, 'o> {
    type Ok = ();
    type Error = JsonError;
    type SerializeSeq = serde::ser::Impossible<(), JsonError>;
    type SerializeTuple = serde::ser::Impossible<(), JsonError>;
    type SerializeTupleStruct = serde::ser::Impossible<(), JsonError>;
    type SerializeTupleVariant = serde::ser::Impossible<(), JsonError>;
    type SerializeMap = serde::ser::Impossible<(), JsonError>;
    type SerializeStruct = serde::ser::Impossible<(), JsonError>;
    type SerializeStructVariant = serde::ser::Impossible<(), JsonError>;

    fn serialize_str(self, v: &str) -> Result<(), JsonError> {
        self.0.serialize_str(v)
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<(), JsonError> {
        self.0.collect_str(value)
    }

    fn serialize_bool(self, _: bool) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_i8(self, _: i8) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_i16(self, _: i16) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_i32(self, _: i32) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_i64(self, _: i64) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_u8(self, _: u8) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_u16(self, _: u16) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_u32(self, _: u32) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_u64(self, _: u64) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_f32(self, _: f32) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_f64(self, _: f64) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_char(self, v: char) -> Result<(), JsonError> {
        self.0.serialize_char(v)
    }

    fn serialize_bytes(self, _: &[u8]) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_none(self) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), JsonError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), JsonError> {
        self.0.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, JsonError> {
        Err(unsupported("a non-string key"))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, JsonError> {
        Err(unsupported("a non-string key"))
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
