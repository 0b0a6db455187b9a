//! Kafka frames: a big-endian i32 size followed by that many bytes.

/// Default bound on a request frame: Kafka's `socket.request.max.bytes` default (100 MiB).
pub const FRAME_BYTES_MAX_DEFAULT: usize = 100 * 1024 * 1024;

/// Why a frame length is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {length} is negative")]
    Negative { length: i32 },
    #[error("frame length {length} is too small to hold a request header")]
    TooSmall { length: i32 },
    #[error("frame length {length} exceeds the limit of {limit} bytes")]
    TooLarge { length: i32, limit: usize },
}

/// Smallest request: api key (2) + api version (2) + correlation id (4) + client id length (2).
const REQUEST_BYTES_MIN: i32 = 10;

/// Checks the length prefix of a request frame before anything is allocated for it.
pub fn request_frame_length(prefix: [u8; 4], limit: usize) -> Result<usize, FrameError> {
    let length = i32::from_be_bytes(prefix);
    if length < 0 {
        return Err(FrameError::Negative { length });
    }
    if length < REQUEST_BYTES_MIN {
        return Err(FrameError::TooSmall { length });
    }
    let length_bytes = length as usize;
    if length_bytes > limit {
        return Err(FrameError::TooLarge { length, limit });
    }
    Ok(length_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(request_frame_length(100i32.to_be_bytes(), 1000), Ok(100));
        assert!(matches!(request_frame_length((-1i32).to_be_bytes(), 1000), Err(FrameError::Negative { .. })));
        assert!(matches!(request_frame_length(3i32.to_be_bytes(), 1000), Err(FrameError::TooSmall { .. })));
        assert!(matches!(
            request_frame_length(i32::MAX.to_be_bytes(), FRAME_BYTES_MAX_DEFAULT),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
