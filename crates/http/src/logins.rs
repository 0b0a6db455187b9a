//! [`VerifiedLogins`]: Basic credentials already checked, so that a caller sending them with every
//! request (as HTTP clients do) pays PBKDF2 (4,096 rounds, about 3 ms of CPU) once, not per request.
//!
//! An entry maps a keyed BLAKE3 hash of `(user, password)` — the key random per process, so the
//! table holds nothing a password could be tested against offline beyond what the credential store
//! already holds — to the StoredKey of the verifier the password was checked against. A hit counts
//! only while the user's current verifier is still that one: a changed password or a deleted user
//! misses, and the full check (which then fails) runs. Only successful logins are remembered, at most
//! [`ENTRIES_MAX`] (the table is emptied when full), so failed guesses cannot grow it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use once_auth::{CredentialStore, ScramCredential, ScramMechanism};

/// The most logins remembered.
pub const ENTRIES_MAX: usize = 1024;

pub struct VerifiedLogins {
    key: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], Vec<u8>>>,
}

impl VerifiedLogins {
    /// An empty table with a fresh random key; `None` if the system has no randomness to give.
    pub fn new() -> Option<VerifiedLogins> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).ok()?;
        Some(VerifiedLogins { key, entries: Mutex::default() })
    }

    fn fingerprint(&self, user: &str, password: &str) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(&(user.len() as u64).to_le_bytes()).update(user.as_bytes()).update(password.as_bytes());
        *hasher.finalize().as_bytes()
    }

    /// The credential a PLAIN login of `user` is checked against now (once-auth's choice: SHA-512's
    /// verifier, else SHA-256's).
    pub fn credential(store: &CredentialStore, user: &str) -> Option<ScramCredential> {
        store.get(user, ScramMechanism::Sha512).or_else(|| store.get(user, ScramMechanism::Sha256))
    }

    fn verifier(store: &CredentialStore, user: &str) -> Option<Vec<u8>> {
        VerifiedLogins::credential(store, user).map(|credential| credential.stored_key().to_vec())
    }

    /// Whether `user` logged in with `password` before, against the verifier it has now.
    pub fn contains(&self, store: &CredentialStore, user: &str, password: &str) -> bool {
        let fingerprint = self.fingerprint(user, password);
        let Some(current) = VerifiedLogins::verifier(store, user) else { return false };
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(&fingerprint).is_some_and(|verified| *verified == current)
    }

    /// Remembers a login that the full check just accepted against `checked` — the credential the
    /// password was verified with, not whatever the store holds by now (a password changed during
    /// the check must not make the old one count against the new verifier).
    pub fn insert(&self, checked: &ScramCredential, user: &str, password: &str) {
        let fingerprint = self.fingerprint(user, password);
        let current = checked.stored_key().to_vec();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= ENTRIES_MAX {
            entries.clear();
        }
        entries.insert(fingerprint, current);
    }
}

#[cfg(test)]
mod tests {
    use once_auth::ScramCredential;

    use super::*;

    fn set_password(store: &CredentialStore, user: &str, password: &str) {
        for mechanism in ScramMechanism::ALL {
            let credential = ScramCredential::new(password, mechanism, 4096).expect("a credential");
            store.upsert(user, mechanism, credential).expect("stored");
        }
    }

    /// A store in a temporary directory with `user` set to `password`, and an empty table.
    fn store_with(user: &str, password: &str) -> (tempfile::TempDir, CredentialStore, VerifiedLogins) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = CredentialStore::open(dir.path().join("credentials.json")).expect("a store");
        set_password(&store, user, password);
        (dir, store, VerifiedLogins::new().expect("randomness"))
    }

    #[test]
    fn a_login_counts_only_against_the_verifier_it_was_checked_with() {
        let (_dir, store, logins) = store_with("alice", "first");
        assert!(!logins.contains(&store, "alice", "first"), "nothing remembered yet");
        let checked = VerifiedLogins::credential(&store, "alice").expect("alice");
        logins.insert(&checked, "alice", "first");
        assert!(logins.contains(&store, "alice", "first"));
        assert!(!logins.contains(&store, "alice", "second"), "another password");
        assert!(!logins.contains(&store, "alicefirst", ""), "user and password are told apart");
        set_password(&store, "alice", "second");
        assert!(!logins.contains(&store, "alice", "first"), "a changed password forgets the old one");
        for mechanism in ScramMechanism::ALL {
            store.delete("alice", mechanism).expect("deleted");
        }
        assert!(!logins.contains(&store, "alice", "second"), "a deleted user is not remembered");
    }

    /// A password changed while the old one was being checked: the login is remembered against the
    /// verifier it was checked with (the old), so it does not count against the new one (review).
    #[test]
    fn a_password_changed_during_the_check_is_not_remembered_for_the_new_verifier() {
        let (_dir, store, logins) = store_with("dave", "old-pass");
        let checked = VerifiedLogins::credential(&store, "dave").expect("dave");
        set_password(&store, "dave", "new-pass");
        logins.insert(&checked, "dave", "old-pass");
        assert!(!logins.contains(&store, "dave", "old-pass"), "the old password does not count any more");
    }

    #[test]
    fn the_table_is_bounded() {
        let (_dir, store, logins) = store_with("bob", "pw");
        let checked = VerifiedLogins::credential(&store, "bob").expect("bob");
        for index in 0..ENTRIES_MAX + 10 {
            // Distinct fingerprints for one verifier: what a table of many users would hold.
            logins.insert(&checked, "bob", &format!("pw{index}"));
        }
        let entries = logins.entries.lock().expect("lock").len();
        assert!(entries <= ENTRIES_MAX, "{entries} entries");
    }
}
