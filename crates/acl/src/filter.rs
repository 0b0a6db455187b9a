//! [`AclFilter`]: which stored bindings a DescribeAcls or DeleteAcls request selects.

use std::net::IpAddr;

use crate::model::{AclBinding, AclError, Operation, PatternType, Permission, Principal, ResourceType, WILDCARD};

/// How a filter's name is compared with bindings' patterns.
pub type PatternFilter = PatternType;

/// A selection of bindings; `None` and the `Any` values match everything in their field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    /// LITERAL or PREFIXED: bindings of that pattern type whose name equals the filter's. ANY:
    /// bindings of any pattern type whose name equals it. MATCH: every binding that applies to the
    /// resource the name names (its literal name, the literal `*`, and every prefix of it).
    pub pattern: PatternFilter,
    pub principal: Option<Principal>,
    pub host: Option<String>,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclFilter {
    /// The filter that selects every binding.
    pub fn any() -> AclFilter {
        AclFilter {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern: PatternType::Any,
            principal: None,
            host: None,
            operation: Operation::Any,
            permission: Permission::Any,
        }
    }

    /// Checks the filter's own values (a host that is neither `*` nor an address selects nothing, so
    /// it is a mistake worth saying).
    pub fn validate(&self) -> Result<(), AclError> {
        if let Some(host) = &self.host {
            if host != WILDCARD && host.parse::<IpAddr>().is_err() {
                return Err(AclError::Invalid(format!("host '{host}' is neither '*' nor an IP address")));
            }
        }
        Ok(())
    }

    /// Whether the filter selects `binding`.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        self.matches_pattern(binding)
            && self.principal.as_ref().is_none_or(|principal| *principal == binding.principal)
            && self.host.as_ref().is_none_or(|host| *host == binding.host)
            && (self.operation == Operation::Any || self.operation == binding.operation)
            && (self.permission == Permission::Any || self.permission == binding.permission)
    }

    fn matches_pattern(&self, binding: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != binding.resource_type {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return matches!(self.pattern, PatternType::Any | PatternType::Match)
                || self.pattern == binding.pattern_type;
        };
        match self.pattern {
            PatternType::Any => *name == binding.resource_name,
            PatternType::Literal | PatternType::Prefixed => {
                self.pattern == binding.pattern_type && *name == binding.resource_name
            }
            PatternType::Match => binding.selects(binding.resource_type, name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::binding;

    fn named(name: &str, pattern: PatternType) -> AclFilter {
        AclFilter { resource_type: ResourceType::Topic, resource_name: Some(name.into()), pattern, ..AclFilter::any() }
    }

    #[test]
    fn filters_select_as_kafka_does() {
        use PatternType::*;
        use ResourceType::*;
        let literal = binding((Topic, "pay.eu", Literal), "User:a", Operation::Read, Permission::Allow);
        let every = binding((Topic, WILDCARD, Literal), "User:a", Operation::Read, Permission::Allow);
        let prefix = binding((Topic, "pay.", Prefixed), "User:b", Operation::Write, Permission::Deny);
        let group = binding((Group, "pay.eu", Literal), "User:a", Operation::Read, Permission::Allow);
        let all = [&literal, &every, &prefix, &group];
        let selected = |filter: &AclFilter| all.iter().filter(|b| filter.matches(b)).count();
        assert_eq!(selected(&AclFilter::any()), 4);
        assert_eq!(selected(&named("pay.eu", Literal)), 1);
        assert_eq!(selected(&named("pay.", Prefixed)), 1);
        assert_eq!(selected(&named("pay.", Literal)), 0);
        assert_eq!(selected(&named("pay.eu", PatternType::Any)), 1);
        assert_eq!(selected(&named("pay.eu", Match)), 3, "the literal, the wildcard and the prefix apply");
        assert_eq!(selected(&named("other", Match)), 1, "only the wildcard applies");
        let by_principal = AclFilter { principal: Some("User:b".parse().expect("p")), ..AclFilter::any() };
        assert_eq!(selected(&by_principal), 1);
        let by_permission = AclFilter { permission: Permission::Allow, operation: Operation::Read, ..AclFilter::any() };
        assert_eq!(selected(&by_permission), 3);
        let by_type = AclFilter { resource_type: Group, ..AclFilter::any() };
        assert_eq!(selected(&by_type), 1);
        let literal_only = AclFilter { pattern: Literal, ..AclFilter::any() };
        assert_eq!(selected(&literal_only), 3);
        let by_host = AclFilter { host: Some("10.0.0.1".into()), ..AclFilter::any() };
        assert_eq!(selected(&by_host), 0);
        assert!(AclFilter { host: Some("nowhere".into()), ..AclFilter::any() }.validate().is_err());
    }
}
