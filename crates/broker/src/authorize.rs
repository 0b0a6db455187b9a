//! Every request checked against the node's policy before it acts, with Kafka's operations and
//! codes (the table in docs/security.md). [`gate`] either answers a request outright (its whole
//! subject refused: the transactional id, the group, the cluster) or lets through the part that is
//! allowed and returns a [`Patch`] that adds the refused part's answers to the handler's response.
//! A write is never done and then hidden: refused topics and groups are taken out of the request
//! before the handler sees it. Reads that are only filtered (what Metadata lists, which groups
//! ListGroups names) are filtered in the response.
//!
//! Only called with authorization on; with it off nothing here runs.

use std::collections::HashSet;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use once_acl::{Operation, ResourceType};
use once_wire::ResponseError;

use crate::access::Access;
use crate::handlers::str_bytes;

/// A change to the handler's response: the refused part's answers.
pub type Patch = Box<dyn FnOnce(ResponseKind) -> ResponseKind + Send>;

/// What a request may do.
pub enum Gate {
    /// Run the handler on this (possibly reduced) request, then apply the patch.
    Go(RequestKind, Patch),
    /// Answer this, and do nothing.
    Answer(ResponseKind),
}

fn unchanged(body: RequestKind) -> Gate {
    Gate::Go(body, Box::new(|response| response))
}

const TOPIC_DENIED: ResponseError = ResponseError::TopicAuthorizationFailed;
const GROUP_DENIED: ResponseError = ResponseError::GroupAuthorizationFailed;
const TXN_DENIED: ResponseError = ResponseError::TransactionalIdAuthorizationFailed;
const CLUSTER_DENIED: ResponseError = ResponseError::ClusterAuthorizationFailed;

