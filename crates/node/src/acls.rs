//! [`Authorizer`]: the one access policy every edge consults — whether authorization is on, the
//! super users, and the ACLs, kept durable in `<data>/acls.json`. The decision itself is
//! `once_acl::decide`, a pure function; this module holds its inputs and their file.
//!
//! # File
//! `{"format": 1, "acls": [AclBinding, …]}` (sorted, no duplicates). Every change writes the whole
//! file with [`crate::topics::write_atomically`] (temporary file, fsync, rename, fsync of the
//! directory) and only then changes what requests are decided against: a crash before the rename
//! leaves the old ACLs, after it the new ones. A failed write latches the authorizer: changes are
//! refused until the broker restarts and reads what is on disk (a retried fsync may "succeed" after
//! the data is gone), while requests go on being decided against the last durable ACLs.
//!
//! Authorization off (`--authorization false`, the default) allows every request, and the ACL
//! requests answer SECURITY_DISABLED as Kafka's do without an authorizer: ACLs can then be neither
//! read nor planted by whoever reaches a port, and are kept but not used.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};

use once_acl::{decide, AccessRequest, AclBinding, AclError, AclFilter, Decision, Operation, Principal, ResourceType};
use serde::{Deserialize, Serialize};

use crate::storage::EveryFewSeconds;
use crate::topics::write_atomically;

/// The most ACLs kept: each change rewrites the file, and every request scans them.
pub const ACLS_MAX: usize = 10_000;
const FILE: &str = "acls.json";
const FORMAT: u32 = 1;

/// Why an ACL change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclChangeError {
    /// Authorization is off: ACL requests are not served (Kafka's SECURITY_DISABLED).
    #[error("authorization is not enabled on this broker (--authorization true)")]
    Disabled,
    /// The binding or filter is not acceptable.
    #[error(transparent)]
    Invalid(#[from] AclError),
    /// Too many ACLs.
    #[error("the broker holds {ACLS_MAX} ACLs, the most it keeps")]
    Full,
    /// The file could not be written; changes are refused until a restart.
    #[error("ACL file: {0}")]
    Storage(String),
}

#[derive(Serialize, Deserialize)]
struct AclFile {
    format: u32,
    acls: Vec<AclBinding>,
}

/// Who is asking: the principal a connection authenticated as, and where it connects from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub principal: Principal,
    pub host: Option<IpAddr>,
}

impl Session {
    /// A session of `principal` from `host`.
    pub fn new(principal: Principal, host: Option<IpAddr>) -> Session {
        Session { principal, host }
    }

    /// An unauthenticated session (PLAINTEXT, SSL without a client certificate).
    pub fn anonymous(host: Option<IpAddr>) -> Session {
        Session::new(Principal::anonymous(), host)
    }
}

/// The access policy: on or off, super users, ACLs.
pub struct Authorizer {
    enabled: bool,
    super_users: Vec<Principal>,
    path: PathBuf,
    /// What requests are decided against: the last ACLs known durable.
    acls: RwLock<BTreeSet<AclBinding>>,
    /// Held for a whole change; true once a write failed.
    latched: Mutex<bool>,
    denials_logged: EveryFewSeconds,
    /// Requests (or parts) refused since start, logged or not.
    denials: std::sync::atomic::AtomicU64,
}

