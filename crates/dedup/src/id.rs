//! [`Id`]: the fixed-size 128-bit hash a message id is reduced to, and the trivial hasher that
//! hash maps keyed by it use (the id is already a uniform cryptographic hash).

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

/// A message id: the first 128 bits of the BLAKE3 hash of the id bytes.
///
/// BLAKE3 is a cryptographic hash, so a producer cannot craft two different ids that collide
/// (a birthday collision takes about 2^64 work); at 10^10 stored ids the chance of an accidental
/// collision is about 10^-19.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Id(pub [u8; 16]);

impl Id {
    /// Hashes id bytes (a header value, a key, or a record value).
    pub fn of(bytes: &[u8]) -> Id {
        let hash = blake3::hash(bytes);
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash.as_bytes()[..16]);
        Id(id)
    }

    /// The id as a big-endian integer: ordering by it is ordering by the bytes.
    pub(crate) fn to_u128(self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// Inverse of [`Id::to_u128`].
    pub(crate) fn from_u128(value: u128) -> Id {
        Id(value.to_be_bytes())
    }
}

impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut low = [0u8; 8];
        low.copy_from_slice(&self.0[8..]);
        state.write_u64(u64::from_le_bytes(low));
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({:032x})", self.to_u128())
    }
}

/// Builds [`IdHasher`]s. Keys are BLAKE3 output, so their bits are already uniform and keyed
/// hashing (SipHash) would buy nothing but time; partition numbers are chosen by the broker, not by
/// a client, so they need no keyed hashing either.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct IdHashBuilder;

/// Passes through the 64 bits `Id::hash` writes.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than `Id`; fold them in so the hasher stays correct.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }

    /// Partition numbers (the active chunk's offset ranges): small integers, spread by a
    /// multiplication by an odd constant (a bijection, so distinct partitions never collide), where
    /// SipHash cost a few percent of the broker's CPU on every insert.
    fn write_i32(&mut self, value: i32) {
        self.0 = u64::from(value as u32).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_truncated_blake3() {
        let id = Id::of(b"order-42");
        assert_eq!(&id.0[..], &blake3::hash(b"order-42").as_bytes()[..16]);
        assert_ne!(Id::of(b"order-42"), Id::of(b"order-43"));
        assert_eq!(Id::of(b""), Id::of(b""));
    }

    #[test]
    fn partition_numbers_hash_apart() {
        let hash = |partition: i32| IdHashBuilder.hash_one(partition);
        let hashes: std::collections::HashSet<u64> = (0..65_536).map(hash).collect();
        assert_eq!(hashes.len(), 65_536, "distinct partitions, distinct hashes");
        assert_ne!(hash(1) >> 57, hash(2) >> 57, "the top bits (hashbrown's tag) vary too");
    }

    #[test]
    fn u128_order_is_byte_order() {
        let a = Id::of(b"a");
        let b = Id::of(b"b");
        assert_eq!(a.cmp(&b), a.to_u128().cmp(&b.to_u128()));
        assert_eq!(Id::from_u128(a.to_u128()), a);
    }
}
