//! The durable credential store, [`CredentialStore`]: users' SCRAM verifiers in one JSON file.
//!
//! # File
//! ```json
//! {
//!   "format": 1,
//!   "unknown_user_key": "<base64, 32 bytes>",
//!   "users": {
//!     "alice": {
//!       "SCRAM-SHA-512": { "salt": "<base64>", "iterations": 4096,
//!                          "stored_key": "<base64>", "server_key": "<base64>" }
//!     }
//!   }
//! }
//! ```
//! Mode 0600. `unknown_user_key` derives the salts answered for unknown users; it is kept here so
//! that they survive restarts as real users' salts do.
//!
//! # Commit
//! Every change writes the whole file to `<file>.tmp` (created new, mode 0600), fsyncs it, renames
//! it over the file and fsyncs the directory, and only then changes what readers see and returns.
//! The rename is the commit point: a crash before it leaves the old file (and a `.tmp` that the
//! next open deletes), a crash after it the new one; never a mix. A failed write latches the store:
//! after it, what is on disk is unknown (a failed fsync may have lost the data while a retry would
//! "succeed"), so changes are refused until the store is opened again, which reads what is there.
//!
//! Assumed of the disk: fsync of a file makes its contents durable, fsync of a directory makes a
//! rename in it durable, and rename within a directory is atomic (POSIX, and Linux file systems).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::credential::{random_bytes, UNKNOWN_USER_KEY_BYTES};
use crate::{check_user_name, AuthError, CredentialLookup, ScramCredential, ScramMechanism};

/// The most users the store holds. Every change rewrites the whole file, so the file is kept small
/// enough (about 4 MB) that a change stays a few milliseconds.
pub const STORE_USERS_MAX: usize = 10_000;
/// The file format this crate writes and reads.
const FORMAT: u32 = 1;

type Users = BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>;

/// One change of [`CredentialStore::alter`].
#[derive(Debug, Clone)]
pub enum CredentialChange {
    /// Set the user's credential for the mechanism, adding the user if new.
    Upsert { user: String, mechanism: ScramMechanism, credential: ScramCredential },
    /// Remove the user's credential for the mechanism.
    Delete { user: String, mechanism: ScramMechanism },
}

/// Users' SCRAM verifiers, durable in one file; share it behind an `Arc` (all methods take `&self`).
///
/// Reads are served from memory and never wait for a write's fsync. Changes are serialised, each
/// durable before it returns. A second store on the same file, in this process or another, is
/// refused while this one is open (a lock on `<file>.lock`), so two writers cannot lose each
/// other's changes.
pub struct CredentialStore {
    path: PathBuf,
    unknown_user_key: [u8; UNKNOWN_USER_KEY_BYTES],
    /// What readers see: the last state known to be durable.
    users: RwLock<Users>,
    /// Held for a whole change, so changes apply one at a time; true once a write has failed.
    latched: Mutex<bool>,
    /// Held open for the store's lifetime: its lock keeps other stores off the file.
    _lock_file: File,
}

