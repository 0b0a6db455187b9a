//! CreateAcls, DescribeAcls, DeleteAcls (KIP-11, KIP-290's patterns): translation between the
//! protocol's numbered fields and `once_acl`'s types; the node's [`once_node::Authorizer`] stores
//! and decides. Changing ACLs takes ALTER on the cluster, reading them DESCRIBE (Kafka's rule).

use std::collections::BTreeMap;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use once_acl::{AclBinding, AclError, AclFilter, Operation, PatternType, Permission, Principal, ResourceType};
use once_node::acls::AclChangeError;
use once_node::Node;
use once_wire::ResponseError;

use super::str_bytes;
use crate::access::Access;

/// The code and message for a refused change or description.
fn change_error(error: &AclChangeError) -> (ResponseError, String) {
    let code = match error {
        AclChangeError::Disabled => ResponseError::SecurityDisabled,
        AclChangeError::Invalid(_) => ResponseError::InvalidRequest,
        AclChangeError::Full => ResponseError::PolicyViolation,
        AclChangeError::Storage(_) => ResponseError::KafkaStorageError,
    };
    (code, error.to_string())
}

fn refused() -> (ResponseError, String) {
    (ResponseError::ClusterAuthorizationFailed, "changing ACLs needs ALTER on the cluster".into())
}

fn binding(creation: &create_acls_request::AclCreation) -> Result<AclBinding, AclError> {
    Ok(AclBinding {
        resource_type: ResourceType::from_code(creation.resource_type)?,
        resource_name: creation.resource_name.to_string(),
        pattern_type: PatternType::from_code(creation.resource_pattern_type)?,
        principal: creation.principal.parse::<Principal>()?,
        host: creation.host.to_string(),
        operation: Operation::from_code(creation.operation)?,
        permission: Permission::from_code(creation.permission_type)?,
    })
}

/// A filter from the fields DescribeAcls and DeleteAcls share.
fn filter(
    resource_type: i8,
    name: &Option<StrBytes>,
    pattern: i8,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, AclError> {
    let filter = AclFilter {
        resource_type: ResourceType::from_code(resource_type)?,
        resource_name: name.as_ref().map(|name| name.to_string()),
        pattern: PatternType::from_code(pattern)?,
        principal: principal.as_ref().map(|principal| principal.parse::<Principal>()).transpose()?,
        host: host.as_ref().map(|host| host.to_string()),
        operation: Operation::from_code(operation)?,
        permission: Permission::from_code(permission)?,
    };
    filter.validate()?;
    Ok(filter)
}

fn delete_filter(wire: &DeleteAclsFilter) -> Result<AclFilter, AclError> {
    filter(
        wire.resource_type_filter,
        &wire.resource_name_filter,
        wire.pattern_type_filter,
        &wire.principal_filter,
        &wire.host_filter,
        wire.operation,
        wire.permission_type,
    )
}

pub fn create(node: &Node, access: &Access, request: CreateAclsRequest) -> ResponseKind {
    let count = request.creations.len();
    let answer = |(code, message): (ResponseError, String)| {
        AclCreationResult::default().with_error_code(code.code()).with_error_message(Some(str_bytes(&message)))
    };
    let results: Vec<AclCreationResult> = if !node.authorizer.enabled() {
        vec![answer(change_error(&AclChangeError::Disabled)); count]
    } else if !access.cluster(Operation::Alter) {
        vec![answer(refused()); count]
    } else {
        // Parse all first: the valid ones are stored in one durable write.
        let parsed: Vec<Result<AclBinding, AclError>> = request.creations.iter().map(binding).collect();
        let valid: Vec<AclBinding> = parsed.iter().filter_map(|parsed| parsed.as_ref().ok().cloned()).collect();
        for binding in &valid {
            tracing::info!(principal = %access.session().principal, acl = ?binding.to_string(), "CreateAcls");
        }
        match node.authorizer.create(valid) {
            Err(error) => vec![answer(change_error(&error)); count],
            Ok(stored) => {
                let mut stored = stored.into_iter();
                parsed
                    .iter()
                    .map(|parsed| match parsed {
                        Err(error) => answer(change_error(&AclChangeError::Invalid(error.clone()))),
                        Ok(_) => match stored.next().expect("one outcome per valid binding") {
                            Ok(()) => AclCreationResult::default(),
                            Err(error) => answer(change_error(&error)),
                        },
                    })
                    .collect()
            }
        }
    };
    assert_eq!(results.len(), count, "one result per creation, in order");
    ResponseKind::CreateAcls(CreateAclsResponse::default().with_results(results))
}

pub fn describe(node: &Node, access: &Access, request: DescribeAclsRequest) -> ResponseKind {
    let failed = |(code, message): (ResponseError, String)| {
        ResponseKind::DescribeAcls(
            DescribeAclsResponse::default().with_error_code(code.code()).with_error_message(Some(str_bytes(&message))),
        )
    };
    if !node.authorizer.enabled() {
        return failed(change_error(&AclChangeError::Disabled));
    }
    if !access.cluster(Operation::Describe) {
        return failed((
            ResponseError::ClusterAuthorizationFailed,
            "describing ACLs needs DESCRIBE on the cluster".into(),
        ));
    }
    let selection = filter(
        request.resource_type_filter,
        &request.resource_name_filter,
        request.pattern_type_filter,
        &request.principal_filter,
        &request.host_filter,
        request.operation,
        request.permission_type,
    );
    let bindings = match selection.map_err(AclChangeError::Invalid).and_then(|filter| node.authorizer.describe(&filter))
    {
        Ok(bindings) => bindings,
        Err(error) => return failed(change_error(&error)),
    };
    let mut resources: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for binding in bindings {
        resources
            .entry((binding.resource_type.code(), binding.resource_name.clone(), binding.pattern_type.code()))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(str_bytes(&binding.principal.to_string()))
                    .with_host(str_bytes(&binding.host))
                    .with_operation(binding.operation.code())
                    .with_permission_type(binding.permission.code()),
            );
    }
    let resources = resources
        .into_iter()
        .map(|((resource_type, name, pattern_type), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(str_bytes(&name))
                .with_pattern_type(pattern_type)
                .with_acls(acls)
        })
        .collect();
    ResponseKind::DescribeAcls(DescribeAclsResponse::default().with_resources(resources))
}