/// Checks `body` for `access` (authorization on). `would_auto_create` says whether Metadata would
/// create a topic of that name (it does not exist and the broker auto-creates), which needs CREATE.
pub fn gate(access: &Access, body: RequestKind, version: i16, would_auto_create: &dyn Fn(&str) -> bool) -> Gate {
    match body {
        RequestKind::Produce(request) => produce(access, request),
        RequestKind::Fetch(request) => fetch(access, request),
        RequestKind::ListOffsets(request) => list_offsets(access, request),
        RequestKind::Metadata(request) => metadata(access, request, version, would_auto_create),
        RequestKind::CreateTopics(request) => create_topics(access, request),
        RequestKind::DeleteTopics(request) => delete_topics(access, request, version),
        RequestKind::CreatePartitions(request) => create_partitions(access, request),
        RequestKind::DescribeConfigs(request) => describe_configs(access, request),
        RequestKind::AlterConfigs(request) => alter_configs(access, request),
        RequestKind::IncrementalAlterConfigs(request) => incremental_alter_configs(access, request),
        // DescribeCluster is open to every principal on a Kafka broker (only its authorized-
        // operations field depends on DESCRIBE): Java's Admin and Connect call it at start.
        RequestKind::InitProducerId(request) => init_producer_id(access, request),
        RequestKind::AddPartitionsToTxn(request) => add_partitions_to_txn(access, request),
        RequestKind::AddOffsetsToTxn(request) => {
            let code = if !access.transactional_id(Operation::Write, &request.transactional_id) {
                Some(TXN_DENIED)
            } else if !access.group(Operation::Read, &request.group_id) {
                Some(GROUP_DENIED)
            } else {
                None
            };
            match code {
                None => unchanged(RequestKind::AddOffsetsToTxn(request)),
                Some(code) => Gate::Answer(ResponseKind::AddOffsetsToTxn(
                    AddOffsetsToTxnResponse::default().with_error_code(code.code()),
                )),
            }
        }
        RequestKind::EndTxn(request) => {
            if access.transactional_id(Operation::Write, &request.transactional_id) {
                unchanged(RequestKind::EndTxn(request))
            } else {
                Gate::Answer(ResponseKind::EndTxn(
                    EndTxnResponse::default().with_error_code(TXN_DENIED.code()).with_producer_id((-1).into()),
                ))
            }
        }
        RequestKind::TxnOffsetCommit(request) => txn_offset_commit(access, request),
        RequestKind::WriteTxnMarkers(request) => write_txn_markers(access, request),
        RequestKind::DescribeTransactions(request) => {
            let access = access.clone();
            Gate::Go(
                RequestKind::DescribeTransactions(request),
                Box::new(move |response| match response {
                    ResponseKind::DescribeTransactions(mut response) => {
                        for state in &mut response.transaction_states {
                            if !access.transactional_id(Operation::Describe, &state.transactional_id) {
                                *state = describe_transactions_response::TransactionState::default()
                                    .with_transactional_id(state.transactional_id.clone())
                                    .with_error_code(TXN_DENIED.code())
                                    .with_producer_id((-1).into())
                                    .with_producer_epoch(-1);
                            } else {
                                // Partitions of topics it may not describe are left out, as Kafka does.
                                state.topics.retain(|topic| access.topic_quietly(Operation::Describe, &topic.topic));
                            }
                        }
                        ResponseKind::DescribeTransactions(response)
                    }
                    other => other,
                }),
            )
        }
        RequestKind::ListTransactions(request) => {
            let access = access.clone();
            Gate::Go(
                RequestKind::ListTransactions(request),
                Box::new(move |response| match response {
                    ResponseKind::ListTransactions(mut response) => {
                        response.transaction_states.retain(|state| {
                            access.transactional_id_quietly(Operation::Describe, &state.transactional_id)
                        });
                        ResponseKind::ListTransactions(response)
                    }
                    other => other,
                }),
            )
        }
        RequestKind::DescribeProducers(request) => describe_producers(access, request),
        // Users' credentials: reading them takes DESCRIBE on the cluster, changing them ALTER.
        RequestKind::DescribeUserScramCredentials(request) => {
            if access.cluster(Operation::Describe) {
                unchanged(RequestKind::DescribeUserScramCredentials(request))
            } else {
                Gate::Answer(ResponseKind::DescribeUserScramCredentials(
                    DescribeUserScramCredentialsResponse::default().with_error_code(CLUSTER_DENIED.code()),
                ))
            }
        }
        RequestKind::AlterUserScramCredentials(request) => {
            if access.cluster(Operation::Alter) {
                return unchanged(RequestKind::AlterUserScramCredentials(request));
            }
            let users: std::collections::BTreeSet<StrBytes> = request
                .deletions
                .iter()
                .map(|deletion| deletion.name.clone())
                .chain(request.upsertions.iter().map(|upsertion| upsertion.name.clone()))
                .collect();
            let results = users
                .into_iter()
                .map(|user| {
                    alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default()
                        .with_user(user)
                        .with_error_code(CLUSTER_DENIED.code())
                })
                .collect();
            Gate::Answer(ResponseKind::AlterUserScramCredentials(
                AlterUserScramCredentialsResponse::default().with_results(results),
            ))
        }
        other => crate::authorize_group::gate(access, other, version),
    }
}

/// Splits `items` into those `allowed` and the names of the rest.
fn split<T>(items: Vec<T>, name: impl Fn(&T) -> &str, allowed: impl Fn(&str) -> bool) -> (Vec<T>, Vec<T>) {
    items.into_iter().partition(|item| allowed(name(item)))
}

fn produce(access: &Access, mut request: ProduceRequest) -> Gate {
    let transactional_denied = request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !id.is_empty() && !access.transactional_id(Operation::Write, id));
    let denied: Vec<(StrBytes, Vec<i32>, ResponseError)> = if transactional_denied {
        std::mem::take(&mut request.topic_data)
            .into_iter()
            .map(|topic| (topic.name.0, topic.partition_data.iter().map(|data| data.index).collect(), TXN_DENIED))
            .collect()
    } else {
        let (allowed, denied) = split(
            std::mem::take(&mut request.topic_data),
            |topic| &topic.name.0,
            |name| access.topic(Operation::Write, name),
        );
        request.topic_data = allowed;
        denied
            .into_iter()
            .map(|topic| (topic.name.0, topic.partition_data.iter().map(|data| data.index).collect(), TOPIC_DENIED))
            .collect()
    };
    if denied.is_empty() {
        return unchanged(RequestKind::Produce(request));
    }
    let patch: Patch = Box::new(move |response| match response {
        ResponseKind::Produce(mut response) => {
            for (name, partitions, code) in denied {
                let partition_responses = partitions
                    .into_iter()
                    .map(|index| {
                        produce_response::PartitionProduceResponse::default()
                            .with_index(index)
                            .with_error_code(code.code())
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1)
                    })
                    .collect();
                response.responses.push(
                    produce_response::TopicProduceResponse::default()
                        .with_name(name.into())
                        .with_partition_responses(partition_responses),
                );
            }
            ResponseKind::Produce(response)
        }
        other => other,
    });
    Gate::Go(RequestKind::Produce(request), patch)
}

