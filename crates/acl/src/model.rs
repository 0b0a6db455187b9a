//! Kafka's ACL vocabulary, with the numbers the protocol gives each value, and [`AclBinding`]: one
//! rule "PRINCIPAL from HOST is ALLOWED/DENIED OPERATION on RESOURCES".

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The resource name and host that match everything (a LITERAL `*` pattern; any host).
pub const WILDCARD: &str = "*";
/// The one name of the Cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The longest resource name or principal accepted (Kafka bounds neither; this keeps the file small).
const NAME_BYTES_MAX: usize = 1024;

/// Why a binding or filter is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("unknown {what} {value}")]
    Unknown { what: &'static str, value: String },
    #[error("invalid ACL: {0}")]
    Invalid(String),
}

macro_rules! kafka_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident = $code:literal, $text:literal;)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($variant,)* }

        impl $name {
            /// Every value, in the protocol's order.
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant,)*];

            /// The protocol's number for it.
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code,)* }
            }

            /// The value for a protocol number.
            pub fn from_code(code: i8) -> Result<Self, AclError> {
                match code {
                    $($code => Ok($name::$variant),)*
                    _ => Err(AclError::Unknown { what: $what, value: code.to_string() }),
                }
            }

            /// Kafka's name for it (as kafka-acls and the Java admin client print it).
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }

        impl FromStr for $name {
            type Err = AclError;
            /// Kafka's name, any case, `-` taken as `_` (`describe-configs`, `Describe_Configs`).
            fn from_str(text: &str) -> Result<Self, AclError> {
                let wanted = text.trim().to_ascii_uppercase().replace('-', "_");
                $(if wanted == $text || wanted == $text.replace('_', "") { return Ok($name::$variant); })*
                Err(AclError::Unknown { what: $what, value: text.to_string() })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.name())
            }
        }
    };
}

kafka_enum!(
    /// What a binding is about. `Any` appears only in filters.
    ResourceType, "resource type" {
        Any = 1, "ANY";
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        User = 7, "USER";
    }
);

kafka_enum!(
    /// How a binding's name selects resources. `Any` and `Match` appear only in filters.
    PatternType, "pattern type" {
        Any = 1, "ANY";
        Match = 2, "MATCH";
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
);

kafka_enum!(
    /// What a principal does. `Any` appears only in filters; `All` in a binding means every operation.
    Operation, "operation" {
        Any = 1, "ANY";
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
);

kafka_enum!(
    /// Whether a binding allows or denies. `Any` appears only in filters.
    Permission, "permission" {
        Any = 1, "ANY";
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

impl Operation {
    /// The operations whose ALLOW also allows this one (besides itself and ALL): Kafka lets READ,
    /// WRITE, DELETE and ALTER imply DESCRIBE, and ALTER_CONFIGS imply DESCRIBE_CONFIGS.
    pub fn implied_by(self) -> &'static [Operation] {
        match self {
            Operation::Describe => &[Operation::Read, Operation::Write, Operation::Delete, Operation::Alter],
            Operation::DescribeConfigs => &[Operation::AlterConfigs],
            _ => &[],
        }
    }

    /// The operations Kafka defines for a resource type (what DescribeAcls' authorized-operation
    /// bit sets and CreateAcls accept beside ALL).
    pub fn for_resource(resource_type: ResourceType) -> &'static [Operation] {
        use Operation::*;
        match resource_type {
            ResourceType::Topic => &[Read, Write, Create, Delete, Alter, Describe, DescribeConfigs, AlterConfigs],
            ResourceType::Group => &[Read, Describe, Delete],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
                CreateTokens,
                DescribeTokens,
            ],
            ResourceType::TransactionalId => &[Describe, Write],
            ResourceType::DelegationToken => &[Describe],
            ResourceType::User => &[CreateTokens, DescribeTokens],
            ResourceType::Any => &[],
        }
    }
}

/// Who: `TYPE:NAME`, e.g. `User:alice`; `User:*` in a binding means every user.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Principal {
    kind: String,
    name: String,
}

impl Principal {
    /// The principal of a connection that has not authenticated (PLAINTEXT, or SSL without a client
    /// certificate), as Kafka names it.
    pub fn anonymous() -> Principal {
        Principal::user("ANONYMOUS")
    }

    /// `User:NAME`.
    pub fn user(name: &str) -> Principal {
        Principal { kind: "User".to_string(), name: name.to_string() }
    }

    /// The principal type (`User`).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The name after the type.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is `TYPE:*`, which matches every principal of its type in a binding.
    pub fn is_wildcard(&self) -> bool {
        self.name == WILDCARD
    }

