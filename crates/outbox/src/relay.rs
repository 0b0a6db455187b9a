//! The relay's loop, one batch at a time: read unsent rows, make sure their topics exist, produce
//! every row's record, wait for every delivery report, then retire (delete or mark) the rows whose
//! records were acknowledged, in a transaction of their own. Only then is the next batch read, so
//! a batch's rows are never read twice by one run, and a row is retired only after the broker has
//! its record: a crash anywhere resends, and the topic's `dedup.source=header:id` stores it once.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;

use crate::{hooks, topic_for, Error, OutboxRow, Source};

/// The topic config a created topic gets: the broker deduplicates on the `id` header.
pub const DEDUP_CONFIG: (&str, &str) = ("dedup.source", "header:id");

/// How long a stop request waits for the batch in hand before leaving its rows for the next run.
const STOP_GRACE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// Topic per row, `{aggregatetype}` replaced.
    pub topic_template: String,
    /// Most rows read, produced and retired as one batch.
    pub batch_rows: usize,
    /// Pause after a poll that found nothing.
    pub poll_interval: Duration,
    /// Partitions of a topic the relay creates.
    pub partitions: i32,
}

/// What a run did, for the exit message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Rows produced, acknowledged and retired.
    pub retired: u64,
    pub batches: u64,
    pub topics_created: u64,
}

/// Delivery reports of the batch in hand: (row index, outcome).
#[derive(Default)]
struct Reports(Mutex<Vec<(usize, Result<(), String>)>>);

impl ClientContext for Reports {}
impl ProducerContext for Reports {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        let outcome = result.as_ref().map(|_| ()).map_err(|(error, _)| error.to_string());
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((*index, outcome));
    }
}

fn kafka(error: impl std::fmt::Display) -> Error {
    Error::Kafka(error.to_string())
}

/// Runs until `stop` is set (then finishes the batch in hand) or a fatal error.
pub fn run(
    config: ClientConfig,
    source: &mut dyn Source,
    options: &RelayOptions,
    stop: &AtomicBool,
) -> Result<Summary, Error> {
    // Idempotent, acks=all, at most 5 in flight: librdkafka keeps each partition's records in
    // order across retries. No delivery timeout: a broker that is down is waited for, never
    // skipped; and gapless: an error that could leave a gap in a partition's records is fatal to
    // the producer (later records fail too), so a record never fails while a later one of its
    // partition is stored.
    let producer: BaseProducer<Reports> = config
        .clone()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("message.timeout.ms", "0")
        .set("enable.gapless.guarantee", "true")
        // Topics are created by the relay, with dedup.source=header:id; never implicitly without.
        .set("allow.auto.create.topics", "false")
        .create_with_context(Reports::default())
        .map_err(kafka)?;
    let mut topics = Topics::new(&config, options.partitions)?;
    let mut summary = Summary::default();
    while !stop.load(Ordering::SeqCst) {
        let rows = source.unsent(options.batch_rows)?;
        // The id is the message id: a row without one would be deduplicated against every other
        // row without one (an empty header is an id too), and dropped.
        if let Some(row) = rows.iter().find(|row| row.id.is_empty()) {
            return Err(Error::Config(format!(
                "the outbox row at position {} has a NULL or empty id; every row needs a unique id (its message id)",
                row.position
            )));
        }
        if rows.is_empty() {
            pause(options.poll_interval, stop);
            continue;
        }
        let wanted: BTreeSet<String> = rows.iter().map(|row| topic_for(&options.topic_template, row)).collect();
        for topic in &wanted {
            if !topics.ensure(topic, stop)? {
                return Ok(summary);
            }
        }
        summary.topics_created = topics.created;
        let outcomes = send_batch(&producer, &rows, &options.topic_template, stop)?;
        summary.batches += 1;
        hooks::after_acks(summary.batches);
        let (retire, failure) = retirable(&rows, &outcomes);
        source.retire(&retire)?;
        summary.retired += retire.len() as u64;
        if failure.is_none() && retire.len() == rows.len() {
            source.batch_done()?;
        }
        tracing::debug!(rows = rows.len(), retired = retire.len(), "batch done");
        if let Some(failure) = failure {
            return Err(Error::Kafka(failure));
        }
    }
    Ok(summary)
}

fn pause(interval: Duration, stop: &AtomicBool) {
    let until = Instant::now() + interval;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20).min(interval));
    }
}

