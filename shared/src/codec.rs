//! The wire codec: serde + bincode 2, behind two functions.
//!
//! Every type that crosses the network is encoded here and nowhere else, so a change of
//! format (bincode's development has stopped) touches one file. Decoding is bounded
//! ([`MAX_MESSAGE_BYTES`]) and rejects trailing bytes, so a corrupt or hostile frame
//! becomes an error instead of a huge allocation or a silently wrong value.

use bincode::config::{self, Configuration, Limit};
use serde::{de::DeserializeOwned, Serialize};

/// Upper bound for one decoded value, the same as ractor_cluster's default frame cap.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Why bytes could not be turned into a value (or a value into bytes).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded (a serde feature bincode does not support).
    #[error("cannot encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid encoding of the expected type.
    #[error("cannot decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The bytes hold a valid value followed by garbage.
    #[error("{extra} unexpected trailing bytes after the value")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
}

fn config() -> Configuration<config::LittleEndian, config::Varint, Limit<MAX_MESSAGE_BYTES>> {
    config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// Room a fresh buffer starts with: most messages fit, so they are encoded without
/// growing it. bincode's serde `encode_to_vec` starts empty and grows its buffer
/// several times per message: `realloc` was 4% of an unbatched sender's CPU.
const INITIAL_BUFFER: usize = 64;

/// A `Vec` that bincode writes to (its own such writer is private).
struct Buffer(Vec<u8>);

impl bincode::enc::write::Writer for Buffer {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Buffer(Vec::with_capacity(INITIAL_BUFFER));
    bincode::serde::encode_into_writer(value, &mut out, config())?;
    Ok(out.0)
}

/// How much of [`MAX_MESSAGE_BYTES`] decoding `value` takes. bincode counts each value
/// it decodes at its size in memory (8 bytes for a length or a `u64` however short its
/// varint, 4 for an enum's variant, a string's bytes), which is exactly the length of
/// the value encoded with fixed-size integers: that is what this measures, without
/// making the bytes.
pub fn decode_budget<T: Serialize>(value: &T) -> Result<usize, CodecError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    let fixed = config::standard().with_fixed_int_encoding();
    bincode::serde::encode_into_writer(value, &mut size, fixed)?;
    Ok(size.bytes_written)
}

/// Decodes exactly one `T` from `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}

/// Decodes the `T` at the start of `bytes`, whatever follows it, borrowing from
/// `bytes` (to read the first fields of a larger value without decoding, or copying,
/// the rest).
pub fn decode_prefix<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, CodecError> {
    Ok(bincode::serde::borrow_decode_from_slice(bytes, config())?.0)
}

/// How the panic of an undecodable field starts (`node` keeps those out of its log).
pub const UNDECODABLE: &str = "undecodable ";

/// Implements `ractor::BytesConvertable` for wire types through [`encode`] and [`decode`].
///
/// `BytesConvertable::from_bytes` cannot return an error, so an undecodable payload
/// panics (with a message starting with [`UNDECODABLE`]); ractor's generated
/// deserializer runs it under `catch_unwind` and turns the panic into a dropped message
/// (the caller of an RPC then sees a timeout). Encoding
/// our plain serde types cannot fail.
#[macro_export]
macro_rules! wire_type {
    ($($ty:ty),+ $(,)?) => {
        $(
            impl ::ractor::BytesConvertable for $ty {
                fn into_bytes(self) -> Vec<u8> {
                    $crate::codec::encode(&self)
                        .unwrap_or_else(|e| panic!("{}: {e}", stringify!($ty)))
                }
                fn from_bytes(bytes: Vec<u8>) -> Self {
                    $crate::codec::decode(&bytes).unwrap_or_else(|e| {
                        panic!("{}{}: {e}", $crate::codec::UNDECODABLE, stringify!($ty))
                    })
                }
            }
        )+
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value decodes exactly when its [`decode_budget`] is within the bound, however
    /// few bytes it encodes to: a list of small numbers takes a byte each on the wire
    /// and 8 of the budget.
    #[test]
    fn the_decode_budget_is_what_decoding_counts() {
        let at_bound = (MAX_MESSAGE_BYTES - 8) / 8;
        let fits = vec![1u64; at_bound];
        assert_eq!(decode_budget(&fits).unwrap(), MAX_MESSAGE_BYTES);
        let bytes = encode(&fits).unwrap();
        assert!(bytes.len() < MAX_MESSAGE_BYTES / 7);
        assert_eq!(decode::<Vec<u64>>(&bytes).unwrap().len(), at_bound);
        let over = vec![1u64; at_bound + 1];
        assert_eq!(decode_budget(&over).unwrap(), MAX_MESSAGE_BYTES + 8);
        assert!(decode::<Vec<u64>>(&encode(&over).unwrap()).is_err());
        let text = vec!["abc".to_string(); 10];
        assert_eq!(decode_budget(&text).unwrap(), 8 + 10 * (8 + 3));
    }
}