fn fetch(access: &Access, mut request: FetchRequest) -> Gate {
    if request.replica_id.0 >= 0 || request.replica_state.replica_id.0 >= 0 {
        // A follower's fetch needs CLUSTER_ACTION; Once has no followers, so none is allowed it.
        if !access.cluster(Operation::ClusterAction) {
            return Gate::Answer(ResponseKind::Fetch(FetchResponse::default().with_error_code(CLUSTER_DENIED.code())));
        }
    }
    let (allowed, denied) =
        split(std::mem::take(&mut request.topics), |topic| &topic.topic.0, |name| access.topic(Operation::Read, name));
    request.topics = allowed;
    if denied.is_empty() {
        return unchanged(RequestKind::Fetch(request));
    }
    let patch: Patch = Box::new(move |response| match response {
        ResponseKind::Fetch(mut response) => {
            for topic in denied {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        fetch_response::PartitionData::default()
                            .with_partition_index(partition.partition)
                            .with_error_code(TOPIC_DENIED.code())
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(-1)
                    })
                    .collect();
                response.responses.push(
                    fetch_response::FetchableTopicResponse::default()
                        .with_topic(topic.topic)
                        .with_topic_id(topic.topic_id)
                        .with_partitions(partitions),
                );
            }
            ResponseKind::Fetch(response)
        }
        other => other,
    });
    Gate::Go(RequestKind::Fetch(request), patch)
}

fn list_offsets(access: &Access, mut request: ListOffsetsRequest) -> Gate {
    let (allowed, denied) = split(
        std::mem::take(&mut request.topics),
        |topic| &topic.name.0,
        |name| access.topic(Operation::Describe, name),
    );
    request.topics = allowed;
    if denied.is_empty() {
        return unchanged(RequestKind::ListOffsets(request));
    }
    let patch: Patch = Box::new(move |response| match response {
        ResponseKind::ListOffsets(mut response) => {
            for topic in denied {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        list_offsets_response::ListOffsetsPartitionResponse::default()
                            .with_partition_index(partition.partition_index)
                            .with_error_code(TOPIC_DENIED.code())
                            .with_timestamp(-1)
                            .with_offset(-1)
                    })
                    .collect();
                response.topics.push(
                    list_offsets_response::ListOffsetsTopicResponse::default()
                        .with_name(topic.name)
                        .with_partitions(partitions),
                );
            }
            ResponseKind::ListOffsets(response)
        }
        other => other,
    });
    Gate::Go(RequestKind::ListOffsets(request), patch)
}

/// Metadata hides the topics a principal may not describe; a named one it may not describe, or may
/// not create when it would be auto-created, is answered TOPIC_AUTHORIZATION_FAILED.
fn metadata(
    access: &Access,
    mut request: MetadataRequest,
    version: i16,
    would_auto_create: &dyn Fn(&str) -> bool,
) -> Gate {
    let access = access.clone();
    let mut denied = Vec::new();
    // The names asked for, when some were: only they are answered (v0 reads an empty list as all).
    let mut asked: Option<HashSet<String>> = None;
    // v0 reads an empty list as every topic, as v1+ read a null one.
    if version == 0 && request.topics.as_ref().is_some_and(Vec::is_empty) {
        request.topics = None;
    }
    if let Some(topics) = request.topics.take() {
        let mut allowed = Vec::with_capacity(topics.len());
        let mut names = HashSet::new();
        for topic in topics {
            let name = topic.name.as_ref().map(|name| name.0.to_string()).unwrap_or_default();
            let permitted = access.topic(Operation::Describe, &name)
                && (!request.allow_auto_topic_creation
                    || !would_auto_create(&name)
                    || access.cluster_quietly(Operation::Create)
                    || access.topic(Operation::Create, &name));
            if permitted {
                names.insert(name);
                allowed.push(topic);
            } else {
                denied.push(name);
            }
        }
        request.topics = Some(allowed);
        asked = Some(names);
    }
    let patch: Patch = Box::new(move |response| match response {
        ResponseKind::Metadata(mut response) => {
            response.topics.retain(|topic| {
                topic.name.as_ref().is_some_and(|name| {
                    asked.as_ref().is_none_or(|asked| asked.contains(name.0.as_str()))
                        && access.topic_quietly(Operation::Describe, name)
                })
            });
            for name in denied {
                response.topics.push(
                    metadata_response::MetadataResponseTopic::default()
                        .with_name(Some(str_bytes(&name).into()))
                        .with_error_code(TOPIC_DENIED.code()),
                );
            }
            ResponseKind::Metadata(response)
        }
        other => other,
    });
    Gate::Go(RequestKind::Metadata(request), patch)
}

