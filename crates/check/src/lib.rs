//! `once check`: runs a workload against a Kafka-compatible broker while injecting seeded faults,
//! records what every client saw, and checks the history for Jepsen's Kafka anomalies (lost and
//! unseen writes, duplicates, inconsistent offsets, non-monotonic sends and polls, poll skips,
//! aborted and precommitted reads). It talks to the broker only over the network, so it checks Once
//! or any other Kafka broker.
//!
//! # Layout
//! - `lib.rs`: [`CheckArgs`] (the `once check` flags), [`run`]: set-up, the run, the verdict.
//! - `queue`: the `queue` workload — idempotent producers, assign and subscribe consumers, the
//!   final read — turning what the clients saw into a [`History`].
//! - `history`: the recorded history as plain data.
//! - `checker`: the anomaly classes, pure functions of a history (unit tests in `checker_tests.rs`).
//! - `group` (with `group_run.rs`): the `group` workload — members that process, commit and crash,
//!   and the fresh consumer that resumes from the committed offsets — recording a [`GroupHistory`].
//! - `group_history`, `group_checker` (tests in `group_checker_tests.rs`), `group_report`: its
//!   history, its anomaly classes as pure functions, its table and JSON report.
//! - `txn`: the `txn` workload — producers to an input topic, live read_committed and
//!   read_uncommitted consumers of the output, the final copy and the final reads of both topics;
//!   `txn_copier`: the `once copy` processes, their faults (kill, pause, resume) and their traces.
//! - `txn_history`, `txn_checker` (tests in `txn_checker_tests.rs`), `txn_report`: its history, its
//!   anomaly classes as pure functions (input/output set equality, order, G1a, precommitted reads),
//!   its report.
//! - `dedup`: the `dedup` workload — fresh producer processes sending and resending message ids to a
//!   deduplicating topic; `dedup_checker` (tests in `dedup_checker_tests.rs`), `dedup_report`: its
//!   history and anomaly classes (each id stored once, acknowledged ids stored, answers' offsets
//!   right), its report.
//! - `producer_process`: producers as processes (`once check-producer`) fed by the checker, killed
//!   with SIGKILL by `client-kill` (the `dedup` producers and the `txn` input producers).
//! - `proxy`: the seeded TCP fault proxy (resets, delays, lost responses, duplicated produces).
//! - `nemesis`: the broker process under `--broker-cmd` and the kill -9 / proxy schedule.
//! - `power_loss`: applying the manifest a broker's power-loss hook writes (the checker's half).
//! - `progress`: live counters and the one-line progress indicator on stderr.
//! - `report`: the summary table and the JSON report.
//! - `rng`: the seeded generator behind every fault decision.
//! - `topics`: the run's topics over the admin API, and the warning when clients bypass the proxy.

mod checker;
mod dedup;
mod dedup_checker;
mod dedup_report;
mod group;
mod group_checker;
mod group_history;
mod group_report;
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
mod topics;
mod txn;
mod txn_checker;
mod txn_copier;
mod txn_history;
mod txn_report;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

pub use checker::{check, Anomaly, LostEvidence, CLASSES};
pub use dedup_checker::{check_dedup, resends, Ack, DedupAnomaly, DedupHistory, Resends, DEDUP_CLASSES};
pub use group_checker::{check_group, reprocessing, GroupAnomaly, Reprocessing, GROUP_CLASSES};
pub use group_history::{Commit, CommittedRead, GroupHistory, Incarnation, Processed, Resume};
pub use history::{FaultEvent, History, Poll, Send, SendOutcome};
pub use producer_process::{run_producer, ProducerArgs, ProducerEnd, ProducerRun};
pub use txn_checker::{check_txn, uncommitted_reads, TxnAnomaly, TXN_CLASSES};
pub use txn_history::{Copier, CopierEnd, TopicRead, TxnHistory, Unparseable};