/// Produces every row and waits for every report; `None` for a row whose report did not come
/// (only after a stop request and [`STOP_GRACE`]).
fn send_batch(
    producer: &BaseProducer<Reports>,
    rows: &[OutboxRow],
    template: &str,
    stop: &AtomicBool,
) -> Result<Vec<Option<Result<(), String>>>, Error> {
    producer.context().0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    for (index, row) in rows.iter().enumerate() {
        let topic = topic_for(template, row);
        let headers = OwnedHeaders::new()
            .insert(Header { key: "id", value: Some(row.id.as_str()) })
            .insert(Header { key: "type", value: Some(row.event_type.as_str()) });
        let mut record = BaseRecord::with_opaque_to(&topic, Box::new(index)).key(&row.aggregate_id).headers(headers);
        if let Some(payload) = &row.payload {
            record = record.payload(payload);
        }
        if let Some(timestamp) = row.timestamp_ms {
            record = record.timestamp(timestamp);
        }
        let mut pending = record;
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    producer.poll(Duration::from_millis(50));
                    pending = record;
                }
                Err((error, _)) => return Err(kafka(format!("sending outbox row {}: {error}", row.id))),
            }
        }
    }
    let mut stopped_at: Option<Instant> = None;
    loop {
        producer.poll(Duration::from_millis(100));
        let reports = producer.context().0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len();
        if reports >= rows.len() {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            let since = *stopped_at.get_or_insert_with(Instant::now);
            if since.elapsed() > STOP_GRACE {
                tracing::warn!(
                    unreported = rows.len() - reports,
                    "stopping with records unacknowledged: resent next run"
                );
                break;
            }
        }
    }
    let mut outcomes = vec![None; rows.len()];
    for (index, outcome) in producer.context().0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).drain(..) {
        assert!(index < rows.len(), "a delivery report names row {index} of a batch of {}", rows.len());
        outcomes[index] = Some(outcome);
    }
    Ok(outcomes)
}

/// The rows to retire: each aggregate's acknowledged rows up to its first row that was not
/// acknowledged (later ones are resent with it, so its order is kept); and the first failure.
pub fn retirable<'a>(
    rows: &'a [OutboxRow],
    outcomes: &[Option<Result<(), String>>],
) -> (Vec<&'a OutboxRow>, Option<String>) {
    assert_eq!(rows.len(), outcomes.len(), "one outcome per row");
    let mut blocked: HashSet<(&str, &str)> = HashSet::new();
    let mut retire = Vec::new();
    let mut failure = None;
    for (row, outcome) in rows.iter().zip(outcomes) {
        let aggregate = (row.aggregate_type.as_str(), row.aggregate_id.as_str());
        match outcome {
            Some(Ok(())) if !blocked.contains(&aggregate) => retire.push(row),
            Some(Ok(())) => {}
            Some(Err(error)) => {
                failure.get_or_insert_with(|| format!("outbox row {} was not stored: {error}", row.id));
                blocked.insert(aggregate);
            }
            None => {
                blocked.insert(aggregate);
            }
        }
    }
    (retire, failure)
}

/// Creates missing topics, each with [`DEDUP_CONFIG`] where the broker accepts it.
struct Topics {
    admin: AdminClient<DefaultClientContext>,
    runtime: tokio::runtime::Runtime,
    partitions: i32,
    known: HashSet<String>,
    created: u64,
}