fn create_topics(access: &Access, mut request: CreateTopicsRequest) -> Gate {
    let cluster = access.cluster_quietly(Operation::Create);
    let (allowed, denied) = split(
        std::mem::take(&mut request.topics),
        |topic| &topic.name.0,
        |name| cluster || access.topic(Operation::Create, name),
    );
    request.topics = allowed;
    if denied.is_empty() {
        return unchanged(RequestKind::CreateTopics(request));
    }
    let patch: Patch = Box::new(move |response| match response {
        ResponseKind::CreateTopics(mut response) => {
            for topic in denied {
                response.topics.push(
                    create_topics_response::CreatableTopicResult::default()
                        .with_name(topic.name)
                        .with_error_code(TOPIC_DENIED.code())
                        .with_num_partitions(-1)
                        .with_replication_factor(-1),
                );
            }
            ResponseKind::CreateTopics(response)
        }
        other => other,
    });
    Gate::Go(RequestKind::CreateTopics(request), patch)
}

fn delete_topics(access: &Access, mut request: DeleteTopicsRequest, version: i16) -> Gate {
    let mut denied = Vec::new();
    if version <= 5 {
        let (allowed, refused) = split(
            std::mem::take(&mut request.topic_names),
            |name| &name.0,
            |name| access.topic(Operation::Delete, name),
        );
        request.topic_names = allowed;
        denied.extend(refused.into_iter().map(|name| name.0));
    } else {
        let (allowed, refused) = split(
            std::mem::take(&mut request.topics),
            |topic| topic.name.as_ref().map(|name| name.0.as_str()).unwrap_or(""),
            |name| access.topic(Operation::Delete, name),
        );
        request.topics = allowed;
        denied.extend(refused.into_iter().map(|topic| topic.name.map(|name| name.0).unwrap_or_default()));
    }
    if denied.is_empty() {
        return unchanged(RequestKind::DeleteTopics(request));
    }
    let patch: Patch = Box::new(move |response| match response {
        ResponseKind::DeleteTopics(mut response) => {
            for name in denied {
                response.responses.push(
                    delete_topics_response::DeletableTopicResult::default()
                        .with_name(Some(name.into()))
                        .with_error_code(TOPIC_DENIED.code()),
                );
            }
            ResponseKind::DeleteTopics(response)
        }
        other => other,
    });
    Gate::Go(RequestKind::DeleteTopics(request), patch)
}

fn create_partitions(access: &Access, mut request: CreatePartitionsRequest) -> Gate {
    let (allowed, denied) =
        split(std::mem::take(&mut request.topics), |topic| &topic.name.0, |name| access.topic(Operation::Alter, name));
    request.topics = allowed;
    if denied.is_empty() {
        return unchanged(RequestKind::CreatePartitions(request));
    }
    let patch: Patch = Box::new(move |response| match response {
        ResponseKind::CreatePartitions(mut response) => {
            for topic in denied {
                response.results.push(
                    create_partitions_response::CreatePartitionsTopicResult::default()
                        .with_name(topic.name)
                        .with_error_code(TOPIC_DENIED.code()),
                );
            }
            ResponseKind::CreatePartitions(response)
        }
        other => other,
    });
    Gate::Go(RequestKind::CreatePartitions(request), patch)
}

/// The resource types of the config APIs: 2 topic, 4 broker, 8 broker logger.
fn config_allowed(access: &Access, operation: Operation, resource_type: i8, name: &str) -> Result<(), ResponseError> {
    match resource_type {
        2 if access.topic(operation, name) => Ok(()),
        2 => Err(TOPIC_DENIED),
        _ if access.cluster(operation) => Ok(()),
        _ => Err(CLUSTER_DENIED),
    }
}