/// How long consumers keep polling after the producers have stopped, before the final read.
const DRAIN: Duration = Duration::from_secs(3);
/// How long producers flush when the run has already failed (its broker may be gone for good).
const INCOMPLETE_FLUSH: Duration = Duration::from_secs(2);

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
    /// checker turns on): every append not yet fsynced is thrown away, then a restart.
    PowerLoss,
    /// SIGSTOP of the broker for 0.3–2 s, then SIGCONT (needs `--broker-cmd`).
    Pause,
    /// `group` workload: a member's client is dropped without committing or leaving the group, and
    /// the proxy cuts it off, as if its process had died.
    Crash,
    /// `txn` workload: SIGKILL of the active copier process (a successor with its transactional id
    /// starts at once) and of input producer processes; `dedup`: SIGKILL of producer processes
    /// mid-send.
    ClientKill,
    /// `txn` workload: SIGSTOP of the active copier, a successor starts (fencing it), and 1–4 s later
    /// SIGCONT: the zombie must exit fenced without anything it writes becoming visible.
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
    let workload = format!("{:?}", args.workload).to_lowercase();
    let run_name = format!("once-check-{workload}-{seed}-{}", now_ms());
    // `txn` copies `<run>-in` to `<run>-out`; the other workloads have one topic, named after the run.
    let topics = match args.workload {
        Workload::Txn => vec![format!("{run_name}-in"), format!("{run_name}-out")],
        Workload::Queue | Workload::Group | Workload::Dedup => vec![run_name.clone()],
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

/// One run's settings, shared by the workloads.
struct Run<'a> {
    args: &'a CheckArgs,
    seed: u64,
    start: Instant,
    /// `once-check-WORKLOAD-SEED-MILLIS`: the topic's name, or the prefix of the `txn` workload's names.
    run_name: String,
    config: queue::QueueConfig,
    stats: Arc<progress::Stats>,
    /// `dedup`: the `dedup.source` the topic was created with, if the broker took one.
    dedup_source: Option<String>,
    /// Whether the workload's full JSON report is out ([`Run::publish`] wrote it; a run of
    /// `queue`, `txn` or `dedup` that cannot complete writes one too): a run that fails without one gets the bare incomplete report of
    /// [`run_seeded`], and one that fails after it (the HTML report) keeps it.
    report_written: std::cell::Cell<bool>,
}

