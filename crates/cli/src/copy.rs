//! `once copy`: a consume-transform-produce copier, exactly once with Kafka transactions.
//!
//! Every partition of `--from` is assigned explicitly (no group rebalancing) and read under
//! `read_committed`; each record goes to the same partition number of `--to` with its key, value,
//! headers and timestamp. The records read during one commit interval are written in one transaction
//! together with the consumer offsets that follow them (`send_offsets_to_transaction`), so output and
//! progress commit or abort as one. After an abort — on purpose (`--abort-probability`, which makes
//! the broker prove that aborted records stay invisible) or after an abortable error — every
//! partition is rewound to the group's committed offset and the aborted records are copied again.
//! A newer copier with the same transactional id fences this one: that is fatal, and it exits
//! non-zero. `--no-transactions` is the at-least-once baseline for benchmarks: an idempotent
//! producer, and an offset commit after each flush.
//!
//! `--trace PATH` appends one JSON line per step of each transaction — the wall-clock time just
//! before it asks to commit or abort, the input records it copied, and how it ended — so that
//! `once check` can tell when a record became committable ([`Trace`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

#[derive(Args)]
pub struct CopyArgs {
    /// Broker to talk to, HOST:PORT.
    #[arg(long, env = "ONCE_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[command(flatten)]
    client_settings: crate::client_settings::ClientSettingsArgs,
    /// Topic to read; every partition is copied.
    #[arg(long, value_name = "TOPIC")]
    from: String,
    /// Topic to write, with at least as many partitions as --from.
    #[arg(long, value_name = "TOPIC")]
    to: String,
    /// Consumer group whose committed offsets record the progress.
    #[arg(long, value_name = "GROUP")]
    group: String,
    /// Transactional id; a newer copier with the same id fences this one.
    #[arg(long, value_name = "ID", required_unless_present = "no_transactions")]
    transactional_id: Option<String>,
    /// Length of one transaction (or, with --no-transactions, time between offset commits), in ms.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    commit_interval_ms: u64,
    /// Fraction of transactions aborted on purpose, each followed by a rewind to the committed offsets.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    abort_probability: f64,
    /// Seed of the choice of transactions to abort [default: from the clock; printed in the summary].
    #[arg(long)]
    seed: Option<u64>,
    /// Exit 0 once caught up and nothing has arrived for this long, in ms [default: run forever].
    #[arg(long, value_name = "MS")]
    exit_when_idle_ms: Option<u64>,
    /// transaction.timeout.ms of the producer: the broker aborts a transaction left open this long.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    transaction_timeout_ms: u32,
    /// At-least-once baseline: an idempotent producer, offsets committed after each flush.
    #[arg(long, conflicts_with_all = ["transactional_id", "abort_probability"])]
    no_transactions: bool,
    /// Append a JSON line to PATH at each step of each transaction: just before asking to commit or
    /// abort (wall-clock ms, the input offsets copied), and its outcome. Ignored with --no-transactions.
    #[arg(long, value_name = "PATH")]
    trace: Option<PathBuf>,
}

fn probability(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|error| format!("{error}"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err("must be between 0 and 1".to_string())
    }
}

/// How long one transactional call may keep failing with retriable errors (a broker restart, a
/// coordinator loading) before the copier gives up and exits non-zero.
const RETRY_FOR: Duration = Duration::from_secs(120);
/// Timeout of one blocking librdkafka call; a timeout is retriable, so this only bounds one attempt.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Fresh producer instances a copier starts after fatal (non-fenced) errors before it gives up.
const PRODUCER_RESTARTS_MAX: u32 = 100;
/// Longest single consumer poll, so idle and interval deadlines are noticed promptly.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// Counts delivery failures: in at-least-once mode a failed delivery must stop offsets being committed.
#[derive(Default)]
struct DeliveryFailures(AtomicU64);

