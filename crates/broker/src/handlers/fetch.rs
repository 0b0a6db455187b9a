//! Fetch with long polling; translation only: the partitions' reads ([`Partition::read_fetch`]) into
//! the Kafka response, and the wait between them.
//!
//! A fetch reads whole batches below the high watermark. If fewer than `min_bytes` are available it
//! waits, up to `max_wait_ms`, for any requested partition's high watermark to move, then reads again.
//! With isolation_level=read_committed (1) a fetch reads only below the last stable offset and lists
//! the aborted transactions in the range it returns, so the client drops their batches; the partition
//! returns both, with the offsets that bounded the read, consistent with each other.
//! Fetch sessions (KIP-227) are not kept: every response carries session id 0, which tells clients to
//! send full requests.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, ResponseKind, TopicName};
use once_node::fetch_memory::Held;
use once_node::Node;
use once_partition::{AbortedTxn, EndOffsets, Isolation, Partition};
use once_wire::ResponseError;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::errors::partition_error_code;

/// Longest a fetch waits for data, whatever it asks: a long poll holds its connection's reader (requests
/// are answered in order), so a client that went away must not hold a connection slot for long.
/// Clients wait 500 ms by default (fetch.max.wait.ms).
const FETCH_WAIT_MS_MAX: u64 = 30_000;

/// isolation_level of a read_committed consumer (0 is read_uncommitted).
const READ_COMMITTED: i8 = 1;

/// One requested partition, resolved.
struct Wanted {
    index: i32,
    partition: Option<Arc<Partition>>,
    fetch_offset: i64,
    partition_max_bytes: usize,
}

/// Answers a Fetch, with the fetch memory its last read reserved: the connection keeps it, as the
/// response's record bytes, until the response is written (`once_node::fetch_memory`).
pub async fn handle(node: &Arc<Node>, request: FetchRequest, _version: i16) -> (ResponseKind, Held) {
    let response_max_bytes = usize::try_from(request.max_bytes).unwrap_or(0).min(node.config.fetch_bytes_max);
    // More than the response may hold can never be satisfied; it would only re-read on every append.
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0).min(response_max_bytes.max(1));
    let wait_ms = u64::try_from(request.max_wait_ms).unwrap_or(0).min(FETCH_WAIT_MS_MAX);
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let isolation = match request.isolation_level {
        READ_COMMITTED => Isolation::ReadCommitted,
        _ => Isolation::ReadUncommitted,
    };
    let wanted: Vec<(TopicName, Vec<Wanted>)> = request
        .topics
        .into_iter()
        .map(|topic| {
            let found = node.topics.get(&topic.topic.0);
            let partitions = topic
                .partitions
                .into_iter()
                .map(|requested| Wanted {
                    index: requested.partition,
                    partition: found.as_ref().and_then(|found| found.partition(requested.partition)),
                    fetch_offset: requested.fetch_offset,
                    partition_max_bytes: usize::try_from(requested.partition_max_bytes).unwrap_or(0),
                })
                .collect();
            (topic.topic, partitions)
        })
        .collect();
    // What a read can return at most, so that a reservation is not larger (KIP-74's one batch aside).
    let partitions_max_bytes = (wanted.iter().flat_map(|(_, partitions)| partitions))
        .fold(0usize, |sum, wanted| sum.saturating_add(wanted.partition_max_bytes));
    let reservable = response_max_bytes.min(partitions_max_bytes.max(1));
    let wanted = Arc::new(wanted);
    loop {
        // Subscribe before reading, so a high watermark that moves during the read still wakes us.
        let mut watchers: Vec<_> = wanted
            .iter()
            .flat_map(|(_, partitions)| partitions.iter().filter_map(|wanted| wanted.partition.as_ref()))
            .map(|partition| partition.watch_high_watermark())
            .collect();
        let reading = wanted.clone();
        // The most bytes the read may return now, counted in the broker's fetch memory while the guard
        // lives: less than `reservable` while Fetch responses not yet written hold the budget (clients
        // reading slowly, or not at all), but at least `FETCH_MEMORY_FLOOR` (1 MiB; and one whole batch
        // whatever its size, KIP-74). Returned with the response, for the connection to keep as its record
        // bytes; a read that does not satisfy a long poll gives it back before the wait.
        let (read_max_bytes, reserved) = node.fetch_memory.reserve(reservable);
        let read = tokio::task::spawn_blocking(move || read_all(&reading, read_max_bytes, isolation)).await;
        let (responses, bytes, any_error) = match read {
            Ok(result) => result,
            Err(error) => {
                tracing::error!(%error, "fetch read task failed");
                let failed = FetchResponse::default().with_error_code(ResponseError::UnknownServerError.code());
                return (ResponseKind::Fetch(failed), reserved);
            }
        };
        // min_bytes 0 asks for an answer at once, data or not (Kafka's rule). A read cut short by the
        // fetch memory budget answers with any data at all: waiting would not let it read more.
        let min_bytes_now = if read_max_bytes < reservable { min_bytes.min(1) } else { min_bytes };
        let satisfied = bytes >= min_bytes_now || any_error || watchers.is_empty();
        if satisfied || Instant::now() >= deadline {
            count_fetched(node, &responses);
            return (
                ResponseKind::Fetch(FetchResponse::default().with_session_id(0).with_responses(responses)),
                reserved,
            );
        }
        // Not while waiting: a consumer long-polling at the log end holds none of the budget.
        drop((reserved, responses));
        let any_moved = any_moved(&mut watchers);
        if tokio::time::timeout_at(deadline, any_moved).await.is_err() {
            // Deadline passed with nothing new: one last read answers with what is there (maybe nothing).
            let reading = wanted.clone();
            let (read_max_bytes, reserved) = node.fetch_memory.reserve(reservable);
            let (responses, _, _) = tokio::task::spawn_blocking(move || read_all(&reading, read_max_bytes, isolation))
                .await
                .unwrap_or_else(|_| (Vec::new(), 0, true));
            count_fetched(node, &responses);
            let response = FetchResponse::default().with_session_id(0).with_responses(responses);
            return (ResponseKind::Fetch(response), reserved);
        }
    }
}