impl Run<'_> {
    /// The summary table on stdout, `--json` and `--report` (the HTML timeline of `sends`).
    fn publish(&self, outcome: &impl report::Summary, sends: &[Send]) -> anyhow::Result<()> {
        print!("{}", outcome.table());
        if let Some(path) = &self.args.json {
            outcome.write_json(path)?;
            // The full report is out: a later failure (the HTML) must not replace it with the bare one.
            self.report_written.set(true);
        }
        let Some(path) = &self.args.report else { return Ok(()) };
        let acked = sends.iter().filter(|send| send.acked_offset().is_some()).map(|send| send.done_ms);
        html::write(path, &outcome.json(), &html::per_second(acked))?;
        eprintln!("once check: HTML report in {}", path.display());
        Ok(())
    }

    /// The seeded fault schedule until `--duration` is over, then healing (of the broker and the proxy;
    /// client processes are the workload's to heal).
    fn nemesis<'a>(
        &'a self,
        set_up: &'a mut SetUp,
        clients: Vec<&'a mut (dyn nemesis::ClientNemesis + 'a)>,
    ) -> anyhow::Result<Vec<FaultEvent>> {
        let targets = self.targets(set_up, clients);
        let mut rng = rng::Rng::new(self.seed);
        nemesis::run(&mut rng, self.start, self.start + Duration::from_secs(self.args.duration), targets)
    }

    /// [`Run::nemesis`] without client faults, noting faults in `events` as they happen.
    fn nemesis_recording(&self, set_up: &mut SetUp, events: &mut Vec<FaultEvent>) -> anyhow::Result<()> {
        let targets = self.targets(set_up, Vec::new());
        let mut rng = rng::Rng::new(self.seed);
        let until = self.start + Duration::from_secs(self.args.duration);
        nemesis::run_recording(&mut rng, self.start, until, targets, events)
    }

    fn targets<'a>(
        &'a self,
        set_up: &'a mut SetUp,
        clients: Vec<&'a mut (dyn nemesis::ClientNemesis + 'a)>,
    ) -> nemesis::Targets<'a> {
        nemesis::Targets {
            proxy: set_up.proxy.as_ref().map(|proxy| proxy.enabled.clone()),
            broker: set_up.broker.as_mut(),
            broker_faults: nemesis::BrokerFaults {
                kill: self.args.faults.contains(&Fault::Kill),
                power_loss: self.args.faults.contains(&Fault::PowerLoss),
                pause: self.args.faults.contains(&Fault::Pause),
            },
            kills: &self.stats.kills,
            power_losses: &self.stats.power_losses,
            pauses: &self.stats.broker_pauses,
            clients,
        }
    }

    /// The `queue` workload. A run that cannot finish (a broker that does not come back, no final
    /// read) still writes its report, with what was recorded and why it is incomplete, then fails.
    fn queue(&self, set_up: &mut SetUp, progress: progress::Progress) -> anyhow::Result<bool> {
        let running = queue::start(&self.config, &self.stats, self.start);
        let mut faults = Vec::new();
        let mut incomplete = self.nemesis_recording(set_up, &mut faults).err().map(|error| format!("{error:#}"));
        // A run that has failed only flushes briefly: its broker may be gone for good.
        let flush = if incomplete.is_some() { INCOMPLETE_FLUSH } else { queue::FLUSH_TIMEOUT };
        let recorded = running.stop(flush, if incomplete.is_some() { Duration::ZERO } else { DRAIN })?;
        let final_read = match incomplete {
            Some(_) => None,
            None => queue::final_read(&self.config, self.start)
                .map_err(|error| incomplete = Some(format!("the final read failed: {error:#}")))
                .ok(),
        };
        drop(progress);
        let mut unparseable = recorded.reads.unparseable;
        let (final_polls, final_read_complete, partitions_at_final_read) = match final_read {
            Some(read) => {
                unparseable.extend(read.reads.unparseable);
                (read.reads.polls, read.complete, Some(read.partitions_found))
            }
            None => (Vec::new(), false, None),
        };
        unparseable.sort_unstable();
        unparseable.dedup();
        let history = History {
            partitions: self.args.partitions,
            consumers: queue::CONSUMERS.iter().map(|name| name.to_string()).collect(),
            sends: recorded.sends,
            polls: recorded.reads.polls,
            final_read: final_polls,
            unparseable,
            faults,
            partitions_at_final_read,
        };
        let mut anomalies = check(&history);
        if partitions_at_final_read.is_none() {
            // Without a final read nothing can be called unseen.
            anomalies.retain(|anomaly| !matches!(anomaly, Anomaly::Unseen { .. }));
        }
        let outcome = report::Outcome {
            workload: "queue",
            seed: self.seed,
            duration_secs: self.args.duration,
            topic: &self.config.topic,
            client_bootstrap: &self.config.bootstrap,
            history: &history,
            anomalies: &anomalies,
            final_read_complete,
            faults: set_up.fault_counts(&self.stats),
            incomplete: incomplete.as_deref(),
        };
        self.publish(&outcome, &history.sends)?;
        match incomplete {
            Some(reason) => Err(anyhow::anyhow!(reason)),
            None => Ok(anomalies.is_empty()),
        }
    }

    fn group(&self, set_up: &mut SetUp, progress: progress::Progress) -> anyhow::Result<bool> {
        let crashes = self.args.faults.contains(&Fault::Crash);
        let config = group::GroupConfig {
            queue: self.config.clone(),
            members: self.args.members,
            commit_before_process: self.args.commit_before_process,
            crashes_until: crashes.then(|| self.start + Duration::from_secs(self.args.duration)),
            crashed_clients: set_up.proxy.as_ref().map(|proxy| proxy.crashed_clients.clone()),
            seed: self.seed,
        };
        let running = group::start(&config, &self.stats, self.start);
        let mut faults = self.nemesis(set_up, Vec::new())?;
        let (sends, log) = running.stop()?;
        let resumed = group::resume(&config, &log, self.start)?;
        drop(progress);
        let log = std::mem::take(&mut *log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        faults.extend(log.crashes);
        faults.sort_by_key(|event| event.time_ms);
        let mut unparseable = log.unparseable;
        unparseable.sort_unstable();
        unparseable.dedup();
        let history = GroupHistory {
            partitions: self.args.partitions,
            sends,
            incarnations: log.incarnations,
            processed: log.processed,
            commits: log.commits,
            committed_reads: log.committed_reads,
            resume: resumed.resume,
            final_read_complete: resumed.complete,
            partitions_found: Some(resumed.partitions_found),
            unparseable,
            faults,
        };
        let anomalies = check_group(&history);
        let outcome = group_report::GroupOutcome {
            seed: self.seed,
            duration_secs: self.args.duration,
            topic: &self.config.topic,
            client_bootstrap: &self.config.bootstrap,
            history: &history,
            anomalies: &anomalies,
            reprocessing: reprocessing(&history),
            faults: set_up.fault_counts(&self.stats),
            crashed_client_cutoffs: set_up
                .proxy
                .as_ref()
                .map_or(0, |proxy| proxy.counters.crashed_client_cutoffs.load(Ordering::Relaxed)),
        };
        self.publish(&outcome, &history.sends)?;
        Ok(anomalies.is_empty())
    }

    fn txn(&self, set_up: &mut SetUp, progress: progress::Progress) -> anyhow::Result<bool> {
        let config = txn::TxnConfig {
            queue: self.config.clone(),
            output: format!("{}-out", self.run_name),
            committed_isolation: self.args.txn_consumer_isolation.config_value(),
        };
        let wall_clock_start_ms = txn::wall_clock_origin_ms(self.start);
        let mut copiers = txn_copier::Copiers::new(self.copier_settings(&config)?, self.start, self.stats.clone());
        let running = txn::start(&config, &self.stats, self.start, self.producer_command()?, self.seed, self.log_dir());
        copiers.spawn(None)?;
        let mut faults = {
            let (kill, pause) =
                (self.args.faults.contains(&Fault::ClientKill), self.args.faults.contains(&Fault::ClientPause));
            let mut client_faults = txn_copier::CopierFaults::new(&mut copiers, kill, pause, self.seed);
            let mut producer_kills = producer_process::ProducerKills::new(&running.pool, self.seed);
            let mut clients: Vec<&mut dyn nemesis::ClientNemesis> = vec![&mut client_faults];
            if kill {
                clients.push(&mut producer_kills);
            }
            self.nemesis(set_up, clients)?
        };
        let recorded = running.finish(&mut copiers)?;
        let (bootstrap, partitions) = (&self.config.bootstrap, self.args.partitions);
        // A final read that cannot complete still gets the report, with what was recorded until then.
        let (reads, incomplete) = match txn::final_reads(&config, self.start) {
            Ok(reads) => (reads, None),
            Err(error) => (txn::FinalReads::default(), Some(format!("the final read failed: {error:#}"))),
        };
        let txn::FinalReads { input, output, input_unparseable, mut output_unparseable } = reads;
        drop(progress);
        let (copier_records, copier_events, transactions) = copiers.into_history();
        let wall_clock_drift_ms = txn::wall_clock_origin_ms(self.start).abs_diff(wall_clock_start_ms);
        faults.extend(copier_events);
        faults.extend(recorded.producer_events);
        faults.sort_by_key(|event| event.time_ms);
        output_unparseable.extend(recorded.reads.unparseable);
        output_unparseable.sort_unstable();
        output_unparseable.dedup();
        let unparseable = input_unparseable.into_iter().map(|place| ("input", place));
        let unparseable = unparseable.chain(output_unparseable.into_iter().map(|place| ("output", place)));
        let history = TxnHistory {
            partitions,
            consumers: txn::CONSUMERS.iter().map(|name| name.to_string()).collect(),
            sends: recorded.sends,
            polls: recorded.reads.polls,
            input,
            output,
            copiers: copier_records,
            transactions,
            wall_clock_start_ms,
            wall_clock_drift_ms,
            producers: recorded.producers,
            concurrent_copiers: recorded.concurrent_copiers,
            unparseable: unparseable
                .map(|(topic, (partition, offset))| Unparseable { topic, partition, offset })
                .collect(),
            faults,
        };
        let mut anomalies = check_txn(&history);
        if incomplete.is_some() {
            // Without the final reads nothing can be called lost.
            anomalies.retain(|anomaly| !matches!(anomaly, TxnAnomaly::Lost { .. } | TxnAnomaly::LostInput { .. }));
        }
        let outcome = txn_report::TxnOutcome {
            seed: self.seed,
            duration_secs: self.args.duration,
            input_topic: &config.queue.topic,
            output_topic: &config.output,
            client_bootstrap: bootstrap,
            history: &history,
            anomalies: &anomalies,
            final_copy_finished: recorded.final_copy_finished,
            faults: set_up.fault_counts(&self.stats),
            incomplete: incomplete.as_deref(),
        };
        self.publish(&outcome, &history.sends)?;
        match incomplete {
            Some(reason) => Err(anyhow::anyhow!(reason)),
            None => Ok(anomalies.is_empty()),
        }
    }

    /// Where client processes' logs go: beside `--broker-log`, or to the temp directory.
    fn log_dir(&self) -> PathBuf {
        let log_dir = self.args.broker_log.as_deref().and_then(std::path::Path::parent);
        log_dir.filter(|dir| !dir.as_os_str().is_empty()).map_or_else(std::env::temp_dir, PathBuf::from)
    }

    /// `--producer-cmd`, or this executable's `check-producer`.
    fn producer_command(&self) -> anyhow::Result<String> {
        match &self.args.producer_cmd {
            Some(command) => Ok(command.clone()),
            None => producer_process::default_command(),
        }
    }

    fn dedup(&self, set_up: &mut SetUp, progress: progress::Progress) -> anyhow::Result<bool> {
        let config = dedup::DedupConfig {
            queue: self.config.clone(),
            producer_command: self.producer_command()?,
            seed: self.seed,
            log_dir: self.log_dir(),
        };
        let running = dedup::start(&config, &self.stats, self.start);
        let mut faults = {
            let mut producer_kills = producer_process::ProducerKills::new(&running.pool, self.seed);
            let mut clients: Vec<&mut dyn nemesis::ClientNemesis> = Vec::new();
            if self.args.faults.contains(&Fault::ClientKill) {
                clients.push(&mut producer_kills);
            }
            self.nemesis(set_up, clients)?
        };
        let (pool, reads) = running.finish()?;
        let (bootstrap, partitions) = (&self.config.bootstrap, self.args.partitions);
        // A final read that cannot complete still gets the report, with what was recorded until then.
        let (final_read, mut unparseable, incomplete) =
            match txn::read_topic(bootstrap, &self.config.topic, partitions, self.start) {
                Ok((read, unparseable)) => (read, unparseable, None),
                Err(error) => (TopicRead::default(), Vec::new(), Some(format!("the final read failed: {error:#}"))),
            };
        drop(progress);
        let sends = pool.take_sends();
        let (producers, producer_events) = pool.into_history()?;
        faults.extend(producer_events);
        faults.sort_by_key(|event| event.time_ms);
        unparseable.extend(reads.unparseable);
        unparseable.sort_unstable();
        unparseable.dedup();
        let history = DedupHistory {
            partitions,
            consumers: dedup::CONSUMERS.iter().map(|name| name.to_string()).collect(),
            sends,
            polls: reads.polls,
            final_read,
            producers,
            unparseable,
            faults,
        };
        let mut anomalies = check_dedup(&history);
        if incomplete.is_some() {
            // Without a final read nothing can be called lost.
            anomalies.retain(|anomaly| !matches!(anomaly, DedupAnomaly::Lost { .. }));
        }
        let outcome = dedup_report::DedupOutcome {
            seed: self.seed,
            duration_secs: self.args.duration,
            topic: &self.config.topic,
            dedup_source: self.dedup_source.as_deref(),
            client_bootstrap: bootstrap,
            history: &history,
            anomalies: &anomalies,
            faults: set_up.fault_counts(&self.stats),
            incomplete: incomplete.as_deref(),
        };
        self.publish(&outcome, &history.sends)?;
        match incomplete {
            Some(reason) => Err(anyhow::anyhow!(reason)),
            None => Ok(anomalies.is_empty()),
        }
    }

    /// How the `txn` workload starts its copiers.
    fn copier_settings(&self, config: &txn::TxnConfig) -> anyhow::Result<txn_copier::CopierSettings> {
        let command = match &self.args.copier_cmd {
            Some(command) => command.clone(),
            None => txn_copier::default_command()?,
        };
        let log_dir = self.log_dir();
        Ok(txn_copier::CopierSettings {
            command,
            bootstrap: self.config.bootstrap.clone(),
            input: config.queue.topic.clone(),
            output: config.output.clone(),
            group: format!("{}-copier", self.run_name),
            transactional_id: format!("{}-copier", self.run_name),
            seed: self.seed,
            log_dir,
        })
    }
}