impl ClientContext for DeliveryFailures {}
impl ProducerContext for DeliveryFailures {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type CopyProducer = ThreadedProducer<DeliveryFailures>;

/// What the copier has done, for the summary line.
#[derive(Default)]
struct Counts {
    /// Records in committed transactions (at-least-once: records flushed before an offset commit).
    copied: u64,
    /// Transactions committed (at-least-once: offset commits).
    committed: u64,
    /// Transactions aborted, on purpose or after an error.
    aborted: u64,
    /// Of those, aborted after an abortable error.
    aborted_on_error: u64,
}

/// The open transaction's records: how many, and per partition the first offset read and the next
/// offset to read.
#[derive(Default)]
struct Batch {
    records: u64,
    first_offsets: BTreeMap<i32, i64>,
    next_offsets: BTreeMap<i32, i64>,
}

/// `--trace`: one JSON line per step of a transaction, each written whole by one `write` to a file
/// opened for appending and not buffered in the process, so a copier killed at any point leaves every
/// earlier line in the file (the kernel has it) and at most a partial last one. Lines, each with
/// `transaction` (its number in this process, from 0), `producer` (the producer instance, bumped on
/// a restart after a fatal error), `event` and `unix_ms` (the wall clock, ms since the epoch):
/// `commit` and `abort` just before the first call to commit or abort, with `input`: per input
/// partition `[partition, first offset, last offset]` of the records copied; then `committed`,
/// `aborted` or `failed` (with `error`) once the call returned.
struct Trace {
    file: Option<File>,
    transaction: u64,
    producer: u32,
    /// A transaction has begun and has not ended yet.
    open: bool,
}

impl Trace {
    fn open(path: Option<&PathBuf>) -> anyhow::Result<Trace> {
        let file = match path {
            Some(path) => Some(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening the trace file {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Trace { file, transaction: 0, producer: 0, open: false })
    }

    fn begin(&mut self) {
        if self.open {
            self.transaction += 1;
        }
        self.open = true;
    }

    /// Just before asking to commit or abort.
    fn asking(&mut self, event: &str, batch: &Batch) {
        let input: Vec<(i32, i64, i64)> = batch
            .first_offsets
            .iter()
            .map(|(&partition, &first)| {
                (partition, first, batch.next_offsets.get(&partition).map_or(first, |next| next - 1))
            })
            .collect();
        self.line(serde_json::json!({ "event": event, "input": input }));
    }

    /// How the transaction ended: `committed` or `aborted` end it; `failed` ends it only if `last`.
    fn outcome(&mut self, event: &str, error: Option<&str>, last: bool) {
        if !self.open {
            return;
        }
        self.line(match error {
            Some(error) => serde_json::json!({ "event": event, "error": error }),
            None => serde_json::json!({ "event": event }),
        });
        if last || event != "failed" {
            self.open = false;
            self.transaction += 1;
        }
    }

    fn line(&mut self, mut fields: serde_json::Value) {
        let Some(file) = &mut self.file else { return };
        fields["transaction"] = self.transaction.into();
        fields["producer"] = self.producer.into();
        fields["unix_ms"] = unix_ms().into();
        let mut text = fields.to_string();
        text.push('\n');
        if let Err(error) = file.write_all(text.as_bytes()) {
            crate::report!("once copy: writing the trace: {error}; tracing stops");
            self.file = None;
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(0))
}

/// A failed call, as librdkafka classifies it; decides what the copier does next.
#[derive(Debug)]
enum Failure {
    /// Try the same call again (a timeout, a coordinator moving or loading).
    Retriable(String),
    /// The transaction cannot commit: abort it and rewind.
    Abortable(String),
    /// The producer is unusable (fenced by a newer copier, or broken): exit non-zero.
    Fatal(String),
}

/// Reading progress: which partitions are known to be caught up, and when a record last arrived.
struct Reader {
    partitions: Vec<i32>,
    /// Partitions that reported end-of-partition since their last record or rewind.
    at_end: BTreeSet<i32>,
    /// When a record, a rewind or a consumer error last happened.
    last_activity: Instant,
    last_error: Option<String>,
}

impl Reader {
    fn record_seen(&mut self, partition: i32) {
        self.at_end.remove(&partition);
        self.last_activity = Instant::now();
    }

    fn rewound(&mut self) {
        self.at_end.clear();
        self.last_activity = Instant::now();
    }

    /// Caught up on every partition, and nothing arrived for `idle`.
    fn idle_for(&self, idle: Duration) -> bool {
        self.at_end.len() == self.partitions.len() && self.last_activity.elapsed() >= idle
    }

    /// End-of-partition marks a partition caught up. Any other error (the broker went away, say)
    /// restarts the idle timer: end-of-partition is reported once per end offset, so a reconnect
    /// brings either new records or quiet, and only quiet for the whole idle time counts. Only a
    /// fatal consumer error stops the copier.
    fn consumer_error(&mut self, error: KafkaError) -> Result<(), Failure> {
        match error {
            KafkaError::PartitionEOF(partition) => {
                self.at_end.insert(partition);
                Ok(())
            }
            KafkaError::MessageConsumptionFatal(code) => Err(Failure::Fatal(format!("consumer: {code:?}"))),
            other => {
                self.last_activity = Instant::now();
                let text = other.to_string();
                if self.last_error.as_deref() != Some(text.as_str()) {
                    crate::report!("once copy: consumer: {text} (retrying)");
                    self.last_error = Some(text);
                }
                Ok(())
            }
        }
    }
}

/// Deterministic choice of the transactions to abort (splitmix64), so a seed replays a run.
struct Chance(u64);

impl Chance {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn happens(&mut self, probability: f64) -> bool {
        probability > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < probability
    }
}

/// The copier's clients and settings.
struct Copier {
    args: CopyArgs,
    consumer: BaseConsumer,
    producer: CopyProducer,
}

pub fn run(args: CopyArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_nanos() as u64).unwrap_or(1)
    });
    let started = Instant::now();
    let mut copier = Copier::connect(args)?;
    let partitions = copier.partitions()?;
    let mut reader = Reader { partitions, at_end: BTreeSet::new(), last_activity: started, last_error: None };
    let mut counts = Counts::default();
    let outcome = if copier.args.no_transactions {
        copier.run_at_least_once(&mut reader, &mut counts)
    } else {
        let mut trace = Trace::open(copier.args.trace.as_ref())?;
        copier.run_transactional(&mut reader, &mut counts, &mut Chance(seed), &mut trace)
    };
    let seconds = started.elapsed().as_secs_f64();
    if copier.args.no_transactions {
        crate::report!(
            "once copy: {} records copied (at least once), {} offset commits, {seconds:.1} s",
            counts.copied,
            counts.committed
        );
    } else {
        crate::report!(
            "once copy: {} records copied, {} transactions committed, {} transactions aborted ({} after errors), \
             {seconds:.1} s, seed {seed}",
            counts.copied,
            counts.committed,
            counts.aborted,
            counts.aborted_on_error
        );
    }
    outcome
}

impl Copier {
    fn connect(args: CopyArgs) -> anyhow::Result<Copier> {
        let consumer: BaseConsumer = crate::clients::client_config_with(&args.bootstrap, &args.client_settings)?
            .set("group.id", &args.group)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .set("reconnect.backoff.max.ms", "1000")
            .create()
            .context("creating the consumer")?;
        let producer = Copier::producer(&args)?;
        Ok(Copier { args, consumer, producer })
    }

