//! The SCRAM mechanisms Kafka offers and the RFC 5802 functions over them (`Hi`, `HMAC`, `H`).
//!
//! Every function here is a thin call into the RustCrypto crates; this module only picks the hash.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

use crate::AuthError;

/// Kafka's minimum iteration count for both mechanisms (its `ScramMechanism.minIterations`); fewer
/// is refused everywhere a credential is made or read.
pub const ITERATIONS_MIN: u32 = 4096;
/// Kafka's maximum (its `ScramMechanism.maxIterations`): AlterUserScramCredentials refuses more, and
/// a bound keeps one PLAIN login from costing the broker unbounded CPU.
pub const ITERATIONS_MAX: u32 = 16384;
/// The iteration count used when none is given, and the one answered for unknown users.
pub const ITERATIONS_DEFAULT: u32 = 4096;

/// A SASL/SCRAM mechanism, named as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
    /// SCRAM-SHA-512 (the same exchange over SHA-512, as Kafka defines it).
    Sha512,
}

impl ScramMechanism {
    /// Both mechanisms, in the order Kafka lists them.
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name: `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism for a SASL mechanism name, exactly as Kafka spells it (case matters, as in
    /// Kafka's `ScramMechanism.forMechanismName`).
    pub fn parse(name: &str) -> Result<Self, AuthError> {
        match name {
            "SCRAM-SHA-256" => Ok(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Ok(ScramMechanism::Sha512),
            _ => Err(AuthError::UnsupportedMechanism),
        }
    }

    /// The mechanism's number in DescribeUserScramCredentials / AlterUserScramCredentials (KIP-554):
    /// 1 for SCRAM-SHA-256, 2 for SCRAM-SHA-512 (0 is Kafka's UNKNOWN).
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The mechanism for a KIP-554 mechanism number.
    pub fn from_kafka_type(kafka_type: i8) -> Result<Self, AuthError> {
        match kafka_type {
            1 => Ok(ScramMechanism::Sha256),
            2 => Ok(ScramMechanism::Sha512),
            _ => Err(AuthError::UnsupportedMechanism),
        }
    }

    /// The hash's output length in bytes: the length of every key, proof and signature, and of the
    /// salts this crate makes.
    pub fn output_bytes(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    /// `SaltedPassword := Hi(Normalize(password), salt, i)`, PBKDF2 with this mechanism's HMAC.
    ///
    /// The password's bytes are taken as they are, without SASLprep: Kafka's clients (the Java
    /// client's `ScramFormatter.normalize`, librdkafka) send the UTF-8 bytes unprepared, so a server
    /// that prepared them would refuse those clients' users whose passwords SASLprep changes.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_bytes()];
        match self {
            ScramMechanism::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
            ScramMechanism::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out),
        }
        out
    }

    /// `HMAC(key, part₀ ‖ part₁ ‖ …)`.
    pub(crate) fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => hmac_with::<Hmac<Sha256>>(key, parts),
            ScramMechanism::Sha512 => hmac_with::<Hmac<Sha512>>(key, parts),
        }
    }

    /// `H(data)`.
    pub(crate) fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `StoredKey := H(HMAC(SaltedPassword, "Client Key"))`.
    pub(crate) fn stored_key(self, salted_password: &[u8]) -> Vec<u8> {
        self.hash(&self.hmac(salted_password, &[b"Client Key"]))
    }

    /// `ServerKey := HMAC(SaltedPassword, "Server Key")`.
    pub(crate) fn server_key(self, salted_password: &[u8]) -> Vec<u8> {
        self.hmac(salted_password, &[b"Server Key"])
    }
}

fn hmac_with<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length (longer ones are hashed), so this cannot fail for any input.
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ScramMechanism {
    type Err = AuthError;

    fn from_str(name: &str) -> Result<Self, AuthError> {
        ScramMechanism::parse(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_kafka_types_round_trip() {
        for mechanism in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::parse(mechanism.name()).ok(), Some(mechanism));
            assert_eq!(ScramMechanism::from_kafka_type(mechanism.kafka_type()).ok(), Some(mechanism));
            assert_eq!(mechanism.hash(b"").len(), mechanism.output_bytes());
        }
        for refused in ["scram-sha-256", "SCRAM-SHA-1", "PLAIN", "", "SCRAM-SHA-256 "] {
            assert!(matches!(ScramMechanism::parse(refused), Err(AuthError::UnsupportedMechanism)));
        }
        assert!(ScramMechanism::from_kafka_type(0).is_err());
        assert!(ScramMechanism::from_kafka_type(3).is_err());
    }

    #[test]
    fn salted_password_matches_rfc_7677() {
        // PBKDF2's first (and, at this output length, only) block written out from HMAC, so the
        // test fails if the crate is called with the wrong hash or the count read as "extra rounds".
        // Inputs are RFC 7677's: "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
        let salt = [0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81];
        let mechanism = ScramMechanism::Sha256;
        let mut block = mechanism.hmac(b"pencil", &[&salt, &1u32.to_be_bytes()]);
        let mut u = block.clone();
        for _ in 1..4096 {
            u = mechanism.hmac(b"pencil", &[&u]);
            for (b, x) in block.iter_mut().zip(&u) {
                *b ^= x;
            }
        }
        assert_eq!(mechanism.salted_password(b"pencil", &salt, 4096), block);
    }
}
