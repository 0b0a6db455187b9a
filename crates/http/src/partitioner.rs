//! Which partition a record without an explicit partition goes to: Kafka's default partitioner
//! for keyed records (murmur2 of the key, as the Java client and the REST Proxy choose), so records
//! produced over HTTP and by Kafka clients with the same key share a partition and its order.

/// Kafka's murmur2 of `data` (seed 0x9747b28c), as a signed 32-bit value.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut hash = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (index, byte) in tail.iter().enumerate().rev() {
            hash ^= u32::from(*byte) << (8 * index);
        }
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 15;
    hash as i32
}

/// The partition of `key` among `count`, as Kafka's default partitioner picks it.
pub fn partition_for(key: &[u8], count: i32) -> i32 {
    assert!(count > 0, "a topic has at least one partition");
    let partition = (murmur2(key) & 0x7fff_ffff) % count;
    assert!((0..count).contains(&partition));
    partition
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafkas_murmur2() {
        // Values Kafka's own partitioner gives (published in its test suite).
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn partitions_are_in_range_and_stable() {
        for count in [1, 3, 7, 64] {
            for key in [&b""[..], b"a", b"order-17", b"\xff\xfe"] {
                let partition = partition_for(key, count);
                assert_eq!(partition, partition_for(key, count));
                assert!((0..count).contains(&partition));
            }
        }
    }
}