    /// Whether a binding for `self` applies to a request by `who`.
    pub fn covers(&self, who: &Principal) -> bool {
        self.kind == who.kind && (self.name == who.name || self.is_wildcard())
    }
}

impl FromStr for Principal {
    type Err = AclError;
    fn from_str(text: &str) -> Result<Self, AclError> {
        let (kind, name) =
            text.split_once(':').ok_or_else(|| AclError::Invalid(format!("principal '{text}' is not TYPE:NAME")))?;
        if kind.is_empty() || name.is_empty() || text.len() > NAME_BYTES_MAX {
            return Err(AclError::Invalid(format!("principal '{text}' is not TYPE:NAME")));
        }
        Ok(Principal { kind: kind.to_string(), name: name.to_string() })
    }
}

impl TryFrom<String> for Principal {
    type Error = AclError;
    fn try_from(text: String) -> Result<Self, AclError> {
        text.parse()
    }
}

impl From<Principal> for String {
    fn from(principal: Principal) -> String {
        principal.to_string()
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.kind, self.name)
    }
}

/// One rule: `principal` connecting from `host` is `permission` to do `operation` on the resources
/// of `resource_type` that `pattern_type` + `resource_name` select.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    pub principal: Principal,
    /// An IP address, or `*` for any.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// Checks that the binding can be stored, as CreateAcls does: concrete values only (no ANY or
    /// MATCH), an operation the resource type has, the cluster's own name, a host that is `*` or an
    /// IP address.
    pub fn validate(&self) -> Result<(), AclError> {
        let invalid = |reason: String| Err(AclError::Invalid(reason));
        if matches!(self.resource_type, ResourceType::Any) {
            return invalid("the resource type must not be ANY".into());
        }
        if !matches!(self.pattern_type, PatternType::Literal | PatternType::Prefixed) {
            return invalid(format!("the pattern type must be LITERAL or PREFIXED, not {}", self.pattern_type));
        }
        if matches!(self.permission, Permission::Any) {
            return invalid("the permission must be ALLOW or DENY".into());
        }
        if self.operation != Operation::All && !Operation::for_resource(self.resource_type).contains(&self.operation) {
            return invalid(format!("{} is not an operation on a {}", self.operation, self.resource_type));
        }
        if self.resource_name.is_empty() || self.resource_name.len() > NAME_BYTES_MAX {
            return invalid("the resource name must be 1 to 1024 bytes".into());
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return invalid(format!("the cluster resource's name is {CLUSTER_NAME}"));
        }
        if self.pattern_type == PatternType::Prefixed && self.resource_name == WILDCARD {
            return invalid("a PREFIXED pattern of '*' is not allowed: use LITERAL '*' for every resource".into());
        }
        if self.principal.kind() != "User" {
            return invalid(format!("principal type '{}' is not supported (only User)", self.principal.kind()));
        }
        if self.host != WILDCARD && self.host.parse::<IpAddr>().is_err() {
            return invalid(format!("host '{}' is neither '*' nor an IP address", self.host));
        }
        Ok(())
    }

    /// Whether this binding's pattern selects the resource `resource_type`/`name`.
    pub fn selects(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => self.resource_name == name || self.resource_name == WILDCARD,
                PatternType::Prefixed => name.starts_with(&self.resource_name),
                PatternType::Any | PatternType::Match => false,
            }
    }

    /// Whether the binding's host applies to a connection from `host`.
    /// Addresses compare in canonical form: an IPv4 client on a dual-stack listener
    /// (`::ffff:10.0.0.1`) is the binding's `10.0.0.1`, as Java shows it to Kafka's authorizer.
    pub fn covers_host(&self, host: Option<IpAddr>) -> bool {
        self.host == WILDCARD
            || host.is_some_and(|host| {
                self.host.parse::<IpAddr>().is_ok_and(|own| own.to_canonical() == host.to_canonical())
            })
    }
}

