//! `once check`: runs a workload against a Kafka-compatible broker while injecting seeded faults,
//! records what every client saw, and checks the history for Jepsen's Kafka anomalies (lost and
//! unseen writes, duplicates, inconsistent offsets, non-monotonic sends and polls, poll skips,
//! aborted and precommitted reads). It talks to the broker only over the network, so it checks Once
//! or any other Kafka broker.
//!
//! # Layout
//! One folder per workload, each with its workload (`mod.rs`: the clients that run it and turn what
//! they saw into a history), its `run.rs` (the run under the nemesis, the check, the report), its
//! checker (pure functions of a history, unit-tested on hand-made histories in `checker_tests.rs`)
//! and its `report.rs` (the summary table and the JSON report):
//! - `queue/`: idempotent producers, assign and subscribe consumers, the final read, recorded as a
//!   [`History`]; its checker holds Jepsen's classes, which the other checkers reuse.
//! - `group/`: members that process, commit and crash, and the fresh consumer that resumes from
//!   the committed offsets (`run.rs` also starts and stops them); `history.rs`: [`GroupHistory`].
//! - `txn/`: producers to an input topic, live read_committed and read_uncommitted consumers of the
//!   output, the final copy and the final reads of both topics; `copier.rs`: the `once copy`
//!   processes, their faults (kill, pause, resume) and their traces; `history.rs`: [`TxnHistory`];
//!   its checker: input/output set equality, order, G1a, precommitted reads.
//! - `dedup/`: fresh producer processes sending and resending message ids to a deduplicating topic;
//!   its checker: each id stored once, acknowledged ids stored, answers' offsets right.
//! - `sink/`: `once sink` processes applying the topic to PostgreSQL or SQLite, killed mid-batch and
//!   paused into zombies (`processes.rs`, with the database stalls that catch them inside a batch),
//!   the drain and the database read back (`database.rs`), `history.rs`: [`SinkHistory`]; its
//!   checker: every input record's effect once (`lost-effect`, `duplicate-effect`), stored positions
//!   equal to what was applied (`position-mismatch`), no effect of nothing (`unexpected-effect`).
//! - `dedup_processor/`: `once dedup` processes deduplicating `<run>-in` into `<run>-out` in one
//!   group, killed, paused into zombies and replaced (`processes.rs`), fed by the `dedup` workload's
//!   resending producers; the drain by final processors and the final reads of both topics;
//!   `history.rs`: [`ProcessorHistory`]; its checker: every acknowledged or input id in the output
//!   once, as a record sent for it, the first of its partition (`lost`, `duplicate`, `unexpected`,
//!   `not-first`).
//!
//! Shared by the workloads:
//! - `lib.rs`: [`CheckArgs`] (the `once check` flags), [`run`]: set-up, the run, the verdict.
//! - `run`: one run's settings, the proxy and managed broker, the nemesis over them, publishing.
//! - `history`: what every workload records, as plain data (sends, polls, faults).
//! - `producer_process`: producers as processes (`once check-producer`) fed by the checker, killed
//!   with SIGKILL by `client-kill` (the `dedup` producers, the `txn` and `dedup-processor` input
//!   producers; the `sink` input producers too, not killed).
//! - `proxy`: the seeded TCP fault proxy (resets, delays, lost responses, duplicated produces).
//! - `nemesis`: the broker process under `--broker-cmd` and the kill -9 / proxy schedule.
//! - `power_loss`: applying the manifest a broker's power-loss hook writes (the checker's half).
//! - `progress`: live counters and the one-line progress indicator on stderr.
//! - `report`: what every workload's table and JSON report share; `timeline`: acknowledgements and
//!   ack latency per second (the JSON report's `per_second` and `ack_latency_ms`); `html`: the HTML
//!   page drawn from the JSON report (throughput, ack latency, anomaly and fault lanes).
//! - `rng`: the seeded generator behind every fault decision.
//! - `topics`: the run's topics over the admin API, and the warning when clients bypass the proxy.

mod dedup;
mod dedup_processor;
mod group;
mod history;
mod html;
mod nemesis;
pub mod power_loss;
mod producer_process;
mod progress;
mod proxy;
mod queue;
mod report;
mod rng;
mod run;
mod sink;
mod timeline;
mod topics;
mod txn;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

