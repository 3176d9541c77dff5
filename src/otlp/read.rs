//! The zero-copy protobuf reader: keys, varints, fixed fields,
//! length-delimited fields and skipping unknown fields, over borrowed bytes.
//!
//! [`Reader`] is strict, for the receiver: it checks wire types, lengths,
//! varints, UTF-8 and prost's nesting limit, and reports what is wrong.
//! [`field`] and [`Repeated`] are quiet, for bytes the receiver already
//! checked (attributes kept in wire form): malformed input ends the walk.

use prost::encoding::{decode_key, decode_varint};

use super::tag::WireType;

/// Why bytes are not the protobuf message they should be.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A malformed varint or field key.
    #[error(transparent)]
    Wire(#[from] prost::DecodeError),
    /// A field runs past the end of the message that holds it.
    #[error("{0} runs past the end of its message")]
    Truncated(&'static str),
    /// A known field came with a wire type its type cannot have.
    #[error("{field} has wire type {actual:?}, expected {expected:?}")]
    WireType {
        /// `Message.field`.
        field: &'static str,
        /// The wire type of the field's type.
        expected: WireType,
        /// The wire type on the wire.
        actual: WireType,
    },
    /// A string field is not UTF-8, as proto3 requires.
    #[error("{0} is not valid utf-8")]
    Utf8(&'static str),
    /// Messages or groups nest deeper than prost's recursion limit.
    #[error("messages nest deeper than {RECURSION_LIMIT} levels")]
    RecursionLimit,
    /// An end-group tag without its start, or for another field.
    #[error("unmatched end-group tag")]
    EndGroup,
}

/// prost's nesting limit, kept so both decoders accept the same requests.
pub const RECURSION_LIMIT: u32 = 100;

type Result<T, E = ReadError> = std::result::Result<T, E>;

/// Reads one message: `rest` is what is left of it and `end` the offset in
/// the outermost buffer where it ends, so that callers can slice fields
/// out of that buffer (a `Bytes`) without copying.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    rest: &'a [u8],
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader of the whole of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            end: bytes.len(),
        }
    }

    /// The unread bytes.
    #[inline(always)]
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Offset of the next unread byte in the outermost buffer.
    #[inline(always)]
    pub fn pos(&self) -> usize {
        self.end - self.rest.len()
    }

    /// The next field's key and the offset it starts at; `None` at the end.
    #[inline(always)]
    pub fn next_key(&mut self) -> Result<Option<(usize, u32, WireType)>> {
        let Some(&byte) = self.rest.first() else {
            return Ok(None);
        };
        let start = self.pos();
        // One-byte keys (fields 1 to 15) are nearly all keys; prost reads
        // the others and reports every malformed one.
        if let (8..0x80, Some(wire_type)) = (byte, wire_type(byte & 7)) {
            self.rest = &self.rest[1..];
            return Ok(Some((start, u32::from(byte >> 3), wire_type)));
        }
        let (tag, wire_type) = decode_key(&mut self.rest)?;
        Ok(Some((start, tag, wire_type)))
    }

    #[inline(always)]
    fn read_varint(&mut self) -> Result<u64> {
        if let Some(&byte @ 0..0x80) = self.rest.first() {
            self.rest = &self.rest[1..];
            return Ok(u64::from(byte));
        }
        Ok(decode_varint(&mut self.rest)?)
    }

    /// A varint field (integers, bools, enums).
    #[inline]
    pub fn varint(&mut self, field: &'static str, wire_type: WireType) -> Result<u64> {
        expect(field, WireType::Varint, wire_type)?;
        self.read_varint()
    }

    /// A `fixed64` field.
    #[inline]
    pub fn fixed64(&mut self, field: &'static str, wire_type: WireType) -> Result<u64> {
        expect(field, WireType::SixtyFourBit, wire_type)?;
        let (bytes, rest) = self
            .rest
            .split_first_chunk::<8>()
            .ok_or(ReadError::Truncated(field))?;
        self.rest = rest;
        Ok(u64::from_le_bytes(*bytes))
    }

    /// A `bytes` field, borrowed.
    #[inline(always)]
    pub fn len_delimited(&mut self, field: &'static str, wire_type: WireType) -> Result<&'a [u8]> {
        Ok(self.nested(field, wire_type)?.rest)
    }

    /// A `string` field, borrowed and checked.
    #[inline]
    pub fn string(&mut self, field: &'static str, wire_type: WireType) -> Result<&'a str> {
        let bytes = self.len_delimited(field, wire_type)?;
        std::str::from_utf8(bytes).map_err(|_| ReadError::Utf8(field))
    }

    /// Checks a string field that is not kept; short ASCII, the usual
    /// attribute key or value, is cheaper to check than to convert.
    #[inline(always)]
    pub fn check_string(&mut self, field: &'static str, wire_type: WireType) -> Result<()> {
        let bytes = self.len_delimited(field, wire_type)?;
        if is_ascii(bytes) || std::str::from_utf8(bytes).is_ok() {
            Ok(())
        } else {
            Err(ReadError::Utf8(field))
        }
    }

    /// A nested message, which costs one level of the recursion budget: the
    /// caller reads its fields with `ctx - 1`.
    #[inline(always)]
    pub fn message(&mut self, field: &'static str, wire_type: WireType, ctx: u32) -> Result<Self> {
        let nested = self.nested(field, wire_type)?;
        if ctx == 0 {
            return Err(ReadError::RecursionLimit);
        }
        Ok(nested)
    }

    /// A length-delimited field as a reader of its payload, with no
    /// recursion check (for skims that do not descend further).
    #[inline(always)]
    pub fn nested(&mut self, field: &'static str, wire_type: WireType) -> Result<Self> {
        expect(field, WireType::LengthDelimited, wire_type)?;
        let len = self.read_varint()?;
        let Some((payload, rest)) = usize::try_from(len)
            .ok()
            .and_then(|len| self.rest.split_at_checked(len))
        else {
            return Err(ReadError::Truncated(field));
        };
        let nested = Self {
            rest: payload,
            end: self.pos() + payload.len(),
        };
        self.rest = rest;
        Ok(nested)
    }

    /// Skips a field the caller does not read, with prost's rules.
    pub fn skip(&mut self, tag: u32, wire_type: WireType, ctx: u32) -> Result<()> {
        if ctx == 0 {
            return Err(ReadError::RecursionLimit);
        }
        let len = match wire_type {
            WireType::Varint => {
                self.read_varint()?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => self.read_varint()?,
            WireType::StartGroup => loop {
                let Some((_, inner, inner_wire_type)) = self.next_key()? else {
                    return Err(ReadError::Truncated("group"));
                };
                if inner_wire_type == WireType::EndGroup {
                    if inner != tag {
                        return Err(ReadError::EndGroup);
                    }
                    break 0;
                }
                self.skip(inner, inner_wire_type, ctx - 1)?;
            },
            WireType::EndGroup => return Err(ReadError::EndGroup),
        };
        self.rest = usize::try_from(len)
            .ok()
            .and_then(|len| self.rest.get(len..))
            .ok_or(ReadError::Truncated("unknown field"))?;
        Ok(())
    }
}

/// The wire type of a key's low three bits; 6 and 7 are none.
#[inline(always)]
fn wire_type(bits: u8) -> Option<WireType> {
    Some(match bits {
        0 => WireType::Varint,
        1 => WireType::SixtyFourBit,
        2 => WireType::LengthDelimited,
        3 => WireType::StartGroup,
        4 => WireType::EndGroup,
        5 => WireType::ThirtyTwoBit,
        _ => return None,
    })
}

#[inline(always)]
fn expect(field: &'static str, expected: WireType, actual: WireType) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(ReadError::WireType {
            field,
            expected,
            actual,
        })
    }
}