fn describe_configs(access: &Access, mut request: DescribeConfigsRequest) -> Gate {
    let mut denied = Vec::new();
    request.resources.retain(|resource| {
        match config_allowed(access, Operation::DescribeConfigs, resource.resource_type, &resource.resource_name) {
            Ok(()) => true,
            Err(code) => {
                denied.push((resource.resource_type, resource.resource_name.clone(), code));
                false
            }
        }
    });
    if denied.is_empty() {
        return unchanged(RequestKind::DescribeConfigs(request));
    }
    let patch: Patch = Box::new(move |response| match response {
        ResponseKind::DescribeConfigs(mut response) => {
            for (resource_type, name, code) in denied {
                response.results.push(
                    describe_configs_response::DescribeConfigsResult::default()
                        .with_resource_type(resource_type)
                        .with_resource_name(name)
                        .with_error_code(code.code()),
                );
            }
            ResponseKind::DescribeConfigs(response)
        }
        other => other,
    });
    Gate::Go(RequestKind::DescribeConfigs(request), patch)
}

fn alter_configs(access: &Access, mut request: AlterConfigsRequest) -> Gate {
    let mut denied = Vec::new();
    request.resources.retain(|resource| {
        match config_allowed(access, Operation::AlterConfigs, resource.resource_type, &resource.resource_name) {
            Ok(()) => true,
            Err(code) => {
                denied.push((resource.resource_type, resource.resource_name.clone(), code));
                false
            }
        }
    });
    if denied.is_empty() {
        return unchanged(RequestKind::AlterConfigs(request));
    }
    let patch: Patch = Box::new(move |response| match response {
        ResponseKind::AlterConfigs(mut response) => {
            for (resource_type, name, code) in denied {
                response.responses.push(
                    alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(resource_type)
                        .with_resource_name(name)
                        .with_error_code(code.code()),
                );
            }
            ResponseKind::AlterConfigs(response)
        }
        other => other,
    });
    Gate::Go(RequestKind::AlterConfigs(request), patch)
}

fn incremental_alter_configs(access: &Access, mut request: IncrementalAlterConfigsRequest) -> Gate {
    let mut denied = Vec::new();
    request.resources.retain(|resource| {
        match config_allowed(access, Operation::AlterConfigs, resource.resource_type, &resource.resource_name) {
            Ok(()) => true,
            Err(code) => {
                denied.push((resource.resource_type, resource.resource_name.clone(), code));
                false
            }
        }
    });
    if denied.is_empty() {
        return unchanged(RequestKind::IncrementalAlterConfigs(request));
    }
    let patch: Patch = Box::new(move |response| match response {
        ResponseKind::IncrementalAlterConfigs(mut response) => {
            for (resource_type, name, code) in denied {
                response.responses.push(
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(resource_type)
                        .with_resource_name(name)
                        .with_error_code(code.code()),
                );
            }
            ResponseKind::IncrementalAlterConfigs(response)
        }
        other => other,
    });
    Gate::Go(RequestKind::IncrementalAlterConfigs(request), patch)
}

/// A transactional producer needs WRITE on its transactional id; an idempotent one IDEMPOTENT_WRITE
/// on the cluster or WRITE on some topic (KIP-679).
fn init_producer_id(access: &Access, request: InitProducerIdRequest) -> Gate {
    let code = match request.transactional_id.as_ref().filter(|id| !id.is_empty()) {
        Some(id) if !access.transactional_id(Operation::Write, id) => Some(TXN_DENIED),
        Some(_) => None,
        None if access.cluster_quietly(Operation::IdempotentWrite)
            || access.any(Operation::Write, ResourceType::Topic) =>
        {
            None
        }
        None => Some(CLUSTER_DENIED),
    };
    match code {
        None => unchanged(RequestKind::InitProducerId(request)),
        Some(code) => Gate::Answer(ResponseKind::InitProducerId(
            InitProducerIdResponse::default()
                .with_error_code(code.code())
                .with_producer_id((-1).into())
                .with_producer_epoch(-1),
        )),
    }
}

