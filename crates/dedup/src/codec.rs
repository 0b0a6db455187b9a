//! The four Kafka record compression codecs, with a bound on decompressed size.
//!
//! Output matches what Kafka's clients write, so any consumer reads a batch `filter_batch`
//! recompressed: gzip (one member), snappy in xerial framing (the Java client's
//! `SnappyOutputStream`, 32 KiB blocks), LZ4 frames with independent blocks, zstd frames.

use std::borrow::Cow;
use std::io::{Read, Write};

use crate::error::DedupError;

/// Attribute value of each codec (bits 0-2 of the batch attributes).
pub(crate) const NONE: u8 = 0;
const GZIP: u8 = 1;
const SNAPPY: u8 = 2;
const LZ4: u8 = 3;
const ZSTD: u8 = 4;

/// Magic header of snappy-java's framing, followed by version 1 and compatible version 1.
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// Uncompressed block size snappy-java writes.
const XERIAL_BLOCK_LEN: usize = 32 * 1024;
/// Levels Kafka's producer uses by default for LZ4 and zstd.
const LZ4_LEVEL: u32 = 4;
const ZSTD_LEVEL: i32 = 3;

/// Name of a codec for messages.
pub(crate) fn name(codec: u8) -> &'static str {
    match codec {
        NONE => "none",
        GZIP => "gzip",
        SNAPPY => "snappy",
        LZ4 => "lz4",
        ZSTD => "zstd",
        _ => "unknown",
    }
}

fn failure(codec: u8, action: &'static str, reason: impl ToString) -> DedupError {
    DedupError::Compression { codec: name(codec), action, reason: reason.to_string() }
}

/// Decompresses a batch's records section, refusing output longer than `max_len` bytes.
pub(crate) fn decompress(codec: u8, data: &[u8], max_len: usize) -> Result<Cow<'_, [u8]>, DedupError> {
    let too_large = DedupError::DecompressedTooLarge { max: max_len };
    match codec {
        NONE if data.len() > max_len => Err(too_large),
        NONE => Ok(Cow::Borrowed(data)),
        GZIP => read_bounded(codec, flate2::read::MultiGzDecoder::new(data), max_len),
        SNAPPY => decompress_snappy(data, max_len).map(Cow::Owned),
        LZ4 => {
            let decoder = lz4::Decoder::new(data).map_err(|error| failure(codec, "decompress", error))?;
            read_bounded(codec, decoder, max_len)
        }
        ZSTD => {
            let decoder =
                zstd::stream::read::Decoder::new(data).map_err(|error| failure(codec, "decompress", error))?;
            read_bounded(codec, decoder, max_len)
        }
        other => Err(DedupError::UnknownCompression(other)),
    }
}

/// Reads a decoder to its end, at most `max_len` bytes.
fn read_bounded<R: Read>(codec: u8, decoder: R, max_len: usize) -> Result<Cow<'static, [u8]>, DedupError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    decoder.take(limit).read_to_end(&mut out).map_err(|error| failure(codec, "decompress", error))?;
    if out.len() > max_len {
        return Err(DedupError::DecompressedTooLarge { max: max_len });
    }
    Ok(Cow::Owned(out))
}

/// Snappy in xerial framing, or a raw snappy block (what Java's `SnappyInputStream` also accepts).
fn decompress_snappy(data: &[u8], max_len: usize) -> Result<Vec<u8>, DedupError> {
    let fail = |reason: String| failure(SNAPPY, "decompress", reason);
    if !data.starts_with(&XERIAL_HEADER[..8]) {
        return decompress_snappy_block(data, max_len, Vec::new());
    }
    if data.len() < XERIAL_HEADER.len() {
        return Err(fail(format!("xerial header cut short at {} bytes", data.len())));
    }
    let mut out = Vec::new();
    let mut rest = &data[XERIAL_HEADER.len()..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(fail(format!("{} trailing bytes cannot hold a block length", rest.len())));
        }
        let block_len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if block_len > rest.len() {
            return Err(fail(format!("block of {block_len} bytes but {} remain", rest.len())));
        }
        out = decompress_snappy_block(&rest[..block_len], max_len, out)?;
        rest = &rest[block_len..];
    }
    Ok(out)
}