/// The proxy and the managed broker of one run; dropping it kills the broker.
struct SetUp {
    proxy: Option<proxy::FaultProxy>,
    broker: Option<nemesis::ManagedBroker>,
}

impl SetUp {
    fn new(args: &CheckArgs, seed: u64) -> anyhow::Result<SetUp> {
        let proxy_faults = proxy::ProxyFaults {
            reset: probability(args, Fault::Reset),
            delay: probability(args, Fault::Delay),
            drop_response: probability(args, Fault::LostResponse),
            duplicate_produce: probability(args, Fault::Duplicate),
        };
        let wants_proxy = args.proxy.is_some() || args.broker_cmd.is_some();
        let listener = match (&args.proxy, wants_proxy) {
            (Some(address), _) => {
                Some(TcpListener::bind(address).with_context(|| format!("binding the proxy to {address}"))?)
            }
            (None, true) => Some(TcpListener::bind("127.0.0.1:0").context("binding the proxy")?),
            (None, false) => None,
        };
        let advertised = match &listener {
            Some(listener) => listener.local_addr()?.to_string(),
            None => args.bootstrap.clone(),
        };
        let broker = match &args.broker_cmd {
            Some(template) => {
                let command = nemesis::broker_command(template, &args.bootstrap, &advertised);
                let log = args
                    .broker_log
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join(format!("once-check-broker-{seed}.log")));
                eprintln!("once check: starting the broker: {command} (log: {})", log.display());
                let power_loss = args.faults.contains(&Fault::PowerLoss);
                Some(nemesis::ManagedBroker::start(command, args.bootstrap.clone(), log, power_loss)?)
            }
            None => None,
        };
        let proxy = match listener {
            Some(listener) => Some(proxy::start(listener, args.bootstrap.clone(), proxy_faults, seed)?),
            None => None,
        };
        Ok(SetUp { proxy, broker })
    }

    fn fault_counts(&self, stats: &progress::Stats) -> report::FaultCounts {
        let broker = report::FaultCounts {
            kills: stats.kills.load(Ordering::Relaxed),
            power_losses: stats.power_losses.load(Ordering::Relaxed),
            broker_pauses: stats.broker_pauses.load(Ordering::Relaxed),
            ..Default::default()
        };
        let Some(proxy) = &self.proxy else { return broker };
        let counters = &proxy.counters;
        report::FaultCounts {
            resets: counters.resets.load(Ordering::Relaxed),
            delays: counters.delays.load(Ordering::Relaxed),
            dropped_responses: counters.dropped_responses.load(Ordering::Relaxed),
            duplicated_produces: counters.duplicated_produces.load(Ordering::Relaxed),
            ..broker
        }
    }
}

fn probability(args: &CheckArgs, fault: Fault) -> f64 {
    if args.faults.contains(&fault) {
        args.fault_probability
    } else {
        0.0
    }
}