    fn producer(args: &CopyArgs) -> anyhow::Result<CopyProducer> {
        let mut config = crate::clients::client_config_with(&args.bootstrap, &args.client_settings)?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("reconnect.backoff.max.ms", "1000");
        if let Some(transactional_id) = &args.transactional_id {
            config
                .set("transactional.id", transactional_id)
                .set("transaction.timeout.ms", args.transaction_timeout_ms.to_string());
        }
        config.create_with_context(DeliveryFailures::default()).context("creating the producer")
    }

    /// The partitions of --from, after checking --to has each of them.
    fn partitions(&self) -> anyhow::Result<Vec<i32>> {
        let count = |topic: &str| -> anyhow::Result<usize> {
            let metadata = self
                .consumer
                .fetch_metadata(Some(topic), CALL_TIMEOUT)
                .with_context(|| format!("fetching metadata of '{topic}'"))?;
            let found = metadata.topics().first().with_context(|| format!("topic '{topic}' missing from metadata"))?;
            if let Some(error) = found.error() {
                anyhow::bail!("topic '{topic}': {error:?}");
            }
            Ok(found.partitions().len())
        };
        let from = count(&self.args.from)?;
        let to = count(&self.args.to)?;
        anyhow::ensure!(from > 0, "topic '{}' has no partitions", self.args.from);
        anyhow::ensure!(
            to >= from,
            "'{}' has {to} partitions, fewer than the {from} of '{}': records keep their partition number",
            self.args.to,
            self.args.from
        );
        Ok((0..from as i32).collect())
    }