/// Appends one raw snappy block to `out`, keeping `out` within `max_len`.
fn decompress_snappy_block(block: &[u8], max_len: usize, mut out: Vec<u8>) -> Result<Vec<u8>, DedupError> {
    let block_len = snap::raw::decompress_len(block).map_err(|error| failure(SNAPPY, "decompress", error))?;
    let start = out.len();
    if start.saturating_add(block_len) > max_len {
        return Err(DedupError::DecompressedTooLarge { max: max_len });
    }
    out.resize(start + block_len, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|error| failure(SNAPPY, "decompress", error))?;
    out.truncate(start + written);
    Ok(out)
}

/// Compresses a records section as Kafka's clients do for `codec`.
pub(crate) fn compress(codec: u8, data: &[u8]) -> Result<Vec<u8>, DedupError> {
    let fail = |error: std::io::Error| failure(codec, "compress", error);
    match codec {
        NONE => Ok(data.to_vec()),
        GZIP => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).map_err(fail)?;
            encoder.finish().map_err(fail)
        }
        SNAPPY => compress_snappy(data),
        LZ4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .level(LZ4_LEVEL)
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::new())
                .map_err(fail)?;
            encoder.write_all(data).map_err(fail)?;
            let (out, result) = encoder.finish();
            result.map_err(fail)?;
            Ok(out)
        }
        ZSTD => zstd::stream::encode_all(data, ZSTD_LEVEL).map_err(fail),
        other => Err(DedupError::UnknownCompression(other)),
    }
}

fn compress_snappy(data: &[u8]) -> Result<Vec<u8>, DedupError> {
    let mut out = Vec::with_capacity(XERIAL_HEADER.len() + data.len() / 2);
    out.extend_from_slice(XERIAL_HEADER);
    let mut encoder = snap::raw::Encoder::new();
    for block in data.chunks(XERIAL_BLOCK_LEN) {
        let compressed = encoder.compress_vec(block).map_err(|error| failure(SNAPPY, "compress", error))?;
        let block_len = u32::try_from(compressed.len()).map_err(|error| failure(SNAPPY, "compress", error))?;
        out.extend_from_slice(&block_len.to_be_bytes());
        out.extend_from_slice(&compressed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|index| (index % 251) as u8).collect();
        for codec in [NONE, GZIP, SNAPPY, LZ4, ZSTD] {
            let compressed = compress(codec, &data).expect("compress");
            let back = decompress(codec, &compressed, data.len()).expect("decompress");
            assert_eq!(back.as_ref(), &data[..], "{}", name(codec));
            let empty = compress(codec, &[]).expect("compress empty");
            assert!(decompress(codec, &empty, 0).expect("decompress empty").is_empty(), "{}", name(codec));
        }
    }

    #[test]
    fn decompression_is_bounded() {
        let data = vec![7u8; 1 << 20];
        for codec in [NONE, GZIP, SNAPPY, LZ4, ZSTD] {
            let compressed = compress(codec, &data).expect("compress");
            let error = decompress(codec, &compressed, data.len() - 1).expect_err(name(codec));
            assert!(matches!(error, DedupError::DecompressedTooLarge { .. }), "{}: {error}", name(codec));
        }
    }

    #[test]
    fn raw_snappy_without_framing_is_accepted() {
        let raw = snap::raw::Encoder::new().compress_vec(b"raw snappy block").expect("compress");
        assert_eq!(decompress(SNAPPY, &raw, 100).expect("decompress").as_ref(), b"raw snappy block");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            assert!(decompress(codec, b"\x82SNAPPY\x00garbage-garbage-garbage", 1 << 20).is_err(), "{}", name(codec));
        }
        assert!(matches!(decompress(5, b"", 10), Err(DedupError::UnknownCompression(5))));
    }
}
