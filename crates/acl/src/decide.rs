//! [`decide`]: whether one request may be done, as a pure function of the bindings, the super users
//! and the request.

use std::net::IpAddr;

use crate::model::{AclBinding, Operation, Permission, Principal, ResourceType};

/// One thing a principal wants to do.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    pub principal: &'a Principal,
    /// The client's address; `None` when unknown (then only `*` hosts match).
    pub host: Option<IpAddr>,
    pub operation: Operation,
    pub resource_type: ResourceType,
    pub resource_name: &'a str,
}

/// What [`decide`] decided, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The principal is a super user.
    AllowedSuperUser,
    /// This ALLOW binding matched and no DENY did.
    Allowed(AclBinding),
    /// This DENY binding matched.
    DeniedByAcl(AclBinding),
    /// No binding allows it (deny by default).
    DeniedNoAllow,
}

impl Decision {
    /// Whether the request may go ahead.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::AllowedSuperUser | Decision::Allowed(_))
    }
}

/// Decides `request` against `bindings` (every stored binding, in any order) and `super_users`.
///
/// A DENY that matches wins over any ALLOW; an ALLOW matches the operation itself, ALL, or an
/// operation that implies it ([`Operation::implied_by`]); nothing matching denies. A DENY matches
/// the operation or ALL only: denying READ does not deny DESCRIBE.
pub fn decide<'b>(
    bindings: impl IntoIterator<Item = &'b AclBinding>,
    super_users: &[Principal],
    request: &AccessRequest<'_>,
) -> Decision {
    assert!(
        !matches!(request.operation, Operation::Any | Operation::All),
        "a request names one concrete operation, not {}",
        request.operation
    );
    assert!(!matches!(request.resource_type, ResourceType::Any), "a request names one resource type");
    if super_users.iter().any(|user| user == request.principal) {
        return Decision::AllowedSuperUser;
    }
    let mut allowing: Option<&AclBinding> = None;
    for binding in bindings {
        if !binding.selects(request.resource_type, request.resource_name)
            || !binding.principal.covers(request.principal)
            || !binding.covers_host(request.host)
        {
            continue;
        }
        let exact = binding.operation == request.operation || binding.operation == Operation::All;
        match binding.permission {
            Permission::Deny if exact => return Decision::DeniedByAcl(binding.clone()),
            Permission::Allow if exact || request.operation.implied_by().contains(&binding.operation) => {
                allowing.get_or_insert(binding);
            }
            _ => {}
        }
    }
    match allowing {
        Some(binding) => Decision::Allowed(binding.clone()),
        None => Decision::DeniedNoAllow,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::tests::binding;
    use crate::model::{PatternType, CLUSTER_NAME, WILDCARD};

    fn ask<'a>(
        principal: &'a Principal,
        operation: Operation,
        resource_type: ResourceType,
        name: &'a str,
    ) -> AccessRequest<'a> {
        AccessRequest {
            principal,
            host: Some("127.0.0.1".parse().expect("ip")),
            operation,
            resource_type,
            resource_name: name,
        }
    }

    #[test]
    fn nothing_stored_denies_everyone_but_super_users() {
        let alice = Principal::user("alice");
        let request = ask(&alice, Operation::Write, ResourceType::Topic, "orders");
        assert_eq!(decide(&[], &[], &request), Decision::DeniedNoAllow);
        assert_eq!(decide(&[], &[Principal::user("alice")], &request), Decision::AllowedSuperUser);
        assert_eq!(decide(&[], &[Principal::user("bob")], &request), Decision::DeniedNoAllow);
    }

    #[test]
    fn allow_then_deny_wins() {
        use PatternType::*;
        use ResourceType::*;
        let alice = Principal::user("alice");
        let allow = binding((Topic, "orders", Literal), "User:alice", Operation::Write, Permission::Allow);
        let request = ask(&alice, Operation::Write, Topic, "orders");
        assert_eq!(decide([&allow], &[], &request), Decision::Allowed(allow.clone()));
        assert_eq!(decide([&allow], &[], &ask(&alice, Operation::Read, Topic, "orders")), Decision::DeniedNoAllow);
        assert_eq!(decide([&allow], &[], &ask(&alice, Operation::Write, Topic, "orders2")), Decision::DeniedNoAllow);
        let bob = Principal::user("bob");
        assert_eq!(decide([&allow], &[], &ask(&bob, Operation::Write, Topic, "orders")), Decision::DeniedNoAllow);
        // A DENY for everyone on every topic overrides alice's ALLOW, whatever the order.
        let deny = binding((Topic, WILDCARD, Literal), "User:*", Operation::All, Permission::Deny);
        assert_eq!(decide([&allow, &deny], &[], &request), Decision::DeniedByAcl(deny.clone()));
        assert_eq!(decide([&deny, &allow], &[], &request), Decision::DeniedByAcl(deny.clone()));
        // ... but not a super user's.
        assert_eq!(decide([&deny], std::slice::from_ref(&alice), &request), Decision::AllowedSuperUser);
    }

    #[test]
    fn implied_operations() {
        use PatternType::*;
        use ResourceType::*;
        let alice = Principal::user("alice");
        for implying in [Operation::Read, Operation::Write, Operation::Delete, Operation::Alter, Operation::All] {
            let allow = binding((Topic, "t", Literal), "User:alice", implying, Permission::Allow);
            assert!(decide([&allow], &[], &ask(&alice, Operation::Describe, Topic, "t")).allowed(), "{implying}");
        }
        let alter_configs = binding((Topic, "t", Literal), "User:alice", Operation::AlterConfigs, Permission::Allow);
        assert!(decide([&alter_configs], &[], &ask(&alice, Operation::DescribeConfigs, Topic, "t")).allowed());
        // Implication goes one way only.
        let describe = binding((Topic, "t", Literal), "User:alice", Operation::Describe, Permission::Allow);
        assert!(!decide([&describe], &[], &ask(&alice, Operation::Read, Topic, "t")).allowed());
        // A DENY of READ leaves DESCRIBE allowed by WRITE: deny matches exactly.
        let write = binding((Topic, "t", Literal), "User:alice", Operation::Write, Permission::Allow);
        let deny_read = binding((Topic, "t", Literal), "User:alice", Operation::Read, Permission::Deny);
        assert!(decide([&write, &deny_read], &[], &ask(&alice, Operation::Describe, Topic, "t")).allowed());
        assert!(!decide([&write, &deny_read], &[], &ask(&alice, Operation::Read, Topic, "t")).allowed());
    }

    #[test]
    fn hosts() {
        use PatternType::*;
        use ResourceType::*;
        let alice = Principal::user("alice");
        let mut allow = binding((Cluster, CLUSTER_NAME, Literal), "User:alice", Operation::Alter, Permission::Allow);
        allow.host = "10.0.0.1".into();
        let request = ask(&alice, Operation::Alter, Cluster, CLUSTER_NAME);
        assert!(!decide([&allow], &[], &request).allowed(), "from 127.0.0.1");
        let from_there = AccessRequest { host: Some("10.0.0.1".parse().expect("ip")), ..request };
        assert!(decide([&allow], &[], &from_there).allowed());
        let unknown = AccessRequest { host: None, ..request };
        assert!(!decide([&allow], &[], &unknown).allowed());
    }

    fn operation() -> impl Strategy<Value = Operation> {
        proptest::sample::select(&Operation::ALL_VALUES[1..])
    }

    proptest! {
        /// Adding a DENY never turns a denial into an allowance; adding an ALLOW never turns an
        /// allowance into a denial; without any ALLOW nothing is allowed (but for super users).
        #[test]
        fn monotone(
            names in proptest::collection::vec("[ab]{0,2}", 1..6),
            operations in proptest::collection::vec(operation(), 1..6),
            allows in proptest::collection::vec(any::<bool>(), 1..6),
            prefixed in proptest::collection::vec(any::<bool>(), 1..6),
            asked in "[ab]{1,3}",
            asked_operation in proptest::sample::select(&Operation::ALL_VALUES[2..]),
        ) {
            let alice = Principal::user("alice");
            let bindings: Vec<AclBinding> = names.iter().zip(&operations).zip(&allows).zip(&prefixed)
                .map(|(((name, operation), allow), prefixed)| {
                    let pattern = if *prefixed { PatternType::Prefixed } else { PatternType::Literal };
                    let name = if name.is_empty() { WILDCARD } else { name.as_str() };
                    let permission = if *allow { Permission::Allow } else { Permission::Deny };
                    binding((ResourceType::Topic, name, pattern), "User:alice", *operation, permission)
                })
                .collect();
            let request = ask(&alice, asked_operation, ResourceType::Topic, &asked);
            let before = decide(&bindings, &[], &request).allowed();
            if !bindings.iter().any(|binding| binding.permission == Permission::Allow) {
                prop_assert!(!before);
            }
            let mut with_deny = bindings.clone();
            with_deny.push(binding((ResourceType::Topic, &asked, PatternType::Literal), "User:*", asked_operation, Permission::Deny));
            prop_assert!(!decide(&with_deny, &[], &request).allowed());
            let mut with_allow = bindings.clone();
            with_allow.push(binding((ResourceType::Topic, &asked, PatternType::Literal), "User:alice", asked_operation, Permission::Allow));
            if before {
                prop_assert!(decide(&with_allow, &[], &request).allowed());
            }
            prop_assert!(decide(&with_deny, std::slice::from_ref(&alice), &request).allowed());
        }
    }
}
