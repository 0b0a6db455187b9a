//! Kafka's record-field integers: zigzag varints (`varint` for i32 fields, `varlong` for i64 ones),
//! as in protobuf. Small magnitudes, positive or negative, take few bytes.

/// Longest encoding of an i32 varint.
pub const VARINT_BYTES_MAX: usize = 5;
/// Longest encoding of an i64 varlong.
pub const VARLONG_BYTES_MAX: usize = 10;

/// Maps signed to unsigned so that small magnitudes stay small: 0, -1, 1, -2 → 0, 1, 2, 3.
pub fn zigzag_encode(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// The inverse of [`zigzag_encode`].
pub fn zigzag_decode(raw: u64) -> i64 {
    (raw >> 1) as i64 ^ -((raw & 1) as i64)
}

/// Appends `value` as a zigzag varlong (at most 10 bytes).
pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = zigzag_encode(value);
    while raw >= 0x80 {
        out.push((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

/// Appends `value` as a zigzag varint (at most 5 bytes; the same bytes as [`put_varlong`] would
/// write for it).
pub fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_varlong(out, i64::from(value));
}

/// Reads a zigzag varint of at most `max_bytes` bytes from `bytes[*position..]`, advancing
/// `position`. `None` if the input ends first or the encoding is longer than `max_bytes`.
pub(crate) fn read_zigzag(bytes: &[u8], position: &mut usize, max_bytes: usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for index in 0..max_bytes {
        let byte = *bytes.get(*position)?;
        *position += 1;
        raw |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some(zigzag_decode(raw));
        }
    }
    None
}