pub fn delete(node: &Node, access: &Access, request: DeleteAclsRequest) -> ResponseKind {
    let count = request.filters.len();
    let answer = |(code, message): (ResponseError, String)| {
        DeleteAclsFilterResult::default().with_error_code(code.code()).with_error_message(Some(str_bytes(&message)))
    };
    let results: Vec<DeleteAclsFilterResult> = if !node.authorizer.enabled() {
        vec![answer(change_error(&AclChangeError::Disabled)); count]
    } else if !access.cluster(Operation::Alter) {
        vec![answer(refused()); count]
    } else {
        let parsed: Vec<Result<AclFilter, AclError>> = request.filters.iter().map(delete_filter).collect();
        let valid: Vec<AclFilter> = parsed.iter().filter_map(|parsed| parsed.as_ref().ok().cloned()).collect();
        match node.authorizer.delete(&valid) {
            Err(error) => vec![answer(change_error(&error)); count],
            Ok(removed) => {
                let mut removed = removed.into_iter();
                parsed
                    .iter()
                    .map(|parsed| match parsed {
                        Err(error) => answer(change_error(&AclChangeError::Invalid(error.clone()))),
                        Ok(_) => match removed.next().expect("one outcome per valid filter") {
                            Ok(bindings) => {
                                for binding in &bindings {
                                    tracing::info!(principal = %access.session().principal, acl = ?binding.to_string(), "DeleteAcls removed");
                                }
                                DeleteAclsFilterResult::default()
                                .with_matching_acls(bindings.iter().map(matching).collect())
                            }
                            Err(error) => answer(change_error(&error)),
                        },
                    })
                    .collect()
            }
        }
    };
    assert_eq!(results.len(), count, "one result per filter, in order");
    ResponseKind::DeleteAcls(DeleteAclsResponse::default().with_filter_results(results))
}

fn matching(binding: &AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(binding.resource_type.code())
        .with_resource_name(str_bytes(&binding.resource_name))
        .with_pattern_type(binding.pattern_type.code())
        .with_principal(str_bytes(&binding.principal.to_string()))
        .with_host(str_bytes(&binding.host))
        .with_operation(binding.operation.code())
        .with_permission_type(binding.permission.code())
}