impl Authorizer {
    /// Reads `<data_dir>/acls.json` (none: no ACLs). A file that does not parse, or holds a binding
    /// that would not be accepted today, stops the broker with a message rather than be half used.
    pub fn open(data_dir: &Path, enabled: bool, super_users: Vec<Principal>) -> Result<Authorizer, String> {
        let path = data_dir.join(FILE);
        let acls = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: AclFile =
                    serde_json::from_slice(&bytes).map_err(|error| format!("{}: {error}", path.display()))?;
                if file.format != FORMAT {
                    return Err(format!("{}: format {} is not {FORMAT}", path.display(), file.format));
                }
                for binding in &file.acls {
                    binding.validate().map_err(|error| format!("{}: {binding}: {error}", path.display()))?;
                }
                file.acls.into_iter().collect()
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(error) => return Err(format!("{}: {error}", path.display())),
        };
        Ok(Authorizer {
            enabled,
            super_users,
            path,
            acls: RwLock::new(acls),
            latched: Mutex::new(false),
            denials_logged: EveryFewSeconds::new(),
            denials: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Whether requests are checked at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Refusals since start (each refused check that was logged or rate-limited; not filtering).
    pub fn denials(&self) -> u64 {
        self.denials.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The super users.
    pub fn super_users(&self) -> &[Principal] {
        &self.super_users
    }

    /// Whether `session` may do `operation` on the resource; always true with authorization off.
    /// Denials are logged (principal, address, operation, resource), at most every few seconds.
    pub fn allows(&self, session: &Session, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.check(session, operation, resource_type, name, true)
    }

    /// [`Authorizer::allows`] without the log line: for filtering what a principal is shown (the
    /// topics Metadata lists) and for probes a second check follows (CREATE on the cluster, then
    /// on the topic), which Kafka does not log either.
    pub fn permits(&self, session: &Session, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.check(session, operation, resource_type, name, false)
    }

    fn check(
        &self,
        session: &Session,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
        log: bool,
    ) -> bool {
        if !self.enabled {
            return true;
        }
        let request = AccessRequest {
            principal: &session.principal,
            host: session.host,
            operation,
            resource_type,
            resource_name: name,
        };
        let acls = self.acls.read().unwrap_or_else(PoisonError::into_inner);
        let decision = decide(acls.iter(), &self.super_users, &request);
        drop(acls);
        if log && !decision.allowed() {
            self.denials.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(suppressed) = self.denials_logged.due() {
                let reason = match &decision {
                    Decision::DeniedByAcl(binding) => format!("denied by {binding}"),
                    _ => "no ACL allows it".to_string(),
                };
                tracing::info!(
                    principal = %session.principal,
                    host = ?session.host,
                    %operation,
                    // Debug-quoted: the name comes from the client (no forged log lines).
                    resource = ?format!("{resource_type}:{name}"),
                    suppressed,
                    "authorization denied: {reason}"
                );
            }
        }
        decision.allowed()
    }

    /// Whether `session` may do `operation` on at least one resource of `resource_type`: a super
    /// user, or an ALLOW binding for it whose own pattern is not denied. Not logged (a question, not
    /// a request).
    pub fn allows_some(&self, session: &Session, operation: Operation, resource_type: ResourceType) -> bool {
        if !self.enabled || self.super_users.contains(&session.principal) {
            return true;
        }
        let acls = self.acls.read().unwrap_or_else(PoisonError::into_inner);
        acls.iter()
            .filter(|binding| {
                binding.resource_type == resource_type
                    && binding.permission == once_acl::Permission::Allow
                    && (binding.operation == operation || binding.operation == Operation::All)
                    && binding.principal.covers(&session.principal)
                    && binding.covers_host(session.host)
            })
            .any(|binding| {
                let request = AccessRequest {
                    principal: &session.principal,
                    host: session.host,
                    operation,
                    resource_type,
                    resource_name: &binding.resource_name,
                };
                decide(acls.iter(), &self.super_users, &request).allowed()
            })
    }

    /// Adds `bindings` durably; each gets its own outcome (an invalid one does not stop the others).
    /// Adding a binding that exists already succeeds and changes nothing.
    pub fn create(&self, bindings: Vec<AclBinding>) -> Result<Vec<Result<(), AclChangeError>>, AclChangeError> {
        let mut outcomes = Vec::with_capacity(bindings.len());
        self.change(|acls| {
            for binding in bindings {
                let outcome = match binding.validate() {
                    Err(error) => Err(AclChangeError::Invalid(error)),
                    Ok(()) if !acls.contains(&binding) && acls.len() >= ACLS_MAX => Err(AclChangeError::Full),
                    Ok(()) => {
                        acls.insert(binding);
                        Ok(())
                    }
                };
                outcomes.push(outcome);
            }
        })?;
        Ok(outcomes)
    }

    /// The bindings `filter` selects.
    pub fn describe(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, AclChangeError> {
        if !self.enabled {
            return Err(AclChangeError::Disabled);
        }
        filter.validate()?;
        let acls = self.acls.read().unwrap_or_else(PoisonError::into_inner);
        Ok(acls.iter().filter(|binding| filter.matches(binding)).cloned().collect())
    }

    /// Removes, durably, the bindings each filter selects; answers what each filter removed.
    pub fn delete(
        &self,
        filters: &[AclFilter],
    ) -> Result<Vec<Result<Vec<AclBinding>, AclChangeError>>, AclChangeError> {
        let mut outcomes = Vec::with_capacity(filters.len());
        self.change(|acls| {
            for filter in filters {
                let outcome = filter.validate().map_err(AclChangeError::Invalid).map(|()| {
                    let removed: Vec<AclBinding> =
                        acls.iter().filter(|binding| filter.matches(binding)).cloned().collect();
                    for binding in &removed {
                        acls.remove(binding);
                    }
                    removed
                });
                outcomes.push(outcome);
            }
        })?;
        Ok(outcomes)
    }

    /// Applies `edit` to a copy of the ACLs, makes the result durable, then lets requests see it.
    fn change(&self, edit: impl FnOnce(&mut BTreeSet<AclBinding>)) -> Result<(), AclChangeError> {
        if !self.enabled {
            return Err(AclChangeError::Disabled);
        }
        let mut latched = self.latched.lock().unwrap_or_else(PoisonError::into_inner);
        if *latched {
            return Err(AclChangeError::Storage("an earlier write failed; restart the broker".into()));
        }
        let mut next = self.acls.read().unwrap_or_else(PoisonError::into_inner).clone();
        let before = next.len();
        edit(&mut next);
        assert!(next.len() <= ACLS_MAX.max(before), "the ACL bound holds after a change");
        if *self.acls.read().unwrap_or_else(PoisonError::into_inner) == next {
            return Ok(());
        }
        let file = AclFile { format: FORMAT, acls: next.iter().cloned().collect() };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|error| AclChangeError::Storage(error.to_string()))?;
        if let Err(error) = write_atomically(&self.path, &bytes) {
            *latched = true;
            tracing::error!(path = %self.path.display(), %error, "writing the ACLs failed; ACL changes are refused until restart");
            return Err(AclChangeError::Storage(error.to_string()));
        }
        *self.acls.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use once_acl::{PatternType, Permission, CLUSTER_NAME, WILDCARD};

    use super::*;

    fn allow(principal: &str, operation: Operation, resource_type: ResourceType, name: &str) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.into(),
            pattern_type: PatternType::Literal,
            principal: principal.parse().expect("principal"),
            host: WILDCARD.into(),
            operation,
            permission: Permission::Allow,
        }
    }

    fn alice() -> Session {
        Session::new(Principal::user("alice"), Some("127.0.0.1".parse().expect("ip")))
    }

    #[test]
    fn off_allows_everything_and_serves_no_acl_requests() {
        let dir = tempfile::tempdir().expect("dir");
        let authorizer = Authorizer::open(dir.path(), false, Vec::new()).expect("opens");
        assert!(authorizer.allows(&alice(), Operation::Write, ResourceType::Topic, "t"));
        let binding = allow("User:*", Operation::All, ResourceType::Topic, WILDCARD);
        assert_eq!(authorizer.create(vec![binding]), Err(AclChangeError::Disabled));
        assert_eq!(authorizer.describe(&AclFilter::any()), Err(AclChangeError::Disabled));
        assert!(!dir.path().join(FILE).exists(), "nothing planted");
    }

    #[test]
    fn acls_survive_a_restart_and_deletes_are_durable() {
        let dir = tempfile::tempdir().expect("dir");
        let session = alice();
        {
            let authorizer = Authorizer::open(dir.path(), true, Vec::new()).expect("opens");
            assert!(!authorizer.allows(&session, Operation::Write, ResourceType::Topic, "t"), "deny by default");
            let write = allow("User:alice", Operation::Write, ResourceType::Topic, "t");
            let invalid = allow("User:alice", Operation::Write, ResourceType::Cluster, "not-the-cluster");
            let outcomes = authorizer.create(vec![write.clone(), invalid, write]).expect("written");
            assert!(outcomes[0].is_ok() && outcomes[1].is_err() && outcomes[2].is_ok(), "{outcomes:?}");
            assert!(authorizer.allows(&session, Operation::Write, ResourceType::Topic, "t"));
            assert_eq!(authorizer.describe(&AclFilter::any()).expect("describe").len(), 1);
        }
        let authorizer = Authorizer::open(dir.path(), true, Vec::new()).expect("reopens");
        assert!(authorizer.allows(&session, Operation::Write, ResourceType::Topic, "t"), "kept across a restart");
        let removed = authorizer.delete(&[AclFilter::any()]).expect("deleted");
        assert_eq!(removed[0].as_ref().map(Vec::len), Ok(1));
        drop(authorizer);
        let authorizer = Authorizer::open(dir.path(), true, Vec::new()).expect("reopens");
        assert!(!authorizer.allows(&session, Operation::Write, ResourceType::Topic, "t"), "the delete was durable");
    }

    #[test]
    fn super_users_and_corrupt_files() {
        let dir = tempfile::tempdir().expect("dir");
        let authorizer = Authorizer::open(dir.path(), true, vec![Principal::user("alice")]).expect("opens");
        assert!(authorizer.allows(&alice(), Operation::Alter, ResourceType::Cluster, CLUSTER_NAME));
        std::fs::write(dir.path().join(FILE), b"{\"format\":1,\"acls\":[{\"nonsense\":1}]}").expect("write");
        let error = Authorizer::open(dir.path(), true, Vec::new()).err().expect("refused");
        assert!(error.contains("acls.json"), "{error}");
    }
}