    /// The group's committed offsets of every partition (the beginning where there is none), retried
    /// through broker restarts. Under read_committed librdkafka asks for stable offsets only, so
    /// offsets of a transaction still being completed are waited for, never read half-done.
    fn committed_offsets(&self, partitions: &[i32]) -> anyhow::Result<TopicPartitionList> {
        let mut wanted = TopicPartitionList::new();
        for &partition in partitions {
            wanted.add_partition(&self.args.from, partition);
        }
        let deadline = Instant::now() + RETRY_FOR;
        let committed = loop {
            match self.consumer.committed_offsets(wanted.clone(), CALL_TIMEOUT) {
                Ok(committed) => break committed,
                Err(error) if Instant::now() < deadline => {
                    crate::report!("once copy: fetching committed offsets: {error} (retrying)");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(error) => return Err(error).context("fetching the group's committed offsets"),
            }
        };
        let mut start = TopicPartitionList::new();
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(offset) if offset >= 0 => Offset::Offset(offset),
                _ => Offset::Beginning,
            };
            start.add_partition_offset(&self.args.from, element.partition(), offset)?;
        }
        Ok(start)
    }

    /// Seeks every assigned partition back to the group's committed offset: what an aborted
    /// transaction read is read again. Falls back to re-assigning if a seek is refused.
    fn rewind(&self, reader: &mut Reader) -> Result<(), Failure> {
        let start = self.committed_offsets(&reader.partitions).map_err(|error| Failure::Fatal(format!("{error:#}")))?;
        let refused = match self.consumer.seek_partitions(start.clone(), CALL_TIMEOUT) {
            Ok(result) => result.elements().iter().any(|element| element.error().is_err()),
            Err(_) => true,
        };
        if refused {
            self.consumer.assign(&start).map_err(|error| Failure::Fatal(format!("re-assigning: {error}")))?;
        }
        reader.rewound();
        Ok(())
    }

