//! Trace and span identifiers, parsed once at the receiver boundary.

use std::fmt;

/// Why an id from the wire was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id does not have the length the OTLP spec fixes.
    #[error("expected {expected} bytes, got {actual}")]
    WrongLength {
        /// Bytes the id must have.
        expected: usize,
        /// Bytes it had.
        actual: usize,
    },
    /// An all-zero id is invalid per the W3C trace context.
    #[error("all-zero id")]
    AllZero,
    /// A hex string (OTLP JSON) had a non-hex character.
    #[error("not a hex string")]
    NotHex,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length of the id in bytes.
            pub const LEN: usize = $len;

            /// Wraps raw bytes that are known to be valid (non-zero).
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn to_bytes(self) -> [u8; $len] {
                self.0
            }

            /// Parses a lowercase or uppercase hex string, as OTLP JSON carries ids.
            pub fn from_hex(text: &str) -> Result<Self, IdError> {
                if text.len() != $len * 2 {
                    return Err(IdError::WrongLength { expected: $len, actual: text.len() / 2 });
                }
                let mut bytes = [0u8; $len];
                hex::decode_to_slice(text, &mut bytes).map_err(|_| IdError::NotHex)?;
                Self::try_from(&bytes[..])
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = IdError;

            fn try_from(bytes: &[u8]) -> Result<Self, IdError> {
                let array: [u8; $len] = bytes
                    .try_into()
                    .map_err(|_| IdError::WrongLength { expected: $len, actual: bytes.len() })?;
                if array == [0u8; $len] {
                    return Err(IdError::AllZero);
                }
                Ok(Self(array))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for byte in self.0 {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }
    };
}

id_type!(
    /// A 16-byte W3C trace id, never all zero.
    TraceId,
    16
);
id_type!(
    /// An 8-byte span id, never all zero.
    SpanId,
    8
);

impl TraceId {
    /// A well-mixed 64-bit hash of the id, used to shard work by trace.
    ///
    /// Trace ids are random by spec, but some SDKs put a timestamp in the
    /// high bytes (X-Ray style), so mix both halves rather than take one.
    pub fn shard_hash(&self) -> u64 {
        let hi = u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"));
        let lo = u64::from_be_bytes(self.0[8..].try_into().expect("8 bytes"));
        mix64(hi ^ lo.rotate_left(32))
    }
}

/// splitmix64's finaliser: a bijective, well-mixed 64-bit hash, the one
/// every deterministic hash in tracemap uses (sharding, rendezvous, sampling).
#[inline]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_accepts_sixteen_nonzero_bytes() {
        let id = TraceId::try_from(&[1u8; 16][..]).unwrap();
        assert_eq!(id.to_string(), "01010101010101010101010101010101");
    }

    #[test]
    fn ids_reject_wrong_length_and_zero() {
        assert_eq!(
            TraceId::try_from(&[1u8; 8][..]),
            Err(IdError::WrongLength {
                expected: 16,
                actual: 8
            })
        );
        assert_eq!(TraceId::try_from(&[0u8; 16][..]), Err(IdError::AllZero));
        assert_eq!(SpanId::try_from(&[0u8; 8][..]), Err(IdError::AllZero));
        assert_eq!(
            SpanId::try_from(&[][..]),
            Err(IdError::WrongLength {
                expected: 8,
                actual: 0
            })
        );
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let id = SpanId::from_hex("A000000000000001").unwrap();
        assert_eq!(id.to_string(), "a000000000000001");
        assert_eq!(SpanId::from_hex("zz00000000000001"), Err(IdError::NotHex));
        assert_eq!(
            SpanId::from_hex("0102"),
            Err(IdError::WrongLength {
                expected: 8,
                actual: 2
            })
        );
        assert_eq!(SpanId::from_hex("0000000000000000"), Err(IdError::AllZero));
    }

    #[test]
    fn shard_hash_spreads_sequential_ids() {
        let mut buckets = [0usize; 4];
        for i in 1..=4000u128 {
            let id = TraceId::try_from(&i.to_be_bytes()[..]).unwrap();
            buckets[(id.shard_hash() % 4) as usize] += 1;
        }
        for count in buckets {
            assert!((800..1200).contains(&count), "uneven shards: {buckets:?}");
        }
    }
}
