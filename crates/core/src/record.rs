//! Checkpoint records as stored: a CRC-32 of the payload, then the payload
//! (postcard), so that a damaged record is detected when it is read. Every
//! part of a checkpoint (windows, keys, the meta) is written this way.

use serde::{Deserialize, Serialize};

/// A failure of the state backend (disk, RocksDB, or a damaged checkpoint).
#[derive(Debug, thiserror::Error)]
#[error("state at {location}: {message}")]
pub struct StateError {
    /// The state directory, or `memory`.
    pub location: String,
    /// What went wrong.
    pub message: String,
}

/// A record as stored: a CRC-32 of the payload, then the payload.
pub fn encode_record<T: Serialize>(value: &T) -> Result<(Vec<u8>, u32), StateError> {
    let payload = postcard::to_allocvec(value).map_err(|e| StateError {
        location: "encoder".into(),
        message: format!("cannot encode a record: {e}"),
    })?;
    let crc = crc32fast::hash(&payload);
    let mut bytes = Vec::with_capacity(payload.len() + 4);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&payload);
    Ok((bytes, crc))
}

/// Checks and decodes a record written by [`encode_record`]; also returns its CRC.
pub fn decode_record<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<(T, u32), String> {
    if bytes.len() < 4 {
        return Err(format!("record of {} bytes is truncated", bytes.len()));
    }
    let (crc_bytes, payload) = bytes.split_at(4);
    let stored = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
    let actual = crc32fast::hash(payload);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        ));
    }
    let value = postcard::from_bytes(payload).map_err(|e| format!("cannot decode: {e}"))?;
    Ok((value, actual))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_byte_is_detected() {
        let (mut bytes, _) = encode_record(&vec![1u8, 2, 3]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let err = decode_record::<Vec<u8>>(&bytes).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
    }
}