impl CredentialStore {
    /// Opens the store at `path`, creating an empty one (with a fresh unknown-user key) if there is
    /// no file. A file that does not parse, or holds a credential outside Kafka's bounds, is
    /// [`AuthError::CorruptStore`] and is left as it is.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, AuthError> {
        let path = path.into();
        let io_error = |source| AuthError::Io { path: path.clone(), source };
        let lock_file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(sibling(&path, "lock"))
            .map_err(io_error)?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(AuthError::StoreInUse { path: path.clone() });
            }
            Err(TryLockError::Error(source)) => return Err(io_error(source)),
        }
        // A leftover temporary file is a change that crashed before its rename: never committed.
        match fs::remove_file(sibling(&path, "tmp")) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(error)),
        }
        let (unknown_user_key, users) = match fs::read(&path) {
            Ok(bytes) => decode(&bytes).map_err(|reason| AuthError::CorruptStore { path: path.clone(), reason })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let key: [u8; UNKNOWN_USER_KEY_BYTES] = random_bytes(UNKNOWN_USER_KEY_BYTES)?
                    .try_into()
                    .expect("random_bytes answers the length asked for");
                let users = Users::new();
                write_atomically(&path, &encode(&key, &users))?;
                (key, users)
            }
            Err(error) => return Err(io_error(error)),
        };
        Ok(CredentialStore {
            path,
            unknown_user_key,
            users: RwLock::new(users),
            latched: Mutex::new(false),
            _lock_file: lock_file,
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The user's credential for `mechanism`.
    pub fn get(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        users.get(user)?.get(&mechanism).cloned()
    }

    /// Sets the user's credential for `mechanism` (adding the user if new), durably.
    pub fn upsert(&self, user: &str, mechanism: ScramMechanism, credential: ScramCredential) -> Result<(), AuthError> {
        check_user_name(user)?;
        if credential.mechanism() != mechanism {
            return Err(AuthError::InvalidCredential("the credential is for another mechanism"));
        }
        self.change(|users| {
            if !users.contains_key(user) && users.len() >= STORE_USERS_MAX {
                return Err(AuthError::InvalidUser("the credential store holds 10,000 users"));
            }
            let credentials = users.entry(user.to_owned()).or_default();
            let changed = credentials.get(&mechanism) != Some(&credential);
            credentials.insert(mechanism, credential);
            Ok(changed)
        })
        .map(|_changed| ())
    }

    /// Removes the user's credential for `mechanism`, durably; a user left with none is removed.
    /// Answers whether there was one.
    pub fn delete(&self, user: &str, mechanism: ScramMechanism) -> Result<bool, AuthError> {
        self.change(|users| {
            let Some(credentials) = users.get_mut(user) else {
                return Ok(false);
            };
            let removed = credentials.remove(&mechanism).is_some();
            if credentials.is_empty() {
                users.remove(user);
            }
            Ok(removed)
        })
    }

    /// Applies several changes in one durable write: all of them or, on an error, none. What
    /// AlterUserScramCredentials (KIP-554) makes of one request, so a request is one fsync and a
    /// crash cannot keep half of it. A deletion of a credential that is not there changes nothing;
    /// a user left with no credential is removed.
    pub fn alter(&self, changes: &[CredentialChange]) -> Result<(), AuthError> {
        for change in changes {
            if let CredentialChange::Upsert { user, mechanism, credential } = change {
                check_user_name(user)?;
                if credential.mechanism() != *mechanism {
                    return Err(AuthError::InvalidCredential("the credential is for another mechanism"));
                }
            }
        }
        self.change(|users| {
            let mut changed = false;
            for change in changes {
                match change {
                    CredentialChange::Upsert { user, mechanism, credential } => {
                        if !users.contains_key(user) && users.len() >= STORE_USERS_MAX {
                            return Err(AuthError::InvalidUser("the credential store holds 10,000 users"));
                        }
                        let credentials = users.entry(user.clone()).or_default();
                        changed |= credentials.get(mechanism) != Some(credential);
                        credentials.insert(*mechanism, credential.clone());
                    }
                    CredentialChange::Delete { user, mechanism } => {
                        let Some(credentials) = users.get_mut(user) else { continue };
                        changed |= credentials.remove(mechanism).is_some();
                        if credentials.is_empty() {
                            users.remove(user);
                        }
                    }
                }
            }
            Ok(changed)
        })
        .map(|_changed| ())
    }

    /// Every user (sorted) with the mechanisms and iteration counts of its credentials, what
    /// DescribeUserScramCredentials answers.
    pub fn list(&self) -> Vec<(String, Vec<(ScramMechanism, u32)>)> {
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        users
            .iter()
            .map(|(user, credentials)| {
                let described =
                    credentials.iter().map(|(mechanism, credential)| (*mechanism, credential.iterations())).collect();
                (user.clone(), described)
            })
            .collect()
    }

    /// Applies `apply` to a copy of the users and, if it changed something, makes the copy durable
    /// and then visible. `apply` answers whether it changed anything.
    fn change(&self, apply: impl FnOnce(&mut Users) -> Result<bool, AuthError>) -> Result<bool, AuthError> {
        let mut latched = self.latched.lock().unwrap_or_else(PoisonError::into_inner);
        if *latched {
            return Err(AuthError::StoreLatched { path: self.path.clone() });
        }
        let mut users = self.users.read().unwrap_or_else(PoisonError::into_inner).clone();
        if !apply(&mut users)? {
            return Ok(false);
        }
        let bytes = encode(&self.unknown_user_key, &users);
        // The pair of `decode`'s checks at open: what is written must read back as what was meant.
        let read_back = decode(&bytes);
        assert!(
            read_back.as_ref().is_ok_and(|(_, read_users)| *read_users == users),
            "the credential store's encoding must read back unchanged"
        );
        if let Err(error) = write_atomically(&self.path, &bytes) {
            *latched = true;
            return Err(error);
        }
        *self.users.write().unwrap_or_else(PoisonError::into_inner) = users;
        Ok(true)
    }
}

impl CredentialLookup for CredentialStore {
    fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.get(user, mechanism)
    }

    fn unknown_user_key(&self) -> Result<[u8; UNKNOWN_USER_KEY_BYTES], AuthError> {
        Ok(self.unknown_user_key)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    format: u32,
    unknown_user_key: String,
    users: BTreeMap<String, BTreeMap<String, StoredCredential>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredCredential {
    salt: String,
    iterations: u32,
    stored_key: String,
    server_key: String,
}

fn encode(unknown_user_key: &[u8; UNKNOWN_USER_KEY_BYTES], users: &Users) -> Vec<u8> {
    let file = StoreFile {
        format: FORMAT,
        unknown_user_key: BASE64.encode(unknown_user_key),
        users: users
            .iter()
            .map(|(user, credentials)| {
                let credentials = credentials
                    .iter()
                    .map(|(mechanism, credential)| {
                        let stored = StoredCredential {
                            salt: BASE64.encode(credential.salt()),
                            iterations: credential.iterations(),
                            stored_key: BASE64.encode(credential.stored_key()),
                            server_key: BASE64.encode(credential.server_key()),
                        };
                        (mechanism.name().to_owned(), stored)
                    })
                    .collect();
                (user.clone(), credentials)
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).expect("maps of strings always serialise");
    bytes.push(b'\n');
    bytes
}

/// Reads a store file, checking everything `upsert` checks; the error is the reason it is corrupt.
fn decode(bytes: &[u8]) -> Result<([u8; UNKNOWN_USER_KEY_BYTES], Users), String> {
    // Only the kind and place of a JSON error: its text can quote the file, which holds keys.
    let file: StoreFile = serde_json::from_slice(bytes).map_err(|error| {
        format!(
            "not a credential store ({:?} error at line {}, column {})",
            error.classify(),
            error.line(),
            error.column()
        )
    })?;
    if file.format != FORMAT {
        return Err(format!("format {} is not the format this version reads ({FORMAT})", file.format));
    }
    let unknown_user_key = BASE64
        .decode(&file.unknown_user_key)
        .ok()
        .and_then(|key| <[u8; UNKNOWN_USER_KEY_BYTES]>::try_from(key).ok())
        .ok_or("unknown_user_key is not 32 bytes of base64")?;
    if file.users.len() > STORE_USERS_MAX {
        return Err(format!("more than {STORE_USERS_MAX} users"));
    }
    let mut users = Users::new();
    for (user, stored_credentials) in file.users {
        check_user_name(&user).map_err(|error| format!("user {user:?}: {error}"))?;
        if stored_credentials.is_empty() {
            return Err(format!("user {user:?} has no credentials"));
        }
        let mut credentials = BTreeMap::new();
        for (name, stored) in stored_credentials {
            let mechanism =
                ScramMechanism::parse(&name).map_err(|_| format!("user {user:?}: unknown mechanism {name:?}"))?;
            let base64 = |field: &str, value: &str| {
                BASE64.decode(value).map_err(|_| format!("user {user:?} {name}: {field} is not base64"))
            };
            let credential = ScramCredential::from_parts(
                mechanism,
                base64("salt", &stored.salt)?,
                stored.iterations,
                base64("stored_key", &stored.stored_key)?,
                base64("server_key", &stored.server_key)?,
            )
            .map_err(|error| format!("user {user:?} {name}: {error}"))?;
            credentials.insert(mechanism, credential);
        }
        users.insert(user, credentials);
    }
    Ok((unknown_user_key, users))
}

/// `<file name>.<extension>` beside `path`.
fn sibling(path: &Path, extension: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(extension);
    path.with_file_name(name)
}

/// Replaces `path` with `bytes`: temporary file, fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    let temporary = sibling(path, "tmp");
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let written = (|| {
        // create_new: a file already there is another writer's or a leftover, never ours to reuse.
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, path)?;
        File::open(directory)?.sync_all()
    })();
    written.map_err(|source| {
        // Best effort: a temporary file left behind is removed at the next open anyway.
        let _ = fs::remove_file(&temporary);
        AuthError::Io { path: path.to_owned(), source }
    })
}
