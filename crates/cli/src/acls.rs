//! `once acl add|list|remove`: CreateAcls, DescribeAcls and DeleteAcls over the blocking client,
//! with kafka-acls' option names (`--allow-principal`, `--operation`, `--topic`,
//! `--resource-pattern-type`, …) so an operator's habits carry over.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::*;
use once_acl::{Operation, PatternType, Permission, Principal, ResourceType, CLUSTER_NAME, WILDCARD};

use crate::admin::{check, text, AdminClient};
use crate::client_settings::ClientSettingsArgs;

#[derive(Args)]
pub struct AclArgs {
    /// Broker to talk to, HOST:PORT.
    #[arg(long, global = true, env = "ONCE_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[command(flatten)]
    client_settings: ClientSettingsArgs,
    #[command(subcommand)]
    command: AclCommand,
}

/// Which resources: exactly one of the four (for `list` and `remove`, none means all).
#[derive(Args, Clone, Default)]
struct Resource {
    /// A topic (`*` for every topic with a LITERAL pattern).
    #[arg(long, group = "resource")]
    topic: Option<String>,
    /// A consumer group.
    #[arg(long, group = "resource")]
    group: Option<String>,
    /// A transactional id.
    #[arg(long, group = "resource")]
    transactional_id: Option<String>,
    /// The cluster (CREATE topics, IDEMPOTENT_WRITE, DESCRIBE/ALTER ACLs and users, …).
    #[arg(long, group = "resource")]
    cluster: bool,
    /// How the name selects resources: literal or prefixed (add); also match or any (list, remove)
    /// [default: literal for add, any otherwise].
    #[arg(long, value_name = "TYPE")]
    resource_pattern_type: Option<String>,
}

#[derive(Subcommand)]
enum AclCommand {
    /// Add ACLs: every principal × operation given, on the one resource.
    Add {
        #[command(flatten)]
        resource: Resource,
        /// A principal allowed, User:NAME (repeatable).
        #[arg(long, value_name = "PRINCIPAL")]
        allow_principal: Vec<String>,
        /// A principal denied, User:NAME (repeatable); a DENY wins over any ALLOW.
        #[arg(long, value_name = "PRINCIPAL")]
        deny_principal: Vec<String>,
        /// Operation: Read, Write, Create, Delete, Alter, Describe, ClusterAction, DescribeConfigs,
        /// AlterConfigs, IdempotentWrite, All (repeatable).
        #[arg(long, required = true, value_name = "OPERATION")]
        operation: Vec<String>,
        /// Host (IP address) the ACL applies to [default: * = any].
        #[arg(long, default_value = WILDCARD)]
        host: String,
    },
    /// List ACLs, all or those matching the options.
    List {
        #[command(flatten)]
        resource: Resource,
        /// Only ACLs of this principal.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Remove the ACLs matching the options (at least one option, or --all).
    Remove {
        #[command(flatten)]
        resource: Resource,
        /// Only ACLs of this principal.
        #[arg(long)]
        principal: Option<String>,
        /// Only ACLs of this operation.
        #[arg(long)]
        operation: Option<String>,
        /// Remove every ACL.
        #[arg(long)]
        all: bool,
    },
}

pub fn run(args: AclArgs) -> anyhow::Result<()> {
    let mut client = AdminClient::connect_with(&args.bootstrap, &args.client_settings)?;
    match args.command {
        AclCommand::Add { resource, allow_principal, deny_principal, operation, host } => {
            add(&mut client, &resource, &allow_principal, &deny_principal, &operation, &host)
        }
        AclCommand::List { resource, principal } => list(&mut client, &resource, principal.as_deref()),
        AclCommand::Remove { resource, principal, operation, all } => {
            let filtered = resource.named().is_some() || principal.is_some() || operation.is_some();
            if !filtered && !all {
                bail!("name what to remove (--topic, --principal, --operation, …) or pass --all");
            }
            remove(&mut client, &resource, principal.as_deref(), operation.as_deref())
        }
    }
}

impl Resource {
    /// The resource type and name given, if any.
    fn named(&self) -> Option<(ResourceType, String)> {
        if let Some(topic) = &self.topic {
            return Some((ResourceType::Topic, topic.clone()));
        }
        if let Some(group) = &self.group {
            return Some((ResourceType::Group, group.clone()));
        }
        if let Some(id) = &self.transactional_id {
            return Some((ResourceType::TransactionalId, id.clone()));
        }
        self.cluster.then(|| (ResourceType::Cluster, CLUSTER_NAME.to_string()))
    }