pub use dedup::checker::{check_dedup, resends, Ack, DedupAnomaly, DedupHistory, Resends, DEDUP_CLASSES};
pub use dedup_processor::checker::{check_processor, Passed, ProcessorAnomaly, PROCESSOR_CLASSES};
pub use dedup_processor::history::{ProcessorEnd, ProcessorHistory, ProcessorRun, Record, TopicRecords};
pub use group::checker::{check_group, reprocessing, GroupAnomaly, Reprocessing, GROUP_CLASSES};
pub use group::history::{Commit, CommittedRead, GroupHistory, Incarnation, Processed, Resume};
pub use history::{FaultEvent, History, Poll, Send, SendOutcome};
pub use producer_process::{run_producer, ProducerArgs, ProducerEnd, ProducerRun};
pub use queue::checker::{check, Anomaly, LostEvidence, CLASSES};
use run::{Run, SetUp};
pub use sink::checker::{check_sink, EffectPlace, SinkAnomaly, SINK_CLASSES};
pub use sink::history::{Effect, Pause, SinkEnd, SinkHistory, SinkProcess};
pub use txn::checker::{check_txn, uncommitted_reads, TxnAnomaly, TXN_CLASSES};
pub use txn::history::{Copier, CopierEnd, TopicRead, TxnHistory, Unparseable};

/// Workloads `once check` can run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Idempotent producers, assign and subscribe consumers, a final read.
    Queue,
    /// Consumer-group members committing offsets while they crash; a fresh member resumes at the end.
    Group,
    /// Transactional copiers (`once copy`) with random aborts, killed and paused; input checked against
    /// the committed output.
    Txn,
    /// Fresh producer processes sending and resending message ids to a topic with
    /// `dedup.source=header:once-check-id`; each id must be stored exactly once.
    Dedup,
    /// `once sink` processes apply every record to a database (`--sink-database`), killed mid-batch
    /// and paused into zombies; each record's effect must be there exactly once, and each stored
    /// position must be the end of what was applied.
    Sink,
    /// `once dedup` processes (`--processors`, in one group) deduplicate a topic that fresh producer
    /// processes resend message ids to, killed, paused into zombies and replaced; each id acknowledged
    /// or read must be in the output exactly once, as its first record.
    DedupProcessor,
}

/// `dedup-processor` workload: where the processors read each record's id (`once dedup --source`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessorSource {
    /// `header:once-check-id`, the header every producer sends.
    Header,
    /// The record key, which the producers do not send: every record passes as one without an id.
    /// Only to see the checker catch the duplicates that gives.
    Key,
}

/// `sink` workload: `once sink --at-least-once ORDER`, a sink without positions in the database.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkCommitOrder {
    /// Group offsets committed after the database commit: a sink stopped between the two applies
    /// its batch again.
    After,
    /// Group offsets committed before the database transaction: a sink killed between the two
    /// loses its batch.
    Before,
}

impl SinkCommitOrder {
    /// The value `once sink --at-least-once` takes.
    pub fn flag_value(self) -> &'static str {
        match self {
            SinkCommitOrder::After => "after",
            SinkCommitOrder::Before => "before",
        }
    }
}

/// `dedup` workload: what the topic deduplicates by.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupSource {
    /// `dedup.source=header:once-check-id`, the header every producer sends.
    Header,
    /// No `dedup.source`: the topic stores every resend. Only to see the checker catch duplicates.
    None,
}

/// A consumer's `isolation.level`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    #[value(name = "read_committed")]
    ReadCommitted,
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
}