    /// Waits for the next record; `None` when --exit-when-idle-ms says the copy is done.
    fn next_record(&self, reader: &mut Reader) -> Result<Option<BorrowedMessage<'_>>, Failure> {
        let idle = self.args.exit_when_idle_ms.map(Duration::from_millis);
        loop {
            if idle.is_some_and(|idle| reader.idle_for(idle)) {
                return Ok(None);
            }
            match self.consumer.poll(POLL_SLICE) {
                Some(Ok(message)) => {
                    reader.record_seen(message.partition());
                    return Ok(Some(message));
                }
                Some(Err(error)) => reader.consumer_error(error)?,
                None => {}
            }
        }
    }

    /// Forwards records until `until`, adding them to `batch`.
    fn fill(&self, reader: &mut Reader, batch: &mut Batch, until: Instant) -> Result<(), Failure> {
        while let Some(wait) = until.checked_duration_since(Instant::now()) {
            match self.consumer.poll(wait.min(POLL_SLICE)) {
                Some(Ok(message)) => {
                    reader.record_seen(message.partition());
                    self.forward(&message, batch)?;
                }
                Some(Err(error)) => reader.consumer_error(error)?,
                None => {}
            }
        }
        Ok(())
    }

    /// Sends `message` to the same partition of --to with its key, value, headers and timestamp.
    fn forward(&self, message: &BorrowedMessage<'_>, batch: &mut Batch) -> Result<(), Failure> {
        let headers = message.headers().map(|headers| headers.detach());
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.args.to).partition(message.partition());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        if let Some(timestamp) = message.timestamp().to_millis() {
            record = record.timestamp(timestamp);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => return Err(self.classify(&error, "sending a record")),
            }
        }
        batch.records += 1;
        batch.first_offsets.entry(message.partition()).or_insert(message.offset());
        batch.next_offsets.insert(message.partition(), message.offset() + 1);
        Ok(())
    }

    fn offsets_of(&self, batch: &Batch) -> Result<TopicPartitionList, Failure> {
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in &batch.next_offsets {
            offsets
                .add_partition_offset(&self.args.from, partition, Offset::Offset(offset))
                .map_err(|error| Failure::Fatal(error.to_string()))?;
        }
        Ok(offsets)
    }

    /// What librdkafka says a failed call means; a producer with a fatal error is always fatal.
    fn classify(&self, error: &KafkaError, what: &str) -> Failure {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            return Failure::Fatal(self.fatal_text(code, &reason));
        }
        match error {
            KafkaError::Transaction(inner) if inner.is_fatal() => {
                Failure::Fatal(self.fatal_text(inner.code(), &inner.string()))
            }
            KafkaError::Transaction(inner) if inner.txn_requires_abort() => {
                Failure::Abortable(format!("{what}: {inner}"))
            }
            KafkaError::Transaction(inner) if inner.is_retriable() => Failure::Retriable(format!("{what}: {inner}")),
            other => Failure::Abortable(format!("{what}: {other}")),
        }
    }

    fn fatal_text(&self, code: RDKafkaErrorCode, reason: &str) -> String {
        let id = self.args.transactional_id.as_deref().unwrap_or("-");
        match code {
            RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch => {
                format!("fenced: a newer producer with transactional id '{id}' has taken over ({reason})")
            }
            code => format!("fatal producer error {code:?} (transactional id '{id}'): {reason}"),
        }
    }

    /// Runs `call` until it succeeds, retrying retriable failures for up to [`RETRY_FOR`].
    fn with_retries(&self, what: &str, mut call: impl FnMut() -> KafkaResult<()>) -> Result<(), Failure> {
        let deadline = Instant::now() + RETRY_FOR;
        let mut backoff = Duration::from_millis(20);
        loop {
            let Err(error) = call() else { return Ok(()) };
            match self.classify(&error, what) {
                Failure::Retriable(reason) if Instant::now() < deadline => {
                    crate::report!("once copy: {reason} (retrying)");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Failure::Retriable(reason) => {
                    return Err(Failure::Fatal(format!("{reason}: still failing after {} s", RETRY_FOR.as_secs())))
                }
                other => return Err(other),
            }
        }
    }
}

impl Copier {
    fn run_transactional(
        &mut self,
        reader: &mut Reader,
        counts: &mut Counts,
        chance: &mut Chance,
        trace: &mut Trace,
    ) -> anyhow::Result<()> {
        // init_transactions first: it fences any previous copier with this transactional id and aborts
        // its open transaction, so the committed offsets read next are final.
        self.with_retries("initializing transactions", || self.producer.init_transactions(CALL_TIMEOUT))
            .map_err(|failure| anyhow::anyhow!("{}", failure_text(failure)))?;
        let start = self.committed_offsets(&reader.partitions)?;
        self.consumer.assign(&start).context("assigning the input partitions")?;
        let mut producer_restarts = 0;
        loop {
            let mut batch = Batch::default();
            let outcome = match self.next_record(reader) {
                Ok(None) => return Ok(()),
                Ok(Some(first)) => {
                    trace.begin();
                    self.transaction(reader, first, chance, &mut batch, trace)
                }
                Err(failure) => Err(failure),
            };
            if let Err(Failure::Fatal(reason)) = &outcome {
                trace.outcome("failed", Some(reason), true);
            }
            match outcome {
                Ok(Finished::Committed(records)) => {
                    counts.committed += 1;
                    counts.copied += records;
                }
                Ok(Finished::AbortedOnPurpose) => {
                    counts.aborted += 1;
                    self.abort_and_rewind(reader, &batch, trace)
                        .map_err(|failure| anyhow::anyhow!("{}", failure_text(failure)))?;
                }
                Err(Failure::Abortable(reason) | Failure::Retriable(reason)) => {
                    crate::report!("once copy: aborting the transaction: {reason}");
                    counts.aborted += 1;
                    counts.aborted_on_error += 1;
                    self.abort_and_rewind(reader, &batch, trace)
                        .map_err(|failure| anyhow::anyhow!("{}", failure_text(failure)))?;
                }
                // Fenced: a newer copier owns the transactional id; this one must stop.
                Err(Failure::Fatal(reason)) if reason.starts_with("fenced") => anyhow::bail!("{reason}"),
                // Any other fatal producer error (e.g. librdkafka reusing sequence numbers the broker
                // already stored, after a lost response): a new producer instance starts over — its
                // init_transactions bumps the epoch and aborts whatever the old one left open — and
                // the input is rewound to the committed offsets, so nothing is lost or copied twice.
                Err(Failure::Fatal(reason)) if producer_restarts < PRODUCER_RESTARTS_MAX => {
                    producer_restarts += 1;
                    crate::report!("once copy: restarting the producer after a fatal error: {reason}");
                    counts.aborted_on_error += 1;
                    trace.producer += 1;
                    self.producer = Copier::producer(&self.args)?;
                    self.with_retries("initializing transactions", || self.producer.init_transactions(CALL_TIMEOUT))
                        .map_err(|failure| anyhow::anyhow!("{}", failure_text(failure)))?;
                    self.rewind(reader).map_err(|failure| anyhow::anyhow!("{}", failure_text(failure)))?;
                }
                Err(Failure::Fatal(reason)) => anyhow::bail!("{reason}"),
            }
        }
    }

