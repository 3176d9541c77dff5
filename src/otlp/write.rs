//! The protobuf writer: varints, keys, scalar fields and length-delimited
//! fields, onto any [`BufMut`], plus the sizes of each so that a caller can
//! write a nested message's length before its fields.
//!
//! Scalar and string helpers omit proto3 defaults, as prost does, so that
//! output is canonical.

use bytes::BufMut;

use super::tag::WireType;

/// Bytes a varint of `value` takes.
#[inline(always)]
pub const fn varint_len(value: u64) -> usize {
    // Seven payload bits a byte; `| 1` makes zero one byte.
    (70 - (value | 1).leading_zeros() as usize) / 7
}

/// Bytes the key of `field` takes.
#[inline(always)]
pub const fn key_size(field: u32) -> usize {
    varint_len((field as u64) << 3)
}

/// Bytes of a length-delimited field holding `len` bytes.
#[inline(always)]
pub const fn field_len(field: u32, len: usize) -> usize {
    key_size(field) + varint_len(len as u64) + len
}

/// Bytes [`string`] writes: none for an empty string.
#[inline]
pub const fn string_len(field: u32, text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        field_len(field, text.len())
    }
}

/// Bytes [`varint_field`] writes: none for zero.
#[inline]
pub const fn varint_field_len(field: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_size(field) + varint_len(value)
    }
}

/// Bytes [`fixed64`] writes: none for zero.
#[inline]
pub const fn fixed64_len(field: u32, value: u64) -> usize {
    if value == 0 { 0 } else { key_size(field) + 8 }
}

/// A varint; most are one byte (keys, small lengths).
#[inline(always)]
pub fn varint(out: &mut impl BufMut, mut value: u64) {
    if value < 0x80 {
        out.put_u8(value as u8);
        return;
    }
    let mut bytes = [0u8; 10];
    let mut n = 0;
    while value >= 0x80 {
        bytes[n] = value as u8 | 0x80;
        value >>= 7;
        n += 1;
    }
    bytes[n] = value as u8;
    out.put_slice(&bytes[..=n]);
}

/// A field's key.
#[inline]
pub fn key(out: &mut impl BufMut, field: u32, wire_type: WireType) {
    varint(out, u64::from(field) << 3 | wire_type as u64);
}

/// The key and length of a length-delimited field whose `len` bytes the
/// caller writes next (a nested message, measured beforehand).
#[inline]
pub fn key_len(out: &mut impl BufMut, field: u32, len: usize) {
    key(out, field, WireType::LengthDelimited);
    varint(out, len as u64);
}

/// A `bytes` field, written even when empty.
#[inline]
pub fn bytes(out: &mut impl BufMut, field: u32, bytes: &[u8]) {
    key_len(out, field, bytes.len());
    out.put_slice(bytes);
}

/// A `string` field, omitted when empty.
#[inline]
pub fn string(out: &mut impl BufMut, field: u32, text: &str) {
    if !text.is_empty() {
        bytes(out, field, text.as_bytes());
    }
}

/// A varint field, omitted when zero.
#[inline]
pub fn varint_field(out: &mut impl BufMut, field: u32, value: u64) {
    if value != 0 {
        key(out, field, WireType::Varint);
        varint(out, value);
    }
}

/// A `fixed64` field, omitted when zero.
#[inline]
pub fn fixed64(out: &mut impl BufMut, field: u32, value: u64) {
    if value != 0 {
        key(out, field, WireType::SixtyFourBit);
        out.put_slice(&value.to_le_bytes());
    }
}

/// A nested message written by `fields`, for callers that do not measure
/// first: it is built apart, then copied behind its length.
pub fn message(out: &mut Vec<u8>, field: u32, fields: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    fields(&mut inner);
    bytes(out, field, &inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_match_what_is_written() {
        for shift in 0..64 {
            for value in [1u64 << shift, (1u64 << shift) - 1, u64::MAX >> shift] {
                let mut out = Vec::new();
                varint(&mut out, value);
                assert_eq!(out.len(), varint_len(value), "{value}");
                assert_eq!(out.len(), prost::encoding::encoded_len_varint(value));
            }
        }
    }
}