impl Isolation {
    /// The librdkafka setting.
    pub fn config_value(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// Faults the checker can inject.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The proxy closes both connections before forwarding a request.
    Reset,
    /// The proxy holds a request for up to 50 ms.
    Delay,
    /// The proxy forwards a request, swallows its response and closes the connections.
    LostResponse,
    /// The proxy sends a Produce request twice and swallows the second response.
    Duplicate,
    /// SIGKILL and restart of the broker (needs `--broker-cmd`).
    Kill,
    /// Simulated power loss of the broker (needs `--broker-cmd` and Once's storage hook, which the
    /// checker turns on; Once has it only when built with `--features test-hooks`): every append not
    /// yet fsynced is thrown away, then a restart.
    PowerLoss,
    /// SIGSTOP of the broker for 0.3–2 s, then SIGCONT (needs `--broker-cmd`).
    Pause,
    /// `group` workload: a member's client is dropped without committing or leaving the group, and
    /// the proxy cuts it off, as if its process had died.
    Crash,
    /// `txn` workload: SIGKILL of the active copier process (a successor with its transactional id
    /// starts at once) and of input producer processes; `dedup`: SIGKILL of producer processes
    /// mid-send; `sink`: SIGKILL of a sink mid-batch (caught inside its database transaction by a
    /// 0.7-s stall of the database) and a successor at once; `dedup-processor`: SIGKILL of a
    /// processor (a new one starts at once) and of input producer processes.
    ClientKill,
    /// `txn` workload: SIGSTOP of the active copier, a successor starts (fencing it), and 1–4 s later
    /// SIGCONT: the zombie must exit fenced without anything it writes becoming visible. `sink`:
    /// SIGSTOP of a sink mid-batch for 13–16 s, past its session timeout, so its partitions move;
    /// then SIGCONT: the zombie's batch must be refused. `dedup-processor`: SIGSTOP of a processor for
    /// 1–9 s, the longer pauses past its 6-s session and 4-s transaction timeouts, then SIGCONT.
    ClientPause,
}

/// Flags of `once check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// The broker, HOST:PORT. With `--broker-cmd`, the address the started broker listens on.
    #[arg(long, env = "ONCE_BOOTSTRAP", value_name = "HOST:PORT")]
    pub bootstrap: String,
    /// What to run.
    #[arg(long, env = "ONCE_CHECK_WORKLOAD", value_enum, default_value = "queue")]
    pub workload: Workload,
    /// Seconds of load under faults (the final read comes after).
    #[arg(long, env = "ONCE_CHECK_DURATION", default_value_t = 30, value_name = "SECS")]
    pub duration: u64,
    /// Seed of the fault schedule and of every proxy decision [default: from the clock, printed].
    #[arg(long, env = "ONCE_CHECK_SEED", value_name = "N")]
    pub seed: Option<u64>,
    /// Also write the JSON report here.
    #[arg(long, env = "ONCE_CHECK_JSON", value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Also write an HTML page here: a timeline of throughput, injected faults and anomalies.
    #[arg(long, env = "ONCE_CHECK_REPORT", value_name = "PATH.html")]
    pub report: Option<PathBuf>,
    /// Start and manage the broker with this shell command, to kill -9 and restart it. `{listen}` and
    /// `{advertised}` are replaced by `--bootstrap` and the proxy address; without them the command
    /// gets `--listen BOOTSTRAP --advertised-listener PROXY` appended (Once's flags).
    #[arg(long, env = "ONCE_CHECK_BROKER_CMD", value_name = "CMD")]
    pub broker_cmd: Option<String>,
    /// Where the managed broker's output goes [default: once-check-broker-SEED.log in the temp dir].
    #[arg(long, env = "ONCE_CHECK_BROKER_LOG", value_name = "PATH")]
    pub broker_log: Option<PathBuf>,
    /// Run the fault proxy on this address. A broker the checker does not manage must advertise it
    /// (Once: `--advertised-listener`). With `--broker-cmd` the proxy runs anyway, on a free port.
    #[arg(long, env = "ONCE_CHECK_PROXY", value_name = "HOST:PORT")]
    pub proxy: Option<String>,
    /// Faults to inject, comma-separated.
    #[arg(
        long,
        env = "ONCE_CHECK_FAULTS",
        value_enum,
        value_delimiter = ',',
        default_value = "reset,delay,lost-response,duplicate,kill,power-loss,pause,crash,client-kill,client-pause"
    )]
    pub faults: Vec<Fault>,
    /// Probability of each proxy fault per request while the proxy's faults are on.
    #[arg(long, env = "ONCE_CHECK_FAULT_PROBABILITY", default_value_t = 0.01)]
    pub fault_probability: f64,
    /// Partitions of the topic the run creates.
    #[arg(long, env = "ONCE_CHECK_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
    /// Concurrent producers.
    #[arg(long, env = "ONCE_CHECK_PRODUCERS", default_value_t = 2)]
    pub producers: u32,
    /// Records per second, over all producers.
    #[arg(long, env = "ONCE_CHECK_RATE", default_value_t = 500)]
    pub rate: u32,
    /// enable.idempotence of the producers. `false` only to see the checker catch the duplicates a
    /// non-idempotent producer writes under retries.
    #[arg(long, env = "ONCE_CHECK_PRODUCER_IDEMPOTENCE", default_value_t = true, action = clap::ArgAction::Set)]
    pub producer_idempotence: bool,
    /// `group` workload: members of the consumer group.
    #[arg(long, env = "ONCE_CHECK_MEMBERS", default_value_t = 3)]
    pub members: u16,
    /// `group` workload: commit each batch before processing it. `true` only to see the checker catch
    /// the records a crash between the two then skips.
    #[arg(long, env = "ONCE_CHECK_COMMIT_BEFORE_PROCESS", default_value_t = false, action = clap::ArgAction::Set)]
    pub commit_before_process: bool,
    /// `txn` workload: the copier command; the copy flags (`--bootstrap`, `--from`, `--to`, `--group`,
    /// `--transactional-id`, …) are appended and it runs under `sh -c` [default: this executable's
    /// `copy` subcommand].
    #[arg(long, env = "ONCE_CHECK_COPIER_CMD", value_name = "CMD")]
    pub copier_cmd: Option<String>,
    /// `txn` workload: isolation level of the live consumer of the output that must see only committed
    /// records. `read_uncommitted` only to see the checker catch the aborted and precommitted reads
    /// that gives.
    #[arg(long, env = "ONCE_CHECK_TXN_CONSUMER_ISOLATION", value_enum, default_value = "read_committed")]
    pub txn_consumer_isolation: Isolation,
    /// `dedup` and `txn` workloads: the producer process command; its flags are appended and it runs
    /// under `sh -c` [default: this executable's `check-producer` subcommand].
    #[arg(long, env = "ONCE_CHECK_PRODUCER_CMD", value_name = "CMD")]
    pub producer_cmd: Option<String>,
    /// `dedup` workload: what the topic deduplicates by. `none` only to see the checker catch the
    /// duplicates resends then store.
    #[arg(long, env = "ONCE_CHECK_DEDUP_SOURCE", value_enum, default_value = "header")]
    pub dedup_source: DedupSource,
    /// `sink` workload: `once sink` processes at a time, in one consumer group.
    #[arg(long, env = "ONCE_CHECK_SINKS", default_value_t = 3)]
    pub sinks: u32,
    /// `sink` workload: the sink command; the sink flags (`--bootstrap`, `--group`, `--topic`,
    /// `--database`, `--sql`, `--batch-records`) are appended and it runs under `sh -c` [default:
    /// this executable's `sink` subcommand].
    #[arg(long, env = "ONCE_CHECK_SINK_CMD", value_name = "CMD")]
    pub sink_cmd: Option<String>,
    /// `sink` workload: the database the sinks write, `sqlite://PATH` or
    /// `postgres://user:pass@host:port/db` [default: a SQLite file named after the run in the temp
    /// dir, or beside `--broker-log`].
    #[arg(long, env = "ONCE_CHECK_SINK_DATABASE", value_name = "URL")]
    pub sink_database: Option<String>,
    /// `sink` workload: run the sinks `--at-least-once after|before` (positions in the group's
    /// committed offsets, not in the database). Only to see the checker catch the duplicated
    /// (`after`) or lost (`before`) effects that gives.
    #[arg(long, env = "ONCE_CHECK_SINK_AT_LEAST_ONCE", value_enum, value_name = "ORDER")]
    pub sink_at_least_once: Option<SinkCommitOrder>,
    /// `dedup-processor` workload: `once dedup` processes at a time, in one consumer group.
    #[arg(long, env = "ONCE_CHECK_PROCESSORS", default_value_t = 3)]
    pub processors: u32,
    /// `dedup-processor` workload: the processor command; the processor flags (`--bootstrap`,
    /// `--from`, `--to`, `--group`, `--source`, `--transaction-timeout-ms`, `-X` settings) are
    /// appended and it runs under `sh -c` [default: this executable's `dedup` subcommand].
    #[arg(long, env = "ONCE_CHECK_PROCESSOR_CMD", value_name = "CMD")]
    pub processor_cmd: Option<String>,
    /// `dedup-processor` workload: where the processors read each record's id. `key` only to see the
    /// checker catch the duplicates that gives (the producers send no key).
    #[arg(long, env = "ONCE_CHECK_PROCESSOR_SOURCE", value_enum, default_value = "header")]
    pub processor_source: ProcessorSource,
}