    /// One transaction: `first` and whatever arrives within the commit interval, then a commit with the
    /// offsets that follow them — or, by chance, an abort.
    fn transaction(
        &self,
        reader: &mut Reader,
        first: BorrowedMessage<'_>,
        chance: &mut Chance,
        batch: &mut Batch,
        trace: &mut Trace,
    ) -> Result<Finished, Failure> {
        let until = Instant::now() + Duration::from_millis(self.args.commit_interval_ms);
        self.producer.begin_transaction().map_err(|error| self.classify(&error, "beginning a transaction"))?;
        self.forward(&first, batch)?;
        drop(first);
        self.fill(reader, batch, until)?;
        if chance.happens(self.args.abort_probability) {
            return Ok(Finished::AbortedOnPurpose);
        }
        let offsets = self.offsets_of(batch)?;
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| Failure::Fatal("the consumer has no group metadata".to_string()))?;
        self.with_retries("sending offsets to the transaction", || {
            self.producer.send_offsets_to_transaction(&offsets, &group, CALL_TIMEOUT)
        })?;
        trace.asking("commit", batch);
        let committed =
            self.with_retries("committing the transaction", || self.producer.commit_transaction(CALL_TIMEOUT));
        match &committed {
            Ok(()) => trace.outcome("committed", None, false),
            // A fatal failure is traced by the caller, as it ends the transaction.
            Err(Failure::Abortable(reason) | Failure::Retriable(reason)) => {
                trace.outcome("failed", Some(reason), false)
            }
            Err(Failure::Fatal(_)) => {}
        }
        committed?;
        Ok(Finished::Committed(batch.records))
    }

    fn abort_and_rewind(&self, reader: &mut Reader, batch: &Batch, trace: &mut Trace) -> Result<(), Failure> {
        trace.asking("abort", batch);
        match self.with_retries("aborting the transaction", || self.producer.abort_transaction(CALL_TIMEOUT)) {
            Ok(()) => trace.outcome("aborted", None, false),
            Err(Failure::Abortable(reason)) => {
                trace.outcome("failed", Some(&reason), true);
                return Err(Failure::Fatal(format!("cannot abort: {reason}")));
            }
            Err(other) => {
                trace.outcome("failed", Some(failure_text_ref(&other)), true);
                return Err(other);
            }
        }
        self.rewind(reader)
    }

    fn run_at_least_once(&self, reader: &mut Reader, counts: &mut Counts) -> anyhow::Result<()> {
        let start = self.committed_offsets(&reader.partitions)?;
        self.consumer.assign(&start).context("assigning the input partitions")?;
        loop {
            let Some(first) =
                self.next_record(reader).map_err(|failure| anyhow::anyhow!("{}", failure_text(failure)))?
            else {
                return Ok(());
            };
            let until = Instant::now() + Duration::from_millis(self.args.commit_interval_ms);
            let mut batch = Batch::default();
            let forwarded = self.forward(&first, &mut batch);
            drop(first);
            forwarded
                .and_then(|()| self.fill(reader, &mut batch, until))
                .map_err(|failure| anyhow::anyhow!("{}", failure_text(failure)))?;
            self.producer.flush(CALL_TIMEOUT * 4).context("waiting for acknowledgements")?;
            let failed = self.producer.context().0.load(Ordering::Relaxed);
            anyhow::ensure!(failed == 0, "{failed} records were not delivered; their offsets are not committed");
            let offsets = self.offsets_of(&batch).map_err(|failure| anyhow::anyhow!("{}", failure_text(failure)))?;
            let deadline = Instant::now() + RETRY_FOR;
            while let Err(error) = self.consumer.commit(&offsets, CommitMode::Sync) {
                anyhow::ensure!(Instant::now() < deadline, "committing offsets: {error}");
                crate::report!("once copy: committing offsets: {error} (retrying)");
                std::thread::sleep(Duration::from_millis(200));
            }
            counts.committed += 1;
            counts.copied += batch.records;
        }
    }
}