impl fmt::Display for AclBinding {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} {} {} from host {} on {} {} '{}'",
            self.principal,
            self.permission,
            self.operation,
            self.host,
            self.pattern_type,
            self.resource_type,
            self.resource_name
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn binding(
        resource: (ResourceType, &str, PatternType),
        principal: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: resource.0,
            resource_name: resource.1.to_string(),
            pattern_type: resource.2,
            principal: principal.parse().expect("principal"),
            host: WILDCARD.to_string(),
            operation,
            permission,
        }
    }

    #[test]
    fn codes_and_names_round_trip() {
        for value in Operation::ALL_VALUES {
            assert_eq!(Operation::from_code(value.code()), Ok(*value));
            assert_eq!(value.name().parse::<Operation>(), Ok(*value));
        }
        for value in ResourceType::ALL_VALUES {
            assert_eq!(ResourceType::from_code(value.code()), Ok(*value));
        }
        assert_eq!("describe-configs".parse::<Operation>(), Ok(Operation::DescribeConfigs));
        assert_eq!("TransactionalId".parse::<ResourceType>(), Ok(ResourceType::TransactionalId));
        assert!(Operation::from_code(0).is_err(), "UNKNOWN is not an operation one may name");
        assert!("frobnicate".parse::<Operation>().is_err());
    }

    #[test]
    fn principals() {
        let alice: Principal = "User:alice".parse().expect("parses");
        assert_eq!(alice.to_string(), "User:alice");
        assert!("User:*".parse::<Principal>().expect("wildcard").covers(&alice));
        assert!(!"User:bob".parse::<Principal>().expect("bob").covers(&alice));
        assert!(!"Group:*".parse::<Principal>().expect("other type").covers(&alice));
        assert!("alice".parse::<Principal>().is_err());
        assert!("User:".parse::<Principal>().is_err());
        // A distinguished name has commas and equals signs but one colon-free type.
        let dn: Principal = "User:CN=alice,OU=eng".parse().expect("dn");
        assert_eq!(dn.name(), "CN=alice,OU=eng");
    }

    #[test]
    fn validation_refuses_what_cannot_be_stored() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        assert!(binding((Topic, "orders", Literal), "User:a", Write, Allow).validate().is_ok());
        assert!(binding((Topic, "orders.", Prefixed), "User:a", All, Deny).validate().is_ok());
        assert!(binding((Cluster, CLUSTER_NAME, Literal), "User:a", IdempotentWrite, Allow).validate().is_ok());
        let refused = [
            binding((ResourceType::Any, "x", Literal), "User:a", Read, Allow),
            binding((Topic, "x", Match), "User:a", Read, Allow),
            binding((Topic, "x", PatternType::Any), "User:a", Read, Allow),
            binding((Topic, "x", Literal), "User:a", Operation::Any, Allow),
            binding((Topic, "x", Literal), "User:a", Read, Permission::Any),
            binding((Group, "g", Literal), "User:a", Write, Allow),
            binding((Cluster, "other", Literal), "User:a", Alter, Allow),
            binding((Topic, "*", Prefixed), "User:a", Read, Allow),
            binding((Topic, "", Literal), "User:a", Read, Allow),
            binding((Topic, "x", Literal), "Group:a", Read, Allow),
        ];
        for binding in refused {
            assert!(binding.validate().is_err(), "{binding} must be refused");
        }
        let mut bad_host = binding((Topic, "x", Literal), "User:a", Read, Allow);
        bad_host.host = "example.com".into();
        assert!(bad_host.validate().is_err());
        bad_host.host = "::1".into();
        assert!(bad_host.validate().is_ok());
        // An IPv4 client seen through a dual-stack socket is the same host.
        bad_host.host = "10.0.0.1".into();
        assert!(bad_host.covers_host(Some("::ffff:10.0.0.1".parse().expect("mapped"))));
        bad_host.host = "::ffff:10.0.0.1".into();
        assert!(bad_host.covers_host(Some("10.0.0.1".parse().expect("v4"))));
        assert!(!bad_host.covers_host(Some("10.0.0.2".parse().expect("v4"))));
        assert!(!bad_host.covers_host(None));
    }

    #[test]
    fn patterns_select_resources() {
        use PatternType::*;
        use ResourceType::*;
        let literal = binding((Topic, "orders", Literal), "User:a", Operation::Read, Permission::Allow);
        assert!(literal.selects(Topic, "orders"));
        assert!(!literal.selects(Topic, "orders2"));
        assert!(!literal.selects(Group, "orders"));
        let every = binding((Topic, WILDCARD, Literal), "User:a", Operation::Read, Permission::Allow);
        assert!(every.selects(Topic, "anything"));
        let prefixed = binding((Topic, "pay.", Prefixed), "User:a", Operation::Read, Permission::Allow);
        assert!(prefixed.selects(Topic, "pay.eu"));
        assert!(prefixed.selects(Topic, "pay."));
        assert!(!prefixed.selects(Topic, "pay"));
        assert!(!prefixed.selects(Topic, "xpay.eu"));
    }
}