/// Runs the check; true if no anomaly was found. Prints the seed at the start and with any failure.
pub fn run(args: CheckArgs) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| now_ms() ^ u64::from(std::process::id()));
    let faults: Vec<String> = args.faults.iter().map(flag_name).collect();
    eprintln!(
        "once check: workload {}, seed {seed}, {} s of faults: {}",
        flag_name(&args.workload),
        args.duration,
        faults.join(",")
    );
    run_seeded(&args, seed).with_context(|| format!("once check stopped (seed {seed})"))
}

/// A flag value as it is spelled on the command line.
fn flag_name(value: &impl clap::ValueEnum) -> String {
    value.to_possible_value().map(|value| value.get_name().to_string()).unwrap_or_default()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|since| since.as_millis() as u64).unwrap_or(0)
}

fn run_seeded(args: &CheckArgs, seed: u64) -> anyhow::Result<bool> {
    let start = Instant::now();
    let run_name = format!("once-check-{}-{seed}-{}", flag_name(&args.workload), now_ms());
    // `txn` copies `<run>-in` to `<run>-out`, and `dedup-processor` deduplicates one into the other;
    // the other workloads have one topic, named after the run.
    let topics = match args.workload {
        Workload::Txn | Workload::DedupProcessor => vec![format!("{run_name}-in"), format!("{run_name}-out")],
        Workload::Queue | Workload::Group | Workload::Dedup | Workload::Sink => vec![run_name.clone()],
    };
    let stats = Arc::new(progress::Stats::default());
    // A run that cannot even start (a managed broker that exits, a proxy that cannot bind, a topic
    // the broker refuses) still gets its report, saying why.
    let mut set_up = SetUp::new(args, seed).inspect_err(|error| {
        write_incomplete_report(args, seed, &topics, &report::FaultCounts::default(), error);
    })?;
    let client_bootstrap = set_up.proxy.as_ref().map_or(args.bootstrap.clone(), |proxy| proxy.address.clone());
    let dedup_source = create_topics(args, &client_bootstrap, &topics).inspect_err(|error| {
        write_incomplete_report(args, seed, &topics, &set_up.fault_counts(&stats), error);
    })?;
    if set_up.proxy.is_some() && set_up.broker.is_none() {
        topics::warn_unless_advertised(&client_bootstrap);
    }
    let config = queue::QueueConfig {
        bootstrap: client_bootstrap.clone(),
        topic: topics[0].clone(),
        partitions: args.partitions,
        producers: args.producers,
        rate: args.rate,
        idempotence: args.producer_idempotence,
    };
    let run = Run { args, seed, start, run_name, config, stats, dedup_source, report_written: Default::default() };
    let proxy_counters = set_up.proxy.as_ref().map(|proxy| proxy.counters.clone());
    let progress = progress::start(run.stats.clone(), proxy_counters, Duration::from_secs(args.duration));
    let valid = match args.workload {
        Workload::Queue => run.queue(&mut set_up, progress),
        Workload::Group => run.group(&mut set_up, progress),
        Workload::Txn => run.txn(&mut set_up, progress),
        Workload::Dedup => run.dedup(&mut set_up, progress),
        Workload::Sink => run.sink(&mut set_up, progress),
        Workload::DedupProcessor => run.dedup_processor(&mut set_up, progress),
    };
    let valid = valid.inspect_err(|error| {
        if !run.report_written.get() {
            write_incomplete_report(args, seed, &topics, &set_up.fault_counts(&run.stats), error);
        }
    })?;
    if !valid {
        eprintln!("once check: anomalies found (seed {seed})");
    }
    Ok(valid)
}