impl Topics {
    fn new(config: &ClientConfig, partitions: i32) -> Result<Topics, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| Error::Kafka(format!("starting the admin client's runtime: {error}")))?;
        let admin = config.create().map_err(kafka)?;
        Ok(Topics { admin, runtime, partitions, known: HashSet::new(), created: 0 })
    }

    /// Makes sure `topic` exists, retrying while the broker cannot be reached; false if `stop`
    /// was set first.
    fn ensure(&mut self, topic: &str, stop: &AtomicBool) -> Result<bool, Error> {
        while !self.known.contains(topic) {
            if stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
            match self.create(topic, true) {
                Ok(()) => {}
                Err(RDKafkaErrorCode::InvalidConfig) => {
                    tracing::warn!(
                        topic,
                        "the broker refused dedup.source=header:id (not Once?): created without it; \
                         deduplicate downstream on the `id` header (e.g. once sink --dedup header:id)"
                    );
                    self.create(topic, false).or_else(|code| self.settle(topic, code))?;
                }
                Err(code) => self.settle(topic, code)?,
            }
        }
        Ok(true)
    }

    /// A creation's error: the topic exists (fine), or try again after a pause, or give up.
    fn settle(&mut self, topic: &str, code: RDKafkaErrorCode) -> Result<(), Error> {
        match code {
            RDKafkaErrorCode::TopicAlreadyExists => {
                self.warn_without_dedup(topic);
                self.known.insert(topic.to_string());
                Ok(())
            }
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::InvalidPartitions
            | RDKafkaErrorCode::InvalidReplicationFactor => {
                Err(Error::Kafka(format!("creating topic '{topic}': {code}")))
            }
            other => {
                tracing::warn!(topic, error = %other, "creating the topic failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
                Ok(())
            }
        }
    }

    /// A topic someone else created is used as it is; if it does not deduplicate on the `id`
    /// header, a resend after a crash is stored twice, so say so (once per topic per run).
    fn warn_without_dedup(&self, topic: &str) {
        let options = AdminOptions::new().request_timeout(Some(Timeout::After(Duration::from_secs(10))));
        let described =
            self.runtime.block_on(self.admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options));
        let value = match described.as_deref() {
            Ok([Ok(resource)]) => resource.get(DEDUP_CONFIG.0).and_then(|entry| entry.value.clone()),
            other => {
                tracing::warn!(topic, outcome = ?other.map(|_| ()), "could not read the existing topic's dedup.source");
                return;
            }
        };
        if value.as_deref() != Some(DEDUP_CONFIG.1) {
            tracing::warn!(
                topic,
                dedup_source = value.as_deref().unwrap_or("(not a Once topic config)"),
                "the existing topic does not deduplicate on the id header: a resend after a crash is stored \
                 twice; deduplicate downstream on the `id` header (e.g. once sink --dedup header:id)"
            );
        }
    }

    fn create(&mut self, topic: &str, dedup: bool) -> Result<(), RDKafkaErrorCode> {
        let mut new_topic = NewTopic::new(topic, self.partitions, TopicReplication::Fixed(1));
        if dedup {
            new_topic = new_topic.set(DEDUP_CONFIG.0, DEDUP_CONFIG.1);
        }
        let options = AdminOptions::new()
            .request_timeout(Some(Timeout::After(Duration::from_secs(10))))
            .operation_timeout(Some(Timeout::After(Duration::from_secs(10))));
        let outcome = self.runtime.block_on(self.admin.create_topics([&new_topic], &options));
        let result = match outcome {
            Ok(mut results) => results.pop().unwrap_or(Err((topic.to_string(), RDKafkaErrorCode::Unknown))),
            Err(error) => Err((topic.to_string(), error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Unknown))),
        };
        match result {
            Ok(_) => {
                tracing::info!(topic, dedup, "created topic");
                self.known.insert(topic.to_string());
                self.created += 1;
                Ok(())
            }
            Err((_, code)) => Err(code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(position: i64, aggregate: &str) -> OutboxRow {
        OutboxRow {
            position,
            id: format!("id-{position}"),
            aggregate_type: "order".into(),
            aggregate_id: aggregate.into(),
            event_type: "Changed".into(),
            payload: None,
            timestamp_ms: None,
        }
    }

    #[test]
    fn an_aggregate_is_retired_only_up_to_its_first_unacknowledged_row() {
        let rows = [row(1, "a"), row(2, "b"), row(3, "a"), row(4, "b"), row(5, "c")];
        let outcomes = [Some(Err("broken".to_string())), Some(Ok(())), Some(Ok(())), None, Some(Ok(()))];
        let (retire, failure) = retirable(&rows, &outcomes);
        let positions: Vec<i64> = retire.iter().map(|row| row.position).collect();
        assert_eq!(positions, vec![2, 5], "a stops at row 1, b at row 4; c is whole");
        assert_eq!(failure.as_deref(), Some("outbox row id-1 was not stored: broken"));
    }

    #[test]
    fn an_acknowledged_batch_is_retired_whole() {
        let rows = [row(1, "a"), row(2, "a")];
        let (retire, failure) = retirable(&rows, &[Some(Ok(())), Some(Ok(()))]);
        assert_eq!(retire.iter().map(|row| row.position).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(failure, None);
    }
}
