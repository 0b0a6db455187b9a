//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), or the first offset at a timestamp;
//! translation only: the request's special timestamps become the partition's offset lookups.
//! Under read_committed (v2+) "latest" is the last stable offset, and lookups by time find nothing
//! at or above it, as in Kafka.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, ResponseKind};
use once_node::Node;
use once_partition::{Partition, PartitionError};
use once_wire::ResponseError;

use crate::errors::partition_error_code;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(node: &Arc<Node>, request: ListOffsetsRequest, version: i16) -> ResponseKind {
    let read_committed = version >= 2 && request.isolation_level == 1;
    let mut lookups = Vec::new();
    for topic in request.topics {
        let found = node.topics.get(&topic.name.0);
        let partitions: Vec<(i32, i64, Option<Arc<Partition>>)> = topic
            .partitions
            .into_iter()
            .map(|requested| {
                let partition = found.as_ref().and_then(|found| found.partition(requested.partition_index));
                (requested.partition_index, requested.timestamp, partition)
            })
            .collect();
        lookups.push((topic.name, partitions));
    }
    let topics = tokio::task::spawn_blocking(move || {
        lookups
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|(index, timestamp, partition)| {
                        look_up(index, timestamp, partition.as_deref(), version, read_committed)
                    })
                    .collect();
                ListOffsetsTopicResponse::default().with_name(name).with_partitions(partitions)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    ResponseKind::ListOffsets(ListOffsetsResponse::default().with_topics(topics))
}

fn look_up(
    index: i32,
    timestamp: i64,
    partition: Option<&Partition>,
    version: i16,
    read_committed: bool,
) -> ListOffsetsPartitionResponse {
    let response = ListOffsetsPartitionResponse::default().with_partition_index(index);
    // The codec refuses fields a version does not carry; leader epoch exists from v4.
    let response = if version >= 4 { response.with_leader_epoch(0) } else { response };
    let Some(partition) = partition else {
        return response
            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
            .with_offset(-1)
            .with_timestamp(-1);
    };
    let found: Result<Option<(u64, i64)>, PartitionError> = match timestamp {
        LATEST if read_committed => Ok(Some((partition.last_stable_offset(), -1))),
        LATEST => Ok(Some((partition.high_watermark(), -1))),
        EARLIEST => Ok(Some((partition.log_start_offset(), -1))),
        MAX_TIMESTAMP => Ok(partition.max_timestamp()),
        timestamp if timestamp >= 0 => partition.offset_for_timestamp(timestamp),
        other => {
            return response
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_offset(-1)
                .with_timestamp(other);
        }
    };
    // Under read_committed nothing at or above the last stable offset is visible (Kafka's
    // lastFetchableOffset), so a lookup by time or max timestamp never points there.
    let found = match found {
        Ok(Some((offset, timestamp)))
            if read_committed && timestamp >= 0 && offset >= partition.last_stable_offset() =>
        {
            Ok(None)
        }
        other => other,
    };
    match found {
        Ok(Some((offset, timestamp))) => response.with_offset(offset as i64).with_timestamp(timestamp),
        Ok(None) => response.with_offset(-1).with_timestamp(-1),
        Err(error) => response.with_error_code(partition_error_code(&error).code()).with_offset(-1).with_timestamp(-1),
    }
}