/// The run's topics; for `dedup` by header, the `dedup.source` the broker took, if any.
fn create_topics(args: &CheckArgs, bootstrap: &str, topics: &[String]) -> anyhow::Result<Option<String>> {
    let mut dedup_source = None;
    for topic in topics {
        if args.workload == Workload::Dedup && args.dedup_source == DedupSource::Header {
            dedup_source = topics::create_dedup_topic(bootstrap, topic, args.partitions)?;
        } else {
            topics::create_topic(bootstrap, topic, args.partitions, &[])?;
        }
    }
    Ok(dedup_source)
}

/// `--json` for a run that failed before its workload could report: what it was, the faults
/// injected until then, and why it stopped. Failing to write it is only warned about, so the
/// reason the run failed is what gets reported.
fn write_incomplete_report(
    args: &CheckArgs,
    seed: u64,
    topics: &[String],
    faults: &report::FaultCounts,
    error: &anyhow::Error,
) {
    let Some(path) = &args.json else { return };
    let report =
        report::incomplete_json(&flag_name(&args.workload), seed, args.duration, topics, faults, &format!("{error:#}"));
    let written = serde_json::to_string_pretty(&report).map_err(anyhow::Error::from).and_then(|text| {
        std::fs::write(path, text).with_context(|| format!("writing the JSON report {}", path.display()))
    });
    if let Err(write_error) = written {
        eprintln!("once check: WARNING could not write the incomplete report: {write_error:#}");
    }
}