    fn pattern(&self, default: PatternType) -> anyhow::Result<PatternType> {
        match &self.resource_pattern_type {
            None => Ok(default),
            Some(text) => text.parse().map_err(|error| anyhow::anyhow!("--resource-pattern-type: {error}")),
        }
    }
}

fn principal(text: &str) -> anyhow::Result<Principal> {
    text.parse().map_err(|error| anyhow::anyhow!("{error} (expected User:NAME)"))
}

fn add(
    client: &mut AdminClient,
    resource: &Resource,
    allow: &[String],
    deny: &[String],
    operations: &[String],
    host: &str,
) -> anyhow::Result<()> {
    let (resource_type, name) =
        resource.named().context("name the resource: --topic, --group, --transactional-id or --cluster")?;
    let pattern = resource.pattern(PatternType::Literal)?;
    if allow.is_empty() && deny.is_empty() {
        bail!("name at least one --allow-principal or --deny-principal");
    }
    let operations: Vec<Operation> = operations
        .iter()
        .map(|text| text.parse().map_err(|error| anyhow::anyhow!("--operation: {error}")))
        .collect::<anyhow::Result<_>>()?;
    let mut creations = Vec::new();
    let mut described = Vec::new();
    for (principals, permission) in [(allow, Permission::Allow), (deny, Permission::Deny)] {
        for text_principal in principals {
            let who = principal(text_principal)?;
            for operation in &operations {
                described
                    .push(format!("{who} {permission} {operation} from {host} on {pattern} {resource_type} '{name}'"));
                creations.push(
                    AclCreation::default()
                        .with_resource_type(resource_type.code())
                        .with_resource_name(text(&name))
                        .with_resource_pattern_type(pattern.code())
                        .with_principal(text(&who.to_string()))
                        .with_host(text(host))
                        .with_operation(operation.code())
                        .with_permission_type(permission.code()),
                );
            }
        }
    }
    let response = client.call(&CreateAclsRequest::default().with_creations(creations), 3)?;
    anyhow::ensure!(
        response.results.len() == described.len(),
        "the broker answered {} of {} ACLs",
        response.results.len(),
        described.len()
    );
    for (result, what) in response.results.iter().zip(&described) {
        check(result.error_code, result.error_message.as_ref(), &format!("adding {what}"))?;
        println!("added: {what}");
    }
    Ok(())
}

fn list(client: &mut AdminClient, resource: &Resource, principal_filter: Option<&str>) -> anyhow::Result<()> {
    let (resource_type, name) = resource.named().map_or((ResourceType::Any, None), |(kind, name)| (kind, Some(name)));
    let principal_filter = principal_filter.map(principal).transpose()?;
    let request = DescribeAclsRequest::default()
        .with_resource_type_filter(resource_type.code())
        .with_resource_name_filter(name.as_deref().map(text))
        .with_pattern_type_filter(resource.pattern(PatternType::Any)?.code())
        .with_principal_filter(principal_filter.map(|principal| text(&principal.to_string())))
        .with_host_filter(None)
        .with_operation(Operation::Any.code())
        .with_permission_type(Permission::Any.code());
    let response = client.call(&request, 3)?;
    check(response.error_code, response.error_message.as_ref(), "listing ACLs")?;
    println!("PRINCIPAL\tPERMISSION\tOPERATION\tHOST\tRESOURCE\tPATTERN\tNAME");
    for resource in &response.resources {
        for acl in &resource.acls {
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                acl.principal.as_str(),
                name_of(Permission::from_code(acl.permission_type)),
                name_of(Operation::from_code(acl.operation)),
                acl.host.as_str(),
                name_of(ResourceType::from_code(resource.resource_type)),
                name_of(PatternType::from_code(resource.pattern_type)),
                resource.resource_name.as_str()
            );
        }
    }
    Ok(())
}

fn name_of<T: std::fmt::Display>(value: Result<T, once_acl::AclError>) -> String {
    value.map_or_else(|_| "UNKNOWN".to_string(), |value| value.to_string())
}

fn remove(
    client: &mut AdminClient,
    resource: &Resource,
    principal_filter: Option<&str>,
    operation: Option<&str>,
) -> anyhow::Result<()> {
    let (resource_type, name) = resource.named().map_or((ResourceType::Any, None), |(kind, name)| (kind, Some(name)));
    let operation: Operation = match operation {
        Some(text) => text.parse().map_err(|error| anyhow::anyhow!("--operation: {error}"))?,
        None => Operation::Any,
    };
    let principal_filter = principal_filter.map(principal).transpose()?;
    let filter = DeleteAclsFilter::default()
        .with_resource_type_filter(resource_type.code())
        .with_resource_name_filter(name.as_deref().map(text))
        .with_pattern_type_filter(resource.pattern(PatternType::Any)?.code())
        .with_principal_filter(principal_filter.map(|principal| text(&principal.to_string())))
        .with_host_filter(None)
        .with_operation(operation.code())
        .with_permission_type(Permission::Any.code());
    let response = client.call(&DeleteAclsRequest::default().with_filters(vec![filter]), 3)?;
    for result in &response.filter_results {
        check(result.error_code, result.error_message.as_ref(), "removing ACLs")?;
        for acl in &result.matching_acls {
            println!(
                "removed: {} {} {} from {} on {} {} '{}'",
                acl.principal.as_str(),
                name_of(Permission::from_code(acl.permission_type)),
                name_of(Operation::from_code(acl.operation)),
                acl.host.as_str(),
                name_of(PatternType::from_code(acl.pattern_type)),
                name_of(ResourceType::from_code(acl.resource_type)),
                acl.resource_name.as_str()
            );
        }
        if result.matching_acls.is_empty() {
            println!("no ACL matched");
        }
    }
    Ok(())
}