/// AddPartitionsToTxn (v0–v3, one transaction): the transactional id needs WRITE; if any topic is
/// refused nothing is added — refused partitions TOPIC_AUTHORIZATION_FAILED, the others
/// OPERATION_NOT_ATTEMPTED, as Kafka answers.
fn add_partitions_to_txn(access: &Access, request: AddPartitionsToTxnRequest) -> Gate {
    let id_allowed = access.transactional_id(Operation::Write, &request.v3_and_below_transactional_id);
    let refused: HashSet<&str> = request
        .v3_and_below_topics
        .iter()
        .map(|topic| topic.name.0.as_str())
        .filter(|name| !id_allowed || !access.topic(Operation::Write, name))
        .collect();
    if refused.is_empty() {
        return unchanged(RequestKind::AddPartitionsToTxn(request));
    }
    let results = request
        .v3_and_below_topics
        .iter()
        .map(|topic| {
            let code = match (id_allowed, refused.contains(topic.name.0.as_str())) {
                (false, _) => TXN_DENIED,
                (true, true) => TOPIC_DENIED,
                (true, false) => ResponseError::OperationNotAttempted,
            };
            add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                .with_name(topic.name.clone())
                .with_results_by_partition(
                    topic
                        .partitions
                        .iter()
                        .map(|index| {
                            add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*index)
                                .with_partition_error_code(code.code())
                        })
                        .collect(),
                )
        })
        .collect();
    Gate::Answer(ResponseKind::AddPartitionsToTxn(
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results),
    ))
}

fn txn_offset_commit(access: &Access, mut request: TxnOffsetCommitRequest) -> Gate {
    let whole = if !access.transactional_id(Operation::Write, &request.transactional_id) {
        Some(TXN_DENIED)
    } else if !access.group(Operation::Read, &request.group_id) {
        Some(GROUP_DENIED)
    } else {
        None
    };
    let (allowed, denied) = match whole {
        Some(_) => (Vec::new(), std::mem::take(&mut request.topics)),
        None => split(
            std::mem::take(&mut request.topics),
            |topic| &topic.name.0,
            |name| access.topic(Operation::Read, name),
        ),
    };
    let answers: Vec<txn_offset_commit_response::TxnOffsetCommitResponseTopic> = denied
        .into_iter()
        .map(|topic| {
            let code = whole.unwrap_or(TOPIC_DENIED);
            txn_offset_commit_response::TxnOffsetCommitResponseTopic::default().with_name(topic.name).with_partitions(
                topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                            .with_partition_index(partition.partition_index)
                            .with_error_code(code.code())
                    })
                    .collect(),
            )
        })
        .collect();
    if whole.is_some() {
        return Gate::Answer(ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default().with_topics(answers)));
    }
    request.topics = allowed;
    if answers.is_empty() {
        return unchanged(RequestKind::TxnOffsetCommit(request));
    }
    let patch: Patch = Box::new(move |response| match response {
        ResponseKind::TxnOffsetCommit(mut response) => {
            response.topics.extend(answers);
            ResponseKind::TxnOffsetCommit(response)
        }
        other => other,
    });
    Gate::Go(RequestKind::TxnOffsetCommit(request), patch)
}

fn write_txn_markers(access: &Access, request: WriteTxnMarkersRequest) -> Gate {
    if access.cluster(Operation::ClusterAction) {
        return unchanged(RequestKind::WriteTxnMarkers(request));
    }
    let markers = request
        .markers
        .iter()
        .map(|marker| {
            write_txn_markers_response::WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(
                    marker
                        .topics
                        .iter()
                        .map(|topic| {
                            write_txn_markers_response::WritableTxnMarkerTopicResult::default()
                                .with_name(topic.name.clone())
                                .with_partitions(
                                    topic
                                        .partition_indexes
                                        .iter()
                                        .map(|index| {
                                            write_txn_markers_response::WritableTxnMarkerPartitionResult::default()
                                                .with_partition_index(*index)
                                                .with_error_code(CLUSTER_DENIED.code())
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                )
        })
        .collect();
    Gate::Answer(ResponseKind::WriteTxnMarkers(WriteTxnMarkersResponse::default().with_markers(markers)))
}

fn describe_producers(access: &Access, request: DescribeProducersRequest) -> Gate {
    let access = access.clone();
    Gate::Go(
        RequestKind::DescribeProducers(request),
        Box::new(move |response| match response {
            ResponseKind::DescribeProducers(mut response) => {
                for topic in &mut response.topics {
                    if !access.topic(Operation::Read, &topic.name) {
                        for partition in &mut topic.partitions {
                            partition.error_code = TOPIC_DENIED.code();
                            partition.error_message = None;
                            partition.active_producers.clear();
                        }
                    }
                }
                ResponseKind::DescribeProducers(response)
            }
            other => other,
        }),
    )
}