/// Whether every byte is ASCII, eight at a time. Keys and values are
/// mostly 5–60 bytes, where the standard library's check spends more on
/// aligning than on testing (7 % of decode time in a profile).
#[inline(always)]
pub fn is_ascii(bytes: &[u8]) -> bool {
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let word = |chunk: &[u8]| u64::from_ne_bytes(chunk.try_into().unwrap_or_default());
    if bytes.len() < 8 {
        return bytes.iter().fold(0, |acc, &b| acc | b) < 0x80;
    }
    let chunks = bytes.chunks_exact(8);
    // The last eight bytes, overlapping the chunks, cover the remainder.
    let last = word(&bytes[bytes.len() - 8..]);
    chunks.fold(last, |acc, chunk| acc | word(chunk)) & HIGH_BITS == 0
}

/// One field's payload, as the quiet reader sees it.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// A varint.
    Varint(u64),
    /// A `fixed64` or `double`.
    Fixed64(u64),
    /// A length-delimited payload.
    Len(&'a [u8]),
    /// A `fixed32` or a group, skipped.
    Skipped,
}

/// A varint; one byte is the common case worth inlining.
#[inline(always)]
pub fn varint(buf: &mut &[u8]) -> Option<u64> {
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
pub fn field<'a>(buf: &mut &'a [u8]) -> Option<(u32, Field<'a>)> {
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
    if depth >= RECURSION_LIMIT {
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

/// The payloads of the length-delimited fields numbered `field` in a
/// message, in order; other fields are skipped.
#[derive(Debug, Clone)]
pub struct Repeated<'a> {
    buf: &'a [u8],
    field: u32,
    /// The one-byte key of `field`, which nearly every entry starts with.
    key_byte: Option<u8>,
}

impl<'a> Repeated<'a> {
    /// The fields numbered `field` in `buf`.
    pub fn new(buf: &'a [u8], field: u32) -> Self {
        let key_byte = u8::try_from(field << 3 | WireType::LengthDelimited as u32)
            .ok()
            .filter(|&b| b < 0x80);
        Self {
            buf,
            field,
            key_byte,
        }
    }
}

impl<'a> Iterator for Repeated<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if let [key, len @ 0..0x80, rest @ ..] = self.buf
            && Some(*key) == self.key_byte
            && let Some((payload, rest)) = rest.split_at_checked(usize::from(*len))
        {
            self.buf = rest;
            return Some(payload);
        }
        while let Some((tag, field)) = self::field(&mut self.buf) {
            if let (true, Field::Len(payload)) = (tag == self.field, field) {
                return Some(payload);
            }
        }
        self.buf = &[];
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::write;

    #[test]
    fn ascii_check_sees_a_high_byte_anywhere() {
        for len in 0..40 {
            let clean = vec![b'a'; len];
            assert!(is_ascii(&clean), "len {len}");
            for at in 0..len {
                let mut dirty = clean.clone();
                dirty[at] = 0xc3;
                assert!(!is_ascii(&dirty), "len {len}, high byte at {at}");
            }
        }
    }

    #[test]
    fn reads_back_what_the_writer_wrote() {
        let mut out = Vec::new();
        write::varint_field(&mut out, 1, 300);
        write::fixed64(&mut out, 2, u64::MAX);
        write::string(&mut out, 3, "héllo");
        write::message(&mut out, 200, |inner| write::varint_field(inner, 1, 7));
        let mut reader = Reader::new(&out);
        let (_, tag, wt) = reader.next_key().unwrap().unwrap();
        assert_eq!((tag, reader.varint("a", wt).unwrap()), (1, 300));
        let (_, tag, wt) = reader.next_key().unwrap().unwrap();
        assert_eq!((tag, reader.fixed64("b", wt).unwrap()), (2, u64::MAX));
        let (_, tag, wt) = reader.next_key().unwrap().unwrap();
        assert_eq!((tag, reader.string("c", wt).unwrap()), (3, "héllo"));
        let (_, tag, wt) = reader.next_key().unwrap().unwrap();
        assert_eq!(tag, 200);
        let mut inner = reader.message("d", wt, 1).unwrap();
        assert!(matches!(
            inner.next_key(),
            Ok(Some((_, 1, WireType::Varint)))
        ));
        assert!(reader.next_key().unwrap().is_none());
        let payloads: Vec<&[u8]> = Repeated::new(&out, 3).collect();
        assert_eq!(payloads, [&b"h\xc3\xa9llo"[..]]);
    }
}