/// How a transaction ended, when it ended without a failure.
enum Finished {
    Committed(u64),
    AbortedOnPurpose,
}

fn failure_text_ref(failure: &Failure) -> &str {
    match failure {
        Failure::Retriable(reason) | Failure::Abortable(reason) | Failure::Fatal(reason) => reason,
    }
}

fn failure_text(failure: Failure) -> String {
    match failure {
        Failure::Retriable(reason) | Failure::Abortable(reason) | Failure::Fatal(reason) => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chance_follows_the_probability_and_the_seed() {
        let mut chance = Chance(7);
        let hits = (0..10_000).filter(|_| chance.happens(0.33)).count();
        assert!((3_000..3_600).contains(&hits), "about a third: {hits}");
        let mut never = Chance(7);
        assert!((0..1_000).all(|_| !never.happens(0.0)), "probability 0 never aborts");
        let first: Vec<bool> = (0..64)
            .map({
                let mut chance = Chance(42);
                move |_| chance.happens(0.5)
            })
            .collect();
        let second: Vec<bool> = (0..64)
            .map({
                let mut chance = Chance(42);
                move |_| chance.happens(0.5)
            })
            .collect();
        assert_eq!(first, second, "a seed replays the same choices");
    }

    #[test]
    fn seed_3_aborts_the_first_transaction_at_a_third() {
        // tests/transactions.rs relies on this to be sure aborted records exist.
        assert!(Chance(3).happens(0.33));
    }

    #[test]
    fn the_trace_numbers_transactions_and_ends_one_only_when_it_ends() {
        let dir = std::env::temp_dir().join(format!("once-copy-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("trace.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut trace = Trace::open(Some(&path)).expect("open");
        let mut batch = Batch::default();
        batch.first_offsets.insert(2, 10);
        batch.next_offsets.insert(2, 13);
        trace.begin();
        trace.asking("commit", &batch);
        trace.outcome("committed", None, false);
        trace.begin();
        trace.asking("commit", &batch);
        trace.outcome("failed", Some("abortable"), false);
        trace.asking("abort", &batch);
        trace.outcome("aborted", None, false);
        trace.begin();
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> =
            text.lines().map(|line| serde_json::from_str(line).expect("one JSON object a line")).collect();
        let fields =
            |line: &serde_json::Value| (line["transaction"].as_u64(), line["event"].as_str().map(String::from));
        let events: Vec<_> = lines.iter().map(fields).collect();
        let expected = [(0, "commit"), (0, "committed"), (1, "commit"), (1, "failed"), (1, "abort"), (1, "aborted")];
        assert_eq!(events, expected.map(|(number, event)| (Some(number), Some(event.to_string()))));
        assert_eq!(lines[0]["input"], serde_json::json!([[2, 10, 12]]), "first and last offset copied");
        assert!(lines[0]["unix_ms"].as_u64().is_some_and(|ms| ms > 1_600_000_000_000), "the wall clock");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn probabilities_outside_zero_to_one_are_refused() {
        assert_eq!(probability("0.33"), Ok(0.33));
        assert!(probability("1.5").is_err());
        assert!(probability("-0.1").is_err());
        assert!(probability("often").is_err());
    }
}