/// Adds the record bytes answered to each topic's traffic counter.
fn count_fetched(node: &Node, responses: &[FetchableTopicResponse]) {
    for response in responses {
        let bytes: usize = response
            .partitions
            .iter()
            .map(|partition| partition.records.as_ref().map_or(0, |records| records.len()))
            .sum();
        if bytes > 0 {
            if let Some(topic) = node.topics.get(&response.topic) {
                topic.traffic.fetched(bytes);
            }
        }
    }
}

/// Resolves when any watched high watermark moves (or its partition goes away). The receivers are
/// polled in place, in this task: a long poll costs no task per partition.
async fn any_moved(watchers: &mut [watch::Receiver<u64>]) {
    debug_assert!(!watchers.is_empty(), "a fetch without partitions does not wait");
    let mut changes: Vec<_> = watchers.iter_mut().map(|watcher| Box::pin(watcher.changed())).collect();
    // Every pending future is polled, so each has this task's waker registered. A partition closed
    // or deleted notifies its receivers (its value unchanged), so a waiting fetch re-reads at once.
    std::future::poll_fn(|context| match changes.iter_mut().any(|change| change.as_mut().poll(context).is_ready()) {
        true => Poll::Ready(()),
        false => Poll::Pending,
    })
    .await
}

/// The aborted transactions of a read_committed read, as the response carries them: the client drops
/// those producers' batches from each one's first offset until its abort marker.
fn aborted_response(aborted: Vec<AbortedTxn>) -> Vec<AbortedTransaction> {
    aborted
        .into_iter()
        .map(|aborted| {
            AbortedTransaction::default()
                .with_producer_id(ProducerId(aborted.producer_id))
                .with_first_offset(aborted.first_offset as i64)
        })
        .collect()
}

/// Reads every wanted partition; returns the responses, the record bytes, and whether any partition erred.
fn read_all(
    wanted: &[(TopicName, Vec<Wanted>)],
    response_max_bytes: usize,
    isolation: Isolation,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let mut budget = response_max_bytes;
    let mut total = 0;
    let mut any_error = false;
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, partitions) in wanted {
        let mut datas = Vec::with_capacity(partitions.len());
        for wanted in partitions {
            let data = read_one(wanted, &mut budget, total == 0, isolation);
            any_error |= data.error_code != 0;
            total += data.records.as_ref().map_or(0, |records| records.len());
            datas.push(data);
        }
        responses.push(FetchableTopicResponse::default().with_topic(name.clone()).with_partitions(datas));
    }
    (responses, total, any_error)
}

/// The response's partition data with the partition's end offsets.
fn with_end_offsets(data: PartitionData, end_offsets: EndOffsets) -> PartitionData {
    data.with_high_watermark(end_offsets.high_watermark as i64)
        .with_last_stable_offset(end_offsets.last_stable_offset as i64)
        .with_log_start_offset(end_offsets.log_start_offset as i64)
}

fn read_one(wanted: &Wanted, budget: &mut usize, first: bool, isolation: Isolation) -> PartitionData {
    let data = PartitionData::default().with_partition_index(wanted.index);
    let Some(partition) = wanted.partition.as_ref() else {
        return data
            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1);
    };
    let Ok(offset) = u64::try_from(wanted.fetch_offset) else {
        return with_end_offsets(data, partition.end_offsets()).with_error_code(ResponseError::OffsetOutOfRange.code());
    };
    // KIP-74: the first partition with data may exceed the budget by one batch, so progress is always made.
    let max_bytes = wanted.partition_max_bytes.min(*budget);
    if max_bytes == 0 && !first {
        return with_end_offsets(data, partition.end_offsets()).with_records(Some(Default::default()));
    }
    match partition.read_fetch(offset, max_bytes.max(1), isolation) {
        // Only the first partition may go over its share; a later one returns nothing rather than too much.
        Ok(read) if !first && read.records.len() > max_bytes => {
            with_end_offsets(data, read.end_offsets).with_records(Some(Default::default()))
        }
        Ok(read) => {
            *budget = budget.saturating_sub(read.records.len());
            let data = with_end_offsets(data, read.end_offsets);
            let data = match read.aborted {
                Some(aborted) => data.with_aborted_transactions(Some(aborted_response(aborted))),
                None => data,
            };
            data.with_records(Some(read.records))
        }
        Err(error) => {
            with_end_offsets(data, partition.end_offsets()).with_error_code(partition_error_code(&error).code())
        }
    }
}
