//! [`Id`]: the fixed-size 128-bit hash a message id is reduced to; [`IdScheme`], which hash an
//! index reduces ids with; and the trivial hasher that hash maps keyed by an id use (the id is
//! already a uniform pseudo-random value).

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

use siphasher::sip128::{Hasher128, SipHasher24};

/// A message id reduced to 128 bits by an [`IdScheme`]: two records whose ids hash alike are
/// duplicates, so the hash must leave a producer no way to make two different ids collide.
///
/// Either scheme gives that: BLAKE3 is a cryptographic hash (a collision takes about 2^64 work);
/// SipHash-2-4 is a pseudo-random function under a 128-bit key the producer never sees, so its
/// outputs are as good as random to it. At 10^10 stored ids the chance of an accidental collision
/// is about 10^-19 either way.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Id(pub [u8; 16]);

/// How an index reduces id bytes to an [`Id`]. Chosen when an index starts empty and kept with it
/// (its snapshots record it), since ids hashed one way never match ids hashed the other.
///
/// A new index takes [`IdScheme::SipHash24`] with a random key: about 20 ns for a 15-byte id on the
/// machine of docs/benchmarks.md against BLAKE3's 84 (a single-block compression is one long chain
/// of dependent rounds), 2.8 times faster at 1 KiB (`dedup_bench`'s "hash N-byte ids" lines). An
/// index loaded from a snapshot written before the key existed (version 4 and older) keeps
/// [`IdScheme::Blake3`], so an upgrade replays nothing; it moves to a keyed hash only when its topic
/// is opened without a usable snapshot (an index that replaces another keeps the scheme it replaces).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IdScheme {
    /// The first 128 bits of BLAKE3, unkeyed ([`Id::of`]).
    Blake3,
    /// SipHash-2-4 with 128-bit output under this key (secret: it lives only in the index and its
    /// snapshots, next to the data it protects).
    SipHash24 {
        /// The two 64-bit halves of the key.
        key: [u64; 2],
    },
}

impl IdScheme {
    /// [`IdScheme::SipHash24`] under a key from the operating system's random source; BLAKE3 if
    /// there is none (no key a producer could guess is ever used).
    pub fn random() -> IdScheme {
        let mut bytes = [0u8; 16];
        match getrandom::fill(&mut bytes) {
            Ok(()) => {
                let (low, high) = bytes.split_at(8);
                let half = |half: &[u8]| u64::from_le_bytes(half.try_into().expect("8 bytes"));
                IdScheme::SipHash24 { key: [half(low), half(high)] }
            }
            Err(error) => {
                tracing::warn!(%error, "no random source for a message-id key; hashing ids with BLAKE3 (slower)");
                IdScheme::Blake3
            }
        }
    }

    /// The scheme's name, for logs (never the key).
    pub fn name(&self) -> &'static str {
        match self {
            IdScheme::Blake3 => "blake3",
            IdScheme::SipHash24 { .. } => "siphash-2-4",
        }
    }

    /// The id of `bytes` (a header value, a key, or a record value).
    #[inline]
    pub fn id_of(&self, bytes: &[u8]) -> Id {
        match self {
            IdScheme::Blake3 => Id::of(bytes),
            IdScheme::SipHash24 { key } => {
                let mut hasher = SipHasher24::new_with_keys(key[0], key[1]);
                hasher.write(bytes);
                Id(hasher.finish128().as_bytes())
            }
        }
    }
}

impl fmt::Debug for IdScheme {
    /// Never shows the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdScheme::Blake3 => f.write_str("Blake3"),
            IdScheme::SipHash24 { .. } => f.write_str("SipHash24 { key: <secret> }"),
        }
    }
}

impl Id {
    /// The first 128 bits of the BLAKE3 hash of `bytes`: the same for every process, so it can be
    /// stored outside an index (`once dedup`'s changelog keys). An index hashes with its own
    /// [`IdScheme`].
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

/// Builds [`IdHasher`]s. Keys are [`IdScheme`] output, so their bits are already uniform and hashing
/// them again would buy nothing but time (under [`IdScheme::SipHash24`]'s secret key a producer
/// cannot even aim ids at one bucket, as it could under BLAKE3's); partition numbers are chosen by
/// the broker, not by a client, so they need no keyed hashing either.
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
    fn keyed_ids_are_siphash_2_4_128() {
        let scheme = IdScheme::SipHash24 { key: [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908] };
        // The reference vector of SipHash-2-4 with 128-bit output (the SipHash authors'
        // vectors128.h, first entry): key bytes 00..0f, empty input.
        let expected = [0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02, 0x93];
        assert_eq!(scheme.id_of(b"").0, expected);
        assert_eq!(scheme.id_of(b"order-42"), scheme.id_of(b"order-42"));
        assert_ne!(scheme.id_of(b"order-42"), scheme.id_of(b"order-43"));
        assert_ne!(scheme.id_of(b"order-42"), IdScheme::SipHash24 { key: [1, 2] }.id_of(b"order-42"));
        assert_eq!(IdScheme::Blake3.id_of(b"order-42"), Id::of(b"order-42"));
        let random = (IdScheme::random(), IdScheme::random());
        assert!(matches!(random.0, IdScheme::SipHash24 { .. }), "this machine has a random source");
        assert_ne!(random.0, random.1, "a key each");
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
